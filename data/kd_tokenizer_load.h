/*
 * kd_tokenizer_load.h — a tokenizer from a file: the tokenizer.ggml.* keys of
 * a GGUF (SentencePiece "llama", byte-level BPE "gpt2" or Gemma 4's "gemma4":
 * data/kd_tokenizer_bpe.h), a Hugging Face tokenizer.json (data/kd_tokenizer_hf.h)
 * or a llama2.c tokenizer.bin (data/kd_tokenizer.h).
 */
#ifndef KD_TOKENIZER_LOAD_H
#define KD_TOKENIZER_LOAD_H

#include "core/kd_err.h"
#include "data/kd_tokenizer.h"

struct kd_gguf;

/* From the tokenizer.ggml.* keys of a parsed GGUF (model "llama", or "gpt2"
 * with tokenizer.ggml.merges and .pre, or "gemma4" with merges: pre-tokenizer
 * "gemma4" whatever .pre says). The tokenizer copies what it needs: g
 * may be closed afterwards. */
kd_tokenizer *kd_tokenizer_from_gguf(const struct kd_gguf *g, kd_err *err);
/* A GGUF (magic "GGUF"), a tokenizer.json (first byte '{'; read with the
 * tokenizer_config.json of its directory) or a llama2.c tokenizer.bin. */
kd_tokenizer *kd_tokenizer_load(const char *path, kd_err *err);

#endif
