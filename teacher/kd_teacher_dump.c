/*
 * kd_teacher_dump.c — run a teacher over text or its own samples and write a
 * dump, or pack text into a tokens-only dump without a teacher (see
 * kd_teacher_dump.h).
 */
#define _GNU_SOURCE   /* memmem */
#include "teacher/kd_teacher_dump.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/kd_kernels.h"
#include "core/kd_file.h"
#include "core/kd_log.h"
#include "core/kd_rng.h"
#include "core/kd_time.h"
#include "data/kd_tokenizer.h"
#include "infer/kd_infer.h"
#include "student/kd_checkpoint.h"
#include "data/kd_dump_tok.h"

void kd_teacher_dump_opts_init(kd_teacher_dump_opts *o) {
    memset(o, 0, sizeof *o);
    o->gen_temperature = 1.0;
    o->seed = 1234;
    o->seq_len = 128;
    o->topk = 64;
    o->dtype = KD_DUMP_F16;
    o->batch = 16;
}

void kd_topk_logprobs(const float *logits, int64_t V, int64_t k, int32_t *ids, float *lp) {
    /* insertion into a sorted list of k: fine for k ≪ V */
    int64_t n = 0;
    for (int64_t v = 0; v < V; v++) {
        float x = logits[v];
        if (n == k && !(x > logits[ids[k - 1]])) continue;
        int64_t pos = n < k ? n++ : k - 1;
        while (pos > 0 && x > logits[ids[pos - 1]]) {
            ids[pos] = ids[pos - 1];
            pos--;
        }
        ids[pos] = (int32_t)v;
    }
    float lse = kd_logsumexp(logits, V);
    for (int64_t i = 0; i < k; i++) lp[i] = i < n ? logits[ids[i]] - lse : -INFINITY;
    for (int64_t i = n; i < k; i++) ids[i] = 0;
}

uint64_t kd_sample_stream(uint64_t seed, int64_t seq, int64_t t) {
    uint64_t h = seed ^ 0x73616d706c656421ULL;   /* "sampled!" */
    const uint64_t parts[2] = {(uint64_t)seq, (uint64_t)t};
    for (int i = 0; i < 2; i++) {   /* splitmix64 steps over the parts */
        h += parts[i] + 0x9e3779b97f4a7c15ULL;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
        h ^= h >> 31;
    }
    return h;
}

void kd_sample_classes(const float *logits, int64_t V, int64_t n, uint64_t stream, double *cum, int32_t *ids,
                       float *lp) {
    float m = logits[0];
    for (int64_t v = 1; v < V; v++) m = logits[v] > m ? logits[v] : m;
    double acc = 0;
    for (int64_t v = 0; v < V; v++) cum[v] = acc += exp((double)(logits[v] - m));
    kd_rng r;
    kd_rng_seed(&r, stream);
    int32_t draw[KD_DUMP_MAX_SAMPLES];
    for (int64_t i = 0; i < n; i++) {   /* inverse CDF: the first v with cum[v] > u·Σ */
        double u = (double)(kd_rng_u64(&r) >> 11) * (1.0 / 9007199254740992.0) * acc;
        int64_t lo = 0, hi = V - 1;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (cum[mid] > u) hi = mid;
            else lo = mid + 1;
        }
        int32_t x = (int32_t)lo;
        int64_t j = i;   /* insertion: draw[] ascending */
        while (j > 0 && draw[j - 1] > x) {
            draw[j] = draw[j - 1];
            j--;
        }
        draw[j] = x;
    }
    int64_t d = 0;
    int cnt[KD_DUMP_MAX_SAMPLES];
    for (int64_t i = 0; i < n; i++) {   /* distinct ids ascending, with counts */
        if (d > 0 && ids[d - 1] == draw[i]) {
            cnt[d - 1]++;
            continue;
        }
        ids[d] = draw[i];
        cnt[d++] = 1;
    }
    for (int64_t i = 1; i < d; i++) {   /* by count descending; stable, so equal counts keep ids ascending */
        int32_t id = ids[i];
        int c = cnt[i];
        int64_t j = i;
        while (j > 0 && cnt[j - 1] < c) {
            ids[j] = ids[j - 1];
            cnt[j] = cnt[j - 1];
            j--;
        }
        ids[j] = id;
        cnt[j] = c;
    }
    for (int64_t i = 0; i < n; i++) {
        lp[i] = i < d ? kd_dump_sample_lp(cnt[i], (int)n) : -INFINITY;
        if (i >= d) ids[i] = 0;
    }
}

/* ---- text → token stream ------------------------------------------------------------ */

static int encode_doc(const kd_tokenizer *tok, const char *s, size_t len, kd_tokens *out, kd_err *err) {
    if (len == 0) return 0;
    int32_t bos = kd_tokenizer_bos(tok), eos = kd_tokenizer_eos(tok);
    if (bos >= 0 && kd_tokens_push(out, bos, err)) return -1;
    if (kd_tokenizer_encode(tok, s, len, 0, out, err)) return -1;
    if (eos >= 0 && kd_tokens_push(out, eos, err)) return -1;
    return 0;
}

static int text_stream(const kd_teacher_dump_opts *o, const kd_tokenizer *tok, kd_tokens *out, kd_err *err) {
    for (int f = 0; f < o->n_text; f++) {
        size_t len;
        char *text = kd_read_file(o->text[f], &len, err);
        if (!text) return kd_err_prefix(err, "text file");
        int rc = 0;
        if (!o->doc_sep || !*o->doc_sep) {
            rc = encode_doc(tok, text, len, out, err);
        } else {
            size_t sl = strlen(o->doc_sep);
            char *p = text, *end = text + len;
            while (!rc && p < end) {
                char *q = memmem(p, (size_t)(end - p), o->doc_sep, sl);
                size_t n = q ? (size_t)(q - p) : (size_t)(end - p);
                rc = encode_doc(tok, p, n, out, err);
                p = q ? q + sl : end;
            }
        }
        free(text);
        if (rc) return kd_err_prefix(err, "%s", o->text[f]);
    }
    if (out->n == 0) return kd_errf(err, "the text files hold no text");
    return 0;
}

static int is_val(uint64_t i, double frac);

/* ---- sampling from the teacher ---------------------------------------------------------- */

#define KD_GEN_POOL_BYTES ((int64_t)1 << 30)   /* most bytes of KV caches + distributions sampled together */
#define KD_GEN_PANEL_BYTES ((int64_t)4 << 30)   /* largest teacher (F32 bytes) whose weights get panels */
#define KD_GEN_SEQS 64   /* sequences sampled together (when the cache allows): each decode step reads
                            the weights once for all of them (16 left the products mostly packing weights) */

static int sample_row(const float *logits, int64_t V, double temp, kd_rng *r) {
    if (temp <= 0) {
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
        return (int)best;
    }
    float m = logits[0];
    for (int64_t v = 1; v < V; v++) m = logits[v] > m ? logits[v] : m;
    double sum = 0;
    for (int64_t v = 0; v < V; v++) sum += exp((logits[v] - m) / temp);
    double u = kd_rng_uniform(r) * sum, acc = 0;
    for (int64_t v = 0; v < V; v++) {
        acc += exp((logits[v] - m) / temp);
        if (acc >= u) return (int)v;
    }
    return (int)(V - 1);
}

/* The sequences sampled together (--generate): pool i holds the in-pass
 * ordinals [i·n_seq, (i+1)·n_seq), whatever --batch and wherever a resumed run
 * starts, so that the float sums (whose order may depend on the number of rows)
 * and thus the dump are the same in every run. */
typedef struct gen_pool {
    kd_infer *e;          /* n_seq KV caches */
    int64_t lo, n;        /* ordinals lo..lo+n−1 of the pass are in the pool */
    int64_t scan, scan_ord;   /* the next index to look at, and the ordinal it gets when in the pass */
    int64_t *idx;         /* [n_seq] their indices */
    int32_t *seqs;        /* [n_seq, T+1] tokens */
    int32_t *ids;         /* [n_seq, T, k] top-k ids (k > 0) */
    float *vals;          /* [n_seq, T, k] log-probs, or [n_seq, T, V] logits (k = 0) */
    float *logits;        /* [n_seq, V] one step */
    int32_t *cur;         /* [n_seq] */
    kd_rng *rngs;         /* [n_seq] */
    double *cum;          /* [n_seq, V] sampled classes' scratch */
} gen_pool;

/* Sample the pool's n sequences with the engine, all advancing one token per
 * step (one decode step per position: linear in T), keeping the distribution
 * of every position: the engine's logits, the training forward's up to float
 * summation order (tests/test_infer.c: ~1e-6 relative, far below float16's
 * 2^-11). Sequence i draws from its own stream (seed, index). */
static int generate(gen_pool *p, const kd_teacher_dump_opts *o, int32_t bos, int64_t k, kd_err *err) {
    kd_infer *e = p->e;
    const int64_t T = o->seq_len, T1 = T + 1, V = e->V, n = p->n, nv = k ? k : V;
    for (int64_t i = 0; i < n; i++) {
        kd_rng_seed(&p->rngs[i], o->seed * 2654435761u + (uint64_t)p->idx[i]);
        p->seqs[i * T1] = bos;
    }
    kd_infer_reset(e);
    for (int64_t t = 1; t < T1; t++) {
        /* the tokens at position t−1 in, the distributions of position t−1 and token t out */
        for (int64_t i = 0; i < n; i++) p->cur[i] = p->seqs[i * T1 + t - 1];
        if (kd_infer_eval_seqs(e, p->cur, n, p->logits, err)) return kd_err_prefix(err, "sampling");
#pragma omp parallel for schedule(static) if (n * V >= 16384)
        for (int64_t i = 0; i < n; i++) {
            const float *lg = p->logits + i * V;
            float *dst = p->vals + (i * T + t - 1) * nv;
            if (o->sample > 0)
                kd_sample_classes(lg, V, k, kd_sample_stream(o->seed, p->idx[i], t - 1), p->cum + i * V,
                                  p->ids + (i * T + t - 1) * k, dst);
            else if (k) kd_topk_logprobs(lg, V, k, p->ids + (i * T + t - 1) * k, dst);
            else memcpy(dst, lg, (size_t)V * sizeof *dst);
            p->seqs[i * T1 + t] = sample_row(lg, V, o->gen_temperature, &p->rngs[i]);
        }
    }
    return 0;
}

/* Make the pool hold in-pass ordinal ord (sampling the pool it belongs to). */
static int pool_fill(gen_pool *p, int64_t ord, int pass, int has_val, int64_t n_total, const kd_teacher_dump_opts *o,
                     int32_t bos, int64_t k, kd_err *err) {
    if (ord >= p->lo && ord < p->lo + p->n) return 0;
    const int64_t lo = ord / p->e->n_seq * p->e->n_seq;
    if (lo < p->scan_ord) p->scan = p->scan_ord = 0;   /* (not reached: ordinals only grow) */
    for (; p->scan < n_total && p->scan_ord < lo; p->scan++)
        p->scan_ord += (has_val && is_val((uint64_t)p->scan, o->val_fraction)) == pass;
    p->lo = lo;
    p->n = 0;
    for (; p->scan < n_total && p->n < p->e->n_seq; p->scan++)
        if ((has_val && is_val((uint64_t)p->scan, o->val_fraction)) == pass) {
            p->idx[p->n++] = p->scan;
            p->scan_ord++;
        }
    return generate(p, o, bos, k, err);
}

/* ---- the dump ---------------------------------------------------------------------------------- */

static int is_val(uint64_t i, double frac) {
    uint64_t z = i + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0) < frac;
}

/* The last component of a path, without trailing slashes ("a/teacher/" → "teacher"). */
static void teacher_name(const char *path, char *out, size_t n) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/') start--;
    if (start == len && len > 0) start = 0;   /* "/" */
    snprintf(out, n, "%.*s", (int)(len - start), path + start);
}

/* PATH.partial exists and is not empty (an empty one is what a kill right after
 * its creation leaves: there is nothing in it to resume). */
static int partial_exists(const char *path) {
    char partial[4200];
    struct stat st;
    snprintf(partial, sizeof partial, "%s.partial", path);
    return stat(partial, &st) == 0 && (st.st_size > 0 || !S_ISREG(st.st_mode));
}

/* Create PATH.partial, or continue an existing one after checking that it was
 * started with the same shape (k, seq_len, vocabulary, dtype, teacher). */
static kd_dump_writer *open_writer(const char *path, const kd_dump_meta *meta, const kd_dump_tokenizer *dt,
                                   kd_dump_writer **resumed, kd_err *err) {
    *resumed = NULL;
    if (!partial_exists(path)) return kd_dump_writer_create(path, meta, dt, err);
    kd_dump_writer *w = kd_dump_writer_resume(path, err);
    if (!w) return NULL;
    *resumed = w;   /* on a mismatch the caller closes it and keeps the file */
    const kd_dump_meta *h = kd_dump_writer_meta(w);
    char have[300] = "", want[300] = "";
    if (h->sampled != meta->sampled) {
        snprintf(have, sizeof have, "%s", h->sampled ? "sampled classes" : "no sampled classes");
        snprintf(want, sizeof want, "%s", meta->sampled ? "sampled classes (--sample)" : "no sampled classes");
    } else if (h->tokens_only != meta->tokens_only) {
        snprintf(have, sizeof have, "%s", h->tokens_only ? "tokens only" : "a teacher distribution");
        snprintf(want, sizeof want, "%s", meta->tokens_only ? "tokens only (--tokens-only)" : "a teacher distribution");
    } else if (h->k != meta->k) {
        snprintf(have, sizeof have, "k %d", h->k);
        snprintf(want, sizeof want, "k %d", meta->k);
    } else if (h->seq_len != meta->seq_len) {
        snprintf(have, sizeof have, "seq_len %d", h->seq_len);
        snprintf(want, sizeof want, "seq_len %d", meta->seq_len);
    } else if (h->vocab_size != meta->vocab_size) {
        snprintf(have, sizeof have, "vocab_size %lld", (long long)h->vocab_size);
        snprintf(want, sizeof want, "vocab_size %lld", (long long)meta->vocab_size);
    } else if (h->value_dtype != meta->value_dtype) {
        snprintf(have, sizeof have, "dtype %s", h->value_dtype == KD_DUMP_F16 ? "f16" : "f32");
        snprintf(want, sizeof want, "dtype %s", meta->value_dtype == KD_DUMP_F16 ? "f16" : "f32");
    } else if (h->packed != meta->packed || (meta->packed && ((meta->pack_step && h->pack_step != meta->pack_step) ||
                                                              (meta->pack_knee && h->pack_knee != meta->pack_knee)))) {
        snprintf(have, sizeof have, "layout %s (step %g, knee %g)", h->packed ? "packed" : "plain", h->pack_step, h->pack_knee);
        snprintf(want, sizeof want, "layout %s (step %g, knee %g)", meta->packed ? "packed" : "plain", meta->pack_step,
                 meta->pack_knee);
    } else if (strcmp(h->teacher, meta->teacher) != 0) {
        snprintf(have, sizeof have, "teacher '%s'", h->teacher);
        snprintf(want, sizeof want, "teacher '%s'", meta->teacher);
    } else if (!h->has_loss_mask) {
        snprintf(have, sizeof have, "no loss_mask");
        snprintf(want, sizeof want, "a loss_mask");
    }
    if (have[0]) {
        kd_errf(err, "%s.partial: cannot resume: the interrupted dump has %s, this run asks for %s; rerun it with "
                "the options it was started with, or delete %s.partial to start over", path, have, want, path);
        return NULL;
    }
    *resumed = NULL;
    return w;
}

/* Close a writer and leave PATH.partial in place for a later resume. */
static void writer_keep(kd_dump_writer *w) { kd_dump_writer_release(w, NULL); }

/* A dump is an HDF5 file, written to OUT.partial and renamed to OUT: OUT must be
 * absent or a regular file (a symbolic link to one is followed: the target is
 * replaced, the link stays). A device or a FIFO cannot hold it (HDF5 seeks) and
 * is never replaced. */
static int resolve_out(const char *opt, const char *path, char *real, size_t n, kd_err *err) {
    int kind = kd_out_kind(path, real, n, err);
    if (kind < 0) return kd_err_prefix(err, "%s", opt);
    if (kind == KD_OUT_STREAM)
        return kd_errf(err, "%s %s: is %s; a dump is an HDF5 file, which needs a regular file it can seek in (and "
                       "%s is never replaced): give a file path", opt, path, kd_path_what(path), path);
    return 0;
}

static void report(const kd_teacher_dump_opts *o, const char *resumed, int64_t done, int64_t total, int64_t computed,
                   int64_t T, double t0, int last) {
    if (!o->progress) return;
    kd_teacher_dump_progress p = {resumed, done, total, computed, T, kd_now_s() - t0, last};
    o->progress(o->progress_ctx, &p);
}

static int is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    int ok = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
    if (f) fclose(f);
    return ok;
}

static int dump_run(const kd_teacher_dump_opts *o, const char *out, kd_err *err);

int kd_teacher_dump(const kd_teacher_dump_opts *o, const char *out, kd_err *err) {
    char real_out[4096], real_val[4096];
    if (resolve_out("--out", out, real_out, sizeof real_out, err)) return -1;
    kd_teacher_dump_opts o2 = *o;
    if (o->val_out) {
        if (resolve_out("--val-out", o->val_out, real_val, sizeof real_val, err)) return -1;
        o2.val_out = real_val;
    }
    return dump_run(&o2, real_out, err);
}

static int dump_run(const kd_teacher_dump_opts *o, const char *out, kd_err *err) {
    const int only = o->tokens_only;
    if (only && o->generate > 0)
        return kd_errf(err, "--generate samples from a teacher, --tokens-only runs none: give text files (--text "
                       "FILE...) with --tokens-only");
    if (only && o->teacher)
        return kd_errf(err, "--tokens-only runs no teacher (%s): drop --teacher and give the tokenizer with "
                       "--tokenizer FILE", o->teacher);
    if (only && !o->tokenizer) return kd_errf(err, "--tokens-only needs the tokenizer: give --tokenizer FILE");
    if (!only && !o->teacher) return kd_errf(err, "give the teacher (--teacher MODEL), or --tokens-only");
    if (o->n_text > 0 && o->generate > 0)
        return kd_errf(err, "--text and --generate exclude each other: dump the teacher on text files or on "
                       "its own samples, not both");
    if (o->n_text <= 0 && o->generate <= 0) return kd_errf(err, "give text files (--text FILE...) or --generate N");
    if (o->seq_len < 1) return kd_errf(err, "--seq-len must be at least 1");
    if (o->topk < 0) return kd_errf(err, "--topk must be positive (or --full)");
    if (o->sample < 0 || o->sample > KD_DUMP_MAX_SAMPLES)
        return kd_errf(err, "--sample %lld: expected 1 to %d draws per position (counts are stored as uint8)",
                       (long long)o->sample, KD_DUMP_MAX_SAMPLES);
    if (o->sample > 0 && (only || o->packed))
        return kd_errf(err, "--sample does not apply to %s", only ? "--tokens-only" : "--compress (a packed top-k)");
    if (o->packed && (only || o->topk == 0))
        return kd_errf(err, "--compress packs a top-k: it does not apply to %s", only ? "--tokens-only" : "--full");
    if (o->topk > KD_DUMP_MAX_K)
        return kd_errf(err, "--topk %lld: a dump holds at most %d entries per position; use --full for the whole "
                       "distribution", (long long)o->topk, KD_DUMP_MAX_K);
    if (o->gen_temperature < 0 || isnan(o->gen_temperature))
        return kd_errf(err, "--temperature %g: must be ≥ 0 (0 = greedy)", o->gen_temperature);
    if (o->val_out && !strcmp(o->val_out, out)) return kd_errf(err, "--val-out and --out are both %s", out);
    if (o->val_out && o->val_fraction > 0 && partial_exists(out) != partial_exists(o->val_out)) {
        const char *has = partial_exists(out) ? out : o->val_out, *lacks = partial_exists(out) ? o->val_out : out;
        return kd_errf(err, "%s.partial exists but %s.partial does not: the interrupted dump was not made with "
                       "these --out/--val-out/--val-fraction; rerun it with its options, or delete %s.partial to "
                       "start over", has, lacks, has);
    }
    kd_model m;
    memset(&m, 0, sizeof m);
    if (!only && kd_model_load(&m, o->teacher, err)) return kd_err_prefix(err, "teacher");
    int status = -1, started = 0;
    kd_tokenizer *tok = NULL;
    kd_dump_writer *wt = NULL, *wv = NULL, *bad = NULL;   /* bad: a resumed writer whose shape differs */
    kd_tokens stream = {0};
    kd_graph g;
    gen_pool pool;   /* --generate */
    memset(&pool, 0, sizeof pool);
    int32_t *seqs = NULL, *inputs = NULL, *ids = NULL;
    uint8_t *mask = NULL;
    float *lp = NULL;
    double *cum = NULL;   /* --sample with --text: [threads, V] */
    kd_dump_tokenizer dt;
    memset(&dt, 0, sizeof dt);
    kd_graph_init(&g, 0, NULL);
    g.no_grad = 1;

    int64_t T = o->seq_len, T1 = T + 1, V = m.cfg.vocab_size;
    if (only) {
        /* no teacher: the tokenizer sets the vocabulary, nothing limits T */
    } else if (o->sample > V) {
        kd_errf(err, "--sample %lld exceeds the teacher's vocabulary (%s: %lld logits): a sampled dump has one slot "
                "per draw and at most V distinct ids", (long long)o->sample, o->teacher, (long long)V);
        goto done;
    } else if (!o->sample && o->topk > V) {
        kd_errf(err, "--topk %lld exceeds the teacher's vocabulary (%s: %lld logits); use --topk %lld or less, or "
                "--full", (long long)o->topk, o->teacher, (long long)V, (long long)V);
        goto done;
    }
    if (!only && T > m.cfg.max_position_embeddings) {
        kd_errf(err, "--seq-len %lld exceeds the teacher's context (%s: max_position_embeddings %lld)",
                (long long)T, o->teacher, (long long)m.cfg.max_position_embeddings);
        goto done;
    }
    char tpath[4200];
    const char *tp = o->tokenizer;
    if (!tp) {
        struct stat st;
        if (stat(o->teacher, &st) == 0 && !S_ISDIR(st.st_mode) && is_gguf(o->teacher)) {
            tp = o->teacher;   /* a GGUF teacher carries its tokenizer in its metadata */
        } else if (stat(o->teacher, &st) != 0 || !S_ISDIR(st.st_mode)) {
            kd_errf(err, "%s: a llama2.c .bin file holds no tokenizer: give --tokenizer FILE", o->teacher);
            goto done;
        }
        if (!tp) {   /* tokenizer.h5 (a byte-level BPE "gpt2" tokenizer) or tokenizer.bin */
            snprintf(tpath, sizeof tpath, "%s/tokenizer.h5", o->teacher);
            if (!kd_file_exists(tpath)) snprintf(tpath, sizeof tpath, "%s/tokenizer.bin", o->teacher);
        }
        if (!tp) tp = tpath;
        if (!kd_file_exists(tp)) {
            kd_errf(err, "%s: no tokenizer in the teacher's directory: give --tokenizer FILE", tp);
            goto done;
        }
    }
    if (!(tok = kd_tokenizer_open(tp, err))) {
        kd_err_prefix(err, "tokenizer");
        goto done;
    }
    if (only) V = kd_tokenizer_n_vocab(tok);
    if (kd_tokenizer_n_vocab(tok) > V) {
        kd_errf(err, "%s: the tokenizer has %d pieces, the teacher only %lld logits", tp, kd_tokenizer_n_vocab(tok),
                (long long)V);
        goto done;
    }
    if (kd_dump_tokenizer_from(tok, &dt, err)) goto done;

    int64_t k = only ? 0 : o->sample > 0 ? o->sample : o->topk;
    int64_t n_total;
    if (o->n_text) {
        if (text_stream(o, tok, &stream, err)) goto done;
        n_total = ((int64_t)stream.n + T1 - 1) / T1;
    } else {
        n_total = o->generate;
    }
    if (o->max_sequences > 0 && n_total > o->max_sequences) n_total = o->max_sequences;

    kd_dump_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.vocab_size = V;
    meta.k = (int32_t)k;
    meta.seq_len = (int32_t)T;
    meta.temperature = 1.0;
    if (!only) teacher_name(o->teacher, meta.teacher, sizeof meta.teacher);   /* tokens only: "" */
    meta.value_dtype = only ? KD_DUMP_F16 : o->dtype;   /* tokens only: unused, as a reader reports it */
    meta.has_loss_mask = 1;
    meta.tokens_only = only;
    meta.packed = o->packed;
    meta.pack_step = o->pack_step;
    meta.pack_knee = o->pack_knee;
    meta.sampled = !only && o->sample > 0;
    meta.n_samples = meta.sampled ? (int32_t)o->sample : 0;
    if (meta.sampled) meta.value_dtype = KD_DUMP_F32;   /* counts; what a reader of a sampled dump reports */
    if (!(wt = open_writer(out, &meta, &dt, &bad, err))) goto done;
    if (o->val_out && o->val_fraction > 0 && !(wv = open_writer(o->val_out, &meta, &dt, &bad, err))) goto done;
    started = 1;

    /* tokens only: by default as many sequences per append as fit 4M tokens (at most 1024) */
    int64_t B = o->batch > 0 ? o->batch : only ? ((int64_t)1 << 22) / T1 : 16;
    if (B < 1) B = 1;
    if (B > 1024) B = 1024;
    seqs = malloc((size_t)(B * T1) * sizeof *seqs);
    inputs = malloc((size_t)(B * T) * sizeof *inputs);
    mask = malloc((size_t)(B * T));
    int64_t vals_per_seq = k ? T * k : T * V;
    lp = only ? NULL : malloc((size_t)(B * vals_per_seq) * sizeof *lp);
    ids = k ? malloc((size_t)(B * T * k) * sizeof *ids) : NULL;
    if (o->sample > 0 && o->n_text && !(cum = malloc((size_t)omp_get_max_threads() * (size_t)V * sizeof *cum))) {
        kd_errf(err, "out of memory for the sampling scratch");
        goto done;
    }
    if (!seqs || !inputs || !mask || (!only && !lp) || (k && !ids)) {
        kd_errf(err, "out of memory for a batch of %lld sequences", (long long)B);
        goto done;
    }
    if (o->generate > 0) {
        /* per sequence sampled together: a KV cache of T positions (the last token is not fed
         * back) and its distributions; max(KD_GEN_SEQS, batch) sequences or as many as fit
         * KD_GEN_POOL_BYTES */
        const int64_t per_seq = (2 * m.cfg.num_hidden_layers * m.cfg.num_key_value_heads * m.cfg.head_dim +
                                 vals_per_seq / T * (k ? 2 : 1)) * T * (int64_t)sizeof(float);
        int64_t S = KD_GEN_POOL_BYTES / (per_seq > 0 ? per_seq : 1);
        const int64_t want = B > KD_GEN_SEQS ? B : KD_GEN_SEQS;
        S = S < 1 ? 1 : S > want ? want : S;
        if (S > n_total) S = n_total;
        kd_infer_opts io;
        kd_infer_opts_init(&io);
        io.n_ctx = T;
        io.n_seq = S;
        /* an interleaved copy of the weights for the steps of S rows (kd_panel.h): at S ≤ 64 an sgemm
         * spends most of its time packing the weights anew on every call */
        const kd_config *mc = &m.cfg;
        const int64_t HD = (int64_t)mc->num_attention_heads * mc->head_dim,
                      KVD = (int64_t)mc->num_key_value_heads * mc->head_dim, C = mc->hidden_size;
        const int64_t wbytes = 4 * (mc->num_hidden_layers * (2 * HD * C + 2 * KVD * C + 3 * mc->intermediate_size * C) +
                                    V * C);
        io.panels = S > 1 && S <= KD_PANEL_MAX_N && wbytes <= KD_GEN_PANEL_BYTES;
        if (!(pool.e = kd_infer_from_model(&m, &io, err))) {
            kd_err_prefix(err, "teacher engine");
            goto done;
        }
        pool.idx = malloc((size_t)S * sizeof *pool.idx);
        pool.seqs = malloc((size_t)(S * T1) * sizeof *pool.seqs);
        pool.ids = k ? malloc((size_t)(S * T * k) * sizeof *pool.ids) : NULL;
        pool.vals = malloc((size_t)(S * vals_per_seq) * sizeof *pool.vals);
        pool.logits = malloc((size_t)(S * V) * sizeof *pool.logits);
        pool.cur = malloc((size_t)S * sizeof *pool.cur);
        pool.rngs = malloc((size_t)S * sizeof *pool.rngs);
        pool.cum = o->sample > 0 ? malloc((size_t)(S * V) * sizeof *pool.cum) : NULL;
        if (o->sample > 0 && !pool.cum) {
            kd_errf(err, "out of memory for %lld sampled sequences", (long long)S);
            goto done;
        }
        if (!pool.idx || !pool.seqs || (k && !pool.ids) || !pool.vals || !pool.logits || !pool.cur || !pool.rngs) {
            kd_errf(err, "out of memory for %lld sampled sequences", (long long)S);
            goto done;
        }
    }
    int32_t pad = kd_tokenizer_eos(tok) >= 0 ? kd_tokenizer_eos(tok) : 0;
    int32_t bos = kd_tokenizer_bos(tok) >= 0 ? kd_tokenizer_bos(tok) : 1;
    /* Testing knob (tests/test_teacher_dump.c): KD_DUMP_STOP_AFTER=N makes the
     * process exit with status 75 right after its N-th append, without closing
     * the writers — what a kill between two batches leaves behind. */
    const char *stop_env = getenv("KD_DUMP_STOP_AFTER");
    long stop_after = stop_env && *stop_env ? strtol(stop_env, NULL, 10) : 0, appends = 0;
    double t0 = kd_now_s();
    int64_t written = 0, skipped = 0;
    for (int pass = 0; pass < (wv ? 2 : 1); pass++)   /* what a resume's verification dropped */
        if (kd_dump_writer_note(pass ? wv : wt)[0]) kd_warn("dump: %s", kd_dump_writer_note(pass ? wv : wt));
    for (int pass = 0; pass < (wv ? 2 : 1); pass++)
        if (kd_dump_writer_n_seq(pass ? wv : wt) > 0)
            report(o, pass ? o->val_out : out, kd_dump_writer_n_seq(pass ? wv : wt), n_total, 0, T, t0, 0);
    /* pass 0 fills the training file, pass 1 the validation file; sequence i
     * belongs to the pass is_val(i) names, and each file is in index order */
    for (int pass = 0; pass < (wv ? 2 : 1); pass++) {
        kd_dump_writer *w = pass ? wv : wt;
        int64_t already = kd_dump_writer_n_seq(w), seen = 0;
        pool.lo = pool.n = pool.scan = pool.scan_ord = 0;
        for (int64_t first = 0; first < n_total;) {
            int64_t idx[1024], ord[1024], n = 0;   /* indices and their ordinals in the pass */
            while (first < n_total && n < B) {
                int64_t i = first++;
                if ((wv && is_val((uint64_t)i, o->val_fraction)) != pass) continue;
                if (seen++ < already) {
                    skipped++;
                    continue;
                }
                ord[n] = seen - 1;
                idx[n++] = i;
            }
            if (!n) break;
            if (o->n_text) {
                for (int64_t i = 0; i < n; i++)
                    for (int64_t t = 0; t < T1; t++) {
                        int64_t p = idx[i] * T1 + t;
                        seqs[i * T1 + t] = p < (int64_t)stream.n ? stream.ids[p] : pad;
                        if (t < T) mask[i * T + t] = p + 1 < (int64_t)stream.n;
                    }
            } else {
                /* sampled ahead, with their distributions, n_seq at a time */
                for (int64_t i = 0; i < n; i++) {
                    if (pool_fill(&pool, ord[i], pass, wv != NULL, n_total, o, bos, k, err)) goto done;
                    const int64_t r = ord[i] - pool.lo;
                    if (pool.idx[r] != idx[i]) {
                        kd_errf(err, "internal: sequence %lld sampled for index %lld", (long long)pool.idx[r],
                                (long long)idx[i]);
                        goto done;
                    }
                    memcpy(seqs + i * T1, pool.seqs + r * T1, (size_t)T1 * sizeof *seqs);
                    memcpy(lp + i * vals_per_seq, pool.vals + r * vals_per_seq, (size_t)vals_per_seq * sizeof *lp);
                    if (k) memcpy(ids + i * T * k, pool.ids + r * T * k, (size_t)(T * k) * sizeof *ids);
                }
                memset(mask, 1, (size_t)(n * T));
            }
            if (o->n_text && !only) {   /* the teacher's distribution at every position */
                for (int64_t i = 0; i < n; i++) memcpy(inputs + i * T, seqs + i * T1, (size_t)T * sizeof *inputs);
                /* one sequence per forward: a sequence's values then do not depend on the
                 * batch it lands in (on AVX2 OpenBLAS kernels the rows of a product are not
                 * independent of its height), so a resume that starts mid-batch writes the
                 * same bits as an uninterrupted run */
                for (int64_t i = 0; i < n; i++) {
                    kd_graph_reset(&g);
                    kd_tensor *lg = kd_model_logits(&g, &m, inputs + i * T, 1, T);
                    if (o->sample > 0) {
                        const int64_t si = idx[i];
#pragma omp parallel for
                        for (int64_t r = 0; r < T; r++)
                            kd_sample_classes(lg->data + r * V, V, k, kd_sample_stream(o->seed, si, r),
                                              cum + (size_t)omp_get_thread_num() * (size_t)V, ids + (i * T + r) * k,
                                              lp + (i * T + r) * k);
                    } else if (k) {
#pragma omp parallel for
                        for (int64_t r = 0; r < T; r++)
                            kd_topk_logprobs(lg->data + r * V, V, k, ids + (i * T + r) * k, lp + (i * T + r) * k);
                    } else {
                        memcpy(lp + i * T * V, lg->data, (size_t)(T * V) * sizeof *lp);
                    }
                }
                kd_graph_reset(&g);
            }
            if (kd_dump_writer_append(w, n, seqs, mask, k ? ids : NULL, lp, err)) goto done;
            written += n;
            report(o, NULL, written + skipped, n_total, written, T, t0, 0);
            if (stop_after > 0 && ++appends == stop_after) {
                kd_warn("KD_DUMP_STOP_AFTER=%ld: exiting after %ld appends, as if killed", stop_after, appends);
                _exit(75);
            }
        }
    }
    report(o, NULL, written + skipped, n_total, written, T, t0, 1);
    int rc1 = kd_dump_writer_close(wt, err);
    wt = NULL;
    if (rc1) goto done;
    if (wv) {
        int rc2 = kd_dump_writer_close(wv, err);
        wv = NULL;
        if (rc2) goto done;
    }
    status = 0;
done:
    if (bad) writer_keep(bad);   /* an interrupted dump that does not match: never deleted */
    if (wt || wv) {
        /* an error: keep the partial files when they hold sequences, so that a
         * rerun resumes; otherwise remove them */
        int64_t held = (wt ? kd_dump_writer_n_seq(wt) : 0) + (wv ? kd_dump_writer_n_seq(wv) : 0);
        if (held > 0) {
            if (wt) writer_keep(wt);
            if (wv) writer_keep(wv);
            size_t l = err ? strlen(err->msg) : 0;
            if (started && err)
                snprintf(err->msg + l, sizeof err->msg - l,
                         " (the %lld sequences written so far stay in %s.partial%s%s%s; the same command resumes)",
                         (long long)held, out, wv ? " and " : "", wv ? o->val_out : "", wv ? ".partial" : "");
        } else {
            if (wt) kd_dump_writer_abort(wt);
            if (wv) kd_dump_writer_abort(wv);
        }
    }
    free(seqs);
    free(inputs);
    free(mask);
    free(lp);
    free(ids);
    kd_tokens_free(&stream);
    kd_dump_tokenizer_free(&dt);
    kd_tokenizer_free(tok);
    kd_graph_free(&g);
    kd_infer_close(pool.e);
    free(pool.idx);
    free(pool.seqs);
    free(pool.ids);
    free(pool.vals);
    free(pool.logits);
    free(pool.cur);
    free(pool.rngs);
    free(pool.cum);
    free(cum);
    kd_model_free(&m);
    return status;
}
