/*
 * kd_dump_pack.c — the HDF5 side of the compressed top-k layout
 * "topk-packed-v1" (kd_dump_codec.h, docs/dump-format.md): in place of
 * topk_ids and topk_logprobs a dump holds
 *   topk_packed    uint8  [total bytes]  the sequences' bit streams, back to back
 *   topk_offsets   uint64 [n_seq]        end of sequence s in topk_packed (start: end of s − 1, or 0)
 *   topk_id_order  int32  [V]            rank → id, the frequency order ids are coded in
 * and the root attributes layout = "topk-packed-v1", lp_step, lp_knee.
 * The reader keeps the offsets in memory and decodes whole sequences (the last
 * one is cached, so reading its ids and then its log-probs decodes it once).
 * Every function expects the caller to hold the HDF5 lock (kdd_enter).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"
#include "data/kd_dump_impl.h"

#define BYTES_CHUNK 65536   /* chunk of topk_packed */
#define OFF_CHUNK 4096      /* chunk of topk_offsets */

struct kdd_pack {
    kd_pack_codec codec;
    int have_order;          /* topk_id_order exists (written by the first append) */
    hid_t ds_bytes, ds_off, ds_order;
    uint64_t *off;           /* [n_off] end offsets */
    int64_t n_off, cap_off;
    uint8_t *buf;            /* raw bytes of the sequences being decoded (+ kd_pack_pad) */
    size_t buf_cap;
    int64_t cached;          /* sequence held in c_ids / c_lp, −1 = none */
    int32_t *c_ids;
    float *c_lp;
    uint8_t *c_mask;
};

/* A number attribute (float or integer, one element). */
static int attr_f64(kd_dump *d, const char *name, double *out, kd_err *err) {
    if (H5Aexists(d->file, name) <= 0)
        return kd_errf(err, "%s: attribute '%s' is missing, expected a number (attribute 'layout' = \"" KD_DUMP_LAYOUT_PACKED
                       "\")", d->path, name);
    hid_t a = H5Aopen(d->file, name, H5P_DEFAULT);
    if (a < 0) return kdd_h5_fail(err, "%s: attribute '%s': cannot open", d->path, name);
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t c = H5Tget_class(t);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Tclose(t);
    H5Sclose(sp);
    herr_t rc = (c == H5T_FLOAT || c == H5T_INTEGER) && np == 1 ? H5Aread(a, H5T_NATIVE_DOUBLE, out) : -2;
    H5Aclose(a);
    if (rc == -2) return kd_errf(err, "%s: attribute '%s': expected one number", d->path, name);
    return rc < 0 ? kdd_h5_fail(err, "%s: attribute '%s': cannot read", d->path, name) : 0;
}

static void *grow(void *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    void *q = realloc(p, need);
    if (q) *cap = need;
    return q;
}

void kdd_pack_free(kd_dump *d) {
    kdd_pack *p = d->pack;
    if (!p) return;
    if (p->ds_bytes >= 0) H5Dclose(p->ds_bytes);
    if (p->ds_off >= 0) H5Dclose(p->ds_off);
    if (p->ds_order >= 0) H5Dclose(p->ds_order);
    kd_pack_free(&p->codec);
    free(p->off);
    free(p->buf);
    free(p->c_ids);
    free(p->c_lp);
    free(p->c_mask);
    free(p);
    d->pack = NULL;
}

static kdd_pack *pack_new(void) {
    kdd_pack *p = calloc(1, sizeof *p);
    if (p) p->ds_bytes = p->ds_off = p->ds_order = -1, p->cached = -1;
    return p;
}

static int create_1d(hid_t f, const char *path, const char *name, hid_t type, hsize_t chunk, kd_err *err) {
    hsize_t dim = 0, maxd = H5S_UNLIMITED;
    return kdd_create_chunked(f, path, name, type, 1, &dim, &maxd, &chunk, err);
}

int kdd_pack_create(hid_t f, const char *path, const kd_dump_meta *m, kd_err *err) {
    kd_pack_codec c;   /* checks step and knee */
    if (kd_pack_init(&c, m->k, 1, m->pack_step, m->pack_knee, NULL, err)) return -1;
    kd_pack_free(&c);
    if (kdd_attr_write_str(f, "layout", KD_DUMP_LAYOUT_PACKED) || kdd_attr_write_f64(f, "lp_step", m->pack_step) ||
        kdd_attr_write_f64(f, "lp_knee", m->pack_knee))
        return kdd_h5_fail(err, "%s: cannot write the attributes of the packed layout", path);
    return create_1d(f, path, "topk_packed", H5T_STD_U8LE, BYTES_CHUNK, err) ||
                   create_1d(f, path, "topk_offsets", H5T_STD_U64LE, OFF_CHUNK, err)
               ? -1
               : 0;
}

/* A 1-D dataset of the packed layout and its length. */
static hid_t open_1d(kd_dump *d, const char *name, int required, int want_class, int64_t *len, kd_err *err) {
    *len = 0;
    if (H5Lexists(d->file, name, H5P_DEFAULT) <= 0) {
        if (required) kd_errf(err, "%s: dataset '%s' is missing (attribute 'layout' = \"" KD_DUMP_LAYOUT_PACKED "\")",
                              d->path, name);
        return required ? -1 : 0;
    }
    /* topk_packed without filters skips HDF5's chunk cache: a sequence's few bytes are then read alone,
     * where a cached read would fetch their whole 64 KiB chunk (random reads rarely hit the cache) */
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (!strcmp(name, "topk_packed")) H5Pset_chunk_cache(dapl, H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0, H5D_CHUNK_CACHE_W0_DEFAULT);
    hid_t ds = H5Dopen2(d->file, name, dapl);
    if (ds >= 0 && !strcmp(name, "topk_packed")) {
        hid_t dcpl = H5Dget_create_plist(ds);
        int filtered = dcpl >= 0 && H5Pget_nfilters(dcpl) > 0;
        if (dcpl >= 0) H5Pclose(dcpl);
        if (filtered) {   /* a filtered chunk is decompressed whole on every read: keep the cache */
            H5Dclose(ds);
            ds = H5Dopen2(d->file, name, H5P_DEFAULT);
        }
    }
    H5Pclose(dapl);
    if (ds < 0) {
        kdd_h5_fail(err, "%s: '%s' is not a readable dataset", d->path, name);
        return -1;
    }
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    hsize_t dim = 0;
    int rank = H5Sget_simple_extent_ndims(sp), bytes, sg;
    char tn[32];
    int dt = kdd_dtype_of(ty, tn, sizeof tn, &bytes, &sg);
    if (rank == 1) H5Sget_simple_extent_dims(sp, &dim, NULL);
    H5Sclose(sp);
    H5Tclose(ty);
    int want_bytes = !strcmp(name, "topk_packed") ? 1 : !strcmp(name, "topk_offsets") ? 8 : 4;
    if (rank != 1 || dt != want_class || bytes != want_bytes) {
        H5Dclose(ds);
        kd_errf(err, "%s: dataset '%s': %s of rank %d, expected a 1-D %s array", d->path, name, tn, rank,
                want_bytes == 1 ? "uint8" : want_bytes == 8 ? "uint64" : "int32");
        return -1;
    }
    *len = (int64_t)dim;
    return ds;
}

static int load_order(kd_dump *d, kd_err *err) {
    kdd_pack *p = d->pack;
    int64_t n;
    hid_t ds = open_1d(d, "topk_id_order", 0, DT_INT, &n, err);
    if (ds < 0) return -1;
    if (ds == 0) return 0;
    p->ds_order = ds;
    int rc = -1;
    int32_t *order = NULL;
    if (n != d->meta.vocab_size)
        kd_errf(err, "%s: dataset 'topk_id_order' has %" PRId64 " entries, expected vocab_size = %" PRId64, d->path, n,
                d->meta.vocab_size);
    else if (!(order = malloc((size_t)n * sizeof *order)))
        kd_errf(err, "%s: out of memory", d->path);
    else if (H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, order) < 0)
        kdd_h5_fail(err, "%s: dataset 'topk_id_order': cannot read", d->path);
    else if (kd_pack_init(&p->codec, d->meta.k, d->meta.vocab_size, d->meta.pack_step, d->meta.pack_knee, order, err)) {
        char msg[KD_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        kd_errf(err, "%s: %s", d->path, msg);
    } else {
        p->have_order = 1;
        rc = 0;
    }
    free(order);
    return rc;
}

int kdd_pack_open(kd_dump *d, int partial, kd_err *err) {
    kd_dump_meta *m = &d->meta;
    double step = 0, knee = 0;
    if (m->k < 1 || m->tokens_only)
        return kd_errf(err, "%s: attribute 'layout' = \"" KD_DUMP_LAYOUT_PACKED "\" needs a top-k dump (k ≥ 1), "
                       "found k = %d%s", d->path, m->k, m->tokens_only ? " (tokens only)" : "");
    if (attr_f64(d, "lp_step", &step, err) || attr_f64(d, "lp_knee", &knee, err))
        return -1;
    m->packed = 1;
    m->pack_step = step;
    m->pack_knee = knee;
    m->value_dtype = KD_DUMP_F16;
    snprintf(m->ids_dtype, sizeof m->ids_dtype, "rice");
    snprintf(m->values_dtype, sizeof m->values_dtype, "packed");
    kdd_pack *p = d->pack = pack_new();
    if (!p) return kd_errf(err, "%s: out of memory", d->path);
    kd_pack_codec c;
    if (kd_pack_init(&c, m->k, 1, step, knee, NULL, err)) {
        char msg[KD_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return kd_errf(err, "%s: %s", d->path, msg);
    }
    kd_pack_free(&c);
    int64_t nbytes;
    if ((p->ds_bytes = open_1d(d, "topk_packed", 1, DT_INT, &nbytes, err)) < 0 ||
        (p->ds_off = open_1d(d, "topk_offsets", 1, DT_INT, &p->n_off, err)) < 0)
        return -1;
    p->cap_off = p->n_off > 0 ? p->n_off : 1;
    if (!(p->off = malloc((size_t)p->cap_off * sizeof *p->off))) return kd_errf(err, "%s: out of memory", d->path);
    if (p->n_off && H5Dread(p->ds_off, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, p->off) < 0)
        return kdd_h5_fail(err, "%s: dataset 'topk_offsets': cannot read", d->path);
    /* the sequences: as many as tokens has (a writer's file: the fewest of the two) */
    if (partial && p->n_off < m->n_seq) m->n_seq = p->n_off;
    if (!partial && p->n_off != m->n_seq)
        return kd_errf(err, "%s: dataset 'topk_offsets' has %" PRId64 " sequences but 'tokens' has %" PRId64, d->path,
                       p->n_off, m->n_seq);
    for (int64_t s = 0; s < m->n_seq; s++)
        if ((s > 0 && p->off[s] < p->off[s - 1]) || p->off[s] > (uint64_t)nbytes)
            return kd_errf(err, "%s: dataset 'topk_offsets': entry %" PRId64 " = %" PRIu64 ", expected non-decreasing "
                           "offsets up to the size of 'topk_packed' (%" PRId64 " bytes)", d->path, s, p->off[s], nbytes);
    if (load_order(d, err)) return -1;
    if (!p->have_order && m->n_seq > 0)
        return kd_errf(err, "%s: dataset 'topk_id_order' is missing (attribute 'layout' = \"" KD_DUMP_LAYOUT_PACKED
                       "\" and %" PRId64 " sequences)", d->path, m->n_seq);
    return 0;
}

uint64_t kdd_pack_storage(const kd_dump *d) {
    const kdd_pack *p = d->pack;
    uint64_t n = 0;
    if (!p) return 0;
    if (p->ds_bytes >= 0) n += H5Dget_storage_size(p->ds_bytes);
    if (p->ds_off >= 0) n += H5Dget_storage_size(p->ds_off);
    if (p->ds_order >= 0) n += H5Dget_storage_size(p->ds_order);
    return n;
}

static int set_extent_1d(hid_t ds, int64_t n) {
    hsize_t dim = (hsize_t)n;
    return H5Dset_extent(ds, &dim) < 0 ? -1 : 0;
}

static int write_1d_at(hid_t ds, hid_t mtype, int64_t at, int64_t n, const void *mem) {
    if (n == 0) return 0;
    hsize_t start = (hsize_t)at, count = (hsize_t)n;
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(1, &count, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
    if (rc >= 0) rc = H5Dwrite(ds, mtype, ms, fs, H5P_DEFAULT, mem);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc < 0 ? -1 : 0;
}

int kdd_pack_set_n_seq(kd_dump *d, int64_t n, kd_err *err) {
    kdd_pack *p = d->pack;
    uint64_t end = n > 0 ? p->off[n - 1] : 0;
    if (set_extent_1d(p->ds_off, n) || set_extent_1d(p->ds_bytes, (int64_t)end))
        return kdd_h5_fail(err, "%s: datasets 'topk_offsets', 'topk_packed': cannot resize to %" PRId64 " sequences",
                           d->path, n);
    p->n_off = n;
    p->cached = -1;
    return 0;
}

int kdd_pack_append(kd_dump *d, int64_t old, int64_t n, const int32_t *tokens, const uint8_t *mask,
                    const int32_t *ids, const float *lp, uint64_t *sums, kd_err *err) {
    kdd_pack *p = d->pack;
    const kd_dump_meta *m = &d->meta;
    int64_t T = m->seq_len, k = m->k;
    if (!p->have_order) {   /* the first append fixes the id order: its ids by frequency */
        int32_t *order = malloc((size_t)m->vocab_size * sizeof *order);
        if (!order) return kd_errf(err, "%s: out of memory", d->path);
        kd_pack_order_from(ids, n * T * k, m->vocab_size, order);
        hsize_t dim = (hsize_t)m->vocab_size;
        hid_t sp = H5Screate_simple(1, &dim, NULL);
        hid_t ds = H5Dcreate2(d->file, "topk_id_order", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Sclose(sp);
        int rc = ds < 0 || H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, order) < 0
                     ? kdd_h5_fail(err, "%s: cannot write dataset 'topk_id_order'", d->path)
                     : kd_pack_init(&p->codec, (int32_t)k, m->vocab_size, m->pack_step, m->pack_knee, order, err);
        free(order);
        if (ds >= 0) p->ds_order = ds;
        if (rc) return -1;
        p->have_order = 1;
    }
    size_t bound = kd_pack_bound(&p->codec, T);
    uint8_t *buf = grow(p->buf, &p->buf_cap, bound * (size_t)n + 16);
    if (!buf) return kd_errf(err, "%s: out of memory", d->path);
    p->buf = buf;
    if (old + n > p->cap_off) {
        int64_t cap = (old + n) * 2;
        uint64_t *o = realloc(p->off, (size_t)cap * sizeof *o);
        if (!o) return kd_errf(err, "%s: out of memory", d->path);
        p->off = o;
        p->cap_off = cap;
    }
    uint64_t start = old > 0 ? p->off[old - 1] : 0, at = 0;
    for (int64_t s = 0; s < n; s++) {
        size_t nb = kd_pack_encode(&p->codec, T, mask ? mask + s * T : NULL, ids + s * T * k, lp + s * T * k, buf + at);
        if (!nb) return kd_errf(err, "%s: out of memory (packing)", d->path);
        if (sums) {   /* the checksum of what a reader will decode (data/kd_dump_write.c) */
            int32_t *di = malloc((size_t)(T * k) * sizeof *di);
            float *dl = malloc((size_t)(T * k) * sizeof *dl);
            char what[64];
            snprintf(what, sizeof what, "sequence %" PRId64 " (packing)", old + s);
            int bad = !di || !dl || kd_pack_decode(&p->codec, T, mask ? mask + s * T : NULL, buf + at, nb, di, dl,
                                                   what, err);
            if (!bad)
                sums[s] = kd_dump_seq_checksum(T, k, k, tokens + s * (T + 1), mask ? mask + s * T : NULL, di, dl);
            free(di);
            free(dl);
            if (bad) return di && dl ? -1 : kd_errf(err, "%s: out of memory", d->path);
        }
        at += nb;
        p->off[old + s] = start + at;
    }
    if (set_extent_1d(p->ds_bytes, (int64_t)(start + at)) || set_extent_1d(p->ds_off, old + n) ||
        write_1d_at(p->ds_bytes, H5T_NATIVE_UINT8, (int64_t)start, (int64_t)at, buf) ||
        write_1d_at(p->ds_off, H5T_NATIVE_UINT64, old, n, p->off + old))
        return kdd_h5_fail(err, "%s: datasets 'topk_packed', 'topk_offsets': cannot write sequences [%" PRId64
                           ", %" PRId64 ")", d->path, old, old + n);
    p->n_off = old + n;
    p->cached = -1;
    return 0;
}

/* Raw bytes of sequences [s0, s0+ns) into p->buf (+ padding); *base: offset of s0's first byte. */
static int read_bytes(kd_dump *d, int64_t s0, int64_t ns, uint64_t *base, kd_err *err) {
    kdd_pack *p = d->pack;
    uint64_t a = s0 > 0 ? p->off[s0 - 1] : 0, b = p->off[s0 + ns - 1];
    size_t pad = kd_pack_pad(&p->codec);
    uint8_t *buf = grow(p->buf, &p->buf_cap, (size_t)(b - a) + pad);
    if (!buf) return kd_errf(err, "%s: out of memory", d->path);
    p->buf = buf;
    memset(buf + (b - a), 0, pad);
    *base = a;
    if (b > a) {
        hsize_t start = a, count = b - a;
        hid_t fs = H5Dget_space(p->ds_bytes), ms = H5Screate_simple(1, &count, NULL);
        herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL);
        if (rc >= 0) rc = H5Dread(p->ds_bytes, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, buf);
        H5Sclose(ms);
        H5Sclose(fs);
        if (rc < 0)
            return kdd_h5_fail(err, "%s: dataset 'topk_packed': cannot read sequences [%" PRId64 ", %" PRId64 ")",
                               d->path, s0, s0 + ns);
    }
    return 0;
}

/* Decode sequence s of the bytes in p->buf (base = offset of p->buf[0]) into ids/lp [T, k]. */
static int decode_one(kd_dump *d, int64_t s, uint64_t base, const uint8_t *mask, int32_t *ids, float *lp,
                      kd_err *err) {
    kdd_pack *p = d->pack;
    uint64_t a = s > 0 ? p->off[s - 1] : 0, b = p->off[s];
    char what[4200];
    snprintf(what, sizeof what, "%s: dataset 'topk_packed': sequence %" PRId64, d->path, s);
    return kd_pack_decode(&p->codec, d->meta.seq_len, mask, p->buf + (a - base), (size_t)(b - a), ids, lp, what, err);
}

int kdd_pack_read(kd_dump *d, int64_t s0, int64_t ns, int64_t p0, int64_t np, const uint8_t *mask, int32_t *ids,
                  float *lp, kd_err *err) {
    kdd_pack *p = d->pack;
    const int64_t T = d->meta.seq_len, k = d->meta.k;
    const size_t per = (size_t)(T * k), part = (size_t)(np * k);
    if (ns <= 0) return 0;
    if (!p->have_order) return kd_errf(err, "%s: dataset 'topk_id_order' is missing", d->path);
    if (!p->c_mask) {
        p->c_mask = malloc((size_t)T);
        p->c_ids = malloc(per * sizeof *p->c_ids);
        p->c_lp = malloc(per * sizeof *p->c_lp);
        if (!p->c_mask || !p->c_ids || !p->c_lp) return kd_errf(err, "%s: out of memory", d->path);
    }
    if (ns == 1 && p->cached == s0) {
        if (ids) memcpy(ids, p->c_ids + p0 * k, part * sizeof *ids);
        if (lp) memcpy(lp, p->c_lp + p0 * k, part * sizeof *lp);
        return 0;
    }
    uint64_t base = 0;
    if (read_bytes(d, s0, ns, &base, err)) return -1;
    for (int64_t s = s0; s < s0 + ns; s++) {
        const uint8_t *mk = mask ? mask + (s - s0) * T : p->c_mask;
        if (!mask && kdd_read_2d(d, D_MASK, s, 1, p->c_mask, err)) return -1;
        size_t at = (size_t)(s - s0) * part;
        if (p0 == 0 && np == T && ids && lp) {   /* whole sequences, both outputs: straight to the caller */
            if (decode_one(d, s, base, mk, ids + at, lp + at, err)) return -1;
            continue;
        }
        p->cached = -1;   /* through the cache: a read of the ids, then of the log-probs, decodes once */
        if (decode_one(d, s, base, mk, p->c_ids, p->c_lp, err)) return -1;
        p->cached = s;
        if (ids) memcpy(ids + at, p->c_ids + p0 * k, part * sizeof *ids);
        if (lp) memcpy(lp + at, p->c_lp + p0 * k, part * sizeof *lp);
    }
    return 0;
}

double kdd_pack_check_eps(const kd_dump_meta *m, double *eps_abs) {
    /* Σ p̂ may exceed Σ p by Σ p̂·(e^err − 1), err ≤ (knee + |lp̂|)·κ, κ = e^{step/(2·knee)} − 1 (+ 1% for
     * second-order terms), on top of the float16 rounding of values packed from a float16 dump */
    double kappa = expm1(m->pack_step / (2 * m->pack_knee)) * 1.01;
    *eps_abs = kappa * m->pack_knee;
    return kappa + 1.0 / 2048;
}
