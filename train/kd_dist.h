/*
 * kd_dist.h — data parallelism over MPI (OpenMPI).
 *
 * A process started by `mpirun` (OMPI_COMM_WORLD_SIZE or PMI_SIZE in its
 * environment) joins MPI_COMM_WORLD; any other process runs as rank 0 of 1
 * without initialising MPI at all, so a plain `kd train` never pays for it.
 *
 * Optimizer sharding (ZeRO-1, run-config key shard_optimizer): every tensor's
 * rows are split into world contiguous, balanced ranges; rank k stores the
 * optimizer state of its range and updates only those weights, then
 * kd_dist_allgather_rows gives every rank the whole updated tensor. A kd_dist
 * with world 1 (or not active) is "no sharding": one range holding every row.
 */
#ifndef KD_DIST_H
#define KD_DIST_H

#include <stdint.h>

#include "core/kd_err.h"

typedef struct kd_dist {
    int rank, world;
    int active;      /* MPI was initialised by kd_dist_init */
} kd_dist;

int kd_dist_init(kd_dist *d, int *argc, char ***argv, kd_err *err);
void kd_dist_finalize(kd_dist *d);
/* In-place sum over ranks (no-op for world 1). */
int kd_dist_allreduce_sum_f32(const kd_dist *d, float *x, int64_t n, kd_err *err);
int kd_dist_allreduce_sum_f64(const kd_dist *d, double *x, int64_t n, kd_err *err);
int kd_dist_allreduce_sum_i64(const kd_dist *d, int64_t *x, int64_t n, kd_err *err);
/* Min over ranks of ok (1 / 0): whether every rank succeeded (ok itself for world 1). */
int kd_dist_all_ok(const kd_dist *d, int ok);

/* Rows [*r0, *r1) of a tensor of `rows` rows that `rank` of `world` owns:
 * r0 = rows·rank/world, sizes differ by at most one row (a range may be empty
 * when rows < world). */
void kd_dist_shard_rows(int64_t rows, int rank, int world, int64_t *r0, int64_t *r1);
/* In place: buf is [rows, row_bytes]; afterwards every rank holds every rank's
 * range (kd_dist_shard_rows) as that rank left it. No-op for world 1. */
int kd_dist_allgather_rows(const kd_dist *d, void *buf, int64_t rows, int64_t row_bytes, kd_err *err);

/* Abort every rank (after an error on one). */
_Noreturn void kd_dist_abort(const kd_dist *d, int code);

#endif
