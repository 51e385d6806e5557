/*
 * kd_safetensors.c — the safetensors reader and writer (see kd_safetensors.h).
 *
 * The reader trusts nothing in the file: the header is copied and parsed by
 * kd_json_parse, every field is type- and range-checked, offsets are checked
 * against the real data size, and all tensors are checked for duplicate names
 * and overlapping bytes before the handle is returned.
 */
#include "format/kd_safetensors.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/kd_fp16.h"
#include "core/kd_json.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kd_safetensors.c assumes a little-endian host (safetensors data is little-endian)"
#endif

#define ST_EXACT_INT 9007199254740992.0   /* 2^53 */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[KD_ST_DTYPE_COUNT] = {
    [KD_ST_F64] = {"F64", 8}, [KD_ST_F32] = {"F32", 4}, [KD_ST_F16] = {"F16", 2}, [KD_ST_BF16] = {"BF16", 2},
    [KD_ST_I64] = {"I64", 8}, [KD_ST_I32] = {"I32", 4}, [KD_ST_I16] = {"I16", 2}, [KD_ST_I8] = {"I8", 1},
    [KD_ST_U8] = {"U8", 1},   [KD_ST_BOOL] = {"BOOL", 1},
};
#define ST_DTYPE_LIST "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"

const char *kd_st_dtype_name(kd_st_dtype t) {
    return (unsigned)t < KD_ST_DTYPE_COUNT ? st_dtypes[t].name : "?";
}

size_t kd_st_dtype_size(kd_st_dtype t) { return (unsigned)t < KD_ST_DTYPE_COUNT ? st_dtypes[t].size : 0; }

int kd_st_dtype_from_name(const char *s, kd_st_dtype *out) {
    for (int i = 0; i < KD_ST_DTYPE_COUNT; i++)
        if (s && !strcmp(s, st_dtypes[i].name)) {
            *out = (kd_st_dtype)i;
            return 0;
        }
    return -1;
}

static void fmt_shape(char *out, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < n) snprintf(out + k, n - k, "]");
}

/* A JSON value as compact text for a message, cut to fit. */
static void fmt_json(const cJSON *v, char *out, size_t n) {
    char *s = v ? cJSON_PrintUnformatted(v) : NULL;
    if (!s) {
        snprintf(out, n, "%s", kd_json_type_name(v));
        return;
    }
    if (strlen(s) > 64)
        snprintf(out, n, "%.64s...", s);
    else
        snprintf(out, n, "%s", s);
    cJSON_free(s);
}

/* ---- reader ---------------------------------------------------------------------- */

typedef struct named {
    const char *name;
    int idx;
} named;

static int named_cmp(const void *a, const void *b) {
    const named *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

typedef struct span {
    uint64_t begin, end;
    int idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* A non-negative integer ≤ 2^53 held in a JSON number. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > ST_EXACT_INT || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* The one member `key` of entry; error when it appears more than once. */
static const cJSON *member(const cJSON *entry, const char *key, const char *file, const char *tname, int *dup,
                           kd_err *err) {
    const cJSON *found = NULL;
    *dup = 0;
    for (const cJSON *c = entry->child; c; c = c->next) {
        if (!c->string || strcmp(c->string, key)) continue;
        if (found) {
            *dup = 1;
            kd_errf(err, "%s: tensor '%s': field '%s' appears twice", file, tname, key);
            return NULL;
        }
        found = c;
    }
    return found;
}

static int parse_entry(kd_st_file *f, const cJSON *e, kd_st_tensor *t, kd_err *err) {
    const char *file = f->path, *tn = e->string;
    char found[96];
    size_t len = strlen(tn);
    if (len >= KD_ST_NAME_MAX)
        return kd_errf(err, "%s: tensor name '%.48s...' is %zu bytes long, expected at most %d", file, tn, len,
                       KD_ST_NAME_MAX - 1);
    memcpy(t->name, tn, len + 1);
    if (!cJSON_IsObject(e))
        return kd_errf(err, "%s: tensor '%s': entry is %s, expected an object with dtype, shape and data_offsets",
                       file, tn, kd_json_type_name(e));
    int dup;
    const cJSON *dt = member(e, "dtype", file, tn, &dup, err);
    if (dup) return -1;
    if (!dt) return kd_errf(err, "%s: tensor '%s': field 'dtype' is missing", file, tn);
    if (!cJSON_IsString(dt) || !dt->valuestring) {
        fmt_json(dt, found, sizeof found);
        return kd_errf(err, "%s: tensor '%s': field 'dtype': found %s, expected a string (one of " ST_DTYPE_LIST ")",
                       file, tn, found);
    }
    if (kd_st_dtype_from_name(dt->valuestring, &t->dtype))
        return kd_errf(err, "%s: tensor '%s': dtype '%.32s' is unknown, expected one of " ST_DTYPE_LIST, file, tn,
                       dt->valuestring);

    const cJSON *sh = member(e, "shape", file, tn, &dup, err);
    if (dup) return -1;
    if (!sh) return kd_errf(err, "%s: tensor '%s': field 'shape' is missing", file, tn);
    int nd = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1;
    int ok = nd >= 0 && nd <= KD_ST_MAX_DIMS;
    int64_t numel = 1, overflow = 0;
    if (ok) {
        int i = 0;
        for (const cJSON *d = sh->child; d && ok; d = d->next, i++) {
            uint64_t v;
            ok = !json_uint(d, &v);
            if (ok) {
                t->shape[i] = (int64_t)v;
                if (__builtin_mul_overflow(numel, (int64_t)v, &numel)) overflow = 1;
            }
        }
    }
    if (!ok) {
        fmt_json(sh, found, sizeof found);
        return kd_errf(err, "%s: tensor '%s': field 'shape': found %s, expected an array of at most %d "
                       "non-negative integers", file, tn, found, KD_ST_MAX_DIMS);
    }
    t->ndim = nd;
    int64_t nbytes = 0;
    if (overflow || __builtin_mul_overflow(numel, (int64_t)kd_st_dtype_size(t->dtype), &nbytes)) {
        fmt_shape(found, sizeof found, nd, t->shape);
        return kd_errf(err, "%s: tensor '%s': field 'shape' %s: the element count overflows 64 bits", file, tn,
                       found);
    }
    t->numel = numel;

    const cJSON *of = member(e, "data_offsets", file, tn, &dup, err);
    if (dup) return -1;
    if (!of) return kd_errf(err, "%s: tensor '%s': field 'data_offsets' is missing", file, tn);
    uint64_t b = 0, en = 0;
    ok = cJSON_IsArray(of) && cJSON_GetArraySize(of) == 2 && !json_uint(of->child, &b) &&
         !json_uint(of->child->next, &en) && b <= en && en <= f->data_len;
    if (!ok) {
        fmt_json(of, found, sizeof found);
        return kd_errf(err, "%s: tensor '%s': field 'data_offsets': found %s, expected two integers [begin, end] "
                       "with begin <= end <= %zu (the data size)", file, tn, found, f->data_len);
    }
    if (en - b != (uint64_t)nbytes)
        return kd_errf(err, "%s: tensor '%s': field 'data_offsets' [%" PRIu64 ", %" PRIu64 "] spans %" PRIu64
                       " bytes, expected %" PRId64 " (%" PRId64 " elements of %s, %zu bytes each)", file, tn, b, en,
                       en - b, nbytes, numel, kd_st_dtype_name(t->dtype), kd_st_dtype_size(t->dtype));
    t->begin = b;
    t->end = en;
    t->nbytes = (size_t)nbytes;
    t->data = f->data + b;
    return 0;
}

static int parse_meta(kd_st_file *f, cJSON *m, kd_err *err) {
    if (!cJSON_IsObject(m))
        return kd_errf(err, "%s: field '__metadata__' is %s, expected an object of strings", f->path,
                       kd_json_type_name(m));
    int n = cJSON_GetArraySize(m), i = 0;
    named *keys = calloc((size_t)n + 1, sizeof *keys);
    if (!keys) return kd_errf(err, "%s: out of memory reading '__metadata__'", f->path);
    for (const cJSON *c = m->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c) || !c->valuestring) {
            char found[96];
            fmt_json(c, found, sizeof found);
            free(keys);
            return kd_errf(err, "%s: field '__metadata__': key '%.64s': found %s, expected a string", f->path,
                           c->string, found);
        }
        keys[i] = (named){c->string, i};
    }
    qsort(keys, (size_t)n, sizeof *keys, named_cmp);
    for (i = 1; i < n; i++)
        if (!strcmp(keys[i - 1].name, keys[i].name)) {
            kd_errf(err, "%s: field '__metadata__': key '%.64s' appears twice", f->path, keys[i].name);
            free(keys);
            return -1;
        }
    free(keys);
    return 0;
}

/* Names unique, data spans disjoint; builds f->sorted. */
static int check_tensors(kd_st_file *f, kd_err *err) {
    int n = f->count;
    named *nm = malloc(((size_t)n + 1) * sizeof *nm);
    span *sp = malloc(((size_t)n + 1) * sizeof *sp);
    f->sorted = malloc(((size_t)n + 1) * sizeof *f->sorted);
    if (!nm || !sp || !f->sorted) {
        free(nm);
        free(sp);
        return kd_errf(err, "%s: out of memory indexing %d tensors", f->path, n);
    }
    for (int i = 0; i < n; i++) {
        nm[i] = (named){f->tensors[i].name, i};
        sp[i] = (span){f->tensors[i].begin, f->tensors[i].end, i};
    }
    qsort(nm, (size_t)n, sizeof *nm, named_cmp);
    qsort(sp, (size_t)n, sizeof *sp, span_cmp);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        f->sorted[i] = nm[i].idx;
        if (i && !strcmp(nm[i - 1].name, nm[i].name))
            rc = kd_errf(err, "%s: tensor '%s' appears twice in the header (duplicate name)", f->path, nm[i].name);
    }
    int last = -1;   /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < n && !rc; i++) {
        const kd_st_tensor *t = &f->tensors[sp[i].idx];
        if (t->begin == t->end) continue;
        if (last >= 0 && t->begin < f->tensors[last].end) {
            const kd_st_tensor *u = &f->tensors[last];
            rc = kd_errf(err, "%s: tensors '%s' and '%s' overlap: data_offsets [%" PRIu64 ", %" PRIu64 "] and [%" PRIu64
                         ", %" PRIu64 "]", f->path, u->name, t->name, u->begin, u->end, t->begin, t->end);
        }
        if (last < 0 || t->end > f->tensors[last].end) last = sp[i].idx;
    }
    free(nm);
    free(sp);
    return rc;
}

static int parse_into(kd_st_file *f, const unsigned char *b, size_t len, kd_err *err) {
    if (len < 8)
        return kd_errf(err, "%s: header length: the file has %zu bytes, expected at least 8", f->path, len);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)b[i] << (8 * i);
    if (n > KD_ST_MAX_HEADER)
        return kd_errf(err, "%s: header length %" PRIu64 " exceeds the limit of %" PRIu64 " bytes (100 MB)", f->path, n,
                       KD_ST_MAX_HEADER);
    if (n > len - 8)
        return kd_errf(err, "%s: header length %" PRIu64 " exceeds the file size minus 8 (%zu bytes)", f->path, n,
                       len - 8);
    f->header_len = (size_t)n;
    f->data = b + 8 + n;
    f->data_len = len - 8 - (size_t)n;

    char hname[600];
    snprintf(hname, sizeof hname, "%s: header", f->path);
    cJSON *root = kd_json_parse((const char *)b + 8, (size_t)n, hname, err);
    if (!root) return -1;
    if (!cJSON_IsObject(root)) {
        kd_errf(err, "%s: header is a JSON %s, expected an object", f->path, kd_json_type_name(root));
        cJSON_Delete(root);
        return -1;
    }
    int total = cJSON_GetArraySize(root), rc = 0;
    f->tensors = calloc((size_t)total + 1, sizeof *f->tensors);
    if (!f->tensors) {
        cJSON_Delete(root);
        return kd_errf(err, "%s: out of memory for %d tensors", f->path, total);
    }
    cJSON *meta = NULL;
    for (cJSON *e = root->child; e && !rc; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (meta)
                rc = kd_errf(err, "%s: field '__metadata__' appears twice in the header", f->path);
            else if (!(rc = parse_meta(f, e, err)))
                meta = e;
            continue;
        }
        rc = parse_entry(f, e, &f->tensors[f->count], err);
        if (!rc) f->count++;
    }
    if (!rc && meta) f->meta = cJSON_DetachItemViaPointer(root, meta);
    cJSON_Delete(root);
    if (!rc) rc = check_tensors(f, err);
    return rc;
}

static kd_st_file *st_new(const char *name, kd_err *err) {
    kd_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        kd_errf(err, "%s: out of memory", name);
        return NULL;
    }
    snprintf(f->path, sizeof f->path, "%s", name);
    return f;
}

kd_st_file *kd_st_parse(const void *bytes, size_t len, const char *name, kd_err *err) {
    kd_st_file *f = st_new(name ? name : "<buffer>", err);
    if (!f) return NULL;
    if (!bytes && len) len = 0;
    if (parse_into(f, bytes, len, err)) {
        kd_st_close(f);
        return NULL;
    }
    return f;
}

kd_st_file *kd_st_open(const char *path, kd_err *err) {
    kd_st_file *f = st_new(path, err);
    if (!f) return NULL;
    if (kd_mmap_open(&f->map, path, err) || parse_into(f, f->map.data, f->map.len, err)) {
        kd_st_close(f);
        return NULL;
    }
    return f;
}

void kd_st_close(kd_st_file *f) {
    if (!f) return;
    kd_mmap_close(&f->map);
    free(f->tensors);
    free(f->sorted);
    cJSON_Delete(f->meta);
    free(f);
}

void kd_st_release(const kd_st_file *f, const kd_st_tensor *t) {
    if (f && t) kd_mmap_release(&f->map, t->data, t->nbytes);   /* no-op outside a map (kd_st_parse) */
}

int kd_st_copy_f32(const kd_st_file *f, const kd_st_tensor *t, float *out, kd_err *err) {
    if (t->dtype != KD_ST_F32 && t->dtype != KD_ST_F16 && t->dtype != KD_ST_BF16)
        return kd_errf(err, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", f->path, t->name,
                       kd_st_dtype_name(t->dtype));
    const unsigned char *p = t->data;
    const size_t es = kd_st_dtype_size(t->dtype), chunk = ((size_t)16 << 20) / es;   /* elements per 16 MiB */
    const int bf = t->dtype == KD_ST_BF16;
    for (int64_t i0 = 0; i0 < t->numel; i0 += (int64_t)chunk) {
        int64_t n = t->numel - i0 < (int64_t)chunk ? t->numel - i0 : (int64_t)chunk;
        const unsigned char *src = p + (size_t)i0 * es;
        if (t->dtype == KD_ST_F32) {
            memcpy(out + i0, src, (size_t)n * es);
        } else {
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, src + 2 * i, 2);
                out[i0 + i] = bf ? kd_bf16_to_f32(h) : kd_fp16_to_f32(h);
            }
        }
        kd_mmap_release(&f->map, src, (size_t)n * es);
    }
    return 0;
}

const kd_st_tensor *kd_st_find(const kd_st_file *f, const char *name) {
    if (!f || !name || !f->sorted) return NULL;
    int lo = 0, hi = f->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const kd_st_tensor *t = &f->tensors[f->sorted[mid]];
        int c = strcmp(name, t->name);
        if (!c) return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *kd_st_meta(const kd_st_file *f, const char *key) {
    if (!f || !f->meta || !key) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->meta, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int kd_st_meta_count(const kd_st_file *f) { return f && f->meta ? cJSON_GetArraySize(f->meta) : 0; }

int kd_st_meta_at(const kd_st_file *f, int i, const char **key, const char **value) {
    if (!f || !f->meta || i < 0) return -1;
    const cJSON *v = cJSON_GetArrayItem(f->meta, i);
    if (!v) return -1;
    if (key) *key = v->string;
    if (value) *value = v->valuestring;
    return 0;
}

int kd_st_check_float(const kd_st_file *f, const kd_st_tensor *t, int ndim, const int64_t *expected_shape,
                      kd_err *err) {
    const char *name = t->name;
    if (t->dtype != KD_ST_F32 && t->dtype != KD_ST_F16 && t->dtype != KD_ST_BF16)
        return kd_errf(err, "%s: tensor '%s': dtype '%s', expected F32/F16/BF16", f->path, name,
                       kd_st_dtype_name(t->dtype));
    if (expected_shape) {
        int same = t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = t->shape[i] == expected_shape[i];
        if (!same) {
            char got[160], want[160];
            fmt_shape(got, sizeof got, t->ndim, t->shape);
            fmt_shape(want, sizeof want, ndim < 0 ? 0 : ndim > KD_ST_MAX_DIMS ? KD_ST_MAX_DIMS : ndim,
                      expected_shape);
            return kd_errf(err, "%s: tensor '%s': shape %s, expected %s", f->path, name, got, want);
        }
    }
    return 0;
}

int kd_st_read_f32(const kd_st_file *f, const char *name, float *out, int ndim, const int64_t *expected_shape,
                   kd_err *err) {
    const kd_st_tensor *t = kd_st_find(f, name);
    if (!t) return kd_errf(err, "%s: tensor '%s' not found", f ? f->path : "<null>", name ? name : "<null>");
    if (kd_st_check_float(f, t, ndim, expected_shape, err)) return -1;
    const unsigned char *p = t->data;
    if (t->dtype == KD_ST_F32) {
        if (t->nbytes) memcpy(out, p, t->nbytes);
    } else {
        int bf = t->dtype == KD_ST_BF16;
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = bf ? kd_bf16_to_f32(h) : kd_fp16_to_f32(h);
        }
    }
    return 0;
}

/* ---- writer ---------------------------------------------------------------------- */

typedef struct st_entry {
    char name[KD_ST_NAME_MAX];
    kd_st_dtype dtype;
    int ndim;
    int64_t shape[KD_ST_MAX_DIMS];
    size_t nbytes;     /* in the file */
    int64_t numel;
    const void *data;
    int from_f32;      /* data is float, converted to dtype while saving */
} st_entry;

struct kd_st_writer {
    st_entry *e;
    int n, cap;
    cJSON *meta;       /* "__metadata__" entries, in insertion order */
};

kd_st_writer *kd_st_writer_new(kd_err *err) {
    kd_st_writer *w = calloc(1, sizeof *w);
    if (!w) kd_errf(err, "out of memory creating a safetensors writer");
    return w;
}

void kd_st_writer_free(kd_st_writer *w) {
    if (!w) return;
    cJSON_Delete(w->meta);
    free(w->e);
    free(w);
}

static int writer_add(kd_st_writer *w, const char *name, kd_st_dtype dtype, int ndim, const int64_t *shape,
                      const void *data, int from_f32, kd_err *err) {
    if (!name || !*name) return kd_errf(err, "safetensors writer: tensor name is empty");
    size_t len = strlen(name);
    if (len >= KD_ST_NAME_MAX)
        return kd_errf(err, "safetensors writer: tensor name '%.48s...' is %zu bytes long, expected at most %d",
                       name, len, KD_ST_NAME_MAX - 1);
    if (!strcmp(name, "__metadata__"))
        return kd_errf(err, "safetensors writer: tensor name '__metadata__' is reserved");
    if ((unsigned)dtype >= KD_ST_DTYPE_COUNT)
        return kd_errf(err, "safetensors writer: tensor '%s': dtype %d, expected one of " ST_DTYPE_LIST, name,
                       (int)dtype);
    if (ndim < 0 || ndim > KD_ST_MAX_DIMS || (ndim && !shape))
        return kd_errf(err, "safetensors writer: tensor '%s': ndim %d, expected 0..%d with a shape", name, ndim,
                       KD_ST_MAX_DIMS);
    int64_t numel = 1, nbytes;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return kd_errf(err, "safetensors writer: tensor '%s': shape[%d] = %" PRId64 ", expected >= 0", name, i,
                           shape[i]);
        if (__builtin_mul_overflow(numel, shape[i], &numel))
            return kd_errf(err, "safetensors writer: tensor '%s': shape: the element count overflows", name);
    }
    if (__builtin_mul_overflow(numel, (int64_t)kd_st_dtype_size(dtype), &nbytes) || nbytes > (int64_t)1 << 53)
        return kd_errf(err, "safetensors writer: tensor '%s': shape: %" PRId64 " elements is too large", name, numel);
    if (!data && nbytes) return kd_errf(err, "safetensors writer: tensor '%s': data is NULL", name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].name, name))
            return kd_errf(err, "safetensors writer: tensor '%s' added twice (duplicate name)", name);
    if (w->n == w->cap) {
        int ncap = w->cap ? 2 * w->cap : 16;
        st_entry *ne = realloc(w->e, (size_t)ncap * sizeof *ne);
        if (!ne) return kd_errf(err, "safetensors writer: out of memory adding tensor '%s'", name);
        w->e = ne;
        w->cap = ncap;
    }
    st_entry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    memcpy(e->name, name, len + 1);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->numel = numel;
    e->nbytes = (size_t)nbytes;
    e->data = data;
    e->from_f32 = from_f32;
    return 0;
}

int kd_st_writer_add(kd_st_writer *w, const char *name, kd_st_dtype dtype, int ndim, const int64_t *shape,
                     const void *data, kd_err *err) {
    return writer_add(w, name, dtype, ndim, shape, data, 0, err);
}

int kd_st_writer_add_f32_as(kd_st_writer *w, const char *name, kd_st_dtype dtype, int ndim, const int64_t *shape,
                            const float *data, kd_err *err) {
    if (dtype != KD_ST_F32 && dtype != KD_ST_F16 && dtype != KD_ST_BF16)
        return kd_errf(err, "safetensors writer: tensor '%s': dtype '%s', expected F32/F16/BF16 for float data",
                       name ? name : "", kd_st_dtype_name(dtype));
    return writer_add(w, name, dtype, ndim, shape, data, dtype != KD_ST_F32, err);
}

int kd_st_writer_set_meta(kd_st_writer *w, const char *key, const char *value, kd_err *err) {
    if (!key || !value) return kd_errf(err, "safetensors writer: metadata key or value is NULL");
    if (!w->meta && !(w->meta = cJSON_CreateObject()))
        return kd_errf(err, "safetensors writer: out of memory for metadata '%s'", key);
    cJSON *v = cJSON_CreateString(value);
    int ok = v && (cJSON_GetObjectItemCaseSensitive(w->meta, key)
                       ? cJSON_ReplaceItemInObjectCaseSensitive(w->meta, key, v)
                       : cJSON_AddItemToObject(w->meta, key, v));
    if (!ok) {
        cJSON_Delete(v);
        return kd_errf(err, "safetensors writer: out of memory for metadata '%s'", key);
    }
    return 0;
}

/* A growing text buffer; oom sticks. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *s, const char *t, size_t n) {
    if (s->oom) return;
    if (s->len + n + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap : 1024;
        while (s->len + n + 1 > ncap) ncap *= 2;
        char *np = realloc(s->p, ncap);
        if (!np) {
            s->oom = 1;
            return;
        }
        s->p = np;
        s->cap = ncap;
    }
    memcpy(s->p + s->len, t, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void sb_printf(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *s, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(s, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void sb_json_str(sbuf *s, const char *str) {
    sb_put(s, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(s, e, 2);
        } else if (*p < 0x20) {
            sb_printf(s, "\\u%04x", *p);
        } else {
            sb_put(s, (const char *)p, 1);
        }
    }
    sb_put(s, "\"", 1);
}

static int write_entry(FILE *fp, const st_entry *e) {
    if (!e->nbytes) return 0;
    if (!e->from_f32) return fwrite(e->data, 1, e->nbytes, fp) == e->nbytes ? 0 : -1;
    const float *x = e->data;
    uint16_t tmp[4096];
    int bf = e->dtype == KD_ST_BF16;
    for (int64_t i = 0; i < e->numel;) {
        int64_t m = e->numel - i < 4096 ? e->numel - i : 4096;
        for (int64_t j = 0; j < m; j++) tmp[j] = bf ? kd_f32_to_bf16(x[i + j]) : kd_f32_to_fp16(x[i + j]);
        if (fwrite(tmp, 2, (size_t)m, fp) != (size_t)m) return -1;
        i += m;
    }
    return 0;
}

int kd_st_writer_save(const kd_st_writer *w, const char *path, kd_err *err) {
    sbuf h = {0};
    sb_put(&h, "{\"__metadata__\":{", 17);
    int has_format = cJSON_GetObjectItemCaseSensitive(w->meta, "format") != NULL;
    if (!has_format) sb_put(&h, "\"format\":\"pt\"", 13);
    for (const cJSON *m = w->meta ? w->meta->child : NULL; m; m = m->next) {
        if (m != w->meta->child || !has_format) sb_put(&h, ",", 1);
        sb_json_str(&h, m->string);
        sb_put(&h, ":", 1);
        sb_json_str(&h, m->valuestring);
    }
    sb_put(&h, "}", 1);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry *e = &w->e[i];
        sb_put(&h, ",", 1);
        sb_json_str(&h, e->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", kd_st_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++) sb_printf(&h, "%s%" PRId64, d ? "," : "", e->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + e->nbytes);
        off += e->nbytes;
    }
    sb_put(&h, "}", 1);
    while (!h.oom && h.len % 8) sb_put(&h, " ", 1);
    if (h.oom) {
        free(h.p);
        return kd_errf(err, "%s: out of memory building the safetensors header", path);
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)h.len >> (8 * i));

    kd_atomic_file af;
    if (kd_atomic_open(&af, path, err)) {
        free(h.p);
        return -1;
    }
    int bad = fwrite(lenb, 1, 8, af.f) != 8 || fwrite(h.p, 1, h.len, af.f) != h.len;
    for (int i = 0; i < w->n && !bad; i++) bad = write_entry(af.f, &w->e[i]) != 0;
    free(h.p);
    if (bad) {
        kd_atomic_abort(&af);
        return kd_errf(err, "%s: write failed (disk full?)", path);
    }
    return kd_atomic_commit(&af, err);
}
