/*
 * ops_basic.c — elementwise ops, reductions and the embedding lookup.
 */
#include <omp.h>
#include <string.h>

#include "autograd/kd_kernels.h"
#include "autograd/kd_ops.h"

static void check_same(const char *op, const kd_tensor *a, const kd_tensor *b) {
    int same = a->ndim == b->ndim;
    for (int i = 0; same && i < a->ndim; i++) same = a->shape[i] == b->shape[i];
    if (!same) {
        char sa[64], sb[64];
        kd_panic("%s: shapes differ: %s vs %s", op, kd_shape_str(a, sa, sizeof sa), kd_shape_str(b, sb, sizeof sb));
    }
}

/* ---- add: y = a + b ------------------------------------------------------- */
static void add_backward(kd_graph *g, kd_node *nd) {
    const float *dy = nd->out->grad;
    int64_t n = nd->out->n;
    for (int k = 0; k < 2; k++) {
        kd_tensor *in = nd->in[k];
        if (!in->requires_grad) continue;
        float *d = kd_grad(g, in);
#pragma omp parallel for simd if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] += dy[i];
    }
}

kd_tensor *kd_add(kd_graph *g, kd_tensor *a, kd_tensor *b) {
    check_same("add", a, b);
    kd_tensor *y = kd_tensor_new(g, a->ndim, a->shape, "add");
    int64_t n = a->n;
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) y->data[i] = a->data[i] + b->data[i];
    kd_graph_record(g, "add", add_backward, y, a, b, NULL);
    return y;
}

/* ---- mul: y = a ⊙ b --------------------------------------------------------- */
static void mul_backward(kd_graph *g, kd_node *nd) {
    const float *dy = nd->out->grad;
    kd_tensor *a = nd->in[0], *b = nd->in[1];
    int64_t n = nd->out->n;
    if (a->requires_grad) {
        float *da = kd_grad(g, a);
#pragma omp parallel for simd if (n > 65536)
        for (int64_t i = 0; i < n; i++) da[i] += dy[i] * b->data[i];
    }
    if (b->requires_grad) {
        float *db = kd_grad(g, b);
#pragma omp parallel for simd if (n > 65536)
        for (int64_t i = 0; i < n; i++) db[i] += dy[i] * a->data[i];
    }
}

kd_tensor *kd_mul(kd_graph *g, kd_tensor *a, kd_tensor *b) {
    check_same("mul", a, b);
    kd_tensor *y = kd_tensor_new(g, a->ndim, a->shape, "mul");
    int64_t n = a->n;
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) y->data[i] = a->data[i] * b->data[i];
    kd_graph_record(g, "mul", mul_backward, y, a, b, NULL);
    return y;
}

/* ---- scale: y = s·a ------------------------------------------------------------ */
typedef struct { float s; } scale_ctx;

static void scale_backward(kd_graph *g, kd_node *nd) {
    float s = ((scale_ctx *)nd->ctx)->s;
    float *da = kd_grad(g, nd->in[0]);
    const float *dy = nd->out->grad;
    for (int64_t i = 0; i < nd->out->n; i++) da[i] += s * dy[i];
}

kd_tensor *kd_scale(kd_graph *g, kd_tensor *a, float s) {
    kd_tensor *y = kd_tensor_new(g, a->ndim, a->shape, "scale");
    for (int64_t i = 0; i < a->n; i++) y->data[i] = s * a->data[i];
    kd_node *nd = kd_graph_record(g, "scale", scale_backward, y, a, NULL, NULL);
    if (nd) {
        scale_ctx *c = kd_graph_alloc(g, sizeof *c);
        c->s = s;
        nd->ctx = c;
    }
    return y;
}

/* ---- sum / mean: y[1] = Σ a (· 1/n for mean); accumulated in double ------------- */
static void reduce_backward(kd_graph *g, kd_node *nd) {
    kd_tensor *a = nd->in[0];
    float s = nd->out->grad[0] * ((scale_ctx *)nd->ctx)->s;
    float *da = kd_grad(g, a);
    for (int64_t i = 0; i < a->n; i++) da[i] += s;
}

static kd_tensor *reduce(kd_graph *g, kd_tensor *a, int mean) {
    int64_t one = 1;
    kd_tensor *y = kd_tensor_new(g, 1, &one, mean ? "mean" : "sum");
    double acc = 0.0;
    for (int64_t i = 0; i < a->n; i++) acc += a->data[i];
    float s = mean ? 1.0f / (float)a->n : 1.0f;
    y->data[0] = (float)(mean ? acc / (double)a->n : acc);
    kd_node *nd = kd_graph_record(g, y->name, reduce_backward, y, a, NULL, NULL);
    if (nd) {
        scale_ctx *c = kd_graph_alloc(g, sizeof *c);
        c->s = s;
        nd->ctx = c;
    }
    return y;
}

kd_tensor *kd_sum(kd_graph *g, kd_tensor *a) { return reduce(g, a, 0); }
kd_tensor *kd_mean(kd_graph *g, kd_tensor *a) { return reduce(g, a, 1); }

/* ---- embedding: out[N, C] = W[ids[n], :] ------------------------------------------- */
typedef struct { const int32_t *ids; } embed_ctx;

void kd_embedding_backward(float *dw, const float *dy, const int32_t *ids, int64_t N, int64_t C) {
    /* Scatter-add. Threads own disjoint column ranges, so repeated ids never race. */
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t c0 = C * t / nt, c1 = C * (t + 1) / nt;
        for (int64_t n = 0; n < N; n++) {
            float *row = dw + (int64_t)ids[n] * C;
            const float *src = dy + n * C;
            for (int64_t c = c0; c < c1; c++) row[c] += src[c];
        }
    }
}

static void embedding_backward(kd_graph *g, kd_node *nd) {
    kd_tensor *w = nd->in[0];
    const int32_t *ids = ((embed_ctx *)nd->ctx)->ids;
    kd_embedding_backward(kd_grad(g, w), nd->out->grad, ids, kd_rows(nd->out), kd_last_dim(w));
}

kd_tensor *kd_embedding(kd_graph *g, kd_tensor *w, const int32_t *ids, int64_t B, int64_t T) {
    int64_t V = w->shape[0], C = kd_last_dim(w), N = B > 0 ? B * T : T;
    if (w->ndim != 2) kd_panic("embedding: weight must be 2-D [V, C]");
    for (int64_t n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= V)
            kd_panic("embedding: token id %d at position %lld outside the vocabulary [0, %lld)", ids[n],
                     (long long)n, (long long)V);
    kd_tensor *y;
    if (B > 0) {
        int64_t s[3] = {B, T, C};
        y = kd_tensor_new(g, 3, s, "embedding");
    } else {
        y = kd_tensor_new2(g, N, C, "embedding");
    }
#pragma omp parallel for if (N * C > 65536)
    for (int64_t n = 0; n < N; n++) memcpy(y->data + n * C, w->data + (int64_t)ids[n] * C, (size_t)C * sizeof(float));
    kd_node *nd = kd_graph_record(g, "embedding", embedding_backward, y, w, NULL, NULL);
    if (nd) {
        embed_ctx *c = kd_graph_alloc(g, sizeof *c);
        int32_t *copy = kd_graph_alloc(g, (size_t)N * sizeof *copy);
        memcpy(copy, ids, (size_t)N * sizeof *copy);
        c->ids = copy;
        nd->ctx = c;
    }
    return y;
}
