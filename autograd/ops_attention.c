/*
 * ops_attention.c — fused causal grouped-query attention with an optional
 * sliding window.
 *
 * q [B, T, H·D], k/v [B, T, Hkv·D]; query head h reads key/value head
 * h / (H/Hkv). Query t sees keys s with max(0, t − window + 1) ≤ s ≤ t
 * (window ≤ 0: no window). Scale 1/sqrt(D).
 *
 * Memory: the [T, T] score matrix never exists. Queries are processed in
 * blocks of KD_ATT_BQ rows; a block's scores against its visible keys go to a
 * per-thread scratch of KD_ATT_BQ × T floats (two such for backward). Forward
 * saves only lse[B, H, T], the log-sum-exp of each score row; backward
 * recomputes P = exp(S − lse) block by block (the FlashAttention recipe):
 *     dP = dO·Vᵀ,  Dᵢ = Σ_d dOᵢ·Oᵢ,  dS = P ⊙ (dP − Dᵢ),
 *     dQ = scale·dS·K,  dK += scale·dSᵀ·Q,  dV += Pᵀ·dO.
 * Products go through CBLAS; threads split (batch, head) pairs in forward and
 * (batch, kv-head) pairs in backward, so dK/dV accumulation never races.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/kd_linalg.h"
#include "autograd/kd_kernels.h"
#include "autograd/kd_ops.h"

#define KD_ATT_BQ 64

int64_t kd_attention_scratch(int64_t T, int n_threads) { return (int64_t)n_threads * 2 * KD_ATT_BQ * T; }

/* Key range of query block [i0, i1). */
static inline int64_t block_key_start(int64_t i0, int64_t window) {
    return window > 0 && i0 - window + 1 > 0 ? i0 - window + 1 : 0;
}

/* S[i - i0, s - s0] = scale · q_i · k_s for the block (row stride L = i1 - s0). */
static void block_scores(float *S, const float *q, const float *k, int64_t rows, int64_t L, int64_t D,
                         int64_t ldq, int64_t ldk, float scale) {
    kd_sgemm(0, 1, rows, L, D, scale, q, ldq, k, ldk, 0.0f, S, L);
}

void kd_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                          int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t window,
                          float *scratch) {
    int64_t G = H / Hkv, ldq = H * D, ldk = Hkv * D;
    float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for schedule(dynamic)
    for (int64_t bh = 0; bh < B * H; bh++) {
        int64_t b = bh / H, h = bh % H, kvh = h / G;
        float *S = scratch + (int64_t)omp_get_thread_num() * 2 * KD_ATT_BQ * T;
        const float *qb = q + b * T * ldq + h * D;
        const float *kb = k + b * T * ldk + kvh * D;
        const float *vb = v + b * T * ldk + kvh * D;
        float *ob = out + b * T * ldq + h * D;
        float *lse_bh = lse + (b * H + h) * T;
        for (int64_t i0 = 0; i0 < T; i0 += KD_ATT_BQ) {
            int64_t i1 = i0 + KD_ATT_BQ < T ? i0 + KD_ATT_BQ : T, rows = i1 - i0;
            int64_t s0 = block_key_start(i0, window), L = i1 - s0;
            block_scores(S, qb + i0 * ldq, kb + s0 * ldk, rows, L, D, ldq, ldk, scale);
            for (int64_t r = 0; r < rows; r++) {
                int64_t i = i0 + r;
                int64_t lo = window > 0 && i - window + 1 > s0 ? i - window + 1 - s0 : 0, hi = i - s0; /* inclusive */
                float *Sr = S + r * L;
                float m = -INFINITY;
                for (int64_t j = lo; j <= hi; j++) m = Sr[j] > m ? Sr[j] : m;
                float sum = 0.0f;
                for (int64_t j = 0; j < L; j++) {
                    float p = (j >= lo && j <= hi) ? expf(Sr[j] - m) : 0.0f;
                    Sr[j] = p;
                    sum += p;
                }
                float inv = 1.0f / sum;
                for (int64_t j = lo; j <= hi; j++) Sr[j] *= inv;
                lse_bh[i] = m + logf(sum);
            }
            kd_sgemm(0, 0, rows, D, L, 1.0f, S, L, vb + s0 * ldk, ldk, 0.0f, ob + i0 * ldq, ldq);
        }
    }
}

void kd_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *out,
                           const float *lse, const float *q, const float *k, const float *v,
                           int64_t B, int64_t T, int64_t H, int64_t Hkv, int64_t D, int64_t window,
                           float *scratch) {
    int64_t G = H / Hkv, ldq = H * D, ldk = Hkv * D;
    float scale = 1.0f / sqrtf((float)D);
    int nt = omp_get_max_threads();
    /* Parallel over (b, kvh) when there are enough pairs; otherwise the
     * products themselves run in parallel (kd_sgemm). */
#pragma omp parallel for schedule(dynamic) if (B * Hkv >= nt)
    for (int64_t bk = 0; bk < B * Hkv; bk++) {
        int64_t b = bk / Hkv, kvh = bk % Hkv;
        float *P = scratch + (int64_t)omp_get_thread_num() * 2 * KD_ATT_BQ * T;
        float *dP = P + KD_ATT_BQ * T;
        const float *kb = k + b * T * ldk + kvh * D, *vb = v + b * T * ldk + kvh * D;
        float *dkb = dk ? dk + b * T * ldk + kvh * D : NULL;
        float *dvb = dv ? dv + b * T * ldk + kvh * D : NULL;
        for (int64_t h = kvh * G; h < (kvh + 1) * G; h++) {
            const float *qb = q + b * T * ldq + h * D, *ob = out + b * T * ldq + h * D;
            const float *dob = dout + b * T * ldq + h * D;
            float *dqb = dq ? dq + b * T * ldq + h * D : NULL;
            const float *lse_bh = lse + (b * H + h) * T;
            for (int64_t i0 = 0; i0 < T; i0 += KD_ATT_BQ) {
                int64_t i1 = i0 + KD_ATT_BQ < T ? i0 + KD_ATT_BQ : T, rows = i1 - i0;
                int64_t s0 = block_key_start(i0, window), L = i1 - s0;
                block_scores(P, qb + i0 * ldq, kb + s0 * ldk, rows, L, D, ldq, ldk, scale);
                /* dP = dO · Vᵀ */
                kd_sgemm(0, 1, rows, L, D, 1.0f, dob + i0 * ldq, ldq, vb + s0 * ldk, ldk, 0.0f, dP, L);
                for (int64_t r = 0; r < rows; r++) {
                    int64_t i = i0 + r;
                    int64_t lo = window > 0 && i - window + 1 > s0 ? i - window + 1 - s0 : 0, hi = i - s0;
                    float *Pr = P + r * L, *dPr = dP + r * L;
                    const float *o = ob + i * ldq, *dor = dob + i * ldq;
                    float Di = 0.0f;
                    for (int64_t d = 0; d < D; d++) Di += dor[d] * o[d];
                    for (int64_t j = 0; j < L; j++) {
                        float p = (j >= lo && j <= hi) ? expf(Pr[j] - lse_bh[i]) : 0.0f;
                        Pr[j] = p;
                        dPr[j] = p * (dPr[j] - Di);       /* dS */
                    }
                }
                if (dqb) /* dQ += scale · dS · K */
                    kd_sgemm(0, 0, rows, D, L, scale, dP, L, kb + s0 * ldk, ldk, 1.0f, dqb + i0 * ldq, ldq);
                if (dkb) /* dK += scale · dSᵀ · Q */
                    kd_sgemm(1, 0, L, D, rows, scale, dP, L, qb + i0 * ldq, ldq, 1.0f, dkb + s0 * ldk, ldk);
                if (dvb) /* dV += Pᵀ · dO */
                    kd_sgemm(1, 0, L, D, rows, 1.0f, P, L, dob + i0 * ldq, ldq, 1.0f, dvb + s0 * ldk, ldk);
            }
        }
    }
}

typedef struct { float *lse; int64_t B, T, H, Hkv, D, window; } att_ctx;

static void attention_backward(kd_graph *g, kd_node *nd) {
    att_ctx *c = nd->ctx;
    kd_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2];
    float *scratch = kd_graph_alloc(g, (size_t)kd_attention_scratch(c->T, omp_get_max_threads()) * sizeof(float));
    kd_attention_backward(q->requires_grad ? kd_grad(g, q) : NULL, k->requires_grad ? kd_grad(g, k) : NULL,
                          v->requires_grad ? kd_grad(g, v) : NULL, nd->out->grad, nd->out->data, c->lse, q->data,
                          k->data, v->data, c->B, c->T, c->H, c->Hkv, c->D, c->window, scratch);
}

kd_tensor *kd_attention(kd_graph *g, kd_tensor *q, kd_tensor *k, kd_tensor *v, int64_t H, int64_t Hkv,
                        int64_t window) {
    int64_t B = q->ndim == 3 ? q->shape[0] : 1;
    int64_t T = q->ndim == 3 ? q->shape[1] : q->shape[0];
    int64_t HD = kd_last_dim(q);
    if (H <= 0 || Hkv <= 0 || H % Hkv || HD % H) kd_panic("attention: %lld heads, %lld kv heads, %lld channels",
                                                          (long long)H, (long long)Hkv, (long long)HD);
    int64_t D = HD / H;
    if (k->n != B * T * Hkv * D || v->n != k->n)
        kd_panic("attention: k/v must be [B=%lld, T=%lld, Hkv·D=%lld]", (long long)B, (long long)T,
                 (long long)(Hkv * D));
    kd_tensor *y = kd_tensor_new(g, q->ndim, q->shape, "attention");
    float *lse = kd_graph_alloc(g, (size_t)(B * H * T) * sizeof(float));
    float *scratch = kd_graph_alloc(g, (size_t)kd_attention_scratch(T, omp_get_max_threads()) * sizeof(float));
    kd_attention_forward(y->data, lse, q->data, k->data, v->data, B, T, H, Hkv, D, window, scratch);
    kd_node *nd = kd_graph_record(g, "attention", attention_backward, y, q, k, v);
    if (nd) {
        att_ctx *c = kd_graph_alloc(g, sizeof *c);
        *c = (att_ctx){lse, B, T, H, Hkv, D, window};
        nd->ctx = c;
    }
    return y;
}
