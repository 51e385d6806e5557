/*
 * test_loader.c — the batch loader (data/kd_loader.h): rows equal the dumps'
 * sequences with labels shifted by one, deterministic shuffling per epoch,
 * epoch coverage, disjoint shards that cover the split, a validation split
 * that is stable when a dump grows, exact resume from a saved cursor (with
 * and without the prefetch thread), vocabulary and tokenizer checks and the
 * padded-vocabulary policy, and read errors surfacing from the prefetch thread.
 */
#include "kd_test.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/kd_loader.h"

#define MAXSEQ 64
#define CHECK(call) do { if ((call) != 0) fail_msg("%s", err.msg); } while (0)

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", kd_test_tmpdir(), name); }

/* A valid dump: tokens (s·31 + t·7 + salt) mod tok_range, ids (p·13 + j·17 + salt) mod V,
 * log-probs log(0.5^(j+1)); full dumps (K = 0) get logits sin(p + j). Position T-1 of every
 * third sequence is masked. */
static void make_dump(const char *path, int64_t N, int T, int K, int64_t V, int64_t tok_range, int salt,
                      const kd_dump_tokenizer *tz) {
    kd_err err;
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F16,
                      .has_loss_mask = 1};
    snprintf(m.teacher, sizeof m.teacher, "loader-test");
    int32_t *tok = malloc((size_t)(N * (T + 1)) * 4), *ids = malloc((size_t)(N * T * (K ? K : 1)) * 4);
    uint8_t *mask = malloc((size_t)(N * T));
    float *val = malloc((size_t)(N * T * (K ? K : V)) * 4);
    for (int64_t s = 0; s < N; s++)
        for (int t = 0; t <= T; t++) tok[s * (T + 1) + t] = (int32_t)((s * 31 + t * 7 + salt) % tok_range);
    for (int64_t p = 0; p < N * T; p++) {
        mask[p] = !(p % T == T - 1 && (p / T) % 3 == 0);
        for (int j = 0; j < K; j++) {
            ids[p * K + j] = (int32_t)((p * 13 + j * 17 + salt) % V);
            val[p * K + j] = (float)((j + 1) * log(0.5));
        }
        for (int64_t j = 0; !K && j < V; j++) val[p * V + j] = (float)sin((double)(p + j));
    }
    kd_dump_writer *w = kd_dump_writer_create(path, &m, tz, &err);
    if (!w) fail_msg("%s", err.msg);
    CHECK(kd_dump_writer_append(w, N, tok, mask, K ? ids : NULL, val, &err));
    CHECK(kd_dump_writer_close(w, &err));
    free(tok);
    free(ids);
    free(mask);
    free(val);
}

static char g_a[1024], g_b[1024];   /* top-k dumps: 23 and 17 sequences, T 6, k 4, V 100 */

static int setup(void **state) {
    (void)state;
    tmp_path(g_a, sizeof g_a, "a.h5");
    tmp_path(g_b, sizeof g_b, "b.h5");
    make_dump(g_a, 23, 6, 4, 100, 100, 0, NULL);
    make_dump(g_b, 17, 6, 4, 100, 100, 5, NULL);
    return 0;
}

static kd_loader_opts opts2(int B, uint64_t seed, int prefetch) {
    static const char *paths[2];
    paths[0] = g_a;
    paths[1] = g_b;
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = paths;
    o.n_paths = 2;
    o.batch_size = B;
    o.seed = seed;
    o.prefetch = prefetch;
    return o;
}

static kd_loader *mk(const kd_loader_opts *o) {
    kd_err err;
    kd_loader *L = kd_loader_new(o, &err);
    if (!L) fail_msg("%s", err.msg);
    return L;
}

static const kd_batch *next(kd_loader *L) {
    kd_err err;
    const kd_batch *b = kd_loader_next(L, &err);
    if (!b) fail_msg("%s", err.msg);
    return b;
}

/* Each row equals a direct read of its sequence (labels shifted, −100 where masked). */
static void check_rows(const kd_batch *b, const char *const *paths) {
    kd_err err;
    int T = b->T, k = b->k;
    int32_t tok[65], ids[64 * 8];
    uint8_t mask[64];
    float lp[64 * 8];
    int64_t labels = 0;
    for (int r = 0; r < b->B; r++) {
        const int32_t *bt = b->tokens + r * T, *bl = b->labels + r * T;
        if (b->dump[r] < 0) {
            for (int t = 0; t < T; t++) assert_true(bt[t] == 0 && bl[t] == -100);
            continue;
        }
        kd_dump *d = kd_dump_open(paths[b->dump[r]], &err);
        assert_non_null(d);
        kd_dump_rows rows = {.tokens = tok, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
        CHECK(kd_dump_read(d, b->seq[r], 1, &rows, &err));
        kd_dump_close(d);
        for (int t = 0; t < T; t++) {
            assert_int_equal(bt[t], tok[t]);
            assert_int_equal(bl[t], mask[t] ? tok[t + 1] : -100);
            labels += mask[t];
        }
        assert_memory_equal(b->topk_ids + r * T * k, ids, (size_t)(T * k) * 4);
        assert_memory_equal(b->topk_logprobs + r * T * k, lp, (size_t)(T * k) * 4);
    }
    assert_int_equal(b->n_labels, labels);
}

/* The (dump, seq) ids of one epoch of L (rank's share) into seen[dump][seq] counts; returns rows. */
static int64_t run_epoch(kd_loader *L, int seen[2][MAXSEQ], int64_t *order) {
    int64_t rows = 0, bpe = kd_loader_batches_per_epoch(L);
    for (int64_t i = 0; i < bpe; i++) {
        const kd_batch *b = next(L);
        assert_int_equal(b->index, i);
        for (int r = 0; r < b->B; r++) {
            if (b->dump[r] < 0) continue;
            assert_true(r < b->n_rows);   /* padding only at the end */
            seen[b->dump[r]][b->seq[r]]++;
            if (order) order[rows] = b->dump[r] * 1000 + b->seq[r];
            rows++;
        }
    }
    return rows;
}

static void test_shuffle_and_coverage(void **state) {
    (void)state;
    const char *paths[2] = {g_a, g_b};
    kd_loader_opts o = opts2(5, 42, 2);
    kd_loader *L = mk(&o);
    assert_int_equal(kd_loader_n_sequences(L), 40);
    assert_int_equal(kd_loader_batches_per_epoch(L), 8);
    int seen[2][MAXSEQ] = {{0}};
    int64_t e0[40], e1[40], f0[40];
    assert_int_equal(run_epoch(L, seen, e0), 40);
    for (int s = 0; s < 23; s++) assert_int_equal(seen[0][s], 1);
    for (int s = 0; s < 17; s++) assert_int_equal(seen[1][s], 1);
    assert_int_equal(run_epoch(L, seen, e1), 40);
    for (int s = 0; s < 17; s++) assert_int_equal(seen[1][s], 2);
    assert_true(memcmp(e0, e1, sizeof e0) != 0);   /* a new order each epoch */
    const kd_batch *b = next(L);
    assert_int_equal(b->epoch, 2);
    check_rows(b, paths);
    kd_loader_stats st;
    kd_loader_get_stats(L, &st);
    assert_int_equal(st.batches, 17);
    assert_int_equal(st.sequences, 85);
    kd_loader_free(L);

    /* same seed: same batches, with or without the prefetch thread; other seed: other order */
    o.prefetch = 0;
    L = mk(&o);
    memset(seen, 0, sizeof seen);
    run_epoch(L, seen, f0);
    assert_memory_equal(f0, e0, sizeof e0);
    for (int i = 0; i < 8; i++) check_rows(next(L), paths);
    kd_loader_free(L);
    o = opts2(5, 43, 3);
    L = mk(&o);
    run_epoch(L, seen, f0);
    assert_true(memcmp(f0, e0, sizeof e0) != 0);
    kd_loader_free(L);
    o.shuffle = 0;   /* dump order */
    L = mk(&o);
    run_epoch(L, seen, f0);
    for (int i = 0; i < 40; i++) assert_int_equal(f0[i], i < 23 ? i : 1000 + i - 23);
    kd_loader_free(L);
}

static void test_sharding(void **state) {
    (void)state;
    for (int world = 1; world <= 4; world++) {
        int seen[2][MAXSEQ] = {{0}};
        int64_t total = 0, bpe = -1;
        for (int rank = 0; rank < world; rank++) {
            kd_loader_opts o = opts2(4, 7, rank % 2 ? 0 : 2);
            o.rank = rank;
            o.world = world;
            kd_loader *L = mk(&o);
            if (bpe < 0) bpe = kd_loader_batches_per_epoch(L);
            assert_int_equal(kd_loader_batches_per_epoch(L), bpe);   /* lockstep */
            total += run_epoch(L, seen, NULL);
            kd_loader_free(L);
        }
        assert_int_equal(total, 40);
        for (int s = 0; s < 23; s++) assert_int_equal(seen[0][s], 1);   /* disjoint and covering */
        for (int s = 0; s < 17; s++) assert_int_equal(seen[1][s], 1);
        assert_int_equal(bpe, ((40 + world - 1) / world + 3) / 4);
    }
    kd_err err;
    kd_loader_opts o = opts2(4, 7, 0);
    o.rank = 3;
    o.world = 3;
    assert_null(kd_loader_new(&o, &err));
    assert_non_null(strstr(err.msg, "rank 3, expected [0, 3)"));
}

static void test_split(void **state) {
    (void)state;
    char path[1024];
    tmp_path(path, sizeof path, "grow.h5");
    make_dump(path, 40, 4, 2, 50, 50, 1, NULL);
    const char *paths[1] = {path};
    int member[2][MAXSEQ] = {{0}};
    int64_t n[2];
    for (int sp = 0; sp < 2; sp++) {
        kd_loader_opts o;
        kd_loader_opts_init(&o);
        o.paths = paths;
        o.n_paths = 1;
        o.batch_size = 3;
        o.split = sp ? KD_SPLIT_VAL : KD_SPLIT_TRAIN;
        o.val_fraction = 0.25;
        o.seed = 100 + (uint64_t)sp;   /* the split does not depend on the shuffle seed */
        kd_loader *L = mk(&o);
        n[sp] = kd_loader_n_sequences(L);
        int seen[2][MAXSEQ] = {{0}};
        run_epoch(L, seen, NULL);
        for (int s = 0; s < 40; s++) member[sp][s] = seen[0][s];
        kd_loader_free(L);
    }
    assert_int_equal(n[0] + n[1], 40);
    assert_true(n[1] >= 4 && n[1] <= 16);
    for (int s = 0; s < 40; s++) assert_int_equal(member[0][s] + member[1][s], 1);
    /* grow the dump: earlier sequences keep their side */
    kd_err err;
    kd_dump_writer *w = kd_dump_writer_resume(path, &err);
    if (!w) fail_msg("%s", err.msg);
    int32_t tok[5 * 5] = {0}, ids[5 * 4 * 2];
    float lp[5 * 4 * 2];
    for (int p = 0; p < 20; p++) {
        ids[2 * p] = 1, ids[2 * p + 1] = 2;
        lp[2 * p] = -1, lp[2 * p + 1] = -2;
    }
    CHECK(kd_dump_writer_append(w, 5, tok, NULL, ids, lp, &err));
    CHECK(kd_dump_writer_close(w, &err));
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = paths;
    o.n_paths = 1;
    o.split = KD_SPLIT_VAL;
    o.val_fraction = 0.25;
    kd_loader *L = mk(&o);
    int seen[2][MAXSEQ] = {{0}};
    run_epoch(L, seen, NULL);
    for (int s = 0; s < 40; s++) assert_int_equal(seen[0][s], member[1][s]);
    kd_loader_free(L);
    o.val_fraction = 0;
    assert_null(kd_loader_new(&o, &err));
    assert_non_null(strstr(err.msg, "the validation split has no sequences"));
}

static void test_cursor_resume(void **state) {
    (void)state;
    kd_err err;
    for (int variant = 0; variant < 3; variant++) {
        kd_loader_opts o = opts2(3, 9, variant == 1 ? 0 : 2);
        o.rank = 1;
        o.world = 2;
        kd_loader *A = mk(&o);
        int64_t bpe = kd_loader_batches_per_epoch(A);
        for (int i = 0; i < 13 + variant; i++) next(A);
        kd_loader_cursor c = kd_loader_cursor_get(A);
        assert_int_equal(c.epoch * bpe + c.batch, 13 + variant);
        enum { M = 25 };
        static int32_t want_tok[M][3 * 6], want_ids[M][3 * 6 * 4];
        static int64_t want_seq[M][3];
        for (int i = 0; i < M; i++) {
            const kd_batch *b = next(A);
            memcpy(want_tok[i], b->tokens, sizeof want_tok[i]);
            memcpy(want_ids[i], b->topk_ids, sizeof want_ids[i]);
            memcpy(want_seq[i], b->seq, sizeof want_seq[i]);
        }
        /* a fresh loader (other prefetch depth, other seed in the options: the cursor's wins) */
        o.prefetch = variant == 2 ? 5 : 0;
        o.seed = 12345;
        kd_loader *B = variant == 2 ? A : mk(&o);
        CHECK(kd_loader_restore(B, &c, &err));
        for (int i = 0; i < M; i++) {
            const kd_batch *b = next(B);
            assert_memory_equal(b->tokens, want_tok[i], sizeof want_tok[i]);
            assert_memory_equal(b->topk_ids, want_ids[i], sizeof want_ids[i]);
            assert_memory_equal(b->seq, want_seq[i], sizeof want_seq[i]);
        }
        if (B != A) kd_loader_free(B);
        kd_loader_free(A);
    }
    kd_loader_opts o = opts2(3, 9, 1);
    kd_loader *A = mk(&o);
    kd_loader_cursor c = kd_loader_cursor_get(A);
    o.batch_size = 4;
    kd_loader *B = mk(&o);
    assert_int_equal(kd_loader_restore(B, &c, &err), -1);
    assert_non_null(strstr(err.msg, "saved by a loader with other options"));
    c.batch = 1000;
    assert_int_equal(kd_loader_restore(A, &c, &err), -1);
    assert_non_null(strstr(err.msg, "expected a batch in [0, 14)"));
    kd_loader_free(A);
    kd_loader_free(B);
}

static kd_loader *one(const char *path, int64_t student_vocab, kd_vocab_policy pol, const kd_dump_tokenizer *tz,
                      kd_err *err) {
    static const char *p[1];
    p[0] = path;
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = p;
    o.n_paths = 1;
    o.batch_size = 4;
    o.shuffle = 0;
    o.prefetch = 1;
    o.student_vocab = student_vocab;
    o.vocab_policy = pol;
    o.student_tokenizer = tz;
    return kd_loader_new(&o, err);
}

static void test_vocab_policy(void **state) {
    (void)state;
    kd_err err;
    char pad[1024], bad[1024], full[1024];
    tmp_path(pad, sizeof pad, "padded.h5");   /* teacher V 100, tokens < 90: ids ≥ 90 are padding */
    make_dump(pad, 8, 5, 4, 100, 90, 3, NULL);
    kd_loader *L = one(pad, 100, KD_VOCAB_EXACT, NULL, &err);
    assert_non_null(L);
    kd_loader_free(L);
    assert_null(one(pad, 90, KD_VOCAB_EXACT, NULL, &err));
    assert_non_null(strstr(err.msg, "vocab_size 100 differs from the student's 90"));
    assert_non_null(strstr(err.msg, "padded-vocabulary policy"));
    L = one(pad, 90, KD_VOCAB_PADDED, NULL, &err);
    assert_non_null(L);
    int64_t kept = 0, dropped = 0;
    for (int i = 0; i < 2; i++) {
        const kd_batch *b = next(L);
        for (int p = 0; p < b->B * b->T; p++) {
            int n = 0;
            for (int j = 0; j < 4; j++) {
                int32_t id = b->topk_ids[p * 4 + j];
                float v = b->topk_logprobs[p * 4 + j];
                if (v == -INFINITY) assert_int_equal(id, 0);
                else {
                    assert_true(id < 90 && j == n);   /* kept entries first, in order */
                    n++;
                }
                if (j) assert_true(v <= b->topk_logprobs[p * 4 + j - 1]);
            }
            kept += n;
            dropped += 4 - n;
        }
    }
    kd_loader_stats st;
    kd_loader_get_stats(L, &st);
    assert_true(dropped > 0 && st.topk_dropped == dropped && kept + dropped == 8 * 5 * 4);
    kd_loader_free(L);
    L = one(pad, 128, KD_VOCAB_PADDED, NULL, &err);   /* a student padded past the teacher */
    assert_non_null(L);
    next(L);
    kd_loader_get_stats(L, &st);
    assert_int_equal(st.topk_dropped, 0);
    kd_loader_free(L);

    tmp_path(bad, sizeof bad, "bigtok.h5");   /* tokens up to 99: not the student's with V 90 */
    make_dump(bad, 8, 5, 4, 100, 100, 0, NULL);
    L = one(bad, 90, KD_VOCAB_PADDED, NULL, &err);
    assert_non_null(L);
    assert_null(kd_loader_next(L, &err));
    assert_non_null(strstr(err.msg, "outside [0, 90) (the student's vocabulary)"));
    assert_null(kd_loader_next(L, &err));   /* sticky */
    kd_loader_free(L);

    tmp_path(full, sizeof full, "full.h5");   /* full logits: cut or padded to the student's width */
    make_dump(full, 5, 3, 0, 30, 25, 0, NULL);
    for (int sv = 25; sv <= 40; sv += 15) {
        L = one(full, sv, KD_VOCAB_PADDED, NULL, &err);
        assert_non_null(L);
        const kd_batch *b = next(L);
        assert_null(b->topk_ids);
        assert_int_equal(b->V, sv);
        for (int p = 0; p < 4 * 3; p++)
            for (int j = 0; j < sv; j++) {
                float z = b->logits[p * sv + j];
                if (j >= 30) assert_true(z == -INFINITY);
                else assert_true(fabsf(z - sinf((float)(p + j))) < 1e-3f);
            }
        kd_loader_free(L);
    }
}

static void make_tok(kd_dump_tokenizer *t, int n, const char *odd) {
    memset(t, 0, sizeof *t);
    snprintf(t->model, sizeof t->model, "llama");
    t->n = n;
    t->piece_bytes = malloc((size_t)n * 8);
    t->piece_offsets = malloc((size_t)(n + 1) * 8);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        char p[16];
        snprintf(p, sizeof p, "%s%d", i == 5 && odd ? odd : "p", i);
        t->piece_offsets[i] = off;
        memcpy(t->piece_bytes + off, p, strlen(p));
        off += (int64_t)strlen(p);
    }
    t->piece_offsets[n] = off;
    t->bos_id = 1;
    t->eos_id = 2;
    t->unk_id = t->pad_id = -1;
}

static void test_tokenizer_check(void **state) {
    (void)state;
    kd_err err;
    kd_dump_tokenizer teacher, same, other, shorter;
    make_tok(&teacher, 60, NULL);
    make_tok(&same, 60, NULL);
    make_tok(&other, 60, "q");
    make_tok(&shorter, 59, NULL);
    char path[1024], path2[1024];
    tmp_path(path, sizeof path, "tok.h5");
    make_dump(path, 4, 3, 2, 64, 60, 0, &teacher);
    kd_loader *L = one(path, 64, KD_VOCAB_EXACT, &same, &err);
    if (!L) fail_msg("%s", err.msg);
    kd_loader_free(L);
    assert_null(one(path, 64, KD_VOCAB_EXACT, &other, &err));
    assert_non_null(strstr(err.msg, "the teacher's tokenizer is not the student's"));
    assert_non_null(strstr(err.msg, "piece 5: 'p5'"));
    assert_null(one(path, 64, KD_VOCAB_EXACT, &shorter, &err));
    assert_non_null(strstr(err.msg, "has 60 pieces"));
    /* two dumps with different tokenizers */
    tmp_path(path2, sizeof path2, "tok2.h5");
    make_dump(path2, 4, 3, 2, 64, 60, 0, &other);
    const char *paths[2] = {path, path2};
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = paths;
    o.n_paths = 2;
    assert_null(kd_loader_new(&o, &err));
    assert_non_null(strstr(err.msg, "tokenizers differ at piece 5"));
    /* dumps that disagree on shape */
    make_dump(path2, 4, 4, 2, 64, 60, 0, NULL);
    assert_null(kd_loader_new(&o, &err));
    assert_non_null(strstr(err.msg, "seq_len 4, k 2, vocab_size 64 differ from"));
    kd_dump_tokenizer_free(&teacher);
    kd_dump_tokenizer_free(&same);
    kd_dump_tokenizer_free(&other);
    kd_dump_tokenizer_free(&shorter);
}

static void test_read_error_in_thread(void **state) {
    (void)state;
    kd_err err;
    char path[1024];
    tmp_path(path, sizeof path, "corrupt.h5");
    make_dump(path, 10, 4, 3, 50, 50, 0, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);   /* an id out of range in sequence 6 */
    hid_t ds = H5Dopen2(f, "topk_ids", H5P_DEFAULT), fs = H5Dget_space(ds);
    hsize_t start[3] = {6, 2, 1}, count[3] = {1, 1, 1}, one_ = 1;
    uint16_t v = 77;
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t ms = H5Screate_simple(1, &one_, NULL);
    assert_true(H5Dwrite(ds, H5T_NATIVE_UINT16, ms, fs, H5P_DEFAULT, &v) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(ds);
    H5Fclose(f);
    kd_loader *L = one(path, 0, KD_VOCAB_EXACT, NULL, &err);
    assert_non_null(L);
    next(L);   /* sequences 0-3, 4-7 */
    assert_null(kd_loader_next(L, &err));
    assert_non_null(strstr(err.msg, "dataset 'topk_ids': sequence 6, position 2, slot 1: id 77 outside [0, 50)"));
    kd_loader_cursor c = kd_loader_cursor_get(L);   /* still at the failed batch */
    assert_int_equal(c.batch, 1);
    c.batch = 2;   /* skip it */
    CHECK(kd_loader_restore(L, &c, &err));
    assert_int_equal(next(L)->seq[0], 8);
    kd_loader_free(L);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_shuffle_and_coverage), cmocka_unit_test(test_sharding),
    cmocka_unit_test(test_split),                cmocka_unit_test(test_cursor_resume),
    cmocka_unit_test(test_vocab_policy),         cmocka_unit_test(test_tokenizer_check),
    cmocka_unit_test(test_read_error_in_thread),
};

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    return KD_RUN_GROUP(tests, setup, NULL);
}
