/*
 * kd_plan.c — memory planner (see kd_plan.h). Every count below names the
 * allocation it mirrors; keep them in step with the code.
 */
#include "student/kd_plan.h"

#define F4 ((int64_t)sizeof(float))

static void plan_lean(const kd_config *c, const kd_plan_opts *o, kd_plan *p);

/* Resident bytes of a scratch buffer that is freed before a second phase
 * allocates `other` bytes. glibc serves blocks of 32 MiB and more (its largest
 * mmap threshold) with mmap and unmaps them on free, so the phases take turns;
 * smaller blocks stay in the heap after the first step and stay resident. */
static int64_t overlap_phases(int64_t scratch, int64_t other) {
    if (scratch < ((int64_t)32 << 20)) return scratch + other;
    return scratch > other ? scratch : other;
}

void kd_plan_compute(const kd_config *c, const kd_plan_opts *o, kd_plan *p) {
    p->working = 0;
    int64_t B = o->batch, T = o->seq, N = B * T;
    int64_t C = c->hidden_size, F = c->intermediate_size, L = c->num_hidden_layers, V = c->vocab_size;
    int64_t D = c->head_dim, H = c->num_attention_heads, qd = H * D, kvd = c->num_key_value_heads * D;
    int ranks = o->ranks > 0 ? o->ranks : 1;
    int64_t P = kd_config_n_params(c);
    p->n_params = P;

    /* kd_param_new: data + grad per parameter; AdamW: m + v (sharded over ranks). */
    p->weights = P * F4;
    p->grads = P * F4;
    p->optimizer = 2 * P * F4 / ranks;

    /* Activations of one layer (kd_model_hidden), forward outputs:
     *   rmsnorm ×2 (C), q linear + rope + attention out (3·qd), k linear + rope (2·kvd),
     *   v (kvd), o-proj + residual add (2C), gate + up + swiglu (3F), down + add (2C)
     * backward: a gradient buffer for each of those, plus rope's rotated copies (qd + kvd). */
    int64_t fwd_layer = N * (6 * C + 3 * qd + 3 * kvd + 3 * F) + 2 * N /* rstd */ + B * H * T /* lse */ +
                        2 * T * D /* rope tables */;
    int64_t bwd_layer = N * (6 * C + 3 * qd + 3 * kvd + 3 * F) + N * (qd + kvd);
    int64_t att_scratch = (int64_t)o->threads * 2 * 64 * T * 2;   /* forward and backward */
    int64_t edges = 2 * N * C /* embedding out + final norm */ + N + 2 * N * C /* their grads */;
    p->activations = (L * (fwd_layer + bwd_layer) + att_scratch + edges) * F4;

    /* LM head + loss (kd_distill_loss as kd train runs it): the chunk scratch
     * [R, V + 2C + 2k] + per-row results + the row index, and the graph's dh [N, C]
     * and dW [V, C] (kd train: grad_into_params 0). */
    int64_t ch0 = o->lm_chunk > 0 ? o->lm_chunk : 256;   /* 0: the loss's default chunk */
    int64_t ch = ch0 < N ? ch0 : N;
    int64_t scratch = ch * (V + 2 * C + 2 * o->topk) * F4 + ch * 32 + N * 8;
    int64_t held = (N * C + V * C) * F4;
    p->loss = scratch + held;
    /* batch: tokens, labels (int32) and teacher top-k ids + log-probs (int32 + float) */
    p->batch = N * 2 * 4 + N * o->topk * 8;
    int64_t cols = V < KD_PLAN_BLAS_MAX_COLS ? V : KD_PLAN_BLAS_MAX_COLS;
    p->baseline = KD_PLAN_BASELINE_BYTES + (int64_t)o->threads * KD_PLAN_BLAS_BYTES_PER_COL * cols;
    /* The loss scratch is freed before the backward pass allocates the layers'
     * gradient buffers: the peak holds the larger of the two (overlap_phases). */
    int64_t bwd = (L * bwd_layer + att_scratch / 2 + 2 * N * C) * F4;
    int64_t fwd = p->activations - bwd;
    p->train_peak = p->weights + p->grads + p->optimizer + fwd + held + overlap_phases(scratch, bwd) + p->batch +
                    p->baseline;

    /* inference: weights, KV cache (K and V, every layer, T positions), a few [C]/[F]/[V] buffers */
    p->kv_cache = 2 * L * T * kvd * F4;
    p->infer_peak = p->weights + p->kv_cache + (4 * C + 2 * F + 2 * V + H * T) * F4 + p->baseline;
    if (o->lean) plan_lean(c, o, p);
}

/*
 * Lean mode (train/kd_lean.c). Persistent: weights and optimizer state in their
 * storage dtypes (1-D parameters: FP32 weight, m and v), one layer's FP32
 * gradients and (BF16 storage) weights, the saved layer inputs [L+1, N, C] and
 * the backward's dx [N, C] (exact clipping: and dL/dx_L for the second walk), the tape's arena (its largest graph: one layer's
 * recomputed forward + backward from a leaf copy of the input). The FP32 LM head
 * (BF16 storage only) and its dense FP32 gradient are held throughout, and the
 * loss chunk scratch comes on top of the arena (which keeps its memory between
 * steps).
 */
static void plan_lean(const kd_config *c, const kd_plan_opts *o, kd_plan *p) {
    int64_t B = o->batch, T = o->seq, N = B * T;
    int64_t C = c->hidden_size, F = c->intermediate_size, L = c->num_hidden_layers, V = c->vocab_size;
    int64_t D = c->head_dim, H = c->num_attention_heads, qd = H * D, kvd = c->num_key_value_heads * D;
    int64_t wb = o->lean_weights_fp32 ? 4 : 2, mb = o->lean_m_fp32 ? 4 : 2;
    int64_t one_d = (2 * L + 1) * C;                         /* RMSNorm weights */
    int64_t two_d = p->n_params - one_d;
    int64_t layer = 2 * qd * C + 2 * kvd * C + 3 * F * C;    /* one layer's matrices */
    int64_t layer_all = layer + 2 * C;
    int64_t heads = c->tie_word_embeddings ? 1 : 2;
    /* v factors: row + column means of every matrix */
    int64_t factors = L * (qd + C + 2 * (kvd + C) + C + qd + 2 * (F + C) + C + F) + heads * (V + C);

    /* sharded over ranks (kd_lean.h): m, a full v and the norms' m + v are split by rows;
     * the factors stay whole on every rank */
    int64_t ranks = o->ranks > 0 ? o->ranks : 1;
    p->weights = two_d * wb + one_d * F4;
    p->optimizer = (two_d * mb + (o->lean_v_full ? two_d * F4 : 0) + 2 * one_d * F4) / ranks +
                   (o->lean_v_full ? 0 : factors * F4);
    int64_t head = V * C * F4;
    p->working = (o->lean_weights_fp32 ? 0 : layer_all * F4 + head);
    /* lean_clip "exact" keeps an untied embedding's gradient beside the head's through the walk */
    p->grads = layer_all * F4 + head * (o->lean_clip_exact && !c->tie_word_embeddings ? 2 : 1);
    /* tape of one recomputed layer: the FP32 plan's per-layer forward + backward, plus the
     * leaf input and its gradient, plus the attention scratch */
    int64_t fwd_layer = N * (6 * C + 3 * qd + 3 * kvd + 3 * F) + 2 * N + B * H * T + 2 * T * D;
    int64_t bwd_layer = N * (6 * C + 3 * qd + 3 * kvd + 3 * F) + N * (qd + kvd);
    int64_t att_scratch = (int64_t)o->threads * 2 * 64 * T * 2;
    int64_t arena = fwd_layer + bwd_layer + 2 * N * C + att_scratch;
    int64_t saved = ((L + 1) * N * C + (o->lean_clip_exact ? 2 : 1) * N * C) * F4;   /* + dx (+ dL/dx_L) */
    p->activations = saved + arena * F4;
    int64_t ch = o->lm_chunk > 0 ? o->lm_chunk : 256;         /* lean always runs the chunked loss */
    if (ch > N) ch = N;
    p->loss = ch * (V + 2 * C + 2 * o->topk) * F4 + ch * 32 + N * 8;
    /* kd_sgemm's single-threaded tiles pack into OpenBLAS's fixed per-thread buffers:
     * no packing term grows with the chunk (measured: 1 and 2 threads peak alike) */
    p->baseline = KD_PLAN_BASELINE_BYTES;
    /* the tape's arena keeps its memory from one step to the next, so the loss
     * scratch comes on top of it */
    int64_t phase = p->loss + arena * F4;
    p->train_peak = p->weights + p->optimizer + p->working + p->grads + saved + phase + p->batch + p->baseline;
}
