/*
 * kd_tokenizer.h — SentencePiece-style ("llama" in GGUF terms) tokenizer with
 * byte fallback, bit-compatible with llama.cpp's SPM tokenizer. The same type
 * holds a byte-level BPE ("gpt2") tokenizer: data/kd_tokenizer_bpe.h.
 *
 * Vocabulary: n pieces, each with a score (higher merges first) and a token
 * type (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6;
 * 0 UNDEFINED), plus BOS/EOS/UNK ids and the flags add_bos, add_eos and
 * add_space_prefix.
 *
 * Spaces: internally, as in GGUF, a space inside a piece is U+2581 "▁"
 * (E2 96 81). The llama2.c loader turns the plain spaces of tokenizer.bin into
 * "▁" and kd_tokenizer_write_llama2c turns them back, so one encoder serves
 * both formats. Byte tokens are pieces "<0xXX>" (two uppercase hex digits).
 *
 * Encoding (as llama.cpp's llm_tokenizer_spm):
 *   1. BOS when KD_TOK_ENC_ADD_SPECIAL is given and add_bos is set;
 *   2. the text is split at special tokens: USER_DEFINED always, CONTROL and
 *      UNKNOWN only with KD_TOK_ENC_PARSE_SPECIAL (longest texts first);
 *   3. each raw fragment gets a leading " " when add_space_prefix is set and it
 *      starts the text or follows a special token, then " " → "▁";
 *   4. UTF-8 characters are the initial symbols (length from the lead byte);
 *   5. a max-heap of adjacent pairs whose concatenation is a piece, by that
 *      piece's score, ties to the smaller left index; stale pairs are skipped;
 *   6. each final symbol is its piece, or one <0xXX> token per byte (byte
 *      fallback; a single-byte piece when <0xXX> is missing);
 *   7. EOS when KD_TOK_ENC_ADD_SPECIAL is given and add_eos is set.
 * Pieces are found through a hash map, so encoding is fast on a 32k vocab.
 *
 * Decoding: NORMAL pieces with "▁" → " "; BYTE tokens → the raw byte;
 * CONTROL and UNKNOWN → nothing unless KD_TOK_DEC_SPECIAL; USER_DEFINED →
 * verbatim; UNDEFINED and UNUSED → nothing. With add_space_prefix, one leading
 * space is removed from the first token after an optional leading BOS (unless
 * KD_TOK_DEC_KEEP_SPACE), so decode(encode(x)) == x for valid UTF-8 x with or
 * without BOS. (llama.cpp keeps that space when the ids start with BOS.)
 */
#ifndef KD_TOKENIZER_H
#define KD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"

typedef enum kd_token_type {
    KD_TOKEN_UNDEFINED = 0,
    KD_TOKEN_NORMAL = 1,
    KD_TOKEN_UNKNOWN = 2,
    KD_TOKEN_CONTROL = 3,
    KD_TOKEN_USER_DEFINED = 4,
    KD_TOKEN_UNUSED = 5,
    KD_TOKEN_BYTE = 6,
} kd_token_type;

/* Tokenizer flags (kd_tokenizer_new, kd_tokenizer_flags). */
#define KD_TOK_ADD_BOS          1u
#define KD_TOK_ADD_EOS          2u
#define KD_TOK_ADD_SPACE_PREFIX 4u

/* Encode options. */
#define KD_TOK_ENC_ADD_SPECIAL   1u   /* BOS/EOS as the tokenizer's add_bos/add_eos say */
#define KD_TOK_ENC_PARSE_SPECIAL 2u   /* CONTROL/UNKNOWN token texts in the input become those tokens */

/* Decode options. */
#define KD_TOK_DEC_SPECIAL    1u      /* render CONTROL and UNKNOWN tokens as their text */
#define KD_TOK_DEC_KEEP_SPACE 2u      /* keep the leading space the space prefix produced */

#define KD_TOK_MAX_VOCAB (1 << 24)

typedef struct kd_tokenizer kd_tokenizer;

/* Build from n pieces (NUL-terminated, internal form with "▁"); scores may be
 * NULL (all 0), types may be NULL (all NORMAL). bos/eos/unk are ids or -1.
 * Fails on duplicate non-empty pieces, bad types or ids, NaN scores. */
kd_tokenizer *kd_tokenizer_new(int32_t n, const char *const *pieces, const float *scores, const int32_t *types,
                               int32_t bos, int32_t eos, int32_t unk, unsigned flags, kd_err *err);
void kd_tokenizer_free(kd_tokenizer *tok);

/* As kd_tokenizer_new, with pieces given as (pointer, length) (they may hold
 * any bytes) and errors naming `name`. Everything is copied. */
kd_tokenizer *kd_tokenizer_build(const char *name, int32_t n, const char *const *pcs, const size_t *lens,
                                 const float *scores, const int32_t *types, int32_t bos, int32_t eos, int32_t unk,
                                 unsigned flags, kd_err *err);
/* A llama2.c tokenizer.bin: int32 max_token_length, then per token float32
 * score, int32 length, bytes, up to the end of the file. Ids 0/1/2 are
 * UNK/BOS/EOS ("<unk>", "\n<s>\n" → "<s>", "\n</s>\n" → "</s>"), "<0xXX>"
 * pieces are BYTE, all others NORMAL; flags add_bos and add_space_prefix. */
kd_tokenizer *kd_tokenizer_parse_llama2c(const void *bytes, size_t len, const char *name, kd_err *err);
kd_tokenizer *kd_tokenizer_load_llama2c(const char *path, kd_err *err);
/* Write as a llama2.c tokenizer.bin (atomically). Only pieces and scores are
 * stored: types are re-derived on load as described above. */
int kd_tokenizer_write_llama2c(const kd_tokenizer *tok, const char *path, kd_err *err);

int32_t kd_tokenizer_n_vocab(const kd_tokenizer *tok);
int32_t kd_tokenizer_bos(const kd_tokenizer *tok);   /* -1 when none */
int32_t kd_tokenizer_eos(const kd_tokenizer *tok);
int32_t kd_tokenizer_unk(const kd_tokenizer *tok);
unsigned kd_tokenizer_flags(const kd_tokenizer *tok);
/* Internal-form piece of id (NUL-terminated), NULL when out of range. */
const char *kd_tokenizer_piece(const kd_tokenizer *tok, int32_t id, size_t *len);
float kd_tokenizer_score(const kd_tokenizer *tok, int32_t id);
kd_token_type kd_tokenizer_type(const kd_tokenizer *tok, int32_t id);
/* Id of an internal-form piece, or -1. */
int32_t kd_tokenizer_find(const kd_tokenizer *tok, const char *piece, size_t len);
/* Longest piece in bytes (a decoded token never exceeds it). */
size_t kd_tokenizer_max_piece_len(const kd_tokenizer *tok);

/* A growable list of token ids. Zero-initialise; encode appends. */
typedef struct kd_tokens {
    int32_t *ids;
    size_t n, cap;
} kd_tokens;
int kd_tokens_push(kd_tokens *t, int32_t id, kd_err *err);
void kd_tokens_free(kd_tokens *t);

/* Append the ids of text[0..len) to out (len below 512 MiB per call). */
int kd_tokenizer_encode(const kd_tokenizer *tok, const char *text, size_t len, unsigned opts, kd_tokens *out,
                        kd_err *err);
/* Text of ids[0..n) into a malloc'ed NUL-terminated buffer (*text, free()); *len its length. */
int kd_tokenizer_decode(const kd_tokenizer *tok, const int32_t *ids, size_t n, unsigned opts, char **text,
                        size_t *len, kd_err *err);
/* Text of one token (no space stripping) into buf[0..cap); returns its length or -1. */
int64_t kd_tokenizer_decode_token(const kd_tokenizer *tok, int32_t id, unsigned opts, char *buf, size_t cap,
                                  kd_err *err);

/* ---- another encoding on the same vocabulary ---------------------------------
 * A file above this one (data/kd_tokenizer_bpe.c: byte-level BPE) attaches a
 * codec; kd_tokenizer_encode then hands it each raw fragment (special tokens
 * are split off as for SPM) and decoding hands it each NORMAL piece. */
typedef struct kd_tok_codec {
    /* Append the ids of one raw fragment (no special tokens in it). */
    int (*encode)(const kd_tokenizer *tok, const char *text, size_t len, kd_tokens *out, kd_err *err);
    /* Text of a NORMAL piece p[0..n) of tok into dst[0..cap): its length, −1 when cap is too small. */
    int64_t (*render)(const kd_tokenizer *tok, const char *p, size_t n, char *dst, size_t cap);
    void (*free)(void *state);
} kd_tok_codec;
/* Attach codec with its state, owned by tok from now on (the previous codec's
 * state is freed); clears add_space_prefix. */
void kd_tokenizer_attach(kd_tokenizer *tok, const kd_tok_codec *codec, void *state);
/* The attached state when tok's codec is `codec`, else NULL. */
void *kd_tokenizer_codec_state(const kd_tokenizer *tok, const kd_tok_codec *codec);

#endif
