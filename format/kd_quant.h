/*
 * kd_quant.h — ggml tensor types as rows of bytes: quantize, dequantize,
 * dot products and pseudo-quantization (docs/quantization.md#ggml-block-formats).
 *
 * Types: F32, F16, BF16 (one element per "block"), Q8_0, Q4_0, Q4_1 (blocks of
 * 32) and Q4_K, Q6_K (super-blocks of 256). A row of n elements is n / block
 * blocks stored back to back; rows are independent, so a [rows, n] matrix is
 * rows × kd_quant_row_size(type, n) bytes, exactly as in a GGUF tensor.
 *
 * Quantizers are the ggml reference quantizers (no importance matrix):
 *   - Q8_0, Q4_0, Q4_1 are bit-identical to quantize_row_q{8_0,4_0,4_1}_ref
 *     (roundf ties away from zero for Q8_0, truncating int8 casts for Q4_x,
 *     the fp32 scale used for the quants and its fp16 rounding stored);
 *   - Q4_K and Q6_K follow make_qkx2_quants / make_qx_quants / nearest_int in
 *     ggml's float operation order and are bit-identical too:
 *     tests/test_quant.c compares every type with an independent numpy version
 *     and, when node-llama-cpp's prebuilt libggml-base.so is installed (tests/
 *     node), with ggml's own quantize_row_*_ref and dequantize_row_*.
 * kd_quant.c is compiled without floating-point contraction: with
 * -march=native an FMA would change roundings (measured: 75 of 1200 Q4_K
 * blocks differ from ggml without it).
 *
 * Row functions take n a multiple of the type's block and a type from
 * kd_quant_supported(); anything else is a programming error and aborts with
 * the type and n (check user input with kd_quant_check first). Blocks are
 * read and written with memcpy, so `out`/`in` need no alignment.
 *
 * For an inference engine: kd_dequantize_row and kd_vec_dot_q are the scalar
 * reference kernels (dot = Σ dequant(row)·x, accumulated per block in float,
 * blocks summed in double); SIMD versions must agree with them to rounding.
 * The block structs below document the byte layouts for such kernels.
 */
#ifndef KD_QUANT_H
#define KD_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/kd_err.h"
#include "format/kd_gguf.h"

#define KD_QK      32    /* elements per Q8_0 / Q4_0 / Q4_1 block */
#define KD_QK_K    256   /* elements per Q4_K / Q6_K super-block */

typedef struct kd_block_q8_0 {
    uint16_t d;                 /* fp16 scale */
    int8_t qs[KD_QK];           /* x = qs·d */
} kd_block_q8_0;

typedef struct kd_block_q4_0 {
    uint16_t d;                 /* fp16 scale */
    uint8_t qs[KD_QK / 2];      /* byte j: element j (low nibble), element j+16 (high); x = (q−8)·d */
} kd_block_q4_0;

typedef struct kd_block_q4_1 {
    uint16_t d, m;              /* fp16 scale and minimum; x = q·d + m */
    uint8_t qs[KD_QK / 2];      /* nibbles as Q4_0 */
} kd_block_q4_1;

typedef struct kd_block_q4_k {
    uint16_t d, dmin;           /* fp16 scales of the 6-bit scales and mins */
    uint8_t scales[12];         /* 8 × (6-bit scale, 6-bit min), packed: kd_q4k_scale_min */
    uint8_t qs[KD_QK_K / 2];    /* chunk c (64 elements): qs[32c+l] low = 64c+l, high = 64c+32+l */
} kd_block_q4_k;                /* x = d·sc_j·q − dmin·m_j, j = sub-block of 32 */

typedef struct kd_block_q6_k {
    uint8_t ql[KD_QK_K / 2];    /* low 4 bits */
    uint8_t qh[KD_QK_K / 4];    /* high 2 bits */
    int8_t scales[KD_QK_K / 16];/* one per 16 elements */
    uint16_t d;                 /* fp16, last */
} kd_block_q6_k;                /* x = d·scales[k]·(q6 − 32) */

_Static_assert(sizeof(kd_block_q8_0) == 34, "block_q8_0 is 34 bytes");
_Static_assert(sizeof(kd_block_q4_0) == 18, "block_q4_0 is 18 bytes");
_Static_assert(sizeof(kd_block_q4_1) == 20, "block_q4_1 is 20 bytes");
_Static_assert(sizeof(kd_block_q4_k) == 144, "block_q4_K is 144 bytes");
_Static_assert(sizeof(kd_block_q6_k) == 210, "block_q6_K is 210 bytes");

/* The packed scales[12] of a Q4_K block (docs/quantization.md): the 6-bit scale
 * and min of sub-block j (0..7) ... */
static inline void kd_q4k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}
/* ... and all eight of each at once, as bytes (the same values, unpacked 32
 * bits at a time as SIMD kernels want them). */
static inline void kd_q4k_unpack(const uint8_t *scales, uint8_t sc[8], uint8_t m[8]) {
    uint32_t u[4];
    memcpy(u, scales, 12);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[0] &= k1;
    u[2] = mins_lo;
    memcpy(sc, u, 8);
    memcpy(m, u + 2, 8);
}

/* 1 when kd can quantize and dequantize this ggml type (F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q4_K, Q6_K). */
int kd_quant_supported(int32_t type);
/* Elements per block (1 for F32/F16/BF16); 0 for an unsupported type. */
int64_t kd_quant_block(int32_t type);
/* 1 for the block-quantized types (Q*), 0 for F32/F16/BF16 and unsupported types. */
int kd_quant_is_quantized(int32_t type);
/* Bytes of one row of n elements; 0 when unsupported or n is not a multiple of the block. */
size_t kd_quant_row_size(int32_t type, int64_t n);
/* Validate (type, n) for the row functions: "TYPE: row length N is not a multiple of the block size B". */
int kd_quant_check(int32_t type, int64_t n, kd_err *err);

/* One row: x[0..n) → out (kd_quant_row_size bytes). */
void kd_quantize_row(int32_t type, const float *x, void *out, int64_t n);
/* One row: in → y[0..n). */
void kd_dequantize_row(int32_t type, const void *in, float *y, int64_t n);
/* Σ_i dequant(row)[i]·x[i] over one row of n elements. */
float kd_vec_dot_q(int32_t type, const void *row, const float *x, int64_t n);
/* y = dequantize(quantize(x)) (y may equal x): the weights the quantized model sees. */
void kd_fake_quant_row(int32_t type, const float *x, float *y, int64_t n);

/* A [rows, n] matrix, rows in parallel (OpenMP) when large enough to pay.
 * out holds rows · kd_quant_row_size(type, n) bytes. */
int kd_quantize_rows(int32_t type, const float *x, void *out, int64_t rows, int64_t n, kd_err *err);
int kd_dequantize_rows(int32_t type, const void *in, float *y, int64_t rows, int64_t n, kd_err *err);
int kd_fake_quant_rows(int32_t type, const float *x, float *y, int64_t rows, int64_t n, kd_err *err);

#endif
