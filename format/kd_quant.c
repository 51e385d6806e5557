/*
 * kd_quant.c — ggml block quantizers, dequantizers and dot products
 * (see kd_quant.h; the formats and rules: docs/quantization.md#ggml-block-formats).
 *
 * Written from the documented rules. Where bit-exactness with ggml depends on
 * the order of float operations (the K-quant searches), the order is spelled
 * out in comments and must not be "simplified".
 */
#pragma GCC optimize("fp-contract=off")   /* no FMA: every product and sum rounds as written */

#include "format/kd_quant.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_fp16.h"
#include "core/kd_log.h"

#define GROUP_MAX_EPS 1e-15f   /* below this |max| a Q6_K group is all zeros */

/* ---- type table ------------------------------------------------------------------ */

int kd_quant_supported(int32_t type) {
    switch (type) {
    case KD_GGML_TYPE_F32: case KD_GGML_TYPE_F16: case KD_GGML_TYPE_BF16: case KD_GGML_TYPE_Q8_0:
    case KD_GGML_TYPE_Q4_0: case KD_GGML_TYPE_Q4_1: case KD_GGML_TYPE_Q4_K: case KD_GGML_TYPE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

int64_t kd_quant_block(int32_t type) {
    if (!kd_quant_supported(type)) return 0;
    return kd_ggml_type_get(type)->block;
}

int kd_quant_is_quantized(int32_t type) { return kd_quant_block(type) > 1; }

size_t kd_quant_row_size(int32_t type, int64_t n) {
    if (!kd_quant_supported(type) || n < 0) return 0;
    const kd_ggml_type_info *ti = kd_ggml_type_get(type);
    if (n % ti->block) return 0;
    return (size_t)(n / ti->block) * ti->block_bytes;
}

int kd_quant_check(int32_t type, int64_t n, kd_err *err) {
    if (!kd_quant_supported(type))
        return kd_errf(err, "ggml type %d (%s) is not one kd quantizes (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)",
                       (int)type, kd_ggml_type_name(type));
    int64_t b = kd_quant_block(type);
    if (n < 0 || n % b)
        return kd_errf(err, "%s: row length %" PRId64 " is not a multiple of the block size %" PRId64,
                       kd_ggml_type_name(type), n, b);
    return 0;
}

static _Noreturn void misuse(const char *fn, int32_t type, int64_t n) {
    kd_fatal("%s: type %d (%s) with row length %" PRId64 ": unsupported type or not a multiple of the block", fn,
             (int)type, kd_ggml_type_name(type), n);
}

/* ---- scalar helpers ---------------------------------------------------------------- */

static inline float h2f(uint16_t h) { return kd_fp16_to_f32(h); }
static inline uint16_t f2h(float f) { return kd_f32_to_fp16(f); }

/* Round half to even through 1.5·2^23, as ggml does; |v| ≤ 4194303. */
static inline int nearest_int(float v) {
    float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- Q8_0 -------------------------------------------------------------------------- */

static void quant_q8_0(const float *x, kd_block_q8_0 *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += KD_QK) {
        float amax = 0.0f;
        for (int j = 0; j < KD_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        kd_block_q8_0 blk;
        blk.d = f2h(d);
        for (int j = 0; j < KD_QK; j++) blk.qs[j] = (int8_t)roundf(x[j] * id);   /* ties away from zero */
        memcpy(&y[b], &blk, sizeof blk);
    }
}

static void dequant_q8_0(const kd_block_q8_0 *in, float *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, y += KD_QK) {
        kd_block_q8_0 blk;
        memcpy(&blk, &in[b], sizeof blk);
        const float d = h2f(blk.d);
        for (int j = 0; j < KD_QK; j++) y[j] = (float)blk.qs[j] * d;
    }
}

/* ---- Q4_0 -------------------------------------------------------------------------- */

static void quant_q4_0(const float *x, kd_block_q4_0 *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += KD_QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < KD_QK; j++)
            if (amax < fabsf(x[j])) {   /* the first element of largest magnitude, with its sign */
                amax = fabsf(x[j]);
                max = x[j];
            }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        kd_block_q4_0 blk;
        blk.d = f2h(d);
        for (int j = 0; j < KD_QK / 2; j++) {
            const float v0 = x[j] * id, v1 = x[j + KD_QK / 2] * id;
            int q0 = (int8_t)(v0 + 8.5f), q1 = (int8_t)(v1 + 8.5f);   /* truncating casts */
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            blk.qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
        memcpy(&y[b], &blk, sizeof blk);
    }
}

static void dequant_q4_0(const kd_block_q4_0 *in, float *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, y += KD_QK) {
        kd_block_q4_0 blk;
        memcpy(&blk, &in[b], sizeof blk);
        const float d = h2f(blk.d);
        for (int j = 0; j < KD_QK / 2; j++) {
            y[j] = (float)((blk.qs[j] & 0x0F) - 8) * d;
            y[j + KD_QK / 2] = (float)((blk.qs[j] >> 4) - 8) * d;
        }
    }
}

/* ---- Q4_1 -------------------------------------------------------------------------- */

static void quant_q4_1(const float *x, kd_block_q4_1 *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += KD_QK) {
        float min = INFINITY, max = -INFINITY;
        for (int j = 0; j < KD_QK; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        kd_block_q4_1 blk;
        blk.d = f2h(d);
        blk.m = f2h(min);
        for (int j = 0; j < KD_QK / 2; j++) {
            const float v0 = (x[j] - min) * id, v1 = (x[j + KD_QK / 2] - min) * id;
            int q0 = (int8_t)(v0 + 0.5f), q1 = (int8_t)(v1 + 0.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            blk.qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
        memcpy(&y[b], &blk, sizeof blk);
    }
}

static void dequant_q4_1(const kd_block_q4_1 *in, float *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, y += KD_QK) {
        kd_block_q4_1 blk;
        memcpy(&blk, &in[b], sizeof blk);
        const float d = h2f(blk.d), m = h2f(blk.m);
        for (int j = 0; j < KD_QK / 2; j++) {
            y[j] = (float)(blk.qs[j] & 0x0F) * d + m;
            y[j + KD_QK / 2] = (float)(blk.qs[j] >> 4) * d + m;
        }
    }
}

/* ---- Q4_K -------------------------------------------------------------------------- */

/* Weighted asymmetric search for one sub-block (make_qkx2_quants with
 * nmax = 15, rmin = −1, rdelta = 0.1, nstep = 20, squared error). Writes the
 * levels L[0..n) and *neg_min = −min (≥ 0); returns the scale. */
static float search_scale_min(int n, const float *x, const float *w, uint8_t *L, float *neg_min) {
    enum { NMAX = 15, NSTEP = 20 };
    const float rmin = -1.0f, rdelta = 0.1f;
    uint8_t aux[KD_QK];
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.0f;
    }
    float iscale = NMAX / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest_int(iscale * (x[i] - min)), 0, NMAX);
        const float diff = scale * L[i] + min - x[i];   /* ((scale·L) + min) − x */
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= NSTEP; is++) {
        /* min is the best candidate's so far: later steps search around it */
        iscale = (rmin + rdelta * is + NMAX) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = clampi(nearest_int(iscale * (x[i] - min)), 0, NMAX);
            aux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;      /* (w·l)·l */
            sum_xl += w[i] * l * x[i];   /* (w·l)·x */
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float s = (sum_w * sum_xl - sum_x * sum_l) / D;
        float m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (m > 0) {
            m = 0;
            s = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            const float diff = s * aux[i] + m - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best) {
            memcpy(L, aux, (size_t)n);
            best = err;
            scale = s;
            min = m;
        }
    }
    *neg_min = -min;
    return scale;
}

static void quant_q4_k(const float *x, kd_block_q4_k *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += KD_QK_K) {
        uint8_t L[KD_QK_K];
        float w[KD_QK], scales[8], mins[8], max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; j++) {
            const float *xs = x + KD_QK * j;
            float sum_x2 = 0;
            for (int l = 0; l < KD_QK; l++) sum_x2 += xs[l] * xs[l];
            const float av_x = sqrtf(sum_x2 / KD_QK);
            for (int l = 0; l < KD_QK; l++) w[l] = av_x + fabsf(xs[l]);
            scales[j] = search_scale_min(KD_QK, xs, w, L + KD_QK * j, &mins[j]);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
        const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
        kd_block_q4_k blk;
        for (int j = 0; j < 8; j++) {
            /* nearest_int(...) stored in a byte, then capped at 63 */
            uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]), lm = (uint8_t)nearest_int(inv_min * mins[j]);
            if (ls > 63) ls = 63;
            if (lm > 63) lm = 63;
            if (j < 4) {
                blk.scales[j] = ls;
                blk.scales[j + 4] = lm;
            } else {
                blk.scales[j + 4] = (uint8_t)((ls & 0x0F) | ((lm & 0x0F) << 4));
                blk.scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
                blk.scales[j] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        blk.d = f2h(max_scale / 63.0f);
        blk.dmin = f2h(max_min / 63.0f);
        const float d_all = h2f(blk.d), dmin_all = h2f(blk.dmin);
        for (int j = 0; j < 8; j++) {   /* final levels against the rounded scales */
            int sc, m;
            kd_q4k_scale_min(j, blk.scales, &sc, &m);
            const float d = d_all * sc;
            if (d == 0.0f) continue;    /* keep the search's levels */
            const float dm = dmin_all * m;
            for (int l = 0; l < KD_QK; l++)
                L[KD_QK * j + l] = (uint8_t)clampi(nearest_int((x[KD_QK * j + l] + dm) / d), 0, 15);
        }
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                blk.qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
        memcpy(&y[b], &blk, sizeof blk);
    }
}

static void dequant_q4_k(const kd_block_q4_k *in, float *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, y += KD_QK_K) {
        kd_block_q4_k blk;
        memcpy(&blk, &in[b], sizeof blk);
        const float d = h2f(blk.d), dmin = h2f(blk.dmin);
        for (int c = 0; c < 4; c++) {
            int sc0, m0, sc1, m1;
            kd_q4k_scale_min(2 * c, blk.scales, &sc0, &m0);
            kd_q4k_scale_min(2 * c + 1, blk.scales, &sc1, &m1);
            const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = d0 * (blk.qs[32 * c + l] & 0x0F) - mm0;
                y[64 * c + 32 + l] = d1 * (blk.qs[32 * c + l] >> 4) - mm1;
            }
        }
    }
}

/* ---- Q6_K -------------------------------------------------------------------------- */

/* Symmetric search for one sub-block (make_qx_quants, nmax = 32, weights x²):
 * levels L[i] = l + 32 with l in [−32, 31]; returns the scale. */
static float search_scale_sym(int n, const float *x, int8_t *L) {
    enum { NMAX = 32 };
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -NMAX / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = clampi(nearest_int(iscale * x[i]), -NMAX, NMAX - 1);
        L[i] = (int8_t)(l + NMAX);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;   /* (w·x)·l */
        suml2 += w * l * l;      /* (w·l)·l */
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(NMAX + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = clampi(nearest_int(iscale * x[i]), -NMAX, NMAX - 1);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(NMAX + clampi(nearest_int(iscale * x[i]), -NMAX, NMAX - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

static void quant_q6_k(const float *x, kd_block_q6_k *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += KD_QK_K) {
        int8_t L[KD_QK_K];
        float scales[16], max_scale = 0, max_abs = 0;
        for (int k = 0; k < 16; k++) {
            scales[k] = search_scale_sym(16, x + 16 * k, L + 16 * k);
            if (fabsf(scales[k]) > max_abs) {   /* the first largest |scale|, with its sign */
                max_abs = fabsf(scales[k]);
                max_scale = scales[k];
            }
        }
        kd_block_q6_k blk;
        memset(&blk, 0, sizeof blk);
        if (max_abs < GROUP_MAX_EPS) {   /* all zeros (d = +0) */
            memcpy(&y[b], &blk, sizeof blk);
            continue;
        }
        const float iscale = -128.0f / max_scale;
        blk.d = f2h(1 / iscale);
        for (int k = 0; k < 16; k++) {
            const int s = nearest_int(iscale * scales[k]);
            blk.scales[k] = (int8_t)(s < 127 ? s : 127);
        }
        const float d_all = h2f(blk.d);
        for (int k = 0; k < 16; k++) {
            const float d = d_all * blk.scales[k];
            if (d == 0.0f) continue;
            for (int i = 0; i < 16; i++) L[16 * k + i] = (int8_t)(clampi(nearest_int(x[16 * k + i] / d), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = blk.ql + 64 * h, *qh = blk.qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                const int a = Lh[l], c = Lh[l + 32], e = Lh[l + 64], g = Lh[l + 96];
                ql[l] = (uint8_t)((a & 0x0F) | ((e & 0x0F) << 4));
                ql[l + 32] = (uint8_t)((c & 0x0F) | ((g & 0x0F) << 4));
                qh[l] = (uint8_t)((a >> 4) | ((c >> 4) << 2) | ((e >> 4) << 4) | ((g >> 4) << 6));
            }
        }
        memcpy(&y[b], &blk, sizeof blk);
    }
}

/* The 6-bit level of element i (0..255) of a Q6_K block, minus 32. */
static inline int q6k_level(const kd_block_q6_k *blk, int i) {
    const int h = i / 128, r = i % 128, l = r % 32, part = r / 32;
    const uint8_t *ql = blk->ql + 64 * h, *qh = blk->qh + 32 * h;
    const int lo = (part & 1) ? ql[l + 32] : ql[l];
    const int low4 = (part & 2) ? lo >> 4 : lo & 0x0F;
    const int high2 = (qh[l] >> (2 * part)) & 3;
    return (low4 | (high2 << 4)) - 32;
}

static void dequant_q6_k(const kd_block_q6_k *in, float *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, y += KD_QK_K) {
        kd_block_q6_k blk;
        memcpy(&blk, &in[b], sizeof blk);
        const float d = h2f(blk.d);
        for (int i = 0; i < KD_QK_K; i++) {
            /* scale index: half h, 16-element group within the half's 32-lane part */
            const int h = i / 128, r = i % 128, k = 8 * h + (r / 32) * 2 + (r % 32) / 16;
            y[i] = d * blk.scales[k] * q6k_level(&blk, i);
        }
    }
}

/* ---- row entry points ---------------------------------------------------------------- */

void kd_quantize_row(int32_t type, const float *x, void *out, int64_t n) {
    if (kd_quant_check(type, n, NULL)) misuse("kd_quantize_row", type, n);
    const int64_t nb = n / kd_quant_block(type);
    switch (type) {
    case KD_GGML_TYPE_F32: memcpy(out, x, (size_t)n * sizeof(float)); break;
    case KD_GGML_TYPE_F16:
    case KD_GGML_TYPE_BF16: {
        unsigned char *o = out;
        for (int64_t i = 0; i < n; i++) {
            const uint16_t h = type == KD_GGML_TYPE_F16 ? kd_f32_to_fp16(x[i]) : kd_f32_to_bf16(x[i]);
            memcpy(o + 2 * i, &h, 2);
        }
        break;
    }
    case KD_GGML_TYPE_Q8_0: quant_q8_0(x, out, nb); break;
    case KD_GGML_TYPE_Q4_0: quant_q4_0(x, out, nb); break;
    case KD_GGML_TYPE_Q4_1: quant_q4_1(x, out, nb); break;
    case KD_GGML_TYPE_Q4_K: quant_q4_k(x, out, nb); break;
    case KD_GGML_TYPE_Q6_K: quant_q6_k(x, out, nb); break;
    }
}

void kd_dequantize_row(int32_t type, const void *in, float *y, int64_t n) {
    if (kd_quant_check(type, n, NULL)) misuse("kd_dequantize_row", type, n);
    const int64_t nb = n / kd_quant_block(type);
    switch (type) {
    case KD_GGML_TYPE_F32: memmove(y, in, (size_t)n * sizeof(float)); break;
    case KD_GGML_TYPE_F16:
    case KD_GGML_TYPE_BF16: {
        const unsigned char *p = in;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            y[i] = type == KD_GGML_TYPE_F16 ? kd_fp16_to_f32(h) : kd_bf16_to_f32(h);
        }
        break;
    }
    case KD_GGML_TYPE_Q8_0: dequant_q8_0(in, y, nb); break;
    case KD_GGML_TYPE_Q4_0: dequant_q4_0(in, y, nb); break;
    case KD_GGML_TYPE_Q4_1: dequant_q4_1(in, y, nb); break;
    case KD_GGML_TYPE_Q4_K: dequant_q4_k(in, y, nb); break;
    case KD_GGML_TYPE_Q6_K: dequant_q6_k(in, y, nb); break;
    }
}

/* Dot products: per block, Σ level·x in float, then the block's scales;
 * block results summed in double. */
float kd_vec_dot_q(int32_t type, const void *row, const float *x, int64_t n) {
    if (kd_quant_check(type, n, NULL)) misuse("kd_vec_dot_q", type, n);
    const unsigned char *p = row;
    double acc = 0;
    switch (type) {
    case KD_GGML_TYPE_F32:
    case KD_GGML_TYPE_F16:
    case KD_GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            float v;
            uint16_t h;
            if (type == KD_GGML_TYPE_F32) memcpy(&v, p + 4 * i, 4);
            else {
                memcpy(&h, p + 2 * i, 2);
                v = type == KD_GGML_TYPE_F16 ? kd_fp16_to_f32(h) : kd_bf16_to_f32(h);
            }
            acc += (double)v * x[i];
        }
        break;
    case KD_GGML_TYPE_Q8_0:
        for (int64_t b = 0; b < n / KD_QK; b++, x += KD_QK) {
            kd_block_q8_0 blk;
            memcpy(&blk, p + b * sizeof blk, sizeof blk);
            float s = 0;
            for (int j = 0; j < KD_QK; j++) s += blk.qs[j] * x[j];
            acc += (double)h2f(blk.d) * s;
        }
        break;
    case KD_GGML_TYPE_Q4_0:
    case KD_GGML_TYPE_Q4_1:
        for (int64_t b = 0; b < n / KD_QK; b++, x += KD_QK) {
            float s = 0, sx = 0, d, m = 0;
            const uint8_t *qs;
            kd_block_q4_0 b0;
            kd_block_q4_1 b1;
            if (type == KD_GGML_TYPE_Q4_0) {
                memcpy(&b0, p + b * sizeof b0, sizeof b0);
                d = h2f(b0.d);
                qs = b0.qs;
            } else {
                memcpy(&b1, p + b * sizeof b1, sizeof b1);
                d = h2f(b1.d);
                m = h2f(b1.m);
                qs = b1.qs;
            }
            const int off = type == KD_GGML_TYPE_Q4_0 ? 8 : 0;
            for (int j = 0; j < KD_QK / 2; j++) {
                s += ((qs[j] & 0x0F) - off) * x[j] + ((qs[j] >> 4) - off) * x[j + KD_QK / 2];
                sx += x[j] + x[j + KD_QK / 2];
            }
            acc += (double)d * s + (double)m * sx;
        }
        break;
    case KD_GGML_TYPE_Q4_K:
        for (int64_t b = 0; b < n / KD_QK_K; b++, x += KD_QK_K) {
            kd_block_q4_k blk;
            memcpy(&blk, p + b * sizeof blk, sizeof blk);
            const double d = h2f(blk.d), dmin = h2f(blk.dmin);
            for (int j = 0; j < 8; j++) {
                int sc, m;
                kd_q4k_scale_min(j, blk.scales, &sc, &m);
                const int c = j / 2, hi = j % 2;
                float s = 0, sx = 0;
                for (int l = 0; l < 32; l++) {
                    const int q = hi ? blk.qs[32 * c + l] >> 4 : blk.qs[32 * c + l] & 0x0F;
                    s += q * x[32 * j + l];
                    sx += x[32 * j + l];
                }
                acc += d * sc * s - dmin * m * sx;
            }
        }
        break;
    case KD_GGML_TYPE_Q6_K:
        for (int64_t b = 0; b < n / KD_QK_K; b++, x += KD_QK_K) {
            kd_block_q6_k blk;
            memcpy(&blk, p + b * sizeof blk, sizeof blk);
            const double d = h2f(blk.d);
            for (int g = 0; g < 16; g++) {   /* 16 consecutive elements share one scale */
                const int i0 = 16 * g, h = i0 / 128, r = i0 % 128, k = 8 * h + (r / 32) * 2 + (r % 32) / 16;
                float s = 0;
                for (int i = i0; i < i0 + 16; i++) s += q6k_level(&blk, i) * x[i];
                acc += d * blk.scales[k] * s;
            }
        }
        break;
    }
    return (float)acc;
}

void kd_fake_quant_row(int32_t type, const float *x, float *y, int64_t n) {
    if (kd_quant_check(type, n, NULL)) misuse("kd_fake_quant_row", type, n);
    if (type == KD_GGML_TYPE_F32) {
        memmove(y, x, (size_t)n * sizeof(float));
        return;
    }
    /* one block at a time through a stack buffer: no allocation, y may alias x */
    const int64_t blk = kd_quant_block(type) > 1 ? kd_quant_block(type) : KD_QK_K;
    unsigned char buf[sizeof(kd_block_q6_k) > KD_QK_K * 2 ? sizeof(kd_block_q6_k) : KD_QK_K * 2];
    for (int64_t i = 0; i < n; i += blk) {
        const int64_t len = n - i < blk ? n - i : blk;
        kd_quantize_row(type, x + i, buf, len);
        kd_dequantize_row(type, buf, y + i, len);
    }
}

/* ---- matrices ---------------------------------------------------------------------- */

#define PAR_MIN_ELEMS (1 << 15)   /* below this a matrix is quantized on one thread */

int kd_quantize_rows(int32_t type, const float *x, void *out, int64_t rows, int64_t n, kd_err *err) {
    if (kd_quant_check(type, n, err) || rows < 0) return rows < 0 ? kd_errf(err, "negative row count") : -1;
    const size_t rs = kd_quant_row_size(type, n);
    unsigned char *o = out;
#pragma omp parallel for schedule(dynamic, 4) if (rows * n >= PAR_MIN_ELEMS)
    for (int64_t r = 0; r < rows; r++) kd_quantize_row(type, x + r * n, o + (size_t)r * rs, n);
    return 0;
}

int kd_dequantize_rows(int32_t type, const void *in, float *y, int64_t rows, int64_t n, kd_err *err) {
    if (kd_quant_check(type, n, err) || rows < 0) return rows < 0 ? kd_errf(err, "negative row count") : -1;
    const size_t rs = kd_quant_row_size(type, n);
    const unsigned char *p = in;
#pragma omp parallel for schedule(static) if (rows * n >= PAR_MIN_ELEMS)
    for (int64_t r = 0; r < rows; r++) kd_dequantize_row(type, p + (size_t)r * rs, y + r * n, n);
    return 0;
}

int kd_fake_quant_rows(int32_t type, const float *x, float *y, int64_t rows, int64_t n, kd_err *err) {
    if (kd_quant_check(type, n, err) || rows < 0) return rows < 0 ? kd_errf(err, "negative row count") : -1;
#pragma omp parallel for schedule(dynamic, 4) if (rows * n >= PAR_MIN_ELEMS)
    for (int64_t r = 0; r < rows; r++) kd_fake_quant_row(type, x + r * n, y + r * n, n);
    return 0;
}
