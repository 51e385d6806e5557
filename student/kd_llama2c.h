/*
 * kd_llama2c.h — import of llama2.c checkpoints (Karpathy's "legacy" export).
 *
 * Layout (little-endian): 7 × int32 header (dim, hidden_dim, n_layers,
 * n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means an
 * untied classifier follows), then float32 arrays in order: token embedding,
 * rms_att, wq, wk, wv, wo, rms_ffn, w1 (gate), w2 (down), w3 (up), rms_final,
 * freq_cis_real, freq_cis_imag (unused), [wcls].
 * llama2.c rotates adjacent pairs (2i, 2i+1); the q/k rows are permuted into
 * the Hugging Face rotate_half layout on import (docs/gguf.md#rope-layout-of-q-and-k).
 */
#ifndef KD_LLAMA2C_H
#define KD_LLAMA2C_H

#include "student/kd_model.h"

/* Read a llama2.c checkpoint into a new model (HF layout, RoPE theta 10000, eps 1e-5). */
int kd_llama2c_load(kd_model *m, const char *path, kd_err *err);
/* The same with kd_model_new_flags flags (KD_MODEL_NO_GRAD: no gradient buffers). */
int kd_llama2c_load_flags(kd_model *m, const char *path, int flags, kd_err *err);

/* Permute the rows of a q/k weight [n_heads·D, cols] between layouts, in place.
 * to_half=1: adjacent pairs → rotate_half; to_half=0: the inverse. */
void kd_rope_permute_rows(float *w, int64_t n_heads, int64_t D, int64_t cols, int to_half);

#endif
