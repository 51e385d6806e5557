/*
 * test_awq.c — AWQ and RTN (quant/kd_awq.h, kd quantize).
 *
 * Synthetic students with salient channels (a few embedding columns and norm
 * weights scaled up, so some input channels carry far larger activations,
 * as in trained models) check the algorithm's invariants:
 *   - folding the scales leaves the FP32 model's logits unchanged (≤ 1e-5 of
 *     their scale) before quantization, with and without GQA;
 *   - the search never increases the block error it measures over ratio 0,
 *     and an independent recomputation of the block errors on the output
 *     model (kd_awq_block_errors: its own folded norms and weights) agrees
 *     with the record and is never above plain rounding;
 *   - Q4_K targets quantize whole 256-wide rows with the q4_k_m recipe's
 *     types (Q6_K where use_more_bits picks, Q8_0 fallbacks);
 *   - the reference int4 quantizer (--group-size) has ≤ 16 evenly spaced
 *     levels per group spanning its min and max.
 * The real aidreams260K teacher goes through the command: the RTN and AWQ
 * quantize.json records, RTN leaving the weights bit for bit, the tokenizer
 * copied, `kd quantize eval`, and an AWQ checkpoint exported as Q4_0 GGUF and
 * loaded and run by llama.cpp (node-llama-cpp; skipped when node is missing).
 * Bad inputs fail with clear messages.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "quant/kd_awq.h"
#include "student/kd_checkpoint.h"
#include "format/kd_gguf.h"
#include "data/kd_dump.h"

static char g_teacher[600], g_dump[600];

/* ---- helpers ---------------------------------------------------------------------------- */

static void make_model(kd_model *m, int64_t C, int64_t F, int64_t L, int64_t H, int64_t Hkv, int64_t V, uint64_t seed) {
    kd_config c;
    kd_config_defaults(&c);
    c.hidden_size = C, c.intermediate_size = F, c.num_hidden_layers = L, c.num_attention_heads = H;
    c.num_key_value_heads = Hkv, c.head_dim = C / H, c.vocab_size = V, c.max_position_embeddings = 128;
    c.tie_word_embeddings = 1;
    kd_err err;
    assert_int_equal(kd_model_new(m, &c, &err), 0);
    kd_model_init(m, seed);
    /* salient channels: large activations in a few input channels of every layer */
    for (int64_t v = 0; v < V; v++)
        for (int64_t k = 0; k < 4; k++) m->embed->data[v * C + (k * 13 + 3) % C] *= 12.0f;
    for (int64_t l = 0; l < L; l++)
        for (int64_t k = 0; k < 3; k++) {
            m->layers[l].attn_norm->data[(k * 29 + 5) % C] *= 6.0f;
            m->layers[l].ffn_norm->data[(k * 17 + 11) % C] *= 6.0f;
        }
}

static void copy_model(kd_model *dst, const kd_model *src) {
    kd_err err;
    assert_int_equal(kd_model_new(dst, &src->cfg, &err), 0);
    for (int i = 0; i < src->n_params; i++)
        memcpy(dst->params[i]->data, src->params[i]->data, (size_t)src->params[i]->n * sizeof(float));
}

static int32_t *random_tokens(int64_t n, int64_t V, uint64_t seed) {
    kd_rng r;
    kd_rng_seed(&r, seed);
    int32_t *t = malloc((size_t)n * sizeof *t);
    for (int64_t i = 0; i < n; i++) t[i] = (int32_t)kd_rng_below(&r, (uint64_t)V);
    return t;
}

static float *logits(kd_model *m, const int32_t *tok, int64_t B, int64_t T) {
    kd_err err;
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    g.no_grad = 1;
    kd_tensor *y = kd_model_logits(&g, m, tok, B, T);
    float *out = malloc((size_t)y->n * sizeof *out);
    memcpy(out, y->data, (size_t)y->n * sizeof *out);
    kd_graph_free(&g);
    return out;
}

static cJSON *group_rec(cJSON *rec, int layer, int k) {
    cJSON *l = cJSON_GetArrayItem(cJSON_GetObjectItem(rec, "layers"), layer);
    assert_non_null(l);
    return cJSON_GetArrayItem(cJSON_GetObjectItem(l, "scales"), k);
}

static double num(cJSON *o, const char *key) {
    cJSON *v = cJSON_GetObjectItem(o, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

/* ---- folding is exact --------------------------------------------------------------------- */

static void check_fold(int64_t Hkv) {
    kd_model m, q;
    make_model(&m, 64, 128, 2, 4, Hkv, 96, 7);
    copy_model(&q, &m);
    const int64_t B = 6, T = 24;
    int32_t *tok = random_tokens(B * T, 96, 1);
    kd_awq_opts o;
    kd_awq_opts_init(&o);
    o.force_ratio = 0.5, o.clip = 0;
    cJSON *rec = cJSON_CreateObject();
    kd_err err;
    assert_int_equal(kd_awq_quantize(&q, tok, B, T, &o, rec, &err), 0);
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 4; k++) {
            cJSON *g = group_rec(rec, l, k);
            if (k == 1 && Hkv != 4) {
                assert_non_null(cJSON_GetObjectItem(g, "skipped"));   /* v → o needs equal shapes */
                continue;
            }
            assert_null(cJSON_GetObjectItem(g, "skipped"));
            assert_true(num(g, "ratio") == 0.5);
        }
    /* the scales did something: norm weights and v rows moved by far more than rounding */
    double moved = 0;
    for (int64_t c = 0; c < 64; c++)
        moved = fmax(moved, fabs(q.layers[0].attn_norm->data[c] / m.layers[0].attn_norm->data[c] - 1.0));
    assert_true(moved > 0.5);
    float *a = logits(&m, tok, B, T), *b = logits(&q, tok, B, T);
    double mx = 0, scale = 1;
    for (int64_t i = 0; i < B * T * 96; i++) {
        mx = fmax(mx, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)a[i]));
    }
    fprintf(stderr, "fold (Hkv %lld): max |Δlogit| %.3g (logit scale %.3g), max norm change %.2f×\n", (long long)Hkv,
            mx, scale, 1 + moved);
    assert_true(mx <= 1e-5 * scale);
    free(a), free(b), free(tok);
    cJSON_Delete(rec);
    kd_model_free(&m), kd_model_free(&q);
}

static void test_fold_exact(void **state) {
    (void)state;
    check_fold(4);   /* all four groups */
    check_fold(2);   /* GQA: v → o skipped */
}

/* ---- the search never increases the measured block error -------------------------------------- */

static void check_search(int64_t C, int64_t F, const char *format, int group_size, int clip) {
    kd_model m, q;
    make_model(&m, C, F, 2, 4, 4, 64, 11);
    copy_model(&q, &m);
    const int64_t B = 4, T = 32;
    int32_t *tok = random_tokens(B * T, 64, 2);
    kd_awq_opts o;
    kd_awq_opts_init(&o);
    o.format = format, o.group_size = group_size, o.clip = clip;
    cJSON *rec = cJSON_CreateObject();
    kd_err err;
    assert_int_equal(kd_awq_quantize(&q, tok, B, T, &o, rec, &err), 0);
    int improved = 0;
    for (int l = 0; l < 2; l++) {
        double rtn[4], awq[4];
        assert_int_equal(kd_awq_block_errors(&m, &m, tok, B, T, l, &o, rtn, &err), 0);
        assert_int_equal(kd_awq_block_errors(&m, &q, tok, B, T, l, &o, awq, &err), 0);
        for (int k = 0; k < 4; k++) {
            cJSON *g = group_rec(rec, l, k), *losses = cJSON_GetObjectItem(g, "losses");
            assert_int_equal(cJSON_GetArraySize(losses), 20);
            double best = num(g, "loss"), r0 = num(g, "loss_ratio0"), mn = INFINITY;
            int arg = 0;
            for (int i = 0; i < 20; i++) {
                double v = cJSON_GetArrayItem(losses, i)->valuedouble;
                if (v < mn) mn = v, arg = i;
            }
            assert_true(best <= r0);                                   /* never worse than ratio 0 */
            assert_true(best == mn);                                   /* the grid's minimum */
            assert_true(fabs(num(g, "ratio") - arg / 20.0) < 1e-12);
            assert_true(r0 == cJSON_GetArrayItem(losses, 0)->valuedouble);
            /* independent: ratio 0 is plain rounding of the unchanged model */
            assert_true(fabs(rtn[k] - r0) <= 1e-5 * r0);
            /* independent: the output model's own block error (its folded norms and weights) */
            if (!clip) {
                assert_true(awq[k] <= rtn[k] * 1.01);
                assert_true(fabs(awq[k] - best) <= 0.03 * best);
            }
            improved += best < 0.99 * r0;
            fprintf(stderr, "%-5s g%-3d layer %d %-9s ratio %.2f  loss %.4g  ratio-0 %.4g  recomputed %.4g\n",
                    format ? format : "int4", group_size, l, cJSON_GetObjectItem(g, "measured")->valuestring,
                    num(g, "ratio"), best, r0, awq[k]);
        }
    }
    assert_true(improved >= 2);   /* salient channels: scaling helps somewhere */
    /* the clip guard: a block keeps its clips only when they do not raise its loss */
    for (int l = 0; clip && l < 2; l++) {
        cJSON *cl = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(rec, "layers"), l), "clips"), *c;
        cJSON_ArrayForEach(c, cl) {
            if (cJSON_GetObjectItem(c, "skipped")) continue;
            assert_true(num(c, "err_clip") <= num(c, "err_noclip"));
            cJSON *kept = cJSON_GetObjectItem(c, "kept");
            assert_true(cJSON_IsBool(kept));
            assert_true(cJSON_IsTrue(kept) == (num(c, "block_loss_clip") <= num(c, "block_loss_noclip")));
        }
    }
    free(tok);
    cJSON_Delete(rec);
    kd_model_free(&m), kd_model_free(&q);
}

static void test_search_never_increases(void **state) {
    (void)state;
    check_search(64, 128, "q4_0", 0, 0);
    check_search(64, 128, "q4_1", 0, 0);
    check_search(64, 128, NULL, 32, 0);     /* the reference int4 quantizer, groups of 32 */
    check_search(64, 128, "q4_0", 0, 1);    /* with clipping: the record's invariants still hold */
}

/* ---- Q4_K: whole rows, the q4_k_m recipe ------------------------------------------------------ */

static void test_kquant_types(void **state) {
    (void)state;
    kd_model m;
    make_model(&m, 256, 512, 2, 4, 4, 64, 5);
    const char *names[] = {"model.layers.0.self_attn.v_proj.weight", "model.layers.0.mlp.down_proj.weight",
                           "model.layers.1.self_attn.v_proj.weight", "model.layers.1.mlp.down_proj.weight",
                           "model.layers.1.self_attn.q_proj.weight", "model.embed_tokens.weight"};
    const char *want[] = {"Q4_K", "Q4_K", "Q6_K", "Q6_K", "Q4_K", "Q6_K"};   /* use_more_bits(1, 2); tied output */
    for (int i = 0; i < 6; i++)
        assert_string_equal(kd_ggml_type_name(kd_awq_export_type(&m, kd_awq_preset("q4_k"), names[i])), want[i]);
    kd_model_free(&m);
    check_search(256, 512, "q4_k", 0, 0);
    check_search(256, 512, "q4_k", 0, 1);
    /* 64-wide rows do not fit a super-block: the export's Q8_0 fallback is what the search uses */
    make_model(&m, 64, 128, 1, 4, 4, 64, 5);
    assert_string_equal(kd_ggml_type_name(kd_awq_export_type(&m, "q4_k_m", names[0])), "Q8_0");
    kd_model_free(&m);
}

/* ---- the reference int4 quantizer ------------------------------------------------------------- */

static void test_reference_int4(void **state) {
    (void)state;
    kd_model m;
    make_model(&m, 64, 128, 1, 4, 4, 64, 3);
    kd_awq_opts o;
    kd_awq_opts_init(&o);
    o.format = NULL, o.group_size = 32;
    const int64_t rows = 8, cols = 64;
    float w[8 * 64], q[8 * 64];
    kd_rng r;
    kd_rng_seed(&r, 9);
    kd_test_fill_normal(&r, w, rows * cols, 0.3f);
    memcpy(q, w, sizeof q);
    kd_err err;
    int32_t type;
    assert_int_equal(kd_awq_fake_quant(&m, &o, "model.layers.0.self_attn.q_proj.weight", q, rows, cols, &type, &err), 0);
    assert_int_equal(type, -1);
    for (int64_t g = 0; g < rows * cols; g += 32) {
        float mn = w[g], mx = w[g];
        for (int i = 1; i < 32; i++) mn = fminf(mn, w[g + i]), mx = fmaxf(mx, w[g + i]);
        double scale = (mx - mn) / 15.0;
        for (int i = 0; i < 32; i++) {
            assert_true(fabs(q[g + i] - w[g + i]) <= 0.5 * scale * (1 + 1e-5));   /* nearest level */
            double lv = (q[g + i] - q[g]) / scale;                                /* levels on one grid */
            assert_true(fabs(lv - round(lv)) < 1e-3);
        }
    }
    o.group_size = 48;   /* 64 % 48 ≠ 0 */
    assert_int_equal(kd_awq_check(&m, &o, &err), -1);
    fprintf(stderr, "expected error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "does not divide the row length 64"));
    kd_model_free(&m);
}

/* ---- the command on the real teacher --------------------------------------------------------- */

static int setup(void **state) {
    (void)state;
    const char *tmp = kd_test_tmpdir();
    snprintf(g_teacher, sizeof g_teacher, "%s/teacher", tmp);
    snprintf(g_dump, sizeof g_dump, "%s/calib.h5", tmp);
    if (kd_test_import_aidreams(g_teacher)) return -1;
    /* a small dump: 24 sequences of 33 tokens (ids < 512), top-4 placeholders */
    const int64_t n = 24, T = 32, K = 4;
    kd_dump_meta meta = {.vocab_size = 512, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32};
    snprintf(meta.teacher, sizeof meta.teacher, "test");
    kd_err err;
    kd_dump_writer *w = kd_dump_writer_create(g_dump, &meta, NULL, &err);
    if (!w) return -1;
    int32_t *tok = random_tokens(n * (T + 1), 512, 4), *ids = malloc((size_t)(n * T * K) * sizeof *ids);
    float *lp = malloc((size_t)(n * T * K) * sizeof *lp);
    for (int64_t i = 0; i < n * T; i++)
        for (int64_t k = 0; k < K; k++) ids[i * K + k] = (int32_t)k, lp[i * K + k] = logf(0.4f - 0.1f * (float)k);
    int rc = kd_dump_writer_append(w, n, tok, NULL, ids, lp, &err) || kd_dump_writer_close(w, &err);
    free(tok), free(ids), free(lp);
    return rc ? -1 : 0;
}

static cJSON *load_record(const char *dir) {
    char p[800];
    snprintf(p, sizeof p, "%s/quantize.json", dir);
    kd_err err;
    cJSON *j = kd_json_load(p, &err);
    assert_non_null(j);
    return j;
}

static void test_command_records(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN"), *tmp = kd_test_tmpdir();
    char rtn[700], awq[700];
    snprintf(rtn, sizeof rtn, "%s/rtn", tmp);
    snprintf(awq, sizeof awq, "%s/awq", tmp);
    assert_int_equal(kd_test_sh("'%s' quantize --model '%s' --method rtn --format q4_0 --out '%s' >/dev/null", kd,
                                g_teacher, rtn), 0);
    assert_int_equal(kd_test_sh("'%s' quantize --model '%s' --method awq --format q4_0 --calib '%s' --samples 16 "
                                "--quiet --out '%s' >/dev/null", kd, g_teacher, g_dump, awq), 0);
    /* RTN: nothing applied, weights bit for bit, types recorded */
    cJSON *r = load_record(rtn);
    assert_string_equal(cJSON_GetObjectItem(r, "method")->valuestring, "rtn");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r, "layers")), 0);
    cJSON *types = cJSON_GetObjectItem(r, "tensors");
    assert_string_equal(cJSON_GetObjectItem(types, "model.layers.0.self_attn.q_proj.weight")->valuestring, "Q4_0");
    assert_string_equal(cJSON_GetObjectItem(types, "model.layers.0.mlp.down_proj.weight")->valuestring, "F16");
    assert_string_equal(cJSON_GetObjectItem(types, "model.embed_tokens.weight")->valuestring, "Q8_0");
    cJSON_Delete(r);
    kd_model a, b;
    kd_err err;
    assert_int_equal(kd_checkpoint_load(&a, g_teacher, &err), 0);
    assert_int_equal(kd_checkpoint_load(&b, rtn, &err), 0);
    for (int i = 0; i < a.n_params; i++)
        assert_memory_equal(a.params[i]->data, b.params[i]->data, (size_t)a.params[i]->n * sizeof(float));
    kd_model_free(&b);
    assert_int_equal(kd_test_sh("cmp -s '%s/tokenizer.bin' '%s/tokenizer.bin' && cmp -s '%s/tokenizer.bin' "
                                "'%s/tokenizer.bin'", g_teacher, rtn, g_teacher, awq), 0);
    /* AWQ: every layer's four groups and five clips */
    r = load_record(awq);
    assert_string_equal(cJSON_GetObjectItem(r, "method")->valuestring, "awq");
    assert_string_equal(cJSON_GetObjectItem(r, "export_preset")->valuestring, "q4_0");
    cJSON *cal = cJSON_GetObjectItem(r, "calibration");
    assert_true(num(cal, "samples") == 16 && num(cal, "seq") == 33 && num(cal, "tokens") == 16 * 33);
    cJSON *layers = cJSON_GetObjectItem(r, "layers");
    assert_int_equal(cJSON_GetArraySize(layers), 4);
    for (int l = 0; l < 4; l++) {
        cJSON *ly = cJSON_GetArrayItem(layers, l), *sc = cJSON_GetObjectItem(ly, "scales"), *cl = cJSON_GetObjectItem(ly, "clips");
        assert_int_equal(cJSON_GetArraySize(sc), 4);
        for (int k = 0; k < 3; k++) {   /* q,k,v; o; gate,up (down stays F16: 172 % 32 ≠ 0) */
            cJSON *g = cJSON_GetArrayItem(sc, k);
            assert_true(num(g, "ratio") >= 0 && num(g, "ratio") <= 0.95);
            assert_true(num(g, "loss") <= num(g, "loss_ratio0"));
        }
        assert_non_null(cJSON_GetObjectItem(cJSON_GetArrayItem(sc, 3), "skipped"));
        assert_int_equal(cJSON_GetArraySize(cl), 5);
        for (int k = 0; k < 4; k++) {
            cJSON *c = cJSON_GetArrayItem(cl, k);
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(c, "shrink_counts")), 10);
            assert_true(num(c, "err_clip") <= num(c, "err_noclip"));
        }
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cl, 4), "linear")->valuestring, "down_proj");
        assert_non_null(cJSON_GetObjectItem(cJSON_GetArrayItem(cl, 4), "skipped"));
    }
    cJSON_Delete(r);
    /* AWQ changed weights but still loads as a checkpoint */
    assert_int_equal(kd_checkpoint_load(&b, awq, &err), 0);
    assert_true(memcmp(a.layers[0].attn_norm->data, b.layers[0].attn_norm->data, 64 * sizeof(float)) != 0);
    kd_model_free(&b);
    /* kd quantize eval: FP32 against itself is exact, Q4_0 is not */
    char out[800];
    snprintf(out, sizeof out, "%s/eval.json", tmp);
    assert_int_equal(kd_test_sh("'%s' quantize eval --reference '%s' --model '%s' --type f32 --data '%s' >'%s'", kd,
                                g_teacher, g_teacher, g_dump, out), 0);
    cJSON *e = kd_json_load(out, &err);
    assert_non_null(e);
    assert_true(fabs(num(e, "kl")) < 1e-6 && num(e, "top1") == 1.0 && num(e, "tokens") == 24 * 32);
    cJSON_Delete(e);
    assert_int_equal(kd_test_sh("'%s' quantize eval --reference '%s' --model '%s' --type q4_0 --data '%s' >'%s'", kd,
                                g_teacher, awq, g_dump, out), 0);
    e = kd_json_load(out, &err);
    assert_non_null(e);
    assert_true(num(e, "kl") > 1e-5 && num(e, "top1") < 1.0 && num(e, "ppl") > 1);
    cJSON_Delete(e);
    kd_model_free(&a);
}

static void test_gguf_loads_in_llama_cpp(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN"), *tmp = kd_test_tmpdir(), *src = kd_test_env("KD_SOURCE_DIR");
    char awq[700], gguf[800], js[900], mod[800];
    snprintf(awq, sizeof awq, "%s/awq_gguf", tmp);
    snprintf(gguf, sizeof gguf, "%s/awq_q4_0.gguf", tmp);
    assert_int_equal(kd_test_sh("'%s' quantize --model '%s' --method awq --format q4_0 --calib '%s' --samples 8 "
                                "--quiet --out '%s' >/dev/null && '%s' export --model '%s' --type q4_0 --out '%s' "
                                ">/dev/null 2>&1", kd, g_teacher, g_dump, awq, kd, awq, gguf), 0);
    snprintf(mod, sizeof mod, "%s/tests/node/node_modules/node-llama-cpp/package.json", src);
    if (!kd_file_exists(mod) ||
        kd_test_sh("node -e 'process.exit(+process.versions.node.split(\".\")[0] >= 20 ? 0 : 1)' 2>/dev/null")) {
        KD_TEST_MISSING("llama.cpp check: node >= 20 or tests/node/node_modules/node-llama-cpp missing "
                        "(tools/setup.sh installs them)");
    }
    snprintf(js, sizeof js, "%s.node.json", gguf);
    int rc = kd_test_sh("cd '%s/tests/node' && node load_and_generate.mjs '%s' --prompt 'The robot' --n 8 >'%s'", src,
                        gguf, js);
    if (rc) kd_test_sh("cat '%s' >&2", js);
    assert_int_equal(rc, 0);
    kd_err err;
    cJSON *j = kd_json_load(js, &err);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "generated")), 8);
    fprintf(stderr, "llama.cpp loaded the AWQ Q4_0 GGUF: \"The robot\" → \"%s\"\n",
            cJSON_GetObjectItem(j, "generated_text")->valuestring);
    cJSON_Delete(j);
}

/* ---- bad inputs --------------------------------------------------------------------------------- */

static void expect_fail(int want_rc, const char *needle, const char *args) {
    const char *kd = kd_test_env("KD_BIN");
    char log[800];
    snprintf(log, sizeof log, "%s/err.log", kd_test_tmpdir());
    int rc = kd_test_sh("'%s' quantize %s >/dev/null 2>'%s'", kd, args, log);
    size_t len;
    kd_err err;
    char *text = kd_read_file(log, &len, &err);
    assert_non_null(text);
    fprintf(stderr, "expected error (%d): %s", rc, text);
    assert_int_equal(rc, want_rc);
    assert_non_null(strstr(text, needle));
    free(text);
}

static void test_errors(void **state) {
    (void)state;
    const char *tmp = kd_test_tmpdir();
    char a[3000];
    expect_fail(2, "needs --calib", (snprintf(a, sizeof a, "--model '%s' --method awq --out '%s/x'", g_teacher, tmp), a));
    expect_fail(2, "--format is q4_0, q4_1 or q4_k", "--model m --method awq --format q8_0 --out x");
    expect_fail(2, "--method is awq or rtn", "--model m --method gptq --out x");
    expect_fail(2, "required", "--method rtn --out x");
    snprintf(a, sizeof a, "--model '%s' --method awq --calib '%s' --group-size 128 --out '%s/x'", g_teacher, g_dump, tmp);
    expect_fail(1, "group size 128 does not divide the row length 64", a);
    snprintf(a, sizeof a, "--model '%s' --method awq --calib '%s' --seq 40 --out '%s/x'", g_teacher, g_dump, tmp);
    expect_fail(1, "exceeds the dump's 33 tokens", a);
    snprintf(a, sizeof a, "--model '%s/none' --method rtn --out '%s/x'", tmp, tmp);
    expect_fail(1, "no such file", a);
    snprintf(a, sizeof a, "--model '%s' --method awq --calib '%s/none.h5' --out '%s/x'", g_teacher, tmp, tmp);
    expect_fail(1, "none.h5", a);
    /* tokens outside the model's vocabulary (a dump of another tokenizer) */
    kd_model m;
    make_model(&m, 64, 128, 1, 4, 4, 100, 1);
    int32_t *tok = random_tokens(64, 512, 3);
    kd_awq_opts o;
    kd_awq_opts_init(&o);
    kd_err err;
    assert_int_equal(kd_awq_quantize(&m, tok, 2, 32, &o, NULL, &err), -1);
    fprintf(stderr, "expected error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "outside the model's vocabulary"));
    int64_t n = 4, T = 0;
    int32_t *ct;
    assert_int_equal(kd_calib_tokens(g_dump, NULL, NULL, 100, &n, &T, &ct, &err), -1);
    assert_non_null(strstr(err.msg, "another tokenizer"));
    o.n_grid = 0;
    assert_int_equal(kd_awq_check(&m, &o, &err), -1);
    kd_awq_opts_init(&o);
    o.format = "q5_0";
    assert_int_equal(kd_awq_check(&m, &o, &err), -1);
    assert_non_null(strstr(err.msg, "unknown format 'q5_0'"));
    free(tok);
    kd_model_free(&m);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_exact),      cmocka_unit_test(test_search_never_increases),
        cmocka_unit_test(test_kquant_types),    cmocka_unit_test(test_reference_int4),
        cmocka_unit_test(test_command_records), cmocka_unit_test(test_gguf_loads_in_llama_cpp),
        cmocka_unit_test(test_errors),
    };
    return KD_RUN_GROUP(tests, setup, NULL);
}
