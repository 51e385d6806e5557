/*
 * bench_loader.c — read throughput of the batch loader (data/kd_loader.h) on a
 * top-k teacher dump, in both layouts side by side: plain (uint16 ids, float16
 * log-probs) and the compressed "topk-packed-v1" (docs/dump-format.md), whose
 * sequences the loader decodes as it reads them. The target is ≥ 2M tokens/s
 * decoded (issue #15).
 *
 * By default it writes a synthetic dump of ≥ 1M tokens (1024 × 1024, k = 64,
 * V = 32000, ids spread uniformly: the worst case for the id code) to /tmp in
 * both layouts. --dump PATH measures an existing dump (e.g. a real teacher's)
 * and a copy of it in the other layout (packed with kd_dump_repack, or decoded
 * into a plain float16 dump, its mass scaled to ≤ 0.999 where the decoding error
 * pushed it past 1); PATH is not deleted. Each layout: a sequential
 * kd_dump_read of the whole file, then shuffled epochs through the loader
 * without and with the prefetch thread; the prefetch run (B = 8, prefetch 4) is
 * repeated --runs times (default 5) and its median reported, as tokens per
 * second of wall time and per second of process CPU time (the machine is
 * shared: CPU time is the steadier figure). The files are served from the page
 * cache after being written, so this measures kd's and HDF5's overhead, not
 * the disk.
 *
 * usage: bench_loader [--seqs N] [--seq-len T] [--runs R] [--keep PATH] [--dump PATH]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/kd_rng.h"
#include "core/kd_time.h"
#include "data/kd_dump_codec.h"
#include "data/kd_loader.h"

static void die(const char *what, const kd_err *err) {
    fprintf(stderr, "bench_loader: %s: %s\n", what, err->msg);
    exit(1);
}

static void write_dump(const char *path, int N, int T, int K, int V, int packed) {
    kd_err err;
    kd_dump_meta m = {.vocab_size = V, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F16,
                      .has_loss_mask = 1, .packed = packed};
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

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Epochs of the loader; returns tokens/s of wall time and sets *cpu_tps (tokens per CPU second). */
static double run_loader(const char *path, int B, int prefetch, int epochs, int quiet, double *cpu_tps) {
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
    double sum = 0, t0 = kd_now_s(), c0 = cpu_now();
    for (int64_t i = 0; i < nb; i++) {
        const kd_batch *b = kd_loader_next(L, &err);
        if (!b) die("next", &err);
        sum += b->topk_logprobs[(size_t)i % ((size_t)b->B * (size_t)b->T * (size_t)b->k)] + b->labels[0];
        tokens += (int64_t)b->n_rows * b->T;
    }
    double dt = kd_now_s() - t0, dc = cpu_now() - c0;
    kd_loader_stats st;
    kd_loader_get_stats(L, &st);
    if (!quiet)
        printf("  loader B=%d prefetch=%d: %lld batches in %.3f s: %8.1f batches/s %6.2f M tokens/s, %6.2f M tokens/CPU-s "
               "(waited %.3f s%s)\n", B, prefetch, (long long)nb, dt, (double)nb / dt, (double)tokens / dt * 1e-6,
               (double)tokens / dc * 1e-6, st.wait_seconds, sum == 1234.5 ? "!" : "");
    kd_loader_free(L);
    *cpu_tps = (double)tokens / dc;
    return (double)tokens / dt;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One layout: sequential read, loader without prefetch, then `runs` prefetch runs (median into *tps, *cpu). */
static void measure(const char *path, int runs, double *tps, double *cpu) {
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) die("open", &err);
    const kd_dump_meta *dm = kd_dump_get_meta(d);
    int N = (int)dm->n_seq, T = dm->seq_len, K = dm->k;
    struct stat st;
    stat(path, &st);
    printf("%s: %s, %.1f MB (%.1f B/token)\n", dm->packed ? "packed" : "plain ", path, (double)st.st_size / 1e6,
           (double)st.st_size / ((double)N * T));
    /* reference: the whole file sequentially, 64 sequences per read, into float32 */
    size_t per = (size_t)64 * (size_t)T * (size_t)K;
    int32_t *ids = malloc(per * 4), *tok = malloc((size_t)64 * (size_t)(T + 1) * 4);
    float *lp = malloc(per * 4);
    uint8_t *mask = malloc((size_t)64 * (size_t)T);
    double t0 = kd_now_s();
    for (int s = 0; s < N; s += 64) {
        kd_dump_rows rows = {.tokens = tok, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
        if (kd_dump_read(d, s, N - s < 64 ? N - s : 64, &rows, &err)) die("read", &err);
    }
    double tr = kd_now_s() - t0;
    printf("  sequential kd_dump_read (64 seqs/read): %6.2f M tokens/s\n", (double)N * T / tr * 1e-6);
    kd_dump_close(d);
    free(ids);
    free(tok);
    free(lp);
    free(mask);
    double c, w[64], cs[64];
    run_loader(path, 8, 0, 1, 0, &c);
    run_loader(path, 32, 4, 2, 0, &c);
    if (runs > 64) runs = 64;
    for (int r = 0; r < runs; r++) w[r] = run_loader(path, 8, 4, 2, r > 0, &cs[r]);
    qsort(w, (size_t)runs, sizeof *w, cmp_double);
    qsort(cs, (size_t)runs, sizeof *cs, cmp_double);
    *tps = w[runs / 2];
    *cpu = cs[runs / 2];
    printf("  loader B=8 prefetch=4, median of %d runs: %.2f M tokens/s (range %.2f-%.2f), %.2f M tokens/CPU-s\n", runs,
           *tps * 1e-6, w[0] * 1e-6, w[runs - 1] * 1e-6, *cpu * 1e-6);
}

/* A plain float16 copy of the packed dump `in` (its decoded values). */
static void unpack(const char *in, const char *out) {
    kd_err err;
    kd_dump *d = kd_dump_open(in, &err);
    if (!d) die("open", &err);
    kd_dump_meta m = *kd_dump_get_meta(d);
    int64_t N = m.n_seq, T = m.seq_len, K = m.k;
    m.packed = 0;
    m.value_dtype = KD_DUMP_F16;
    kd_dump_tokenizer tk, *tkp = NULL;
    if (m.has_tokenizer) {
        if (kd_dump_read_tokenizer(d, &tk, &err)) die("tokenizer", &err);
        tkp = &tk;
    }
    kd_dump_writer *w = kd_dump_writer_create(out, &m, tkp, &err);
    if (!w) die("create", &err);
    int64_t per = 64 * T * K;
    int32_t *ids = malloc((size_t)per * 4), *tok = malloc((size_t)(64 * (T + 1)) * 4);
    float *lp = malloc((size_t)per * 4);
    uint8_t *mask = malloc((size_t)(64 * T));
    for (int64_t s = 0; s < N; s += 64) {
        int64_t n = N - s < 64 ? N - s : 64;
        kd_dump_rows rows = {.tokens = tok, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
        if (kd_dump_read(d, s, n, &rows, &err)) die("read", &err);
        for (int64_t p = 0; p < n * T; p++) {   /* decoded mass may exceed 1 by the layout's error: scale it down */
            double mass = 0;
            for (int64_t j = 0; j < K; j++) mass += exp((double)lp[p * K + j]);
            for (int64_t j = 0; mass > 0.999 && j < K; j++) lp[p * K + j] -= (float)log(mass / 0.999);
        }
        if (kd_dump_writer_append(w, n, tok, m.has_loss_mask ? mask : NULL, ids, lp, &err)) die("copy", &err);
    }
    if (kd_dump_writer_close(w, &err)) die("close", &err);
    if (tkp) kd_dump_tokenizer_free(tkp);
    kd_dump_close(d);
    free(ids);
    free(tok);
    free(lp);
    free(mask);
}

int main(int argc, char **argv) {
    int N = 1024, T = 1024, K = 64, V = 32000, runs = 5;
    const char *keep = NULL, *given = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seqs") && i + 1 < argc) N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq-len") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) given = argv[++i];
        else if (!strcmp(argv[i], "--packed")) { /* both layouts are always measured */ }
        else N = 0;
    }
    if (N < 1 || T < 1 || runs < 1) {
        fprintf(stderr, "usage: bench_loader [--seqs N] [--seq-len T] [--runs R] [--keep PATH] [--dump PATH]\n");
        return 2;
    }
    char plain[600], packed[600], base[512];
    if (keep) snprintf(base, sizeof base, "%s", keep);
    else snprintf(base, sizeof base, "/tmp/kd_bench_loader.%d", (int)getpid());
    snprintf(plain, sizeof plain, "%s.plain.h5", base);
    snprintf(packed, sizeof packed, "%s.packed.h5", base);
    kd_err err;
    double t0 = kd_now_s();
    if (given) {
        kd_dump *d = kd_dump_open(given, &err);
        if (!d) die("open", &err);
        const kd_dump_meta *dm = kd_dump_get_meta(d);
        int was_packed = dm->packed;
        N = (int)dm->n_seq, T = dm->seq_len, K = dm->k, V = (int)dm->vocab_size;
        kd_dump_close(d);
        snprintf(was_packed ? packed : plain, 600, "%s", given);
        if (was_packed) unpack(given, plain);
        else if (kd_dump_repack(given, packed, 0, 0, &err)) die("repack", &err);
        printf("# dump (given, %s): %d sequences x %d tokens = %.2f M tokens, k=%d, V=%d; the %s copy made in %.2f s\n",
               was_packed ? "packed" : "plain", N, T, (double)N * T * 1e-6, K, V, was_packed ? "plain" : "packed",
               kd_now_s() - t0);
    } else {
        write_dump(plain, N, T, K, V, 0);
        write_dump(packed, N, T, K, V, 1);
        printf("# dump (synthetic): %d sequences x %d tokens = %.2f M tokens, k=%d, V=%d; both layouts written in %.2f s\n",
               N, T, (double)N * T * 1e-6, K, V, kd_now_s() - t0);
    }
    double tp, cp, tk, ck;
    measure(plain, runs, &tp, &cp);
    measure(packed, runs, &tk, &ck);
    printf("loader tokens/s (B=8, prefetch 4, shuffled, median): plain %.2f M, packed %.2f M = %.2fx the 2M target, "
           "%.2fx plain; per CPU-s: plain %.2f M, packed %.2f M = %.2fx the target, %.2fx plain\n", tp * 1e-6, tk * 1e-6,
           tk / 2e6, tk / tp, cp * 1e-6, ck * 1e-6, ck / 2e6, ck / cp);
    printf("packed: %s the 2M tokens/s target\n", tk >= 2e6 ? "meets" : "MISSES");
    if (!keep) {
        if (!given || strcmp(given, plain)) unlink(plain);
        if (!given || strcmp(given, packed)) unlink(packed);
    }
    return 0;
}
