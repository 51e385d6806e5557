/*
 * kd_dump_tok.h — between a dump's tokenizer arrays (kd_dump_tokenizer, the
 * HDF5 `tokenizer` group) and kd's tokenizer (data/kd_tokenizer.h), so a
 * student inherits the tokenizer its teacher's dump carries; and the
 * tokenizer file of a checkpoint directory.
 *
 * A checkpoint stores a SentencePiece ("llama") tokenizer as llama2.c's
 * tokenizer.bin, and a byte-level BPE ("gpt2") one — which tokenizer.bin
 * cannot hold: it has merges, a pre-tokenizer and token types — as
 * tokenizer.h5: root attributes format = "kd-tokenizer", version = 1, and the
 * group `tokenizer` of docs/dump-format.md (docs/checkpoints.md).
 */
#ifndef KD_DUMP_TOK_H
#define KD_DUMP_TOK_H

#include "data/kd_tokenizer.h"
#include "data/kd_dump.h"

#define KD_TOKENIZER_H5_FORMAT "kd-tokenizer"

/* A kd_tokenizer from dump arrays (model "llama" or "gpt2"); name (the file)
 * is used in messages, which name the field at fault. */
kd_tokenizer *kd_tokenizer_from_dump(const kd_dump_tokenizer *dt, const char *name, kd_err *err);
/* Dump arrays from a kd_tokenizer (free with kd_dump_tokenizer_free). */
int kd_dump_tokenizer_from(const kd_tokenizer *tok, kd_dump_tokenizer *out, kd_err *err);

/* tokenizer.h5 (see above), written atomically; and read back. */
int kd_tokenizer_save_h5(const kd_tokenizer *tok, const char *path, kd_err *err);
kd_tokenizer *kd_tokenizer_load_h5(const char *path, kd_err *err);
/* A tokenizer file of any kind: tokenizer.h5 (HDF5 signature), else as kd_tokenizer_load (GGUF, tokenizer.json, tokenizer.bin). */
kd_tokenizer *kd_tokenizer_open(const char *path, kd_err *err);
/* The tokenizer of checkpoint directory dir: tokenizer.h5 when present, else
 * tokenizer.bin, else tokenizer.json; *out = NULL (and 0) when it has none. */
int kd_tokenizer_load_dir(const char *dir, kd_tokenizer **out, kd_err *err);
/* Store tok in dir: tokenizer.bin for "llama", tokenizer.h5 for "gpt2", and beside it tokenizer.json +
 * tokenizer_config.json for transformers (data/kd_tokenizer_hf.h; a warning instead when they cannot be
 * written, which kd_tokenizer_save_hf_or_warn does alone). Reading falls back to tokenizer.json. */
void kd_tokenizer_save_hf_or_warn(const kd_tokenizer *tok, const char *dir);
int kd_tokenizer_save_dir(const kd_tokenizer *tok, const char *dir, kd_err *err);
/* "tokenizer.h5" or "tokenizer.bin": the file kd_tokenizer_save_dir writes for tok. */
const char *kd_tokenizer_dir_file(const kd_tokenizer *tok);

#endif
