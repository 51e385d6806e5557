/*
 * kd_gguf_model.c — load a GGUF llama model as an F32 kd_model (see
 * kd_gguf_model.h). Tensor names and shapes: docs/gguf.md#tensors.
 */
#include "student/kd_gguf_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/kd_tokenizer.h"
#include "data/kd_tokenizer_load.h"
#include "format/kd_gguf.h"
#include "student/kd_llama2c.h"
#include "format/kd_quant.h"

/* An optional (def ≥ 0) or required (def < 0) UINT32 key in [lo, hi]. */
static int get_u32(const kd_gguf *g, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out, kd_err *err) {
    if (kd_gguf_find_key(g, key) < 0) {
        if (def < 0) return kd_errf(err, "%s: key '%s' is missing, expected an integer in [%lld, %lld]", kd_gguf_name(g),
                                    key, (long long)lo, (long long)hi);
        *out = def;
        return 0;
    }
    uint32_t v;
    if (kd_gguf_get_u32(g, key, &v, err)) return -1;
    if (v < lo || v > hi)
        return kd_errf(err, "%s: key '%s' = %u, expected an integer in [%lld, %lld]", kd_gguf_name(g), key, v,
                       (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

int kd_gguf_read_rope(const kd_gguf *g, kd_config *c, kd_err *err) {
    const char *name = kd_gguf_name(g);
    float f;
    if (kd_gguf_find_key(g, "llama.rope.freq_base") >= 0) {
        if (kd_gguf_get_f32(g, "llama.rope.freq_base", &f, err)) return -1;
        c->rope_theta = f;
    }
    /* llama.cpp: type "linear" when absent; the factor divides every frequency unless the type is "none" */
    const char *type = "linear";
    if (kd_gguf_find_key(g, "llama.rope.scaling.type") >= 0 && kd_gguf_get_str(g, "llama.rope.scaling.type", &type, NULL, err))
        return -1;
    if (strcmp(type, "none") && strcmp(type, "linear"))
        return kd_errf(err, "%s: llama.rope.scaling.type is \"%s\": not supported (kd computes \"none\", \"linear\" and "
                       "Llama 3 rope_freqs scaling)", name, type);
    double factor = 1.0;
    const char *fkey = kd_gguf_find_key(g, "llama.rope.scaling.factor") >= 0 ? "llama.rope.scaling.factor"
                       : kd_gguf_find_key(g, "llama.rope.scale_linear") >= 0  ? "llama.rope.scale_linear"
                                                                              : NULL;
    if (fkey) {
        if (kd_gguf_get_f32(g, fkey, &f, err)) return -1;
        if (!(f >= 0) || !isfinite(f)) return kd_errf(err, "%s: %s is %g, expected a positive factor", name, fkey, (double)f);
        if (f != 0 && !strcmp(type, "linear")) factor = f;
    }
    int64_t orig = 0;
    if (get_u32(g, "llama.rope.scaling.original_context_length", 0, 0, INT32_MAX, &orig, err)) return -1;
    int64_t half = c->head_dim / 2;
    float *div = malloc((size_t)(half + 1) * sizeof *div);
    if (!div) return kd_errf(err, "out of memory");
    for (int64_t i = 0; i < half; i++) div[i] = (float)factor;
    const kd_gguf_tensor *t = kd_gguf_find_tensor(g, "rope_freqs.weight");
    int rc = -1;
    if (t) {
        if (t->ne[0] != half || t->ne[1] * t->ne[2] * t->ne[3] != 1) {
            kd_errf(err, "%s: tensor 'rope_freqs.weight' has %lld × %lld values, expected head_dim/2 = %lld", name,
                    (long long)t->ne[0], (long long)(t->ne[1] * t->ne[2] * t->ne[3]), (long long)half);
            goto done;
        }
        float *ff = malloc((size_t)(half + 1) * sizeof *ff);
        if (!ff) {
            kd_errf(err, "out of memory");
            goto done;
        }
        if (kd_dequantize_rows(t->type, t->data, ff, 1, half, err)) {
            free(ff);
            kd_err_prefix(err, "%s: tensor 'rope_freqs.weight'", name);
            goto done;
        }
        for (int64_t i = 0; i < half; i++) div[i] *= ff[i];   /* llama.cpp: θ = freq_scale · θ_base / ff */
        free(ff);
    }
    rc = kd_config_rope_from_factors(c, div, half, orig, name, err);
done:
    free(div);
    return rc;
}

/* An optional (has_def) or required FLOAT32 key, finite and in [lo, hi]. */
static int get_f32(const kd_gguf *g, const char *key, int has_def, double def, double lo, double hi, double *out,
                   kd_err *err) {
    if (kd_gguf_find_key(g, key) < 0) {
        if (!has_def) return kd_errf(err, "%s: key '%s' is missing, expected a number in [%g, %g]", kd_gguf_name(g),
                                     key, lo, hi);
        *out = def;
        return 0;
    }
    float f;
    if (kd_gguf_get_f32(g, key, &f, err)) return -1;
    if (!(f >= lo && f <= hi))
        return kd_errf(err, "%s: key '%s' = %g, expected a number in [%g, %g]", kd_gguf_name(g), key, (double)f, lo, hi);
    *out = f;
    return 0;
}

int kd_gguf_config(const kd_gguf *g, kd_config *c, kd_err *err) {
    const char *f = kd_gguf_name(g), *arch;
    size_t alen;
    kd_config_defaults(c);
    if (kd_gguf_get_str(g, "general.architecture", &arch, &alen, err)) return -1;
    if (alen != 5 || memcmp(arch, "llama", 5))
        return kd_errf(err, "%s: key 'general.architecture' = \"%.*s\", expected \"llama\" (kd loads llama models)", f,
                       (int)(alen > 64 ? 64 : alen), arch);
    int64_t rot = 0;
    if (get_u32(g, "llama.embedding_length", -1, 1, KD_CONFIG_MAX_DIM, &c->hidden_size, err) ||
        get_u32(g, "llama.feed_forward_length", -1, 1, 4 * KD_CONFIG_MAX_DIM, &c->intermediate_size, err) ||
        get_u32(g, "llama.block_count", -1, 1, KD_CONFIG_MAX_LAYERS, &c->num_hidden_layers, err) ||
        get_u32(g, "llama.attention.head_count", -1, 1, KD_CONFIG_MAX_HEADS, &c->num_attention_heads, err) ||
        get_u32(g, "llama.context_length", -1, 1, KD_CONFIG_MAX_CTX, &c->max_position_embeddings, err) ||
        get_u32(g, "llama.attention.head_count_kv", c->num_attention_heads, 1, c->num_attention_heads,
                &c->num_key_value_heads, err))
        return -1;
    if (c->num_attention_heads % c->num_key_value_heads)
        return kd_errf(err, "%s: key 'llama.attention.head_count_kv' = %lld does not divide 'llama.attention.head_count' "
                       "= %lld", f, (long long)c->num_key_value_heads, (long long)c->num_attention_heads);
    if (kd_gguf_find_key(g, "llama.attention.key_length") < 0 && c->hidden_size % c->num_attention_heads)
        return kd_errf(err, "%s: key 'llama.attention.head_count' = %lld does not divide 'llama.embedding_length' = %lld "
                       "(and 'llama.attention.key_length' is absent)", f, (long long)c->num_attention_heads,
                       (long long)c->hidden_size);
    if (get_u32(g, "llama.attention.key_length", c->hidden_size / c->num_attention_heads, 2, KD_CONFIG_MAX_HEAD_DIM,
                &c->head_dim, err) ||
        get_u32(g, "llama.rope.dimension_count", c->head_dim, 1, KD_CONFIG_MAX_HEAD_DIM, &rot, err) ||
        get_f32(g, "llama.attention.layer_norm_rms_epsilon", 0, 0, KD_CONFIG_MIN_EPS, KD_CONFIG_MAX_EPS,
                &c->rms_norm_eps, err) ||
        get_f32(g, "llama.rope.freq_base", 1, 10000.0, KD_CONFIG_MIN_THETA, KD_CONFIG_MAX_THETA, &c->rope_theta, err))
        return -1;
    if (c->head_dim % 2)
        return kd_errf(err, "%s: head dimension %lld ('llama.attention.key_length' or embedding / heads) is odd, expected "
                       "an even number (RoPE rotates pairs)", f, (long long)c->head_dim);
    if (rot != c->head_dim)
        return kd_errf(err, "%s: key 'llama.rope.dimension_count' = %lld, expected the head dimension %lld (partial RoPE "
                       "is not supported)", f, (long long)rot, (long long)c->head_dim);
    if (kd_gguf_read_rope(g, c, err)) return -1;   /* the scaling type, factor and rope_freqs */
    const kd_gguf_tensor *embd = kd_gguf_find_tensor(g, "token_embd.weight");
    if (!embd) return kd_errf(err, "%s: tensor 'token_embd.weight' is missing", f);
    if (embd->n_dims != 2 || embd->ne[0] != c->hidden_size || embd->ne[1] < 1 || embd->ne[1] > KD_CONFIG_MAX_DIM)
        return kd_errf(err, "%s: tensor 'token_embd.weight' has %u dims {%lld, %lld}, expected {%lld ('llama.embedding_"
                       "length'), n_vocab in [1, %lld]}", f, embd->n_dims, (long long)embd->ne[0], (long long)embd->ne[1],
                       (long long)c->hidden_size, (long long)KD_CONFIG_MAX_DIM);
    c->vocab_size = embd->ne[1];
    int64_t nv;
    if (get_u32(g, "llama.vocab_size", c->vocab_size, 1, KD_CONFIG_MAX_DIM, &nv, err)) return -1;
    if (nv != c->vocab_size)
        return kd_errf(err, "%s: key 'llama.vocab_size' = %lld, but tensor 'token_embd.weight' has %lld rows", f,
                       (long long)nv, (long long)c->vocab_size);
    if (kd_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0) {
        kd_gguf_arr a;
        if (kd_gguf_get_arr(g, "tokenizer.ggml.tokens", -1, -1, &a, err)) return -1;
        if (a.n > (uint64_t)c->vocab_size)
            return kd_errf(err, "%s: key 'tokenizer.ggml.tokens' has %llu pieces, expected at most the %lld rows of "
                           "'token_embd.weight' (the model's vocabulary)", f, (unsigned long long)a.n,
                           (long long)c->vocab_size);
    }
    c->tie_word_embeddings = kd_gguf_find_tensor(g, "output.weight") == NULL;
    static const char *ids[2] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
    int64_t *dst[2] = {&c->bos_token_id, &c->eos_token_id};
    for (int i = 0; i < 2; i++) {
        if (kd_gguf_find_key(g, ids[i]) < 0) {
            if (*dst[i] >= c->vocab_size) *dst[i] = 0;   /* the defaults 1 / 2 do not fit a tiny vocabulary */
            continue;
        }
        if (get_u32(g, ids[i], 0, 0, c->vocab_size - 1, dst[i], err)) return -1;
    }
    if (kd_config_validate(c, f, err)) return -1;
    return 0;
}

int kd_gguf_tensor_name(const char *hf, char *out, size_t n, int64_t *layer) {
    static const char *map[][2] = {
        {"input_layernorm.weight", "attn_norm"}, {"self_attn.q_proj.weight", "attn_q"},
        {"self_attn.k_proj.weight", "attn_k"},   {"self_attn.v_proj.weight", "attn_v"},
        {"self_attn.o_proj.weight", "attn_output"}, {"post_attention_layernorm.weight", "ffn_norm"},
        {"mlp.gate_proj.weight", "ffn_gate"},    {"mlp.up_proj.weight", "ffn_up"},
        {"mlp.down_proj.weight", "ffn_down"},
    };
    if (layer) *layer = -1;
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, n, "token_embd.weight") < 0;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, n, "output_norm.weight") < 0;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(out, n, "output.weight") < 0;
    long long l;
    int pos = 0;
    if (sscanf(hf, "model.layers.%lld.%n", &l, &pos) != 1 || pos == 0) return -1;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(hf + pos, map[i][0])) {
            if (layer) *layer = l;
            return snprintf(out, n, "blk.%lld.%s.weight", l, map[i][1]) < 0;
        }
    return -1;
}

/* Every parameter's tensor present with its shape and a type kd dequantizes, checked on a
 * model without storage before anything is allocated (the file must hold what the
 * metadata promises). */
static int check_tensors(const kd_gguf *g, const kd_config *c, kd_err *err) {
    kd_model shell;
    if (kd_model_new_shell(&shell, c, err)) return kd_err_prefix(err, "%s", kd_gguf_name(g));
    int rc = 0;
    for (int i = 0; i < shell.n_params && !rc; i++) {
        const kd_tensor *p = shell.params[i];
        char name[96];
        const kd_gguf_tensor *t;
        int64_t cols = p->ndim == 2 ? p->shape[1] : p->shape[0], rows = p->ndim == 2 ? p->shape[0] : 1;
        if (kd_gguf_tensor_name(p->name, name, sizeof name, NULL))
            rc = kd_errf(err, "%s: no GGUF name for '%s'", kd_gguf_name(g), p->name);
        else if (!(t = kd_gguf_find_tensor(g, name)))
            rc = kd_errf(err, "%s: tensor '%s' is missing", kd_gguf_name(g), name);
        else if (t->ne[0] != cols || t->ne[1] * t->ne[2] * t->ne[3] != rows)
            rc = kd_errf(err, "%s: tensor '%s' has ne [%lld, %lld], expected [%lld, %lld]", kd_gguf_name(g), name,
                         (long long)t->ne[0], (long long)t->ne[1], (long long)cols, (long long)rows);
        else if (!kd_quant_supported(t->type))
            rc = kd_errf(err, "%s: tensor '%s' has type %s, which kd cannot dequantize", kd_gguf_name(g), name,
                         kd_ggml_type_name(t->type));
    }
    kd_model_free(&shell);
    return rc;
}

int kd_model_load_gguf_flags(kd_model *m, const char *path, struct kd_tokenizer **tok, int flags, kd_err *err) {
    memset(m, 0, sizeof *m);
    if (tok) *tok = NULL;
    kd_gguf *g = kd_gguf_open(path, err);
    if (!g) return -1;
    int rc = -1, have_model = 0;
    kd_config c;
    if (kd_gguf_config(g, &c, err) || check_tensors(g, &c, err)) goto done;
    /* every tensor must be one kd computes with: biases or other extras would be silently dropped */
    for (int64_t i = 0; i < kd_gguf_n_tensors(g); i++) {
        const char *tn = kd_gguf_tensor_at(g, i)->name;
        int l, k = !strcmp(tn, "token_embd.weight") || !strcmp(tn, "output_norm.weight") || !strcmp(tn, "output.weight") ||
                   !strcmp(tn, "rope_freqs.weight");
        char rest[64];
        static const char *const per_layer[] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                                                "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight",
                                                "ffn_up.weight", "ffn_down.weight"};
        if (!k && sscanf(tn, "blk.%d.%63s", &l, rest) == 2 && l >= 0 && l < c.num_hidden_layers)
            for (size_t j = 0; j < sizeof per_layer / sizeof *per_layer; j++) k |= !strcmp(rest, per_layer[j]);
        if (!k) {
            kd_errf(err, "%s: tensor '%s' is not part of the llama model kd computes (no biases, no extra tensors)", path, tn);
            goto done;
        }
    }
    if (kd_model_new_flags(m, &c, flags, err)) {
        kd_err_prefix(err, "%s", path);
        goto done;
    }
    have_model = 1;
    for (int i = 0; i < m->n_params; i++) {
        kd_tensor *p = m->params[i];
        char name[96];
        if (kd_gguf_tensor_name(p->name, name, sizeof name, NULL)) {
            kd_errf(err, "%s: no GGUF name for '%s'", path, p->name);
            goto done;
        }
        const kd_gguf_tensor *t = kd_gguf_find_tensor(g, name);
        if (!t) {
            kd_errf(err, "%s: tensor '%s' is missing", path, name);
            goto done;
        }
        int64_t cols = p->ndim == 2 ? p->shape[1] : p->shape[0], rows = p->ndim == 2 ? p->shape[0] : 1;
        if (t->ne[0] != cols || t->ne[1] * t->ne[2] * t->ne[3] != rows) {
            kd_errf(err, "%s: tensor '%s' has ne [%lld, %lld], expected [%lld, %lld]", path, name, (long long)t->ne[0],
                    (long long)t->ne[1], (long long)cols, (long long)rows);
            goto done;
        }
        if (!kd_quant_supported(t->type)) {
            kd_errf(err, "%s: tensor '%s' has type %s, which kd cannot dequantize", path, name, kd_ggml_type_name(t->type));
            goto done;
        }
        int bad = kd_dequantize_rows(t->type, t->data, p->data, rows, cols, err);
        kd_gguf_release(g, t);   /* the file's pages of t are no longer needed */
        if (bad) {
            kd_err_prefix(err, "%s: tensor '%s'", path, name);
            goto done;
        }
        int64_t nonfinite = kd_first_nonfinite(p->data, rows * cols);
        if (nonfinite >= 0) {
            kd_errf(err, "%s: tensor '%s': element %lld is %g, expected finite weights", path, name,
                    (long long)nonfinite, (double)p->data[nonfinite]);
            goto done;
        }
        if (strstr(p->name, "q_proj")) kd_rope_permute_rows(p->data, c.num_attention_heads, c.head_dim, cols, 1);
        if (strstr(p->name, "k_proj")) kd_rope_permute_rows(p->data, c.num_key_value_heads, c.head_dim, cols, 1);
    }
    if (tok && kd_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0 && !(*tok = kd_tokenizer_from_gguf(g, err))) goto done;
    rc = 0;
done:
    if (rc && have_model) kd_model_free(m);
    kd_gguf_close(g);
    return rc;
}

int kd_model_load_gguf(kd_model *m, const char *path, struct kd_tokenizer **tok, kd_err *err) {
    return kd_model_load_gguf_flags(m, path, tok, 0, err);
}
