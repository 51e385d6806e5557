/*
 * kd_bpe_words.c — the text side of BPE training (see kd_bpe_words.h and the
 * rules in kd_bpe_train.h): character classes, the pre-split state machine,
 * the word table and cutting long texts into units for the threads.
 */
#include "data/kd_bpe_words.h"

#include <omp.h>

#define SPACE_MARK   KD_BPE_SPACE
#define MAX_UNIT_LEN ((size_t)1 << 29)
#define UNIT_BYTES   ((size_t)1 << 16)   /* long texts are counted in pieces of about this size */
#define GROW         KD_BPE_GROW

enum { C_NONE, C_INVALID, C_WS, C_DIGIT, C_LETTER, C_PUNCT };

/* ---- character classes ------------------------------------------------------- */

/* Code point of a valid UTF-8 sequence of n ≥ 2 bytes, or -1. */
static int32_t utf8_decode(const unsigned char *p, size_t n) {
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    static const unsigned char lead_mask[5] = {0, 0, 0x1f, 0x0f, 0x07};
    if ((n == 2 && (p[0] & 0xe0) != 0xc0) || (n == 3 && (p[0] & 0xf0) != 0xe0) || (n == 4 && (p[0] & 0xf8) != 0xf0))
        return -1;
    uint32_t cp = p[0] & lead_mask[n];
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xc0) != 0x80) return -1;
        cp = cp << 6 | (p[k] & 0x3f);
    }
    if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
    return (int32_t)cp;
}

static int sym_class(const unsigned char *p, size_t n) {
    if (n == 1) {
        unsigned c = p[0];
        if (c == 0 || c >= 0x80) return C_INVALID;
        if (c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f') return C_WS;
        if (c >= '0' && c <= '9') return C_DIGIT;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return C_LETTER;
        return C_PUNCT;
    }
    int32_t cp = utf8_decode(p, n);
    if (cp < 0) return C_INVALID;
    if (cp == 0x2581 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
        cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000)
        return C_WS;
    if ((cp >= 0xa1 && cp <= 0xbf) || cp == 0xd7 || cp == 0xf7 || (cp >= 0x2010 && cp <= 0x2027) ||
        (cp >= 0x2030 && cp <= 0x205e) || (cp >= 0x3001 && cp <= 0x303f))
        return C_PUNCT;
    return C_LETTER;
}

/* ---- the word table ------------------------------------------------------------ */

void kd_bpe_words_free(kd_bpe_words *t) {
    free(t->blob);
    free(t->w);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

static int words_add(kd_bpe_words *t, const char *p, size_t n, int64_t count) {
    if (!t->slot && kd_bpe_slots(&t->slot, &t->mask, 1024) < 0) return -1;
    size_t s = kd_bpe_hash(p, n) & t->mask;
    for (int32_t id; (id = t->slot[s]) >= 0; s = (s + 1) & t->mask)
        if (t->w[id].len == n && !memcmp(t->blob + t->w[id].off, p, n)) {
            t->w[id].count += count;
            return 0;
        }
    if (t->n >= INT32_MAX - 1 || GROW(t->w, t->cap, t->n + 1) < 0 || GROW(t->blob, t->blob_cap, t->blob_n + n) < 0)
        return -1;
    memcpy(t->blob + t->blob_n, p, n);
    t->w[t->n] = (kd_bpe_word){t->blob_n, (uint32_t)n, count};
    t->blob_n += n;
    t->slot[s] = (int32_t)t->n++;
    if (t->n * 2 > t->mask) {   /* rehash */
        if (kd_bpe_slots(&t->slot, &t->mask, t->n) < 0) return -1;
        for (size_t i = 0; i < t->n; i++) {
            size_t q = kd_bpe_hash(t->blob + t->w[i].off, t->w[i].len) & t->mask;
            while (t->slot[q] >= 0) q = (q + 1) & t->mask;
            t->slot[q] = (int32_t)i;
        }
    }
    return 0;
}

/* Normalise text (with the space prefix when `prefix`) into *buf and count its
 * words: the state machine of the pre-split rules in kd_bpe_train.h. */
static int count_text(kd_bpe_words *t, int merge_digits, const char *text, size_t len, int prefix, char **buf,
                      size_t *cap) {
    if (GROW(*buf, *cap, 3 * len + 3) < 0) return -1;
    char *b = *buf;
    size_t n = prefix ? 3 : 0;
    memcpy(b, SPACE_MARK, 3);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') memcpy(b + n, SPACE_MARK, 3), n += 3;
        else b[n++] = text[i];
    }
    int cur = C_NONE, last_space = 0;
    size_t ws = 0, last_off = 0;   /* current word start; last whitespace symbol */
    for (size_t off = 0, l; off < n; off += l) {
        l = kd_bpe_utf8_len((unsigned char)b[off]);
        if (l > n - off) l = n - off;
        int c = sym_class((const unsigned char *)b + off, l);
        int space = l == 3 && !memcmp(b + off, SPACE_MARK, 3);
        if (cur == C_WS && c == C_WS) {
            last_off = off, last_space = space;
            continue;
        }
        if (cur != C_WS && c == cur && (c != C_DIGIT || merge_digits)) continue;
        size_t start = off;   /* where the next word starts */
        if (cur == C_WS && c != C_INVALID && last_space) start = last_off;   /* "▁" joins the next word */
        if (cur != C_NONE && start > ws && words_add(t, b + ws, start - ws, 1) < 0) return -1;
        if (c == C_INVALID) {
            cur = C_NONE;
            t->fallback += (int64_t)l;
            continue;
        }
        ws = start, cur = c;
        if (c == C_WS) last_off = off, last_space = space;
    }
    if (cur != C_NONE && words_add(t, b + ws, n - ws, 1) < 0) return -1;
    return 0;
}

kd_bpe_unit *kd_bpe_units(const char *const *texts, const size_t *lens, int n_texts, size_t *n_units) {
    size_t n = 0, cap = 0;
    kd_bpe_unit *u = NULL;
    for (int i = 0; i < n_texts; i++) {
        const char *p = texts[i];
        size_t len = lens ? lens[i] : p ? strlen(p) : 0, pos = 0;
        while (pos < len) {
            size_t end = len;
            if (len - pos > 2 * UNIT_BYTES) {
                const char *nl = p + pos + UNIT_BYTES;
                while ((nl = memchr(nl, '\n', (size_t)(p + len - 1 - nl))) && !(nl[1] > ' ' && nl[1] < 0x7f)) nl++;
                if (nl) end = (size_t)(nl + 1 - p);
            }
            if (GROW(u, cap, n + 1) < 0) {
                free(u);
                return NULL;
            }
            u[n++] = (kd_bpe_unit){p + pos, end - pos, pos == 0};
            pos = end;
        }
    }
    *n_units = n;
    return u ? u : malloc(1);
}

int kd_bpe_count_words(const char *const *texts, const size_t *lens, int n_texts, int merge_digits,
                       kd_bpe_words *out, kd_err *err) {
    size_t n_units = 0;
    kd_bpe_unit *u = kd_bpe_units(texts, lens, n_texts, &n_units);
    if (!u) return kd_errf(err, "bpe: out of memory");
    for (size_t i = 0; i < n_units; i++) {
        if (u[i].n >= MAX_UNIT_LEN) {
            size_t n = u[i].n;
            free(u);
            return kd_errf(err, "bpe: %zu bytes without a line break followed by a printable character, expected "
                                "less than %zu (split the text into documents)", n, MAX_UNIT_LEN);
        }
        out->n_bytes += (int64_t)u[i].n;
    }
    /* one table per thread, merged into the first */
    int nt = omp_get_max_threads(), bad = 0;
    if ((size_t)nt > n_units) nt = n_units ? (int)n_units : 1;
    kd_bpe_words *tabs = calloc((size_t)nt, sizeof *tabs);
    if (!tabs) {
        free(u);
        return kd_errf(err, "bpe: out of memory");
    }
#pragma omp parallel num_threads(nt) reduction(| : bad)
    {
        kd_bpe_words *w = &tabs[omp_get_thread_num()];
        char *buf = NULL;
        size_t cap = 0;
#pragma omp for schedule(dynamic, 16)
        for (size_t i = 0; i < n_units; i++)
            if (!bad && count_text(w, merge_digits, u[i].p, u[i].n, u[i].prefix, &buf, &cap) < 0) bad = 1;
        free(buf);
    }
    for (int k = 1; k < nt; k++) {
        for (size_t i = 0; i < tabs[k].n && !bad; i++)
            bad = words_add(&tabs[0], tabs[k].blob + tabs[k].w[i].off, tabs[k].w[i].len, tabs[k].w[i].count) < 0;
        tabs[0].fallback += tabs[k].fallback;
        kd_bpe_words_free(&tabs[k]);
    }
    int64_t n_bytes = out->n_bytes;
    *out = tabs[0];
    out->n_bytes = n_bytes;
    free(out->slot);
    out->slot = NULL;
    free(tabs);
    free(u);
    if (bad) {
        kd_bpe_words_free(out);
        return kd_errf(err, "bpe: out of memory counting words");
    }
    return 0;
}
