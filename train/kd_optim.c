/*
 * kd_optim.c — AdamW, gradient clipping and the warmup + cosine schedule
 * (see kd_optim.h).
 */
#include "train/kd_optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_linalg.h"

kd_adamw_opts kd_adamw_defaults(void) { return (kd_adamw_opts){0.9f, 0.95f, 1e-8f, 0.1f}; }

int kd_adamw_init(kd_adamw *o, kd_tensor **params, int n, int decay_embeddings, kd_err *err) {
    return kd_adamw_init_shard(o, params, n, decay_embeddings, 0, 1, err);
}

int kd_adamw_init_shard(kd_adamw *o, kd_tensor **params, int n, int decay_embeddings, int rank, int world,
                        kd_err *err) {
    memset(o, 0, sizeof *o);
    if (world < 1 || rank < 0 || rank >= world) return kd_errf(err, "AdamW shard %d of %d: no such rank", rank, world);
    o->n = n;
    o->params = params;
    o->shard_rank = rank;
    o->shard_world = world;
    o->m = calloc((size_t)n, sizeof *o->m);
    o->v = calloc((size_t)n, sizeof *o->v);
    o->lo = calloc((size_t)n, sizeof *o->lo);
    o->hi = calloc((size_t)n, sizeof *o->hi);
    o->decay = calloc((size_t)n, 1);
    if (!o->m || !o->v || !o->lo || !o->hi || !o->decay) {
        kd_adamw_free(o);
        return kd_errf(err, "out of memory allocating optimizer state");
    }
    for (int i = 0; i < n; i++) {
        int64_t rows = params[i]->ndim ? params[i]->shape[0] : 1, r0, r1;
        int64_t row = rows ? params[i]->n / rows : 0;
        kd_dist_shard_rows(rows, rank, world, &r0, &r1);
        o->lo[i] = r0 * row;
        o->hi[i] = r1 * row;
        size_t bytes = (size_t)(o->hi[i] - o->lo[i]) * sizeof(float);
        o->m[i] = kd_calloc(bytes, err);
        o->v[i] = o->m[i] ? kd_calloc(bytes, err) : NULL;
        if (!o->v[i]) {
            kd_adamw_free(o);
            return kd_err_prefix(err, "AdamW moments for '%s'", params[i]->name);
        }
        int is_embed = strstr(params[i]->name, "embed_tokens") != NULL;
        o->decay[i] = params[i]->ndim >= 2 && (!is_embed || decay_embeddings);
    }
    return 0;
}

void kd_adamw_free(kd_adamw *o) {
    for (int i = 0; i < o->n; i++) {
        if (o->m) kd_free(o->m[i]);
        if (o->v) kd_free(o->v[i]);
    }
    free(o->m);
    free(o->v);
    free(o->lo);
    free(o->hi);
    free(o->decay);
    memset(o, 0, sizeof *o);
}

void kd_adamw_step(kd_adamw *o, const kd_adamw_opts *opts, float lr) {
    o->step++;
    float b1 = opts->beta1, b2 = opts->beta2;
    float c1 = 1.0f - powf(b1, (float)o->step), c2 = 1.0f - powf(b2, (float)o->step);
    for (int i = 0; i < o->n; i++) {
        kd_tensor *p = o->params[i];
        /* this rank's elements [lo, hi): m[0] and v[0] belong to element lo */
        const int64_t lo = o->lo[i];
        float *m = o->m[i], *v = o->v[i], *w = p->data + lo;
        const float *g = p->grad + lo;
        float wd = o->decay[i] ? opts->weight_decay : 0.0f;
        int64_t n = o->hi[i] - lo;
#pragma omp parallel for simd if (n > 32768)
        for (int64_t j = 0; j < n; j++) {
            m[j] = b1 * m[j] + (1.0f - b1) * g[j];
            v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
            float mh = m[j] / c1, vh = v[j] / c2;
            w[j] -= lr * (mh / (sqrtf(vh) + opts->eps) + wd * w[j]);
        }
    }
}

int kd_adamw_gather(kd_adamw *o, const kd_dist *d, kd_err *err) {
    if (o->shard_world == 1) return 0;
    if (!d || d->world != o->shard_world || d->rank != o->shard_rank)
        return kd_errf(err, "AdamW state sharded over %d ranks, but this process is rank %d of %d", o->shard_world,
                       d ? d->rank : 0, d ? d->world : 1);
    for (int i = 0; i < o->n; i++) {
        kd_tensor *p = o->params[i];
        int64_t rows = p->ndim ? p->shape[0] : 1;
        if (rows && kd_dist_allgather_rows(d, p->data, rows, p->n / rows * (int64_t)sizeof(float), err))
            return kd_err_prefix(err, "gathering '%s'", p->name);
    }
    return 0;
}

int64_t kd_adamw_state_bytes(const kd_adamw *o) {
    int64_t b = 0;
    for (int i = 0; o->lo && i < o->n; i++) b += 2 * (o->hi[i] - o->lo[i]) * (int64_t)sizeof(float);
    return b;
}

double kd_grad_norm(kd_tensor **params, int n) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        ss += kd_sumsq(params[i]->grad, params[i]->n);   /* same bits whatever the thread count */
    }
    return sqrt(ss);
}

double kd_grad_clip(kd_tensor **params, int n, double max_norm) {
    double norm = kd_grad_norm(params, n);
    if (max_norm > 0 && norm > max_norm) {
        float s = (float)(max_norm / (norm + 1e-6));
        for (int i = 0; i < n; i++) {
            float *g = params[i]->grad;
            for (int64_t j = 0; j < params[i]->n; j++) g[j] *= s;
        }
    }
    return norm;
}

float kd_lr_schedule(int64_t step, int64_t warmup, int64_t total, float lr_max, float lr_min) {
    if (warmup > 0 && step < warmup) return lr_max * (float)(step + 1) / (float)warmup;
    if (total <= warmup) return lr_max;
    double t = (double)(step - warmup) / (double)(total - warmup);
    if (t > 1.0) t = 1.0;
    return lr_min + (lr_max - lr_min) * (float)(0.5 * (1.0 + cos(3.14159265358979323846 * t)));
}

/* ---- shards in optimizer-state files ------------------------------------------------ */

int kd_optim_shard_mark(kd_st_writer *w, int rank, int world, kd_err *err) {
    char shard[48];
    snprintf(shard, sizeof shard, "%d/%d", rank, world);
    return world > 1 ? kd_st_writer_set_meta(w, "kd_optimizer_shard", shard, err) : 0;
}

int kd_optim_shard_check(kd_st_file *f, const char *path, int rank, int world, kd_err *err) {
    char want[48];
    snprintf(want, sizeof want, "%d/%d", rank, world);
    const char *has = kd_st_meta(f, "kd_optimizer_shard");
    if (world > 1 ? !has || strcmp(has, want) : has != NULL)
        return kd_errf(err, "%s holds %s%s of the optimizer state, this process needs %s%s", path, has ? "shard " : "",
                       has ? has : "all", world > 1 ? "shard " : "", world > 1 ? want : "all of it");
    return 0;
}
