/*
 * kd_matvec_q8.c — llama.cpp's numerics (see kd_matvec.h): activations rounded or
 * quantized as ggml's CPU backend does for each weight type, and integer block dot
 * products with them.
 *
 * Activation blocks (ggml's reference quantizers: Q8_0 as docs/quantization.md, and quantize_row_q8_{1,K}_ref):
 *   Q8_0 (partner of Q8_0, Q4_0): per 32, d = amax/127, q = roundf(x/d), d kept as F16;
 *   Q8_1 (partner of Q4_1): the same, plus s = F16(d·Σq) for the min term;
 *   Q8_K (partner of Q4_K, Q6_K): per 256, d = max/−127 in F32 (max: the signed
 *        value of largest magnitude), q = min(127, nearest_int(x/d)), and the sums
 *        of each 16 levels.
 * Dot products, per block (as ggml_vec_dot_*): an exact integer sum Σ qw·qx, times
 * the weight's and the activation's scales, summed in float:
 *   Q8_0·Q8_0, Q4_0·Q8_0   Σ_b dw·dx·Σ qw·qx                (Q4_0: qw = nibble − 8)
 *   Q4_1·Q8_1              Σ_b dw·dx·Σ q·qx + m·s
 *   Q4_K·Q8_K              Σ_b dx·(dw·Σ_j sc_j·Σ q·qx − dmin·Σ_j m_j·(bsum_2j + bsum_2j+1))
 *   Q6_K·Q8_K              Σ_b dw·dx·Σ_k sc_k·(Σ q6·qx − 32·bsum_k)
 * The AVX2 kernels multiply unsigned by signed bytes (vpmaddubsw: pairs of products
 * into int16, no overflow for these ranges) and widen with vpmaddwd, which also
 * applies the 16-bit sub-block scales. With AVX-512 VNNI every type uses vpdpbusd
 * (64 unsigned × signed bytes summed straight into 16 int32 lanes): Q8_0, Q4_0, Q4_1
 * two blocks per zmm, Q4_K and Q6_K a quarter super-block per zmm with the sub-block
 * scales applied by vpdpwssd (see the VNNI sections).
 *
 * Every row loop prefetches the weights KD_PREFETCH_BYTES ahead (kd_matvec.h).
 */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_fp16.h"
#include "infer/kd_matvec.h"
#include "format/kd_quant.h"

typedef struct act_q8b {
    float d, s;                 /* F16-rounded scale; Q8_1: F16(d·Σq) */
    int8_t qs[KD_QK];
} act_q8b;

typedef struct act_q8k {
    float d;
    int16_t bsums[KD_QK_K / 16];
    int8_t qs[KD_QK_K];
} act_q8k;

int kd_q8_supported(int32_t wtype) {
    return wtype == KD_GGML_TYPE_Q8_0 || wtype == KD_GGML_TYPE_Q4_0 || wtype == KD_GGML_TYPE_Q4_1 ||
           wtype == KD_GGML_TYPE_Q4_K || wtype == KD_GGML_TYPE_Q6_K;
}

static int is_k(int32_t wtype) { return wtype == KD_GGML_TYPE_Q4_K || wtype == KD_GGML_TYPE_Q6_K; }

/* After the Q8_0/Q8_1 blocks, for the AVX-512 VNNI kernels (nb = n/32 blocks):
 *   xs[nb·32]    int8   the levels again, contiguous (one zmm holds two blocks),
 *   dx[nb]       float  the scales,
 *   corr[nb][8]  int32  {−8·Σ_j qs_j, 0, ..., 0}: the start of a block's 8 int32 lanes,
 *                       so vpdpbusd over unsigned nibbles q gives Σ (q − 8)·qx (Q4_0),
 *                       and 16× it turns Σ (w + 128)·qx into Σ w·qx (Q8_0). */
typedef struct vnni_act {
    int8_t *xs;
    float *dx;
    int32_t *corr;
} vnni_act;

static vnni_act vnni_view(void *xq, int64_t n) {
    const int64_t nb = n / KD_QK;
    uint8_t *p = (uint8_t *)xq + ((size_t)(nb + 1) * sizeof(act_q8b) + 63) / 64 * 64;
    vnni_act a;
    a.xs = (int8_t *)p;
    a.dx = (float *)(p + (size_t)nb * KD_QK);
    a.corr = (int32_t *)(p + (size_t)nb * KD_QK + (size_t)nb * sizeof(float));
    return a;
}

size_t kd_act_q8_bytes(int64_t n) {
    const size_t nb = (size_t)(n / KD_QK);
    const size_t q8b = (nb + 1) * sizeof(act_q8b) + 64 + nb * (KD_QK + sizeof(float) + 8 * sizeof(int32_t));
    const size_t q8k = (size_t)(n / KD_QK_K + 1) * sizeof(act_q8k);
    return q8b > q8k ? q8b : q8k;
}

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline float h2f(const uint8_t *p) { return kd_fp16_to_f32(rd16(p)); }

/* ggml's nearest_int: round half to even through the 1.5·2^23 trick. */
static inline int nearest_int(float v) {
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static void quantize_q8b(const float *x, act_q8b *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += KD_QK) {
        float amax = 0.0f;
        for (int j = 0; j < KD_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < KD_QK; j++) sum += y[b].qs[j] = (int8_t)roundf(x[j] * id);
        y[b].d = kd_fp16_to_f32(kd_f32_to_fp16(d));
        y[b].s = kd_fp16_to_f32(kd_f32_to_fp16((float)sum * d));
    }
}

static void quantize_q8k(const float *x, act_q8k *y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++, x += KD_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < KD_QK_K; j++)
            if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) continue;
        const float iscale = -127.0f / max;
        for (int j = 0; j < KD_QK_K; j++) {
            const int v = nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
            y[b].bsums[j / 16] = (int16_t)(y[b].bsums[j / 16] + y[b].qs[j]);
        }
        y[b].d = 1.0f / iscale;
    }
}

/* quantize_q8b + the VNNI copy with AVX-512, bit for bit the scalar result: the same
 * max, scale and products x·id, and roundf's ties away from zero rebuilt from a
 * truncation (t = trunc(v), v − t exact, ± 1 where |v − t| ≥ 0.5). */
#define T512Q __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
T512Q static inline __m512i round_away_512(__m512 v) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm512_cvtps_epi32(_mm512_mask_add_ps(t, up, t, _mm512_or_ps(_mm512_and_ps(v, sign), _mm512_set1_ps(1.0f))));
}

T512Q static void quantize_q8b_512(const float *x, act_q8b *y, int64_t nb, vnni_act a) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < nb; b++, x += KD_QK) {
        const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1)));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512i q0 = round_away_512(_mm512_mul_ps(x0, _mm512_set1_ps(id)));
        const __m512i q1 = round_away_512(_mm512_mul_ps(x1, _mm512_set1_ps(id)));
        const __m256i qs = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q0)), _mm512_cvtepi32_epi8(q1), 1);
        _mm256_storeu_si256((__m256i *)y[b].qs, qs);
        _mm256_storeu_si256((__m256i *)(a.xs + b * KD_QK), qs);
        const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        y[b].d = kd_fp16_to_f32(kd_f32_to_fp16(d));
        y[b].s = kd_fp16_to_f32(kd_f32_to_fp16((float)sum * d));
        a.dx[b] = y[b].d;
        memset(a.corr + 8 * b, 0, 8 * sizeof(int32_t));
        a.corr[8 * b] = -8 * sum;
    }
}

void kd_act_quantize(int32_t wtype, const float *x, void *xq, int64_t n) {
    if (is_k(wtype)) {
        quantize_q8k(x, xq, n / KD_QK_K);
        return;
    }
    const int64_t nb = n / KD_QK;
    const act_q8b *y = xq;
    const vnni_act a = vnni_view(xq, n);   /* the VNNI kernels' copy (see vnni_view) */
    if (kd_isa_get() >= KD_ISA_AVX512) {
        quantize_q8b_512(x, xq, nb, a);
        return;
    }
    quantize_q8b(x, xq, nb);
    for (int64_t b = 0; b < nb; b++) {
        int sum = 0;
        for (int j = 0; j < KD_QK; j++) sum += y[b].qs[j];
        memcpy(a.xs + b * KD_QK, y[b].qs, KD_QK);
        a.dx[b] = y[b].d;
        memset(a.corr + 8 * b, 0, 8 * sizeof(int32_t));
        a.corr[8 * b] = -8 * sum;
    }
}

void kd_act_round(int32_t wtype, const float *x, float *y, int64_t n) {
    switch (wtype) {
    case KD_GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++) y[i] = kd_fp16_to_f32(kd_f32_to_fp16(x[i]));
        return;
    case KD_GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) y[i] = kd_bf16_to_f32(kd_f32_to_bf16(x[i]));
        return;
    case KD_GGML_TYPE_Q8_0:
    case KD_GGML_TYPE_Q4_0:
    case KD_GGML_TYPE_Q4_1:   /* the levels (the F16 block sum of Q8_1 has no float form) */
        for (int64_t b = 0; b < n / KD_QK; b++) {
            act_q8b q;
            quantize_q8b(x + b * KD_QK, &q, 1);
            for (int j = 0; j < KD_QK; j++) y[b * KD_QK + j] = (float)q.qs[j] * q.d;
        }
        return;
    case KD_GGML_TYPE_Q4_K:
    case KD_GGML_TYPE_Q6_K:
        for (int64_t b = 0; b < n / KD_QK_K; b++) {
            act_q8k q;
            quantize_q8k(x + b * KD_QK_K, &q, 1);
            for (int j = 0; j < KD_QK_K; j++) y[b * KD_QK_K + j] = (float)q.qs[j] * q.d;
        }
        return;
    default:
        if (y != x) memmove(y, x, (size_t)n * sizeof *y);
    }
}

typedef float (*dot8_fn)(const uint8_t *row, const void *xq, int64_t n);

/* ---- scalar reference ------------------------------------------------------------------ */

static float dot8_q8_0_ref(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8b *y = xq;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q8_0)) {
        int s = 0;
        for (int j = 0; j < KD_QK; j++) s += (int8_t)p[2 + j] * y[b].qs[j];
        sum += (float)s * (h2f(p) * y[b].d);
    }
    return sum;
}

static float dot8_q4_0_ref(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8b *y = xq;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q4_0)) {
        int s = 0;
        for (int j = 0; j < KD_QK / 2; j++)
            s += ((p[2 + j] & 0x0F) - 8) * y[b].qs[j] + ((p[2 + j] >> 4) - 8) * y[b].qs[j + 16];
        sum += (float)s * (h2f(p) * y[b].d);
    }
    return sum;
}

static float dot8_q4_1_ref(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8b *y = xq;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q4_1)) {
        int s = 0;
        for (int j = 0; j < KD_QK / 2; j++) s += (p[4 + j] & 0x0F) * y[b].qs[j] + (p[4 + j] >> 4) * y[b].qs[j + 16];
        sum += (float)s * (h2f(p) * y[b].d) + h2f(p + 2) * y[b].s;
    }
    return sum;
}

static float dot8_q4_k_ref(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8k *y = xq;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q4_k)) {
        uint8_t sc[8], m[8];
        kd_q4k_unpack(p + 4, sc, m);
        const uint8_t *qs = p + 16;
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            int s = 0;
            for (int l = 0; l < 32; l++) {
                const int q = j & 1 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 0x0F;
                s += q * y[b].qs[32 * j + l];
            }
            sumi += sc[j] * s;
            summ += m[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        }
        sum += y[b].d * h2f(p) * (float)sumi - y[b].d * h2f(p + 2) * (float)summ;
    }
    return sum;
}

static float dot8_q6_k_ref(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8k *y = xq;
    float sum = 0.0f;
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q6_k)) {
        const int8_t *sc = (const int8_t *)(p + 192);
        int32_t sumi = 0;
        for (int i = 0; i < KD_QK_K; i++) {   /* element i: half h, part, lane l (docs/quantization.md, Q6_K) */
            const int h = i / 128, r = i % 128, l = r % 32, part = r / 32;
            const uint8_t *ql = p + 64 * h, *qh = p + 128 + 32 * h;
            const int lo = part & 1 ? ql[l + 32] : ql[l];
            const int q6 = ((part & 2 ? lo >> 4 : lo & 0x0F) | (((qh[l] >> (2 * part)) & 3) << 4)) - 32;
            sumi += sc[8 * h + 2 * part + l / 16] * q6 * y[b].qs[i];
        }
        sum += h2f(p + 208) * y[b].d * (float)sumi;
    }
    return sum;
}

/* ---- AVX2 -------------------------------------------------------------------------------- */

#define T256 __attribute__((target("avx2,fma,f16c")))

T256 static inline __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
T256 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* Σ of signed-byte products in int32 lanes (the sign trick makes the first operand unsigned). */
T256 static inline __m256i dot_s8(__m256i a, __m256i b) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
/* 32 nibbles of a Q4_0/Q4_1 block in element order: low nibbles 0..15, then high nibbles. */
T256 static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i v = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

T256 static float dot8_q8_0_256(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8b *y = xq;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q8_0)) {
        const __m256 s = _mm256_cvtepi32_ps(dot_s8(ld256(p + 2), ld256(y[b].qs)));
        acc = _mm256_fmadd_ps(s, _mm256_set1_ps(_cvtsh_ss(rd16(p)) * y[b].d), acc);
    }
    return hsum8(acc);
}

T256 static float dot8_q4_0_256(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8b *y = xq;
    const __m256i eight = _mm256_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q4_0)) {
        const __m256i q = _mm256_sub_epi8(nibbles32(p + 2), eight);
        const __m256 s = _mm256_cvtepi32_ps(dot_s8(q, ld256(y[b].qs)));
        acc = _mm256_fmadd_ps(s, _mm256_set1_ps(_cvtsh_ss(rd16(p)) * y[b].d), acc);
    }
    return hsum8(acc);
}

T256 static float dot8_q4_1_256(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8b *y = xq;
    const __m256i one = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    float summ = 0.0f;
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q4_1)) {
        const __m256i p16 = _mm256_maddubs_epi16(nibbles32(p + 4), ld256(y[b].qs));
        const __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, one));
        acc = _mm256_fmadd_ps(s, _mm256_set1_ps(_cvtsh_ss(rd16(p)) * y[b].d), acc);
        summ += _cvtsh_ss(rd16(p + 2)) * y[b].s;
    }
    return hsum8(acc) + summ;
}

T256 static float dot8_q4_k_256(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8k *y = xq;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    float summ = 0.0f;
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q4_k)) {
        uint8_t sc[8], m[8];
        kd_q4k_unpack(p + 4, sc, m);
        int32_t mins = 0;
        for (int j = 0; j < 8; j++) mins += m[j] * (y[b].bsums[2 * j] + y[b].bsums[2 * j + 1]);
        summ += y[b].d * _cvtsh_ss(rd16(p + 2)) * (float)mins;
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {   /* 64 elements: low nibbles = sub-block 2c, high = 2c + 1 */
            const __m256i v = ld256(p + 16 + 32 * c);
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            const __m256i plo = _mm256_maddubs_epi16(lo, ld256(y[b].qs + 64 * c));
            const __m256i phi = _mm256_maddubs_epi16(hi, ld256(y[b].qs + 64 * c + 32));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(y[b].d * _cvtsh_ss(rd16(p))), acc);
    }
    return hsum8(acc) - summ;
}

T256 static float dot8_q6_k_256(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8k *y = xq;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    float offset = 0.0f;
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q6_k)) {
        const int8_t *sc = (const int8_t *)(p + 192);
        int32_t bias = 0;   /* Σ_k sc_k · Σ qx over group k: the −32 offset */
        for (int k = 0; k < 16; k++) bias += sc[k] * y[b].bsums[k];
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = ld256(p + 64 * h), ql1 = ld256(p + 64 * h + 32), qh = ld256(p + 128 + 32 * h);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int part = 0; part < 4; part++) {   /* elements 128h + 32·part + l: groups k, k + 1 */
                const int k = 8 * h + 2 * part;
                const __m256i p16 = _mm256_maddubs_epi16(q[part], ld256(y[b].qs + 128 * h + 32 * part));
                const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[k + 1]), _mm_set1_epi16(sc[k]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, scv));
            }
        }
        const float d = _cvtsh_ss(rd16(p + 208)) * y[b].d;
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(d), acc);
        offset -= 32.0f * d * (float)bias;
    }
    return hsum8(acc) + offset;
}

/* ---- AVX-512 VNNI ------------------------------------------------------------------------ */
/* Two blocks per zmm: vpdpbusd multiplies 64 unsigned weight bytes with 64 signed
 * activation levels (xs, contiguous) and adds groups of 4 into 16 int32 lanes, starting
 * from corr (lanes 0..7: block A, 8..15: block B). A block's 8 lanes then sum to its
 * exact integer dot product; they are added up in integers (shuffles over 4 such
 * vectors, below), so each block's sum becomes a float once and is multiplied by
 * dw·dx, as ggml does. The F16 weight scales of a window of blocks (8 Q4_0 or 4 Q8_0
 * blocks: those whose scale lies in the first 128 bytes) are picked out of two masked
 * loads with one vpermt2w and converted together. Blocks past the last whole window go
 * to the AVX2 kernel. */

#define TVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

static const uint16_t iota16[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

/* dw_k·dx_k for the m blocks of bs bytes at p (their F16 scales within the first 128
 * bytes), lanes k < m. Masked loads read nothing past the last scale. */
TVNNI static inline __m512 window_scales(const uint8_t *p, int bs, int m, const float *dx) {
    const int words = (m - 1) * (bs / 2) + 1;   /* 16-bit words up to the last scale */
    const __mmask32 k0 = words >= 32 ? 0xFFFFFFFFu : (1u << words) - 1;
    const __mmask32 k1 = words <= 32 ? 0 : words >= 64 ? 0xFFFFFFFFu : (1u << (words - 32)) - 1;
    const __m512i w0 = _mm512_maskz_loadu_epi16(k0, p), w1 = _mm512_maskz_loadu_epi16(k1, p + 64);
    const __m512i idx = _mm512_mullo_epi16(_mm512_loadu_si512(iota16), _mm512_set1_epi16((short)(bs / 2)));
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(w0, idx, w1)));
    return _mm512_mul_ps(dw, _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), dx));
}

/* Pair sums r0 (blocks 0, 1), r1 (2, 3) → u: 128-bit lane k holds 4 partial sums of block k. */
TVNNI static inline __m512i pairs_to_blocks(__m512i r0, __m512i r1) {
    return _mm512_add_epi32(_mm512_shuffle_i64x2(r0, r1, 0x88), _mm512_shuffle_i64x2(r0, r1, 0xDD));
}

/* Q4_0 pair: [A's 16 bytes | B's 16 bytes] duplicated to [A, A, B, B] (128-bit lanes),
 * the second copy of each shifted right by 4: low nibbles (elements 0..15) then high
 * (16..31) of A, then of B — the order of xs. */
TVNNI static inline __m512i q4_0_pair(const uint8_t *p, const vnni_act *a, int64_t b) {
    const int bs = (int)sizeof(kd_block_q4_0);
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(p + 2))),
                                              _mm_loadu_si128((const __m128i *)(p + bs + 2)), 1);
    __m512i w = _mm512_shuffle_i64x2(_mm512_castsi256_si512(v), _mm512_castsi256_si512(v), 0x50);
    w = _mm512_and_si512(_mm512_mask_srli_epi16(w, 0xFF00FF00u, w, 4), _mm512_set1_epi8(0x0F));
    return _mm512_dpbusd_epi32(_mm512_loadu_si512(a->corr + 8 * b), w, _mm512_loadu_si512(a->xs + KD_QK * b));
}

/* Q4_0 in windows of 8 blocks: 4 pairs → the 8 block sums at lanes 4k (block k) and
 * 4k + 1 (block 4 + k); the scales are spread to match (other lanes 0). */
TVNNI static float dot8_q4_0_vnni(const uint8_t *p, const void *xq, int64_t n) {
    const int bs = (int)sizeof(kd_block_q4_0);
    const int64_t nb = n / KD_QK;
    const vnni_act a = vnni_view((void *)xq, n);
    const __m512i sidx = _mm512_setr_epi32(0, 4, 0, 0, 1, 5, 0, 0, 2, 6, 0, 0, 3, 7, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8, p += 8 * bs) {
        const __m512 s = _mm512_maskz_permutexvar_ps(0x3333, sidx, window_scales(p, bs, 8, a.dx + b));
        const __m512i u = pairs_to_blocks(q4_0_pair(p, &a, b), q4_0_pair(p + 2 * bs, &a, b + 2));
        const __m512i v = pairs_to_blocks(q4_0_pair(p + 4 * bs, &a, b + 4), q4_0_pair(p + 6 * bs, &a, b + 6));
        const __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi32(u, v), _mm512_unpackhi_epi32(u, v));
        const __m512i sum = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, acc);
    }
    float r = _mm512_reduce_add_ps(acc);
    if (b < nb) r += dot8_q4_0_256(p, (const act_q8b *)xq + b, (nb - b) * KD_QK);
    return r;
}

/* Q8_0 pair: the 2 × 32 signed levels + 128 (xor), unsigned; corr × 16 takes away the
 * 128·Σ qx this adds. */
TVNNI static inline __m512i q8_0_pair(const uint8_t *p, const vnni_act *a, int64_t b) {
    const int bs = (int)sizeof(kd_block_q8_0);
    __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))),
                                   _mm256_loadu_si256((const __m256i *)(p + bs + 2)), 1);
    w = _mm512_xor_si512(w, _mm512_set1_epi8((char)0x80));
    return _mm512_dpbusd_epi32(_mm512_slli_epi32(_mm512_loadu_si512(a->corr + 8 * b), 4), w,
                               _mm512_loadu_si512(a->xs + KD_QK * b));
}

/* Q8_0 in windows of 4 blocks: 2 pairs → block k's sum in every lane of 128-bit lane k;
 * the scale goes to its first lane only. */
TVNNI static float dot8_q8_0_vnni(const uint8_t *p, const void *xq, int64_t n) {
    const int bs = (int)sizeof(kd_block_q8_0);
    const int64_t nb = n / KD_QK;
    const vnni_act a = vnni_view((void *)xq, n);
    const __m512i sidx = _mm512_setr_epi32(0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4, p += 4 * bs) {
        const __m512 s = _mm512_maskz_permutexvar_ps(0x1111, sidx, window_scales(p, bs, 4, a.dx + b));
        const __m512i u = pairs_to_blocks(q8_0_pair(p, &a, b), q8_0_pair(p + 2 * bs, &a, b + 2));
        const __m512i t = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, _MM_PERM_BADC));
        const __m512i sum = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
        if (b & 4) acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, acc1);
        else acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, acc0);
    }
    float r = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (b < nb) r += dot8_q8_0_256(p, (const act_q8b *)xq + b, (nb - b) * KD_QK);
    return r;
}

/* Q4_1 pair: as Q4_0's (nibbles at offset 4), starting from 0: Σ q·qx, q unsigned. */
TVNNI static inline __m512i q4_1_pair(const uint8_t *p, const vnni_act *a, int64_t b) {
    const int bs = (int)sizeof(kd_block_q4_1);
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(p + 4))),
                                              _mm_loadu_si128((const __m128i *)(p + bs + 4)), 1);
    __m512i w = _mm512_shuffle_i64x2(_mm512_castsi256_si512(v), _mm512_castsi256_si512(v), 0x50);
    w = _mm512_and_si512(_mm512_mask_srli_epi16(w, 0xFF00FF00u, w, 4), _mm512_set1_epi8(0x0F));
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(a->xs + KD_QK * b));
}

/* Q4_1 in windows of 4 blocks: block k's sum in lane 4k, 1 in lane 4k + 1, times
 * dw_k·dx_k and m_k·s_k (s: Q8_1's F16 d·Σqx). Blocks past the last window go to the
 * AVX2 kernel. */
TVNNI static float dot8_q4_1_vnni(const uint8_t *p, const void *xq, int64_t n) {
    const int bs = (int)sizeof(kd_block_q4_1);
    const int64_t nb = n / KD_QK;
    const act_q8b *y = xq;
    const vnni_act a = vnni_view((void *)xq, n);
    const __m512i sidx = _mm512_setr_epi32(0, 1, 0, 0, 2, 3, 0, 0, 4, 5, 0, 0, 6, 7, 0, 0);
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4, p += 4 * bs) {
        const __m512i u = pairs_to_blocks(q4_1_pair(p, &a, b), q4_1_pair(p + 2 * bs, &a, b + 2));
        const __m512i t = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, _MM_PERM_BADC));
        __m512i sum = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
        sum = _mm512_mask_mov_epi32(sum, 0x2222, _mm512_set1_epi32(1));
        const __m256 f = _mm256_cvtph_ps(_mm_setr_epi32((int)rd32(p), (int)rd32(p + bs), (int)rd32(p + 2 * bs),
                                                        (int)rd32(p + 3 * bs)));
        const __m256 g = _mm256_setr_ps(y[b].d, y[b].s, y[b + 1].d, y[b + 1].s, y[b + 2].d, y[b + 2].s, y[b + 3].d,
                                        y[b + 3].s);
        const __m512 s = _mm512_maskz_permutexvar_ps(0x3333, sidx, _mm512_castps256_ps512(_mm256_mul_ps(f, g)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, acc);
    }
    float r = _mm512_reduce_add_ps(acc);
    if (b < nb) r += dot8_q4_1_256(p, y + b, (nb - b) * KD_QK);
    return r;
}

/* ---- AVX-512 VNNI: Q4_K and Q6_K ------------------------------------------------------- */
/* One super-block (256 levels) is four vpdpbusd of 64 unsigned weight bytes against 64
 * activation levels; each int32 lane then holds a sum of 4 products, which fits in int16
 * (Q4_K: ≤ 4·15·127, Q6_K: ≤ 4·63·127), so vpdpwssd with the sub-block scale in the low
 * word of a lane (high word 0) multiplies it exactly and accumulates. The lanes of a
 * super-block are then summed in integers (with the min / −32 terms, also integers),
 * 4 super-blocks at a time, and each super-block's sum becomes a float once and is
 * multiplied by its scales, as in the scalar reference. A window of fewer than 4
 * super-blocks (the tail) runs the same code with the missing ones zero. */

/* s0..s3 (16 int32 lanes each) → 128-bit lane k holds 4 partial sums of s_k. */
TVNNI static inline __m512i four_to_lanes(__m512i s0, __m512i s1, __m512i s2, __m512i s3) {
    return pairs_to_blocks(pairs_to_blocks(s0, s1), pairs_to_blocks(s2, s3));
}

/* Q4_K super-block: S (16 lanes) = the pieces of Σ_j sc_j·Σ q·qx; M (8 lanes) = the pieces
 * of Σ_j m_j·(bsum_2j + bsum_2j+1). Chunk c (32 bytes) holds sub-block 2c in its low
 * nibbles and 2c + 1 in its high ones: broadcast to both halves of a zmm, the upper half
 * shifted right by 4, it lines up with the 64 levels 64c.. of the activations. */
TVNNI static inline void q4_k_sb(const uint8_t *p, const act_q8k *y, __m512i *S, __m256i *M) {
    uint8_t sc[8], m[8];
    kd_q4k_unpack(p + 4, sc, m);
    uint64_t scw, mw;
    memcpy(&scw, sc, 8);
    memcpy(&mw, m, 8);
    const __m512i sc32 = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)scw));
    const __m512i half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i acc = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        __m512i w = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 16 + 32 * c)));
        w = _mm512_and_si512(_mm512_mask_srli_epi16(w, 0xFFFF0000u, w, 4), m4);
        const __m512i t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(y->qs + 64 * c));
        const __m512i scv = _mm512_permutexvar_epi32(_mm512_add_epi32(half, _mm512_set1_epi32(2 * c)), sc32);
        acc = _mm512_dpwssd_epi32(acc, t, scv);
    }
    *S = acc;
    const __m256i pairs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), _mm256_set1_epi16(1));
    *M = _mm256_madd_epi16(pairs, _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mw)));
}

/* m ≤ 4 super-blocks of Q4_K: lane 4k = dw_k·dx_k·float(S_k) − dmin_k·dx_k·float(M_k) pieces. */
TVNNI static inline __m512 q4_k_window(const uint8_t *p, const act_q8k *y, int m) {
    const int bs = (int)sizeof(kd_block_q4_k);
    __m512i s[4];
    __m256i mm[4];
    uint32_t dd[4];
    float dx[8];
    for (int k = 0; k < 4; k++) {
        if (k < m) {
            q4_k_sb(p + k * bs, y + k, &s[k], &mm[k]);
            dd[k] = rd32(p + k * bs);
            dx[2 * k] = dx[2 * k + 1] = y[k].d;
        } else {
            s[k] = _mm512_setzero_si512();
            mm[k] = _mm256_setzero_si256();
            dd[k] = 0;
            dx[2 * k] = dx[2 * k + 1] = 0.0f;
        }
    }
    const __m512i u = four_to_lanes(s[0], s[1], s[2], s[3]);
    const __m512i mu = pairs_to_blocks(_mm512_inserti64x4(_mm512_castsi256_si512(mm[0]), mm[1], 1),
                                       _mm512_inserti64x4(_mm512_castsi256_si512(mm[2]), mm[3], 1));
    /* per 128-bit lane: [S S M M] pieces → lane 0: S, lane 2: M */
    const __m512i v = _mm512_add_epi32(_mm512_unpacklo_epi64(u, mu), _mm512_unpackhi_epi64(u, mu));
    const __m512i w = _mm512_add_epi32(v, _mm512_shuffle_epi32(v, _MM_PERM_CDAB));
    const __m256 f = _mm256_cvtph_ps(_mm_setr_epi32((int)dd[0], (int)dd[1], (int)dd[2], (int)dd[3]));
    const __m256 neg = _mm256_setr_ps(0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f);
    const __m256 sc = _mm256_xor_ps(_mm256_mul_ps(f, _mm256_loadu_ps(dx)), neg);   /* dx·d, −dx·dmin */
    const __m512i sidx = _mm512_setr_epi32(0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0);
    const __m512 scale = _mm512_maskz_permutexvar_ps(0x5555, sidx, _mm512_castps256_ps512(sc));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(w), scale);
}

TVNNI static float dot8_q4_k_vnni(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8k *y = xq;
    const int64_t nb = n / KD_QK_K;
    const int bs = (int)sizeof(kd_block_q4_k);
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) acc = _mm512_add_ps(acc, q4_k_window(p + b * bs, y + b, 4));
    if (b < nb) acc = _mm512_add_ps(acc, q4_k_window(p + b * bs, y + b, (int)(nb - b)));
    return _mm512_reduce_add_ps(acc);
}

/* Q6_K super-block: Σ_k sc_k·(Σ q6·qx − 32·bsum_k) in 16 lanes, q6 unsigned (0..63). Per
 * half h, the 64 bytes ql give the low nibbles of parts 0, 1 (& 0x0F) and 2, 3 (>> 4); qh,
 * broadcast and its upper copy shifted right by 2, gives their high 2 bits at bits 4, 5
 * (<< 4 for parts 0, 1; as is for 2, 3). Lane L of a dot covers group 8h + 4j + L/4. */
TVNNI static inline __m512i q6_k_sb(const uint8_t *p, const act_q8k *y) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 192)));
    const __m512i sc32 = _mm512_cvtepu16_epi32(sc16);   /* [sc, 0] word pairs */
    const __m512i quad = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    __m512i acc = _mm512_setzero_si512();
    for (int h = 0; h < 2; h++) {
        const __m512i l = _mm512_loadu_si512(p + 64 * h);
        __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h)));
        qh = _mm512_mask_srli_epi16(qh, 0xFFFF0000u, qh, 2);
        const __m512i q01 = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30));
        const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_and_si512(qh, m30));
        const __m512i t01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q01, _mm512_loadu_si512(y->qs + 128 * h));
        const __m512i t23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q23, _mm512_loadu_si512(y->qs + 128 * h + 64));
        acc = _mm512_dpwssd_epi32(acc, t01, _mm512_permutexvar_epi32(_mm512_add_epi32(quad, _mm512_set1_epi32(8 * h)), sc32));
        acc = _mm512_dpwssd_epi32(acc, t23,
                                  _mm512_permutexvar_epi32(_mm512_add_epi32(quad, _mm512_set1_epi32(8 * h + 4)), sc32));
    }
    const __m256i bias = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), sc16);
    return _mm512_sub_epi32(acc, _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_slli_epi32(bias, 5), 0));
}

TVNNI static inline __m512 q6_k_window(const uint8_t *p, const act_q8k *y, int m) {
    const int bs = (int)sizeof(kd_block_q6_k);
    __m512i s[4];
    float d[4];
    for (int k = 0; k < 4; k++) {
        if (k < m) {
            s[k] = q6_k_sb(p + k * bs, y + k);
            d[k] = h2f(p + k * bs + 208) * y[k].d;
        } else {
            s[k] = _mm512_setzero_si512();
            d[k] = 0.0f;
        }
    }
    const __m512i u = four_to_lanes(s[0], s[1], s[2], s[3]);
    const __m512i t = _mm512_add_epi32(u, _mm512_shuffle_epi32(u, _MM_PERM_BADC));
    const __m512i sum = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
    const __m512i sidx = _mm512_setr_epi32(0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0);
    const __m512 scale = _mm512_maskz_permutexvar_ps(0x1111, sidx, _mm512_castps128_ps512(_mm_loadu_ps(d)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale);
}

TVNNI static float dot8_q6_k_vnni(const uint8_t *p, const void *xq, int64_t n) {
    const act_q8k *y = xq;
    const int64_t nb = n / KD_QK_K;
    const int bs = (int)sizeof(kd_block_q6_k);
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) acc = _mm512_add_ps(acc, q6_k_window(p + b * bs, y + b, 4));
    if (b < nb) acc = _mm512_add_ps(acc, q6_k_window(p + b * bs, y + b, (int)(nb - b)));
    return _mm512_reduce_add_ps(acc);
}

/* ---- the product -------------------------------------------------------------------------- */

static dot8_fn pick8(int32_t wtype) {
    const kd_isa isa = kd_isa_get();
    const int simd = isa >= KD_ISA_AVX2, vnni = isa >= KD_ISA_AVX512_VNNI;
    switch (wtype) {
    case KD_GGML_TYPE_Q8_0: return vnni ? dot8_q8_0_vnni : simd ? dot8_q8_0_256 : dot8_q8_0_ref;
    case KD_GGML_TYPE_Q4_0: return vnni ? dot8_q4_0_vnni : simd ? dot8_q4_0_256 : dot8_q4_0_ref;
    case KD_GGML_TYPE_Q4_1: return vnni ? dot8_q4_1_vnni : simd ? dot8_q4_1_256 : dot8_q4_1_ref;
    case KD_GGML_TYPE_Q4_K: return vnni ? dot8_q4_k_vnni : simd ? dot8_q4_k_256 : dot8_q4_k_ref;
    case KD_GGML_TYPE_Q6_K: return vnni ? dot8_q6_k_vnni : simd ? dot8_q6_k_256 : dot8_q6_k_ref;
    }
    abort();   /* callers check kd_q8_supported */
}

void kd_qmatvec_q8(const kd_qmat *W, const void *xq, float *y) {
    const dot8_fn f = pick8(W->type);
    const uint8_t *base = W->data;
    const int64_t rows = W->rows, cols = W->cols;
    const int64_t ahead = kd_prefetch_rows(W);
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 15))
    for (int64_t r = 0; r < rows; r++) {
        kd_prefetch_row(W, r + ahead);
        y[r] = f(base + (size_t)r * W->row_bytes, xq, cols);
    }
}
