/*
 * kd_plan.c — memory planner (see kd_plan.h). Every count below names the
 * allocation it mirrors; keep them in step with the code.
 */
#include "student/kd_plan.h"

#define F4 ((int64_t)sizeof(float))

void kd_plan_compute(const kd_config *c, const kd_plan_opts *o, kd_plan *p) {
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

    /* LM head + loss */
    if (o->lm_chunk <= 0) {
        /* full logits [N, V], their gradient, the head-output grad path */
        p->loss = (2 * N * V + N) * F4;
    } else {
        /* chunked: logits + dlogits of one chunk, the saved dh [N, C] */
        int64_t ch = o->lm_chunk < N ? o->lm_chunk : N;
        p->loss = (2 * ch * V + N * C) * F4;
    }
    /* batch: tokens, labels (int32) and teacher top-k ids + log-probs (int32 + float) */
    p->batch = N * 2 * 4 + N * o->topk * 8;
    int64_t cols = V < KD_PLAN_BLAS_MAX_COLS ? V : KD_PLAN_BLAS_MAX_COLS;
    p->baseline = KD_PLAN_BASELINE_BYTES + (int64_t)o->threads * KD_PLAN_BLAS_BYTES_PER_COL * cols;
    p->train_peak = p->weights + p->grads + p->optimizer + p->activations + p->loss + p->batch + p->baseline;

    /* inference: weights, KV cache (K and V, every layer, T positions), a few [C]/[F]/[V] buffers */
    p->kv_cache = 2 * L * T * kvd * F4;
    p->infer_peak = p->weights + p->kv_cache + (4 * C + 2 * F + 2 * V + H * T) * F4 + p->baseline;
}
