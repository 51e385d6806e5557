/*
 * kd_gguf_write.h — writing GGUF v3 files, and the export of a kd student as a
 * llama.cpp "llama" model (shared/docs A.1–A.10, B.8).
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
 *
 * kd_export_gguf writes the student as a GGUF that stock llama.cpp loads:
 * architecture "llama", the hyper-parameters with the exact key types
 * llama.cpp checks, the SentencePiece vocabulary from the tokenizer, tensor
 * names token_embd / output_norm / output (absent when tied) / blk.N.*, q and k
 * rows permuted back from kd's rotate_half layout to GGUF's adjacent pairs,
 * 1-D tensors in F32, and 2-D tensors in the preset's types
 * (kd_export_presets; see kd_export_tensor_type for the per-tensor rule).
 */
#ifndef KD_GGUF_WRITE_H
#define KD_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"
#include "data/kd_tokenizer.h"
#include "student/kd_gguf.h"
#include "student/kd_model.h"

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

/* ---- export of a kd student ---------------------------------------------------- */

typedef struct kd_export_preset {
    const char *name;         /* "q4_k_m" */
    uint32_t file_type;       /* llama_ftype (B.8) */
    int32_t type;             /* the type of ordinary 2-D weights */
    const char *summary;      /* one line for --help */
} kd_export_preset;

/* The presets, in --help order: f32, f16, bf16, q8_0, q4_0, q4_1, q4_k_m. */
const kd_export_preset *kd_export_presets(int *n);
const kd_export_preset *kd_export_preset_find(const char *name);

/* llama.cpp's use_more_bits(i, n) (A.10). */
int kd_use_more_bits(int64_t i, int64_t n);

/* The type a tensor gets under a preset (A.10): name is the GGUF tensor name,
 * ne0 its row length, n_dims its dims, layer/n_layer its block index (−1 for
 * non-block tensors), tied whether output.weight is absent. Row lengths that
 * the chosen type's block does not divide fall back Q4_K → Q8_0 → F16 and
 * Q6_K → Q8_0 → F16 (llama.cpp uses Q5_0 for Q4_K, which kd does not
 * implement), and Q8_0/Q4_0/Q4_1 → F16. *fell_back (may be NULL) says whether
 * a fallback happened. */
int32_t kd_export_tensor_type(const kd_export_preset *p, const char *name, int n_dims, int64_t ne0, int64_t layer,
                              int64_t n_layer, int tied, int *fell_back);

/* Export a model and its tokenizer as GGUF at path (atomically), in a preset's
 * types. The file's general.name is the file name without ".gguf". Refuses a
 * sliding window shorter than the context (the llama arch has none), a
 * tokenizer larger than the model's vocabulary, and unknown presets. A
 * smaller tokenizer is padded with UNUSED "[PADn]" pieces (as
 * convert_hf_to_gguf does), with a warning. */
int kd_export_gguf(const kd_model *m, const kd_tokenizer *tok, const char *preset, const char *path, kd_err *err);
/* Load the checkpoint directory dir (config.json, model.safetensors and its
 * tokenizer.bin, or tokenizer.h5 for a byte-level BPE tokenizer) and export it. */
int kd_export_checkpoint(const char *dir, const char *preset, const char *path, kd_err *err);

#endif
