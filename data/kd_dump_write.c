/*
 * kd_dump_write.c — the teacher-dump writer (see kd_dump.h): creates the
 * schema of docs/dump-format.md in PATH.partial, appends sequences to its
 * resizable datasets (checked first, as the validator would), flushes and
 * records n_seq after every append so an interrupted run can resume, and
 * renames the file to PATH at close. A tokens-only dump (meta.tokens_only,
 * attribute distribution = "none") gets no topk/logits datasets.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kd_fp16.h"
#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"
#include "data/kd_dump_impl.h"

#define CHUNK_MAX (4u << 20)    /* largest chunk written, bytes */
#define WRITE_BLOCK (8u << 20)  /* raw bytes converted per H5Dwrite */

struct kd_dump_writer {
    kd_dump *d;                 /* the datasets, open read-write on PATH.partial */
    char path[4096], partial[4200];
    uint32_t *stamp, mark;      /* duplicate-id detection */
};

/* A resizable dataset [0, tail...] chunked one sequence (or a block of its positions) per chunk. */
static int create_ds(hid_t file, const char *path, const char *name, hid_t type, int rank, const int64_t *tail,
                     kd_err *err) {
    hsize_t dims[3] = {0}, maxd[3] = {H5S_UNLIMITED}, chunk[3] = {1};
    size_t es = H5Tget_size(type);
    for (int i = 1; i < rank; i++) dims[i] = maxd[i] = chunk[i] = (hsize_t)tail[i - 1];
    if (rank == 3) {
        hsize_t rows = CHUNK_MAX / (chunk[2] * es);
        chunk[1] = rows < 1 ? 1 : rows < chunk[1] ? rows : chunk[1];
    }
    hid_t sp = H5Screate_simple(rank, dims, maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    hid_t ds = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sclose(sp);
    H5Pclose(dcpl);
    if (ds < 0) return kdd_h5_fail(err, "%s: cannot create dataset '%s'", path, name);
    H5Dclose(ds);
    return 0;
}

static int write_1d(hid_t g, const char *path, const char *name, hid_t ftype, hid_t mtype, int64_t n, const void *data,
                    kd_err *err) {
    hsize_t dim = (hsize_t)n;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t ds = H5Dcreate2(g, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : n > 0 ? H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    return rc < 0 ? kdd_h5_fail(err, "%s: cannot write dataset 'tokenizer/%s'", path, name) : 0;
}

int kdd_write_tokenizer(hid_t file, const char *path, const kd_dump_tokenizer *t, kd_err *err) {
    hid_t g = H5Gcreate2(file, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return kdd_h5_fail(err, "%s: cannot create group 'tokenizer'", path);
    int rc = kdd_attr_write_str(g, "model", t->model) ||
             kdd_attr_write_i64(g, "bos_id", t->bos_id) || kdd_attr_write_i64(g, "eos_id", t->eos_id) ||
             kdd_attr_write_i64(g, "unk_id", t->unk_id) || kdd_attr_write_i64(g, "pad_id", t->pad_id) ||
             kdd_attr_write_i64(g, "add_bos", t->add_bos) || kdd_attr_write_i64(g, "add_eos", t->add_eos) ||
             kdd_attr_write_i64(g, "add_space_prefix", t->add_space_prefix) ||
             (t->pre[0] && kdd_attr_write_str(g, "pre", t->pre))
                 ? kdd_h5_fail(err, "%s: cannot write the attributes of group 'tokenizer'", path)
                 : 0;
    if (!rc)
        rc = write_1d(g, path, "piece_bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, t->piece_offsets[t->n], t->piece_bytes, err) ||
             write_1d(g, path, "piece_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, t->n + 1, t->piece_offsets, err) ||
             (t->scores && write_1d(g, path, "scores", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->n, t->scores, err)) ||
             (t->types && write_1d(g, path, "types", H5T_STD_I32LE, H5T_NATIVE_INT32, t->n, t->types, err)) ||
             (t->merge_offsets &&
              (write_1d(g, path, "merge_bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, t->merge_offsets[t->n_merges],
                        t->merge_bytes, err) ||
               write_1d(g, path, "merge_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, t->n_merges + 1, t->merge_offsets,
                        err)));
    H5Gclose(g);
    return rc ? -1 : 0;
}

static kd_dump_writer *writer_new(const char *path, kd_err *err) {
    kd_dump_writer *w = calloc(1, sizeof *w);
    if (!w) kd_errf(err, "%s: out of memory", path);
    else if (strlen(path) >= sizeof w->path) {
        kd_errf(err, "%s: path too long", path);
        free(w);
        return NULL;
    } else {
        snprintf(w->path, sizeof w->path, "%s", path);
        snprintf(w->partial, sizeof w->partial, "%s.partial", path);
    }
    return w;
}

static int check_meta(const char *path, const kd_dump_meta *m, const kd_dump_tokenizer *tok, kd_err *err) {
    if (m->vocab_size < 1 || m->vocab_size > KD_DUMP_MAX_VOCAB)
        return kd_errf(err, "%s: vocab_size %" PRId64 ", expected [1, %d]", path, m->vocab_size, KD_DUMP_MAX_VOCAB);
    if (m->k < 0 || m->k > KD_DUMP_MAX_K || m->k > m->vocab_size)
        return kd_errf(err, "%s: k %d, expected [0, min(vocab_size, %d)]", path, m->k, KD_DUMP_MAX_K);
    if (m->tokens_only && m->k != 0)
        return kd_errf(err, "%s: k %d for a dump of tokens only (tokens_only, distribution \"none\"), expected 0", path,
                       m->k);
    if (m->seq_len < 1 || m->seq_len > KD_DUMP_MAX_SEQ_LEN)
        return kd_errf(err, "%s: seq_len %d, expected [1, %d]", path, m->seq_len, KD_DUMP_MAX_SEQ_LEN);
    if (m->temperature != 1.0)
        return kd_errf(err, "%s: temperature %g, expected 1 (version 1 stores temperature-1 distributions)", path,
                       m->temperature);
    if (!m->tokens_only && m->value_dtype != KD_DUMP_F16 && m->value_dtype != KD_DUMP_F32)
        return kd_errf(err, "%s: value_dtype %d, expected KD_DUMP_F16 or KD_DUMP_F32", path, (int)m->value_dtype);
    if (m->packed && (m->k < 1 || m->tokens_only))
        return kd_errf(err, "%s: the packed layout (" KD_DUMP_LAYOUT_PACKED ") stores a top-k: k %d%s, expected k ≥ 1",
                       path, m->k, m->tokens_only ? " (tokens only)" : "");
    if (tok && (tok->n < 0 || tok->n > m->vocab_size || !tok->piece_offsets || tok->piece_offsets[0] != 0 ||
                (tok->n_merges && !tok->merge_offsets)))
        return kd_errf(err, "%s: tokenizer with %d pieces for vocab_size %" PRId64 ", expected 0..vocab_size pieces "
                       "and offsets from 0", path, tok->n, m->vocab_size);
    return 0;
}

static int finish_open(kd_dump_writer *w, kd_err *err) {
    w->d = kdd_open_locked(w->partial, 1, 1, err);
    if (!w->d) return -1;
    w->stamp = w->d->meta.k ? calloc((size_t)w->d->meta.vocab_size, 4) : NULL;
    if (w->d->meta.k && !w->stamp) return kd_errf(err, "%s: out of memory", w->partial);
    return 0;
}

kd_dump_writer *kd_dump_writer_create(const char *path, const kd_dump_meta *m, const kd_dump_tokenizer *tok,
                                      kd_err *err) {
    kd_dump_meta mm = *m;
    if (mm.packed) {
        if (mm.pack_step == 0) mm.pack_step = KD_PACK_STEP_DEFAULT;
        if (mm.pack_knee == 0) mm.pack_knee = KD_PACK_KNEE_DEFAULT;
    }
    m = &mm;
    if (check_meta(path, m, tok, err)) return NULL;
    kd_dump_writer *w = writer_new(path, err);
    if (!w) return NULL;
    kdd_guard g;
    kdd_enter(&g);
    int rc = -1;
    hid_t f = H5Fcreate(w->partial, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        kdd_h5_fail(err, "%s: cannot create", w->partial);
        goto out;
    }
    int64_t T = m->seq_len, t1[1] = {T + 1}, t0[1] = {T}, t3[2] = {T, m->k ? m->k : m->vocab_size};
    hid_t vt = m->value_dtype == KD_DUMP_F16 ? kdd_f16() : H5T_IEEE_F32LE;
    if (kdd_attr_write_str(f, "format", KD_DUMP_FORMAT) || kdd_attr_write_i64(f, "version", KD_DUMP_VERSION) ||
        kdd_attr_write_i64(f, "vocab_size", m->vocab_size) || kdd_attr_write_i64(f, "k", m->k) ||
        kdd_attr_write_i64(f, "seq_len", m->seq_len) || kdd_attr_write_i64(f, "n_seq", 0) ||
        kdd_attr_write_str(f, "teacher", m->teacher) || kdd_attr_write_f64(f, "temperature", m->temperature) ||
        kdd_attr_write_str(f, "distribution", m->tokens_only ? "none" : m->k ? "topk" : "logits")) {
        kdd_h5_fail(err, "%s: cannot write the root attributes", w->partial);
        goto out;
    }
    if (create_ds(f, w->partial, "tokens", H5T_STD_I32LE, 2, t1, err) ||
        (m->has_loss_mask && create_ds(f, w->partial, "loss_mask", H5T_STD_U8LE, 2, t0, err)) ||
        (m->packed && kdd_pack_create(f, w->partial, m, err)) ||
        (m->k && !m->packed &&
         create_ds(f, w->partial, "topk_ids", m->vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_I32LE, 3, t3, err)) ||
        (!m->tokens_only && !m->packed && create_ds(f, w->partial, m->k ? "topk_logprobs" : "logits", vt, 3, t3, err)) ||
        (tok && kdd_write_tokenizer(f, w->partial, tok, err)))
        goto out;
    if (H5Fclose(f) < 0) {
        f = -1;
        kdd_h5_fail(err, "%s: cannot close", w->partial);
        goto out;
    }
    f = -1;
    rc = finish_open(w, err);
out:
    if (f >= 0) H5Fclose(f);
    kdd_leave(&g);
    if (rc) {
        kd_dump_writer_abort(w);
        return NULL;
    }
    return w;
}

/* Resize every dataset to n sequences, record n_seq and flush. */
static int set_n_seq(kd_dump_writer *w, int64_t n, kd_err *err) {
    kd_dump *d = w->d;
    for (int i = 0; i < D_COUNT; i++) {
        if (d->ds[i] < 0) continue;
        hsize_t dims[3];
        hid_t sp = H5Dget_space(d->ds[i]);
        H5Sget_simple_extent_dims(sp, dims, NULL);
        H5Sclose(sp);
        dims[0] = (hsize_t)n;
        if (H5Dset_extent(d->ds[i], dims) < 0)
            return kdd_h5_fail(err, "%s: dataset '%s': cannot resize to %" PRId64 " sequences", w->partial,
                               kdd_dname(d, i), n);
        d->dims0[i] = n;
    }
    if (d->pack && kdd_pack_set_n_seq(d, n, err)) return -1;
    d->meta.n_seq = n;
    if (kdd_attr_write_i64(d->file, "n_seq", n) || H5Fflush(d->file, H5F_SCOPE_LOCAL) < 0)
        return kdd_h5_fail(err, "%s: cannot flush", w->partial);
    return 0;
}

kd_dump_writer *kd_dump_writer_resume(const char *path, kd_err *err) {
    kd_dump_writer *w = writer_new(path, err);
    if (!w) return NULL;
    int renamed = 0;
    if (access(w->partial, F_OK) != 0) {
        if (access(path, F_OK) != 0 || rename(path, w->partial) != 0) {
            kd_errf(err, "%s: cannot resume: neither it nor %s can be opened (%s)", path, w->partial, strerror(errno));
            free(w);
            return NULL;
        }
        renamed = 1;
    }
    kdd_guard g;
    kdd_enter(&g);
    int rc = finish_open(w, err) || set_n_seq(w, w->d->meta.n_seq, err);
    kdd_leave(&g);
    if (!rc) return w;
    if (w->d) kd_dump_close(w->d);
    if (renamed) rename(w->partial, path);
    free(w->stamp);
    free(w);
    return NULL;
}

int64_t kd_dump_writer_n_seq(const kd_dump_writer *w) { return w->d->meta.n_seq; }
const kd_dump_meta *kd_dump_writer_meta(const kd_dump_writer *w) { return &w->d->meta; }

/* Check the data of an append as the validator would check the stored values. */
static int check_append(kd_dump_writer *w, int64_t n, const int32_t *tokens, const uint8_t *mask, const int32_t *ids,
                        const float *val, kd_err *err) {
    const kd_dump_meta *m = &w->d->meta;
    int64_t T = m->seq_len, k = m->k, V = m->vocab_size, slot;
    char what[160];
    for (int64_t i = 0; i < n * (T + 1); i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return kd_errf(err, "%s: append: dataset 'tokens': sequence %" PRId64 " of the append, token %" PRId64
                           ": id %d outside [0, %" PRId64 ")", w->partial, i / (T + 1), i % (T + 1), tokens[i], V);
    for (int64_t i = 0; mask && i < n * T; i++)
        if (mask[i] > 1)
            return kd_errf(err, "%s: append: dataset 'loss_mask': sequence %" PRId64 ", position %" PRId64
                           ": value %d, expected 0 or 1", w->partial, i / T, i % T, mask[i]);
    for (int64_t p = 0; !m->tokens_only && p < n * T; p++) {
        int masked = mask && !mask[p], bad = 0;
        kdd_pos_stats st;
        if (k) {
            bad = kdd_check_topk(ids + p * k, val + p * k, (int)k, V, masked, 1.0 / 16777216, 0, w->stamp, &w->mark, &st,
                                 &slot, what, sizeof what);
        } else if (!masked) {
            bad = kdd_check_logits(val + p * V, V, &slot, what, sizeof what);
            for (int64_t j = 0; !bad && m->value_dtype == KD_DUMP_F16 && j < V; j++)
                if (isfinite(val[p * V + j]) && fabsf(val[p * V + j]) >= 65520.0f) {
                    bad = 2;
                    slot = j;
                    snprintf(what, sizeof what, "logit %g overflows float16", val[p * V + j]);
                }
        }
        if (bad)
            return kd_errf(err, "%s: append: dataset '%s': sequence %" PRId64 " of the append, position %" PRId64
                           ", slot %" PRId64 ": %s", w->partial, bad == 1 ? "topk_ids" : kdd_dname(w->d, D_VALUES),
                           p / T, p % T, slot, what);
    }
    return 0;
}

/* Write src ([ns, T, cols] int32 or float32) at sequence s0 of dataset i, narrowing to uint16/float16 if stored so. */
static int write_3d(kd_dump *d, int i, int64_t s0, int64_t ns, const void *src, int64_t cols, kd_err *err) {
    int64_t T = d->meta.seq_len, pb = (int64_t)WRITE_BLOCK / (cols * 2);
    if (pb < 1) pb = 1;
    if (pb > T) pb = T;
    int isf = i == D_VALUES;
    hid_t mt = isf ? (d->raw16[i] ? kdd_f16() : H5T_NATIVE_FLOAT) : (d->raw16[i] ? H5T_NATIVE_UINT16 : H5T_NATIVE_INT32);
    for (int64_t s = 0; s < ns; s++)
        for (int64_t p = 0; p < T; p += pb) {
            int64_t np = p + pb <= T ? pb : T - p;
            size_t n = (size_t)(np * cols), at = (size_t)((s * T + p) * cols);
            const void *mem = isf ? (const void *)((const float *)src + at) : (const void *)((const int32_t *)src + at);
            if (d->raw16[i]) {
                uint16_t *b = kdd_scratch(d, n * 2, err);
                if (!b) return -1;
                for (size_t j = 0; j < n; j++)
                    b[j] = isf ? kd_f32_to_fp16(((const float *)src)[at + j]) : (uint16_t)((const int32_t *)src)[at + j];
                mem = b;
            }
            if (kdd_io_block(d, i, 1, s0 + s, 1, p, np, cols, mt, (void *)mem, err)) return -1;
        }
    return 0;
}

int kd_dump_writer_append(kd_dump_writer *w, int64_t n, const int32_t *tokens, const uint8_t *loss_mask,
                          const int32_t *ids, const float *values, kd_err *err) {
    kd_dump *d = w->d;
    const kd_dump_meta *m = &d->meta;
    if (m->tokens_only && (ids || values))
        return kd_errf(err, "%s: append: the dump holds tokens only (distribution \"none\"): pass ids = values = NULL, "
                       "not teacher data", w->partial);
    if (n < 0 || (n > 0 && (!tokens || (!m->tokens_only && (!values || (m->k > 0) != (ids != NULL))))))
        return kd_errf(err, "%s: append: need tokens, %s for %" PRId64 " sequences", w->partial,
                       m->tokens_only ? "and nothing else" : m->k ? "topk ids and log-probs" : "logits (and no ids)", n);
    if (loss_mask && !m->has_loss_mask)
        return kd_errf(err, "%s: append: a loss_mask given but the dump was created without one", w->partial);
    if (check_append(w, n, tokens, loss_mask, ids, values, err)) return -1;
    if (n == 0) return 0;
    int64_t T = m->seq_len, old = m->n_seq;
    kdd_guard g;
    kdd_enter(&g);
    int rc = 0;
    for (int i = 0; i < D_COUNT && !rc; i++) {
        if (d->ds[i] < 0) continue;
        hsize_t dims[3] = {(hsize_t)(old + n), (hsize_t)(T + (i == D_TOKENS)), (hsize_t)(m->k ? m->k : m->vocab_size)};
        if (H5Dset_extent(d->ds[i], dims) < 0)
            rc = kdd_h5_fail(err, "%s: dataset '%s': cannot grow", w->partial, kdd_dname(d, i));
    }
    if (!rc) rc = kdd_io_block(d, D_TOKENS, 1, old, n, 0, -1, T + 1, H5T_NATIVE_INT32, (void *)tokens, err);
    if (!rc && m->has_loss_mask) {
        uint8_t *ones = loss_mask ? NULL : kdd_scratch(d, (size_t)(n * T), err);
        if (ones) memset(ones, 1, (size_t)(n * T));
        rc = (!loss_mask && !ones) ||
             kdd_io_block(d, D_MASK, 1, old, n, 0, -1, T, H5T_NATIVE_UINT8, loss_mask ? (void *)loss_mask : ones, err);
    }
    if (!rc && d->pack) rc = kdd_pack_append(d, old, n, loss_mask, ids, values, err);
    else {
        if (!rc && m->k) rc = write_3d(d, D_IDS, old, n, ids, m->k, err);
        if (!rc && !m->tokens_only) rc = write_3d(d, D_VALUES, old, n, values, m->k ? m->k : m->vocab_size, err);
    }
    if (!rc) rc = set_n_seq(w, old + n, err);
    else set_n_seq(w, old, NULL);   /* best effort: drop the half-written sequences */
    kdd_leave(&g);
    return rc ? -1 : 0;
}

int kd_dump_writer_close(kd_dump_writer *w, kd_err *err) {
    kdd_guard g;
    kdd_enter(&g);
    int rc = set_n_seq(w, w->d->meta.n_seq, err);
    hid_t f = w->d->file;
    w->d->file = -1;
    kdd_free(w->d);
    if (H5Fclose(f) < 0 && !rc) rc = kdd_h5_fail(err, "%s: cannot close", w->partial);
    kdd_leave(&g);
    if (!rc && rename(w->partial, w->path) != 0)
        rc = kd_errf(err, "%s: cannot rename to %s: %s", w->partial, w->path, strerror(errno));
    free(w->stamp);
    free(w);
    return rc ? -1 : 0;
}

void kd_dump_writer_abort(kd_dump_writer *w) {
    if (!w) return;
    if (w->d) kd_dump_close(w->d);
    unlink(w->partial);
    free(w->stamp);
    free(w);
}
