/*
 * kd_optim.h — AdamW, gradient-norm clipping and the learning-rate schedule.
 *
 * AdamW (Loshchilov & Hutter), decoupled weight decay, bias-corrected:
 *   m ← β1·m + (1−β1)·g,   v ← β2·v + (1−β2)·g²
 *   θ ← θ − lr·( m̂ / (sqrt(v̂) + ε) + wd·θ ),  m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)
 * Weight decay applies only to parameters whose `decay` flag is set (by
 * default: 2-D matrices except the token embedding; norms never decay).
 * The state (m, v, step) is plain data so checkpoints save and restore it.
 */
#ifndef KD_OPTIM_H
#define KD_OPTIM_H

#include "autograd/kd_tensor.h"

typedef struct kd_adamw_opts {
    float beta1, beta2, eps, weight_decay;
} kd_adamw_opts;

typedef struct kd_adamw {
    int n;
    kd_tensor **params;       /* borrowed */
    float **m, **v;           /* first and second moments, one buffer per parameter */
    unsigned char *decay;     /* per parameter: apply weight decay */
    int64_t step;             /* completed updates */
} kd_adamw;

/* Defaults: β = (0.9, 0.95), ε = 1e-8, weight decay 0.1. */
kd_adamw_opts kd_adamw_defaults(void);
/* Allocate zeroed moments for params; decay flags from the rule above
 * (decay_embeddings=1 also decays parameters named "*embed_tokens*"). */
int kd_adamw_init(kd_adamw *o, kd_tensor **params, int n, int decay_embeddings, kd_err *err);
void kd_adamw_free(kd_adamw *o);
/* One update with learning rate lr, using each parameter's grad. */
void kd_adamw_step(kd_adamw *o, const kd_adamw_opts *opts, float lr);

/* Global L2 norm of all gradients (accumulated in double). */
double kd_grad_norm(kd_tensor **params, int n);
/* Scale all gradients so their global norm is at most max_norm (≤ 0: no-op). Returns the norm before. */
double kd_grad_clip(kd_tensor **params, int n, double max_norm);

/* Linear warmup to lr_max over `warmup` steps, then cosine decay to lr_min at `total`. step counts from 0. */
float kd_lr_schedule(int64_t step, int64_t warmup, int64_t total, float lr_max, float lr_min);

#endif
