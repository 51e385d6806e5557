/*
 * kd_gguf.c — the hardened GGUF v2/v3 reader (see kd_gguf.h for what it checks).
 *
 * One pass over the bytes through a bounds-checked cursor. Every allocation is
 * made only after the bytes it describes were proven to exist, so its size is
 * bounded by a small multiple of the file size. Keys and tensor names go into
 * open-addressing hash indexes, which catch duplicates while parsing and serve
 * lookups afterwards.
 */
#include "format/kd_gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"

/* ---- type tables ------------------------------------------------------------- */

static const char *const GGUF_TYPE_NAMES[KD_GGUF_TYPE_COUNT] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64",
};
static const size_t GGUF_TYPE_SIZES[KD_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *kd_gguf_type_name(int type) {
    return type >= 0 && type < KD_GGUF_TYPE_COUNT ? GGUF_TYPE_NAMES[type] : "INVALID";
}

size_t kd_gguf_type_size(int type) {
    return type >= 0 && type < KD_GGUF_TYPE_COUNT ? GGUF_TYPE_SIZES[type] : 0;
}

/* Names of every ggml type id up to GGML_TYPE_COUNT (39); "" marks retired ids. */
static const char *const GGML_NAMES[39] = {
    "F32",     "F16",    "Q4_0",    "Q4_1",  "",      "",      "Q5_0",   "Q5_1",  "Q8_0",  "Q8_1",
    "Q2_K",    "Q3_K",   "Q4_K",    "Q5_K",  "Q6_K",  "Q8_K",  "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
    "IQ4_NL",  "IQ3_S",  "IQ2_S",   "IQ4_XS", "I8",   "I16",   "I32",    "I64",   "F64",   "IQ1_M",
    "BF16",    "",       "",        "",      "TQ1_0", "TQ2_0", "",       "",      "",
};

static const struct {
    int32_t id;
    kd_ggml_type_info info;
} GGML_SUPPORTED[] = {
    {KD_GGML_TYPE_F32, {"F32", 1, 4}},      {KD_GGML_TYPE_F16, {"F16", 1, 2}},
    {KD_GGML_TYPE_Q4_0, {"Q4_0", 32, 18}},  {KD_GGML_TYPE_Q4_1, {"Q4_1", 32, 20}},
    {KD_GGML_TYPE_Q8_0, {"Q8_0", 32, 34}},  {KD_GGML_TYPE_Q4_K, {"Q4_K", 256, 144}},
    {KD_GGML_TYPE_Q6_K, {"Q6_K", 256, 210}}, {KD_GGML_TYPE_BF16, {"BF16", 1, 2}},
};
#define N_SUPPORTED (sizeof GGML_SUPPORTED / sizeof GGML_SUPPORTED[0])

const kd_ggml_type_info *kd_ggml_type_get(int32_t type) {
    for (size_t i = 0; i < N_SUPPORTED; i++)
        if (GGML_SUPPORTED[i].id == type) return &GGML_SUPPORTED[i].info;
    return NULL;
}

const char *kd_ggml_type_name(int32_t type) {
    if (type < 0 || type >= 39) return "unknown";
    return GGML_NAMES[type][0] ? GGML_NAMES[type] : "retired";
}

int kd_ggml_nbytes(int32_t type, const int64_t ne[KD_GGUF_MAX_DIMS], uint64_t *nbytes) {
    const kd_ggml_type_info *ti = kd_ggml_type_get(type);
    if (!ti) return -1;
    for (int d = 0; d < KD_GGUF_MAX_DIMS; d++)
        if (ne[d] < 0) return -1;
    if (ne[0] % ti->block) return -1;
    uint64_t total = (uint64_t)(ne[0] / ti->block);
    if (__builtin_mul_overflow(total, (uint64_t)ti->block_bytes, &total)) return -1;
    for (int d = 1; d < KD_GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(total, (uint64_t)ne[d], &total)) return -1;
    *nbytes = total;
    return 0;
}

/* ---- name index: open addressing over borrowed NUL-terminated names ---------- */

typedef struct name_index {
    int32_t *slot;   /* entry index, or -1 */
    size_t mask;
} name_index;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int index_init(name_index *ix, int64_t n) {
    size_t cap = 8;
    while (cap < (size_t)n * 2) cap *= 2;
    ix->slot = malloc(cap * sizeof *ix->slot);
    if (!ix->slot) return -1;
    memset(ix->slot, 0xff, cap * sizeof *ix->slot);
    ix->mask = cap - 1;
    return 0;
}

/* Index of `name` among names[], or -1. */
static int64_t index_find(const name_index *ix, const char *const *names, const char *name) {
    if (!ix->slot) return -1;
    for (size_t h = hash_str(name) & ix->mask;; h = (h + 1) & ix->mask) {
        int32_t e = ix->slot[h];
        if (e < 0) return -1;
        if (!strcmp(names[e], name)) return e;
    }
}

/* Insert entry i (names[i]); returns the index of an earlier equal name, or -1. */
static int64_t index_insert(name_index *ix, const char *const *names, int32_t i) {
    size_t h = hash_str(names[i]) & ix->mask;
    for (; ix->slot[h] >= 0; h = (h + 1) & ix->mask)
        if (!strcmp(names[ix->slot[h]], names[i])) return ix->slot[h];
    ix->slot[h] = i;
    return -1;
}

/* ---- the parsed file --------------------------------------------------------- */

typedef struct kv_entry {
    kd_gguf_type type;
    const unsigned char *val;   /* scalar: the value; ARRAY: the first element */
    char *str;                  /* STRING: NUL-terminated copy */
    uint64_t str_len;
    kd_gguf_type elem;          /* ARRAY: element type, count, string offsets */
    uint64_t n;
    uint64_t *str_off;
} kv_entry;

struct kd_gguf {
    char *name;
    kd_mmap map;
    const unsigned char *bytes;
    size_t len;
    uint32_t version, alignment;
    size_t data_offset;
    int64_t n_kv, n_tensors;
    kv_entry *kv;
    char **keys;
    name_index kv_ix;
    kd_gguf_tensor *tensors;
    const char **tensor_names;
    char *name_blob;            /* n_tensors × KD_GGUF_MAX_NAME bytes */
    name_index t_ix;
};

void kd_gguf_release(const kd_gguf *g, const kd_gguf_tensor *t) {
    if (g && t && g->map.data) kd_mmap_release(&g->map, t->data, (size_t)t->nbytes);
}

void kd_gguf_close(kd_gguf *g) {
    if (!g) return;
    if (g->kv) {
        for (int64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].str);
            free(g->kv[i].str_off);
        }
    }
    if (g->keys)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->keys[i]);
    free(g->kv);
    free(g->keys);
    free(g->kv_ix.slot);
    free(g->tensors);
    free(g->tensor_names);
    free(g->name_blob);
    free(g->t_ix.slot);
    kd_mmap_close(&g->map);
    free(g->name);
    free(g);
}

/* ---- bounds-checked cursor ---------------------------------------------------- */

typedef struct cursor {
    const unsigned char *p;
    size_t len, off;
    const char *name;
    char ctx[160];      /* "kv 3 ('general.name')" — what is being read */
    kd_err *err;
} cursor;

static size_t left(const cursor *c) { return c->len - c->off; }

/* Claim n bytes at the cursor; fails naming the field when they are not there. */
static const unsigned char *take(cursor *c, uint64_t n, const char *field) {
    if (n > left(c)) {
        kd_errf(c->err, "%s: %s: %s: truncated: needs %" PRIu64 " bytes at offset %zu, %zu left", c->name, c->ctx,
                field, n, c->off, left(c));
        return NULL;
    }
    const unsigned char *q = c->p + c->off;
    c->off += (size_t)n;
    return q;
}

static int rd_u32(cursor *c, const char *field, uint32_t *v) {
    const unsigned char *q = take(c, 4, field);
    if (!q) return -1;
    memcpy(v, q, 4);
    return 0;
}

static int rd_u64(cursor *c, const char *field, uint64_t *v) {
    const unsigned char *q = take(c, 8, field);
    if (!q) return -1;
    memcpy(v, q, 8);
    return 0;
}

/* A GGUF string: u64 length then bytes. Returns the bytes (borrowed). */
static const unsigned char *rd_str(cursor *c, const char *field, uint64_t *len) {
    char f[96];
    snprintf(f, sizeof f, "%s length", field);
    if (rd_u64(c, f, len) < 0) return NULL;
    return take(c, *len, field);
}

static char *dup_bytes(const unsigned char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static int oom(cursor *c) { return kd_errf(c->err, "%s: %s: out of memory", c->name, c->ctx); }

/* ---- KV pairs --------------------------------------------------------------- */

static int parse_value(cursor *c, kv_entry *e) {
    if (e->type == KD_GGUF_STRING) {
        const unsigned char *s = rd_str(c, "string value", &e->str_len);
        if (!s) return -1;
        if (!(e->str = dup_bytes(s, (size_t)e->str_len))) return oom(c);
        return 0;
    }
    if (e->type != KD_GGUF_ARRAY) {
        const unsigned char *q = take(c, GGUF_TYPE_SIZES[e->type], "value");
        if (!q) return -1;
        if (e->type == KD_GGUF_BOOL && *q > 1)
            return kd_errf(c->err, "%s: %s: BOOL value is %u, expected 0 or 1", c->name, c->ctx, *q);
        e->val = q;
        return 0;
    }
    uint32_t et;
    if (rd_u32(c, "array element type", &et) < 0) return -1;
    if ((int32_t)et == KD_GGUF_ARRAY)
        return kd_errf(c->err, "%s: %s: nested arrays are not supported (element type ARRAY)", c->name, c->ctx);
    if ((int32_t)et < 0 || et >= KD_GGUF_TYPE_COUNT)
        return kd_errf(c->err, "%s: %s: array element type %d is invalid, expected 0..12", c->name, c->ctx,
                       (int32_t)et);
    e->elem = (kd_gguf_type)et;
    if (rd_u64(c, "array count", &e->n) < 0) return -1;
    e->val = c->p + c->off;
    if (e->elem == KD_GGUF_STRING) {
        if (e->n > left(c) / 8)
            return kd_errf(c->err,
                           "%s: %s: array count %" PRIu64 " exceeds the %zu bytes left (8 or more per string)",
                           c->name, c->ctx, e->n, left(c));
        if (e->n && !(e->str_off = malloc((size_t)e->n * sizeof *e->str_off))) return oom(c);
        for (uint64_t j = 0; j < e->n; j++) {
            e->str_off[j] = (uint64_t)(c->p + c->off - e->val);
            uint64_t sl;
            char f[64];
            snprintf(f, sizeof f, "string element %" PRIu64, j);
            if (!rd_str(c, f, &sl)) return -1;
        }
        return 0;
    }
    size_t es = GGUF_TYPE_SIZES[e->elem];
    if (e->n > left(c) / es)
        return kd_errf(c->err, "%s: %s: array count %" PRIu64 " of %s (%zu bytes each) exceeds the %zu bytes left",
                       c->name, c->ctx, e->n, GGUF_TYPE_NAMES[e->elem], es, left(c));
    const unsigned char *q = take(c, e->n * es, "array elements");
    if (!q) return -1;
    if (e->elem == KD_GGUF_BOOL)
        for (uint64_t j = 0; j < e->n; j++)
            if (q[j] > 1)
                return kd_errf(c->err, "%s: %s: BOOL element %" PRIu64 " is %u, expected 0 or 1", c->name, c->ctx,
                               j, q[j]);
    return 0;
}

static int parse_kvs(kd_gguf *g, cursor *c) {
    char *ctx = c->ctx;
    for (int64_t i = 0; i < g->n_kv; i++) {
        snprintf(ctx, sizeof c->ctx, "kv %" PRId64, i);
        uint64_t klen;
        const unsigned char *k = rd_str(c, "key", &klen);
        if (!k) return -1;
        if (klen == 0) return kd_errf(c->err, "%s: %s: empty key", c->name, ctx);
        if (klen > KD_GGUF_MAX_KEY)
            return kd_errf(c->err, "%s: %s: key length %" PRIu64 ", expected at most %d", c->name, ctx, klen,
                           KD_GGUF_MAX_KEY);
        if (memchr(k, 0, (size_t)klen)) return kd_errf(c->err, "%s: %s: key contains a NUL byte", c->name, ctx);
        if (!(g->keys[i] = dup_bytes(k, (size_t)klen))) return oom(c);
        snprintf(ctx, sizeof c->ctx, "kv %" PRId64 " ('%.100s')", i, g->keys[i]);
        int64_t prev = index_insert(&g->kv_ix, (const char *const *)g->keys, (int32_t)i);
        if (prev >= 0) return kd_errf(c->err, "%s: %s: duplicate key (also kv %" PRId64 ")", c->name, ctx, prev);
        uint32_t t;
        if (rd_u32(c, "value type", &t) < 0) return -1;
        if ((int32_t)t < 0 || t >= KD_GGUF_TYPE_COUNT)
            return kd_errf(c->err, "%s: %s: value type %d is invalid, expected 0..12", c->name, ctx, (int32_t)t);
        kv_entry *e = &g->kv[i];
        e->type = (kd_gguf_type)t;
        if (parse_value(c, e) < 0) return -1;
        if (!strcmp(g->keys[i], "general.alignment")) {
            if (e->type != KD_GGUF_UINT32)
                return kd_errf(c->err, "%s: key 'general.alignment' has type %s, expected UINT32", c->name,
                               GGUF_TYPE_NAMES[e->type]);
            uint32_t a;
            memcpy(&a, e->val, 4);
            if (a == 0 || (a & (a - 1)))
                return kd_errf(c->err, "%s: general.alignment is %" PRIu32 ", expected a nonzero power of two",
                               c->name, a);
            g->alignment = a;
        }
    }
    return 0;
}

/* ---- tensor infos ------------------------------------------------------------- */

static int unsupported_type(cursor *c, int32_t type) {
    return kd_errf(c->err,
                   "%s: %s: type %d (%s) is not supported; kd reads F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K",
                   c->name, c->ctx, type, kd_ggml_type_name(type));
}

static int parse_tensor_info(kd_gguf *g, cursor *c, int64_t i) {
    char *ctx = c->ctx;
    snprintf(ctx, sizeof c->ctx, "tensor %" PRId64, i);
    kd_gguf_tensor *t = &g->tensors[i];
    uint64_t nlen;
    const unsigned char *nm = rd_str(c, "name", &nlen);
    if (!nm) return -1;
    if (nlen == 0) return kd_errf(c->err, "%s: %s: empty name", c->name, ctx);
    if (nlen >= KD_GGUF_MAX_NAME)
        return kd_errf(c->err, "%s: %s: name length %" PRIu64 ", expected less than %d", c->name, ctx, nlen,
                       KD_GGUF_MAX_NAME);
    if (memchr(nm, 0, (size_t)nlen)) return kd_errf(c->err, "%s: %s: name contains a NUL byte", c->name, ctx);
    char *dst = g->name_blob + (size_t)i * KD_GGUF_MAX_NAME;
    memcpy(dst, nm, (size_t)nlen);
    dst[nlen] = '\0';
    t->name = g->tensor_names[i] = dst;
    snprintf(ctx, sizeof c->ctx, "tensor %" PRId64 " ('%s')", i, dst);
    int64_t prev = index_insert(&g->t_ix, g->tensor_names, (int32_t)i);
    if (prev >= 0)
        return kd_errf(c->err, "%s: %s: duplicate tensor name (also tensor %" PRId64 ")", c->name, ctx, prev);
    if (rd_u32(c, "n_dims", &t->n_dims) < 0) return -1;
    if (t->n_dims > KD_GGUF_MAX_DIMS)
        return kd_errf(c->err, "%s: %s: n_dims is %" PRIu32 ", expected at most %d", c->name, ctx, t->n_dims,
                       KD_GGUF_MAX_DIMS);
    int64_t count = 1;
    for (int d = 0; d < KD_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if ((uint32_t)d >= t->n_dims) continue;
        char f[16];
        snprintf(f, sizeof f, "ne[%d]", d);
        uint64_t v;
        if (rd_u64(c, f, &v) < 0) return -1;
        t->ne[d] = (int64_t)v;
        if (t->ne[d] < 0)
            return kd_errf(c->err, "%s: %s: ne[%d] is %" PRId64 ", expected >= 0", c->name, ctx, d, t->ne[d]);
        if (__builtin_mul_overflow(count, t->ne[d], &count))
            return kd_errf(c->err, "%s: %s: element count overflows int64 at ne[%d] = %" PRId64, c->name, ctx, d,
                           t->ne[d]);
    }
    uint32_t ty;
    if (rd_u32(c, "type", &ty) < 0) return -1;
    t->type = (int32_t)ty;
    const kd_ggml_type_info *ti = kd_ggml_type_get(t->type);
    if (!ti) return unsupported_type(c, t->type);
    if (t->ne[0] % ti->block)
        return kd_errf(c->err, "%s: %s: ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
                       c->name, ctx, t->ne[0], ti->name, ti->block);
    if (kd_ggml_nbytes(t->type, t->ne, &t->nbytes) < 0)
        return kd_errf(c->err, "%s: %s: byte size overflows", c->name, ctx);
    if (rd_u64(c, "offset", &t->offset) < 0) return -1;
    if (t->offset % g->alignment)
        return kd_errf(c->err, "%s: %s: offset %" PRIu64 " is not a multiple of the alignment %" PRIu32, c->name,
                       ctx, t->offset, g->alignment);
    return 0;
}

typedef struct span {
    uint64_t begin, end;
    int64_t idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Data start, bounds and overlaps, once every info was read. */
static int place_tensors(kd_gguf *g, cursor *c) {
    size_t a = g->alignment, end = c->off;
    g->data_offset = end + (a - end % a) % a;
    if (g->n_tensors == 0) return 0;
    if (g->data_offset > g->len)
        return kd_errf(c->err, "%s: tensor data would start at offset %zu, past the end of the file (%zu bytes)",
                       c->name, g->data_offset, g->len);
    uint64_t blob = g->len - g->data_offset;
    span *sp = malloc((size_t)g->n_tensors * sizeof *sp);
    if (!sp) return kd_errf(c->err, "%s: out of memory", c->name);
    int64_t ns = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        kd_gguf_tensor *t = &g->tensors[i];
        if (t->offset > blob || t->nbytes > blob - t->offset) {
            free(sp);
            return kd_errf(c->err,
                           "%s: tensor %" PRId64 " ('%s'): data [%" PRIu64 ", %" PRIu64 "+%" PRIu64
                           ") lies outside the data blob of %" PRIu64 " bytes",
                           c->name, i, t->name, t->offset, t->offset, t->nbytes, blob);
        }
        t->data = g->bytes + g->data_offset + t->offset;
        if (t->nbytes) sp[ns++] = (span){t->offset, t->offset + t->nbytes, i};
    }
    qsort(sp, (size_t)ns, sizeof *sp, span_cmp);
    for (int64_t k = 1, far = 0; k < ns; k++) {
        if (sp[k].begin < sp[far].end) {
            int64_t x = sp[far].idx, y = sp[k].idx;
            free(sp);
            return kd_errf(c->err, "%s: tensor %" PRId64 " ('%s') overlaps tensor %" PRId64 " ('%s')", c->name, y,
                           g->tensors[y].name, x, g->tensors[x].name);
        }
        if (sp[k].end > sp[far].end) far = k;
    }
    free(sp);
    return 0;
}

/* ---- header and entry points ----------------------------------------------- */

#define MIN_KV_BYTES     14   /* key length 8 + key 1 + type 4 + one byte of value */
#define MIN_TENSOR_BYTES 25   /* name length 8 + name 1 + n_dims 4 + type 4 + offset 8 */

static int parse_all(kd_gguf *g, cursor *c) {
    snprintf(c->ctx, sizeof c->ctx, "header");
    const unsigned char *m = take(c, 4, "magic");
    if (!m) return -1;
    if (memcmp(m, KD_GGUF_MAGIC, 4))
        return kd_errf(c->err, "%s: magic is %02x %02x %02x %02x, expected 'GGUF' (47 47 55 46)", c->name, m[0], m[1],
                       m[2], m[3]);
    if (rd_u32(c, "version", &g->version) < 0) return -1;
    if (g->version != 2 && g->version != 3)
        return kd_errf(c->err, "%s: version is %" PRIu32 ", expected 2 or 3", c->name, g->version);
    uint64_t nt, nk;
    if (rd_u64(c, "n_tensors", &nt) < 0 || rd_u64(c, "n_kv", &nk) < 0) return -1;
    g->n_tensors = (int64_t)nt;
    g->n_kv = (int64_t)nk;
    if (g->n_tensors < 0 || g->n_tensors > KD_GGUF_MAX_TENSORS)
        return kd_errf(c->err, "%s: n_tensors is %" PRId64 ", expected 0..%d", c->name, g->n_tensors,
                       KD_GGUF_MAX_TENSORS);
    if (g->n_kv < 0 || g->n_kv > KD_GGUF_MAX_KV)
        return kd_errf(c->err, "%s: n_kv is %" PRId64 ", expected 0..%d", c->name, g->n_kv, KD_GGUF_MAX_KV);
    uint64_t need = (uint64_t)g->n_kv * MIN_KV_BYTES + (uint64_t)g->n_tensors * MIN_TENSOR_BYTES;
    if (need > left(c))
        return kd_errf(c->err,
                       "%s: n_kv %" PRId64 " and n_tensors %" PRId64 " need at least %" PRIu64
                       " bytes, only %zu follow the header",
                       c->name, g->n_kv, g->n_tensors, need, left(c));
    g->alignment = KD_GGUF_DEFAULT_ALIGNMENT;
    g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->keys = calloc((size_t)g->n_kv + 1, sizeof *g->keys);
    g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    g->tensor_names = calloc((size_t)g->n_tensors + 1, sizeof *g->tensor_names);
    g->name_blob = malloc(((size_t)g->n_tensors + 1) * KD_GGUF_MAX_NAME);
    if (!g->kv || !g->keys || !g->tensors || !g->tensor_names || !g->name_blob ||
        index_init(&g->kv_ix, g->n_kv) < 0 || index_init(&g->t_ix, g->n_tensors) < 0)
        return kd_errf(c->err, "%s: out of memory", c->name);
    if (parse_kvs(g, c) < 0) return -1;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (parse_tensor_info(g, c, i) < 0) return -1;
    return place_tensors(g, c);
}

kd_gguf *kd_gguf_parse(const void *bytes, size_t len, const char *name, kd_err *err) {
    if (!name) name = "gguf";
    kd_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = dup_bytes((const unsigned char *)name, strlen(name)))) {
        free(g);
        kd_errf(err, "%s: out of memory", name);
        return NULL;
    }
    g->bytes = bytes;
    g->len = bytes ? len : 0;
    cursor c = {.p = g->bytes, .len = g->len, .off = 0, .name = name, .err = err};
    if (parse_all(g, &c) < 0) {
        kd_gguf_close(g);
        return NULL;
    }
    return g;
}

kd_gguf *kd_gguf_open(const char *path, kd_err *err) {
    kd_mmap m;
    if (kd_mmap_open(&m, path, err) < 0) return NULL;
    kd_gguf *g = kd_gguf_parse(m.data, m.len, path, err);
    if (!g) {
        kd_mmap_close(&m);
        return NULL;
    }
    g->map = m;
    return g;
}

/* ---- accessors ---------------------------------------------------------------- */

const char *kd_gguf_name(const kd_gguf *g) { return g->name; }
uint32_t kd_gguf_version(const kd_gguf *g) { return g->version; }
uint32_t kd_gguf_alignment(const kd_gguf *g) { return g->alignment; }
size_t kd_gguf_data_offset(const kd_gguf *g) { return g->data_offset; }
int64_t kd_gguf_n_kv(const kd_gguf *g) { return g->n_kv; }
int64_t kd_gguf_n_tensors(const kd_gguf *g) { return g->n_tensors; }

const char *kd_gguf_kv_key(const kd_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->keys[i] : NULL;
}

kd_gguf_type kd_gguf_kv_type(const kd_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].type : KD_GGUF_TYPE_COUNT;
}

int64_t kd_gguf_find_key(const kd_gguf *g, const char *key) {
    return index_find(&g->kv_ix, (const char *const *)g->keys, key);
}

static const kv_entry *get_kv(const kd_gguf *g, const char *key, kd_gguf_type want, kd_err *err) {
    int64_t i = kd_gguf_find_key(g, key);
    if (i < 0) {
        kd_errf(err, "%s: key '%s' is missing", g->name, key);
        return NULL;
    }
    const kv_entry *e = &g->kv[i];
    if (e->type != want) {
        if (e->type == KD_GGUF_ARRAY)
            kd_errf(err, "%s: key '%s' has type ARRAY[%s], expected %s", g->name, key, GGUF_TYPE_NAMES[e->elem],
                    GGUF_TYPE_NAMES[want]);
        else
            kd_errf(err, "%s: key '%s' has type %s, expected %s", g->name, key, GGUF_TYPE_NAMES[e->type],
                    GGUF_TYPE_NAMES[want]);
        return NULL;
    }
    return e;
}

#define KD_GGUF_GETTER(fn, ctype, gtype)                                               \
    int fn(const kd_gguf *g, const char *key, ctype *out, kd_err *err) {               \
        const kv_entry *e = get_kv(g, key, gtype, err);                                \
        if (!e) return -1;                                                             \
        memcpy(out, e->val, sizeof *out);                                              \
        return 0;                                                                      \
    }
KD_GGUF_GETTER(kd_gguf_get_u8, uint8_t, KD_GGUF_UINT8)
KD_GGUF_GETTER(kd_gguf_get_i8, int8_t, KD_GGUF_INT8)
KD_GGUF_GETTER(kd_gguf_get_u16, uint16_t, KD_GGUF_UINT16)
KD_GGUF_GETTER(kd_gguf_get_i16, int16_t, KD_GGUF_INT16)
KD_GGUF_GETTER(kd_gguf_get_u32, uint32_t, KD_GGUF_UINT32)
KD_GGUF_GETTER(kd_gguf_get_i32, int32_t, KD_GGUF_INT32)
KD_GGUF_GETTER(kd_gguf_get_u64, uint64_t, KD_GGUF_UINT64)
KD_GGUF_GETTER(kd_gguf_get_i64, int64_t, KD_GGUF_INT64)
KD_GGUF_GETTER(kd_gguf_get_f32, float, KD_GGUF_FLOAT32)
KD_GGUF_GETTER(kd_gguf_get_f64, double, KD_GGUF_FLOAT64)

int kd_gguf_get_bool(const kd_gguf *g, const char *key, int *out, kd_err *err) {
    const kv_entry *e = get_kv(g, key, KD_GGUF_BOOL, err);
    if (!e) return -1;
    *out = e->val[0] != 0;
    return 0;
}

int kd_gguf_get_str(const kd_gguf *g, const char *key, const char **out, size_t *len, kd_err *err) {
    const kv_entry *e = get_kv(g, key, KD_GGUF_STRING, err);
    if (!e) return -1;
    *out = e->str;
    if (len) *len = (size_t)e->str_len;
    return 0;
}

static void fill_arr(const kv_entry *e, kd_gguf_arr *out) {
    out->type = e->elem;
    out->n = e->n;
    out->data = e->val;
    out->str_off = e->str_off;
}

int kd_gguf_get_arr(const kd_gguf *g, const char *key, int type, int64_t n, kd_gguf_arr *out, kd_err *err) {
    int64_t i = kd_gguf_find_key(g, key);
    if (i < 0) return kd_errf(err, "%s: key '%s' is missing", g->name, key);
    const kv_entry *e = &g->kv[i];
    if (e->type != KD_GGUF_ARRAY)
        return kd_errf(err, "%s: key '%s' has type %s, expected ARRAY[%s]", g->name, key, GGUF_TYPE_NAMES[e->type],
                       type < 0 ? "any" : kd_gguf_type_name(type));
    if (type >= 0 && (int)e->elem != type)
        return kd_errf(err, "%s: key '%s' is an array of %s, expected an array of %s", g->name, key,
                       GGUF_TYPE_NAMES[e->elem], kd_gguf_type_name(type));
    if (n >= 0 && e->n != (uint64_t)n)
        return kd_errf(err, "%s: key '%s' has %" PRIu64 " elements, expected %" PRId64, g->name, key, e->n, n);
    fill_arr(e, out);
    return 0;
}

int kd_gguf_kv_arr(const kd_gguf *g, int64_t i, kd_gguf_arr *out, kd_err *err) {
    if (i < 0 || i >= g->n_kv) return kd_errf(err, "%s: kv %" PRId64 " does not exist", g->name, i);
    if (g->kv[i].type != KD_GGUF_ARRAY)
        return kd_errf(err, "%s: key '%s' has type %s, expected ARRAY", g->name, g->keys[i],
                       GGUF_TYPE_NAMES[g->kv[i].type]);
    fill_arr(&g->kv[i], out);
    return 0;
}

const char *kd_gguf_arr_str(const kd_gguf_arr *a, uint64_t i, size_t *len) {
    const unsigned char *q = a->data + a->str_off[i];
    uint64_t n;
    memcpy(&n, q, 8);
    if (len) *len = (size_t)n;
    return (const char *)q + 8;
}

/* One scalar as text (the value starts at q). */
static int scalar_text(kd_gguf_type t, const unsigned char *q, char *out, size_t n) {
    union {
        uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
        float f32; uint64_t u64; int64_t i64; double f64;
    } v;
    memcpy(&v, q, GGUF_TYPE_SIZES[t]);
    switch (t) {
    case KD_GGUF_UINT8: return snprintf(out, n, "%u", v.u8);
    case KD_GGUF_INT8: return snprintf(out, n, "%d", v.i8);
    case KD_GGUF_UINT16: return snprintf(out, n, "%u", v.u16);
    case KD_GGUF_INT16: return snprintf(out, n, "%d", v.i16);
    case KD_GGUF_UINT32: return snprintf(out, n, "%" PRIu32, v.u32);
    case KD_GGUF_INT32: return snprintf(out, n, "%" PRId32, v.i32);
    case KD_GGUF_FLOAT32: return snprintf(out, n, "%g", (double)v.f32);
    case KD_GGUF_BOOL: return snprintf(out, n, "%s", v.u8 ? "true" : "false");
    case KD_GGUF_UINT64: return snprintf(out, n, "%" PRIu64, v.u64);
    case KD_GGUF_INT64: return snprintf(out, n, "%" PRId64, v.i64);
    case KD_GGUF_FLOAT64: return snprintf(out, n, "%g", v.f64);
    default: return snprintf(out, n, "?");
    }
}

/* Append at most `max` bytes of s, printable ASCII kept, the rest escaped. */
static size_t put_quoted(char *out, size_t n, size_t pos, const char *s, size_t len, size_t max) {
    for (size_t i = 0; i < len && i < max && pos + 5 < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') out[pos++] = (char)ch;
        else pos += (size_t)snprintf(out + pos, n - pos, "\\x%02x", ch);
    }
    if (len > max && pos + 4 < n) pos += (size_t)snprintf(out + pos, n - pos, "...");
    return pos;
}

void kd_gguf_kv_describe(const kd_gguf *g, int64_t i, char *out, size_t n) {
    if (!n) return;
    out[0] = '\0';
    if (i < 0 || i >= g->n_kv || n < 16) return;
    const kv_entry *e = &g->kv[i];
    size_t pos;
    if (e->type == KD_GGUF_STRING) {
        pos = (size_t)snprintf(out, n, "STRING \"");
        pos = put_quoted(out, n, pos, e->str, (size_t)e->str_len, 60);
        snprintf(out + pos, n - pos, "\"");
        return;
    }
    if (e->type != KD_GGUF_ARRAY) {
        pos = (size_t)snprintf(out, n, "%s ", GGUF_TYPE_NAMES[e->type]);
        scalar_text(e->type, e->val, out + pos, n - pos);
        return;
    }
    pos = (size_t)snprintf(out, n, "ARRAY[%s] %" PRIu64 " [", GGUF_TYPE_NAMES[e->elem], e->n);
    kd_gguf_arr a;
    fill_arr(e, &a);
    for (uint64_t j = 0; j < e->n && j < 4 && pos + 24 < n; j++) {
        if (j) pos += (size_t)snprintf(out + pos, n - pos, ", ");
        if (e->elem == KD_GGUF_STRING) {
            size_t sl;
            const char *s = kd_gguf_arr_str(&a, j, &sl);
            out[pos++] = '"';
            pos = put_quoted(out, n, pos, s, sl, 16);
            out[pos++] = '"';
            out[pos] = '\0';
        } else {
            int w = scalar_text(e->elem, e->val + j * GGUF_TYPE_SIZES[e->elem], out + pos, n - pos);
            pos += w > 0 ? (size_t)w : 0;
            if (pos >= n) pos = n - 1;
        }
    }
    if (pos + 6 < n) snprintf(out + pos, n - pos, "%s]", e->n > 4 ? ", ..." : "");
}

const kd_gguf_tensor *kd_gguf_tensor_at(const kd_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const kd_gguf_tensor *kd_gguf_find_tensor(const kd_gguf *g, const char *name) {
    int64_t i = index_find(&g->t_ix, g->tensor_names, name);
    return i < 0 ? NULL : &g->tensors[i];
}

int kd_gguf_get_tensor(const kd_gguf *g, const char *name, const kd_gguf_tensor **out, kd_err *err) {
    const kd_gguf_tensor *t = kd_gguf_find_tensor(g, name);
    if (!t) return kd_errf(err, "%s: tensor '%s' is missing", g->name, name);
    *out = t;
    return 0;
}
