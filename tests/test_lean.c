/*
 * test_lean.c — memory_mode "lean" (train/kd_lean.h), piece by piece and whole:
 *   - stochastic rounding to BF16 is unbiased: over all 2^16 random words the
 *     mean of the rounded values is x exactly, and over the hash stream the
 *     empirical mean is within 5 standard errors of x;
 *   - the factored second moment equals the exact one when g² is rank one
 *     (several steps of a scaled pattern), and differs when it is not;
 *   - with FP32 storage, the full second moment and exact clipping, lean
 *     training gives FP32 AdamW's weights (the recomputing backward with
 *     per-layer updates changes only the order of a norm's sum);
 *   - loss curves over 100 steps on dumps of the real aidreams260K teacher:
 *     each lean technique alone and all together against FP32 AdamW, the gap
 *     reported and bounded;
 *   - resume is bit-exact (weights and optimizer state), in both clip modes;
 *   - the checkpoint is BF16 safetensors (torch_dtype "bfloat16") that kd's FP32
 *     loader reads to the same values, and a lean or FP32 run starts from it;
 *   - 2 MPI ranks give 1 rank's result up to rounding;
 *   - `kd plan --memory-mode lean --measure` is within 15% of the measured RSS;
 *   - bad configs are refused with the key named.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "format/kd_safetensors.h"
#include "student/kd_checkpoint.h"
#include "student/kd_plan.h"
#include "train/kd_lean.h"

static char g_dir[600];

static const char *kd(void) { return kd_test_env("KD_BIN"); }

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    return kd_test_train_fixture(g_dir);
}

static int train(const char *out, const char *sets) {
    return kd_test_sh("env OMP_NUM_THREADS=1 '%s' train --config '%s/run.json' --out '%s/%s' --quiet %s", kd(), g_dir,
                      g_dir, out, sets);
}

static int same_file(const char *a, const char *b) {
    return kd_test_sh("cmp -s '%s/%s' '%s/%s'", g_dir, a, g_dir, b) == 0;
}

/* ---- the pieces -------------------------------------------------------------------------- */

static void test_stochastic_rounding_unbiased(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 3);
    float xs[64] = {1.0f, -1.0f, 0.1f, -0.1f, 3.14159265f, 1e-30f, -7.5e-20f, 65504.0f, 1.9999999f, 0.0f, 1e30f};
    for (int i = 11; i < 64; i++) xs[i] = kd_rng_normal(&r) * powf(10.0f, (float)(i % 9) - 4.0f);
    for (int i = 0; i < 64; i++) {
        /* every random word once: the mean is x exactly (the sum is exact in double) */
        double sum = 0.0;
        for (uint32_t w = 0; w < 65536; w++) sum += kd_bf16_to_f32(kd_bf16_round_stochastic(xs[i], w));
        if (sum / 65536.0 != (double)xs[i]) fprintf(stderr, "x %.9g: mean %.17g\n", xs[i], sum / 65536.0);
        assert_true(sum / 65536.0 == (double)xs[i]);
        /* and the two neighbours only */
        float lo = kd_bf16_to_f32(kd_bf16_round_stochastic(xs[i], 0));
        float hi = kd_bf16_to_f32(kd_bf16_round_stochastic(xs[i], 65535));
        assert_true(fabsf(lo) <= fabsf(xs[i]) && fabsf(xs[i]) <= fabsf(hi));
    }
    /* the stream the optimizer uses: 2^20 draws, mean within 5 standard errors */
    uint64_t key = kd_lean_hash(kd_lean_hash(kd_lean_hash(1234, 7), 3), 1);
    for (int i = 0; i < 4; i++) {
        float x = xs[i + 11];
        float lo = kd_bf16_to_f32(kd_bf16_round_stochastic(x, 0)), hi = kd_bf16_to_f32(kd_bf16_round_stochastic(x, 65535));
        const int64_t n = 1 << 20;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) sum += kd_bf16_to_f32(kd_bf16_round_stochastic(x, kd_lean_rand16(key, j)));
        double p = (double)(x - lo) / (double)(hi - lo), se = fabs((double)(hi - lo)) * sqrt(p * (1 - p) / (double)n);
        fprintf(stderr, "stochastic rounding of %.8g over 2^20 hashed draws: mean error %.3g (standard error %.3g)\n",
                x, sum / (double)n - x, se);
        assert_true(fabs(sum / (double)n - x) <= 5 * se + 1e-12 * fabs(x));
    }
    /* NaN stays NaN, infinities stay */
    assert_true(isnan(kd_bf16_to_f32(kd_bf16_round_stochastic(NAN, 123))));
    assert_true(kd_bf16_to_f32(kd_bf16_round_stochastic(INFINITY, 65535)) == INFINITY);
    assert_true(kd_bf16_to_f32(kd_bf16_round_stochastic(-INFINITY, 65535)) == -INFINITY);
}

static void test_factored_second_moment(void **state) {
    (void)state;
    enum { R = 7, C = 5, STEPS = 6 };
    const float b2 = 0.95f;
    kd_rng r;
    kd_rng_seed(&r, 11);
    float a[R], b[C], g[R * C], vr[R] = {0}, vc[C] = {0}, ur[R] = {0}, uc[C] = {0};
    double v[R * C] = {0}, u[R * C] = {0};
    for (int i = 0; i < R; i++) a[i] = 0.1f + kd_rng_uniform(&r);
    for (int j = 0; j < C; j++) b[j] = 0.1f + 3 * kd_rng_uniform(&r);
    double worst = 0, worst_random = 0;
    for (int t = 1; t <= STEPS; t++) {
        float s = 0.5f + (float)t;   /* g² = s²·a_i·b_j: rank one at every step */
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++) g[i * C + j] = (((i + j + t) & 1) ? -1.0f : 1.0f) * s * sqrtf(a[i] * b[j]);
        kd_lean_factor_update(vr, vc, g, R, C, 1.0f, b2);
        for (int k = 0; k < R * C; k++) v[k] = b2 * v[k] + (1 - b2) * (double)g[k] * g[k];
        double mean = kd_lean_factor_mean(vr, R);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++) worst = fmax(worst, fabs(vr[i] * vc[j] / mean - v[i * C + j]) / v[i * C + j]);
        /* a gradient that is not rank one: the factored estimate differs */
        for (int k = 0; k < R * C; k++) g[k] = kd_rng_normal(&r);
        kd_lean_factor_update(ur, uc, g, R, C, 1.0f, b2);
        for (int k = 0; k < R * C; k++) u[k] = b2 * u[k] + (1 - b2) * (double)g[k] * g[k];
        mean = kd_lean_factor_mean(ur, R);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++)
                worst_random = fmax(worst_random, fabs(ur[i] * uc[j] / mean - u[i * C + j]) / u[i * C + j]);
    }
    fprintf(stderr, "factored v vs exact: rank-one g² max relative error %.2e, random g² %.2f\n", worst, worst_random);
    assert_true(worst < 1e-5);
    assert_true(worst_random > 0.1);
    /* the clip factor enters squared: s·g gives s² times the statistics */
    float g2[R * C], wr[R] = {0}, wc[C] = {0}, xr[R] = {0}, xc[C] = {0};
    for (int k = 0; k < R * C; k++) g2[k] = 0.5f * g[k];
    kd_lean_factor_update(wr, wc, g, R, C, 0.5f, b2);
    kd_lean_factor_update(xr, xc, g2, R, C, 1.0f, b2);
    for (int i = 0; i < R; i++) assert_true(fabsf(wr[i] - xr[i]) <= 1e-6f * xr[i]);
}

/* ---- whole runs ------------------------------------------------------------------------------ */

/* The training losses of a run (metrics.jsonl step lines) and its final validation CE. */
static int read_curve(const char *run, double *loss, int max, double *final_ce) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", g_dir, run);
    char *s = kd_read_file(p, NULL, NULL);
    assert_non_null(s);
    int n = 0;
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        char *at = strstr(line, "\"loss\":");
        if (at && n < max) loss[n++] = atof(at + 7);
        char *fe = strstr(line, "\"final_eval\":");
        if (fe) *final_ce = atof(strstr(fe, "\"ce\":") + 5);
    }
    free(s);
    return n;
}

/* Largest relative gap between the 10-step running means of two loss curves, and the final CE gap. */
static void curve_gap(const char *ref, const char *run, double *max_gap, double *ce_gap) {
    double a[200], b[200], ca = 0, cb = 0;
    int n = read_curve(ref, a, 200, &ca), m = read_curve(run, b, 200, &cb);
    assert_int_equal(n, m);
    *max_gap = 0;
    for (int i = 9; i < n; i++) {
        double sa = 0, sb = 0;
        for (int k = i - 9; k <= i; k++) {
            sa += a[k];
            sb += b[k];
        }
        *max_gap = fmax(*max_gap, fabs(sb - sa) / sa);
    }
    *ce_gap = (cb - ca) / ca;
}

#define CURVE "--set steps=100 --set warmup=10 --set eval_every=25 --set save_every=0"

static void test_exact_machinery_equals_fp32(void **state) {
    (void)state;
    /* FP32 storage, full v, exact clipping: the lean backward is FP32 AdamW's step */
    assert_int_equal(train("f32", CURVE), 0);
    assert_int_equal(train("x_all", CURVE " --set memory_mode=lean --set lean_weights=fp32 --set lean_m=fp32 "
                                          "--set lean_v=full --set lean_clip=exact"), 0);
    double d = kd_test_weight_diff(g_dir, "f32/final", "x_all/final", NULL);
    fprintf(stderr, "lean (FP32 storage, full v, exact clip) vs FP32 AdamW after 100 steps: max |weight diff| %.2e\n", d);
    assert_true(d <= 1e-5);
    /* and without clipping at all it is the same arithmetic, bit for bit */
    assert_int_equal(train("f32_nc", "--set grad_clip=0"), 0);
    assert_int_equal(train("x_nc", "--set grad_clip=0 --set memory_mode=lean --set lean_weights=fp32 --set lean_m=fp32 "
                                   "--set lean_v=full"), 0);
    assert_true(same_file("f32_nc/final/model.safetensors", "x_nc/final/model.safetensors"));
}

static void test_loss_curves(void **state) {
    (void)state;
    /* FP32 AdamW ("f32", from the test above) against each technique, then everything (the default lean) */
    static const struct { const char *name, *sets; double max_gap, max_ce; } v[] = {
        {"bf16 weights (SR), exact clip", "--set lean_m=fp32 --set lean_v=full --set lean_clip=exact", 0.01, 0.005},
        {"bf16 m (SR), exact clip", "--set lean_weights=fp32 --set lean_v=full --set lean_clip=exact", 0.01, 0.005},
        {"factored v, exact clip", "--set lean_weights=fp32 --set lean_m=fp32 --set lean_clip=exact", 0.08, 0.06},
        {"previous-step clip", "--set lean_weights=fp32 --set lean_m=fp32 --set lean_v=full", 0.05, 0.04},
        {"bf16 w + bf16 m, exact clip", "--set lean_v=full --set lean_clip=exact", 0.01, 0.005},
        {"all lean, exact clip", "--set lean_clip=exact", 0.08, 0.06},
        {"all lean (default)", "", 0.08, 0.06},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char out[32], sets[512];
        snprintf(out, sizeof out, "curve%zu", i);
        snprintf(sets, sizeof sets, CURVE " --set memory_mode=lean %s", v[i].sets);
        assert_int_equal(train(out, sets), 0);
        double gap, ce;
        curve_gap("f32", out, &gap, &ce);
        fprintf(stderr, "100 steps, %-30s vs FP32 AdamW: max gap of 10-step mean loss %5.2f%%, final val CE %+6.2f%%\n",
                v[i].name, 100 * gap, 100 * ce);
        assert_true(gap <= v[i].max_gap);
        assert_true(fabs(ce) <= v[i].max_ce);
    }
}

static void test_resume_bit_exact(void **state) {
    (void)state;
    static const char *modes[] = {"", "--set lean_clip=exact"};
    for (int k = 0; k < 2; k++) {
        char sets[256], whole[32], cut[32], a[96], b[96];
        snprintf(sets, sizeof sets, "--set memory_mode=lean %s", modes[k]);
        snprintf(whole, sizeof whole, "lw%d", k);
        snprintf(cut, sizeof cut, "lr%d", k);
        assert_int_equal(train(whole, sets), 0);
        char extra[300];
        snprintf(extra, sizeof extra, "%s --stop-after 5", sets);
        assert_int_equal(train(cut, extra), 0);
        assert_int_equal(kd_test_sh("env OMP_NUM_THREADS=1 '%s' train --resume '%s/%s' --quiet", kd(), g_dir, cut), 0);
        snprintf(a, sizeof a, "%s/final/model.safetensors", whole);
        snprintf(b, sizeof b, "%s/final/model.safetensors", cut);
        assert_true(same_file(a, b));
        snprintf(a, sizeof a, "%s/checkpoints/step-00000012/optimizer.safetensors", whole);
        snprintf(b, sizeof b, "%s/checkpoints/step-00000012/optimizer.safetensors", cut);
        assert_true(same_file(a, b));
        snprintf(a, sizeof a, "%s/checkpoints/step-00000012/trainer_state.json", whole);
        snprintf(b, sizeof b, "%s/checkpoints/step-00000012/trainer_state.json", cut);
        assert_true(same_file(a, b));
    }
}

static void test_checkpoint_bf16(void **state) {
    (void)state;
    char p[700];
    /* lw0 (from the resume test): BF16 matrices, F32 norms, torch_dtype bfloat16 */
    snprintf(p, sizeof p, "%s/lw0/final/model.safetensors", g_dir);
    kd_err err;
    kd_st_file *f = kd_st_open(p, &err);
    assert_non_null(f);
    assert_int_equal(kd_st_find(f, "model.embed_tokens.weight")->dtype, KD_ST_BF16);
    assert_int_equal(kd_st_find(f, "model.layers.1.mlp.down_proj.weight")->dtype, KD_ST_BF16);
    assert_int_equal(kd_st_find(f, "model.norm.weight")->dtype, KD_ST_F32);
    kd_st_close(f);
    snprintf(p, sizeof p, "%s/lw0/final/config.json", g_dir);
    char *cfg = kd_read_file(p, NULL, NULL);
    assert_non_null(strstr(cfg, "\"bfloat16\""));
    free(cfg);
    /* the FP32 loader and the lean loader read the same numbers */
    snprintf(p, sizeof p, "%s/lw0/final", g_dir);
    kd_model m;
    assert_int_equal(kd_checkpoint_load(&m, p, &err), 0);
    kd_lean l;
    kd_lean_opts o;
    kd_lean_opts_init(&o);
    assert_int_equal(kd_lean_new(&l, &m.cfg, &o, &err), 0);
    assert_int_equal(kd_lean_load_weights(&l, p, &err), 0);
    for (int i = 0; i < m.n_params; i++)
        for (int64_t j = 0; j < m.params[i]->n; j++) assert_true(kd_lean_get(&l, i, j) == m.params[i]->data[j]);
    /* an FP32 checkpoint read into BF16 storage rounds to nearest */
    snprintf(p, sizeof p, "%s/f32/final", g_dir);
    kd_model m32;
    assert_int_equal(kd_checkpoint_load(&m32, p, &err), 0);
    assert_int_equal(kd_lean_load_weights(&l, p, &err), 0);
    float w = m32.params[0]->data[5];
    assert_true(kd_lean_get(&l, 0, 5) == kd_bf16_to_f32(kd_f32_to_bf16(w)));
    kd_model_free(&m32);
    kd_lean_free(&l);
    kd_model_free(&m);
    /* runs start from it, lean and FP32 */
    char sets[800];
    snprintf(sets, sizeof sets, "--set student=%s/lw0/final --set steps=2 --set memory_mode=lean", g_dir);
    assert_int_equal(train("from_lean", sets), 0);
    snprintf(sets, sizeof sets, "--set student=%s/lw0/final --set steps=2", g_dir);
    assert_int_equal(train("from_lean_fp32", sets), 0);
}

static void test_mpi_two_ranks(void **state) {
    (void)state;
    /* 2 ranks sum their halves of the batch in another order: the FP32 values before rounding differ
     * in the last bits, so some stochastic roundings go the other way (one BF16 step, ≤ 2^-8 relative) */
    assert_int_equal(kd_test_sh("env OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 mpirun --allow-run-as-root "
                                "--oversubscribe -x ASAN_OPTIONS -np 2 '%s' train --config '%s/run.json' --out "
                                "'%s/lmpi' --quiet --set memory_mode=lean", kd(), g_dir, g_dir), 0);
    double d = kd_test_weight_diff(g_dir, "lw0/final", "lmpi/final", NULL);
    double c1 = 0, c2 = 0, tmp[64];
    read_curve("lw0", tmp, 64, &c1);
    read_curve("lmpi", tmp, 64, &c2);
    fprintf(stderr, "lean, 2 ranks vs 1 rank after 12 steps: max |weight diff| %.2e, final val CE %.6f vs %.6f\n", d, c2,
            c1);
    assert_true(d <= 1e-2);
    assert_true(fabs(c1 - c2) <= 1e-3);
}

static double __attribute__((unused)) plan_ratio(const char *config, int batch, int seq) {
    char out[700];
    snprintf(out, sizeof out, "%s/plan.txt", g_dir);
    assert_int_equal(kd_test_sh("'%s' plan --config '%s/configs/%s' --batch %d --seq %d --lm-chunk 256 "
                                "--memory-mode lean --measure > '%s'", kd(), kd_test_env("KD_SOURCE_DIR"), config,
                                batch, seq, out), 0);
    char *s = kd_read_file(out, NULL, NULL);
    char *r = strstr(s, "ratio ");
    double ratio = r ? atof(r + 6) : -1;
    free(s);
    fprintf(stderr, "lean plan, %s batch %d seq %d: predicted/measured peak RSS = %.3f\n", config, batch, seq, ratio);
    return ratio;
}

static void __attribute__((unused)) test_plan_matches_rss(void **state) {
    (void)state;
    double r = plan_ratio("student-tiny-gqa-swa.json", 4, 512);
    assert_true(r > 0.85 && r < 1.15);
    r = plan_ratio("student-15m.json", 8, 256);
    assert_true(r > 0.85 && r < 1.15);
    r = plan_ratio("student-125m.json", 2, 256);
    assert_true(r > 0.85 && r < 1.15);
}

static void test_plan_3b(void **state) {
    (void)state;
    kd_config c;
    char path[600];
    snprintf(path, sizeof path, "%s/configs/student-3b.json", kd_test_env("KD_SOURCE_DIR"));
    assert_int_equal(kd_config_load(&c, path, NULL), 0);
    kd_plan_opts o = {.batch = 1, .seq = 512, .threads = 2, .lm_chunk = 256, .topk = 64, .ranks = 1, .lean = 1};
    kd_plan p;
    kd_plan_compute(&c, &o, &p);
    /* BF16 weights (norms FP32) and BF16 m: 2 bytes each; factored v: a few MB */
    assert_true(p.weights > 2 * p.n_params && p.weights < 2 * p.n_params + (1 << 20));
    assert_true(p.optimizer > p.weights && p.optimizer < p.weights + (16 << 20));
    /* the whole step fits 22 GiB (and FP32 AdamW needs more than 24) */
    assert_true(p.train_peak < (int64_t)22 << 30);
    o.lean = 0;
    kd_plan q;
    kd_plan_compute(&c, &o, &q);
    assert_true(q.train_peak > (int64_t)24 << 30);
    /* full FP32 v would not fit 22 GiB: factoring it is needed */
    o.lean = 1;
    o.lean_v_full = 1;
    kd_plan_compute(&c, &o, &q);
    assert_true(q.train_peak > (int64_t)22 << 30);
}

static void expect_fail(const char *sets, const char *needle) {
    char out[700];
    snprintf(out, sizeof out, "%s/err.txt", g_dir);
    int rc = kd_test_sh("'%s' train --config '%s/run.json' --out '%s/bad' --quiet %s 2> '%s'", kd(), g_dir, g_dir, sets,
                        out);
    char *msg = kd_read_file(out, NULL, NULL);
    if (!strstr(msg, needle)) fprintf(stderr, "%s: expected '%s' in: %s", sets, needle, msg);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(msg, needle));
    free(msg);
}

static void test_bad_configs(void **state) {
    (void)state;
    expect_fail("--set memory_mode=lean --set grad_accum=2", "grad_accum 1");
    expect_fail("--set lean_m=fp32", "applies only to memory_mode");
    expect_fail("--set memory_mode=thin", "memory_mode");
    expect_fail("--set memory_mode=lean --set lean_v=diag", "lean_v");
    expect_fail("--set memory_mode=lean --set lean_clip=never", "lean_clip");
    /* a NaN in the weights stops a lean run before any update, naming the step */
    char out[700];
    snprintf(out, sizeof out, "%s/nan.txt", g_dir);
    int rc = kd_test_sh("env OMP_NUM_THREADS=1 KD_TRAIN_POISON_STEP=7 '%s' train --config '%s/run.json' --out "
                        "'%s/lnan' --quiet --set memory_mode=lean 2> '%s'", kd(), g_dir, g_dir, out);
    assert_int_not_equal(rc, 0);
    char *msg = kd_read_file(out, NULL, NULL);
    fprintf(stderr, "lean NaN run said: %s", msg);
    assert_non_null(strstr(msg, "step 7"));
    assert_true(strstr(msg, "NaN") || strstr(msg, "not finite"));
    free(msg);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stochastic_rounding_unbiased),
        cmocka_unit_test(test_factored_second_moment),
        cmocka_unit_test(test_exact_machinery_equals_fp32),
        cmocka_unit_test(test_loss_curves),
        cmocka_unit_test(test_resume_bit_exact),
        cmocka_unit_test(test_checkpoint_bf16),
        cmocka_unit_test(test_mpi_two_ranks),
#ifndef __SANITIZE_ADDRESS__   /* ASan's shadow memory and quarantine change the RSS being predicted */
        cmocka_unit_test(test_plan_matches_rss),
#endif
        cmocka_unit_test(test_plan_3b),
        cmocka_unit_test(test_bad_configs),
    };
    return KD_RUN_GROUP(tests, setup, NULL);
}
