/*
 * ops_norm.c — RMSNorm and SwiGLU (row-wise and elementwise layers).
 */
#include <math.h>
#include <omp.h>

#include "autograd/kd_kernels.h"
#include "autograd/kd_ops.h"

/* ---- RMSNorm -----------------------------------------------------------------
 * x [N, C], w [C]:  rstd[n] = 1/sqrt(mean_c x² + eps),  y = x·rstd ⊙ w
 * backward: with g = dy ⊙ w,
 *   dx = rstd·(g − x·rstd²·mean_c(g ⊙ x)),   dw += Σ_n dy ⊙ x·rstd          */
void kd_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps) {
#pragma omp parallel for if (N * C > 16384)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * C;
        float *yr = y + n * C;
        double ss = 0.0;
        for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        float r = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
        for (int64_t c = 0; c < C; c++) yr[c] = xr[c] * r * w[c];
        if (rstd) rstd[n] = r;
    }
}

void kd_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                         const float *rstd, int64_t N, int64_t C) {
    if (dx) {
#pragma omp parallel for if (N * C > 16384)
        for (int64_t n = 0; n < N; n++) {
            const float *xr = x + n * C, *dyr = dy + n * C;
            float r = rstd[n];
            double dot = 0.0;
            for (int64_t c = 0; c < C; c++) dot += (double)dyr[c] * w[c] * xr[c];
            float k = (float)(dot / (double)C) * r * r;
            float *dxr = dx + n * C;
            for (int64_t c = 0; c < C; c++) dxr[c] += r * (dyr[c] * w[c] - xr[c] * k);
        }
    }
    if (dw) {
        /* Threads own column ranges: no races, deterministic order over n. */
#pragma omp parallel
        {
#ifdef _OPENMP
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
#else
            int nt = 1, t = 0;
#endif
            int64_t c0 = C * t / nt, c1 = C * (t + 1) / nt;
            for (int64_t n = 0; n < N; n++) {
                const float *xr = x + n * C, *dyr = dy + n * C;
                float r = rstd[n];
                for (int64_t c = c0; c < c1; c++) dw[c] += dyr[c] * xr[c] * r;
            }
        }
    }
}

typedef struct { float *rstd; } rms_ctx;

static void rmsnorm_backward(kd_graph *g, kd_node *nd) {
    kd_tensor *x = nd->in[0], *w = nd->in[1];
    int64_t C = kd_last_dim(x), N = kd_rows(x);
    kd_rmsnorm_backward(x->requires_grad ? kd_grad(g, x) : NULL, w->requires_grad ? kd_grad(g, w) : NULL,
                        nd->out->grad, x->data, w->data, ((rms_ctx *)nd->ctx)->rstd, N, C);
}

kd_tensor *kd_rmsnorm(kd_graph *g, kd_tensor *x, kd_tensor *w, float eps) {
    int64_t C = kd_last_dim(x), N = kd_rows(x);
    if (w->n != C) kd_panic("rmsnorm: weight has %lld elements, input rows have %lld", (long long)w->n, (long long)C);
    kd_tensor *y = kd_tensor_new(g, x->ndim, x->shape, "rmsnorm");
    float *rstd = kd_graph_alloc(g, (size_t)N * sizeof(float));
    kd_rmsnorm_forward(y->data, rstd, x->data, w->data, N, C, eps);
    kd_node *nd = kd_graph_record(g, "rmsnorm", rmsnorm_backward, y, x, w, NULL);
    if (nd) {
        rms_ctx *c = kd_graph_alloc(g, sizeof *c);
        c->rstd = rstd;
        nd->ctx = c;
    }
    return y;
}

/* ---- SwiGLU: y = silu(g) ⊙ u, silu(g) = g·σ(g) ---------------------------------
 * backward: du = dy·silu(g),  dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))                   */
void kd_swiglu_forward(float *y, const float *g, const float *u, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        y[i] = g[i] * s * u[i];
    }
}

void kd_swiglu_backward(float *dg, float *du, const float *dy, const float *g, const float *u, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        if (du) du[i] += dy[i] * g[i] * s;
        if (dg) dg[i] += dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

static void swiglu_backward(kd_graph *g, kd_node *nd) {
    kd_tensor *gt = nd->in[0], *u = nd->in[1];
    kd_swiglu_backward(gt->requires_grad ? kd_grad(g, gt) : NULL, u->requires_grad ? kd_grad(g, u) : NULL,
                       nd->out->grad, gt->data, u->data, nd->out->n);
}

kd_tensor *kd_swiglu(kd_graph *g, kd_tensor *gate, kd_tensor *up) {
    if (gate->n != up->n) kd_panic("swiglu: gate has %lld elements, up %lld", (long long)gate->n, (long long)up->n);
    kd_tensor *y = kd_tensor_new(g, gate->ndim, gate->shape, "swiglu");
    kd_swiglu_forward(y->data, gate->data, up->data, y->n);
    kd_graph_record(g, "swiglu", swiglu_backward, y, gate, up, NULL);
    return y;
}
