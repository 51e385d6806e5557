/*
 * kd_dist.c — MPI wrapper for data-parallel training (see kd_dist.h).
 */
#include "train/kd_dist.h"

#include <limits.h>
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

int kd_dist_all_ok(const kd_dist *d, int ok) {
    if (!d->active || d->world == 1) return ok;
    int in = ok ? 1 : 0, out = 0;
    if (MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS) return 0;
    return out;
}

void kd_dist_shard_rows(int64_t rows, int rank, int world, int64_t *r0, int64_t *r1) {
    if (world < 1) world = 1;
    *r0 = rows * rank / world;
    *r1 = rows * (rank + 1) / world;
}

/* Counts are in rows of a contiguous row type, so a tensor of any size fits MPI's int counts. */
int kd_dist_allgather_rows(const kd_dist *d, void *buf, int64_t rows, int64_t row_bytes, kd_err *err) {
    if (!d->active || d->world == 1 || rows == 0) return 0;
    if (rows > INT_MAX || row_bytes > INT_MAX)
        return kd_errf(err, "all-gather of %lld rows of %lld bytes: too large for MPI counts", (long long)rows,
                       (long long)row_bytes);
    int *counts = malloc((size_t)d->world * 2 * sizeof *counts);
    if (!counts) return kd_errf(err, "out of memory");
    int *displs = counts + d->world;
    for (int k = 0; k < d->world; k++) {
        int64_t r0, r1;
        kd_dist_shard_rows(rows, k, d->world, &r0, &r1);
        counts[k] = (int)(r1 - r0);
        displs[k] = (int)r0;
    }
    MPI_Datatype row;
    int rc = MPI_Type_contiguous((int)row_bytes, MPI_BYTE, &row) == MPI_SUCCESS && MPI_Type_commit(&row) == MPI_SUCCESS
                 ? 0
                 : -1;
    if (!rc) {
        rc = MPI_Allgatherv(MPI_IN_PLACE, 0, row, buf, counts, displs, row, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : -1;
        MPI_Type_free(&row);
    }
    free(counts);
    if (rc)
        return kd_errf(err, "MPI_Allgatherv of %lld rows of %lld bytes failed", (long long)rows, (long long)row_bytes);
    return 0;
}

_Noreturn void kd_dist_abort(const kd_dist *d, int code) {
    if (d->active) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}
