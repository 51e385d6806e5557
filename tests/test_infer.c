/*
 * test_infer.c — the inference engine (infer/kd_infer.c, kd_matvec.c), `kd run`,
 * `kd eval` and `kd logits` on GGUF files.
 *
 *   kernels     every type × every instruction-set path (scalar, AVX2, AVX-512, as
 *               far as the CPU goes) against Σ dequant(W)·x in double, matvec and
 *               both matmul paths, row lengths with SIMD tails;
 *   parity      the engine on the real aidreams260K teacher (checkpoint and its F32
 *               GGUF export) against the training forward kd_model_logits, batched,
 *               token by token and in mixed chunks; the same on a GQA +
 *               sliding-window config (checkpoint only: GGUF llama has no window),
 *               whose window is checked to matter; several sequences in lockstep
 *               (kd_infer_eval_seqs, the sampler of kd teacher dump --generate) against
 *               the batched training forward, with 3 (dot kernels) and 5 (sgemm) rows;
 *   quantized   every preset of aidreams260K and of a 256-wide synthetic model (so
 *               that Q4_K and Q6_K are really used) against the F32 engine on the
 *               dequantized weights, and every kernel path against the scalar one;
 *   llama.cpp   (tests/node/infer_check.mjs, node-llama-cpp 3.21.1's prebuilt CPU
 *               build; skipped with a message when node_modules is absent) greedy
 *               continuations and teacher-forced log-probabilities, every preset;
 *               with ggml_rounding (`kd run --fast`: llama.cpp's activation rounding
 *               and integer kernels, also checked against exact integer references)
 *               the difference collapses, which pins it on that rounding;
 *   eval        `kd eval` on a dump of the teacher itself (kl ≈ 0, top1 ≈ 1,
 *               ppl = exp(ce)), on full logits and on text; sampling; CLI errors.
 * Tolerances: "relative" means max|a − b| / max|b| over all logits.
 */
#include "kd_test.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kd_kernels.h"
#include "core/kd_file.h"
#include "core/kd_json.h"
#include "student/kd_checkpoint.h"
#include "export/kd_export.h"
#include "format/kd_gguf_write.h"
#include "infer/kd_infer.h"
#include "format/kd_quant.h"

static const char *PRESETS[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k_m"};
#define N_PRESETS 7
static const char *TEXT = "Once upon a time, a little robot dreamed of stars and quiet machines.";
static char g_aid[600], g_syn[600], g_swa[600];

static void gguf_path(char *buf, size_t n, const char *model, const char *preset) {
    snprintf(buf, n, "%s/%s_%s.gguf", kd_test_tmpdir(), model, preset);
}

/* Scale every 2-D weight: a random model with N(0, 0.02²) weights has nearly uniform
 * outputs; larger weights give peaked attention and distinct logits. */
static void sharpen(kd_model *m, float s) {
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i]->ndim == 2)
            for (int64_t j = 0; j < m->params[i]->n; j++) m->params[i]->data[j] *= s;
}

static int setup(void **state) {
    (void)state;
    const char *sh = kd_test_env("KD_DATA_DIR"), *tmp = kd_test_tmpdir();
    snprintf(g_aid, sizeof g_aid, "%s/aidreams", tmp);
    snprintf(g_syn, sizeof g_syn, "%s/synthetic", tmp);
    snprintf(g_swa, sizeof g_swa, "%s/swa", tmp);
    if (kd_test_import_aidreams(g_aid)) return -1;
    kd_err err;
    /* synthetic: C 256, F 512, GQA 4/2, untied head, sharpened weights, tok512 */
    kd_config c;
    kd_config_defaults(&c);
    c.hidden_size = 256, c.intermediate_size = 512, c.num_hidden_layers = 2, c.num_attention_heads = 4;
    c.num_key_value_heads = 2, c.head_dim = 64, c.vocab_size = 512, c.max_position_embeddings = 128;
    c.tie_word_embeddings = 0;
    kd_model m;
    if (kd_model_new(&m, &c, &err)) return -1;
    kd_model_init(&m, 3);
    sharpen(&m, 4.0f);
    int rc = kd_checkpoint_save(&m, g_syn, &err);
    kd_model_free(&m);
    if (rc || kd_test_sh("cp '%s/models/aidreams260K/tok512.bin' '%s/tokenizer.bin'", sh, g_syn)) return -1;
    char path[800];
    for (int p = 0; p < N_PRESETS; p++) {
        gguf_path(path, sizeof path, "aidreams", PRESETS[p]);
        if (kd_export_checkpoint(g_aid, PRESETS[p], path, &err)) return fprintf(stderr, "%s\n", err.msg), -1;
        gguf_path(path, sizeof path, "synthetic", PRESETS[p]);
        if (kd_export_checkpoint(g_syn, PRESETS[p], path, &err)) return fprintf(stderr, "%s\n", err.msg), -1;
    }
    /* GQA + sliding window (window 64 < context 512) */
    snprintf(path, sizeof path, "%s/configs/student-tiny-gqa-swa.json", kd_test_env("KD_SOURCE_DIR"));
    if (kd_config_load(&c, path, &err) || kd_model_new(&m, &c, &err)) return fprintf(stderr, "%s\n", err.msg), -1;
    kd_model_init(&m, 7);
    sharpen(&m, 6.0f);
    rc = kd_checkpoint_save(&m, g_swa, &err);
    kd_model_free(&m);
    return rc;
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d)) d = e;   /* NaN propagates */
        if (fabs((double)b[i]) > s) s = fabs((double)b[i]);
    }
    return d / (s > 0 ? s : 1);
}

static kd_infer *open_engine(const char *path, int dequantize, int64_t n_batch) {
    kd_err err;
    kd_infer_opts o;
    kd_infer_opts_init(&o);
    o.dequantize = dequantize;
    o.n_batch = n_batch;
    kd_infer *e = kd_infer_open(path, &o, &err);
    if (!e) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(e);
    return e;
}

/* All logits [n, V] of tokens from an empty cache. mode 0: one batch; 1: token by
 * token; 2: mixed (a batch of 7, 3 singles, a batch of 5, a batch of 2, the rest singly). */
static void engine_logits(kd_infer *e, const int32_t *t, int64_t n, int mode, float *out) {
    kd_err err;
    kd_infer_reset(e);
    int64_t i = 0;
    static const int64_t mixed[] = {7, 1, 1, 1, 5, 2};
    for (int step = 0; i < n; step++) {
        int64_t k = mode == 0 ? n : mode == 1 ? 1 : step < 6 ? mixed[step] : 1;
        if (k > n - i) k = n - i;
        int rc = kd_infer_eval(e, t + i, k, out + i * e->V, 1, NULL, &err);
        if (rc) fprintf(stderr, "%s\n", err.msg);
        assert_int_equal(rc, 0);
        i += k;
    }
}

/* BOS + TEXT, then token ids cycling through the vocabulary, up to n. */
static void test_tokens(const kd_infer *e, int32_t *t, int64_t n) {
    kd_tokens toks = {0};
    assert_int_equal(kd_tokenizer_encode(e->tok, TEXT, strlen(TEXT), KD_TOK_ENC_ADD_SPECIAL, &toks, NULL), 0);
    for (int64_t i = 0; i < n; i++) t[i] = i < (int64_t)toks.n ? toks.ids[i] : (int32_t)((i * 37 + 11) % e->V);
    kd_tokens_free(&toks);
}

/* ---- kernels ----------------------------------------------------------------------- */

static void test_kernels(void **state) {
    (void)state;
    const int32_t types[] = {KD_GGML_TYPE_F32, KD_GGML_TYPE_F16, KD_GGML_TYPE_BF16, KD_GGML_TYPE_Q8_0,
                             KD_GGML_TYPE_Q4_0, KD_GGML_TYPE_Q4_1, KD_GGML_TYPE_Q4_K, KD_GGML_TYPE_Q6_K};
    /* 3, 9 blocks: the VNNI kernels' odd tails; 1, 3, 5, 7 super-blocks: the K kernels' windows of 4 and tails */
    const int64_t cols_list[] = {7, 96, 172, 256, 288, 768, 1280, 1792};
    const int64_t rows = 37, nx = 9;
    kd_rng r;
    kd_rng_seed(&r, 42);
    const kd_isa best = kd_isa_best();
    fprintf(stderr, "kernel paths: scalar..%s\n", kd_isa_name(best));
    /* attention's softmax (kd_softmax_rows): the SIMD paths give the same bits; all within 2e-6 of double */
    {
        const int64_t lens[] = {1, 7, 16, 33, 100, 1000};
        float x[1000], y[1000], y0[1000];
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            const int64_t n = lens[li];
            kd_test_fill_normal(&r, x, n, 6.0f);
            x[n / 2] = -200.0f;   /* underflows */
            double m = -INFINITY, sum = 0;
            for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
            for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - m);
            for (int isa = KD_ISA_SCALAR; isa <= (int)best; isa++) {
                kd_isa_set((kd_isa)isa);
                memcpy(y, x, (size_t)n * sizeof *y);
                kd_softmax_rows(y, n, 1, n);
                if (isa == KD_ISA_AVX2) memcpy(y0, y, (size_t)n * sizeof *y);
                if (isa > KD_ISA_AVX2) assert_memory_equal(y, y0, (size_t)n * sizeof *y);
                for (int64_t i = 0; i < n; i++) {
                    const double want = exp((double)x[i] - m) / sum;
                    if (!(fabs(y[i] - want) <= 2e-6 * want + 1e-37))
                        fprintf(stderr, "softmax %s n %lld [%lld]: %.9g vs %.9g\n", kd_isa_name((kd_isa)isa),
                                (long long)n, (long long)i, y[i], want);
                    assert_true(fabs(y[i] - want) <= 2e-6 * want + 1e-37);
                }
            }
            kd_isa_set(best);
        }
    }
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
            const int32_t type = types[ti];
            const int64_t cols = cols_list[ci];
            if (kd_quant_check(type, cols, NULL)) continue;
            float *w = malloc((size_t)(rows * cols) * sizeof *w), *x = malloc((size_t)(nx * cols) * sizeof *x);
            float *wd = malloc((size_t)(rows * cols) * sizeof *wd), *ref = malloc((size_t)(nx * rows) * sizeof *ref);
            float *y = malloc((size_t)(nx * rows) * sizeof *y), *mag = malloc((size_t)(nx * rows) * sizeof *mag);
            void *q = malloc(kd_quant_row_size(type, cols) * (size_t)rows);
            kd_test_fill_normal(&r, w, rows * cols, 1.0f);
            for (int64_t i = 0; i < rows * cols; i += 97) w[i] *= 8.0f;   /* outliers */
            kd_test_fill_normal(&r, x, nx * cols, 1.0f);
            if (cols >= 32) {   /* a block of ties (d = 1: ±0.5, ±1.5, ...): roundf rounds them away from 0 */
                x[0] = 127.0f;
                for (int j = 1; j < 32; j++) x[j] = (j % 2 ? 1.0f : -1.0f) * ((float)(j / 2) + 0.5f);
            }
            assert_int_equal(kd_quantize_rows(type, w, q, rows, cols, NULL), 0);
            assert_int_equal(kd_dequantize_rows(type, q, wd, rows, cols, NULL), 0);
            for (int64_t i = 0; i < nx; i++)
                for (int64_t o = 0; o < rows; o++) {
                    double s = 0, a = 0;
                    for (int64_t c = 0; c < cols; c++) {
                        s += (double)wd[o * cols + c] * x[i * cols + c];
                        a += fabs((double)wd[o * cols + c] * x[i * cols + c]);
                    }
                    ref[i * rows + o] = (float)s;
                    mag[i * rows + o] = (float)a;
                }
            kd_qmat W;
            assert_int_equal(kd_qmat_init(&W, type, rows, cols, q, NULL), 0);
            const int nt = omp_get_max_threads();
            float *scratch = kd_alloc(kd_qmatmul_scratch(cols, nt) * sizeof(float), NULL);
            for (int isa = KD_ISA_SCALAR; isa <= (int)best; isa++) {
                assert_int_equal(kd_isa_set((kd_isa)isa), isa);
                for (int path = 0; path < 3; path++) {   /* matvec per row; matmul n=3 (dots); n=9 (gemm) */
                    const int64_t n = path == 0 ? 1 : path == 1 ? 3 : nx;
                    if (path == 0)
                        for (int64_t i = 0; i < nx; i++) kd_qmatvec(&W, x + i * cols, y + i * rows);
                    else
                        kd_qmatmul(&W, x, n, y, rows, scratch, nt);
                    const int64_t m = path == 0 ? nx : n;
                    double worst = 0;
                    for (int64_t i = 0; i < m * rows; i++) {
                        double e = fabs((double)y[i] - ref[i]) / (mag[i] + 1e-30);
                        if (!(e <= worst)) worst = e;
                    }
                    if (worst > 1e-5)
                        fprintf(stderr, "%s cols %lld %s path %d: error %.3g of sum|w*x|\n", kd_ggml_type_name(type),
                                (long long)cols, kd_isa_name((kd_isa)isa), path, worst);
                    assert_true(worst <= 1e-5);
                }
            }
            kd_isa_set(best);
            /* weight panels (kd_panel.h): within the same bound, and the same bits on every path */
            {
                kd_panel P;
                assert_int_equal(kd_panel_make(&P, &W, NULL), 0);
                float *y0 = malloc((size_t)(nx * rows) * sizeof *y0);
                for (int64_t n = 2; n <= nx; n += nx - 2) {   /* 2; 9: a group of 8 and a tail */
                    for (int isa = KD_ISA_SCALAR; isa <= (int)best; isa++) {
                        kd_isa_set((kd_isa)isa);
                        memset(y, 0xff, (size_t)(nx * rows) * sizeof *y);
                        kd_panel_matmul(&P, x, n, y, rows, nt);
                        if (isa == KD_ISA_SCALAR) memcpy(y0, y, (size_t)(n * rows) * sizeof *y);
                        assert_memory_equal(y, y0, (size_t)(n * rows) * sizeof *y);
                        for (int64_t i = 0; i < n * rows; i++) assert_true(fabs((double)y[i] - ref[i]) <= 1e-5 * mag[i]);
                    }
                    kd_isa_set(best);
                }
                free(y0);
                kd_panel_free(&P);
            }
            /* llama.cpp's numerics: activations rounded for the type, integer block dots */
            if (kd_q8_supported(type)) {
                float *xr = malloc((size_t)cols * sizeof *xr), *y8 = malloc((size_t)rows * sizeof *y8);
                float *y8s = malloc((size_t)rows * sizeof *y8s);
                void *xq = malloc(kd_act_q8_bytes(cols));
                for (int64_t i = 0; i < nx; i++) {
                    kd_act_round(type, x + i * cols, xr, cols);
                    /* every path quantizes the activations to the same bytes */
                    void *xq0 = calloc(1, kd_act_q8_bytes(cols));
                    kd_isa_set(KD_ISA_SCALAR);
                    kd_act_quantize(type, x + i * cols, xq0, cols);
                    for (int isa = KD_ISA_SCALAR; isa <= (int)best; isa++) {
                        kd_isa_set((kd_isa)isa);
                        memset(xq, 0, kd_act_q8_bytes(cols));
                        kd_act_quantize(type, x + i * cols, xq, cols);
                        assert_memory_equal(xq, xq0, kd_act_q8_bytes(cols));
                    }
                    free(xq0);
                    for (int isa = KD_ISA_SCALAR; isa <= (int)best; isa++) {
                        kd_isa_set((kd_isa)isa);
                        kd_qmatvec_q8(&W, xq, y8);
                        if (isa == KD_ISA_SCALAR) memcpy(y8s, y8, (size_t)rows * sizeof *y8);
                        for (int64_t o = 0; o < rows; o++) {
                            double s = 0, a = 0;
                            for (int64_t c = 0; c < cols; c++) {
                                s += (double)wd[o * cols + c] * xr[c];
                                a += fabs((double)wd[o * cols + c] * xr[c]);
                            }
                            /* every path: the scalar path's exact block sums, up to float order (Q4_1 too) */
                            if (!(fabs(y8[o] - y8s[o]) <= 1e-5 * a))
                                fprintf(stderr, "q8 %s cols %lld %s row %lld: %.8g vs scalar %.8g\n",
                                        kd_ggml_type_name(type), (long long)cols, kd_isa_name((kd_isa)isa),
                                        (long long)o, y8[o], y8s[o]);
                            assert_true(fabs(y8[o] - y8s[o]) <= 1e-5 * a);
                            /* Q4_1's min term uses Q8_1's F16 block sum, which the rounded floats lack */
                            const double tol = type == KD_GGML_TYPE_Q4_1 ? 2e-3 : 1e-5;
                            if (!(fabs(y8[o] - s) <= tol * a))
                                fprintf(stderr, "q8 %s cols %lld %s row %lld: %.8g vs %.8g\n", kd_ggml_type_name(type),
                                        (long long)cols, kd_isa_name((kd_isa)isa), (long long)o, y8[o], s);
                            assert_true(fabs(y8[o] - s) <= tol * a);
                        }
                    }
                    kd_isa_set(best);
                }
                free(xr), free(y8), free(y8s), free(xq);
            }
            kd_free(scratch);
            free(w), free(x), free(wd), free(ref), free(y), free(mag), free(q);
        }
}

/* ---- parity with the training forward ---------------------------------------------- */

/* Engine logits on path (batched, token by token, mixed) against kd_model_logits of ck. */
static void check_parity(const char *ck, const char *path, int64_t n) {
    kd_err err;
    kd_model m;
    assert_int_equal(kd_checkpoint_load(&m, ck, &err), 0);
    kd_infer *e = open_engine(path, 0, 0);
    int32_t *t = malloc((size_t)n * sizeof *t);
    if (e->tok) test_tokens(e, t, n);
    else
        for (int64_t i = 0; i < n; i++) t[i] = (int32_t)((i * 101 + 1) % e->V);
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    g.no_grad = 1;
    kd_tensor *ref = kd_model_logits(&g, &m, t, 1, n);
    float *out = malloc((size_t)(n * e->V) * sizeof *out);
    for (int mode = 0; mode < 3; mode++) {
        engine_logits(e, t, n, mode, out);
        double r = rel_err(out, ref->data, n * e->V);
        fprintf(stderr, "parity %-40s %s: %.2e relative\n", strrchr(path, '/') + 1,
                mode == 0 ? "batched    " : mode == 1 ? "one by one " : "mixed      ", r);
        assert_true(r <= 1e-4);
    }
    /* the last-token logits and the hidden states of a batch */
    float *last = malloc((size_t)e->V * sizeof *last), *hid = malloc((size_t)(n * e->C) * sizeof *hid);
    kd_infer_reset(e);
    assert_int_equal(kd_infer_eval(e, t, n, last, 0, hid, &err), 0);
    assert_true(rel_err(last, ref->data + (n - 1) * e->V, e->V) <= 1e-4);
    kd_graph_reset(&g);
    kd_tensor *h = kd_model_hidden(&g, &m, t, 1, n);
    assert_true(rel_err(hid, h->data, n * e->C) <= 1e-4);
    free(last), free(hid), free(out), free(t);
    kd_graph_free(&g);
    kd_infer_close(e);
    kd_model_free(&m);
}

static void test_parity_aidreams(void **state) {
    (void)state;
    char path[800];
    check_parity(g_aid, g_aid, 100);
    gguf_path(path, sizeof path, "aidreams", "f32");
    check_parity(g_aid, path, 100);
}

static void test_parity_gqa_swa(void **state) {
    (void)state;
    check_parity(g_swa, g_swa, 160);   /* 2.5 windows of 64 */
    /* the window matters: without it the logits past position 64 differ */
    kd_err err;
    kd_model m;
    assert_int_equal(kd_checkpoint_load(&m, g_swa, &err), 0);
    kd_infer *e = kd_infer_from_model(&m, NULL, &err);
    assert_non_null(e);
    const int64_t n = 160;
    int32_t t[160];
    for (int64_t i = 0; i < n; i++) t[i] = (int32_t)((i * 101 + 1) % e->V);
    float *a = malloc((size_t)(n * e->V) * sizeof *a), *b = malloc((size_t)(n * e->V) * sizeof *b);
    engine_logits(e, t, n, 0, a);
    e->cfg.sliding_window = 0;
    engine_logits(e, t, n, 0, b);
    double first = rel_err(a, b, 64 * e->V), rest = rel_err(a + 64 * e->V, b + 64 * e->V, (n - 64) * e->V);
    fprintf(stderr, "window off: positions < 64 differ by %.2e, later ones by %.2e\n", first, rest);
    assert_true(first <= 1e-6 && rest > 1e-3);
    free(a), free(b);
    kd_infer_close(e);
    kd_model_free(&m);
}

/* n_seq sequences of n tokens stepped together through kd_infer_eval_seqs against
 * kd_model_logits on the batch [n_seq, n]; each sequence its own tokens. */
static void check_parity_seqs(const char *ck, int64_t S, int64_t n, int panels) {
    kd_err err;
    kd_model m;
    assert_int_equal(kd_checkpoint_load(&m, ck, &err), 0);
    kd_infer_opts o;
    kd_infer_opts_init(&o);
    o.n_ctx = n;
    o.n_seq = S;
    o.panels = panels;
    kd_infer *e = kd_infer_from_model(&m, &o, &err);
    assert_non_null(e);
    assert_true(panels ? e->layers[0].wq.panel && e->head.panel : !e->layers[0].wq.panel);
    const int64_t V = e->V;
    int32_t *t = malloc((size_t)(S * n) * sizeof *t), cur[8];
    for (int64_t s = 0; s < S; s++)
        for (int64_t i = 0; i < n; i++) t[s * n + i] = (int32_t)((i * (101 + 6 * s) + 1 + s) % V);
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    g.no_grad = 1;
    kd_tensor *ref = kd_model_logits(&g, &m, t, S, n);   /* [S, n, V] */
    float *step = malloc((size_t)(S * V) * sizeof *step), *out = malloc((size_t)(S * n * V) * sizeof *out);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t s = 0; s < S; s++) cur[s] = t[s * n + i];
        assert_int_equal(kd_infer_eval_seqs(e, cur, S, step, &err), 0);
        for (int64_t s = 0; s < S; s++) memcpy(out + (s * n + i) * V, step + s * V, (size_t)V * sizeof *out);
    }
    double r = rel_err(out, ref->data, S * n * V);
    fprintf(stderr, "parity %-18s %lld sequences in lockstep%s: %.2e relative\n", strrchr(ck, '/') + 1, (long long)S,
            panels ? " (weight panels)" : "", r);
    assert_true(r <= 1e-4);
    /* the cache is full; more sequences than the engine holds are refused */
    assert_int_equal(kd_infer_eval_seqs(e, cur, S, step, &err), -1);
    assert_non_null(strstr(err.msg, "context full"));
    kd_infer_reset(e);
    assert_int_equal(kd_infer_eval_seqs(e, cur, S + 1, step, &err), -1);
    assert_non_null(strstr(err.msg, "n_seq"));
    free(step), free(out), free(t);
    kd_graph_free(&g);
    kd_infer_close(e);
    kd_model_free(&m);
}

static void test_parity_seqs(void **state) {
    (void)state;
    check_parity_seqs(g_aid, 5, 100, 0);
    check_parity_seqs(g_aid, 3, 100, 0);
    check_parity_seqs(g_swa, 5, 160, 0);   /* GQA, 2.5 windows of 64 */
    check_parity_seqs(g_aid, 5, 100, 1);
    check_parity_seqs(g_swa, 3, 160, 1);
}

/* ---- quantized weights: the kernels are exact ---------------------------------------- */

static void check_quantized(const char *model, const char *preset) {
    char path[800];
    gguf_path(path, sizeof path, model, preset);
    kd_infer *q = open_engine(path, 0, 0), *f = open_engine(path, 1, 0);
    const int64_t n = 40, V = q->V;
    int32_t t[40];
    test_tokens(q, t, n);
    float *ref = malloc((size_t)(n * V) * sizeof *ref), *out = malloc((size_t)(n * V) * sizeof *out);
    engine_logits(f, t, n, 0, ref);
    char types[128];
    kd_infer_describe_types(q, types, sizeof types);
    const kd_isa best = kd_isa_best();
    double worst = 0;
    for (int isa = KD_ISA_SCALAR; isa <= (int)best; isa++) {
        kd_isa_set((kd_isa)isa);
        for (int mode = 0; mode < 3; mode++) {
            engine_logits(q, t, n, mode, out);
            double r = rel_err(out, ref, n * V);
            worst = r > worst ? r : worst;
            if (r > 1e-4) fprintf(stderr, "%s %s mode %d: %.2e\n", path, kd_isa_name((kd_isa)isa), mode, r);
            assert_true(r <= 1e-4);
        }
    }
    kd_isa_set(best);
    fprintf(stderr, "quantized %-10s %-7s (%s): worst %.2e relative to the dequantized F32 engine, all paths\n", model,
            preset, types, worst);
    free(ref), free(out);
    kd_infer_close(q);
    kd_infer_close(f);
}

static void test_quantized_exact(void **state) {
    (void)state;
    for (int p = 1; p < N_PRESETS; p++) {
        check_quantized("aidreams", PRESETS[p]);
        check_quantized("synthetic", PRESETS[p]);
    }
    /* the synthetic q4_k_m really holds Q4_K and Q6_K */
    char path[800], types[128];
    gguf_path(path, sizeof path, "synthetic", "q4_k_m");
    kd_infer *e = open_engine(path, 0, 0);
    kd_infer_describe_types(e, types, sizeof types);
    assert_non_null(strstr(types, "Q4_K"));
    assert_non_null(strstr(types, "Q6_K"));
    kd_infer_close(e);
}

/* ---- llama.cpp ------------------------------------------------------------------------- */

static int have_node(void) {
    char mod[700];
    snprintf(mod, sizeof mod, "%s/tests/node/node_modules/node-llama-cpp/package.json", kd_test_env("KD_SOURCE_DIR"));
    if (!kd_file_exists(mod) || kd_test_sh("node -e 'process.exit(+process.versions.node.split(\".\")[0] >= 20 ? 0 : 1)' "
                                           "2>/dev/null")) {
        fprintf(stderr, "SKIP llama.cpp checks: node >= 20 or %s missing (tools/setup.sh installs them)\n", mod);
        return 0;
    }
    return 1;
}

static void ids_str(char *buf, size_t n, const int32_t *t, int64_t k) {
    size_t used = 0;
    buf[0] = '\0';
    for (int64_t i = 0; i < k && used + 12 < n; i++) used += (size_t)snprintf(buf + used, n - used, "%s%d", i ? " " : "", t[i]);
}

/* Teacher-forced log-probabilities: kd's engine against llama.cpp, by preset.
 * llama.cpp's CPU backend rounds the input of each product to the weight type's
 * "vec_dot_type" (F32 weights: not at all; F16: to F16, relative 2^-11; BF16: to
 * BF16, 2^-8; Q8_0/Q4_0/Q4_1: to Q8_0/Q8_1 blocks, up to 1/254 of a block's largest
 * value; Q4_K/Q6_K: to Q8_K blocks) and then multiplies in integers; kd keeps the
 * activations in F32, so its log-probs are the exact model's. The plain tolerance
 * is about 3× the largest difference measured on aidreams260K (44 positions).
 * Why the difference is that rounding: kd's engine with ggml_rounding = 1 rounds the
 * same way (and, token by token as run here, multiplies quantized weights with the
 * integer kernels of kd_matvec_q8.c), and then agrees with llama.cpp to ~1e-6 at most
 * positions (measured in a Release build; asserted: a median at least 5× smaller
 * than without the rounding). It cannot agree everywhere: an F32 difference of one
 * ulp before a rounding (a different exp, summation order or build) sometimes moves a
 * value across a rounding boundary, and the later layers amplify that. Not
 * reproduced that way: F16 (median 6.6e-4 either way on this CPU). */
static int rounding_reproduces(const char *preset) { return strcmp(preset, "f32") && strcmp(preset, "f16"); }

static double lp_tolerance(const char *preset) {
    if (!strcmp(preset, "f32")) return 1e-3;
    if (!strcmp(preset, "f16")) return 1e-2;
    if (!strcmp(preset, "bf16")) return 8e-2;
    return 0.3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Max and median over positions of |log p_kd(forced[t+1]) − llama.cpp's|. */
static double lp_diff(const float *lg, int64_t V, const int32_t *forced, int64_t nf, const cJSON *llp, double *median) {
    double d[64];
    for (int64_t t = 0; t + 1 < nf; t++) {
        const float *z = lg + t * V;
        double kd_lp = (double)z[forced[t + 1]] - (double)kd_logsumexp(z, V);
        d[t] = fabs(kd_lp - cJSON_GetArrayItem(llp, (int)t)->valuedouble);
    }
    qsort(d, (size_t)(nf - 1), sizeof *d, cmp_double);
    *median = d[(nf - 1) / 2];
    return d[nf - 2];
}

/* One file: greedy continuation (asserted for aidreams) and teacher-forced log-probs. */
static void llama_cpp_case(const char *model, const char *preset, int check_greedy, int check_rounding) {
    const char *src = kd_test_env("KD_SOURCE_DIR");
    {
        char path[800], jpath[900], prompt_s[512], forced_s[4096];
        gguf_path(path, sizeof path, model, preset);
        kd_infer *e = open_engine(path, 0, 0);
        kd_err err;
        /* greedy: BOS + "The robot", 48 tokens */
        kd_tokens pr = {0};
        assert_int_equal(kd_tokenizer_encode(e->tok, "The robot", 9, KD_TOK_ENC_ADD_SPECIAL, &pr, &err), 0);
        kd_sampler s;
        assert_int_equal(kd_sampler_init(&s, e->V, 0.0f, 0, 1.0f, 1, &err), 0);
        int32_t gen[48];
        int64_t ng;
        assert_int_equal(kd_infer_generate(e, pr.ids, (int64_t)pr.n, 48, &s, gen, &ng, NULL, NULL, &err), 0);
        kd_sampler_free(&s);
        /* teacher forcing on BOS + TEXT, plain and with llama.cpp's rounding */
        int32_t forced[64];
        test_tokens(e, forced, 64);
        kd_tokens tt = {0};
        assert_int_equal(kd_tokenizer_encode(e->tok, TEXT, strlen(TEXT), KD_TOK_ENC_ADD_SPECIAL, &tt, &err), 0);
        const int64_t nf = (int64_t)tt.n;
        kd_tokens_free(&tt);
        float *lg = malloc((size_t)(nf * e->V) * sizeof *lg), *lr = malloc((size_t)(nf * e->V) * sizeof *lr);
        engine_logits(e, forced, nf, 0, lg);
        kd_infer_opts o;
        kd_infer_opts_init(&o);
        o.ggml_rounding = 1;
        kd_infer *er = kd_infer_open(path, &o, &err);
        assert_non_null(er);
        engine_logits(er, forced, nf, 1, lr);   /* token by token, as a second check of the decode path */
        kd_infer_close(er);
        ids_str(prompt_s, sizeof prompt_s, pr.ids, (int64_t)pr.n);
        ids_str(forced_s, sizeof forced_s, forced, nf);
        snprintf(jpath, sizeof jpath, "%s.infer.json", path);
        int rc = kd_test_sh("cd '%s/tests/node' && node infer_check.mjs '%s' --prompt '%s' --n 48 --forced '%s' >'%s'",
                            src, path, prompt_s, forced_s, jpath);
        if (rc) kd_test_sh("cat '%s' >&2", jpath);
        assert_int_equal(rc, 0);
        cJSON *j = kd_json_load(jpath, &err);
        assert_non_null(j);
        cJSON *lgen = cJSON_GetObjectItem(j, "generated"), *llp = cJSON_GetObjectItem(j, "forced_logprobs");
        int n_lgen = cJSON_GetArraySize(lgen), same = 0;
        while (same < ng && same < n_lgen && cJSON_GetArrayItem(lgen, same)->valueint == gen[same]) same++;
        const int both_stop = same == ng && same == n_lgen;   /* identical, EOS on both or the length */
        assert_int_equal(cJSON_GetArraySize(llp), nf - 1);
        double plain_med, rounded_med;
        const double plain = lp_diff(lg, e->V, forced, nf, llp, &plain_med);
        const double rounded = lp_diff(lr, e->V, forced, nf, llp, &rounded_med);
        fprintf(stderr, "llama.cpp %-9s %-7s greedy: %d of %lld/%d tokens equal%s; teacher-forced log-probs over %lld "
                        "positions: |diff| max %.2e median %.2e (tolerance %.0e); with ggml's rounding: max %.2e "
                        "median %.2e\n",
                model, preset, same, (long long)ng, n_lgen, both_stop ? " (identical)" : "", (long long)nf - 1, plain,
                plain_med, lp_tolerance(preset), rounded, rounded_med);
        if (check_greedy) assert_true(same >= 32 || both_stop);
        assert_true(plain <= lp_tolerance(preset));
        if (check_rounding && rounding_reproduces(preset)) assert_true(rounded_med * 5 < plain_med);
        cJSON_Delete(j);
        free(lg), free(lr);
        kd_tokens_free(&pr);
        kd_infer_close(e);
    }
}

static void test_llama_cpp(void **state) {
    (void)state;
    if (!have_node()) return;
    for (int p = 0; p < N_PRESETS; p++) llama_cpp_case("aidreams", PRESETS[p], 1, 1);
    /* Q4_K and Q6_K for real (aidreams' 64-wide rows fall back to Q8_0): a random
     * model's near-ties make its greedy continuation a coin toss, so log-probs only.
     * The 256-wide Q4_0 file takes another llama.cpp path (repacked/AMX weights) whose
     * activation rounding kd does not reproduce: its tolerance only. */
    llama_cpp_case("synthetic", "q4_k_m", 0, 1);
    llama_cpp_case("synthetic", "q4_0", 0, 0);
}

/* ---- kd eval, kd run, kd logits ----------------------------------------------------------- */

static cJSON *run_json(const char *cmd_fmt, const char *a, const char *b) {
    char out[800], cmd[4096];
    snprintf(out, sizeof out, "%s/eval.json", kd_test_tmpdir());
    snprintf(cmd, sizeof cmd, cmd_fmt, a, b);
    assert_int_equal(kd_test_sh("'%s' %s >'%s'", kd_test_env("KD_BIN"), cmd, out), 0);
    kd_test_sh("cat '%s' >&2", out);
    size_t len;
    char *text = kd_read_file(out, &len, NULL);
    assert_non_null(text);
    assert_non_null(memchr(text, '\n', len));
    assert_true(strchr(text, '\n') == text + len - 1);   /* one line: one JSON object */
    cJSON *j = kd_json_parse(text, len, out, NULL);
    free(text);
    assert_non_null(j);
    return j;
}

static double jnum(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(j, key);
    assert_non_null(v);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void test_eval(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN"), *tmp = kd_test_tmpdir();
    char topk[700], full[700], f32[800], txt[700];
    snprintf(topk, sizeof topk, "%s/self_topk.h5", tmp);
    snprintf(full, sizeof full, "%s/self_full.h5", tmp);
    gguf_path(f32, sizeof f32, "aidreams", "f32");
    assert_int_equal(kd_test_sh("'%s' teacher dump --teacher '%s' --generate 8 --seq-len 64 --topk 32 --out '%s' --quiet "
                                ">/dev/null", kd, g_aid, topk), 0);
    assert_int_equal(kd_test_sh("'%s' teacher dump --teacher '%s' --generate 4 --seq-len 64 --full --dtype f32 --out '%s' "
                                "--quiet >/dev/null", kd, g_aid, full), 0);
    cJSON *a = run_json("eval --model '%s' --data '%s'", g_aid, topk);
    const double ce = jnum(a, "ce"), kl = jnum(a, "kl"), top1 = jnum(a, "top1");
    assert_int_equal((int)jnum(a, "tokens"), 8 * 64);
    assert_true(fabs(jnum(a, "ppl") - exp(ce)) <= 1e-6 * exp(ce));
    fprintf(stderr, "teacher on its own top-32 f16 dump: ce %.5f, kl %.2e, top1 %.4f\n", ce, kl, top1);
    assert_true(kl >= -1e-6 && kl < 1e-3);   /* only the f16 storage of the log-probs */
    assert_true(top1 >= 0.99);
    cJSON *b = run_json("eval --model '%s' --data '%s'", f32, topk);   /* the GGUF export: the same model */
    assert_true(fabs(jnum(b, "ce") - ce) <= 1e-5 && fabs(jnum(b, "kl") - kl) <= 1e-5);
    assert_true(jnum(b, "top1") == top1);
    cJSON *c = run_json("eval --model '%s' --data '%s'", g_aid, full);
    fprintf(stderr, "teacher on its own full f32 dump: kl %.2e, top1 %.4f\n", jnum(c, "kl"), jnum(c, "top1"));
    assert_true(fabs(jnum(c, "kl")) < 1e-5 && jnum(c, "top1") == 1.0);
    cJSON *d = run_json("eval --model '%s' --data '%s' --max-tokens 100", g_aid, topk);
    assert_int_equal((int)jnum(d, "tokens"), 100);
    cJSON_Delete(a), cJSON_Delete(b), cJSON_Delete(c), cJSON_Delete(d);

    /* text: ce is the mean −log p of each next token of BOS + text */
    snprintf(txt, sizeof txt, "%s/story.txt", tmp);
    assert_int_equal(kd_write_file_atomic(txt, TEXT, strlen(TEXT), NULL), 0);
    cJSON *t = run_json("eval --model '%s' --text '%s'", f32, txt);
    assert_null(cJSON_GetObjectItem(t, "kl"));
    kd_infer *e = open_engine(f32, 0, 0);
    kd_tokens toks = {0};
    assert_int_equal(kd_tokenizer_encode(e->tok, TEXT, strlen(TEXT), KD_TOK_ENC_ADD_SPECIAL, &toks, NULL), 0);
    const int64_t n = (int64_t)toks.n;
    float *lg = malloc((size_t)(n * e->V) * sizeof *lg);
    engine_logits(e, toks.ids, n, 0, lg);
    double want = 0;
    for (int64_t i = 0; i + 1 < n; i++) want += (double)kd_logsumexp(lg + i * e->V, e->V) - lg[i * e->V + toks.ids[i + 1]];
    want /= (double)(n - 1);
    assert_int_equal((int)jnum(t, "tokens"), n - 1);
    assert_true(fabs(jnum(t, "ce") - want) <= 1e-5 && fabs(jnum(t, "ppl") - exp(want)) <= 1e-4 * exp(want));
    cJSON_Delete(t);
    /* --ctx 8: windows of 8 inputs, each starting a fresh cache */
    t = run_json("eval --model '%s' --text '%s' --ctx 8", f32, txt);
    assert_int_equal((int)jnum(t, "tokens"), n - 1);
    double win = 0;
    for (int64_t w0 = 0; w0 < n - 1; w0 += 8) {
        const int64_t k = n - 1 - w0 < 8 ? n - 1 - w0 : 8;
        engine_logits(e, toks.ids + w0, k, 0, lg);
        for (int64_t i = 0; i < k; i++) win += (double)kd_logsumexp(lg + i * e->V, e->V) - lg[i * e->V + toks.ids[w0 + i + 1]];
    }
    win /= (double)(n - 1);
    assert_true(fabs(jnum(t, "ce") - win) <= 1e-5 && fabs(win - want) > 1e-3);
    cJSON_Delete(t);
    free(lg);
    kd_tokens_free(&toks);
    kd_infer_close(e);
    assert_int_equal(kd_test_sh("'%s' eval --model '%s' 2>/dev/null", kd, g_aid), 2);
    assert_int_equal(kd_test_sh("'%s' eval --model '%s' --text '%s/missing.txt' 2>/dev/null", kd, g_aid, tmp), 1);
}

static void test_run_and_logits(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN"), *tmp = kd_test_tmpdir();
    char q8[800], out[700];
    gguf_path(q8, sizeof q8, "aidreams", "q8_0");
    kd_infer *e = open_engine(q8, 0, 0);
    kd_tokens pr = {0};
    assert_int_equal(kd_tokenizer_encode(e->tok, "The robot", 9, KD_TOK_ENC_ADD_SPECIAL, &pr, NULL), 0);
    kd_sampler s;
    assert_int_equal(kd_sampler_init(&s, e->V, 0.0f, 0, 1.0f, 1, NULL), 0);
    int32_t gen[20];
    int64_t ng;
    assert_int_equal(kd_infer_generate(e, pr.ids, (int64_t)pr.n, 20, &s, gen, &ng, NULL, NULL, NULL), 0);
    kd_sampler_free(&s);
    char want[512], got[512] = {0};
    ids_str(want, sizeof want, gen, ng);
    snprintf(out, sizeof out, "%s/run.txt", tmp);
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt 'The robot' -n 20 --temp 0 --ids >'%s' 2>/dev/null", kd,
                                q8, out), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(fgets(got, sizeof got, f));
    fclose(f);
    got[strcspn(got, "\n")] = '\0';
    assert_string_equal(got, want);
    /* --fast: llama.cpp's numerics, the engine with ggml_rounding */
    {
        kd_infer_opts o;
        kd_infer_opts_init(&o);
        o.ggml_rounding = 1;
        kd_infer *ef = kd_infer_open(q8, &o, NULL);
        assert_non_null(ef);
        assert_int_equal(kd_sampler_init(&s, ef->V, 0.0f, 0, 1.0f, 1, NULL), 0);
        assert_int_equal(kd_infer_generate(ef, pr.ids, (int64_t)pr.n, 20, &s, gen, &ng, NULL, NULL, NULL), 0);
        kd_sampler_free(&s);
        kd_infer_close(ef);
        ids_str(want, sizeof want, gen, ng);
        assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt 'The robot' -n 20 --temp 0 --ids --fast >'%s' "
                                    "2>/dev/null", kd, q8, out), 0);
        f = fopen(out, "r");
        assert_non_null(fgets(got, sizeof got, f));
        fclose(f);
        got[strcspn(got, "\n")] = '\0';
        assert_string_equal(got, want);
    }
    /* text output starts with the prompt; sampling is reproducible by seed */
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt 'The robot' -n 30 --seed 5 2>/dev/null | grep -q '^The robot'",
                                kd, g_aid), 0);
    assert_int_equal(kd_test_sh("a=$('%s' run --model '%s' --prompt 'The' -n 30 --seed 9 --temp 1.2 2>/dev/null); "
                                "b=$('%s' run --model '%s' --prompt 'The' -n 30 --seed 9 --temp 1.2 2>/dev/null); "
                                "[ \"$a\" = \"$b\" ]", kd, q8, kd, q8), 0);
    /* kd logits on a GGUF goes through the engine */
    char lpath[700];
    snprintf(lpath, sizeof lpath, "%s/gguf_logits.f32", tmp);
    assert_int_equal(kd_test_sh("'%s' logits --model '%s' --tokens '1 368 430 429' --out '%s'", kd, q8, lpath), 0);
    size_t len;
    float *lg = (float *)kd_read_file(lpath, &len, NULL);
    assert_int_equal(len, 4 * e->V * sizeof(float));
    float *ref = malloc(len);
    int32_t t4[4] = {1, 368, 430, 429};
    engine_logits(e, t4, 4, 0, ref);
    assert_true(rel_err(lg, ref, 4 * e->V) <= 1e-6);
    free(lg), free(ref);
    kd_tokens_free(&pr);
    kd_infer_close(e);
    /* usage and input errors */
    assert_int_equal(kd_test_sh("'%s' run --model '%s' 2>/dev/null", kd, q8), 2);
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt x --top-p 0 2>/dev/null", kd, q8), 2);
    assert_int_equal(kd_test_sh("'%s' run --model '%s/nothing.gguf' --prompt x 2>/dev/null", kd, tmp), 1);
    assert_int_equal(kd_test_sh("'%s' run --help | grep -q top-p", kd), 0);
}

static void test_sampling(void **state) {
    (void)state;
    const float lg[5] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f), -INFINITY};
    kd_sampler s;
    int counts[5];
    struct { float temp; int64_t k; float p; double want[5]; } cases[] = {
        {1.0f, 0, 1.0f, {0.5, 0.3, 0.15, 0.05, 0}},
        {1.0f, 2, 1.0f, {0.625, 0.375, 0, 0, 0}},          /* top-k 2 */
        {1.0f, 0, 0.7f, {0.625, 0.375, 0, 0, 0}},          /* nucleus {0.5, 0.3} reaches 0.7 */
        {1.0f, 0, 0.9f, {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0, 0}},
        {0.5f, 0, 1.0f, {0.25 / 0.3650, 0.09 / 0.3650, 0.0225 / 0.3650, 0.0025 / 0.3650, 0}},   /* p^(1/T) */
        {0.0f, 0, 1.0f, {1, 0, 0, 0, 0}},                   /* greedy */
        {2.0f, 1, 1.0f, {1, 0, 0, 0, 0}},                   /* top-k 1 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assert_int_equal(kd_sampler_init(&s, 5, cases[c].temp, cases[c].k, cases[c].p, 77, NULL), 0);
        memset(counts, 0, sizeof counts);
        const int N = 40000;
        for (int i = 0; i < N; i++) counts[kd_sample(&s, lg)]++;
        for (int i = 0; i < 5; i++) assert_true(fabs((double)counts[i] / N - cases[c].want[i]) < 0.01);
        kd_sampler_free(&s);
    }
    /* same seed, same draws */
    kd_sampler a, b;
    kd_sampler_init(&a, 5, 1.0f, 3, 0.9f, 5, NULL);
    kd_sampler_init(&b, 5, 1.0f, 3, 0.9f, 5, NULL);
    for (int i = 0; i < 100; i++) assert_int_equal(kd_sample(&a, lg), kd_sample(&b, lg));
    kd_sampler_free(&a), kd_sampler_free(&b);
    assert_int_equal(kd_sampler_init(&s, 5, -1.0f, 0, 1.0f, 1, NULL), -1);
    assert_int_equal(kd_sampler_init(&s, 5, 1.0f, 0, 0.0f, 1, NULL), -1);
    float tie[4] = {1, 3, 3, 2};
    assert_int_equal(kd_argmax(tie, 4), 1);
}

static void test_errors(void **state) {
    (void)state;
    kd_err err;
    kd_infer_opts o;
    kd_infer_opts_init(&o);
    o.n_ctx = 8;
    kd_infer *e = kd_infer_open(g_aid, &o, &err);
    assert_non_null(e);
    int32_t t[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_int_equal(kd_infer_eval(e, t, 9, NULL, 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "context full"));
    assert_int_equal(e->n_past, 0);
    t[2] = 512;
    assert_int_equal(kd_infer_eval(e, t, 3, NULL, 0, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    kd_infer_close(e);
    /* a GGUF that is not a llama model, and a truncated one */
    char path[800], bad[800];
    gguf_path(path, sizeof path, "aidreams", "q4_0");
    snprintf(bad, sizeof bad, "%s/bad.gguf", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("head -c 5000 '%s' >'%s'", path, bad), 0);
    assert_null(kd_infer_open(bad, NULL, &err));
    fprintf(stderr, "truncated: %s\n", err.msg);
    kd_gguf_writer *w = kd_gguf_writer_new(&err);
    assert_int_equal(kd_gguf_writer_add_str(w, "general.architecture", "gpt2", (size_t)-1, &err), 0);
    assert_int_equal(kd_gguf_writer_write(w, bad, &err), 0);
    kd_gguf_writer_free(w);
    assert_null(kd_infer_open(bad, NULL, &err));
    assert_non_null(strstr(err.msg, "gpt2"));
    assert_null(kd_infer_open("/nonexistent/model", NULL, &err));
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels),         cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_parity_aidreams), cmocka_unit_test(test_parity_gqa_swa),
        cmocka_unit_test(test_parity_seqs),
        cmocka_unit_test(test_quantized_exact), cmocka_unit_test(test_llama_cpp),
        cmocka_unit_test(test_eval),            cmocka_unit_test(test_run_and_logits),
        cmocka_unit_test(test_errors),
    };
    return KD_RUN_GROUP(tests, setup, NULL);
}
