/*
 * kd_gguf_model.h — a GGUF llama-architecture file as a trainable kd_model:
 * the config from the llama.* metadata, every tensor dequantized to F32 and
 * q/k rows permuted back from GGUF's adjacent-pair RoPE layout to the Hugging
 * Face layout kd trains in. Lets a GGUF model be a teacher (kd teacher dump),
 * a student to start from, or an FP32 reference.
 */
#ifndef KD_GGUF_MODEL_H
#define KD_GGUF_MODEL_H

#include "student/kd_model.h"

struct kd_tokenizer;
struct kd_gguf;

/* The RoPE of a llama GGUF into c (whose head_dim is set): llama.rope.freq_base,
 * llama.rope.scaling.type ("none", "linear" or absent; others are refused) with
 * llama.rope.scaling.factor (or the older llama.rope.scale_linear), and the
 * per-dimension divisors of the rope_freqs.weight tensor (Llama 3.1 scaling),
 * turned back into a RoPE type kd computes (kd_config_rope_from_factors, with
 * llama.rope.scaling.original_context_length when present). */
int kd_gguf_read_rope(const struct kd_gguf *g, kd_config *c, kd_err *err);

/* The kd_config of a parsed llama GGUF: every hyper-parameter checked against
 * its range (kd_config.h) and against the tensors' shapes (token_embd.weight
 * gives the vocabulary; the tokenizer may not be larger) before anything is
 * allocated; messages name the file and the key. */
int kd_gguf_config(const struct kd_gguf *g, kd_config *c, kd_err *err);

/* Load path into a new model; with tok non-NULL, also its tokenizer (NULL if the file has none). */
int kd_model_load_gguf(kd_model *m, const char *path, struct kd_tokenizer **tok, kd_err *err);
/* The same with kd_model_new_flags flags (KD_MODEL_NO_GRAD: no gradient buffers). */
int kd_model_load_gguf_flags(kd_model *m, const char *path, struct kd_tokenizer **tok, int flags, kd_err *err);

/* The GGUF tensor name of a parameter's Hugging Face name ("model.layers.3.mlp.up_proj.weight" →
 * "blk.3.ffn_up.weight", as kd export writes them) into out[0..n); *layer (when not NULL) is the block, −1 for
 * the embedding, final norm and LM head. Returns 0, or −1 when the name has no GGUF counterpart. */
int kd_gguf_tensor_name(const char *hf, char *out, size_t n, int64_t *layer);

#endif
