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

/* Load path into a new model; with tok non-NULL, also its tokenizer (NULL if the file has none). */
int kd_model_load_gguf(kd_model *m, const char *path, struct kd_tokenizer **tok, kd_err *err);
/* The same with kd_model_new_flags flags (KD_MODEL_NO_GRAD: no gradient buffers). */
int kd_model_load_gguf_flags(kd_model *m, const char *path, struct kd_tokenizer **tok, int flags, kd_err *err);

/* The GGUF tensor name of a parameter's Hugging Face name ("model.layers.3.mlp.up_proj.weight" →
 * "blk.3.ffn_up.weight", as kd export writes them) into out[0..n); *layer (when not NULL) is the block, −1 for
 * the embedding, final norm and LM head. Returns 0, or −1 when the name has no GGUF counterpart. */
int kd_gguf_tensor_name(const char *hf, char *out, size_t n, int64_t *layer);

#endif
