/*
 * kd_dump.c — the teacher-dump reader, writer and validator (see kd_dump.h and
 * docs/dump-format.md).
 *
 * HDF5 calls are serialised by one mutex (kd may be linked against a libhdf5
 * built without thread safety) and run with HDF5's own error printing off:
 * failures become kd_err messages that quote the innermost HDF5 error. float16
 * and uint16 data are read raw into a kdd_scratch buffer and widened here (F16C
 * when the CPU has it), which is much faster than HDF5's soft conversions.
 */
#include "data/kd_dump.h"
#include "data/kd_dump_impl.h"
#include "data/kd_dump_probe.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kd_cpu.h"
#include "core/kd_fp16.h"
#include "data/kd_dump_codec.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define SCRATCH_MAX (16u << 20)   /* bytes of raw data converted per HDF5 read or write */
#define CHUNK_MAX (4u << 20)      /* largest chunk kd writes */

static pthread_mutex_t g_h5_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static hid_t kdd_g_f16 = -1;   /* IEEE binary16, little-endian (h5py's float16) */
static int g_f16c;

hid_t kdd_f16(void) { return kdd_g_f16; }

static void init_once(void) {
    /* kd closes every HDF5 object itself; HDF5's exit handler would only retry the
     * flush of a file whose write failed (a full disk), which loops or crashes in
     * libhdf5 1.10. Without it a failed file is simply dropped at exit: its last
     * complete flush is what a resume finds and verifies. */
    H5dont_atexit();
    kdd_g_f16 = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(kdd_g_f16, 15, 10, 5, 0, 10);
    H5Tset_size(kdd_g_f16, 2);
    H5Tset_ebias(kdd_g_f16, 15);
    H5Tlock(kdd_g_f16);
    kd_cpu_info cpu;   /* (clang's __builtin_cpu_supports knows no "f16c") */
    kd_cpu_detect(&cpu);
    g_f16c = cpu.f16c && cpu.avx;
}

void kdd_enter(kdd_guard *g) {
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g_h5_mutex);
    H5Eget_auto2(H5E_DEFAULT, &g->func, &g->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void kdd_leave(kdd_guard *g) {
    H5Eclear2(H5E_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, g->func, g->data);
    pthread_mutex_unlock(&g_h5_mutex);
}

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    if (e->desc && *e->desc) snprintf((char *)data, 256, "%s", e->desc);   /* keeps the innermost */
    return 0;
}

__attribute__((format(printf, 2, 3))) int kdd_h5_fail(kd_err *err, const char *fmt, ...) {
    char msg[KD_ERR_MSG_MAX], h5[256] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, h5);
    H5Eclear2(H5E_DEFAULT);
    return h5[0] ? kd_errf(err, "%s" KDD_H5_MARK "%s)", msg, h5) : kd_errf(err, "%s", msg);
}

static void closeh(hid_t *h) {
    if (*h >= 0) H5Oclose(*h);
    *h = -1;
}

/* ---- conversions ------------------------------------------------------------------ */

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint16_t *in, float *out, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    for (; i < n; i++) out[i] = kd_fp16_to_f32(in[i]);
}
#endif

static void f16_to_f32(const uint16_t *in, float *out, size_t n) {
#if defined(__x86_64__)
    if (g_f16c) {
        f16_to_f32_f16c(in, out, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) out[i] = kd_fp16_to_f32(in[i]);
}

static void u16_to_i32(const uint16_t *restrict in, int32_t *restrict out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = in[i];
}

const char *kd_dump_id_dtype_for(int64_t vocab_size) { return vocab_size <= 65536 ? "uint16" : "int32"; }

/* ---- dtypes ------------------------------------------------------------------------- */

/* Class of a file datatype and its numpy-style name. */
int kdd_dtype_of(hid_t t, char *name, size_t n, int *bytes, int *is_signed) {
    H5T_class_t c = H5Tget_class(t);
    size_t sz = H5Tget_size(t);
    *bytes = sz > (size_t)INT_MAX ? INT_MAX : (int)sz;   /* a damaged file's size: not a bit count to overflow */
    *is_signed = 0;
    if (c == H5T_INTEGER) {
        *is_signed = H5Tget_sign(t) == H5T_SGN_2;
        snprintf(n ? name : NULL, n, "%sint%llu", *is_signed ? "" : "u", (unsigned long long)sz * 8ull);
        return DT_INT;
    }
    if (c == H5T_FLOAT) {
        size_t spos, epos, esize, mpos, msize;
        H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize);
        if (sz == 2 && epos == 10 && esize == 5 && msize == 10 && H5Tget_ebias(t) == 15) {
            snprintf(name, n, "float16");
            return DT_F16;
        }
        if (sz == 2 && esize == 8 && msize == 7) snprintf(name, n, "bfloat16");
        else snprintf(name, n, "float%llu", (unsigned long long)sz * 8ull);
        return sz == 4 && esize == 8 && msize == 23 ? DT_F32 : DT_OTHER;
    }
    static const char *names[] = {[H5T_TIME] = "time",     [H5T_STRING] = "string", [H5T_BITFIELD] = "bitfield",
                                  [H5T_OPAQUE] = "opaque", [H5T_COMPOUND] = "compound",
                                  [H5T_REFERENCE] = "reference", [H5T_ENUM] = "enum (numpy bool?)",
                                  [H5T_VLEN] = "vlen",     [H5T_ARRAY] = "array"};
    snprintf(name, n, "%s", c > 0 && c < H5T_NCLASSES && names[c] ? names[c] : "unknown");
    return DT_OTHER;
}

/* ---- attributes ----------------------------------------------------------------------- */

/* Opens attribute `name` of obj holding one element of class c1 or c2; 0 = absent (when optional). */
static hid_t attr_open(hid_t obj, const char *file, const char *name, H5T_class_t c1, H5T_class_t c2,
                       const char *expected, int required, kd_err *err) {
    kdd_stage("attribute '%s'", name);
    if (H5Aexists(obj, name) <= 0) {
        if (required) kd_errf(err, "%s: attribute '%s' is missing, expected %s", file, name, expected);
        return required ? -1 : 0;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return kdd_h5_fail(err, "%s: attribute '%s': cannot open", file, name);
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    H5T_class_t c = H5Tget_class(t);
    hssize_t np = H5Sget_simple_extent_npoints(s);
    char tn[32];
    int b, sg;
    kdd_dtype_of(t, tn, sizeof tn, &b, &sg);
    H5Tclose(t);
    H5Sclose(s);
    if ((c != c1 && c != c2) || np != 1) {
        H5Aclose(a);
        return kd_errf(err, "%s: attribute '%s' is %s with %lld element(s), expected %s", file, name, tn,
                       (long long)np, expected);
    }
    return a;
}

int kdd_attr_int(hid_t obj, const char *file, const char *name, int required, int64_t lo, int64_t hi,
                    int64_t *out, kd_err *err) {
    char exp[96];
    snprintf(exp, sizeof exp, "an integer in [%" PRId64 ", %" PRId64 "]", lo, hi);
    hid_t a = attr_open(obj, file, name, H5T_INTEGER, H5T_INTEGER, exp, required, err);
    if (a <= 0) return (int)a;
    int64_t v = 0;
    herr_t rc = H5Aread(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    if (rc < 0) return kdd_h5_fail(err, "%s: attribute '%s': cannot read", file, name);
    if (v < lo || v > hi) return kd_errf(err, "%s: attribute '%s' = %" PRId64 ", expected %s", file, name, v, exp);
    *out = v;
    return 0;
}

static int attr_double(hid_t obj, const char *file, const char *name, double *out, kd_err *err) {
    hid_t a = attr_open(obj, file, name, H5T_FLOAT, H5T_INTEGER, "a number", 1, err);
    if (a < 0) return -1;
    herr_t rc = H5Aread(a, H5T_NATIVE_DOUBLE, out);
    H5Aclose(a);
    return rc < 0 ? kdd_h5_fail(err, "%s: attribute '%s': cannot read", file, name) : 0;
}

/* A string attribute (variable or fixed length) into out[0..n). */
int kdd_attr_string(hid_t obj, const char *file, const char *name, int required, char *out, size_t n, kd_err *err) {
    hid_t a = attr_open(obj, file, name, H5T_STRING, H5T_STRING, "a string", required, err);
    if (a <= 0) return (int)a;
    hid_t ft = H5Aget_type(a), mt = H5Tcopy(H5T_C_S1);
    H5Tset_cset(mt, H5Tget_cset(ft));
    herr_t rc;
    char *s = NULL;
    if (H5Tis_variable_str(ft) > 0) {
        H5Tset_size(mt, H5T_VARIABLE);
        rc = H5Aread(a, mt, &s);
        if (rc >= 0) snprintf(out, n, "%s", s ? s : "");
        if (s) H5free_memory(s);
    } else {
        size_t sz = H5Tget_size(ft);
        if (sz == 0 || sz > 65536) {   /* checked before allocating: a hostile size is not a buffer size */
            H5Tclose(mt);
            H5Tclose(ft);
            H5Aclose(a);
            return kd_errf(err, "%s: attribute '%s' is a fixed-length string of %zu bytes, expected 1 to 65536", file,
                           name, sz);
        }
        H5Tset_size(mt, sz + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        s = calloc(1, sz + 1);
        rc = s ? H5Aread(a, mt, s) : -1;
        if (rc >= 0) snprintf(out, n, "%s", s);
        free(s);
    }
    H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
    return rc < 0 ? kdd_h5_fail(err, "%s: attribute '%s': cannot read", file, name) : 0;
}

static int attr_write(hid_t obj, const char *name, hid_t type, const void *v) {
    hid_t a = H5Aexists(obj, name) > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : -1;
    if (a < 0) {
        hid_t s = H5Screate(H5S_SCALAR);
        a = H5Acreate2(obj, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
        H5Sclose(s);
    }
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

int kdd_attr_write_i64(hid_t obj, const char *name, int64_t v) { return attr_write(obj, name, H5T_NATIVE_INT64, &v); }

int kdd_attr_write_f64(hid_t obj, const char *name, double v) { return attr_write(obj, name, H5T_IEEE_F64LE, &v); }

int kdd_attr_write_str(hid_t obj, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = attr_write(obj, name, t, &v);
    H5Tclose(t);
    return rc;
}

/* ---- the open dump ----------------------------------------------------------------- */

static const char *const g_dnames[3][D_COUNT] = {{"tokens", "loss_mask", "topk_ids", "topk_logprobs"},
                                                 {"tokens", "loss_mask", "topk_ids", "logits"},
                                                 {"tokens", "loss_mask", "sample_ids", "sample_counts"}};

const char *kdd_dname(const kd_dump *d, int i) { return g_dnames[d->meta.sampled ? 2 : d->meta.k == 0][i]; }

float kd_dump_sample_lp(int count, int n) {
    return count > 0 && n > 0 ? logf((float)count / (float)n) : -INFINITY;
}

void *kdd_scratch(kd_dump *d, size_t bytes, kd_err *err) {
    if (bytes <= d->scratch_cap) return d->scratch;
    void *p = realloc(d->scratch, bytes);
    if (!p) {
        kd_errf(err, "%s: out of memory (%zu bytes)", d->path, bytes);
        return NULL;
    }
    d->scratch = p;
    d->scratch_cap = bytes;
    return p;
}

void kdd_free(kd_dump *d) {
    if (!d) return;
    for (int i = 0; i < D_COUNT; i++) closeh(&d->ds[i]);
    kdd_pack_free(d);
    if (d->file >= 0) H5Fclose(d->file);
    if (d->tok_state == 1) kd_dump_tokenizer_free(&d->tok_cache);
    free(d->scratch);
    free(d);
}

/* Open dataset i, check its rank, trailing dims, dtype and filters. */
static int open_dataset(kd_dump *d, int i, int required, int rank, const int64_t *tail, const char *expected_dt,
                        kd_err *err) {
    const char *f = d->path, *nm = kdd_dname(d, i);
    kdd_stage("dataset '%s'", nm);
    if (H5Lexists(d->file, nm, H5P_DEFAULT) <= 0) {
        if (required) return kd_errf(err, "%s: dataset '%s' is missing", f, nm);
        return 0;
    }
    hid_t ds = d->ds[i] = H5Dopen2(d->file, nm, H5P_DEFAULT);
    if (ds < 0) return kdd_h5_fail(err, "%s: '%s' is not a readable dataset", f, nm);
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds), dcpl = H5Dget_create_plist(ds);
    hsize_t dims[8] = {0};
    int r = H5Sget_simple_extent_ndims(sp), bytes, sg, rc = 0;
    if (r > 0 && r <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
    char tn[32], got[160], want[160];
    int dt = kdd_dtype_of(ty, tn, sizeof tn, &bytes, &sg);
    int bad_shape = r != rank;
    for (int j = 1; j < rank && !bad_shape; j++) bad_shape = (int64_t)dims[j] != tail[j - 1];
    if (bad_shape) {
        int n = snprintf(got, sizeof got, "[");
        for (int j = 0; j < r && j < 8; j++) n += snprintf(got + n, sizeof got - (size_t)n, "%s%llu", j ? ", " : "", (unsigned long long)dims[j]);
        snprintf(got + n, sizeof got - (size_t)n, "]");
        n = snprintf(want, sizeof want, "[n_seq");
        for (int j = 1; j < rank; j++) n += snprintf(want + n, sizeof want - (size_t)n, ", %" PRId64, tail[j - 1]);
        snprintf(want + n, sizeof want - (size_t)n, "]");
        rc = kd_errf(err, "%s: dataset '%s': shape %s, expected %s", f, nm, got, want);
    } else {
        int ok;
        if (i == D_MASK) ok = dt == DT_INT && bytes == 1;
        else if (i == D_VALUES && d->meta.sampled) ok = dt == DT_INT && bytes == 1 && !sg;
        else if (i == D_VALUES) ok = dt == DT_F16 || dt == DT_F32;
        else ok = dt == DT_INT && (bytes >= 4 || (bytes == 2 && (sg ? 32768 : 65536) >= d->meta.vocab_size));
        if (!ok)
            rc = kd_errf(err, "%s: dataset '%s': dtype %s, expected %s%s", f, nm, tn, expected_dt,
                         dt == DT_INT && bytes == 2 ? " (too narrow for the vocabulary)" : "");
        d->dt[i] = dt;
        d->raw16[i] = (dt == DT_F16) || (dt == DT_INT && bytes == 2 && !sg);
        if (i == D_VALUES && d->meta.sampled) d->raw16[i] = 0;
        d->dims0[i] = (int64_t)dims[0];
        char *dst = i == D_TOKENS ? d->meta.tokens_dtype : i == D_IDS ? d->meta.ids_dtype : i == D_VALUES ? d->meta.values_dtype : NULL;
        if (dst) snprintf(dst, sizeof d->meta.ids_dtype, "%s", tn);
        if (i == D_VALUES) d->meta.value_dtype = dt == DT_F16 ? KD_DUMP_F16 : KD_DUMP_F32;
        if (i == D_VALUES && d->meta.sampled) d->meta.value_dtype = KD_DUMP_F32;   /* as a reader returns them */
    }
#if H5_VERSION_GE(1, 10, 3) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (!rc && (i == D_TOKENS || i == D_MASK) && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_nfilters(dcpl) == 0) {
        hsize_t cdims[8] = {0};
        hid_t want_t = i == D_MASK ? H5T_STD_U8LE : d->raw16[i] ? H5T_STD_U16LE : H5T_STD_I32LE;
        d->direct[i] = H5Pget_chunk(dcpl, 8, cdims) == 2 && cdims[0] == 1 && cdims[1] == dims[1] && H5Tequal(ty, want_t) > 0;
    }
#endif
    for (int j = 0, nf = rc ? 0 : H5Pget_nfilters(dcpl); j < nf; j++) {
        unsigned flags, cd[8];
        size_t ncd = 8;
        char fname[64] = "";
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)j, &flags, &ncd, cd, sizeof fname, fname, NULL);
        if (H5Zfilter_avail(id) <= 0)
            rc = kd_errf(err, "%s: dataset '%s' uses HDF5 filter %d (%s), which this libhdf5 lacks", f, nm, (int)id,
                         fname[0] ? fname : "unknown");
    }
    H5Sclose(sp);
    H5Tclose(ty);
    H5Pclose(dcpl);
    return rc ? -1 : 1;
}

/* partial: a writer's file (dataset lengths may disagree with n_seq; see resume). */
kd_dump *kdd_open_locked(const char *path, int rdwr, int partial, kd_err *err) {
    kd_dump *d = calloc(1, sizeof *d);
    if (!d) {
        kd_errf(err, "%s: out of memory", path);
        return NULL;
    }
    d->file = -1;
    for (int i = 0; i < D_COUNT; i++) d->ds[i] = -1;
    snprintf(d->path, sizeof d->path, "%s", path);
    kd_dump_meta *m = &d->meta;
    int64_t ver = 0, v = 0, k = 0, T = 0, nseq = -1;
    char fmt[64] = "", dist[32] = "", layout[64] = "";
    if (access(path, F_OK) != 0) {
        kd_errf(err, "%s: no such file", path);
        goto fail;
    }
    /* a writer caches no chunks: its data reaches the file inside H5Dwrite, where a
     * write error is reported, and closing a dataset has nothing left to write (HDF5
     * 1.10 leaves a dataset half-closed when that last flush fails, and crashes in its
     * exit handler) */
    kdd_stage("the file's superblock");
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (rdwr) H5Pset_cache(fapl, 0, 0, 0, 1.0);
    if (partial) H5Pset_file_locking(fapl, 0, 1);   /* the writer holds its own flock on the file (kd_dump_write.c) */
    d->file = H5Fopen(path, rdwr ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (d->file < 0) {
        kdd_h5_fail(err, "%s: not a readable HDF5 file (truncated or not HDF5?)", path);
        goto fail;
    }
    if (H5Aexists(d->file, "format") <= 0) {
        kd_errf(err, "%s: attribute 'format' is missing, expected \"" KD_DUMP_FORMAT "\" (not a kd teacher dump?)", path);
        goto fail;
    }
    if (kdd_attr_string(d->file, path, "format", 1, fmt, sizeof fmt, err)) goto fail;
    if (strcmp(fmt, KD_DUMP_FORMAT) != 0) {
        kd_errf(err, "%s: attribute 'format' = \"%s\", expected \"" KD_DUMP_FORMAT "\"", path, fmt);
        goto fail;
    }
    if (kdd_attr_int(d->file, path, "version", 1, 0, INT64_MAX, &ver, err)) goto fail;
    if (ver != KD_DUMP_VERSION) {
        kd_errf(err, "%s: attribute 'version' = %" PRId64 ", expected %d (the version this kd reads)", path, ver,
                KD_DUMP_VERSION);
        goto fail;
    }
    if (kdd_attr_int(d->file, path, "vocab_size", 1, 1, KD_DUMP_MAX_VOCAB, &v, err) ||
        kdd_attr_int(d->file, path, "k", 1, 0, v < KD_DUMP_MAX_K ? v : KD_DUMP_MAX_K, &k, err) ||
        kdd_attr_int(d->file, path, "seq_len", 1, 1, KD_DUMP_MAX_SEQ_LEN, &T, err) ||
        attr_double(d->file, path, "temperature", &m->temperature, err) ||
        kdd_attr_string(d->file, path, "teacher", 1, m->teacher, sizeof m->teacher, err) ||
        kdd_attr_int(d->file, path, "n_seq", 0, 0, INT64_MAX, &nseq, err) ||
        kdd_attr_string(d->file, path, "distribution", 0, dist, sizeof dist, err) ||
        kdd_attr_string(d->file, path, "layout", 0, layout, sizeof layout, err))
        goto fail;
    if (layout[0] && strcmp(layout, KD_DUMP_LAYOUT_PACKED)) {
        kd_errf(err, "%s: attribute 'layout' = \"%s\", expected \"" KD_DUMP_LAYOUT_PACKED "\" (or no attribute: the "
                "plain datasets)", path, layout);
        goto fail;
    }
    const int packed = layout[0] != 0;
    if (m->temperature != 1.0) {
        kd_errf(err, "%s: attribute 'temperature' = %g, expected 1 (version 1 stores temperature-1 distributions)",
                path, m->temperature);
        goto fail;
    }
    /* the kind of dump: attribute 'distribution' when present, else inferred from k */
    if (dist[0] && strcmp(dist, "topk") && strcmp(dist, "logits") && strcmp(dist, "none") && strcmp(dist, "sampled")) {
        kd_errf(err, "%s: attribute 'distribution' = \"%s\", expected \"topk\", \"logits\", \"sampled\" or \"none\" "
                "(tokens only)", path, dist);
        goto fail;
    }
    const int sampled = !strcmp(dist, "sampled");
    if (dist[0] && (!strcmp(dist, "topk") || sampled ? k == 0 : k != 0)) {
        kd_errf(err, "%s: attribute 'k' = %" PRId64 ", but attribute 'distribution' = \"%s\" needs %s", path, k, dist,
                !strcmp(dist, "topk") || sampled ? "k ≥ 1" : !strcmp(dist, "none") ? "k = 0 (a dump of tokens only)" : "k = 0");
        goto fail;
    }
    if (sampled) {
        int64_t ns = 0;
        if (kdd_attr_int(d->file, path, "n_samples", 1, 1, KD_DUMP_MAX_SAMPLES, &ns, err)) goto fail;
        if (ns != k) {
            kd_errf(err, "%s: attribute 'n_samples' = %" PRId64 " but attribute 'k' = %" PRId64 ", expected equal (a "
                    "sampled dump has one slot per draw)", path, ns, k);
            goto fail;
        }
        if (packed) {
            kd_errf(err, "%s: attribute 'layout' = \"%s\" with attribute 'distribution' = \"sampled\": the packed "
                    "layout stores a top-k only", path, layout);
            goto fail;
        }
        m->sampled = 1;
        m->n_samples = (int32_t)ns;
    }
    m->vocab_size = v;
    m->k = (int32_t)k;
    m->seq_len = (int32_t)T;
    m->tokens_only = !strcmp(dist, "none");
    static const char *const teacher_ds[] = {"topk_ids", "topk_logprobs", "logits"};
    for (int i = 0; i < 3 && sampled; i++)
        if (H5Lexists(d->file, teacher_ds[i], H5P_DEFAULT) > 0) {
            kd_errf(err, "%s: dataset '%s' present although attribute 'distribution' = \"sampled\" says the dump "
                    "holds sampled ids ('sample_ids', 'sample_counts')", path, teacher_ds[i]);
            goto fail;
        }
    for (int i = 0; i < 3 && !sampled; i++) {
        int exists = H5Lexists(d->file, teacher_ds[i], H5P_DEFAULT) > 0,
            wanted = !m->tokens_only && (i == 2) == (k == 0) && !(packed && k > 0);
        if (packed && k > 0 && exists) {   /* the packed datasets replace all three */
            kd_errf(err, "%s: dataset '%s' present although attribute 'layout' = \"" KD_DUMP_LAYOUT_PACKED "\" says "
                    "the top-k is in 'topk_packed'", path, teacher_ds[i]);
            goto fail;
        }
        /* a full dump with a stray topk_logprobs was always accepted (ignored): it still is */
        if (exists && !wanted && (m->tokens_only || i != 1)) {
            if (m->tokens_only)
                kd_errf(err, "%s: dataset '%s' present although attribute 'distribution' = \"none\" says the dump "
                        "holds tokens only (no teacher distribution)", path, teacher_ds[i]);
            else
                kd_errf(err, "%s: dataset '%s' present although attribute 'k' = %" PRId64 " says this is a %s dump",
                        path, teacher_ds[i], k, k ? "top-k" : "full-logits");
            goto fail;
        }
        if (!exists && wanted) {
            if (dist[0])
                kd_errf(err, "%s: dataset '%s' is missing, but attribute 'distribution' = \"%s\" says the dump holds "
                        "the teacher's %s", path, teacher_ds[i], dist, k ? "top-k" : "full logits");
            else
                kd_errf(err, "%s: dataset '%s' is missing (attribute 'k' = %" PRId64 " says this is a %s dump%s)", path,
                        teacher_ds[i], k, k ? "top-k" : "full-logits",
                        k ? "" : "; a dump of tokens only needs attribute 'distribution' = \"none\"");
            goto fail;
        }
    }
    const char *id_exp = v <= 65536 ? "uint16 (or int32)" : "int32";
    int64_t t1[1] = {T + 1}, t0[1] = {T}, t3[2] = {T, k ? k : v};
    int r;
    if (open_dataset(d, D_TOKENS, 1, 2, t1, "int32", err) < 0) goto fail;
    if ((r = open_dataset(d, D_MASK, 0, 2, t0, "uint8", err)) < 0) goto fail;
    m->has_loss_mask = r;
    if (!m->tokens_only && !(packed && k > 0)) {
        if (k > 0 && open_dataset(d, D_IDS, 1, 3, t3, id_exp, err) < 0) goto fail;
        if (open_dataset(d, D_VALUES, 1, 3, t3, sampled ? "uint8" : "float16 or float32", err) < 0) goto fail;
    }
    m->n_seq = d->dims0[D_TOKENS];
    for (int i = 0; i < D_COUNT; i++) {
        if (d->ds[i] < 0) continue;
        if (partial && d->dims0[i] < m->n_seq) m->n_seq = d->dims0[i];
        if (!partial && d->dims0[i] != m->n_seq) {
            kd_errf(err, "%s: dataset '%s' has %" PRId64 " sequences but 'tokens' has %" PRId64, path, kdd_dname(d, i),
                    d->dims0[i], m->n_seq);
            goto fail;
        }
    }
    if (partial && nseq >= 0 && nseq < m->n_seq) m->n_seq = nseq;
    if (!partial && nseq >= 0 && nseq != m->n_seq) {
        kd_errf(err, "%s: attribute 'n_seq' = %" PRId64 " but the datasets hold %" PRId64
                " sequences (an interrupted write? resume it)", path, nseq, m->n_seq);
        goto fail;
    }
    if (packed && kdd_pack_open(d, partial, err)) goto fail;
    m->has_tokenizer = H5Lexists(d->file, "tokenizer", H5P_DEFAULT) > 0;
    return d;
fail:
    kdd_free(d);
    return NULL;
}

/* What kd_dump_open and the first reads do, in a probe child (kd_dump_probe.h): the
 * metadata, the tokenizer group and the first position of every dataset. The open's
 * refusal is returned, and the tokenizer group's when libhdf5 itself failed in it
 * (libhdf5 1.10 leaks on some of its error paths, and can crash on a second read of a
 * damaged group: such a group is not read in the parent at all); values kd refuses
 * in the group, and the data's errors, are the caller's when it reads them. */
static int probe_dump(const char *path, kd_err *err) {
    kd_dump *d = kdd_open_locked(path, 0, 0, err);
    if (!d) return -1;
    const kd_dump_meta *m = &d->meta;
    kd_err ignored;
    if (m->has_tokenizer) {
        kd_dump_tokenizer t;
        memset(&t, 0, sizeof t);
        kd_err te;
        int bad = kdd_read_tokenizer(d->file, d->path, m->vocab_size, &t, &te);
        kd_dump_tokenizer_free(&t);
        if (bad && strstr(te.msg, KDD_H5_MARK)) {   /* libhdf5 failed in it (a value kd refuses stays the reader's) */
            if (err) *err = te;
            size_t l = err ? strlen(err->msg) : 0;
            if (err && l + 1 < sizeof err->msg)
                snprintf(err->msg + l, sizeof err->msg - l, "; the teacher's tokenizer (group 'tokenizer') is damaged "
                         "and the dump is refused whole (remove the group, e.g. with h5py, to use its sequences)");
            kdd_free(d);
            return -1;
        }
    }
    if (m->n_seq > 0) {
        int64_t cols = m->k ? m->k : m->vocab_size;
        void *buf = malloc((size_t)(m->seq_len + 1 > cols ? m->seq_len + 1 : cols) * 4);
        for (int i = 0; buf && i < D_COUNT; i++) {
            if (d->ds[i] < 0) continue;
            if (i == D_TOKENS || i == D_MASK) kdd_read_2d(d, i, 0, 1, buf, &ignored);
            else kdd_read_3d(d, i, 0, 1, 0, 1, buf, cols, &ignored);
        }
        free(buf);
    }
    kdd_free(d);
    return 0;
}

kd_dump *kd_dump_open(const char *path, kd_err *err) {
    kdd_guard g;
    kdd_enter(&g);
    kd_dump *d = kdd_probe(path, "kd teacher dump", probe_dump, err) ? NULL : kdd_open_locked(path, 0, 0, err);
    kdd_leave(&g);
    return d;
}

void kd_dump_close(kd_dump *d) {
    if (!d) return;
    kdd_guard g;
    kdd_enter(&g);
    kdd_free(d);
    kdd_leave(&g);
}

const kd_dump_meta *kd_dump_get_meta(const kd_dump *d) { return &d->meta; }
const char *kd_dump_path(const kd_dump *d) { return d->path; }

uint64_t kd_dump_storage_bytes(const kd_dump *d) {
    kdd_guard g;
    kdd_enter(&g);
    uint64_t n = 0;
    for (int i = 0; i < D_COUNT; i++)
        if (d->ds[i] >= 0) n += H5Dget_storage_size(d->ds[i]);
    n += kdd_pack_storage(d);
    kdd_leave(&g);
    return n;
}

/* ---- reading ------------------------------------------------------------------------ */

/* Read or write the block [s0, s0+ns) × [p0, p0+np) × [0, cols) of dataset i (rank 2 when np < 0)
 * between the file and mem, a contiguous buffer of `mtype` elements. */
int kdd_io_block(kd_dump *d, int i, int write, int64_t s0, int64_t ns, int64_t p0, int64_t np, int64_t cols,
                    hid_t mtype, void *mem, kd_err *err) {
    int rank = np < 0 ? 2 : 3;
    hsize_t start[3] = {(hsize_t)s0, (hsize_t)(rank == 2 ? 0 : p0), 0};
    hsize_t count[3] = {(hsize_t)ns, (hsize_t)(rank == 2 ? cols : np), (hsize_t)cols};
    hsize_t total = count[0] * count[1] * (rank == 3 ? count[2] : 1);
    if (total == 0) return 0;
    kdd_stage("the data of dataset '%s'", kdd_dname(d, i));
    /* the memory space has the selection's shape: with another shape HDF5 maps every element to its chunk */
    hid_t fs = H5Dget_space(d->ds[i]), ms = H5Screate_simple(rank, count, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    errno = 0;
    if (rc >= 0) rc = write ? H5Dwrite(d->ds[i], mtype, ms, fs, H5P_DEFAULT, mem)
                            : H5Dread(d->ds[i], mtype, ms, fs, H5P_DEFAULT, mem);
    int e = errno;
    H5Sclose(ms);
    H5Sclose(fs);
    if (rc < 0)
        return kdd_h5_fail(err, "%s: dataset '%s': cannot %s sequences [%" PRId64 ", %" PRId64 ")%s%s", d->path,
                           kdd_dname(d, i), write ? "write" : "read", s0, s0 + ns, e ? ": " : "", e ? strerror(e) : "");
    return 0;
}

/* Read rows [s0, s0+ns) × positions [p0, p0+np) of dataset IDS or VALUES into out (int32 or float32),
 * rows `width` long (columns past the file's are −inf; the file's columns past width are skipped). */
int kdd_read_3d(kd_dump *d, int i, int64_t s0, int64_t ns, int64_t p0, int64_t np, void *out, int64_t width,
                   kd_err *err) {
    if (d->pack) return kdd_pack_read(d, s0, ns, p0, np, NULL, i == D_IDS ? out : NULL, i == D_VALUES ? out : NULL, err);
    int64_t cols = d->meta.k ? d->meta.k : d->meta.vocab_size, T = d->meta.seq_len;
    int64_t rc = cols < width ? cols : width;   /* columns read */
    int isf = i == D_VALUES, raw = d->raw16[i], cnt = isf && d->meta.sampled;
    size_t es = cnt ? 1 : raw ? 2 : 4;
    /* blocks of whole sequences when they fit the kdd_scratch limit, else of positions */
    int64_t per_seq = np * cols * (int64_t)es;
    int64_t sb = per_seq > 0 && per_seq <= SCRATCH_MAX ? (int64_t)SCRATCH_MAX / per_seq : 1;
    int64_t pb = per_seq > (int64_t)SCRATCH_MAX ? (int64_t)SCRATCH_MAX / (cols * (int64_t)es) + 1 : np;
    if (sb > ns) sb = ns;
    int direct = !raw && !cnt && rc == width && rc == cols;
    (void)T;
    for (int64_t s = s0; s < s0 + ns; s += sb) {
        int64_t sn = s + sb <= s0 + ns ? sb : s0 + ns - s;
        for (int64_t p = p0; p < p0 + np; p += pb) {
            int64_t pn = p + pb <= p0 + np ? pb : p0 + np - p;
            size_t nrow = (size_t)(sn * pn);
            char *dst = (char *)out + (size_t)(((s - s0) * np + (p - p0)) * width) * 4;
            hid_t mt = cnt ? H5T_NATIVE_UINT8 : isf ? (raw ? kdd_g_f16 : H5T_NATIVE_FLOAT) : (raw ? H5T_NATIVE_UINT16 : H5T_NATIVE_INT32);
            if (direct) {
                if (kdd_io_block(d, i, 0, s, sn, p, pn, cols, mt, dst, err)) return -1;
                continue;
            }
            void *buf = kdd_scratch(d, nrow * (size_t)cols * es, err);
            if (!buf || kdd_io_block(d, i, 0, s, sn, p, pn, cols, mt, buf, err)) return -1;
            for (size_t r = 0; r < nrow; r++) {
                const char *src = (const char *)buf + r * (size_t)cols * es;
                if (cnt) {   /* sampled: counts → log(count / N) */
                    float *o = (float *)dst + r * (size_t)width;
                    for (int64_t c = 0; c < rc; c++) o[c] = kd_dump_sample_lp(((const uint8_t *)src)[c], d->meta.n_samples);
                    for (int64_t c = rc; c < width; c++) o[c] = -INFINITY;
                } else if (isf) {
                    float *o = (float *)dst + r * (size_t)width;
                    if (raw) f16_to_f32((const uint16_t *)src, o, (size_t)rc);
                    else memcpy(o, src, (size_t)rc * 4);
                    for (int64_t c = rc; c < width; c++) o[c] = -INFINITY;
                } else {
                    int32_t *o = (int32_t *)dst + r * (size_t)width;
                    if (raw) u16_to_i32((const uint16_t *)src, o, (size_t)rc);
                    else memcpy(o, src, (size_t)rc * 4);
                }
            }
        }
    }
    return 0;
}

/* One sequence of tokens / loss_mask as its chunk's raw bytes (d->direct[i]): 0, or -1 when the chunk
 * cannot be read so (e.g. never written: the caller's H5Dread then gives the fill value or the error). */
static int read_chunk(kd_dump *d, int i, int64_t s, void *out) {
#if H5_VERSION_GE(1, 10, 3)
    hsize_t off[2] = {(hsize_t)s, 0};
    uint32_t filters = 0;   /* (an unallocated chunk fails; without filters a chunk is exactly cols elements) */
    if (H5Dread_chunk(d->ds[i], H5P_DEFAULT, off, &filters, out) < 0 || filters) return -1;
    return 0;
#else
    (void)d, (void)i, (void)s, (void)out;
    return -1;
#endif
}

int kdd_read_2d(kd_dump *d, int i, int64_t s0, int64_t ns, void *out, kd_err *err) {
    int64_t cols = d->meta.seq_len + (i == D_TOKENS);
    if (ns == 1 && d->direct[i] && s0 < d->dims0[i]) {   /* the loader's reads: one sequence */
        void *buf = i == D_TOKENS && d->raw16[i] ? kdd_scratch(d, (size_t)cols * 2, err) : out;
        if (buf && !read_chunk(d, i, s0, buf)) {
            if (buf != out) u16_to_i32(buf, out, (size_t)cols);
            return 0;
        }
        H5Eclear2(H5E_DEFAULT);
    }
    if (i == D_MASK) {
        if (d->ds[i] < 0) {
            memset(out, 1, (size_t)(ns * cols));
            return 0;
        }
        return kdd_io_block(d, i, 0, s0, ns, 0, -1, cols, H5T_NATIVE_UINT8, out, err);
    }
    if (!d->raw16[i]) return kdd_io_block(d, i, 0, s0, ns, 0, -1, cols, H5T_NATIVE_INT32, out, err);
    uint16_t *buf = kdd_scratch(d, (size_t)(ns * cols) * 2, err);
    if (!buf || kdd_io_block(d, i, 0, s0, ns, 0, -1, cols, H5T_NATIVE_UINT16, buf, err)) return -1;
    u16_to_i32(buf, out, (size_t)(ns * cols));
    return 0;
}

static int read_locked(kd_dump *d, int64_t first, int64_t count, const kd_dump_rows *o, kd_err *err) {
    const kd_dump_meta *m = &d->meta;
    if (first < 0 || count < 0 || first + count > m->n_seq)
        return kd_errf(err, "%s: sequences [%" PRId64 ", %" PRId64 ") requested, the dump has %" PRId64, d->path,
                       first, first + count, m->n_seq);
    if ((o->topk_ids || o->topk_logprobs || o->logits) && m->tokens_only)
        return kd_errf(err, "%s: %s requested from a dump of tokens only (attribute 'distribution' = \"none\": no "
                       "teacher distribution)", d->path, o->logits ? "logits" : "top-k");
    if ((o->topk_ids || o->topk_logprobs) && m->k == 0)
        return kd_errf(err, "%s: top-k requested from a full-logits dump (k = 0)", d->path);
    if (o->logits && m->k > 0)
        return kd_errf(err, "%s: logits requested from a top-k dump (k = %d)", d->path, m->k);
    if (count == 0) return 0;
    if (o->tokens && kdd_read_2d(d, D_TOKENS, first, count, o->tokens, err)) return -1;
    if (o->loss_mask && kdd_read_2d(d, D_MASK, first, count, o->loss_mask, err)) return -1;
    if (d->pack && (o->topk_ids || o->topk_logprobs))   /* one decode for both */
        return kdd_pack_read(d, first, count, 0, m->seq_len, o->loss_mask, o->topk_ids, o->topk_logprobs, err);
    if (o->topk_ids && kdd_read_3d(d, D_IDS, first, count, 0, m->seq_len, o->topk_ids, m->k, err)) return -1;
    if (o->topk_logprobs && kdd_read_3d(d, D_VALUES, first, count, 0, m->seq_len, o->topk_logprobs, m->k, err)) return -1;
    if (o->logits &&
        kdd_read_3d(d, D_VALUES, first, count, 0, m->seq_len, o->logits, o->logits_width ? o->logits_width : m->vocab_size, err))
        return -1;
    return 0;
}

int kd_dump_read(kd_dump *d, int64_t first, int64_t count, const kd_dump_rows *out, kd_err *err) {
    kdd_guard g;
    kdd_enter(&g);
    int rc = read_locked(d, first, count, out, err);
    kdd_leave(&g);
    return rc;
}

/* ---- tokenizer ------------------------------------------------------------------------- */

/* The whole 1-D dataset grp/name converted to mtype (class cls) into *out (malloc'ed); *n its length. */
static int read_1d(hid_t grp, const char *file, const char *name, int required, hid_t mtype, H5T_class_t cls,
                   void **out, int64_t *n, kd_err *err) {
    *out = NULL;
    *n = 0;
    kdd_stage("dataset 'tokenizer/%s'", name);
    if (H5Lexists(grp, name, H5P_DEFAULT) <= 0)
        return required ? kd_errf(err, "%s: dataset 'tokenizer/%s' is missing", file, name) : 0;
    hid_t ds = H5Dopen2(grp, name, H5P_DEFAULT);
    if (ds < 0) return kdd_h5_fail(err, "%s: 'tokenizer/%s' is not a readable dataset", file, name);
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    hsize_t dim = 0;
    int rank = H5Sget_simple_extent_ndims(sp), rc = 0, b, sg;
    char tn[32];
    kdd_dtype_of(ty, tn, sizeof tn, &b, &sg);
    if (rank != 1 || H5Tget_class(ty) != cls)
        rc = kd_errf(err, "%s: dataset 'tokenizer/%s': %s of rank %d, expected a 1-D %s array", file, name, tn, rank,
                     cls == H5T_FLOAT ? "float" : "integer");
    else {
        H5Sget_simple_extent_dims(sp, &dim, NULL);
        *out = malloc(dim ? dim * H5Tget_size(mtype) : 1);
        if (!*out) rc = kd_errf(err, "%s: out of memory", file);
        else if (dim && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
            rc = kdd_h5_fail(err, "%s: dataset 'tokenizer/%s': cannot read", file, name);
        *n = (int64_t)dim;
    }
    H5Sclose(sp);
    H5Tclose(ty);
    H5Dclose(ds);
    return rc ? -1 : 1;
}

static int check_offsets(const char *file, const char *name, const int64_t *off, int64_t n, int64_t nbytes,
                         kd_err *err) {
    for (int64_t i = 0; i <= n; i++)
        if ((i == 0 && off[0] != 0) || (i > 0 && off[i] < off[i - 1]) || off[i] > nbytes || (i == n && off[n] != nbytes))
            return kd_errf(err, "%s: dataset 'tokenizer/%s': entry %" PRId64 " = %" PRId64
                           ", expected offsets from 0, non-decreasing, ending at the byte count %" PRId64,
                           file, name, i, off[i], nbytes);
    return 0;
}

int kdd_read_tokenizer(hid_t file, const char *f, int64_t max_n, kd_dump_tokenizer *t, kd_err *err) {
    kdd_stage("group 'tokenizer'");
    if (H5Lexists(file, "tokenizer", H5P_DEFAULT) <= 0) return kd_errf(err, "%s: group 'tokenizer' is missing", f);
    hid_t g = H5Gopen2(file, "tokenizer", H5P_DEFAULT);
    if (g < 0) return kdd_h5_fail(err, "%s: 'tokenizer' is not a group", f);
    int64_t nb, no, n1, n2, mb = 0, mo = 0, v;
    int rc = -1;
    if (kdd_attr_string(g, f, "model", 1, t->model, sizeof t->model, err) ||
        kdd_attr_string(g, f, "pre", 0, t->pre, sizeof t->pre, err) ||
        read_1d(g, f, "piece_bytes", 1, H5T_NATIVE_UINT8, H5T_INTEGER, (void **)&t->piece_bytes, &nb, err) < 0 ||
        read_1d(g, f, "piece_offsets", 1, H5T_NATIVE_INT64, H5T_INTEGER, (void **)&t->piece_offsets, &no, err) < 0)
        goto out;
    if (no < 1 || no - 1 > max_n) {
        kd_errf(err, "%s: dataset 'tokenizer/piece_offsets' has %" PRId64 " entries, expected n + 1 with n ≤ "
                "vocab_size = %" PRId64, f, no, max_n);
        goto out;
    }
    t->n = (int32_t)(no - 1);
    if (check_offsets(f, "piece_offsets", t->piece_offsets, t->n, nb, err) ||
        read_1d(g, f, "scores", 0, H5T_NATIVE_FLOAT, H5T_FLOAT, (void **)&t->scores, &n1, err) < 0 ||
        read_1d(g, f, "types", 0, H5T_NATIVE_INT32, H5T_INTEGER, (void **)&t->types, &n2, err) < 0 ||
        read_1d(g, f, "merge_bytes", 0, H5T_NATIVE_UINT8, H5T_INTEGER, (void **)&t->merge_bytes, &mb, err) < 0 ||
        read_1d(g, f, "merge_offsets", t->merge_bytes != NULL, H5T_NATIVE_INT64, H5T_INTEGER,
                (void **)&t->merge_offsets, &mo, err) < 0)
        goto out;
    if ((t->scores && n1 != t->n) || (t->types && n2 != t->n)) {
        kd_errf(err, "%s: dataset 'tokenizer/%s' has %" PRId64 " entries, expected %d (one per piece)", f,
                t->scores && n1 != t->n ? "scores" : "types", t->scores && n1 != t->n ? n1 : n2, t->n);
        goto out;
    }
    for (int32_t i = 0; t->types && i < t->n; i++)
        if (t->types[i] < 0 || t->types[i] > 6) {
            kd_errf(err, "%s: dataset 'tokenizer/types': entry %d = %d, expected 0..6", f, i, t->types[i]);
            goto out;
        }
    if (t->merge_offsets) {
        if (mo < 1 || (!t->merge_bytes && mo > 1)) {
            kd_errf(err, "%s: dataset 'tokenizer/merge_offsets' has %" PRId64 " entries, expected ≥ 1", f, mo);
            goto out;
        }
        t->n_merges = (int32_t)(mo - 1);
        if (check_offsets(f, "merge_offsets", t->merge_offsets, t->n_merges, mb, err)) goto out;
    }
    static const char *ids[] = {"bos_id", "eos_id", "unk_id", "pad_id"};
    int32_t *dst[] = {&t->bos_id, &t->eos_id, &t->unk_id, &t->pad_id};
    for (int i = 0; i < 4; i++) {
        v = -1;
        if (kdd_attr_int(g, f, ids[i], 0, -1, t->n - 1, &v, err)) goto out;
        *dst[i] = (int32_t)v;
    }
    static const char *flags[] = {"add_bos", "add_eos", "add_space_prefix"};
    int *fl[] = {&t->add_bos, &t->add_eos, &t->add_space_prefix};
    for (int i = 0; i < 3; i++) {
        v = 0;
        if (kdd_attr_int(g, f, flags[i], 0, 0, 1, &v, err)) goto out;
        *fl[i] = (int)v;
    }
    rc = 0;
out:
    H5Gclose(g);
    return rc;
}

/* A deep copy of src into dst (zeroed first); -1 when out of memory. */
static int tokenizer_copy(kd_dump_tokenizer *dst, const kd_dump_tokenizer *src) {
    *dst = *src;
    dst->piece_bytes = NULL, dst->piece_offsets = NULL, dst->scores = NULL, dst->types = NULL;
    dst->merge_bytes = NULL, dst->merge_offsets = NULL;
    const size_t n = (size_t)src->n, nb = src->piece_offsets ? (size_t)src->piece_offsets[n] : 0,
                 nm = (size_t)src->n_merges, mb = src->merge_offsets ? (size_t)src->merge_offsets[nm] : 0;
#define DUP(field, count)                                                                                              \
    if (src->field && !(dst->field = malloc((count) * sizeof *src->field + 1))) return -1;                           \
    if (src->field) memcpy(dst->field, src->field, (count) * sizeof *src->field);
    DUP(piece_bytes, nb)
    DUP(piece_offsets, n + 1)
    DUP(scores, n)
    DUP(types, n)
    DUP(merge_bytes, mb)
    DUP(merge_offsets, nm + 1)
#undef DUP
    return 0;
}

int kd_dump_read_tokenizer(kd_dump *d, kd_dump_tokenizer *tok, kd_err *err) {
    memset(tok, 0, sizeof *tok);
    if (d->tok_state == 0) {   /* the first call reads the group; later ones copy what it gave */
        kdd_guard g;
        kdd_enter(&g);
        int rc = kdd_read_tokenizer(d->file, d->path, d->meta.vocab_size, &d->tok_cache, &d->tok_err);
        kdd_leave(&g);
        if (rc) kd_dump_tokenizer_free(&d->tok_cache);
        d->tok_state = rc ? -1 : 1;
    }
    if (d->tok_state < 0) {
        if (err) *err = d->tok_err;
        return -1;
    }
    if (tokenizer_copy(tok, &d->tok_cache)) {
        kd_dump_tokenizer_free(tok);
        return kd_errf(err, "%s: out of memory for the tokenizer", d->path);
    }
    return 0;
}

void kd_dump_tokenizer_free(kd_dump_tokenizer *t) {
    if (!t) return;
    free(t->piece_bytes);
    free(t->piece_offsets);
    free(t->scores);
    free(t->types);
    free(t->merge_bytes);
    free(t->merge_offsets);
    memset(t, 0, sizeof *t);
    t->bos_id = t->eos_id = t->unk_id = t->pad_id = -1;
}

static void quote(char *out, size_t n, const uint8_t *b, int64_t len) {
    size_t k = 0;
    for (int64_t i = 0; i < len && k + 5 < n; i++)
        k += (size_t)snprintf(out + k, n - k, b[i] >= 32 && b[i] < 127 && b[i] != '\'' ? "%c" : "\\x%02x", b[i]);
    out[k < n ? k : n - 1] = '\0';
}

int kd_dump_tokenizer_compare(const kd_dump_tokenizer *a, const char *an, const kd_dump_tokenizer *b, const char *bn,
                              kd_err *err) {
    if (strcmp(a->model, b->model))
        return kd_errf(err, "tokenizer model \"%s\" (%s) differs from \"%s\" (%s)", a->model, an, b->model, bn);
    if (a->n != b->n) return kd_errf(err, "tokenizer of %s has %d pieces, %s has %d", an, a->n, bn, b->n);
    for (int32_t i = 0; i < a->n; i++) {
        int64_t la = a->piece_offsets[i + 1] - a->piece_offsets[i], lb = b->piece_offsets[i + 1] - b->piece_offsets[i];
        const uint8_t *pa = a->piece_bytes + a->piece_offsets[i], *pb = b->piece_bytes + b->piece_offsets[i];
        if (la != lb || memcmp(pa, pb, (size_t)la)) {
            char qa[96], qb[96];
            quote(qa, sizeof qa, pa, la);
            quote(qb, sizeof qb, pb, lb);
            return kd_errf(err, "tokenizers differ at piece %d: '%s' (%s) vs '%s' (%s)", i, qa, an, qb, bn);
        }
        if (a->types && b->types && a->types[i] != b->types[i])
            return kd_errf(err, "tokenizers differ at piece %d: type %d (%s) vs %d (%s)", i, a->types[i], an,
                           b->types[i], bn);
    }
    const int32_t va[] = {a->bos_id, a->eos_id, a->unk_id}, vb[] = {b->bos_id, b->eos_id, b->unk_id};
    static const char *nm[] = {"bos_id", "eos_id", "unk_id"};
    for (int i = 0; i < 3; i++)
        if (va[i] != vb[i]) return kd_errf(err, "tokenizer %s %d (%s) differs from %d (%s)", nm[i], va[i], an, vb[i], bn);
    if (a->merge_offsets && b->merge_offsets &&
        (a->n_merges != b->n_merges || a->merge_offsets[a->n_merges] != b->merge_offsets[b->n_merges] ||
         memcmp(a->merge_bytes, b->merge_bytes, (size_t)a->merge_offsets[a->n_merges])))
        return kd_errf(err, "tokenizer merges of %s and %s differ", an, bn);
    return 0;
}
