/*
 * ops_matmul.c — matrix products through CBLAS (OpenBLAS).
 *
 * C[M,N] = op(A)[M,K] · op(B)[K,N]. Backward, with dC the gradient of C:
 *   d op(A) = dC · op(B)ᵀ      d op(B) = op(A)ᵀ · dC
 * and for a transposed operand the stored gradient is the transpose of that.
 */

#include "core/kd_linalg.h"
#include "autograd/kd_ops.h"

typedef struct { int ta, tb; int64_t M, N, K; } mm_ctx;

/* C = α·op(A)·op(B) + β·C for row-major arrays with their natural leading dims. */
static void gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B, float *C,
                 float beta) {
    kd_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

static void matmul_backward(kd_graph *g, kd_node *nd) {
    mm_ctx *c = nd->ctx;
    kd_tensor *a = nd->in[0], *b = nd->in[1];
    const float *dC = nd->out->grad;
    int64_t M = c->M, N = c->N, K = c->K;
    if (a->requires_grad) {
        float *dA = kd_grad(g, a);
        if (!c->ta) /* dA[M,K] = dC[M,N] · op(B)ᵀ[N,K]; op(B)ᵀ is B (tb) or Bᵀ */
            gemm(0, !c->tb, M, K, N, dC, b->data, dA, 1.0f);
        else        /* dA[K,M] = op(B)[K,N] · dCᵀ[N,M] */
            gemm(c->tb, 1, K, M, N, b->data, dC, dA, 1.0f);
    }
    if (b->requires_grad) {
        float *dB = kd_grad(g, b);
        if (!c->tb) /* dB[K,N] = op(A)ᵀ[K,M] · dC[M,N] */
            gemm(!c->ta, 0, K, N, M, a->data, dC, dB, 1.0f);
        else        /* dB[N,K] = dCᵀ[N,M] · op(A)[M,K] */
            gemm(1, c->ta, N, K, M, dC, a->data, dB, 1.0f);
    }
}

static kd_tensor *matmul_impl(kd_graph *g, kd_tensor *a, kd_tensor *b, int ta, int tb, int64_t M, int64_t K,
                              int out_ndim, const int64_t *out_shape, const char *op) {
    int64_t N = tb ? b->shape[0] : b->shape[1];
    int64_t Kb = tb ? b->shape[1] : b->shape[0];
    if (b->ndim != 2 || Kb != K) {
        char sa[64], sb[64];
        kd_panic("%s: inner dimensions differ: %s%s · %s%s", op, kd_shape_str(a, sa, sizeof sa), ta ? "ᵀ" : "",
                 kd_shape_str(b, sb, sizeof sb), tb ? "ᵀ" : "");
    }
    int64_t shape[KD_MAX_DIMS];
    for (int i = 0; i < out_ndim - 1; i++) shape[i] = out_shape[i];
    shape[out_ndim - 1] = N;
    kd_tensor *y = kd_tensor_new(g, out_ndim, shape, op);
    gemm(ta, tb, M, N, K, a->data, b->data, y->data, 0.0f);
    kd_node *nd = kd_graph_record(g, op, matmul_backward, y, a, b, NULL);
    if (nd) {
        mm_ctx *c = kd_graph_alloc(g, sizeof *c);
        *c = (mm_ctx){ta, tb, M, N, K};
        nd->ctx = c;
    }
    return y;
}

kd_tensor *kd_matmul(kd_graph *g, kd_tensor *a, kd_tensor *b, int trans_a, int trans_b) {
    if (a->ndim != 2) kd_panic("matmul: A must be 2-D");
    int64_t M = trans_a ? a->shape[1] : a->shape[0];
    int64_t K = trans_a ? a->shape[0] : a->shape[1];
    int64_t shape[2] = {M, 0};
    return matmul_impl(g, a, b, trans_a, trans_b, M, K, 2, shape, "matmul");
}

kd_tensor *kd_linear(kd_graph *g, kd_tensor *x, kd_tensor *w) {
    /* x [..., in] viewed as [M, in]; w [out, in]; y [..., out]. */
    return matmul_impl(g, x, w, 0, 1, kd_rows(x), kd_last_dim(x), x->ndim, x->shape, "linear");
}
