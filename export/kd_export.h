/*
 * kd_export.h — the export of a kd student as a llama.cpp "llama" GGUF.
 *
 * kd_export_gguf writes the student as a GGUF that stock llama.cpp loads:
 * architecture "llama", the hyper-parameters with the exact key types
 * llama.cpp checks, the SentencePiece vocabulary from the tokenizer, tensor
 * names token_embd / output_norm / output (absent when tied) / blk.N.*, q and k
 * rows permuted back from kd's rotate_half layout to GGUF's adjacent pairs,
 * 1-D tensors in F32, and 2-D tensors in the preset's types
 * (kd_export_presets; see kd_export_tensor_type for the per-tensor rule).
 */
#ifndef KD_EXPORT_H
#define KD_EXPORT_H

#include "core/kd_err.h"
#include "data/kd_tokenizer.h"
#include "student/kd_model.h"

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
