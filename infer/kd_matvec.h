/*
 * kd_matvec.h — products of float activations with weight matrices stored in
 * any ggml type kd reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K), used
 * in place: the inference engine's kernels.
 *
 * A kd_qmat is a [rows, cols] matrix whose rows are kd_quant_row_size(type,
 * cols) bytes each, back to back — exactly a GGUF tensor {cols, rows}. The
 * activations stay float: each kernel computes Σ_c dequant(W[r])[c]·x[c], with
 * the dequantized weight formed exactly as kd_dequantize_row forms it (every
 * quantized weight is an exact float product plus at most one rounded add, and
 * the SIMD code rounds it identically), so a quantized matrix gives the
 * products of its dequantized F32 copy up to float summation order.
 * (llama.cpp instead rounds the activations to Q8_0/Q8_K or F16 first.)
 *
 * (kd_matvec_q8.c adds llama.cpp's numerics: activations rounded as ggml rounds
 * them, integer block dot products; see below.)
 *
 * Kernels: the scalar reference (kd_vec_dot_q of kd_quant.h), AVX2 (+FMA,
 * F16C) and AVX-512 (F, BW; the float kernels are the same with VNNI, which only
 * kd_matvec_q8.c's integer kernels use). The best the CPU supports is chosen at the
 * first call (core/kd_cpu.h); KD_ISA=scalar|avx2|avx512 in the environment, or
 * kd_isa_set(), choose a lower one (tests compare the paths). Products over
 * many rows run in parallel over output rows (OpenMP).
 *
 * Batches (kd_qmatmul, n > 1 rows of activations): F32 weights go straight to
 * a multithreaded sgemm; other types are dequantized KD_QMM_TILE rows at a
 * time into a per-thread F32 tile, which a single-threaded sgemm multiplies
 * with the whole batch (threads own tiles); few rows (n < KD_QMM_MIN_GEMM)
 * use the dot kernels row by row instead.
 */
#ifndef KD_MATVEC_H
#define KD_MATVEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"

typedef enum kd_isa {
    KD_ISA_SCALAR = 0,
    KD_ISA_AVX2 = 1,     /* AVX2 + FMA + F16C */
    KD_ISA_AVX512 = 2,   /* AVX-512 F + BW + VL + DQ */
    KD_ISA_AVX512_VNNI = 3,   /* + VNNI (vpdpbusd): the integer kernels of kd_matvec_q8.c */
} kd_isa;

/* The best path this CPU runs. */
kd_isa kd_isa_best(void);
/* The path in use (first call: the best, lowered by $KD_ISA when set). */
kd_isa kd_isa_get(void);
/* Use `isa`, or the best the CPU runs when that is lower; returns the path now in use. */
kd_isa kd_isa_set(kd_isa isa);
const char *kd_isa_name(kd_isa isa);   /* "scalar", "avx2", "avx512", "avx512vnni" */

typedef struct kd_qmat {
    int32_t type;          /* kd_ggml_type */
    int64_t rows, cols;
    size_t row_bytes;      /* kd_quant_row_size(type, cols) */
    const void *data;      /* rows · row_bytes bytes, any alignment */
    const struct kd_panel *panel;   /* NULL, or the same weights laid out for products with a
                                       few activation rows (kd_panel.h), which kd_infer uses */
} kd_qmat;

/* A kd_qmat over data (checks the type and the row length against the block). */
int kd_qmat_init(kd_qmat *m, int32_t type, int64_t rows, int64_t cols, const void *data, kd_err *err);
/* Bytes of the matrix. */
static inline size_t kd_qmat_bytes(const kd_qmat *m) { return (size_t)m->rows * m->row_bytes; }

/* Software prefetch for the products: one core streaming weights from memory gets
 * only about half the bandwidth from the hardware prefetchers when every cache line
 * also costs tens of instructions, so the row loops ask for the row KD_PREFETCH_BYTES
 * ahead (measured on Sapphire Rapids: 125M Q4_0 weights at ~2.5 GB/s without, ~10 GB/s
 * with). Rows r < rows only; a no-op past the end. */
#ifndef KD_PREFETCH_BYTES
#define KD_PREFETCH_BYTES 8192
#endif
static inline int64_t kd_prefetch_rows(const kd_qmat *m) {   /* rows ahead for KD_PREFETCH_BYTES */
    return (int64_t)((KD_PREFETCH_BYTES + m->row_bytes - 1) / m->row_bytes);
}
static inline void kd_prefetch_row(const kd_qmat *m, int64_t r) {
    if (KD_PREFETCH_BYTES == 0 || r >= m->rows) return;
    const uintptr_t a = (uintptr_t)m->data + (uintptr_t)r * m->row_bytes, end = a + m->row_bytes;
    for (uintptr_t l = a & ~(uintptr_t)63; l < end; l += 64) __builtin_prefetch((const void *)l, 0, 3);
}

/* Σ_c dequant(row)[c]·x[c] over n elements, on the path in use. */
float kd_qdot(int32_t type, const void *row, const float *x, int64_t n);

/* y[i] += a·x[i] for i < n (F32, on the path in use; no threads). */
void kd_axpy(int64_t n, float a, const float *x, float *y);

/* Attention over cached rows (F32, no threads; row s at K + s·stride):
 * out[s] = scale · (K[s]·q) over D elements, the same value as kd_qdot(F32) · scale; */
void kd_dot_rows(const float *K, int64_t stride, const float *q, int64_t D, int64_t n, float scale, float *out);
/* y[d] = Σ_s p[s]·V[s][d] for d < D (y overwritten), the same value as kd_axpy
 * over s = 0..n−1 from y = 0. */
void kd_sum_rows(const float *V, int64_t stride, const float *p, int64_t D, int64_t n, float *y);

/* The same for all H heads of one query at once, reading each row once and in order
 * (head h uses the D floats at (h/G)·D of a row): S[h·lds + s] = scale · K[s]_(h/G)·q_h;
 * out[h·D + d] = Σ_s P[h·lds + s]·V[s]_(h/G)[d] (the same values as per head). */
void kd_attn_scores(const float *K, int64_t stride, const float *q, int64_t H, int64_t G, int64_t D, int64_t n,
                    float scale, float *S, int64_t lds);
void kd_attn_values(const float *V, int64_t stride, const float *P, int64_t lds, int64_t H, int64_t G, int64_t D,
                    int64_t n, float *out);

/* Softmax in place of rows h < rows of S (S[h·lds + s], s < n): with AVX-512 and AVX2 a
 * polynomial exp (the same bits on both, within 2 ulp of expf), else expf. */
void kd_softmax_rows(float *S, int64_t lds, int64_t rows, int64_t n);

/* y[r] = W[r]·x for every row of W (OpenMP over rows). */
void kd_qmatvec(const kd_qmat *W, const float *x, float *y);
/* The same for k matrices sharing x (k ≤ 4), in one parallel loop over all
 * their rows: fewer thread fork/joins per token (q/k/v, gate/up). */
void kd_qmatvec_multi(int k, const kd_qmat *const *W, const float *x, float *const *y);

/* ---- llama.cpp's numerics: activations rounded like ggml's CPU backend ------------------
 * ggml multiplies weights of each type with activations converted to its "vec_dot_type":
 * F16 for F16, BF16 for BF16, Q8_0 blocks for Q8_0/Q4_0, Q8_1 for Q4_1, Q8_K (256, F32
 * scale, 16-element sums) for Q4_K/Q6_K; F32 stays F32. These functions reproduce that
 * (kd_matvec_q8.c): kd_act_round gives the rounded activations as floats (for batches,
 * through the float kernels), kd_act_quantize the integer blocks that kd_qmatvec_q8
 * multiplies with integer dot products per block, as ggml does (an integer sum times
 * the two scales), so the result is llama.cpp's up to float summation order. The
 * engine uses them with kd_infer_opts.ggml_rounding. */

/* 1 for the weight types with an integer kernel (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K). */
int kd_q8_supported(int32_t wtype);
/* y = x rounded as ggml rounds the partner of weights of type wtype (y may equal x). */
void kd_act_round(int32_t wtype, const float *x, float *y, int64_t n);
/* Bytes of kd_act_quantize's output for n activations (any supported type). */
size_t kd_act_q8_bytes(int64_t n);
/* x[0..n) → the integer blocks for wtype (n a multiple of wtype's block). */
void kd_act_quantize(int32_t wtype, const float *x, void *xq, int64_t n);
/* y[r] = W[r]·x with xq = kd_act_quantize(W->type, x) (OpenMP over rows). */
void kd_qmatvec_q8(const kd_qmat *W, const void *xq, float *y);

#define KD_QMM_TILE 128       /* weight rows dequantized at a time per thread (128: the sgemm
                                 packs the activations once per tile; 64 was ~7% slower) */
#define KD_QMM_MIN_GEMM 4     /* below this many activation rows, dot products per row */
/* Floats of scratch kd_qmatmul needs for matrices of at most max_cols columns. */
size_t kd_qmatmul_scratch(int64_t max_cols, int n_threads);
/* Y[i, r] = W[r]·X[i] for i < n (X [n, cols], Y [n, ldy] with ldy ≥ rows).
 * scratch: kd_qmatmul_scratch(cols, n_threads) floats; at most n_threads threads run. */
void kd_qmatmul(const kd_qmat *W, const float *X, int64_t n, float *Y, int64_t ldy, float *scratch, int n_threads);

#endif
