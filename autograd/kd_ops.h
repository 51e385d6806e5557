/*
 * kd_ops.h — differentiable ops on kd_tensor, recorded on a kd_graph.
 *
 * Shapes use B (batch), T (time), C (channels), H/Hkv (query/key-value heads),
 * D (head dim), V (vocabulary), N = B·T (rows). Leading dimensions of
 * row-wise ops may be any shape; they are treated as N rows.
 * Each op's math lives in kd_kernels.h (plain forward/backward functions that
 * the inference engine calls too); this header is the autograd wrapper.
 */
#ifndef KD_OPS_H
#define KD_OPS_H

#include "autograd/kd_tensor.h"

/* y = a + b (same shape). */
kd_tensor *kd_add(kd_graph *g, kd_tensor *a, kd_tensor *b);
/* y = a ⊙ b (same shape). */
kd_tensor *kd_mul(kd_graph *g, kd_tensor *a, kd_tensor *b);
/* y = s·a. */
kd_tensor *kd_scale(kd_graph *g, kd_tensor *a, float s);
/* Scalar reductions: Σ a and mean(a), shape [1]. */
kd_tensor *kd_sum(kd_graph *g, kd_tensor *a);
kd_tensor *kd_mean(kd_graph *g, kd_tensor *a);

/* C = op(A)·op(B) for 2-D A, B; op(X) = Xᵀ when the flag is set.
 * A is [M,K] (or [K,M] with trans_a), B is [K,N] (or [N,K] with trans_b). */
kd_tensor *kd_matmul(kd_graph *g, kd_tensor *a, kd_tensor *b, int trans_a, int trans_b);
/* y[..., out] = x[..., in] · Wᵀ, W [out, in] (the nn.Linear / HF layout). */
kd_tensor *kd_linear(kd_graph *g, kd_tensor *x, kd_tensor *w);

/* out[n, :] = W[ids[n], :], W [V, C], ids N int32 (each in [0, V)); out [N, C]
 * (shaped [B, T, C] when B>0 is given, else [N, C]). Backward scatter-adds into W. */
kd_tensor *kd_embedding(kd_graph *g, kd_tensor *w, const int32_t *ids, int64_t B, int64_t T);

/* y = x / sqrt(mean(x²) + eps) ⊙ w over the last dimension C; w [C]. */
kd_tensor *kd_rmsnorm(kd_graph *g, kd_tensor *x, kd_tensor *w, float eps);

/* Rotary position embedding of x [B, T, H·D] with heads of size D, for positions
 * pos[T] (shared by all B). Convention: see kd_rope_convention. */
typedef enum kd_rope_convention {
    KD_ROPE_HALF = 0,   /* Hugging Face rotate_half: pairs (i, i + D/2) — checkpoints */
    KD_ROPE_PAIRS = 1,  /* GGUF/llama2.c/ggml "norm": adjacent pairs (2i, 2i+1) */
} kd_rope_convention;
kd_tensor *kd_rope(kd_graph *g, kd_tensor *x, int64_t H, const int32_t *pos, float theta,
                   kd_rope_convention conv);
/* The same with the inverse frequencies given, inv_freq[D/2] (scaled RoPE types;
 * student/kd_config.h: kd_config_rope_inv_freq). */
kd_tensor *kd_rope_inv(kd_graph *g, kd_tensor *x, int64_t H, const int32_t *pos, const double *inv_freq,
                       kd_rope_convention conv);

/* Causal grouped-query attention. q [B, T, H·D], k and v [B, T, Hkv·D], Hkv | H.
 * Query t attends to keys s with t − window < s ≤ t (window ≤ 0: all s ≤ t).
 * Scale 1/sqrt(D). Out [B, T, H·D]. Saves only the row log-sum-exp [B, H, T]. */
kd_tensor *kd_attention(kd_graph *g, kd_tensor *q, kd_tensor *k, kd_tensor *v, int64_t H, int64_t Hkv,
                        int64_t window);

/* y = silu(gate) ⊙ up (same shape). */
kd_tensor *kd_swiglu(kd_graph *g, kd_tensor *gate, kd_tensor *up);

/* Mean cross-entropy of logits [N, V] against targets[N]; targets equal to
 * ignore_index do not count. Shape [1]. 0 when no target is valid. */
kd_tensor *kd_cross_entropy(kd_graph *g, kd_tensor *logits, const int32_t *targets, int32_t ignore_index);

#define KD_IGNORE_INDEX (-100)

#endif
