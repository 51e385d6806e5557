/*
 * kd_quant_plan.h — export presets (f32 … q4_k_m) and the per-tensor type rule
 * llama-quantize applies (which tensors get Q6_K, fallbacks for row lengths a
 * block does not divide). Used by the GGUF export and by AWQ, which must
 * quantize each tensor to the type the export will write.
 */
#ifndef KD_QUANT_PLAN_H
#define KD_QUANT_PLAN_H

#include <stdint.h>

typedef struct kd_export_preset {
    const char *name;         /* "q4_k_m" */
    uint32_t file_type;       /* llama.cpp's llama_ftype (docs/gguf.md#metadata) */
    int32_t type;             /* the type of ordinary 2-D weights */
    const char *summary;      /* one line for --help */
} kd_export_preset;

/* The presets, in --help order: f32, f16, bf16, q8_0, q4_0, q4_1, q4_k_m. */
const kd_export_preset *kd_export_presets(int *n);
const kd_export_preset *kd_export_preset_find(const char *name);

/* llama.cpp's use_more_bits(i, n) (docs/gguf.md#tensor-types-per-preset). */
int kd_use_more_bits(int64_t i, int64_t n);

/* The type the rule picks for a tensor before any fallback for its row length. */
int32_t kd_export_wanted_type(const kd_export_preset *p, const char *name, int n_dims, int64_t layer, int64_t n_layer,
                              int tied);

/* The type a tensor gets under a preset (docs/gguf.md#tensor-types-per-preset): name is the GGUF tensor name,
 * ne0 its row length, n_dims its dims, layer/n_layer its block index (−1 for
 * non-block tensors), tied whether output.weight is absent. Row lengths that
 * the chosen type's block does not divide fall back Q4_K → Q8_0 → F16 and
 * Q6_K → Q8_0 → F16 (llama.cpp uses Q5_0 for Q4_K, which kd does not
 * implement), and Q8_0/Q4_0/Q4_1 → F16. *fell_back (may be NULL) says whether
 * a fallback happened. */
int32_t kd_export_tensor_type(const kd_export_preset *p, const char *name, int n_dims, int64_t ne0, int64_t layer,
                              int64_t n_layer, int tied, int *fell_back);

#endif
