/*
 * kd_bpe_train.h — train a BPE vocabulary for kd's SentencePiece-style
 * ("llama") tokenizer (data/kd_tokenizer.h) on raw text, for corpora that have
 * no teacher tokenizer yet.
 *
 * Normalisation is exactly what the encoder does to each text: one leading
 * space (add_space_prefix), then every " " becomes "▁" (U+2581). Symbols are
 * the encoder's: UTF-8 characters by their lead byte.
 *
 * Pre-splitting: merges happen inside "words" only, so no piece crosses a word
 * boundary. Every character has a class: whitespace (▁ \n \t \r \v \f and the
 * Unicode spaces), digit (0-9), punctuation (other ASCII, incl. control
 * characters, and the Latin-1 / General / CJK punctuation blocks), letter
 * (ASCII letters and every other valid character). A word is
 *   - a run of letters, or of punctuation, or one digit (a run of digits when
 *     merge_digits is set), preceded by at most one "▁" — the last "▁" of a
 *     whitespace run that is directly followed by such a run; or
 *   - a run of whitespace (minus that last "▁"): spaces, newlines and tabs merge
 *     with each other ("▁▁▁▁", "\n\n", "\n▁▁") but never with a letter, digit
 *     or punctuation; pieces start with ▁ only as "▁word", never end with one
 *     unless they are all whitespace.
 * Invalid UTF-8 and NUL are never in a word (always byte fallback).
 *
 * Vocabulary (ids): 0 "<unk>" UNKNOWN, 1 "<s>" CONTROL, 2 "</s>" CONTROL,
 * 3..258 "<0x00>".."<0xFF>" BYTE (score 0), then the characters: 259 "▁",
 * always (a "▁" left to byte fallback would decode as "▁", not as a space),
 * then those kept by the coverage cut, most frequent first (ties by code
 * point), then the merged pieces in merge order. Piece number r (0-based) of the merges has score −r,
 * so the encoder applies merges in training order; character k has score
 * −(n_merges + k), below every merge (a character is never formed by a merge,
 * so its score is not used by the encoder; it only orders the file). Flags:
 * add_bos, add_space_prefix.
 *
 * Training: the corpus is counted into unique words; characters sorted by
 * frequency are kept until they cover `character_coverage` of all character
 * occurrences (the rest are left to byte fallback and split words like a
 * space does); then, repeatedly, the most frequent adjacent pair of symbols is
 * merged everywhere (left to right within a word: "aaa" → "aa" "a"). Pair
 * counts are updated incrementally: an index pair → words holding it, and a
 * lazy max-heap. Ties: higher count, then the bytewise smaller merged piece,
 * then the shorter left part — so the result is a function of the multiset of
 * texts alone (independent of text order, threads and platform).
 *
 * Training stops when the vocabulary reaches vocab_size, or earlier when no
 * pair occurs min_frequency times or more (the result is then smaller than
 * vocab_size; stats->stop says why). A merge whose piece already exists (the
 * same text reached through another split, e.g. "ab"+"c" after "a"+"bc")
 * adds no piece. A merge never makes a piece longer than max_piece_len
 * characters, nor one equal to a special or byte piece.
 *
 * The encoder (no pre-splitting, highest score first) can form a piece through
 * another split than the trainer did, and can match a whitespace piece across
 * a word boundary ("▁▁▁" + "b" instead of "▁▁" + "▁b"), so the encoder's
 * segmentation of the training text can differ slightly from the trainer's;
 * decode(encode(x)) == x holds for any valid UTF-8 x without literal "▁".
 */
#ifndef KD_BPE_TRAIN_H
#define KD_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"
#include "data/kd_tokenizer.h"

#define KD_BPE_N_FIXED   259   /* <unk> <s> </s> and the 256 byte pieces */
#define KD_BPE_MIN_VOCAB 260   /* and "▁" */

typedef enum kd_bpe_stop {
    KD_BPE_STOP_VOCAB = 0,   /* vocab_size reached */
    KD_BPE_STOP_FREQ = 1,    /* no pair left with count ≥ min_frequency */
} kd_bpe_stop;

/* What training did (filled when kd_bpe_opts.stats is non-NULL). */
typedef struct kd_bpe_stats {
    int64_t n_bytes;          /* input bytes, all texts */
    int64_t n_words;          /* unique words (pre-split units) */
    int32_t n_chars_seen;     /* distinct valid characters in the corpus */
    int32_t n_chars;          /* kept as pieces ("▁" included) */
    int32_t n_merges;         /* merged pieces in the vocabulary */
    int32_t n_merge_ops;      /* merges done (more when a piece was reached twice) */
    int64_t n_tokens;         /* the trainer's own token count of the corpus (no BOS) */
    kd_bpe_stop stop;
    double seconds;
} kd_bpe_stats;

/* Called after every 256th piece and after the last: vocabulary size so far,
 * vocab_size, and the count of the pair just merged. */
typedef void (*kd_bpe_progress_fn)(void *ctx, int32_t vocab, int32_t vocab_size, int64_t count);

/* Options. Zero-initialise, set vocab_size; fields left 0 take the defaults. */
typedef struct kd_bpe_opts {
    int32_t vocab_size;          /* total, incl. the 259 fixed pieces and "▁"; 260..KD_TOK_MAX_VOCAB */
    int64_t min_frequency;       /* merge a pair only when it occurs this often; default 2 */
    double character_coverage;   /* (0, 1]; default 0.9995 (SentencePiece's) */
    int32_t max_piece_len;       /* in characters; default 16 */
    int merge_digits;            /* 1: digit runs may merge; default 0: each digit alone (as Llama) */
    kd_bpe_progress_fn progress; /* optional */
    void *progress_ctx;
    kd_bpe_stats *stats;         /* optional output */
} kd_bpe_opts;

/* Train on texts[0..n_texts) (lens[i] bytes each; lens may be NULL for
 * NUL-terminated texts). Each text is one document: it gets its own space
 * prefix, as it would when encoded alone. Returns a tokenizer (UNK 0, BOS 1,
 * EOS 2, so kd_tokenizer_write_llama2c can save it) or NULL with err set. */
kd_tokenizer *kd_bpe_train(const char *const *texts, const size_t *lens, int n_texts, const kd_bpe_opts *o,
                           kd_err *err);

/* How many tokens the encoder makes of texts[0..n_texts) (each text alone, no
 * BOS/EOS), on all threads. Long texts are encoded in parts cut after a newline
 * followed by a printable ASCII character other than space; no piece of a
 * vocabulary trained here spans such a cut, so for those the count is exact
 * (for other vocabularies it may differ by about a token per 64 KiB). */
int kd_bpe_count_tokens(const kd_tokenizer *tok, const char *const *texts, const size_t *lens, int n_texts,
                        int64_t *n_tokens, kd_err *err);

#endif
