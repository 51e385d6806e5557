/*
 * kd_tokenizer_bpe.h — byte-level BPE ("gpt2" in GGUF terms: Llama 3, Qwen2.5,
 * SmolLM, GPT-2) on top of kd_tokenizer: a kd_tokenizer turned into a "gpt2"
 * tokenizer carries the merges (ranked by position) and the pre-tokenizer name
 * (GGUF tokenizer.ggml.pre), and kd_tokenizer_encode / kd_tokenizer_decode
 * then work the byte-level way.
 *
 * Pieces are in GGUF's internal form: every byte is one "byte character"
 * (GPT-2's bytes_to_unicode: the printable bytes 0x21–0x7E, 0xA1–0xAC and
 * 0xAE–0xFF stand for themselves, the 68 others for U+0100… in byte order, so a
 * space is "Ġ" U+0120 and a newline "Ċ" U+010A). A merge is "left right": the
 * two pieces separated by the first space after the first byte (as llama.cpp
 * splits them); its rank is its index.
 *
 * Decoding: a NORMAL piece maps each byte character back to its byte (a
 * character outside the 256 is copied as it is; for the RAW pre-tokenizers the
 * piece is UTF-8 itself, U+2581 a space when spaces are escaped); other types
 * as for SPM.
 *
 * Encoding (llama.cpp's llm_tokenizer_bpe):
 *   1. BOS when KD_TOK_ENC_ADD_SPECIAL is given and add_bos is set;
 *   2. the text is split at special tokens as for SPM;
 *   3. each raw fragment is split into words by the pre-tokenizer (every name
 *      llama.cpp knows, split exactly as llama.cpp does: data/kd_pretok.h);
 *   4. each word's bytes become byte characters, the initial symbols (the
 *      word's own UTF-8 characters for the RAW pre-tokenizers, Gemma 4 style);
 *      with IGNORE_MERGES (Llama 3 …) a word that is a token is that token;
 *   5. the adjacent pair with the lowest merge rank is merged, ties to the
 *      leftmost, until no pair has a rank;
 *   6. each final symbol is its piece, or one piece per byte (the one-byte
 *      piece, <0xXX> when RAW; a byte without one is dropped, as llama.cpp does);
 *   7. EOS when asked and add_eos is set.
 * Encoding with a pre-tokenizer name llama.cpp does not know, which
 * kd_tokenizer_can_encode reports, fails with a message naming the
 * tokenizer model and pre-tokenizer. Decoding works for all. Unlike
 * llama.cpp, decoding keeps the text's spaces exactly (no clean-up of a space
 * before punctuation).
 */
#ifndef KD_TOKENIZER_BPE_H
#define KD_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "data/kd_tokenizer.h"

#define KD_TOK_MAX_MERGES (1 << 24)

/* Make tok a byte-level BPE ("gpt2") tokenizer with n_merges merges (each
 * merges[i] of lens[i] bytes, lens NULL = NUL-terminated) and pre-tokenizer
 * name pre (NULL or "" = none given). Clears add_space_prefix. A merge that is
 * not "left right" (no space after its first byte, or nothing after that space)
 * is an error naming `what` (e.g. "dump.h5: dataset 'tokenizer/merge_bytes'")
 * and the merge. */
int kd_tokenizer_set_bpe(kd_tokenizer *tok, const char *pre, int32_t n_merges, const char *const *merges,
                         const size_t *lens, const char *what, kd_err *err);

/* "gpt2" for a byte-level BPE tokenizer, "llama" otherwise. */
const char *kd_tokenizer_model(const kd_tokenizer *tok);
/* The pre-tokenizer name ("" when none was given or the model is "llama"). */
const char *kd_tokenizer_pre(const kd_tokenizer *tok);
int32_t kd_tokenizer_n_merges(const kd_tokenizer *tok);
/* The pre-tokenizer (data/kd_pretok.h); NULL for SPM or a name llama.cpp does not know. */
struct kd_pretok;
const struct kd_pretok *kd_tokenizer_pretok(const kd_tokenizer *tok);
/* Merge i ("left right", NUL-terminated), NULL when out of range. */
const char *kd_tokenizer_merge(const kd_tokenizer *tok, int32_t i, size_t *len);
/* 1 when kd_tokenizer_encode can encode text with this tokenizer; otherwise 0
 * and, when why is not NULL, a sentence saying why. */
int kd_tokenizer_can_encode(const kd_tokenizer *tok, char *why, size_t n);

/* GPT-2's byte ↔ byte-character map: the code point of byte b, and the byte of
 * code point cp (−1 when cp is none of the 256). */
uint32_t kd_bpe_byte_char(uint8_t b);
int kd_bpe_char_byte(uint32_t cp);

#endif
