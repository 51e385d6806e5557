/*
 * kd_gguf_write.h — writing GGUF v3 files (the container; docs/gguf.md).
 *
 * The writer collects KV pairs and tensor infos, then writes the file in one
 * pass, atomically (kd_atomic_open/commit): header, KVs, tensor infos, zero
 * padding to the alignment, then each tensor's bytes in info order, each
 * zero-padded to the alignment, so tensor i's offset is the sum of
 * PAD(nbytes_j) over j < i — the exact layout llama.cpp requires. The
 * alignment is 32 unless set; general.alignment is written (as UINT32) only
 * when asked. Keys must be non-empty, at most 65535 bytes and unique; tensor
 * names 1..63 bytes and unique; tensor types one kd knows (kd_ggml_type_get)
 * with ne[0] a multiple of the block.
 *
 * Tensor data is either borrowed (kd_gguf_writer_add_tensor: the pointer must
 * stay valid until kd_gguf_writer_write) or produced at write time by a
 * callback into a buffer the writer owns (kd_gguf_writer_add_tensor_fn), so an
 * export quantizes one tensor at a time and never holds a second copy of the
 * model.
 */
#ifndef KD_GGUF_WRITE_H
#define KD_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"
#include "format/kd_gguf.h"

typedef struct kd_gguf_writer kd_gguf_writer;

kd_gguf_writer *kd_gguf_writer_new(kd_err *err);
void kd_gguf_writer_free(kd_gguf_writer *w);

/* Alignment (a nonzero power of two, default 32). write_key: also store
 * general.alignment (UINT32). */
int kd_gguf_writer_set_alignment(kd_gguf_writer *w, uint32_t alignment, int write_key, kd_err *err);

/* Scalar KV pairs. type is a numeric or BOOL kd_gguf_type; value points to one
 * value of that type (BOOL: one byte, 0 or 1). */
int kd_gguf_writer_add_scalar(kd_gguf_writer *w, const char *key, kd_gguf_type type, const void *value, kd_err *err);
int kd_gguf_writer_add_u32(kd_gguf_writer *w, const char *key, uint32_t v, kd_err *err);
int kd_gguf_writer_add_i32(kd_gguf_writer *w, const char *key, int32_t v, kd_err *err);
int kd_gguf_writer_add_u64(kd_gguf_writer *w, const char *key, uint64_t v, kd_err *err);
int kd_gguf_writer_add_f32(kd_gguf_writer *w, const char *key, float v, kd_err *err);
int kd_gguf_writer_add_bool(kd_gguf_writer *w, const char *key, int v, kd_err *err);
/* A STRING of len bytes (len (size_t)-1: strlen). */
int kd_gguf_writer_add_str(kd_gguf_writer *w, const char *key, const char *s, size_t len, kd_err *err);
/* An array of n numeric/BOOL elements of elem_type, packed little-endian in data. */
int kd_gguf_writer_add_arr(kd_gguf_writer *w, const char *key, kd_gguf_type elem_type, const void *data, uint64_t n,
                           kd_err *err);
/* An array of n strings; lens may be NULL (NUL-terminated strings). */
int kd_gguf_writer_add_arr_str(kd_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
                               uint64_t n, kd_err *err);

/* A tensor of n_dims (1..4) dims ne[0..n_dims) (ne[0] innermost) and ggml
 * type; data holds its kd_ggml_nbytes bytes (borrowed until write). */
int kd_gguf_writer_add_tensor(kd_gguf_writer *w, const char *name, int32_t type, int n_dims, const int64_t *ne,
                              const void *data, kd_err *err);
/* Same, with the bytes produced at write time: fill(ctx, dst, nbytes, err)
 * writes exactly nbytes into dst and returns 0, or -1 with a message. */
typedef int (*kd_gguf_fill_fn)(void *ctx, void *dst, size_t nbytes, kd_err *err);
int kd_gguf_writer_add_tensor_fn(kd_gguf_writer *w, const char *name, int32_t type, int n_dims, const int64_t *ne,
                                 kd_gguf_fill_fn fill, void *ctx, kd_err *err);

/* Write the file (atomically). The writer may be written again or freed. */
int kd_gguf_writer_write(kd_gguf_writer *w, const char *path, kd_err *err);

#endif
