/*
 * kd_config.h — the student's architecture, read from and written to a
 * Hugging Face style config.json (LlamaForCausalLM keys), so that the config
 * of a real Llama-family model can be used as is.
 */
#ifndef KD_CONFIG_H
#define KD_CONFIG_H

#include <stdint.h>

#include "core/kd_err.h"

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
/* Read config.json; unknown keys are ignored, invalid values rejected with the file and key named. */
int kd_config_load(kd_config *c, const char *path, kd_err *err);
/* Parse from JSON text (the name is used in messages). */
int kd_config_parse(kd_config *c, const char *text, size_t len, const char *name, kd_err *err);
/* Consistency: positive sizes, heads dividing, even head dim, sane upper bounds. */
int kd_config_validate(const kd_config *c, const char *name, kd_err *err);
/* Write a config.json that transformers' LlamaForCausalLM accepts. */
int kd_config_save(const kd_config *c, const char *path, kd_err *err);
/* The same with another torch_dtype ("bfloat16" for BF16 weights; kd_config_save says "float32"). */
int kd_config_save_dtype(const kd_config *c, const char *path, const char *torch_dtype, kd_err *err);

/* Parameter count (embedding counted once when tied). */
int64_t kd_config_n_params(const kd_config *c);

#endif
