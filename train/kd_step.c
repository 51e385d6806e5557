/*
 * kd_step.c — one optimizer step, FP32 or lean (see kd_step.h).
 */
#include "train/kd_step.h"

#include <math.h>
#include <string.h>

kd_stepper kd_stepper_fp32(kd_model *m, kd_adamw *opt, const kd_adamw_opts *ao, const kd_dist *shard) {
    return (kd_stepper){.m = m, .opt = opt, .ao = ao, .shard = shard, .lean = NULL};
}

kd_stepper kd_stepper_lean(kd_lean *l) { return (kd_stepper){.lean = l}; }

void kd_step_poison(const kd_stepper *s) {
    if (s->lean) kd_lean_set(s->lean, s->lean->m.n_params - 1, 0, NAN);
    else s->m->params[s->m->n_params - 1]->data[0] = NAN;
}

static int step_lean(const kd_stepper *s, kd_graph *g, kd_step_next_fn next, void *ctx, const kd_loss_opts *lo,
                     float lr, double grad_clip, const kd_dist *dist, kd_step_result *res, kd_err *err) {
    kd_step_batch b;
    if (next(ctx, &b, err)) return -1;
    kd_lean_result lr_res;
    if (kd_lean_step(s->lean, g, b.tokens, b.B, b.T, &b.lb, lo, lr, grad_clip, dist, &lr_res, err)) return -1;
    memcpy(res->sums, lr_res.sums, sizeof res->sums);
    res->grad_norm = lr_res.grad_norm;
    return 0;
}

/* forward, loss, backward of each micro-batch; sums and gradients are token sums */
static int accumulate(const kd_stepper *s, kd_graph *g, int64_t n_micro, kd_step_next_fn next, void *ctx,
                      const kd_loss_opts *lo, double *sums, kd_err *err) {
    kd_model *m = s->m;
    kd_tensor *head = kd_model_head(m);
    for (int64_t a = 0; a < n_micro; a++) {
        kd_step_batch b;
        if (next(ctx, &b, err)) return -1;
        kd_graph_reset(g);
        kd_tensor *h = kd_model_hidden(g, m, b.tokens, b.B, b.T);
        kd_loss_stats st;
        kd_tensor *loss = kd_distill_loss(g, h, head, &b.lb, lo, &st, err);
        if (!loss) return -1;
        if (st.n_valid > 0) {
            float seed = (float)st.n_valid;     /* gradient of the token sum */
            kd_graph_backward_from(g, loss, &seed);
        }
        sums[0] += st.loss * (double)st.n_valid;
        sums[1] += st.ce * (double)st.n_valid;
        sums[2] += st.kl * (double)st.n_valid;
        sums[3] += (double)st.top1_agree;
        sums[4] += (double)st.n_valid;
    }
    kd_graph_reset(g);
    return 0;
}

static int step_fp32(const kd_stepper *s, kd_graph *g, int64_t n_micro, kd_step_next_fn next, void *ctx,
                     const kd_loss_opts *lo, float lr, double grad_clip, const kd_dist *dist, kd_step_result *res,
                     kd_err *err) {
    kd_model *m = s->m;
    kd_model_zero_grad(m);
    if (accumulate(s, g, n_micro, next, ctx, lo, res->sums, err)) return -1;
    if (dist && kd_dist_allreduce_sum_f64(dist, res->sums, 5, err)) return -1;
    for (int i = 0; dist && i < m->n_params; i++)
        if (kd_dist_allreduce_sum_f32(dist, m->params[i]->grad, m->params[i]->n, err)) return -1;
    double n = res->sums[4];
    double loss = n > 0 ? res->sums[0] / n : 0.0;
    if (!isfinite(loss))
        return kd_errf(err, "the loss is %s; stopping (the last checkpoint is intact)", isnan(loss) ? "NaN" : "infinite");
    if (n > 0) {
        float inv = (float)(1.0 / n);
        for (int i = 0; i < m->n_params; i++) {
            float *gr = m->params[i]->grad;
            for (int64_t j = 0; j < m->params[i]->n; j++) gr[j] *= inv;
        }
    }
    res->grad_norm = kd_grad_clip(m->params, m->n_params, grad_clip);
    if (!isfinite(res->grad_norm))
        return kd_errf(err, "the gradient norm is not finite; stopping (the last checkpoint is intact)");
    kd_adamw_step(s->opt, s->ao, lr);
    return s->shard ? kd_adamw_gather(s->opt, s->shard, err) : 0;
}

int kd_step_run(const kd_stepper *s, kd_graph *g, int64_t n_micro, kd_step_next_fn next, void *ctx,
                const kd_loss_opts *lo, float lr, double grad_clip, const kd_dist *dist, kd_step_result *res,
                kd_err *err) {
    memset(res, 0, sizeof *res);
    if (s->lean && n_micro != 1)
        return kd_errf(err, "lean memory mode takes one micro-batch per step, got %lld", (long long)n_micro);
    int rc = s->lean ? step_lean(s, g, next, ctx, lo, lr, grad_clip, dist, res, err)
                     : step_fp32(s, g, n_micro, next, ctx, lo, lr, grad_clip, dist, res, err);
    if (rc) return -1;
    res->loss = res->sums[4] > 0 ? res->sums[0] / res->sums[4] : 0.0;
    return 0;
}

int kd_step_eval(const kd_stepper *s, kd_graph *g, const kd_step_batch *b, kd_eval_acc *acc, kd_err *err) {
    if (s->lean) return kd_lean_eval(s->lean, g, b->tokens, b->B, b->T, &b->lb, acc, err);
    kd_model *m = s->m;
    kd_graph_reset(g);
    g->no_grad = 1;
    kd_tensor *h = kd_model_hidden(g, m, b->tokens, b->B, b->T);
    int rc = kd_eval_batch(acc, h->data, kd_model_head(m)->data, b->B * b->T, m->cfg.hidden_size, m->cfg.vocab_size,
                           &b->lb, err);
    g->no_grad = 0;
    kd_graph_reset(g);
    return rc;
}
