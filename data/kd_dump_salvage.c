/*
 * kd_dump_salvage.c — recovery of a dump writer's file that a kill cut short
 * in the middle of an HDF5 write (see kd_dump_writer_resume).
 *
 * HDF5 1.10 has no journal: between two flushes its metadata (chunk indices,
 * object headers, the superblock) reaches the file piece by piece, so a writer
 * killed in the middle of an append or a flush can leave a file that still
 * reads but no longer takes writes (a chunk-index node past the end of the
 * allocation the superblock records). kdd_flush_complete tells such a file
 * from one whose last flush completed, and kdd_salvage copies the verified
 * sequences of a damaged file, bit for bit, into a new file that a resume
 * continues instead. Callers hold the HDF5 lock (kdd_enter).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/kd_dump_impl.h"

#define COPY_BLOCK ((size_t)8 << 20)   /* bytes per read/write while copying rows */

/* Little-endian unsigned of w bytes. */
static uint64_t le(const unsigned char *p, int w) {
    uint64_t v = 0;
    for (int i = w - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

int kdd_flush_complete(int fd, const char *path, int *complete, kd_err *err) {
    /* the superblock sits at 0 (kd writes no user block): signature, version, then (format
     * spec, "Superblock") version 0/1: sizes of offsets at byte 13, base address at 24 (v0)
     * or 28 (v1), then free-space address, end-of-file address; version 2/3: size of offsets
     * at byte 9, base address at 12, superblock-extension address, end-of-file address */
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char b[64];
    struct stat st;
    *complete = 0;
    ssize_t got = pread(fd, b, sizeof b, 0);
    if (got < 0 || fstat(fd, &st) != 0) return kd_errf(err, "%s: cannot read: %s", path, strerror(errno));
    if (got < 48 || memcmp(b, sig, 8) != 0) return 0;   /* no superblock at 0: not a file of kd's writer */
    int ver = b[8], w = ver <= 1 ? b[13] : b[9], at = ver == 0 ? 24 : ver == 1 ? 28 : 12;
    if (ver > 3 || (w != 4 && w != 8) || at + 4 * w > (int)got) return 0;
    uint64_t base = le(b + at, w), eoa = le(b + at + 2 * w, w);
    *complete = base + eoa == (uint64_t)st.st_size;
    return 0;
}

/* ---- copying -------------------------------------------------------------------------- */

typedef struct copy_ctx {
    hid_t src, dst;
    const char *spath, *dpath;
    int64_t n, packed_bytes;
    kd_err *err;
} copy_ctx;

/* One root attribute, with its own type (a variable-length string as a string). */
static herr_t copy_attr(hid_t obj, const char *name, const H5A_info_t *info, void *op) {
    (void)info;
    copy_ctx *c = op;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1, s = a >= 0 ? H5Aget_space(a) : -1;
    hid_t b = -1;
    herr_t rc = -1;
    void *buf = NULL;
    char *str = NULL;
    int vstr = t >= 0 && H5Tis_variable_str(t) > 0;
    size_t sz = t >= 0 ? H5Tget_size(t) * (size_t)(s >= 0 ? H5Sget_simple_extent_npoints(s) : 0) : 0;
    if (a < 0 || t < 0 || s < 0 || (vstr && H5Sget_simple_extent_npoints(s) != 1) || (!vstr && sz > 65536)) goto out;
    if (vstr) {
        if (H5Aread(a, t, &str) < 0) goto out;
    } else if (!(buf = malloc(sz ? sz : 1)) || H5Aread(a, t, buf) < 0) {
        goto out;
    }
    b = H5Acreate2(c->dst, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    rc = b >= 0 && H5Awrite(b, t, vstr ? (void *)&str : buf) >= 0 ? 0 : -1;
out:
    if (rc) kdd_h5_fail(c->err, "%s: attribute '%s': cannot copy it into %s", c->spath, name, c->dpath);
    if (str) H5free_memory(str);
    free(buf);
    if (b >= 0) H5Aclose(b);
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* Rows [0, rows) of a resizable dataset (dimension 0 unlimited), raw, in blocks. */
static int copy_rows(copy_ctx *c, const char *name, hid_t in) {
    hid_t sp = H5Dget_space(in), t = H5Dget_type(in), dcpl = H5Dget_create_plist(in), out = -1, osp = -1;
    hsize_t dims[H5S_MAX_RANK], maxd[H5S_MAX_RANK];
    int rank = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, maxd) : -1, rc = -1;
    void *buf = NULL;
    if (rank < 1 || t < 0 || dcpl < 0) goto out;
    int64_t rows = !strcmp(name, "topk_packed") ? c->packed_bytes : c->n;
    if (rows > (int64_t)dims[0]) rows = (int64_t)dims[0];   /* e.g. seq_checksum of a file cut short */
    size_t row = H5Tget_size(t);
    for (int i = 1; i < rank; i++) row *= dims[i];
    hsize_t odims[H5S_MAX_RANK];
    memcpy(odims, dims, sizeof dims);
    odims[0] = (hsize_t)rows;
    osp = H5Screate_simple(rank, odims, maxd);
    out = osp >= 0 ? H5Dcreate2(c->dst, name, t, osp, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    if (out < 0) goto out;
    int64_t blk = row ? (int64_t)(COPY_BLOCK / row) : 1;
    if (blk < 1) blk = 1;
    if (rows > 0 && !(buf = malloc(row * (size_t)(blk < rows ? blk : rows)))) goto out;
    for (int64_t r0 = 0; r0 < rows; r0 += blk) {
        hsize_t start[H5S_MAX_RANK] = {0}, cnt[H5S_MAX_RANK];
        memcpy(cnt, dims, sizeof dims);
        start[0] = (hsize_t)r0;
        cnt[0] = (hsize_t)(rows - r0 < blk ? rows - r0 : blk);
        hid_t ms = H5Screate_simple(rank, cnt, NULL), fi = H5Dget_space(in), fo = H5Dget_space(out);
        herr_t r = H5Sselect_hyperslab(fi, H5S_SELECT_SET, start, NULL, cnt, NULL);
        if (r >= 0) r = H5Sselect_hyperslab(fo, H5S_SELECT_SET, start, NULL, cnt, NULL);
        if (r >= 0) r = H5Dread(in, t, ms, fi, H5P_DEFAULT, buf);
        if (r >= 0) r = H5Dwrite(out, t, ms, fo, H5P_DEFAULT, buf);
        H5Sclose(ms);
        H5Sclose(fi);
        H5Sclose(fo);
        if (r < 0) goto out;
    }
    rc = 0;
out:
    if (rc) kdd_h5_fail(c->err, "%s: dataset '%s': cannot copy its first %" PRId64 " rows into %s", c->spath, name,
                        !strcmp(name, "topk_packed") ? c->packed_bytes : c->n, c->dpath);
    free(buf);
    if (out >= 0) H5Dclose(out);
    if (osp >= 0) H5Sclose(osp);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

/* One root object: a resizable dataset row by row, anything else (the tokenizer group, the
 * packed layout's id order) whole with H5Ocopy. */
static herr_t copy_link(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    (void)info;
    copy_ctx *c = op;
    H5O_info_t oi;
    if (H5Oget_info_by_name2(g, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0)   /* not the index sizes */
        return kdd_h5_fail(c->err, "%s: object '%s': cannot read its header", c->spath, name);
    if (oi.type == H5O_TYPE_DATASET) {
        hid_t ds = H5Dopen2(g, name, H5P_DEFAULT), sp = ds >= 0 ? H5Dget_space(ds) : -1;
        hsize_t dims[H5S_MAX_RANK], maxd[H5S_MAX_RANK];
        int rank = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, maxd) : -1;
        if (sp >= 0) H5Sclose(sp);
        int rc = ds < 0 || rank < 0 ? kdd_h5_fail(c->err, "%s: dataset '%s': cannot open", c->spath, name)
                 : rank >= 1 && maxd[0] == H5S_UNLIMITED ? copy_rows(c, name, ds)
                                                         : 1;
        if (ds >= 0) H5Dclose(ds);
        if (rc <= 0) return rc;
    }
    if (H5Ocopy(g, name, c->dst, name, H5P_DEFAULT, H5P_DEFAULT) < 0)
        return kdd_h5_fail(c->err, "%s: object '%s': cannot copy it into %s", c->spath, name, c->dpath);
    return 0;
}

int kdd_salvage(kd_dump *src, const char *dst, int64_t n, kd_err *err) {
    copy_ctx c = {src->file, -1, src->path, dst, n, 0, err};
    if (src->pack && n > 0) {   /* the packed bytes end where sequence n-1's do */
        hid_t ds = H5Dopen2(src->file, "topk_offsets", H5P_DEFAULT), fs = ds >= 0 ? H5Dget_space(ds) : -1;
        hsize_t at = (hsize_t)(n - 1), one = 1;
        hid_t ms = H5Screate_simple(1, &one, NULL);
        uint64_t end = 0;
        herr_t r = fs >= 0 ? H5Sselect_hyperslab(fs, H5S_SELECT_SET, &at, NULL, &one, NULL) : -1;
        if (r >= 0) r = H5Dread(ds, H5T_NATIVE_UINT64, ms, fs, H5P_DEFAULT, &end);
        H5Sclose(ms);
        if (fs >= 0) H5Sclose(fs);
        if (ds >= 0) H5Dclose(ds);
        if (r < 0) return kdd_h5_fail(err, "%s: dataset 'topk_offsets': cannot read sequence %" PRId64, src->path, n - 1);
        c.packed_bytes = (int64_t)end;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);   /* the caller holds the writer's flock */
    c.dst = H5Fcreate(dst, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (c.dst < 0) return kdd_h5_fail(err, "%s: cannot create", dst);
    if (err) err->msg[0] = 0;
    int rc = H5Aiterate2(src->file, H5_INDEX_NAME, H5_ITER_INC, NULL, copy_attr, &c) < 0 ||
             H5Literate(src->file, H5_INDEX_NAME, H5_ITER_INC, NULL, copy_link, &c) < 0;
    if (rc && err && !err->msg[0]) kdd_h5_fail(err, "%s: cannot list its attributes and datasets", src->path);
    if (!rc && kdd_attr_write_i64(c.dst, "n_seq", n))
        rc = kdd_h5_fail(err, "%s: cannot write attribute 'n_seq'", dst);
    if (H5Fclose(c.dst) < 0 && !rc) rc = kdd_h5_fail(err, "%s: cannot close", dst);
    if (rc) unlink(dst);
    return rc ? -1 : 0;
}
