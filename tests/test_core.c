/*
 * test_core.c — core utilities: fp16/bf16 conversion, the arena, atomic
 * writes, the RNG, error messages and the BLAS core choice.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_cpu.h"
#include "core/kd_err.h"
#include "core/kd_file.h"
#include "core/kd_fp16.h"
#include "core/kd_mem.h"

static void test_fp16(void **state) {
    (void)state;
    /* exact values and IEEE edge cases */
    assert_int_equal(kd_f32_to_fp16(1.0f), 0x3c00);
    assert_int_equal(kd_f32_to_fp16(-2.0f), 0xc000);
    assert_int_equal(kd_f32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(kd_f32_to_fp16(65520.0f), 0x7c00);          /* rounds to inf */
    assert_int_equal(kd_f32_to_fp16(65519.0f), 0x7bff);
    assert_int_equal(kd_f32_to_fp16(INFINITY), 0x7c00);
    assert_int_equal(kd_f32_to_fp16(NAN) & 0x7e00, 0x7e00);
    assert_int_equal(kd_f32_to_fp16(5.9604645e-08f), 0x0001);    /* smallest subnormal */
    assert_int_equal(kd_f32_to_fp16(2.9802322e-08f), 0x0000);    /* half of it: ties to even → 0 */
    assert_int_equal(kd_f32_to_fp16(6.1035156e-05f), 0x0400);    /* smallest normal */
    assert_int_equal(kd_f32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);  /* tie → even */
    assert_int_equal(kd_f32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);  /* tie → even (up) */
    /* every fp16 value round-trips exactly */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;     /* NaN payloads */
        float f = kd_fp16_to_f32((uint16_t)h);
        assert_int_equal(kd_f32_to_fp16(f), h);
    }
    /* bf16: RNE on the top 16 bits */
    assert_int_equal(kd_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(kd_f32_to_bf16(kd_bits_f32(0x3f808000u)), 0x3f80);   /* tie → even */
    assert_int_equal(kd_f32_to_bf16(kd_bits_f32(0x3f818000u)), 0x3f82);   /* tie → even (up) */
    assert_true(kd_bf16_to_f32(kd_f32_to_bf16(3.140625f)) == 3.140625f);
}

/* fp16 conversion against numpy (an independent RNE implementation). */
static void test_fp16_numpy(void **state) {
    (void)state;
    char in[600], out[600];
    snprintf(in, sizeof in, "%s/fp16_in.bin", kd_test_tmpdir());
    snprintf(out, sizeof out, "%s/fp16_out.bin", kd_test_tmpdir());
    kd_rng r;
    kd_rng_seed(&r, 5);
    enum { N = 100000 };
    float *x = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = kd_rng_normal(&r) * powf(2.0f, (float)(i % 40) - 28.0f);
    assert_int_equal(kd_write_file_atomic(in, x, N * sizeof(float), NULL), 0);
    assert_int_equal(kd_test_sh("'%s' -c \"import numpy as np,sys; "
                                "np.fromfile(sys.argv[1],'<f4').astype('<f2').tofile(sys.argv[2])\" '%s' '%s'",
                                kd_test_env("KD_PYTHON"), in, out), 0);
    size_t len = 0;
    uint16_t *h = (uint16_t *)kd_read_file(out, &len, NULL);
    assert_non_null(h);
    assert_int_equal(len, N * 2);
    int bad = 0;
    for (int i = 0; i < N; i++) bad += kd_f32_to_fp16(x[i]) != h[i];
    assert_int_equal(bad, 0);
    free(h);
    free(x);
}

static void test_arena(void **state) {
    (void)state;
    kd_arena a;
    assert_int_equal(kd_arena_init(&a, 1024, NULL), 0);
    char *p = kd_arena_alloc(&a, 10, NULL);
    char *q = kd_arena_alloc(&a, 3 << 20, NULL);         /* forces a second block */
    assert_non_null(p);
    assert_non_null(q);
    assert_int_equal((uintptr_t)p % KD_ALIGN, 0);
    assert_int_equal((uintptr_t)q % KD_ALIGN, 0);
    memset(q, 1, 3 << 20);
    size_t peak = a.peak;
    kd_arena_reset(&a);
    /* after reset: one block that holds the whole peak */
    assert_true(a.capacity >= peak);
    void *r = kd_arena_alloc(&a, 3 << 20, NULL);
    assert_non_null(r);
    size_t cap = a.capacity;
    kd_arena_reset(&a);
    kd_arena_alloc(&a, 10, NULL);
    kd_arena_alloc(&a, 3 << 20, NULL);
    assert_int_equal(a.capacity, cap);                   /* steady state: no growth */
    kd_arena_free(&a);
}

static void test_atomic_write(void **state) {
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/sub/dir/file.txt", kd_test_tmpdir());
    kd_err err;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sub/dir", kd_test_tmpdir());
    assert_int_equal(kd_mkdirs(dir, &err), 0);
    assert_int_equal(kd_write_file_atomic(path, "hello", 5, &err), 0);
    /* an aborted write leaves the old content and no temporary behind */
    kd_atomic_file af;
    assert_int_equal(kd_atomic_open(&af, path, &err), 0);
    fputs("partial", af.f);
    kd_atomic_abort(&af);
    size_t len;
    char *s = kd_read_file(path, &len, &err);
    assert_string_equal(s, "hello");
    free(s);
    assert_false(kd_file_exists(af.tmp));
    /* errors name the file */
    assert_null(kd_read_file("/nonexistent/x", &len, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x"));
    assert_int_equal(kd_write_file_atomic("/nonexistent/dir/f", "x", 1, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/f"));
}

static void test_err(void **state) {
    (void)state;
    kd_err e;
    kd_errf(&e, "field '%s' is %d", "x", 3);
    kd_err_prefix(&e, "file %s", "a.json");
    assert_string_equal(e.msg, "file a.json: field 'x' is 3");
    /* very long prefixes are cut, never overflow */
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    kd_err_prefix(&e, "%s", big);
    assert_int_equal(strlen(e.msg), KD_ERR_MSG_MAX - 1);
}

static void test_rng(void **state) {
    (void)state;
    kd_rng a, b;
    kd_rng_seed(&a, 42);
    kd_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) assert_true(kd_rng_u64(&a) == kd_rng_u64(&b));
    /* normal: mean ≈ 0, variance ≈ 1 */
    double s = 0, s2 = 0;
    for (int i = 0; i < 200000; i++) {
        double x = kd_rng_normal(&a);
        s += x;
        s2 += x * x;
    }
    assert_true(fabs(s / 200000) < 0.01);
    assert_true(fabs(s2 / 200000 - 1) < 0.02);
    for (int i = 0; i < 1000; i++) assert_true(kd_rng_below(&a, 7) < 7);
}

static void test_blas_choice(void **state) {
    (void)state;
    kd_cpu_info avx512 = {.avx = 1, .avx2 = 1, .fma = 1, .avx512f = 1, .avx512bw = 1, .avx512vl = 1, .avx512dq = 1};
    kd_cpu_info avx2 = {.avx = 1, .avx2 = 1, .fma = 1};
    kd_cpu_info old = {.sse3 = 1};
    assert_string_equal(kd_blas_choose_core(&avx512, "Prescott"), "SkylakeX");
    assert_string_equal(kd_blas_choose_core(&avx512, "Haswell"), "SkylakeX");
    assert_null(kd_blas_choose_core(&avx512, "SkylakeX"));
    assert_null(kd_blas_choose_core(&avx512, "Cooperlake"));
    assert_null(kd_blas_choose_core(&avx512, "SomeFutureCore"));   /* unknown: leave alone */
    assert_string_equal(kd_blas_choose_core(&avx2, "Prescott"), "Haswell");
    assert_null(kd_blas_choose_core(&avx2, "Zen"));
    assert_null(kd_blas_choose_core(&old, "Prescott"));
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16),  cmocka_unit_test(test_fp16_numpy), cmocka_unit_test(test_arena),
        cmocka_unit_test(test_atomic_write), cmocka_unit_test(test_err), cmocka_unit_test(test_rng),
        cmocka_unit_test(test_blas_choice),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
