/*
 * kd_linalg.c — thread-count-independent sgemm and sums (see kd_linalg.h).
 */
#include "core/kd_linalg.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#define KD_TILE_M 256
#define KD_TILE_N 512
#define KD_SUM_BLOCK 32768

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Split n into about n / target equal parts, each a multiple of 16. */
static int64_t tile_size(int64_t n, int64_t target) {
    int64_t parts = cdiv(n, target);
    int64_t t = cdiv(cdiv(n, parts), 16) * 16;
    return t > 0 ? t : 1;
}

static void tile(int ta, int tb, int64_t m, int64_t n, int64_t K, float alpha, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void kd_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    const int64_t mb = tile_size(M, KD_TILE_M), nb = tile_size(N, KD_TILE_N);
    const int64_t nm = cdiv(M, mb), nn = cdiv(N, nb), nt = nm * nn;
    /* Inside an active parallel region OpenBLAS runs single-threaded, and so
     * does it in a region of one thread (omp_get_max_threads() is then 1). */
#pragma omp parallel for schedule(dynamic, 1) if (!omp_in_parallel())
    for (int64_t t = 0; t < nt; t++) {
        int64_t i0 = (t / nn) * mb, j0 = (t % nn) * nb;
        int64_t m = M - i0 < mb ? M - i0 : mb, n = N - j0 < nb ? N - j0 : nb;
        const float *a = ta ? A + i0 : A + i0 * lda;
        const float *b = tb ? B + j0 * ldb : B + j0;
        tile(ta, tb, m, n, K, alpha, a, lda, b, ldb, beta, C + i0 * ldc + j0, ldc);
    }
}

static double sum_blocks(const float *a, const float *b, int64_t n) {
    const int64_t nblk = cdiv(n, KD_SUM_BLOCK);
    double small[64], *part = nblk <= 64 ? small : malloc((size_t)nblk * sizeof(double));
    if (!part) { /* no memory for the partial sums: the same blocks, serially */
        double s = 0.0;
        for (int64_t k = 0; k < nblk; k++) s += sum_blocks(a + k * KD_SUM_BLOCK, b ? b + k * KD_SUM_BLOCK : NULL,
                                                           n - k * KD_SUM_BLOCK < KD_SUM_BLOCK ? n - k * KD_SUM_BLOCK
                                                                                               : KD_SUM_BLOCK);
        return s;
    }
#pragma omp parallel for schedule(static) if (nblk > 1 && !omp_in_parallel())
    for (int64_t k = 0; k < nblk; k++) {
        int64_t i0 = k * KD_SUM_BLOCK, i1 = i0 + KD_SUM_BLOCK < n ? i0 + KD_SUM_BLOCK : n;
        double s = 0.0;
        if (b)
            for (int64_t i = i0; i < i1; i++) {
                double d = (double)a[i] - (double)b[i];
                s += d * d;
            }
        else
            for (int64_t i = i0; i < i1; i++) s += (double)a[i] * a[i];
        part[k] = s;
    }
    double s = 0.0;
    for (int64_t k = 0; k < nblk; k++) s += part[k];
    if (part != small) free(part);
    return s;
}

double kd_sumsq(const float *x, int64_t n) { return n > 0 ? sum_blocks(x, NULL, n) : 0.0; }
double kd_sumsqdiff(const float *a, const float *b, int64_t n) { return n > 0 ? sum_blocks(a, b, n) : 0.0; }
