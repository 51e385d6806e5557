/*
 * kd_test.h — helpers shared by the cmocka tests: environment (source dir,
 * ../shared, Python), random fills, array comparison with a readable report,
 * and running the PyTorch reference scripts.
 */
#ifndef KD_TEST_H
#define KD_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/kd_rng.h"

/* KD_SOURCE_DIR, KD_SHARED_DIR, KD_PYTHON, KD_BIN, KD_BUILD_DIR (set by CTest). */
const char *kd_test_env(const char *name);
/* A fresh temporary directory for this test (removed at exit). */
const char *kd_test_tmpdir(void);

void kd_test_fill_normal(kd_rng *r, float *x, int64_t n, float scale);

/* Max over i of |a−b| / (atol + rtol·|b|); ≤ 1 means every element is within tolerance.
 * Prints the worst element when it exceeds 1. */
double kd_test_compare(const char *what, const float *a, const float *b, int64_t n, double atol, double rtol);
#define KD_ASSERT_CLOSE(what, a, b, n, atol, rtol) \
    assert_true(kd_test_compare((what), (a), (b), (n), (atol), (rtol)) <= 1.0)

/* Run `$KD_PYTHON $KD_SOURCE_DIR/tests/py/SCRIPT args...`; returns its exit status. */
int kd_test_python(const char *script, const char *args_fmt, ...) __attribute__((format(printf, 2, 3)));
/* Run a shell command; returns its exit status. */
int kd_test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* main() for a test file: picks BLAS kernels like kd, then runs the group. */
#define KD_TEST_MAIN(tests)                                        \
    int main(int argc, char **argv) {                              \
        kd_test_init(argc, argv);                                  \
        return cmocka_run_group_tests(tests, NULL, NULL);          \
    }
void kd_test_init(int argc, char **argv);

#endif
