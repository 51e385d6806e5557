/*
 * test_quant.c — the ggml block quantizers (format/kd_quant.c):
 *   - bytes of every type against an independent numpy version of the
 *     reference rules (tests/py/quant_ref.py), on fixed random rows and edge
 *     cases (zeros, one huge value per block, exact .5 ties, negative maxima,
 *     constants, fp16-subnormal and sub-1e-15 magnitudes, −0.0 and mixed
 *     ±0 blocks);
 *   - kd's dequantization of the reference bytes against the reference's;
 *   - round-trip error bounds, vec_dot against dequantize + dot, fake-quant,
 *     parallel rows, and clear errors for bad (type, n);
 *   - when node-llama-cpp's prebuilt ggml (tests/node/node_modules, installed
 *     by tools/setup.sh) is present, bytes against ggml's own
 *     quantize_row_*_ref and dequantize_row_* through dlopen.
 */
#include "kd_test.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "format/kd_quant.h"

#define N 512              /* row length: two K-quant super-blocks, 16 blocks of 32 */
#define ROWS_RANDOM 48

static float *g_x;         /* [g_rows, N] */
static int64_t g_rows;
static char g_ref[600];    /* the reference's output directory */

static const struct { const char *name; int32_t type; } TYPES[] = {
    {"q8_0", KD_GGML_TYPE_Q8_0}, {"q4_0", KD_GGML_TYPE_Q4_0}, {"q4_1", KD_GGML_TYPE_Q4_1},
    {"q4_k", KD_GGML_TYPE_Q4_K}, {"q6_k", KD_GGML_TYPE_Q6_K}, {"f16", KD_GGML_TYPE_F16},
    {"bf16", KD_GGML_TYPE_BF16},
};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

static void make_rows(void) {
    const int n_edge = 15;
    g_rows = ROWS_RANDOM + n_edge;
    g_x = calloc((size_t)(g_rows * N), sizeof(float));
    kd_rng r;
    kd_rng_seed(&r, 20250220);
    for (int64_t i = 0; i < ROWS_RANDOM; i++)   /* magnitudes from 1e-3 to 1e3 */
        kd_test_fill_normal(&r, g_x + i * N, N, powf(10.0f, (float)(i % 7) - 3.0f));
    float *e = g_x + ROWS_RANDOM * N;
    /* 0: all zeros (already) */
    e += N;
    /* 1: one huge value per 32-block */
    kd_test_fill_normal(&r, e, N, 1.0f);
    for (int j = 5; j < N; j += 32) e[j] = 1000.0f;
    e += N;
    /* 2: Q8_0 ties: amax 127 so d = 1 and x·id = x exactly; x = k + 0.5 */
    for (int j = 0; j < N; j++) e[j] = j % 32 == 0 ? 127.0f : (float)((j * 7) % 120 - 60) + 0.5f;
    e += N;
    /* 3: negative maximum per block */
    kd_test_fill_normal(&r, e, N, 1.0f);
    for (int j = 9; j < N; j += 32) e[j] = -50.0f;
    e += N;
    /* 4, 5: constants */
    for (int j = 0; j < N; j++) e[j] = 0.75f, e[N + j] = -0.3f;
    e += 2 * N;
    /* 6: tiny values: K-quant scales fall below 1e-15, fp16 scales underflow */
    kd_test_fill_normal(&r, e, N, 1e-20f);
    e += N;
    /* 7: fp16-subnormal scales */
    kd_test_fill_normal(&r, e, N, 1e-6f);
    e += N;
    /* 8: negative zeros */
    for (int j = 0; j < N; j++) e[j] = -0.0f;
    e += N;
    /* 9: Q4_1 ties: min 0, max 15, so d = 1 and values k + 0.5 land on .5 + .5 */
    for (int j = 0; j < N; j++) e[j] = j % 32 == 0 ? 0.0f : j % 32 == 1 ? 15.0f : (float)(j % 15) + 0.5f;
    e += N;
    /* 10: large values, up to about half the fp16 range */
    kd_test_fill_normal(&r, e, N, 8e3f);
    e += N;
    /* 11: all positive (K-quant min clamps to 0) */
    for (int j = 0; j < N; j++) e[j] = 0.1f + (float)((j * 37) % 101) / 50.0f;
    e += N;
    /* 12: few distinct levels; 13: exact multiples of a power of two (Q4_0 ties) */
    for (int j = 0; j < N; j++) e[j] = (float)((j * 5) % 8) - 3.5f, e[N + j] = (float)((j * 11) % 17 - 8) * 0.25f;
    e += 2 * N;
    /* 14: sparse: 0.0 and −0.0 mixed (the first zero is the running min/max) and a few values */
    for (int j = 0; j < N; j++) e[j] = j % 13 == 0 ? 0.1f * (float)(j % 7) : (j / 3) % 2 ? -0.0f : 0.0f;
}

static int setup(void **state) {
    (void)state;
    make_rows();
    char in[700];
    snprintf(g_ref, sizeof g_ref, "%s/quant_ref", kd_test_tmpdir());
    snprintf(in, sizeof in, "%s/rows.f32", kd_test_tmpdir());
    if (kd_mkdirs(g_ref, NULL) || kd_write_file_atomic(in, g_x, (size_t)(g_rows * N) * sizeof(float), NULL)) return -1;
    return kd_test_python("quant_ref.py", "'%s' %d '%s'", in, N, g_ref) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    free(g_x);
    return 0;
}

static void *read_ref(const char *type, const char *ext, size_t want) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s.%s", g_ref, type, ext);
    size_t len;
    void *p = kd_read_file(path, &len, NULL);
    assert_non_null(p);
    assert_int_equal(len, want);
    return p;
}

/* Blocks (of the type's block size, 32 elements for F16/BF16) whose bytes differ. */
static int64_t diff_blocks(int32_t type, const unsigned char *a, const unsigned char *b, int64_t n_elems) {
    int64_t blk = kd_quant_block(type) > 1 ? kd_quant_block(type) : 32;
    size_t bb = kd_quant_row_size(type, blk);
    int64_t bad = 0;
    for (int64_t i = 0; i < n_elems / blk; i++) bad += memcmp(a + i * bb, b + i * bb, bb) != 0;
    return bad;
}

static void test_bytes_vs_numpy(void **state) {
    (void)state;
    for (size_t t = 0; t < N_TYPES; t++) {
        const int32_t type = TYPES[t].type;
        const size_t rs = kd_quant_row_size(type, N), total = rs * (size_t)g_rows;
        unsigned char *mine = malloc(total), *ref = read_ref(TYPES[t].name, "bin", total);
        for (int64_t r = 0; r < g_rows; r++) kd_quantize_row(type, g_x + r * N, mine + r * rs, N);
        int64_t bad = diff_blocks(type, mine, ref, g_rows * N);
        int64_t nblk = g_rows * N / (kd_quant_block(type) > 1 ? kd_quant_block(type) : 32);
        fprintf(stderr, "%-5s kd vs numpy reference: %lld of %lld blocks differ\n", TYPES[t].name, (long long)bad,
                (long long)nblk);
        for (int64_t r = 0; r < g_rows && bad; r++)
            if (memcmp(mine + r * rs, ref + r * rs, rs)) {
                fprintf(stderr, "  first differing row %lld\n", (long long)r);
                break;
            }
        assert_int_equal(bad, 0);
        /* kd's dequantization of the reference bytes equals the reference's, bit for bit */
        float *deq = malloc((size_t)(g_rows * N) * sizeof(float));
        float *rdeq = read_ref(TYPES[t].name, "deq.f32", (size_t)(g_rows * N) * sizeof(float));
        for (int64_t r = 0; r < g_rows; r++) kd_dequantize_row(type, ref + r * rs, deq + r * N, N);
        int64_t nd = 0;
        for (int64_t i = 0; i < g_rows * N; i++) nd += memcmp(&deq[i], &rdeq[i], 4) != 0;
        if (nd) fprintf(stderr, "%s: %lld dequantized values differ from numpy\n", TYPES[t].name, (long long)nd);
        assert_int_equal(nd, 0);
        free(deq);
        free(rdeq);
        free(mine);
        free(ref);
    }
}

/* Round trip: worst error per block against each format's bound, and relative RMS error on the random rows. */
static void test_roundtrip_bounds(void **state) {
    (void)state;
    float *y = malloc(N * sizeof(float));
    const double rmse_max[] = {0.01, 0.15, 0.12, 0.1, 0.03, 1e-3, 8e-3};
    for (size_t t = 0; t < N_TYPES; t++) {
        const int32_t type = TYPES[t].type;
        double se = 0, sx = 0;
        for (int64_t r = 0; r < g_rows; r++) {
            const float *x = g_x + r * N;
            kd_fake_quant_row(type, x, y, N);
            for (int64_t b = 0; b < N / 32; b++) {
                const float *xb = x + 32 * b, *yb = y + 32 * b;
                float amax = 0, mn = INFINITY, mx = -INFINITY;
                for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j])), mn = fminf(mn, xb[j]), mx = fmaxf(mx, xb[j]);
                double bound;   /* the rounding step plus the fp16 rounding of the scales; 1e-7 for fp16 underflow */
                switch (type) {
                case KD_GGML_TYPE_Q8_0: bound = 0.5 * amax / 127 + amax * 1e-3; break;
                case KD_GGML_TYPE_Q4_0: bound = amax / 8 + amax * 1e-2; break;
                case KD_GGML_TYPE_Q4_1: bound = 0.5 * (mx - mn) / 15 + (fabs(mn) + (mx - mn)) * 1e-3; break;
                case KD_GGML_TYPE_Q4_K: bound = 0.55 * (mx - fmin(mn, 0)) / 15 * 8 + amax * 2e-3; break;   /* coarse: 6-bit scales */
                case KD_GGML_TYPE_Q6_K: bound = amax / 32 * 2 + amax * 2e-3; break;
                case KD_GGML_TYPE_F16: bound = amax * 4.9e-4 + 6e-8; break;
                default: bound = amax * 3.9e-3; break;
                }
                /* scales in fp16's subnormal range are rounded to 2^-25 absolute */
                bound += kd_quant_block(type) == 32 ? 128 * 0x1p-25 : kd_quant_block(type) == 256 ? 64 * 16 * 0x1p-25 : 1e-7;
                for (int j = 0; j < 32; j++)
                    if (!(fabs((double)xb[j] - yb[j]) <= bound)) {
                        fprintf(stderr, "%s: row %lld element %lld: %.9g → %.9g, bound %.3g\n", TYPES[t].name,
                                (long long)r, (long long)(32 * b + j), xb[j], yb[j], bound);
                        fail();
                    }
            }
        }
        /* relative RMS on the unit-scale random rows (i % 7 == 3) */
        se = sx = 0;
        for (int64_t r = 3; r < ROWS_RANDOM; r += 7) {
            kd_fake_quant_row(type, g_x + r * N, y, N);
            for (int j = 0; j < N; j++) {
                double d = (double)g_x[r * N + j] - y[j];
                se += d * d;
                sx += (double)g_x[r * N + j] * g_x[r * N + j];
            }
        }
        double rel = sqrt(se / sx);
        fprintf(stderr, "%-5s relative RMS round-trip error on N(0,1) rows: %.4f\n", TYPES[t].name, rel);
        assert_true(rel < rmse_max[t]);
    }
    free(y);
}

static void test_vec_dot_and_fake(void **state) {
    (void)state;
    float *xv = malloc(N * sizeof(float)), *deq = malloc(N * sizeof(float)), *fq = malloc(N * sizeof(float));
    unsigned char *q = malloc(kd_quant_row_size(KD_GGML_TYPE_F32, N));
    kd_rng r;
    kd_rng_seed(&r, 5);
    kd_test_fill_normal(&r, xv, N, 1.0f);
    const int32_t all[] = {KD_GGML_TYPE_F32, KD_GGML_TYPE_F16, KD_GGML_TYPE_BF16, KD_GGML_TYPE_Q8_0,
                           KD_GGML_TYPE_Q4_0, KD_GGML_TYPE_Q4_1, KD_GGML_TYPE_Q4_K, KD_GGML_TYPE_Q6_K};
    for (size_t t = 0; t < sizeof all / sizeof all[0]; t++) {
        for (int64_t row = 0; row < g_rows; row++) {
            const float *w = g_x + row * N;
            kd_quantize_row(all[t], w, q, N);
            kd_dequantize_row(all[t], q, deq, N);
            double ref = 0, mag = 0;
            for (int j = 0; j < N; j++) ref += (double)deq[j] * xv[j], mag += fabs((double)deq[j] * xv[j]);
            double got = kd_vec_dot_q(all[t], q, xv, N);
            if (!(fabs(got - ref) <= 1e-5 * mag + 1e-30)) {
                fprintf(stderr, "%s row %lld: vec_dot %.9g, dequantize+dot %.9g\n", kd_ggml_type_name(all[t]),
                        (long long)row, got, ref);
                fail();
            }
            /* fake quant = dequantize(quantize), also in place */
            kd_fake_quant_row(all[t], w, fq, N);
            assert_memory_equal(fq, deq, N * sizeof(float));
            memcpy(fq, w, N * sizeof(float));
            kd_fake_quant_row(all[t], fq, fq, N);
            assert_memory_equal(fq, deq, N * sizeof(float));
        }
    }
    free(xv);
    free(deq);
    free(fq);
    free(q);
}

static void test_rows_parallel(void **state) {
    (void)state;
    const int64_t rows = 160;   /* 160 × 512 = 80K elements: the parallel path */
    float *x = malloc((size_t)(rows * N) * sizeof(float)), *y = malloc((size_t)(rows * N) * sizeof(float));
    kd_rng r;
    kd_rng_seed(&r, 9);
    kd_test_fill_normal(&r, x, rows * N, 0.05f);
    const int32_t types[] = {KD_GGML_TYPE_Q4_K, KD_GGML_TYPE_Q8_0};
    for (int t = 0; t < 2; t++) {
        size_t rs = kd_quant_row_size(types[t], N);
        unsigned char *a = malloc(rs * rows), *b = malloc(rs * rows);
        kd_err err;
        assert_int_equal(kd_quantize_rows(types[t], x, a, rows, N, &err), 0);
        for (int64_t i = 0; i < rows; i++) kd_quantize_row(types[t], x + i * N, b + i * rs, N);
        assert_memory_equal(a, b, rs * rows);
        assert_int_equal(kd_dequantize_rows(types[t], a, y, rows, N, &err), 0);
        float row[N];
        kd_dequantize_row(types[t], b + 7 * rs, row, N);
        assert_memory_equal(row, y + 7 * N, sizeof row);
        assert_int_equal(kd_fake_quant_rows(types[t], x, x, rows, N, &err), 0);
        assert_memory_equal(x, y, (size_t)(rows * N) * sizeof(float));
        kd_test_fill_normal(&r, x, rows * N, 0.05f);
        free(a);
        free(b);
    }
    free(x);
    free(y);
}

static void test_errors(void **state) {
    (void)state;
    kd_err err;
    assert_int_equal(kd_quant_check(KD_GGML_TYPE_Q4_K, 172, &err), -1);
    assert_non_null(strstr(err.msg, "Q4_K"));
    assert_non_null(strstr(err.msg, "172"));
    assert_non_null(strstr(err.msg, "256"));
    assert_int_equal(kd_quant_check(6, 64, &err), -1);   /* Q5_0 */
    assert_non_null(strstr(err.msg, "Q5_0"));
    assert_int_equal(kd_quant_check(KD_GGML_TYPE_F16, 172, &err), 0);
    float x[64] = {0};
    unsigned char buf[64];
    assert_int_equal(kd_quantize_rows(KD_GGML_TYPE_Q8_0, x, buf, 1, 48, &err), -1);
    assert_non_null(strstr(err.msg, "48"));
    assert_int_equal(kd_quant_row_size(KD_GGML_TYPE_Q6_K, 512), 420);
    assert_int_equal(kd_quant_row_size(KD_GGML_TYPE_Q4_1, 100), 0);
    assert_true(kd_quant_is_quantized(KD_GGML_TYPE_Q4_0) && !kd_quant_is_quantized(KD_GGML_TYPE_BF16));
}

/* ggml itself, from node-llama-cpp's prebuilt libggml-base.so, when installed. */
typedef void (*quant_fn)(const float *, void *, int64_t);
typedef void (*dequant_fn)(const void *, float *, int64_t);

static void test_bytes_vs_ggml(void **state) {
    (void)state;
    char lib[800];
    snprintf(lib, sizeof lib, "%s/tests/node/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so",
             kd_test_env("KD_SOURCE_DIR"));
    void *h = kd_file_exists(lib) ? dlopen(lib, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (!h) {
        fprintf(stderr, "%s not loadable\n", lib);
        KD_TEST_MISSING("ggml comparison: node-llama-cpp's libggml-base.so not loadable (run tools/setup.sh to "
                        "install tests/node)");
    }
    static const char *names[] = {"q8_0", "q4_0", "q4_1", "q4_K", "q6_K"};
    for (size_t t = 0; t < 5; t++) {
        char qn[64], dn[64];
        snprintf(qn, sizeof qn, "quantize_row_%s_ref", names[t]);
        snprintf(dn, sizeof dn, "dequantize_row_%s", names[t]);
        quant_fn qf = (quant_fn)dlsym(h, qn);
        dequant_fn df = (dequant_fn)dlsym(h, dn);
        assert_non_null(qf);
        assert_non_null(df);
        const int32_t type = TYPES[t].type;
        const size_t rs = kd_quant_row_size(type, N);
        unsigned char *mine = malloc(rs), *theirs = malloc(rs);
        float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
        int64_t bad = 0, bad_deq = 0;
        for (int64_t r = 0; r < g_rows; r++) {
            kd_quantize_row(type, g_x + r * N, mine, N);
            qf(g_x + r * N, theirs, N);
            bad += diff_blocks(type, mine, theirs, N);
            kd_dequantize_row(type, theirs, a, N);
            df(theirs, b, N);
            bad_deq += memcmp(a, b, N * sizeof(float)) != 0;
        }
        fprintf(stderr, "%-5s kd vs ggml's quantize_row_%s_ref: %lld of %lld blocks differ; dequantize rows differing: %lld\n",
                TYPES[t].name, names[t], (long long)bad, (long long)(g_rows * N / kd_quant_block(type)), (long long)bad_deq);
        assert_int_equal(bad, 0);
        assert_int_equal(bad_deq, 0);
        free(mine);
        free(theirs);
        free(a);
        free(b);
    }
    dlclose(h);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_vs_numpy),   cmocka_unit_test(test_roundtrip_bounds),
        cmocka_unit_test(test_vec_dot_and_fake), cmocka_unit_test(test_rows_parallel),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_bytes_vs_ggml),
    };
    return KD_RUN_GROUP(tests, setup, teardown);
}
