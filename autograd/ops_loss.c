/*
 * ops_loss.c — log-softmax cross-entropy with an ignore index.
 *
 * logits [N, V], targets[N]. With lse_n = log Σ_v exp z_nv:
 *   L = (1/N_valid) Σ_{n valid} (lse_n − z_n,y_n)
 *   dz_nv = dL · (softmax(z_n)_v − [v = y_n]) / N_valid   (0 for ignored rows)
 * The distillation loss (train/) is the chunked, fused generalisation of this.
 */
#include <math.h>
#include <string.h>

#include "autograd/kd_kernels.h"
#include "autograd/kd_ops.h"

float kd_logsumexp(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) return m;
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += expf(x[i] - m);
    return m + logf(s);
}

typedef struct { float *lse; int32_t *targets; int32_t ignore; int64_t n_valid; } ce_ctx;

static void ce_backward(kd_graph *g, kd_node *nd) {
    ce_ctx *c = nd->ctx;
    kd_tensor *z = nd->in[0];
    int64_t V = kd_last_dim(z), N = kd_rows(z);
    if (c->n_valid == 0) return;
    float s = nd->out->grad[0] / (float)c->n_valid;
    float *dz = kd_grad(g, z);
#pragma omp parallel for if (N * V > 65536)
    for (int64_t n = 0; n < N; n++) {
        if (c->targets[n] == c->ignore) continue;
        const float *zr = z->data + n * V;
        float *dr = dz + n * V;
        for (int64_t v = 0; v < V; v++) dr[v] += s * expf(zr[v] - c->lse[n]);
        dr[c->targets[n]] -= s;
    }
}

kd_tensor *kd_cross_entropy(kd_graph *g, kd_tensor *logits, const int32_t *targets, int32_t ignore_index) {
    int64_t V = kd_last_dim(logits), N = kd_rows(logits);
    int64_t n_valid = 0;
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] == ignore_index) continue;
        if (targets[n] < 0 || targets[n] >= V)
            kd_panic("cross_entropy: target %d at row %lld outside [0, %lld)", targets[n], (long long)n, (long long)V);
        n_valid++;
    }
    float *lse = kd_graph_alloc(g, (size_t)N * sizeof(float));
#pragma omp parallel for if (N * V > 65536)
    for (int64_t n = 0; n < N; n++) lse[n] = kd_logsumexp(logits->data + n * V, V);
    double total = 0.0;   /* in row order: the same bits whatever the thread count */
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != ignore_index) total += (double)lse[n] - (double)logits->data[n * V + targets[n]];
    int64_t one = 1;
    kd_tensor *y = kd_tensor_new(g, 1, &one, "cross_entropy");
    y->data[0] = n_valid ? (float)(total / (double)n_valid) : 0.0f;
    kd_node *nd = kd_graph_record(g, "cross_entropy", ce_backward, y, logits, NULL, NULL);
    if (nd) {
        ce_ctx *c = kd_graph_alloc(g, sizeof *c);
        c->lse = lse;
        c->targets = kd_graph_alloc(g, (size_t)N * sizeof(int32_t));
        memcpy(c->targets, targets, (size_t)N * sizeof(int32_t));
        c->ignore = ignore_index;
        c->n_valid = n_valid;
        nd->ctx = c;
    }
    return y;
}
