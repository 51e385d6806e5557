/*
 * bench_train.c — training throughput of kd: a few KD steps (forward, chunked
 * KD loss against top-k teacher data, backward, AdamW) on synthetic batches
 * for a config, printing tokens/s, achieved GFLOP/s and its ratio to the
 * sgemm peak measured in the same process. bench/run_all.sh runs PyTorch on
 * the same architecture, loss, batch and threads next to it
 * (bench/torch_train.py).
 *
 * usage: bench_train CONFIG.json BATCH SEQ [STEPS]
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/kd_cpu.h"
#include "core/kd_rng.h"
#include "core/kd_time.h"
#include "student/kd_model.h"
#include "train/kd_loss.h"
#include "train/kd_optim.h"
#include "train/kd_step.h"

static double sgemm_peak(void) {
    int n = 1024;
    float *a = malloc((size_t)n * n * 4), *b = malloc((size_t)n * n * 4), *c = malloc((size_t)n * n * 4);
    for (int i = 0; i < n * n; i++) a[i] = b[i] = 0.001f * (float)(i % 97);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = kd_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t = kd_now_s() - t0;
        best = t < best ? t : best;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * n / best * 1e-9;
}

static int next_same(void *ctx, kd_step_batch *out, kd_err *err) {
    (void)err;
    *out = *(const kd_step_batch *)ctx;
    return 0;
}

int main(int argc, char **argv) {
    kd_blas_select(argc, argv);
    if (argc < 4) {
        fprintf(stderr, "usage: bench_train CONFIG.json BATCH SEQ [STEPS]\n");
        return 2;
    }
    int B = atoi(argv[2]), T = atoi(argv[3]), steps = argc > 4 ? atoi(argv[4]) : 3, K = 64;
    kd_err err;
    kd_config c;
    kd_model m;
    if (kd_config_load(&c, argv[1], &err) || kd_model_new(&m, &c, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    kd_model_init(&m, 1);
    kd_adamw opt;
    kd_adamw_init(&opt, m.params, m.n_params, 0, &err);
    kd_adamw_opts ao = kd_adamw_defaults();
    int64_t N = (int64_t)B * T, V = c.vocab_size;
    int32_t *tok = malloc((size_t)N * 4), *lab = malloc((size_t)N * 4), *ids = malloc((size_t)(N * K) * 4);
    float *lp = malloc((size_t)(N * K) * 4);
    kd_rng r;
    kd_rng_seed(&r, 3);
    for (int64_t i = 0; i < N; i++) {
        tok[i] = (int32_t)kd_rng_below(&r, (uint64_t)V);
        lab[i] = (int32_t)kd_rng_below(&r, (uint64_t)V);
        float z = 0;
        for (int j = 0; j < K; j++) {   /* distinct ids, descending log-probs summing below 1 */
            ids[i * K + j] = (int32_t)((lab[i] + j * 7919) % V);
            lp[i * K + j] = -1.0f - 0.1f * (float)j;
            z += expf(lp[i * K + j]);
        }
        (void)z;
    }
    kd_loss_opts lo = kd_loss_opts_default();
    lo.alpha = 0.5f;
    lo.temperature = 2.0f;
    lo.mode = KD_TEACHER_TOPK_TAIL;
    lo.grad_into_params = 0;   /* as kd train */
    kd_loss_batch lb = {lab, NULL, ids, lp, K, 0};
    kd_step_batch sb = {tok, B, T, lb};
    kd_stepper st = kd_stepper_fp32(&m, &opt, &ao, NULL);
    kd_graph g;
    kd_graph_init(&g, 0, &err);
    double peak = sgemm_peak(), best = 1e30;
    for (int s = 0; s < steps + 1; s++) {   /* the first step warms the arena up */
        double t0 = kd_now_s();
        kd_step_result res;   /* the step kd train runs */
        if (kd_step_run(&st, &g, 1, next_same, &sb, &lo, 1e-4f, 1.0, NULL, &res, &err)) {
            fprintf(stderr, "bench_train: %s\n", err.msg);
            return 1;
        }
        double t = kd_now_s() - t0;
        if (s > 0 && t < best) best = t;
    }
    /* FLOPs: 6 per parameter-token for the matmuls (embedding lookups excluded, LM head included),
     * plus attention: 2·2·T²/2·D·H per sequence per layer forward (QKᵀ and PV, causal half), ×3 with backward */
    double P_mm = (double)kd_config_n_params(&c) - (double)V * c.hidden_size * (c.tie_word_embeddings ? 0 : 1) +
                  (c.tie_word_embeddings ? 0 : 0);
    double flops = 6.0 * P_mm * (double)N +
                   3.0 * 2.0 * (double)B * c.num_hidden_layers * c.num_attention_heads * (double)T * T * c.head_dim;
    double tps = (double)N / best, gf = flops / best * 1e-9;
    printf("kd    %-28s B=%d T=%d threads=%d: %8.0f tokens/s  %6.1f GFLOP/s  (%.0f%% of sgemm peak %.0f)  %.3f s/step\n",
           argv[1], B, T, omp_get_max_threads(), tps, gf, 100 * gf / peak, peak, best);
    kd_graph_free(&g);
    kd_adamw_free(&opt);
    kd_model_free(&m);
    free(tok); free(lab); free(ids); free(lp);
    return 0;
}
