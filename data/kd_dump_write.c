/*
 * kd_dump_write.c — the teacher-dump writer (see kd_dump.h): creates the
 * schema of docs/dump-format.md in PATH.partial, appends sequences to its
 * resizable datasets (checked first, as the validator would), flushes and
 * records n_seq after every append so an interrupted run can resume, and
 * renames the file to PATH at close. A tokens-only dump (meta.tokens_only,
 * attribute distribution = "none") gets no topk/logits datasets.
 *
 * Safety: an flock on PATH.partial for the writer's lifetime; a checksum per
 * sequence (dataset seq_checksum) that a resume verifies before appending; the
 * bytes of each append reserved with fallocate before HDF5 writes them; after a
 * write error the writer rolls back to its last complete append and accepts
 * nothing more (kd_dump.h, "Safety").
 */
#define _GNU_SOURCE   /* fallocate */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "core/kd_fp16.h"
#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"
#include "data/kd_dump_impl.h"

#define CHUNK_MAX (4u << 20)    /* largest chunk written, bytes */
#define WRITE_BLOCK (8u << 20)  /* raw bytes converted per H5Dwrite */

#define SUMS "seq_checksum"
#define SUMS_CHUNK 1024

struct kd_dump_writer {
    kd_dump *d;                 /* the datasets, open read-write on PATH.partial */
    char path[4096], partial[4200];
    uint32_t *stamp, mark;      /* duplicate-id detection */
    int lock_fd;                /* PATH.partial, flock'ed: one writer per file */
    hid_t sums;                 /* dataset seq_checksum (−1 until opened) */
    int failed;                 /* a write failed: no more appends, PATH.partial is kept */
    char note[KD_ERR_MSG_MAX + 4400];   /* what a resume dropped */
};

/* ---- checksums ----------------------------------------------------------------------- */

static uint64_t mix32(uint64_t h, uint32_t x) {
    h = (h ^ x) * 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 32);
}

static uint64_t sum_u32(uint64_t h, const void *p, size_t n) {
    const uint32_t *x = p;
    for (size_t i = 0; i < n; i++) h = mix32(h, x[i]);
    return h;
}

uint64_t kd_dump_seq_checksum(int64_t T, int64_t k, int64_t cols, const int32_t *tokens, const uint8_t *mask,
                              const int32_t *ids, const float *values) {
    uint64_t part[4] = {sum_u32(1, tokens, (size_t)(T + 1)), 2, ids ? sum_u32(3, ids, (size_t)(T * k)) : 3,
                        values ? sum_u32(4, values, (size_t)(T * cols)) : 4};
    for (int64_t t = 0; t < T; t++) part[1] = mix32(part[1], mask ? mask[t] : 1u);
    uint64_t h = 0x6b642d64756d7031ULL;   /* "kd-dump1" */
    for (int i = 0; i < 4; i++) h = mix32(mix32(h, (uint32_t)part[i]), (uint32_t)(part[i] >> 32));
    return h;
}

/* A resizable dataset of the given shape, limits and chunking; deflate: with HDF5's shuffle +
 * deflate (level 1) filters, when this libhdf5 has deflate. */
static int create_chunked(hid_t file, const char *path, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const hsize_t *maxd, const hsize_t *chunk, int deflate, kd_err *err) {
    hid_t sp = H5Screate_simple(rank, dims, maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    if (deflate && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 1);
    }
    hid_t ds = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sclose(sp);
    H5Pclose(dcpl);
    if (ds < 0) return kdd_h5_fail(err, "%s: cannot create dataset '%s'", path, name);
    H5Dclose(ds);
    return 0;
}

int kdd_create_chunked(hid_t file, const char *path, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const hsize_t *maxd, const hsize_t *chunk, kd_err *err) {
    return create_chunked(file, path, name, type, rank, dims, maxd, chunk, 0, err);
}

/* A resizable dataset [0, tail...] chunked one sequence (or a block of its positions) per chunk;
 * deflate for the sampled datasets (their unused slots are zeros, which deflate removes;
 * docs/dump-format.md "Sampled dumps"). */
static int create_ds(hid_t file, const char *path, const char *name, hid_t type, int rank, const int64_t *tail,
                     int deflate, kd_err *err) {
    hsize_t dims[3] = {0}, maxd[3] = {H5S_UNLIMITED}, chunk[3] = {1};
    size_t es = H5Tget_size(type);
    for (int i = 1; i < rank; i++) dims[i] = maxd[i] = chunk[i] = (hsize_t)tail[i - 1];
    if (rank == 3) {
        hsize_t rows = CHUNK_MAX / (chunk[2] * es);
        chunk[1] = rows < 1 ? 1 : rows < chunk[1] ? rows : chunk[1];
    }
    return create_chunked(file, path, name, type, rank, dims, maxd, chunk, deflate, err);
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
        w->lock_fd = -1;
        w->sums = -1;
    }
    return w;
}

/* The exclusive lock on PATH.partial (created empty when missing with create). */
static int writer_lock(kd_dump_writer *w, int create, kd_err *err) {
    w->lock_fd = open(w->partial, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (w->lock_fd < 0) return kd_errf(err, "%s: cannot open: %s", w->partial, strerror(errno));
    struct stat st;
    if (fstat(w->lock_fd, &st) != 0 || !S_ISREG(st.st_mode))
        return kd_errf(err, "%s: is %s, expected a regular file", w->partial, kd_path_what(w->partial));
    if (flock(w->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return kd_errf(err, "%s: %s", w->partial,
                       errno == EWOULDBLOCK ? "another process is writing this dump (a kd teacher dump with the same "
                                              "--out?): wait for it to finish, or choose another --out"
                                            : strerror(errno));
    return 0;
}

/* Drop the blocks fallocate reserved past the end of the file (a shrinking truncate frees them). */
static void writer_unreserve(kd_dump_writer *w) {
    struct stat st;
    if (w->lock_fd >= 0 && fstat(w->lock_fd, &st) == 0 && st.st_size > 0 && ftruncate(w->lock_fd, st.st_size + 1) == 0)
        if (ftruncate(w->lock_fd, st.st_size) != 0) { /* the file keeps one zero byte more: HDF5 ignores it */ }
}

static void writer_free(kd_dump_writer *w) {
    if (w->lock_fd >= 0) close(w->lock_fd);   /* releases the lock */
    free(w->stamp);
    free(w);
}

/* Close the HDF5 objects (PATH.partial stays). With the chunk cache off, closing a dataset
 * writes nothing, and only the file's close flushes its metadata. After a failed write the
 * file is abandoned instead, exactly as a kill would leave it: HDF5 writes nothing more, so
 * the file stays as its last complete flush made it (what a resume verifies), rather than
 * receiving half of a metadata flush that may fail in turn (and, in libhdf5 1.10, leave
 * the library unable to close: a crash or an endless loop at exit). The abandoned handle
 * is dropped at the process's exit (H5dont_atexit, kd_dump.c); resume in a new process. */
static int writer_close_h5(kd_dump_writer *w, kd_err *err) {
    if (!w->d) return 0;
    if (w->sums >= 0) H5Dclose(w->sums);
    w->sums = -1;
    hid_t f = w->d->file;
    w->d->file = -1;
    kdd_free(w->d);   /* the datasets */
    w->d = NULL;
    if (f >= 0 && !w->failed && H5Fclose(f) < 0) return kdd_h5_fail(err, "%s: cannot close", w->partial);
    return 0;
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
    if (!m->tokens_only && !m->sampled && m->value_dtype != KD_DUMP_F16 && m->value_dtype != KD_DUMP_F32)
        return kd_errf(err, "%s: value_dtype %d, expected KD_DUMP_F16 or KD_DUMP_F32", path, (int)m->value_dtype);
    if (m->sampled && (m->tokens_only || m->packed || m->n_samples < 1 || m->n_samples > KD_DUMP_MAX_SAMPLES ||
                       m->k != m->n_samples))
        return kd_errf(err, "%s: a sampled dump needs n_samples in [1, %d] and k = n_samples (k %d, n_samples %d%s)",
                       path, KD_DUMP_MAX_SAMPLES, m->k, m->n_samples,
                       m->tokens_only ? ", tokens only" : m->packed ? ", packed layout" : "");
    if (m->packed && (m->k < 1 || m->tokens_only))
        return kd_errf(err, "%s: the packed layout (" KD_DUMP_LAYOUT_PACKED ") stores a top-k: k %d%s, expected k ≥ 1",
                       path, m->k, m->tokens_only ? " (tokens only)" : "");
    if (tok && (tok->n < 0 || tok->n > m->vocab_size || !tok->piece_offsets || tok->piece_offsets[0] != 0 ||
                (tok->n_merges && !tok->merge_offsets)))
        return kd_errf(err, "%s: tokenizer with %d pieces for vocab_size %" PRId64 ", expected 0..vocab_size pieces "
                       "and offsets from 0", path, tok->n, m->vocab_size);
    return 0;
}

static int create_sums(hid_t file, const char *path, kd_err *err) {
    hsize_t dim = 0, maxd = H5S_UNLIMITED, chunk = SUMS_CHUNK;
    return kdd_create_chunked(file, path, SUMS, H5T_STD_U64LE, 1, &dim, &maxd, &chunk, err);
}

/* Open the datasets (and seq_checksum, creating it in a file from before checksums). */
static int finish_open(kd_dump_writer *w, kd_err *err) {
    w->d = kdd_open_locked(w->partial, 1, 1, err);
    if (!w->d) return -1;
    w->stamp = w->d->meta.k ? calloc((size_t)w->d->meta.vocab_size, 4) : NULL;
    if (w->d->meta.k && !w->stamp) return kd_errf(err, "%s: out of memory", w->partial);
    if (H5Lexists(w->d->file, SUMS, H5P_DEFAULT) <= 0 && create_sums(w->d->file, w->partial, err)) return -1;
    w->sums = H5Dopen2(w->d->file, SUMS, H5P_DEFAULT);
    hid_t sp = w->sums >= 0 ? H5Dget_space(w->sums) : -1, ty = w->sums >= 0 ? H5Dget_type(w->sums) : -1;
    int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 && ty >= 0 && H5Tget_class(ty) == H5T_INTEGER &&
             H5Tget_size(ty) == 8;
    if (sp >= 0) H5Sclose(sp);
    if (ty >= 0) H5Tclose(ty);
    if (!ok) return kdd_h5_fail(err, "%s: dataset '" SUMS "' is not a 1-D dataset of 64-bit integers", w->partial);
    return 0;
}

static int64_t sums_len(kd_dump_writer *w) {
    hsize_t dim = 0;
    if (w->sums < 0) return 0;
    hid_t sp = H5Dget_space(w->sums);
    H5Sget_simple_extent_dims(sp, &dim, NULL);
    H5Sclose(sp);
    return (int64_t)dim;
}

/* Write checksums [s0, s0 + n) (growing the dataset to s0 + n). */
static int write_sums(kd_dump_writer *w, int64_t s0, int64_t n, const uint64_t *h, kd_err *err) {
    hsize_t dim = (hsize_t)(s0 + n), start = (hsize_t)s0, count = (hsize_t)n;
    if (n == 0) return 0;
    if (H5Dset_extent(w->sums, &dim) < 0) return kdd_h5_fail(err, "%s: dataset '" SUMS "': cannot grow", w->partial);
    hid_t fs = H5Dget_space(w->sums), ms = H5Screate_simple(1, &count, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
    if (rc >= 0) rc = H5Dwrite(w->sums, H5T_NATIVE_UINT64, ms, fs, H5P_DEFAULT, h);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? kdd_h5_fail(err, "%s: dataset '" SUMS "': cannot write sequences [%" PRId64 ", %" PRId64 ")",
                                w->partial, s0, s0 + n)
                  : 0;
}

/* Rename fresh over PATH.partial (whose lock this writer holds) and move the lock to it
 * (a process that took it in between wins; this one refuses). */
static int adopt(kd_dump_writer *w, const char *fresh, kd_err *err) {
    if (rename(fresh, w->partial) != 0)
        return kd_errf(err, "%s: cannot rename to %s: %s", fresh, w->partial, strerror(errno));
    int fd = open(w->partial, O_RDWR | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (fd >= 0) close(fd);
        close(w->lock_fd);
        w->lock_fd = -1;   /* not this writer's file any more: abort leaves it */
        return kd_errf(err, "%s: another process took it over while it was created", w->partial);
    }
    close(w->lock_fd);
    w->lock_fd = fd;
    return 0;
}

kd_dump_writer *kd_dump_writer_create(const char *path, const kd_dump_meta *m, const kd_dump_tokenizer *tok,
                                      kd_err *err) {
    kd_dump_meta mm = *m;
    if (mm.sampled) mm.value_dtype = KD_DUMP_F32;   /* counts; readers return float32 log-probs */
    if (mm.packed) {
        if (mm.pack_step == 0) mm.pack_step = KD_PACK_STEP_DEFAULT;
        if (mm.pack_knee == 0) mm.pack_knee = KD_PACK_KNEE_DEFAULT;
    }
    m = &mm;
    if (check_meta(path, m, tok, err)) return NULL;
    kd_dump_writer *w = writer_new(path, err);
    if (!w) return NULL;
    if (writer_lock(w, 1, err)) {
        writer_free(w);
        return NULL;
    }
    /* the schema is made in PATH.partial.new and renamed over the (empty, locked) PATH.partial
     * when complete: a kill while it is made leaves no half-made PATH.partial to resume */
    char fresh[4300];
    snprintf(fresh, sizeof fresh, "%s.new", w->partial);
    unlink(fresh);
    kdd_guard g;
    kdd_enter(&g);
    int rc = -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);   /* the writer's own flock guards the file */
    hid_t f = H5Fcreate(fresh, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        kdd_h5_fail(err, "%s: cannot create", fresh);
        goto out;
    }
    int64_t T = m->seq_len, t1[1] = {T + 1}, t0[1] = {T}, t3[2] = {T, m->k ? m->k : m->vocab_size};
    hid_t vt = m->value_dtype == KD_DUMP_F16 ? kdd_f16() : H5T_IEEE_F32LE;
    if (kdd_attr_write_str(f, "format", KD_DUMP_FORMAT) || kdd_attr_write_i64(f, "version", KD_DUMP_VERSION) ||
        kdd_attr_write_i64(f, "vocab_size", m->vocab_size) || kdd_attr_write_i64(f, "k", m->k) ||
        kdd_attr_write_i64(f, "seq_len", m->seq_len) || kdd_attr_write_i64(f, "n_seq", 0) ||
        kdd_attr_write_str(f, "teacher", m->teacher) || kdd_attr_write_f64(f, "temperature", m->temperature) ||
        kdd_attr_write_str(f, "distribution", m->tokens_only ? "none" : m->sampled ? "sampled" : m->k ? "topk" : "logits") ||
        (m->sampled && kdd_attr_write_i64(f, "n_samples", m->n_samples))) {
        kdd_h5_fail(err, "%s: cannot write the root attributes", w->partial);
        goto out;
    }
    if (create_ds(f, w->partial, "tokens", H5T_STD_I32LE, 2, t1, 0, err) ||
        (m->has_loss_mask && create_ds(f, w->partial, "loss_mask", H5T_STD_U8LE, 2, t0, 0, err)) ||
        (m->packed && kdd_pack_create(f, w->partial, m, err)) ||
        (m->k && !m->packed &&
         create_ds(f, w->partial, m->sampled ? "sample_ids" : "topk_ids",
                     m->vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_I32LE, 3, t3, m->sampled, err)) ||
        (!m->tokens_only && !m->packed &&
         create_ds(f, w->partial, m->sampled ? "sample_counts" : m->k ? "topk_logprobs" : "logits",
                     m->sampled ? H5T_STD_U8LE : vt, 3, t3, m->sampled, err)) ||
        create_sums(f, w->partial, err) || (tok && kdd_write_tokenizer(f, w->partial, tok, err)))
        goto out;
    if (H5Fclose(f) < 0) {
        f = -1;
        kdd_h5_fail(err, "%s: cannot close", fresh);
        goto out;
    }
    f = -1;
    if (adopt(w, fresh, err)) goto out;
    rc = finish_open(w, err);
out:
    if (f >= 0) H5Fclose(f);
    kdd_leave(&g);
    if (rc) unlink(fresh);
    if (rc) {
        kd_dump_writer_abort(w);
        return NULL;
    }
    return w;
}

const char *kd_dump_writer_note(const kd_dump_writer *w) { return w->note; }

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
    hsize_t sd = (hsize_t)n;
    if (w->sums >= 0 && sums_len(w) != n && H5Dset_extent(w->sums, &sd) < 0)
        return kdd_h5_fail(err, "%s: dataset '" SUMS "': cannot resize to %" PRId64 " sequences", w->partial, n);
    if (d->pack && kdd_pack_set_n_seq(d, n, err)) return -1;
    d->meta.n_seq = n;
    if (kdd_attr_write_i64(d->file, "n_seq", n) || H5Fflush(d->file, H5F_SCOPE_LOCAL) < 0)
        return kdd_h5_fail(err, "%s: cannot flush", w->partial);
    return 0;
}

static int check_append(kd_dump_writer *w, int64_t n, const int32_t *tokens, const uint8_t *mask, const int32_t *ids,
                        const float *val, int64_t first, kd_err *err);

/* Recompute the checksum of every sequence the file holds and compare it with
 * seq_checksum; a sequence without a stored checksum (a file from before them,
 * or an append cut short) is validated instead and gets one. The file is cut
 * to the sequences before the first that fails; dry: the file is only read, and
 * meta.n_seq set to that count. Sequences before `from` are taken as verified (a
 * salvaged copy's checksummed rows). Called with the HDF5 lock held. */
static int verify(kd_dump_writer *w, int dry, int64_t from, kd_err *err) {
    kd_dump *d = w->d;
    const kd_dump_meta *m = &d->meta;
    const int64_t T = m->seq_len, k = m->k, cols = k ? k : m->vocab_size, N = m->n_seq, L0 = sums_len(w);
    const int teacher = !m->tokens_only;
    int64_t per = T * cols * 4 * (k ? 2 : 1) + (T + 1) * 5, sb = ((int64_t)16 << 20) / (per > 0 ? per : 1);
    if (sb < 1) sb = 1;
    if (sb > 1024) sb = 1024;
    if (sb > N) sb = N > 0 ? N : 1;
    int32_t *tok = malloc((size_t)(sb * (T + 1)) * 4), *ids = k ? malloc((size_t)(sb * T * k) * 4) : NULL;
    uint8_t *mask = malloc((size_t)(sb * T));
    float *val = teacher ? malloc((size_t)(sb * T * cols) * 4) : NULL;
    uint64_t *have = malloc((size_t)sb * 8), *got = malloc((size_t)sb * 8);
    int rc = 0;
    int64_t good = N;
    char why[KD_ERR_MSG_MAX] = "";
    if (!tok || !mask || (k && !ids) || (teacher && !val) || !have || !got) {
        rc = kd_errf(err, "%s: out of memory verifying the sequences", w->partial);
        goto out;
    }
    for (int64_t s0 = from; s0 < N && good == N && !rc; s0 += sb) {
        int64_t ns = s0 + sb <= N ? sb : N - s0, nh = L0 > s0 ? (L0 - s0 < ns ? L0 - s0 : ns) : 0;
        kd_err e2;
        if (kdd_read_2d(d, D_TOKENS, s0, ns, tok, &e2) || kdd_read_2d(d, D_MASK, s0, ns, mask, &e2) ||
            (k && kdd_read_3d(d, D_IDS, s0, ns, 0, T, ids, k, &e2)) ||
            (teacher && kdd_read_3d(d, D_VALUES, s0, ns, 0, T, val, cols, &e2))) {
            /* unreadable sequences (a chunk never written): roll back before the block, or find the first */
            if (ns > 1) {
                sb = 1;
                s0 -= 1;   /* retry one by one from s0 (the loop adds sb) */
                continue;
            }
            good = s0;
            snprintf(why, sizeof why, "it cannot be read (%.900s)", e2.msg);
            break;
        }
        if (nh > 0) {
            hsize_t start = (hsize_t)s0, count = (hsize_t)nh;
            hid_t fs = H5Dget_space(w->sums), ms = H5Screate_simple(1, &count, NULL);
            herr_t r = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
            if (r >= 0) r = H5Dread(w->sums, H5T_NATIVE_UINT64, ms, fs, H5P_DEFAULT, have);
            H5Sclose(ms);
            H5Sclose(fs);
            if (r < 0) nh = 0;   /* unreadable checksums: validate those sequences instead */
        }
        for (int64_t i = 0; i < ns; i++) {
            const int32_t *ti = tok + i * (T + 1), *ii = k ? ids + i * T * k : NULL;
            const uint8_t *mi = mask + i * T;
            const float *vi = teacher ? val + i * T * cols : NULL;
            got[i] = kd_dump_seq_checksum(T, k, cols, ti, mi, ii, vi);
            if (i < nh) {
                if (got[i] == have[i]) continue;
                snprintf(why, sizeof why, "its data does not match the checksum written with it in dataset '" SUMS
                         "' (%016" PRIx64 ", expected %016" PRIx64 "): a write that failed or was cut short",
                         got[i], have[i]);
            } else if (check_append(w, 1, ti, mi, ii, vi, s0 + i, &e2)) {
                snprintf(why, sizeof why, "it has no checksum and its values are invalid: %.900s", e2.msg);
            } else {
                continue;
            }
            good = s0 + i;
            break;
        }
        /* checksums for the validated sequences without one */
        int64_t upto = (good < s0 + ns ? good : s0 + ns) - s0;
        if (!dry && upto > nh && write_sums(w, s0 + nh, upto - nh, got + nh, err)) rc = -1;
    }
    if (!rc && good < N) {
        snprintf(w->note, sizeof w->note, "%s: sequence %" PRId64 " of %" PRId64 " failed verification: %.700s; "
                 "dropped it and the %" PRId64 " after it, resuming after the %" PRId64 " verified sequences",
                 w->partial, good, N, why, N - good - 1, good);
    }
    if (!rc && dry) d->meta.n_seq = good;
    else if (!rc) rc = set_n_seq(w, good, err);
out:
    free(tok);
    free(ids);
    free(mask);
    free(val);
    free(have);
    free(got);
    return rc ? -1 : 0;
}

/* PATH.partial was cut short in the middle of an HDF5 write (kdd_flush_complete): its
 * metadata may be half written, and HDF5 may read it but fail to extend it. Its verified
 * sequences are copied into a new file, which replaces it. */
static int salvage(kd_dump_writer *w, kd_err *err) {
    char fresh[4300];
    snprintf(fresh, sizeof fresh, "%s.new", w->partial);
    unlink(fresh);
    w->d = kdd_open_locked(w->partial, 0, 1, err);
    if (!w->d) return -1;
    int64_t N = w->d->meta.n_seq;
    w->stamp = w->d->meta.k ? calloc((size_t)w->d->meta.vocab_size, 4) : NULL;
    if (w->d->meta.k && !w->stamp) return kd_errf(err, "%s: out of memory", w->partial);
    w->sums = H5Lexists(w->d->file, SUMS, H5P_DEFAULT) > 0 ? H5Dopen2(w->d->file, SUMS, H5P_DEFAULT) : -1;
    int rc = verify(w, 1, 0, err) || kdd_salvage(w->d, fresh, w->d->meta.n_seq, err);
    int64_t good = w->d->meta.n_seq;
    free(w->stamp);
    w->stamp = NULL;
    if (writer_close_h5(w, rc ? NULL : err)) rc = -1;   /* read-only: closing writes nothing */
    if (!rc) rc = adopt(w, fresh, err);
    if (rc) {
        unlink(fresh);
        return kd_err_prefix(err, "%s was cut short in the middle of an HDF5 write and its sequences cannot be "
                             "copied into a new file", w->partial);
    }
    size_t l = strlen(w->note);
    snprintf(w->note + l, sizeof w->note - l, "%s%s: cut short in the middle of an HDF5 write (a kill during an "
             "append or a flush): its %" PRId64 " verified sequences%s were copied into a new file, which the dump "
             "continues", l ? "; " : "", w->partial, good, good < N ? "" : " (all it holds)");
    return 0;
}

kd_dump_writer *kd_dump_writer_resume(const char *path, kd_err *err) {
    kd_dump_writer *w = writer_new(path, err);
    if (!w) return NULL;
    int renamed = 0;
    if (access(w->partial, F_OK) != 0) {
        if (access(path, F_OK) != 0 || rename(path, w->partial) != 0) {
            kd_errf(err, "%s: cannot resume: neither it nor %s can be opened (%s)", path, w->partial, strerror(errno));
            writer_free(w);
            return NULL;
        }
        renamed = 1;
    }
    if (writer_lock(w, 0, err)) {
        writer_free(w);
        return NULL;
    }
    kdd_guard g;
    kdd_enter(&g);
    int complete = 1, opened = 0;
    /* a salvaged copy holds verified sequences; only those without a checksum are checked again */
    int rc = kdd_flush_complete(w->lock_fd, w->partial, &complete, err) || (!complete && salvage(w, err)) ||
             finish_open(w, err) || !(opened = 1) || verify(w, 0, complete ? 0 : sums_len(w), err);
    if (rc) writer_close_h5(w, NULL);
    kdd_leave(&g);
    if (!rc) return w;
    size_t l = err ? strlen(err->msg) : 0;
    if (!opened && err && l + 1 < sizeof err->msg)   /* e.g. a crash in the middle of an HDF5 flush */
        snprintf(err->msg + l, sizeof err->msg - l, " (the .partial file cannot be continued: delete it to start the "
                 "dump over, or move it aside to keep it)");
    if (renamed) rename(w->partial, path);
    writer_free(w);
    return NULL;
}

int64_t kd_dump_writer_n_seq(const kd_dump_writer *w) { return w->d->meta.n_seq; }
const kd_dump_meta *kd_dump_writer_meta(const kd_dump_writer *w) { return &w->d->meta; }

/* Check the data of an append as the validator would check the stored values; first ≥ 0:
 * sequences read back from the file at index first (messages give their index). */
static int check_append(kd_dump_writer *w, int64_t n, const int32_t *tokens, const uint8_t *mask, const int32_t *ids,
                        const float *val, int64_t first, kd_err *err) {
    const kd_dump_meta *m = &w->d->meta;
    int64_t T = m->seq_len, k = m->k, V = m->vocab_size, slot, base = first < 0 ? 0 : first;
    const char *ctx = first < 0 ? "append: " : "", *of = first < 0 ? " of the append" : "";
    char what[160];
    for (int64_t i = 0; i < n * (T + 1); i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return kd_errf(err, "%s: %sdataset 'tokens': sequence %" PRId64 "%s, token %" PRId64
                           ": id %d outside [0, %" PRId64 ")", w->partial, ctx, base + i / (T + 1), of, i % (T + 1),
                           tokens[i], V);
    for (int64_t i = 0; mask && i < n * T; i++)
        if (mask[i] > 1)
            return kd_errf(err, "%s: %sdataset 'loss_mask': sequence %" PRId64 "%s, position %" PRId64
                           ": value %d, expected 0 or 1", w->partial, ctx, base + i / T, of, i % T, mask[i]);
    for (int64_t p = 0; !m->tokens_only && p < n * T; p++) {
        int masked = mask && !mask[p], bad = 0;
        kdd_pos_stats st;
        if (k && m->sampled) {
            bad = kdd_check_sampled(ids + p * k, val + p * k, (int)k, V, m->n_samples, masked, w->stamp, &w->mark, &st,
                                    &slot, what, sizeof what);
        } else if (k) {
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
            return kd_errf(err, "%s: %sdataset '%s': sequence %" PRId64 "%s, position %" PRId64
                           ", slot %" PRId64 ": %s", w->partial, ctx, kdd_dname(w->d, bad == 1 ? D_IDS : D_VALUES),
                           base + p / T, of, p % T, slot, what);
    }
    return 0;
}

/* Sampled dumps: the caller's log-probs [n, T, k] rounded to the values a reader returns,
 * kd_dump_sample_lp(c, N) with c = round(N·exp(v)), when v is within 1e-3 counts of such a value
 * (else v unchanged, which the check then refuses); −inf at masked positions (stored as count 0). */
static float *sample_canon(const kd_dump_meta *m, int64_t n, const uint8_t *mask, const float *v) {
    const int64_t T = m->seq_len, k = m->k, N = m->n_samples;
    float *c = malloc((size_t)(n * T * k) * sizeof *c);
    if (!c) return NULL;
    for (int64_t p = 0; p < n * T; p++)
        for (int64_t j = 0; j < k; j++) {
            float x = v[p * k + j], *o = &c[p * k + j];
            if (mask && !mask[p]) {
                *o = -INFINITY;
                continue;
            }
            double e = (double)N * exp((double)x);
            long r = isfinite(x) ? lrint(e) : 0;
            *o = isfinite(x) && r >= 1 && r <= N && fabs(e - (double)r) <= 1e-3 ? kd_dump_sample_lp((int)r, (int)N) : x;
        }
    return c;
}

/* Write src ([ns, T, cols] int32 or float32) at sequence s0 of dataset i, narrowing to uint16/float16 if stored so. */
static int write_3d(kd_dump *d, int i, int64_t s0, int64_t ns, const void *src, int64_t cols, kd_err *err) {
    int64_t T = d->meta.seq_len, pb = (int64_t)WRITE_BLOCK / (cols * 2);
    if (pb < 1) pb = 1;
    if (pb > T) pb = T;
    int isf = i == D_VALUES, cnt = isf && d->meta.sampled, N = d->meta.n_samples;
    hid_t mt = cnt ? H5T_NATIVE_UINT8
                   : isf ? (d->raw16[i] ? kdd_f16() : H5T_NATIVE_FLOAT) : (d->raw16[i] ? H5T_NATIVE_UINT16 : H5T_NATIVE_INT32);
    for (int64_t s = 0; s < ns; s++)
        for (int64_t p = 0; p < T; p += pb) {
            int64_t np = p + pb <= T ? pb : T - p;
            size_t n = (size_t)(np * cols), at = (size_t)((s * T + p) * cols);
            const void *mem = isf ? (const void *)((const float *)src + at) : (const void *)((const int32_t *)src + at);
            if (cnt) {   /* canonical log(c / N) (see sample_canon) → c */
                uint8_t *b = kdd_scratch(d, n, err);
                if (!b) return -1;
                for (size_t j = 0; j < n; j++) {
                    float x = ((const float *)src)[at + j];
                    b[j] = x == -INFINITY ? 0 : (uint8_t)lrint((double)N * exp((double)x));
                }
                mem = b;
            } else if (d->raw16[i]) {
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
    if (w->failed)
        return kd_errf(err, "%s: append: an earlier write to this file failed; close the writer (the file keeps the "
                       "%" PRId64 " sequences before it) and resume", w->partial, m->n_seq);
    float *canon = NULL;
    if (m->sampled && n > 0) {   /* the values as a reader returns them: log(c / N), −inf at masked positions */
        canon = sample_canon(m, n, loss_mask, values);
        if (!canon) return kd_errf(err, "%s: append: out of memory", w->partial);
        values = canon;
    }
    int rc0 = check_append(w, n, tokens, loss_mask, ids, values, -1, err);
    if (rc0 || n == 0) {
        free(canon);
        return rc0;
    }
    int64_t T = m->seq_len, old = m->n_seq, cols = m->k ? m->k : m->vocab_size;
    /* the checksums of what the file will hold (float16 values as they read back) */
    uint64_t *h = malloc((size_t)n * 8);
    float *v16 = m->value_dtype == KD_DUMP_F16 && !m->tokens_only ? malloc((size_t)(T * cols) * 4) : NULL;
    if (!h || (m->value_dtype == KD_DUMP_F16 && !m->tokens_only && !v16)) {
        free(h);
        free(v16);
        free(canon);
        return kd_errf(err, "%s: append: out of memory", w->partial);
    }
    for (int64_t s = 0; s < n; s++) {
        const float *vs = m->tokens_only ? NULL : values + s * T * cols;
        if (v16) {
            for (int64_t j = 0; j < T * cols; j++) v16[j] = kd_fp16_to_f32(kd_f32_to_fp16(vs[j]));
            vs = v16;
        }
        h[s] = kd_dump_seq_checksum(T, m->k, cols, tokens + s * (T + 1), loss_mask ? loss_mask + s * T : NULL,
                                    m->k ? ids + s * T * m->k : NULL, vs);
    }
    free(v16);
    /* reserve the bytes this append needs (data, checksums, index and metadata with a margin): a
     * full device fails here, before HDF5 has written anything */
    int64_t idb = m->vocab_size <= 65536 ? 2 : 4, vb = m->sampled ? 1 : m->value_dtype == KD_DUMP_F16 ? 2 : 4;
    int64_t need = n * ((T + 1) * 4 + T + 8 + (m->tokens_only ? 0 : T * cols * vb + (m->k ? T * m->k * idb : 0)));
    need += need / 8 + ((int64_t)64 << 10);
    struct stat st;
    if (fstat(w->lock_fd, &st) == 0 && fallocate(w->lock_fd, FALLOC_FL_KEEP_SIZE, st.st_size, need) != 0 &&
        (errno == ENOSPC || errno == EDQUOT || errno == EFBIG)) {
        int e = errno;
        free(h);
        free(canon);
        return kd_errf(err, "%s: %s: the next %" PRId64 " sequences need %.1f MB; nothing of them was written and the "
                       "%" PRId64 " sequences before them are intact", w->partial, strerror(e), n,
                       (double)need / 1e6, old);
    }
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
    if (!rc && d->pack) rc = kdd_pack_append(d, old, n, tokens, loss_mask, ids, values, h, err);
    else {
        if (!rc && m->k) rc = write_3d(d, D_IDS, old, n, ids, m->k, err);
        if (!rc && !m->tokens_only) rc = write_3d(d, D_VALUES, old, n, values, m->k ? m->k : m->vocab_size, err);
    }
    if (!rc) rc = write_sums(w, old, n, h, err);
    if (!rc) rc = set_n_seq(w, old + n, err);
    if (rc) {
        /* a write failed: nothing more is written to the file (see writer_close_h5); it holds
         * the sequences of the last complete append, and a resume verifies them */
        w->failed = 1;
        d->meta.n_seq = old;
        size_t l = err ? strlen(err->msg) : 0;
        if (err && l + 1 < sizeof err->msg)
            snprintf(err->msg + l, sizeof err->msg - l, " while appending sequences [%" PRId64 ", %" PRId64 ")", old,
                     old + n);
    }
    kdd_leave(&g);
    free(h);
    free(canon);
    return rc ? -1 : 0;
}

int kd_dump_writer_release(kd_dump_writer *w, kd_err *err) {
    if (!w) return 0;
    kdd_guard g;
    kdd_enter(&g);
    int rc = w->failed || !w->d ? 0 : set_n_seq(w, w->d->meta.n_seq, err);
    if (writer_close_h5(w, rc ? NULL : err) && !rc) rc = -1;
    kdd_leave(&g);
    writer_unreserve(w);
    writer_free(w);
    return rc ? -1 : 0;
}

int kd_dump_writer_close(kd_dump_writer *w, kd_err *err) {
    if (w->failed) {
        int64_t n = w->d ? w->d->meta.n_seq : 0;
        char partial[4200];
        snprintf(partial, sizeof partial, "%s", w->partial);
        kd_dump_writer_release(w, NULL);
        return kd_errf(err, "%s: not finished: a write failed; it keeps %" PRId64 " sequences for a resume", partial, n);
    }
    char partial[4200], path[4096];
    snprintf(partial, sizeof partial, "%s", w->partial);
    snprintf(path, sizeof path, "%s", w->path);
    /* the lock is held until the rename is done */
    kdd_guard g;
    kdd_enter(&g);
    int rc = set_n_seq(w, w->d->meta.n_seq, err);
    if (writer_close_h5(w, rc ? NULL : err) && !rc) rc = -1;
    kdd_leave(&g);
    writer_unreserve(w);
    if (!rc && kd_out_kind(path, NULL, 0, err) != KD_OUT_FILE)
        rc = kd_err_prefix(err, "%s stays", partial);   /* never replace what is not a regular file */
    if (!rc && rename(partial, path) != 0)
        rc = kd_errf(err, "%s: cannot rename to %s: %s", partial, path, strerror(errno));
    writer_free(w);
    return rc ? -1 : 0;
}

void kd_dump_writer_abort(kd_dump_writer *w) {
    if (!w) return;
    kdd_guard g;
    kdd_enter(&g);
    writer_close_h5(w, NULL);
    kdd_leave(&g);
    if (w->lock_fd >= 0) unlink(w->partial);   /* only a file this writer has locked */
    writer_free(w);
}
