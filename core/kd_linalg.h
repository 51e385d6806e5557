/*
 * kd_linalg.h — matrix products and long sums whose results do not depend on
 * the number of threads.
 *
 * OpenBLAS splits a threaded sgemm's output among its threads, and its AVX2
 * ("Haswell"/"Zen") kernels compute the elements at the edge of each thread's
 * part with other micro-kernels than the interior (another order of the fused
 * multiply-adds), so the same product differs in the last bits between
 * OMP_NUM_THREADS=1 and 2 (measured: 14% of the elements of a 512×512×512
 * product). Its AVX-512 kernels happen not to. kd does not rely on that:
 * kd_sgemm cuts C into a grid of tiles that depends only on M and N, and
 * multiplies each tile with one single-threaded OpenBLAS call; the threads
 * share out the tiles. A tile's bits depend on its shape and data only, so
 * the product is the same whatever the thread count and whichever thread
 * computes a tile. Tiles of about 256×512 keep OpenBLAS at its full speed
 * (bench_gemm measures both).
 *
 * kd_sumsq and kd_sumsqdiff add in double over fixed blocks of 32768
 * elements and then over the blocks in order, for the same reason.
 */
#ifndef KD_LINALG_H
#define KD_LINALG_H

#include <stdint.h>

/* C[M,N] = alpha·op(A)·op(B) + beta·C, row-major; op(X) = Xᵀ when tX. A is
 * [M,K] (or [K,M] when ta) with leading dimension lda; B is [K,N] (or [N,K]
 * when tb) with ldb; C has ldc. May be called inside a parallel region (the
 * tiles then run in the calling thread, in the same grid). */
void kd_sgemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Σ x[i]² and Σ (a[i] − b[i])², in double. */
double kd_sumsq(const float *x, int64_t n);
double kd_sumsqdiff(const float *a, const float *b, int64_t n);

#endif
