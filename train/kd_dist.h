/*
 * kd_dist.h — data parallelism over MPI (OpenMPI).
 *
 * A process started by `mpirun` (OMPI_COMM_WORLD_SIZE or PMI_SIZE in its
 * environment) joins MPI_COMM_WORLD; any other process runs as rank 0 of 1
 * without initialising MPI at all, so a plain `kd train` never pays for it.
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
/* Abort every rank (after an error on one). */
_Noreturn void kd_dist_abort(const kd_dist *d, int code);

#endif
