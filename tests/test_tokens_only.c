/*
 * test_tokens_only.c — tokens-only dumps (attribute distribution = "none",
 * docs/dump-format.md "Tokens-only dumps"): text with no teacher
 * distribution, trained with plain cross-entropy (alpha = 0).
 *   - h5py writes one with the docs' snippet (tests/py/tokens_only_check.py)
 *     and kd reads and validates it; kd writes one and h5py reads it; the
 *     reader rejects "none" dumps with teacher datasets and "topk"/"logits"
 *     dumps without them; the validator checks tokens and masks only; the
 *     writer refuses teacher data and resumes an interrupted dump;
 *   - the loader: batches without teacher data (k 0, NULL pointers), split
 *     and cursor as usual, and no mixing with teacher dumps (both files named);
 *   - `kd teacher dump --tokens-only`: the same sequences and loss_mask, token
 *     for token, as the text mode with a teacher (aidreams260K + tok512.bin),
 *     with and without --val-out; resume; option errors; `kd teacher info`;
 *   - `kd train` with alpha 0 on a tokens-only dump lowers the validation CE,
 *     reports ce/ppl/tokens without kl/top1, refuses alpha > 0 naming the file
 *     and the key; a teacher validation dump still gets kl/top1; `kd eval`.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "data/kd_loader.h"
#include "data/kd_dump.h"

#define CHECK(call) do { if ((call) != 0) fail_msg("%s", err.msg); } while (0)

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", kd_test_tmpdir(), name); }

static void *read_bin(const char *path, size_t bytes) {
    kd_err err;
    size_t len;
    void *p = kd_read_file(path, &len, &err);
    if (!p) fail_msg("%s", err.msg);
    assert_int_equal(len, bytes);
    return p;
}

static void write_bin(const char *path, const void *p, size_t bytes) {
    kd_err err;
    CHECK(kd_write_file_atomic(path, p, bytes, &err));
}

/* ---- 1. h5py writes (the docs' snippet), kd reads and validates ------------------------------- */

typedef struct bad_case {
    const char *file;
    const char *subs[3];
} bad_case;

static void test_h5py_writes(void **state) {
    (void)state;
    enum { N = 5, T = 8, V = 50 };
    char dir[1024], path[1200], doc[1024];
    tmp_path(dir, sizeof dir, "py");
    assert_int_equal(kd_test_sh("mkdir -p '%s'", dir), 0);
    snprintf(doc, sizeof doc, "%s/docs/dump-format.md", kd_test_env("KD_SOURCE_DIR"));
    assert_int_equal(kd_test_python("tokens_only_check.py", "write-doc '%s' '%s'", doc, dir), 0);

    kd_err err;
    snprintf(path, sizeof path, "%s/text.h5", dir);
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) fail_msg("%s", err.msg);
    const kd_dump_meta *m = kd_dump_get_meta(d);
    assert_true(m->tokens_only && m->k == 0 && m->n_seq == N && m->seq_len == T && m->vocab_size == V);
    assert_true(m->has_loss_mask && m->has_tokenizer);
    assert_string_equal(m->teacher, "");
    assert_string_equal(m->values_dtype, "");
    static int32_t tok[N * (T + 1)];
    static uint8_t mask[N * T];
    static float val[N * T * V];
    static int32_t ids[N * T * 4];
    kd_dump_rows rows = {.tokens = tok, .loss_mask = mask};
    CHECK(kd_dump_read(d, 0, N, &rows, &err));
    char ref[1300];
    snprintf(ref, sizeof ref, "%s/text_ref.tokens.bin", dir);
    int32_t *rtok = read_bin(ref, sizeof tok);
    snprintf(ref, sizeof ref, "%s/text_ref.mask.bin", dir);
    uint8_t *rmask = read_bin(ref, sizeof mask);
    assert_memory_equal(tok, rtok, sizeof tok);
    assert_memory_equal(mask, rmask, sizeof mask);
    free(rtok);
    free(rmask);
    /* no teacher data to read */
    kd_dump_rows bad = {.logits = val};
    assert_int_equal(kd_dump_read(d, 0, 1, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "logits requested from a dump of tokens only"));
    kd_dump_rows bad2 = {.topk_ids = ids};
    assert_int_equal(kd_dump_read(d, 0, 1, &bad2, &err), -1);
    assert_non_null(strstr(err.msg, "top-k requested from a dump of tokens only"));
    kd_dump_tokenizer tz;
    CHECK(kd_dump_read_tokenizer(d, &tz, &err));
    assert_true(tz.n == V && tz.eos_id == 2);
    kd_dump_tokenizer_free(&tz);
    kd_dump_report rep;
    CHECK(kd_dump_check(d, &rep, &err));
    assert_true(rep.n_positions == N * T && rep.n_masked == 3 && !rep.bad);
    assert_true(rep.mean_topk_mass == 0 && rep.mean_top1_prob == 0);
    assert_true(kd_dump_storage_bytes(d) >= sizeof tok);
    kd_dump_close(d);

    /* valid variants */
    const char *ok[] = {"nomask", "bytes_none", "topk_ok"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s.h5", dir, ok[i]);
        if (kd_dump_validate(path, &rep, &err)) fail_msg("%s: %s", ok[i], err.msg);
        d = kd_dump_open(path, &err);
        assert_non_null(d);
        assert_int_equal(kd_dump_get_meta(d)->tokens_only, i < 2);
        if (i == 0) assert_true(!kd_dump_get_meta(d)->has_loss_mask && rep.n_masked == 0);
        kd_dump_close(d);
    }
    /* structural errors: named by the reader */
    static const bad_case cases[] = {
        {"none_topk", {"dataset 'topk_ids' present", "'distribution' = \"none\"", "tokens only"}},
        {"none_logits", {"dataset 'logits' present", "'distribution' = \"none\"", "tokens only"}},
        {"none_k4", {"attribute 'k' = 4", "'distribution' = \"none\" needs k = 0"}},
        {"topk_missing", {"dataset 'topk_ids' is missing", "'distribution' = \"topk\""}},
        {"logits_missing", {"dataset 'logits' is missing", "'distribution' = \"logits\""}},
        {"inferred_missing", {"dataset 'logits' is missing", "'k' = 0", "needs attribute 'distribution' = \"none\""}},
        {"bogus", {"attribute 'distribution' = \"probs\"", "expected \"topk\", \"logits\", \"sampled\" or \"none\""}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        snprintf(path, sizeof path, "%s/%s.h5", dir, cases[c].file);
        memset(&err, 0, sizeof err);
        if (kd_dump_validate(path, &rep, &err) == 0) fail_msg("%s: accepted", cases[c].file);
        if (!strstr(err.msg, path)) fail_msg("%s: \"%s\" does not name the file", cases[c].file, err.msg);
        for (int i = 0; i < 3 && cases[c].subs[i]; i++)
            if (!strstr(err.msg, cases[c].subs[i]))
                fail_msg("%s: message \"%s\" lacks \"%s\"", cases[c].file, err.msg, cases[c].subs[i]);
        assert_int_equal(rep.bad, 0);
    }
    /* the validator checks tokens (against vocab_size) and masks */
    snprintf(path, sizeof path, "%s/tokrange.h5", dir);
    assert_int_equal(kd_dump_validate(path, &rep, &err), -1);
    assert_non_null(strstr(err.msg, "dataset 'tokens': sequence 2, token 5: token id 53 outside [0, 50)"));
    assert_true(rep.bad && rep.seq == 2 && rep.pos == 5 && rep.file_offset > 0);
    snprintf(path, sizeof path, "%s/mask2.h5", dir);
    assert_int_equal(kd_dump_validate(path, &rep, &err), -1);
    assert_non_null(strstr(err.msg, "dataset 'loss_mask': sequence 1, position 3: loss_mask value 2"));
    /* kd teacher info */
    const char *kd = kd_test_env("KD_BIN");
    assert_int_equal(kd_test_sh("'%s' teacher info '%s/text.h5' > '%s/out.txt'", kd, dir, dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^distribution none (tokens only)$' '%s/out.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^check        ok: 40 positions (3 masked)$' '%s/out.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'tokens (no teacher distribution)' '%s/out.txt'", dir), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info '%s/tokrange.h5' >/dev/null 2>'%s/err.txt'", kd, dir, dir), 1);
    assert_int_equal(kd_test_sh("grep -q \"INVALID: .*dataset 'tokens': sequence 2, token 5\" '%s/err.txt'", dir), 0);
}

/* ---- 2. kd writes, h5py reads; writer checks; resume ------------------------------------------ */

enum { WN = 7, WT = 6, WV = 40 };

static kd_dump_meta tokens_meta(int T, int64_t V) {
    kd_dump_meta m = {.vocab_size = V, .k = 0, .seq_len = T, .temperature = 1.0, .has_loss_mask = 1, .tokens_only = 1};
    return m;
}

/* tokens (s·31 + t·7 + salt) mod V, position T-1 of every third sequence masked */
static void fill(int64_t N, int T, int64_t V, int salt, int32_t *tok, uint8_t *mask) {
    for (int64_t s = 0; s < N; s++)
        for (int t = 0; t <= T; t++) tok[s * (T + 1) + t] = (int32_t)((s * 31 + t * 7 + salt) % V);
    for (int64_t p = 0; p < N * T; p++) mask[p] = !(p % T == T - 1 && (p / T) % 3 == 0);
}

static void test_kd_writes(void **state) {
    (void)state;
    static int32_t tok[WN * (WT + 1)], got[WN * (WT + 1)];
    static uint8_t mask[WN * WT], gmask[WN * WT];
    float one = 0;
    int32_t id = 0;
    fill(WN, WT, WV, 3, tok, mask);
    char path[1024], partial[1100], ref[1100];
    tmp_path(path, sizeof path, "kd_tokens.h5");
    snprintf(partial, sizeof partial, "%s.partial", path);
    kd_err err;
    kd_dump_meta m = tokens_meta(WT, WV);
    m.k = 3;
    assert_null(kd_dump_writer_create(path, &m, NULL, &err));
    assert_non_null(strstr(err.msg, "k 3 for a dump of tokens only"));
    m.k = 0;
    kd_dump_writer *w = kd_dump_writer_create(path, &m, NULL, &err);
    if (!w) fail_msg("%s", err.msg);
    assert_int_equal(kd_dump_writer_append(w, 1, tok, mask, NULL, &one, &err), -1);
    assert_non_null(strstr(err.msg, "pass ids = values = NULL"));
    assert_int_equal(kd_dump_writer_append(w, 1, tok, mask, &id, NULL, &err), -1);
    int32_t keep = tok[4];
    tok[4] = WV;
    assert_int_equal(kd_dump_writer_append(w, 1, tok, mask, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "dataset 'tokens': sequence 0 of the append, token 4: id 40 outside [0, 40)"));
    tok[4] = keep;
    mask[2] = 2;
    assert_int_equal(kd_dump_writer_append(w, 1, tok, mask, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "dataset 'loss_mask'"));
    mask[2] = 1;
    assert_int_equal(kd_dump_writer_n_seq(w), 0);
    kd_dump_writer_abort(w);
    assert_false(kd_file_exists(partial));

    /* a writer killed after its first two appends (3 sequences) */
    pid_t pid = fork();
    if (pid == 0) {
        kd_dump_writer *cw = kd_dump_writer_create(path, &m, NULL, &err);
        if (!cw || kd_dump_writer_append(cw, 2, tok, mask, NULL, NULL, &err) ||
            kd_dump_writer_append(cw, 1, tok + 2 * (WT + 1), mask + 2 * WT, NULL, NULL, &err))
            _exit(3);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(kd_file_exists(partial) && !kd_file_exists(path));
    w = kd_dump_writer_resume(path, &err);
    if (!w) fail_msg("%s", err.msg);
    assert_int_equal(kd_dump_writer_n_seq(w), 3);
    assert_true(kd_dump_writer_meta(w)->tokens_only);
    CHECK(kd_dump_writer_append(w, 2, tok + 3 * (WT + 1), mask + 3 * WT, NULL, NULL, &err));
    CHECK(kd_dump_writer_close(w, &err));
    w = kd_dump_writer_resume(path, &err);   /* extend the finished dump */
    if (!w) fail_msg("%s", err.msg);
    CHECK(kd_dump_writer_append(w, WN - 5, tok + 5 * (WT + 1), mask + 5 * WT, NULL, NULL, &err));
    CHECK(kd_dump_writer_close(w, &err));

    /* h5py: exactly tokens and loss_mask, the attributes, the values */
    tmp_path(ref, sizeof ref, "kd_tokens_ref");
    char p2[1200];
    snprintf(p2, sizeof p2, "%s.tokens.bin", ref);
    write_bin(p2, tok, sizeof tok);
    snprintf(p2, sizeof p2, "%s.mask.bin", ref);
    write_bin(p2, mask, sizeof mask);
    assert_int_equal(kd_test_python("tokens_only_check.py", "read-kd '%s' '%s'", path, ref), 0);
    /* kd reads it back */
    kd_dump_report rep;
    if (kd_dump_validate(path, &rep, &err)) fail_msg("%s", err.msg);
    assert_int_equal(rep.n_masked, 3);
    kd_dump *d = kd_dump_open(path, &err);
    assert_non_null(d);
    assert_true(kd_dump_get_meta(d)->tokens_only && kd_dump_get_meta(d)->n_seq == WN);
    kd_dump_rows rows = {.tokens = got, .loss_mask = gmask};
    CHECK(kd_dump_read(d, 0, WN, &rows, &err));
    assert_memory_equal(got, tok, sizeof tok);
    assert_memory_equal(gmask, mask, sizeof mask);
    kd_dump_close(d);
}

/* ---- 3. the loader ------------------------------------------------------------------------------ */

static void make_tokens_dump(const char *path, int64_t N, int T, int64_t V, int salt) {
    kd_err err;
    int32_t *tok = malloc((size_t)(N * (T + 1)) * 4);
    uint8_t *mask = malloc((size_t)(N * T));
    fill(N, T, V, salt, tok, mask);
    kd_dump_meta m = tokens_meta(T, V);
    kd_dump_writer *w = kd_dump_writer_create(path, &m, NULL, &err);
    if (!w) fail_msg("%s", err.msg);
    CHECK(kd_dump_writer_append(w, N, tok, mask, NULL, NULL, &err));
    CHECK(kd_dump_writer_close(w, &err));
    free(tok);
    free(mask);
}

/* A teacher dump of the same shape: top-k (K > 0) or full logits. */
static void make_teacher_dump(const char *path, int64_t N, int T, int K, int64_t V) {
    kd_err err;
    int32_t *tok = malloc((size_t)(N * (T + 1)) * 4), *ids = malloc((size_t)(N * T * (K ? K : 1)) * 4);
    uint8_t *mask = malloc((size_t)(N * T));
    float *val = malloc((size_t)(N * T * (K ? K : V)) * 4);
    fill(N, T, V, 1, tok, mask);
    for (int64_t p = 0; p < N * T; p++) {
        for (int j = 0; j < K; j++) {
            ids[p * K + j] = (int32_t)((p + j) % V);
            val[p * K + j] = (float)((j + 1) * log(0.5));
        }
        for (int64_t j = 0; !K && j < V; j++) val[p * V + j] = (float)sin((double)(p + j));
    }
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32,
                      .has_loss_mask = 1};
    kd_dump_writer *w = kd_dump_writer_create(path, &m, NULL, &err);
    if (!w) fail_msg("%s", err.msg);
    CHECK(kd_dump_writer_append(w, N, tok, mask, K ? ids : NULL, val, &err));
    CHECK(kd_dump_writer_close(w, &err));
    free(tok);
    free(ids);
    free(mask);
    free(val);
}

static kd_loader_opts lopts(const char *const *paths, int n, int B, int prefetch) {
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = paths;
    o.n_paths = n;
    o.batch_size = B;
    o.seed = 17;
    o.prefetch = prefetch;
    return o;
}

static void test_loader(void **state) {
    (void)state;
    enum { NA = 11, NB = 7, T = 6, V = 40, B = 4 };
    char a[1024], b[1024], tk[1024], full[1024];
    tmp_path(a, sizeof a, "la.h5");
    tmp_path(b, sizeof b, "lb.h5");
    tmp_path(tk, sizeof tk, "ltopk.h5");
    tmp_path(full, sizeof full, "lfull.h5");
    make_tokens_dump(a, NA, T, V, 0);
    make_tokens_dump(b, NB, T, V, 5);
    make_teacher_dump(tk, 4, T, 3, V);
    make_teacher_dump(full, 4, T, 0, V);
    const char *ab[2] = {a, b};
    kd_err err;
    for (int prefetch = 0; prefetch <= 2; prefetch += 2) {
        kd_loader_opts o = lopts(ab, 2, B, prefetch);
        o.student_vocab = V;
        kd_loader *L = kd_loader_new(&o, &err);
        if (!L) fail_msg("%s", err.msg);
        assert_true(kd_loader_meta(L)->tokens_only);
        assert_int_equal(kd_loader_n_sequences(L), NA + NB);
        int seen[2][NA] = {{0}};
        int64_t bpe = kd_loader_batches_per_epoch(L), rows = 0;
        assert_int_equal(bpe, (NA + NB + B - 1) / B);
        int32_t tok[T + 1];
        uint8_t mask[T];
        for (int64_t i = 0; i < bpe; i++) {
            const kd_batch *bt = kd_loader_next(L, &err);
            if (!bt) fail_msg("%s", err.msg);
            assert_true(bt->tokens_only && bt->k == 0 && bt->V == V);
            assert_null(bt->topk_ids);
            assert_null(bt->topk_logprobs);
            assert_null(bt->logits);
            for (int r = 0; r < bt->B; r++) {
                if (bt->dump[r] < 0) {
                    for (int t = 0; t < T; t++) assert_int_equal(bt->labels[r * T + t], -100);
                    continue;
                }
                int d = bt->dump[r];
                int64_t s = bt->seq[r];
                seen[d][s]++;
                rows++;
                /* the expected row: the formula of fill() for this sequence */
                for (int t = 0; t <= T; t++) tok[t] = (int32_t)((s * 31 + t * 7 + (d ? 5 : 0)) % V);
                for (int t = 0; t < T; t++) mask[t] = !(t == T - 1 && s % 3 == 0);
                for (int t = 0; t < T; t++) {
                    assert_int_equal(bt->tokens[r * T + t], tok[t]);
                    assert_int_equal(bt->labels[r * T + t], mask[t] ? tok[t + 1] : -100);
                }
            }
        }
        assert_int_equal(rows, NA + NB);
        for (int d = 0; d < 2; d++)
            for (int s = 0; s < (d ? NB : NA); s++) assert_int_equal(seen[d][s], 1);
        /* a cursor restores exactly */
        kd_loader_cursor c = kd_loader_cursor_get(L);
        const kd_batch *x = kd_loader_next(L, &err);
        assert_non_null(x);
        int32_t first[B * T];
        memcpy(first, x->labels, sizeof first);
        kd_loader *L2 = kd_loader_new(&o, &err);
        assert_non_null(L2);
        CHECK(kd_loader_restore(L2, &c, &err));
        x = kd_loader_next(L2, &err);
        assert_non_null(x);
        assert_memory_equal(x->labels, first, sizeof first);
        kd_loader_free(L2);
        kd_loader_free(L);
    }
    /* train/validation split of tokens-only dumps */
    kd_loader_opts o = lopts(ab, 2, B, 0);
    o.val_fraction = 0.3;
    o.split = KD_SPLIT_TRAIN;
    kd_loader *Lt = kd_loader_new(&o, &err);
    o.split = KD_SPLIT_VAL;
    kd_loader *Lv = kd_loader_new(&o, &err);
    assert_true(Lt && Lv);
    assert_int_equal(kd_loader_n_sequences(Lt) + kd_loader_n_sequences(Lv), NA + NB);
    kd_loader_free(Lt);
    kd_loader_free(Lv);
    /* the student's vocabulary */
    o = lopts(ab, 2, B, 0);
    o.student_vocab = V + 1;
    assert_null(kd_loader_new(&o, &err));
    assert_non_null(strstr(err.msg, "the dump's vocab_size 40 differs from the student's 41"));
    /* no mixing with teacher dumps: an error naming both files, in either order */
    const char *mixes[4][2] = {{a, tk}, {tk, a}, {full, b}, {b, full}};
    for (int i = 0; i < 4; i++) {
        o = lopts(mixes[i], 2, B, 1);
        memset(&err, 0, sizeof err);
        assert_null(kd_loader_new(&o, &err));
        if (!strstr(err.msg, mixes[i][0]) || !strstr(err.msg, mixes[i][1]) || !strstr(err.msg, "tokens only"))
            fail_msg("mix %d: \"%s\"", i, err.msg);
        assert_non_null(strstr(err.msg, i < 2 ? "top-k" : "full logits"));
    }
}

/* ---- 4. kd teacher dump --tokens-only --------------------------------------------------------- */

/* --doc-sep: newline, '%', newline, inside sh single quotes */
#define SEP_F "'\n%%\n'"

static const char TEXT[] =
    "The little boat left the harbor early in the morning. The sea was calm and the sky was a soft "
    "grey. The fisherman sang an old song while he pulled the ropes, and the gulls followed him out "
    "past the rocks.\n"
    "%\n"
    "Every evening the baker closed his shop and walked to the river. He sat on the same bench and "
    "fed the ducks with the bread he had not sold. The ducks knew him well and came running when "
    "they saw his hat.\n"
    "%\n"
    "The girl found a key in the garden. It was small and made of brass, and it was warm from the "
    "sun. She tried it in every door of the house, but none of them opened. Then she saw the old box "
    "under the stairs.\n"
    "%\n"
    "In the forest there was a tree that was older than the village. The children said that it could "
    "talk. When the wind moved its leaves, it made a sound like someone whispering a story in a "
    "language nobody remembered.\n"
    "%\n"
    "The robot woke up in an empty room. It did not know its name or why it was there. It looked at "
    "its hands and moved its fingers one by one. Then it walked to the window and watched the snow "
    "fall on the city.\n"
    "%\n"
    "My grandmother kept a jar of buttons on the kitchen shelf. On rainy days we poured them on the "
    "table and sorted them by color. Each button had a story, and she told them all, even the ones "
    "she had told many times before.\n"
    "%\n"
    "The train was late again. The people on the platform looked at the clock, then at the tracks, "
    "then at the clock again. A boy with a red coat counted the pigeons, and when he reached forty, "
    "the train finally came around the bend.\n"
    "%\n"
    "At night the city was full of small lights. Some were windows, some were cars, and some were "
    "stars that you could only see from the roof. The cat liked the roof best, because from there it "
    "could see everything at once.\n"
    "%\n"
    "The teacher asked the class to write about a dream. Most children wrote about flying or about "
    "being a king. One quiet boy wrote about a garden where the flowers could sing, and the teacher "
    "read it aloud to everyone.\n"
    "%\n"
    "The old man had a clock that ran backwards. He said it helped him remember things. Every "
    "morning he wound it with a silver key, and every evening he sat beside it and told his dog "
    "about the day that was about to begin.\n"
    "%\n"
    "The moon was very bright over the hills. A fox came out of the woods and looked at the farm. "
    "The dog was asleep and the chickens were quiet. The fox thought about it for a long time, and "
    "then it went home.\n"
    "%\n"
    "She learned to play the piano when she was seven. At first the notes were slow and wrong, but "
    "she practiced every day after school. By the end of the winter she could play a song for her "
    "mother, who cried a little.\n"
    "%\n"
    "The library had a room that nobody used. It was full of maps of places that did not exist. "
    "There were rivers with no names, mountains drawn in blue ink, and a city at the edge of the sea "
    "that was painted gold.\n"
    "%\n"
    "When the rain stopped, the street smelled of wet stone. The children ran outside to jump in the "
    "puddles. Their shoes got wet and their mothers called them home, but they laughed and stayed "
    "until the sun went down.\n"
    "%\n"
    "The scientist built a machine that could listen to plants. She found that the tomatoes were "
    "happy and the roses were proud. The cactus in the corner did not say anything at all, but she "
    "was sure that it was thinking.\n"
    "%\n"
    "Once upon a time there was a small dragon who was afraid of fire. The other dragons laughed at "
    "him. So he learned to make tea instead, and soon every dragon in the mountains came to his cave "
    "for a cup in the evening.\n"
    "%\n"
    "The lighthouse keeper wrote a letter every week to his sister. He told her about the storms, "
    "the ships and the birds. She wrote back about the city, the market and her children. They had "
    "not seen each other in ten years.\n"
    "%\n"
    "In the morning the garden was covered with dew. The spider had made a new web between the "
    "roses, and every thread held a drop of water. The sun came up and the web shone like a necklace "
    "made of tiny glass beads.\n"
    "%\n"
    "The boy wanted to see the end of the road. He walked all day, past the farms and the forest and "
    "the old mill. When night came he was still walking. He sat down on a stone and decided that the "
    "road had no end.\n"
    "%\n"
    "The bakery on the corner made bread shaped like animals. There were bears, rabbits and fish, "
    "and once a week there was a horse. The children pressed their noses to the window and argued "
    "about which one they would buy.\n"
    "%\n"
    "The snow fell for three days. The village was quiet and white. People stayed inside and made "
    "soup and told stories by the fire. On the fourth day the sun came out, and everyone went "
    "outside to build a giant snowman together.\n"
    "%\n"
    "The ship had been at sea for many months. The sailors were tired and the food was almost gone. "
    "Then one morning a bird landed on the mast, and the captain smiled, because he knew that land "
    "was close.\n"
    "%\n"
    "There was a painter who could only paint the color blue. She painted the sea, the sky, and blue "
    "apples and blue cats. People said it was strange, but they bought her paintings anyway, because "
    "they made them feel calm.\n"
    "%\n"
    "The old radio in the kitchen played music from far away. Sometimes it was a song in a language "
    "we did not know. My father would stop cooking and listen, and then he would dance with the "
    "spoon in his hand.\n"
    "%\n"
    "The owl watched the forest all night. It saw the deer come to drink at the stream and the mice "
    "run between the roots. When the sky turned pink in the east, it closed its eyes and slept until "
    "the stars came back.\n"
    "\n";

static char g_dir[512], g_tok[600];

/* The teacher (for the text-mode reference), the text, the tokenizer path; once per process. */
static void setup_once(void) {
    if (g_dir[0]) return;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    const char *shared = kd_test_env("KD_DATA_DIR");
    snprintf(g_tok, sizeof g_tok, "%s/models/aidreams260K/tok512.bin", shared);
    char path[1000];
    kd_err err;
    snprintf(path, sizeof path, "%s/text.txt", g_dir);
    CHECK(kd_write_file_atomic(path, TEXT, sizeof TEXT - 1, &err));
    assert_int_equal(kd_test_sh("'%s' import llama2c --model '%s/models/aidreams260K/aidreams260K.bin' --tokenizer "
                                "'%s' --out '%s/teacher' >/dev/null", kd_test_env("KD_BIN"), shared, g_tok, g_dir), 0);
}

/* Run `ENV kd ARGS` in the tmpdir (one OpenMP thread), stdout/stderr to out.txt/err.txt; the status. */
static int kd(const char *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kd(const char *env, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return kd_test_sh("cd '%s' && env OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive %s '%s' %s >out.txt 2>err.txt",
                      g_dir, env ? env : "", kd_test_env("KD_BIN"), args);
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

/* The file holds (or lacks, want 0) the needle. */
static void expect_in(const char *name, const char *needle, int want) {
    char *s = slurp(name);
    if (!!strstr(s, needle) != want) fail_msg("%s %s \"%s\":\n%s", name, want ? "lacks" : "holds", needle, s);
    free(s);
}

static int exists(const char *name) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return kd_file_exists(path);
}

typedef struct seqs {
    kd_dump_meta m;
    int32_t *tok;
    uint8_t *mask;
    kd_dump_tokenizer tz;
} seqs;

static void read_seqs(const char *name, seqs *a) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) fail_msg("%s", err.msg);
    a->m = *kd_dump_get_meta(d);
    int64_t n = a->m.n_seq, T = a->m.seq_len;
    a->tok = malloc((size_t)(n * (T + 1)) * 4 + 4);
    a->mask = malloc((size_t)(n * T) + 1);
    kd_dump_rows rows = {.tokens = a->tok, .loss_mask = a->mask};
    if (n) CHECK(kd_dump_read(d, 0, n, &rows, &err));
    CHECK(kd_dump_read_tokenizer(d, &a->tz, &err));
    kd_dump_close(d);
}

static void free_seqs(seqs *a) {
    free(a->tok);
    free(a->mask);
    kd_dump_tokenizer_free(&a->tz);
}

/* The tokens-only dump `only` holds the sequences and masks of the teacher dump `teacher`, token for token. */
static void same_packing(const char *only, const char *teacher) {
    seqs a, b;
    read_seqs(only, &a);
    read_seqs(teacher, &b);
    assert_true(a.m.tokens_only && !b.m.tokens_only);
    assert_true(a.m.k == 0 && a.m.vocab_size == 512 && a.m.teacher[0] == '\0');
    if (a.m.n_seq != b.m.n_seq || a.m.seq_len != b.m.seq_len)
        fail_msg("%s vs %s: %lld vs %lld sequences of %d vs %d", only, teacher, (long long)a.m.n_seq,
                 (long long)b.m.n_seq, a.m.seq_len, b.m.seq_len);
    int64_t n = a.m.n_seq, T = a.m.seq_len;
    assert_true(n > 0);
    for (int64_t i = 0; i < n * (T + 1); i++)
        if (a.tok[i] != b.tok[i])
            fail_msg("%s vs %s: sequence %lld, token %lld: %d vs %d", only, teacher, (long long)(i / (T + 1)),
                     (long long)(i % (T + 1)), a.tok[i], b.tok[i]);
    assert_memory_equal(a.mask, b.mask, (size_t)(n * T));
    kd_err err;
    CHECK(kd_dump_tokenizer_compare(&a.tz, only, &b.tz, teacher, &err));
    free_seqs(&a);
    free_seqs(&b);
}

#define TONLY "teacher dump --tokens-only --tokenizer '%s' --text text.txt --doc-sep " SEP_F " --seq-len 32"
#define TTEXT "teacher dump --teacher teacher --text text.txt --doc-sep " SEP_F " --seq-len 32"

static void test_cli_dump(void **state) {
    (void)state;
    setup_once();
    /* the same text, with a teacher (top-k) and without */
    assert_int_equal(kd(NULL, TTEXT " --topk 4 --quiet --out teach.h5"), 0);
    if (kd(NULL, TONLY " --out only.h5", g_tok) != 0) fail_msg("%s", slurp("err.txt"));
    expect_in("err.txt", "took", 1);   /* progress */
    same_packing("only.h5", "teach.h5");
    assert_int_equal(kd(NULL, "teacher info only.h5"), 0);
    expect_in("out.txt", "distribution none (tokens only)", 1);
    expect_in("out.txt", "check        ok", 1);
    /* with a validation split (and a second file): the same split */
    assert_int_equal(kd(NULL, TTEXT " --text text.txt --topk 4 --val-out teach_v.h5 --val-fraction 0.3 --quiet "
                              "--out teach_t.h5"), 0);
    assert_int_equal(kd(NULL, TONLY " --text text.txt --val-out only_v.h5 --val-fraction 0.3 --quiet --out only_t.h5",
                        g_tok), 0);
    same_packing("only_t.h5", "teach_t.h5");
    same_packing("only_v.h5", "teach_v.h5");
    /* resume: killed after 2 appends of 4, then the same command finishes it */
    assert_int_equal(kd("KD_DUMP_STOP_AFTER=2", TONLY " --batch 4 --quiet --out r.h5", g_tok), 75);
    assert_true(exists("r.h5.partial") && !exists("r.h5"));
    /* a teacher run (full logits: k 0 as well) does not resume a tokens-only dump */
    assert_int_equal(kd(NULL, TTEXT " --full --quiet --out r.h5"), 1);
    expect_in("err.txt", "r.h5.partial: cannot resume", 1);
    expect_in("err.txt", "the interrupted dump has tokens only, this run asks for a teacher distribution", 1);
    assert_int_equal(kd(NULL, TONLY " --batch 4 --out r.h5", g_tok), 0);
    expect_in("err.txt", "resuming r.h5.partial after its 8 sequences", 1);
    assert_true(exists("r.h5") && !exists("r.h5.partial"));
    same_packing("r.h5", "teach.h5");
    /* options that need a teacher are refused */
    static const char *bad[][2] = {
        {" --generate 3", "--generate"}, {" --teacher teacher", "--teacher"}, {" --topk 4", "--topk"},
        {" --full", "--full"},           {" --dtype f32", "--dtype"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(kd(NULL, TONLY "%s --quiet --out e.h5", g_tok, bad[i][0]), 2);
        expect_in("err.txt", "--tokens-only runs no teacher", 1);
        expect_in("err.txt", bad[i][1], 1);
        assert_false(exists("e.h5") || exists("e.h5.partial"));
    }
    assert_int_equal(kd(NULL, "teacher dump --tokens-only --text text.txt --seq-len 8 --out e.h5"), 2);
    expect_in("err.txt", "--tokens-only needs --tokenizer", 1);
    assert_int_equal(kd(NULL, "teacher dump --tokens-only --tokenizer '%s' --text missing.txt --seq-len 8 --out e.h5",
                        g_tok), 1);
    expect_in("err.txt", "missing.txt", 1);
    assert_false(exists("e.h5") || exists("e.h5.partial"));
    assert_int_equal(kd(NULL, "teacher dump --help"), 0);
    expect_in("out.txt", "--tokens-only", 1);
}

/* ---- 5. kd train with alpha 0 ----------------------------------------------------------------- */

static double json_number(const char *s, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(s, pat);
    if (!at) fail_msg("no \"%s\" in %s", key, s);
    return atof(at + strlen(pat));
}

static void test_train(void **state) {
    (void)state;
    setup_once();
    /* the whole text once, 20 % held out */
    assert_int_equal(kd(NULL, TONLY " --val-out tv.h5 --val-fraction 0.2 --quiet --out tt.h5", g_tok), 0);
    char p[1000];
    snprintf(p, sizeof p, "%s/run.json", g_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f, "{\"student\": \"%s/configs/student-tiny.json\", \"train_data\": \"%s/tt.h5\", "
               "\"val_data\": \"%s/tv.h5\", \"batch_size\": 8, \"steps\": 40, \"lr\": 3e-3, \"warmup\": 4, "
               "\"eval_every\": 10, \"save_every\": 20, \"alpha\": 0, \"temperature\": 2.0, \"kd_mode\": \"topk_tail\"}\n",
            kd_test_env("KD_SOURCE_DIR"), g_dir, g_dir);
    fclose(f);
    if (kd(NULL, "train --config run.json --out run") != 0) fail_msg("%s", slurp("err.txt"));
    expect_in("err.txt", "eval step 10: ce ", 1);
    expect_in("err.txt", " kl ", 0);             /* no kl/top1 in the eval lines */
    expect_in("err.txt", "top1", 0);
    char *fin = slurp("run/final_eval.json");
    double ce = json_number(fin, "ce"), ppl = json_number(fin, "ppl"), tokens = json_number(fin, "tokens");
    if (strstr(fin, "\"kl\"") || strstr(fin, "\"top1\"")) fail_msg("final_eval.json has kl/top1: %s", fin);
    free(fin);
    assert_true(fabs(ppl - exp(ce)) < 1e-6 * ppl && tokens > 0);
    char *met = slurp("run/metrics.jsonl");
    const char *first = strstr(met, "\"eval\":");
    assert_non_null(first);
    double ce0 = json_number(first, "ce");
    for (const char *e = first; (e = strstr(e, "\"eval\":")); e++) {
        const char *end = strchr(e, '}');
        const char *kl = strstr(e, "\"kl\"");
        if (kl && kl < end) fail_msg("an eval line with kl: %s", e);
    }
    free(met);
    fprintf(stderr, "tokens-only training, validation CE: step 10 %.4f -> final %.4f (uniform %.4f)\n", ce0, ce,
            log(512.0));
    assert_true(ce < ce0 - 0.05);
    assert_true(ce < log(512.0) - 1.0);
    assert_true(exists("run/final/tokenizer.bin"));   /* inherited from the dump */
    /* kd eval on the tokens-only dump: ce/ppl only */
    if (kd(NULL, "eval --model run/final --data tv.h5") != 0) fail_msg("%s", slurp("err.txt"));
    char *ev = slurp("out.txt");
    if (!strstr(ev, "\"ce\":") || !strstr(ev, "\"ppl\":") || strstr(ev, "\"kl\"") || strstr(ev, "\"top1\""))
        fail_msg("kd eval: %s", ev);
    assert_true(fabs(json_number(ev, "ce") - ce) < 1e-3);
    free(ev);
    /* alpha > 0 is refused, naming the file and the key */
    assert_int_not_equal(kd(NULL, "train --config run.json --set alpha=0.5 --out run2"), 0);
    expect_in("err.txt", "tt.h5", 1);
    expect_in("err.txt", "\"alpha\"", 1);
    expect_in("err.txt", "tokens only", 1);
    assert_false(exists("run2/run.json"));
    /* a teacher validation dump still gets kl and top1 (and kd_mode "full" does not matter) */
    assert_int_equal(kd(NULL, TTEXT " --topk 4 --quiet --out teach_val.h5"), 0);
    if (kd(NULL, "train --config run.json --set val_data=teach_val.h5 --set steps=4 --set eval_every=0 "
                 "--set kd_mode=full --out run3") != 0)
        fail_msg("%s", slurp("err.txt"));
    fin = slurp("run3/final_eval.json");
    double kl = json_number(fin, "kl"), top1 = json_number(fin, "top1");
    assert_true(kl > 0 && top1 >= 0 && top1 <= 1);
    free(fin);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h5py_writes), cmocka_unit_test(test_kd_writes), cmocka_unit_test(test_loader),
        cmocka_unit_test(test_cli_dump),    cmocka_unit_test(test_train),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
