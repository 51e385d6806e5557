/*
 * kd_safetensors.h — reading and writing safetensors files.
 *
 * Format: an 8-byte little-endian u64 N, N bytes of JSON header, then the data
 * buffer. The header maps each tensor name to {"dtype", "shape", "data_offsets":
 * [begin, end]} (offsets relative to the data buffer) and may hold a
 * "__metadata__" object of string → string.
 *
 * Reader: kd_st_open maps a file read-only; kd_st_parse reads a caller-owned
 * buffer (which must outlive the handle) and never reads outside it, so it is
 * safe on hostile input: every malformed header is rejected with a message
 * naming the file, the tensor and the field. Tensor data may be unaligned in
 * the file: `data` is a byte pointer, read it with memcpy (or kd_st_read_f32).
 *
 * Writer: collect tensors (the caller's data must stay valid until save) and
 * metadata, then save atomically: header padded with spaces to a multiple of 8
 * bytes, tensors contiguous in insertion order, "__metadata__" holding at least
 * {"format": "pt"} (what Hugging Face transformers expects).
 */
#ifndef KD_SAFETENSORS_H
#define KD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"
#include "core/kd_file.h"

#define KD_ST_MAX_DIMS 8
#define KD_ST_NAME_MAX 256                          /* bytes, including the NUL */
#define KD_ST_MAX_HEADER ((uint64_t)100000000)      /* 100 MB, as the reference implementation */

typedef enum kd_st_dtype {
    KD_ST_F64,
    KD_ST_F32,
    KD_ST_F16,
    KD_ST_BF16,
    KD_ST_I64,
    KD_ST_I32,
    KD_ST_I16,
    KD_ST_I8,
    KD_ST_U8,
    KD_ST_BOOL,
    KD_ST_DTYPE_COUNT
} kd_st_dtype;

/* "F32" etc.; "?" for an invalid value. */
const char *kd_st_dtype_name(kd_st_dtype t);
/* Bytes per element (0 for an invalid value). */
size_t kd_st_dtype_size(kd_st_dtype t);
/* Parse "F32" etc.; -1 when unknown. */
int kd_st_dtype_from_name(const char *s, kd_st_dtype *out);

typedef struct kd_st_tensor {
    char name[KD_ST_NAME_MAX];
    kd_st_dtype dtype;
    int ndim;
    int64_t shape[KD_ST_MAX_DIMS];
    int64_t numel;
    const void *data;      /* into the map/buffer; possibly unaligned */
    size_t nbytes;
    uint64_t begin, end;   /* data_offsets, relative to the data buffer */
} kd_st_tensor;

typedef struct kd_st_file {
    char path[512];            /* for messages */
    int count;
    kd_st_tensor *tensors;     /* in header order */
    size_t header_len;         /* N */
    const unsigned char *data; /* start of the data buffer */
    size_t data_len;
    /* private */
    kd_mmap map;
    int *sorted;               /* tensor indices sorted by name */
    void *meta;                /* cJSON object of __metadata__, or NULL */
} kd_st_file;

kd_st_file *kd_st_open(const char *path, kd_err *err);
/* `name` is used in messages (NULL gives "<buffer>"). */
kd_st_file *kd_st_parse(const void *bytes, size_t len, const char *name, kd_err *err);
void kd_st_close(kd_st_file *f);

const kd_st_tensor *kd_st_find(const kd_st_file *f, const char *name);
/* Value of a "__metadata__" key, or NULL. */
const char *kd_st_meta(const kd_st_file *f, const char *key);
int kd_st_meta_count(const kd_st_file *f);
/* The i-th metadata pair in header order (0 ≤ i < count); returns -1 when out of range. */
int kd_st_meta_at(const kd_st_file *f, int i, const char **key, const char **value);

/* Read a F32/F16/BF16 tensor as floats into out (numel elements). The tensor must
 * have exactly `ndim` dims equal to expected_shape (expected_shape == NULL skips
 * the shape check; size out from kd_st_find then). */
int kd_st_read_f32(const kd_st_file *f, const char *name, float *out, int ndim, const int64_t *expected_shape,
                   kd_err *err);

/* The checks of kd_st_read_f32 on a found tensor: dtype F32/F16/BF16 and, when
 * expected_shape is not NULL, exactly ndim dims equal to it. */
int kd_st_check_float(const kd_st_file *f, const kd_st_tensor *t, int ndim, const int64_t *expected_shape,
                      kd_err *err);

/* Drop the resident pages of a tensor of a file opened with kd_st_open, once it
 * has been copied out: a mapped file's pages count in the process's RSS, so
 * loading a 6 GB checkpoint would otherwise hold it twice. The tensor stays
 * readable (pages are read from the file again on access). No-op for
 * kd_st_parse handles. */
void kd_st_release(const kd_st_file *f, const kd_st_tensor *t);

/* kd_st_read_f32 for a tensor t of f already checked by kd_st_check_float,
 * releasing the mapped pages 16 MiB at a time as they are converted: loading a
 * checkpoint keeps at most one such slice of the file resident, not a whole
 * tensor (788 MB for a 3B model's BF16 embedding). Returns -1 (with err) only
 * for a non-float dtype. */
int kd_st_copy_f32(const kd_st_file *f, const kd_st_tensor *t, float *out, kd_err *err);

/* ---- writer ---- */
typedef struct kd_st_writer kd_st_writer;

kd_st_writer *kd_st_writer_new(kd_err *err);
void kd_st_writer_free(kd_st_writer *w);
/* Raw bytes of any dtype (numel × dtype size bytes at data). */
int kd_st_writer_add(kd_st_writer *w, const char *name, kd_st_dtype dtype, int ndim, const int64_t *shape,
                     const void *data, kd_err *err);
/* Floats stored as dtype F32, F16 or BF16 (converted while saving, round-to-nearest-even). */
int kd_st_writer_add_f32_as(kd_st_writer *w, const char *name, kd_st_dtype dtype, int ndim, const int64_t *shape,
                            const float *data, kd_err *err);
/* Set a "__metadata__" entry (replaces an earlier value of the same key). */
int kd_st_writer_set_meta(kd_st_writer *w, const char *key, const char *value, kd_err *err);
int kd_st_writer_save(const kd_st_writer *w, const char *path, kd_err *err);

#endif
