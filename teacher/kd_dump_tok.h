/*
 * kd_dump_tok.h — between a dump's tokenizer arrays (kd_dump_tokenizer, the
 * HDF5 `tokenizer` group) and kd's tokenizer (data/kd_tokenizer.h), so a
 * student inherits the tokenizer its teacher's dump carries.
 */
#ifndef KD_DUMP_TOK_H
#define KD_DUMP_TOK_H

#include "data/kd_tokenizer.h"
#include "teacher/kd_dump.h"

/* A kd_tokenizer from dump arrays (model "llama" only); name is used in messages. */
kd_tokenizer *kd_tokenizer_from_dump(const kd_dump_tokenizer *dt, const char *name, kd_err *err);
/* Dump arrays from a kd_tokenizer (free with kd_dump_tokenizer_free). */
int kd_dump_tokenizer_from(const kd_tokenizer *tok, kd_dump_tokenizer *out, kd_err *err);

#endif
