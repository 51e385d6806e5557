/*
 * ops_rope.c — rotary position embeddings.
 *
 * For head dimension D and pair index i < D/2, the angle at position p is
 * θ_i = p · inv_freq[i], with inv_freq[i] = theta^(−2i/D) for plain RoPE (the
 * scaled RoPE types divide it per dimension: student/kd_config.h computes the
 * table of a config), and each pair (a, b) is rotated:
 *     a' = a·cos θ − b·sin θ,   b' = a·sin θ + b·cos θ.
 * Two conventions pick which elements form a pair (docs/gguf.md#rope-layout-of-q-and-k):
 *   KD_ROPE_HALF  (Hugging Face rotate_half, used by kd checkpoints): (i, i + D/2)
 *   KD_ROPE_PAIRS (GGUF / llama2.c / ggml "norm"):                    (2i, 2i + 1)
 * A checkpoint's q/k rows convert between them by a permutation of rows per head
 * (kd_rope_permute_rows, student/kd_llama2c.h).
 * The rotation is orthogonal, so backward rotates the gradient by −θ.
 */
#include <math.h>

#include "autograd/kd_kernels.h"
#include "autograd/kd_ops.h"

void kd_rope_table_inv(float *cos_t, float *sin_t, const int32_t *pos, int64_t n_pos, int64_t D,
                       const double *inv_freq) {
    int64_t half = D / 2;
    for (int64_t t = 0; t < n_pos; t++)
        for (int64_t i = 0; i < half; i++) {
            double ang = (double)pos[t] * inv_freq[i];
            cos_t[t * half + i] = (float)cos(ang);
            sin_t[t * half + i] = (float)sin(ang);
        }
}

void kd_rope_inv_freq_default(double *inv_freq, int64_t D, double theta) {
    for (int64_t i = 0; i < D / 2; i++) inv_freq[i] = pow(theta, -2.0 * (double)i / (double)D);
}

void kd_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int64_t n_pos, int64_t D, float theta) {
    double inv[4096];   /* D ≤ 8192 (kd_config_validate bounds head_dim by 4096) */
    if (D / 2 > 4096) kd_panic("rope: head dimension %lld too large", (long long)D);
    kd_rope_inv_freq_default(inv, D, (double)theta);
    kd_rope_table_inv(cos_t, sin_t, pos, n_pos, D, inv);
}

void kd_rope_apply(float *x, const float *cos_t, const float *sin_t, int64_t B, int64_t T, int64_t H,
                   int64_t D, int conv, int inverse) {
    int64_t half = D / 2;
    float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) if (B * T * H * D > 65536)
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t h = 0; h < H; h++) {
            const float *c = cos_t + (r % T) * half, *s = sin_t + (r % T) * half;
            float *xh = x + (r * H + h) * D;
            for (int64_t i = 0; i < half; i++) {
                int64_t ia = conv == KD_ROPE_HALF ? i : 2 * i;
                int64_t ib = conv == KD_ROPE_HALF ? i + half : 2 * i + 1;
                float a = xh[ia], b = xh[ib], si = sgn * s[i];
                xh[ia] = a * c[i] - b * si;
                xh[ib] = a * si + b * c[i];
            }
        }
}

typedef struct { float *cos_t, *sin_t; int64_t B, T, H, D; int conv; } rope_ctx;

static void rope_backward(kd_graph *g, kd_node *nd) {
    rope_ctx *c = nd->ctx;
    kd_tensor *x = nd->in[0];
    float *dx = kd_grad(g, x);
    const float *dy = nd->out->grad;
    /* dx += R(−θ)·dy: rotate a copy of dy, then accumulate. */
    float *tmp = kd_graph_alloc(g, (size_t)x->n * sizeof(float));
    for (int64_t i = 0; i < x->n; i++) tmp[i] = dy[i];
    kd_rope_apply(tmp, c->cos_t, c->sin_t, c->B, c->T, c->H, c->D, c->conv, 1);
    for (int64_t i = 0; i < x->n; i++) dx[i] += tmp[i];
}

kd_tensor *kd_rope_inv(kd_graph *g, kd_tensor *x, int64_t H, const int32_t *pos, const double *inv_freq,
                       kd_rope_convention conv) {
    int64_t B = x->ndim == 3 ? x->shape[0] : 1;
    int64_t T = x->ndim == 3 ? x->shape[1] : x->shape[0];
    int64_t HD = kd_last_dim(x);
    if ((x->ndim != 2 && x->ndim != 3) || H <= 0 || HD % H != 0 || (HD / H) % 2 != 0)
        kd_panic("rope: input must be [B, T, H·D] or [T, H·D] with even D; got %lld channels for %lld heads",
                 (long long)HD, (long long)H);
    int64_t D = HD / H;
    float *cos_t = kd_graph_alloc(g, (size_t)(T * D / 2) * sizeof(float));
    float *sin_t = kd_graph_alloc(g, (size_t)(T * D / 2) * sizeof(float));
    kd_rope_table_inv(cos_t, sin_t, pos, T, D, inv_freq);
    kd_tensor *y = kd_tensor_new(g, x->ndim, x->shape, "rope");
    for (int64_t i = 0; i < x->n; i++) y->data[i] = x->data[i];
    kd_rope_apply(y->data, cos_t, sin_t, B, T, H, D, conv, 0);
    kd_node *nd = kd_graph_record(g, "rope", rope_backward, y, x, NULL, NULL);
    if (nd) {
        rope_ctx *c = kd_graph_alloc(g, sizeof *c);
        *c = (rope_ctx){cos_t, sin_t, B, T, H, D, (int)conv};
        nd->ctx = c;
    }
    return y;
}

kd_tensor *kd_rope(kd_graph *g, kd_tensor *x, int64_t H, const int32_t *pos, float theta,
                   kd_rope_convention conv) {
    int64_t HD = kd_last_dim(x);
    int64_t D = H > 0 ? HD / H : 0;
    if (D <= 0) kd_panic("rope: %lld channels for %lld heads", (long long)HD, (long long)H);
    double *inv = kd_graph_alloc(g, (size_t)(D / 2 + 1) * sizeof(double));
    kd_rope_inv_freq_default(inv, D, (double)theta);
    return kd_rope_inv(g, x, H, pos, inv, conv);
}
