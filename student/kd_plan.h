/*
 * kd_plan.h — the memory planner: how many bytes a training step or an
 * inference run of a config needs, item by item, before anything is allocated.
 *
 * The counts follow what the code allocates (kd_model.c's forward, the ops'
 * saved context and the backward's gradient buffers, the loss, AdamW) so the
 * prediction can be checked against the measured peak RSS of real runs
 * (`kd plan --measure`, tests/test_plan.c).
 */
#ifndef KD_PLAN_H
#define KD_PLAN_H

#include <stdint.h>

#include "student/kd_config.h"

typedef struct kd_plan_opts {
    int64_t batch, seq;        /* B, T */
    int threads;               /* OpenMP threads (attention scratch) */
    int64_t lm_chunk;          /* rows per LM-head/loss chunk; 0 = full [B·T, V] logits */
    int64_t topk;              /* teacher top-k per position (0: none) */
    int ranks;                 /* data-parallel ranks sharing the optimizer state (≥ 1) */
} kd_plan_opts;

typedef struct kd_plan {
    int64_t n_params;
    /* training, bytes */
    int64_t weights, grads, optimizer, activations, loss, batch, baseline, train_peak;
    /* inference (F32 weights, KV cache for `seq` positions, one sequence), bytes */
    int64_t kv_cache, infer_peak;
} kd_plan;

/* Process baseline measured here (libc, OpenMP runtime, kd's code and its
 * small buffers), plus the part of OpenBLAS's per-thread GEMM buffer that
 * wide products touch: about 1792 bytes per output column of the LM head,
 * up to 8192 columns (fitted to `kd plan --measure` on this machine). */
#define KD_PLAN_BASELINE_BYTES ((int64_t)8 << 20)
#define KD_PLAN_BLAS_BYTES_PER_COL ((int64_t)1792)
#define KD_PLAN_BLAS_MAX_COLS ((int64_t)8192)

void kd_plan_compute(const kd_config *c, const kd_plan_opts *o, kd_plan *p);

#endif
