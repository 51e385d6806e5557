/*
 * test_blas.c — the OpenBLAS kernels kd selects compute correct sgemm results
 * for the shapes training uses (all transpose combinations, odd sizes), and
 * the kernel selection itself works end to end through the kd program.
 */
#include "kd_test.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_cpu.h"

/* C = op(A)·op(B) in double, row-major, natural leading dimensions. */
static void naive_gemm(int ta, int tb, int M, int N, int K, const float *A, const float *B, double *C, double *mag) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0, m = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[k * M + i] : A[i * K + k];
                double b = tb ? B[j * K + k] : B[k * N + j];
                acc += a * b;
                m += fabs(a * b);
            }
            C[i * N + j] = acc;
            mag[i * N + j] = m;
        }
}

static void check_shape(int M, int N, int K) {
    kd_rng r;
    kd_rng_seed(&r, (uint64_t)(M * 131 + N * 7 + K));
    float *A = malloc((size_t)M * K * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
    float *C = malloc((size_t)M * N * sizeof(float));
    double *ref = malloc((size_t)M * N * sizeof(double)), *mag = malloc((size_t)M * N * sizeof(double));
    kd_test_fill_normal(&r, A, (int64_t)M * K, 1.0f);
    kd_test_fill_normal(&r, B, (int64_t)K * N, 1.0f);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                        A, ta ? M : K, B, tb ? K : N, 0.0f, C, N);
            naive_gemm(ta, tb, M, N, K, A, B, ref, mag);
            double worst = 0;
            for (int64_t i = 0; i < (int64_t)M * N; i++) {
                /* fp32 accumulation error bound: a few ulps of Σ|a·b| */
                double err = fabs(C[i] - ref[i]) / (mag[i] * 1e-6 + 1e-30);
                if (err > worst) worst = err;
            }
            if (worst > 1.0)
                fprintf(stderr, "sgemm %dx%dx%d ta=%d tb=%d: error %.3g × bound (kernels %s)\n", M, N, K, ta, tb,
                        worst, kd_blas_corename());
            assert_true(worst <= 1.0);
        }
    free(A); free(B); free(C); free(ref); free(mag);
}

static void test_sgemm_training_shapes(void **state) {
    (void)state;
    check_shape(256, 192, 64);    /* qkv projection of a dim-64 model, B·T = 256 */
    check_shape(256, 172, 64);    /* SwiGLU up/gate (aidreams hidden 172) */
    check_shape(256, 64, 172);    /* down projection */
    check_shape(128, 512, 64);    /* LM head chunk, vocab 512 */
    check_shape(64, 384, 384);    /* a wider model */
    check_shape(17, 33, 65);      /* odd sizes: kernel edge cases */
    check_shape(1, 300, 1);       /* degenerate */
}

/* Run `kd --version` with an environment prefix and return its blas line. */
static void kd_blas_line(const char *env, char *out, size_t n) {
    char path[600];
    snprintf(path, sizeof path, "%s/version.txt", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("env %s '%s' --version > '%s'", env, kd_test_env("KD_BIN"), path), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    out[0] = 0;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "blas:", 5)) snprintf(out, n, "%s", line);
    fclose(f);
}

static void test_selection_end_to_end(void **state) {
    (void)state;
    kd_cpu_info cpu;
    kd_cpu_detect(&cpu);
    const char *want = kd_blas_choose_core(&cpu, "Prescott");
    char line[512], expect[128];
    /* a user's explicit choice wins */
    kd_blas_line("-u KD_BLAS_REEXEC -u KD_BLAS_AUTO OPENBLAS_CORETYPE=Prescott", line, sizeof line);
    assert_non_null(strstr(line, "'Prescott' (set by OPENBLAS_CORETYPE)"));
    /* simulate OpenBLAS falling back to generic kernels: kd must re-exec with better ones */
    kd_blas_line("-u KD_BLAS_REEXEC OPENBLAS_CORETYPE=Prescott KD_BLAS_AUTO=force", line, sizeof line);
    if (want) {
        snprintf(expect, sizeof expect, "kernels '%s' (selected by kd; OpenBLAS had picked generic 'Prescott')", want);
        if (!strstr(line, expect)) fprintf(stderr, "got: %sexpected: %s\n", line, expect);
        assert_non_null(strstr(line, expect));
    } else {
        assert_non_null(strstr(line, "'Prescott'"));   /* nothing better on this CPU */
    }
    /* the test process itself runs the kernels kd would choose */
    assert_null(kd_blas_choose_core(&cpu, kd_blas_corename()));
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgemm_training_shapes),
        cmocka_unit_test(test_selection_end_to_end),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
