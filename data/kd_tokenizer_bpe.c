/*
 * kd_tokenizer_bpe.c — byte-level BPE for kd_tokenizer (see kd_tokenizer_bpe.h):
 * the merges and their rank map, GPT-2's byte ↔ character map, decoding of
 * byte-level (and Gemma 4 UTF-8) pieces, the pre-tokenizer split (data/kd_pretok.h)
 * and merging by rank; attached to kd_tokenizer as its kd_tok_codec.
 */
#include "data/kd_tokenizer_bpe.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/kd_pretok.h"

typedef struct kd_tok_bpe {
    char pre[64];
    kd_pretok *pt;        /* the split of pre; NULL when llama.cpp does not know pre */
    int32_t n;            /* merges */
    char *blob;           /* every merge, each followed by a NUL */
    size_t *off;
    uint32_t *len;
    int32_t *slot;        /* hash map merge text → rank (-1 empty) */
    size_t mask;
} kd_tok_bpe;

static void bpe_free(void *state);
static int bpe_encode(const kd_tokenizer *tok, const char *text, size_t len, kd_tokens *out, kd_err *err);
static int64_t bpe_render(const kd_tokenizer *tok, const char *p, size_t n, char *dst, size_t cap);

/* What kd_tokenizer.c calls for a tokenizer this file made byte-level. */
static const kd_tok_codec bpe_codec = {bpe_encode, bpe_render, bpe_free};

/* The BPE part of tok, NULL for SPM. */
static kd_tok_bpe *bpe_part(const kd_tokenizer *tok) { return kd_tokenizer_codec_state(tok, &bpe_codec); }

/* ---- GPT-2 byte characters -------------------------------------------------------- */

static int printable(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

uint32_t kd_bpe_byte_char(uint8_t b) {
    if (printable(b)) return b;
    uint32_t k = 0;   /* rank of b among the non-printable bytes */
    for (unsigned x = 0; x < b; x++) k += !printable(x);
    return 256 + k;
}

int kd_bpe_char_byte(uint32_t cp) {
    if (cp < 256) return printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t k = 0;
    for (unsigned x = 0; x < 256; x++)
        if (!printable(x) && k++ == cp - 256) return (int)x;
    return -1;
}

/* UTF-8 of a code point below 0x800 into out; its length. */
static size_t put_utf8(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* The code point at s[0..n): *len its length; an invalid sequence is one byte, code point 0xFFFD. */
static uint32_t get_utf8(const unsigned char *s, size_t n, size_t *len) {
    unsigned c = s[0];
    size_t l = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF5 ? 4 : 0;
    if (l == 0 || l > n) {
        *len = 1;
        return c < 0x80 ? c : 0xFFFD;
    }
    uint32_t cp = l == 1 ? c : l == 2 ? c & 0x1F : l == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; k < l; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            *len = 1;
            return 0xFFFD;
        }
        cp = cp << 6 | (s[k] & 0x3F);
    }
    *len = l;
    return cp;
}

/* ---- the merges ------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void bpe_free(void *state) {
    kd_tok_bpe *b = state;
    if (!b) return;
    kd_pretok_free(b->pt);
    free(b->blob);
    free(b->off);
    free(b->len);
    free(b->slot);
    free(b);
}

/* Rank of the merge "left right" (key = those bytes), or -1. */
static int32_t rank_of(const kd_tok_bpe *b, const char *key, size_t n) {
    for (size_t h = hash_bytes(key, n) & b->mask;; h = (h + 1) & b->mask) {
        int32_t r = b->slot[h];
        if (r < 0) return -1;
        if (b->len[r] == n && !memcmp(b->blob + b->off[r], key, n)) return r;
    }
}

int kd_tokenizer_set_bpe(kd_tokenizer *tok, const char *pre, int32_t n, const char *const *merges, const size_t *lens,
                         const char *what, kd_err *err) {
    if (!what) what = "tokenizer merges";
    if (n < 0 || n > KD_TOK_MAX_MERGES) return kd_errf(err, "%s: %" PRId32 " merges, expected 0..%d", what, n, KD_TOK_MAX_MERGES);
    if (pre && strlen(pre) >= sizeof ((kd_tok_bpe *)0)->pre)
        return kd_errf(err, "%s: pre-tokenizer name '%.40s...' is too long", what, pre);
    kd_tok_bpe *b = calloc(1, sizeof *b);
    if (!b) return kd_errf(err, "%s: out of memory", what);
    snprintf(b->pre, sizeof b->pre, "%s", pre ? pre : "");
    if (kd_pretok_known(b->pre) && !(b->pt = kd_pretok_new(b->pre, err))) {
        bpe_free(b);
        return -1;
    }
    size_t total = 1, cap = 8;
    for (int32_t i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : strlen(merges[i]);
        if (l > UINT32_MAX / 2) {
            bpe_free(b);
            return kd_errf(err, "%s: merge %" PRId32 " of %zu bytes is too long", what, i, l);
        }
        total += l + 1;
    }
    while (cap < (size_t)n * 2) cap *= 2;
    b->mask = cap - 1;
    b->blob = malloc(total);
    b->off = malloc(((size_t)n + 1) * sizeof *b->off);
    b->len = malloc(((size_t)n + 1) * sizeof *b->len);
    b->slot = malloc(cap * sizeof *b->slot);
    if (!b->blob || !b->off || !b->len || !b->slot) {
        bpe_free(b);
        return kd_errf(err, "%s: out of memory for %" PRId32 " merges", what, n);
    }
    memset(b->slot, 0xff, cap * sizeof *b->slot);
    size_t pos = 0;
    for (int32_t i = 0; i < n; i++) {
        const char *m = merges[i];
        size_t l = lens ? lens[i] : strlen(m);
        const char *sp = l > 1 ? memchr(m + 1, ' ', l - 1) : NULL;
        if (!sp || sp + 1 == m + l || memchr(m, '\0', l)) {
            char q[64];
            size_t k = 0;
            for (size_t j = 0; j < l && k + 5 < sizeof q; j++)
                k += (size_t)snprintf(q + k, sizeof q - k, (unsigned char)m[j] >= 32 && m[j] != '\'' ? "%c" : "\\x%02x",
                                      (unsigned char)m[j]);
            q[k] = '\0';
            bpe_free(b);
            return kd_errf(err, "%s: merge %" PRId32 " '%s' is not \"left right\" (two pieces separated by one space)",
                           what, i, q);
        }
        b->off[i] = pos;
        b->len[i] = (uint32_t)l;
        memcpy(b->blob + pos, m, l);
        b->blob[pos + l] = '\0';
        pos += l + 1;
        size_t h = hash_bytes(m, l) & b->mask;
        int dup = 0;
        for (; b->slot[h] >= 0; h = (h + 1) & b->mask)
            if (b->len[b->slot[h]] == l && !memcmp(b->blob + b->off[b->slot[h]], m, l)) dup = 1;
        if (!dup) b->slot[h] = i;   /* a repeated merge keeps its first (lowest) rank, as llama.cpp's map does */
    }
    b->n = n;
    kd_tokenizer_attach(tok, &bpe_codec, b);
    return 0;
}

const char *kd_tokenizer_model(const kd_tokenizer *tok) { return bpe_part(tok) ? "gpt2" : "llama"; }

const struct kd_pretok *kd_tokenizer_pretok(const kd_tokenizer *tok) {
    const kd_tok_bpe *b = bpe_part(tok);
    return b ? b->pt : NULL;
}

const char *kd_tokenizer_pre(const kd_tokenizer *tok) {
    const kd_tok_bpe *b = bpe_part(tok);
    return b ? b->pre : "";
}

int32_t kd_tokenizer_n_merges(const kd_tokenizer *tok) {
    const kd_tok_bpe *b = bpe_part(tok);
    return b ? b->n : 0;
}

const char *kd_tokenizer_merge(const kd_tokenizer *tok, int32_t i, size_t *len) {
    const kd_tok_bpe *b = bpe_part(tok);
    if (!b || i < 0 || i >= b->n) return NULL;
    if (len) *len = b->len[i];
    return b->blob + b->off[i];
}

int kd_tokenizer_can_encode(const kd_tokenizer *tok, char *why, size_t n) {
    const kd_tok_bpe *b = bpe_part(tok);
    if (!b || b->pt) return 1;
    if (why)
        snprintf(why, n, "kd cannot encode text with a \"gpt2\" (byte-level BPE) tokenizer whose pre-tokenizer is "
                 "\"%s\": it is none of the %zu names llama.cpp knows (data/kd_pretok.c)", b->pre,
                 kd_pretok_names(NULL));
    return 0;
}

/* ---- decoding ---------------------------------------------------------------------- */

static int64_t bpe_render(const kd_tokenizer *tok, const char *p, size_t n, char *dst, size_t cap) {
    const kd_tok_bpe *b = bpe_part(tok);
    unsigned flags = b && b->pt ? kd_pretok_flags(b->pt) : 0;
    size_t w = 0;
    if (flags & KD_PRETOK_RAW) {   /* the piece's own UTF-8, U+2581 back to a space when spaces were escaped */
        for (size_t k = 0; k < n; k++) {
            if (w == cap) return -1;
            if ((flags & KD_PRETOK_ESCAPE_SPACE) && k + 3 <= n && !memcmp(p + k, "\xE2\x96\x81", 3)) {
                dst[w++] = ' ';
                k += 2;
            } else {
                dst[w++] = p[k];
            }
        }
        return (int64_t)w;
    }
    for (size_t k = 0; k < n;) {
        size_t l;
        uint32_t cp = get_utf8((const unsigned char *)p + k, n - k, &l);
        int byte = kd_bpe_char_byte(cp);
        if (byte >= 0) {
            if (w == cap) return -1;
            dst[w++] = (char)byte;
        } else {   /* not a byte character: copied as it is (never longer than the piece) */
            if (w + l > cap) return -1;
            memcpy(dst + w, p + k, l);
            w += l;
        }
        k += l;
    }
    return (int64_t)w;
}

/* ---- encoding ---------------------------------------------------------------------- */

typedef struct bsym {
    int32_t prev, next;   /* neighbours in the live chain, -1 at the ends */
    uint32_t start, n;    /* bytes of the word's byte-character buffer; n = 0 once merged away */
} bsym;

typedef struct bpair {
    int32_t rank, left, right;
    uint32_t ln, rn;      /* the sides' lengths when queued: a mismatch marks a stale pair */
} bpair;

typedef struct benc {
    const kd_tokenizer *tok;
    const kd_tok_bpe *b;
    char *buf, *key;      /* byte characters of the word; "left right" lookups */
    size_t cap;
    bsym *sy;
    size_t sy_cap;
    bpair *heap;          /* min-heap by (rank, left index), as llama.cpp's queue */
    size_t hn, hcap;
} benc;

static int before(const bpair *a, const bpair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int heap_push(benc *e, bpair p) {
    if (e->hn == e->hcap) {
        size_t cap = e->hcap ? 2 * e->hcap : 64;
        bpair *h = realloc(e->heap, cap * sizeof *h);
        if (!h) return -1;
        e->heap = h;
        e->hcap = cap;
    }
    size_t i = e->hn++;
    while (i > 0 && before(&p, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = p;
    return 0;
}

static bpair heap_pop(benc *e) {
    bpair top = e->heap[0], last = e->heap[--e->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->hn) break;
        if (c + 1 < e->hn && before(&e->heap[c + 1], &e->heap[c])) c++;
        if (!before(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (e->hn) e->heap[i] = last;
    return top;
}

/* Queue the pair (l, r) when "left right" is a merge. */
static int try_pair(benc *e, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    const bsym *L = &e->sy[l], *R = &e->sy[r];
    memcpy(e->key, e->buf + L->start, L->n);
    e->key[L->n] = ' ';
    memcpy(e->key + L->n + 1, e->buf + R->start, R->n);
    int32_t rank = rank_of(e->b, e->key, (size_t)L->n + 1 + R->n);
    return rank < 0 ? 0 : heap_push(e, (bpair){rank, l, r, L->n, R->n});
}

/* BPE over one word w[0..n) (bytes of the repaired text), ids appended to out. In byte mode each byte
 * becomes its GPT-2 byte character; in RAW mode the word's own UTF-8 characters are the symbols. */
static int encode_word(benc *e, const unsigned char *w, size_t n, unsigned flags, kd_tokens *out, kd_err *err) {
    int raw = (flags & KD_PRETOK_RAW) != 0;
    if (2 * n + 1 > e->cap || n + 1 > e->sy_cap) {
        size_t cap = 2 * n + 1;
        char *buf = realloc(e->buf, cap), *key;
        if (buf) e->buf = buf;
        key = realloc(e->key, cap + 1);
        if (key) e->key = key;
        bsym *sy = realloc(e->sy, (n + 1) * sizeof *sy);
        if (sy) e->sy = sy;
        if (!buf || !key || !sy) return kd_errf(err, "tokenizer: out of memory encoding a word of %zu bytes", n);
        e->cap = cap;
        e->sy_cap = n + 1;
    }
    size_t pos = 0;
    if (raw) {
        memcpy(e->buf, w, n);
        pos = n;
    } else {
        for (size_t i = 0; i < n; i++) pos += put_utf8(kd_bpe_byte_char(w[i]), e->buf + pos);
    }
    /* a word that is a token (IGNORE_MERGES; NEWLINE_TOKENS for a word of newlines) is that token */
    int whole = (flags & KD_PRETOK_IGNORE_MERGES) != 0;
    if (!whole && (flags & KD_PRETOK_NEWLINE_TOKENS)) {
        whole = n > 0;
        for (size_t i = 0; i < n; i++) whole &= w[i] == '\n';
    }
    if (whole && n > 0) {
        int32_t id = kd_tokenizer_find(e->tok, e->buf, pos);
        if (id >= 0) return kd_tokens_push(out, id, err);
    }
    /* symbols: UTF-8 characters of buf (length from the lead byte, as llama.cpp) */
    int32_t ns = 0;
    for (size_t off = 0; off < pos; ns++) {
        static const uint8_t ulen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
        size_t l = ulen[(unsigned char)e->buf[off] >> 4];
        if (l > pos - off) l = pos - off;
        e->sy[ns] = (bsym){ns - 1, off + l == pos ? -1 : ns + 1, (uint32_t)off, (uint32_t)l};
        off += l;
    }
    e->hn = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (try_pair(e, i, i + 1) < 0) goto oom;
    while (e->hn) {
        bpair p = heap_pop(e);
        bsym *L = &e->sy[p.left], *R = &e->sy[p.right];
        if (L->n != p.ln || R->n != p.rn || L->next != p.right) continue;   /* stale */
        L->n += R->n;   /* symbols stay contiguous in buf */
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) e->sy[R->next].prev = p.left;
        if (try_pair(e, L->prev, p.left) < 0 || try_pair(e, p.left, L->next) < 0) goto oom;
    }
    for (int32_t i = ns ? 0 : -1; i != -1; i = e->sy[i].next) {
        const char *p = e->buf + e->sy[i].start;
        int32_t id = kd_tokenizer_find(e->tok, p, e->sy[i].n);
        if (id >= 0) {
            if (kd_tokens_push(out, id, err) < 0) return -1;
            continue;
        }
        /* no piece: one token per byte of the symbol when it exists (llama.cpp drops the others) —
         * the one-byte piece in byte mode, <0xXX> in RAW mode */
        for (uint32_t k = 0; k < e->sy[i].n; k++) {
            static const char hex[] = "0123456789ABCDEF";
            unsigned char c = (unsigned char)p[k];
            char bp[6] = {'<', '0', 'x', hex[c >> 4], hex[c & 15], '>'};
            int32_t bid = raw ? kd_tokenizer_find(e->tok, bp, 6) : kd_tokenizer_find(e->tok, p + k, 1);
            if (bid >= 0 && kd_tokens_push(out, bid, err) < 0) return -1;
        }
    }
    return 0;
oom:
    return kd_errf(err, "tokenizer: out of memory encoding a word of %zu bytes", n);
}

static int bpe_encode(const kd_tokenizer *tok, const char *text, size_t len, kd_tokens *out, kd_err *err) {
    char why[256];
    if (!kd_tokenizer_can_encode(tok, why, sizeof why)) return kd_errf(err, "tokenizer: %s", why);
    benc e = {.tok = tok, .b = bpe_part(tok)};
    unsigned flags = kd_pretok_flags(e.b->pt);
    kd_words w = {0};
    char *esc = NULL;
    int rc = 0;
    if (flags & KD_PRETOK_ESCAPE_SPACE) {   /* spaces become U+2581 before the split */
        size_t k = 0;
        esc = malloc(3 * len + 1);
        if (!esc) return kd_errf(err, "tokenizer: out of memory encoding %zu bytes", len);
        for (size_t i = 0; i < len; i++) {
            if (text[i] == ' ') memcpy(esc + k, "\xE2\x96\x81", 3), k += 3;
            else esc[k++] = text[i];
        }
        text = esc;
        len = k;
    }
    rc = kd_pretok_split(e.b->pt, text, len, &w, err);
    for (size_t i = 0, start = 0; i < w.n && !rc; start = w.end[i++])
        rc = encode_word(&e, (const unsigned char *)w.text + start, w.end[i] - start, flags, out, err);
    kd_words_free(&w);
    free(esc);
    free(e.buf);
    free(e.key);
    free(e.sy);
    free(e.heap);
    return rc;
}
