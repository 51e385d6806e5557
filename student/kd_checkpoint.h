/*
 * kd_checkpoint.h — student checkpoints in Hugging Face layout.
 *
 * A checkpoint is a directory:
 *   config.json          kd_config (LlamaForCausalLM keys; MistralForCausalLM
 *                        when a sliding window is set)
 *   model.safetensors    F32 weights with HF Llama names, HF RoPE layout
 *                        (F16/BF16 and sharded model.safetensors.index.json
 *                        checkpoints load too, converted to F32)
 * plus, written by other parts of kd beside these: the tokenizer and training
 * state files. `LlamaForCausalLM.from_pretrained(DIR)` loads it unchanged.
 */
#ifndef KD_CHECKPOINT_H
#define KD_CHECKPOINT_H

#include "format/kd_safetensors.h"
#include "student/kd_model.h"

/* Write config.json and model.safetensors into dir (created if needed); each file atomically. */
int kd_checkpoint_save(const kd_model *m, const char *dir, kd_err *err);
/* The same with the weights stored as dtype KD_ST_F32, KD_ST_BF16 or KD_ST_F16
 * (converted while writing, round-to-nearest-even; 1-D tensors too). */
int kd_checkpoint_save_as(const kd_model *m, const char *dir, kd_st_dtype dtype, kd_err *err);
/* Load a checkpoint directory into a new model, with gradients (training). */
int kd_checkpoint_load(kd_model *m, const char *dir, kd_err *err);
/* The same with kd_model_new_flags flags (KD_MODEL_NO_GRAD: inference). */
int kd_checkpoint_load_flags(kd_model *m, const char *dir, int flags, kd_err *err);
/* Load only the weights of dir into an existing model of the same shape. */
int kd_checkpoint_load_weights(kd_model *m, const char *dir, kd_err *err);

/* The walk behind kd_checkpoint_load_weights, for storage other than FP32
 * parameters (train/kd_lean.c): put(ctx, i, t, err) is called once for each
 * parameter m->params[i] (m may be a shell model) with its tensor t in file f,
 * checked by kd_st_check_float against the parameter's shape; the tensor's mapped
 * pages are released after put returns. Unknown tensors and missing
 * parameters are errors, as for kd_checkpoint_load_weights. */
typedef int (*kd_checkpoint_put_fn)(void *ctx, int i, const kd_st_file *f, const kd_st_tensor *t, kd_err *err);
int kd_checkpoint_read(const kd_model *m, const char *dir, kd_checkpoint_put_fn put, void *ctx, kd_err *err);



/* Load any model kd can read: a checkpoint directory, a GGUF llama file
 * (dequantized to F32, see kd_gguf_model.h) or a llama2.c .bin file, for
 * inference: KD_MODEL_NO_GRAD, the parameters have no gradient buffers. */
int kd_model_load(kd_model *m, const char *path, kd_err *err);
/* The same with explicit flags (0: with gradients, for training). */
int kd_model_load_flags(kd_model *m, const char *path, int flags, kd_err *err);
#endif
