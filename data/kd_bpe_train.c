/*
 * kd_bpe_train.c — BPE training for the SentencePiece-style tokenizer (see
 * kd_bpe_train.h). Four phases:
 *   1. normalise each text as the encoder does and count its words (pre-split
 *      by character class) on all threads: kd_bpe_words.c;
 *   2. count characters over the unique words, keep the most frequent ones up
 *      to the coverage cut;
 *   3. turn each word into a sequence of symbol ids (split at dropped
 *      characters) and count adjacent pairs, with an index pair → words;
 *   4. merge the best pair of a lazy max-heap, rewrite only the words of its
 *      index and apply the net change of each touched pair's count.
 * Also kd_bpe_count_tokens, the encoder's token count of a corpus on all threads.
 */
#include "data/kd_bpe_train.h"

#include <inttypes.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "data/kd_bpe_words.h"

#include "core/kd_time.h"

#define SPACE_MARK KD_BPE_SPACE
#define GROW       KD_BPE_GROW

static uint64_t hash_pair(int32_t a, int32_t b) {
    uint64_t x = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;   /* splitmix64 finaliser */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- the trainer ------------------------------------------------------------------ */

typedef struct mword {        /* phases 3-4: a word (segment) as symbol ids */
    size_t off;               /* in seq */
    uint32_t len;
    int32_t stamp;            /* last merge step that rewrote it */
    int64_t freq;
} mword;

typedef struct symb {         /* a character or merged piece */
    size_t off;               /* in sblob */
    uint32_t len, nch;        /* bytes, characters */
} symb;

typedef struct pair {
    int32_t a, b;
    int64_t count, delta;     /* delta: pending change in the current merge step */
    int32_t *post;            /* words holding the pair (maybe stale, maybe repeated) */
    size_t npost, cap;
    int32_t last_word, stamp;
    int dead;                 /* merged (revived if it reappears) */
} pair;

typedef struct hent {
    int64_t count;
    int32_t pair;
} hent;

typedef struct chr {
    uint32_t key;             /* the bytes, big-endian; 0 = empty slot */
    int32_t sym;              /* symbol id, or -1 when left to byte fallback */
    int64_t count;
} chr;

typedef struct trainer {
    int64_t min_freq;
    int32_t max_len;
    int merge_digits;
    kd_bpe_words wt;          /* phase 1 */
    int64_t n_tokens;         /* the trainer's token count of the corpus */
    /* phase 2 */
    chr *ch;
    size_t n_ch, chmask;
    /* symbols */
    char *sblob;
    size_t sblob_n, sblob_cap;
    symb *sy;
    size_t n_sy, sy_cap;
    int32_t *sslot;
    size_t smask;
    /* phases 3-4 */
    int32_t *seq;
    size_t seq_n, seq_cap;
    mword *mw;
    size_t n_mw, mw_cap;
    pair *pr;
    size_t n_pr, pr_cap;
    int32_t *pslot;
    size_t pmask;
    hent *heap;
    size_t hn, hcap;
    int32_t *touched, *tmp;
    size_t n_touched, touched_cap, tmp_cap;
} trainer;

static void trainer_free(trainer *t) {
    kd_bpe_words_free(&t->wt);
    free(t->ch);
    free(t->sblob);
    free(t->sy);
    free(t->sslot);
    free(t->seq);
    free(t->mw);
    for (size_t i = 0; i < t->n_pr; i++) free(t->pr[i].post);
    free(t->pr);
    free(t->pslot);
    free(t->heap);
    free(t->touched);
    free(t->tmp);
}

/* ---- phase 2: characters ----------------------------------------------------------- */

static uint32_t char_key(const char *p, size_t n) {
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++) k = k << 8 | (unsigned char)p[i];
    return k;
}

static chr *char_slot(trainer *t, uint32_t key) {
    size_t s = (size_t)hash_pair((int32_t)key, 0) & t->chmask;
    while (t->ch[s].key && t->ch[s].key != key) s = (s + 1) & t->chmask;
    return &t->ch[s];
}

static int char_add(trainer *t, uint32_t key, int64_t count) {
    chr *c = char_slot(t, key);
    if (!c->key) {
        if ((t->n_ch + 1) * 2 > t->chmask) {   /* grow and rehash */
            size_t old = t->chmask + 1, cap = old * 2;
            chr *o = t->ch, *nc = calloc(cap, sizeof *nc);
            if (!nc) return -1;
            t->ch = nc, t->chmask = cap - 1;
            for (size_t i = 0; i < old; i++)
                if (o[i].key) *char_slot(t, o[i].key) = o[i];
            free(o);
            c = char_slot(t, key);
        }
        *c = (chr){key, -1, 0};
        t->n_ch++;
    }
    c->count += count;
    return 0;
}

static int chr_cmp(const void *x, const void *y) {   /* count descending, then key (= code point order) */
    const chr *a = x, *b = y;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    return a->key < b->key ? -1 : a->key > b->key;
}

/* ---- symbols --------------------------------------------------------------------------- */

static int32_t sym_find(const trainer *t, const char *p, size_t n, size_t *slot) {
    size_t s = kd_bpe_hash(p, n) & t->smask;
    for (int32_t id; (id = t->sslot[s]) >= 0; s = (s + 1) & t->smask)
        if (t->sy[id].len == n && !memcmp(t->sblob + t->sy[id].off, p, n)) return id;
    if (slot) *slot = s;
    return -1;
}

/* Add the string at sblob[off..off+n) (already appended) as a new symbol. */
static int32_t sym_add(trainer *t, size_t off, uint32_t n, uint32_t nch) {
    if (GROW(t->sy, t->sy_cap, t->n_sy + 1) < 0) return -1;
    t->sy[t->n_sy] = (symb){off, n, nch};
    int32_t id = (int32_t)t->n_sy++;
    if (t->n_sy * 2 > t->smask) {
        if (kd_bpe_slots(&t->sslot, &t->smask, t->n_sy) < 0) return -1;
        for (size_t i = 0; i < t->n_sy; i++) {
            size_t s = kd_bpe_hash(t->sblob + t->sy[i].off, t->sy[i].len) & t->smask;
            while (t->sslot[s] >= 0) s = (s + 1) & t->smask;
            t->sslot[s] = (int32_t)i;
        }
    } else {
        size_t s = kd_bpe_hash(t->sblob + off, n) & t->smask;
        while (t->sslot[s] >= 0) s = (s + 1) & t->smask;
        t->sslot[s] = id;
    }
    return id;
}

/* Compare the concatenations of pairs p and q bytewise; then the shorter left part first. */
static int concat_cmp(const trainer *t, const pair *p, const pair *q) {
    const symb *pa = &t->sy[p->a], *pb = &t->sy[p->b], *qa = &t->sy[q->a], *qb = &t->sy[q->b];
    const unsigned char *blob = (const unsigned char *)t->sblob;
    const unsigned char *x1 = blob + pa->off, *x2 = blob + pb->off, *y1 = blob + qa->off, *y2 = blob + qb->off;
    size_t nx = (size_t)pa->len + pb->len, ny = (size_t)qa->len + qb->len, n = nx < ny ? nx : ny;
    for (size_t k = 0; k < n; k++) {
        unsigned cx = k < pa->len ? x1[k] : x2[k - pa->len], cy = k < qa->len ? y1[k] : y2[k - qa->len];
        if (cx != cy) return cx < cy ? -1 : 1;
    }
    if (nx != ny) return nx < ny ? -1 : 1;
    return pa->len < qa->len ? -1 : pa->len > qa->len;
}

/* A merged piece must not collide with <unk>, <s>, </s> or <0xXX>. */
static int reserved_piece(const trainer *t, int32_t a, int32_t b) {
    size_t la = t->sy[a].len, n = la + t->sy[b].len;
    if (n < 3 || n > 6) return 0;
    char s[6];
    memcpy(s, t->sblob + t->sy[a].off, la);
    memcpy(s + la, t->sblob + t->sy[b].off, n - la);
    if ((n == 5 && !memcmp(s, "<unk>", 5)) || (n == 3 && !memcmp(s, "<s>", 3)) || (n == 4 && !memcmp(s, "</s>", 4)))
        return 1;
    return n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>';
}

/* ---- pairs and the heap --------------------------------------------------------------- */

static int32_t pair_find(const trainer *t, int32_t a, int32_t b, size_t *slot) {
    size_t s = hash_pair(a, b) & t->pmask;
    for (int32_t id; (id = t->pslot[s]) >= 0; s = (s + 1) & t->pmask)
        if (t->pr[id].a == a && t->pr[id].b == b) return id;
    if (slot) *slot = s;
    return -1;
}

/* The pair (a, b): its index, -1 when it may never merge (too long, reserved), -2 out of memory. */
static int32_t pair_get(trainer *t, int32_t a, int32_t b) {
    size_t s;
    int32_t id = pair_find(t, a, b, &s);
    if (id >= 0) return id;
    if (t->sy[a].nch + t->sy[b].nch > (uint32_t)t->max_len || reserved_piece(t, a, b)) return -1;
    if (t->n_pr >= INT32_MAX - 1 || GROW(t->pr, t->pr_cap, t->n_pr + 1) < 0) return -2;
    t->pr[t->n_pr] = (pair){.a = a, .b = b, .last_word = -1, .stamp = -1};
    id = (int32_t)t->n_pr++;
    t->pslot[s] = id;
    if (t->n_pr * 2 > t->pmask) {
        if (kd_bpe_slots(&t->pslot, &t->pmask, t->n_pr) < 0) return -2;
        for (size_t i = 0; i < t->n_pr; i++) {
            size_t q = hash_pair(t->pr[i].a, t->pr[i].b) & t->pmask;
            while (t->pslot[q] >= 0) q = (q + 1) & t->pmask;
            t->pslot[q] = (int32_t)i;
        }
    }
    return id;
}

static int post_add(pair *p, int32_t w) {
    if (p->last_word == w) return 0;
    if (GROW(p->post, p->cap, p->npost + 1) < 0) return -1;
    p->post[p->npost++] = w;
    p->last_word = w;
    return 0;
}

/* Heap order: higher count, then the smaller concatenation, then the shorter left part. */
static int better(const trainer *t, const hent *x, const hent *y) {
    if (x->count != y->count) return x->count > y->count;
    return concat_cmp(t, &t->pr[x->pair], &t->pr[y->pair]) < 0;
}

static void sift_down(trainer *t, size_t i) {
    hent e = t->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->hn) break;
        if (c + 1 < t->hn && better(t, &t->heap[c + 1], &t->heap[c])) c++;
        if (!better(t, &t->heap[c], &e)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    t->heap[i] = e;
}

static int heap_push(trainer *t, int32_t pi) {
    if (GROW(t->heap, t->hcap, t->hn + 1) < 0) return -1;
    hent e = {t->pr[pi].count, pi};
    size_t i = t->hn++;
    while (i > 0 && better(t, &e, &t->heap[(i - 1) / 2])) {
        t->heap[i] = t->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    t->heap[i] = e;
    return 0;
}

static int valid(const trainer *t, const hent *e) {
    return !t->pr[e->pair].dead && t->pr[e->pair].count == e->count && e->count >= t->min_freq;
}

/* Best live pair, or -1 when none is left. Drops stale entries; rebuilds the
 * heap when stale entries dominate it. */
static int32_t heap_pop(trainer *t) {
    if (t->hn > 2 * t->n_pr + 4096) {
        size_t k = 0;
        for (size_t i = 0; i < t->hn; i++)
            if (valid(t, &t->heap[i])) t->heap[k++] = t->heap[i];
        t->hn = k;
        for (size_t i = k / 2; i-- > 0;) sift_down(t, i);
    }
    while (t->hn) {
        hent top = t->heap[0];
        t->heap[0] = t->heap[--t->hn];
        if (t->hn) sift_down(t, 0);
        if (valid(t, &top)) return top.pair;
    }
    return -1;
}

/* ---- phase 4: one merge ------------------------------------------------------------------- */

/* Record amount (±freq of word w) for the pair (x, y) in merge step `step`
 * that creates symbol S. */
static int pair_delta(trainer *t, int32_t x, int32_t y, int64_t amount, int32_t w, int32_t S, int32_t step) {
    int32_t id = amount > 0 ? pair_get(t, x, y) : pair_find(t, x, y, NULL);
    if (id == -2) return -1;
    if (id < 0) return 0;
    pair *p = &t->pr[id];
    if (p->dead) {
        if (amount < 0) return 0;
        p->dead = 0, p->count = 0, p->last_word = -1;   /* reappears through a piece reached twice */
    }
    if (p->stamp != step) {
        if (GROW(t->touched, t->touched_cap, t->n_touched + 1) < 0) return -1;
        t->touched[t->n_touched++] = id;
        p->stamp = step, p->delta = 0;
    }
    p->delta += amount;
    if (amount > 0 && (x == S || y == S)) return post_add(p, w);
    return 0;
}

/* Replace (a, b) by S in every word holding it; update the pair counts. */
static int merge_pair(trainer *t, int32_t pi, int32_t S, int32_t step) {
    const int32_t a = t->pr[pi].a, b = t->pr[pi].b;
    int32_t *post = t->pr[pi].post;
    size_t np = t->pr[pi].npost;
    t->pr[pi].post = NULL, t->pr[pi].npost = t->pr[pi].cap = 0, t->pr[pi].dead = 1, t->pr[pi].last_word = -1;
    t->n_touched = 0;
    int rc = 0;
    for (size_t k = 0; k < np && rc == 0; k++) {
        int32_t w = post[k];
        mword *m = &t->mw[w];
        if (m->stamp == step) continue;
        m->stamp = step;
        int32_t *s = t->seq + m->off;
        uint32_t n = m->len, i = 0;
        while (i + 1 < n && !(s[i] == a && s[i + 1] == b)) i++;
        if (i + 1 >= n) continue;   /* stale index entry */
        uint32_t r0 = i ? i - 1 : 0, wp = i, old_end = 0, new_end = 0;
        if (GROW(t->tmp, t->tmp_cap, n - r0) < 0) {
            rc = -1;
            break;
        }
        memcpy(t->tmp, s + r0, (n - r0) * sizeof *s);
        int64_t merged = 0;
        for (uint32_t j = i; j < n;) {
            if (j + 1 < n && s[j] == a && s[j + 1] == b) {
                s[wp++] = S, j += 2, merged++;
                old_end = j, new_end = wp;
            } else {
                s[wp++] = s[j++];
            }
        }
        m->len = wp;
        t->n_tokens -= m->freq * merged;
        /* Only pairs in [r0, last merge + 1] change: old ones out, new ones in. */
        uint32_t oe = old_end + 1 < n ? old_end + 1 : n, ne = new_end + 1 < wp ? new_end + 1 : wp;
        for (uint32_t q = r0; q + 1 < oe && rc == 0; q++)
            rc = pair_delta(t, t->tmp[q - r0], t->tmp[q - r0 + 1], -m->freq, w, S, step);
        for (uint32_t q = r0; q + 1 < ne && rc == 0; q++) rc = pair_delta(t, s[q], s[q + 1], m->freq, w, S, step);
    }
    free(post);
    for (size_t k = 0; k < t->n_touched && rc == 0; k++) {
        pair *p = &t->pr[t->touched[k]];
        if (p->dead || !p->delta) continue;
        p->count += p->delta;
        if (p->count <= 0) {   /* gone from every word: drop its index */
            free(p->post);
            p->post = NULL, p->npost = p->cap = 0, p->last_word = -1, p->count = 0;
        } else if (p->count >= t->min_freq) {
            rc = heap_push(t, t->touched[k]);
        }
    }
    return rc;
}

/* ---- training --------------------------------------------------------------------------- */

/* Phases 2-3: characters, then words as symbol sequences and the initial pair counts. */
static int build_symbols(trainer *t, double coverage, int32_t max_chars, kd_bpe_stats *st) {
    int64_t total = 0;
    for (size_t i = 0; i < t->wt.n; i++) {
        const char *p = t->wt.blob + t->wt.w[i].off;
        for (size_t off = 0, l; off < t->wt.w[i].len; off += l) {
            l = kd_bpe_utf8_len((unsigned char)p[off]);
            if (char_add(t, char_key(p + off, l), t->wt.w[i].count) < 0) return -1;
            total += t->wt.w[i].count;
        }
    }
    st->n_chars_seen = (int32_t)t->n_ch;
    chr *sorted = malloc((t->n_ch + 1) * sizeof *sorted);
    if (!sorted) return -1;
    size_t k = 0;
    for (size_t i = 0; i <= t->chmask; i++)
        if (t->ch[i].key) sorted[k++] = t->ch[i];
    qsort(sorted, k, sizeof *sorted, chr_cmp);
    /* "▁" comes first, whatever its count */
    const uint32_t space = char_key(SPACE_MARK, 3);
    size_t at = 0;
    while (at < k && sorted[at].key != space) at++;
    if (at == k) {
        if (char_add(t, space, 0) < 0) {
            free(sorted);
            return -1;
        }
        sorted[k++] = *char_slot(t, space);
    }
    chr sp = sorted[at];
    memmove(sorted + 1, sorted, at * sizeof *sorted);
    sorted[0] = sp;
    int64_t cum = 0;
    int32_t kept = 0;
    int rc = kd_bpe_slots(&t->sslot, &t->smask, 64);
    for (size_t i = 0; i < k && rc == 0 && kept < max_chars && (i == 0 || (double)cum < coverage * (double)total);
         i++) {
        char bytes[4];
        uint32_t key = sorted[i].key, n = key < 0x100 ? 1 : key < 0x10000 ? 2 : key < 0x1000000 ? 3 : 4;
        for (uint32_t j = 0; j < n; j++) bytes[j] = (char)(key >> (8 * (n - 1 - j)));
        if (GROW(t->sblob, t->sblob_cap, t->sblob_n + n) < 0) rc = -1;
        else {
            memcpy(t->sblob + t->sblob_n, bytes, n);
            char_slot(t, key)->sym = sym_add(t, t->sblob_n, n, 1);
            t->sblob_n += n;
            rc = char_slot(t, key)->sym < 0 ? -1 : 0;
        }
        cum += sorted[i].count;
        kept++;
    }
    free(sorted);
    if (rc < 0) return -1;
    st->n_chars = kept;
    /* Words → segments of kept symbols; count tokens and pairs. */
    if (kd_bpe_slots(&t->pslot, &t->pmask, 1024) < 0) return -1;
    for (size_t i = 0; i < t->wt.n; i++) {
        const char *p = t->wt.blob + t->wt.w[i].off;
        int64_t f = t->wt.w[i].count;
        size_t seg = t->seq_n;
        for (size_t off = 0, l; off <= t->wt.w[i].len; off += l) {
            int32_t sym = -1;
            l = 1;
            if (off < t->wt.w[i].len) {
                l = kd_bpe_utf8_len((unsigned char)p[off]);
                sym = char_slot(t, char_key(p + off, l))->sym;
                t->n_tokens += sym >= 0 ? f : f * (int64_t)l;
            }
            if (sym >= 0) {
                if (GROW(t->seq, t->seq_cap, t->seq_n + 1) < 0) return -1;
                t->seq[t->seq_n++] = sym;
                continue;
            }
            size_t n = t->seq_n - seg;   /* a segment ends */
            if (n >= 2) {
                if (t->n_mw >= INT32_MAX - 1 || GROW(t->mw, t->mw_cap, t->n_mw + 1) < 0) return -1;
                int32_t w = (int32_t)t->n_mw++;
                t->mw[w] = (mword){seg, (uint32_t)n, -1, f};
                for (size_t q = seg; q + 1 < t->seq_n; q++) {
                    int32_t id = pair_get(t, t->seq[q], t->seq[q + 1]);
                    if (id == -2 || (id >= 0 && post_add(&t->pr[id], w) < 0)) return -1;
                    if (id >= 0) t->pr[id].count += f;
                }
            } else {
                t->seq_n = seg;
            }
            seg = t->seq_n;
        }
    }
    for (size_t i = 0; i < t->n_pr; i++)
        if (t->pr[i].count >= t->min_freq && heap_push(t, (int32_t)i) < 0) return -1;
    return 0;
}

/* The vocabulary: fixed pieces, characters, merged pieces (see kd_bpe_train.h). */
static kd_tokenizer *make_tokenizer(trainer *t, int32_t n_chars, const int32_t *merged, int32_t n_merged, kd_err *err) {
    int32_t n = KD_BPE_N_FIXED + n_chars + n_merged;
    const char **pcs = malloc((size_t)n * sizeof *pcs);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    char *blob = malloc(256 * 7 + t->sblob_n + (size_t)n);
    kd_tokenizer *tok = NULL;
    if (!pcs || !scores || !types || !blob) {
        kd_errf(err, "bpe: out of memory building a vocabulary of %" PRId32, n);
        goto done;
    }
    static const char hex[] = "0123456789ABCDEF";
    size_t w = 0;
    pcs[0] = "<unk>", pcs[1] = "<s>", pcs[2] = "</s>";
    types[0] = KD_TOKEN_UNKNOWN, types[1] = types[2] = KD_TOKEN_CONTROL;
    for (int i = 0; i < 3 + 256; i++) scores[i] = 0.0f;
    for (int v = 0; v < 256; v++) {
        pcs[3 + v] = blob + w;
        memcpy(blob + w, "<0x", 3);
        blob[w + 3] = hex[v >> 4], blob[w + 4] = hex[v & 15], blob[w + 5] = '>', blob[w + 6] = '\0';
        w += 7;
        types[3 + v] = KD_TOKEN_BYTE;
    }
    for (int32_t i = 0; i < n_chars + n_merged; i++) {
        int32_t id = KD_BPE_N_FIXED + i, sym = i < n_chars ? i : merged[i - n_chars];
        const symb *s = &t->sy[sym];
        pcs[id] = blob + w;
        memcpy(blob + w, t->sblob + s->off, s->len);
        blob[w + s->len] = '\0';
        w += s->len + 1;
        scores[id] = i < n_chars ? -(float)(n_merged + i) : -(float)(i - n_chars);
        types[id] = KD_TOKEN_NORMAL;
    }
    tok = kd_tokenizer_new(n, pcs, scores, types, 1, 2, 0, KD_TOK_ADD_BOS | KD_TOK_ADD_SPACE_PREFIX, err);
    if (!tok) kd_err_prefix(err, "bpe");
done:
    free(pcs);
    free(scores);
    free(types);
    free(blob);
    return tok;
}

kd_tokenizer *kd_bpe_train(const char *const *texts, const size_t *lens, int n_texts, const kd_bpe_opts *o,
                           kd_err *err) {
    double t0 = kd_now_s();
    if (!o || o->vocab_size < KD_BPE_MIN_VOCAB || o->vocab_size > KD_TOK_MAX_VOCAB) {
        kd_errf(err, "bpe: vocab_size %" PRId32 ", expected %d..%d (3 special pieces, 256 bytes and \"" SPACE_MARK
                     "\" included)",
                o ? o->vocab_size : 0, KD_BPE_MIN_VOCAB, KD_TOK_MAX_VOCAB);
        return NULL;
    }
    double coverage = o->character_coverage ? o->character_coverage : 0.9995;
    if (n_texts < 0 || (n_texts > 0 && !texts) || o->min_frequency < 0 || o->max_piece_len < 0 ||
        !(coverage > 0 && coverage <= 1)) {
        kd_errf(err, "bpe: bad options (n_texts %d, min_frequency %" PRId64 ", character_coverage %g, "
                     "max_piece_len %" PRId32 "); expected n_texts ≥ 0, min_frequency ≥ 0, coverage in (0, 1], "
                     "max_piece_len ≥ 0",
                n_texts, o->min_frequency, coverage, o->max_piece_len);
        return NULL;
    }
    kd_bpe_stats st = {0};
    trainer t = {.min_freq = o->min_frequency ? o->min_frequency : 2,
                 .max_len = o->max_piece_len ? o->max_piece_len : 16,
                 .merge_digits = o->merge_digits != 0};
    kd_tokenizer *tok = NULL;
    int32_t *merged = NULL;
    if (!(t.ch = calloc(64, sizeof *t.ch))) goto oom;
    t.chmask = 63;
    if (kd_bpe_count_words(texts, lens, n_texts, t.merge_digits, &t.wt, err) < 0) goto done;
    st.n_bytes = t.wt.n_bytes;
    st.n_words = (int64_t)t.wt.n;
    t.n_tokens = t.wt.fallback;
    if (build_symbols(&t, coverage, o->vocab_size - KD_BPE_N_FIXED, &st) < 0) goto oom;
    kd_bpe_words_free(&t.wt);
    int32_t want = o->vocab_size - KD_BPE_N_FIXED - st.n_chars, n_merged = 0;
    if (!(merged = malloc(((size_t)want + 1) * sizeof *merged))) goto oom;
    st.stop = KD_BPE_STOP_VOCAB;
    int64_t last_count = 0;
    for (int32_t step = 0; n_merged < want; step++) {
        int32_t pi = heap_pop(&t);
        if (pi < 0) {
            st.stop = KD_BPE_STOP_FREQ;
            break;
        }
        int32_t a = t.pr[pi].a, b = t.pr[pi].b, S;
        uint32_t la = t.sy[a].len, lb = t.sy[b].len;
        if (GROW(t.sblob, t.sblob_cap, t.sblob_n + la + lb) < 0) goto oom;
        memcpy(t.sblob + t.sblob_n, t.sblob + t.sy[a].off, la);
        memcpy(t.sblob + t.sblob_n + la, t.sblob + t.sy[b].off, lb);
        if ((S = sym_find(&t, t.sblob + t.sblob_n, la + lb, NULL)) < 0) {
            if ((S = sym_add(&t, t.sblob_n, la + lb, t.sy[a].nch + t.sy[b].nch)) < 0) goto oom;
            t.sblob_n += la + lb;
            merged[n_merged++] = S;
            if (o->progress && n_merged % 256 == 0)
                o->progress(o->progress_ctx, KD_BPE_N_FIXED + st.n_chars + n_merged, o->vocab_size, t.pr[pi].count);
        }
        last_count = t.pr[pi].count;
        if (merge_pair(&t, pi, S, step) < 0) goto oom;
        st.n_merge_ops++;
    }
    st.n_merges = n_merged;
    st.n_tokens = t.n_tokens;
    if (o->progress) o->progress(o->progress_ctx, KD_BPE_N_FIXED + st.n_chars + n_merged, o->vocab_size, last_count);
    tok = make_tokenizer(&t, st.n_chars, merged, n_merged, err);
    st.seconds = kd_now_s() - t0;
    if (tok && o->stats) *o->stats = st;
    goto done;
oom:
    kd_errf(err, "bpe: out of memory (%zu unique words, %zu pairs)", t.wt.n + t.n_mw, t.n_pr);
done:
    free(merged);
    trainer_free(&t);
    return tok;
}

/* ---- counting tokens ------------------------------------------------------------------------ */

/* The same vocabulary without the space prefix (for the continued parts of long texts). */
static kd_tokenizer *without_prefix(const kd_tokenizer *tok, kd_err *err) {
    int32_t n = kd_tokenizer_n_vocab(tok);
    const char **pcs = malloc((size_t)n * sizeof *pcs);
    float *scores = malloc((size_t)n * sizeof *scores);
    int32_t *types = malloc((size_t)n * sizeof *types);
    kd_tokenizer *t = NULL;
    if (!pcs || !scores || !types) {
        kd_errf(err, "bpe: out of memory");
    } else {
        for (int32_t i = 0; i < n; i++) {
            pcs[i] = kd_tokenizer_piece(tok, i, NULL);
            scores[i] = kd_tokenizer_score(tok, i);
            types[i] = (int32_t)kd_tokenizer_type(tok, i);
        }
        t = kd_tokenizer_new(n, pcs, scores, types, kd_tokenizer_bos(tok), kd_tokenizer_eos(tok), kd_tokenizer_unk(tok),
                             kd_tokenizer_flags(tok) & ~KD_TOK_ADD_SPACE_PREFIX, err);
    }
    free(pcs);
    free(scores);
    free(types);
    return t;
}

int kd_bpe_count_tokens(const kd_tokenizer *tok, const char *const *texts, const size_t *lens, int n_texts,
                        int64_t *n_tokens, kd_err *err) {
    size_t n_units = 0;
    kd_bpe_unit *u = kd_bpe_units(texts, lens, n_texts, &n_units);
    if (!u) return kd_errf(err, "bpe: out of memory");
    kd_tokenizer *cont = NULL;
    for (size_t i = 0; i < n_units && !cont; i++)
        if (!u[i].prefix && (kd_tokenizer_flags(tok) & KD_TOK_ADD_SPACE_PREFIX) && !(cont = without_prefix(tok, err))) {
            free(u);
            return -1;
        }
    int64_t total = 0;
    int bad = 0;
#pragma omp parallel reduction(+ : total) reduction(| : bad)
    {
        kd_tokens ids = {0};
        kd_err e;
#pragma omp for schedule(dynamic, 16)
        for (size_t i = 0; i < n_units; i++) {
            if (bad) continue;
            ids.n = 0;
            if (kd_tokenizer_encode(u[i].prefix || !cont ? tok : cont, u[i].p, u[i].n, 0, &ids, &e) < 0) {
                bad = 1;
#pragma omp critical(kd_bpe_count_err)
                if (err) *err = e;
            }
            total += (int64_t)ids.n;
        }
        kd_tokens_free(&ids);
    }
    free(u);
    kd_tokenizer_free(cont);
    if (bad) return -1;
    *n_tokens = total;
    return 0;
}
