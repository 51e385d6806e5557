/*
 * kd_optim.h — AdamW, gradient-norm clipping and the learning-rate schedule.
 *
 * AdamW (Loshchilov & Hutter), decoupled weight decay, bias-corrected:
 *   m ← β1·m + (1−β1)·g,   v ← β2·v + (1−β2)·g²
 *   θ ← θ − lr·( m̂ / (sqrt(v̂) + ε) + wd·θ ),  m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)
 * Weight decay applies only to parameters whose `decay` flag is set (by
 * default: 2-D matrices except the token embedding; norms never decay).
 * The state (m, v, step) is plain data so checkpoints save and restore it.
 *
 * Sharded (ZeRO-1, kd_adamw_init_shard): rank k of N stores m and v only for
 * its rows of each parameter (kd_dist_shard_rows of shape[0]; a row is the
 * product of the other dimensions) and kd_adamw_step updates only those
 * weights; kd_adamw_gather then all-gathers the weights. Element for element
 * the arithmetic is the unsharded one, so a sharded run gives the unsharded
 * run's weights bit for bit.
 */
#ifndef KD_OPTIM_H
#define KD_OPTIM_H

#include "autograd/kd_tensor.h"
#include "format/kd_safetensors.h"
#include "train/kd_dist.h"

typedef struct kd_adamw_opts {
    float beta1, beta2, eps, weight_decay;
} kd_adamw_opts;

typedef struct kd_adamw {
    int n;
    kd_tensor **params;       /* borrowed */
    float **m, **v;           /* first and second moments of this rank's elements, one buffer per parameter */
    int64_t *lo, *hi;         /* per parameter: the elements [lo, hi) this rank owns (all when not sharded) */
    unsigned char *decay;     /* per parameter: apply weight decay */
    int64_t step;             /* completed updates */
    int shard_rank, shard_world;   /* 0, 1 when not sharded */
} kd_adamw;

/* Defaults: β = (0.9, 0.95), ε = 1e-8, weight decay 0.1. */
kd_adamw_opts kd_adamw_defaults(void);
/* Allocate zeroed moments for params; decay flags from the rule above
 * (decay_embeddings=1 also decays parameters named "*embed_tokens*"). */
int kd_adamw_init(kd_adamw *o, kd_tensor **params, int n, int decay_embeddings, kd_err *err);
/* The same, holding the state of rank `rank` of `world` only (world 1: kd_adamw_init). */
int kd_adamw_init_shard(kd_adamw *o, kd_tensor **params, int n, int decay_embeddings, int rank, int world,
                        kd_err *err);
void kd_adamw_free(kd_adamw *o);
/* One update with learning rate lr, using each parameter's grad (this rank's elements only). */
void kd_adamw_step(kd_adamw *o, const kd_adamw_opts *opts, float lr);
/* After a sharded step: every rank's updated elements to every rank (d: the
 * ranks that share the state; no-op when not sharded). */
int kd_adamw_gather(kd_adamw *o, const kd_dist *d, kd_err *err);
/* Bytes of m + v this rank holds. */
int64_t kd_adamw_state_bytes(const kd_adamw *o);

/* An optimizer-state file (FP32 AdamW or lean) of rank `rank` of `world`
 * holding a shard carries the metadata kd_optimizer_shard "RANK/WORLD"; the
 * whole state carries none. Mark a file being written ... */
int kd_optim_shard_mark(kd_st_writer *w, int rank, int world, kd_err *err);
/* ... and check that the file at path holds what this rank needs. */
int kd_optim_shard_check(kd_st_file *f, const char *path, int rank, int world, kd_err *err);

/* Global L2 norm of all gradients (accumulated in double). */
double kd_grad_norm(kd_tensor **params, int n);
/* Scale all gradients so their global norm is at most max_norm (≤ 0: no-op). Returns the norm before. */
double kd_grad_clip(kd_tensor **params, int n, double max_norm);

/* Linear warmup to lr_max over `warmup` steps, then cosine decay to lr_min at `total`. step counts from 0. */
float kd_lr_schedule(int64_t step, int64_t warmup, int64_t total, float lr_max, float lr_min);

#endif
