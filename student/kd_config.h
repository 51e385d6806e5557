/*
 * kd_config.h — the student's architecture, read from and written to a
 * Hugging Face style config.json (LlamaForCausalLM / MistralForCausalLM keys),
 * so that the config of a real Llama-family model can be used as is: both
 * RoPE spellings (transformers 4.x top-level rope_theta + rope_scaling,
 * transformers 5.x rope_parameters), RoPE types default, linear and llama3.
 * Every key that changes the numbers is read or refused (docs/checkpoints.md).
 */
#ifndef KD_CONFIG_H
#define KD_CONFIG_H

#include <stdint.h>

#include "core/kd_err.h"

/* RoPE frequency types (transformers' rope_type), see kd_config_rope_inv_freq. */
typedef enum kd_rope_type {
    KD_ROPE_TYPE_DEFAULT = 0,   /* inv_freq_i = theta^(−2i/D) */
    KD_ROPE_TYPE_LINEAR = 1,    /* inv_freq_i / factor (position interpolation) */
    KD_ROPE_TYPE_LLAMA3 = 2,    /* Llama 3.1: low frequencies / factor, high kept, smooth in between */
} kd_rope_type;

typedef struct kd_config {
    int64_t hidden_size;              /* C */
    int64_t intermediate_size;        /* F */
    int64_t num_hidden_layers;        /* L */
    int64_t num_attention_heads;      /* H */
    int64_t num_key_value_heads;      /* Hkv, divides H (GQA when smaller) */
    int64_t head_dim;                 /* D, default C / H */
    int64_t vocab_size;               /* V */
    int64_t max_position_embeddings;
    double rope_theta;
    kd_rope_type rope_type;
    double rope_factor;               /* linear, llama3 */
    double rope_low_freq_factor;      /* llama3 */
    double rope_high_freq_factor;     /* llama3 */
    int64_t rope_original_max_position_embeddings;   /* llama3 */
    double rms_norm_eps;
    int tie_word_embeddings;          /* LM head shares the embedding matrix */
    int64_t sliding_window;           /* 0: full causal attention */
    int64_t bos_token_id, eos_token_id;
} kd_config;

/* Sane ranges, enforced by kd_config_validate for every source (config.json,
 * GGUF metadata, llama2.c headers): far beyond any student kd trains, small
 * enough that no size computed from them overflows. */
#define KD_CONFIG_MAX_DIM ((int64_t)1 << 20)        /* hidden size, vocabulary */
#define KD_CONFIG_MAX_LAYERS 1024
#define KD_CONFIG_MAX_HEADS 4096
#define KD_CONFIG_MAX_HEAD_DIM 4096
#define KD_CONFIG_MAX_CTX ((int64_t)1 << 24)        /* max_position_embeddings, sliding_window */
#define KD_CONFIG_MIN_EPS 1e-12
#define KD_CONFIG_MAX_EPS 1.0
#define KD_CONFIG_MIN_THETA 1.0
#define KD_CONFIG_MAX_THETA 1e12

/* Defaults for optional keys (Llama 2 conventions). */
void kd_config_defaults(kd_config *c);
/* Read config.json; invalid values, unknown keys and keys naming features kd
 * does not implement are rejected with the file and key named. */
int kd_config_load(kd_config *c, const char *path, kd_err *err);
/* Parse from JSON text (the name is used in messages). */
int kd_config_parse(kd_config *c, const char *text, size_t len, const char *name, kd_err *err);
/* Consistency: positive sizes, heads dividing, even head dim, sane upper bounds. */
int kd_config_validate(const kd_config *c, const char *name, kd_err *err);
/* Write a config.json that transformers 4.x and 5.x load as the same model:
 * LlamaForCausalLM, or MistralForCausalLM when a sliding window is set (same
 * tensor names); RoPE in both spellings. */
int kd_config_save(const kd_config *c, const char *path, kd_err *err);
/* The same with another torch_dtype ("bfloat16" for BF16 weights; kd_config_save says "float32"). */
int kd_config_save_dtype(const kd_config *c, const char *path, const char *torch_dtype, kd_err *err);

/* The name of a RoPE type as transformers spells it ("default", "linear", "llama3"). */
const char *kd_rope_type_name(kd_rope_type t);
/* The RoPE inverse frequencies inv[i], i < head_dim/2, of the config (in radians per position). */
void kd_config_rope_inv_freq(const kd_config *c, double *inv);
/* llama.cpp's per-dimension frequency divisors (GGUF rope_freqs.weight): ff[i] =
 * theta^(−2i/D) / inv[i], i < head_dim/2. */
void kd_config_rope_freq_factors(const kd_config *c, float *ff);
/* The inverse of kd_config_rope_freq_factors: set c's RoPE type from per-dimension
 * divisors ff[head_dim/2] (a GGUF's rope_freqs.weight): default when all are 1,
 * linear when all are equal, else llama3 parameters (with original_ctx as
 * original_max_position_embeddings) that reproduce every divisor to 1e-5, or an
 * error naming `name`. */
int kd_config_rope_from_factors(kd_config *c, const float *ff, int64_t n, int64_t original_ctx, const char *name,
                                kd_err *err);

/* Parameter count (embedding counted once when tied). */
int64_t kd_config_n_params(const kd_config *c);

#endif
