/*
 * kd_loader.c — the batch loader over teacher dumps (see kd_loader.h for the
 * split, shuffle, shard, cursor and vocabulary rules).
 *
 * Batches live in a ring of prefetch + 1 slots: the reader thread fills free
 * slots in batch order; kd_loader_next hands out the oldest filled slot and
 * takes back the one it handed out before. Batch (epoch, index) is a pure
 * function of the options, the seed and that position, so restoring a cursor
 * only has to stop the reader, empty the ring and restart at the position.
 * Tokens-only dumps fill tokens and labels only.
 */
#include "data/kd_loader.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_mem.h"
#include "core/kd_rng.h"
#include "core/kd_time.h"

struct kd_loader {
    kd_loader_opts o;
    int n_dumps;
    kd_dump **dumps;
    kd_dump_meta meta;
    int T, k, tokens_only;
    int64_t Vd, Vout;         /* the dumps' vocab_size; the delivered width / id bound */
    int64_t n_split, per_rank, bpe;
    int32_t *split_dump;      /* [n_split] */
    int64_t *split_seq;
    uint64_t hash, seed;
    /* reader side */
    int64_t p_epoch, p_batch, perm_epoch;
    int64_t *perm;
    int32_t *stage_tok;
    uint8_t *stage_mask;
    uint32_t *stamp, mark;    /* duplicate-id detection of the value checks (top-k) */
    int64_t dropped;          /* top-k entries removed while producing the current batch */
    /* ring */
    int n_slots, head, count, held, stop, running, failed;
    kd_batch *slots;
    int *slot_failed;
    int64_t *slot_dropped;
    kd_err *slot_err, fail_err;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv_put, cv_get;
    /* consumer side */
    int64_t c_epoch, c_batch;
    kd_loader_stats stats;
};

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t fnv(uint64_t h, uint64_t v) {
    for (int i = 0; i < 8; i++) h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
    return h;
}

void kd_loader_opts_init(kd_loader_opts *o) {
    memset(o, 0, sizeof *o);
    o->batch_size = 8;
    o->shuffle = 1;
    o->split = KD_SPLIT_ALL;
    o->world = 1;
    o->prefetch = 2;
}

/* ---- one batch ------------------------------------------------------------------------ */

static void build_perm(kd_loader *L, int64_t epoch) {
    for (int64_t i = 0; i < L->n_split; i++) L->perm[i] = i;
    if (L->o.shuffle) {
        kd_rng r;
        kd_rng_seed(&r, L->seed ^ mix64((uint64_t)epoch));
        for (int64_t i = L->n_split - 1; i > 0; i--) {
            int64_t j = (int64_t)kd_rng_below(&r, (uint64_t)i + 1), t = L->perm[i];
            L->perm[i] = L->perm[j];
            L->perm[j] = t;
        }
    }
    L->perm_epoch = epoch;
}

static void pad_row(kd_loader *L, kd_batch *b, int row) {
    size_t T = (size_t)L->T, o = (size_t)row * T;
    memset(b->tokens + o, 0, T * 4);
    for (size_t t = 0; t < T; t++) b->labels[o + t] = -100;
    if (L->tokens_only) {
        /* no teacher data */
    } else if (L->k) {
        memset(b->topk_ids + o * (size_t)L->k, 0, T * (size_t)L->k * 4);
        for (size_t i = 0; i < T * (size_t)L->k; i++) b->topk_logprobs[o * (size_t)L->k + i] = -INFINITY;
    } else {
        memset(b->logits + o * (size_t)L->Vout, 0, T * (size_t)L->Vout * 4);
    }
    b->dump[row] = -1;
    b->seq[row] = -1;
}

/* Whether some (uint32_t)ids[i] ≥ limit (≥ 1), i < n: 4 at a time (SSE2's width), signed compares (a plain
 * loop stays scalar at -O2, and SSE2 has no unsigned compare). */
static int any_at_least(const int32_t *ids, size_t n, uint32_t limit) {
    typedef int32_t v4i __attribute__((vector_size(16)));
    const int32_t top = limit - 1 > (uint32_t)INT32_MAX ? INT32_MAX : (int32_t)(limit - 1);
    v4i hit = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4i v;
        memcpy(&v, ids + i, sizeof v);
        hit |= (v < 0) | (v > top);
    }
    int any = (hit[0] | hit[1]) | (hit[2] | hit[3]);
    for (; i < n; i++) any |= (uint32_t)ids[i] >= limit;
    return any != 0;
}

/* Read sequence (d, s) into row `row` of b. */
static int fill_row(kd_loader *L, kd_batch *b, int row, int d, int64_t s, kd_err *err) {
    int T = L->T, k = L->k;
    size_t o = (size_t)row * (size_t)T;
    kd_dump_rows rows = {.tokens = L->stage_tok, .loss_mask = L->stage_mask};
    if (L->tokens_only) {
        /* tokens and labels only */
    } else if (k) {
        rows.topk_ids = b->topk_ids + o * (size_t)k;
        rows.topk_logprobs = b->topk_logprobs + o * (size_t)k;
    } else {
        rows.logits = b->logits + o * (size_t)L->Vout;
        rows.logits_width = L->Vout;
    }
    if (kd_dump_read(L->dumps[d], s, 1, &rows, err)) return -1;
    const char *path = kd_dump_path(L->dumps[d]);
    int64_t bound = L->o.student_vocab > 0 && L->o.student_vocab < L->Vd ? L->o.student_vocab : L->Vd;
    for (int t = 0; t <= T; t++) {
        int32_t id = L->stage_tok[t];
        int used = t < T || L->stage_mask[T - 1];   /* the last token only matters as a label */
        if (used && (id < 0 || id >= bound))
            return kd_errf(err, "%s: sequence %" PRId64 ", token %d: id %d outside [0, %" PRId64 ")%s", path, s, t, id,
                           bound, bound < L->Vd ? " (the student's vocabulary)" : "");
    }
    /* the teacher's values at every trained position, checked as kd teacher info checks them
     * (a few comparisons and one exp per entry: nothing next to a training step) */
    for (int t = 0; !L->tokens_only && t < T; t++) {
        if (!L->stage_mask[t]) continue;
        int64_t slot;
        char what[160];
        const float *v = k ? rows.topk_logprobs + (size_t)t * (size_t)k : rows.logits + (size_t)t * (size_t)L->Vout;
        int bad = kd_dump_check_position(kd_dump_get_meta(L->dumps[d]), k ? rows.topk_ids + (size_t)t * (size_t)k : NULL,
                                         v, k ? k : L->Vout, L->stamp, &L->mark, &slot, what, sizeof what);
        if (bad)
            return kd_errf(err, "%s: dataset '%s': sequence %" PRId64 ", position %d, slot %" PRId64 ": %s (the "
                           "dump is corrupt; kd teacher info %s checks all of it)", path,
                           bad == 1 ? "topk_ids" : k ? "topk_logprobs" : "logits", s, t, slot, what, path);
    }
    for (int t = 0; t < T; t++) {
        b->tokens[o + (size_t)t] = L->stage_tok[t];
        b->labels[o + (size_t)t] = L->stage_mask[t] ? L->stage_tok[t + 1] : -100;
        b->n_labels += L->stage_mask[t] != 0;
    }
    uint32_t limit = (uint32_t)(L->Vout < L->Vd ? L->Vout : L->Vd);
    int slow = k && any_at_least(rows.topk_ids, (size_t)T * (size_t)k, limit);
    for (int t = 0; slow && t < T; t++) {   /* an id out of range, or padding ids to drop */
        int32_t *ids = rows.topk_ids + (size_t)t * (size_t)k;
        float *lp = rows.topk_logprobs + (size_t)t * (size_t)k;
        int w = 0;
        for (int j = 0; j < k; j++) {
            if (ids[j] < 0 || ids[j] >= L->Vd)
                return kd_errf(err, "%s: dataset 'topk_ids': sequence %" PRId64 ", position %d, slot %d: id %d outside "
                               "[0, %" PRId64 ")", path, s, t, j, ids[j], L->Vd);
            if (ids[j] >= L->Vout) {   /* KD_VOCAB_PADDED: a padding id of the teacher */
                L->dropped++;
                continue;
            }
            ids[w] = ids[j];
            lp[w++] = lp[j];
        }
        for (; w < k; w++) {
            ids[w] = 0;
            lp[w] = -INFINITY;
        }
    }
    b->dump[row] = d;
    b->seq[row] = s;
    b->n_rows++;
    return 0;
}

static int produce(kd_loader *L, int64_t epoch, int64_t index, kd_batch *b, int64_t *dropped, kd_err *err) {
    if (L->perm_epoch != epoch) build_perm(L, epoch);
    L->dropped = 0;
    b->epoch = epoch;
    b->index = index;
    b->n_rows = 0;
    b->n_labels = 0;
    int world = L->o.world;
    for (int row = 0; row < b->B; row++) {
        int64_t i = index * b->B + row, j = L->o.rank + (int64_t)world * i;
        if (i >= L->per_rank || j >= L->n_split) {
            pad_row(L, b, row);
            continue;
        }
        int64_t g = L->perm[j];
        if (fill_row(L, b, row, L->split_dump[g], L->split_seq[g], err)) return -1;
    }
    *dropped = L->dropped;
    return 0;
}

static void advance(kd_loader *L, int64_t *epoch, int64_t *batch) {
    (void)L;
    if (++*batch == L->bpe) {
        *batch = 0;
        ++*epoch;
    }
}

/* ---- the reader thread ----------------------------------------------------------------- */

static void *reader_main(void *arg) {
    kd_loader *L = arg;
    pthread_mutex_lock(&L->mu);
    while (!L->stop) {
        if (L->count == L->n_slots) {
            pthread_cond_wait(&L->cv_put, &L->mu);
            continue;
        }
        int idx = (L->head + L->count) % L->n_slots;
        int64_t e = L->p_epoch, bi = L->p_batch;
        advance(L, &L->p_epoch, &L->p_batch);
        pthread_mutex_unlock(&L->mu);
        int rc = produce(L, e, bi, &L->slots[idx], &L->slot_dropped[idx], &L->slot_err[idx]);
        pthread_mutex_lock(&L->mu);
        if (L->stop) break;
        L->slot_failed[idx] = rc;
        L->count++;
        pthread_cond_signal(&L->cv_get);
        if (rc) break;
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

static void reader_stop(kd_loader *L) {
    if (!L->running) return;
    pthread_mutex_lock(&L->mu);
    L->stop = 1;
    pthread_cond_broadcast(&L->cv_put);
    pthread_mutex_unlock(&L->mu);
    pthread_join(L->th, NULL);
    L->running = 0;
}

static int reader_start(kd_loader *L, kd_err *err) {
    L->head = L->count = L->held = L->stop = L->failed = 0;
    L->p_epoch = L->c_epoch;
    L->p_batch = L->c_batch;
    if (L->o.prefetch <= 0) return 0;
    if (pthread_create(&L->th, NULL, reader_main, L) != 0) return kd_errf(err, "loader: cannot start the reader thread");
    L->running = 1;
    return 0;
}

const kd_batch *kd_loader_next(kd_loader *L, kd_err *err) {
    if (L->failed) {
        if (err) *err = L->fail_err;
        return NULL;
    }
    kd_batch *b;
    int64_t dropped = 0;
    if (L->o.prefetch <= 0) {
        b = &L->slots[0];
        if (produce(L, L->c_epoch, L->c_batch, b, &dropped, &L->fail_err)) {
            L->failed = 1;
            if (err) *err = L->fail_err;
            return NULL;
        }
    } else {
        pthread_mutex_lock(&L->mu);
        if (L->held) {
            L->head = (L->head + 1) % L->n_slots;
            L->count--;
            L->held = 0;
            pthread_cond_signal(&L->cv_put);
        }
        double t0 = kd_now_s();
        while (L->count == 0) pthread_cond_wait(&L->cv_get, &L->mu);
        L->stats.wait_seconds += kd_now_s() - t0;
        L->held = 1;
        b = &L->slots[L->head];
        if (L->slot_failed[L->head]) {
            L->failed = 1;
            L->fail_err = L->slot_err[L->head];
            if (err) *err = L->fail_err;
            pthread_mutex_unlock(&L->mu);
            return NULL;
        }
        dropped = L->slot_dropped[L->head];
        pthread_mutex_unlock(&L->mu);
    }
    L->stats.topk_dropped += dropped;
    L->c_epoch = b->epoch;
    L->c_batch = b->index;
    advance(L, &L->c_epoch, &L->c_batch);
    L->stats.batches++;
    L->stats.sequences += b->n_rows;
    return b;
}

/* ---- setup ------------------------------------------------------------------------------ */

static int open_dumps(kd_loader *L, kd_err *err) {
    const kd_loader_opts *o = &L->o;
    kd_dump_tokenizer first_tok = {0};
    int have_tok = 0, rc = 0;
    const char *tok_from = NULL;
    for (int i = 0; i < o->n_paths && !rc; i++) {
        kd_dump *d = L->dumps[i] = kd_dump_open(o->paths[i], err);
        if (!d) {
            rc = -1;
            break;
        }
        L->n_dumps++;
        const kd_dump_meta *m = kd_dump_get_meta(d);
        if (i == 0) L->meta = *m;
        else if (m->tokens_only != L->meta.tokens_only) {
            const char *only = m->tokens_only ? o->paths[i] : o->paths[0], *with = m->tokens_only ? o->paths[0] : o->paths[i];
            const kd_dump_meta *wm = m->tokens_only ? &L->meta : m;
            rc = kd_errf(err, "%s holds tokens only (no teacher distribution) but %s holds the teacher's %s: one loader "
                         "does not mix the two (train on text with alpha 0 from tokens-only dumps, distill from "
                         "teacher dumps)", only, with, wm->k ? "top-k" : "full logits");
            break;
        } else if (m->sampled != L->meta.sampled) {
            const char *smp = m->sampled ? o->paths[i] : o->paths[0], *oth = m->sampled ? o->paths[0] : o->paths[i];
            rc = kd_errf(err, "%s holds sampled classes (distribution \"sampled\") but %s holds a top-k or logits: "
                         "one loader does not mix the two (they train with different kd_mode)", smp, oth);
            break;
        } else if (m->seq_len != L->meta.seq_len || m->k != L->meta.k || m->vocab_size != L->meta.vocab_size) {
            rc = kd_errf(err, "%s: seq_len %d, k %d, vocab_size %" PRId64 " differ from %s (%d, %d, %" PRId64 ")",
                         o->paths[i], m->seq_len, m->k, m->vocab_size, o->paths[0], L->meta.seq_len, L->meta.k,
                         L->meta.vocab_size);
            break;
        }
        if (!m->has_tokenizer) continue;
        kd_dump_tokenizer t;
        if (kd_dump_read_tokenizer(d, &t, err)) {
            rc = -1;
            break;
        }
        if (o->student_tokenizer &&
            kd_dump_tokenizer_compare(&t, o->paths[i], o->student_tokenizer, "the student", err)) {
            kd_err_prefix(err, "%s: the teacher's tokenizer is not the student's", o->paths[i]);
            rc = -1;
        } else if (have_tok && kd_dump_tokenizer_compare(&t, o->paths[i], &first_tok, tok_from, err)) {
            rc = -1;
        }
        if (!have_tok) {
            first_tok = t;
            have_tok = 1;
            tok_from = o->paths[i];
        } else {
            kd_dump_tokenizer_free(&t);
        }
    }
    if (have_tok) kd_dump_tokenizer_free(&first_tok);
    return rc;
}

static int check_vocab(kd_loader *L, kd_err *err) {
    int64_t sv = L->o.student_vocab, V = L->meta.vocab_size;
    L->Vd = V;
    L->Vout = sv > 0 ? sv : V;
    if (sv > 0 && sv != V && L->o.vocab_policy != KD_VOCAB_PADDED)
        return kd_errf(err, "%s: the %s vocab_size %" PRId64 " differs from the student's %" PRId64
                       "; if one of them is padded past the tokenizer (e.g. 152064 vs 151936), allow it with the "
                       "padded-vocabulary policy (vocab_policy KD_VOCAB_PADDED, docs/dump-format.md)",
                       L->o.paths[0], L->meta.tokens_only ? "dump's" : "teacher's", V, sv);
    if (L->o.student_tokenizer && L->o.student_tokenizer->n > L->Vout)
        return kd_errf(err, "the student's tokenizer has %d pieces, more than its vocabulary %" PRId64,
                       L->o.student_tokenizer->n, L->Vout);
    return 0;
}

static int alloc_batch(kd_loader *L, kd_batch *b, kd_err *err) {
    size_t B = (size_t)L->o.batch_size, T = (size_t)L->T, k = (size_t)L->k;
    b->B = (int)B;
    b->T = (int)T;
    b->k = (int)k;
    b->tokens_only = L->tokens_only;
    b->sampled = L->meta.sampled;
    b->V = L->Vout;
    b->tokens = kd_alloc(B * T * 4, err);
    b->labels = kd_alloc(B * T * 4, err);
    b->dump = kd_alloc(B * 4, err);
    b->seq = kd_alloc(B * 8, err);
    int ok = b->tokens && b->labels && b->dump && b->seq;
    if (L->tokens_only) {
        /* no teacher buffers */
    } else if (k) {
        b->topk_ids = kd_alloc(B * T * k * 4, err);
        b->topk_logprobs = kd_alloc(B * T * k * 4, err);
        ok = ok && b->topk_ids && b->topk_logprobs;
    } else {
        b->logits = kd_alloc(B * T * (size_t)L->Vout * 4, err);
        ok = ok && b->logits;
    }
    return ok ? 0 : -1;
}

kd_loader *kd_loader_new(const kd_loader_opts *o, kd_err *err) {
    if (!o->paths || o->n_paths < 1 || o->batch_size < 1 || o->prefetch < 0 || o->prefetch > 64 ||
        o->val_fraction < 0 || o->val_fraction > 1 || !(o->split >= KD_SPLIT_TRAIN && o->split <= KD_SPLIT_ALL)) {
        kd_errf(err, "loader: need ≥ 1 dump, batch_size ≥ 1, prefetch in [0, 64], val_fraction in [0, 1] and a split "
                "(got %d dumps, batch %d, prefetch %d, val_fraction %g)", o->n_paths, o->batch_size, o->prefetch,
                o->val_fraction);
        return NULL;
    }
    int world = o->world > 0 ? o->world : 1;
    if (o->rank < 0 || o->rank >= world) {
        kd_errf(err, "loader: rank %d, expected [0, %d)", o->rank, world);
        return NULL;
    }
    kd_loader *L = calloc(1, sizeof *L);
    if (!L) return NULL;
    L->o = *o;
    L->o.world = world;
    L->seed = o->seed;
    L->perm_epoch = -1;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv_put, NULL);
    pthread_cond_init(&L->cv_get, NULL);
    L->dumps = calloc((size_t)o->n_paths, sizeof *L->dumps);
    if (!L->dumps || open_dumps(L, err) || check_vocab(L, err)) goto fail;
    L->T = L->meta.seq_len;
    L->k = L->meta.k;
    L->tokens_only = L->meta.tokens_only;
    /* the split */
    int64_t total = 0;
    for (int i = 0; i < L->n_dumps; i++) total += kd_dump_get_meta(L->dumps[i])->n_seq;
    L->split_dump = malloc((size_t)(total ? total : 1) * sizeof *L->split_dump);
    L->split_seq = malloc((size_t)(total ? total : 1) * sizeof *L->split_seq);
    L->perm = malloc((size_t)(total ? total : 1) * sizeof *L->perm);
    if (!L->split_dump || !L->split_seq || !L->perm) goto oom;
    long double cut = (long double)o->val_fraction * 18446744073709551616.0L;
    for (int i = 0; i < L->n_dumps; i++)
        for (int64_t s = 0; s < kd_dump_get_meta(L->dumps[i])->n_seq; s++) {
            int val = (long double)mix64(o->split_seed ^ ((uint64_t)i << 40) ^ (uint64_t)s) < cut;
            if (o->split == KD_SPLIT_ALL || val == (o->split == KD_SPLIT_VAL)) {
                L->split_dump[L->n_split] = i;
                L->split_seq[L->n_split++] = s;
            }
        }
    if (L->n_split == 0) {
        kd_errf(err, "%s%s: the %s split has no sequences (%" PRId64 " in all, val_fraction %g)", o->paths[0],
                o->n_paths > 1 ? " ..." : "", o->split == KD_SPLIT_VAL ? "validation" : o->split == KD_SPLIT_TRAIN ? "training" : "",
                total, o->val_fraction);
        goto fail;
    }
    L->per_rank = (L->n_split + world - 1) / world;
    L->bpe = (L->per_rank + o->batch_size - 1) / o->batch_size;
    uint64_t h = 0xcbf29ce484222325ULL;
    uint64_t vf;
    memcpy(&vf, &o->val_fraction, 8);
    uint64_t fields[] = {(uint64_t)L->n_split, (uint64_t)o->batch_size, (uint64_t)L->T, (uint64_t)L->k,
                         (uint64_t)L->Vout, (uint64_t)o->rank, (uint64_t)world, (uint64_t)!!o->shuffle,
                         (uint64_t)o->split, vf, o->split_seed, (uint64_t)L->n_dumps};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) h = fnv(h, fields[i]);
    for (int i = 0; i < L->n_dumps; i++) h = fnv(h, (uint64_t)kd_dump_get_meta(L->dumps[i])->n_seq);
    if (L->tokens_only) h = fnv(h, 0x6e6f6e65);   /* "none": only here, so older cursors stay valid */
    if (L->meta.sampled) h = fnv(h, 0x73616d70);  /* "samp": likewise */
    L->hash = h;
    /* buffers and the ring */
    L->n_slots = o->prefetch > 0 ? o->prefetch + 1 : 1;
    L->slots = calloc((size_t)L->n_slots, sizeof *L->slots);
    L->slot_failed = calloc((size_t)L->n_slots, sizeof *L->slot_failed);
    L->slot_err = calloc((size_t)L->n_slots, sizeof *L->slot_err);
    L->slot_dropped = calloc((size_t)L->n_slots, sizeof *L->slot_dropped);
    L->stage_tok = malloc((size_t)(L->T + 1) * 4);
    L->stage_mask = malloc((size_t)L->T);
    L->stamp = L->k ? calloc((size_t)L->Vd, sizeof *L->stamp) : NULL;
    if (!L->slots || !L->slot_failed || !L->slot_err || !L->slot_dropped || !L->stage_tok || !L->stage_mask ||
        (L->k && !L->stamp))
        goto oom;
    for (int i = 0; i < L->n_slots; i++)
        if (alloc_batch(L, &L->slots[i], err)) goto fail;
    if (reader_start(L, err)) goto fail;
    return L;
oom:
    kd_errf(err, "loader: out of memory");
fail:
    kd_loader_free(L);
    return NULL;
}

void kd_loader_free(kd_loader *L) {
    if (!L) return;
    reader_stop(L);
    for (int i = 0; L->slots && i < L->n_slots; i++) {
        kd_batch *b = &L->slots[i];
        kd_free(b->tokens);
        kd_free(b->labels);
        kd_free(b->topk_ids);
        kd_free(b->topk_logprobs);
        kd_free(b->logits);
        kd_free(b->dump);
        kd_free(b->seq);
    }
    for (int i = 0; L->dumps && i < L->n_dumps; i++) kd_dump_close(L->dumps[i]);
    free(L->dumps);
    free(L->slots);
    free(L->slot_failed);
    free(L->slot_err);
    free(L->slot_dropped);
    free(L->split_dump);
    free(L->split_seq);
    free(L->perm);
    free(L->stage_tok);
    free(L->stage_mask);
    free(L->stamp);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv_put);
    pthread_cond_destroy(&L->cv_get);
    free(L);
}

int64_t kd_loader_n_sequences(const kd_loader *L) { return L->n_split; }
int64_t kd_loader_batches_per_epoch(const kd_loader *L) { return L->bpe; }
const kd_dump_meta *kd_loader_meta(const kd_loader *L) { return &L->meta; }

kd_loader_cursor kd_loader_cursor_get(const kd_loader *L) {
    kd_loader_cursor c = {L->seed, L->c_epoch, L->c_batch, L->hash};
    return c;
}

int kd_loader_restore(kd_loader *L, const kd_loader_cursor *c, kd_err *err) {
    if (c->config_hash != L->hash)
        return kd_errf(err, "loader: the cursor was saved by a loader with other options or dumps (batch size, "
                       "split, rank/world, shuffle, dump sizes): config hash %016" PRIx64 ", expected %016" PRIx64,
                       c->config_hash, L->hash);
    if (c->epoch < 0 || c->batch < 0 || c->batch >= L->bpe)
        return kd_errf(err, "loader: cursor at epoch %" PRId64 ", batch %" PRId64 ", expected a batch in [0, %" PRId64 ")",
                       c->epoch, c->batch, L->bpe);
    reader_stop(L);
    L->seed = c->seed;
    L->perm_epoch = -1;
    L->c_epoch = c->epoch;
    L->c_batch = c->batch;
    return reader_start(L, err);
}

void kd_loader_get_stats(const kd_loader *L, kd_loader_stats *s) { *s = L->stats; }
