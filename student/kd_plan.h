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
    int64_t lm_chunk;          /* rows per LM-head/loss chunk (kd train's lm_chunk); 0: 256 */
    int64_t topk;              /* teacher top-k per position (0: none) */
    int ranks;                 /* data-parallel ranks sharing the optimizer state (≥ 1): `optimizer`
                                * is one rank's shard (lean: the factored v stays whole on each) */
    /* memory_mode "lean" (train/kd_lean.h); zero values are lean's defaults */
    int lean;                  /* plan lean mode instead of FP32 + AdamW */
    int lean_weights_fp32;     /* lean_weights "fp32" (default BF16) */
    int lean_m_fp32;           /* lean_m "fp32" (default BF16) */
    int lean_v_full;           /* lean_v "full" (default factored) */
    int lean_clip_exact;       /* lean_clip "exact" (default previous) */
} kd_plan_opts;

typedef struct kd_plan {
    int64_t n_params;
    /* training, bytes. FP32 mode: FP32 weights, gradients, AdamW m + v, every layer's
     * activations and their gradients, LM head + loss scratch.
     * Lean mode, at its peak (the loss phase): weights in storage, m + v (factored),
     * `working` = FP32 copies (one layer's weights + the LM head), `grads` = FP32
     * gradients alive (one layer's + the dense LM-head gradient), `activations` =
     * saved layer inputs + one layer's recomputed tape, `loss` = the chunk scratch. */
    int64_t weights, grads, optimizer, activations, loss, batch, baseline, train_peak;
    int64_t working;
    /* inference (F32 weights, KV cache for `seq` positions, one sequence), bytes */
    int64_t kv_cache, infer_peak;
} kd_plan;

/* Process baseline measured here (libc, HDF5, MPI and OpenMP runtimes, kd's
 * code and its small buffers: `kd plan` alone peaks at 13 MiB), plus the part of OpenBLAS's per-thread GEMM buffer that
 * wide products touch: about 1792 bytes per output column of the LM head,
 * up to 8192 columns (fitted to `kd plan --measure` on this machine). */
#define KD_PLAN_BASELINE_BYTES ((int64_t)12 << 20)
#define KD_PLAN_BLAS_BYTES_PER_COL ((int64_t)1792)
#define KD_PLAN_BLAS_MAX_COLS ((int64_t)8192)

void kd_plan_compute(const kd_config *c, const kd_plan_opts *o, kd_plan *p);

#endif
