/*
 * kd_model.h — the Llama-architecture student on the autograd.
 *
 *   x = embed[tokens]                                   [B, T, C]
 *   for each layer:
 *     h = rmsnorm(x, attn_norm)
 *     q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ                     [B, T, H·D], [B, T, Hkv·D] ×2
 *     q, k = rope(q), rope(k)                           (Hugging Face rotate_half layout)
 *     x = x + attention(q, k, v)·Woᵀ                    (causal, GQA, optional window)
 *     h = rmsnorm(x, ffn_norm)
 *     x = x + (silu(h·Wgateᵀ) ⊙ h·Wupᵀ)·Wdownᵀ
 *   hidden = rmsnorm(x, norm)                           [B, T, C]
 *   logits = hidden·Wheadᵀ  (Whead = embed when tied)   [B, T, V]
 *
 * Parameters carry their Hugging Face checkpoint names, so saving and loading
 * is a walk over m->params.
 *
 * A model made with KD_MODEL_NO_GRAD (every inference-only loader: kd export,
 * kd logits, kd run, kd eval, kd quantize, kd teacher dump, kd import, kd init)
 * has parameters without gradient buffers: half the memory, 12 GiB less for a
 * 3B student. Its forward is the same code and gives the same numbers; ops
 * record no backward for it (requires_grad is 0), so training needs kd_model_new
 * or kd_checkpoint_load, which keep the gradients.
 */
#ifndef KD_MODEL_H
#define KD_MODEL_H

#include "autograd/kd_ops.h"
#include "student/kd_config.h"

typedef struct kd_layer {
    kd_tensor *attn_norm;     /* [C]          input_layernorm */
    kd_tensor *wq;            /* [H·D, C]     self_attn.q_proj */
    kd_tensor *wk;            /* [Hkv·D, C]   self_attn.k_proj */
    kd_tensor *wv;            /* [Hkv·D, C]   self_attn.v_proj */
    kd_tensor *wo;            /* [C, H·D]     self_attn.o_proj */
    kd_tensor *ffn_norm;      /* [C]          post_attention_layernorm */
    kd_tensor *w_gate;        /* [F, C]       mlp.gate_proj */
    kd_tensor *w_up;          /* [F, C]       mlp.up_proj */
    kd_tensor *w_down;        /* [C, F]       mlp.down_proj */
} kd_layer;

typedef struct kd_model {
    kd_config cfg;
    kd_tensor *embed;         /* [V, C]  model.embed_tokens */
    kd_layer *layers;         /* [L] */
    kd_tensor *norm;          /* [C]     model.norm */
    kd_tensor *lm_head;       /* [V, C]  lm_head (NULL when tied) */
    kd_tensor **params;       /* every parameter, in checkpoint order */
    int n_params;
    int shell;                /* kd_model_new_shell: parameters have no storage of their own */
    int no_grad;              /* KD_MODEL_NO_GRAD: parameters have no gradient buffers */
} kd_model;

/* Flags of kd_model_new_flags and of the loaders that take flags. */
#define KD_MODEL_NO_GRAD 1    /* no gradient buffers, requires_grad 0: forward only */

/* Allocate parameters (zeroed) for a validated config, each with its gradient. */
int kd_model_new(kd_model *m, const kd_config *cfg, kd_err *err);
/* The same with flags (0 or KD_MODEL_NO_GRAD); unknown flag bits are an error. */
int kd_model_new_flags(kd_model *m, const kd_config *cfg, int flags, kd_err *err);
/* The same parameter list (names, shapes, order) with no storage: every data and
 * grad pointer is NULL. Who owns the numbers (train/kd_lean.c keeps them in BF16)
 * points a parameter at FP32 buffers while it computes with it, and back to NULL
 * before kd_model_free. */
int kd_model_new_shell(kd_model *m, const kd_config *cfg, kd_err *err);
void kd_model_free(kd_model *m);
/* Fresh initialisation (docs/checkpoints.md): linear and embedding weights
 * ~ N(0, 0.02²), with the residual-output projections (o_proj, down_proj)
 * scaled by 1/sqrt(2L); RMSNorm weights 1. Deterministic in the seed. */
void kd_model_init(kd_model *m, uint64_t seed);
/* The same rule one parameter at a time, for storage other than p->data: parameter
 * index i (checkpoint order) draws from the stream kd_model_init_seed(seed, i)
 * values kd_model_init_std(m, p)·N(0, 1) in element order; std 0 means "all 1"
 * (RMSNorm weights). */
uint64_t kd_model_init_seed(uint64_t seed, int i);
float kd_model_init_std(const kd_model *m, const kd_tensor *p);
/* Look a parameter up by checkpoint name. */
kd_tensor *kd_model_param(const kd_model *m, const char *name);
/* Index of the first NaN or ±Inf of x[0..n), −1 when all are finite. */
int64_t kd_first_nonfinite(const float *x, int64_t n);
/* 0 when every parameter is finite; else an error naming file, the parameter and the element. */
int kd_model_check_finite(const kd_model *m, const char *file, kd_err *err);
/* The LM head matrix (the embedding when tied). */
kd_tensor *kd_model_head(const kd_model *m);
void kd_model_zero_grad(kd_model *m);

/* One transformer block (layer l) on x [B, T, C] with positions pos[T]: the
 * residual stream after the layer, same shape. kd_model_hidden is the
 * embedding, L of these and the final norm. */
kd_tensor *kd_model_block(kd_graph *g, kd_model *m, int64_t l, kd_tensor *x, const int32_t *pos);
/* Final hidden states [B, T, C] for tokens [B·T]; positions 0..T−1 in every row. */
kd_tensor *kd_model_hidden(kd_graph *g, kd_model *m, const int32_t *tokens, int64_t B, int64_t T);
/* Full logits [B, T, V] (small vocabularies and tests; training uses the chunked loss). */
kd_tensor *kd_model_logits(kd_graph *g, kd_model *m, const int32_t *tokens, int64_t B, int64_t T);

#endif
