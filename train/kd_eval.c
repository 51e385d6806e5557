/*
 * kd_eval.c — the evaluation of a model against a teacher dump (definitions in
 * kd_eval.h): fixed loss options for the metrics, sums, and their JSON.
 */
#include "train/kd_eval.h"

#include <math.h>
#include <string.h>

#include "core/kd_json.h"

kd_loss_opts kd_eval_loss_opts(const kd_loss_batch *b) {
    kd_loss_opts o = kd_loss_opts_default();
    const int topk = b->topk_ids && b->topk_logprobs && b->k > 0;
    o.mode = topk ? (b->sampled ? KD_TEACHER_SAMPLED : KD_TEACHER_TOPK_TAIL) : KD_TEACHER_FULL;
    o.div = KD_DIV_FORWARD;
    o.temperature = 1.0f;
    o.alpha = topk || b->teacher_logits ? 1.0f : 0.0f;   /* tokens only: cross-entropy only */
    return o;
}

int kd_eval_batch(kd_eval_acc *acc, const float *hidden, const float *head, int64_t N, int64_t C, int64_t V,
                  const kd_loss_batch *b, kd_err *err) {
    const kd_loss_opts o = kd_eval_loss_opts(b);
    kd_loss_stats st;
    if (kd_distill_eval(hidden, head, N, C, V, b, &o, &st, err)) return -1;
    const double n = (double)st.n_valid;
    acc->sum[KD_EVAL_CE] += st.ce * n;
    acc->sum[KD_EVAL_KL] += st.kl_t1 * n;   /* T = 1: kl_t1 == kl */
    acc->sum[KD_EVAL_TOP1] += (double)st.top1_agree;
    acc->sum[KD_EVAL_N] += n;
    if (o.alpha > 0.0f && b->sampled) {   /* xent = KL(p̂‖s) + H(p̂) over the valid rows */
        double H = 0;
        for (int64_t r = 0; r < N; r++) {
            if (b->labels[r] == KD_IGNORE_INDEX) continue;
            for (int64_t j = 0; j < b->k; j++) {
                float lp = b->topk_logprobs[r * b->k + j];
                if (b->topk_ids[r * b->k + j] >= 0 && lp != -INFINITY) H -= exp((double)lp) * (double)lp;
            }
        }
        acc->sum[KD_EVAL_XENT] += st.kl * n + H;
        acc->sum[KD_EVAL_SAMPLED] += n;
    }
    if (o.alpha > 0.0f) acc->teacher = 1;
    return 0;
}

kd_eval_result kd_eval_result_of(const kd_eval_acc *acc) {
    const double n = acc->sum[KD_EVAL_N], d = n > 0 ? n : 1.0;
    kd_eval_result e;
    e.ce = acc->sum[KD_EVAL_CE] / d;
    e.ppl = exp(e.ce);
    e.kl = acc->teacher ? acc->sum[KD_EVAL_KL] / d : NAN;
    e.top1 = acc->teacher ? acc->sum[KD_EVAL_TOP1] / d : NAN;
    /* a sampled dump: xent instead of kl and top1 (kd_eval.h) */
    e.xent = acc->sum[KD_EVAL_SAMPLED] > 0 ? acc->sum[KD_EVAL_XENT] / acc->sum[KD_EVAL_SAMPLED] : NAN;
    if (acc->sum[KD_EVAL_SAMPLED] > 0) e.kl = e.top1 = NAN;
    e.tokens = (int64_t)n;
    return e;
}

cJSON *kd_eval_to_json(const kd_eval_result *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "ppl", e->ppl);
    cJSON_AddNumberToObject(o, "ce", e->ce);
    if (isfinite(e->kl)) cJSON_AddNumberToObject(o, "kl", e->kl);   /* absent without a teacher */
    if (isfinite(e->top1)) cJSON_AddNumberToObject(o, "top1", e->top1);
    if (isfinite(e->xent)) cJSON_AddNumberToObject(o, "xent", e->xent);
    cJSON_AddNumberToObject(o, "tokens", (double)e->tokens);
    return o;
}

int kd_eval_from_json(const cJSON *o, const char *name, kd_eval_result *e, kd_err *err) {
    int64_t tokens = 0;
    e->kl = e->top1 = e->xent = NAN;
    if (kd_json_get_float(o, "ce", name, 1, -INFINITY, INFINITY, &e->ce, err) ||
        kd_json_get_float(o, "ppl", name, 1, 0.0, INFINITY, &e->ppl, err) ||
        kd_json_get_float(o, "kl", name, 0, -INFINITY, INFINITY, &e->kl, err) ||
        kd_json_get_float(o, "top1", name, 0, 0.0, 1.0, &e->top1, err) ||
        kd_json_get_float(o, "xent", name, 0, 0.0, INFINITY, &e->xent, err) ||
        kd_json_get_int(o, "tokens", name, 1, 0, INT64_MAX, &tokens, err))
        return -1;
    e->tokens = tokens;
    return 0;
}
