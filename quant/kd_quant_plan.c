/*
 * kd_quant_plan.c — which ggml type each tensor of a model gets under an export
 * preset (llama-quantize's rules; see kd_quant_plan.h and docs/gguf.md).
 */
#include "quant/kd_quant_plan.h"

#include <string.h>

#include "format/kd_quant.h"

/* ---- presets and the per-tensor type rule ------------------------------------------- */

static const kd_export_preset PRESETS[] = {
    {"f32", 0, KD_GGML_TYPE_F32, "every tensor F32 (lossless)"},
    {"f16", 1, KD_GGML_TYPE_F16, "2-D weights F16, norms F32"},
    {"bf16", 32, KD_GGML_TYPE_BF16, "2-D weights BF16, norms F32"},
    {"q8_0", 7, KD_GGML_TYPE_Q8_0, "2-D weights Q8_0 (8.5 bits/weight), norms F32"},
    {"q4_0", 2, KD_GGML_TYPE_Q4_0, "2-D weights Q4_0 (4.5 b/w), output (or tied embedding) Q6_K, norms F32"},
    {"q4_1", 3, KD_GGML_TYPE_Q4_1, "2-D weights Q4_1 (5.0 b/w), output (or tied embedding) Q6_K, norms F32"},
    {"q4_k_m", 15, KD_GGML_TYPE_Q4_K,
     "llama-quantize's Q4_K_M: Q4_K; Q6_K for output (or tied embedding)\n"
     "           and for attn_v, ffn_down in the layers use_more_bits picks; norms F32"},
};

const kd_export_preset *kd_export_presets(int *n) {
    *n = (int)(sizeof PRESETS / sizeof PRESETS[0]);
    return PRESETS;
}

const kd_export_preset *kd_export_preset_find(const char *name) {
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++)
        if (name && !strcmp(PRESETS[i].name, name)) return &PRESETS[i];
    return NULL;
}

int kd_use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The type the rule picks, before any fallback for the row length. */
int32_t kd_export_wanted_type(const kd_export_preset *p, const char *name, int n_dims, int64_t layer, int64_t n_layer,
                           int tied) {
    if (n_dims < 2 || ends_with(name, "_norm.weight")) return KD_GGML_TYPE_F32;
    int32_t t = p->type;
    if (kd_quant_is_quantized(t) && t != KD_GGML_TYPE_Q8_0) {   /* Q8_0 keeps its output in Q8_0 */
        const int is_output = !strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"));
        if (is_output) t = KD_GGML_TYPE_Q6_K;
        else if (t == KD_GGML_TYPE_Q4_K && layer >= 0 &&
                 (ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight")) &&
                 kd_use_more_bits(layer, n_layer))
            t = KD_GGML_TYPE_Q6_K;
    }
    return t;
}

int32_t kd_export_tensor_type(const kd_export_preset *p, const char *name, int n_dims, int64_t ne0, int64_t layer,
                              int64_t n_layer, int tied, int *fell_back) {
    if (fell_back) *fell_back = 0;
    int32_t t = kd_export_wanted_type(p, name, n_dims, layer, n_layer, tied);
    while (ne0 % kd_quant_block(t)) {
        if (fell_back) *fell_back = 1;
        t = (t == KD_GGML_TYPE_Q4_K || t == KD_GGML_TYPE_Q6_K) ? KD_GGML_TYPE_Q8_0 : KD_GGML_TYPE_F16;
    }
    return t;
}
