/*
 * kd_export.c — the llama.cpp export of a kd student as a GGUF "llama" model
 * (see kd_export.h and docs/gguf.md).
 */
#include "export/kd_export.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/kd_file.h"
#include "core/kd_log.h"
#include "data/kd_dump_tok.h"
#include "data/kd_tokenizer_bpe.h"
#include "format/kd_gguf_write.h"
#include "format/kd_quant.h"
#include "quant/kd_quant_plan.h"
#include "student/kd_checkpoint.h"
#include "student/kd_llama2c.h"

/* ---- export ----------------------------------------------------------------------- */

typedef struct export_src {
    const float *data;        /* [rows, cols] row-major (HF layout) */
    int64_t rows, cols;
    int32_t type;
    int64_t rope_heads, D;    /* > 0: permute rows rotate_half → adjacent pairs first */
} export_src;

static int fill_tensor(void *ctx, void *dst, size_t nbytes, kd_err *err) {
    const export_src *s = ctx;
    if (nbytes != (size_t)s->rows * kd_quant_row_size(s->type, s->cols))
        return kd_errf(err, "internal size mismatch (%zu bytes)", nbytes);
    const float *src = s->data;
    float *tmp = NULL;
    if (s->rope_heads > 0) {
        tmp = malloc((size_t)(s->rows * s->cols) * sizeof(float));
        if (!tmp) return kd_errf(err, "out of memory for the q/k permutation");
        memcpy(tmp, s->data, (size_t)(s->rows * s->cols) * sizeof(float));
        kd_rope_permute_rows(tmp, s->rope_heads, s->D, s->cols, 0);
        src = tmp;
    }
    int rc = kd_quantize_rows(s->type, src, dst, s->rows, s->cols, err);
    free(tmp);
    return rc;
}

typedef struct export_job {
    kd_gguf_writer *w;
    const kd_export_preset *p;
    export_src *srcs;
    int n_src;
    int64_t n_layer;
    int tied, any_quantized;
} export_job;

static int export_tensor(export_job *j, const char *name, const kd_tensor *t, int64_t layer, int64_t rope_heads,
                         int64_t D, kd_err *err) {
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
    int fell_back;
    int32_t type = kd_export_tensor_type(j->p, name, t->ndim, cols, layer, j->n_layer, j->tied, &fell_back);
    if (fell_back)
        kd_warn("GGUF export: %s: row length %" PRId64 " is not a multiple of the %s block; writing %s", name, cols,
                kd_ggml_type_name(kd_export_wanted_type(j->p, name, t->ndim, layer, j->n_layer, j->tied)), kd_ggml_type_name(type));
    if (kd_quant_is_quantized(type)) j->any_quantized = 1;
    export_src *s = &j->srcs[j->n_src++];
    *s = (export_src){t->data, rows, cols, type, rope_heads, D};
    int64_t ne[2] = {cols, rows};
    return kd_gguf_writer_add_tensor_fn(j->w, name, type, t->ndim, ne, fill_tensor, s, err);
}

static const char *file_stem(const char *path, char *buf, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(buf, n, "%s", base);
    size_t l = strlen(buf);
    if (l > 5 && !strcmp(buf + l - 5, ".gguf")) buf[l - 5] = '\0';
    return buf;
}

/* tokenizer.ggml.pre ("default" when the teacher's dump named none) and
 * tokenizer.ggml.merges of a byte-level BPE ("gpt2") tokenizer (data/kd_tokenizer_bpe.h). */
static int export_bpe(kd_gguf_writer *w, const kd_tokenizer *tok, kd_err *err) {
    int32_t m = kd_tokenizer_n_merges(tok);
    const char **ms = malloc(((size_t)m + 1) * sizeof *ms);
    size_t *ls = malloc(((size_t)m + 1) * sizeof *ls);
    int rc = -1;
    if (!ms || !ls) {
        kd_errf(err, "out of memory for %" PRId32 " merges", m);
    } else {
        for (int32_t i = 0; i < m; i++) ms[i] = kd_tokenizer_merge(tok, i, &ls[i]);
        const char *pre = kd_tokenizer_pre(tok)[0] ? kd_tokenizer_pre(tok) : "default";
        rc = kd_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre, (size_t)-1, err) ||
                     kd_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", ms, ls, (uint64_t)m, err)
                 ? -1
                 : 0;
    }
    free(ms);
    free(ls);
    return rc;
}

/* The tokenizer.ggml.* keys; the vocabulary is padded to V with UNUSED pieces. A
 * "gpt2" tokenizer gets its pre-tokenizer and merges, and no scores. */
static int export_vocab(kd_gguf_writer *w, const kd_tokenizer *tok, int64_t V, kd_err *err) {
    int32_t n = kd_tokenizer_n_vocab(tok);
    if (n > V)
        return kd_errf(err, "tokenizer has %" PRId32 " pieces but the model's vocab_size is %" PRId64
                       "; llama.cpp needs one embedding row per piece", n, V);
    if (n < V)
        kd_warn("kd export: tokenizer has %" PRId32 " pieces, model vocab_size %" PRId64 ": padding with [PADn] pieces",
                n, V);
    const char **pieces = calloc((size_t)V, sizeof *pieces);
    size_t *lens = calloc((size_t)V, sizeof *lens);
    float *scores = calloc((size_t)V, sizeof *scores);
    int32_t *types = calloc((size_t)V, sizeof *types);
    char (*pad)[32] = V > n ? calloc((size_t)(V - n), sizeof *pad) : NULL;
    int rc = -1;
    if (!pieces || !lens || !scores || !types || (V > n && !pad)) {
        kd_errf(err, "out of memory for a %" PRId64 "-piece vocabulary", V);
        goto done;
    }
    for (int64_t i = 0; i < V; i++) {
        if (i < n) {
            pieces[i] = kd_tokenizer_piece(tok, (int32_t)i, &lens[i]);
            scores[i] = kd_tokenizer_score(tok, (int32_t)i);
            types[i] = (int32_t)kd_tokenizer_type(tok, (int32_t)i);
        } else {
            snprintf(pad[i - n], sizeof pad[0], "[PAD%" PRId64 "]", i);
            pieces[i] = pad[i - n];
            lens[i] = strlen(pad[i - n]);
            scores[i] = -1000.0f;
            types[i] = KD_TOKEN_UNUSED;
        }
    }
    unsigned flags = kd_tokenizer_flags(tok);
    int bpe = !strcmp(kd_tokenizer_model(tok), "gpt2");
    if (kd_gguf_writer_add_str(w, "tokenizer.ggml.model", kd_tokenizer_model(tok), (size_t)-1, err) ||
        (bpe && export_bpe(w, tok, err)) ||
        kd_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, (uint64_t)V, err) ||
        (!bpe && kd_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KD_GGUF_FLOAT32, scores, (uint64_t)V, err)) ||
        kd_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KD_GGUF_INT32, types, (uint64_t)V, err))
        goto done;
    const char *id_keys[3] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                              "tokenizer.ggml.unknown_token_id"};
    int32_t ids[3] = {kd_tokenizer_bos(tok), kd_tokenizer_eos(tok), kd_tokenizer_unk(tok)};
    for (int k = 0; k < 3; k++)
        if (ids[k] >= 0 && kd_gguf_writer_add_u32(w, id_keys[k], (uint32_t)ids[k], err)) goto done;
    /* llama.cpp refuses add_bos/add_eos without the token */
    if (kd_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", (flags & KD_TOK_ADD_BOS) && ids[0] >= 0, err) ||
        kd_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", (flags & KD_TOK_ADD_EOS) && ids[1] >= 0, err) ||
        kd_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", (flags & KD_TOK_ADD_SPACE_PREFIX) != 0, err))
        goto done;
    rc = 0;
done:
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    free(pad);
    return rc;
}

int kd_export_gguf(const kd_model *m, const kd_tokenizer *tok, const char *preset, const char *path, kd_err *err) {
    const kd_export_preset *p = kd_export_preset_find(preset);
    if (!p) {
        int n;
        const kd_export_preset *all = kd_export_presets(&n);
        char list[256] = "";
        for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", all[i].name);
        return kd_errf(err, "%s: unknown export type '%s', expected one of %s", path, preset ? preset : "(null)", list);
    }
    const kd_config *c = &m->cfg;
    if (c->sliding_window > 0 && c->sliding_window < c->max_position_embeddings)
        return kd_errf(err, "%s: the model uses a sliding window of %" PRId64 " positions, shorter than its context %" PRId64
                       "; GGUF arch 'llama' has no sliding-window key, so llama.cpp would attend to the whole context "
                       "and compute a different model", path, c->sliding_window, c->max_position_embeddings);
    const int64_t vals[] = {c->max_position_embeddings, c->hidden_size, c->num_hidden_layers, c->intermediate_size,
                            c->num_attention_heads, c->num_key_value_heads, c->head_dim, c->vocab_size};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (vals[i] <= 0 || vals[i] > (int64_t)UINT32_MAX)
            return kd_errf(err, "%s: config value %" PRId64 " does not fit GGUF's UINT32 hyper-parameters", path, vals[i]);

    /* Llama 3.1 RoPE: llama.cpp's per-dimension divisors, tensor rope_freqs.weight (F32, head_dim/2) */
    float *rope_ff = NULL;
    if (c->rope_type == KD_ROPE_TYPE_LLAMA3) {
        if (!(rope_ff = malloc((size_t)(c->head_dim / 2) * sizeof *rope_ff))) return kd_errf(err, "%s: out of memory", path);
        kd_config_rope_freq_factors(c, rope_ff);
    }
    kd_gguf_writer *w = kd_gguf_writer_new(err);
    if (!w) {
        free(rope_ff);
        return -1;
    }
    const int64_t L = c->num_hidden_layers, n_src = 3 + 9 * L;
    export_job j = {w, p, calloc((size_t)n_src, sizeof(export_src)), 0, L, m->lm_head == NULL, 0};
    int rc = -1;
    char name[KD_GGUF_MAX_NAME * 2];
    if (!j.srcs) {
        kd_errf(err, "%s: out of memory", path);
        goto done;
    }
    /* tensors first: general.quantization_version depends on their types */
    int64_t ne_ff[1] = {c->head_dim / 2};
    if (rope_ff && kd_gguf_writer_add_tensor(w, "rope_freqs.weight", KD_GGML_TYPE_F32, 1, ne_ff, rope_ff, err)) goto done;
    if (export_tensor(&j, "token_embd.weight", m->embed, -1, 0, 0, err) ||
        export_tensor(&j, "output_norm.weight", m->norm, -1, 0, 0, err) ||
        (m->lm_head && export_tensor(&j, "output.weight", m->lm_head, -1, 0, 0, err)))
        goto done;
    for (int64_t l = 0; l < L; l++) {
        const kd_layer *ly = &m->layers[l];
        struct { const char *suffix; const kd_tensor *t; int64_t heads; } parts[] = {
            {"attn_norm", ly->attn_norm, 0},  {"attn_q", ly->wq, c->num_attention_heads},
            {"attn_k", ly->wk, c->num_key_value_heads}, {"attn_v", ly->wv, 0},
            {"attn_output", ly->wo, 0},       {"ffn_norm", ly->ffn_norm, 0},
            {"ffn_gate", ly->w_gate, 0},      {"ffn_up", ly->w_up, 0},
            {"ffn_down", ly->w_down, 0},
        };
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            snprintf(name, sizeof name, "blk.%" PRId64 ".%s.weight", l, parts[k].suffix);
            if (export_tensor(&j, name, parts[k].t, l, parts[k].heads, c->head_dim, err)) goto done;
        }
    }
    char stem[256];
    const char *a = "llama";
#define U32(key, v) kd_gguf_writer_add_u32(w, key, (uint32_t)(v), err)
    if (kd_gguf_writer_add_str(w, "general.architecture", a, (size_t)-1, err) ||
        kd_gguf_writer_add_str(w, "general.name", file_stem(path, stem, sizeof stem), (size_t)-1, err) ||
        U32("general.file_type", p->file_type) ||
        (j.any_quantized && U32("general.quantization_version", 2)) ||
        U32("llama.context_length", c->max_position_embeddings) || U32("llama.embedding_length", c->hidden_size) ||
        U32("llama.block_count", L) || U32("llama.feed_forward_length", c->intermediate_size) ||
        U32("llama.attention.head_count", c->num_attention_heads) ||
        U32("llama.attention.head_count_kv", c->num_key_value_heads) ||
        U32("llama.rope.dimension_count", c->head_dim) ||
        kd_gguf_writer_add_f32(w, "llama.rope.freq_base", (float)c->rope_theta, err) ||
        kd_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps, err) ||
        U32("llama.vocab_size", c->vocab_size))
        goto done;
    /* linear RoPE: llama.cpp divides every frequency by the factor (llama3 has rope_freqs instead) */
    if (c->rope_type == KD_ROPE_TYPE_LINEAR &&
        (kd_gguf_writer_add_str(w, "llama.rope.scaling.type", "linear", (size_t)-1, err) ||
         kd_gguf_writer_add_f32(w, "llama.rope.scaling.factor", (float)c->rope_factor, err)))
        goto done;
    if (c->rope_type == KD_ROPE_TYPE_LLAMA3 &&
        U32("llama.rope.scaling.original_context_length", c->rope_original_max_position_embeddings))
        goto done;
    if (c->head_dim * c->num_attention_heads != c->hidden_size &&
        (U32("llama.attention.key_length", c->head_dim) || U32("llama.attention.value_length", c->head_dim)))
        goto done;
#undef U32
    if (export_vocab(w, tok, c->vocab_size, err)) {
        kd_err_prefix(err, "%s", path);
        goto done;
    }
    rc = kd_gguf_writer_write(w, path, err);
done:
    free(j.srcs);
    kd_gguf_writer_free(w);
    free(rope_ff);
    return rc;
}

int kd_export_checkpoint(const char *dir, const char *preset, const char *path, kd_err *err) {
    char tok_path[4096];
    kd_tokenizer *tok = NULL;   /* tokenizer.h5 ("gpt2", data/kd_dump_tok.h) or tokenizer.bin */
    if (kd_path_join(tok_path, sizeof tok_path, dir, "tokenizer.bin", err)) return -1;
    struct stat st;
    if (stat(dir, &st) != 0)
        return kd_errf(err, "%s: no such checkpoint directory (--model names a directory holding config.json, "
                       "model.safetensors and the tokenizer)", dir);
    if (!S_ISDIR(st.st_mode))
        return kd_errf(err, "%s: is %s, expected a checkpoint directory (config.json, model.safetensors, tokenizer)",
                       dir, kd_path_what(dir));
    if (kd_tokenizer_load_dir(dir, &tok, err)) return -1;
    if (!tok)
        return kd_errf(err, "%s: missing (and no tokenizer.h5); GGUF export needs the checkpoint's tokenizer (kd "
                       "import llama2c --tokenizer stores it there, kd train copies the dump's, or copy a llama2.c "
                       "tokenizer.bin into %s)", tok_path, dir);
    if (!kd_export_preset_find(preset)) {
        kd_tokenizer_free(tok);
        return kd_export_gguf(NULL, NULL, preset, path, err);
    }
    kd_model m;   /* forward-only: no gradient buffers, so a 3B student needs 12 GiB, not 24 */
    if (kd_checkpoint_load_flags(&m, dir, KD_MODEL_NO_GRAD, err)) {
        kd_tokenizer_free(tok);
        return -1;
    }
    int rc = kd_export_gguf(&m, tok, preset, path, err);
    kd_tokenizer_free(tok);
    kd_model_free(&m);
    return rc;
}
