/*
 * kd_gguf_write.c — the GGUF v3 container writer (see kd_gguf_write.h).
 */
#include "format/kd_gguf_write.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"

/* ---- the writer ------------------------------------------------------------------ */

typedef struct wkv {
    char *key;
    size_t klen;
    int32_t type;
    unsigned char *val;   /* the serialised value (after the type) */
    size_t vlen;
} wkv;

typedef struct wtensor {
    char name[KD_GGUF_MAX_NAME];
    int32_t type;
    uint32_t n_dims;
    int64_t ne[KD_GGUF_MAX_DIMS];
    uint64_t nbytes;
    const void *data;
    kd_gguf_fill_fn fill;
    void *ctx;
} wtensor;

struct kd_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
};

kd_gguf_writer *kd_gguf_writer_new(kd_err *err) {
    kd_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) {
        kd_errf(err, "gguf writer: out of memory");
        return NULL;
    }
    w->alignment = KD_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void kd_gguf_writer_free(kd_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

static int is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

/* Append a KV whose value bytes are val[0..vlen) (copied). */
static int add_kv(kd_gguf_writer *w, const char *key, int32_t type, const void *val, size_t vlen, kd_err *err) {
    if (!key || !*key) return kd_errf(err, "gguf writer: empty key");
    size_t klen = strlen(key);
    if (klen > KD_GGUF_MAX_KEY)
        return kd_errf(err, "gguf writer: key '%.40s...' is %zu bytes, at most %d allowed", key, klen, KD_GGUF_MAX_KEY);
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kv[i].klen == klen && !memcmp(w->kv[i].key, key, klen))
            return kd_errf(err, "gguf writer: duplicate key '%s'", key);
    if (!strcmp(key, "general.alignment")) {
        uint32_t a = 0;
        if (type != KD_GGUF_UINT32)
            return kd_errf(err, "gguf writer: key 'general.alignment' has type %s, expected UINT32", kd_gguf_type_name(type));
        memcpy(&a, val, 4);
        if (!is_pow2(a))
            return kd_errf(err, "gguf writer: general.alignment %" PRIu32 " is not a nonzero power of two", a);
        w->alignment = a;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 32;
        wkv *nk = realloc(w->kv, cap * sizeof *nk);
        if (!nk) return kd_errf(err, "gguf writer: out of memory");
        w->kv = nk;
        w->cap_kv = cap;
    }
    wkv *e = &w->kv[w->n_kv];
    e->key = malloc(klen + 1);
    e->val = malloc(vlen ? vlen : 1);
    if (!e->key || !e->val) {
        free(e->key);
        free(e->val);
        return kd_errf(err, "gguf writer: out of memory for key '%s'", key);
    }
    memcpy(e->key, key, klen + 1);
    e->klen = klen;
    e->type = type;
    if (vlen) memcpy(e->val, val, vlen);
    e->vlen = vlen;
    w->n_kv++;
    return 0;
}

int kd_gguf_writer_set_alignment(kd_gguf_writer *w, uint32_t alignment, int write_key, kd_err *err) {
    if (!is_pow2(alignment))
        return kd_errf(err, "gguf writer: alignment %" PRIu32 " is not a nonzero power of two", alignment);
    if (write_key) return kd_gguf_writer_add_u32(w, "general.alignment", alignment, err);
    w->alignment = alignment;
    return 0;
}

int kd_gguf_writer_add_scalar(kd_gguf_writer *w, const char *key, kd_gguf_type type, const void *value, kd_err *err) {
    size_t sz = kd_gguf_type_size(type);
    if (!sz) return kd_errf(err, "gguf writer: key '%s': %s is not a scalar type", key ? key : "", kd_gguf_type_name(type));
    if (type == KD_GGUF_BOOL && *(const unsigned char *)value > 1)
        return kd_errf(err, "gguf writer: key '%s': BOOL byte %u, expected 0 or 1", key, *(const unsigned char *)value);
    return add_kv(w, key, type, value, sz, err);
}

int kd_gguf_writer_add_u32(kd_gguf_writer *w, const char *key, uint32_t v, kd_err *err) {
    return kd_gguf_writer_add_scalar(w, key, KD_GGUF_UINT32, &v, err);
}
int kd_gguf_writer_add_i32(kd_gguf_writer *w, const char *key, int32_t v, kd_err *err) {
    return kd_gguf_writer_add_scalar(w, key, KD_GGUF_INT32, &v, err);
}
int kd_gguf_writer_add_u64(kd_gguf_writer *w, const char *key, uint64_t v, kd_err *err) {
    return kd_gguf_writer_add_scalar(w, key, KD_GGUF_UINT64, &v, err);
}
int kd_gguf_writer_add_f32(kd_gguf_writer *w, const char *key, float v, kd_err *err) {
    return kd_gguf_writer_add_scalar(w, key, KD_GGUF_FLOAT32, &v, err);
}
int kd_gguf_writer_add_bool(kd_gguf_writer *w, const char *key, int v, kd_err *err) {
    unsigned char b = v ? 1 : 0;
    return kd_gguf_writer_add_scalar(w, key, KD_GGUF_BOOL, &b, err);
}

int kd_gguf_writer_add_str(kd_gguf_writer *w, const char *key, const char *s, size_t len, kd_err *err) {
    if (len == (size_t)-1) len = strlen(s);
    unsigned char *buf = malloc(8 + len);
    if (!buf) return kd_errf(err, "gguf writer: out of memory for key '%s'", key);
    uint64_t l = len;
    memcpy(buf, &l, 8);
    memcpy(buf + 8, s, len);
    int rc = add_kv(w, key, KD_GGUF_STRING, buf, 8 + len, err);
    free(buf);
    return rc;
}

int kd_gguf_writer_add_arr(kd_gguf_writer *w, const char *key, kd_gguf_type elem_type, const void *data, uint64_t n,
                           kd_err *err) {
    size_t sz = kd_gguf_type_size(elem_type);
    if (!sz)
        return kd_errf(err, "gguf writer: key '%s': arrays of %s are not written (strings: kd_gguf_writer_add_arr_str; "
                       "nested arrays: llama.cpp refuses them)", key ? key : "", kd_gguf_type_name(elem_type));
    if (n > (SIZE_MAX - 12) / sz) return kd_errf(err, "gguf writer: key '%s': %" PRIu64 " elements overflow", key, n);
    if (elem_type == KD_GGUF_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (((const unsigned char *)data)[i] > 1)
                return kd_errf(err, "gguf writer: key '%s': BOOL element %" PRIu64 " is not 0 or 1", key, i);
    size_t len = 12 + (size_t)n * sz;
    unsigned char *buf = malloc(len);
    if (!buf) return kd_errf(err, "gguf writer: out of memory for key '%s'", key);
    int32_t et = elem_type;
    memcpy(buf, &et, 4);
    memcpy(buf + 4, &n, 8);
    if (n) memcpy(buf + 12, data, (size_t)n * sz);
    int rc = add_kv(w, key, KD_GGUF_ARRAY, buf, len, err);
    free(buf);
    return rc;
}

int kd_gguf_writer_add_arr_str(kd_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
                               uint64_t n, kd_err *err) {
    size_t len = 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : strlen(strs[i]);
        if (len > SIZE_MAX - 8 - l) return kd_errf(err, "gguf writer: key '%s': strings overflow", key);
        len += 8 + l;
    }
    unsigned char *buf = malloc(len), *p = buf + 12;
    if (!buf) return kd_errf(err, "gguf writer: out of memory for key '%s'", key);
    int32_t et = KD_GGUF_STRING;
    memcpy(buf, &et, 4);
    memcpy(buf + 4, &n, 8);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = lens ? lens[i] : strlen(strs[i]);
        memcpy(p, &l, 8);
        memcpy(p + 8, strs[i], (size_t)l);
        p += 8 + l;
    }
    int rc = add_kv(w, key, KD_GGUF_ARRAY, buf, len, err);
    free(buf);
    return rc;
}

static int add_tensor(kd_gguf_writer *w, const char *name, int32_t type, int n_dims, const int64_t *ne,
                      const void *data, kd_gguf_fill_fn fill, void *ctx, kd_err *err) {
    size_t nlen = name ? strlen(name) : 0;
    if (nlen == 0 || nlen >= KD_GGUF_MAX_NAME)
        return kd_errf(err, "gguf writer: tensor name '%s' has %zu bytes, expected 1..%d", name ? name : "", nlen,
                       KD_GGUF_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return kd_errf(err, "gguf writer: duplicate tensor '%s'", name);
    if (n_dims < 1 || n_dims > KD_GGUF_MAX_DIMS)
        return kd_errf(err, "gguf writer: tensor '%s': %d dims, expected 1..%d", name, n_dims, KD_GGUF_MAX_DIMS);
    const kd_ggml_type_info *ti = kd_ggml_type_get(type);
    if (!ti) return kd_errf(err, "gguf writer: tensor '%s': type %d (%s) is not one kd writes", name, (int)type, kd_ggml_type_name(type));
    wtensor t;
    memset(&t, 0, sizeof t);
    memcpy(t.name, name, nlen + 1);
    t.type = type;
    t.n_dims = (uint32_t)n_dims;
    for (int d = 0; d < KD_GGUF_MAX_DIMS; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    if (t.ne[0] % ti->block)
        return kd_errf(err, "gguf writer: tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
                       name, t.ne[0], ti->name, ti->block);
    if (kd_ggml_nbytes(type, t.ne, &t.nbytes) || t.nbytes > SIZE_MAX / 2)
        return kd_errf(err, "gguf writer: tensor '%s': negative dim or byte size overflow", name);
    t.data = data;
    t.fill = fill;
    t.ctx = ctx;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt) return kd_errf(err, "gguf writer: out of memory");
        w->t = nt;
        w->cap_t = cap;
    }
    w->t[w->n_t++] = t;
    return 0;
}

int kd_gguf_writer_add_tensor(kd_gguf_writer *w, const char *name, int32_t type, int n_dims, const int64_t *ne,
                              const void *data, kd_err *err) {
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL, err);
}

int kd_gguf_writer_add_tensor_fn(kd_gguf_writer *w, const char *name, int32_t type, int n_dims, const int64_t *ne,
                                 kd_gguf_fill_fn fill, void *ctx, kd_err *err) {
    if (!fill) return kd_errf(err, "gguf writer: tensor '%s': no fill function", name ? name : "");
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, ctx, err);
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

/* Buffered output that tracks the file position and remembers the first failure. */
typedef struct out {
    FILE *f;
    uint64_t pos;
    int failed;
} out;

static void put(out *o, const void *p, size_t n) {
    if (o->failed || !n) return;
    if (fwrite(p, 1, n, o->f) != n) o->failed = 1;
    o->pos += n;
}
static void put_u32(out *o, uint32_t v) { put(o, &v, 4); }
static void put_u64(out *o, uint64_t v) { put(o, &v, 8); }
static void put_zeros(out *o, uint64_t n) {
    static const unsigned char z[64];
    while (n) {
        size_t k = n < sizeof z ? (size_t)n : sizeof z;
        put(o, z, k);
        n -= k;
    }
}

int kd_gguf_writer_write(kd_gguf_writer *w, const char *path, kd_err *err) {
    const uint64_t A = w->alignment;
    size_t max_fill = 0;
    for (size_t i = 0; i < w->n_t; i++)
        if (w->t[i].fill && w->t[i].nbytes > max_fill) max_fill = (size_t)w->t[i].nbytes;
    unsigned char *buf = NULL;
    if (max_fill && !(buf = malloc(max_fill)))
        return kd_errf(err, "%s: out of memory for a %zu-byte tensor buffer", path, max_fill);
    kd_atomic_file af;
    if (kd_atomic_open(&af, path, err)) {
        free(buf);
        return -1;
    }
    out o = {af.f, 0, 0};
    put(&o, KD_GGUF_MAGIC, 4);
    put_u32(&o, KD_GGUF_VERSION);
    put_u64(&o, (uint64_t)w->n_t);
    put_u64(&o, (uint64_t)w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_u64(&o, w->kv[i].klen);
        put(&o, w->kv[i].key, w->kv[i].klen);
        put_u32(&o, (uint32_t)w->kv[i].type);
        put(&o, w->kv[i].val, w->kv[i].vlen);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_u64(&o, strlen(t->name));
        put(&o, t->name, strlen(t->name));
        put_u32(&o, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&o, (uint64_t)t->ne[d]);
        put_u32(&o, (uint32_t)t->type);
        put_u64(&o, offset);
        offset += pad_to(t->nbytes, A);
    }
    put_zeros(&o, pad_to(o.pos, A) - o.pos);
    int rc = 0;
    for (size_t i = 0; i < w->n_t && !rc && !o.failed; i++) {
        const wtensor *t = &w->t[i];
        const void *data = t->data;
        if (t->fill) {
            if (t->fill(t->ctx, buf, (size_t)t->nbytes, err)) {
                rc = kd_err_prefix(err, "%s: tensor '%s'", path, t->name);
                break;
            }
            data = buf;
        }
        put(&o, data, (size_t)t->nbytes);
        put_zeros(&o, pad_to(t->nbytes, A) - t->nbytes);
    }
    free(buf);
    if (!rc && o.failed) rc = kd_errf(err, "%s: write failed after %" PRIu64 " bytes (disk full?)", path, o.pos);
    if (rc) {
        kd_atomic_abort(&af);
        return -1;
    }
    return kd_atomic_commit(&af, err);
}
