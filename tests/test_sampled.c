/*
 * test_sampled.c — sampled classes (RS-KD): distribution "sampled" dumps and kd_mode sampled.
 *   - the estimator: kd_sample_classes draws from softmax(logits): over 20000 positions
 *     the mean of p̂ = count / N is within 5 standard errors of p for every class; the
 *     output is deterministic per stream, sorted by count, counts add up to N;
 *   - the gradient: kd_mode sampled over 2048 rows of one student and one teacher, each
 *     row with its own draws, gives the full-KL gradient (dW, Σ dh) within 5 standard
 *     errors; a biased target (the teacher's top-3, renormalised) does not;
 *   - PyTorch (tests/py/sampled_ref.py, float64 autograd): loss, ce, kl, dh, dW;
 *   - options: temperature ≠ 1 and the reverse divergence are refused, as are
 *     kd_mode sampled with temperature 2 in a run config;
 *   - `kd teacher dump --sample` on aidreams260K: `kd teacher info` validates it, h5py
 *     reads the schema, the draws follow the teacher (the mean of Σ p̂ log p over the
 *     positions matches −H(p) from a --full dump of the same text within 5 standard
 *     errors), a killed and resumed dump is bit-identical to one made in one go, the
 *     option errors; a dump written by the h5py recipe validates and reads back as
 *     log(count / N); a corrupted count is named by the validator.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "autograd/kd_ops.h"
#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_rng.h"
#include "data/kd_dump.h"
#include "format/kd_safetensors.h"
#include "teacher/kd_teacher_dump.h"
#include "train/kd_loss.h"
#include "train/kd_run_config.h"

static void softmax(const float *z, int64_t V, double *p) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < V; j++) m = fmax(m, z[j]);
    for (int64_t j = 0; j < V; j++) s += p[j] = exp(z[j] - m);
    for (int64_t j = 0; j < V; j++) p[j] /= s;
}

/* ---- 1. the estimator ---------------------------------------------------------------------------- */

static void test_estimator(void **state) {
    (void)state;
    enum { V = 40, N = 16, D = 20000 };
    float z[V];
    kd_rng r;
    kd_rng_seed(&r, 11);
    for (int j = 0; j < V; j++) z[j] = 2.0f * kd_rng_normal(&r);
    double p[V], mean[V] = {0}, cum[V];
    softmax(z, V, p);
    int32_t ids[N], ids2[N];
    float lp[N], lp2[N];
    for (int d = 0; d < D; d++) {
        uint64_t st = kd_sample_stream(5, d / 64, d % 64);
        kd_sample_classes(z, V, N, st, cum, ids, lp);
        if (d < 50) {   /* deterministic per stream */
            kd_sample_classes(z, V, N, st, cum, ids2, lp2);
            assert_memory_equal(ids, ids2, sizeof ids);
            assert_memory_equal(lp, lp2, sizeof lp);
        }
        int total = 0;
        for (int i = 0; i < N; i++) {
            if (lp[i] == -INFINITY) {
                assert_int_equal(ids[i], 0);
                continue;
            }
            int c = (int)lrint(N * exp((double)lp[i]));
            assert_true(lp[i] == kd_dump_sample_lp(c, N));
            if (i > 0) assert_true(lp[i] <= lp[i - 1] && (lp[i] < lp[i - 1] || ids[i] > ids[i - 1]));
            for (int u = 0; u < i; u++) assert_int_not_equal(ids[u], ids[i]);
            total += c;
            mean[ids[i]] += (double)c / N / D;
        }
        assert_int_equal(total, N);
    }
    double worst = 0;
    for (int j = 0; j < V; j++) {
        double se = sqrt(p[j] * (1 - p[j]) / ((double)D * N)) + 1e-7;
        worst = fmax(worst, fabs(mean[j] - p[j]) / se);
    }
    if (worst > 5) fail_msg("mean of p^ is %.1f standard errors from p", worst);
    /* another seed: other draws */
    kd_sample_classes(z, V, N, kd_sample_stream(5, 0, 0), cum, ids, lp);
    int differ = 0;
    for (int s = 6; s < 16 && !differ; s++) {
        kd_sample_classes(z, V, N, kd_sample_stream((uint64_t)s, 0, 0), cum, ids2, lp2);
        differ = memcmp(ids, ids2, sizeof ids) || memcmp(lp, lp2, sizeof lp);
    }
    assert_true(differ);
}

/* ---- 2. the expected gradient is the full KL's -------------------------------------------------------- */

/* dW [V, C] and Σ_rows dh [C] of the loss (α 1, T 1) on R rows of the same hidden state. */
static void grad_of(const kd_loss_batch *b, kd_teacher_mode mode, int64_t R, int64_t C, int64_t V, const float *h1,
                    const float *Wd, float *dW, float *dhs) {
    int64_t sh[2] = {R, C}, sw[2] = {V, C};
    kd_tensor *h = kd_param_new("hidden", 2, sh, NULL), *W = kd_param_new("lm_head.weight", 2, sw, NULL);
    for (int64_t r = 0; r < R; r++) memcpy(h->data + r * C, h1, (size_t)C * sizeof(float));
    memcpy(W->data, Wd, (size_t)(V * C) * sizeof(float));
    kd_loss_opts o = kd_loss_opts_default();
    o.alpha = 1.0f;
    o.temperature = 1.0f;
    o.mode = mode;
    kd_graph g;
    kd_graph_init(&g, 0, NULL);
    kd_err err;
    float seed = 1.0f;
    kd_tensor *y = kd_distill_loss(&g, h, W, b, &o, NULL, &err);
    if (!y) fail_msg("%s", err.msg);
    kd_graph_backward_from(&g, y, &seed);
    memcpy(dW, W->grad, (size_t)(V * C) * sizeof(float));
    for (int64_t c = 0; c < C; c++) {
        double s = 0;
        for (int64_t r = 0; r < R; r++) s += h->grad[r * C + c];
        dhs[c] = (float)s;
    }
    kd_graph_free(&g);
    kd_param_free(h);
    kd_param_free(W);
}

static void test_gradient(void **state) {
    (void)state;
    enum { R = 2048, C = 6, V = 24, N = 16, K3 = 3 };
    kd_rng r;
    kd_rng_seed(&r, 3);
    float h1[C], W[V * C], zs[V], zt[V];
    for (int c = 0; c < C; c++) h1[c] = kd_rng_normal(&r);
    for (int i = 0; i < V * C; i++) W[i] = 0.5f * kd_rng_normal(&r);
    for (int j = 0; j < V; j++) {
        zt[j] = 1.5f * kd_rng_normal(&r);
        double s = 0;
        for (int c = 0; c < C; c++) s += (double)W[j * C + c] * h1[c];
        zs[j] = (float)s;
    }
    (void)zs;
    double p[V], cum[V];
    softmax(zt, V, p);
    int32_t *labels = malloc(R * sizeof *labels), *ids = malloc(R * N * sizeof *ids), *ids3 = malloc(R * K3 * sizeof *ids3);
    float *lp = malloc(R * N * sizeof *lp), *lp3 = malloc(R * K3 * sizeof *lp3), *tl = malloc((size_t)R * V * sizeof *tl);
    int32_t top[V];
    float toplp[V];
    kd_topk_logprobs(zt, V, K3, top, toplp);
    for (int64_t i = 0; i < R; i++) {
        labels[i] = (int32_t)(i % V);
        kd_sample_classes(zt, V, N, kd_sample_stream(9, i, 0), cum, ids + i * N, lp + i * N);
        memcpy(tl + i * V, zt, sizeof zt);
        memcpy(ids3 + i * K3, top, K3 * sizeof *ids3);
        memcpy(lp3 + i * K3, toplp, K3 * sizeof *lp3);
    }
    kd_loss_batch bs = {.labels = labels, .topk_ids = ids, .topk_logprobs = lp, .k = N, .sampled = 1};
    kd_loss_batch bf = {.labels = labels, .teacher_logits = tl};
    kd_loss_batch b3 = {.labels = labels, .topk_ids = ids3, .topk_logprobs = lp3, .k = K3};
    float dWs[V * C], dWf[V * C], dW3[V * C], dhs[C], dhf[C], dh3[C];
    grad_of(&bs, KD_TEACHER_SAMPLED, R, C, V, h1, W, dWs, dhs);
    grad_of(&bf, KD_TEACHER_FULL, R, C, V, h1, W, dWf, dhf);
    grad_of(&b3, KD_TEACHER_TOPK_ZERO, R, C, V, h1, W, dW3, dh3);
    /* dW[j, c] = mean_r (s_j − p̂_rj)·h_c: its error is (mean p̂_j − p_j)·h_c, of standard error
     * sqrt(p_j (1 − p_j) / (R·N))·|h_c| */
    double worst = 0, worst3 = 0;
    for (int j = 0; j < V; j++)
        for (int c = 0; c < C; c++) {
            double se = sqrt(p[j] * (1 - p[j]) / ((double)R * N)) * fabs(h1[c]) + 1e-6;
            worst = fmax(worst, fabs((double)dWs[j * C + c] - dWf[j * C + c]) / se);
            worst3 = fmax(worst3, fabs((double)dW3[j * C + c] - dWf[j * C + c]) / se);
        }
    if (worst > 5) fail_msg("sampled dW is %.1f standard errors from the full KL's", worst);
    if (worst3 <= 5) fail_msg("the biased top-3 target is within %.1f standard errors: the test cannot tell", worst3);
    /* Σ_rows dh = mean_r (s − p̂_r)·W: error Σ_j (mean p̂_j − p_j) W[j, c]; a bound from the variances */
    for (int c = 0; c < C; c++) {
        double var = 0;
        for (int j = 0; j < V; j++) var += p[j] * W[j * C + c] * W[j * C + c];
        double se = sqrt(var / ((double)R * N)) + 1e-6;
        if (fabs((double)dhs[c] - dhf[c]) > 5 * se)
            fail_msg("sampled sum of dh[%d] %g vs full %g (se %g)", c, dhs[c], dhf[c], se);
    }
    free(labels);
    free(ids);
    free(ids3);
    free(lp);
    free(lp3);
    free(tl);
}

/* ---- 3. against PyTorch ------------------------------------------------------------------------------- */

static void test_vs_torch(void **state) {
    (void)state;
    enum { R = 13, C = 8, V = 30, N = 8 };
    kd_rng r;
    kd_rng_seed(&r, 21);
    float h[R * C], W[V * C], zt[V], counts[R * N], opts[2];
    int32_t labels[R], ids[R * N];
    float lp[R * N];
    double cum[V];
    for (int i = 0; i < R * C; i++) h[i] = kd_rng_normal(&r);
    for (int i = 0; i < V * C; i++) W[i] = 0.4f * kd_rng_normal(&r);
    for (int i = 0; i < R; i++) {
        for (int j = 0; j < V; j++) zt[j] = 2.0f * kd_rng_normal(&r);
        kd_sample_classes(zt, V, N, kd_sample_stream(1, i, 0), cum, ids + i * N, lp + i * N);
        labels[i] = i % 4 == 3 ? KD_IGNORE_INDEX : (int32_t)kd_rng_below(&r, V);
        for (int s = 0; s < N; s++) counts[i * N + s] = lp[i * N + s] == -INFINITY ? 0.0f : (float)lrint(N * exp(lp[i * N + s]));
    }
    const char *dir = kd_test_tmpdir();
    for (int a = 0; a < 2; a++) {
        opts[0] = a ? 1.0f : 0.5f;
        opts[1] = N;
        char in[600], out[600];
        snprintf(in, sizeof in, "%s/s_in%d.safetensors", dir, a);
        snprintf(out, sizeof out, "%s/s_out%d.safetensors", dir, a);
        kd_err err;
        kd_st_writer *w = kd_st_writer_new(&err);
        int64_t sRC[2] = {R, C}, sVC[2] = {V, C}, sR = R, sRN[2] = {R, N}, s2 = 2;
        assert_int_equal(kd_st_writer_add(w, "hidden", KD_ST_F32, 2, sRC, h, &err), 0);
        assert_int_equal(kd_st_writer_add(w, "head", KD_ST_F32, 2, sVC, W, &err), 0);
        assert_int_equal(kd_st_writer_add(w, "labels", KD_ST_I32, 1, &sR, labels, &err), 0);
        assert_int_equal(kd_st_writer_add(w, "ids", KD_ST_I32, 2, sRN, ids, &err), 0);
        assert_int_equal(kd_st_writer_add(w, "counts", KD_ST_F32, 2, sRN, counts, &err), 0);
        assert_int_equal(kd_st_writer_add(w, "opts", KD_ST_F32, 1, &s2, opts, &err), 0);
        assert_int_equal(kd_st_writer_save(w, in, &err), 0);
        kd_st_writer_free(w);
        assert_int_equal(kd_test_python("sampled_ref.py", "loss '%s' '%s'", in, out), 0);
        kd_st_file *ref = kd_st_open(out, &err);
        assert_non_null(ref);
        float rl, rce, rkl, rdh[R * C], rdW[V * C];
        int64_t one = 1, nRC[2] = {R, C}, nVC[2] = {V, C};
        assert_int_equal(kd_st_read_f32(ref, "loss", &rl, 1, &one, &err), 0);
        assert_int_equal(kd_st_read_f32(ref, "ce", &rce, 1, &one, &err), 0);
        assert_int_equal(kd_st_read_f32(ref, "kl", &rkl, 1, &one, &err), 0);
        assert_int_equal(kd_st_read_f32(ref, "dh", rdh, 2, nRC, &err), 0);
        assert_int_equal(kd_st_read_f32(ref, "dW", rdW, 2, nVC, &err), 0);
        kd_st_close(ref);

        int64_t sh[2] = {R, C}, sw[2] = {V, C};
        kd_tensor *th = kd_param_new("hidden", 2, sh, NULL), *tW = kd_param_new("lm_head.weight", 2, sw, NULL);
        memcpy(th->data, h, sizeof h);
        memcpy(tW->data, W, sizeof W);
        kd_loss_opts o = kd_loss_opts_default();
        o.alpha = opts[0];
        o.temperature = 1.0f;
        o.mode = KD_TEACHER_SAMPLED;
        kd_loss_batch b = {.labels = labels, .topk_ids = ids, .topk_logprobs = lp, .k = N, .sampled = 1};
        kd_graph g;
        kd_graph_init(&g, 0, NULL);
        kd_loss_stats st;
        float seed = 1.0f;
        kd_tensor *y = kd_distill_loss(&g, th, tW, &b, &o, &st, &err);
        if (!y) fail_msg("%s", err.msg);
        kd_graph_backward_from(&g, y, &seed);
        assert_true(fabs(st.loss - rl) <= 1e-5 * fmax(1, fabs(rl)));
        assert_true(fabs(st.ce - rce) <= 1e-5 * fmax(1, fabs(rce)));
        assert_true(fabs(st.kl - rkl) <= 1e-5 * fmax(1, fabs(rkl)));
        double mh = 0, eh = 0, mw = 0, ew = 0;
        for (int i = 0; i < R * C; i++) mh = fmax(mh, fabs(rdh[i])), eh = fmax(eh, fabs(th->grad[i] - rdh[i]));
        for (int i = 0; i < V * C; i++) mw = fmax(mw, fabs(rdW[i])), ew = fmax(ew, fabs(tW->grad[i] - rdW[i]));
        if (eh > 1e-4 * mh || ew > 1e-4 * mw) fail_msg("alpha %g: dh error %g (of %g), dW error %g (of %g)", opts[0], eh, mh, ew, mw);
        kd_graph_free(&g);
        kd_param_free(th);
        kd_param_free(tW);
    }
}

/* ---- 4. options ---------------------------------------------------------------------------------------- */

static void test_options(void **state) {
    (void)state;
    kd_err err;
    kd_loss_opts o = kd_loss_opts_default();
    o.mode = KD_TEACHER_SAMPLED;
    o.alpha = 1.0f;
    o.temperature = 1.0f;
    assert_int_equal(kd_loss_opts_check(&o, &err), 0);
    o.temperature = 2.0f;
    assert_int_equal(kd_loss_opts_check(&o, &err), -1);
    assert_non_null(strstr(err.msg, "temperature 2"));
    o.temperature = 1.0f;
    o.div = KD_DIV_REVERSE;
    assert_int_equal(kd_loss_opts_check(&o, &err), -1);
    assert_non_null(strstr(err.msg, "reverse"));
    kd_teacher_mode m;
    assert_int_equal(kd_teacher_mode_parse("sampled", &m, &err), 0);
    assert_int_equal(m, KD_TEACHER_SAMPLED);
    assert_string_equal(kd_teacher_mode_name(KD_TEACHER_SAMPLED), "sampled");
    /* run configs: kd_mode sampled needs temperature 1 (the default is 2) */
    kd_run_config c;
    cJSON *j = cJSON_Parse("{\"student\": \"s\", \"train_data\": \"t.h5\", \"kd_mode\": \"sampled\"}");
    assert_int_equal(kd_run_config_from_json(&c, j, "run.json", &err), -1);
    assert_non_null(strstr(err.msg, "temperature"));
    cJSON_ReplaceItemInObject(j, "kd_mode", cJSON_CreateString("sampled"));
    cJSON_AddNumberToObject(j, "temperature", 1.0);
    assert_int_equal(kd_run_config_from_json(&c, j, "run.json", &err), 0);
    cJSON_Delete(j);
}

/* ---- 5. kd teacher dump --sample ------------------------------------------------------------------------ */

static char g_dir[512];

static const char TEXT[] =
    "The old lighthouse stood at the edge of the cliff. Every night its lamp\n"
    "turned slowly, and the sailors far out at sea knew they were close to home.\n"
    "%\n"
    "I dreamed of a garden made of glass. The flowers rang like small bells when\n"
    "the wind moved through them, and the sky above was the color of warm honey.\n"
    "%\n"
    "She opened the book and found a map folded between the pages. It showed a\n"
    "river that did not exist, winding through a forest of silver trees.\n"
    "%\n"
    "In the city of clocks, nobody was ever late. The trains left on time, the\n"
    "bread came out of the ovens on time, and even the rain fell on time.\n";

static int kd(const char *env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kd(const char *env, const char *fmt, ...) {
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return kd_test_sh("cd '%s' && env %s '%s' %s >out.txt 2>err.txt", g_dir, env ? env : "OMP_NUM_THREADS=1",
                      kd_test_env("KD_BIN"), args);
}

static char *slurp(const char *name) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    size_t len;
    kd_err err;
    char *s = kd_read_file(path, &len, &err);
    if (!s) fail_msg("%s", err.msg);
    s[len] = '\0';
    return s;
}

static void out_has(const char *file, const char *needle) {
    char *s = slurp(file);
    if (!strstr(s, needle)) fail_msg("%s lacks \"%s\":\n%s", file, needle, s);
    free(s);
}

typedef struct { kd_dump_meta m; int32_t *tok, *ids; uint8_t *mask; float *val; } all;

static void read_all(const char *name, all *a) {
    char path[1000];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) fail_msg("%s", err.msg);
    a->m = *kd_dump_get_meta(d);
    int64_t n = a->m.n_seq, T = a->m.seq_len, w = a->m.k ? a->m.k : a->m.vocab_size;
    a->tok = malloc((size_t)(n * (T + 1)) * 4);
    a->mask = malloc((size_t)(n * T));
    a->val = malloc((size_t)(n * T * w) * 4);
    a->ids = a->m.k ? malloc((size_t)(n * T * w) * 4) : NULL;
    kd_dump_rows rows = {.tokens = a->tok, .loss_mask = a->mask, .topk_ids = a->ids};
    if (a->m.k) rows.topk_logprobs = a->val;
    else rows.logits = a->val;
    if (kd_dump_read(d, 0, n, &rows, &err)) fail_msg("%s", err.msg);
    kd_dump_close(d);
}

static void free_all(all *a) {
    free(a->tok);
    free(a->mask);
    free(a->val);
    free(a->ids);
}

static int same(const char *x, const char *y) {
    all a, b;
    read_all(x, &a);
    read_all(y, &b);
    int64_t n = a.m.n_seq, T = a.m.seq_len, k = a.m.k;
    int ok = a.m.n_seq == b.m.n_seq && a.m.k == b.m.k && a.m.sampled == b.m.sampled &&
             !memcmp(a.tok, b.tok, (size_t)(n * (T + 1)) * 4) && !memcmp(a.ids, b.ids, (size_t)(n * T * k) * 4) &&
             !memcmp(a.val, b.val, (size_t)(n * T * k) * 4);
    free_all(&a);
    free_all(&b);
    return ok;
}

#define DUMP "teacher dump --teacher teacher --text text.txt --doc-sep '\n%%\n' --seq-len 16 --quiet"

static void test_dump(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    char bin[600], tok[600], path[1000];
    snprintf(bin, sizeof bin, "%s/models/aidreams260K/aidreams260K.bin", kd_test_env("KD_DATA_DIR"));
    snprintf(tok, sizeof tok, "%s/models/aidreams260K/tok512.bin", kd_test_env("KD_DATA_DIR"));
    kd_err err;
    snprintf(path, sizeof path, "%s/text.txt", g_dir);
    if (kd_write_file_atomic(path, TEXT, sizeof TEXT - 1, &err)) fail_msg("%s", err.msg);
    assert_int_equal(kd(NULL, "import llama2c --model '%s' --tokenizer '%s' --out teacher", bin, tok), 0);

    assert_int_equal(kd(NULL, DUMP " --sample 24 --seed 4 --out s.h5"), 0);
    assert_int_equal(kd(NULL, DUMP " --full --dtype f32 --out f.h5"), 0);
    assert_int_equal(kd(NULL, "teacher info s.h5"), 0);
    out_has("out.txt", "check        ok");
    out_has("out.txt", "distribution sampled: 24 draws");
    snprintf(path, sizeof path, "%s/s.h5", g_dir);
    assert_int_equal(kd_test_python("sampled_ref.py", "check '%s'", path), 0);

    /* the draws follow the teacher: E[Σ p̂ log p] = Σ p log p at every position */
    all s, f;
    read_all("s.h5", &s);
    read_all("f.h5", &f);
    assert_true(s.m.sampled && s.m.n_samples == 24 && s.m.k == 24);
    assert_memory_equal(s.tok, f.tok, (size_t)(s.m.n_seq * (s.m.seq_len + 1)) * 4);
    const int64_t P = s.m.n_seq * s.m.seq_len, V = f.m.vocab_size, k = s.m.k;
    double sum = 0, sum2 = 0, ent = 0;
    int64_t used = 0;
    double *p = malloc((size_t)V * sizeof *p);
    for (int64_t i = 0; i < P; i++) {
        if (!s.mask[i]) continue;
        softmax(f.val + i * V, V, p);
        double H = 0, est = 0, var = 0;
        for (int64_t j = 0; j < V; j++) H += p[j] > 0 ? p[j] * log(p[j]) : 0;
        for (int64_t j = 0; j < V; j++) var += p[j] > 0 ? p[j] * (log(p[j]) - H) * (log(p[j]) - H) : 0;
        for (int64_t u = 0; u < k; u++)
            if (s.val[i * k + u] != -INFINITY) est += exp(s.val[i * k + u]) * log(p[s.ids[i * k + u]]);
        sum += est - H;
        sum2 += var / k;   /* the variance of est: Var(log p) / N */
        ent -= H;
        used++;
    }
    free(p);
    assert_true(used > 50);
    if (fabs(sum) > 5 * sqrt(sum2)) fail_msg("sum over positions of (est - E) = %g, standard error %g", sum, sqrt(sum2));
    /* kd eval of the teacher itself on the sampled dump: xent = -Σ p̂ log p estimates the teacher's
     * entropy (from the full dump) without bias; kl and top1 are left out */
    assert_int_equal(kd(NULL, "eval --model teacher --data s.h5"), 0);
    {
        char *js = slurp("out.txt");
        cJSON *o = cJSON_Parse(js);
        assert_non_null(o);
        const cJSON *x = cJSON_GetObjectItem(o, "xent"), *t = cJSON_GetObjectItem(o, "tokens");
        assert_true(cJSON_IsNumber(x) && cJSON_IsNumber(t));
        assert_null(cJSON_GetObjectItem(o, "kl"));
        assert_null(cJSON_GetObjectItem(o, "top1"));
        assert_int_equal((int64_t)t->valuedouble, used);
        const double want = ent / (double)used, se = sqrt(sum2) / (double)used;
        fprintf(stderr, "kd eval xent %.5f, teacher entropy %.5f (standard error %.5f)\n", x->valuedouble, want, se);
        assert_true(fabs(x->valuedouble - want) <= 5 * se + 1e-4);
        cJSON_Delete(o);
        free(js);
    }
    free_all(&s);
    free_all(&f);

    /* deterministic: the same command again, and a killed + resumed run */
    assert_int_equal(kd(NULL, DUMP " --sample 24 --seed 4 --batch 2 --out s2.h5"), 0);
    assert_true(same("s.h5", "s2.h5"));
    assert_int_equal(kd("OMP_NUM_THREADS=1 KD_DUMP_STOP_AFTER=1", DUMP " --sample 24 --seed 4 --batch 3 --out s3.h5"), 75);
    assert_int_equal(kd(NULL, DUMP " --sample 24 --seed 4 --batch 3 --out s3.h5"), 0);
    assert_true(same("s.h5", "s3.h5"));
    assert_int_equal(kd(NULL, DUMP " --sample 24 --seed 5 --out s4.h5"), 0);
    assert_false(same("s.h5", "s4.h5"));   /* another seed, other draws */
    /* a sampled .partial is not resumed as a top-k dump */
    assert_int_equal(kd("OMP_NUM_THREADS=1 KD_DUMP_STOP_AFTER=1", DUMP " --sample 8 --batch 2 --out m.h5"), 75);
    assert_int_equal(kd(NULL, DUMP " --topk 8 --batch 2 --out m.h5"), 1);
    out_has("err.txt", "sampled classes");
    /* option errors */
    assert_int_equal(kd(NULL, DUMP " --sample 8 --topk 8 --out e.h5"), 2);
    out_has("err.txt", "--topk");
    assert_int_equal(kd(NULL, DUMP " --sample 8 --compress --out e.h5"), 2);
    assert_int_equal(kd(NULL, DUMP " --sample 300 --out e.h5"), 2);
    assert_int_equal(kd(NULL, DUMP " --sample 8 --tokens-only --tokenizer teacher/tokenizer.bin --out e.h5"), 2);
    assert_false(kd_file_exists("e.h5"));
}

/* ---- 6. the h5py recipe and the validator --------------------------------------------------------------- */

static void test_recipe(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    char py[1000], bad[1000];
    snprintf(py, sizeof py, "%s/py_sampled.h5", g_dir);
    snprintf(bad, sizeof bad, "%s/py_bad.h5", g_dir);
    assert_int_equal(kd_test_python("sampled_ref.py", "write '%s' 12 7", py), 0);
    kd_err err;
    kd_dump_report rep;
    if (kd_dump_validate(py, &rep, &err)) fail_msg("%s", err.msg);
    all a;
    read_all("py_sampled.h5", &a);
    assert_true(a.m.sampled && a.m.n_samples == 12);
    for (int64_t i = 0; i < a.m.n_seq * a.m.seq_len; i++) {
        if (!a.mask[i]) continue;
        int total = 0;
        for (int u = 0; u < 12; u++) {
            float v = a.val[i * 12 + u];
            if (v == -INFINITY) continue;
            int c = (int)lrint(12 * exp((double)v));
            assert_true(v == kd_dump_sample_lp(c, 12));
            total += c;
        }
        assert_int_equal(total, 12);
    }
    free_all(&a);
    assert_int_equal(kd_test_python("sampled_ref.py", "corrupt '%s' '%s'", py, bad), 0);
    assert_int_equal(kd_dump_validate(bad, &rep, &err), -1);
    assert_true(rep.bad);
    assert_string_equal(rep.dataset, "sample_counts");
    assert_int_equal(rep.seq, 1);
    assert_int_equal(rep.pos, 2);
    assert_non_null(strstr(err.msg, "add up to 11"));
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimator), cmocka_unit_test(test_gradient), cmocka_unit_test(test_vs_torch),
        cmocka_unit_test(test_options),   cmocka_unit_test(test_dump),     cmocka_unit_test(test_recipe),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
