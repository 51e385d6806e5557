/*
 * kd_gguf.h — a hardened reader for GGUF v2/v3 files (llama.cpp's model format).
 *
 * kd_gguf_parse() validates a whole file held in memory and never reads outside
 * it: every length and count is checked against the bytes that remain before
 * anything is allocated, so a hostile or truncated file gives a clean error
 * naming the field ("x.gguf: kv 3 ('general.alignment'): ..."), never a crash
 * or an unbounded allocation. What it checks (also in docs/gguf.md):
 *   - magic "GGUF", version 2 or 3, n_kv and n_tensors non-negative and below
 *     KD_GGUF_MAX_KV / KD_GGUF_MAX_TENSORS and the bytes left;
 *   - keys non-empty, without NUL bytes, at most 65535 bytes, unique;
 *     value types 0..12; no nested arrays; BOOL bytes 0 or 1;
 *   - general.alignment, when present, is UINT32, nonzero, a power of two;
 *   - tensor names 1..63 bytes, unique; n_dims ≤ 4; every ne ≥ 0 with no
 *     int64 overflow of the element count; the type is one kd handles (see
 *     kd_ggml_type_get) and ne[0] is a multiple of its block size;
 *   - every offset is a multiple of the alignment, [offset, offset + nbytes)
 *     lies inside the data blob, and no two tensors overlap (any order is
 *     accepted; llama.cpp additionally wants them packed in info order).
 *
 * The parsed file borrows the bytes: kd_gguf_open() maps the file and keeps the
 * map until kd_gguf_close(); kd_gguf_parse() leaves the buffer to the caller,
 * who must keep it alive while the kd_gguf is used. Keys and string values are
 * copied (NUL-terminated); string-array elements and tensor data point into
 * the bytes. Multi-byte values are little-endian and may be unaligned: read
 * array elements with the kd_gguf_arr_* accessors.
 *
 * Typed getters are strict: a key stored as UINT64 is not returned by
 * kd_gguf_get_u32 ("x.gguf: key 'llama.block_count' has type UINT64, expected
 * UINT32"), as llama.cpp is strict.
 *
 * Writing GGUF belongs to format/kd_gguf_write.c (a builder with its own
 * type); it shares the constants, kd_gguf_type and the ggml type table below.
 */
#ifndef KD_GGUF_H
#define KD_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/kd_err.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kd_gguf reads little-endian GGUF on little-endian hosts only"
#endif

#define KD_GGUF_MAGIC             "GGUF"
#define KD_GGUF_VERSION           3          /* what a writer writes; the reader accepts 2 and 3 */
#define KD_GGUF_DEFAULT_ALIGNMENT 32
#define KD_GGUF_MAX_DIMS          4
#define KD_GGUF_MAX_NAME          64         /* tensor names are shorter than this (GGML_MAX_NAME) */
#define KD_GGUF_MAX_KEY           65535
#define KD_GGUF_MAX_KV            (1 << 20)  /* sanity caps on the header counts */
#define KD_GGUF_MAX_TENSORS       (1 << 20)

/* The value types of a KV pair (i32 on disk). */
typedef enum kd_gguf_type {
    KD_GGUF_UINT8 = 0,
    KD_GGUF_INT8 = 1,
    KD_GGUF_UINT16 = 2,
    KD_GGUF_INT16 = 3,
    KD_GGUF_UINT32 = 4,
    KD_GGUF_INT32 = 5,
    KD_GGUF_FLOAT32 = 6,
    KD_GGUF_BOOL = 7,
    KD_GGUF_STRING = 8,
    KD_GGUF_ARRAY = 9,
    KD_GGUF_UINT64 = 10,
    KD_GGUF_INT64 = 11,
    KD_GGUF_FLOAT64 = 12,
    KD_GGUF_TYPE_COUNT = 13,
} kd_gguf_type;

/* "UINT32", "STRING", ...; "INVALID" outside 0..12. */
const char *kd_gguf_type_name(int type);
/* Bytes of one scalar of this type; 0 for STRING, ARRAY and invalid types. */
size_t kd_gguf_type_size(int type);

/* ggml tensor types kd reads and writes (ids as in ggml.h). */
typedef enum kd_ggml_type {
    KD_GGML_TYPE_F32 = 0,
    KD_GGML_TYPE_F16 = 1,
    KD_GGML_TYPE_Q4_0 = 2,
    KD_GGML_TYPE_Q4_1 = 3,
    KD_GGML_TYPE_Q8_0 = 8,
    KD_GGML_TYPE_Q4_K = 12,
    KD_GGML_TYPE_Q6_K = 14,
    KD_GGML_TYPE_BF16 = 30,
} kd_ggml_type;

typedef struct kd_ggml_type_info {
    const char *name;       /* "Q8_0" */
    int64_t block;          /* elements per block (along ne[0]) */
    size_t block_bytes;     /* bytes per block */
} kd_ggml_type_info;

/* The block layout of a type kd supports, or NULL for any other id. */
const kd_ggml_type_info *kd_ggml_type_get(int32_t type);
/* A name for any ggml type id ("Q5_0", "IQ2_XXS", ...), "unknown" past the table. */
const char *kd_ggml_type_name(int32_t type);
/* Bytes of a tensor of shape ne[0..3] (missing dims = 1) and a supported type.
 * Returns -1 for an unsupported type, ne[0] not a multiple of the block, a
 * negative dim or an overflow. */
int kd_ggml_nbytes(int32_t type, const int64_t ne[KD_GGUF_MAX_DIMS], uint64_t *nbytes);

typedef struct kd_gguf kd_gguf;

/* Map and validate a file. NULL with a message on any error. */
kd_gguf *kd_gguf_open(const char *path, kd_err *err);
/* Validate bytes[0..len) (borrowed, see above). `name` (may be NULL) starts every message. */
kd_gguf *kd_gguf_parse(const void *bytes, size_t len, const char *name, kd_err *err);
void kd_gguf_close(kd_gguf *g);

const char *kd_gguf_name(const kd_gguf *g);
uint32_t kd_gguf_version(const kd_gguf *g);
uint32_t kd_gguf_alignment(const kd_gguf *g);
/* File offset of the tensor data blob (meaningful when there are tensors). */
size_t kd_gguf_data_offset(const kd_gguf *g);

/* ---- key/value pairs ---------------------------------------------------------- */

int64_t kd_gguf_n_kv(const kd_gguf *g);
const char *kd_gguf_kv_key(const kd_gguf *g, int64_t i);
kd_gguf_type kd_gguf_kv_type(const kd_gguf *g, int64_t i);
/* Index of a key, or -1 when absent. */
int64_t kd_gguf_find_key(const kd_gguf *g, const char *key);
/* The value as short text for listings: "UINT32 32", "STRING \"llama\"", "ARRAY[STRING] 32000 [...]". */
void kd_gguf_kv_describe(const kd_gguf *g, int64_t i, char *out, size_t n);

/* Typed getters. Each fails with "NAME: key 'K' is missing" or
 * "NAME: key 'K' has type T, expected U" and leaves *out untouched then. */
int kd_gguf_get_u8(const kd_gguf *g, const char *key, uint8_t *out, kd_err *err);
int kd_gguf_get_i8(const kd_gguf *g, const char *key, int8_t *out, kd_err *err);
int kd_gguf_get_u16(const kd_gguf *g, const char *key, uint16_t *out, kd_err *err);
int kd_gguf_get_i16(const kd_gguf *g, const char *key, int16_t *out, kd_err *err);
int kd_gguf_get_u32(const kd_gguf *g, const char *key, uint32_t *out, kd_err *err);
int kd_gguf_get_i32(const kd_gguf *g, const char *key, int32_t *out, kd_err *err);
int kd_gguf_get_u64(const kd_gguf *g, const char *key, uint64_t *out, kd_err *err);
int kd_gguf_get_i64(const kd_gguf *g, const char *key, int64_t *out, kd_err *err);
int kd_gguf_get_f32(const kd_gguf *g, const char *key, float *out, kd_err *err);
int kd_gguf_get_f64(const kd_gguf *g, const char *key, double *out, kd_err *err);
int kd_gguf_get_bool(const kd_gguf *g, const char *key, int *out, kd_err *err);
/* *out is NUL-terminated (owned by g); *len (may be NULL) is its length, which
 * counts any embedded NUL bytes. */
int kd_gguf_get_str(const kd_gguf *g, const char *key, const char **out, size_t *len, kd_err *err);

/* An array value. Elements are packed and little-endian; STRING elements are
 * reached through kd_gguf_arr_str. */
typedef struct kd_gguf_arr {
    kd_gguf_type type;           /* element type (never ARRAY) */
    uint64_t n;                  /* element count */
    const unsigned char *data;   /* first element, inside the file's bytes */
    const uint64_t *str_off;     /* STRING: offset from data of element i's length field; else NULL */
} kd_gguf_arr;

/* The array stored under key. `type` is the required element type, or -1 for any
 * ("key 'tokenizer.ggml.scores' is an array of INT32, expected an array of FLOAT32").
 * `n` is the required count, or -1 for any. */
int kd_gguf_get_arr(const kd_gguf *g, const char *key, int type, int64_t n, kd_gguf_arr *out, kd_err *err);
/* The array of KV i (fails when KV i is not an array). */
int kd_gguf_kv_arr(const kd_gguf *g, int64_t i, kd_gguf_arr *out, kd_err *err);

/* Element i of a STRING array (not NUL-terminated; i < a->n). */
const char *kd_gguf_arr_str(const kd_gguf_arr *a, uint64_t i, size_t *len);
/* Element i of a numeric array of the matching type (i < a->n). */
static inline uint8_t kd_gguf_arr_u8(const kd_gguf_arr *a, uint64_t i) { return a->data[i]; }
static inline int32_t kd_gguf_arr_i32(const kd_gguf_arr *a, uint64_t i) {
    int32_t v;
    memcpy(&v, a->data + 4 * i, 4);
    return v;
}
static inline uint32_t kd_gguf_arr_u32(const kd_gguf_arr *a, uint64_t i) {
    uint32_t v;
    memcpy(&v, a->data + 4 * i, 4);
    return v;
}
static inline float kd_gguf_arr_f32(const kd_gguf_arr *a, uint64_t i) {
    float v;
    memcpy(&v, a->data + 4 * i, 4);
    return v;
}
static inline int64_t kd_gguf_arr_i64(const kd_gguf_arr *a, uint64_t i) {
    int64_t v;
    memcpy(&v, a->data + 8 * i, 8);
    return v;
}
static inline uint64_t kd_gguf_arr_u64(const kd_gguf_arr *a, uint64_t i) {
    uint64_t v;
    memcpy(&v, a->data + 8 * i, 8);
    return v;
}
static inline double kd_gguf_arr_f64(const kd_gguf_arr *a, uint64_t i) {
    double v;
    memcpy(&v, a->data + 8 * i, 8);
    return v;
}

/* ---- tensors ------------------------------------------------------------------ */

typedef struct kd_gguf_tensor {
    const char *name;            /* NUL-terminated, 1..63 bytes */
    int32_t type;                /* a kd_ggml_type */
    uint32_t n_dims;             /* as stored, 0..4 */
    int64_t ne[KD_GGUF_MAX_DIMS];/* ne[0] innermost; missing dims are 1 */
    uint64_t offset;             /* from the start of the data blob */
    uint64_t nbytes;
    const void *data;            /* inside the file's bytes (unaligned unless the file is mapped) */
} kd_gguf_tensor;

int64_t kd_gguf_n_tensors(const kd_gguf *g);
const kd_gguf_tensor *kd_gguf_tensor_at(const kd_gguf *g, int64_t i);
/* NULL when absent. */
const kd_gguf_tensor *kd_gguf_find_tensor(const kd_gguf *g, const char *name);
/* Drop t's resident pages once its data has been copied out (kd_gguf_open
 * handles; a no-op for kd_gguf_parse buffers, which belong to the caller). */
void kd_gguf_release(const kd_gguf *g, const kd_gguf_tensor *t);
/* Like kd_gguf_find_tensor, but fails with "NAME: tensor 'x' is missing". */
int kd_gguf_get_tensor(const kd_gguf *g, const char *name, const kd_gguf_tensor **out, kd_err *err);

#endif
