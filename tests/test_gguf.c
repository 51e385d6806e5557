/*
 * test_gguf.c — the hardened GGUF reader: the Llama-2 vocab GGUF from
 * tests/data/vocab, a small hand-assembled valid file and one crafted variant per
 * rejection rule of the safe-reader checklist (each must fail naming the
 * field), truncation at every length and random byte flips (never a crash),
 * and the tokenizer's reading of tokenizer.ggml.* from crafted files.
 */
#include "kd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_err.h"
#include "core/kd_rng.h"
#include "data/kd_tokenizer.h"
#include "data/kd_tokenizer_load.h"
#include "format/kd_gguf.h"

/* ---- a byte buffer to assemble files ------------------------------------------ */

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void f32(buf *b, float v) { put(b, &v, 4); }
static void strn(buf *b, const char *s, size_t n) {
    u64(b, n);
    put(b, s, n);
}
static void str(buf *b, const char *s) { strn(b, s, strlen(s)); }
static void key(buf *b, const char *k, uint32_t type) {
    str(b, k);
    u32(b, type);
}
static void pad(buf *b, size_t a) {
    while (b->n % a) u8(b, 0);
}

/* One mutation per rejection rule; M_NONE builds the valid file. */
enum {
    M_NONE, M_MAGIC, M_VERSION1, M_VERSION4, M_NKV_NEG, M_NKV_CAP, M_NKV_BYTES, M_NT_NEG, M_STRLEN,
    M_ARRCOUNT, M_STRARR_COUNT, M_EMPTY_KEY, M_KEY_NUL, M_DUP_KEY, M_VTYPE, M_VTYPE_NEG, M_NESTED, M_ETYPE,
    M_BOOL, M_BOOL_ARR, M_ALIGN_TYPE, M_ALIGN_ZERO, M_ALIGN_NPOT, M_TNAME_LONG, M_TNAME_EMPTY, M_TNAME_DUP,
    M_NDIMS, M_NEG_DIM, M_OVERFLOW, M_TYPE_Q5_0, M_TYPE_99, M_BLOCK, M_MISALIGNED, M_OUTSIDE, M_OVERLAP,
    M_SHORT_DATA, M_COUNT
};

/* magic, v3, 2 tensors, 8 KVs; w: F32 {4, 2} at 0; q: Q8_0 {32} at 32; data padded to 32. */
static buf build(int m) {
    buf b = {0};
    put(&b, m == M_MAGIC ? "GGUX" : "GGUF", 4);
    u32(&b, m == M_VERSION1 ? 1 : m == M_VERSION4 ? 4 : 3);
    u64(&b, m == M_NT_NEG ? (uint64_t)-3 : 2);
    u64(&b, m == M_NKV_NEG ? (uint64_t)-1 : m == M_NKV_CAP ? (1ull << 40) : m == M_NKV_BYTES ? 100000 : 8);
    key(&b, "general.architecture", KD_GGUF_STRING);
    if (m == M_STRLEN) u64(&b, 1ull << 62), put(&b, "llama", 5);
    else str(&b, "llama");
    if (m == M_ALIGN_TYPE) key(&b, "general.alignment", KD_GGUF_UINT64), u64(&b, 32);
    else key(&b, "general.alignment", KD_GGUF_UINT32), u32(&b, m == M_ALIGN_ZERO ? 0 : m == M_ALIGN_NPOT ? 48 : 32);
    if (m == M_EMPTY_KEY) key(&b, "", KD_GGUF_BOOL);
    else if (m == M_KEY_NUL) strn(&b, "test\0flag", 9), u32(&b, KD_GGUF_BOOL);
    else key(&b, "test.flag", KD_GGUF_BOOL);
    u8(&b, m == M_BOOL ? 2 : 1);
    key(&b, m == M_DUP_KEY ? "test.flag" : "test.f32", KD_GGUF_FLOAT32);
    f32(&b, 0.5f);
    key(&b, "test.u64", m == M_VTYPE ? 13 : m == M_VTYPE_NEG ? (uint32_t)-1 : KD_GGUF_UINT64);
    u64(&b, 7);
    key(&b, "test.strings", KD_GGUF_ARRAY);
    u32(&b, KD_GGUF_STRING);
    u64(&b, m == M_STRARR_COUNT ? (1ull << 40) : 3);
    str(&b, "a"), str(&b, "bc"), str(&b, "");
    key(&b, "test.floats", KD_GGUF_ARRAY);
    u32(&b, m == M_NESTED ? KD_GGUF_ARRAY : m == M_ETYPE ? 13 : KD_GGUF_FLOAT32);
    u64(&b, m == M_ARRCOUNT ? (1ull << 61) : 3);
    f32(&b, 1), f32(&b, 2), f32(&b, 3);
    key(&b, "test.bools", KD_GGUF_ARRAY);
    u32(&b, KD_GGUF_BOOL);
    u64(&b, 2);
    u8(&b, 0), u8(&b, m == M_BOOL_ARR ? 3 : 1);
    /* tensor infos */
    if (m == M_TNAME_LONG) str(&b, "a_tensor_name_of_exactly_sixty_four_bytes_is_one_byte_too_long__");
    else str(&b, m == M_TNAME_EMPTY ? "" : "w");
    u32(&b, m == M_NDIMS ? 5 : 2);
    u64(&b, m == M_OVERFLOW ? (1ull << 40) : 4);
    u64(&b, m == M_NEG_DIM ? (uint64_t)-2 : m == M_OVERFLOW ? (1ull << 40) : 2);
    if (m == M_NDIMS) u64(&b, 1), u64(&b, 1), u64(&b, 1);
    u32(&b, m == M_TYPE_Q5_0 ? 6 : m == M_TYPE_99 ? 99 : KD_GGML_TYPE_F32);
    u64(&b, 0);
    str(&b, m == M_TNAME_DUP ? "w" : "q");
    u32(&b, 1);
    u64(&b, m == M_BLOCK ? 16 : 32);
    u32(&b, KD_GGML_TYPE_Q8_0);
    u64(&b, m == M_MISALIGNED ? 40 : m == M_OUTSIDE ? 4096 : m == M_OVERLAP ? 0 : 32);
    pad(&b, 32);
    for (int i = 0; i < 8; i++) f32(&b, (float)i);   /* w */
    uint16_t d = 0x3c00;                                /* q: scale 1.0, quants 0..31 */
    put(&b, &d, 2);
    for (int i = 0; i < 32; i++) u8(&b, (uint8_t)i);
    if (m != M_SHORT_DATA) pad(&b, 32);
    else b.n -= 1;
    return b;
}

/* Parse a copy of exactly len bytes (ASan sees any overread); free *copy after closing. */
static kd_gguf *parse_exact(const buf *b, size_t len, unsigned char **copy, kd_err *err) {
    *copy = malloc(len ? len : 1);
    memcpy(*copy, b->p, len);
    return kd_gguf_parse(*copy, len, "t.gguf", err);
}

static void test_valid_file(void **state) {
    (void)state;
    buf b = build(M_NONE);
    kd_err err = {{0}};
    kd_gguf *g = kd_gguf_parse(b.p, b.n, "t.gguf", &err);
    if (!g) fail_msg("%s", err.msg);
    assert_int_equal(kd_gguf_version(g), 3);
    assert_int_equal(kd_gguf_alignment(g), 32);
    assert_int_equal(kd_gguf_n_kv(g), 8);
    assert_int_equal(kd_gguf_n_tensors(g), 2);
    assert_string_equal(kd_gguf_kv_key(g, 2), "test.flag");
    assert_int_equal(kd_gguf_kv_type(g, 5), KD_GGUF_ARRAY);

    const char *s;
    size_t sl;
    uint32_t u;
    uint64_t u6;
    float f;
    int bo;
    assert_int_equal(kd_gguf_get_str(g, "general.architecture", &s, &sl, &err), 0);
    assert_string_equal(s, "llama");
    assert_int_equal(sl, 5);
    assert_int_equal(kd_gguf_get_u32(g, "general.alignment", &u, &err), 0);
    assert_int_equal(u, 32);
    assert_int_equal(kd_gguf_get_bool(g, "test.flag", &bo, &err), 0);
    assert_int_equal(bo, 1);
    assert_int_equal(kd_gguf_get_f32(g, "test.f32", &f, &err), 0);
    assert_true(f == 0.5f);
    assert_int_equal(kd_gguf_get_u64(g, "test.u64", &u6, &err), 0);
    assert_int_equal(u6, 7);
    /* strict types */
    assert_int_equal(kd_gguf_get_u32(g, "test.u64", &u, &err), -1);
    assert_string_equal(err.msg, "t.gguf: key 'test.u64' has type UINT64, expected UINT32");
    assert_int_equal(kd_gguf_get_u32(g, "test.floats", &u, &err), -1);
    assert_string_equal(err.msg, "t.gguf: key 'test.floats' has type ARRAY[FLOAT32], expected UINT32");
    assert_int_equal(kd_gguf_get_f32(g, "nope", &f, &err), -1);
    assert_string_equal(err.msg, "t.gguf: key 'nope' is missing");
    assert_int_equal(kd_gguf_find_key(g, "nope"), -1);

    kd_gguf_arr a;
    assert_int_equal(kd_gguf_get_arr(g, "test.strings", KD_GGUF_STRING, 3, &a, &err), 0);
    assert_int_equal(a.n, 3);
    const char *e = kd_gguf_arr_str(&a, 1, &sl);
    assert_int_equal(sl, 2);
    assert_memory_equal(e, "bc", 2);
    kd_gguf_arr_str(&a, 2, &sl);
    assert_int_equal(sl, 0);
    assert_int_equal(kd_gguf_get_arr(g, "test.floats", KD_GGUF_FLOAT32, -1, &a, &err), 0);
    assert_true(kd_gguf_arr_f32(&a, 2) == 3.0f);
    assert_int_equal(kd_gguf_get_arr(g, "test.floats", KD_GGUF_INT32, -1, &a, &err), -1);
    assert_string_equal(err.msg, "t.gguf: key 'test.floats' is an array of FLOAT32, expected an array of INT32");
    assert_int_equal(kd_gguf_get_arr(g, "test.floats", KD_GGUF_FLOAT32, 4, &a, &err), -1);
    assert_non_null(strstr(err.msg, "has 3 elements, expected 4"));
    assert_int_equal(kd_gguf_get_arr(g, "test.f32", -1, -1, &a, &err), -1);
    assert_non_null(strstr(err.msg, "has type FLOAT32"));

    char d[256];
    kd_gguf_kv_describe(g, 0, d, sizeof d);
    assert_string_equal(d, "STRING \"llama\"");
    kd_gguf_kv_describe(g, 1, d, sizeof d);
    assert_string_equal(d, "UINT32 32");
    kd_gguf_kv_describe(g, 5, d, sizeof d);
    assert_string_equal(d, "ARRAY[STRING] 3 [\"a\", \"bc\", \"\"]");
    kd_gguf_kv_describe(g, 6, d, sizeof d);
    assert_string_equal(d, "ARRAY[FLOAT32] 3 [1, 2, 3]");

    const kd_gguf_tensor *t = kd_gguf_find_tensor(g, "w");
    assert_non_null(t);
    assert_int_equal(t->type, KD_GGML_TYPE_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 4);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->nbytes, 32);
    float w[8];
    memcpy(w, t->data, 32);
    assert_true(w[7] == 7.0f);
    assert_int_equal((const unsigned char *)t->data - b.p, kd_gguf_data_offset(g));
    assert_int_equal(kd_gguf_data_offset(g) % 32, 0);
    t = kd_gguf_find_tensor(g, "q");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 34);
    assert_int_equal(((const unsigned char *)t->data)[2 + 31], 31);
    assert_null(kd_gguf_find_tensor(g, "x"));
    assert_int_equal(kd_gguf_get_tensor(g, "x", &t, &err), -1);
    assert_string_equal(err.msg, "t.gguf: tensor 'x' is missing");
    kd_gguf_close(g);

    /* the type table */
    uint64_t nb;
    int64_t ne[4] = {256, 3, 1, 1};
    assert_int_equal(kd_ggml_nbytes(KD_GGML_TYPE_Q6_K, ne, &nb), 0);
    assert_int_equal(nb, 3 * 210);
    assert_int_equal(kd_ggml_nbytes(KD_GGML_TYPE_Q4_K, (int64_t[4]){128, 1, 1, 1}, &nb), -1);
    assert_int_equal(kd_ggml_nbytes(6, ne, &nb), -1);
    assert_string_equal(kd_ggml_type_name(13), "Q5_K");
    assert_null(kd_ggml_type_get(13));
    assert_int_equal(kd_ggml_type_get(KD_GGML_TYPE_BF16)->block_bytes, 2);

    /* version 2 has the same layout and is accepted */
    b.p[4] = 2;
    g = kd_gguf_parse(b.p, b.n, "t.gguf", &err);
    if (!g) fail_msg("%s", err.msg);
    assert_int_equal(kd_gguf_version(g), 2);
    kd_gguf_close(g);

    /* a file that does not exist */
    assert_null(kd_gguf_open("/nonexistent/x.gguf", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x.gguf"));
    free(b.p);
}

static void test_rejections(void **state) {
    (void)state;
    static const struct {
        int m;
        const char *want1, *want2;
    } cases[] = {
        {M_MAGIC, "magic", "GGUF"},
        {M_VERSION1, "version is 1", "2 or 3"},
        {M_VERSION4, "version is 4", "2 or 3"},
        {M_NKV_NEG, "n_kv is -1", ""},
        {M_NKV_CAP, "n_kv is 1099511627776", ""},
        {M_NKV_BYTES, "n_kv 100000", "bytes"},
        {M_NT_NEG, "n_tensors is -3", ""},
        {M_STRLEN, "kv 0 ('general.architecture')", "string value: truncated"},
        {M_ARRCOUNT, "kv 6 ('test.floats')", "array count"},
        {M_STRARR_COUNT, "kv 5 ('test.strings')", "array count"},
        {M_EMPTY_KEY, "kv 2", "empty key"},
        {M_KEY_NUL, "kv 2", "NUL"},
        {M_DUP_KEY, "kv 3 ('test.flag')", "duplicate key (also kv 2)"},
        {M_VTYPE, "kv 4 ('test.u64')", "value type 13 is invalid"},
        {M_VTYPE_NEG, "kv 4 ('test.u64')", "value type -1 is invalid"},
        {M_NESTED, "kv 6 ('test.floats')", "nested arrays"},
        {M_ETYPE, "kv 6 ('test.floats')", "element type 13"},
        {M_BOOL, "kv 2 ('test.flag')", "BOOL value is 2"},
        {M_BOOL_ARR, "kv 7 ('test.bools')", "BOOL element 1 is 3"},
        {M_ALIGN_TYPE, "key 'general.alignment' has type UINT64, expected UINT32", ""},
        {M_ALIGN_ZERO, "general.alignment is 0", "power of two"},
        {M_ALIGN_NPOT, "general.alignment is 48", "power of two"},
        {M_TNAME_LONG, "tensor 0", "name length 64, expected less than 64"},
        {M_TNAME_EMPTY, "tensor 0", "empty name"},
        {M_TNAME_DUP, "tensor 1 ('w')", "duplicate tensor name"},
        {M_NDIMS, "tensor 0 ('w')", "n_dims is 5"},
        {M_NEG_DIM, "tensor 0 ('w')", "ne[1] is -2"},
        {M_OVERFLOW, "tensor 0 ('w')", "overflows"},
        {M_TYPE_Q5_0, "tensor 0 ('w')", "type 6 (Q5_0) is not supported"},
        {M_TYPE_99, "tensor 0 ('w')", "type 99 (unknown) is not supported"},
        {M_BLOCK, "tensor 1 ('q')", "ne[0] = 16 is not a multiple of the Q8_0 block size 32"},
        {M_MISALIGNED, "tensor 1 ('q')", "offset 40 is not a multiple of the alignment 32"},
        {M_OUTSIDE, "tensor 1 ('q')", "outside the data blob"},
        {M_OVERLAP, "overlaps", "('w')"},
        {M_SHORT_DATA, "tensor 1 ('q')", "outside the data blob"},
    };
    assert_int_equal(sizeof cases / sizeof cases[0], M_COUNT - 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = build(cases[i].m);
        kd_err err = {{0}};
        unsigned char *copy;
        kd_gguf *g = parse_exact(&b, b.n, &copy, &err);
        free(copy);
        if (g) fail_msg("mutation %d parsed", cases[i].m);
        if (!strstr(err.msg, cases[i].want1) || !strstr(err.msg, cases[i].want2) || strncmp(err.msg, "t.gguf: ", 8))
            fail_msg("mutation %d: message '%s' lacks '%s' / '%s'", cases[i].m, err.msg, cases[i].want1,
                     cases[i].want2);
        free(b.p);
    }
}

/* Every prefix of the valid file is rejected (until the last tensor's data is
 * complete) and none crashes. */
static void test_truncation(void **state) {
    (void)state;
    buf b = build(M_NONE);
    kd_err err = {{0}};
    kd_gguf *g = kd_gguf_parse(b.p, b.n, "t.gguf", &err);
    assert_non_null(g);
    const kd_gguf_tensor *q = kd_gguf_find_tensor(g, "q");
    size_t data_end = kd_gguf_data_offset(g) + q->offset + q->nbytes;
    kd_gguf_close(g);
    for (size_t cut = 0; cut < b.n; cut++) {
        err.msg[0] = '\0';
        unsigned char *copy;
        g = parse_exact(&b, cut, &copy, &err);
        if (cut < data_end && g) fail_msg("prefix of %zu bytes parsed", cut);
        if (!g) assert_true(strncmp(err.msg, "t.gguf: ", 8) == 0);
        kd_gguf_close(g);
        free(copy);
    }
    free(b.p);
}

/* Touch everything a successfully parsed (possibly corrupted) file exposes. */
static unsigned exercise(const kd_gguf *g) {
    unsigned sum = 0;
    char d[512];
    for (int64_t i = 0; i < kd_gguf_n_kv(g); i++) {
        kd_gguf_kv_describe(g, i, d, sizeof d);
        sum += (unsigned)strlen(d) + (unsigned)strlen(kd_gguf_kv_key(g, i));
        kd_gguf_arr a;
        if (kd_gguf_kv_arr(g, i, &a, NULL) == 0 && a.type == KD_GGUF_STRING)
            for (uint64_t j = 0; j < a.n; j++) {
                size_t sl;
                const char *s = kd_gguf_arr_str(&a, j, &sl);
                if (sl) sum += (unsigned char)s[sl - 1];
            }
    }
    for (int64_t i = 0; i < kd_gguf_n_tensors(g); i++) {
        const kd_gguf_tensor *t = kd_gguf_tensor_at(g, i);
        if (t->nbytes) sum += ((const unsigned char *)t->data)[0] + ((const unsigned char *)t->data)[t->nbytes - 1];
        assert_true(kd_gguf_find_tensor(g, t->name) == t);
    }
    return sum;
}

static buf build_tok(int m);

/* Random byte flips in the valid file and in a tokenizer GGUF: a clean error or
 * a file whose every exposed byte lies inside the buffer. */
static void test_random_flips(void **state) {
    (void)state;
    kd_rng r;
    kd_rng_seed(&r, 1234);
    for (int file = 0; file < 2; file++) {
        buf b = file ? build_tok(0) : build(M_NONE);
        int ok = 0, failed = 0, toks = 0;
        unsigned sink = 0;
        unsigned char *orig = malloc(b.n);
        memcpy(orig, b.p, b.n);
        for (int it = 0; it < 20000; it++) {
            memcpy(b.p, orig, b.n);
            int flips = 1 + (int)kd_rng_below(&r, 4);
            for (int k = 0; k < flips; k++) {
                size_t at = (size_t)kd_rng_below(&r, b.n);
                b.p[at] = kd_rng_below(&r, 2) ? (unsigned char)kd_rng_below(&r, 256) : (unsigned char)(b.p[at] ^ 0x80);
            }
            kd_err err = {{0}};
            unsigned char *copy;
            kd_gguf *g = parse_exact(&b, b.n, &copy, &err);
            if (g) {
                ok++;
                sink += exercise(g);
                kd_tokenizer *tok = kd_tokenizer_from_gguf(g, NULL);
                if (tok) {
                    kd_tokens ids = {0};
                    char *text = NULL;
                    if (kd_tokenizer_encode(tok, "a a<s>a", 7, KD_TOK_ENC_ADD_SPECIAL | KD_TOK_ENC_PARSE_SPECIAL, &ids,
                                            NULL) == 0 &&
                        kd_tokenizer_decode(tok, ids.ids, ids.n, KD_TOK_DEC_SPECIAL, &text, NULL, NULL) == 0)
                        toks++;
                    free(text);
                    kd_tokens_free(&ids);
                }
                kd_tokenizer_free(tok);
            } else {
                failed++;
                assert_true(strncmp(err.msg, "t.gguf: ", 8) == 0);
            }
            kd_gguf_close(g);
            free(copy);
        }
        fprintf(stderr, "random flips: %d parsed (%d usable tokenizers), %d rejected (checksum %u)\n", ok, toks,
                failed, sink);
        assert_true(ok > 0 && failed > 0);
        free(orig);
        free(b.p);
    }
}

/* ---- the Llama-2 vocab GGUF ---------------------------------------------------- */

static void test_vocab_gguf(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf", kd_test_env("KD_DATA_DIR"));
    kd_err err = {{0}};
    kd_gguf *g = kd_gguf_open(path, &err);
    if (!g) fail_msg("%s", err.msg);
    assert_int_equal(kd_gguf_n_tensors(g), 0);
    const char *s;
    assert_int_equal(kd_gguf_get_str(g, "tokenizer.ggml.model", &s, NULL, &err), 0);
    assert_string_equal(s, "llama");
    assert_int_equal(kd_gguf_get_str(g, "general.architecture", &s, NULL, &err), 0);
    assert_string_equal(s, "llama");
    kd_gguf_arr a;
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.tokens", KD_GGUF_STRING, 32000, &a, &err), 0);
    size_t sl;
    const char *p = kd_gguf_arr_str(&a, 1, &sl);
    assert_int_equal(sl, 3);
    assert_memory_equal(p, "<s>", 3);
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.scores", KD_GGUF_FLOAT32, 32000, &a, &err), 0);
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.token_type", KD_GGUF_INT32, 32000, &a, &err), 0);
    assert_int_equal(kd_gguf_arr_i32(&a, 3), 6);
    uint32_t u;
    assert_int_equal(kd_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u, &err), 0);
    assert_int_equal(u, 1);
    assert_int_equal(kd_gguf_get_u32(g, "tokenizer.ggml.model", &u, &err), -1);
    assert_non_null(strstr(err.msg, "key 'tokenizer.ggml.model' has type STRING, expected UINT32"));
    char d[256];
    kd_gguf_kv_describe(g, kd_gguf_find_key(g, "tokenizer.ggml.tokens"), d, sizeof d);
    assert_non_null(strstr(d, "ARRAY[STRING] 32000 [\"<unk>\", \"<s>\""));
    kd_gguf_close(g);
}

/* ---- tokenizer.ggml.* from crafted files -------------------------------------- */

enum { T_OK, T_MODEL, T_SCORES_N, T_TYPES_T, T_TYPE_VAL, T_BOS_RANGE, T_BOS_TYPE, T_ADD_BOS_TYPE, T_DUP, T_NOTOKENS };

static buf build_tok(int m) {
    static const char *const pcs[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "\xE2\x96\x81" "a"};
    buf b = {0};
    put(&b, "GGUF", 4);
    u32(&b, 3);
    u64(&b, 0);
    u64(&b, m == T_NOTOKENS ? 2 : 7);
    key(&b, "tokenizer.ggml.model", KD_GGUF_STRING);
    str(&b, m == T_MODEL ? "bert" : "llama");
    key(&b, "tokenizer.ggml.add_bos_token", m == T_ADD_BOS_TYPE ? KD_GGUF_UINT8 : KD_GGUF_BOOL);
    u8(&b, 0);
    if (m == T_NOTOKENS) return b;
    key(&b, "tokenizer.ggml.tokens", KD_GGUF_ARRAY);
    u32(&b, KD_GGUF_STRING);
    u64(&b, 6);
    for (int i = 0; i < 6; i++) str(&b, m == T_DUP && i == 5 ? "a" : pcs[i]);
    key(&b, "tokenizer.ggml.scores", KD_GGUF_ARRAY);
    u32(&b, KD_GGUF_FLOAT32);
    u64(&b, m == T_SCORES_N ? 5 : 6);
    for (int i = 0; i < (m == T_SCORES_N ? 5 : 6); i++) f32(&b, (float)-i);
    key(&b, "tokenizer.ggml.token_type", KD_GGUF_ARRAY);
    u32(&b, m == T_TYPES_T ? KD_GGUF_UINT32 : KD_GGUF_INT32);
    u64(&b, 6);
    for (int i = 0; i < 6; i++) u32(&b, m == T_TYPE_VAL && i == 4 ? 9 : i == 0 ? 2 : i < 3 ? 3 : 1);
    key(&b, "tokenizer.ggml.bos_token_id", m == T_BOS_TYPE ? KD_GGUF_INT32 : KD_GGUF_UINT32);
    u32(&b, m == T_BOS_RANGE ? 6 : 1);
    key(&b, "tokenizer.ggml.add_space_prefix", KD_GGUF_BOOL);
    u8(&b, 1);
    return b;
}

static void test_tokenizer_from_gguf(void **state) {
    (void)state;
    kd_err err = {{0}};
    buf b = build_tok(T_OK);
    kd_gguf *g = kd_gguf_parse(b.p, b.n, "v.gguf", &err);
    if (!g) fail_msg("%s", err.msg);
    kd_tokenizer *tok = kd_tokenizer_from_gguf(g, &err);
    kd_gguf_close(g);   /* the tokenizer keeps its own copy */
    free(b.p);
    if (!tok) fail_msg("%s", err.msg);
    assert_int_equal(kd_tokenizer_n_vocab(tok), 6);
    assert_false(kd_tokenizer_flags(tok) & KD_TOK_ADD_BOS);   /* add_bos_token false */
    assert_true(kd_tokenizer_score(tok, 5) == -5.0f);
    kd_tokens ids = {0};
    assert_int_equal(kd_tokenizer_encode(tok, "a a", 3, KD_TOK_ENC_ADD_SPECIAL, &ids, &err), 0);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], 5);
    assert_int_equal(ids.ids[1], 5);
    kd_tokens_free(&ids);
    kd_tokenizer_free(tok);

    static const struct {
        int m;
        const char *want;
    } cases[] = {
        {T_MODEL, "tokenizer.ggml.model is 'bert', expected 'llama'"},
        {T_SCORES_N, "key 'tokenizer.ggml.scores' has 5 elements, expected 6"},
        {T_TYPES_T, "key 'tokenizer.ggml.token_type' is an array of UINT32, expected an array of INT32"},
        {T_TYPE_VAL, "token 4: type 9 is invalid"},
        {T_BOS_RANGE, "tokenizer.ggml.bos_token_id is 6, expected < n_vocab 6"},
        {T_BOS_TYPE, "key 'tokenizer.ggml.bos_token_id' has type INT32, expected UINT32"},
        {T_ADD_BOS_TYPE, "key 'tokenizer.ggml.add_bos_token' has type UINT8, expected BOOL"},
        {T_DUP, "token 5 ('a'): same piece as token 4"},
        {T_NOTOKENS, "key 'tokenizer.ggml.tokens' is missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        b = build_tok(cases[i].m);
        g = kd_gguf_parse(b.p, b.n, "v.gguf", &err);
        if (!g) fail_msg("case %d: %s", cases[i].m, err.msg);
        assert_null(kd_tokenizer_from_gguf(g, &err));
        if (!strstr(err.msg, cases[i].want) || strncmp(err.msg, "v.gguf: ", 8))
            fail_msg("case %d: message '%s' lacks '%s'", cases[i].m, err.msg, cases[i].want);
        kd_gguf_close(g);
        free(b.p);
    }
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_valid_file),
    cmocka_unit_test(test_rejections),
    cmocka_unit_test(test_truncation),
    cmocka_unit_test(test_random_flips),
    cmocka_unit_test(test_vocab_gguf),
    cmocka_unit_test(test_tokenizer_from_gguf),
};
KD_TEST_MAIN(tests)
