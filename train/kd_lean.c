/*
 * kd_lean.c — lean memory mode: BF16 storage, per-block recomputation and
 * per-layer optimizer updates (see kd_lean.h for the design).
 *
 * One step:
 *   x_0 = embedding rows of the tokens (converted from storage)
 *   for l = 0..L−1: saved[l] = x_l; x_{l+1} = block_l(x_l)     no tape, layer l in FP32
 *   saved[L] = x_L
 *   loss phase: head in FP32 + a dense FP32 head gradient; on a tape:
 *     h = rmsnorm(x_L, norm), loss = distill_loss(h, head)  → dx = dL/dx_L,
 *     the norm's gradient (update it) and the head's (untied: update it; tied:
 *     keep it, the embedding's gradient joins it at the end)
 *   for l = L−1..0: layer l in FP32, fresh tape from a leaf copy of saved[l],
 *     y = block_l(x), backward from y with dx; dx = dL/dx; update layer l
 *   embedding: scatter dx into its gradient, update it
 * The clip factor comes from the previous step's norm; this step's norm is
 * summed tensor by tensor on the way.
 */
#include "train/kd_lean.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kd_kernels.h"
#include "core/kd_file.h"
#include "core/kd_rng.h"
#include "format/kd_safetensors.h"
#include "student/kd_checkpoint.h"

#define F4 ((int64_t)sizeof(float))

/* ---- options, hashing, element access -------------------------------------------- */

void kd_lean_opts_init(kd_lean_opts *o) {
    memset(o, 0, sizeof *o);
    o->weights = KD_LEAN_BF16;
    o->m = KD_LEAN_BF16;
    o->v_factored = 1;
    o->adam = kd_adamw_defaults();
    o->shard_world = 1;
}

const char *kd_lean_dtype_name(kd_lean_dtype t) { return t == KD_LEAN_BF16 ? "bf16" : "fp32"; }

int kd_lean_dtype_parse(const char *s, kd_lean_dtype *out, kd_err *err) {
    if (s && !strcmp(s, "bf16")) *out = KD_LEAN_BF16;
    else if (s && !strcmp(s, "fp32")) *out = KD_LEAN_F32;
    else return kd_errf(err, "storage dtype '%s': expected \"bf16\" or \"fp32\"", s ? s : "(null)");
    return 0;
}

static inline uint64_t fmix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

uint64_t kd_lean_hash(uint64_t a, uint64_t b) { return fmix64(fmix64(a + 0x9e3779b97f4a7c15ULL) ^ b); }

uint32_t kd_lean_rand16(uint64_t key, int64_t j) { return (uint32_t)(fmix64(key + (uint64_t)j) >> 48); }

static inline float ld(const void *p, kd_lean_dtype t, int64_t j) {
    return t == KD_LEAN_BF16 ? kd_bf16_to_f32(((const uint16_t *)p)[j]) : ((const float *)p)[j];
}

/* store at index `at` with stochastic rounding (BF16) from element j of stream key
 * (at = j, except in a shard of the optimizer state: the bits follow the element) */
static inline void st_sr_at(void *p, kd_lean_dtype t, int64_t at, int64_t j, float x, uint64_t key) {
    if (t == KD_LEAN_BF16) ((uint16_t *)p)[at] = kd_bf16_round_stochastic(x, kd_lean_rand16(key, j));
    else ((float *)p)[at] = x;
}

static inline void st_sr(void *p, kd_lean_dtype t, int64_t j, float x, uint64_t key) { st_sr_at(p, t, j, j, x, key); }

static inline void st_rne(void *p, kd_lean_dtype t, int64_t j, float x) {
    if (t == KD_LEAN_BF16) ((uint16_t *)p)[j] = kd_f32_to_bf16(x);
    else ((float *)p)[j] = x;
}

static size_t dsize(kd_lean_dtype t) { return t == KD_LEAN_BF16 ? 2 : 4; }

float kd_lean_get(const kd_lean *l, int i, int64_t j) { return ld(l->p[i].w, l->p[i].wt, j); }
void kd_lean_set(kd_lean *l, int i, int64_t j, float v) { st_rne(l->p[i].w, l->p[i].wt, j, v); }

/* ---- set-up ------------------------------------------------------------------------ */

static int64_t rows_of(const kd_tensor *p) { return p->shape[0]; }
static int64_t cols_of(const kd_tensor *p) { return p->n / p->shape[0]; }

int kd_lean_new(kd_lean *l, const kd_config *cfg, const kd_lean_opts *o, kd_err *err) {
    memset(l, 0, sizeof *l);
    if (kd_model_new_shell(&l->m, cfg, err)) return -1;
    l->o = *o;
    if (l->o.shard_world < 1) l->o.shard_world = 1;
    if (l->o.shard_rank < 0 || l->o.shard_rank >= l->o.shard_world) {
        kd_lean_free(l);
        return kd_errf(err, "lean optimizer shard %d of %d: no such rank", o->shard_rank, o->shard_world);
    }
    int n = l->m.n_params;
    l->p = calloc((size_t)n, sizeof *l->p);
    if (!l->p) {
        kd_lean_free(l);
        return kd_errf(err, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        kd_tensor *t = l->m.params[i];
        kd_lean_param *q = &l->p[i];
        int mat = t->ndim >= 2;
        q->wt = mat ? o->weights : KD_LEAN_F32;
        q->mt = mat ? o->m : KD_LEAN_F32;
        int is_embed = strstr(t->name, "embed_tokens") != NULL;
        q->decay = mat && (!is_embed || o->decay_embeddings);
        /* m and a full v: this rank's rows only (kd_dist_shard_rows); the factors: all rows and columns */
        kd_dist_shard_rows(rows_of(t), l->o.shard_rank, l->o.shard_world, &q->r0, &q->r1);
        const int64_t own = (q->r1 - q->r0) * cols_of(t);
        q->w = kd_calloc((size_t)t->n * dsize(q->wt), err);
        q->m = q->w ? kd_calloc((size_t)own * dsize(q->mt), err) : NULL;
        if (q->m) {
            if (mat && o->v_factored) {
                q->vr = kd_calloc((size_t)rows_of(t) * sizeof(float), err);
                q->vc = q->vr ? kd_calloc((size_t)cols_of(t) * sizeof(float), err) : NULL;
            } else {
                q->v = kd_calloc((size_t)own * sizeof(float), err);
            }
        }
        if (!q->w || !q->m || !(q->v || q->vc)) {
            kd_err_prefix(err, "lean storage for '%s' (%.1f GiB so far)", t->name,
                          (double)(kd_lean_weight_bytes(l) + kd_lean_state_bytes(l)) / (1 << 30));
            kd_lean_free(l);
            return -1;
        }
    }
    /* one layer's FP32 working copy: weights (unless stored in FP32) and gradients */
    if (cfg->num_hidden_layers > 0) {
        for (int i = 1; i <= 9; i++) l->layer_n += l->m.params[i]->n;
        l->layer_g = kd_alloc((size_t)l->layer_n * sizeof(float), err);
        if (l->layer_g && o->weights == KD_LEAN_BF16) l->layer_w = kd_alloc((size_t)l->layer_n * sizeof(float), err);
        if (!l->layer_g || (o->weights == KD_LEAN_BF16 && !l->layer_w)) {
            kd_err_prefix(err, "one layer's FP32 working copy");
            kd_lean_free(l);
            return -1;
        }
    }
    return 0;
}

void kd_lean_free(kd_lean *l) {
    if (l->p)
        for (int i = 0; i < l->m.n_params; i++) {
            kd_free(l->p[i].w);
            kd_free(l->p[i].m);
            kd_free(l->p[i].v);
            kd_free(l->p[i].vr);
            kd_free(l->p[i].vc);
        }
    free(l->p);
    kd_free(l->layer_w);
    kd_free(l->layer_g);
    kd_free(l->saved);
    kd_free(l->dx);
    kd_free(l->dx_top);
    free(l->pos);
    if (l->m.params) kd_model_free(&l->m);
    memset(l, 0, sizeof *l);
}

int64_t kd_lean_weight_bytes(const kd_lean *l) {
    int64_t b = 0;
    for (int i = 0; l->p && i < l->m.n_params; i++) b += l->m.params[i]->n * (int64_t)dsize(l->p[i].wt);
    return b;
}

int64_t kd_lean_state_bytes(const kd_lean *l) {
    int64_t b = 0;
    for (int i = 0; l->p && i < l->m.n_params; i++) {
        const kd_tensor *t = l->m.params[i];
        const int64_t own = (l->p[i].r1 - l->p[i].r0) * cols_of(t);
        b += own * (int64_t)dsize(l->p[i].mt);
        b += l->p[i].vc ? (rows_of(t) + cols_of(t)) * F4 : own * F4;
    }
    return b;
}

void kd_lean_init(kd_lean *l, uint64_t seed) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < l->m.n_params; i++) {
        const kd_tensor *t = l->m.params[i];
        kd_lean_param *q = &l->p[i];
        kd_rng r;
        kd_rng_seed(&r, kd_model_init_seed(seed, i));
        float s = kd_model_init_std(&l->m, t);
        for (int64_t j = 0; j < t->n; j++) st_rne(q->w, q->wt, j, s == 0.0f ? 1.0f : s * kd_rng_normal(&r));
    }
}

/* ---- checkpoints ------------------------------------------------------------------- */

static int put_weights(void *ctx, int i, const kd_st_file *f, const kd_st_tensor *t, kd_err *err) {
    kd_lean *l = ctx;
    kd_lean_param *q = &l->p[i];
    const kd_tensor *p = l->m.params[i];
    if (q->wt == KD_LEAN_F32) return kd_st_read_f32(f, t->name, q->w, p->ndim, p->shape, err);
    if (t->dtype == KD_ST_BF16) {
        memcpy(q->w, t->data, t->nbytes);
        return 0;
    }
    const unsigned char *src = t->data;   /* F32 or F16, possibly unaligned: convert element by element */
#pragma omp parallel for if (t->numel > 65536)
    for (int64_t j = 0; j < t->numel; j++) {
        float x;
        if (t->dtype == KD_ST_F32) {
            memcpy(&x, src + 4 * j, 4);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * j, 2);
            x = kd_fp16_to_f32(h);
        }
        ((uint16_t *)q->w)[j] = kd_f32_to_bf16(x);
    }
    return 0;
}

int kd_lean_load_weights(kd_lean *l, const char *dir, kd_err *err) {
    return kd_checkpoint_read(&l->m, dir, put_weights, l, err);
}

static kd_st_dtype st_dtype(kd_lean_dtype t) { return t == KD_LEAN_BF16 ? KD_ST_BF16 : KD_ST_F32; }

int kd_lean_save(const kd_lean *l, const char *dir, kd_err *err) {
    char path[4096];
    if (kd_mkdirs(dir, err)) return -1;
    if (kd_path_join(path, sizeof path, dir, "config.json", err) ||
        kd_config_save_dtype(&l->m.cfg, path, l->o.weights == KD_LEAN_BF16 ? "bfloat16" : "float32", err))
        return -1;
    kd_st_writer *w = kd_st_writer_new(err);
    if (!w) return -1;
    int rc = kd_st_writer_set_meta(w, "format", "pt", err);
    for (int i = 0; !rc && i < l->m.n_params; i++) {
        const kd_tensor *p = l->m.params[i];
        rc = kd_st_writer_add(w, p->name, st_dtype(l->p[i].wt), p->ndim, p->shape, l->p[i].w, err);
    }
    if (!rc) rc = kd_path_join(path, sizeof path, dir, "model.safetensors", err);
    if (!rc) rc = kd_st_writer_save(w, path, err);
    kd_st_writer_free(w);
    return rc;
}

/* The shape of parameter i's m (and full v) on this rank: its rows only. */
static void own_shape(const kd_lean *l, int i, int64_t *shape) {
    const kd_tensor *t = l->m.params[i];
    for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
    shape[0] = l->p[i].r1 - l->p[i].r0;
}

int kd_lean_save_optimizer(const kd_lean *l, const char *path, kd_err *err) {
    kd_st_writer *w = kd_st_writer_new(err);
    if (!w) return -1;
    int n = l->m.n_params;
    char (*names)[128] = malloc((size_t)n * 3 * sizeof *names);
    int rc = names ? kd_st_writer_set_meta(w, "kd_optimizer", "lean", err) : kd_errf(err, "out of memory");
    if (!rc) rc = kd_optim_shard_mark(w, l->o.shard_rank, l->o.shard_world, err);
    for (int i = 0; !rc && i < n; i++) {
        const kd_tensor *t = l->m.params[i];
        const kd_lean_param *q = &l->p[i];
        int64_t shape[KD_MAX_DIMS];
        own_shape(l, i, shape);
        snprintf(names[3 * i], 128, "m.%s", t->name);
        rc = kd_st_writer_add(w, names[3 * i], st_dtype(q->mt), t->ndim, shape, q->m, err);
        if (rc) break;
        if (q->v) {
            snprintf(names[3 * i + 1], 128, "v.%s", t->name);
            rc = kd_st_writer_add(w, names[3 * i + 1], KD_ST_F32, t->ndim, shape, q->v, err);
        } else {
            int64_t r = rows_of(t), c = cols_of(t);
            snprintf(names[3 * i + 1], 128, "v_row.%s", t->name);
            snprintf(names[3 * i + 2], 128, "v_col.%s", t->name);
            rc = kd_st_writer_add(w, names[3 * i + 1], KD_ST_F32, 1, &r, q->vr, err) ||
                 kd_st_writer_add(w, names[3 * i + 2], KD_ST_F32, 1, &c, q->vc, err);
        }
    }
    if (!rc) rc = kd_st_writer_save(w, path, err);
    kd_st_writer_free(w);
    free(names);
    return rc ? -1 : 0;
}

/* Copy tensor `name` of f into dst: dtype and shape must match exactly (resume is bit-exact). */
static int read_exact(const kd_st_file *f, const char *name, kd_st_dtype dt, int ndim, const int64_t *shape,
                      void *dst, kd_err *err) {
    const kd_st_tensor *t = kd_st_find(f, name);
    if (!t) return kd_errf(err, "%s: tensor '%s' is missing (was this checkpoint written in another memory mode?)",
                           f->path, name);
    int same = t->dtype == dt && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same)
        return kd_errf(err, "%s: tensor '%s' is %s with %d dimensions, expected %s [%lld, ...] (lean_m / lean_v of "
                            "this run differ from the checkpoint's)", f->path, name, kd_st_dtype_name(t->dtype),
                       t->ndim, kd_st_dtype_name(dt), (long long)shape[0]);
    memcpy(dst, t->data, t->nbytes);
    kd_st_release(f, t);
    return 0;
}

int kd_lean_load_optimizer(kd_lean *l, const char *path, kd_err *err) {
    kd_st_file *f = kd_st_open(path, err);
    if (!f) return -1;
    if (kd_optim_shard_check(f, path, l->o.shard_rank, l->o.shard_world, err) < 0) {
        kd_st_close(f);
        return -1;
    }
    int rc = 0;
    for (int i = 0; !rc && i < l->m.n_params; i++) {
        const kd_tensor *t = l->m.params[i];
        kd_lean_param *q = &l->p[i];
        int64_t shape[KD_MAX_DIMS];
        own_shape(l, i, shape);
        char nm[160];
        snprintf(nm, sizeof nm, "m.%s", t->name);
        rc = read_exact(f, nm, st_dtype(q->mt), t->ndim, shape, q->m, err);
        if (rc) break;
        if (q->v) {
            snprintf(nm, sizeof nm, "v.%s", t->name);
            rc = read_exact(f, nm, KD_ST_F32, t->ndim, shape, q->v, err);
        } else {
            int64_t r = rows_of(t), c = cols_of(t);
            snprintf(nm, sizeof nm, "v_row.%s", t->name);
            rc = read_exact(f, nm, KD_ST_F32, 1, &r, q->vr, err);
            snprintf(nm, sizeof nm, "v_col.%s", t->name);
            if (!rc) rc = read_exact(f, nm, KD_ST_F32, 1, &c, q->vc, err);
        }
    }
    kd_st_close(f);
    return rc;
}

/* ---- the optimizer ----------------------------------------------------------------- */

void kd_lean_factor_update(float *vr, float *vc, const float *g, int64_t rows, int64_t cols, float s, float beta2) {
    const float a = 1.0f - beta2;
#pragma omp parallel for if (rows * cols > 65536)
    for (int64_t i = 0; i < rows; i++) {
        const float *gi = g + i * cols;
        double acc = 0.0;
        for (int64_t j = 0; j < cols; j++) {
            float x = gi[j] * s;
            acc += (double)(x * x);
        }
        vr[i] = beta2 * vr[i] + a * (float)(acc / (double)cols);
    }
    /* columns: each thread owns a range of columns and walks all rows in order */
#pragma omp parallel if (rows * cols > 65536)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t c0 = cols * t / nt, c1 = cols * (t + 1) / nt;
        double acc[256];
        for (int64_t b0 = c0; b0 < c1; b0 += 256) {
            int64_t w = c1 - b0 < 256 ? c1 - b0 : 256;
            for (int64_t j = 0; j < w; j++) acc[j] = 0.0;
            for (int64_t i = 0; i < rows; i++) {
                const float *gi = g + i * cols + b0;
                for (int64_t j = 0; j < w; j++) {
                    float x = gi[j] * s;
                    acc[j] += (double)(x * x);
                }
            }
            for (int64_t j = 0; j < w; j++) vc[b0 + j] = beta2 * vc[b0 + j] + a * (float)(acc[j] / (double)rows);
        }
    }
}

double kd_lean_factor_mean(const float *vr, int64_t rows) {
    double s = 0.0;
    for (int64_t i = 0; i < rows; i++) s += vr[i];
    return rows > 0 ? s / (double)rows : 0.0;
}

/* Σ g² of one gradient in a fixed order (chunks summed in chunk order). */
static double sum_sq(const float *g, int64_t n) {
    const int64_t CH = 1 << 16;
    int64_t nch = (n + CH - 1) / CH;
    double total = 0.0;
    double part[64];
    for (int64_t c0 = 0; c0 < nch; c0 += 64) {
        int64_t m = nch - c0 < 64 ? nch - c0 : 64;
#pragma omp parallel for if (n > CH)
        for (int64_t c = 0; c < m; c++) {
            int64_t a = (c0 + c) * CH, b = a + CH < n ? a + CH : n;
            double s = 0.0;
            for (int64_t j = a; j < b; j++) s += (double)g[j] * g[j];
            part[c] = s;
        }
        for (int64_t c = 0; c < m; c++) total += part[c];
    }
    return total;
}

/* AdamW on parameter i with gradient g (scaled by cs), update number t: the rows
 * [r0, r1) this rank owns (every row when not sharded). m and a full v hold those
 * rows only (index j − off); the factors and the random bits follow the element j. */
static void update(kd_lean *l, int i, const float *g, float cs, float lr, int64_t t) {
    const kd_tensor *p = l->m.params[i];
    kd_lean_param *q = &l->p[i];
    const float b1 = l->o.adam.beta1, b2 = l->o.adam.beta2, eps = l->o.adam.eps;
    const float wd = q->decay ? l->o.adam.weight_decay : 0.0f;
    const float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    const uint64_t base = kd_lean_hash(kd_lean_hash(l->o.seed, (uint64_t)t), (uint64_t)i);
    const uint64_t kw = kd_lean_hash(base, 1), km = kd_lean_hash(base, 2);
    void *w = q->w, *m = q->m;
    const kd_lean_dtype wt = q->wt, mt = q->mt;
    const int64_t C = cols_of(p), r0 = q->r0, r1 = q->r1, off = r0 * C;
    if (q->vc) {
        /* the factors see the whole (all-reduced) gradient on every rank: the same bits everywhere */
        const int64_t R = rows_of(p);
        kd_lean_factor_update(q->vr, q->vc, g, R, C, cs, b2);
        double mean = kd_lean_factor_mean(q->vr, R);
        const float inv = mean > 0.0 ? (float)(1.0 / mean) : 0.0f;
        const float *vr = q->vr, *vc = q->vc;
#pragma omp parallel for if ((r1 - r0) * C > 32768)
        for (int64_t r = r0; r < r1; r++) {
            const float ri = vr[r] * inv;
            for (int64_t c = 0; c < C; c++) {
                const int64_t j = r * C + c;
                const float gj = g[j] * cs, wj = ld(w, wt, j);
                const float mj = b1 * ld(m, mt, j - off) + (1.0f - b1) * gj;
                const float mh = mj / c1, vh = ri * vc[c] / c2;
                st_sr_at(m, mt, j - off, j, mj, km);
                st_sr(w, wt, j, wj - lr * (mh / (sqrtf(vh) + eps) + wd * wj), kw);
            }
        }
    } else {
        float *v = q->v;
        const int64_t n = r1 * C;
#pragma omp parallel for if (n - off > 32768)
        for (int64_t j = off; j < n; j++) {
            const float gj = g[j] * cs, wj = ld(w, wt, j);
            const float mj = b1 * ld(m, mt, j - off) + (1.0f - b1) * gj;
            v[j - off] = b2 * v[j - off] + (1.0f - b2) * gj * gj;
            const float mh = mj / c1, vh = v[j - off] / c2;
            st_sr_at(m, mt, j - off, j, mj, km);
            st_sr(w, wt, j, wj - lr * (mh / (sqrtf(vh) + eps) + wd * wj), kw);
        }
    }
}

/* update, then (sharded) every rank's updated rows of parameter i to every rank. */
static int apply(kd_lean *l, int i, const float *g, float cs, float lr, int64_t t, const kd_dist *dist, kd_err *err) {
    update(l, i, g, cs, lr, t);
    if (l->o.shard_world == 1) return 0;
    const kd_tensor *p = l->m.params[i];
    if (kd_dist_allgather_rows(dist, l->p[i].w, rows_of(p), cols_of(p) * (int64_t)dsize(l->p[i].wt), err))
        return kd_err_prefix(err, "step %lld: gathering '%s'", (long long)t, p->name);
    return 0;
}

/* ---- materialising FP32 copies ------------------------------------------------------ */

static void to_f32(float *dst, const kd_lean_param *q, int64_t n) {
    if (q->wt == KD_LEAN_F32) {
        memcpy(dst, q->w, (size_t)n * sizeof(float));
        return;
    }
    const uint16_t *s = q->w;
#pragma omp parallel for if (n > 65536)
    for (int64_t j = 0; j < n; j++) dst[j] = kd_bf16_to_f32(s[j]);
}

/* Point parameter i at FP32 numbers: the storage itself when it is FP32, else a converted copy in buf. */
static void view(kd_lean *l, int i, float *buf) {
    kd_tensor *p = l->m.params[i];
    if (l->p[i].wt == KD_LEAN_F32) {
        p->data = l->p[i].w;
    } else {
        to_f32(buf, &l->p[i], p->n);
        p->data = buf;
    }
}

static void unview(kd_lean *l, int i) { l->m.params[i]->data = l->m.params[i]->grad = NULL; }

/* Layer li's 9 parameters (indices 1 + 9·li ... 9 + 9·li) in FP32, gradients zeroed when grads. */
static void layer_in(kd_lean *l, int64_t li, int grads) {
    int64_t off = 0;
    if (grads) memset(l->layer_g, 0, (size_t)l->layer_n * sizeof(float));
    for (int k = 1; k <= 9; k++) {
        int i = (int)(9 * li) + k;
        view(l, i, l->layer_w ? l->layer_w + off : NULL);   /* no copy with FP32 storage */
        l->m.params[i]->grad = l->layer_g + off;
        off += l->m.params[i]->n;
    }
}

static void layer_out(kd_lean *l, int64_t li) {
    for (int k = 1; k <= 9; k++) unview(l, (int)(9 * li) + k);
}

static int work_buffers(kd_lean *l, int64_t N, int64_t T, kd_err *err) {
    const int64_t C = l->m.cfg.hidden_size, L = l->m.cfg.num_hidden_layers;
    if (N > l->rows) {
        kd_free(l->saved);
        kd_free(l->dx);
        l->saved = kd_alloc((size_t)((L + 1) * N * C) * sizeof(float), err);
        kd_free(l->dx_top);
        l->dx_top = NULL;
        l->dx = l->saved ? kd_alloc((size_t)(N * C) * sizeof(float), err) : NULL;
        if (l->dx && l->o.exact_clip) l->dx_top = kd_alloc((size_t)(N * C) * sizeof(float), err);
        if (!l->dx || (l->o.exact_clip && !l->dx_top)) {
            kd_free(l->saved);
            kd_free(l->dx);
            l->saved = l->dx = NULL;
            l->rows = 0;
            return kd_err_prefix(err, "lean mode: saved layer inputs for %lld rows", (long long)N);
        }
        l->rows = N;
    }
    if (T > l->pos_n) {
        int32_t *p = realloc(l->pos, (size_t)T * sizeof *p);
        if (!p) return kd_errf(err, "out of memory");
        l->pos = p;
        for (int64_t t = 0; t < T; t++) p[t] = (int32_t)t;
        l->pos_n = T;
    }
    return 0;
}

/* A leaf [B, T, C] activation holding a copy of src. */
static kd_tensor *leaf(kd_graph *g, const float *src, int64_t B, int64_t T, int64_t C, int requires_grad) {
    int64_t s[3] = {B, T, C};
    kd_tensor *x = kd_tensor_new(g, 3, s, "lean_input");
    memcpy(x->data, src, (size_t)x->n * sizeof(float));
    x->requires_grad = requires_grad;
    return x;
}

/* The no-tape forward: saved[0..L] = x_0 .. x_L. */
static int forward(kd_lean *l, kd_graph *g, const int32_t *tokens, int64_t B, int64_t T, kd_err *err) {
    const kd_config *c = &l->m.cfg;
    const int64_t N = B * T, C = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    if (work_buffers(l, N, T, err)) return -1;
    const kd_lean_param *e = &l->p[0];
    for (int64_t n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= V)
            return kd_errf(err, "token id %d at position %lld outside the vocabulary [0, %lld)", tokens[n],
                           (long long)n, (long long)V);
        float *dst = l->saved + n * C;
        for (int64_t j = 0; j < C; j++) dst[j] = ld(e->w, e->wt, (int64_t)tokens[n] * C + j);
    }
    int saved_ng = g->no_grad;
    for (int64_t li = 0; li < L; li++) {
        kd_graph_reset(g);
        g->no_grad = 1;
        layer_in(l, li, 0);
        kd_tensor *x = leaf(g, l->saved + li * N * C, B, T, C, 0);
        kd_tensor *y = kd_model_block(g, &l->m, li, x, l->pos);
        memcpy(l->saved + (li + 1) * N * C, y->data, (size_t)(N * C) * sizeof(float));
        layer_out(l, li);
    }
    kd_graph_reset(g);
    g->no_grad = saved_ng;
    return 0;
}

/* The LM head in FP32: the storage itself when it is FP32 (*owned = 0), else a
 * converted copy (*owned = 1, kd_free it). */
static float *head_f32(kd_lean *l, int *owned, kd_err *err) {
    const kd_tensor *h = kd_model_head(&l->m);
    const kd_lean_param *q = &l->p[h == l->m.embed ? 0 : l->m.n_params - 1];
    *owned = q->wt != KD_LEAN_F32;
    if (!*owned) return q->w;
    float *buf = kd_alloc((size_t)h->n * sizeof(float), err);
    if (buf) to_f32(buf, q, h->n);
    return buf;
}

int kd_lean_eval(kd_lean *l, kd_graph *g, const int32_t *tokens, int64_t B, int64_t T, const kd_loss_batch *b,
                 kd_eval_acc *acc, kd_err *err) {
    const kd_config *c = &l->m.cfg;
    const int64_t N = B * T, C = c->hidden_size, L = c->num_hidden_layers;
    if (forward(l, g, tokens, B, T, err)) return -1;
    int owned;
    float *hw = head_f32(l, &owned, err);
    if (!hw) return kd_err_prefix(err, "lean evaluation: FP32 LM head");
    int saved_ng = g->no_grad;
    kd_graph_reset(g);
    g->no_grad = 1;
    kd_tensor *norm = l->m.norm;
    norm->data = l->p[l->m.n_params - (l->m.lm_head ? 2 : 1)].w;   /* FP32 storage */
    kd_tensor *h = kd_rmsnorm(g, leaf(g, l->saved + L * N * C, B, T, C, 0), norm, (float)c->rms_norm_eps);
    int rc = kd_eval_batch(acc, h->data, hw, N, C, c->vocab_size, b, err);
    norm->data = NULL;
    kd_graph_reset(g);
    g->no_grad = saved_ng;
    if (owned) kd_free(hw);
    return rc;
}

/* All-reduce a gradient over ranks, add its Σ g² to *ss and check that it is finite. */
static int grad_ready(kd_lean *l, int i, float *grad, const kd_dist *dist, int64_t t, double *ss, kd_err *err) {
    const kd_tensor *p = l->m.params[i];
    if (dist && kd_dist_allreduce_sum_f32(dist, grad, p->n, err)) return -1;
    double s = sum_sq(grad, p->n);
    if (!isfinite(s))
        return kd_errf(err, "step %lld: the gradient of '%s' is not finite; stopping (the last checkpoint is intact)",
                       (long long)t, p->name);
    *ss += s;
    return 0;
}

static void scale(float *x, int64_t n, float f) {
#pragma omp parallel for if (n > 65536)
    for (int64_t j = 0; j < n; j++) x[j] *= f;
}

/*
 * The backward walk over the layers, from the last to the first, starting from
 * dx = dL/dx_L: recompute layer li on a fresh tape from its saved input, back-
 * propagate, all-reduce and measure its gradients (Σ g² into *ss), and with
 * upd apply the update at clip factor cs. On return dx = dL/dx_0.
 */
static int walk(kd_lean *l, kd_graph *g, int64_t B, int64_t T, int upd, float cs, float lr, int64_t t,
                const kd_dist *dist, double *ss, kd_err *err) {
    const int64_t N = B * T, C = l->m.cfg.hidden_size;
    for (int64_t li = l->m.cfg.num_hidden_layers - 1; li >= 0; li--) {
        layer_in(l, li, 1);
        kd_graph_reset(g);
        kd_tensor *x = leaf(g, l->saved + li * N * C, B, T, C, 1);
        kd_tensor *y = kd_model_block(g, &l->m, li, x, l->pos);
        kd_graph_backward_from(g, y, l->dx);
        memcpy(l->dx, kd_grad(g, x), (size_t)(N * C) * sizeof(float));
        kd_graph_reset(g);
        for (int k = 1; k <= 9; k++) {
            int i = (int)(9 * li) + k;
            if (grad_ready(l, i, l->m.params[i]->grad, dist, t, ss, err)) {
                layer_out(l, li);
                return -1;
            }
            if (upd && apply(l, i, l->m.params[i]->grad, cs, lr, t, dist, err)) {
                layer_out(l, li);
                return -1;
            }
        }
        layer_out(l, li);
    }
    return 0;
}

static float clip_factor(double grad_clip, double norm) {
    return grad_clip > 0 && norm > grad_clip ? (float)(grad_clip / (norm + 1e-6)) : 1.0f;
}

int kd_lean_step(kd_lean *l, kd_graph *g, const int32_t *tokens, int64_t B, int64_t T, const kd_loss_batch *b,
                 const kd_loss_opts *lo, float lr, double grad_clip, const kd_dist *dist, kd_lean_result *res,
                 kd_err *err) {
    memset(res, 0, sizeof *res);
    const kd_config *c = &l->m.cfg;
    const int64_t N = B * T, C = c->hidden_size, V = c->vocab_size, L = c->num_hidden_layers;
    const int64_t t = l->step + 1;
    const int tied = l->m.lm_head == NULL, exact = l->o.exact_clip;
    const int i_norm = l->m.n_params - (tied ? 1 : 2), i_head = tied ? 0 : l->m.n_params - 1;
    if (l->o.shard_world > 1 && (!dist || dist->world != l->o.shard_world || dist->rank != l->o.shard_rank))
        return kd_errf(err, "lean optimizer state sharded over %d ranks (this is shard %d), but this process is rank %d "
                            "of %d", l->o.shard_world, l->o.shard_rank, dist ? dist->rank : 0, dist ? dist->world : 1);
    /* the global token count scales this rank's mean-loss gradients into the global mean */
    int64_t cnt[1] = {0};
    for (int64_t n = 0; n < N; n++) cnt[0] += b->labels[n] != KD_IGNORE_INDEX;
    const int64_t n_local = cnt[0];
    if (dist && kd_dist_allreduce_sum_i64(dist, cnt, 1, err)) return -1;
    const float f = cnt[0] > 0 && cnt[0] != n_local ? (float)((double)n_local / (double)cnt[0]) : 1.0f;

    if (forward(l, g, tokens, B, T, err)) return -1;

    /* ---- loss phase: FP32 head + dense gradient, final norm, dL/dx_L ---- */
    kd_tensor *head = kd_model_head(&l->m), *norm = l->m.norm;
    int owned;
    float *hw = head_f32(l, &owned, err), *eg = NULL;
    float *hg = hw ? kd_calloc((size_t)(V * C) * sizeof(float), err) : NULL;
    float *ng = hg ? kd_calloc((size_t)C * sizeof(float), err) : NULL;
    if (!ng) {
        if (owned) kd_free(hw);
        kd_free(hg);
        return kd_err_prefix(err, "lean mode: FP32 LM head and its gradient (%.2f GiB)",
                             2.0 * (double)(V * C) * 4 / (1 << 30));
    }
    head->data = hw;
    head->grad = hg;
    norm->data = l->p[i_norm].w;   /* 1-D: FP32 storage */
    norm->grad = ng;
    kd_graph_reset(g);
    g->no_grad = 0;
    kd_tensor *xL = leaf(g, l->saved + L * N * C, B, T, C, 1);
    kd_tensor *h = kd_rmsnorm(g, xL, norm, (float)c->rms_norm_eps);
    kd_loss_opts o = *lo;
    o.grad_into_params = 1;
    kd_tensor *loss = kd_distill_loss(g, h, head, b, &o, &res->st, err);
    int rc = -1;
    if (!loss) {
        kd_err_prefix(err, "step %lld", (long long)t);
        goto fail;
    }
    const kd_loss_stats *s = &res->st;
    double nv = (double)s->n_valid;
    res->sums[0] = s->loss * nv;
    res->sums[1] = s->ce * nv;
    res->sums[2] = s->kl * nv;
    res->sums[3] = (double)s->top1_agree;
    res->sums[4] = nv;
    if (dist && kd_dist_allreduce_sum_f64(dist, res->sums, 5, err)) goto fail;
    double gl = res->sums[4] > 0 ? res->sums[0] / res->sums[4] : 0.0;
    if (!isfinite(gl)) {
        kd_errf(err, "step %lld: the loss is %s; stopping (the last checkpoint is intact)", (long long)t,
                isnan(gl) ? "NaN" : "infinite");
        goto fail;
    }
    if (s->n_valid > 0) kd_graph_backward(g, loss);
    if (xL->grad) memcpy(l->dx, xL->grad, (size_t)(N * C) * sizeof(float));
    else memset(l->dx, 0, (size_t)(N * C) * sizeof(float));
    kd_graph_reset(g);
    if (owned) kd_free(hw);
    hw = NULL;
    head->data = norm->data = NULL;
    if (f != 1.0f) {
        scale(l->dx, N * C, f);
        scale(ng, C, f);
        scale(hg, V * C, f);
    }
    if (tied) eg = hg;   /* the embedding rows' gradients join the head's */
    double ss = 0.0;
    float cs;
    if (!tied && exact && !(eg = kd_calloc((size_t)(V * C) * sizeof(float), err))) {
        kd_err_prefix(err, "lean mode: embedding gradient");
        goto fail;
    }
    if (exact) {
        /* first walk: every gradient's norm, nothing changes; then the true clip factor */
        memcpy(l->dx_top, l->dx, (size_t)(N * C) * sizeof(float));
        if (grad_ready(l, i_norm, ng, dist, t, &ss, err) || (!tied && grad_ready(l, i_head, hg, dist, t, &ss, err)) ||
            walk(l, g, B, T, 0, 1.0f, lr, t, dist, &ss, err))
            goto fail;
        kd_embedding_backward(eg, l->dx, tokens, N, C);
        if (grad_ready(l, 0, eg, dist, t, &ss, err)) goto fail;
        res->grad_norm = sqrt(ss);
        cs = clip_factor(grad_clip, res->grad_norm);
        if (apply(l, i_norm, ng, cs, lr, t, dist, err) || (!tied && apply(l, i_head, hg, cs, lr, t, dist, err)))
            goto fail;
        memcpy(l->dx, l->dx_top, (size_t)(N * C) * sizeof(float));
        double ss2 = 0.0;   /* second walk: the same gradients again, now applied */
        if (walk(l, g, B, T, 1, cs, lr, t, dist, &ss2, err) || apply(l, 0, eg, cs, lr, t, dist, err)) goto fail;
    } else {
        /* one walk, clipping with the previous step's norm; each gradient is applied when complete */
        cs = clip_factor(grad_clip, l->last_grad_norm);
        if (grad_ready(l, i_norm, ng, dist, t, &ss, err) || apply(l, i_norm, ng, cs, lr, t, dist, err)) goto fail;
        if (!tied) {
            if (grad_ready(l, i_head, hg, dist, t, &ss, err) || apply(l, i_head, hg, cs, lr, t, dist, err)) goto fail;
            kd_free(hg);
            hg = NULL;
        }
        if (walk(l, g, B, T, 1, cs, lr, t, dist, &ss, err)) goto fail;
        if (!tied && !(eg = kd_calloc((size_t)(V * C) * sizeof(float), err))) {
            kd_err_prefix(err, "lean mode: embedding gradient");
            goto fail;
        }
        kd_embedding_backward(eg, l->dx, tokens, N, C);
        if (grad_ready(l, 0, eg, dist, t, &ss, err) || apply(l, 0, eg, cs, lr, t, dist, err)) goto fail;
        res->grad_norm = sqrt(ss);
    }
    res->clip_scale = cs;
    l->last_grad_norm = res->grad_norm;
    l->step = t;
    rc = 0;
fail:
    kd_graph_reset(g);
    head->data = head->grad = norm->data = norm->grad = NULL;
    if (owned) kd_free(hw);
    if (eg != hg) kd_free(eg);
    kd_free(hg);
    kd_free(ng);
    return rc;
}
