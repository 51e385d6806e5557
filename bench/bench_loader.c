/*
 * bench_loader.c — read throughput of the batch loader (data/kd_loader.h) on a
 * top-k teacher dump: writes a dump of ≥ 1M tokens with k = 64 (uint16 ids,
 * float16 log-probs) to /tmp, then reads shuffled epochs through the loader with
 * and without the prefetch thread, next to a sequential kd_dump_read of the
 * whole file in the same run as the reference. Prints batches/s and tokens/s;
 * the target is ≥ 2M tokens/s. The file is served from the page cache after
 * being written, so this measures kd's and HDF5's overhead, not the disk.
 *
 * usage: bench_loader [--seqs N] [--seq-len T] [--keep PATH]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kd_rng.h"
#include "core/kd_time.h"
#include "data/kd_loader.h"

static void die(const char *what, const kd_err *err) {
    fprintf(stderr, "bench_loader: %s: %s\n", what, err->msg);
    exit(1);
}

static void write_dump(const char *path, int N, int T, int K, int V) {
    kd_err err;
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F16,
                      .has_loss_mask = 1};
    snprintf(m.teacher, sizeof m.teacher, "bench-synthetic");
    enum { TEMPLATES = 16, CHUNK = 16 };
    float tmpl[TEMPLATES][64];
    kd_rng r;
    kd_rng_seed(&r, 1);
    for (int i = 0; i < TEMPLATES; i++) {   /* descending log-probs with mass < 1 */
        double w[64], s = 0;
        for (int j = 0; j < K; j++) s += w[j] = exp(-0.15 * j * (1 + i % 4)) * (1 + 0.01 * kd_rng_uniform(&r));
        for (int j = 0; j < K; j++) tmpl[i][j] = (float)log(w[j] / s * (0.80 + 0.01 * i));
        for (int j = 1; j < K; j++) tmpl[i][j] = fminf(tmpl[i][j], tmpl[i][j - 1]);
    }
    int32_t *tok = malloc((size_t)CHUNK * (size_t)(T + 1) * 4), *ids = malloc((size_t)CHUNK * (size_t)T * (size_t)K * 4);
    uint8_t *mask = malloc((size_t)CHUNK * (size_t)T);
    float *lp = malloc((size_t)CHUNK * (size_t)T * (size_t)K * 4);
    for (size_t i = 0; i < (size_t)CHUNK * (size_t)T; i++) mask[i] = 1;
    kd_dump_writer *w = kd_dump_writer_create(path, &m, NULL, &err);
    if (!w) die("create", &err);
    for (int s0 = 0; s0 < N; s0 += CHUNK) {
        size_t n = (size_t)(N - s0 < CHUNK ? N - s0 : CHUNK);
        for (size_t i = 0; i < n * (size_t)(T + 1); i++) tok[i] = (int32_t)kd_rng_below(&r, (uint64_t)V);
        for (size_t p = 0; p < n * (size_t)T; p++) {
            int32_t base = (int32_t)kd_rng_below(&r, (uint64_t)V);
            for (int j = 0; j < K; j++) ids[p * (size_t)K + (size_t)j] = (base + 37 * j) % V;
            memcpy(lp + p * (size_t)K, tmpl[kd_rng_below(&r, TEMPLATES)], (size_t)K * 4);
        }
        if (kd_dump_writer_append(w, (int64_t)n, tok, mask, ids, lp, &err)) die("append", &err);
    }
    if (kd_dump_writer_close(w, &err)) die("close", &err);
    free(tok);
    free(ids);
    free(mask);
    free(lp);
}

/* Epochs of the loader; returns tokens/s and sets *bps. */
static double run_loader(const char *path, int B, int prefetch, int epochs, double *bps) {
    kd_err err;
    const char *paths[1] = {path};
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.paths = paths;
    o.n_paths = 1;
    o.batch_size = B;
    o.seed = 7;
    o.prefetch = prefetch;
    kd_loader *L = kd_loader_new(&o, &err);
    if (!L) die("loader", &err);
    int64_t nb = kd_loader_batches_per_epoch(L) * epochs, tokens = 0;
    double sum = 0, t0 = kd_now_s();
    for (int64_t i = 0; i < nb; i++) {
        const kd_batch *b = kd_loader_next(L, &err);
        if (!b) die("next", &err);
        sum += b->topk_logprobs[(size_t)i % ((size_t)b->B * (size_t)b->T * (size_t)b->k)] + b->labels[0];
        tokens += (int64_t)b->n_rows * b->T;
    }
    double dt = kd_now_s() - t0;
    kd_loader_stats st;
    kd_loader_get_stats(L, &st);
    printf("loader B=%d prefetch=%d: %lld batches in %.3f s: %8.1f batches/s %7.2f M tokens/s (waited %.3f s%s)\n", B,
           prefetch, (long long)nb, dt, (double)nb / dt, (double)tokens / dt * 1e-6, st.wait_seconds,
           sum == 1234.5 ? "!" : "");
    kd_loader_free(L);
    *bps = (double)nb / dt;
    return (double)tokens / dt;
}

int main(int argc, char **argv) {
    int N = 1024, T = 1024, K = 64, V = 32000;
    const char *keep = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seqs") && i + 1 < argc) N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq-len") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
        else N = 0;
    }
    if (N < 1 || T < 1) {
        fprintf(stderr, "usage: bench_loader [--seqs N] [--seq-len T] [--keep PATH]\n");
        return 2;
    }
    char path[512];
    if (keep) snprintf(path, sizeof path, "%s", keep);
    else snprintf(path, sizeof path, "/tmp/kd_bench_loader.%d.h5", (int)getpid());
    double t0 = kd_now_s();
    write_dump(path, N, T, K, V);
    double tw = kd_now_s() - t0;
    struct stat st;
    stat(path, &st);
    printf("# dump: %d sequences x %d tokens = %.2f M tokens, k=%d, V=%d: %.1f MB (%.1f B/token), written in %.2f s\n",
           N, T, (double)N * T * 1e-6, K, V, (double)st.st_size / 1e6, (double)st.st_size / ((double)N * T), tw);

    /* reference: the whole file sequentially, 64 sequences per read, into float32 */
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) die("open", &err);
    size_t per = (size_t)64 * (size_t)T * (size_t)K;
    int32_t *ids = malloc(per * 4), *tok = malloc((size_t)64 * (size_t)(T + 1) * 4);
    float *lp = malloc(per * 4);
    uint8_t *mask = malloc((size_t)64 * (size_t)T);
    t0 = kd_now_s();
    for (int s = 0; s < N; s += 64) {
        kd_dump_rows rows = {.tokens = tok, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
        if (kd_dump_read(d, s, N - s < 64 ? N - s : 64, &rows, &err)) die("read", &err);
    }
    double tr = kd_now_s() - t0;
    printf("sequential kd_dump_read (64 seqs/read): %7.2f M tokens/s\n", (double)N * T / tr * 1e-6);
    kd_dump_close(d);
    free(ids);
    free(tok);
    free(lp);
    free(mask);

    double bps, bps_sync;
    run_loader(path, 8, 0, 1, &bps_sync);
    double tps = run_loader(path, 8, 4, 2, &bps);
    run_loader(path, 32, 4, 2, &bps);
    printf("loader tokens/s: %.2f M (B=8, prefetch 4, shuffled): %s the 2M tokens/s target\n", tps * 1e-6,
           tps >= 2e6 ? "meets" : "MISSES");
    if (!keep) unlink(path);
    return 0;
}
