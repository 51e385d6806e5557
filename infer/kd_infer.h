/*
 * kd_infer.h — the inference engine: a Llama model from a GGUF file (any type
 * kd reads, mmap'd, weights used in place in their quantized form), a
 * checkpoint directory or a llama2.c file (F32, through kd_model_load), run
 * with a KV cache.
 *
 *   x = embed[token]                                     (row dequantized)
 *   per layer:  h = rmsnorm(x)                           (kd_kernels.h)
 *               q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ            (kd_matvec.h)
 *               rope(q), rope(k) at positions p0..       (KD_ROPE_PAIRS for GGUF,
 *                                                          KD_ROPE_HALF for checkpoints)
 *               K/V cache[p0..] = k, v                   (F32)
 *               x += attention(q, cache)·Woᵀ             (causal, GQA, optional window)
 *               x += swiglu(h·Wgᵀ, h·Wuᵀ)·Wdᵀ, h = rmsnorm(x)
 *   logits = rmsnorm(x)·Wheadᵀ
 *
 * The same math as the training forward (kd_model.h), with the same kernels
 * for RMSNorm, RoPE tables/rotation and SwiGLU; attention reads the cache.
 * kd_infer_eval() appends n tokens: n > 1 tokens go through matrix-matrix
 * products together (prompt processing, in batches of at most n_batch rows),
 * n = 1 through matrix-vector kernels (decode). Both give the same logits up
 * to float summation order.
 *
 * Several sequences (opts.n_seq > 1): the cache holds n_seq independent
 * sequences that advance in lockstep; kd_infer_eval_seqs() appends one token
 * to each of them in one step, the n rows going through matrix-matrix
 * products together (the weights are read once for all of them), each row
 * attending to its own sequence's cache (batched sampling, e.g. kd teacher
 * dump --generate). kd_infer_eval() works on sequence 0.
 *
 * Threads: OpenMP (OMP_NUM_THREADS), over output rows of every product and
 * over (query, head) pairs in attention. An engine is not thread-safe.
 */
#ifndef KD_INFER_H
#define KD_INFER_H

#include <stdint.h>

#include "core/kd_err.h"
#include "core/kd_rng.h"
#include "data/kd_tokenizer.h"
#include "student/kd_config.h"
#include "format/kd_gguf.h"
#include "infer/kd_matvec.h"
#include "infer/kd_panel.h"
#include "student/kd_model.h"

#define KD_INFER_MAX_CTX_DEFAULT 4096   /* default cache size cap (the model's context when smaller) */
#define KD_INFER_BATCH_DEFAULT 512

typedef struct kd_infer_opts {
    int64_t n_ctx;          /* cache positions; 0: min(model context, KD_INFER_MAX_CTX_DEFAULT) */
    int64_t n_batch;        /* most tokens per batched step; 0: KD_INFER_BATCH_DEFAULT */
    int dequantize;         /* 1: convert every weight matrix to F32 at load (the reference the
                               quantized kernels are tested against) */
    const char *tokenizer;  /* tokenizer file to use instead of the model's (NULL: the GGUF's
                               metadata, or DIR/tokenizer.h5 / DIR/tokenizer.bin for a checkpoint directory) */
    int ggml_rounding;      /* 1: llama.cpp's numerics: round the input of every product as its CPU
                               backend does (F16 for F16 weights, BF16 for BF16, Q8_0/Q8_1 blocks
                               for Q8_0/Q4_0/Q4_1, Q8_K blocks for Q4_K/Q6_K; F32 stays F32, see
                               kd_matvec.h) and, when decoding, multiply quantized weights with
                               integer kernels: faster, and llama.cpp's results up to summation
                               order. 0 (default): activations stay F32, the exact model. */
    int64_t n_seq;          /* sequences the cache holds (0: 1); n_batch is raised to at least n_seq */
    int panels;             /* 1: keep an F32 panel of every weight matrix (kd_panel.h: as many bytes
                               as the F32 weights again) for steps of 2..KD_PANEL_MAX_N rows, e.g. the
                               lockstep steps of n_seq sequences (exact mode only) */
} kd_infer_opts;

void kd_infer_opts_init(kd_infer_opts *o);

typedef struct kd_infer_layer {
    const float *attn_norm, *ffn_norm;      /* [C] */
    kd_qmat wq, wk, wv, wo;                 /* [H·D, C], [Hkv·D, C] ×2, [C, H·D] */
    kd_qmat w_gate, w_up, w_down;           /* [F, C] ×2, [C, F] */
} kd_infer_layer;

typedef struct kd_infer_stats {
    int64_t n_prompt, n_decode;             /* tokens evaluated in batches of > 1 / one at a time */
    double prompt_s, decode_s;              /* wall time spent on them */
} kd_infer_stats;

typedef struct kd_infer {
    kd_config cfg;              /* sizes (for GGUF files: from the metadata; sliding_window 0) */
    int64_t C, F, L, H, Hkv, D, V;
    int rope_conv;              /* KD_ROPE_PAIRS (GGUF) or KD_ROPE_HALF (checkpoints) */
    const char *source;         /* "gguf" or "checkpoint" */
    kd_qmat embed, head;        /* head = embed when tied */
    const float *norm;          /* [C] */
    kd_infer_layer *layers;     /* [L] */
    kd_tokenizer *tok;          /* NULL when the model has none */
    int32_t bos, eos;           /* -1 when unknown */
    /* KV cache */
    int64_t n_ctx, n_past, n_batch;
    int64_t n_seq;              /* sequences in the cache (kd_infer_eval_seqs); n_past is shared */
    int n_threads;              /* per-thread scratch was sized for this many (omp_get_max_threads() at open) */
    int ggml_rounding;
    float *k_cache, *v_cache;   /* [n_seq, L, n_ctx, Hkv·D] */
    float *rope_cos, *rope_sin; /* [n_ctx, D/2] */
    kd_infer_stats stats;
    /* owned storage */
    kd_gguf *gguf;
    kd_model *model;
    int own_model;
    void **owned;
    int n_owned;
    kd_panel *panels;           /* opts.panels: [7·L + 1] (the head last), else NULL */
    float *act;                 /* activations for n_batch rows */
    float *x, *h, *q, *k, *v, *att, *g, *u, *scores, *mm_scratch, *xr;
    void *xq;                   /* ggml_rounding: quantized activations */
    float *head_f32;            /* kd_infer_head_f32 */
} kd_infer;

/* A GGUF file (magic "GGUF"), a checkpoint directory or a llama2.c .bin. o may be NULL. */
kd_infer *kd_infer_open(const char *path, const kd_infer_opts *o, kd_err *err);
/* An engine over a loaded model, whose weights it borrows (m must outlive it). */
kd_infer *kd_infer_from_model(const kd_model *m, const kd_infer_opts *o, kd_err *err);
void kd_infer_close(kd_infer *e);

/* Forget the cache (the next token is at position 0). */
void kd_infer_reset(kd_infer *e);
/* Evaluate tokens[0..n) at positions n_past..n_past+n−1 and append them to the
 * cache. logits (may be NULL): [n, V] with all_logits, else [V] for the last
 * token; hidden (may be NULL): the final normalised hidden states [n, C].
 * Fails on ids outside the vocabulary or a full cache (nothing is appended then). */
int kd_infer_eval(kd_infer *e, const int32_t *tokens, int64_t n, float *logits, int all_logits, float *hidden,
                  kd_err *err);
/* One step of n ≤ n_seq sequences in lockstep: tokens[i] is the next token of
 * sequence i, at position n_past in each; appends it to sequence i's cache and
 * advances n_past by one (sequences n..n_seq−1 are left behind: their cache at
 * this position is not written, so a later step must not include them).
 * logits (may be NULL): [n, V]. Row i's logits depend on the other rows only
 * through float summation order (the products pick their kernels by n). */
int kd_infer_eval_seqs(kd_infer *e, const int32_t *tokens, int64_t n, float *logits, kd_err *err);
/* The LM head as an F32 [V, C] matrix (the weights themselves when F32, else a
 * dequantized copy owned by the engine): for losses on hidden states. */
const float *kd_infer_head_f32(kd_infer *e, kd_err *err);
/* Bytes of weights one decoded token reads (all matrices, the embedding row). */
uint64_t kd_infer_weight_bytes(const kd_infer *e);
/* "F32", "Q4_K+Q6_K+Q8_0", ...: the types of the weight matrices. */
void kd_infer_describe_types(const kd_infer *e, char *out, size_t n);

/* ---- sampling ------------------------------------------------------------------------ */

/* temperature ≤ 0: greedy (argmax, smallest id on ties). Otherwise, as Hugging
 * Face does: logits / temperature, keep the top_k largest (0: all), then the
 * smallest set of most likely tokens whose probability reaches top_p (1: all),
 * renormalise and draw with the seeded xoshiro stream. */
typedef struct kd_sampler {
    float temperature;
    int64_t top_k;
    float top_p;
    kd_rng rng;
    int64_t V;
    struct kd_cand { float p; int32_t id; } *cand;   /* scratch [V] */
} kd_sampler;

int kd_sampler_init(kd_sampler *s, int64_t V, float temperature, int64_t top_k, float top_p, uint64_t seed,
                    kd_err *err);
void kd_sampler_free(kd_sampler *s);
/* A token from logits [V] (the values are not modified). */
int32_t kd_sample(kd_sampler *s, const float *logits);
/* Index of the largest value, the smallest index on ties. */
int64_t kd_argmax(const float *x, int64_t n);

/* Called with each generated token; return nonzero to stop. */
typedef int (*kd_token_fn)(void *user, int32_t id);

/* Evaluate the prompt (appended to the cache), then sample up to max_new
 * tokens, stopping after EOS (not stored) or when the cache is full. out
 * (may be NULL) receives the tokens, *n_out (may be NULL) their count. */
int kd_infer_generate(kd_infer *e, const int32_t *prompt, int64_t n_prompt, int64_t max_new, kd_sampler *s,
                      int32_t *out, int64_t *n_out, kd_token_fn fn, void *user, kd_err *err);

#endif
