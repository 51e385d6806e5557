/*
 * test_teacher_dump.c — `kd teacher dump` (teacher/kd_teacher_dump.h) on the
 * real teacher tests/data/models/aidreams260K, through the command line:
 *   - text mode: a few documents separated by "\n%\n" dumped as top-16 float16,
 *     top-16 float32 and full float32 logits, plus a --val-out split; Python
 *     (tests/py/teacher_dump_check.py) recomputes every stored sequence with
 *     llama2.c's forward on the ORIGINAL .bin (tests/py/llama2c_ref.py, float64)
 *     and PyTorch's log_softmax/topk, and checks the top-k ids (swaps only at
 *     ties), the log-probs (float16: 2^-11·|lp| + 5e-5), the full logits (1e-4
 *     relative), the tokens (tests/py/tok_ref.py: BOS + text + EOS per document),
 *     the loss_mask (exactly the padded tail) and the split; `kd teacher info`
 *     validates every file;
 *   - --generate: BOS starts, same seed → same dump (also across --batch),
 *     another seed → other tokens, greedy = the reference argmax chain, sampled
 *     tokens follow the teacher at temperature 1, distributions as above;
 *   - resume: KD_DUMP_STOP_AFTER=N kills a run after N appends (status 75,
 *     only DUMP.partial left); the same command finishes it, identical to a dump
 *     made in one go (text and --generate, with and without --val-out); a
 *     .partial made with other options is refused and kept; progress bar + ETA;
 *   - errors name the thing: missing tokenizer, --text with --generate, an
 *     unreadable text file, a missing teacher, --topk above the vocabulary (an
 *     error), --seq-len above the teacher's context;
 *   - OMP_NUM_THREADS=1 and 2 give identical dumps.
 */
#include "kd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "data/kd_dump.h"

/* --doc-sep: newline, '%', newline, inside sh single quotes; SEP_F inside printf formats, SEP_R as data */
#define SEP_F "'\n%%\n'"
#define SEP_R "'\n%\n'"

static char g_dir[512], g_bin[600], g_tok[600];

static const char TEXT[] =
    "The old lighthouse stood at the edge of the cliff. Every night its lamp\n"
    "turned slowly, and the sailors far out at sea knew they were close to home.\n"
    "%\n"
    "I dreamed of a garden made of glass. The flowers rang like small bells when\n"
    "the wind moved through them, and the sky above was the color of warm honey.\n"
    "%\n"
    "She opened the book and found a map folded between the pages. It showed a\n"
    "river that did not exist, winding through a forest of silver trees.\n"
    "%\n"
    "In the city of clocks, nobody was ever late. The trains left on time, the\n"
    "bread came out of the ovens on time, and even the rain fell on time.\n"
    "%\n"
    "A small robot learned to paint. At first it painted only squares, but one\n"
    "morning it painted the sun rising over the sea, and it was beautiful.\n"
    "%\n"
    "The moon asked the river where it was going. \"To the sea,\" said the river,\n"
    "\"where all the lost songs are waiting for me.\"\n";

/* Import the teacher and write the text, once per process (in the test's tmpdir). */
static void setup_once(void) {
    if (g_dir[0]) return;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    snprintf(g_bin, sizeof g_bin, "%s/models/aidreams260K/aidreams260K.bin", kd_test_env("KD_DATA_DIR"));
    snprintf(g_tok, sizeof g_tok, "%s/models/aidreams260K/tok512.bin", kd_test_env("KD_DATA_DIR"));
    char path[1000];
    kd_err err;
    snprintf(path, sizeof path, "%s/text.txt", g_dir);
    if (kd_write_file_atomic(path, TEXT, sizeof TEXT - 1, &err)) fail_msg("%s", err.msg);
    assert_int_equal(kd_test_sh("'%s' import llama2c --model '%s' --tokenizer '%s' --out '%s/teacher' >/dev/null",
                                kd_test_env("KD_BIN"), g_bin, g_tok, g_dir), 0);
    /* the same teacher without its tokenizer */
    assert_int_equal(kd_test_sh("'%s' import llama2c --model '%s' --out '%s/notok' >/dev/null", kd_test_env("KD_BIN"),
                                g_bin, g_dir), 0);
}

/* Run `ENV kd teacher ARGS` in the tmpdir with stdout/stderr to out.txt/err.txt; returns the status.
 * ENV NULL runs one OpenMP thread: on a loaded 2-core machine GOMP's spinning
 * threads make the many tiny forwards of --generate ~20× slower. */
static int kd(const char *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kd(const char *env, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return kd_test_sh("cd '%s' && env %s '%s' teacher %s >out.txt 2>err.txt", g_dir, env ? env : "OMP_NUM_THREADS=1",
                      kd_test_env("KD_BIN"), args);
}

static char *slurp(const char *name) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    size_t len;
    kd_err err;
    char *s = kd_read_file(path, &len, &err);
    if (!s) fail_msg("%s", err.msg);
    s[len] = '\0';
    return s;
}

/* The last command's stderr contains every needle (NULL-terminated list). */
static void expect_stderr(const char *what, ...) {
    char *s = slurp("err.txt");
    va_list ap;
    va_start(ap, what);
    for (const char *n; (n = va_arg(ap, const char *));)
        if (!strstr(s, n)) fail_msg("%s: stderr lacks \"%s\":\n%s", what, n, s);
    va_end(ap);
    free(s);
}

static int exists(const char *name) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return kd_file_exists(path);
}

static void rm(const char *name) { kd_test_sh("rm -f '%s/%s' '%s/%s.partial'", g_dir, name, g_dir, name); }

/* `kd teacher info` validates the dump. */
static void info_ok(const char *name) {
    if (kd(NULL, "info %s", name) != 0) fail_msg("kd teacher info %s failed:\n%s", name, slurp("err.txt"));
    char *s = slurp("out.txt");
    if (!strstr(s, "check        ok")) fail_msg("kd teacher info %s:\n%s", name, s);
    free(s);
}

/* Read a whole dump (kd's reader). */
typedef struct all {
    kd_dump_meta m;
    int32_t *tok, *ids;
    uint8_t *mask;
    float *val;
    size_t n_tok, n_mask, n_val;
} all;

static void read_all(const char *name, all *a) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) fail_msg("%s", err.msg);
    a->m = *kd_dump_get_meta(d);
    int64_t n = a->m.n_seq, T = a->m.seq_len, w = a->m.k ? a->m.k : a->m.vocab_size;
    a->n_tok = (size_t)(n * (T + 1));
    a->n_mask = (size_t)(n * T);
    a->n_val = (size_t)(n * T * w);
    a->tok = malloc(a->n_tok * 4 + 4);
    a->mask = malloc(a->n_mask + 1);
    a->val = malloc(a->n_val * 4 + 4);
    a->ids = a->m.k ? malloc(a->n_val * 4 + 4) : NULL;
    kd_dump_rows rows = {.tokens = a->tok, .loss_mask = a->mask, .topk_ids = a->ids};
    if (a->m.k) rows.topk_logprobs = a->val;
    else rows.logits = a->val;
    if (n && kd_dump_read(d, 0, n, &rows, &err)) fail_msg("%s", err.msg);
    kd_dump_close(d);
}

static void free_all(all *a) {
    free(a->tok);
    free(a->mask);
    free(a->val);
    free(a->ids);
}

/* 1 when a and b hold the same sequences and values (bit for bit), else 0 with a note. */
static int same_dump(const char *a_name, const char *b_name, int values_too) {
    all a, b;
    read_all(a_name, &a);
    read_all(b_name, &b);
    const char *why = NULL;
    if (a.m.n_seq != b.m.n_seq || a.m.k != b.m.k || a.m.seq_len != b.m.seq_len || a.m.vocab_size != b.m.vocab_size ||
        a.m.value_dtype != b.m.value_dtype)
        why = "shape";
    else if (memcmp(a.tok, b.tok, a.n_tok * 4)) why = "tokens";
    else if (memcmp(a.mask, b.mask, a.n_mask)) why = "loss_mask";
    else if (values_too && a.ids && memcmp(a.ids, b.ids, a.n_val * 4)) why = "topk_ids";
    else if (values_too && memcmp(a.val, b.val, a.n_val * 4)) why = "values";
    if (why)
        fprintf(stderr, "%s vs %s: %s differ (n_seq %lld vs %lld)\n", a_name, b_name, why, (long long)a.m.n_seq,
                (long long)b.m.n_seq);
    free_all(&a);
    free_all(&b);
    return why == NULL;
}

static int64_t partial_n_seq(const char *name) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s.partial", g_dir, name);
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) fail_msg("%s", err.msg);
    int64_t n = kd_dump_get_meta(d)->n_seq;
    kd_dump_close(d);
    return n;
}

#define TEXT_ARGS(sep) "dump --teacher teacher --text text.txt --doc-sep " sep " --seq-len 32"

/* ---- 1. text: top-k and full logits against the reference --------------------------------- */

static void test_text(void **state) {
    (void)state;
    setup_once();
    /* the command of the issue, progress on */
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --out a.h5"), 0);
    expect_stderr("progress", "dump [", "sequences", "tokens/s", "ETA", "took", NULL);
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --dtype f32 --quiet --out a32.h5"), 0);
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --full --dtype f32 --quiet --out full.h5"), 0);
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --val-out v.h5 --val-fraction 0.3 --quiet --out t.h5"), 0);
    assert_false(exists("a.h5.partial") || exists("t.h5.partial") || exists("v.h5.partial"));
    info_ok("a.h5");
    info_ok("a32.h5");
    info_ok("full.h5");
    info_ok("t.h5");
    info_ok("v.h5");
    assert_int_equal(kd_test_python("teacher_dump_check.py",
                                    "text --model '%s' --tokenizer '%s' --teacher teacher --text '%s/text.txt' "
                                    "--sep " SEP_F " --dump '%s/a.h5' --dump '%s/a32.h5' --dump '%s/full.h5' "
                                    "--dump '%s/t.h5' --dump '%s/v.h5' --split '%s/t.h5' '%s/v.h5' 0.3",
                                    g_bin, g_tok, g_dir, g_dir, g_dir, g_dir, g_dir, g_dir, g_dir, g_dir),
                     0);
    /* the f16 dump is the f32 one rounded: same ids, same tokens */
    all a, b;
    read_all("a.h5", &a);
    read_all("a32.h5", &b);
    assert_memory_equal(a.tok, b.tok, a.n_tok * 4);
    assert_memory_equal(a.ids, b.ids, a.n_val * 4);
    free_all(&a);
    free_all(&b);
}

/* ---- 2. --generate ---------------------------------------------------------------------------- */

static void test_generate(void **state) {
    (void)state;
    setup_once();
    const char *g = "dump --teacher teacher --generate 24 --seq-len 32 --topk 16 --quiet";
    assert_int_equal(kd(NULL, "%s --seed 7 --batch 4 --out g1.h5", g), 0);
    assert_int_equal(kd(NULL, "%s --seed 7 --batch 4 --out g1b.h5", g), 0);
    assert_int_equal(kd(NULL, "%s --seed 7 --batch 3 --out g2.h5", g), 0);
    assert_int_equal(kd(NULL, "%s --seed 8 --batch 4 --out g3.h5", g), 0);
    assert_int_equal(kd(NULL, "%s --seed 9 --temperature 0.6 --out g6.h5", g), 0);
    assert_int_equal(kd(NULL, "dump --teacher teacher --generate 2 --seq-len 32 --topk 16 --temperature 0 --quiet "
                              "--out gg.h5"), 0);
    assert_true(same_dump("g1.h5", "g1b.h5", 1));   /* same command: identical */
    assert_true(same_dump("g1.h5", "g2.h5", 0));    /* same seed, other batching: the same sequences */
    all a, b;
    read_all("g1.h5", &a);
    read_all("g3.h5", &b);
    int64_t same = 0, T1 = a.m.seq_len + 1;
    for (int64_t s = 0; s < a.m.n_seq; s++) same += !memcmp(a.tok + s * T1, b.tok + s * T1, (size_t)T1 * 4);
    assert_int_equal(same, 0);                      /* another seed: every sequence differs */
    free_all(&a);
    free_all(&b);
    info_ok("g1.h5");
    info_ok("gg.h5");
    assert_int_equal(kd_test_python("teacher_dump_check.py",
                                    "generate --model '%s' --tokenizer '%s' --teacher teacher --sampled '%s/g1.h5' "
                                    "--sampled '%s/g3.h5' --sampled '%s/g6.h5:0.6' --greedy '%s/gg.h5'",
                                    g_bin, g_tok, g_dir, g_dir, g_dir, g_dir),
                     0);
}

/* ---- 3. resume ------------------------------------------------------------------------------------ */

/* Make NAME in one go, then again as NAME2 killed after `stop` appends and resumed;
 * with val != NULL also the --val-out files. Both must be identical. */
static void interrupted(const char *args, const char *name, const char *name2, const char *val, const char *val2,
                        int stop, int64_t want_partial) {
    char vo[200] = "", vo2[200] = "";
    if (val) snprintf(vo, sizeof vo, "--val-out %s --val-fraction 0.3", val);
    if (val) snprintf(vo2, sizeof vo2, "--val-out %s --val-fraction 0.3", val2);
    assert_int_equal(kd(NULL, "%s %s --quiet --out %s", args, vo, name), 0);
    char env[64];
    snprintf(env, sizeof env, "OMP_NUM_THREADS=1 KD_DUMP_STOP_AFTER=%d", stop);
    assert_int_equal(kd(env, "%s %s --quiet --out %s", args, vo2, name2), 75);
    expect_stderr("killed run", "KD_DUMP_STOP_AFTER", NULL);
    char p[300];
    snprintf(p, sizeof p, "%s.partial", name2);
    assert_true(exists(p) && !exists(name2));
    assert_int_equal(partial_n_seq(name2), want_partial);
    assert_int_equal(kd(NULL, "%s %s --out %s", args, vo2, name2), 0);   /* progress on */
    if (want_partial) expect_stderr("resumed run", "resuming", "took", NULL);
    assert_false(exists(p));
    assert_true(same_dump(name, name2, 1));
    info_ok(name2);
    if (val) {
        snprintf(p, sizeof p, "%s.partial", val2);
        assert_false(exists(p));
        assert_true(same_dump(val, val2, 1));
    }
}

static void test_resume(void **state) {
    (void)state;
    setup_once();
    /* text, batches of 4: killed after 2 appends = 8 sequences */
    interrupted(TEXT_ARGS(SEP_R) " --topk 16 --batch 4", "r1.h5", "r2.h5", NULL, NULL, 2, 8);
    /* with a validation file: killed in the training pass (3 appends of 2), and after the
     * whole training pass (7 appends of 2 = its 13 sequences), before the validation one */
    interrupted(TEXT_ARGS(SEP_R) " --topk 16 --batch 2", "s1.h5", "s2.h5", "sv1.h5", "sv2.h5", 3, 6);
    rm("s2.h5");
    rm("sv2.h5");
    interrupted(TEXT_ARGS(SEP_R) " --topk 16 --batch 2", "s1.h5", "s2.h5", "sv1.h5", "sv2.h5", 7, 13);
    /* full logits, and sampled sequences (the resumed run samples the same ones) */
    interrupted(TEXT_ARGS(SEP_R) " --full --batch 4", "f1.h5", "f2.h5", NULL, NULL, 1, 4);
    interrupted("dump --teacher teacher --generate 10 --seq-len 16 --topk 8 --seed 3 --batch 2", "q1.h5", "q2.h5",
                "qv1.h5", "qv2.h5", 2, 4);

    /* a .partial from other options is refused by name and kept */
    assert_int_equal(kd("OMP_NUM_THREADS=1 KD_DUMP_STOP_AFTER=1", TEXT_ARGS(SEP_F) " --topk 16 --batch 4 --quiet "
                        "--out m.h5"), 75);
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 8 --batch 4 --quiet --out m.h5"), 1);
    expect_stderr("mismatched resume", "m.h5.partial", "k 16", "k 8", "delete", NULL);
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --seq-len 16 --batch 4 --quiet --out m.h5"), 1);
    expect_stderr("mismatched resume", "m.h5.partial", "seq_len 32", "seq_len 16", NULL);
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --dtype f32 --batch 4 --quiet --out m.h5"), 1);
    expect_stderr("mismatched resume", "m.h5.partial", "dtype f16", "dtype f32", NULL);
    assert_true(exists("m.h5.partial"));
    assert_int_equal(partial_n_seq("m.h5"), 4);
    /* a validation file the interrupted run did not have */
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --batch 4 --val-out mv.h5 --val-fraction 0.3 --quiet "
                              "--out m.h5"), 1);
    expect_stderr("resume with a new --val-out", "m.h5.partial", "mv.h5.partial", NULL);
    assert_true(exists("m.h5.partial") && !exists("mv.h5.partial"));
    /* another teacher name is refused; the same directory spelled differently resumes */
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --batch 4 --teacher notok --tokenizer teacher/tokenizer.bin "
                              "--quiet --out m.h5"), 1);
    expect_stderr("resume with another teacher", "m.h5.partial", "teacher 'teacher'", "teacher 'notok'", NULL);
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --batch 4 --teacher ./teacher/ --quiet --out m.h5"), 0);
    assert_true(same_dump("r1.h5", "m.h5", 1));
    /* a finished dump is simply redone */
    assert_int_equal(kd(NULL, TEXT_ARGS(SEP_F) " --topk 16 --batch 4 --quiet --out m.h5"), 0);
    assert_true(same_dump("r1.h5", "m.h5", 1));
}

/* ---- 4. errors -------------------------------------------------------------------------------------- */

static void expect_error(int rc, const char *args, const char *n1, const char *n2) {
    int got = kd(NULL, "%s --quiet --out e.h5", args);
    if (got != rc) fail_msg("kd teacher %s: status %d, expected %d:\n%s", args, got, rc, slurp("err.txt"));
    expect_stderr(args, "kd teacher dump: ", n1, n2, NULL);
    assert_false(exists("e.h5") || exists("e.h5.partial"));
}

static void test_errors(void **state) {
    (void)state;
    setup_once();
    char a[2000];
    /* the tokenizer: not beside a .bin teacher, not in an imported directory, a given file missing */
    snprintf(a, sizeof a, "dump --teacher '%s' --text text.txt --seq-len 8", g_bin);
    expect_error(1, a, g_bin, "--tokenizer");
    expect_error(1, "dump --teacher notok --text text.txt --seq-len 8", "notok/tokenizer.bin", "--tokenizer");
    expect_error(1, "dump --teacher notok --tokenizer nothere.bin --text text.txt --seq-len 8", "tokenizer",
                 "nothere.bin");
    /* with the .bin teacher and its tokenizer it works */
    snprintf(a, sizeof a, "dump --teacher '%s' --tokenizer '%s' --text text.txt --seq-len 8 --quiet --out b.h5", g_bin,
             g_tok);
    assert_int_equal(kd(NULL, "%s", a), 0);
    info_ok("b.h5");
    /* modes */
    expect_error(2, "dump --teacher teacher --text text.txt --generate 3 --seq-len 8", "--text", "--generate");
    expect_error(2, "dump --teacher teacher --seq-len 8", "--text", "--generate");
    /* text files: missing, a directory */
    expect_error(1, "dump --teacher teacher --text missing.txt --seq-len 8", "missing.txt", "No such file");
    expect_error(1, "dump --teacher teacher --text text.txt teacher --seq-len 8", "text file", "teacher");
    /* the teacher */
    expect_error(1, "dump --teacher no/such/teacher --text text.txt --seq-len 8", "no/such/teacher", "no such file");
    /* --topk above the vocabulary is an error naming both (not a silent clamp); = V is fine */
    expect_error(1, "dump --teacher teacher --text text.txt --seq-len 8 --topk 513", "--topk 513", "512 logits");
    expect_error(1, "dump --teacher teacher --text text.txt --seq-len 8 --topk 5000", "--topk 5000", "4096");
    assert_int_equal(kd(NULL, "dump --teacher teacher --text text.txt --seq-len 8 --topk 512 --quiet --out b.h5"), 0);
    info_ok("b.h5");
    /* --seq-len beyond the teacher's context; a negative temperature */
    expect_error(1, "dump --teacher teacher --text text.txt --seq-len 129", "--seq-len 129",
                 "max_position_embeddings 128");
    expect_error(2, "dump --teacher teacher --generate 2 --temperature -1 --seq-len 8", "--temperature", "-1");
    /* --help documents the options */
    assert_int_equal(kd(NULL, "dump --help"), 0);
    char *h = slurp("out.txt");
    assert_non_null(strstr(h, "--doc-sep"));
    assert_non_null(strstr(h, "resumes"));
    free(h);
}

/* ---- 5. threads ------------------------------------------------------------------------------------- */

static void test_threads(void **state) {
    (void)state;
    setup_once();
    assert_int_equal(kd("OMP_NUM_THREADS=1", TEXT_ARGS(SEP_F) " --topk 16 --quiet --out th1.h5"), 0);
    const char *two = "OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive";   /* passive: no spinning on a loaded machine */
    assert_int_equal(kd(two, TEXT_ARGS(SEP_F) " --topk 16 --quiet --out th2.h5"), 0);
    assert_true(same_dump("th1.h5", "th2.h5", 1));
    const char *g = "dump --teacher teacher --generate 6 --seq-len 24 --topk 16 --seed 5 --quiet";
    assert_int_equal(kd("OMP_NUM_THREADS=1", "%s --out tg1.h5", g), 0);
    assert_int_equal(kd(two, "%s --out tg2.h5", g), 0);
    assert_true(same_dump("tg1.h5", "tg2.h5", 1));
    /* OpenBLAS's AVX2 kernels (Zen, Haswell) give thread-count-dependent threaded products;
     * kd's tiled products (core/kd_linalg.h) must not. Forced here so any AVX2 CPU checks it. */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        assert_int_equal(kd("OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell KD_ISA=avx2",
                            TEXT_ARGS(SEP_F) " --topk 16 --quiet --out hw1.h5"), 0);
        assert_int_equal(kd("OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive OPENBLAS_CORETYPE=Haswell KD_ISA=avx2",
                            TEXT_ARGS(SEP_F) " --topk 16 --quiet --out hw2.h5"), 0);
        assert_true(same_dump("hw1.h5", "hw2.h5", 1));
    }
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),   cmocka_unit_test(test_generate), cmocka_unit_test(test_resume),
        cmocka_unit_test(test_errors), cmocka_unit_test(test_threads),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
