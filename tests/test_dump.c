/*
 * test_dump.c — teacher dumps (data/kd_dump.h, docs/dump-format.md): kd
 * writes and h5py reads the same values (tests/py/dump_check.py); the documented
 * h5py/PyTorch recipe (tests/py/dump_recipe.py, also checked to be verbatim in
 * the docs) writes and kd reads and validates; corrupted dumps are rejected with
 * messages naming the dataset, the position and the file offset; interrupted
 * writers resume; `kd teacher info` summarises and fails on bad dumps.
 */
#include "kd_test.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/kd_cpu.h"
#include "core/kd_file.h"
#include "core/kd_fp16.h"
#include "data/kd_tokenizer_bpe.h"
#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"
#include "data/kd_dump_impl.h"
#include "data/kd_dump_tok.h"

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", kd_test_tmpdir(), name); }

static float r16(float x) { return kd_fp16_to_f32(kd_f32_to_fp16(x)); }

/* Random valid top-k data: distinct ids, descending log-probs with mass in [0.5, 0.99]. */
static void gen_topk(kd_rng *r, int64_t n, int64_t T, int k, int64_t V, int32_t *tok, uint8_t *mask, int32_t *ids,
                     float *lp) {
    for (int64_t i = 0; i < n * (T + 1); i++) tok[i] = (int32_t)kd_rng_below(r, (uint64_t)V);
    for (int64_t i = 0; mask && i < n * T; i++) mask[i] = (i % 11) != 10;
    for (int64_t p = 0; p < n * T; p++) {
        int32_t *id = ids + p * k;
        float *l = lp + p * k;
        double w[64], sum = 0, mass = 0.5 + 0.49 * kd_rng_uniform(r);
        for (int j = 0; j < k; j++) {
            int dup;
            do {
                id[j] = (int32_t)kd_rng_below(r, (uint64_t)V);
                dup = 0;
                for (int q = 0; q < j; q++) dup |= id[q] == id[j];
            } while (dup);
            double u = kd_rng_uniform(r) + 1e-3;
            sum += w[j] = u * u * u;
        }
        for (int j = 0; j < k; j++)   /* sort descending (insertion) */
            for (int q = j; q > 0 && w[q] > w[q - 1]; q--) {
                double t = w[q]; w[q] = w[q - 1]; w[q - 1] = t;
                int32_t ti = id[q]; id[q] = id[q - 1]; id[q - 1] = ti;
            }
        for (int j = 0; j < k; j++) l[j] = (float)log(w[j] / sum * mass);
    }
}

/* The tokenizer of dump_check.py's test_pieces(n). */
static void make_tokenizer(kd_dump_tokenizer *t, int32_t n) {
    memset(t, 0, sizeof *t);
    snprintf(t->model, sizeof t->model, "llama");
    t->n = n;
    t->piece_bytes = malloc((size_t)n * 16);
    t->piece_offsets = malloc((size_t)(n + 1) * 8);
    t->scores = malloc((size_t)n * 4);
    t->types = malloc((size_t)n * 4);
    int64_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        char p[32];
        if (i < 4) snprintf(p, sizeof p, "%s", (const char *[]){"<unk>", "<s>", "</s>", "\xc3\xa9"}[i]);
        else snprintf(p, sizeof p, "\xe2\x96\x81w%d", i);
        t->piece_offsets[i] = off;
        memcpy(t->piece_bytes + off, p, strlen(p));
        off += (int64_t)strlen(p);
        t->scores[i] = -(float)i;
        t->types[i] = i == 0 ? 2 : i < 3 ? 3 : 1;
    }
    t->piece_offsets[n] = off;
    t->bos_id = 1;
    t->eos_id = 2;
    t->unk_id = 0;
    t->pad_id = -1;
    t->add_bos = 1;
    t->add_space_prefix = 1;
}

static void write_bin(const char *prefix, const char *suffix, const void *p, size_t bytes) {
    char path[1200];
    snprintf(path, sizeof path, "%s.%s.bin", prefix, suffix);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, bytes, f), bytes);
    fclose(f);
}

static void *read_bin(const char *prefix, const char *suffix, size_t bytes) {
    char path[1200];
    snprintf(path, sizeof path, "%s.%s.bin", prefix, suffix);
    kd_err err;
    size_t len;
    void *p = kd_read_file(path, &len, &err);
    if (!p) fail_msg("%s", err.msg);
    assert_int_equal(len, bytes);
    return p;
}

#define CHECK(call) do { kd_err err_; if ((call) != 0) fail_msg("%s", err_.msg); } while (0)
#define E (&err_)

/* ---- kd writes, h5py and kd read ------------------------------------------------------ */

static void test_kd_writes_topk(void **state) {
    (void)state;
    enum { N = 7, T = 6, K = 5, V = 1000 };
    static int32_t tok[N * (T + 1)], ids[N * T * K], got_ids[N * T * K], got_tok[N * (T + 1)];
    static uint8_t mask[N * T], got_mask[N * T];
    static float lp[N * T * K], lp16[N * T * K], got_lp[N * T * K];
    kd_rng r;
    kd_rng_seed(&r, 11);
    gen_topk(&r, N, T, K, V, tok, mask, ids, lp);
    for (int i = 0; i < N * T * K; i++) lp16[i] = r16(lp[i]);
    kd_dump_tokenizer tz;
    make_tokenizer(&tz, 900);
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F16,
                      .has_loss_mask = 1};
    snprintf(m.teacher, sizeof m.teacher, "kd-test-teacher");
    char path[1024], ref[1024], partial[1100];
    tmp_path(path, sizeof path, "kd_topk.h5");
    tmp_path(ref, sizeof ref, "kd_topk_ref");
    snprintf(partial, sizeof partial, "%s.partial", path);
    kd_err err_;
    kd_dump_writer *w = kd_dump_writer_create(path, &m, &tz, &err_);
    if (!w) fail_msg("%s", err_.msg);
    assert_true(kd_file_exists(partial) && !kd_file_exists(path));
    CHECK(kd_dump_writer_append(w, 3, tok, mask, ids, lp, E));
    CHECK(kd_dump_writer_append(w, 0, NULL, NULL, NULL, NULL, E));
    CHECK(kd_dump_writer_append(w, N - 3, tok + 3 * (T + 1), mask + 3 * T, ids + 3 * T * K, lp + 3 * T * K, E));
    assert_int_equal(kd_dump_writer_n_seq(w), N);
    CHECK(kd_dump_writer_close(w, E));
    assert_true(kd_file_exists(path) && !kd_file_exists(partial));

    write_bin(ref, "tokens", tok, sizeof tok);
    write_bin(ref, "mask", mask, sizeof mask);
    write_bin(ref, "ids", ids, sizeof ids);
    write_bin(ref, "values", lp16, sizeof lp16);
    assert_int_equal(kd_test_python("dump_check.py", "read-kd '%s' '%s'", path, ref), 0);

    kd_dump *d = kd_dump_open(path, &err_);
    if (!d) fail_msg("%s", err_.msg);
    const kd_dump_meta *g = kd_dump_get_meta(d);
    assert_int_equal(g->n_seq, N);
    assert_int_equal(g->k, K);
    assert_string_equal(g->ids_dtype, "uint16");
    assert_string_equal(g->values_dtype, "float16");
    assert_string_equal(g->teacher, "kd-test-teacher");
    assert_true(g->has_loss_mask && g->has_tokenizer);
    kd_dump_rows rows = {.tokens = got_tok, .loss_mask = got_mask, .topk_ids = got_ids, .topk_logprobs = got_lp};
    CHECK(kd_dump_read(d, 0, N, &rows, E));
    assert_memory_equal(got_tok, tok, sizeof tok);
    assert_memory_equal(got_mask, mask, sizeof mask);
    assert_memory_equal(got_ids, ids, sizeof ids);
    assert_memory_equal(got_lp, lp16, sizeof lp16);
    KD_ASSERT_CLOSE("f16 log-probs", got_lp, lp, N * T * K, 1e-3, 2e-3);
    CHECK(kd_dump_read(d, 5, 2, &rows, E));   /* a range, in place of the first two */
    assert_memory_equal(got_ids, ids + 5 * T * K, 2 * T * K * 4);
    assert_int_equal(kd_dump_read(d, 6, 2, &rows, E), -1);
    assert_non_null(strstr(err_.msg, "sequences [6, 8) requested, the dump has 7"));
    kd_dump_rows bad = {.logits = got_lp};
    assert_int_equal(kd_dump_read(d, 0, 1, &bad, E), -1);
    assert_non_null(strstr(err_.msg, "logits requested from a top-k dump"));

    kd_dump_tokenizer t2;
    CHECK(kd_dump_read_tokenizer(d, &t2, E));
    CHECK(kd_dump_tokenizer_compare(&t2, "dump", &tz, "test", E));
    t2.piece_bytes[t2.piece_offsets[7] + 3] ^= 1;
    assert_int_equal(kd_dump_tokenizer_compare(&t2, "dump", &tz, "test", E), -1);
    assert_non_null(strstr(err_.msg, "tokenizers differ at piece 7"));
    kd_dump_tokenizer_free(&t2);
    kd_dump_report rep;
    CHECK(kd_dump_check(d, &rep, E));
    assert_int_equal(rep.n_positions, N * T);
    assert_true(rep.n_masked > 0 && rep.mean_topk_mass > 0.5 && rep.mean_topk_mass < 1 && !rep.bad);
    assert_true(kd_dump_storage_bytes(d) >= (uint64_t)(N * T * K * 4));
    kd_dump_close(d);
    kd_dump_tokenizer_free(&tz);
}

static void test_kd_writes_full(void **state) {
    (void)state;
    enum { N = 3, T = 5, V = 37 };
    static int32_t tok[N * (T + 1)];
    static uint8_t mask[N * T];
    static float z[N * T * V], got[N * T * 50];
    kd_rng r;
    kd_rng_seed(&r, 5);
    for (int i = 0; i < N * (T + 1); i++) tok[i] = (int32_t)kd_rng_below(&r, V);
    for (int i = 0; i < N * T; i++) mask[i] = 1;
    kd_test_fill_normal(&r, z, N * T * V, 3.0f);
    z[4] = -INFINITY;   /* a masked-out vocabulary entry is fine */
    kd_dump_tokenizer tz;
    make_tokenizer(&tz, V);
    kd_dump_meta m = {.vocab_size = V, .k = 0, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32,
                      .has_loss_mask = 1};
    snprintf(m.teacher, sizeof m.teacher, "kd-test-teacher");
    char path[1024], ref[1024];
    tmp_path(path, sizeof path, "kd_full.h5");
    tmp_path(ref, sizeof ref, "kd_full_ref");
    kd_err err_;
    kd_dump_writer *w = kd_dump_writer_create(path, &m, &tz, &err_);
    if (!w) fail_msg("%s", err_.msg);
    assert_int_equal(kd_dump_writer_append(w, N, tok, NULL, (int32_t *)tok, z, E), -1);   /* ids for a full dump */
    assert_non_null(strstr(err_.msg, "logits (and no ids)"));
    CHECK(kd_dump_writer_append(w, N, tok, NULL, NULL, z, E));
    CHECK(kd_dump_writer_close(w, E));
    write_bin(ref, "tokens", tok, sizeof tok);
    write_bin(ref, "mask", mask, sizeof mask);
    write_bin(ref, "values", z, sizeof z);
    assert_int_equal(kd_test_python("dump_check.py", "read-kd '%s' '%s'", path, ref), 0);
    kd_dump *d = kd_dump_open(path, &err_);
    if (!d) fail_msg("%s", err_.msg);
    kd_dump_rows rows = {.logits = got, .logits_width = 50};   /* padded with -inf */
    CHECK(kd_dump_read(d, 0, N, &rows, E));
    for (int p = 0; p < N * T; p++)
        for (int j = 0; j < 50; j++)
            if (j < V) assert_memory_equal(&got[p * 50 + j], &z[p * V + j], 4);
            else assert_true(got[p * 50 + j] == -INFINITY);
    rows.logits_width = 20;   /* cut */
    CHECK(kd_dump_read(d, 1, 2, &rows, E));
    for (int p = 0; p < 2 * T; p++) assert_memory_equal(&got[p * 20], &z[(T + p) * V], 20 * 4);
    kd_dump_report rep;
    CHECK(kd_dump_check(d, &rep, E));
    assert_true(rep.mean_top1_prob > 0 && rep.mean_top1_prob < 1);
    kd_dump_close(d);

    /* float16 storage refuses logits it would turn into inf */
    m.value_dtype = KD_DUMP_F16;
    w = kd_dump_writer_create(path, &m, NULL, &err_);
    if (!w) fail_msg("%s", err_.msg);
    z[V + 3] = 1e5f;
    assert_int_equal(kd_dump_writer_append(w, N, tok, NULL, NULL, z, E), -1);
    assert_non_null(strstr(err_.msg, "dataset 'logits': sequence 0 of the append, position 1, slot 3: logit 100000 overflows float16"));
    kd_dump_writer_abort(w);
    kd_dump_tokenizer_free(&tz);
}

/* ---- the h5py recipe -------------------------------------------------------------------- */

static void test_recipe(void **state) {
    (void)state;
    enum { N = 6, T = 16, K = 8, V = 300 };
    char path[1024], ref[1024], doc[1024], recipe[1024];
    tmp_path(path, sizeof path, "recipe.h5");
    tmp_path(ref, sizeof ref, "recipe_ref");
    assert_int_equal(kd_test_python("dump_recipe.py", "'%s' '%s'", path, ref), 0);
    snprintf(doc, sizeof doc, "%s/docs/dump-format.md", kd_test_env("KD_SOURCE_DIR"));
    snprintf(recipe, sizeof recipe, "%s/tests/py/dump_recipe.py", kd_test_env("KD_SOURCE_DIR"));
    assert_int_equal(kd_test_python("dump_check.py", "doc-sync '%s' '%s'", doc, recipe), 0);
    assert_int_equal(kd_test_python("dump_check.py", "read-example '%s'", path), 0);

    kd_err err_;
    kd_dump_report rep;
    if (kd_dump_validate(path, &rep, &err_)) fail_msg("%s", err_.msg);
    assert_int_equal(rep.n_masked, 2 * 4);
    kd_dump *d = kd_dump_open(path, &err_);
    if (!d) fail_msg("%s", err_.msg);
    const kd_dump_meta *m = kd_dump_get_meta(d);
    assert_true(m->n_seq == N && m->seq_len == T && m->k == K && m->vocab_size == V);
    assert_string_equal(m->teacher, "tiny-random-torch");
    assert_string_equal(m->ids_dtype, "uint16");
    static int32_t tok[N * (T + 1)], ids[N * T * K];
    static float lp[N * T * K];
    static uint8_t mask[N * T];
    kd_dump_rows rows = {.tokens = tok, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
    CHECK(kd_dump_read(d, 0, N, &rows, E));
    int32_t *rtok = read_bin(ref, "tokens", sizeof tok), *rids = read_bin(ref, "ids", sizeof ids);
    float *rlp = read_bin(ref, "logprobs", sizeof lp);
    assert_memory_equal(tok, rtok, sizeof tok);
    assert_memory_equal(ids, rids, sizeof ids);
    KD_ASSERT_CLOSE("recipe log-probs", lp, rlp, N * T * K, 1e-3, 1e-3);
    assert_int_equal(mask[2 * T + T - 1], 0);
    assert_int_equal(mask[2 * T + T - 5], 1);
    kd_dump_tokenizer tz;
    CHECK(kd_dump_read_tokenizer(d, &tz, E));
    assert_int_equal(tz.n, V);
    assert_true(tz.bos_id == 1 && tz.eos_id == 2 && tz.unk_id == 0 && tz.pad_id == -1 && tz.add_bos && !tz.add_eos);
    assert_memory_equal(tz.piece_bytes + tz.piece_offsets[3], "\xe2\x96\x81t0", 5);
    assert_int_equal(tz.types[1], 3);
    kd_dump_tokenizer_free(&tz);
    kd_dump_close(d);
    /* the recipe's byte-level BPE tokenizer: merges (given as strings and as pairs) and pre */
    char gp[1100];
    snprintf(gp, sizeof gp, "%s.gpt2.h5", path);
    if (!(d = kd_dump_open(gp, &err_))) fail_msg("%s", err_.msg);
    CHECK(kd_dump_read_tokenizer(d, &tz, E));
    kd_dump_close(d);
    assert_string_equal(tz.model, "gpt2");
    assert_string_equal(tz.pre, "qwen2");
    assert_int_equal(tz.n, 260);
    assert_int_equal(tz.n_merges, 3);
    assert_int_equal(tz.merge_offsets[2] - tz.merge_offsets[1], 3);
    assert_memory_equal(tz.merge_bytes + tz.merge_offsets[1], "h e", 3);
    kd_tokenizer *bt = kd_tokenizer_from_dump(&tz, gp, &err_);
    if (!bt) fail_msg("%s", err_.msg);
    assert_string_equal(kd_tokenizer_model(bt), "gpt2");
    int32_t the = 259;
    char *txt;
    size_t tl;
    CHECK(kd_tokenizer_decode(bt, &the, 1, 0, &txt, &tl, E));
    assert_string_equal(txt, " the");
    free(txt);
    kd_tokenizer_free(bt);
    kd_dump_tokenizer_free(&tz);
    free(rtok);
    free(rids);
    free(rlp);
}

/* ---- corrupted dumps -------------------------------------------------------------------- */

typedef struct bad_case {
    const char *file;
    int structural;                  /* 1: kd_dump_open fails */
    const char *subs[4];             /* substrings of the message */
    int64_t seq, pos, slot;          /* the first bad element (data cases) */
    int check_bytes;                 /* 2: the bytes at the offset are fp16 NaN; 1: uint16 value 50 */
} bad_case;

static void test_corrupt(void **state) {
    (void)state;
    char dir[1024], path[1200];
    tmp_path(dir, sizeof dir, "variants");
    assert_int_equal(kd_test_sh("mkdir -p '%s'", dir), 0);
    assert_int_equal(kd_test_python("dump_check.py", "write-variants '%s'", dir), 0);
    static const bad_case cases[] = {
        {"nan", 0, {"dataset 'topk_logprobs'", "sequence 2, position 5, slot 1", "NaN", "file offset"}, 2, 5, 1, 2},
        {"posinf", 0, {"'topk_logprobs'", "sequence 0, position 0, slot 0", "+Inf"}, 0, 0, 0, 0},
        {"unsorted", 0, {"'topk_logprobs'", "sequence 1, position 3, slot 1", "not sorted"}, 1, 3, 1, 0},
        {"sum", 0, {"'topk_logprobs'", "sequence 3, position 0:", "sum to 1.249"}, 3, 0, -1, 0},
        {"idrange", 0, {"dataset 'topk_ids'", "sequence 0, position 7, slot 3", "id 50 outside [0, 50)"}, 0, 7, 3, 1},
        {"dupid", 0, {"'topk_ids'", "sequence 2, position 2, slot 1", "appears twice"}, 2, 2, 1, 0},
        {"tokrange", 0, {"dataset 'tokens'", "sequence 1, token 4", "token id 60 outside"}, 1, 4, -1, 0},
        {"gzipnan", 0, {"'topk_logprobs'", "sequence 1, position 1, slot 1", "in the compressed chunk at file offset"}, 1, 1, 1, 0},
        {"contignan", 0, {"'topk_logprobs'", "sequence 2, position 6, slot 3", "NaN"}, 2, 6, 3, 2},
        {"lp_int32", 1, {"dataset 'topk_logprobs': dtype int32, expected float16 or float32"}, 0, 0, 0, 0},
        {"lp_f64", 1, {"dataset 'topk_logprobs': dtype float64"}, 0, 0, 0, 0},
        {"ids_f32", 1, {"dataset 'topk_ids': dtype float32, expected uint16 (or int32)"}, 0, 0, 0, 0},
        {"mask_bool", 1, {"dataset 'loss_mask': dtype enum (numpy bool?), expected uint8"}, 0, 0, 0, 0},
        {"ids_narrow", 1, {"dataset 'topk_ids': dtype uint16, expected int32 (too narrow"}, 0, 0, 0, 0},
        {"no_vocab", 1, {"attribute 'vocab_size' is missing"}, 0, 0, 0, 0},
        {"bad_format", 1, {"attribute 'format' = \"something-else\", expected \"kd-teacher-dump\""}, 0, 0, 0, 0},
        {"version2", 1, {"attribute 'version' = 2, expected 1"}, 0, 0, 0, 0},
        {"temp2", 1, {"attribute 'temperature' = 2, expected 1"}, 0, 0, 0, 0},
        {"nseq", 1, {"attribute 'n_seq' = 3 but the datasets hold 4"}, 0, 0, 0, 0},
        {"no_lp", 1, {"dataset 'topk_logprobs' is missing"}, 0, 0, 0, 0},
        {"bad_shape", 1, {"dataset 'topk_ids': shape [4, 8, 5], expected [n_seq, 8, 4]"}, 0, 0, 0, 0},
        {"not_dump", 1, {"attribute 'format' is missing, expected \"kd-teacher-dump\""}, 0, 0, 0, 0},
        {"truncated", 1, {"not a readable HDF5 file", "truncated"}, 0, 0, 0, 0},
        {"text", 1, {"not a readable HDF5 file"}, 0, 0, 0, 0},
        {"missing_file", 1, {"no such file"}, 0, 0, 0, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const bad_case *bc = &cases[c];
        snprintf(path, sizeof path, "%s/%s.h5", dir, bc->file);
        kd_err err = {{0}};
        kd_dump_report rep;
        if (kd_dump_validate(path, &rep, &err) == 0) fail_msg("%s: accepted", bc->file);
        if (!strstr(err.msg, path)) fail_msg("%s: message \"%s\" does not name the file", bc->file, err.msg);
        for (int i = 0; i < 4 && bc->subs[i]; i++)
            if (!strstr(err.msg, bc->subs[i])) fail_msg("%s: message \"%s\" lacks \"%s\"", bc->file, err.msg, bc->subs[i]);
        if (bc->structural) {
            assert_int_equal(rep.bad, 0);
            continue;
        }
        if (!rep.bad || rep.seq != bc->seq || rep.pos != bc->pos || rep.slot != bc->slot)
            fail_msg("%s: reported bad=%d at (%lld, %lld, %lld)", bc->file, rep.bad, (long long)rep.seq,
                     (long long)rep.pos, (long long)rep.slot);
        assert_true(rep.file_offset > 0);
        if (bc->check_bytes) {   /* the offset points at the bad element's bytes */
            FILE *f = fopen(path, "rb");
            unsigned char b[2];
            assert_int_equal(fseek(f, rep.file_offset, SEEK_SET), 0);
            assert_int_equal(fread(b, 1, 2, f), 2);
            fclose(f);
            uint16_t v = (uint16_t)(b[0] | b[1] << 8);
            if (bc->check_bytes == 2) assert_true((v & 0x7c00) == 0x7c00 && (v & 0x3ff));
            else assert_int_equal(v, 50);
        }
    }
    kd_err err;
    const char *ok[] = {"good", "masknan", "bytes_attrs"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s.h5", dir, ok[i]);
        if (kd_dump_validate(path, NULL, &err)) fail_msg("%s: %s", ok[i], err.msg);
    }
    /* every truncation of a valid dump is refused without crashing */
    snprintf(path, sizeof path, "%s/good.h5", dir);
    size_t len;
    char *bytes = kd_read_file(path, &len, &err);
    assert_non_null(bytes);
    char cut[1200];
    snprintf(cut, sizeof cut, "%s/cut.h5", dir);
    for (size_t n = 0; n < len; n += len / 23 + 1) {
        assert_int_equal(kd_write_file_atomic(cut, bytes, n, &err), 0);
        if (kd_dump_validate(cut, NULL, &err) == 0) fail_msg("truncated to %zu of %zu bytes: accepted", n, len);
    }
    free(bytes);
}

/* ---- writer checks and resume ---------------------------------------------------------- */

static void test_writer_rejects(void **state) {
    (void)state;
    enum { T = 4, K = 3, V = 20 };
    int32_t tok[T + 1] = {1, 2, 3, 4, 5}, ids[T * K];
    float lp[T * K];
    uint8_t mask[T] = {1, 1, 1, 1};
    kd_rng r;
    kd_rng_seed(&r, 3);
    gen_topk(&r, 1, T, K, V, tok, NULL, ids, lp);
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32};
    char path[1024];
    tmp_path(path, sizeof path, "rejects.h5");
    kd_err err_;
    m.temperature = 2;
    assert_null(kd_dump_writer_create(path, &m, NULL, &err_));
    assert_non_null(strstr(err_.msg, "temperature 2, expected 1"));
    m.temperature = 1;
    m.k = V + 1;
    assert_null(kd_dump_writer_create(path, &m, NULL, &err_));
    assert_non_null(strstr(err_.msg, "k 21"));
    m.k = K;
    kd_dump_writer *w = kd_dump_writer_create(path, &m, NULL, &err_);
    if (!w) fail_msg("%s", err_.msg);
    assert_int_equal(kd_dump_writer_append(w, 1, tok, mask, ids, lp, E), -1);
    assert_non_null(strstr(err_.msg, "created without one"));
    float keep = lp[5];
    lp[5] = NAN;
    assert_int_equal(kd_dump_writer_append(w, 1, tok, NULL, ids, lp, E), -1);
    assert_non_null(strstr(err_.msg, "dataset 'topk_logprobs': sequence 0 of the append, position 1, slot 2: log-prob is NaN"));
    lp[5] = lp[3] + 1;
    assert_int_equal(kd_dump_writer_append(w, 1, tok, NULL, ids, lp, E), -1);
    assert_non_null(strstr(err_.msg, "not sorted"));
    lp[5] = keep;
    ids[7] = V;
    assert_int_equal(kd_dump_writer_append(w, 1, tok, NULL, ids, lp, E), -1);
    assert_non_null(strstr(err_.msg, "dataset 'topk_ids': sequence 0 of the append, position 2, slot 1: id 20 outside"));
    ids[7] = ids[6];
    assert_int_equal(kd_dump_writer_append(w, 1, tok, NULL, ids, lp, E), -1);
    assert_non_null(strstr(err_.msg, "appears twice"));
    gen_topk(&r, 1, T, K, V, tok, NULL, ids, lp);
    tok[4] = -1;
    assert_int_equal(kd_dump_writer_append(w, 1, tok, NULL, ids, lp, E), -1);
    assert_non_null(strstr(err_.msg, "dataset 'tokens': sequence 0 of the append, token 4: id -1"));
    tok[4] = 0;
    for (int j = 0; j < K; j++) lp[j] = (float)log(0.5);
    assert_int_equal(kd_dump_writer_append(w, 1, tok, NULL, ids, lp, E), -1);
    assert_non_null(strstr(err_.msg, "position 0, slot -1: probabilities sum to 1.5"));
    assert_int_equal(kd_dump_writer_n_seq(w), 0);
    kd_dump_writer_abort(w);
    char partial[1100];
    snprintf(partial, sizeof partial, "%s.partial", path);
    assert_false(kd_file_exists(partial) || kd_file_exists(path));
}

static void test_resume(void **state) {
    (void)state;
    enum { N = 9, T = 5, K = 4, V = 70000 };   /* int32 ids */
    static int32_t tok[N * (T + 1)], ids[N * T * K], got[N * T * K];
    static uint8_t mask[N * T];
    static float lp[N * T * K], glp[N * T * K];
    kd_rng r;
    kd_rng_seed(&r, 99);
    gen_topk(&r, N, T, K, V, tok, mask, ids, lp);
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32,
                      .has_loss_mask = 1};
    char path[1024], partial[1100];
    tmp_path(path, sizeof path, "resume.h5");
    snprintf(partial, sizeof partial, "%s.partial", path);
    kd_err err_;
    pid_t pid = fork();
    if (pid == 0) {   /* a writer killed after its second append */
        kd_dump_writer *w = kd_dump_writer_create(path, &m, NULL, &err_);
        if (!w || kd_dump_writer_append(w, 2, tok, mask, ids, lp, E) ||
            kd_dump_writer_append(w, 1, tok + 2 * (T + 1), mask + 2 * T, ids + 2 * T * K, lp + 2 * T * K, E))
            _exit(3);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_false(kd_file_exists(path));
    /* an append cut short: datasets grown, n_seq not updated */
    hid_t f = H5Fopen(partial, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t ds = H5Dopen2(f, "topk_ids", H5P_DEFAULT);
    hsize_t dims[3] = {7, T, K};
    assert_true(H5Dset_extent(ds, dims) >= 0);
    H5Dclose(ds);
    H5Fclose(f);

    kd_dump_writer *w = kd_dump_writer_resume(path, &err_);
    if (!w) fail_msg("%s", err_.msg);
    assert_int_equal(kd_dump_writer_n_seq(w), 3);
    CHECK(kd_dump_writer_append(w, 4, tok + 3 * (T + 1), mask + 3 * T, ids + 3 * T * K, lp + 3 * T * K, E));
    CHECK(kd_dump_writer_close(w, E));
    w = kd_dump_writer_resume(path, &err_);   /* extend a finished dump */
    if (!w) fail_msg("%s", err_.msg);
    assert_false(kd_file_exists(path));
    CHECK(kd_dump_writer_append(w, 2, tok + 7 * (T + 1), mask + 7 * T, ids + 7 * T * K, lp + 7 * T * K, E));
    CHECK(kd_dump_writer_close(w, E));

    kd_dump_report rep;
    if (kd_dump_validate(path, &rep, &err_)) fail_msg("%s", err_.msg);
    kd_dump *d = kd_dump_open(path, &err_);
    assert_non_null(d);
    assert_int_equal(kd_dump_get_meta(d)->n_seq, N);
    assert_string_equal(kd_dump_get_meta(d)->ids_dtype, "int32");
    kd_dump_rows rows = {.topk_ids = got, .topk_logprobs = glp};
    CHECK(kd_dump_read(d, 0, N, &rows, E));
    assert_memory_equal(got, ids, sizeof ids);
    assert_memory_equal(glp, lp, sizeof lp);
    kd_dump_close(d);
    assert_null(kd_dump_writer_resume("/nonexistent/x.h5", &err_));
    assert_non_null(strstr(err_.msg, "cannot resume"));
}

/* ---- kd teacher info ---------------------------------------------------------------------- */

static void test_cli(void **state) {
    (void)state;
    char dir[1024];
    tmp_path(dir, sizeof dir, "cli");
    assert_int_equal(kd_test_sh("mkdir -p '%s'", dir), 0);
    assert_int_equal(kd_test_python("dump_check.py", "write-variants '%s'", dir), 0);
    const char *kd = kd_test_env("KD_BIN");
    assert_int_equal(kd_test_sh("'%s' teacher info '%s/good.h5' > '%s/out.txt'", kd, dir, dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'sequences    4 x 8 positions = 32 tokens' '%s/out.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'distribution top-4: topk_ids uint16, topk_logprobs float16' '%s/out.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'teacher      numpy-test' '%s/out.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^check        ok: 32 positions (2 masked)' '%s/out.txt'", dir), 0);
    {   /* the mean top-k mass, for choosing kd_mode: the validator's figure, and what it means */
        char p[1100];
        snprintf(p, sizeof p, "%s/good.h5", dir);
        kd_dump_report rep;
        kd_err err;
        assert_int_equal(kd_dump_validate(p, &rep, &err), 0);
        snprintf(p, sizeof p, "%s/out.txt", dir);
        char *out = kd_read_file(p, NULL, &err), *at = out ? strstr(out, "\ntop-k mass   mean ") : NULL;
        assert_non_null(at);
        double mass = atof(at + 19);
        fprintf(stderr, "kd teacher info: mean top-4 mass %.4f (validator %.6f)\n", mass, rep.mean_topk_mass);
        assert_true(fabs(mass - rep.mean_topk_mass) <= 5e-5 && mass > 0 && mass < 1);
        assert_non_null(strstr(at, rep.mean_topk_mass < 0.98 ? "train with kd_mode topk_tail" : "nearly agree"));
        free(out);
    }
    assert_int_equal(kd_test_sh("'%s' teacher info '%s/nan.h5' > '%s/out.txt' 2> '%s/err.txt'", kd, dir, dir, dir), 1);
    assert_int_equal(kd_test_sh("grep -q \"INVALID: .*dataset 'topk_logprobs': sequence 2, position 5, slot 1: log-prob "
                                "is NaN (file offset [0-9]*)\" '%s/err.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'first bad    dataset topk_logprobs, sequence 2, position 5, slot 1' '%s/out.txt'", dir), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info '%s/lp_int32.h5' 2> '%s/err.txt' >/dev/null", kd, dir, dir), 1);
    assert_int_equal(kd_test_sh("grep -q 'dtype int32, expected float16 or float32' '%s/err.txt'", dir), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info --no-check '%s/nan.h5' >/dev/null", kd, dir), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info --help | grep -q 'usage: kd teacher info'", kd), 0);
    assert_int_equal(kd_test_sh("'%s' teacher 2>/dev/null", kd), 2);
    assert_int_equal(kd_test_sh("'%s' teacher --help | grep -q '  info '", kd), 0);
    assert_int_equal(kd_test_sh("'%s' teacher bogus 2>/dev/null", kd), 2);
    assert_int_equal(kd_test_sh("'%s' --help | grep -q '  teacher '", kd), 0);
}


/* ---- the loader's per-position check: fast path = exact verdicts ----------------------- */

/* kd_dump_check_position (a float exp and vector code first, kdd_check_topk when that cannot prove the
 * position fine) must give exactly kdd_check_topk's verdict, slot and message. */
static void expect_same_verdict(const kd_dump_meta *m, const int32_t *ids, const float *lp, uint32_t *stamp,
                                uint32_t *mark) {
    double eps = m->value_dtype == KD_DUMP_F16 ? 1.0 / 2048 : 1.0 / 16777216, eps_abs = 0;
    if (m->packed) eps = kdd_pack_check_eps(m, &eps_abs);
    kdd_pos_stats st;
    int64_t slot_a = -7, slot_b = -7;
    char what_a[160] = "", what_b[160] = "";
    int a = kd_dump_check_position(m, ids, lp, m->k, stamp, mark, &slot_a, what_a, sizeof what_a);
    int b = kdd_check_topk(ids, lp, m->k, m->vocab_size, 0, eps, eps_abs, stamp, mark, &st, &slot_b, what_b,
                           sizeof what_b);
    assert_int_equal(a, b);
    if (a) {
        assert_int_equal(slot_a, slot_b);
        assert_string_equal(what_a, what_b);
    }
}

static void test_check_position(void **state) {
    (void)state;
    /* the float exp against libm's over [−87, 0.001] (a million points and the ends) */
    double worst = 0;
    for (int i = 0; i <= 1000000; i++) {
        float x = i == 1000000 ? 0.001f : -87.0f + 87.001f * (float)i / 1e6f;
        double e = exp((double)x), r = fabs((double)kdd_fexp(x) - e) / e;
        worst = r > worst ? r : worst;
    }
    assert_true(worst < 1e-6);   /* the check's margins assume < 4e-6 */
    kd_rng r;
    kd_rng_seed(&r, 99);
    const int64_t V = 300;
    uint32_t *stamp = calloc((size_t)V, sizeof *stamp), mark = 0;
    int32_t ids[100], tok[2];
    float lp[100];
    const int ks[] = {1, 7, 8, 9, 64, 100};
    int fails = 0;
    for (int generic = 0; generic < 2; generic++)   /* the CPU's vector path, then the plain x86-64 one */
    for (int kc = 0; kc < 6; kc++)
        for (int layout = 0; layout < 3; layout++) {   /* float16, float32, packed */
            int k = ks[kc];
            kd_cpu_set_generic(generic);
            kd_dump_meta m = {.vocab_size = V, .k = k, .seq_len = 1,
                              .value_dtype = layout == 1 ? KD_DUMP_F32 : KD_DUMP_F16, .packed = layout == 2,
                              .pack_step = KD_PACK_STEP_DEFAULT, .pack_knee = KD_PACK_KNEE_DEFAULT};
            for (int trial = 0; trial < 40; trial++) {
                int64_t kk = k <= 64 ? k : 64;   /* gen_topk fills ≤ 64 entries; the rest: −inf */
                gen_topk(&r, 1, 1, (int)kk, V, tok, NULL, ids, lp);
                for (int j = (int)kk; j < k; j++) ids[j] = 0, lp[j] = -INFINITY;
                expect_same_verdict(&m, ids, lp, stamp, &mark);
                int j = (int)kd_rng_below(&r, (uint64_t)kk), save_id = ids[j];
                float save = lp[j];
                switch (trial % 8) {   /* one defect at a random slot */
                case 0: lp[j] = NAN; break;
                case 1: lp[j] = INFINITY; break;
                case 2: lp[j] = 0.002f; break;
                case 3: lp[j] = j ? lp[j - 1] + 0.5f : lp[0]; break;
                case 4: ids[j] = ids[j ? j - 1 : kk - 1]; break;
                case 5: ids[j] = trial & 1 ? -1 : (int32_t)V; break;
                case 6: lp[0] = -INFINITY; break;
                default: lp[j] = -INFINITY; break;   /* −inf in the middle: unsorted unless at the end */
                }
                expect_same_verdict(&m, ids, lp, stamp, &mark);
                fails += kd_dump_check_position(&m, ids, lp, k, stamp, &mark, &(int64_t){0}, (char[160]){0}, 160) != 0;
                ids[j] = save_id;
                lp[j] = save;
            }
            /* Σp at the limit: k equal entries log q, stepped float by float across the verdict's change */
            double eps = layout == 1 ? 1.0 / 16777216 : 1.0 / 2048, eps_abs = 0;
            if (layout == 2) eps = kdd_pack_check_eps(&m, &eps_abs);
            double qlo = 1e-9, qhi = 1.0;   /* the q where k·q = 1 + tol + eps·k·q·|log q| + eps_abs·k·q */
            for (int it = 0; it < 200; it++) {
                double q = 0.5 * (qlo + qhi);
                if (k * q > 1 + KD_DUMP_SUM_TOL + eps * k * q * fabs(log(q)) + eps_abs * k * q) qhi = q;
                else qlo = q;
            }
            float x0 = qhi < 1.0 ? (float)log(qhi) : 0.0009f, x = x0;
            int seen[2] = {0, 0};
            for (int i = 0; i < k; i++) ids[i] = i;
            for (int i = 0; i < 3000; i++) {
                for (int q = 0; q < k; q++) lp[q] = x;
                expect_same_verdict(&m, ids, lp, stamp, &mark);
                seen[kd_dump_check_position(&m, ids, lp, k, stamp, &mark, &(int64_t){0}, (char[160]){0}, 160) != 0] = 1;
                x = i < 1499 ? nextafterf(x, INFINITY) : i == 1499 ? x0 : nextafterf(x, -INFINITY);
            }
            if (k > 1) assert_true(seen[0] && seen[1]);   /* the sweep crossed the limit */
        }
    kd_cpu_set_generic(0);
    assert_true(fails > 2 * (6 * 3 * 40 * 7 / 8 - 40));   /* the defects were seen (not every −inf is one) */
    free(stamp);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_kd_writes_topk), cmocka_unit_test(test_kd_writes_full), cmocka_unit_test(test_recipe),
    cmocka_unit_test(test_corrupt),        cmocka_unit_test(test_writer_rejects), cmocka_unit_test(test_resume),
    cmocka_unit_test(test_cli),            cmocka_unit_test(test_check_position),
};
KD_TEST_MAIN(tests)
