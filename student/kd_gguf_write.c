/*
 * kd_gguf_write.c — the GGUF v3 writer and the llama.cpp export of a kd
 * student (see kd_gguf_write.h; rules from shared/docs A and B.8).
 */
#include "student/kd_gguf_write.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_log.h"
#include "data/kd_tokenizer_bpe.h"
#include "student/kd_checkpoint.h"
#include "student/kd_llama2c.h"
#include "student/kd_quant.h"
#include "teacher/kd_dump_tok.h"

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

/* ---- presets and the per-tensor type rule (A.10) ------------------------------------- */

static const kd_export_preset PRESETS[] = {
    {"f32", 0, KD_GGML_TYPE_F32, "every tensor F32 (lossless)"},
    {"f16", 1, KD_GGML_TYPE_F16, "2-D weights F16, norms F32"},
    {"bf16", 32, KD_GGML_TYPE_BF16, "2-D weights BF16, norms F32"},
    {"q8_0", 7, KD_GGML_TYPE_Q8_0, "2-D weights Q8_0 (8.5 bits/weight), norms F32"},
    {"q4_0", 2, KD_GGML_TYPE_Q4_0, "2-D weights Q4_0 (4.5 b/w), output (or tied embedding) Q6_K, norms F32"},
    {"q4_1", 3, KD_GGML_TYPE_Q4_1, "2-D weights Q4_1 (5.0 b/w), output (or tied embedding) Q6_K, norms F32"},
    {"q4_k_m", 15, KD_GGML_TYPE_Q4_K,
     "llama-quantize's Q4_K_M: Q4_K; Q6_K for output (or tied embedding)\n"
     "           and for attn_v, ffn_down in the layers use_more_bits picks; norms F32"},
};

const kd_export_preset *kd_export_presets(int *n) {
    *n = (int)(sizeof PRESETS / sizeof PRESETS[0]);
    return PRESETS;
}

const kd_export_preset *kd_export_preset_find(const char *name) {
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++)
        if (name && !strcmp(PRESETS[i].name, name)) return &PRESETS[i];
    return NULL;
}

int kd_use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The type A.10 picks, before any fallback for the row length. */
static int32_t wanted_type(const kd_export_preset *p, const char *name, int n_dims, int64_t layer, int64_t n_layer,
                           int tied) {
    if (n_dims < 2 || ends_with(name, "_norm.weight")) return KD_GGML_TYPE_F32;
    int32_t t = p->type;
    if (kd_quant_is_quantized(t) && t != KD_GGML_TYPE_Q8_0) {   /* Q8_0 keeps its output in Q8_0 */
        const int is_output = !strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"));
        if (is_output) t = KD_GGML_TYPE_Q6_K;
        else if (t == KD_GGML_TYPE_Q4_K && layer >= 0 &&
                 (ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight")) &&
                 kd_use_more_bits(layer, n_layer))
            t = KD_GGML_TYPE_Q6_K;
    }
    return t;
}

int32_t kd_export_tensor_type(const kd_export_preset *p, const char *name, int n_dims, int64_t ne0, int64_t layer,
                              int64_t n_layer, int tied, int *fell_back) {
    if (fell_back) *fell_back = 0;
    int32_t t = wanted_type(p, name, n_dims, layer, n_layer, tied);
    while (ne0 % kd_quant_block(t)) {
        if (fell_back) *fell_back = 1;
        t = (t == KD_GGML_TYPE_Q4_K || t == KD_GGML_TYPE_Q6_K) ? KD_GGML_TYPE_Q8_0 : KD_GGML_TYPE_F16;
    }
    return t;
}

/* ---- export ----------------------------------------------------------------------- */

typedef struct export_src {
    const float *data;        /* [rows, cols] row-major (HF layout) */
    int64_t rows, cols;
    int32_t type;
    int64_t rope_heads, D;    /* > 0: permute rows rotate_half → adjacent pairs first */
} export_src;

static int fill_tensor(void *ctx, void *dst, size_t nbytes, kd_err *err) {
    const export_src *s = ctx;
    if (nbytes != (size_t)s->rows * kd_quant_row_size(s->type, s->cols))
        return kd_errf(err, "internal size mismatch (%zu bytes)", nbytes);
    const float *src = s->data;
    float *tmp = NULL;
    if (s->rope_heads > 0) {
        tmp = malloc((size_t)(s->rows * s->cols) * sizeof(float));
        if (!tmp) return kd_errf(err, "out of memory for the q/k permutation");
        memcpy(tmp, s->data, (size_t)(s->rows * s->cols) * sizeof(float));
        kd_rope_permute_rows(tmp, s->rope_heads, s->D, s->cols, 0);
        src = tmp;
    }
    int rc = kd_quantize_rows(s->type, src, dst, s->rows, s->cols, err);
    free(tmp);
    return rc;
}

typedef struct export_job {
    kd_gguf_writer *w;
    const kd_export_preset *p;
    export_src *srcs;
    int n_src;
    int64_t n_layer;
    int tied, any_quantized;
} export_job;

static int export_tensor(export_job *j, const char *name, const kd_tensor *t, int64_t layer, int64_t rope_heads,
                         int64_t D, kd_err *err) {
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
    int fell_back;
    int32_t type = kd_export_tensor_type(j->p, name, t->ndim, cols, layer, j->n_layer, j->tied, &fell_back);
    if (fell_back)
        kd_warn("GGUF export: %s: row length %" PRId64 " is not a multiple of the %s block; writing %s", name, cols,
                kd_ggml_type_name(wanted_type(j->p, name, t->ndim, layer, j->n_layer, j->tied)), kd_ggml_type_name(type));
    if (kd_quant_is_quantized(type)) j->any_quantized = 1;
    export_src *s = &j->srcs[j->n_src++];
    *s = (export_src){t->data, rows, cols, type, rope_heads, D};
    int64_t ne[2] = {cols, rows};
    return kd_gguf_writer_add_tensor_fn(j->w, name, type, t->ndim, ne, fill_tensor, s, err);
}

static const char *file_stem(const char *path, char *buf, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(buf, n, "%s", base);
    size_t l = strlen(buf);
    if (l > 5 && !strcmp(buf + l - 5, ".gguf")) buf[l - 5] = '\0';
    return buf;
}

/* tokenizer.ggml.pre ("default" when the teacher's dump named none) and
 * tokenizer.ggml.merges of a byte-level BPE ("gpt2") tokenizer (data/kd_tokenizer_bpe.h). */
static int export_bpe(kd_gguf_writer *w, const kd_tokenizer *tok, kd_err *err) {
    int32_t m = kd_tokenizer_n_merges(tok);
    const char **ms = malloc(((size_t)m + 1) * sizeof *ms);
    size_t *ls = malloc(((size_t)m + 1) * sizeof *ls);
    int rc = -1;
    if (!ms || !ls) {
        kd_errf(err, "out of memory for %" PRId32 " merges", m);
    } else {
        for (int32_t i = 0; i < m; i++) ms[i] = kd_tokenizer_merge(tok, i, &ls[i]);
        const char *pre = kd_tokenizer_pre(tok)[0] ? kd_tokenizer_pre(tok) : "default";
        rc = kd_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre, (size_t)-1, err) ||
                     kd_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", ms, ls, (uint64_t)m, err)
                 ? -1
                 : 0;
    }
    free(ms);
    free(ls);
    return rc;
}

/* The tokenizer.ggml.* keys; the vocabulary is padded to V with UNUSED pieces. A
 * "gpt2" tokenizer gets its pre-tokenizer and merges, and no scores. */
static int export_vocab(kd_gguf_writer *w, const kd_tokenizer *tok, int64_t V, kd_err *err) {
    int32_t n = kd_tokenizer_n_vocab(tok);
    if (n > V)
        return kd_errf(err, "tokenizer has %" PRId32 " pieces but the model's vocab_size is %" PRId64
                       "; llama.cpp needs one embedding row per piece", n, V);
    if (n < V)
        kd_warn("kd export: tokenizer has %" PRId32 " pieces, model vocab_size %" PRId64 ": padding with [PADn] pieces",
                n, V);
    const char **pieces = calloc((size_t)V, sizeof *pieces);
    size_t *lens = calloc((size_t)V, sizeof *lens);
    float *scores = calloc((size_t)V, sizeof *scores);
    int32_t *types = calloc((size_t)V, sizeof *types);
    char (*pad)[32] = V > n ? calloc((size_t)(V - n), sizeof *pad) : NULL;
    int rc = -1;
    if (!pieces || !lens || !scores || !types || (V > n && !pad)) {
        kd_errf(err, "out of memory for a %" PRId64 "-piece vocabulary", V);
        goto done;
    }
    for (int64_t i = 0; i < V; i++) {
        if (i < n) {
            pieces[i] = kd_tokenizer_piece(tok, (int32_t)i, &lens[i]);
            scores[i] = kd_tokenizer_score(tok, (int32_t)i);
            types[i] = (int32_t)kd_tokenizer_type(tok, (int32_t)i);
        } else {
            snprintf(pad[i - n], sizeof pad[0], "[PAD%" PRId64 "]", i);
            pieces[i] = pad[i - n];
            lens[i] = strlen(pad[i - n]);
            scores[i] = -1000.0f;
            types[i] = KD_TOKEN_UNUSED;
        }
    }
    unsigned flags = kd_tokenizer_flags(tok);
    int bpe = !strcmp(kd_tokenizer_model(tok), "gpt2");
    if (kd_gguf_writer_add_str(w, "tokenizer.ggml.model", kd_tokenizer_model(tok), (size_t)-1, err) ||
        (bpe && export_bpe(w, tok, err)) ||
        kd_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", pieces, lens, (uint64_t)V, err) ||
        (!bpe && kd_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KD_GGUF_FLOAT32, scores, (uint64_t)V, err)) ||
        kd_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KD_GGUF_INT32, types, (uint64_t)V, err))
        goto done;
    const char *id_keys[3] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                              "tokenizer.ggml.unknown_token_id"};
    int32_t ids[3] = {kd_tokenizer_bos(tok), kd_tokenizer_eos(tok), kd_tokenizer_unk(tok)};
    for (int k = 0; k < 3; k++)
        if (ids[k] >= 0 && kd_gguf_writer_add_u32(w, id_keys[k], (uint32_t)ids[k], err)) goto done;
    /* llama.cpp refuses add_bos/add_eos without the token */
    if (kd_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", (flags & KD_TOK_ADD_BOS) && ids[0] >= 0, err) ||
        kd_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", (flags & KD_TOK_ADD_EOS) && ids[1] >= 0, err) ||
        kd_gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", (flags & KD_TOK_ADD_SPACE_PREFIX) != 0, err))
        goto done;
    rc = 0;
done:
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    free(pad);
    return rc;
}

int kd_export_gguf(const kd_model *m, const kd_tokenizer *tok, const char *preset, const char *path, kd_err *err) {
    const kd_export_preset *p = kd_export_preset_find(preset);
    if (!p) {
        int n;
        const kd_export_preset *all = kd_export_presets(&n);
        char list[256] = "";
        for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", all[i].name);
        return kd_errf(err, "%s: unknown export type '%s', expected one of %s", path, preset ? preset : "(null)", list);
    }
    const kd_config *c = &m->cfg;
    if (c->sliding_window > 0 && c->sliding_window < c->max_position_embeddings)
        return kd_errf(err, "%s: the model uses a sliding window of %" PRId64 " positions, shorter than its context %" PRId64
                       "; GGUF arch 'llama' has no sliding-window key, so llama.cpp would attend to the whole context "
                       "and compute a different model", path, c->sliding_window, c->max_position_embeddings);
    const int64_t vals[] = {c->max_position_embeddings, c->hidden_size, c->num_hidden_layers, c->intermediate_size,
                            c->num_attention_heads, c->num_key_value_heads, c->head_dim, c->vocab_size};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (vals[i] <= 0 || vals[i] > (int64_t)UINT32_MAX)
            return kd_errf(err, "%s: config value %" PRId64 " does not fit GGUF's UINT32 hyper-parameters", path, vals[i]);

    kd_gguf_writer *w = kd_gguf_writer_new(err);
    if (!w) return -1;
    const int64_t L = c->num_hidden_layers, n_src = 3 + 9 * L;
    export_job j = {w, p, calloc((size_t)n_src, sizeof(export_src)), 0, L, m->lm_head == NULL, 0};
    int rc = -1;
    char name[KD_GGUF_MAX_NAME * 2];
    if (!j.srcs) {
        kd_errf(err, "%s: out of memory", path);
        goto done;
    }
    /* tensors first: general.quantization_version depends on their types */
    if (export_tensor(&j, "token_embd.weight", m->embed, -1, 0, 0, err) ||
        export_tensor(&j, "output_norm.weight", m->norm, -1, 0, 0, err) ||
        (m->lm_head && export_tensor(&j, "output.weight", m->lm_head, -1, 0, 0, err)))
        goto done;
    for (int64_t l = 0; l < L; l++) {
        const kd_layer *ly = &m->layers[l];
        struct { const char *suffix; const kd_tensor *t; int64_t heads; } parts[] = {
            {"attn_norm", ly->attn_norm, 0},  {"attn_q", ly->wq, c->num_attention_heads},
            {"attn_k", ly->wk, c->num_key_value_heads}, {"attn_v", ly->wv, 0},
            {"attn_output", ly->wo, 0},       {"ffn_norm", ly->ffn_norm, 0},
            {"ffn_gate", ly->w_gate, 0},      {"ffn_up", ly->w_up, 0},
            {"ffn_down", ly->w_down, 0},
        };
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            snprintf(name, sizeof name, "blk.%" PRId64 ".%s.weight", l, parts[k].suffix);
            if (export_tensor(&j, name, parts[k].t, l, parts[k].heads, c->head_dim, err)) goto done;
        }
    }
    char stem[256];
    const char *a = "llama";
#define U32(key, v) kd_gguf_writer_add_u32(w, key, (uint32_t)(v), err)
    if (kd_gguf_writer_add_str(w, "general.architecture", a, (size_t)-1, err) ||
        kd_gguf_writer_add_str(w, "general.name", file_stem(path, stem, sizeof stem), (size_t)-1, err) ||
        U32("general.file_type", p->file_type) ||
        (j.any_quantized && U32("general.quantization_version", 2)) ||
        U32("llama.context_length", c->max_position_embeddings) || U32("llama.embedding_length", c->hidden_size) ||
        U32("llama.block_count", L) || U32("llama.feed_forward_length", c->intermediate_size) ||
        U32("llama.attention.head_count", c->num_attention_heads) ||
        U32("llama.attention.head_count_kv", c->num_key_value_heads) ||
        U32("llama.rope.dimension_count", c->head_dim) ||
        kd_gguf_writer_add_f32(w, "llama.rope.freq_base", (float)c->rope_theta, err) ||
        kd_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps, err) ||
        U32("llama.vocab_size", c->vocab_size))
        goto done;
    if (c->head_dim * c->num_attention_heads != c->hidden_size &&
        (U32("llama.attention.key_length", c->head_dim) || U32("llama.attention.value_length", c->head_dim)))
        goto done;
#undef U32
    if (export_vocab(w, tok, c->vocab_size, err)) {
        kd_err_prefix(err, "%s", path);
        goto done;
    }
    rc = kd_gguf_writer_write(w, path, err);
done:
    free(j.srcs);
    kd_gguf_writer_free(w);
    return rc;
}

int kd_export_checkpoint(const char *dir, const char *preset, const char *path, kd_err *err) {
    char tok_path[4096];
    kd_tokenizer *tok = NULL;   /* tokenizer.h5 ("gpt2", teacher/kd_dump_tok.h) or tokenizer.bin */
    if (kd_path_join(tok_path, sizeof tok_path, dir, "tokenizer.bin", err)) return -1;
    if (kd_tokenizer_load_dir(dir, &tok, err)) return -1;
    if (!tok)
        return kd_errf(err, "%s: missing (and no tokenizer.h5); GGUF export needs the checkpoint's tokenizer (kd "
                       "import llama2c --tokenizer stores it there, kd train copies the dump's, or copy a llama2.c "
                       "tokenizer.bin into %s)", tok_path, dir);
    if (!kd_export_preset_find(preset)) {
        kd_tokenizer_free(tok);
        return kd_export_gguf(NULL, NULL, preset, path, err);
    }
    kd_model m;   /* forward-only: no gradient buffers, so a 3B student needs 12 GiB, not 24 */
    if (kd_checkpoint_load_flags(&m, dir, KD_MODEL_NO_GRAD, err)) {
        kd_tokenizer_free(tok);
        return -1;
    }
    int rc = kd_export_gguf(&m, tok, preset, path, err);
    kd_tokenizer_free(tok);
    kd_model_free(&m);
    return rc;
}
