/*
 * kd_infer.c — the inference engine (see kd_infer.h): loading GGUF files and
 * checkpoints, the forward pass over a KV cache, sampling and generation.
 */
#include "infer/kd_infer.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/kd_kernels.h"
#include "core/kd_file.h"
#include "core/kd_mem.h"
#include "core/kd_time.h"
#include "student/kd_checkpoint.h"
#include "student/kd_gguf_model.h"
#include "format/kd_quant.h"
#include "data/kd_dump_tok.h"
#include "data/kd_tokenizer_load.h"

void kd_infer_opts_init(kd_infer_opts *o) { memset(o, 0, sizeof *o); }

/* Memory the engine frees at close. */
static void *own(kd_infer *e, size_t bytes, kd_err *err) {
    void **list = realloc(e->owned, (size_t)(e->n_owned + 1) * sizeof *list);
    if (!list) {
        kd_errf(err, "out of memory");
        return NULL;
    }
    e->owned = list;
    void *p = kd_alloc(bytes ? bytes : 1, err);
    if (p) e->owned[e->n_owned++] = p;
    return p;
}

void kd_infer_close(kd_infer *e) {
    if (!e) return;
    for (int i = 0; i < e->n_owned; i++) kd_free(e->owned[i]);
    free(e->owned);
    for (int64_t i = 0; e->panels && i < 7 * e->L + 1; i++) kd_panel_free(&e->panels[i]);
    free(e->panels);
    free(e->layers);
    kd_free(e->act);
    kd_free(e->k_cache);
    kd_free(e->v_cache);
    kd_free(e->rope_cos);
    kd_free(e->rope_sin);
    kd_free(e->head_f32);
    if (e->tok) kd_tokenizer_free(e->tok);
    if (e->gguf) kd_gguf_close(e->gguf);
    if (e->own_model && e->model) {
        kd_model_free(e->model);
        free(e->model);
    }
    free(e);
}

/* ---- setup shared by every source -------------------------------------------------- */

/* Replace a matrix by an F32 copy (opts.dequantize). */
static int to_f32(kd_infer *e, kd_qmat *m, kd_err *err) {
    if (m->type == KD_GGML_TYPE_F32) return 0;
    float *w = own(e, (size_t)(m->rows * m->cols) * sizeof(float), err);
    if (!w || kd_dequantize_rows(m->type, m->data, w, m->rows, m->cols, err)) return -1;
    return kd_qmat_init(m, KD_GGML_TYPE_F32, m->rows, m->cols, w, err);
}

/* Cache, RoPE tables and activations, once the weights are in place. */
static int finish(kd_infer *e, const kd_infer_opts *o, kd_err *err) {
    const kd_config *c = &e->cfg;
    e->C = c->hidden_size;
    e->F = c->intermediate_size;
    e->L = c->num_hidden_layers;
    e->H = c->num_attention_heads;
    e->Hkv = c->num_key_value_heads;
    e->D = c->head_dim;
    e->V = c->vocab_size;
    if (o && o->dequantize) {
        if (to_f32(e, &e->embed, err)) return -1;
        if (c->tie_word_embeddings) e->head = e->embed;
        else if (to_f32(e, &e->head, err)) return -1;
        for (int64_t l = 0; l < e->L; l++) {
            kd_infer_layer *ly = &e->layers[l];
            kd_qmat *ms[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
            for (int i = 0; i < 7; i++)
                if (to_f32(e, ms[i], err)) return -1;
        }
    }
    if (o && o->panels && !o->ggml_rounding) {
        if (!(e->panels = calloc((size_t)(7 * e->L + 1), sizeof *e->panels))) return kd_errf(err, "out of memory");
        for (int64_t l = 0; l < e->L; l++) {
            kd_infer_layer *ly = &e->layers[l];
            kd_qmat *ms[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
            for (int i = 0; i < 7; i++) {
                if (kd_panel_make(&e->panels[7 * l + i], ms[i], err)) return -1;
                ms[i]->panel = &e->panels[7 * l + i];
            }
        }
        if (kd_panel_make(&e->panels[7 * e->L], &e->head, err)) return -1;
        e->head.panel = &e->panels[7 * e->L];
    }
    int64_t ctx = o && o->n_ctx > 0 ? o->n_ctx : c->max_position_embeddings;
    if (!(o && o->n_ctx > 0) && ctx > KD_INFER_MAX_CTX_DEFAULT) ctx = KD_INFER_MAX_CTX_DEFAULT;
    if (ctx < 1 || ctx > (1 << 24)) return kd_errf(err, "context size %lld out of range", (long long)ctx);
    e->n_ctx = ctx;
    int64_t nb = o && o->n_batch > 0 ? o->n_batch : KD_INFER_BATCH_DEFAULT;
    e->n_seq = o && o->n_seq > 0 ? o->n_seq : 1;
    if (e->n_seq > (1 << 20)) return kd_errf(err, "n_seq %lld out of range", (long long)e->n_seq);
    e->n_batch = nb < ctx ? nb : ctx;
    if (e->n_batch < e->n_seq) e->n_batch = e->n_seq;   /* one row per sequence in kd_infer_eval_seqs */
    const int64_t C = e->C, F = e->F, HD = e->H * e->D, KVD = e->Hkv * e->D, half = e->D / 2, B = e->n_batch;
    const int nt = e->n_threads = omp_get_max_threads();
    const size_t cache = (size_t)(e->n_seq * e->L * ctx * KVD) * sizeof(float);
    int64_t max_cols = C > F ? C : F;
    if (HD > max_cols) max_cols = HD;
    e->ggml_rounding = o && o->ggml_rounding;
    const size_t n_xq = e->ggml_rounding ? kd_act_q8_bytes(max_cols) / sizeof(float) + 1 : 0;
    const size_t n_act = (size_t)(B * (2 * C + 2 * HD + 2 * KVD + 2 * F)) +
                         (size_t)nt * (size_t)ctx * (size_t)(e->n_seq > 1 ? e->H : 1) +
                         kd_qmatmul_scratch(max_cols, nt) + (e->ggml_rounding ? (size_t)(B * max_cols) : 0) + n_xq;
    if (!(e->k_cache = kd_alloc(cache, err)) || !(e->v_cache = kd_alloc(cache, err)) ||
        !(e->rope_cos = kd_alloc((size_t)(ctx * half) * sizeof(float), err)) ||
        !(e->rope_sin = kd_alloc((size_t)(ctx * half) * sizeof(float), err)) ||
        !(e->act = kd_alloc(n_act * sizeof(float), err)))
        return kd_err_prefix(err, "engine buffers for a context of %lld (%lld sequences)", (long long)ctx,
                             (long long)e->n_seq);
    float *p = e->act;
    e->x = p, p += B * C;
    e->h = p, p += B * C;
    e->q = p, p += B * HD;
    e->att = p, p += B * HD;
    e->k = p, p += B * KVD;
    e->v = p, p += B * KVD;
    e->g = p, p += B * F;
    e->u = p, p += B * F;
    e->scores = p, p += (int64_t)nt * ctx * (e->n_seq > 1 ? e->H : 1);   /* kd_infer_eval_seqs: all heads */
    e->mm_scratch = p, p += kd_qmatmul_scratch(max_cols, nt);
    e->xr = e->ggml_rounding ? p : NULL;
    p += e->ggml_rounding ? B * max_cols : 0;
    e->xq = e->ggml_rounding ? (void *)p : NULL;
    int32_t *pos = malloc((size_t)ctx * sizeof *pos);
    double *inv = malloc((size_t)(half + 1) * sizeof *inv);
    if (!pos || !inv) {
        free(pos);
        free(inv);
        return kd_errf(err, "out of memory");
    }
    for (int64_t t = 0; t < ctx; t++) pos[t] = (int32_t)t;
    kd_config_rope_inv_freq(c, inv);   /* default, linear or llama3 RoPE */
    kd_rope_table_inv(e->rope_cos, e->rope_sin, pos, ctx, e->D, inv);
    free(pos);
    free(inv);
    e->bos = e->tok ? kd_tokenizer_bos(e->tok) : (int32_t)c->bos_token_id;
    e->eos = e->tok ? kd_tokenizer_eos(e->tok) : (int32_t)c->eos_token_id;
    if (e->tok && kd_tokenizer_n_vocab(e->tok) > e->V)
        return kd_errf(err, "the tokenizer has %d pieces, more than the model's vocabulary (%lld)",
                       kd_tokenizer_n_vocab(e->tok), (long long)e->V);
    return 0;
}

static int f32_mat(kd_qmat *m, const kd_tensor *t, kd_err *err) {
    return kd_qmat_init(m, KD_GGML_TYPE_F32, t->shape[0], t->shape[1], t->data, err);
}

/* Point the engine at a kd_model's F32 tensors (HF layout: rotate_half RoPE). */
static int setup_model(kd_infer *e, const kd_model *m, kd_err *err) {
    e->cfg = m->cfg;
    e->source = "checkpoint";
    e->rope_conv = KD_ROPE_HALF;
    e->layers = calloc((size_t)m->cfg.num_hidden_layers, sizeof *e->layers);
    if (!e->layers) return kd_errf(err, "out of memory");
    if (f32_mat(&e->embed, m->embed, err) || f32_mat(&e->head, kd_model_head(m), err)) return -1;
    e->norm = m->norm->data;
    for (int64_t l = 0; l < m->cfg.num_hidden_layers; l++) {
        const kd_layer *s = &m->layers[l];
        kd_infer_layer *d = &e->layers[l];
        d->attn_norm = s->attn_norm->data;
        d->ffn_norm = s->ffn_norm->data;
        if (f32_mat(&d->wq, s->wq, err) || f32_mat(&d->wk, s->wk, err) || f32_mat(&d->wv, s->wv, err) ||
            f32_mat(&d->wo, s->wo, err) || f32_mat(&d->w_gate, s->w_gate, err) || f32_mat(&d->w_up, s->w_up, err) ||
            f32_mat(&d->w_down, s->w_down, err))
            return -1;
    }
    return 0;
}

kd_infer *kd_infer_from_model(const kd_model *m, const kd_infer_opts *o, kd_err *err) {
    kd_infer *e = calloc(1, sizeof *e);
    if (!e) {
        kd_errf(err, "out of memory");
        return NULL;
    }
    e->model = (kd_model *)m;
    if ((o && o->tokenizer && !(e->tok = kd_tokenizer_open(o->tokenizer, err))) || setup_model(e, m, err) ||
        finish(e, o, err)) {
        kd_infer_close(e);
        return NULL;
    }
    return e;
}

/* ---- GGUF ----------------------------------------------------------------------------- */

/* A 2-D tensor {cols, rows}; absent optional tensors leave m->data NULL. */
static int gguf_mat(kd_infer *e, const char *name, int64_t cols, int64_t rows, int optional, kd_qmat *m,
                    kd_err *err) {
    const kd_gguf_tensor *t = kd_gguf_find_tensor(e->gguf, name);
    if (!t) {
        memset(m, 0, sizeof *m);
        return optional ? 0 : kd_errf(err, "%s: tensor '%s' is missing", kd_gguf_name(e->gguf), name);
    }
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return kd_errf(err, "%s: tensor '%s' has shape {%lld, %lld, %lld}, expected {%lld, %lld}",
                       kd_gguf_name(e->gguf), name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                       (long long)cols, (long long)rows);
    if (kd_qmat_init(m, t->type, rows, cols, t->data, err)) return kd_err_prefix(err, "%s: tensor '%s'",
                                                                                  kd_gguf_name(e->gguf), name);
    return 0;
}

/* A 1-D weight [n] as floats: in place when F32 and aligned, else a converted copy. */
static int gguf_vec(kd_infer *e, const char *name, int64_t n, const float **out, kd_err *err) {
    const kd_gguf_tensor *t;
    if (kd_gguf_get_tensor(e->gguf, name, &t, err)) return -1;
    if (t->n_dims != 1 || t->ne[0] != n)
        return kd_errf(err, "%s: tensor '%s' has %u dims and %lld elements, expected {%lld}", kd_gguf_name(e->gguf),
                       name, t->n_dims, (long long)t->ne[0], (long long)n);
    const float *w = t->data;
    if (!(t->type == KD_GGML_TYPE_F32 && ((uintptr_t)t->data & 3) == 0)) {
        float *copy = own(e, (size_t)n * sizeof(float), err);
        if (!copy || kd_dequantize_rows(t->type, t->data, copy, 1, n, err)) return -1;
        w = copy;
    }
    int64_t bad = kd_first_nonfinite(w, n);   /* a norm weight multiplies every hidden state */
    if (bad >= 0)
        return kd_errf(err, "%s: tensor '%s': element %lld is %g, expected finite weights", kd_gguf_name(e->gguf), name,
                       (long long)bad, (double)w[bad]);
    *out = w;
    return 0;
}

static int setup_gguf(kd_infer *e, const char *path, kd_err *err) {
    if (!(e->gguf = kd_gguf_open(path, err))) return -1;
    const kd_gguf *g = e->gguf;
    const char *name = kd_gguf_name(g);
    kd_config *c = &e->cfg;
    if (kd_gguf_config(g, c, err)) return -1;   /* every hyper-parameter checked against ranges and tensor shapes */
    const int64_t C = c->hidden_size, F = c->intermediate_size, L = c->num_hidden_layers;
    e->source = "gguf";
    e->rope_conv = KD_ROPE_PAIRS;
    const int64_t V = c->vocab_size, HD = c->num_attention_heads * c->head_dim, KVD = c->num_key_value_heads * c->head_dim;
    e->layers = calloc((size_t)L, sizeof *e->layers);
    if (!e->layers) return kd_errf(err, "out of memory");
    if (gguf_mat(e, "token_embd.weight", C, V, 0, &e->embed, err) ||
        gguf_mat(e, "output.weight", C, V, 1, &e->head, err) || gguf_vec(e, "output_norm.weight", C, &e->norm, err))
        return -1;
    if (!e->head.data) e->head = e->embed;
    int64_t expected = 2 + !c->tie_word_embeddings + (kd_gguf_find_tensor(g, "rope_freqs.weight") != NULL);
    for (int64_t l = 0; l < L; l++, expected += 9) {
        kd_infer_layer *ly = &e->layers[l];
        char tn[KD_GGUF_MAX_NAME + 16];
#define N(suffix) (snprintf(tn, sizeof tn, "blk.%lld.%s", (long long)l, suffix), tn)
        if (gguf_vec(e, N("attn_norm.weight"), C, &ly->attn_norm, err) ||
            gguf_vec(e, N("ffn_norm.weight"), C, &ly->ffn_norm, err) ||
            gguf_mat(e, N("attn_q.weight"), C, HD, 0, &ly->wq, err) ||
            gguf_mat(e, N("attn_k.weight"), C, KVD, 0, &ly->wk, err) ||
            gguf_mat(e, N("attn_v.weight"), C, KVD, 0, &ly->wv, err) ||
            gguf_mat(e, N("attn_output.weight"), HD, C, 0, &ly->wo, err) ||
            gguf_mat(e, N("ffn_gate.weight"), C, F, 0, &ly->w_gate, err) ||
            gguf_mat(e, N("ffn_up.weight"), C, F, 0, &ly->w_up, err) ||
            gguf_mat(e, N("ffn_down.weight"), F, C, 0, &ly->w_down, err))
            return -1;
#undef N
    }
    if (kd_gguf_n_tensors(g) != expected) {   /* biases, rope_freqs, ...: not a plain llama */
        for (int64_t i = 0; i < kd_gguf_n_tensors(g); i++) {
            const char *tn = kd_gguf_tensor_at(g, i)->name;
            int known = !strcmp(tn, "token_embd.weight") || !strcmp(tn, "output.weight") ||
                        !strcmp(tn, "output_norm.weight") || !strcmp(tn, "rope_freqs.weight");
            unsigned blk;
            char rest[KD_GGUF_MAX_NAME];
            if (sscanf(tn, "blk.%u.%63s", &blk, rest) == 2 && blk < L && strstr(rest, ".weight") &&
                !strstr(rest, "bias"))
                known = 1;
            if (!known)
                return kd_errf(err, "%s: tensor '%s' is not supported (kd runs plain llama models: no biases)", name, tn);
        }
        return kd_errf(err, "%s: %lld tensors, expected %lld", name, (long long)kd_gguf_n_tensors(g),
                       (long long)expected);
    }
    return 0;
}

kd_infer *kd_infer_open(const char *path, const kd_infer_opts *o, kd_err *err) {
    kd_infer *e = calloc(1, sizeof *e);
    if (!e) {
        kd_errf(err, "out of memory");
        return NULL;
    }
    struct stat st;
    int is_gguf = 0, is_dir = 0;
    if (stat(path, &st) != 0) {
        kd_errf(err, "%s: no such file or directory", path);
        goto fail;
    }
    is_dir = S_ISDIR(st.st_mode);
    if (!is_dir) {
        FILE *f = fopen(path, "rb");
        char magic[4] = {0};
        if (f) {
            is_gguf = fread(magic, 1, 4, f) == 4 && !memcmp(magic, KD_GGUF_MAGIC, 4);
            fclose(f);
        }
    }
    if (is_gguf) {
        if (setup_gguf(e, path, err)) goto fail;
        if (!(o && o->tokenizer) && !(e->tok = kd_tokenizer_from_gguf(e->gguf, err))) goto fail;
    } else {
        if (!(e->model = calloc(1, sizeof *e->model))) {
            kd_errf(err, "out of memory");
            goto fail;
        }
        if (kd_model_load(e->model, path, err)) {
            free(e->model);
            e->model = NULL;
            goto fail;
        }
        e->own_model = 1;
        if (setup_model(e, e->model, err)) goto fail;
        if (is_dir && !(o && o->tokenizer) && kd_tokenizer_load_dir(path, &e->tok, err))   /* tokenizer.h5 or .bin */
            goto fail;
    }
    if (o && o->tokenizer && !(e->tok = kd_tokenizer_open(o->tokenizer, err))) goto fail;
    if (finish(e, o, err)) goto fail;
    return e;
fail:
    kd_infer_close(e);
    return NULL;
}

/* ---- forward --------------------------------------------------------------------------- */

void kd_infer_reset(kd_infer *e) { e->n_past = 0; }

/* Offset of (sequence s, layer l, position p) in the K/V caches. */
static int64_t cache_at(const kd_infer *e, int64_t s, int64_t l, int64_t p) {
    return ((s * e->L + l) * e->n_ctx + p) * e->Hkv * e->D;
}

/* Attention of n queries of layer l, already in the cache: positions p0..p0+n−1 of
 * sequence 0, or (seqs) position p0 of sequences 0..n−1. */
static void attend(kd_infer *e, int64_t l, int64_t n, int64_t p0, int seqs) {
    const int64_t H = e->H, D = e->D, G = e->H / e->Hkv, KVD = e->Hkv * e->D, win = e->cfg.sliding_window;
    const float scale = 1.0f / sqrtf((float)D);
    const int nt = omp_get_max_threads() < e->n_threads ? omp_get_max_threads() : e->n_threads;
    if (seqs) {   /* one query per sequence: all heads together, each cache row read once in order */
        const int64_t np = p0 + 1, lo = win > 0 && p0 - win + 1 > 0 ? p0 - win + 1 : 0;
#pragma omp parallel for schedule(static) if (n * H * np * D >= 32768) num_threads(nt)
        for (int64_t i = 0; i < n; i++) {
            float *S = e->scores + (int64_t)omp_get_thread_num() * e->n_ctx * H;   /* [H, n_ctx] */
            const float *K = e->k_cache + cache_at(e, i, l, lo), *Vc = e->v_cache + cache_at(e, i, l, lo);
            kd_attn_scores(K, KVD, e->q + i * H * D, H, G, D, np - lo, scale, S, e->n_ctx);
            kd_softmax_rows(S, e->n_ctx, H, np - lo);
            kd_attn_values(Vc, KVD, S, e->n_ctx, H, G, D, np - lo, e->att + i * H * D);
        }
        return;
    }
    const int64_t span = p0 + n;   /* (work estimate) */
#pragma omp parallel for collapse(2) schedule(static) if (n * H * span * D >= 32768) num_threads(nt)
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = 0; h < H; h++) {
            float *S = e->scores + (int64_t)omp_get_thread_num() * e->n_ctx;
            const float *K = e->k_cache + cache_at(e, seqs ? i : 0, l, 0);
            const float *Vc = e->v_cache + cache_at(e, seqs ? i : 0, l, 0);
            const int64_t pos = seqs ? p0 : p0 + i, lo = win > 0 && pos - win + 1 > 0 ? pos - win + 1 : 0;
            const float *qi = e->q + (i * H + h) * D;
            const int64_t off = (h / G) * D;
            kd_dot_rows(K + lo * KVD + off, KVD, qi, D, pos - lo + 1, scale, S + lo);
            float m = -INFINITY;
            for (int64_t s = lo; s <= pos; s++) m = S[s] > m ? S[s] : m;
            float sum = 0.0f;
            for (int64_t s = lo; s <= pos; s++) sum += (S[s] = expf(S[s] - m));
            const float inv = 1.0f / sum;
            for (int64_t s = lo; s <= pos; s++) S[s] *= inv;
            kd_sum_rows(Vc + lo * KVD + off, KVD, S + lo, D, pos - lo + 1, e->att + (i * H + h) * D);
        }
}

/* y[n, rows] = x[n, cols]·Wᵀ: matrix-vector kernels for one row, else matrix-matrix. */
static void linear(kd_infer *e, const kd_qmat *W, const float *x, int64_t n, float *y) {
    if (e->ggml_rounding && n == 1 && kd_q8_supported(W->type)) {   /* llama.cpp's integer path */
        kd_act_quantize(W->type, x, e->xq, W->cols);
        kd_qmatvec_q8(W, e->xq, y);
        return;
    }
    if (e->ggml_rounding && W->type != KD_GGML_TYPE_F32) {   /* its rounding, then the float kernels */
        for (int64_t i = 0; i < n; i++) kd_act_round(W->type, x + i * W->cols, e->xr + i * W->cols, W->cols);
        x = e->xr;
    }
    if (n == 1) kd_qmatvec(W, x, y);
    else if (W->panel && n <= KD_PANEL_MAX_N) kd_panel_matmul(W->panel, x, n, y, W->rows, e->n_threads);
    else kd_qmatmul(W, x, n, y, W->rows, e->mm_scratch, e->n_threads);
}

/* k ≤ 3 products of one input x (q/k/v, gate/up). One token: exact path, one parallel
 * loop over all their rows; llama.cpp's path, x quantized once when the types agree. */
static void linear_shared(kd_infer *e, int k, const kd_qmat *const *W, const float *x, int64_t n, float *const *Y) {
    if (n == 1 && !e->ggml_rounding) {
        kd_qmatvec_multi(k, W, x, Y);
        return;
    }
    int32_t quantized = -1;   /* the weight type e->xq holds x for */
    for (int i = 0; i < k; i++) {
        if (n == 1 && e->ggml_rounding && kd_q8_supported(W[i]->type)) {
            if (quantized != W[i]->type) kd_act_quantize(W[i]->type, x, e->xq, W[i]->cols);
            quantized = W[i]->type;
            kd_qmatvec_q8(W[i], e->xq, Y[i]);
        } else {
            linear(e, W[i], x, n, Y[i]);
        }
    }
}

static void add_rows(float *x, const float *y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

/* One batch of n ≤ n_batch tokens at positions p0.. of sequence 0, or (seqs) at
 * position p0 of sequences 0..n−1 (room checked by the caller); leaves the final
 * normalised hidden states in e->h. */
static void forward(kd_infer *e, const int32_t *tokens, int64_t n, int64_t p0, int seqs) {
    const int64_t C = e->C, H = e->H, Hkv = e->Hkv, D = e->D, KVD = Hkv * D, half = D / 2;
    const float eps = (float)e->cfg.rms_norm_eps;
    for (int64_t i = 0; i < n; i++)
        kd_dequantize_row(e->embed.type, (const uint8_t *)e->embed.data + (size_t)tokens[i] * e->embed.row_bytes,
                          e->x + i * C, C);
    for (int64_t l = 0; l < e->L; l++) {
        const kd_infer_layer *ly = &e->layers[l];
        kd_rmsnorm_forward(e->h, NULL, e->x, ly->attn_norm, n, C, eps);
        {
            const kd_qmat *W[3] = {&ly->wq, &ly->wk, &ly->wv};
            float *const Y[3] = {e->q, e->k, e->v};
            linear_shared(e, 3, W, e->h, n, Y);
        }
        /* rows at positions p0.. (one sequence: T = n) or all at p0 (n sequences: B = n, T = 1) */
        const int64_t rb = seqs ? n : 1, rt = seqs ? 1 : n;
        kd_rope_apply(e->q, e->rope_cos + p0 * half, e->rope_sin + p0 * half, rb, rt, H, D, e->rope_conv, 0);
        kd_rope_apply(e->k, e->rope_cos + p0 * half, e->rope_sin + p0 * half, rb, rt, Hkv, D, e->rope_conv, 0);
        for (int64_t s = 0; s < rb; s++) {
            memcpy(e->k_cache + cache_at(e, s, l, p0), e->k + s * KVD, (size_t)(rt * KVD) * sizeof(float));
            memcpy(e->v_cache + cache_at(e, s, l, p0), e->v + s * KVD, (size_t)(rt * KVD) * sizeof(float));
        }
        attend(e, l, n, p0, seqs);
        linear(e, &ly->wo, e->att, n, e->h);
        add_rows(e->x, e->h, n * C);
        kd_rmsnorm_forward(e->h, NULL, e->x, ly->ffn_norm, n, C, eps);
        {
            const kd_qmat *W[2] = {&ly->w_gate, &ly->w_up};
            float *const Y[2] = {e->g, e->u};
            linear_shared(e, 2, W, e->h, n, Y);
        }
        kd_swiglu_forward(e->g, e->g, e->u, n * e->F);
        linear(e, &ly->w_down, e->g, n, e->h);
        add_rows(e->x, e->h, n * C);
    }
    kd_rmsnorm_forward(e->h, NULL, e->x, e->norm, n, C, eps);
}

int kd_infer_eval(kd_infer *e, const int32_t *tokens, int64_t n, float *logits, int all_logits, float *hidden,
                  kd_err *err) {
    if (n < 1) return kd_errf(err, "no tokens to evaluate");
    if (e->n_past + n > e->n_ctx)
        return kd_errf(err, "context full: %lld cached + %lld new tokens exceed the context of %lld",
                       (long long)e->n_past, (long long)n, (long long)e->n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->V)
            return kd_errf(err, "token %d at position %lld is outside the vocabulary (%lld)", tokens[i],
                           (long long)i, (long long)e->V);
    const double t0 = kd_now_s();
    for (int64_t off = 0; off < n; off += e->n_batch) {
        const int64_t nb = n - off < e->n_batch ? n - off : e->n_batch;
        forward(e, tokens + off, nb, e->n_past, 0);
        e->n_past += nb;
        if (hidden) memcpy(hidden + off * e->C, e->h, (size_t)(nb * e->C) * sizeof(float));
        if (logits && all_logits) linear(e, &e->head, e->h, nb, logits + off * e->V);
        else if (logits && off + nb == n) linear(e, &e->head, e->h + (nb - 1) * e->C, 1, logits);
    }
    const double dt = kd_now_s() - t0;
    if (n == 1) e->stats.n_decode++, e->stats.decode_s += dt;
    else e->stats.n_prompt += n, e->stats.prompt_s += dt;
    return 0;
}

int kd_infer_eval_seqs(kd_infer *e, const int32_t *tokens, int64_t n, float *logits, kd_err *err) {
    if (n < 1 || n > e->n_seq)
        return kd_errf(err, "%lld sequences in one step: the engine holds %lld (kd_infer_opts.n_seq)", (long long)n,
                       (long long)e->n_seq);
    if (e->n_past + 1 > e->n_ctx)
        return kd_errf(err, "context full: %lld cached tokens fill the context of %lld", (long long)e->n_past,
                       (long long)e->n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->V)
            return kd_errf(err, "token %d of sequence %lld is outside the vocabulary (%lld)", tokens[i], (long long)i,
                           (long long)e->V);
    const double t0 = kd_now_s();
    forward(e, tokens, n, e->n_past, 1);
    e->n_past++;
    if (logits) linear(e, &e->head, e->h, n, logits);
    e->stats.n_decode += n, e->stats.decode_s += kd_now_s() - t0;
    return 0;
}

const float *kd_infer_head_f32(kd_infer *e, kd_err *err) {
    if (e->head.type == KD_GGML_TYPE_F32) return e->head.data;
    if (!e->head_f32) {
        float *w = kd_alloc((size_t)(e->V * e->C) * sizeof(float), err);
        if (!w || kd_dequantize_rows(e->head.type, e->head.data, w, e->V, e->C, err)) {
            kd_free(w);
            return NULL;
        }
        e->head_f32 = w;
    }
    return e->head_f32;
}

uint64_t kd_infer_weight_bytes(const kd_infer *e) {
    uint64_t b = kd_qmat_bytes(&e->head) + e->embed.row_bytes + (uint64_t)e->C * 4 * (2 * e->L + 1);
    for (int64_t l = 0; l < e->L; l++) {
        const kd_infer_layer *ly = &e->layers[l];
        b += kd_qmat_bytes(&ly->wq) + kd_qmat_bytes(&ly->wk) + kd_qmat_bytes(&ly->wv) + kd_qmat_bytes(&ly->wo) +
             kd_qmat_bytes(&ly->w_gate) + kd_qmat_bytes(&ly->w_up) + kd_qmat_bytes(&ly->w_down);
    }
    return b;
}

void kd_infer_describe_types(const kd_infer *e, char *out, size_t n) {
    int seen[64] = {0};
    const kd_qmat *all[2] = {&e->embed, &e->head};
    for (int i = 0; i < 2; i++) seen[all[i]->type & 63] = 1;
    for (int64_t l = 0; l < e->L; l++) {
        const kd_infer_layer *ly = &e->layers[l];
        const kd_qmat *ms[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (int i = 0; i < 7; i++) seen[ms[i]->type & 63] = 1;
    }
    size_t used = 0;
    out[0] = '\0';
    for (int t = 0; t < 64 && used < n; t++)
        if (seen[t]) {
            int w = snprintf(out + used, n - used, "%s%s", used ? "+" : "", kd_ggml_type_name(t));
            if (w < 0) break;
            used += (size_t)w;
        }
}

/* ---- sampling and generation --------------------------------------------------------------- */

int kd_sampler_init(kd_sampler *s, int64_t V, float temperature, int64_t top_k, float top_p, uint64_t seed,
                    kd_err *err) {
    memset(s, 0, sizeof *s);
    if (V < 1) return kd_errf(err, "sampler: vocabulary of %lld", (long long)V);
    if (!(temperature >= 0.0f) || !isfinite(temperature)) return kd_errf(err, "sampler: temperature must be >= 0");
    if (top_k < 0) return kd_errf(err, "sampler: top-k must be >= 0");
    if (!(top_p > 0.0f && top_p <= 1.0f)) return kd_errf(err, "sampler: top-p must be in (0, 1]");
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->V = V;
    kd_rng_seed(&s->rng, seed);
    if (!(s->cand = malloc((size_t)V * sizeof *s->cand))) return kd_errf(err, "out of memory");
    return 0;
}

void kd_sampler_free(kd_sampler *s) {
    free(s->cand);
    s->cand = NULL;
}

int64_t kd_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Descending by value, then ascending id: a total order, so results do not depend on qsort. */
static int cand_cmp(const void *a, const void *b) {
    const struct kd_cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Min-heap on (p, then larger id first) of the k best candidates. */
static int cand_less(const struct kd_cand *a, const struct kd_cand *b) {
    return a->p < b->p || (a->p == b->p && a->id > b->id);
}
static void sift_down(struct kd_cand *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_less(&h[l], &h[m])) m = l;
        if (r < n && cand_less(&h[r], &h[m])) m = r;
        if (m == i) return;
        struct kd_cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

int32_t kd_sample(kd_sampler *s, const float *logits) {
    const int64_t V = s->V;
    if (s->temperature <= 0.0f) return (int32_t)kd_argmax(logits, V);
    struct kd_cand *c = s->cand;
    int64_t n = V;
    if (s->top_k > 0 && s->top_k < V) {   /* the k largest logits through a min-heap */
        n = s->top_k;
        for (int64_t i = 0; i < n; i++) c[i] = (struct kd_cand){logits[i], (int32_t)i};
        for (int64_t i = n / 2 - 1; i >= 0; i--) sift_down(c, n, i);
        for (int64_t i = n; i < V; i++) {
            struct kd_cand x = {logits[i], (int32_t)i};
            if (cand_less(&c[0], &x)) {
                c[0] = x;
                sift_down(c, n, 0);
            }
        }
    } else {
        for (int64_t i = 0; i < V; i++) c[i] = (struct kd_cand){logits[i], (int32_t)i};
    }
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = c[i].p > m ? c[i].p : m;
    const float inv_t = 1.0f / s->temperature;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (c[i].p = expf((c[i].p - m) * inv_t));
    if (!(sum > 0.0) || !isfinite(sum)) return (int32_t)kd_argmax(logits, V);   /* NaN/Inf logits: no distribution */
    for (int64_t i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
    double total = 1.0;
    if (s->top_p < 1.0f) {
        /* Tokens below (1 − top_p)/(n − 1) cannot be in the nucleus (llama2.c's cut): sort the rest. */
        const float cut = n > 1 ? (1.0f - s->top_p) / (float)(n - 1) : 0.0f;
        int64_t k = 0;
        for (int64_t i = 0; i < n; i++)
            if (c[i].p >= cut) c[k++] = c[i];
        qsort(c, (size_t)k, sizeof *c, cand_cmp);
        double cum = 0.0;
        n = k;
        for (int64_t i = 0; i < k; i++) {
            cum += c[i].p;
            if (cum >= s->top_p) {
                n = i + 1;
                break;
            }
        }
        total = cum;
    } else if (n < V) {
        qsort(c, (size_t)n, sizeof *c, cand_cmp);   /* a draw that does not depend on heap order */
    }
    const double r = (double)kd_rng_uniform(&s->rng) * total;
    double cum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id;
}

int kd_infer_generate(kd_infer *e, const int32_t *prompt, int64_t n_prompt, int64_t max_new, kd_sampler *s,
                      int32_t *out, int64_t *n_out, kd_token_fn fn, void *user, kd_err *err) {
    if (n_out) *n_out = 0;
    if (s->V != e->V) return kd_errf(err, "sampler for %lld tokens, model has %lld", (long long)s->V, (long long)e->V);
    float *logits = malloc((size_t)e->V * sizeof *logits);
    if (!logits) return kd_errf(err, "out of memory");
    int rc = kd_infer_eval(e, prompt, n_prompt, logits, 0, NULL, err);
    for (int64_t i = 0; rc == 0 && i < max_new; i++) {
        for (int64_t v = 0; v < e->V; v++)
            if (!isfinite(logits[v])) {
                rc = kd_errf(err, "the model's logits are not finite (%g for token %lld): NaN or infinite weights?",
                             (double)logits[v], (long long)v);
                break;
            }
        if (rc) break;
        int32_t t = kd_sample(s, logits);
        if (t == e->eos) break;
        if (out) out[i] = t;
        if (n_out) *n_out = i + 1;
        if ((fn && fn(user, t)) || i + 1 == max_new || e->n_past >= e->n_ctx) break;
        rc = kd_infer_eval(e, &t, 1, logits, 0, NULL, err);
    }
    free(logits);
    return rc;
}
