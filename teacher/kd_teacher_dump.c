/*
 * kd_teacher_dump.c — run a teacher over text or its own samples and write a
 * dump, or pack text into a tokens-only dump without a teacher (see
 * kd_teacher_dump.h).
 */
#define _GNU_SOURCE   /* memmem */
#include "teacher/kd_teacher_dump.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "autograd/kd_kernels.h"
#include "core/kd_file.h"
#include "core/kd_rng.h"
#include "data/kd_tokenizer.h"
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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

/* ---- sampling from the teacher ---------------------------------------------------------- */

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

/* Sample n sequences of T+1 tokens (indices first..first+n-1) into seqs. */
static int generate(kd_model *m, kd_graph *g, const kd_teacher_dump_opts *o, int32_t bos, int64_t first, int64_t n,
                    int32_t *seqs, kd_err *err) {
    int64_t T1 = o->seq_len + 1, V = m->cfg.vocab_size;
    kd_rng *rngs = malloc((size_t)n * sizeof *rngs);
    int32_t *buf = malloc((size_t)(n * T1) * sizeof *buf);
    if (!rngs || !buf) {
        free(rngs);
        free(buf);
        return kd_errf(err, "out of memory sampling %lld sequences", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        kd_rng_seed(&rngs[i], o->seed * 2654435761u + (uint64_t)(first + i));
        seqs[i * T1] = bos;
    }
    for (int64_t t = 1; t < T1; t++) {
        /* forward on the prefix [n, t]; sample position t−1 */
        for (int64_t i = 0; i < n; i++) memcpy(buf + i * t, seqs + i * T1, (size_t)t * sizeof *buf);
        kd_graph_reset(g);
        kd_tensor *lg = kd_model_logits(g, m, buf, n, t);
        for (int64_t i = 0; i < n; i++)
            seqs[i * T1 + t] = sample_row(lg->data + ((i * t) + t - 1) * V, V, o->gen_temperature, &rngs[i]);
    }
    kd_graph_reset(g);
    free(buf);
    free(rngs);
    return 0;
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

static int partial_exists(const char *path) {
    char partial[4200];
    snprintf(partial, sizeof partial, "%s.partial", path);
    return kd_file_exists(partial);
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
    if (h->tokens_only != meta->tokens_only) {
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

/* Close a writer and leave PATH.partial in place for a later resume
 * (kd_dump_writer_abort deletes it: the file is moved aside meanwhile). */
static void writer_keep(kd_dump_writer *w, const char *path) {
    char partial[4200], aside[4300];
    snprintf(partial, sizeof partial, "%s.partial", path);
    snprintf(aside, sizeof aside, "%s.partial.keep", path);
    int moved = rename(partial, aside) == 0;
    kd_dump_writer_abort(w);
    if (moved && rename(aside, partial) != 0) fprintf(stderr, "kd: cannot rename %s back to %s\n", aside, partial);
}

/* "1:02:03" or "2:03" */
static void fmt_duration(char *buf, size_t n, double s) {
    long t = s < 0 ? 0 : s > 3.6e8 ? 360000000L : (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* The progress bar on stderr: redrawn in place on a terminal; otherwise one
 * line at the first and last batch and at most every 10 s in between. */
typedef struct progress {
    double t0, last;
    int tty, lines;
} progress;

static void progress_show(progress *p, int64_t done, int64_t total, int64_t computed, int64_t T, int last) {
    double now = now_s(), el = now - p->t0;
    if (!p->tty && !last && p->lines && now - p->last < 10.0) return;
    p->last = now;
    p->lines++;
    double rate = el > 0 ? (double)computed / el : 0;   /* sequences/s computed in this run */
    char when[32], bar[32];
    if (last) fmt_duration(when, sizeof when, el);
    else fmt_duration(when, sizeof when, rate > 0 ? (double)(total - done) / rate : 0);
    int fill = total > 0 ? (int)(24 * done / total) : 24;
    for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '-';
    bar[24] = '\0';
    fprintf(stderr, "%sdump [%s] %lld/%lld sequences, %.0f tokens/s, %s %s%s", p->tty ? "\r" : "", bar,
            (long long)done, (long long)total, rate * (double)T, last ? "took" : "ETA", when,
            p->tty && !last ? "   " : "\n");
}

static int is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    int ok = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
    if (f) fclose(f);
    return ok;
}

int kd_teacher_dump(const kd_teacher_dump_opts *o, const char *out, kd_err *err) {
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
    const char *bad_path = NULL;
    kd_tokens stream = {0};
    kd_graph g;
    int32_t *seqs = NULL, *inputs = NULL, *ids = NULL;
    uint8_t *mask = NULL;
    float *lp = NULL;
    kd_dump_tokenizer dt;
    memset(&dt, 0, sizeof dt);
    kd_graph_init(&g, 0, NULL);
    g.no_grad = 1;

    int64_t T = o->seq_len, T1 = T + 1, V = m.cfg.vocab_size;
    if (only) {
        /* no teacher: the tokenizer sets the vocabulary, nothing limits T */
    } else if (o->topk > V) {
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

    int64_t k = only ? 0 : o->topk;
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
    bad_path = out;
    if (!(wt = open_writer(out, &meta, &dt, &bad, err))) goto done;
    bad_path = o->val_out;
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
    if (!seqs || !inputs || !mask || (!only && !lp) || (k && !ids)) {
        kd_errf(err, "out of memory for a batch of %lld sequences", (long long)B);
        goto done;
    }
    int32_t pad = kd_tokenizer_eos(tok) >= 0 ? kd_tokenizer_eos(tok) : 0;
    int32_t bos = kd_tokenizer_bos(tok) >= 0 ? kd_tokenizer_bos(tok) : 1;
    /* Testing knob (tests/test_teacher_dump.c): KD_DUMP_STOP_AFTER=N makes the
     * process exit with status 75 right after its N-th append, without closing
     * the writers — what a kill between two batches leaves behind. */
    const char *stop_env = getenv("KD_DUMP_STOP_AFTER");
    long stop_after = stop_env && *stop_env ? strtol(stop_env, NULL, 10) : 0, appends = 0;
    progress pg = {now_s(), 0, isatty(2), 0};
    int64_t written = 0, skipped = 0;
    if (!o->quiet)
        for (int pass = 0; pass < (wv ? 2 : 1); pass++)
            if (kd_dump_writer_n_seq(pass ? wv : wt) > 0)
                fprintf(stderr, "dump: resuming %s.partial after its %lld sequences\n", pass ? o->val_out : out,
                        (long long)kd_dump_writer_n_seq(pass ? wv : wt));
    /* pass 0 fills the training file, pass 1 the validation file; sequence i
     * belongs to the pass is_val(i) names, and each file is in index order */
    for (int pass = 0; pass < (wv ? 2 : 1); pass++) {
        kd_dump_writer *w = pass ? wv : wt;
        int64_t already = kd_dump_writer_n_seq(w), seen = 0;
        for (int64_t first = 0; first < n_total;) {
            int64_t idx[1024], n = 0;
            while (first < n_total && n < B) {
                int64_t i = first++;
                if ((wv && is_val((uint64_t)i, o->val_fraction)) != pass) continue;
                if (seen++ < already) {
                    skipped++;
                    continue;
                }
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
                /* each run of consecutive indices is sampled together */
                for (int64_t i = 0; i < n;) {
                    int64_t j = i;
                    while (j + 1 < n && idx[j + 1] == idx[j] + 1) j++;
                    if (generate(&m, &g, o, bos, idx[i], j - i + 1, seqs + i * T1, err)) goto done;
                    i = j + 1;
                }
                memset(mask, 1, (size_t)(n * T));
            }
            if (!only) {   /* the teacher's distribution at every position */
                for (int64_t i = 0; i < n; i++) memcpy(inputs + i * T, seqs + i * T1, (size_t)T * sizeof *inputs);
                kd_graph_reset(&g);
                kd_tensor *lg = kd_model_logits(&g, &m, inputs, n, T);
                if (k) {
#pragma omp parallel for
                    for (int64_t r = 0; r < n * T; r++)
                        kd_topk_logprobs(lg->data + r * V, V, k, ids + r * k, lp + r * k);
                } else {
                    memcpy(lp, lg->data, (size_t)(n * T * V) * sizeof *lp);
                }
                kd_graph_reset(&g);
            }
            if (kd_dump_writer_append(w, n, seqs, mask, k ? ids : NULL, lp, err)) goto done;
            written += n;
            if (!o->quiet) progress_show(&pg, written + skipped, n_total, written, T, 0);
            if (stop_after > 0 && ++appends == stop_after) {
                fprintf(stderr, "\nkd: KD_DUMP_STOP_AFTER=%ld: exiting after %ld appends, as if killed\n",
                        stop_after, appends);
                _exit(75);
            }
        }
    }
    if (!o->quiet) progress_show(&pg, written + skipped, n_total, written, T, 1);
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
    if (bad) writer_keep(bad, bad_path);   /* an interrupted dump that does not match: never deleted */
    if (wt || wv) {
        /* an error: keep the partial files when they hold sequences, so that a
         * rerun resumes; otherwise remove them */
        int64_t held = (wt ? kd_dump_writer_n_seq(wt) : 0) + (wv ? kd_dump_writer_n_seq(wv) : 0);
        if (held > 0) {
            if (wt) writer_keep(wt, out);
            if (wv) writer_keep(wv, o->val_out);
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
    kd_model_free(&m);
    return status;
}
