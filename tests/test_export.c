/*
 * test_export.c — the GGUF writer and `kd export` (format/kd_gguf_write.c, export/kd_export.c).
 *
 * The real aidreams260K teacher (dims 64/172, tied embeddings), imported with
 * `kd import llama2c`, is exported in every preset and read back with kd's
 * reader: KV keys, types and values; the tokenizer; the tensor set, shapes
 * and the expected type of every tensor (written out by hand below, fallbacks
 * included); the packed layout; and every tensor's dequantized values against
 * kd's pseudo-quantization of the checkpoint (q/k rows un-permuted), exact.
 * The F32 export's attn_q/attn_k rows equal the llama2.c file's bytes (the
 * llama2.c layout is GGUF's). A synthetic 256-wide GQA model with an untied
 * head covers Q4_K and Q6_K for real.
 *
 * Independent readers: llama.cpp's gguf-py (a venv in the build dir with
 * gguf==0.17.1; skipped with a message if pip cannot reach the registry)
 * lists the same KVs and tensors and dequantizes to kd's values; and llama.cpp
 * itself (tests/node, node-llama-cpp 3.21.1's prebuilt CPU build) loads the
 * f32, q8_0 and synthetic q4_k_m files, tokenizes like kd, and — for f32 —
 * generates the same first 16 greedy tokens as kd's full forward.
 * `kd export` loads without gradient buffers (KD_MODEL_NO_GRAD); its files are
 * byte-identical to exports of the same checkpoint loaded with gradients.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "data/kd_tokenizer.h"
#include "data/kd_tokenizer_load.h"
#include "student/kd_checkpoint.h"
#include "export/kd_export.h"
#include "format/kd_gguf_write.h"
#include "quant/kd_quant_plan.h"
#include "student/kd_llama2c.h"
#include "format/kd_quant.h"

#define F32 KD_GGML_TYPE_F32
#define F16 KD_GGML_TYPE_F16
#define BF16 KD_GGML_TYPE_BF16
#define Q8_0 KD_GGML_TYPE_Q8_0
#define Q4_0 KD_GGML_TYPE_Q4_0
#define Q4_1 KD_GGML_TYPE_Q4_1
#define Q4_K KD_GGML_TYPE_Q4_K
#define Q6_K KD_GGML_TYPE_Q6_K

static const char *PRESETS[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k_m"};
static const uint32_t FTYPES[] = {0, 1, 32, 7, 2, 3, 15};
#define N_PRESETS 7
static const char *TEXTS[] = {"Once upon a time, a little robot dreamed of stars.", "hello  world\n\tÜber 日本 <s> 123",
                              " leading space and trailing "};

static char g_ck[600], g_syn[600], g_venv_py[700];
static int g_have_gguf_py;

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static void out_path(char *buf, size_t n, const char *model, const char *preset) {
    snprintf(buf, n, "%s/%s_%s.gguf", kd_test_tmpdir(), model, preset);
}

/* The types aidreams260K (C 64, F 172, tied) must get, by hand from docs/gguf.md#tensor-types-per-preset. */
static int32_t expect_aidreams(const char *preset, const char *name) {
    if (ends_with(name, "_norm.weight")) return F32;
    if (!strcmp(preset, "f32")) return F32;
    if (!strcmp(preset, "f16")) return F16;
    if (!strcmp(preset, "bf16")) return BF16;
    if (strstr(name, "ffn_down")) return F16;                 /* 172 is no multiple of 32 */
    if (!strcmp(preset, "q8_0")) return Q8_0;
    if (!strcmp(name, "token_embd.weight")) return Q8_0;      /* tied output: Q6_K, 64 % 256 → Q8_0 */
    if (!strcmp(preset, "q4_0")) return Q4_0;
    if (!strcmp(preset, "q4_1")) return Q4_1;
    return Q8_0;                                              /* q4_k_m: Q4_K/Q6_K, 64 % 256 → Q8_0 */
}

/* The synthetic model: C 256, F 512, 2 layers, untied. use_more_bits(i, 2) is true for i = 1 only. */
static int32_t expect_synthetic(const char *preset, const char *name) {
    if (ends_with(name, "_norm.weight")) return F32;
    if (!strcmp(preset, "f32")) return F32;
    if (!strcmp(name, "output.weight")) return Q6_K;
    if (!strcmp(preset, "q4_0")) return Q4_0;
    if (!strcmp(name, "blk.1.attn_v.weight") || !strcmp(name, "blk.1.ffn_down.weight")) return Q6_K;
    return Q4_K;
}

static int setup(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN"), *sh = kd_test_env("KD_DATA_DIR"), *tmp = kd_test_tmpdir();
    snprintf(g_ck, sizeof g_ck, "%s/aidreams", tmp);
    snprintf(g_syn, sizeof g_syn, "%s/synthetic", tmp);
    if (kd_test_import_aidreams(g_ck)) return -1;
    char path[800];
    for (int p = 0; p < N_PRESETS; p++) {
        out_path(path, sizeof path, "aidreams", PRESETS[p]);
        if (kd_test_sh("'%s' export --model '%s' --type %s --out '%s' 2>'%s.log' >/dev/null", kd, g_ck, PRESETS[p],
                       path, path))
            return -1;
    }
    /* synthetic: 256-wide, GQA 4/2, untied head, tok512 as its tokenizer */
    const char *cfg = "{\"hidden_size\": 256, \"intermediate_size\": 512, \"num_hidden_layers\": 2, "
                      "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 512, "
                      "\"max_position_embeddings\": 128, \"tie_word_embeddings\": false}";
    snprintf(path, sizeof path, "%s/syn.json", tmp);
    if (kd_write_file_atomic(path, cfg, strlen(cfg), NULL) ||
        kd_test_sh("'%s' init --config '%s' --out '%s' --seed 3 >/dev/null && cp '%s/models/aidreams260K/tok512.bin' "
                   "'%s/tokenizer.bin'", kd, path, g_syn, sh, g_syn))
        return -1;
    const char *syn_presets[] = {"f32", "q4_0", "q4_k_m"};
    for (int p = 0; p < 3; p++) {
        out_path(path, sizeof path, "synthetic", syn_presets[p]);
        if (kd_test_sh("'%s' export --model '%s' --type %s --out '%s' >/dev/null", kd, g_syn, syn_presets[p], path))
            return -1;
    }
    /* gguf-py in a venv of the build dir, created once */
    const char *build = kd_test_env("KD_BUILD_DIR");
    snprintf(g_venv_py, sizeof g_venv_py, "%s/venv/bin/python", build);
    g_have_gguf_py = kd_test_sh("'%s' -c 'import gguf' 2>/dev/null", g_venv_py) == 0;
    if (!g_have_gguf_py) {
        kd_test_sh("/usr/bin/python3 -m venv --system-site-packages '%s/venv' && '%s/venv/bin/pip' install -q "
                   "--disable-pip-version-check gguf==0.17.1 >'%s/pip.log' 2>&1", build, build, tmp);
        g_have_gguf_py = kd_test_sh("'%s' -c 'import gguf' 2>/dev/null", g_venv_py) == 0;
        if (!g_have_gguf_py) kd_test_sh("tail -3 '%s/pip.log' >&2", tmp);
    }
    return 0;
}

/* ---- kd's own reader ---------------------------------------------------------------- */

static void check_u32(const kd_gguf *g, const char *key, uint32_t want) {
    kd_err err;
    uint32_t v = 0;
    if (kd_gguf_get_u32(g, key, &v, &err)) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(kd_gguf_get_u32(g, key, &v, &err), 0);
    assert_int_equal(v, want);
}

static void check_bool(const kd_gguf *g, const char *key, int want) {
    kd_err err;
    int v = -1;
    assert_int_equal(kd_gguf_get_bool(g, key, &v, &err), 0);
    assert_int_equal(v, want);
}

static void check_str(const kd_gguf *g, const char *key, const char *want) {
    kd_err err;
    const char *v = NULL;
    assert_int_equal(kd_gguf_get_str(g, key, &v, NULL, &err), 0);
    assert_string_equal(v, want);
}

/* Everything kd's reader can check in one exported file. */
static void check_file(const char *path, const kd_model *m, const kd_tokenizer *tok, const char *preset,
                       uint32_t ftype, int32_t (*expect)(const char *, const char *)) {
    kd_err err;
    kd_gguf *g = kd_gguf_open(path, &err);
    if (!g) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(g);
    const kd_config *c = &m->cfg;
    assert_int_equal(kd_gguf_version(g), 3);
    assert_int_equal(kd_gguf_alignment(g), 32);
    assert_true(kd_gguf_find_key(g, "general.alignment") < 0);
    check_str(g, "general.architecture", "llama");
    assert_int_equal(kd_gguf_kv_type(g, 0), KD_GGUF_STRING);   /* architecture first */
    check_u32(g, "general.file_type", ftype);
    check_u32(g, "llama.context_length", (uint32_t)c->max_position_embeddings);
    check_u32(g, "llama.embedding_length", (uint32_t)c->hidden_size);
    check_u32(g, "llama.block_count", (uint32_t)c->num_hidden_layers);
    check_u32(g, "llama.feed_forward_length", (uint32_t)c->intermediate_size);
    check_u32(g, "llama.attention.head_count", (uint32_t)c->num_attention_heads);
    check_u32(g, "llama.attention.head_count_kv", (uint32_t)c->num_key_value_heads);
    check_u32(g, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    check_u32(g, "llama.vocab_size", (uint32_t)c->vocab_size);
    float f;
    assert_int_equal(kd_gguf_get_f32(g, "llama.rope.freq_base", &f, &err), 0);
    assert_true(f == 10000.0f);
    assert_int_equal(kd_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f, &err), 0);
    assert_true(f == 1e-5f);
    check_str(g, "tokenizer.ggml.model", "llama");
    check_u32(g, "tokenizer.ggml.bos_token_id", 1);
    check_u32(g, "tokenizer.ggml.eos_token_id", 2);
    check_u32(g, "tokenizer.ggml.unknown_token_id", 0);
    check_bool(g, "tokenizer.ggml.add_bos_token", 1);
    check_bool(g, "tokenizer.ggml.add_eos_token", 0);
    check_bool(g, "tokenizer.ggml.add_space_prefix", 1);
    kd_gguf_arr a;
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.tokens", KD_GGUF_STRING, c->vocab_size, &a, &err), 0);
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.scores", KD_GGUF_FLOAT32, c->vocab_size, &a, &err), 0);
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.token_type", KD_GGUF_INT32, c->vocab_size, &a, &err), 0);

    /* the tokenizer read back encodes like the checkpoint's */
    kd_tokenizer *t2 = kd_tokenizer_from_gguf(g, &err);
    assert_non_null(t2);
    for (int32_t id = 0; id < kd_tokenizer_n_vocab(tok); id++) {
        assert_string_equal(kd_tokenizer_piece(t2, id, NULL), kd_tokenizer_piece(tok, id, NULL));
        assert_int_equal(kd_tokenizer_type(t2, id), kd_tokenizer_type(tok, id));
        assert_true(kd_tokenizer_score(t2, id) == kd_tokenizer_score(tok, id));
    }
    for (size_t i = 0; i < sizeof TEXTS / sizeof *TEXTS; i++) {
        kd_tokens x = {0}, y = {0};
        assert_int_equal(kd_tokenizer_encode(tok, TEXTS[i], strlen(TEXTS[i]), KD_TOK_ENC_ADD_SPECIAL, &x, &err), 0);
        assert_int_equal(kd_tokenizer_encode(t2, TEXTS[i], strlen(TEXTS[i]), KD_TOK_ENC_ADD_SPECIAL, &y, &err), 0);
        assert_int_equal(x.n, y.n);
        assert_memory_equal(x.ids, y.ids, x.n * sizeof(int32_t));
        kd_tokens_free(&x);
        kd_tokens_free(&y);
    }
    kd_tokenizer_free(t2);

    /* tensors: the set, shapes, types, packed layout, values */
    const int64_t L = c->num_hidden_layers, n_expect = 2 + 9 * L + (m->lm_head ? 1 : 0);
    assert_int_equal(kd_gguf_n_tensors(g), n_expect);
    uint64_t off = 0;
    int any_q = 0;
    for (int64_t i = 0; i < n_expect; i++) {
        const kd_gguf_tensor *t = kd_gguf_tensor_at(g, i);
        assert_int_equal(t->offset, off);
        off += (t->nbytes + 31) / 32 * 32;
        any_q |= kd_quant_is_quantized(t->type);
    }
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal((uint64_t)st.st_size, kd_gguf_data_offset(g) + off);
    if (any_q) check_u32(g, "general.quantization_version", 2);
    else assert_true(kd_gguf_find_key(g, "general.quantization_version") < 0);

    for (int64_t i = -3; i < 9 * L; i++) {
        char name[64];
        const kd_tensor *src;
        int64_t heads = 0;
        if (i == -3) snprintf(name, sizeof name, "token_embd.weight"), src = m->embed;
        else if (i == -2) snprintf(name, sizeof name, "output_norm.weight"), src = m->norm;
        else if (i == -1) {
            if (!m->lm_head) continue;
            snprintf(name, sizeof name, "output.weight"), src = m->lm_head;
        } else {
            static const char *sfx[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                        "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
            const kd_layer *ly = &m->layers[i / 9];
            const kd_tensor *srcs[] = {ly->attn_norm, ly->wq, ly->wk, ly->wv, ly->wo, ly->ffn_norm, ly->w_gate, ly->w_up, ly->w_down};
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)(i / 9), sfx[i % 9]);
            src = srcs[i % 9];
            heads = i % 9 == 1 ? c->num_attention_heads : i % 9 == 2 ? c->num_key_value_heads : 0;
        }
        const kd_gguf_tensor *t;
        if (kd_gguf_get_tensor(g, name, &t, &err)) fprintf(stderr, "%s\n", err.msg);
        assert_int_equal(kd_gguf_get_tensor(g, name, &t, &err), 0);
        const int64_t rows = src->ndim == 2 ? src->shape[0] : 1, cols = src->shape[src->ndim - 1];
        assert_int_equal(t->n_dims, src->ndim);
        assert_int_equal(t->ne[0], cols);
        assert_int_equal(t->ne[1], rows);
        if (t->type != expect(preset, name))
            fprintf(stderr, "%s: %s is %s, expected %s\n", path, name, kd_ggml_type_name(t->type),
                    kd_ggml_type_name(expect(preset, name)));
        assert_int_equal(t->type, expect(preset, name));
        float *deq = malloc((size_t)src->n * sizeof(float)), *want = malloc((size_t)src->n * sizeof(float));
        assert_int_equal(kd_dequantize_rows(t->type, t->data, deq, rows, cols, &err), 0);
        if (heads) kd_rope_permute_rows(deq, heads, c->head_dim, cols, 1);   /* back to kd's layout */
        assert_int_equal(kd_fake_quant_rows(t->type, src->data, want, rows, cols, &err), 0);
        if (memcmp(deq, want, (size_t)src->n * sizeof(float))) fprintf(stderr, "%s: %s values differ\n", path, name);
        assert_memory_equal(deq, want, (size_t)src->n * sizeof(float));
        if (t->type == F32) assert_memory_equal(deq, src->data, (size_t)src->n * sizeof(float));
        free(deq);
        free(want);
    }
    kd_gguf_close(g);
}

static void load_ckpt(const char *dir, kd_model *m, kd_tokenizer **tok) {
    kd_err err;
    char tp[700];
    assert_int_equal(kd_checkpoint_load(m, dir, &err), 0);
    snprintf(tp, sizeof tp, "%s/tokenizer.bin", dir);
    *tok = kd_tokenizer_load(tp, &err);
    assert_non_null(*tok);
}

static void test_aidreams_presets(void **state) {
    (void)state;
    kd_model m;
    kd_tokenizer *tok;
    load_ckpt(g_ck, &m, &tok);
    char path[800];
    for (int p = 0; p < N_PRESETS; p++) {
        out_path(path, sizeof path, "aidreams", PRESETS[p]);
        check_file(path, &m, tok, PRESETS[p], FTYPES[p], expect_aidreams);
        /* fallbacks are announced: ffn_down in every quantized preset */
        int quantized = p >= 3;
        assert_int_equal(kd_test_sh("grep -q 'blk.3.ffn_down.weight: row length 172' '%s.log'", path), quantized ? 0 : 1);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        fprintf(stderr, "aidreams260K %-6s: %lld bytes, kd reader checks passed\n", PRESETS[p], (long long)st.st_size);
    }
    kd_tokenizer_free(tok);
    kd_model_free(&m);
}

static void test_synthetic_kquants(void **state) {
    (void)state;
    kd_model m;
    kd_tokenizer *tok;
    load_ckpt(g_syn, &m, &tok);
    char path[800];
    const char *pr[] = {"f32", "q4_0", "q4_k_m"};
    const uint32_t ft[] = {0, 2, 15};
    for (int p = 0; p < 3; p++) {
        out_path(path, sizeof path, "synthetic", pr[p]);
        check_file(path, &m, tok, pr[p], ft[p], expect_synthetic);
    }
    kd_tokenizer_free(tok);
    kd_model_free(&m);
}

/* The F32 export's q/k rows are the llama2.c file's rows, byte for byte. */
static void test_f32_matches_llama2c(void **state) {
    (void)state;
    char bin[700], path[800];
    snprintf(bin, sizeof bin, "%s/models/aidreams260K/aidreams260K.bin", kd_test_env("KD_DATA_DIR"));
    out_path(path, sizeof path, "aidreams", "f32");
    size_t len;
    char *raw = kd_read_file(bin, &len, NULL);
    assert_non_null(raw);
    const float *w = (const float *)(raw + 28);
    const int64_t C = 64, L = 4, V = 512;
    const float *wq = w + V * C + L * C, *wk = wq + L * C * C;
    kd_err err;
    kd_gguf *g = kd_gguf_open(path, &err);
    assert_non_null(g);
    for (int64_t l = 0; l < L; l++) {
        char name[64];
        const kd_gguf_tensor *t;
        snprintf(name, sizeof name, "blk.%lld.attn_q.weight", (long long)l);
        assert_int_equal(kd_gguf_get_tensor(g, name, &t, &err), 0);
        assert_memory_equal(t->data, wq + l * C * C, (size_t)(C * C) * sizeof(float));
        snprintf(name, sizeof name, "blk.%lld.attn_k.weight", (long long)l);
        assert_int_equal(kd_gguf_get_tensor(g, name, &t, &err), 0);
        assert_memory_equal(t->data, wk + l * C * C, (size_t)(C * C) * sizeof(float));
    }
    const kd_gguf_tensor *t;
    assert_int_equal(kd_gguf_get_tensor(g, "token_embd.weight", &t, &err), 0);
    assert_memory_equal(t->data, w, (size_t)(V * C) * sizeof(float));
    kd_gguf_close(g);
    free(raw);
}

/* ---- gguf-py --------------------------------------------------------------------- */

static void gguf_py_check(const char *path) {
    char prefix[900], jpath[950], fpath[950];
    snprintf(prefix, sizeof prefix, "%s.py", path);
    snprintf(jpath, sizeof jpath, "%s.json", prefix);
    snprintf(fpath, sizeof fpath, "%s.f32", prefix);
    assert_int_equal(kd_test_sh("'%s' '%s/tests/py/gguf_check.py' '%s' '%s' 2>'%s.log'", g_venv_py,
                                kd_test_env("KD_SOURCE_DIR"), path, prefix, prefix), 0);
    kd_err err;
    cJSON *j = kd_json_load(jpath, &err);
    assert_non_null(j);
    size_t flen;
    float *vals = (float *)kd_read_file(fpath, &flen, NULL);
    assert_non_null(vals);
    kd_gguf *g = kd_gguf_open(path, &err);
    assert_non_null(g);
    cJSON *kv = cJSON_GetObjectItem(j, "kv"), *ts = cJSON_GetObjectItem(j, "tensors");
    assert_int_equal(cJSON_GetArraySize(kv), kd_gguf_n_kv(g));
    for (int64_t i = 0; i < kd_gguf_n_kv(g); i++) {
        const char *key = kd_gguf_kv_key(g, i);
        cJSON *e = cJSON_GetObjectItem(kv, key);
        assert_non_null(e);
        char want[64];
        kd_gguf_type ty = kd_gguf_kv_type(g, i);
        if (ty == KD_GGUF_ARRAY) {
            kd_gguf_arr a;
            assert_int_equal(kd_gguf_kv_arr(g, i, &a, &err), 0);
            snprintf(want, sizeof want, "ARRAY[%s]", kd_gguf_type_name(a.type));
            assert_int_equal((uint64_t)cJSON_GetObjectItem(e, "count")->valuedouble, a.n);
        } else
            snprintf(want, sizeof want, "%s", kd_gguf_type_name(ty));
        assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring, want);
    }
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(kv, "general.architecture"), "value")->valuestring, "llama");
    assert_int_equal(cJSON_GetArraySize(ts), kd_gguf_n_tensors(g));
    int64_t n_exact = 0, n_total = 0;
    double worst = 0;
    for (int64_t i = 0; i < kd_gguf_n_tensors(g); i++) {
        const kd_gguf_tensor *t = kd_gguf_tensor_at(g, i);
        cJSON *e = cJSON_GetArrayItem(ts, (int)i);
        assert_string_equal(cJSON_GetObjectItem(e, "name")->valuestring, t->name);
        assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring, kd_ggml_type_name(t->type));
        cJSON *ne = cJSON_GetObjectItem(e, "ne");
        assert_int_equal(cJSON_GetArraySize(ne), t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) assert_int_equal((int64_t)cJSON_GetArrayItem(ne, (int)d)->valuedouble, t->ne[d]);
        const int64_t n = t->ne[0] * t->ne[1], o = (int64_t)cJSON_GetObjectItem(e, "offset")->valuedouble;
        assert_true((size_t)(o + n) * sizeof(float) <= flen);
        float *mine = malloc((size_t)n * sizeof(float));
        assert_int_equal(kd_dequantize_rows(t->type, t->data, mine, t->ne[1], t->ne[0], &err), 0);
        float amax = 0;
        for (int64_t k = 0; k < n; k++) amax = fmaxf(amax, fabsf(mine[k]));
        for (int64_t k = 0; k < n; k++) {
            double d = fabs((double)mine[k] - vals[o + k]);
            n_exact += d == 0;
            worst = fmax(worst, d / (amax > 0 ? amax : 1));
        }
        n_total += n;
        free(mine);
    }
    fprintf(stderr, "gguf-py on %s: %d KVs and %lld tensors agree; dequantized values: %lld of %lld bit-identical "
            "to kd's, worst difference %.2e of the tensor's max\n", strrchr(path, '/') + 1, cJSON_GetArraySize(kv),
            (long long)kd_gguf_n_tensors(g), (long long)n_exact, (long long)n_total, worst);
    assert_true(worst <= 1e-6);
    kd_gguf_close(g);
    free(vals);
    cJSON_Delete(j);
}

static void test_gguf_py(void **state) {
    (void)state;
    if (!g_have_gguf_py) {
        KD_TEST_MISSING("gguf-py check: could not create the venv with gguf==0.17.1 (pip could not reach the "
                        "registry?)");
    }
    char path[800];
    for (int p = 0; p < N_PRESETS; p++) {
        out_path(path, sizeof path, "aidreams", PRESETS[p]);
        gguf_py_check(path);
    }
    out_path(path, sizeof path, "synthetic", "q4_k_m");
    gguf_py_check(path);
    out_path(path, sizeof path, "synthetic", "q4_0");
    gguf_py_check(path);
}

/* ---- llama.cpp via node-llama-cpp ---------------------------------------------------- */

/* kd's greedy continuation of ids[0..n) by full forwards (argmax of the last row). */
static void kd_greedy(kd_model *m, const int32_t *prompt, int64_t n, int64_t steps, int32_t *out) {
    int32_t ids[256];
    memcpy(ids, prompt, (size_t)n * sizeof(int32_t));
    kd_err err;
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    g.no_grad = 1;
    for (int64_t s = 0; s < steps; s++) {
        kd_tensor *lg = kd_model_logits(&g, m, ids, 1, n + s);
        const float *row = lg->data + (n + s - 1) * m->cfg.vocab_size;
        int32_t best = 0;
        for (int32_t v = 1; v < m->cfg.vocab_size; v++)
            if (row[v] > row[best]) best = v;
        out[s] = ids[n + s] = best;
        kd_graph_reset(&g);
    }
    kd_graph_free(&g);
}

static int json_ids(cJSON *arr, int32_t *out, int cap) {
    int n = cJSON_GetArraySize(arr);
    assert_true(n <= cap);
    for (int i = 0; i < n; i++) out[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return n;
}

static void print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "  %-22s", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* The parameter behind a GGUF tensor name; *heads > 0 for q/k (rows permuted in the file). */
static kd_tensor *param_for(const kd_model *m, const char *name, int64_t *heads) {
    static const char *sfx[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    *heads = 0;
    if (!strcmp(name, "token_embd.weight")) return m->embed;
    if (!strcmp(name, "output_norm.weight")) return m->norm;
    if (!strcmp(name, "output.weight")) return m->lm_head;
    long long l;
    char part[32];
    if (sscanf(name, "blk.%lld.%31[a-z_].weight", &l, part) != 2 || l < 0 || l >= m->cfg.num_hidden_layers) return NULL;
    kd_layer *ly = &m->layers[l];
    kd_tensor *ps[] = {ly->attn_norm, ly->wq, ly->wk, ly->wv, ly->wo, ly->ffn_norm, ly->w_gate, ly->w_up, ly->w_down};
    for (int k = 0; k < 9; k++)
        if (!strcmp(part, sfx[k])) {
            *heads = k == 1 ? m->cfg.num_attention_heads : k == 2 ? m->cfg.num_key_value_heads : 0;
            return ps[k];
        }
    return NULL;
}

/* Replace m's weights by the file's (dequantized, q/k back in kd's layout): the model llama.cpp runs. */
static void load_weights_from_gguf(kd_model *m, const char *path) {
    kd_err err;
    kd_gguf *g = kd_gguf_open(path, &err);
    assert_non_null(g);
    for (int64_t i = 0; i < kd_gguf_n_tensors(g); i++) {
        const kd_gguf_tensor *t = kd_gguf_tensor_at(g, i);
        int64_t heads;
        kd_tensor *p = param_for(m, t->name, &heads);
        assert_non_null(p);
        assert_int_equal(kd_dequantize_rows(t->type, t->data, p->data, t->ne[1], t->ne[0], &err), 0);
        if (heads) kd_rope_permute_rows(p->data, heads, m->cfg.head_dim, t->ne[0], 1);
    }
    kd_gguf_close(g);
}

/* Load path in llama.cpp; check tokenization against kd; greedy-generate 32 tokens
 * and compare with kd's full forward on the file's weights. Returns how many
 * leading tokens agree. */
static int llama_cpp_check(const char *path, kd_model *m, const kd_tokenizer *tok) {
    const char *text = TEXTS[0], *prompt = "The robot";
    char jpath[900];
    snprintf(jpath, sizeof jpath, "%s.node.json", path);
    int rc = kd_test_sh("cd '%s/tests/node' && node load_and_generate.mjs '%s' --text '%s' --prompt '%s' --n 32 >'%s'",
                        kd_test_env("KD_SOURCE_DIR"), path, text, prompt, jpath);
    if (rc) kd_test_sh("cat '%s' >&2", jpath);
    assert_int_equal(rc, 0);
    kd_err err;
    cJSON *j = kd_json_load(jpath, &err);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")));
    int32_t lt[256], pids[64], gen[64], mine[64];
    int nt = json_ids(cJSON_GetObjectItem(j, "tokenize"), lt, 256);
    int np = json_ids(cJSON_GetObjectItem(j, "prompt_ids"), pids, 64);
    int ng = json_ids(cJSON_GetObjectItem(j, "generated"), gen, 64);
    kd_tokens x = {0}, p = {0};
    assert_int_equal(kd_tokenizer_encode(tok, text, strlen(text), 0, &x, &err), 0);
    assert_int_equal(kd_tokenizer_encode(tok, prompt, strlen(prompt), KD_TOK_ENC_ADD_SPECIAL, &p, &err), 0);
    fprintf(stderr, "llama.cpp (%s) loaded %s\n", cJSON_GetObjectItem(j, "llama_cpp_release")->valuestring,
            strrchr(path, '/') + 1);
    print_ids("llama.cpp tokenize:", lt, nt);
    print_ids("kd tokenize:", x.ids, (int)x.n);
    assert_int_equal(nt, (int)x.n);
    assert_memory_equal(lt, x.ids, x.n * sizeof(int32_t));
    assert_int_equal(np, (int)p.n);
    assert_memory_equal(pids, p.ids, p.n * sizeof(int32_t));
    assert_int_equal(ng, 32);
    load_weights_from_gguf(m, path);
    kd_greedy(m, p.ids, (int64_t)p.n, 32, mine);
    int agree = 0;
    while (agree < 32 && gen[agree] == mine[agree]) agree++;
    print_ids("llama.cpp greedy:", gen, ng);
    print_ids("kd greedy (file's w):", mine, 32);
    fprintf(stderr, "  \"%s\" → \"%s\"; first %d of 32 greedy tokens agree\n", prompt,
            cJSON_GetObjectItem(j, "generated_text")->valuestring, agree);
    cJSON *log = cJSON_GetObjectItem(j, "log");
    for (int i = 0; i < cJSON_GetArraySize(log); i++)
        fprintf(stderr, "  llama.cpp log: %s\n", cJSON_GetArrayItem(log, i)->valuestring);
    kd_tokens_free(&x);
    kd_tokens_free(&p);
    cJSON_Delete(j);
    return agree;
}

static void test_llama_cpp(void **state) {
    (void)state;
    char mod[700];
    snprintf(mod, sizeof mod, "%s/tests/node/node_modules/node-llama-cpp/package.json", kd_test_env("KD_SOURCE_DIR"));
    if (!kd_file_exists(mod) ||
        kd_test_sh("node -e 'process.exit(+process.versions.node.split(\".\")[0] >= 20 ? 0 : 1)' 2>/dev/null")) {
        KD_TEST_MISSING("llama.cpp check: node >= 20 or tests/node/node_modules/node-llama-cpp missing "
                        "(tools/setup.sh installs them)");
    }
    kd_model m;
    kd_tokenizer *tok;
    load_ckpt(g_ck, &m, &tok);
    char path[800];
    out_path(path, sizeof path, "aidreams", "f32");
    kd_model ref;
    kd_tokenizer *tok2;
    load_ckpt(g_ck, &ref, &tok2);
    kd_tokenizer_free(tok2);
    assert_true(llama_cpp_check(path, &m, tok) >= 16);   /* F32: llama.cpp computes the same model */
    for (int i = 0; i < m.n_params; i++)                 /* ... whose weights are the checkpoint's */
        assert_memory_equal(m.params[i]->data, ref.params[i]->data, (size_t)ref.params[i]->n * sizeof(float));
    kd_model_free(&ref);
    out_path(path, sizeof path, "aidreams", "q8_0");
    llama_cpp_check(path, &m, tok);                      /* recorded, not asserted */
    kd_tokenizer_free(tok);
    kd_model_free(&m);
    /* the synthetic model's K-quants load and run (random weights, near-uniform logits:
     * greedy agreement is recorded, not asserted) */
    load_ckpt(g_syn, &m, &tok);
    out_path(path, sizeof path, "synthetic", "q4_k_m");
    llama_cpp_check(path, &m, tok);
    kd_tokenizer_free(tok);
    kd_model_free(&m);
}

/* ---- errors and the writer on its own ---------------------------------------------------- */

static void test_errors(void **state) {
    (void)state;
    kd_err err;
    kd_model m;
    kd_tokenizer *tok;
    load_ckpt(g_ck, &m, &tok);
    char path[800];
    snprintf(path, sizeof path, "%s/err.gguf", kd_test_tmpdir());
    assert_int_equal(kd_export_gguf(&m, tok, "q5_k", path, &err), -1);
    assert_non_null(strstr(err.msg, "q5_k"));
    assert_non_null(strstr(err.msg, "q4_k_m"));
    m.cfg.sliding_window = 64;   /* < context 128: refused */
    assert_int_equal(kd_export_gguf(&m, tok, "f32", path, &err), -1);
    assert_non_null(strstr(err.msg, "sliding window"));
    m.cfg.sliding_window = 128;  /* covers the context: the same model */
    assert_int_equal(kd_export_gguf(&m, tok, "f32", path, &err), 0);
    m.cfg.sliding_window = 0;
    m.cfg.vocab_size = 300;      /* fewer embedding rows than pieces */
    assert_int_equal(kd_export_gguf(&m, tok, "f32", path, &err), -1);
    assert_non_null(strstr(err.msg, "vocab_size"));
    m.cfg.vocab_size = 512;
    assert_true(kd_test_sh("ls '%s'.tmp.* >/dev/null 2>&1", path) != 0);   /* no temporary left behind */
    /* a checkpoint without tokenizer.bin */
    char dir[700];
    snprintf(dir, sizeof dir, "%s/notok", kd_test_tmpdir());
    assert_int_equal(kd_checkpoint_save(&m, dir, &err), 0);
    assert_int_equal(kd_export_checkpoint(dir, "f32", path, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.bin"));
    assert_int_equal(kd_test_sh("'%s' export --model '%s' --type f32 --out '%s' 2>/dev/null", kd_test_env("KD_BIN"), dir, path), 1);
    assert_int_equal(kd_test_sh("'%s' export --model '%s' --type q3_k --out '%s' 2>/dev/null", kd_test_env("KD_BIN"), g_ck, path), 2);
    assert_int_equal(kd_test_sh("'%s' export --help | grep -q q4_k_m", kd_test_env("KD_BIN")), 0);
    /* use_more_bits on 32 layers: 0..3, 28..31 and every third from 6 */
    int want[32] = {1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1};
    for (int i = 0; i < 32; i++) assert_int_equal(kd_use_more_bits(i, 32), want[i]);
    kd_tokenizer_free(tok);
    kd_model_free(&m);
}

static void test_writer(void **state) {
    (void)state;
    kd_err err;
    kd_gguf_writer *w = kd_gguf_writer_new(&err);
    assert_int_equal(kd_gguf_writer_set_alignment(w, 64, 1, &err), 0);
    uint8_t u8 = 200;
    int16_t i16 = -300;
    double f64 = 0.125;
    int64_t i64 = -5;
    assert_int_equal(kd_gguf_writer_add_scalar(w, "a.u8", KD_GGUF_UINT8, &u8, &err), 0);
    assert_int_equal(kd_gguf_writer_add_scalar(w, "a.i16", KD_GGUF_INT16, &i16, &err), 0);
    assert_int_equal(kd_gguf_writer_add_scalar(w, "a.f64", KD_GGUF_FLOAT64, &f64, &err), 0);
    assert_int_equal(kd_gguf_writer_add_scalar(w, "a.i64", KD_GGUF_INT64, &i64, &err), 0);
    assert_int_equal(kd_gguf_writer_add_u64(w, "a.u64", 1ull << 40, &err), 0);
    assert_int_equal(kd_gguf_writer_add_i32(w, "a.i32", -7, &err), 0);
    assert_int_equal(kd_gguf_writer_add_str(w, "a.str", "x\0y", 3, &err), 0);
    const char *strs[] = {"", "▁hi", "<0x0A>"};
    assert_int_equal(kd_gguf_writer_add_arr_str(w, "a.strs", strs, NULL, 3, &err), 0);
    int32_t arr[3] = {-1, 0, 1};
    assert_int_equal(kd_gguf_writer_add_arr(w, "a.i32s", KD_GGUF_INT32, arr, 3, &err), 0);
    assert_int_equal(kd_gguf_writer_add_arr(w, "a.empty", KD_GGUF_FLOAT32, NULL, 0, &err), 0);
    /* refusals */
    assert_int_equal(kd_gguf_writer_add_u32(w, "a.u8", 1, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate key 'a.u8'"));
    assert_int_equal(kd_gguf_writer_add_u32(w, "", 1, &err), -1);
    kd_gguf_writer *w2 = kd_gguf_writer_new(&err);
    assert_int_equal(kd_gguf_writer_add_u64(w2, "general.alignment", 32, &err), -1);
    assert_non_null(strstr(err.msg, "expected UINT32"));
    assert_int_equal(kd_gguf_writer_add_u32(w2, "general.alignment", 24, &err), -1);
    assert_non_null(strstr(err.msg, "power of two"));
    kd_gguf_writer_free(w2);
    assert_int_equal(kd_gguf_writer_set_alignment(w, 48, 0, &err), -1);
    assert_int_equal(kd_gguf_writer_add_arr(w, "a.nested", KD_GGUF_ARRAY, arr, 1, &err), -1);
    unsigned char two = 2;
    assert_int_equal(kd_gguf_writer_add_scalar(w, "a.bool", KD_GGUF_BOOL, &two, &err), -1);
    float data[3 * 64];
    for (int i = 0; i < 3 * 64; i++) data[i] = (float)i * 0.25f - 7.0f;
    int64_t ne[2] = {64, 3}, bad[2] = {48, 3};
    unsigned char q[3 * 68];
    assert_int_equal(kd_quantize_rows(Q8_0, data, q, 3, 64, &err), 0);
    assert_int_equal(kd_gguf_writer_add_tensor(w, "t.q", Q8_0, 2, ne, q, &err), 0);
    assert_int_equal(kd_gguf_writer_add_tensor(w, "t.f", F32, 1, ne, data, &err), 0);
    assert_int_equal(kd_gguf_writer_add_tensor(w, "t.q", F32, 1, ne, data, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate tensor 't.q'"));
    assert_int_equal(kd_gguf_writer_add_tensor(w, "t.bad", Q8_0, 2, bad, data, &err), -1);
    assert_non_null(strstr(err.msg, "48"));
    char long_name[65];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';   /* 64 bytes: GGML_MAX_NAME needs fewer */
    assert_int_equal(kd_gguf_writer_add_tensor(w, long_name, F32, 1, ne, data, &err), -1);
    assert_non_null(strstr(err.msg, "1..63"));
    long_name[63] = '\0';
    assert_int_equal(kd_gguf_writer_add_tensor(w, long_name, F32, 1, ne, data, &err), 0);
    assert_int_equal(kd_gguf_writer_add_tensor(w, "t.q5", 6, 1, ne, data, &err), -1);
    assert_non_null(strstr(err.msg, "Q5_0"));
    char path[700];
    snprintf(path, sizeof path, "%s/writer.gguf", kd_test_tmpdir());
    assert_int_equal(kd_gguf_writer_write(w, path, &err), 0);
    kd_gguf_writer_free(w);

    kd_gguf *g = kd_gguf_open(path, &err);
    assert_non_null(g);
    assert_int_equal(kd_gguf_alignment(g), 64);
    check_u32(g, "general.alignment", 64);
    int64_t v64;
    assert_int_equal(kd_gguf_get_i64(g, "a.i64", &v64, &err), 0);
    assert_int_equal(v64, -5);
    int16_t v16;
    assert_int_equal(kd_gguf_get_i16(g, "a.i16", &v16, &err), 0);
    assert_int_equal(v16, -300);
    const char *s;
    size_t sl;
    assert_int_equal(kd_gguf_get_str(g, "a.str", &s, &sl, &err), 0);
    assert_int_equal(sl, 3);
    assert_memory_equal(s, "x\0y", 3);
    kd_gguf_arr a;
    assert_int_equal(kd_gguf_get_arr(g, "a.strs", KD_GGUF_STRING, 3, &a, &err), 0);
    assert_memory_equal(kd_gguf_arr_str(&a, 1, &sl), "▁hi", strlen("▁hi"));
    assert_int_equal(kd_gguf_get_arr(g, "a.empty", KD_GGUF_FLOAT32, 0, &a, &err), 0);
    const kd_gguf_tensor *t;
    assert_int_equal(kd_gguf_get_tensor(g, "t.f", &t, &err), 0);
    assert_int_equal(t->offset, 256);   /* 3 × 68 = 204 bytes padded to 64 */
    assert_memory_equal(t->data, data, 64 * sizeof(float));
    assert_int_equal(kd_gguf_data_offset(g) % 64, 0);
    kd_gguf_close(g);
}

/* kd export (the no-grad load) writes the bytes an export of the training-style
 * load writes, in every preset; general.name is the file stem, so the reference
 * files get the same names in another directory. */
static void test_nograd_same_bytes(void **state) {
    (void)state;
    kd_err err;
    char dir[700], ref[800], path[800];
    snprintf(dir, sizeof dir, "%s/nograd_ref", kd_test_tmpdir());
    assert_int_equal(kd_mkdirs(dir, &err), 0);
    const char *models[] = {g_ck, g_syn}, *stems[] = {"aidreams", "synthetic"};
    for (int k = 0; k < 2; k++) {
        kd_model m;
        kd_tokenizer *tok;
        load_ckpt(models[k], &m, &tok);
        assert_int_equal(m.no_grad, 0);
        assert_non_null(m.params[0]->grad);
        for (int p = 0; p < N_PRESETS; p++) {
            if (k == 1 && strcmp(PRESETS[p], "q4_k_m") && strcmp(PRESETS[p], "f32")) continue;
            snprintf(ref, sizeof ref, "%s/%s_%s.gguf", dir, stems[k], PRESETS[p]);
            out_path(path, sizeof path, stems[k], PRESETS[p]);
            assert_int_equal(kd_export_gguf(&m, tok, PRESETS[p], ref, &err), 0);
            if (kd_test_sh("cmp -s '%s' '%s'", ref, path)) fprintf(stderr, "%s differs from %s\n", path, ref);
            assert_int_equal(kd_test_sh("cmp -s '%s' '%s'", ref, path), 0);
        }
        kd_tokenizer_free(tok);
        kd_model_free(&m);
    }
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aidreams_presets), cmocka_unit_test(test_synthetic_kquants),
        cmocka_unit_test(test_f32_matches_llama2c), cmocka_unit_test(test_gguf_py),
        cmocka_unit_test(test_llama_cpp), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_writer),           cmocka_unit_test(test_nograd_same_bytes),
    };
    return KD_RUN_GROUP(tests, setup, NULL);
}
