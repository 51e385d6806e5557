/*
 * bench_infer.c — prompt and decode speed of kd's inference engine against
 * llama.cpp (node-llama-cpp's prebuilt CPU build, tests/node/bench_llama.mjs) on
 * the same GGUF files with the same thread count, measured in the same run, plus
 * decode's fraction of the memory-bandwidth limit.
 *
 * Models: configs/student-15m.json and student-125m.json, freshly initialised
 * (`kd init`) and exported (`kd export`) as F32, Q8_0, Q4_0 and Q4_K_M. The
 * tokenizer is aidreams260K's tok512.bin: the export pads it to the configs'
 * 32000-token vocabulary with unused "[PADn]" pieces, so the models keep their
 * real sizes (the LM head is 32000 × C) and llama.cpp loads them unchanged.
 *
 * Prompt: P tokens evaluated in one batch from an empty cache. Decode: N tokens
 * after the prompt, each the argmax of the previous step's logits, timed from
 * the first generated token to the last (llama.cpp: through node's evaluate()
 * loop, so its figure includes node-llama-cpp's per-token overhead). Best of R
 * repetitions each, in `rounds` alternating kd / llama.cpp rounds (best of all):
 * the machine is shared and its load changes by the second, compare ratios.
 *
 * kd runs twice: exact (activations in F32, the default) and "fast" (kd run --fast:
 * activations rounded like llama.cpp's and integer kernels for quantized weights,
 * the same arithmetic as llama.cpp's). The ratios are kd / llama.cpp.
 *
 * Bandwidth: a streaming read of a 1 GiB buffer with the same threads (best of
 * 5); "BW%" = bytes of weights read per decoded token × tokens/s / that rate
 * (above 100% when the weights fit in the caches).
 *
 * usage: bench_infer [--src DIR] [--kd PATH] [--threads T] [--sizes 15m,125m]
 *                    [--types f32,q8_0,q4_0,q4_k_m] [--prompt P] [--gen N] [--reps R] [--rounds K]
 *   --src: the repository (configs/, tests/node/; default $KD_SOURCE_DIR or .)
 *   --kd:  the kd program (default: next to this benchmark)
 *   --threads: a comma-separated list (default 2): each file is measured with each
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_mem.h"
#include "core/kd_time.h"
#include "infer/kd_infer.h"

static void die(const char *what, const char *msg) {
    fprintf(stderr, "bench_infer: %s: %s\n", what, msg);
    exit(1);
}

/* ---- memory bandwidth ----------------------------------------------------------------- */

__attribute__((target("avx2"))) static uint64_t sum_avx2(const uint64_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    return out[0] + out[1] + out[2] + out[3];
}

static uint64_t sum_scalar(const uint64_t *p, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
}

/* GB/s of a streaming read of `bytes` with the current OpenMP threads (best of 5). */
static double bandwidth(size_t bytes) {
    kd_err err;
    uint64_t *buf = kd_alloc(bytes, &err);
    if (!buf) die("bandwidth buffer", err.msg);
    const size_t n = bytes / 8;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i;   /* first touch by the reading thread */
    const int avx2 = kd_isa_best() >= KD_ISA_AVX2;
    double best = 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = kd_now_s();
        uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
        {
            const int nt = omp_get_num_threads(), t = omp_get_thread_num();
            const size_t a = n * (size_t)t / (size_t)nt / 16 * 16, b = n * (size_t)(t + 1) / (size_t)nt / 16 * 16;
            total += avx2 ? sum_avx2(buf + a, b - a) : sum_scalar(buf + a, b - a);
        }
        sink += total;
        const double gbs = (double)bytes / (kd_now_s() - t0) * 1e-9;
        best = gbs > best ? gbs : best;
    }
    (void)sink;
    kd_free(buf);
    return best;
}

/* ---- kd's engine ----------------------------------------------------------------------- */

typedef struct speed {
    double prompt_tps, decode_tps, mb_per_token;
    char types[64];
} speed;

static void prompt_ids(int32_t *t, int64_t n, int32_t bos) {
    t[0] = bos >= 0 ? bos : 1;
    for (int64_t i = 1; i < n; i++) t[i] = (int32_t)(3 + (i * 37) % 509);   /* as bench_llama.mjs */
}

static speed bench_kd(const char *path, int64_t P, int64_t N, int reps, int fast) {
    kd_err err;
    kd_infer_opts o;
    kd_infer_opts_init(&o);
    o.ggml_rounding = fast;
    o.n_ctx = P + N + 8;
    o.n_batch = P;
    kd_infer *e = kd_infer_open(path, &o, &err);
    if (!e) die(path, err.msg);
    speed s = {0};
    s.mb_per_token = (double)kd_infer_weight_bytes(e) * 1e-6;
    kd_infer_describe_types(e, s.types, sizeof s.types);
    int32_t *t = malloc((size_t)P * sizeof *t);
    float *logits = malloc((size_t)e->V * sizeof *logits);
    prompt_ids(t, P, e->bos);
    double best_p = INFINITY, best_d = INFINITY;
    for (int r = 0; r < reps + 1; r++) {   /* the first repetition warms up */
        kd_infer_reset(e);
        double t0 = kd_now_s();
        if (kd_infer_eval(e, t, P, logits, 0, NULL, &err)) die(path, err.msg);
        double dt = kd_now_s() - t0;
        if (r) best_p = dt < best_p ? dt : best_p;
        kd_infer_reset(e);
        if (kd_infer_eval(e, t, P - 1, NULL, 0, NULL, &err)) die(path, err.msg);
        int32_t next = t[P - 1];
        double first = 0;
        for (int64_t i = 0; i <= N; i++) {   /* generation i+1 comes out of step i */
            if (kd_infer_eval(e, &next, 1, logits, 0, NULL, &err)) die(path, err.msg);
            next = (int32_t)kd_argmax(logits, e->V);
            if (i == 0) first = kd_now_s();
        }
        dt = (kd_now_s() - first) / (double)N;
        if (r) best_d = dt < best_d ? dt : best_d;
    }
    s.prompt_tps = (double)P / best_p;
    s.decode_tps = 1.0 / best_d;
    free(t);
    free(logits);
    kd_infer_close(e);
    return s;
}

/* ---- llama.cpp through node ------------------------------------------------------------ */

static int bench_llama(const char *src, const char *path, int threads, int64_t P, int64_t N, int reps, speed *s) {
    char cmd[16384], out[4400];
    snprintf(out, sizeof out, "%s.llama.json", path);
    snprintf(cmd, sizeof cmd,
             "cd '%s/tests/node' && node bench_llama.mjs '%s' --threads %d --prompt %lld --gen %lld --reps %d >'%s'", src,
             path, threads, (long long)P, (long long)N, reps, out);
    if (system(cmd) != 0) return -1;
    kd_err err;
    cJSON *j = kd_json_load(out, &err);
    if (!j) return -1;
    const cJSON *pp = cJSON_GetObjectItem(j, "prompt_tps"), *tg = cJSON_GetObjectItem(j, "decode_tps");
    int ok = cJSON_IsNumber(pp) && cJSON_IsNumber(tg);
    if (ok) s->prompt_tps = pp->valuedouble, s->decode_tps = tg->valuedouble;
    cJSON_Delete(j);
    unlink(out);
    return ok ? 0 : -1;
}

/* ---- main ------------------------------------------------------------------------------- */

static int run(const char *cmd) {
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *src = getenv("KD_SOURCE_DIR") ? getenv("KD_SOURCE_DIR") : ".", *kd = NULL;
    const char *sizes = "15m,125m", *types = "f32,q8_0,q4_0,q4_k_m";
    const char *thread_list = "2";
    int reps = 3, rounds = 2;
    int64_t P = 128, N = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) die(a, "needs a value");
        if (!strcmp(a, "--src")) src = v;
        else if (!strcmp(a, "--kd")) kd = v;
        else if (!strcmp(a, "--threads")) thread_list = v;
        else if (!strcmp(a, "--sizes")) sizes = v;
        else if (!strcmp(a, "--types")) types = v;
        else if (!strcmp(a, "--prompt")) P = atoll(v);
        else if (!strcmp(a, "--gen")) N = atoll(v);
        else if (!strcmp(a, "--reps")) reps = atoi(v);
        else if (!strcmp(a, "--rounds")) rounds = atoi(v);
        else die(a, "unknown argument");
        i++;
    }
    int threads[8], n_threads = 0;
    char tl[128];
    snprintf(tl, sizeof tl, "%s", thread_list);
    for (char *tv = NULL, *t = strtok_r(tl, ",", &tv); t && n_threads < 8; t = strtok_r(NULL, ",", &tv))
        if ((threads[n_threads++] = atoi(t)) < 1) die("--threads", "thread counts must be positive");
    if (n_threads == 0 || P < 2 || N < 1 || reps < 1 || rounds < 1) die("arguments", "threads, prompt, gen and reps must be positive");
    char kd_buf[4096];
    if (!kd) {   /* the kd program beside this benchmark */
        snprintf(kd_buf, sizeof kd_buf, "%s", argv[0]);
        char *slash = strrchr(kd_buf, '/');
        snprintf(slash ? slash + 1 : kd_buf, sizeof kd_buf - (size_t)(slash ? slash + 1 - kd_buf : 0), "kd");
        kd = kd_buf;
    }
    char node_mod[4200];
    snprintf(node_mod, sizeof node_mod, "%s/tests/node/node_modules/node-llama-cpp/package.json", src);
    const int have_llama = kd_file_exists(node_mod);
    if (!have_llama) fprintf(stderr, "bench_infer: %s missing: kd's figures only\n", node_mod);

    char work[] = "/tmp/kd_bench_infer.XXXXXX";
    if (!mkdtemp(work)) die("mkdtemp", "failed");
    double bw[8];
    for (int ti = 0; ti < n_threads; ti++) {
        omp_set_num_threads(threads[ti]);
        bw[ti] = bandwidth((size_t)1 << 30);
    }
    printf("kd inference engine vs llama.cpp: prompt %lld tokens, decode %lld tokens, best of %d x %d rounds; kd's %s "
           "kernels; streaming read:", (long long)P, (long long)N, reps, rounds, kd_isa_name(kd_isa_get()));
    for (int ti = 0; ti < n_threads; ti++) printf(" %.1f GB/s with %d thread%s", bw[ti], threads[ti], threads[ti] > 1 ? "s" : "");
    printf("\n%-5s %-7s %-10s %6s %3s | %8s %8s %5s | %8s %8s %8s %5s %5s | %4s %4s %4s\n", "model", "type", "weights",
           "MB/tok", "thr", "kd pp", "llama pp", "ratio", "kd tg", "kd-fast", "llama tg", "ratio", "fast", "kd", "fast",
           "llam");
    printf("%-5s %-7s %-10s %6s %3s | %8s %8s %5s | %8s %8s %8s %5s %5s | %14s\n", "", "", "", "", "", "tok/s", "tok/s",
           "", "tok/s", "tok/s", "tok/s", "", "", "decode BW%");
    char sz_list[256], ty_list[256];
    snprintf(sz_list, sizeof sz_list, "%s", sizes);
    for (char *sv = NULL, *size = strtok_r(sz_list, ",", &sv); size; size = strtok_r(NULL, ",", &sv)) {
        char cmd[16384], dir[4200];
        snprintf(dir, sizeof dir, "%s/m%s", work, size);
        snprintf(cmd, sizeof cmd,
                 "'%s' init --config '%s/configs/student-%s.json' --out '%s' --seed 1 >/dev/null && "
                 "cp '%s/tests/data/models/aidreams260K/tok512.bin' '%s/tokenizer.bin'", kd, src, size, dir, src, dir);
        if (run(cmd)) die(size, "kd init failed (or tok512.bin is missing)");
        snprintf(ty_list, sizeof ty_list, "%s", types);
        for (char *tv = NULL, *type = strtok_r(ty_list, ",", &tv); type; type = strtok_r(NULL, ",", &tv)) {
            char path[4300];
            snprintf(path, sizeof path, "%s/m%s_%s.gguf", work, size, type);
            snprintf(cmd, sizeof cmd, "'%s' export --model '%s' --type %s --out '%s' >/dev/null 2>&1", kd, dir, type, path);
            if (run(cmd)) die(path, "kd export failed");
            for (int ti = 0; ti < n_threads; ti++) {
                omp_set_num_threads(threads[ti]);
                speed k = {0}, kf = {0}, l = {0};
                int ll = have_llama;
                for (int r = 0; r < rounds; r++) {
                    speed kr = bench_kd(path, P, N, reps, 0), kfr = bench_kd(path, P, N, reps, 1), lr = {0};
                    if (r == 0) k = kr;
                    k.prompt_tps = fmax(k.prompt_tps, kr.prompt_tps);
                    k.decode_tps = fmax(k.decode_tps, kr.decode_tps);
                    kf.decode_tps = fmax(kf.decode_tps, kfr.decode_tps);
                    if (ll && bench_llama(src, path, threads[ti], P, N, reps, &lr) == 0) {
                        l.prompt_tps = fmax(l.prompt_tps, lr.prompt_tps);
                        l.decode_tps = fmax(l.decode_tps, lr.decode_tps);
                    } else if (ll) {
                        fprintf(stderr, "bench_infer: llama.cpp failed on %s\n", path);
                        ll = 0;
                    }
                }
                const double gb = k.mb_per_token * 1e-3 * 100 / bw[ti];   /* BW% per token/s */
                printf("%-5s %-7s %-10s %6.1f %3d | %8.1f %8.1f %5.2f | %8.1f %8.1f %8.1f %5.2f %5.2f | %4.0f %4.0f %4.0f\n",
                       size, type, k.types, k.mb_per_token, threads[ti], k.prompt_tps, ll ? l.prompt_tps : NAN,
                       ll ? k.prompt_tps / l.prompt_tps : NAN, k.decode_tps, kf.decode_tps, ll ? l.decode_tps : NAN,
                       ll ? k.decode_tps / l.decode_tps : NAN, ll ? kf.decode_tps / l.decode_tps : NAN,
                       gb * k.decode_tps, gb * kf.decode_tps, ll ? gb * l.decode_tps : NAN);
                fflush(stdout);
            }
            unlink(path);
        }
    }
    kd_err err;
    kd_rmtree(work, &err);
    return 0;
}
