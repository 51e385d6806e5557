/*
 * kd_step.h — one optimizer step of training, the same function for `kd train`,
 * `kd plan --measure` and bench_train, in either memory mode.
 *
 * FP32 mode (kd_model + kd_adamw): for each of n_micro micro-batches, the
 * forward to the last hidden state, the distillation loss with the chunked LM
 * head (kd_distill_loss, lo->chunk_rows rows at a time) and its backward,
 * seeded with the token count so the gradients are token sums; then the sums
 * over ranks, the mean, clipping at grad_clip, AdamW at lr and the gather of
 * the optimizer shards. Lean mode (kd_lean): one micro-batch through
 * kd_lean_step (recomputing backward with per-layer updates).
 *
 *   kd_stepper s = kd_stepper_fp32(&model, &opt, &adam_opts, &shard);   // or kd_stepper_lean(&lean)
 *   kd_step_result res;
 *   kd_step_run(&s, &graph, n_micro, next_batch, ctx, &loss_opts, lr, grad_clip, dist, &res, &err);
 *
 * A loss or gradient norm that is not finite stops the step with an error
 * (the weights are then not updated in FP32 mode). kd_step_eval scores a
 * validation batch with the one evaluation (train/kd_eval.h) in either mode.
 */
#ifndef KD_STEP_H
#define KD_STEP_H

#include <stdint.h>

#include "core/kd_err.h"
#include "student/kd_model.h"
#include "train/kd_dist.h"
#include "train/kd_eval.h"
#include "train/kd_lean.h"
#include "train/kd_loss.h"
#include "train/kd_optim.h"

/* One micro-batch: tokens [B, T] and what the loss needs (labels, teacher). */
typedef struct kd_step_batch {
    const int32_t *tokens;
    int64_t B, T;
    kd_loss_batch lb;
} kd_step_batch;

/* Fills *out with the next micro-batch; 0, or -1 with err set. */
typedef int (*kd_step_next_fn)(void *ctx, kd_step_batch *out, kd_err *err);

/* What a step trains: FP32 weights and AdamW, or lean storage. Borrowed pointers. */
typedef struct kd_stepper {
    kd_model *m;                /* FP32 mode */
    kd_adamw *opt;
    const kd_adamw_opts *ao;
    const kd_dist *shard;       /* ranks sharing the AdamW state (kd_adamw_gather) */
    kd_lean *lean;              /* lean mode (m, opt unused) */
} kd_stepper;

kd_stepper kd_stepper_fp32(kd_model *m, kd_adamw *opt, const kd_adamw_opts *ao, const kd_dist *shard);
kd_stepper kd_stepper_lean(kd_lean *l);

typedef struct kd_step_result {
    double sums[5];       /* over all ranks: loss·n, ce·n, kl·n, top-1 agreements, n valid */
    double loss;          /* sums[0] / n */
    double grad_norm;     /* before clipping */
} kd_step_result;

/* One step over n_micro micro-batches (lean: exactly 1). dist (NULL: one
 * process) sums over data-parallel ranks. */
int kd_step_run(const kd_stepper *s, kd_graph *g, int64_t n_micro, kd_step_next_fn next, void *ctx,
                const kd_loss_opts *lo, float lr, double grad_clip, const kd_dist *dist, kd_step_result *res,
                kd_err *err);

/* Score one validation batch into acc (train/kd_eval.h), without gradients. */
int kd_step_eval(const kd_stepper *s, kd_graph *g, const kd_step_batch *b, kd_eval_acc *acc, kd_err *err);

/* Fault injection for tests: a NaN into the last parameter. */
void kd_step_poison(const kd_stepper *s);

#endif
