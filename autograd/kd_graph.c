/*
 * kd_graph.c — parameters, activation tensors and the backward pass of the
 * tape (see kd_tensor.h).
 */
#include "autograd/kd_tensor.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_log.h"

_Noreturn void kd_panic(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kd_vfatal(fmt, ap);
}

const char *kd_shape_str(const kd_tensor *t, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

static int64_t shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static void set_shape(kd_tensor *t, int ndim, const int64_t *shape) {
    if (ndim < 1 || ndim > KD_MAX_DIMS) kd_panic("tensor '%s': %d dimensions (1..4 allowed)", t->name, ndim);
    t->ndim = ndim;
    for (int i = 0; i < KD_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0) kd_panic("tensor '%s': dimension %d is %lld", t->name, i, (long long)shape[i]);
    t->n = shape_numel(ndim, shape);
}

static kd_tensor *param_new(const char *name, int ndim, const int64_t *shape, int with_grad, kd_err *err) {
    kd_tensor *p = calloc(1, sizeof *p);
    if (!p) {
        kd_errf(err, "out of memory allocating parameter '%s'", name);
        return NULL;
    }
    snprintf(p->name, sizeof p->name, "%s", name);
    if (ndim < 1 || ndim > KD_MAX_DIMS) {
        free(p);
        kd_errf(err, "parameter '%s': %d dimensions (1..4 allowed)", name, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0) {
            free(p);
            kd_errf(err, "parameter '%s': dimension %d is %lld", name, i, (long long)shape[i]);
            return NULL;
        }
    set_shape(p, ndim, shape);
    p->data = kd_calloc((size_t)p->n * sizeof(float), err);
    p->grad = p->data && with_grad ? kd_calloc((size_t)p->n * sizeof(float), err) : NULL;
    if (!p->data || (with_grad && !p->grad)) {
        kd_free(p->data);
        free(p);
        return NULL;
    }
    p->requires_grad = with_grad;
    p->is_param = 1;
    return p;
}

kd_tensor *kd_param_new(const char *name, int ndim, const int64_t *shape, kd_err *err) {
    return param_new(name, ndim, shape, 1, err);
}

kd_tensor *kd_param_new_nograd(const char *name, int ndim, const int64_t *shape, kd_err *err) {
    return param_new(name, ndim, shape, 0, err);
}

void kd_param_free(kd_tensor *p) {
    if (!p) return;
    kd_free(p->data);
    kd_free(p->grad);
    free(p);
}

void kd_param_zero_grad(kd_tensor *p) {
    if (p->grad) memset(p->grad, 0, (size_t)p->n * sizeof(float));
}

int kd_graph_init(kd_graph *g, size_t arena_bytes, kd_err *err) {
    memset(g, 0, sizeof *g);
    return kd_arena_init(&g->arena, arena_bytes, err);
}

void kd_graph_free(kd_graph *g) {
    kd_arena_free(&g->arena);
    free(g->nodes);
    memset(g, 0, sizeof *g);
}

void kd_graph_reset(kd_graph *g) {
    g->n_nodes = 0;
    kd_arena_reset(&g->arena);
}

void *kd_graph_alloc(kd_graph *g, size_t bytes) {
    kd_err err;
    void *p = kd_arena_alloc(&g->arena, bytes, &err);
    if (!p) kd_panic("activation arena: %s (arena holds %zu bytes this step)", err.msg, g->arena.used);
    return p;
}

kd_tensor *kd_tensor_new(kd_graph *g, int ndim, const int64_t *shape, const char *name) {
    kd_tensor *t = kd_graph_alloc(g, sizeof *t);
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    set_shape(t, ndim, shape);
    t->data = kd_graph_alloc(g, (size_t)t->n * sizeof(float));
    return t;
}

kd_tensor *kd_tensor_new2(kd_graph *g, int64_t d0, int64_t d1, const char *name) {
    int64_t s[2] = {d0, d1};
    return kd_tensor_new(g, 2, s, name);
}

float *kd_grad(kd_graph *g, kd_tensor *t) {
    /* a frozen parameter's gradient would land in the arena and dangle after reset */
    if (t->is_param && !t->requires_grad)
        kd_panic("backward: parameter '%s' has no gradient (loaded for inference)", t->name);
    if (!t->grad) {
        t->grad = kd_graph_alloc(g, (size_t)t->n * sizeof(float));
        memset(t->grad, 0, (size_t)t->n * sizeof(float));
    }
    return t->grad;
}

kd_node *kd_graph_record(kd_graph *g, const char *op, kd_backward_fn bw, kd_tensor *out,
                         kd_tensor *a, kd_tensor *b, kd_tensor *c) {
    int need = (a && a->requires_grad) || (b && b->requires_grad) || (c && c->requires_grad);
    out->requires_grad = need && !g->no_grad;
    if (!out->requires_grad) return NULL;
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 256;
        kd_node *nn = realloc(g->nodes, (size_t)cap * sizeof *nn);
        if (!nn) kd_panic("out of memory growing the tape to %d nodes", cap);
        g->nodes = nn;
        g->cap_nodes = cap;
    }
    kd_node *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = bw;
    n->out = out;
    n->in[0] = a;
    n->in[1] = b;
    n->in[2] = c;
    return n;
}

void kd_graph_backward_from(kd_graph *g, kd_tensor *out, const float *out_grad) {
    if (!out->requires_grad) return;
    float *d = kd_grad(g, out);
    for (int64_t i = 0; i < out->n; i++) d[i] += out_grad ? out_grad[i] : 1.0f;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        kd_node *n = &g->nodes[i];
        if (!n->out->grad) continue;          /* no gradient reached this node */
        n->backward(g, n);
    }
}

void kd_graph_backward(kd_graph *g, kd_tensor *loss) {
    if (loss->n != 1) {
        char buf[64];
        kd_panic("backward: loss must be a scalar, got shape %s", kd_shape_str(loss, buf, sizeof buf));
    }
    kd_graph_backward_from(g, loss, NULL);
}
