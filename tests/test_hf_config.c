/*
 * test_hf_config.c — Hugging Face configs as transformers 4.x and 5.x write
 * them, RoPE scaling (default, linear, llama3) end to end, and the config keys
 * kd reads or refuses (student/kd_config.c, docs/checkpoints.md).
 *
 *   reference   tests/py/hf_ckpt_ref.py writes tiny checkpoints in both RoPE
 *               spellings (4.x rope_theta + rope_scaling, legacy "type" key
 *               included; 5.x rope_parameters), rope_scaling llama3 and linear,
 *               tied and untied, sharded, BF16, and a Mistral with a window,
 *               with logits from an independent float64 forward (llama_ref.py);
 *               kd's training forward and its engine must agree to 1e-4
 *               relative, and the same model with plain RoPE must not;
 *   keys        every refusal (unknown keys, biases, other families, yarn,
 *               dynamic, partial RoPE, disagreeing spellings, mixed layer types)
 *               names the key; config.json round-trips the scaling, and a
 *               window is written as MistralForCausalLM;
 *   factors     llama.cpp's per-dimension divisors (rope_freqs) turn back into
 *               llama3 parameters with the same frequencies;
 *   gguf        the llama3 and linear models exported to F32 GGUF (rope_freqs
 *               tensor; llama.rope.scaling.* keys) give kd's engine the
 *               checkpoint's logits, import back with the same RoPE, and give
 *               llama.cpp (tests/node/infer_check.mjs, skipped without
 *               node_modules) the same greedy tokens and teacher-forced
 *               log-probs to 1e-4.
 * "relative" means max|a − b| / max|b| over all logits.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "export/kd_export.h"
#include "format/kd_gguf.h"
#include "infer/kd_infer.h"
#include "student/kd_checkpoint.h"
#include "student/kd_gguf_model.h"

#define T_REF 40
#define V_REF 512
static char g_dir[600];

static double rel_err(const float *a, const float *b, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d)) d = e;
        if (fabs((double)b[i]) > s) s = fabs((double)b[i]);
    }
    return d / (s > 0 ? s : 1);
}

static void *read_all(const char *dir, const char *name, size_t want) {
    char path[900];
    kd_err err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    void *p = kd_read_file(path, &len, &err);
    assert_non_null(p);
    assert_int_equal(len, want);
    return p;
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/hf", kd_test_tmpdir());
    return kd_test_python("hf_ckpt_ref.py", "'%s'", g_dir);
}

static int n_variants(char names[][64], int max) {
    char path[700];
    snprintf(path, sizeof path, "%s/variants.txt", g_dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    while (n < max && fscanf(f, "%63s", names[n]) == 1) n++;
    fclose(f);
    return n;
}

static void model_logits(kd_model *m, const int32_t *tok, float *out) {
    kd_err err;
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    kd_tensor *l = kd_model_logits(&g, m, tok, 1, T_REF);
    memcpy(out, l->data, (size_t)l->n * sizeof(float));
    kd_graph_free(&g);
}

static void engine_logits(kd_infer *e, const int32_t *tok, float *out) {
    kd_err err;
    kd_infer_reset(e);
    int rc = kd_infer_eval(e, tok, T_REF, out, 1, NULL, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
}

/* ---- checkpoints as transformers writes them vs the independent forward ------------------- */

static void test_reference(void **state) {
    (void)state;
    char names[16][64], dir[1800];
    int n = n_variants(names, 16);
    assert_true(n >= 7);
    int32_t *tok = read_all(g_dir, "tokens.i32", T_REF * sizeof(int32_t));
    float *mine = malloc(T_REF * V_REF * sizeof(float)), *eng = malloc(T_REF * V_REF * sizeof(float));
    for (int v = 0; v < n; v++) {
        snprintf(dir, sizeof dir, "%s/%s", g_dir, names[v]);
        float *ref = read_all(dir, "ref_logits.f32", T_REF * V_REF * sizeof(float));
        kd_model m;
        kd_err err;
        int rc = kd_model_load(&m, dir, &err);
        if (rc) fprintf(stderr, "%s\n", err.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(m.cfg.vocab_size, V_REF);
        model_logits(&m, tok, mine);
        kd_infer *e = kd_infer_from_model(&m, NULL, &err);
        assert_non_null(e);
        engine_logits(e, tok, eng);
        double rm = rel_err(mine, ref, T_REF * V_REF), re = rel_err(eng, ref, T_REF * V_REF);
        /* the same weights with plain RoPE (or no window): the scaling must matter */
        kd_config plain = m.cfg;
        const int scaled = plain.rope_type != KD_ROPE_TYPE_DEFAULT, windowed = plain.sliding_window > 0;
        plain.rope_type = KD_ROPE_TYPE_DEFAULT;
        plain.sliding_window = 0;
        m.cfg = plain;
        model_logits(&m, tok, eng);
        double rp = rel_err(eng, ref, T_REF * V_REF);
        fprintf(stderr, "%-28s rope %-7s window %lld: training forward %.2e, engine %.2e relative; plain RoPE%s %.2e\n",
                names[v], kd_rope_type_name(e->cfg.rope_type), (long long)e->cfg.sliding_window, rm, re,
                windowed ? " and no window" : "", rp);
        assert_true(rm <= 1e-4 && re <= 1e-4);
        if (scaled || windowed) assert_true(rp > 1e-3);
        kd_infer_close(e);
        kd_model_free(&m);
        free(ref);
    }
    free(mine), free(eng), free(tok);
}

/* ---- keys read and refused ----------------------------------------------------------------- */

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, " \
             "\"vocab_size\": 512"

static int parse(kd_config *c, const char *extra, kd_err *err) {
    char text[2048];
    snprintf(text, sizeof text, "{" BASE "%s%s}", extra[0] ? ", " : "", extra);
    return kd_config_parse(c, text, strlen(text), "cfg.json", err);
}

static void refused(const char *extra, const char *needle) {
    kd_config c;
    kd_err err;
    int rc = parse(&c, extra, &err);
    if (rc == 0 || !strstr(err.msg, needle))
        fprintf(stderr, "config {%s}: rc %d, message '%s', expected one naming '%s'\n", extra, rc, rc ? err.msg : "",
                needle);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err.msg, needle));
}

static void test_keys(void **state) {
    (void)state;
    kd_config c;
    kd_err err;
    refused("\"rope_scalling\": null", "rope_scalling");
    refused("\"attention_bias\": true", "attention_bias");
    refused("\"mlp_bias\": true", "mlp_bias");
    refused("\"model_type\": \"qwen2\"", "bias");
    refused("\"model_type\": \"gemma\"", "gemma");
    refused("\"architectures\": [\"Qwen2ForCausalLM\"]", "Qwen2ForCausalLM");
    refused("\"quantization_config\": {}", "quantization_config");
    refused("\"partial_rotary_factor\": 0.5", "partial_rotary_factor");
    refused("\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4.0}", "yarn");
    refused("\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}", "dynamic");
    refused("\"rope_scaling\": {\"rope_type\": \"longrope\"}", "longrope");
    refused("\"rope_scaling\": {\"rope_type\": \"wobbly\"}", "wobbly");
    refused("\"rope_scaling\": {\"rope_type\": \"linear\"}", "factor");
    refused("\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0}", "high_freq_factor");
    refused("\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0, "
            "\"high_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192}", "high_freq_factor");
    refused("\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2.0, \"beta_fast\": 32}", "beta_fast");
    refused("\"rope_theta\": 10000.0, \"rope_parameters\": {\"rope_theta\": 500000.0, \"rope_type\": \"default\"}",
            "rope_theta");
    refused("\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2.0}, \"rope_parameters\": {\"rope_type\": "
            "\"linear\", \"factor\": 4.0}", "rope_parameters");
    refused("\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"default\"}}", "full_attention");
    refused("\"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"sliding_attention\"]", "layer_types");
    refused("\"sliding_window\": 8, \"use_sliding_window\": true, \"max_window_layers\": 1", "max_window_layers");
    refused("\"hidden_act\": \"gelu\"", "hidden_act");

    /* read: 5.x spelling, legacy "type", both spellings agreeing, Qwen2-style window switches */
    assert_int_equal(parse(&c, "\"rope_parameters\": {\"rope_theta\": 500000.0, \"rope_type\": \"default\"}", &err), 0);
    assert_true(c.rope_theta == 500000.0 && c.rope_type == KD_ROPE_TYPE_DEFAULT);
    assert_int_equal(parse(&c, "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.5}", &err), 0);
    assert_true(c.rope_type == KD_ROPE_TYPE_LINEAR && c.rope_factor == 2.5);
    assert_int_equal(parse(&c, "\"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, "
                               "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                               "\"original_max_position_embeddings\": 8192}, \"rope_parameters\": {\"rope_theta\": "
                               "500000.0, \"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, "
                               "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
                     &err),
                     0);
    assert_true(c.rope_type == KD_ROPE_TYPE_LLAMA3 && c.rope_factor == 32.0 && c.rope_high_freq_factor == 4.0 &&
                c.rope_original_max_position_embeddings == 8192 && c.rope_theta == 500000.0);
    /* transformers 5: a top-level original_max_position_embeddings wins; absent, max_position_embeddings */
    assert_int_equal(parse(&c, "\"original_max_position_embeddings\": 4096, \"rope_parameters\": {\"rope_type\": "
                               "\"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                               "\"original_max_position_embeddings\": 8192}", &err), 0);
    assert_int_equal(c.rope_original_max_position_embeddings, 4096);
    assert_int_equal(parse(&c, "\"max_position_embeddings\": 1024, \"rope_parameters\": {\"rope_type\": \"llama3\", "
                               "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}", &err), 0);
    assert_int_equal(c.rope_original_max_position_embeddings, 1024);
    assert_int_equal(parse(&c, "\"sliding_window\": 8, \"use_sliding_window\": false", &err), 0);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(parse(&c, "\"sliding_window\": 8, \"layer_types\": [\"sliding_attention\", \"sliding_attention\"]",
                           &err), 0);
    assert_int_equal(c.sliding_window, 8);
    assert_int_equal(parse(&c, "\"transformers_version\": \"5.0.0\", \"dtype\": \"bfloat16\", \"use_cache\": true, "
                               "\"attention_dropout\": 0.0, \"pretraining_tp\": 1, \"attention_bias\": false",
                           &err), 0);

    /* config.json round trip of the scaling; a window makes a Mistral */
    char path[700];
    snprintf(path, sizeof path, "%s/rt.json", kd_test_tmpdir());
    kd_config a = c, b;
    a.rope_theta = 500000.0, a.rope_type = KD_ROPE_TYPE_LLAMA3, a.rope_factor = 8.0, a.rope_low_freq_factor = 1.0;
    a.rope_high_freq_factor = 4.0, a.rope_original_max_position_embeddings = 8192;
    a.sliding_window = 0;
    assert_int_equal(kd_config_save(&a, path, &err), 0);
    assert_int_equal(kd_config_load(&b, path, &err), 0);
    assert_true(b.rope_type == a.rope_type && b.rope_factor == a.rope_factor &&
                b.rope_low_freq_factor == a.rope_low_freq_factor && b.rope_high_freq_factor == a.rope_high_freq_factor &&
                b.rope_original_max_position_embeddings == 8192 && b.rope_theta == 500000.0);
    size_t len;
    char *text = kd_read_file(path, &len, &err);
    assert_non_null(strstr(text, "\"rope_parameters\"") && strstr(text, "\"LlamaForCausalLM\""));
    free(text);
    a.rope_type = KD_ROPE_TYPE_LINEAR, a.rope_factor = 3.0, a.sliding_window = 16;
    assert_int_equal(kd_config_save(&a, path, &err), 0);
    assert_int_equal(kd_config_load(&b, path, &err), 0);
    assert_true(b.rope_type == KD_ROPE_TYPE_LINEAR && b.rope_factor == 3.0 && b.sliding_window == 16);
    text = kd_read_file(path, &len, &err);
    assert_non_null(strstr(text, "\"MistralForCausalLM\""));
    assert_non_null(strstr(text, "\"mistral\""));
    free(text);
}

/* ---- llama.cpp's rope_freqs back into llama3 parameters ------------------------------------ */

static void test_factors(void **state) {
    (void)state;
    struct { int64_t D; double theta, factor, lo, hi; int64_t orig; } cases[] = {
        {16, 500000, 32, 1, 4, 8192},  {32, 10000, 8, 1, 8, 256},  {64, 500000, 8, 1, 4, 8192},
        {128, 500000, 32, 1, 4, 8192}, {128, 500000, 8, 2, 3, 4096}, {8, 10000, 4, 1, 2, 32},
    };
    kd_err err;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        kd_config c, d;
        kd_config_defaults(&c);
        c.head_dim = cases[k].D, c.rope_theta = cases[k].theta, c.rope_type = KD_ROPE_TYPE_LLAMA3;
        c.rope_factor = cases[k].factor, c.rope_low_freq_factor = cases[k].lo, c.rope_high_freq_factor = cases[k].hi;
        c.rope_original_max_position_embeddings = cases[k].orig;
        float ff[64];
        double a[64], b[64];
        kd_config_rope_freq_factors(&c, ff);
        d = c;
        d.rope_type = KD_ROPE_TYPE_DEFAULT;
        int rc = kd_config_rope_from_factors(&d, ff, c.head_dim / 2, 0, "t", &err);
        if (rc) fprintf(stderr, "case %zu: %s\n", k, err.msg);
        assert_int_equal(rc, 0);
        kd_config_rope_inv_freq(&c, a);
        kd_config_rope_inv_freq(&d, b);
        double worst = 0;
        for (int64_t i = 0; i < c.head_dim / 2; i++) worst = fmax(worst, fabs(a[i] - b[i]) / a[i]);
        fprintf(stderr, "factors D %3lld theta %6.0f factor %2.0f lo %g hi %g: %s back, inverse frequencies within %.1e\n",
                (long long)c.head_dim, c.rope_theta, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
                kd_rope_type_name(d.rope_type), worst);
        assert_true(worst <= 1e-6);
    }
    kd_config c;
    kd_config_defaults(&c);
    c.head_dim = 8;
    float one[4] = {1, 1, 1, 1}, two[4] = {2, 2, 2, 2}, bad[4] = {1, 3, 1, 3};
    assert_int_equal(kd_config_rope_from_factors(&c, one, 4, 0, "t", &err), 0);
    assert_int_equal(c.rope_type, KD_ROPE_TYPE_DEFAULT);
    assert_int_equal(kd_config_rope_from_factors(&c, two, 4, 0, "t", &err), 0);
    assert_true(c.rope_type == KD_ROPE_TYPE_LINEAR && c.rope_factor == 2.0);
    assert_int_not_equal(kd_config_rope_from_factors(&c, bad, 4, 0, "t", &err), 0);
    assert_non_null(strstr(err.msg, "rope_freqs"));
}

/* ---- GGUF export / import and llama.cpp ---------------------------------------------------- */

static int64_t greedy(kd_infer *e, const int32_t *prompt, int64_t np, int32_t *out, int64_t n) {
    kd_err err;
    float *lg = malloc((size_t)e->V * sizeof *lg);
    kd_infer_reset(e);
    assert_int_equal(kd_infer_eval(e, prompt, np, lg, 0, NULL, &err), 0);
    int64_t k = 0;
    for (; k < n; k++) {
        out[k] = (int32_t)kd_argmax(lg, e->V);
        if (out[k] == e->eos) break;
        assert_int_equal(kd_infer_eval(e, &out[k], 1, lg, 0, NULL, &err), 0);
    }
    free(lg);
    return k;
}

static void ids_str(char *buf, size_t n, const int32_t *ids, int64_t k) {
    size_t o = 0;
    buf[0] = '\0';
    for (int64_t i = 0; i < k && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%d", i ? " " : "", ids[i]);
}

static void gguf_case(const char *variant, kd_rope_type want, int have_node) {
    char dir[1800], path[1900], cmd_json[2000];
    kd_err err;
    snprintf(dir, sizeof dir, "%s/%s", g_dir, variant);
    snprintf(path, sizeof path, "%s/%s.gguf", kd_test_tmpdir(), variant);
    assert_int_equal(kd_test_sh("cp '%s/models/aidreams260K/tok512.bin' '%s/tokenizer.bin'", kd_test_env("KD_DATA_DIR"),
                                dir), 0);
    int rc = kd_export_checkpoint(dir, "f32", path, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    /* the file: llama.cpp's keys and tensor */
    kd_gguf *g = kd_gguf_open(path, &err);
    assert_non_null(g);
    const kd_gguf_tensor *ff = kd_gguf_find_tensor(g, "rope_freqs.weight");
    const char *st = NULL;
    if (kd_gguf_find_key(g, "llama.rope.scaling.type") >= 0) assert_int_equal(kd_gguf_get_str(g, "llama.rope.scaling.type", &st, NULL, &err), 0);
    if (want == KD_ROPE_TYPE_LLAMA3) assert_true(ff && ff->type == KD_GGML_TYPE_F32 && !st);
    if (want == KD_ROPE_TYPE_LINEAR) assert_true(!ff && st && !strcmp(st, "linear"));
    kd_gguf_close(g);

    /* kd's engine on the GGUF = on the checkpoint; the import has the same RoPE */
    int32_t *tok = read_all(g_dir, "tokens.i32", T_REF * sizeof(int32_t));
    float *a = malloc(T_REF * V_REF * sizeof(float)), *b = malloc(T_REF * V_REF * sizeof(float));
    kd_infer *ec = kd_infer_open(dir, NULL, &err), *eg = kd_infer_open(path, NULL, &err);
    assert_non_null(ec);
    if (!eg) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(eg);
    engine_logits(ec, tok, a);
    engine_logits(eg, tok, b);
    double r = rel_err(b, a, T_REF * V_REF);
    kd_model m;
    assert_int_equal(kd_model_load_gguf(&m, path, NULL, &err), 0);
    double ia[64], ib[64], worst = 0;
    kd_config_rope_inv_freq(&ec->cfg, ia);
    kd_config_rope_inv_freq(&m.cfg, ib);
    for (int64_t i = 0; i < m.cfg.head_dim / 2; i++) worst = fmax(worst, fabs(ia[i] - ib[i]) / ia[i]);
    fprintf(stderr, "%s: F32 GGUF engine vs checkpoint %.2e relative; imported as %s RoPE (eng: %s), inverse "
                    "frequencies within %.1e\n", variant, r, kd_rope_type_name(m.cfg.rope_type),
            kd_rope_type_name(eg->cfg.rope_type), worst);
    assert_true(r <= 1e-5 && worst <= 1e-6);
    assert_int_equal(m.cfg.rope_type, want);
    assert_int_equal(eg->cfg.rope_type, want);
    /* and the re-saved checkpoint keeps it */
    char back[2000];
    snprintf(back, sizeof back, "%s/%s_back", kd_test_tmpdir(), variant);
    assert_int_equal(kd_checkpoint_save(&m, back, &err), 0);
    kd_config cb;
    snprintf(back + strlen(back), sizeof back - strlen(back), "/config.json");
    assert_int_equal(kd_config_load(&cb, back, &err), 0);
    assert_int_equal(cb.rope_type, want);
    kd_model_free(&m);

    if (have_node) {
        /* llama.cpp: greedy from 4 ids, and the teacher-forced log-probs of the reference tokens */
        int32_t gen[32];
        int64_t ng = greedy(eg, tok, 4, gen, 32);
        char prompt_s[256], forced_s[1024];
        ids_str(prompt_s, sizeof prompt_s, tok, 4);
        ids_str(forced_s, sizeof forced_s, tok, T_REF);
        snprintf(cmd_json, sizeof cmd_json, "%s.json", path);
        rc = kd_test_sh("cd '%s/tests/node' && node infer_check.mjs '%s' --prompt '%s' --n 32 --forced '%s' >'%s'",
                        kd_test_env("KD_SOURCE_DIR"), path, prompt_s, forced_s, cmd_json);
        if (rc) kd_test_sh("cat '%s' >&2", cmd_json);
        assert_int_equal(rc, 0);
        cJSON *j = kd_json_load(cmd_json, &err);
        assert_non_null(j);
        cJSON *lgen = cJSON_GetObjectItem(j, "generated"), *llp = cJSON_GetObjectItem(j, "forced_logprobs");
        int same = 0, nl = cJSON_GetArraySize(lgen);
        while (same < ng && same < nl && cJSON_GetArrayItem(lgen, same)->valueint == gen[same]) same++;
        assert_int_equal(cJSON_GetArraySize(llp), T_REF - 1);
        double dmax = 0;
        for (int t = 0; t + 1 < T_REF; t++) {
            const float *z = b + (int64_t)t * V_REF;
            double mx = z[0], s = 0;
            for (int i = 1; i < V_REF; i++) mx = fmax(mx, z[i]);
            for (int i = 0; i < V_REF; i++) s += exp((double)z[i] - mx);
            double lp = (double)z[tok[t + 1]] - mx - log(s);
            dmax = fmax(dmax, fabs(lp - cJSON_GetArrayItem(llp, t)->valuedouble));
        }
        fprintf(stderr, "%s: llama.cpp greedy %d of %lld/%d tokens equal; teacher-forced log-probs over %d positions: "
                        "max |diff| %.2e\n", variant, same, (long long)ng, nl, T_REF - 1, dmax);
        assert_true(same == ng && same == nl);
        assert_true(dmax <= 1e-4);
        cJSON_Delete(j);
    }
    kd_infer_close(ec);
    kd_infer_close(eg);
    free(a), free(b), free(tok);
}

static void test_gguf(void **state) {
    (void)state;
    char mod[700];
    snprintf(mod, sizeof mod, "%s/tests/node/node_modules/node-llama-cpp/package.json", kd_test_env("KD_SOURCE_DIR"));
    int have_node = kd_file_exists(mod) &&
                    !kd_test_sh("node -e 'process.exit(+process.versions.node.split(\".\")[0] >= 20 ? 0 : 1)' 2>/dev/null");
    gguf_case("v4_llama3_sharded", KD_ROPE_TYPE_LLAMA3, have_node);
    gguf_case("v5_llama3_bf16_tied", KD_ROPE_TYPE_LLAMA3, have_node);
    gguf_case("v4_linear_legacy_type", KD_ROPE_TYPE_LINEAR, have_node);
    if (!have_node)   /* the kd side ran; the llama.cpp comparison could not */
        KD_TEST_MISSING("llama.cpp part: node >= 20 or tests/node/node_modules/node-llama-cpp missing "
                        "(tools/setup.sh installs them)");
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_factors),
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_gguf),
    };
    return KD_RUN_GROUP(tests, setup, NULL);
}
