/*
 * kd_panel.c — weight panels and their products with a few activation rows
 * (see kd_panel.h). Each kernel takes two blocks of 16 weight rows against a
 * group of activation rows (8 with AVX-512's 32 registers, 2 with AVX2's 16),
 * so every column loaded from the panel feeds 8–16 fused multiply-adds, and the
 * two blocks stay in the L1/L2 cache while the groups pass over them.
 */
#include "infer/kd_panel.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/kd_mem.h"
#include "format/kd_quant.h"

#define BLK 16   /* rows interleaved */

uint64_t kd_panel_bytes(int64_t rows, int64_t cols) {
    return (uint64_t)((rows + BLK - 1) / BLK) * BLK * (uint64_t)cols * sizeof(float);
}

int kd_panel_make(kd_panel *P, const kd_qmat *W, kd_err *err) {
    memset(P, 0, sizeof *P);
    const int64_t rows = W->rows, cols = W->cols, nb = (rows + BLK - 1) / BLK;
    const int nt = omp_get_max_threads();
    float *p = kd_alloc(kd_panel_bytes(rows, cols) ? kd_panel_bytes(rows, cols) : 1, err);
    float *tmp = p ? kd_alloc((size_t)nt * (size_t)cols * sizeof(float), err) : NULL;
    if (!tmp) {
        kd_free(p);
        return kd_err_prefix(err, "weight panel of %lld x %lld", (long long)rows, (long long)cols);
    }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t b = 0; b < nb; b++) {
        float *row = tmp + (size_t)omp_get_thread_num() * (size_t)cols;
        for (int64_t j = 0; j < BLK; j++) {
            const int64_t r = b * BLK + j;
            if (r < rows) kd_dequantize_row(W->type, (const uint8_t *)W->data + (size_t)r * W->row_bytes, row, cols);
            else memset(row, 0, (size_t)cols * sizeof(float));
            float *dst = p + b * cols * BLK + j;
            for (int64_t c = 0; c < cols; c++) dst[c * BLK] = row[c];
        }
    }
    kd_free(tmp);
    P->p = p;
    P->rows = rows;
    P->cols = cols;
    return 0;
}

void kd_panel_free(kd_panel *P) {
    kd_free(P->p);
    memset(P, 0, sizeof *P);
}

/* ---- kernels: Y rows i0.., blocks b, b+1 (b+1 only when two) ----------------------------- */

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define T256 __attribute__((target("avx2,fma")))

/* Rows of Y a block writes: 16, or what is left of the matrix. */
static inline int64_t block_rows(int64_t rows, int64_t b) { return rows - b * BLK < BLK ? rows - b * BLK : BLK; }

T512 static void blocks_512(const kd_panel *P, int64_t b, int two, const float *X, int64_t n, float *Y, int64_t ldy) {
    const int64_t cols = P->cols;
    const float *p0 = P->p + b * cols * BLK, *p1 = two ? p0 + cols * BLK : p0;
    const int64_t r0 = block_rows(P->rows, b), r1 = two ? block_rows(P->rows, b + 1) : 0;
    const __mmask16 m0 = (__mmask16)((1u << r0) - 1), m1 = (__mmask16)((1u << r1) - 1);
    for (int64_t i0 = 0; i0 < n; i0 += 8) {
        const int64_t ni = n - i0 < 8 ? n - i0 : 8;
        /* rows past n repeat row i0 (computed, not stored); named registers: compilers keep
         * an array of accumulators in memory */
#define ROW(i) const float *x##i = X + (i0 + ((i) < ni ? (i) : 0)) * cols
        ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5); ROW(6); ROW(7);
#undef ROW
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        __m512 c0 = a0, c1 = a0, c2 = a0, c3 = a0, c4 = a0, c5 = a0, c6 = a0, c7 = a0;
        for (int64_t c = 0; c < cols; c++) {
            const __m512 w0 = _mm512_loadu_ps(p0 + c * BLK), w1 = _mm512_loadu_ps(p1 + c * BLK);
#define FMA2(i)                                                                                                        \
    {                                                                                                                  \
        const __m512 xv = _mm512_set1_ps(x##i[c]);                                                                     \
        a##i = _mm512_fmadd_ps(xv, w0, a##i);                                                                          \
        c##i = _mm512_fmadd_ps(xv, w1, c##i);                                                                          \
    }
            FMA2(0) FMA2(1) FMA2(2) FMA2(3) FMA2(4) FMA2(5) FMA2(6) FMA2(7)
#undef FMA2
        }
        const __m512 A[8] = {a0, a1, a2, a3, a4, a5, a6, a7}, Cc[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
        for (int i = 0; i < ni; i++) {
            float *y = Y + (i0 + i) * ldy + b * BLK;
            _mm512_mask_storeu_ps(y, m0, A[i]);
            if (two) _mm512_mask_storeu_ps(y + BLK, m1, Cc[i]);
        }
    }
}

T256 static void blocks_256(const kd_panel *P, int64_t b, int two, const float *X, int64_t n, float *Y, int64_t ldy) {
    const int64_t cols = P->cols;
    const float *p0 = P->p + b * cols * BLK, *p1 = two ? p0 + cols * BLK : p0;
    const int64_t r0 = block_rows(P->rows, b), r1 = two ? block_rows(P->rows, b + 1) : 0;
    for (int64_t i0 = 0; i0 < n; i0 += 2) {   /* 2 rows × 4 vectors of 8: 8 accumulators */
        const int64_t ni = n - i0 < 2 ? n - i0 : 2;
        const float *x0 = X + i0 * cols, *x1 = X + (i0 + (ni > 1)) * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, d0 = a0, d1 = a0, d2 = a0, d3 = a0;
        for (int64_t c = 0; c < cols; c++) {
            const __m256 w0 = _mm256_loadu_ps(p0 + c * BLK), w1 = _mm256_loadu_ps(p0 + c * BLK + 8);
            const __m256 w2 = _mm256_loadu_ps(p1 + c * BLK), w3 = _mm256_loadu_ps(p1 + c * BLK + 8);
            const __m256 u = _mm256_broadcast_ss(x0 + c), v = _mm256_broadcast_ss(x1 + c);
            a0 = _mm256_fmadd_ps(u, w0, a0);
            a1 = _mm256_fmadd_ps(u, w1, a1);
            a2 = _mm256_fmadd_ps(u, w2, a2);
            a3 = _mm256_fmadd_ps(u, w3, a3);
            d0 = _mm256_fmadd_ps(v, w0, d0);
            d1 = _mm256_fmadd_ps(v, w1, d1);
            d2 = _mm256_fmadd_ps(v, w2, d2);
            d3 = _mm256_fmadd_ps(v, w3, d3);
        }
        for (int i = 0; i < ni; i++) {
            float out[4 * 8];
            _mm256_storeu_ps(out, i ? d0 : a0);
            _mm256_storeu_ps(out + 8, i ? d1 : a1);
            _mm256_storeu_ps(out + 16, i ? d2 : a2);
            _mm256_storeu_ps(out + 24, i ? d3 : a3);
            float *y = Y + (i0 + i) * ldy + b * BLK;
            memcpy(y, out, (size_t)r0 * sizeof(float));
            if (two) memcpy(y + BLK, out + BLK, (size_t)r1 * sizeof(float));
        }
    }
}

static void blocks_ref(const kd_panel *P, int64_t b, int two, const float *X, int64_t n, float *Y, int64_t ldy) {
    const int64_t cols = P->cols;
    for (int64_t bb = b; bb < b + 1 + two; bb++) {
        const float *p = P->p + bb * cols * BLK;
        const int64_t nr = block_rows(P->rows, bb);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < nr; j++) {
                float s = 0.0f;
                for (int64_t c = 0; c < cols; c++) s = fmaf(X[i * cols + c], p[c * BLK + j], s);
                Y[i * ldy + bb * BLK + j] = s;
            }
    }
}

void kd_panel_matmul(const kd_panel *P, const float *X, int64_t n, float *Y, int64_t ldy, int n_threads) {
    const int64_t nb = (P->rows + BLK - 1) / BLK, pairs = (nb + 1) / 2;
    const kd_isa isa = kd_isa_get();
    const int nt = omp_get_max_threads() < n_threads ? omp_get_max_threads() : n_threads;
#pragma omp parallel for schedule(static) num_threads(nt) if (pairs > 1 && n * P->rows * P->cols >= 65536)
    for (int64_t q = 0; q < pairs; q++) {
        const int64_t b = 2 * q;
        const int two = b + 1 < nb;
        if (isa >= KD_ISA_AVX512) blocks_512(P, b, two, X, n, Y, ldy);
        else if (isa == KD_ISA_AVX2) blocks_256(P, b, two, X, n, Y, ldy);
        else blocks_ref(P, b, two, X, n, Y, ldy);
    }
}
