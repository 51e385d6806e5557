/*
 * kd_tokenizer.c — the SentencePiece-style tokenizer (see kd_tokenizer.h):
 * vocabulary with a piece → id hash map, the llama2.c reader and writer, SPM
 * encoding and decoding (another encoding attaches through kd_tok_codec).
 */
#include "data/kd_tokenizer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"

#define SPACE_MARK     "\xE2\x96\x81"   /* U+2581, the internal form of a space */
#define MAX_ENCODE_LEN ((size_t)1 << 29)

struct kd_tokenizer {
    int32_t n;
    char *blob;           /* every piece, each followed by a NUL */
    size_t *off;          /* piece i starts at blob + off[i] */
    uint32_t *len;
    float *score;
    uint8_t *type;
    int32_t bos, eos, unk;
    unsigned flags;
    int32_t *slot;        /* hash map piece → id (-1 empty) */
    size_t mask;
    int32_t byte_id[256]; /* byte-fallback token of each byte, or -1 */
    int32_t *special;     /* CONTROL/UNKNOWN/USER_DEFINED ids with text, longest first */
    int32_t n_special;
    size_t max_len;
    const kd_tok_codec *codec;   /* another encoding (byte-level BPE: data/kd_tokenizer_bpe.c), NULL for SPM */
    void *codec_state;
};

void kd_tokenizer_attach(kd_tokenizer *tok, const kd_tok_codec *codec, void *state) {
    if (tok->codec) tok->codec->free(tok->codec_state);
    tok->codec = codec;
    tok->codec_state = state;
    tok->flags &= ~KD_TOK_ADD_SPACE_PREFIX;
}

void *kd_tokenizer_codec_state(const kd_tokenizer *tok, const kd_tok_codec *codec) {
    return tok->codec == codec ? tok->codec_state : NULL;
}

/* ---- vocabulary ------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

int32_t kd_tokenizer_find(const kd_tokenizer *tok, const char *piece, size_t len) {
    for (size_t h = hash_bytes(piece, len) & tok->mask;; h = (h + 1) & tok->mask) {
        int32_t id = tok->slot[h];
        if (id < 0) return -1;
        if (tok->len[id] == len && !memcmp(tok->blob + tok->off[id], piece, len)) return id;
    }
}

void kd_tokenizer_free(kd_tokenizer *tok) {
    if (!tok) return;
    free(tok->blob);
    free(tok->off);
    free(tok->len);
    free(tok->score);
    free(tok->type);
    free(tok->slot);
    free(tok->special);
    if (tok->codec) tok->codec->free(tok->codec_state);
    free(tok);
}

static int hex_digit(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* "<0xXX>" → XX (either hex case), or -1. */
static int byte_piece_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>' || hex_digit(s[3]) < 0 || hex_digit(s[4]) < 0) return -1;
    return hex_digit(s[3]) * 16 + hex_digit(s[4]);
}

static int u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Order the special tokens longest first, then by id. */
static int sort_specials(kd_tokenizer *tok) {
    uint64_t *key = malloc(((size_t)tok->n_special + 1) * sizeof *key);
    if (!key) return -1;
    for (int32_t k = 0; k < tok->n_special; k++) {
        int32_t id = tok->special[k];
        key[k] = (uint64_t)(UINT32_MAX - tok->len[id]) << 32 | (uint32_t)id;
    }
    qsort(key, (size_t)tok->n_special, sizeof *key, u64_cmp);
    for (int32_t k = 0; k < tok->n_special; k++) tok->special[k] = (int32_t)(key[k] & 0xffffffffu);
    free(key);
    return 0;
}

static int is_special_type(int t) {
    return t == KD_TOKEN_CONTROL || t == KD_TOKEN_UNKNOWN || t == KD_TOKEN_USER_DEFINED;
}

kd_tokenizer *kd_tokenizer_build(const char *name, int32_t n, const char *const *pcs, const size_t *lens,
                                 const float *scores, const int32_t *types, int32_t bos, int32_t eos, int32_t unk,
                                 unsigned flags, kd_err *err) {
    if (n < 1 || n > KD_TOK_MAX_VOCAB) {
        kd_errf(err, "%s: vocabulary size %" PRId32 ", expected 1..%d", name, n, KD_TOK_MAX_VOCAB);
        return NULL;
    }
    const int32_t ids[3] = {bos, eos, unk};
    const char *const id_names[3] = {"BOS", "EOS", "UNK"};
    for (int k = 0; k < 3; k++)
        if (ids[k] < -1 || ids[k] >= n) {
            kd_errf(err, "%s: %s id %" PRId32 ", expected -1..%" PRId32, name, id_names[k], ids[k], n - 1);
            return NULL;
        }
    kd_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) goto oom;
    tok->n = n;
    tok->bos = bos;
    tok->eos = eos;
    tok->unk = unk;
    tok->flags = flags & (KD_TOK_ADD_BOS | KD_TOK_ADD_EOS | KD_TOK_ADD_SPACE_PREFIX);
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        if (lens[i] > UINT32_MAX / 2) {
            kd_errf(err, "%s: token %" PRId32 ": piece of %zu bytes is too long", name, i, lens[i]);
            goto fail;
        }
        total += lens[i] + 1;
    }
    size_t cap = 8;
    while (cap < (size_t)n * 2) cap *= 2;
    tok->mask = cap - 1;
    tok->blob = malloc(total);
    tok->off = malloc((size_t)n * sizeof *tok->off);
    tok->len = malloc((size_t)n * sizeof *tok->len);
    tok->score = malloc((size_t)n * sizeof *tok->score);
    tok->type = malloc((size_t)n);
    tok->slot = malloc(cap * sizeof *tok->slot);
    tok->special = malloc((size_t)n * sizeof *tok->special);
    if (!tok->blob || !tok->off || !tok->len || !tok->score || !tok->type || !tok->slot || !tok->special) goto oom;
    memset(tok->slot, 0xff, cap * sizeof *tok->slot);
    size_t pos = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t t = types ? types[i] : KD_TOKEN_NORMAL;
        float s = scores ? scores[i] : 0.0f;
        if (t < 0 || t > KD_TOKEN_BYTE) {
            kd_errf(err, "%s: token %" PRId32 ": type %" PRId32 " is invalid, expected 0..6", name, i, t);
            goto fail;
        }
        if (isnan(s)) {
            kd_errf(err, "%s: token %" PRId32 ": score is NaN", name, i);
            goto fail;
        }
        if (t == KD_TOKEN_BYTE && byte_piece_value(pcs[i], lens[i]) < 0) {
            kd_errf(err, "%s: token %" PRId32 " ('%.*s'): type BYTE, expected a piece <0xXX>", name, i,
                    (int)(lens[i] < 40 ? lens[i] : 40), pcs[i]);
            goto fail;
        }
        tok->off[i] = pos;
        tok->len[i] = (uint32_t)lens[i];
        if (lens[i]) memcpy(tok->blob + pos, pcs[i], lens[i]);
        tok->blob[pos + lens[i]] = '\0';
        pos += lens[i] + 1;
        tok->score[i] = s;
        tok->type[i] = (uint8_t)t;
        if (lens[i] > tok->max_len) tok->max_len = lens[i];
        if (!lens[i]) continue;   /* an empty piece can never match text */
        const char *p = tok->blob + tok->off[i];
        size_t h = hash_bytes(p, lens[i]) & tok->mask;
        for (; tok->slot[h] >= 0; h = (h + 1) & tok->mask) {
            int32_t j = tok->slot[h];
            if (tok->len[j] == lens[i] && !memcmp(tok->blob + tok->off[j], p, lens[i])) {
                kd_errf(err, "%s: token %" PRId32 " ('%.*s'): same piece as token %" PRId32, name, i,
                        (int)(lens[i] < 40 ? lens[i] : 40), p, j);
                goto fail;
            }
        }
        tok->slot[h] = i;
        if (is_special_type(t)) tok->special[tok->n_special++] = i;
    }
    if (sort_specials(tok) < 0) goto oom;
    static const char hex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        char bp[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
        char one = (char)b;
        tok->byte_id[b] = kd_tokenizer_find(tok, bp, 6);
        if (tok->byte_id[b] < 0) tok->byte_id[b] = kd_tokenizer_find(tok, &one, 1);
    }
    return tok;
oom:
    kd_errf(err, "%s: out of memory building the vocabulary", name);
fail:
    kd_tokenizer_free(tok);
    return NULL;
}

kd_tokenizer *kd_tokenizer_new(int32_t n, const char *const *pieces, const float *scores, const int32_t *types,
                               int32_t bos, int32_t eos, int32_t unk, unsigned flags, kd_err *err) {
    if (n < 1 || n > KD_TOK_MAX_VOCAB || !pieces) {
        kd_errf(err, "tokenizer: vocabulary size %" PRId32 ", expected 1..%d pieces", n, KD_TOK_MAX_VOCAB);
        return NULL;
    }
    size_t *lens = malloc((size_t)n * sizeof *lens);
    if (!lens) {
        kd_errf(err, "tokenizer: out of memory");
        return NULL;
    }
    for (int32_t i = 0; i < n; i++) lens[i] = pieces[i] ? strlen(pieces[i]) : 0;
    const char **p = malloc((size_t)n * sizeof *p);
    if (!p) {
        free(lens);
        kd_errf(err, "tokenizer: out of memory");
        return NULL;
    }
    for (int32_t i = 0; i < n; i++) p[i] = pieces[i] ? pieces[i] : "";
    kd_tokenizer *tok = kd_tokenizer_build("tokenizer", n, p, lens, scores, types, bos, eos, unk, flags, err);
    free(p);
    free(lens);
    return tok;
}

/* ---- accessors ------------------------------------------------------------------ */

int32_t kd_tokenizer_n_vocab(const kd_tokenizer *tok) { return tok->n; }
int32_t kd_tokenizer_bos(const kd_tokenizer *tok) { return tok->bos; }
int32_t kd_tokenizer_eos(const kd_tokenizer *tok) { return tok->eos; }
int32_t kd_tokenizer_unk(const kd_tokenizer *tok) { return tok->unk; }
unsigned kd_tokenizer_flags(const kd_tokenizer *tok) { return tok->flags; }
size_t kd_tokenizer_max_piece_len(const kd_tokenizer *tok) { return tok->max_len; }

const char *kd_tokenizer_piece(const kd_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n) return NULL;
    if (len) *len = tok->len[id];
    return tok->blob + tok->off[id];
}

float kd_tokenizer_score(const kd_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n ? tok->score[id] : 0.0f;
}

kd_token_type kd_tokenizer_type(const kd_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n ? (kd_token_type)tok->type[id] : KD_TOKEN_UNDEFINED;
}

/* ---- llama2.c tokenizer.bin ---------------------------------------------------- */

static int is_bos_text(const char *s, size_t n) { return n == 5 && !memcmp(s, "\n<s>\n", 5); }
static int is_eos_text(const char *s, size_t n) { return n == 6 && !memcmp(s, "\n</s>\n", 6); }

kd_tokenizer *kd_tokenizer_parse_llama2c(const void *bytes, size_t len, const char *name, kd_err *err) {
    const unsigned char *b = bytes;
    if (!name) name = "tokenizer.bin";
    if (!b) len = 0;
    if (len < 4) {
        kd_errf(err, "%s: truncated: max_token_length needs 4 bytes, the file has %zu", name, len);
        return NULL;
    }
    int32_t maxlen;
    memcpy(&maxlen, b, 4);
    if (maxlen < 0 || maxlen > (1 << 20)) {
        kd_errf(err, "%s: max_token_length is %" PRId32 ", expected 0..%d", name, maxlen, 1 << 20);
        return NULL;
    }
    /* First pass: count and check the records. */
    int32_t n = 0;
    size_t off = 4;
    while (off < len) {
        if (len - off < 8) {
            kd_errf(err, "%s: token %" PRId32 ": truncated: score and length need 8 bytes at offset %zu, %zu left",
                    name, n, off, len - off);
            return NULL;
        }
        int32_t l;
        memcpy(&l, b + off + 4, 4);
        if (l < 0 || l > maxlen) {
            kd_errf(err, "%s: token %" PRId32 ": length %" PRId32 ", expected 0..max_token_length %" PRId32, name,
                    n, l, maxlen);
            return NULL;
        }
        if ((size_t)l > len - off - 8) {
            kd_errf(err, "%s: token %" PRId32 ": truncated: piece needs %" PRId32 " bytes at offset %zu, %zu left",
                    name, n, l, off + 8, len - off - 8);
            return NULL;
        }
        off += 8 + (size_t)l;
        if (++n > KD_TOK_MAX_VOCAB) {
            kd_errf(err, "%s: more than %d tokens", name, KD_TOK_MAX_VOCAB);
            return NULL;
        }
    }
    if (n == 0) {
        kd_errf(err, "%s: no tokens after the header", name);
        return NULL;
    }
    /* Second pass: pieces in internal form (a space becomes 3 bytes). */
    char *buf = malloc(3 * len + 1);
    const char **pcs = malloc((size_t)n * sizeof *pcs);
    size_t *lens = malloc((size_t)n * sizeof *lens);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    kd_tokenizer *tok = NULL;
    if (!buf || !pcs || !lens || !scores || !types) {
        kd_errf(err, "%s: out of memory", name);
        goto done;
    }
    size_t w = 0;
    off = 4;
    for (int32_t i = 0; i < n; i++) {
        int32_t l;
        memcpy(&scores[i], b + off, 4);
        memcpy(&l, b + off + 4, 4);
        const char *s = (const char *)b + off + 8;
        off += 8 + (size_t)l;
        pcs[i] = buf + w;
        types[i] = KD_TOKEN_NORMAL;
        if (i == 0) types[i] = KD_TOKEN_UNKNOWN;
        if (i == 1 || i == 2) types[i] = KD_TOKEN_CONTROL;
        if (i == 1 && is_bos_text(s, (size_t)l)) s++, l -= 2;
        if (i == 2 && is_eos_text(s, (size_t)l)) s++, l -= 2;
        if (i <= 2 || byte_piece_value(s, (size_t)l) >= 0) {
            if (i > 2) types[i] = KD_TOKEN_BYTE;
            memcpy(buf + w, s, (size_t)l);
            w += (size_t)l;
        } else {
            for (int32_t k = 0; k < l; k++) {
                if (s[k] == ' ') {
                    memcpy(buf + w, SPACE_MARK, 3);
                    w += 3;
                } else {
                    buf[w++] = s[k];
                }
            }
        }
        lens[i] = (size_t)(buf + w - pcs[i]);
    }
    tok = kd_tokenizer_build(name, n, pcs, lens, scores, types, n > 1 ? 1 : -1, n > 2 ? 2 : -1, 0,
                             KD_TOK_ADD_BOS | KD_TOK_ADD_SPACE_PREFIX, err);
done:
    free(buf);
    free(pcs);
    free(lens);
    free(scores);
    free(types);
    return tok;
}

kd_tokenizer *kd_tokenizer_load_llama2c(const char *path, kd_err *err) {
    kd_mmap m;
    if (kd_mmap_open(&m, path, err) < 0) return NULL;
    kd_tokenizer *tok = kd_tokenizer_parse_llama2c(m.data, m.len, path, err);
    kd_mmap_close(&m);
    return tok;
}

/* Piece i in llama2.c form into out (room for len + 2 bytes); returns its length. */
static size_t llama2c_piece(const kd_tokenizer *tok, int32_t i, char *out) {
    const char *p = tok->blob + tok->off[i];
    size_t n = tok->len[i], w = 0;
    if (i == 1 && n == 3 && !memcmp(p, "<s>", 3)) p = "\n<s>\n", n = 5;
    if (i == 2 && n == 4 && !memcmp(p, "</s>", 4)) p = "\n</s>\n", n = 6;
    if (i <= 2 || byte_piece_value(p, n) >= 0) {
        memcpy(out, p, n);
        return n;
    }
    for (size_t k = 0; k < n; k++) {
        if (k + 3 <= n && !memcmp(p + k, SPACE_MARK, 3)) {
            out[w++] = ' ';
            k += 2;
        } else {
            out[w++] = p[k];
        }
    }
    return w;
}

int kd_tokenizer_write_llama2c(const kd_tokenizer *tok, const char *path, kd_err *err) {
    if (tok->n < 3 || tok->unk != 0 || tok->bos != 1 || tok->eos != 2)
        return kd_errf(err, "%s: llama2.c tokenizers have UNK 0, BOS 1, EOS 2; this one has %" PRId32 ", %" PRId32
                            ", %" PRId32 " in a vocabulary of %" PRId32,
                       path, tok->unk, tok->bos, tok->eos, tok->n);
    char *buf = malloc(tok->max_len + 8);
    if (!buf) return kd_errf(err, "%s: out of memory", path);
    int32_t maxlen = 0;
    for (int32_t i = 0; i < tok->n; i++) {
        size_t l = llama2c_piece(tok, i, buf);
        if (l > (size_t)maxlen) maxlen = (int32_t)l;
    }
    kd_atomic_file af;
    if (kd_atomic_open(&af, path, err) < 0) {
        free(buf);
        return -1;
    }
    int bad = fwrite(&maxlen, 4, 1, af.f) != 1;
    for (int32_t i = 0; i < tok->n && !bad; i++) {
        int32_t l = (int32_t)llama2c_piece(tok, i, buf);
        bad = fwrite(&tok->score[i], 4, 1, af.f) != 1 || fwrite(&l, 4, 1, af.f) != 1 ||
              (l && fwrite(buf, (size_t)l, 1, af.f) != 1);
    }
    free(buf);
    if (bad) {
        kd_atomic_abort(&af);
        return kd_errf(err, "%s: write error", path);
    }
    return kd_atomic_commit(&af, err);
}

/* ---- token lists ------------------------------------------------------------------ */

int kd_tokens_push(kd_tokens *t, int32_t id, kd_err *err) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        int32_t *ids = realloc(t->ids, cap * sizeof *ids);
        if (!ids) return kd_errf(err, "tokenizer: out of memory for %zu token ids", cap);
        t->ids = ids;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return 0;
}

void kd_tokens_free(kd_tokens *t) {
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

/* ---- encoding ------------------------------------------------------------------ */

typedef struct sym {
    int32_t prev, next;   /* neighbours in the live chain, -1 at the ends */
    uint32_t start, n;    /* bytes of the text buffer; n = 0 once merged away */
} sym;

typedef struct bigram {
    int32_t left, right;
    float score;
    uint32_t size;        /* left.n + right.n when queued: a mismatch marks a stale pair */
} bigram;

typedef struct enc {
    const kd_tokenizer *tok;
    char *buf;
    sym *sy;
    size_t sy_cap;
    bigram *heap;
    size_t hn, hcap;
} enc;

/* a before b in the queue: higher score, then smaller left index */
static int better(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(enc *e, bigram b) {
    if (e->hn == e->hcap) {
        size_t cap = e->hcap ? e->hcap * 2 : 256;
        bigram *h = realloc(e->heap, cap * sizeof *h);
        if (!h) return -1;
        e->heap = h;
        e->hcap = cap;
    }
    size_t i = e->hn++;
    while (i > 0 && better(&b, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = b;
    return 0;
}

static bigram heap_pop(enc *e) {
    bigram top = e->heap[0], last = e->heap[--e->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->hn) break;
        if (c + 1 < e->hn && better(&e->heap[c + 1], &e->heap[c])) c++;
        if (!better(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (e->hn) e->heap[i] = last;
    return top;
}

/* Queue the pair (l, r) when its concatenation is a piece. */
static int try_add(enc *e, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return 0;
    uint32_t size = e->sy[l].n + e->sy[r].n;
    int32_t id = kd_tokenizer_find(e->tok, e->buf + e->sy[l].start, size);
    if (id < 0) return 0;
    return heap_push(e, (bigram){l, r, e->tok->score[id], size});
}

/* A final symbol: its piece, or byte fallback. (llama.cpp also consults a
 * reverse-merge map here, but that map only ever records texts that are
 * pieces and is only looked up for texts that are not, so it never matches;
 * kd leaves it out.) */
static int emit(enc *e, const sym *s, kd_tokens *out, kd_err *err) {
    const char *p = e->buf + s->start;
    int32_t id = kd_tokenizer_find(e->tok, p, s->n);
    if (id >= 0) return kd_tokens_push(out, id, err);
    for (uint32_t k = 0; k < s->n; k++) {
        unsigned char b = (unsigned char)p[k];
        if (e->tok->byte_id[b] < 0)
            return kd_errf(err, "tokenizer: no piece for byte 0x%02X (neither <0x%02X> nor the byte itself)", b, b);
        if (kd_tokens_push(out, e->tok->byte_id[b], err) < 0) return -1;
    }
    return 0;
}

/* One raw fragment, with the space prefix when `prefix`. */
static int encode_raw(enc *e, const char *text, size_t len, int prefix, kd_tokens *out, kd_err *err) {
    static const uint8_t utf8_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    size_t w = 0;
    if (prefix) memcpy(e->buf, SPACE_MARK, 3), w = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') memcpy(e->buf + w, SPACE_MARK, 3), w += 3;
        else e->buf[w++] = text[i];
    }
    /* Count the symbols first: invalid UTF-8 before an escaped space can split
     * "▁" into several symbols (as in llama.cpp), so there may be more than
     * one per input byte. */
    size_t count = 0;
    for (size_t off = 0; off < w; count++) off += utf8_len[(unsigned char)e->buf[off] >> 4];
    if (count > e->sy_cap) {
        sym *sy = realloc(e->sy, count * sizeof *sy);
        if (!sy) goto oom;
        e->sy = sy;
        e->sy_cap = count;
    }
    int32_t ns = 0;
    for (size_t off = 0; off < w;) {
        size_t l = utf8_len[(unsigned char)e->buf[off] >> 4];
        if (l > w - off) l = w - off;
        e->sy[ns] = (sym){ns - 1, off + l == w ? -1 : ns + 1, (uint32_t)off, (uint32_t)l};
        off += l;
        ns++;
    }
    e->hn = 0;
    for (int32_t i = 1; i < ns; i++)
        if (try_add(e, i - 1, i) < 0) goto oom;
    while (e->hn) {
        bigram b = heap_pop(e);
        sym *L = &e->sy[b.left], *R = &e->sy[b.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != b.size) continue;   /* stale */
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) e->sy[R->next].prev = b.left;
        if (try_add(e, L->prev, b.left) < 0 || try_add(e, b.left, L->next) < 0) goto oom;
    }
    for (int32_t i = ns ? 0 : -1; i != -1; i = e->sy[i].next)
        if (emit(e, &e->sy[i], out, err) < 0) return -1;
    return 0;
oom:
    return kd_errf(err, "tokenizer: out of memory encoding %zu bytes", len);
}

typedef struct frag {
    int32_t id;           /* a special token, or -1 for raw text */
    size_t start, len;
} frag;

typedef struct frags {
    frag *f;
    size_t n, cap;
} frags;

static int frag_add(frags *fs, int32_t id, size_t start, size_t len) {
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 16;
        frag *f = realloc(fs->f, cap * sizeof *f);
        if (!f) return -1;
        fs->f = f;
        fs->cap = cap;
    }
    fs->f[fs->n++] = (frag){id, start, len};
    return 0;
}

static const char *find_bytes(const char *hay, size_t hn, const char *needle, size_t nn) {
    if (nn > hn) return NULL;
    const char *end = hay + (hn - nn);
    for (const char *p = hay; p <= end; p++) {
        p = memchr(p, needle[0], (size_t)(end - p) + 1);
        if (!p) return NULL;
        if (!memcmp(p, needle, nn)) return p;
    }
    return NULL;
}

/* Split text at special tokens, longest first (llama.cpp's tokenizer_st_partition). */
static int partition(const kd_tokenizer *tok, const char *text, size_t len, unsigned opts, frags *cur) {
    frags next = {0};
    if (len && frag_add(cur, -1, 0, len) < 0) return -1;
    for (int32_t k = 0; k < tok->n_special; k++) {
        int32_t id = tok->special[k];
        if (tok->type[id] != KD_TOKEN_USER_DEFINED && !(opts & KD_TOK_ENC_PARSE_SPECIAL)) continue;
        const char *p = tok->blob + tok->off[id];
        size_t pl = tok->len[id];
        next.n = 0;
        int hit = 0;
        for (size_t i = 0; i < cur->n; i++) {
            frag f = cur->f[i];
            if (f.id >= 0) {
                if (frag_add(&next, f.id, f.start, f.len) < 0) goto oom;
                continue;
            }
            size_t pos = f.start, end = f.start + f.len;
            const char *h;
            while ((h = find_bytes(text + pos, end - pos, p, pl))) {
                size_t at = (size_t)(h - text);
                if ((at > pos && frag_add(&next, -1, pos, at - pos) < 0) || frag_add(&next, id, at, pl) < 0) goto oom;
                pos = at + pl;
                hit = 1;
            }
            if (pos < end && frag_add(&next, -1, pos, end - pos) < 0) goto oom;
        }
        if (hit) {
            frags t = *cur;
            *cur = next;
            next = t;
        }
    }
    free(next.f);
    return 0;
oom:
    free(next.f);
    return -1;
}

int kd_tokenizer_encode(const kd_tokenizer *tok, const char *text, size_t len, unsigned opts, kd_tokens *out,
                        kd_err *err) {
    if (len >= MAX_ENCODE_LEN)
        return kd_errf(err, "tokenizer: text of %zu bytes, expected less than %zu per call", len, MAX_ENCODE_LEN);
    size_t n0 = out->n;
    frags fs = {0};
    enc e = {.tok = tok};
    int rc = -1;
    e.buf = malloc(3 * len + 4);
    if (!e.buf || partition(tok, text, len, opts, &fs) < 0) {
        kd_errf(err, "tokenizer: out of memory encoding %zu bytes", len);
        goto done;
    }
    int add = (opts & KD_TOK_ENC_ADD_SPECIAL) != 0;
    if (add && (tok->flags & KD_TOK_ADD_BOS) && tok->bos >= 0 && kd_tokens_push(out, tok->bos, err) < 0) goto done;
    int prev_special = 1;
    for (size_t i = 0; i < fs.n; i++) {
        if (fs.f[i].id >= 0) {
            if (kd_tokens_push(out, fs.f[i].id, err) < 0) goto done;
            prev_special = 1;
            continue;
        }
        int prefix = (tok->flags & KD_TOK_ADD_SPACE_PREFIX) && prev_special;
        if (tok->codec ? tok->codec->encode(tok, text + fs.f[i].start, fs.f[i].len, out, err) < 0
                     : encode_raw(&e, text + fs.f[i].start, fs.f[i].len, prefix, out, err) < 0)
            goto done;
        prev_special = 0;
    }
    if (add && (tok->flags & KD_TOK_ADD_EOS) && tok->eos >= 0 && kd_tokens_push(out, tok->eos, err) < 0) goto done;
    rc = 0;
done:
    if (rc < 0) out->n = n0;
    free(fs.f);
    free(e.buf);
    free(e.sy);
    free(e.heap);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------ */

/* Text of token id into dst[0..cap); its length, or -1 when cap is too small. */
static int64_t render(const kd_tokenizer *tok, int32_t id, unsigned opts, char *dst, size_t cap) {
    const char *p = tok->blob + tok->off[id];
    size_t n = tok->len[id], w = 0;
    switch (tok->type[id]) {
    case KD_TOKEN_NORMAL:
        if (tok->codec) return tok->codec->render(tok, p, n, dst, cap);
        for (size_t k = 0; k < n; k++) {
            if (w == cap) return -1;
            if (k + 3 <= n && !memcmp(p + k, SPACE_MARK, 3)) {
                dst[w++] = ' ';
                k += 2;
            } else {
                dst[w++] = p[k];
            }
        }
        return (int64_t)w;
    case KD_TOKEN_BYTE:
        if (cap < 1) return -1;
        dst[0] = (char)byte_piece_value(p, n);
        return 1;
    case KD_TOKEN_CONTROL:
    case KD_TOKEN_UNKNOWN:
        if (!(opts & KD_TOK_DEC_SPECIAL)) return 0;
        /* fall through */
    case KD_TOKEN_USER_DEFINED:
        if (n > cap) return -1;
        memcpy(dst, p, n);
        return (int64_t)n;
    default:
        return 0;
    }
}

int64_t kd_tokenizer_decode_token(const kd_tokenizer *tok, int32_t id, unsigned opts, char *buf, size_t cap,
                                  kd_err *err) {
    if (id < 0 || id >= tok->n)
        return kd_errf(err, "tokenizer: token id %" PRId32 " out of range [0, %" PRId32 ")", id, tok->n);
    int64_t r = render(tok, id, opts, buf, cap);
    if (r < 0) return kd_errf(err, "tokenizer: token %" PRId32 " needs more than %zu bytes", id, cap);
    return r;
}

int kd_tokenizer_decode(const kd_tokenizer *tok, const int32_t *ids, size_t n, unsigned opts, char **text,
                        size_t *len, kd_err *err) {
    *text = NULL;
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n)
            return kd_errf(err, "tokenizer: ids[%zu] = %" PRId32 " out of range [0, %" PRId32 ")", i, ids[i], tok->n);
        total += tok->len[ids[i]] + 1;   /* a byte token renders to 1 byte, others to at most their piece */
    }
    char *out = malloc(total);
    if (!out) return kd_errf(err, "tokenizer: out of memory decoding %zu tokens", n);
    size_t strip_at = SIZE_MAX, pos = 0;
    if ((tok->flags & KD_TOK_ADD_SPACE_PREFIX) && !(opts & KD_TOK_DEC_KEEP_SPACE))
        strip_at = n > 0 && ids[0] == tok->bos ? 1 : 0;
    for (size_t i = 0; i < n; i++) {
        int64_t r = render(tok, ids[i], opts, out + pos, total - pos);
        if (i == strip_at && r > 0 && out[pos] == ' ') memmove(out + pos, out + pos + 1, (size_t)--r);
        pos += (size_t)r;
    }
    out[pos] = '\0';
    *text = out;
    if (len) *len = pos;
    return 0;
}
