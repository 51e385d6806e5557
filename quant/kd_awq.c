/*
 * kd_awq.c — the AWQ scale and clip search on a kd student (see kd_awq.h and
 * docs/quantization.md). Written from the description of the algorithm, on kd's own
 * kernels: one decoder layer at a time, the layer's FP forward caches the
 * inputs of its linears and the outputs of its blocks; each scale group is
 * searched on those caches, folded into the weights, then the clip search
 * runs on the scaled weights and inputs.
 */
#include "quant/kd_awq.h"

#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_linalg.h"
#include "autograd/kd_kernels.h"
#include "autograd/kd_ops.h"
#include "quant/kd_quant_plan.h"
#include "student/kd_gguf_model.h"
#include "format/kd_quant.h"

#include "core/kd_time.h"

void kd_awq_opts_init(kd_awq_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = KD_QUANT_AWQ;
    o->format = "q4_0";
    o->n_grid = 20;
    o->max_shrink = 0.5;
    o->clip = 1;
    o->clip_tokens = 512;
    o->force_ratio = -1.0;
    o->clip_guard = -1;
}

const char *kd_awq_preset(const char *format) {
    static const char *map[][2] = {{"q4_0", "q4_0"}, {"q4_1", "q4_1"}, {"q4_k", "q4_k_m"}, {"q4_k_m", "q4_k_m"}};
    for (size_t i = 0; format && i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(format, map[i][0])) return map[i][1];
    return NULL;
}

int kd_quant_method_parse(const char *name) {
    if (name && !strcmp(name, "rtn")) return KD_QUANT_RTN;
    if (name && !strcmp(name, "awq")) return KD_QUANT_AWQ;
    return -1;
}

/* ---- which quantizer a tensor gets ----------------------------------------------------- */

int32_t kd_awq_export_type(const kd_model *m, const char *preset, const char *name) {
    const kd_export_preset *p = kd_export_preset_find(preset);
    const kd_tensor *t = kd_model_param(m, name);
    char g[96];
    int64_t layer;
    if (!p || !t || kd_gguf_tensor_name(name, g, sizeof g, &layer)) return -1;
    return kd_export_tensor_type(p, g, t->ndim, t->shape[t->ndim - 1], layer, m->cfg.num_hidden_layers,
                                 m->lm_head == NULL, NULL);
}

typedef struct qz {
    int32_t type;     /* ggml type, or −1: reference int4 with `group` */
    int64_t group;    /* the clip search's quantization group: the type's block, or group_size */
    int active;       /* 1 when the tensor is quantized at all (not F32/F16/BF16) */
} qz;

static qz qz_for(const kd_model *m, const kd_awq_opts *o, const char *name) {
    qz q = {-1, o->group_size, 1};
    if (o->group_size > 0) return q;
    q.type = kd_awq_export_type(m, kd_awq_preset(o->format), name);
    q.active = q.type >= 0 && kd_quant_is_quantized(q.type);
    q.group = q.type >= 0 ? kd_quant_block(q.type) : 1;
    return q;
}

/* llm-awq's pseudo-quantizer (docs/quantization.md#the-reference-int4-quantizer): asymmetric int4 over one group; rintf rounds half to even like torch.round. */
static void int4_group(const float *x, float *y, int64_t n) {
    float mx = x[0], mn = x[0];
    for (int64_t i = 1; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
        mn = x[i] < mn ? x[i] : mn;
    }
    float scale = fmaxf(mx - mn, 1e-5f) / 15.0f;
    float zero = fminf(fmaxf(-rintf(mn / scale), 0.0f), 15.0f);
    for (int64_t i = 0; i < n; i++) {
        float q = fminf(fmaxf(rintf(x[i] / scale) + zero, 0.0f), 15.0f);
        y[i] = (q - zero) * scale;
    }
}

/* y = Q(x) for a run of n elements (a row, or one clip group); y may alias x. */
static void qz_run(const qz *q, const float *x, float *y, int64_t n) {
    if (!q->active) {
        if (y != x) memcpy(y, x, (size_t)n * sizeof *y);
    } else if (q->type >= 0) {
        kd_fake_quant_row(q->type, x, y, n);
    } else {
        for (int64_t i = 0; i < n; i += q->group) int4_group(x + i, y + i, q->group);
    }
}

/* out = Q(W·diag(s))·diag(s)⁻¹ for W [rows, cols] (s NULL: Q(W)). */
static void quant_scaled(const qz *q, const float *W, float *out, int64_t rows, int64_t cols, const float *s) {
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t r = 0; r < rows; r++) {
        const float *w = W + r * cols;
        float *o = out + r * cols;
        for (int64_t c = 0; c < cols; c++) o[c] = s ? w[c] * s[c] : w[c];
        qz_run(q, o, o, cols);
        if (s)
            for (int64_t c = 0; c < cols; c++) o[c] /= s[c];
    }
}

int kd_awq_fake_quant(const kd_model *m, const kd_awq_opts *o, const char *name, float *w, int64_t rows,
                      int64_t cols, int32_t *type, kd_err *err) {
    qz q = qz_for(m, o, name);
    if (o->group_size <= 0 && q.type < 0) return kd_errf(err, "no export type for tensor '%s' (format '%s')", name, o->format ? o->format : "(none)");
    if (cols % q.group) return kd_errf(err, "%s: row length %" PRId64 " is not a multiple of the group %" PRId64, name, cols, q.group);
    if (type) *type = q.type;
    quant_scaled(&q, w, w, rows, cols, NULL);
    return 0;
}

int kd_quant_fake_model(kd_model *m, const char *preset, kd_err *err) {
    if (!kd_export_preset_find(preset)) return kd_errf(err, "unknown export preset '%s'", preset ? preset : "(null)");
    for (int i = 0; i < m->n_params; i++) {
        kd_tensor *p = m->params[i];
        if (p->ndim != 2) continue;
        int32_t t = kd_awq_export_type(m, preset, p->name);
        if (t < 0) return kd_errf(err, "no export type for tensor '%s'", p->name);
        if (kd_fake_quant_rows(t, p->data, p->data, p->shape[0], p->shape[1], err))
            return kd_err_prefix(err, "%s", p->name);
    }
    return 0;
}

int kd_awq_check(const kd_model *m, const kd_awq_opts *o, kd_err *err) {
    if (o->method != KD_QUANT_RTN && o->method != KD_QUANT_AWQ) return kd_errf(err, "unknown method %d", (int)o->method);
    if (o->group_size < 0) return kd_errf(err, "group size %d must be ≥ 0 (0: the GGUF type's own quantizer)", o->group_size);
    if (o->group_size == 0 && !kd_awq_preset(o->format))
        return kd_errf(err, "unknown format '%s', expected q4_0, q4_1 or q4_k", o->format ? o->format : "(none)");
    if (o->n_grid < 1 || o->n_grid > 1000) return kd_errf(err, "grid size %d outside [1, 1000]", o->n_grid);
    if (!(o->max_shrink >= 0 && o->max_shrink < 1)) return kd_errf(err, "max shrink %g outside [0, 1)", o->max_shrink);
    if (o->clip_tokens < 1) return kd_errf(err, "clip tokens %" PRId64 " must be ≥ 1", o->clip_tokens);
    if (o->force_ratio >= 0 && !(o->force_ratio <= 1)) return kd_errf(err, "forced ratio %g outside [0, 1]", o->force_ratio);
    for (int64_t l = 0; o->group_size > 0 && l < m->cfg.num_hidden_layers; l++) {
        const kd_layer *ly = &m->layers[l];
        const kd_tensor *lin[7] = {ly->wq, ly->wk, ly->wv, ly->wo, ly->w_gate, ly->w_up, ly->w_down};
        for (int j = 0; j < 7; j++)
            if (lin[j]->shape[1] % o->group_size)
                return kd_errf(err, "group size %d does not divide the row length %" PRId64 " of %s", o->group_size,
                               lin[j]->shape[1], lin[j]->name);
    }
    return 0;
}

/* ---- the layer forward on float arrays --------------------------------------------------- */

typedef struct awq_ws {
    int64_t B, T, n, C, F, H, Hkv, D, QD, KVD, window;
    float eps;
    float *cos_t, *sin_t, *lse, *scratch, *rstd;
    float *q, *k, *v, *g, *u, *at;   /* temporaries of one forward */
} awq_ws;

static void ws_free(awq_ws *w) {
    float *bufs[] = {w->cos_t, w->sin_t, w->lse, w->scratch, w->rstd, w->q, w->k, w->v, w->g, w->u, w->at};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(w, 0, sizeof *w);
}

static float *falloc(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }

static int ws_init(awq_ws *w, const kd_config *c, int64_t B, int64_t T, kd_err *err) {
    memset(w, 0, sizeof *w);
    w->B = B, w->T = T, w->n = B * T, w->C = c->hidden_size, w->F = c->intermediate_size;
    w->H = c->num_attention_heads, w->Hkv = c->num_key_value_heads, w->D = c->head_dim;
    w->QD = w->H * w->D, w->KVD = w->Hkv * w->D, w->window = c->sliding_window, w->eps = (float)c->rms_norm_eps;
    int64_t half = w->D / 2, n = w->n;
    w->cos_t = falloc(T * half);
    w->sin_t = falloc(T * half);
    w->lse = falloc(B * w->H * T);
    w->scratch = falloc(kd_attention_scratch(T, omp_get_max_threads()));
    w->rstd = falloc(n);
    w->q = falloc(n * w->QD);
    w->k = falloc(n * w->KVD);
    w->v = falloc(n * w->KVD);
    w->g = falloc(n * w->F);
    w->u = falloc(n * w->F);
    w->at = falloc(n * w->QD);
    int32_t *pos = malloc((size_t)T * sizeof *pos);
    if (!w->cos_t || !w->sin_t || !w->lse || !w->scratch || !w->rstd || !w->q || !w->k || !w->v || !w->g || !w->u ||
        !w->at || !pos) {
        free(pos);
        ws_free(w);
        return kd_errf(err, "out of memory for the layer workspace (%" PRId64 " calibration tokens)", n);
    }
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)t;
    double *inv = malloc((size_t)(w->D / 2 + 1) * sizeof *inv);
    if (!inv) {
        free(pos);
        ws_free(w);
        return kd_errf(err, "out of memory");
    }
    kd_config_rope_inv_freq(c, inv);   /* the model's RoPE type */
    kd_rope_table_inv(w->cos_t, w->sin_t, pos, T, w->D, inv);
    free(inv);
    free(pos);
    return 0;
}

/* y[n, out] = x[n, in] · W[out, in]ᵀ */
static void linear(float *y, const float *x, const float *W, int64_t n, int64_t out, int64_t in) {
    kd_sgemm(0, 1, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
}

/* y = attention(rope(h·Wqᵀ), rope(h·Wkᵀ), h·Wvᵀ)·Woᵀ; a (NULL: a temporary) gets the attention output. */
static void attn_fwd(awq_ws *w, const float *h, const float *wq, const float *wk, const float *wv, const float *wo,
                     float *a, float *y) {
    if (!a) a = w->at;
    linear(w->q, h, wq, w->n, w->QD, w->C);
    linear(w->k, h, wk, w->n, w->KVD, w->C);
    linear(w->v, h, wv, w->n, w->KVD, w->C);
    kd_rope_apply(w->q, w->cos_t, w->sin_t, w->B, w->T, w->H, w->D, KD_ROPE_HALF, 0);
    kd_rope_apply(w->k, w->cos_t, w->sin_t, w->B, w->T, w->Hkv, w->D, KD_ROPE_HALF, 0);
    kd_attention_forward(a, w->lse, w->q, w->k, w->v, w->B, w->T, w->H, w->Hkv, w->D, w->window, w->scratch);
    linear(y, a, wo, w->n, w->C, w->QD);
}

/* y = (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ; act (NULL: a temporary) gets the down_proj input. */
static void mlp_fwd(awq_ws *w, const float *h, const float *wg, const float *wu, const float *wd, float *act,
                    float *y) {
    if (!act) act = w->g;
    linear(w->g, h, wg, w->n, w->F, w->C);
    linear(w->u, h, wu, w->n, w->F, w->C);
    kd_swiglu_forward(act, w->g, w->u, w->n * w->F);
    linear(y, act, wd, w->n, w->C, w->F);
}

/* What one layer's FP forward leaves for the search. */
typedef struct cache {
    float *h1, *a, *h2, *act;   /* inputs of q/k/v, o, gate/up, down */
    float *ya, *ym;             /* outputs of self-attention (= o_proj) and of the MLP (= down_proj) */
} cache;

static void cache_free(cache *c) {
    free(c->h1), free(c->a), free(c->h2), free(c->act), free(c->ya), free(c->ym);
    memset(c, 0, sizeof *c);
}

static int cache_init(cache *c, const awq_ws *w, kd_err *err) {
    c->h1 = falloc(w->n * w->C), c->a = falloc(w->n * w->QD), c->h2 = falloc(w->n * w->C);
    c->act = falloc(w->n * w->F), c->ya = falloc(w->n * w->C), c->ym = falloc(w->n * w->C);
    if (c->h1 && c->a && c->h2 && c->act && c->ya && c->ym) return 0;
    cache_free(c);
    return kd_errf(err, "out of memory for the activation cache (%" PRId64 " calibration tokens)", w->n);
}

/* The FP layer on x (updated in place to the layer's output), filling the cache. */
static void layer_fp(awq_ws *w, const kd_layer *ly, float *x, cache *c) {
    int64_t nc = w->n * w->C;
    kd_rmsnorm_forward(c->h1, w->rstd, x, ly->attn_norm->data, w->n, w->C, w->eps);
    attn_fwd(w, c->h1, ly->wq->data, ly->wk->data, ly->wv->data, ly->wo->data, c->a, c->ya);
#pragma omp parallel for simd
    for (int64_t i = 0; i < nc; i++) x[i] += c->ya[i];
    kd_rmsnorm_forward(c->h2, w->rstd, x, ly->ffn_norm->data, w->n, w->C, w->eps);
    mlp_fwd(w, c->h2, ly->w_gate->data, ly->w_up->data, ly->w_down->data, c->act, c->ym);
#pragma omp parallel for simd
    for (int64_t i = 0; i < nc; i++) x[i] += c->ym[i];
}

static void embed(const kd_model *m, const int32_t *tokens, int64_t n, float *x) {
    int64_t C = m->cfg.hidden_size;
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) memcpy(x + i * C, m->embed->data + (int64_t)tokens[i] * C, (size_t)C * sizeof *x);
}

static double mse(const float *a, const float *b, int64_t n) {
    return kd_sumsqdiff(a, b, n) / (double)n;   /* same bits whatever the thread count */
}

/* ---- scale groups ------------------------------------------------------------------------ */

enum { G_ATTN = 0, G_O = 1, G_MLP = 2, G_DOWN = 3 };

typedef struct grp {
    int kind, n_lin;
    const char *prev, *measured, *lin_names[3];
    kd_tensor *prev_t, *lin[3];   /* prev_t: RMSNorm weight [in] or linear whose rows = in */
    qz q[3];
    float *x;                     /* cached input [n, in] */
    int64_t in;
    const float *yref;            /* FP output of the measured module [n, C] */
    const char *skipped;          /* why the group does not apply, or NULL */
    int shapes_differ;            /* v → o under grouped-query attention */
} grp;

static void build_groups(const kd_model *m, const kd_awq_opts *o, kd_layer *ly, cache *c, const cache *ref,
                         grp g[4]) {
    memset(g, 0, 4 * sizeof *g);
    g[G_ATTN] = (grp){.kind = G_ATTN, .n_lin = 3, .prev = "input_layernorm", .measured = "self_attn",
                      .lin_names = {"q_proj", "k_proj", "v_proj"}, .prev_t = ly->attn_norm,
                      .lin = {ly->wq, ly->wk, ly->wv}, .x = c->h1, .in = ly->wq->shape[1], .yref = ref->ya};
    g[G_O] = (grp){.kind = G_O, .n_lin = 1, .prev = "v_proj", .measured = "o_proj", .lin_names = {"o_proj"},
                   .prev_t = ly->wv, .lin = {ly->wo}, .x = c->a, .in = ly->wo->shape[1], .yref = ref->ya};
    g[G_MLP] = (grp){.kind = G_MLP, .n_lin = 2, .prev = "post_attention_layernorm", .measured = "mlp",
                     .lin_names = {"gate_proj", "up_proj"}, .prev_t = ly->ffn_norm, .lin = {ly->w_gate, ly->w_up},
                     .x = c->h2, .in = ly->w_gate->shape[1], .yref = ref->ym};
    g[G_DOWN] = (grp){.kind = G_DOWN, .n_lin = 1, .prev = "up_proj", .measured = "down_proj",
                      .lin_names = {"down_proj"}, .prev_t = ly->w_up, .lin = {ly->w_down}, .x = c->act,
                      .in = ly->w_down->shape[1], .yref = ref->ym};
    if (ly->wv->shape[0] != ly->wo->shape[0] || ly->wv->shape[1] != ly->wo->shape[1]) {
        g[G_O].skipped = "v_proj and o_proj differ in shape (grouped-query attention)";
        g[G_O].shapes_differ = 1;
    }
    for (int k = 0; k < 4; k++) {
        int any = 0;
        for (int j = 0; j < g[k].n_lin; j++) {
            g[k].q[j] = qz_for(m, o, g[k].lin[j]->name);
            any |= g[k].q[j].active;
        }
        if (!any && !g[k].skipped) g[k].skipped = "no quantized linear (all stay F16/F32 in this format)";
    }
}

/* The measured module's output with the group's linears replaced by wq[j]; its MSE to the FP output. */
static double group_loss(awq_ws *w, const kd_layer *ly, const grp *g, float *const wq[3], float *y) {
    switch (g->kind) {
    case G_ATTN: attn_fwd(w, g->x, wq[0], wq[1], wq[2], ly->wo->data, NULL, y); break;
    case G_O: linear(y, g->x, wq[0], w->n, w->C, w->QD); break;
    case G_MLP: mlp_fwd(w, g->x, wq[0], wq[1], ly->w_down->data, NULL, y); break;
    default: linear(y, g->x, wq[0], w->n, w->C, w->F); break;
    }
    return mse(y, g->yref, w->n * w->C);
}

/* Mean |x| per column of x [n, in], threads over rows with private sums. */
static int col_mean_abs(const float *x, int64_t n, int64_t in, float *out, kd_err *err) {
    int nt = omp_get_max_threads();
    double *acc = calloc((size_t)(nt * in), sizeof *acc);
    if (!acc) return kd_errf(err, "out of memory");
#pragma omp parallel num_threads(nt)
    {
        double *a = acc + (int64_t)omp_get_thread_num() * in;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < in; c++) a[c] += fabsf(x[r * in + c]);
    }
    for (int64_t c = 0; c < in; c++) {
        double s = 0;
        for (int t = 0; t < nt; t++) s += acc[t * in + c];
        out[c] = (float)(s / (double)n);
    }
    free(acc);
    return 0;
}

/* s = max(s_x^r, 1e-4), normalised by sqrt(max·min). */
static void ratio_scales(const float *sx, int64_t in, double r, float *s) {
    double mx = 0, mn = INFINITY;
    for (int64_t c = 0; c < in; c++) {
        double v = pow((double)sx[c], r);
        v = v > 1e-4 ? v : 1e-4;
        s[c] = (float)v;
        mx = v > mx ? v : mx;
        mn = v < mn ? v : mn;
    }
    float norm = (float)sqrt(mx * mn);
    for (int64_t c = 0; c < in; c++) s[c] /= norm;
}

static cJSON *str_array(const char *const *s, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(s[i]));
    return a;
}

/* Search one group; on return s_best holds the chosen scales (all 1 when skipped). */
static int search_group(awq_ws *w, const kd_layer *ly, const grp *g, const kd_awq_opts *o, float *const wq[3],
                        float *y, float *s_best, cJSON *rec, kd_err *err) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddItemToArray(rec, e);
    cJSON_AddStringToObject(e, "prev_op", g->prev);
    cJSON_AddItemToObject(e, "linears", str_array(g->lin_names, g->n_lin));
    cJSON_AddStringToObject(e, "measured", g->measured);
    for (int64_t c = 0; c < g->in; c++) s_best[c] = 1.0f;
    if (g->skipped) {
        cJSON_AddStringToObject(e, "skipped", g->skipped);
        return 0;
    }
    float *sx = falloc(g->in), *s = falloc(g->in);
    int n_try = o->force_ratio >= 0 ? 2 : o->n_grid, best = 0;
    double *losses = malloc((size_t)n_try * sizeof *losses);
    int rc = -1;
    if (!sx || !s || !losses) {
        kd_errf(err, "out of memory");
        goto done;
    }
    if (col_mean_abs(g->x, w->n, g->in, sx, err)) goto done;
    for (int k = 0; k < n_try; k++) {
        double r = o->force_ratio >= 0 ? (k ? o->force_ratio : 0.0) : (double)k / o->n_grid;
        ratio_scales(sx, g->in, r, s);
        for (int j = 0; j < g->n_lin; j++)
            quant_scaled(&g->q[j], g->lin[j]->data, wq[j], g->lin[j]->shape[0], g->lin[j]->shape[1], s);
        losses[k] = group_loss(w, ly, g, wq, y);
        if (!isfinite(losses[k])) {
            kd_errf(err, "%s block: loss is %g at ratio %g (the model or its calibration activations hold NaN/Inf)",
                    g->measured, losses[k], r);
            goto done;
        }
        if (k == 0 || losses[k] < losses[best] || o->force_ratio >= 0) {
            best = k;
            memcpy(s_best, s, (size_t)g->in * sizeof *s);
        }
    }
    double ratio = o->force_ratio >= 0 ? (best ? o->force_ratio : 0.0) : (double)best / o->n_grid;
    cJSON_AddNumberToObject(e, "ratio", ratio);
    cJSON_AddNumberToObject(e, "loss", losses[best]);
    cJSON_AddNumberToObject(e, "loss_ratio0", losses[0]);
    cJSON_AddItemToObject(e, "losses", cJSON_CreateDoubleArray(losses, n_try));
    rc = 0;
done:
    free(sx), free(s), free(losses);
    return rc;
}

/* Fold s: prev op ÷ s (norm weight, or rows of v/up), the linears' columns × s, the cached input ÷ s. */
static void fold(awq_ws *w, const grp *g, const float *s) {
    kd_tensor *p = g->prev_t;
    int64_t in = g->in, pc = p->ndim == 2 ? p->shape[1] : 1;
#pragma omp parallel for
    for (int64_t r = 0; r < in; r++)
        for (int64_t c = 0; c < pc; c++) p->data[r * pc + c] /= s[r];
    for (int j = 0; j < g->n_lin; j++) {
        kd_tensor *t = g->lin[j];
#pragma omp parallel for
        for (int64_t r = 0; r < t->shape[0]; r++)
            for (int64_t c = 0; c < in; c++) t->data[r * in + c] *= s[c];
    }
#pragma omp parallel for
    for (int64_t r = 0; r < w->n; r++)
        for (int64_t c = 0; c < in; c++) g->x[r * in + c] /= s[c];
}

/* ---- clip search ------------------------------------------------------------------------- */

#define CLIP_ROWS 256   /* output rows per batch */

/* Clip search of one linear W [rows, in] on its (scaled) input x [n, in]. */
static int clip_linear(awq_ws *w, kd_tensor *W, const char *short_name, const qz *q, const float *x,
                       const kd_awq_opts *o, cJSON *rec, kd_err *err) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddItemToArray(rec, e);
    cJSON_AddStringToObject(e, "linear", short_name);
    cJSON_AddStringToObject(e, "type", q->type >= 0 ? kd_ggml_type_name(q->type) : "int4-asym");
    if (!q->active) {
        cJSON_AddStringToObject(e, "skipped", "not quantized in this format");
        return 0;
    }
    const int64_t rows = W->shape[0], in = W->shape[1], gs = q->group, ng = in / gs;
    const int ns_max = (int)(o->n_grid * o->max_shrink) > 0 ? (int)(o->n_grid * o->max_shrink) : 1;
    const int64_t step = w->n / o->clip_tokens > 1 ? w->n / o->clip_tokens : 1, nt = (w->n + step - 1) / step;
    const int64_t rb_max = rows < CLIP_ROWS ? rows : CLIP_ROWS;
    float *xs = falloc(nt * in), *D = falloc(rb_max * ns_max * gs), *E = falloc(rb_max * ns_max * nt);
    double *errs = malloc((size_t)(rb_max * ns_max) * sizeof *errs);
    int64_t *counts = calloc((size_t)ns_max, sizeof *counts);
    double err0 = 0, err1 = 0, shrink_sum = 0;
    if (!xs || !D || !E || !errs || !counts) {
        free(xs), free(D), free(E), free(errs), free(counts);
        return kd_errf(err, "out of memory in the clip search of %s", W->name);
    }
    /* one token per window of `step`, at a pseudo-random offset: a plain stride that is a multiple of
     * the sequence length would sample the same position (e.g. BOS) of every sequence */
    for (int64_t t = 0; t < nt; t++) {
        int64_t i = t * step + (int64_t)(((uint64_t)t * 2654435761u) % (uint64_t)step);
        i = i < w->n ? i : w->n - 1;
        memcpy(xs + t * in, x + i * in, (size_t)in * sizeof *xs);
    }
    for (int64_t gi = 0; gi < ng; gi++) {
        for (int64_t r0 = 0; r0 < rows; r0 += rb_max) {
            const int64_t rb = rows - r0 < rb_max ? rows - r0 : rb_max;
            /* D[(row, i)] = Q(clamp(w, ±m_i)) − w */
#pragma omp parallel for schedule(dynamic, 4)
            for (int64_t rr = 0; rr < rb; rr++) {
                const float *wr = W->data + (r0 + rr) * in + gi * gs;
                float amax = 0;
                for (int64_t c = 0; c < gs; c++) amax = fabsf(wr[c]) > amax ? fabsf(wr[c]) : amax;
                for (int i = 0; i < ns_max; i++) {
                    float m = amax * (1.0f - (float)i / (float)o->n_grid), *d = D + (rr * ns_max + i) * gs;
                    for (int64_t c = 0; c < gs; c++) d[c] = fminf(fmaxf(wr[c], -m), m);
                    qz_run(q, d, d, gs);
                    for (int64_t c = 0; c < gs; c++) d[c] -= wr[c];
                }
            }
            /* E = D · x_groupᵀ: the change of each partial output per token */
            kd_sgemm(0, 1, (rb * ns_max), nt, gs, 1.0f, D, gs, xs + gi * gs, in, 0.0f, E, nt);
#pragma omp parallel for
            for (int64_t j = 0; j < rb * ns_max; j++) {
                double s = 0;
                for (int64_t t = 0; t < nt; t++) s += (double)E[j * nt + t] * E[j * nt + t];
                errs[j] = s / (double)nt;
            }
            for (int64_t rr = 0; rr < rb; rr++) {
                int best = 0;
                for (int i = 1; i < ns_max; i++)
                    if (errs[rr * ns_max + i] < errs[rr * ns_max + best]) best = i;
                counts[best]++;
                err0 += errs[rr * ns_max];
                err1 += errs[rr * ns_max + best];
                shrink_sum += (double)best / o->n_grid;
                if (!best) continue;
                float *wr = W->data + (r0 + rr) * in + gi * gs, amax = 0;
                for (int64_t c = 0; c < gs; c++) amax = fabsf(wr[c]) > amax ? fabsf(wr[c]) : amax;
                float m = amax * (1.0f - (float)best / (float)o->n_grid);
                for (int64_t c = 0; c < gs; c++) wr[c] = fminf(fmaxf(wr[c], -m), m);
            }
        }
    }
    cJSON_AddNumberToObject(e, "group", (double)gs);
    cJSON *cnt = cJSON_AddArrayToObject(e, "shrink_counts");
    for (int i = 0; i < ns_max; i++) cJSON_AddItemToArray(cnt, cJSON_CreateNumber((double)counts[i]));
    cJSON_AddNumberToObject(e, "mean_shrink", shrink_sum / (double)(rows * ng));
    cJSON_AddNumberToObject(e, "err_noclip", err0);
    cJSON_AddNumberToObject(e, "err_clip", err1);
    free(xs), free(D), free(E), free(errs), free(counts);
    return 0;
}

/* The block loss of group g with its linears pseudo-quantized as they are now. */
static double block_loss_now(awq_ws *w, const kd_layer *ly, const grp *g, float *const wq[3], float *y) {
    for (int j = 0; j < g->n_lin; j++)
        quant_scaled(&g->q[j], g->lin[j]->data, wq[j], g->lin[j]->shape[0], g->lin[j]->shape[1], NULL);
    return group_loss(w, ly, g, wq, y);
}

/* Clip v, o, gate, up, down on their scaled inputs (q and k are not clipped). With the guard, the
 * clips of a block's linears are undone when they raise that block's loss (measured as in the scale
 * search): the per-group clip objective ignores that clipping errors of one row add up coherently
 * over its groups, and on trained students they can (docs/quantization.md). */
static int clip_layer(awq_ws *w, const kd_model *m, kd_layer *ly, grp g[4], const kd_awq_opts *o,
                      float *const wq[3], float *y, float *const backup[5], cJSON *cl, kd_err *err) {
    struct { kd_tensor *t; const char *n; float *in; int group; } cj[5] = {
        {ly->wv, "v_proj", g[G_ATTN].x, G_ATTN}, {ly->wo, "o_proj", g[G_O].x, G_O},
        {ly->w_gate, "gate_proj", g[G_MLP].x, G_MLP}, {ly->w_up, "up_proj", g[G_MLP].x, G_MLP},
        {ly->w_down, "down_proj", g[G_DOWN].x, G_DOWN}};
    const int guard = o->clip_guard < 0 ? o->group_size == 0 : o->clip_guard;
    double before[4] = {0}, after[4] = {0};
    int active[5];
    for (int j = 0; j < 5; j++) {
        active[j] = qz_for(m, o, cj[j].t->name).active;
        memcpy(backup[j], cj[j].t->data, (size_t)cj[j].t->n * sizeof(float));
    }
    for (int k = 0; guard && k < 4; k++) before[k] = block_loss_now(w, ly, &g[k], wq, y);
    for (int j = 0; j < 5; j++) {
        qz q = qz_for(m, o, cj[j].t->name);
        if (clip_linear(w, cj[j].t, cj[j].n, &q, cj[j].in, o, cl, err)) return -1;
    }
    for (int k = 0; guard && k < 4; k++) after[k] = block_loss_now(w, ly, &g[k], wq, y);
    for (int j = 0; j < 5; j++) {
        if (!active[j] || !guard) continue;
        int keep = after[cj[j].group] <= before[cj[j].group];
        if (!keep) memcpy(cj[j].t->data, backup[j], (size_t)cj[j].t->n * sizeof(float));
        cJSON *e = cJSON_GetArrayItem(cl, cJSON_GetArraySize(cl) - 5 + j);
        cJSON_AddNumberToObject(e, "block_loss_noclip", before[cj[j].group]);
        cJSON_AddNumberToObject(e, "block_loss_clip", after[cj[j].group]);
        cJSON_AddBoolToObject(e, "kept", keep);
    }
    return 0;
}

/* ---- progress ------------------------------------------------------------------------------ */

static void progress(const kd_awq_opts *o, double t0, int64_t done, int64_t total, int64_t layer, int64_t L,
                     const char *stage, int failed) {
    if (!o->progress) return;
    kd_awq_progress p = {NULL, 0, 0, done, total, layer, L, stage, kd_now_s() - t0, failed};
    o->progress(o->progress_ctx, &p);
}

/* ---- the driver ------------------------------------------------------------------------- */

static int check_tokens(const kd_model *m, const int32_t *tokens, int64_t n_seq, int64_t T, kd_err *err) {
    if (n_seq < 1 || T < 1) return kd_errf(err, "no calibration tokens (%" PRId64 " sequences of %" PRId64 ")", n_seq, T);
    if (T > m->cfg.max_position_embeddings)
        return kd_errf(err, "calibration sequences of %" PRId64 " tokens exceed the model's context %" PRId64, T,
                       m->cfg.max_position_embeddings);
    for (int64_t i = 0; i < n_seq * T; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return kd_errf(err, "calibration token %" PRId32 " (sequence %" PRId64 ", position %" PRId64
                           ") is outside the model's vocabulary [0, %" PRId64 ")", tokens[i], i / T, i % T,
                           m->cfg.vocab_size);
    return 0;
}

static int64_t max_linear(const kd_model *m) {
    const kd_layer *ly = &m->layers[0];
    const kd_tensor *lin[7] = {ly->wq, ly->wk, ly->wv, ly->wo, ly->w_gate, ly->w_up, ly->w_down};
    int64_t mx = 0;
    for (int j = 0; j < 7; j++) mx = lin[j]->n > mx ? lin[j]->n : mx;
    return mx;
}

int kd_awq_quantize(kd_model *m, const int32_t *tokens, int64_t n_seq, int64_t T, const kd_awq_opts *o,
                    cJSON *record, kd_err *err) {
    if (kd_awq_check(m, o, err)) return -1;
    cJSON *layers = record ? cJSON_AddArrayToObject(record, "layers") : NULL;
    if (o->method == KD_QUANT_RTN) return 0;
    if (check_tokens(m, tokens, n_seq, T, err)) return -1;
    awq_ws w;
    if (ws_init(&w, &m->cfg, n_seq, T, err)) return -1;
    cache c = {0};
    const int64_t L = m->cfg.num_hidden_layers, wmax = max_linear(m), cmax = w.F > w.QD ? w.F : w.QD;
    float *x = falloc(w.n * w.C), *y = falloc(w.n * w.C), *s = falloc(cmax);
    float *wq[3] = {falloc(wmax), falloc(wmax), falloc(wmax)};
    float *backup[5] = {0};
    for (int j = 0; j < 5 && o->clip; j++) backup[j] = falloc(wmax);
    int rc = -1;
    if (!x || !y || !s || !wq[0] || !wq[1] || !wq[2] || (o->clip && (!backup[0] || !backup[1] || !backup[2] ||
                                                                    !backup[3] || !backup[4]))) {
        kd_errf(err, "out of memory for %" PRId64 " calibration tokens", w.n);
        goto done;
    }
    if (cache_init(&c, &w, err)) goto done;
    double t0 = kd_now_s();
    embed(m, tokens, w.n, x);
    for (int64_t l = 0; l < L; l++) {
        kd_layer *ly = &m->layers[l];
        progress(o, t0, 5 * l, 5 * L, l, L, "forward", 0);
        layer_fp(&w, ly, x, &c);   /* x becomes the next layer's FP input before anything changes */
        grp g[4];
        build_groups(m, o, ly, &c, &c, g);
        cJSON *le = cJSON_CreateObject(), *sc = cJSON_CreateArray(), *cl = cJSON_CreateArray();
        cJSON_AddNumberToObject(le, "layer", (double)l);
        cJSON_AddItemToObject(le, "scales", sc);
        cJSON_AddItemToObject(le, "clips", cl);
        if (layers) cJSON_AddItemToArray(layers, le);
        int bad = 0;
        for (int k = 0; k < 4 && !bad; k++) {
            progress(o, t0, 5 * l + k, 5 * L, l, L, g[k].measured, 0);
            bad = search_group(&w, ly, &g[k], o, wq, y, s, sc, err);
            if (!bad && !g[k].skipped) fold(&w, &g[k], s);
        }
        if (!bad && o->clip) {
            progress(o, t0, 5 * l + 4, 5 * L, l, L, "clip", 0);
            bad = clip_layer(&w, m, ly, g, o, wq, y, backup, cl, err);
        }
        if (!layers) cJSON_Delete(le);
        if (bad) {
            progress(o, t0, 5 * l, 5 * L, l, L, "failed", 1);
            kd_err_prefix(err, "AWQ layer %" PRId64, l);
            goto done;
        }
    }
    progress(o, t0, 5 * L, 5 * L, L, L, "done", 0);
    rc = 0;
done:
    free(x), free(y), free(s), free(wq[0]), free(wq[1]), free(wq[2]);
    for (int j = 0; j < 5; j++) free(backup[j]);
    cache_free(&c);
    ws_free(&w);
    return rc;
}

int kd_awq_block_errors(const kd_model *ref, const kd_model *m, const int32_t *tokens, int64_t n_seq, int64_t T,
                        int64_t layer, const kd_awq_opts *o, double err4[4], kd_err *err) {
    if (kd_awq_check(m, o, err) || check_tokens(ref, tokens, n_seq, T, err)) return -1;
    if (layer < 0 || layer >= ref->cfg.num_hidden_layers || ref->cfg.hidden_size != m->cfg.hidden_size ||
        ref->cfg.num_hidden_layers != m->cfg.num_hidden_layers)
        return kd_errf(err, "layer %" PRId64 " / model shapes do not match", layer);
    awq_ws w;
    if (ws_init(&w, &ref->cfg, n_seq, T, err)) return -1;
    cache cr = {0}, cm = {0};
    const int64_t wmax = max_linear(m);
    float *x = falloc(w.n * w.C), *x2 = falloc(w.n * w.C), *y = falloc(w.n * w.C);
    float *wq[3] = {falloc(wmax), falloc(wmax), falloc(wmax)};
    int rc = -1;
    if (!x || !x2 || !y || !wq[0] || !wq[1] || !wq[2]) {
        kd_errf(err, "out of memory");
        goto done;
    }
    if (cache_init(&cr, &w, err) || cache_init(&cm, &w, err)) goto done;
    embed(ref, tokens, w.n, x);
    for (int64_t l = 0; l < layer; l++) layer_fp(&w, &ref->layers[l], x, &cr);
    memcpy(x2, x, (size_t)(w.n * w.C) * sizeof *x);
    layer_fp(&w, &ref->layers[layer], x, &cr);
    kd_layer *ly = &m->layers[layer];
    layer_fp(&w, ly, x2, &cm);
    grp g[4];
    build_groups(m, o, ly, &cm, &cr, g);
    for (int k = 0; k < 4; k++) {
        if (g[k].shapes_differ) {
            err4[k] = -1;
            continue;
        }
        for (int j = 0; j < g[k].n_lin; j++)
            quant_scaled(&g[k].q[j], g[k].lin[j]->data, wq[j], g[k].lin[j]->shape[0], g[k].lin[j]->shape[1], NULL);
        err4[k] = group_loss(&w, ly, &g[k], wq, y);
    }
    rc = 0;
done:
    free(x), free(x2), free(y), free(wq[0]), free(wq[1]), free(wq[2]);
    cache_free(&cr), cache_free(&cm);
    ws_free(&w);
    return rc;
}
