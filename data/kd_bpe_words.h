/*
 * kd_bpe_words.h — the text side of BPE training (data/kd_bpe_train.h) and
 * helpers shared by its two files: texts normalised as the encoder sees them,
 * pre-split into words by character class, counted into a table of unique
 * words on all threads (data/kd_bpe_words.c).
 */
#ifndef KD_BPE_WORDS_H
#define KD_BPE_WORDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_err.h"

#define KD_BPE_SPACE "\xE2\x96\x81"   /* U+2581, the internal form of a space */

/* Length of the UTF-8 sequence a lead byte announces, as the encoder reads it. */
static inline size_t kd_bpe_utf8_len(unsigned char lead) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[lead >> 4];
}

/* Make room for `need` elements of `elem` bytes in the array whose pointer is
 * at pp (copied with memcpy, so that any object pointer type works). */
static inline int kd_bpe_grow(void *pp, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *p;
    memcpy(&p, pp, sizeof p);
    p = realloc(p, c * elem);
    if (!p) return -1;
    memcpy(pp, &p, sizeof p);
    *cap = c;
    return 0;
}
#define KD_BPE_GROW(arr, cap, need) kd_bpe_grow(&(arr), &(cap), (need), sizeof *(arr))

static inline uint64_t kd_bpe_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

/* (Re)allocate a slot table of int32 ids (-1 empty), 2^k slots for n_items;
 * the caller refills it. */
static inline int kd_bpe_slots(int32_t **slot, size_t *mask, size_t n_items) {
    size_t cap = 64;
    while (cap < n_items * 2 + 2) cap *= 2;
    int32_t *s = malloc(cap * sizeof *s);
    if (!s) return -1;
    memset(s, 0xff, cap * sizeof *s);
    free(*slot);
    *slot = s;
    *mask = cap - 1;
    return 0;
}

typedef struct kd_bpe_word {
    size_t off;               /* in blob */
    uint32_t len;
    int64_t count;
} kd_bpe_word;

typedef struct kd_bpe_words {  /* unique words with their counts */
    char *blob;
    size_t blob_n, blob_cap;
    kd_bpe_word *w;
    size_t n, cap;
    int32_t *slot;            /* hash map, NULL once counting is done */
    size_t mask;
    int64_t n_bytes;          /* input bytes */
    int64_t fallback;         /* bytes in no word (invalid UTF-8, NUL): byte-fallback tokens */
} kd_bpe_words;

/* Count the words of texts (each its own document, with the space prefix) on
 * all threads into *out (zero-initialised). Fails for lack of memory, or for
 * more than 512 MiB without a place to cut the text. */
int kd_bpe_count_words(const char *const *texts, const size_t *lens, int n_texts, int merge_digits,
                       kd_bpe_words *out, kd_err *err);
void kd_bpe_words_free(kd_bpe_words *t);

/* A piece of one text that a thread handles alone. */
typedef struct kd_bpe_unit {
    const char *p;
    size_t n;
    int prefix;               /* the text's first piece: gets the space prefix */
} kd_bpe_unit;

/* Cut texts into units: a long text is cut after a newline followed by a
 * printable ASCII character other than space (a word boundary whatever the
 * context), and only its first unit gets the space prefix. Returns a malloc'd
 * array of *n_units units (pointing into texts), or NULL for lack of memory. */
kd_bpe_unit *kd_bpe_units(const char *const *texts, const size_t *lens, int n_texts, size_t *n_units);

#endif
