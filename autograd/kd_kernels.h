/*
 * kd_kernels.h — the math of each op as plain functions on float arrays.
 *
 * Training (through kd_ops.h) and the inference engine call these same
 * functions, so there is one implementation of each piece of math. Backward
 * functions accumulate (+=) into gradient buffers; a NULL gradient buffer
 * means "not needed".
 */
#ifndef KD_KERNELS_H
#define KD_KERNELS_H

#include <stdint.h>

/* ---- Embedding backward: dw[ids[n], :] += dy[n, :] for n < N, rows of C. ---- */
void kd_embedding_backward(float *dw, const float *dy, const int32_t *ids, int64_t N, int64_t C);

/* ---- RMSNorm over rows of C: y = x·rstd ⊙ w, rstd[n] saved for backward. ---- */
void kd_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps);
void kd_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                         const float *rstd, int64_t N, int64_t C);

/* ---- RoPE: tables cos/sin [n_pos, D/2] (θ_i = pos·inv_freq[i]), rotation in place. ---- */
void kd_rope_table_inv(float *cos_t, float *sin_t, const int32_t *pos, int64_t n_pos, int64_t D,
                       const double *inv_freq);
/* Plain RoPE: inv_freq[i] = theta^(−2i/D), i < D/2. */
void kd_rope_inv_freq_default(double *inv_freq, int64_t D, double theta);
/* kd_rope_table_inv with the plain table of theta (D ≤ 8192). */
void kd_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int64_t n_pos, int64_t D, float theta);
/* x [N_rows = B·T, H·D]; row r uses table row (r % T). inverse=1 rotates by −θ (backward). */
void kd_rope_apply(float *x, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t H,
                   int64_t D, int conv, int inverse);

/* ---- SwiGLU: y = silu(g) ⊙ u. ---- */
void kd_swiglu_forward(float *y, const float *g, const float *u, int64_t n);
void kd_swiglu_backward(float *dg, float *du, const float *dy, const float *g, const float *u, int64_t n);

/* ---- Causal GQA attention (see kd_attention). ---- */
/* Scratch floats needed per call: kd_attention_scratch(T, n_threads). */
int64_t kd_attention_scratch(int64_t T, int n_threads);
void kd_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t window,
                          float *scratch);
void kd_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *q, const float *k, const float *v,
                           int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t window,
                           float *scratch);

/* ---- Row softmax helpers. ---- */
/* log Σ exp(x[i]) over n values, max-subtracted. */
float kd_logsumexp(const float *x, int64_t n);

#endif
