/*
 * kd_lean.h — the "lean" memory mode: training a student whose FP32 AdamW
 * state does not fit in memory (a 3B student on one 24 GiB machine).
 *
 * FP32 AdamW holds 16 bytes per parameter (weights, gradients, m, v) plus the
 * activations of every layer. Lean mode holds about 4:
 *
 *   weights      BF16 (2 B) for 2-D matrices, updated with stochastic rounding;
 *                an FP32 copy of one layer exists only while that layer is
 *                computed (lean_weights "fp32" keeps them in FP32, 4 B)
 *   gradients    never all at once: the backward walks the layers from the last
 *                to the first and applies the update to a layer's parameters as
 *                soon as its gradient is complete (one layer's FP32 gradients,
 *                plus the LM head's / tied embedding's, which is complete only
 *                when the walk reaches the embedding)
 *   first moment BF16 (2 B) with stochastic rounding (lean_m "fp32": 4 B)
 *   second moment of a [R, C] matrix factored as in Adafactor (lean_v
 *                "factored"): running means of g² over each row (r, [R]) and
 *                column (c, [C]); v̂_ij = r_i·c_j / mean(r), exact when g² is
 *                rank one; 1-D parameters keep the full v (lean_v "full": all)
 *   activations  per-block checkpointing: the forward (no tape) keeps only each
 *                layer's input [N, C]; the backward recomputes one layer's
 *                forward on a fresh tape from its saved input and back-propagates
 *                the upstream gradient through it
 *   LM head      materialised in FP32 with a dense FP32 gradient for the
 *                chunked loss (grad_into_params: no second [V, C] buffer)
 * 1-D parameters (RMSNorm weights) stay FP32 in every field: they are tiny.
 *
 * The update is AdamW's (kd_optim.h), bias-corrected, with decoupled weight
 * decay, on the same decay flags; with lean_weights = lean_m = "fp32" and
 * lean_v = "full" it is AdamW's arithmetic element for element.
 *
 * Gradient clipping needs the global norm before any update, which per-layer
 * updates never have. By default step t scales its gradient by
 * min(1, grad_clip / ‖g_{t−1}‖), the global norm measured during step t−1's
 * backward (the first step is not clipped: Adam's first update m̂/√v̂ = g/|g|
 * does not depend on the gradient's scale, so clipping it changes nothing).
 * With exact_clip the backward walks the layers twice: the first walk only
 * measures every gradient, the second recomputes them and applies the update
 * with this step's own factor (about 1.5× the time, no extra memory).
 *
 * Randomness of stochastic rounding comes from a counter-based hash of
 * (seed, step, parameter index, field, element index): the result does not
 * depend on the thread schedule, and a resumed run draws the same bits, so
 * resume is bit-exact. The factored row/column sums are computed in a fixed
 * order for the same reason.
 *
 * Data parallelism: every parameter's gradient is all-reduced just before its
 * update. With the optimizer state sharded (shard_world > 1, ZeRO-1), rank k
 * keeps m (and a full v) only for its rows of each parameter
 * (kd_dist_shard_rows), updates only those rows and all-gathers the updated
 * weights (in their storage dtype) before the walk goes on. The factored
 * row/column means stay whole on every rank: they are computed from the whole
 * all-reduced gradient, cost R + C floats per matrix, and keep the estimate
 * v̂_ij = r_i·c_j / mean(r) of every rank equal to the unsharded one. The
 * stochastic-rounding bits follow the element, not its place in a shard, so a
 * sharded run gives the unsharded run's bits.
 */
#ifndef KD_LEAN_H
#define KD_LEAN_H

#include <stdint.h>

#include "core/kd_fp16.h"
#include "student/kd_model.h"
#include "train/kd_dist.h"
#include "train/kd_eval.h"
#include "train/kd_loss.h"
#include "train/kd_optim.h"

typedef enum kd_lean_dtype { KD_LEAN_F32 = 0, KD_LEAN_BF16 = 1 } kd_lean_dtype;

typedef struct kd_lean_opts {
    kd_lean_dtype weights;    /* storage of 2-D weights (BF16) */
    kd_lean_dtype m;          /* first moment of 2-D weights (BF16) */
    int v_factored;           /* second moment of 2-D weights: row and column means (1) */
    int exact_clip;           /* clip with this step's norm: two backward walks (0: the previous step's norm) */
    kd_adamw_opts adam;       /* β1, β2, ε, weight decay */
    int decay_embeddings;     /* as kd_adamw_init */
    uint64_t seed;            /* stochastic-rounding stream */
    int shard_rank, shard_world;   /* optimizer-state shard of this process (0, 1: not sharded) */
} kd_lean_opts;

typedef struct kd_lean_param {
    void *w;                  /* weights: n floats or n BF16 */
    void *m;                  /* first moment of rows [r0, r1): (r1 − r0)·cols values */
    float *v;                 /* full second moment of rows [r0, r1), or NULL when factored */
    float *vr, *vc;           /* factored: row means [rows], column means [cols] */
    kd_lean_dtype wt, mt;     /* dtypes of w and m (always F32 for 1-D parameters) */
    int decay;
    int64_t r0, r1;           /* rows of this rank's optimizer shard (all rows when not sharded) */
} kd_lean_param;

typedef struct kd_lean {
    kd_model m;               /* shell model: names, shapes and the forward; data/grad set only while computed */
    kd_lean_opts o;
    kd_lean_param *p;         /* [m.n_params], checkpoint order */
    int64_t step;             /* completed updates */
    double last_grad_norm;    /* global gradient norm of the last step; 0: none yet */
    /* working memory */
    float *layer_w, *layer_g; /* one layer's FP32 weights (NULL with FP32 storage) and gradients */
    int64_t layer_n;          /* floats in one layer */
    float *saved, *dx;        /* [L+1, N, C] layer inputs and final residual; [N, C] backward gradient */
    float *dx_top;            /* exact clipping: dL/dx_L kept for the second walk */
    int64_t rows;             /* N they hold */
    int32_t *pos;             /* [T] positions */
    int64_t pos_n;
} kd_lean;

/* BF16 weights, BF16 m, factored v, kd_adamw_defaults(), seed 0, not sharded. */
void kd_lean_opts_init(kd_lean_opts *o);
/* "fp32" / "bf16". */
const char *kd_lean_dtype_name(kd_lean_dtype t);
int kd_lean_dtype_parse(const char *s, kd_lean_dtype *out, kd_err *err);

/* Allocate zeroed storage and optimizer state for a validated config. */
int kd_lean_new(kd_lean *l, const kd_config *cfg, const kd_lean_opts *o, kd_err *err);
void kd_lean_free(kd_lean *l);
/* kd_model_init's values (same streams), rounded to nearest into the storage dtype:
 * no FP32 copy of the model ever exists. */
void kd_lean_init(kd_lean *l, uint64_t seed);
/* Weights of a checkpoint directory (F32/F16/BF16, sharded or not), rounded to
 * nearest when the storage is narrower; BF16 into BF16 is a copy. */
int kd_lean_load_weights(kd_lean *l, const char *dir, kd_err *err);
/* config.json (torch_dtype "bfloat16" with BF16 storage) + model.safetensors in the
 * storage dtypes (BF16 matrices, F32 norms): a Hugging Face checkpoint that kd's
 * FP32 loader and transformers read. */
int kd_lean_save(const kd_lean *l, const char *dir, kd_err *err);
/* Optimizer state: m.NAME (storage dtype), v.NAME (F32) or v_row.NAME + v_col.NAME (F32).
 * A shard holds m and v of its rows only (shape[0] = r1 − r0), the whole factors,
 * and the metadata kd_optimizer_shard "RANK/WORLD"; loading checks it. */
int kd_lean_save_optimizer(const kd_lean *l, const char *path, kd_err *err);
int kd_lean_load_optimizer(kd_lean *l, const char *path, kd_err *err);
/* Element j of parameter i as a float, and assignment (rounded to nearest). */
float kd_lean_get(const kd_lean *l, int i, int64_t j);
void kd_lean_set(kd_lean *l, int i, int64_t j, float v);
/* Bytes of weight storage and of optimizer state (this rank's shard of it). */
int64_t kd_lean_weight_bytes(const kd_lean *l);
int64_t kd_lean_state_bytes(const kd_lean *l);

typedef struct kd_lean_result {
    kd_loss_stats st;         /* this rank's loss statistics */
    double sums[5];           /* over all ranks: loss·n, ce·n, kl·n, top-1 agreements, n valid */
    double grad_norm;         /* global norm of this step's gradient, before clipping */
    double clip_scale;        /* factor applied to it (from the previous step's norm) */
} kd_lean_result;

/*
 * One optimizer step on tokens [B·T] with the distillation loss of b under lo
 * (lo->grad_into_params is implied) at learning rate lr, clipping with the
 * previous step's norm at grad_clip (≤ 0: none). dist may be NULL (one
 * process; it must be given, with this shard's rank and world, when the state
 * is sharded). A non-finite loss is an error before anything changes; a
 * non-finite gradient is an error before that parameter changes (earlier
 * layers of the walk are already updated: the step has failed).
 */
int kd_lean_step(kd_lean *l, kd_graph *g, const int32_t *tokens, int64_t B, int64_t T, const kd_loss_batch *b,
                 const kd_loss_opts *lo, float lr, double grad_clip, const kd_dist *dist, kd_lean_result *res,
                 kd_err *err);
/* Validation: the forward pass without gradients, scored by kd_eval_batch into acc. */
int kd_lean_eval(kd_lean *l, kd_graph *g, const int32_t *tokens, int64_t B, int64_t T, const kd_loss_batch *b,
                 kd_eval_acc *acc, kd_err *err);

/* ---- the pieces, exposed for tests -------------------------------------------------- */

/* x rounded to BF16 up or down with probability given by the 16 dropped bits and
 * r16 ∈ [0, 65536): unbiased, E[bf16(x)] = x over uniform r16. NaN stays NaN. */
static inline uint16_t kd_bf16_round_stochastic(float x, uint32_t r16) {
    uint32_t u = kd_f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + (r16 & 0xffffu)) >> 16);   /* carries round the magnitude up; ±inf stays */
}
/* A 64-bit mix of two words (murmur3's finaliser around them). The stream of one
 * field of parameter i at update t is key = hash(hash(hash(seed, t), i), field). */
uint64_t kd_lean_hash(uint64_t a, uint64_t b);
/* The 16 random bits of element j of stream key: the top bits of fmix64(key + j). */
uint32_t kd_lean_rand16(uint64_t key, int64_t j);
/* One factored second-moment update of a [rows, cols] gradient g scaled by s:
 * r_i ← β2·r_i + (1−β2)·mean_j (s·g_ij)², c_j likewise over i. Sums in double, in
 * a fixed order (any thread count gives the same bits). */
void kd_lean_factor_update(float *vr, float *vc, const float *g, int64_t rows, int64_t cols, float s, float beta2);
/* mean(r): the estimate is v̂_ij = r_i·c_j / mean(r) (0 when mean(r) is 0). */
double kd_lean_factor_mean(const float *vr, int64_t rows);

#endif
