/*
 * test_safetensors.c — the safetensors reader and writer: round trips of every
 * dtype kd writes, files exchanged with numpy (tests/py/st_*_numpy.py), a suite
 * of hostile headers that must each be rejected naming the bad field, and
 * truncation / byte-flip / random-mutation loops that must never crash.
 * kd_st_copy_f32 (the checkpoint loader's streaming read, which drops mapped
 * pages slice by slice) gives kd_st_read_f32's values across slice borders and
 * leaves a caller's buffer (kd_st_parse) intact.
 */
#include "kd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_fp16.h"
#include "format/kd_safetensors.h"

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", kd_test_tmpdir(), name);
}

/* ---- round trip ---------------------------------------------------------------- */

static void test_roundtrip(void **state) {
    (void)state;
    kd_err err = {{0}};
    float a[12], h[5], b[12], s = -1.5f;
    kd_rng r;
    kd_rng_seed(&r, 7);
    kd_test_fill_normal(&r, a, 12, 1.0f);
    kd_test_fill_normal(&r, h, 5, 3.0f);
    kd_test_fill_normal(&r, b, 12, 100.0f);
    int32_t i32[7] = {-2147483647 - 1, -1, 0, 1, 2, 3, 2147483647};
    uint8_t u8[10] = {0, 1, 2, 3, 127, 128, 200, 253, 254, 255};
    int64_t i64[2] = {-(1LL << 60), 1LL << 61};
    double f64[3] = {1.0 / 3.0, -1e300, 5e-324};
    uint8_t bl[2] = {1, 0};
    int64_t sa[2] = {3, 4}, sh[1] = {5}, sb[3] = {2, 3, 2}, si[1] = {7}, su[2] = {2, 5}, s2[1] = {2}, s3[1] = {3},
            se[2] = {0, 3};

    kd_st_writer *w = kd_st_writer_new(&err);
    assert_non_null(w);
    assert_int_equal(kd_st_writer_add(w, "a.f32", KD_ST_F32, 2, sa, a, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "h.f16", KD_ST_F16, 1, sh, h, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "b.bf16", KD_ST_BF16, 3, sb, b, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "a2.f32", KD_ST_F32, 2, sa, a, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "i32", KD_ST_I32, 1, si, i32, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "u8", KD_ST_U8, 2, su, u8, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "i64", KD_ST_I64, 1, s2, i64, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "f64", KD_ST_F64, 1, s3, f64, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "bool", KD_ST_BOOL, 1, s2, bl, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "scalar", KD_ST_F32, 0, NULL, &s, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "empty", KD_ST_F32, 2, se, NULL, &err), 0);
    assert_int_equal(kd_st_writer_set_meta(w, "step", "41", &err), 0);
    assert_int_equal(kd_st_writer_set_meta(w, "step", "42", &err), 0);
    assert_int_equal(kd_st_writer_set_meta(w, "we\"ird\n", "tab\there \\", &err), 0);

    /* writer errors */
    assert_int_equal(kd_st_writer_add(w, "u8", KD_ST_U8, 2, su, u8, &err), -1);
    assert_non_null(strstr(err.msg, "'u8' added twice"));
    assert_int_equal(kd_st_writer_add(w, "__metadata__", KD_ST_U8, 2, su, u8, &err), -1);
    assert_non_null(strstr(err.msg, "reserved"));
    assert_int_equal(kd_st_writer_add_f32_as(w, "x", KD_ST_I32, 2, su, a, &err), -1);
    assert_non_null(strstr(err.msg, "expected F32/F16/BF16"));
    int64_t neg[1] = {-3};
    assert_int_equal(kd_st_writer_add(w, "neg", KD_ST_U8, 1, neg, u8, &err), -1);
    assert_non_null(strstr(err.msg, "shape[0] = -3"));
    assert_int_equal(kd_st_writer_add(w, "nine", KD_ST_U8, 9, sa, u8, &err), -1);
    assert_non_null(strstr(err.msg, "ndim 9"));

    char path[1024];
    tmp_path(path, sizeof path, "rt.safetensors");
    assert_int_equal(kd_st_writer_save(w, path, &err), 0);
    kd_st_writer_free(w);

    kd_st_file *f = kd_st_open(path, &err);
    if (!f) fail_msg("%s", err.msg);
    assert_int_equal(f->count, 11);
    assert_int_equal(f->header_len % 8, 0);
    assert_string_equal(kd_st_meta(f, "format"), "pt");
    assert_string_equal(kd_st_meta(f, "step"), "42");
    assert_string_equal(kd_st_meta(f, "we\"ird\n"), "tab\there \\");
    assert_null(kd_st_meta(f, "nope"));
    assert_int_equal(kd_st_meta_count(f), 3);
    const char *k, *v;
    assert_int_equal(kd_st_meta_at(f, 0, &k, &v), 0);
    assert_string_equal(k, "format");
    assert_int_equal(kd_st_meta_at(f, 3, &k, &v), -1);
    /* contiguous, in insertion order, covering the data buffer */
    const char *order[] = {"a.f32", "h.f16", "b.bf16", "a2.f32", "i32", "u8", "i64", "f64", "bool", "scalar", "empty"};
    uint64_t off = 0;
    for (int i = 0; i < f->count; i++) {
        assert_string_equal(f->tensors[i].name, order[i]);
        assert_int_equal(f->tensors[i].begin, off);
        off = f->tensors[i].end;
    }
    assert_int_equal(off, f->data_len);

    float got[12], want[12];
    assert_int_equal(kd_st_read_f32(f, "a.f32", got, 2, sa, &err), 0);
    assert_memory_equal(got, a, sizeof a);
    assert_int_equal(kd_st_read_f32(f, "a2.f32", got, 2, sa, &err), 0);
    assert_memory_equal(got, a, sizeof a);
    assert_int_equal(kd_st_read_f32(f, "h.f16", got, 1, sh, &err), 0);
    for (int i = 0; i < 5; i++) want[i] = kd_fp16_to_f32(kd_f32_to_fp16(h[i]));
    assert_memory_equal(got, want, 5 * sizeof(float));
    KD_ASSERT_CLOSE("f16", got, h, 5, 1e-3, 1e-3);
    assert_int_equal(kd_st_read_f32(f, "b.bf16", got, 3, sb, &err), 0);
    for (int i = 0; i < 12; i++) want[i] = kd_bf16_to_f32(kd_f32_to_bf16(b[i]));
    assert_memory_equal(got, want, 12 * sizeof(float));
    assert_int_equal(kd_st_read_f32(f, "scalar", got, 0, NULL, &err), 0);
    assert_true(got[0] == s);
    assert_int_equal(kd_st_read_f32(f, "empty", got, 2, se, &err), 0);

    const kd_st_tensor *t = kd_st_find(f, "i32");
    assert_non_null(t);
    assert_int_equal(t->dtype, KD_ST_I32);
    assert_int_equal(t->numel, 7);
    assert_memory_equal(t->data, i32, sizeof i32);
    t = kd_st_find(f, "u8");
    assert_memory_equal(t->data, u8, sizeof u8);
    assert_int_equal(t->shape[1], 5);
    assert_memory_equal(kd_st_find(f, "i64")->data, i64, sizeof i64);
    assert_memory_equal(kd_st_find(f, "f64")->data, f64, sizeof f64);
    assert_memory_equal(kd_st_find(f, "bool")->data, bl, sizeof bl);
    assert_int_equal(kd_st_find(f, "scalar")->ndim, 0);
    assert_int_equal(kd_st_find(f, "empty")->nbytes, 0);
    assert_null(kd_st_find(f, "missing"));

    /* read errors name the file and the tensor */
    int64_t wrong[2] = {4, 3};
    assert_int_equal(kd_st_read_f32(f, "a.f32", got, 2, wrong, &err), -1);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "tensor 'a.f32': shape [3, 4], expected [4, 3]"));
    assert_int_equal(kd_st_read_f32(f, "a.f32", got, 1, sa, &err), -1);
    assert_non_null(strstr(err.msg, "shape [3, 4], expected [3]"));
    assert_int_equal(kd_st_read_f32(f, "i32", got, 1, si, &err), -1);
    assert_non_null(strstr(err.msg, "tensor 'i32': dtype 'I32', expected F32/F16/BF16"));
    assert_int_equal(kd_st_read_f32(f, "nope", got, 1, si, &err), -1);
    assert_non_null(strstr(err.msg, "tensor 'nope' not found"));
    kd_st_close(f);

    assert_null(kd_st_open("/nonexistent/x.safetensors", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x.safetensors"));
}

/* ---- numpy interop ----------------------------------------------------------------- */

static void check_numpy_file(const kd_st_file *f) {
    kd_err err = {{0}};
    assert_int_equal(f->count, 10);
    assert_string_equal(kd_st_meta(f, "source"), "numpy");
    assert_int_equal((8 + f->header_len) % 2, 1);   /* data deliberately misaligned */
    float got[21], want[21];
    int64_t s23[2] = {2, 3}, s45[2] = {4, 5}, s37[2] = {3, 7}, s04[2] = {0, 4};
    assert_int_equal(kd_st_read_f32(f, "f32", got, 2, s23, &err), 0);
    for (int i = 0; i < 6; i++) want[i] = (float)(i * 0.5 - 1);
    assert_memory_equal(got, want, 6 * sizeof(float));
    assert_int_equal(kd_st_read_f32(f, "f16", got, 2, s45, &err), 0);
    for (int i = 0; i < 20; i++) want[i] = kd_fp16_to_f32(kd_f32_to_fp16((float)(i * 0.1 - 1)));
    assert_memory_equal(got, want, 20 * sizeof(float));
    assert_int_equal(kd_st_read_f32(f, "bf16", got, 2, s37, &err), 0);
    for (int i = 0; i < 21; i++) want[i] = kd_bf16_to_f32(kd_f32_to_bf16((float)(i * 0.37 - 3)));
    assert_memory_equal(got, want, 21 * sizeof(float));
    assert_int_equal(kd_st_read_f32(f, "scalar", got, 0, NULL, &err), 0);
    assert_true(got[0] == 3.25f);
    assert_int_equal(kd_st_read_f32(f, "empty", got, 2, s04, &err), 0);

    int32_t i32[5], ei32[5] = {-2, -1, 0, 1, 2147483647};
    memcpy(i32, kd_st_find(f, "i32")->data, sizeof i32);
    assert_memory_equal(i32, ei32, sizeof i32);
    uint8_t eu8[4] = {0, 1, 128, 255}, ebool[3] = {1, 0, 1};
    assert_memory_equal(kd_st_find(f, "u8")->data, eu8, 4);
    assert_memory_equal(kd_st_find(f, "bool")->data, ebool, 3);
    int64_t i64[3];
    memcpy(i64, kd_st_find(f, "i64")->data, sizeof i64);
    assert_true(i64[0] == -(1LL << 40) && i64[1] == 0 && i64[2] == (1LL << 62));
    double f64[2];
    memcpy(f64, kd_st_find(f, "f64")->data, sizeof f64);
    assert_true(f64[0] == 1.0 / 3.0 && f64[1] == -2.5);
}

static void test_numpy_file(void **state) {
    (void)state;
    kd_err err = {{0}};
    char path[1024];
    tmp_path(path, sizeof path, "numpy.safetensors");
    assert_int_equal(kd_test_python("st_write_numpy.py", "'%s'", path), 0);
    kd_st_file *f = kd_st_open(path, &err);
    if (!f) fail_msg("%s", err.msg);
    check_numpy_file(f);
    kd_st_close(f);

    /* the same bytes from memory, at an odd address */
    size_t len;
    char *bytes = kd_read_file(path, &len, &err);
    assert_non_null(bytes);
    unsigned char *buf = malloc(len + 1);
    memcpy(buf + 1, bytes, len);
    f = kd_st_parse(buf + 1, len, "numpy-in-memory", &err);
    if (!f) fail_msg("%s", err.msg);
    check_numpy_file(f);
    kd_st_close(f);
    free(buf);
    free(bytes);
}

static void test_kd_to_numpy(void **state) {
    (void)state;
    kd_err err = {{0}};
    float x12[12], x10[10], x12b[12];
    for (int i = 0; i < 12; i++) x12[i] = (float)(i * 0.25 - 1);
    for (int i = 0; i < 10; i++) x10[i] = (float)(i * 0.1 - 0.5);
    for (int i = 0; i < 12; i++) x12b[i] = (float)(i * 0.37 - 3);
    int32_t i32[4] = {-7, 0, 7, 2147483647};
    uint8_t u8[3] = {0, 200, 255};
    int64_t s34[2] = {3, 4}, s25[2] = {2, 5}, s43[2] = {4, 3}, s4[1] = {4}, s3[1] = {3}, s0[1] = {0};
    kd_st_writer *w = kd_st_writer_new(&err);
    assert_int_equal(kd_st_writer_add_f32_as(w, "w_f32", KD_ST_F32, 2, s34, x12, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "w_f16", KD_ST_F16, 2, s25, x10, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "w_bf16", KD_ST_BF16, 2, s43, x12b, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "w_i32", KD_ST_I32, 1, s4, i32, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "w_u8", KD_ST_U8, 1, s3, u8, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "w_empty", KD_ST_F32, 1, s0, NULL, &err), 0);
    assert_int_equal(kd_st_writer_set_meta(w, "note", "quote \" and backslash \\", &err), 0);
    char path[1024];
    tmp_path(path, sizeof path, "kd.safetensors");
    if (kd_st_writer_save(w, path, &err)) fail_msg("%s", err.msg);
    kd_st_writer_free(w);
    assert_int_equal(kd_test_python("st_read_numpy.py", "'%s'", path), 0);
}

/* ---- hostile input ----------------------------------------------------------------- */

/* 8-byte length + header text + `data` zero bytes, in a buffer of exactly that size. */
static unsigned char *mk(const char *hdr, size_t data, size_t *len) {
    size_t n = strlen(hdr);
    *len = 8 + n + data;
    unsigned char *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, hdr, n);
    return b;
}

/* Parse must fail and the message must contain every given substring. */
static void expect_fail_buf(const unsigned char *b, size_t len, const char *const *subs, int line) {
    kd_err err = {{0}};
    kd_st_file *f = kd_st_parse(b, len, "evil.safetensors", &err);
    if (f) {
        kd_st_close(f);
        fail_msg("line %d: accepted a bad file", line);
    }
    for (int i = 0; subs[i]; i++)
        if (!strstr(err.msg, subs[i])) fail_msg("line %d: message \"%s\" lacks \"%s\"", line, err.msg, subs[i]);
}

static void expect_fail_at(const char *hdr, size_t data, const char *const *subs, int line) {
    size_t len;
    unsigned char *b = mk(hdr, data, &len);
    expect_fail_buf(b, len, subs, line);
    free(b);
}
#define EXPECT_FAIL(hdr, data, ...) \
    expect_fail_at((hdr), (data), (const char *const[]){"evil.safetensors", __VA_ARGS__, NULL}, __LINE__)

static void expect_ok(const char *hdr, size_t data, int count) {
    size_t len;
    kd_err err = {{0}};
    unsigned char *b = mk(hdr, data, &len);
    kd_st_file *f = kd_st_parse(b, len, "ok.safetensors", &err);
    if (!f) fail_msg("rejected %s: %s", hdr, err.msg);
    assert_int_equal(f->count, count);
    kd_st_close(f);
    free(b);
}

#define T(name, body) "{\"" name "\":{" body "}}"
#define E(dt, shape, off) "\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off

static void test_hostile(void **state) {
    (void)state;
    unsigned char small[8] = {0};
    for (size_t n = 0; n < 8; n++)
        expect_fail_buf(small, n, (const char *const[]){"evil.safetensors", "header length", "at least 8", NULL},
                        __LINE__);
    assert_null(kd_st_parse(NULL, 0, NULL, NULL));

    unsigned char big[16] = {0, 0, 0, 0, 0, 1, 0, 0};   /* N = 2^40 */
    expect_fail_buf(big, 16, (const char *const[]){"header length", "100 MB", NULL}, __LINE__);
    unsigned char over[16] = {9, 0, 0, 0, 0, 0, 0, 0, '{', '}'};   /* N = 9 > 16 - 8 */
    expect_fail_buf(over, 16, (const char *const[]){"header length 9", "file size", NULL}, __LINE__);
    unsigned char top[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};   /* N = 2^64 - 1 */
    expect_fail_buf(top, 16, (const char *const[]){"header length", NULL}, __LINE__);

    EXPECT_FAIL("", 0, "header", "invalid JSON");
    EXPECT_FAIL("{", 0, "header", "invalid JSON");
    EXPECT_FAIL("{} x", 0, "header", "invalid JSON", "byte 3");
    EXPECT_FAIL("[1, 2]", 0, "header is a JSON array, expected an object");
    EXPECT_FAIL("\"str\"", 0, "header is a JSON string");
    EXPECT_FAIL("{\"a\":5}", 0, "tensor 'a'", "entry is number", "expected an object");
    EXPECT_FAIL("{\"a\":[]}", 0, "tensor 'a'", "entry is array");

    EXPECT_FAIL(T("a", E("F8", "[1]", "[0,1]")), 1, "tensor 'a'", "dtype 'F8' is unknown", "BF16");
    EXPECT_FAIL(T("a", E("f32", "[1]", "[0,4]")), 4, "tensor 'a'", "dtype 'f32' is unknown");
    EXPECT_FAIL(T("a", "\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]"), 1, "'a'", "field 'dtype'", "found 4");
    EXPECT_FAIL(T("a", "\"shape\":[1],\"data_offsets\":[0,1]"), 1, "'a'", "field 'dtype' is missing");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[0,1]") ",\"dtype\":\"U8\""), 1, "'a'", "field 'dtype' appears twice");

    EXPECT_FAIL(T("a", E("U8", "3", "[0,3]")), 3, "tensor 'a'", "field 'shape'", "found 3");
    EXPECT_FAIL(T("a", E("U8", "[-1]", "[0,0]")), 0, "'a'", "field 'shape'", "non-negative integers");
    EXPECT_FAIL(T("a", E("U8", "[1.5]", "[0,1]")), 1, "field 'shape'", "[1.5]");
    EXPECT_FAIL(T("a", E("U8", "[\"2\"]", "[0,2]")), 2, "field 'shape'");
    EXPECT_FAIL(T("a", E("U8", "[[2]]", "[0,2]")), 2, "field 'shape'");
    EXPECT_FAIL(T("a", E("U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]")), 1, "field 'shape'", "at most 8");
    EXPECT_FAIL(T("a", E("U8", "[1e300]", "[0,1]")), 1, "field 'shape'");
    EXPECT_FAIL(T("a", "\"dtype\":\"U8\",\"data_offsets\":[0,1]"), 1, "field 'shape' is missing");
    EXPECT_FAIL(T("a", E("U8", "[4294967296,4294967296,4294967296]", "[0,0]")), 0, "'a'", "field 'shape'",
                "overflows");
    EXPECT_FAIL(T("a", E("F64", "[1125899906842624,1024]", "[0,0]")), 0, "'a'", "overflows");   /* 2^60 * 8 bytes */
    EXPECT_FAIL(T("a", E("F64", "[1073741824,1073741824,8]", "[0,0]")), 0, "'a'", "overflows");

    EXPECT_FAIL(T("a", "\"dtype\":\"U8\",\"shape\":[1]"), 1, "'a'", "field 'data_offsets' is missing");
    EXPECT_FAIL(T("a", E("U8", "[1]", "1")), 1, "'a'", "field 'data_offsets'", "two integers");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[1]")), 1, "field 'data_offsets'", "found [1]");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[0,1,2]")), 2, "field 'data_offsets'");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[-1,0]")), 1, "field 'data_offsets'");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[0.5,1.5]")), 2, "field 'data_offsets'");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[\"0\",\"1\"]")), 1, "field 'data_offsets'");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[2,1]")), 2, "field 'data_offsets'", "begin <= end");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[3,4]")), 3, "field 'data_offsets'", "<= 3 (the data size)");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[0,1e300]")), 1, "field 'data_offsets'");
    EXPECT_FAIL(T("a", E("U8", "[1]", "[18446744073709551615,18446744073709551616]")), 1, "field 'data_offsets'");
    EXPECT_FAIL(T("a", E("F32", "[2]", "[0,4]")), 8, "tensor 'a'", "field 'data_offsets' [0, 4] spans 4 bytes",
                "expected 8");
    EXPECT_FAIL(T("a", E("BF16", "[2,3]", "[0,11]")), 12, "'a'", "expected 12");

    EXPECT_FAIL("{\"a\":{" E("U8", "[8]", "[0,8]") "},\"b\":{" E("U8", "[8]", "[4,12]") "}}", 12, "tensors 'a' and 'b'",
                "overlap", "data_offsets");
    EXPECT_FAIL("{\"a\":{" E("U8", "[8]", "[0,8]") "},\"z\":{" E("U8", "[0]", "[9,9]") "},\"b\":{" E("U8", "[2]",
                "[6,8]") "}}", 12, "'a' and 'b' overlap");
    EXPECT_FAIL("{\"a\":{" E("U8", "[1]", "[0,1]") "},\"a\":{" E("U8", "[1]", "[1,2]") "}}", 2, "tensor 'a'",
                "duplicate name");
    EXPECT_FAIL("{\"__metadata__\":5}", 0, "field '__metadata__'", "expected an object");
    EXPECT_FAIL("{\"__metadata__\":{\"k\":1}}", 0, "field '__metadata__'", "key 'k'", "expected a string");
    EXPECT_FAIL("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "field '__metadata__'", "key 'k' appears twice");
    EXPECT_FAIL("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "field '__metadata__' appears twice");
    char longname[600];
    snprintf(longname, sizeof longname, "{\"%0300d\":{" E("U8", "[1]", "[0,1]") "}}", 0);
    EXPECT_FAIL(longname, 1, "tensor name", "300 bytes long", "at most 255");

    /* harmless oddities are accepted */
    expect_ok("{}", 0, 0);
    expect_ok("{}      ", 0, 0);
    expect_ok("{\"__metadata__\":{\"format\":\"pt\"}}", 0, 0);
    expect_ok("{\"a\":{" E("U8", "[0]", "[0,0]") "},\"b\":{" E("I32", "[0,5]", "[0,0]") "}}", 4, 2);
    expect_ok("{\"a\":{" E("U8", "[2]", "[2,4]") ",\"extra\":1},\"b\":{" E("U8", "[]", "[0,1]") "}}", 5, 2);
    expect_ok(T("a", E("U8", "[2.0]", "[0.0,2]")), 2, 1);
}

/* ---- never crash ------------------------------------------------------------------- */

/* A successful parse must describe only bytes inside the buffer; read floats too. */
static void check_sane(const kd_st_file *f, const unsigned char *b, size_t len) {
    for (int i = 0; i < f->count; i++) {
        const kd_st_tensor *t = &f->tensors[i];
        const unsigned char *p = t->data;
        assert_true(p >= b + 8 && p + t->nbytes <= b + len);
        assert_int_equal(t->nbytes, (size_t)t->numel * kd_st_dtype_size(t->dtype));
        assert_true(kd_st_find(f, t->name) == t);
        if ((t->dtype == KD_ST_F32 || t->dtype == KD_ST_F16 || t->dtype == KD_ST_BF16) && t->numel <= 4096) {
            float *out = malloc((size_t)t->numel * sizeof(float) + 1);
            assert_int_equal(kd_st_read_f32(f, t->name, out, t->ndim, t->shape, NULL), 0);
            free(out);
        }
    }
}

static void try_parse(const unsigned char *src, size_t len, int *ok, int *bad) {
    unsigned char *b = malloc(len ? len : 1);   /* exactly len bytes: ASan sees any overread */
    memcpy(b, src, len);
    kd_err err = {{0}};
    kd_st_file *f = kd_st_parse(b, len, "fuzz", &err);
    if (f) {
        check_sane(f, b, len);
        kd_st_close(f);
        ++*ok;
    } else {
        assert_true(strncmp(err.msg, "fuzz", 4) == 0);   /* a message naming the file */
        ++*bad;
    }
    free(b);
}

static unsigned char *valid_file(size_t *len) {
    kd_err err = {{0}};
    float a[6] = {1, -2, 3.5f, 4, 5, 6};
    int32_t i[3] = {1, 2, 3};
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s6[1] = {6};
    kd_st_writer *w = kd_st_writer_new(&err);
    assert_int_equal(kd_st_writer_add(w, "layer.0.w", KD_ST_F32, 2, s23, a, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "ids", KD_ST_I32, 1, s3, i, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "h", KD_ST_F16, 1, s6, a, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "b", KD_ST_BF16, 2, s23, a, &err), 0);
    assert_int_equal(kd_st_writer_set_meta(w, "k", "v", &err), 0);
    char path[1024];
    tmp_path(path, sizeof path, "fuzz.safetensors");
    assert_int_equal(kd_st_writer_save(w, path, &err), 0);
    kd_st_writer_free(w);
    unsigned char *b = (unsigned char *)kd_read_file(path, len, &err);
    assert_non_null(b);
    return b;
}

static void test_truncate_and_flip(void **state) {
    (void)state;
    size_t len;
    unsigned char *good = valid_file(&len);
    int ok = 0, bad = 0;
    for (size_t n = 0; n < len; n++) try_parse(good, n, &ok, &bad);
    assert_int_equal(ok, 0);   /* every truncation is an error */
    try_parse(good, len, &ok, &bad);
    assert_int_equal(ok, 1);

    unsigned char *m = malloc(len);
    static const unsigned char masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    for (size_t p = 0; p < len; p++)
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(m, good, len);
            m[p] ^= masks[k];
            try_parse(m, len, &ok, &bad);
        }
    assert_true(ok > 1 && bad > 0);   /* data flips are harmless, header flips mostly not */
    free(m);
    free(good);
}

static void test_random_mutations(void **state) {
    (void)state;
    size_t len;
    unsigned char *good = valid_file(&len);
    unsigned char *m = malloc(len + 64);
    static const char interesting[] = "{}[]\":,-0123456789e.tfnul \\";
    kd_rng r;
    kd_rng_seed(&r, 1234);
    int ok = 0, bad = 0;
    for (int it = 0; it < 20000; it++) {
        size_t n = len;
        memcpy(m, good, len);
        int edits = 1 + (int)kd_rng_below(&r, 4);
        for (int e = 0; e < edits; e++) {
            size_t hdr_end = 8 + (size_t)m[0] + 256 * (size_t)m[1];   /* mostly the header */
            if (hdr_end > n) hdr_end = n;
            size_t p = (size_t)kd_rng_below(&r, hdr_end);
            switch (kd_rng_below(&r, 4)) {
            case 0: m[p] = (unsigned char)kd_rng_below(&r, 256); break;
            case 1: m[p] = (unsigned char)interesting[kd_rng_below(&r, sizeof interesting - 1)]; break;
            case 2: /* delete a byte */
                memmove(m + p, m + p + 1, n - p - 1);
                n--;
                break;
            default: /* insert a byte */
                memmove(m + p + 1, m + p, n - p);
                m[p] = (unsigned char)interesting[kd_rng_below(&r, sizeof interesting - 1)];
                n++;
                break;
            }
        }
        try_parse(m, n, &ok, &bad);
    }
    assert_true(bad > 0);
    free(m);
    free(good);
}

/* Tensors larger than one 16 MiB slice of kd_st_copy_f32, in each float dtype. */
static void test_copy_f32(void **state) {
    (void)state;
    const int64_t n32 = ((int64_t)4 << 20) + 77, n16 = ((int64_t)8 << 20) + 5;   /* > 1 slice each */
    float *x = malloc((size_t)n16 * sizeof *x), *a = malloc((size_t)n16 * sizeof *a), *b = malloc((size_t)n16 * sizeof *b);
    assert_non_null(x);
    assert_non_null(a);
    assert_non_null(b);
    for (int64_t i = 0; i < n16; i++) x[i] = (float)((i * 2654435761u) % 100003) * 1e-3f - 50.0f;
    int32_t ints[4] = {1, 2, 3, 4};
    int64_t s4 = 4;
    kd_err err;
    kd_st_writer *w = kd_st_writer_new(&err);
    assert_int_equal(kd_st_writer_add(w, "f32", KD_ST_F32, 1, &n32, x, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "bf16", KD_ST_BF16, 1, &n16, x, &err), 0);
    assert_int_equal(kd_st_writer_add_f32_as(w, "f16", KD_ST_F16, 1, &n16, x, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "i32", KD_ST_I32, 1, &s4, ints, &err), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/copy.safetensors", kd_test_tmpdir());
    assert_int_equal(kd_st_writer_save(w, path, &err), 0);
    kd_st_writer_free(w);

    size_t len;
    char *bytes = kd_read_file(path, &len, &err);
    assert_non_null(bytes);
    kd_st_file *files[2] = {kd_st_open(path, &err), kd_st_parse(bytes, len, "buffer", &err)};
    const char *names[3] = {"f32", "bf16", "f16"};
    for (int k = 0; k < 2; k++) {
        assert_non_null(files[k]);
        for (int j = 0; j < 3; j++) {
            const kd_st_tensor *t = kd_st_find(files[k], names[j]);
            assert_non_null(t);
            assert_int_equal(kd_st_read_f32(files[k], names[j], a, 1, NULL, &err), 0);
            memset(b, 0xff, (size_t)t->numel * sizeof *b);
            assert_int_equal(kd_st_copy_f32(files[k], t, b, &err), 0);
            assert_memory_equal(a, b, (size_t)t->numel * sizeof *b);
            /* the pages come back from the file (map) or were never dropped (buffer) */
            assert_int_equal(kd_st_read_f32(files[k], names[j], b, 1, NULL, &err), 0);
            assert_memory_equal(a, b, (size_t)t->numel * sizeof *b);
        }
        const kd_st_tensor *ti = kd_st_find(files[k], "i32");
        assert_int_equal(kd_st_copy_f32(files[k], ti, b, &err), -1);
        assert_non_null(strstr(err.msg, "'i32'"));
        assert_non_null(strstr(err.msg, "I32"));
    }
    /* F32 comes back exactly; BF16 as its rounding */
    assert_int_equal(kd_st_copy_f32(files[1], kd_st_find(files[1], "f32"), b, &err), 0);
    assert_memory_equal(b, x, (size_t)n32 * sizeof *b);
    assert_int_equal(kd_st_copy_f32(files[1], kd_st_find(files[1], "bf16"), b, &err), 0);
    for (int64_t i = 0; i < n16; i += 997) assert_true(b[i] == kd_bf16_to_f32(kd_f32_to_bf16(x[i])));
    kd_st_close(files[0]);
    kd_st_close(files[1]);
    free(bytes);
    free(x);
    free(a);
    free(b);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_roundtrip),
    cmocka_unit_test(test_numpy_file),
    cmocka_unit_test(test_kd_to_numpy),
    cmocka_unit_test(test_hostile),
    cmocka_unit_test(test_truncate_and_flip),
    cmocka_unit_test(test_random_mutations),
    cmocka_unit_test(test_copy_f32),
};
KD_TEST_MAIN(tests)
