/*
 * kd_dist.c — MPI wrapper for data-parallel training (see kd_dist.h).
 */
#include "train/kd_dist.h"

#include <mpi.h>
#include <stdlib.h>

int kd_dist_init(kd_dist *d, int *argc, char ***argv, kd_err *err) {
    d->rank = 0;
    d->world = 1;
    d->active = 0;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) return 0;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return kd_errf(err, "MPI_Init failed");
    d->active = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    return 0;
}

void kd_dist_finalize(kd_dist *d) {
    if (d->active) MPI_Finalize();
    d->active = 0;
}

static int allreduce(const kd_dist *d, void *x, int64_t n, MPI_Datatype t, size_t elem, kd_err *err) {
    if (!d->active || d->world == 1) return 0;
    const int64_t max_chunk = (int64_t)1 << 28;   /* MPI counts are int */
    for (int64_t off = 0; off < n; off += max_chunk) {
        int64_t c = n - off < max_chunk ? n - off : max_chunk;
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)x + (size_t)off * elem, (int)c, t, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            return kd_errf(err, "MPI_Allreduce of %lld values failed", (long long)n);
    }
    return 0;
}

int kd_dist_allreduce_sum_f32(const kd_dist *d, float *x, int64_t n, kd_err *err) {
    return allreduce(d, x, n, MPI_FLOAT, sizeof(float), err);
}
int kd_dist_allreduce_sum_f64(const kd_dist *d, double *x, int64_t n, kd_err *err) {
    return allreduce(d, x, n, MPI_DOUBLE, sizeof(double), err);
}
int kd_dist_allreduce_sum_i64(const kd_dist *d, int64_t *x, int64_t n, kd_err *err) {
    return allreduce(d, x, n, MPI_INT64_T, sizeof(int64_t), err);
}

_Noreturn void kd_dist_abort(const kd_dist *d, int code) {
    if (d->active) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}
