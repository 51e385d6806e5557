/*
 * kd_test.h — helpers shared by the cmocka tests: environment (source dir,
 * tests/data, Python), random fills, array comparison with a readable report,
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

/* KD_SOURCE_DIR, KD_DATA_DIR, KD_PYTHON, KD_BIN, KD_BUILD_DIR (set by CTest). */
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

/* `kd import llama2c` of tests/data's aidreams260K (and tok512.bin) into the directory OUT;
 * 0 on success. */
int kd_test_import_aidreams(const char *out);
/* The training fixture of test_train, test_lean and test_shard, in DIR: aidreams260K
 * imported as DIR/teacher, 160 of its samples dumped (32 positions, top-16) as
 * DIR/train.h5 + DIR/val.h5 (20%), and DIR/run.json training configs/student-tiny.json
 * on them (batch 8, 12 steps, lr 3e-3, eval and save every 4, alpha 0.5, T 2).
 * 0 on success. */
int kd_test_train_fixture(const char *dir);
/* max |a − b| over the parameters of the checkpoint directories DIR/A and DIR/B (FP32
 * loader); *rel (when not NULL): that divided by max |a|. */
double kd_test_weight_diff(const char *dir, const char *a, const char *b, double *rel);
/* The number after "KEY": in the text file DIR/REL (asserts that both exist). */
double kd_test_json_number(const char *dir, const char *rel, const char *key);

/* A reference tool or file the test needs is missing (node-llama-cpp, a venv, mpirun,
 * the fortunes corpus): under CI=true the test FAILS; elsewhere it is skipped, and the
 * program exits with KD_TEST_SKIP_CODE so that CTest shows it as Skipped, never Passed. */
#define KD_TEST_SKIP_CODE 77
#define KD_TEST_MISSING(why) kd_test_missing(__FILE__, __LINE__, (why))
void kd_test_missing(const char *file, int line, const char *why);
int kd_test_ci(void);   /* CI=true in the environment */
/* The exit status of a test program: cmocka's failure count, or KD_TEST_SKIP_CODE
 * when nothing failed and something was skipped. */
int kd_test_finish(int failed);
#define KD_RUN_GROUP(tests, setup, teardown) kd_test_finish(cmocka_run_group_tests(tests, setup, teardown))

/* main() for a test file: picks BLAS kernels like kd, then runs the group. */
#define KD_TEST_MAIN(tests)                                        \
    int main(int argc, char **argv) {                              \
        kd_test_init(argc, argv);                                  \
        return KD_RUN_GROUP(tests, NULL, NULL);                    \
    }
void kd_test_init(int argc, char **argv);

#endif
