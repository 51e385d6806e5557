/*
 * kd_pretok.h — the pre-tokenizers of byte-level BPE ("gpt2") tokenizers:
 * GGUF's tokenizer.ggml.pre names each one, and a pre-tokenizer splits a text
 * into the words that BPE then merges inside. kd knows every name llama.cpp
 * knows (its src/llama-vocab.cpp), maps it to the same split, and splits
 * exactly as llama.cpp does, so that kd's token ids equal llama.cpp's
 * (tests/test_pretok.c checks this on llama.cpp's own test vectors).
 *
 * How llama.cpp splits, and how kd reproduces it:
 *   - the text is decoded leniently (llama.cpp's unicode_cpts_from_utf8: a
 *     byte that starts no valid sequence becomes U+FFFD; overlong forms are
 *     accepted) and every word is the UTF-8 of its code points, so the words
 *     of an invalid text are those of its repaired copy (kd_words.text);
 *   - each pre-tokenizer is a list of regular expressions applied in turn:
 *     the first splits the text, each next one splits every piece the
 *     previous ones made; inside a piece, every match is a word and so is
 *     every stretch between matches (nothing is dropped);
 *   - the expressions are matched with PCRE2 (UTF mode), so \p{L}, \p{N},
 *     \p{P}, \p{S} and \p{M} are exactly Unicode's general categories;
 *   - llama.cpp matches with C++ std::regex, where \s and \d are ASCII, and
 *     first turns every non-ASCII White_Space character into U+000B: kd does
 *     the same (PCRE2 without UCP: \s is [\t\n\v\f\r ], \d is [0-9]);
 *   - llama.cpp stands every non-ASCII letter in for one symbol, so \p{Lu},
 *     \p{Ll}, \p{Lt}, \p{Lm} and \p{Lo} all mean \p{L} there (and in the
 *     lookahead form of GPT-4o / Tekken, a non-ASCII letter is both upper
 *     and lower case): kd's tables write \p{L} where llama.cpp's say \p{Lu}…;
 *   - where llama.cpp uses hand-written code instead of its expression
 *     (Kimi-K2, AFMoE and Tiny Aya digits), kd's table has an expression that
 *     does what that code does.
 * Unicode data: PCRE2's tables (Unicode 14 in Debian 12's PCRE2 10.42), where
 * llama.cpp has its own (a later Unicode): code points assigned after
 * Unicode 14 may be classed differently.
 *
 * After the split, llama.cpp's BPE step differs by pre-tokenizer in a few
 * flags (kd_pretok_flags): IGNORE_MERGES (a word that is a token is that
 * token), RAW (BPE on the UTF-8 itself, not on GPT-2 byte characters, with
 * <0xXX> byte fallback), ESCAPE_SPACE (spaces become U+2581 first) and
 * NEWLINE_TOKENS (a word of newlines that is a token is that token).
 */
#ifndef KD_PRETOK_H
#define KD_PRETOK_H

#include <stddef.h>

#include "core/kd_err.h"

#define KD_PRETOK_IGNORE_MERGES  1u
#define KD_PRETOK_RAW            2u
#define KD_PRETOK_ESCAPE_SPACE   4u
#define KD_PRETOK_NEWLINE_TOKENS 8u

typedef struct kd_pretok kd_pretok;

/* The split for tokenizer.ggml.pre = pre ("" or NULL: llama.cpp's "default",
 * as llama.cpp does when the key is missing). An unknown name fails with a
 * message naming it. */
kd_pretok *kd_pretok_new(const char *pre, kd_err *err);
void kd_pretok_free(kd_pretok *p);
/* 1 when llama.cpp knows the name (or it is empty). */
int kd_pretok_known(const char *pre);
unsigned kd_pretok_flags(const kd_pretok *p);
/* llama.cpp's name for the split (its LLAMA_VOCAB_PRE_TYPE_*, e.g. "LLAMA3"). */
const char *kd_pretok_type(const kd_pretok *p);
/* Every name, in table order: names[i] for i < n (for tests and --help). */
size_t kd_pretok_names(const char *const **names);

/* The expressions (PCRE2 syntax, see above): n of them, i-th; and the first name whose split is exactly
 * re[0..n) (NULL when none): tokenizer.json stores a split as its list of expressions. */
int kd_pretok_n_regex(const kd_pretok *p);
const char *kd_pretok_regex(const kd_pretok *p, int i);
const char *kd_pretok_from_regex(const char *const *re, int n);

/* Words of a text: word i is text[end[i-1] .. end[i]) (end[-1] = 0); text is
 * the repaired copy described above. Zero-initialise; reused across calls. */
typedef struct kd_words {
    char *text;
    size_t len, cap;
    size_t *end;
    size_t n, end_cap;
    /* scratch */
    unsigned *cpt;
    unsigned *off, *voff;   /* byte offsets of each code point in text / in the matching view */
    unsigned *pa, *pb;      /* pieces, in code points */
    char *view;
    size_t cpt_cap, off_cap, view_cap, piece_cap;
    void *md;
} kd_words;
void kd_words_free(kd_words *w);

/* Split s[0..n) into words (w is overwritten). */
int kd_pretok_split(const kd_pretok *p, const char *s, size_t n, kd_words *w, kd_err *err);

#endif
