/*
 * test_dump_pack.c — the compressed top-k layout "topk-packed-v1"
 * (data/kd_dump_codec.h, docs/dump-format.md "Compressed dumps"): the codec
 * round-trips ids exactly and log-probs within the documented bound (masked
 * positions, unfilled −Inf slots, escaped ids included) and refuses a cut
 * record; kd's writer writes it, resumes it, and every reader (kd_dump_read,
 * the validator, the loader) takes it as a plain dump; kd teacher pack and
 * the documented h5py encoder (tests/py/dump_pack.py, verbatim in the docs)
 * produce files kd decodes within the bound of the original; kd teacher info
 * reports the layout, the decode error (--compare) and sizes (--estimate).
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"
#include "data/kd_loader.h"

#define CHECK(call) do { kd_err err_; if ((call) != 0) fail_msg("%s", err_.msg); } while (0)
#define E (&err_)

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", kd_test_tmpdir(), name); }

/* Valid top-k rows: distinct ids (some frequent, some rare), descending log-probs, a few
 * positions with unfilled −Inf slots, a few with a top-1 near p = 1 or a very flat tail. */
static void gen(kd_rng *r, int64_t P, int k, int64_t V, int32_t *ids, float *lp) {
    for (int64_t p = 0; p < P; p++) {
        int32_t *id = ids + p * k;
        float *l = lp + p * k;
        double w[256], sum = 0, mass = 0.5 + 0.49 * kd_rng_uniform(r);
        int sharp = p % 13 == 0, nfin = p % 7 == 3 ? 1 + (int)kd_rng_below(r, (uint64_t)k) : k;
        for (int j = 0; j < k; j++) {
            int dup;
            do {   /* mostly small ids (frequent), sometimes any id (rare, escaped) */
                id[j] = (int32_t)(kd_rng_uniform(r) < 0.8 ? kd_rng_below(r, 40 < V ? 40 : (uint64_t)V)
                                                          : kd_rng_below(r, (uint64_t)V));
                dup = 0;
                for (int q = 0; q < j; q++) dup |= id[q] == id[j];
            } while (dup);
            double u = kd_rng_uniform(r) + 1e-4;
            sum += w[j] = sharp && j == 0 ? 1e6 : pow(u, 6);
        }
        for (int j = 0; j < k; j++)
            for (int q = j; q > 0 && w[q] > w[q - 1]; q--) {
                double t = w[q]; w[q] = w[q - 1]; w[q - 1] = t;
            }
        for (int j = 0; j < k; j++) l[j] = j < nfin ? (float)log(w[j] / sum * mass) : -INFINITY;
    }
}

/* decoded (ids b, lp b) against the original (a): ids exact, sorted, within the bound */
static void check_close(const kd_pack_codec *c, int64_t P, const uint8_t *mask, const int32_t *ia, const float *la,
                        const int32_t *ib, const float *lb) {
    int k = c->k;
    for (int64_t p = 0; p < P; p++) {
        if (mask && !mask[p]) continue;
        for (int j = 0; j < k; j++) {
            float a = la[p * k + j], b = lb[p * k + j];
            if (!isfinite(a)) {
                assert_true(b == -INFINITY);
                continue;
            }
            assert_int_equal(ia[p * k + j], ib[p * k + j]);
            assert_true(b <= 0);
            if (j) assert_true(b <= lb[p * k + j - 1]);
            double gap = (double)lb[p * k] - b, e = fabs((double)a - b);
            if (gap < KD_PACK_GAP_MAX && e > kd_pack_error_bound(c, j, gap) + 1e-6 * (1 + fabs((double)a)))
                fail_msg("position %lld slot %d: %g decoded as %g (gap %g, bound %g)", (long long)p, j, a, b, gap,
                         kd_pack_error_bound(c, j, gap));
        }
    }
}

static void test_codec_roundtrip(void **state) {
    (void)state;
    const int64_t T = 50;
    const struct { int k; int64_t V; double step, knee; } cases[] = {
        {64, 512, 1.0 / 16, 2}, {7, 128256, 1.0 / 64, 1}, {1, 3, 1, 64}, {33, 70000, 1.0 / 1024, 1.0 / 16}};
    kd_rng r;
    kd_rng_seed(&r, 42);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int k = cases[ci].k;
        int64_t V = cases[ci].V;
        int32_t *ids = malloc((size_t)(T * k) * 4), *ids2 = malloc((size_t)(T * k) * 4), *order = malloc((size_t)V * 4);
        float *lp = malloc((size_t)(T * k) * 4), *lp2 = malloc((size_t)(T * k) * 4);
        uint8_t mask[50];
        for (int t = 0; t < T; t++) mask[t] = t % 9 != 4;
        gen(&r, T, k, V, ids, lp);
        kd_pack_order_from(ids, T * k, V, order);
        kd_pack_codec c;
        CHECK(kd_pack_init(&c, k, V, cases[ci].step, cases[ci].knee, order, E));
        size_t cap = kd_pack_bound(&c, T) + kd_pack_pad(&c);
        uint8_t *buf = calloc(1, cap);
        size_t n = kd_pack_encode(&c, T, mask, ids, lp, buf);
        assert_true(n > 8 && n <= kd_pack_bound(&c, T));
        CHECK(kd_pack_decode(&c, T, mask, buf, n, ids2, lp2, "case", E));
        check_close(&c, T, mask, ids, lp, ids2, lp2);
        for (int t = 0; t < T; t++)   /* masked positions: ids 0, log-probs 0 */
            if (!mask[t]) assert_true(ids2[t * k] == 0 && lp2[t * k] == 0);
        /* a record cut short is an error naming the position, never a crash */
        kd_err err;
        assert_int_equal(kd_pack_decode(&c, T, mask, buf, n / 2, ids2, lp2, "cut", &err), -1);
        assert_non_null(strstr(err.msg, "cut"));
        assert_int_equal(kd_pack_decode(&c, T, mask, buf, 5, ids2, lp2, "tiny", &err), -1);
        kd_pack_free(&c);
        free(buf);
        free(ids);
        free(ids2);
        free(order);
        free(lp);
        free(lp2);
    }
    kd_pack_codec c;
    kd_err err;
    assert_int_equal(kd_pack_init(&c, 4, 10, 2.0, 2, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "lp_step"));
    int32_t bad[3] = {0, 0, 2};
    assert_int_equal(kd_pack_init(&c, 2, 3, 0.1, 2, bad, &err), -1);
    assert_non_null(strstr(err.msg, "topk_id_order"));
}

/* A plain dump and the same data written packed by kd's writer (two appends, a resume between). */
enum { N = 9, T = 12, K = 8, V = 300 };
static int32_t g_tok[N * (T + 1)], g_ids[N * T * K];
static uint8_t g_mask[N * T];
static float g_lp[N * T * K];

static void write_dump(const char *path, int packed) {
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32,
                      .has_loss_mask = 1, .packed = packed};
    snprintf(m.teacher, sizeof m.teacher, "pack-test");
    kd_dump_writer *w;
    CHECK(!(w = kd_dump_writer_create(path, &m, NULL, E)));
    CHECK(kd_dump_writer_append(w, 4, g_tok, g_mask, g_ids, g_lp, E));
    CHECK(kd_dump_writer_close(w, E));
    CHECK(!(w = kd_dump_writer_resume(path, E)));   /* reopens the finished file and appends the rest */
    assert_int_equal(kd_dump_writer_n_seq(w), 4);
    assert_int_equal(kd_dump_writer_meta(w)->packed, packed);
    CHECK(kd_dump_writer_append(w, N - 4, g_tok + 4 * (T + 1), g_mask + 4 * T, g_ids + 4 * T * K, g_lp + 4 * T * K, E));
    CHECK(kd_dump_writer_close(w, E));
}

static void test_writer_reader_loader(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 7);
    for (int i = 0; i < N * (T + 1); i++) g_tok[i] = (int32_t)kd_rng_below(&r, V);
    for (int i = 0; i < N * T; i++) g_mask[i] = i % 10 != 3;
    gen(&r, N * T, K, V, g_ids, g_lp);
    char plain[1024], packed[1024];
    tmp_path(plain, sizeof plain, "plain.h5");
    tmp_path(packed, sizeof packed, "packed.h5");
    write_dump(plain, 0);
    write_dump(packed, 1);

    kd_dump *d;
    CHECK(!(d = kd_dump_open(packed, E)));
    const kd_dump_meta *m = kd_dump_get_meta(d);
    assert_int_equal(m->packed, 1);
    assert_int_equal(m->n_seq, N);
    assert_true(m->pack_step == KD_PACK_STEP_DEFAULT && m->pack_knee == KD_PACK_KNEE_DEFAULT);
    static int32_t tok[N * (T + 1)], ids[N * T * K];
    static float lp[N * T * K];
    static uint8_t mask[N * T];
    kd_dump_rows rows = {.tokens = tok, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
    CHECK(kd_dump_read(d, 0, N, &rows, E));
    assert_memory_equal(tok, g_tok, sizeof tok);
    assert_memory_equal(mask, g_mask, sizeof mask);
    kd_pack_codec c;
    CHECK(kd_pack_init(&c, K, V, m->pack_step, m->pack_knee, NULL, E));
    check_close(&c, N * T, g_mask, g_ids, g_lp, ids, lp);
    /* ids alone, then log-probs alone, of one sequence: the same values */
    static int32_t ids1[T * K];
    static float lp1[T * K];
    kd_dump_rows r1 = {.topk_ids = ids1}, r2 = {.topk_logprobs = lp1};
    CHECK(kd_dump_read(d, 5, 1, &r1, E));
    CHECK(kd_dump_read(d, 5, 1, &r2, E));
    assert_memory_equal(ids1, ids + 5 * T * K, sizeof ids1);
    assert_memory_equal(lp1, lp + 5 * T * K, sizeof lp1);
    assert_true(kd_dump_storage_bytes(d) > 0);
    kd_dump_report rep;
    CHECK(kd_dump_check(d, &rep, E));
    assert_int_equal(rep.n_positions, N * T);
    kd_dump_close(d);

    /* the loader: each row equals kd_dump_read of its sequence */
    const char *paths[1] = {packed};
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = paths;
    o.n_paths = 1;
    o.batch_size = 4;
    o.seed = 3;
    kd_loader *L;
    CHECK(!(L = kd_loader_new(&o, E)));
    for (int i = 0; i < 3; i++) {
        const kd_batch *b;
        CHECK(!(b = kd_loader_next(L, E)));
        for (int row = 0; row < b->B; row++) {
            if (b->dump[row] < 0) continue;
            int64_t s = b->seq[row];
            assert_memory_equal(b->topk_ids + row * T * K, ids + s * T * K, (size_t)(T * K) * 4);
            assert_memory_equal(b->topk_logprobs + row * T * K, lp + s * T * K, (size_t)(T * K) * 4);
        }
    }
    kd_loader_free(L);

    /* kd teacher pack of the plain dump; compare both packed files with it */
    char repacked[1024];
    tmp_path(repacked, sizeof repacked, "repacked.h5");
    CHECK(kd_dump_repack(plain, repacked, 1.0 / 32, 1.0, E));
    const char *files[2] = {packed, repacked};
    for (int i = 0; i < 2; i++) {
        kd_dump *a, *b;
        CHECK(!(a = kd_dump_open(files[i], E)));
        CHECK(!(b = kd_dump_open(plain, E)));
        kd_dump_diff df;
        CHECK(kd_dump_compare(a, b, &df, E));
        assert_int_equal(df.id_mismatch, 0);
        assert_int_equal(df.over_bound, 0);
        assert_true(df.entries > 0 && df.max_lp_err > 0);
        kd_dump_close(a);
        kd_dump_close(b);
    }
    kd_pack_free(&c);
    /* a packed dump cannot be written without a top-k */
    kd_dump_meta bad = {.vocab_size = V, .k = 0, .seq_len = T, .temperature = 1.0, .packed = 1};
    kd_err err;
    char p2[1024];
    tmp_path(p2, sizeof p2, "bad.h5");
    assert_null(kd_dump_writer_create(p2, &bad, NULL, &err));
    assert_non_null(strstr(err.msg, "packed"));
}

static void test_python_encoder_and_cli(void **state) {
    (void)state;
    char plain[1024], py[1024], dir[1024];
    tmp_path(plain, sizeof plain, "plain.h5");
    tmp_path(py, sizeof py, "py.h5");
    tmp_path(dir, sizeof dir, "");
    const char *kd = kd_test_env("KD_BIN");
    if (kd_test_sh("'%s' -c 'import h5py, numpy' 2>/dev/null", kd_test_env("KD_PYTHON")) != 0) {
        KD_TEST_MISSING("Python with numpy and h5py (KD_PYTHON) for tests/py/dump_pack.py");
        return;
    }
    assert_int_equal(kd_test_python("dump_pack.py", "'%s' '%s' 0.03125 1.5", plain, py), 0);
    char doc[1024], recipe[1024];
    snprintf(doc, sizeof doc, "%s/docs/dump-format.md", kd_test_env("KD_SOURCE_DIR"));
    snprintf(recipe, sizeof recipe, "%s/tests/py/dump_pack.py", kd_test_env("KD_SOURCE_DIR"));
    assert_int_equal(kd_test_python("dump_check.py", "doc-sync '%s' '%s'", doc, recipe), 0);
    kd_dump *a, *b;
    CHECK(!(a = kd_dump_open(py, E)));
    CHECK(!(b = kd_dump_open(plain, E)));
    assert_true(kd_dump_get_meta(a)->packed && kd_dump_get_meta(a)->pack_step == 0.03125);
    kd_dump_diff df;
    CHECK(kd_dump_compare(a, b, &df, E));
    assert_int_equal(df.id_mismatch, 0);
    assert_int_equal(df.over_bound, 0);
    kd_dump_close(a);
    kd_dump_close(b);
    /* kd teacher info: layout, --compare, --estimate; kd teacher pack */
    assert_int_equal(kd_test_sh("'%s' teacher info '%s' --compare '%s' --estimate 1000000 > '%s/info.txt'", kd, py, plain, dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'layout topk-packed-v1: log-prob grid step 0.03125 nats, knee 1.5' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^vs original .* 0 ids differ' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '; 0 entries over the documented bound' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^estimate     1000000 tokens: packed' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("grep -q '^check        ok' '%s/info.txt'", dir), 0);
    assert_int_equal(kd_test_sh("'%s' teacher pack '%s' --out '%s/cli.h5' && '%s' teacher info '%s/cli.h5' --compare '%s' "
                                "> /dev/null", kd, plain, dir, kd, dir, plain), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info '%s' --estimate 1000 | grep -q 'packed .* measured on its first'", kd,
                                plain), 0);
    assert_int_equal(kd_test_sh("'%s' teacher pack '%s' 2>/dev/null", kd, plain), 2);
}

/* kd teacher dump --compress on the real aidreams260K teacher gives the plain run's data within the bound,
 * and a short distillation on it ends within 2 % of the plain run's validation KL (same seed and steps;
 * validated on the plain dump, so both KLs are against the original teacher). */
static void test_compress_dump_and_student(void **state) {
    (void)state;
    char dir[1024], p[1200];
    tmp_path(dir, sizeof dir, "real");
    const char *kd = kd_test_env("KD_BIN");
    assert_int_equal(kd_test_sh("mkdir -p '%s'", dir), 0);
    snprintf(p, sizeof p, "%s/teacher", dir);
    assert_int_equal(kd_test_import_aidreams(p), 0);
    const char *dump = "'%s' teacher dump --teacher '%s/teacher' --generate 200 --seq-len 32 --topk 32 --batch 50 --quiet "
                       "--out '%s/%s.h5'%s";
    char extra[1200];
    snprintf(extra, sizeof extra, " --val-out '%s/val.h5' --val-fraction 0.2", dir);
    assert_int_equal(kd_test_sh(dump, kd, dir, dir, "plain", extra), 0);
    snprintf(extra, sizeof extra, " --val-out '%s/valp.h5' --val-fraction 0.2 --compress", dir);
    assert_int_equal(kd_test_sh(dump, kd, dir, dir, "packed", extra), 0);
    assert_int_equal(kd_test_sh("'%s' teacher info '%s/packed.h5' --compare '%s/plain.h5' > '%s/info.txt'", kd, dir, dir,
                                dir), 0);
    assert_int_equal(kd_test_sh("grep -q 'layout topk-packed-v1: log-prob grid step 0.0625 nats, knee 2' '%s/info.txt'",
                                dir), 0);
    /* resuming with another layout is refused by name */
    assert_int_equal(kd_test_sh("cp '%s/plain.h5' '%s/x.h5.partial' && '%s' teacher dump --teacher '%s/teacher' "
                                "--generate 10 --seq-len 32 --topk 32 --compress --quiet --out '%s/x.h5' 2> '%s/err.txt'",
                                dir, dir, kd, dir, dir, dir), 1);
    assert_int_equal(kd_test_sh("grep -q 'layout plain' '%s/err.txt'", dir), 0);
    double kl[2];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/run%d.json", dir, i);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fprintf(f, "{\"student\": \"%s/configs/student-tiny.json\", \"train_data\": \"%s/%s.h5\", "
                   "\"val_data\": \"%s/val.h5\", \"batch_size\": 8, \"steps\": 40, \"lr\": 3e-3, \"warmup\": 4, "
                   "\"eval_every\": 40, \"save_every\": 1000, \"alpha\": 1.0, \"temperature\": 1.0, \"seed\": 5}\n",
                kd_test_env("KD_SOURCE_DIR"), dir, i ? "packed" : "plain", dir);
        fclose(f);
        assert_int_equal(kd_test_sh("'%s' train --config '%s' --out '%s/run%d' > /dev/null 2>&1", kd, p, dir, i), 0);
        snprintf(p, sizeof p, "run%d/final_eval.json", i);
        kl[i] = kd_test_json_number(dir, p, "kl");
    }
    print_message("val KL after 40 steps: plain %.4f, packed %.4f\n", kl[0], kl[1]);
    if (fabs(kl[1] - kl[0]) > 0.02 * kl[0]) fail_msg("val KL %g (packed) vs %g (plain): more than 2 %% apart", kl[1], kl[0]);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_codec_roundtrip),
    cmocka_unit_test(test_writer_reader_loader),
    cmocka_unit_test(test_python_encoder_and_cli),
    cmocka_unit_test(test_compress_dump_and_student),
};
KD_TEST_MAIN(tests)
