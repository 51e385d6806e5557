/*
 * bench_gemm.c — sgemm GFLOP/s for the shapes kd's training uses, with the
 * OpenBLAS kernels this process runs. bench/run_all.sh runs it twice — with
 * OpenBLAS's own choice forced to generic kernels and with kd's selection —
 * so the ratio shows what kernel selection is worth on this machine.
 */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/kd_cpu.h"
#include "core/kd_rng.h"
#include "core/kd_time.h"

int main(int argc, char **argv) {
    kd_blas_select(argc, argv);
    struct { const char *what; int M, N, K, ta, tb; } shapes[] = {
        {"15M qkv fwd   (B*T=2048, C=384)", 2048, 1152, 384, 0, 1},
        {"15M mlp fwd   (C=384 -> F=1024)", 2048, 1024, 384, 0, 1},
        {"15M mlp dW    (dYT*X)", 1024, 384, 2048, 1, 0},
        {"15M lm-head   (V chunk 8192)", 2048, 8192, 384, 0, 1},
        {"125M mlp fwd  (C=768 -> F=2048)", 2048, 2048, 768, 0, 1},
        {"125M dX       (dY*W)", 2048, 768, 2048, 0, 0},
        {"square 1024", 1024, 1024, 1024, 0, 0},
    };
    char blas[256];
    kd_blas_describe(blas, sizeof blas);
    printf("# %s, %d threads\n", blas, omp_get_max_threads());
    printf("%-36s %8s\n", "shape", "GFLOP/s");
    kd_rng r;
    kd_rng_seed(&r, 1);
    double total_flops = 0, total_time = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int M = shapes[s].M, N = shapes[s].N, K = shapes[s].K, ta = shapes[s].ta, tb = shapes[s].tb;
        float *A = malloc((size_t)M * K * 4), *B = malloc((size_t)K * N * 4), *C = malloc((size_t)M * N * 4);
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = kd_rng_uniform(&r) - 0.5f;
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = kd_rng_uniform(&r) - 0.5f;
        double flops = 2.0 * M * N * K, best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = kd_now_s();
            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                        A, ta ? M : K, B, tb ? K : N, 0.0f, C, N);
            double t = kd_now_s() - t0;
            if (t < best) best = t;
        }
        printf("%-36s %8.1f\n", shapes[s].what, flops / best * 1e-9);
        total_flops += flops;
        total_time += best;
        free(A); free(B); free(C);
    }
    printf("%-36s %8.1f\n", "overall", total_flops / total_time * 1e-9);
    return 0;
}
