/*
 * kd_fp16.h — IEEE binary16 and bfloat16 conversions.
 *
 * Round-to-nearest-even, overflow to ±inf, NaN kept quiet: bit-identical to
 * ggml's software path (GGML_FP32_TO_FP16 / GGML_FP32_TO_BF16), so quantized
 * blocks and F16/BF16 tensors match llama.cpp and safetensors writers.
 */
#ifndef KD_FP16_H
#define KD_FP16_H

#include <stdint.h>
#include <string.h>

static inline uint32_t kd_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float kd_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float kd_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return kd_bits_f32(sign | 0x7f800000u | (man << 13));   /* inf/nan */
    if (exp == 0) {
        if (man == 0) return kd_bits_f32(sign);
        /* subnormal: man * 2^-24 */
        float f = (float)man * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    return kd_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t kd_f32_to_fp16(float f) {
    uint32_t x = kd_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00);          /* NaN → quiet */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);         /* ≥ 65520 rounds to inf */
    if (ax < 0x38800000u) {                                           /* < 2^-14: subnormal or 0 */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa */
        uint32_t e = ax >> 23;
        if (e < 102) return (uint16_t)sign;                           /* < 2^-25: rounds to 0 */
        uint32_t m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;                                     /* 14 + (112 - e) + 1 ... */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax - 0x38000000u;                                    /* rebias exponent 127→15 */
    uint32_t lsb = (r >> 13) & 1;
    r += 0xfff + lsb;                                                 /* RNE on the 13 dropped bits */
    return (uint16_t)(sign | (r >> 13));
}

static inline float kd_bf16_to_f32(uint16_t h) { return kd_bits_f32((uint32_t)h << 16); }

static inline uint16_t kd_f32_to_bf16(float f) {
    uint32_t u = kd_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);   /* quiet NaN */
    return (uint16_t)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

#endif
