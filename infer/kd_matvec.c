/*
 * kd_matvec.c — dot products, matrix-vector and matrix-matrix products with
 * weights in ggml types (see kd_matvec.h).
 *
 * Each SIMD kernel follows the scalar reference (kd_vec_dot_q): per block (or
 * per group sharing one scale) it sums level·x in float lanes, then multiplies
 * by the block's scale and adds into the accumulator; the Q4_1 / Q4_K minimum
 * terms are min·Σx. Levels become floats exactly (they are small integers),
 * so the kernels differ from the reference only in summation order.
 *
 * Byte layouts: kd_quant.h and docs/quantization.md#ggml-block-formats. The kernels are compiled for their
 * instruction set with target attributes, so the library itself needs no
 * -march flag and runs on any x86-64; kd_isa_get() picks one at run time.
 */
#include "infer/kd_matvec.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_cpu.h"
#include "core/kd_fp16.h"
#include "core/kd_linalg.h"
#include "format/kd_quant.h"

/* ---- instruction set choice ---------------------------------------------------------- */

static int g_isa = -1;

kd_isa kd_isa_best(void) {
    static int best = -1;
    if (best < 0) {
        kd_cpu_info cpu;
        kd_cpu_detect(&cpu);
        best = KD_ISA_SCALAR;
        if (cpu.avx2 && cpu.fma && cpu.f16c) best = KD_ISA_AVX2;
        if (best == KD_ISA_AVX2 && cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq) best = KD_ISA_AVX512;
        if (best == KD_ISA_AVX512 && cpu.avx512_vnni) best = KD_ISA_AVX512_VNNI;
    }
    return (kd_isa)best;
}

const char *kd_isa_name(kd_isa isa) {
    return isa == KD_ISA_AVX512_VNNI ? "avx512vnni" : isa == KD_ISA_AVX512 ? "avx512" : isa == KD_ISA_AVX2 ? "avx2" : "scalar";
}

kd_isa kd_isa_set(kd_isa isa) {
    kd_isa best = kd_isa_best();
    g_isa = (int)(isa < best ? isa : best);
    return (kd_isa)g_isa;
}

kd_isa kd_isa_get(void) {
    if (g_isa < 0) {
        kd_isa want = kd_isa_best();
        const char *e = getenv("KD_ISA");
        if (e && !strcmp(e, "scalar")) want = KD_ISA_SCALAR;
        else if (e && !strcmp(e, "avx2")) want = KD_ISA_AVX2;
        else if (e && !strcmp(e, "avx512")) want = KD_ISA_AVX512;
        kd_isa_set(want);
    }
    return (kd_isa)g_isa;
}

int kd_qmat_init(kd_qmat *m, int32_t type, int64_t rows, int64_t cols, const void *data, kd_err *err) {
    if (rows < 0 || cols <= 0) return kd_errf(err, "matrix of %lld x %lld", (long long)rows, (long long)cols);
    if (kd_quant_check(type, cols, err)) return -1;
    *m = (kd_qmat){type, rows, cols, kd_quant_row_size(type, cols), data, NULL};
    return 0;
}

static inline uint16_t rd16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

typedef float (*dot_fn)(const void *row, const float *x, int64_t n);

/* ---- AVX-512 ------------------------------------------------------------------------- */

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

T512 static inline __m512 ld_u8x16(const uint8_t *p) {   /* 16 unsigned bytes as int32 lanes */
    return _mm512_castsi512_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
#define I512(v) _mm512_castps_si512(v)
T512 static inline __m256i ld_u8x8_256(const uint8_t *p) {   /* 8 unsigned bytes as int32 lanes */
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

T512 static inline float dot_f32_512(const void *row, const float *x, int64_t n) {
    const float *w = row;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* F16 and BF16: 16 halves → 16 floats. */
T512 static inline __m512 cvt_f16_512(__m256i h) { return _mm512_cvtph_ps(h); }
T512 static inline __m512 cvt_bf16_512(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#define DOT_HALF_512(NAME, CVT)                                                                     \
    T512 static float NAME(const void *row, const float *x, int64_t n) {                            \
        const uint16_t *w = row;                                                                    \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;                                                   \
        int64_t i = 0;                                                                              \
        for (; i + 32 <= n; i += 32) {                                                              \
            a0 = _mm512_fmadd_ps(CVT(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), a0); \
            a1 = _mm512_fmadd_ps(CVT(_mm256_loadu_si256((const __m256i *)(w + i + 16))),            \
                                 _mm512_loadu_ps(x + i + 16), a1);                                  \
        }                                                                                           \
        for (; i < n; i += 16) {                                                                    \
            __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);       \
            a0 = _mm512_fmadd_ps(CVT(_mm256_maskz_loadu_epi16(m, w + i)), _mm512_maskz_loadu_ps(m, x + i), a0); \
        }                                                                                           \
        return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));                                         \
    }
DOT_HALF_512(dot_f16_512, cvt_f16_512)
DOT_HALF_512(dot_bf16_512, cvt_bf16_512)

T512 static float dot_q8_0_512(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q8_0), x += KD_QK) {
        __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2))));
        __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18))));
        __m512 s = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x)));
        acc = _mm512_fmadd_ps(s, _mm512_set1_ps(_cvtsh_ss(rd16(p))), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* The F16 values at p, p + bs, ..., p + (m − 1)·bs (all within the first 128 bytes:
 * (m − 1)·bs/2 < 64 words) as floats in d[0..m): picked out of two masked loads
 * (nothing past the last one is read) with one vpermt2w, converted together. Kernels
 * then broadcast d[k] from memory, a plain load, instead of converting per block. */
T512 static inline void f16_window(const uint8_t *p, int bs, int m, float d[16]) {
    static const uint16_t iota[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
    const int words = (m - 1) * (bs / 2) + 1;
    const __mmask32 k0 = words >= 32 ? 0xFFFFFFFFu : (1u << words) - 1;
    const __mmask32 k1 = words <= 32 ? 0 : words >= 64 ? 0xFFFFFFFFu : (1u << (words - 32)) - 1;
    const __m512i w0 = _mm512_maskz_loadu_epi16(k0, p), w1 = _mm512_maskz_loadu_epi16(k1, p + 64);
    const __m512i idx = _mm512_mullo_epi16(_mm512_loadu_si512(iota), _mm512_set1_epi16((short)(bs / 2)));
    _mm512_storeu_ps(d, _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(w0, idx, w1))));
}

/* Q4_0 / Q4_1: a 16-entry table holds the block's dequantized levels ((q − 8)·d, or
 * q·d + m: each exactly as kd_dequantize_row rounds it) and vpermps looks the nibbles
 * up (it reads the low 4 bits of each lane, so the low nibble needs no mask). The
 * scales come 8 blocks at a time from f16_window. */
#define Q4_STEP_512(TAB, QS, X, A, B)                                                               \
    do {                                                                                            \
        const __m512i v_ = I512(ld_u8x16(QS));                                                      \
        A = _mm512_fmadd_ps(_mm512_permutexvar_ps(v_, TAB), _mm512_loadu_ps(X), A);                 \
        B = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v_, 4), TAB), _mm512_loadu_ps((X) + 16), B); \
    } while (0)

T512 static float dot_q4_0_512(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    const int bs = (int)sizeof(kd_block_q4_0);
    const int64_t nb = n / KD_QK;
    const __m512 lv = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    float d[16];
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int m = nb - b0 < 8 ? (int)(nb - b0) : 8;
        f16_window(p, bs, m, d);
        for (int k = 0; k < m; k++, p += bs, x += KD_QK) {
            const __m512 tab = _mm512_mul_ps(lv, _mm512_set1_ps(d[k]));
            Q4_STEP_512(tab, p + 2, x, acc0, acc1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

T512 static float dot_q4_1_512(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    const int bs = (int)sizeof(kd_block_q4_1);
    const int64_t nb = n / KD_QK;
    const __m512 lv = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    float d[16], mn[16];
    for (int64_t b0 = 0; b0 < nb; b0 += 6) {   /* 6 blocks of 20 bytes: the last d at byte 100, its m at 102 */
        const int m = nb - b0 < 6 ? (int)(nb - b0) : 6;
        f16_window(p, bs, m, d);
        f16_window(p + 2, bs, m, mn);
        for (int k = 0; k < m; k++, p += bs, x += KD_QK) {
            const __m512 tab = _mm512_fmadd_ps(lv, _mm512_set1_ps(d[k]), _mm512_set1_ps(mn[k]));
            Q4_STEP_512(tab, p + 4, x, acc0, acc1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Q4_K: per sub-block j a table of q·(d·sc_j) − dmin·m_j (q = 0..15), the exact dequantized levels. */
T512 static float dot_q4_k_512(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    const __m512 lv = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q4_k), x += KD_QK_K) {
        uint8_t sc[8], mn[8];
        kd_q4k_unpack(p + 4, sc, mn);
        float ds[8], dm[8];
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(rd16(p))), dmin = _mm256_set1_ps(-_cvtsh_ss(rd16(p + 2)));
        _mm256_storeu_ps(ds, _mm256_mul_ps(d, _mm256_cvtepi32_ps(ld_u8x8_256(sc))));
        _mm256_storeu_ps(dm, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(ld_u8x8_256(mn))));
        const uint8_t *qs = p + 16;
        for (int c = 0; c < 4; c++) {
            const __m512 t0 = _mm512_fmadd_ps(lv, _mm512_set1_ps(ds[2 * c]), _mm512_set1_ps(dm[2 * c]));
            const __m512 t1 = _mm512_fmadd_ps(lv, _mm512_set1_ps(ds[2 * c + 1]), _mm512_set1_ps(dm[2 * c + 1]));
            const __m512i v0 = I512(ld_u8x16(qs + 32 * c)), v1 = I512(ld_u8x16(qs + 32 * c + 16));
            const float *xc = x + 64 * c;
            acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v0, t0), _mm512_loadu_ps(xc), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(v1, t0), _mm512_loadu_ps(xc + 16), acc1);
            acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), t1), _mm512_loadu_ps(xc + 32), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), t1), _mm512_loadu_ps(xc + 48), acc1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* Q6_K: the 128 levels of a half (minus 32) are assembled with byte operations on
 * whole vectors — low nibbles of ql[0..63] are elements 0..63 and their high nibbles
 * elements 64..127; qh's bit pairs 0..3 supply the high bits — into a stack buffer,
 * then each group of 16 (one scale) is widened to floats, scaled by d·scale (exact)
 * and multiplied with x. */
T512 static float dot_q6_k_512(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    const __m512i m4 = _mm512_set1_epi8(0x0F), k32 = _mm512_set1_epi8(32);
    const __m256i m2 = _mm256_set1_epi8(3);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    int8_t q[128];
    float ds[16];
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q6_k), x += KD_QK_K) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(rd16(p + 208)));
        _mm512_storeu_ps(ds, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                  _mm_loadu_si128((const __m128i *)(p + 192))))));
        for (int h = 0; h < 2; h++) {
            const __m512i ql = _mm512_loadu_si512(p + 64 * h);
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
            const __m512i ha = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(qh, m2)),
                                                  _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 1);
            const __m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2)),
                                                  _mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 1);
            const __m512i qa = _mm512_sub_epi8(_mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_slli_epi16(ha, 4)), k32);
            const __m512i qb = _mm512_sub_epi8(
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_slli_epi16(hb, 4)), k32);
            _mm512_storeu_si512(q, qa);
            _mm512_storeu_si512(q + 64, qb);
            const float *xh = x + 128 * h;
            const float *dh = ds + 8 * h;
            for (int g = 0; g < 8; g += 2) {
                __m512 w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 16 * g)))),
                                          _mm512_set1_ps(dh[g]));
                __m512 w1 = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 16 * g + 16)))),
                    _mm512_set1_ps(dh[g + 1]));
                acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xh + 16 * g), acc0);
                acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xh + 16 * g + 16), acc1);
            }
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* ---- AVX2 ---------------------------------------------------------------------------- */

#define T256 __attribute__((target("avx2,fma,f16c")))

T256 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
T256 static inline __m256i ld_u8x8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
T256 static inline __m256i ld_i8x8(const uint8_t *p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

T256 static inline float dot_f32_256(const void *row, const float *x, int64_t n) {
    const float *w = row;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) {
        float v;
        memcpy(&v, w + i, 4);
        s += v * x[i];
    }
    return s;
}

T256 static inline __m256 cvt_f16_256(__m128i h) { return _mm256_cvtph_ps(h); }
T256 static inline __m256 cvt_bf16_256(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#define DOT_HALF_256(NAME, CVT, SCALAR)                                                             \
    T256 static float NAME(const void *row, const float *x, int64_t n) {                            \
        const uint16_t *w = row;                                                                    \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;                                                   \
        int64_t i = 0;                                                                              \
        for (; i + 16 <= n; i += 16) {                                                              \
            a0 = _mm256_fmadd_ps(CVT(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0); \
            a1 = _mm256_fmadd_ps(CVT(_mm_loadu_si128((const __m128i *)(w + i + 8))), _mm256_loadu_ps(x + i + 8), a1); \
        }                                                                                           \
        for (; i + 8 <= n; i += 8)                                                                  \
            a0 = _mm256_fmadd_ps(CVT(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0); \
        float s = hsum256(_mm256_add_ps(a0, a1));                                                   \
        for (; i < n; i++) s += SCALAR(rd16((const uint8_t *)(w + i))) * x[i];                      \
        return s;                                                                                   \
    }
DOT_HALF_256(dot_f16_256, cvt_f16_256, kd_fp16_to_f32)
DOT_HALF_256(dot_bf16_256, cvt_bf16_256, kd_bf16_to_f32)

T256 static float dot_q8_0_256(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q8_0), x += KD_QK) {
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(ld_i8x8(p + 2)), _mm256_loadu_ps(x));
        for (int k = 1; k < 4; k++)
            s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ld_i8x8(p + 2 + 8 * k)), _mm256_loadu_ps(x + 8 * k), s);
        acc = _mm256_fmadd_ps(s, _mm256_set1_ps(_cvtsh_ss(rd16(p))), acc);
    }
    return hsum256(acc);
}

/* Q4_0 and Q4_1: bytes 0..7 and 8..15 hold elements 0..15 (low) and 16..31 (high). */
T256 static inline __m256 q4_block_256(const uint8_t *qs, const float *x, int off, __m256 *xsum) {
    const __m256i lo = _mm256_set1_epi32(0x0F), o = _mm256_set1_epi32(off);
    __m256i v0 = ld_u8x8(qs), v1 = ld_u8x8(qs + 8);
    __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
           x3 = _mm256_loadu_ps(x + 24);
    __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v0, lo), o)), x0);
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(v1, lo), o)), x1, s);
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v0, 4), o)), x2, s);
    s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(v1, 4), o)), x3, s);
    if (xsum) *xsum = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
    return s;
}

T256 static float dot_q4_0_256(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q4_0), x += KD_QK)
        acc = _mm256_fmadd_ps(q4_block_256(p + 2, x, 8, NULL), _mm256_set1_ps(_cvtsh_ss(rd16(p))), acc);
    return hsum256(acc);
}

T256 static float dot_q4_1_256(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    __m256 acc = _mm256_setzero_ps(), accm = acc, xs;
    for (int64_t b = 0; b < n / KD_QK; b++, p += sizeof(kd_block_q4_1), x += KD_QK) {
        acc = _mm256_fmadd_ps(q4_block_256(p + 4, x, 0, &xs), _mm256_set1_ps(_cvtsh_ss(rd16(p))), acc);
        accm = _mm256_fmadd_ps(xs, _mm256_set1_ps(_cvtsh_ss(rd16(p + 2))), accm);
    }
    return hsum256(_mm256_add_ps(acc, accm));
}

T256 static float dot_q4_k_256(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    const __m256i lo = _mm256_set1_epi32(0x0F);
    __m256 acc = _mm256_setzero_ps(), accm = acc;
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q4_k), x += KD_QK_K) {
        const float d = _cvtsh_ss(rd16(p)), dmin = _cvtsh_ss(rd16(p + 2));
        const uint8_t *scales = p + 4, *qs = p + 16;
        for (int j = 0; j < 8; j++) {   /* sub-block j: low (j even) or high nibbles of qs[32·(j/2) ..] */
            int sc, m;
            kd_q4k_scale_min(j, scales, &sc, &m);
            const uint8_t *q = qs + 32 * (j / 2);
            const float *xj = x + 32 * j;
            __m256 s = _mm256_setzero_ps(), xs = s;
            for (int k = 0; k < 4; k++) {
                __m256i v = ld_u8x8(q + 8 * k);
                v = (j & 1) ? _mm256_srli_epi32(v, 4) : _mm256_and_si256(v, lo);
                __m256 xv = _mm256_loadu_ps(xj + 8 * k);
                s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), xv, s);
                xs = _mm256_add_ps(xs, xv);
            }
            acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d * (float)sc), acc);
            accm = _mm256_fmadd_ps(xs, _mm256_set1_ps(dmin * (float)m), accm);
        }
    }
    return hsum256(acc) - hsum256(accm);
}

T256 static float dot_q6_k_256(const void *row, const float *x, int64_t n) {
    const uint8_t *p = row;
    const __m256i m4 = _mm256_set1_epi32(0x0F), m2 = _mm256_set1_epi32(3), k32 = _mm256_set1_epi32(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / KD_QK_K; b++, p += sizeof(kd_block_q6_k), x += KD_QK_K) {
        const float d = _cvtsh_ss(rd16(p + 208));
        const int8_t *scales = (const int8_t *)(p + 192);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = p + 64 * h, *qh = p + 128 + 32 * h;
            const float *xh = x + 128 * h;
            for (int g = 0; g < 2; g++) {   /* l in [16g, 16g + 16): one scale per part */
                __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
                for (int k = 0; k < 2; k++) {
                    const int l = 16 * g + 8 * k;
                    __m256i a = ld_u8x8(ql + l), bb = ld_u8x8(ql + 32 + l), hh = ld_u8x8(qh + l);
                    __m256i q[4];
                    q[0] = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_slli_epi32(_mm256_and_si256(hh, m2), 4));
                    q[1] = _mm256_or_si256(_mm256_and_si256(bb, m4),
                                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 2), m2), 4));
                    q[2] = _mm256_or_si256(_mm256_srli_epi32(a, 4),
                                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 4), m2), 4));
                    q[3] = _mm256_or_si256(_mm256_srli_epi32(bb, 4), _mm256_slli_epi32(_mm256_srli_epi32(hh, 6), 4));
                    for (int part = 0; part < 4; part++)
                        s[part] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[part], k32)),
                                                  _mm256_loadu_ps(xh + 32 * part + l), s[part]);
                }
                for (int part = 0; part < 4; part++)
                    acc = _mm256_fmadd_ps(s[part], _mm256_set1_ps(d * (float)scales[8 * h + 2 * part + g]), acc);
            }
        }
    }
    return hsum256(acc);
}

/* ---- axpy (attention's weighted sum of values) -------------------------------------------- */

T512 static inline void axpy_512(int64_t n, float a, const float *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

T256 static inline void axpy_256(int64_t n, float a, const float *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

void kd_axpy(int64_t n, float a, const float *x, float *y) {
    const kd_isa isa = kd_isa_get();
    if (isa >= KD_ISA_AVX512) axpy_512(n, a, x, y);
    else if (isa == KD_ISA_AVX2) axpy_256(n, a, x, y);
    else
        for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* ---- rows of a cache: attention's scores and weighted sums ------------------------------------
 * The same arithmetic as kd_qdot(F32) per row and kd_axpy per row from y = 0, without a call
 * per row (heads of 16–128 floats make the calls cost more than the products); the sums keep
 * y in registers over all rows. */

T512 static void dot_rows_512(const float *K, int64_t stride, const float *q, int64_t D, int64_t n, float scale,
                              float *out) {
    for (int64_t s = 0; s < n; s++) out[s] = dot_f32_512(K + s * stride, q, D) * scale;
}

T256 static void dot_rows_256(const float *K, int64_t stride, const float *q, int64_t D, int64_t n, float scale,
                              float *out) {
    for (int64_t s = 0; s < n; s++) out[s] = dot_f32_256(K + s * stride, q, D) * scale;
}

T512 static void sum_rows_512(const float *V, int64_t stride, const float *p, int64_t D, int64_t n, float *y) {
    for (int64_t d0 = 0; d0 < D; d0 += 128) {   /* 8 registers of 16 */
        const int64_t w = D - d0 < 128 ? D - d0 : 128, nv = (w + 15) / 16;
        __mmask16 m[8];
        __m512 a[8];
        for (int j = 0; j < 8; j++) {
            const int64_t left = w - 16 * j;
            m[j] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            a[j] = _mm512_setzero_ps();
        }
        for (int64_t s = 0; s < n; s++) {
            const __m512 ps = _mm512_set1_ps(p[s]);
            const float *v = V + s * stride + d0;
            for (int j = 0; j < nv; j++) a[j] = _mm512_fmadd_ps(ps, _mm512_maskz_loadu_ps(m[j], v + 16 * j), a[j]);
        }
        for (int j = 0; j < nv; j++) _mm512_mask_storeu_ps(y + d0 + 16 * j, m[j], a[j]);
    }
}

T256 static void sum_rows_256(const float *V, int64_t stride, const float *p, int64_t D, int64_t n, float *y) {
    memset(y, 0, (size_t)D * sizeof *y);
    for (int64_t s = 0; s < n; s++) axpy_256(D, p[s], V + s * stride, y);
}

/* All heads of one query against rows s < n, row by row (each cache row read once, in order). */
T512 static void attn_scores_512(const float *K, int64_t stride, const float *q, int64_t H, int64_t G, int64_t D,
                                 int64_t n, float scale, float *S, int64_t lds) {
    for (int64_t s = 0; s < n; s++)
        for (int64_t h = 0; h < H; h++) S[h * lds + s] = dot_f32_512(K + s * stride + (h / G) * D, q + h * D, D) * scale;
}
T256 static void attn_scores_256(const float *K, int64_t stride, const float *q, int64_t H, int64_t G, int64_t D,
                                 int64_t n, float scale, float *S, int64_t lds) {
    for (int64_t s = 0; s < n; s++)
        for (int64_t h = 0; h < H; h++) S[h * lds + s] = dot_f32_256(K + s * stride + (h / G) * D, q + h * D, D) * scale;
}

void kd_attn_scores(const float *K, int64_t stride, const float *q, int64_t H, int64_t G, int64_t D, int64_t n,
                    float scale, float *S, int64_t lds) {
    const kd_isa isa = kd_isa_get();
    if (isa >= KD_ISA_AVX512) attn_scores_512(K, stride, q, H, G, D, n, scale, S, lds);
    else if (isa == KD_ISA_AVX2) attn_scores_256(K, stride, q, H, G, D, n, scale, S, lds);
    else
        for (int64_t s = 0; s < n; s++)
            for (int64_t h = 0; h < H; h++)
                S[h * lds + s] = kd_vec_dot_q(KD_GGML_TYPE_F32, K + s * stride + (h / G) * D, q + h * D, D) * scale;
}

T512 static void attn_values_512(const float *V, int64_t stride, const float *P, int64_t lds, int64_t H, int64_t G,
                                 int64_t D, int64_t n, float *out) {
    for (int64_t s = 0; s < n; s++)
        for (int64_t h = 0; h < H; h++) axpy_512(D, P[h * lds + s], V + s * stride + (h / G) * D, out + h * D);
}
T256 static void attn_values_256(const float *V, int64_t stride, const float *P, int64_t lds, int64_t H, int64_t G,
                                 int64_t D, int64_t n, float *out) {
    for (int64_t s = 0; s < n; s++)
        for (int64_t h = 0; h < H; h++) axpy_256(D, P[h * lds + s], V + s * stride + (h / G) * D, out + h * D);
}

void kd_attn_values(const float *V, int64_t stride, const float *P, int64_t lds, int64_t H, int64_t G, int64_t D,
                    int64_t n, float *out) {
    memset(out, 0, (size_t)(H * D) * sizeof *out);
    const kd_isa isa = kd_isa_get();
    if (isa >= KD_ISA_AVX512) attn_values_512(V, stride, P, lds, H, G, D, n, out);
    else if (isa == KD_ISA_AVX2) attn_values_256(V, stride, P, lds, H, G, D, n, out);
    else
        for (int64_t s = 0; s < n; s++)
            for (int64_t h = 0; h < H; h++) kd_axpy(D, P[h * lds + s], V + s * stride + (h / G) * D, out + h * D);
}

/* ---- softmax of attention scores ------------------------------------------------------------
 * exp(x) for x ≤ 0 as Cephes' expf: x = n·ln2 + r (ln2 in two parts), a degree-7
 * polynomial for e^r, 2^n put in the exponent bits (x is clamped at −87, where e^x is
 * below 2^−125 and a softmax term no longer counts). The AVX-512 and AVX2 versions do
 * the same operations, so they give the same bits; within 2 ulp of expf. */
#define EXP_LO (-87.0f)
#define EXP_C1 0.693359375f
#define EXP_C2 (-2.12194440e-4f)

T512 static inline __m512 exp_neg_512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(EXP_LO));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C1), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_C2), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

T256 static inline __m256 exp_neg_256(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(EXP_LO));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C1), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_C2), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* One row: max, then exp(x − max) and their sum in 16 lanes (a fixed lane order), then the scaling. */
T512 static void softmax_512(float *x, int64_t n) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(x + i));
    float m = _mm512_reduce_max_ps(mv);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    const __m512 vm = _mm512_set1_ps(m);
    __m512 sv = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 e = exp_neg_512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        sv = _mm512_add_ps(sv, e);
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = _mm512_maskz_mov_ps(k, exp_neg_512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm)));
        _mm512_mask_storeu_ps(x + i, k, e);
        sv = _mm512_add_ps(sv, e);
    }
    float lanes[16], sum = 0.0f;
    _mm512_storeu_ps(lanes, sv);
    for (int j = 0; j < 16; j++) sum += lanes[j];
    const __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= 1.0f / sum;
}

T256 static void softmax_256(float *x, int64_t n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float lanes[16];
    _mm256_storeu_ps(lanes, mv);
    float m = lanes[0];
    for (int j = 1; j < 8; j++) m = lanes[j] > m ? lanes[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    const __m256 vm = _mm256_set1_ps(m);
    /* the AVX-512 lane order: two 8-lane sums stand for lanes 0–7 and 8–15 of each 16 */
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m256 e0 = exp_neg_256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        const __m256 e1 = exp_neg_256(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm));
        _mm256_storeu_ps(x + i, e0);
        _mm256_storeu_ps(x + i + 8, e1);
        s0 = _mm256_add_ps(s0, e0);
        s1 = _mm256_add_ps(s1, e1);
    }
    if (i < n) {   /* the tail through a zero-padded block of 16 */
        float t[16] = {0};
        const int64_t r = n - i;
        memcpy(t, x + i, (size_t)r * sizeof(float));
        const __m256 e0 = exp_neg_256(_mm256_sub_ps(_mm256_loadu_ps(t), vm));
        const __m256 e1 = exp_neg_256(_mm256_sub_ps(_mm256_loadu_ps(t + 8), vm));
        _mm256_storeu_ps(t, e0);
        _mm256_storeu_ps(t + 8, e1);
        for (int j = (int)r; j < 16; j++) t[j] = 0.0f;
        memcpy(x + i, t, (size_t)r * sizeof(float));
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(t));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(t + 8));
    }
    _mm256_storeu_ps(lanes, s0);
    _mm256_storeu_ps(lanes + 8, s1);
    float sum = 0.0f;
    for (int j = 0; j < 16; j++) sum += lanes[j];
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= 1.0f / sum;
}

void kd_softmax_rows(float *S, int64_t lds, int64_t rows, int64_t n) {
    const kd_isa isa = kd_isa_get();
    for (int64_t h = 0; h < rows; h++) {
        float *x = S + h * lds;
        if (isa >= KD_ISA_AVX512) {
            softmax_512(x, n);
        } else if (isa == KD_ISA_AVX2) {
            softmax_256(x, n);
        } else {
            float m = -INFINITY, sum = 0.0f;
            for (int64_t s = 0; s < n; s++) m = x[s] > m ? x[s] : m;
            for (int64_t s = 0; s < n; s++) sum += (x[s] = expf(x[s] - m));
            const float inv = 1.0f / sum;
            for (int64_t s = 0; s < n; s++) x[s] *= inv;
        }
    }
}

void kd_dot_rows(const float *K, int64_t stride, const float *q, int64_t D, int64_t n, float scale, float *out) {
    const kd_isa isa = kd_isa_get();
    if (isa >= KD_ISA_AVX512) dot_rows_512(K, stride, q, D, n, scale, out);
    else if (isa == KD_ISA_AVX2) dot_rows_256(K, stride, q, D, n, scale, out);
    else
        for (int64_t s = 0; s < n; s++) out[s] = kd_vec_dot_q(KD_GGML_TYPE_F32, K + s * stride, q, D) * scale;
}

void kd_sum_rows(const float *V, int64_t stride, const float *p, int64_t D, int64_t n, float *y) {
    const kd_isa isa = kd_isa_get();
    if (isa >= KD_ISA_AVX512) {
        sum_rows_512(V, stride, p, D, n, y);
    } else if (isa == KD_ISA_AVX2) {
        sum_rows_256(V, stride, p, D, n, y);
    } else {
        memset(y, 0, (size_t)D * sizeof *y);
        for (int64_t s = 0; s < n; s++)
            for (int64_t d = 0; d < D; d++) y[d] += p[s] * V[s * stride + d];
    }
}

/* ---- dispatch ------------------------------------------------------------------------ */

static float dot_ref_f32(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_F32, r, x, n); }
static float dot_ref_f16(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_F16, r, x, n); }
static float dot_ref_bf16(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_BF16, r, x, n); }
static float dot_ref_q8_0(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_Q8_0, r, x, n); }
static float dot_ref_q4_0(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_Q4_0, r, x, n); }
static float dot_ref_q4_1(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_Q4_1, r, x, n); }
static float dot_ref_q4_k(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_Q4_K, r, x, n); }
static float dot_ref_q6_k(const void *r, const float *x, int64_t n) { return kd_vec_dot_q(KD_GGML_TYPE_Q6_K, r, x, n); }

static dot_fn pick(int32_t type) {
    kd_isa isa = kd_isa_get();
#define SEL(REF, A2, A5) return isa >= KD_ISA_AVX512 ? A5 : isa == KD_ISA_AVX2 ? A2 : REF
    switch (type) {
    case KD_GGML_TYPE_F32: SEL(dot_ref_f32, dot_f32_256, dot_f32_512);
    case KD_GGML_TYPE_F16: SEL(dot_ref_f16, dot_f16_256, dot_f16_512);
    case KD_GGML_TYPE_BF16: SEL(dot_ref_bf16, dot_bf16_256, dot_bf16_512);
    case KD_GGML_TYPE_Q8_0: SEL(dot_ref_q8_0, dot_q8_0_256, dot_q8_0_512);
    case KD_GGML_TYPE_Q4_0: SEL(dot_ref_q4_0, dot_q4_0_256, dot_q4_0_512);
    case KD_GGML_TYPE_Q4_1: SEL(dot_ref_q4_1, dot_q4_1_256, dot_q4_1_512);
    case KD_GGML_TYPE_Q4_K: SEL(dot_ref_q4_k, dot_q4_k_256, dot_q4_k_512);
    case KD_GGML_TYPE_Q6_K: SEL(dot_ref_q6_k, dot_q6_k_256, dot_q6_k_512);
    }
#undef SEL
    abort();   /* kd_qmat_init and the GGUF reader admit only the types above */
}

float kd_qdot(int32_t type, const void *row, const float *x, int64_t n) { return pick(type)(row, x, n); }

#define PAR_MIN_WORK (1 << 15)   /* weights below which a product runs on one thread */
void kd_qmatvec_multi(int k, const kd_qmat *const *W, const float *x, float *const *y) {
    dot_fn f[4];
    int64_t end[4], ahead[4], total = 0, work = 0;
    for (int m = 0; m < k; m++) {
        f[m] = pick(W[m]->type);
        total += W[m]->rows;
        end[m] = total;
        work += W[m]->rows * W[m]->cols;
        ahead[m] = kd_prefetch_rows(W[m]);
    }
#pragma omp parallel for schedule(static) if (work >= PAR_MIN_WORK)
    for (int64_t r = 0; r < total; r++) {
        int m = 0;
        while (r >= end[m]) m++;
        const int64_t i = r - (end[m] - W[m]->rows);
        kd_prefetch_row(W[m], i + ahead[m]);
        y[m][i] = f[m]((const uint8_t *)W[m]->data + (size_t)i * W[m]->row_bytes, x, W[m]->cols);
    }
}

void kd_qmatvec(const kd_qmat *W, const float *x, float *y) { kd_qmatvec_multi(1, &W, x, &y); }

size_t kd_qmatmul_scratch(int64_t max_cols, int n_threads) {
    return (size_t)n_threads * KD_QMM_TILE * (size_t)max_cols;
}

void kd_qmatmul(const kd_qmat *W, const float *X, int64_t n, float *Y, int64_t ldy, float *scratch, int n_threads) {
    const int64_t rows = W->rows, cols = W->cols;
    const uint8_t *base = W->data;
    if (n < KD_QMM_MIN_GEMM) {
        dot_fn f = pick(W->type);
        const int64_t ahead = kd_prefetch_rows(W);
#pragma omp parallel for schedule(static) if (rows * cols >= PAR_MIN_WORK)
        for (int64_t r = 0; r < rows; r++) {
            kd_prefetch_row(W, r + ahead);
            for (int64_t i = 0; i < n; i++) Y[i * ldy + r] = f(base + (size_t)r * W->row_bytes, X + i * cols, cols);
        }
        return;
    }
    if (W->type == KD_GGML_TYPE_F32) {   /* kd_sgemm shares its tiles among the threads */
        kd_sgemm(0, 1, n, rows, cols, 1.0f, X, cols, (const float *)W->data, cols, 0.0f, Y, ldy);
        return;
    }
    const int64_t n_tiles = (rows + KD_QMM_TILE - 1) / KD_QMM_TILE;
    const int nt = omp_get_max_threads() < n_threads ? omp_get_max_threads() : n_threads;
#pragma omp parallel for schedule(dynamic) num_threads(nt)
    for (int64_t t = 0; t < n_tiles; t++) {
        float *tile = scratch + (size_t)omp_get_thread_num() * KD_QMM_TILE * (size_t)cols;
        const int64_t r0 = t * KD_QMM_TILE, nr = rows - r0 < KD_QMM_TILE ? rows - r0 : KD_QMM_TILE;
        for (int64_t r = 0; r < nr; r++)
            kd_dequantize_row(W->type, base + (size_t)(r0 + r) * W->row_bytes, tile + r * cols, cols);
        /* single-threaded inside the parallel region (OpenBLAS' OpenMP build) */
        kd_sgemm(0, 1, n, nr, cols, 1.0f, X, cols, tile, cols, 0.0f, Y + r0, ldy);
    }
}
