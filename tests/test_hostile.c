/*
 * test_hostile.c — the defences against hostile files that the fuzz targets
 * (tests/fuzz) cannot show by themselves: the HDF5 probe child
 * (data/kd_dump_probe.c) turns a crash, an abort or a hang while reading
 * into one error naming the file and the object being read, passes a
 * refusal through unchanged, and costs little on a good file; `kd teacher
 * info` on files that crash or hang libhdf5 exits with that error.
 */
#include "kd_test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/kd_dump.h"
#include "data/kd_dump_probe.h"

static int crash_fn(const char *path, kd_err *err) {
    (void)path;
    (void)err;
    kdd_stage("attribute '%s'", "teacher");
    raise(SIGSEGV);
    return 0;
}

static int abort_fn(const char *path, kd_err *err) {
    (void)path;
    (void)err;
    kdd_stage("dataset 'tokens'");
    abort();
}

static int hang_fn(const char *path, kd_err *err) {
    (void)path;
    (void)err;
    kdd_stage("the global heap");
    for (;;) pause();
    return 0;
}

static int refuse_fn(const char *path, kd_err *err) {
    kdd_stage("attribute 'format'");
    return kd_errf(err, "%s: attribute 'format' = \"x\", expected \"kd-teacher-dump\"", path);
}

static int ok_fn(const char *path, kd_err *err) {
    (void)path;
    (void)err;
    kdd_stage("attribute 'format'");
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_probe(void **state) {
    (void)state;
    kd_err err;
    setenv("KD_HDF5_PROBE_TIMEOUT", "1", 1);
    assert_int_equal(kdd_probe("d.h5", "kd teacher dump", crash_fn, &err), -1);
    fprintf(stderr, "  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "d.h5: not a valid kd teacher dump: the HDF5 library crashed (signal 11"));
    assert_non_null(strstr(err.msg, "while reading attribute 'teacher'"));
    assert_int_equal(kdd_probe("d.h5", "kd teacher dump", abort_fn, &err), -1);
    fprintf(stderr, "  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "while reading dataset 'tokens'"));
    double t0 = now();
    assert_int_equal(kdd_probe("d.h5", "kd teacher dump", hang_fn, &err), -1);
    double dt = now() - t0;
    fprintf(stderr, "  %s (after %.2f s)\n", err.msg, dt);
    assert_non_null(strstr(err.msg, "did not finish reading the global heap within 1 s"));
    assert_true(dt >= 0.9 && dt < 10);
    assert_int_equal(kdd_probe("d.h5", "kd teacher dump", refuse_fn, &err), -1);
    assert_string_equal(err.msg, "d.h5: attribute 'format' = \"x\", expected \"kd-teacher-dump\"");
    assert_int_equal(kdd_probe("d.h5", "kd teacher dump", ok_fn, &err), 0);
    setenv("KD_HDF5_PROBE", "0", 1);   /* off: fn is not run at all */
    assert_int_equal(kdd_probe("d.h5", "kd teacher dump", crash_fn, &err), 0);
    unsetenv("KD_HDF5_PROBE");
    unsetenv("KD_HDF5_PROBE_TIMEOUT");
}

/* A real dump through kd_dump_open: the probe's cost per open, and a truncated copy refused by name. */
static void test_probe_dump(void **state) {
    (void)state;
    char src[600], path[700];
    snprintf(src, sizeof src, "%s/tests/fuzz/corpus/dump/topk4-f16-spm.h5", kd_test_env("KD_SOURCE_DIR"));
    kd_err err;
    const int n = 20;
    double t[2];
    for (int probe = 0; probe < 2; probe++) {
        if (!probe) setenv("KD_HDF5_PROBE", "0", 1);
        double t0 = now();
        for (int i = 0; i < n; i++) {
            kd_dump *d = kd_dump_open(src, &err);
            assert_non_null(d);
            kd_dump_close(d);
        }
        t[probe] = (now() - t0) / n;
        unsetenv("KD_HDF5_PROBE");
    }
    fprintf(stderr, "  kd_dump_open: %.2f ms without the probe, %.2f ms with it\n", 1e3 * t[0], 1e3 * t[1]);
    assert_true(t[1] < t[0] + 0.5);   /* generous: the machine may be loaded */
    snprintf(path, sizeof path, "%s/cut.h5", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("head -c 3000 '%s' > '%s'", src, path), 0);
    assert_null(kd_dump_open(path, &err));
    fprintf(stderr, "  %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
}

/* The CLI on files that crash or hang Debian's libhdf5 (kept from the fuzz campaign): a clear error, exit 1. */
static void test_cli_on_libhdf5_crashers(void **state) {
    (void)state;
    const char *src = kd_test_env("KD_SOURCE_DIR"), *kd = kd_test_env("KD_BIN");
    char out[700];
    snprintf(out, sizeof out, "%s/cli.err", kd_test_tmpdir());
    static const char *files[][2] = {
        /* a SEGV in libhdf5; under AddressSanitizer the child stops earlier, on a memcpy overlap
         * inside libhdf5, and exits with status 1: either way the same error names the object */
        {"dump/h5-segv-in-H5HG_read-attr-format", "while reading attribute 'format'"},
        {"dump/h5-hang-attr-format", "did not finish reading attribute 'format' within 2 s"},
    };
    for (int i = 0; i < 2; i++) {
        int rc = kd_test_sh("KD_HDF5_PROBE_TIMEOUT=2 '%s' teacher info '%s/tests/fuzz/crashers/%s' 2>'%s'", kd, src,
                            files[i][0], out);
        assert_int_equal(rc, 1);
        assert_int_equal(kd_test_sh("grep -q \"%s\" '%s'", files[i][1], out), 0);
        assert_int_equal(kd_test_sh("grep -q 'not a valid kd teacher dump: the HDF5 library' '%s'", out), 0);
    }
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_cli_on_libhdf5_crashers),
    cmocka_unit_test(test_probe),
    cmocka_unit_test(test_probe_dump),
};
KD_TEST_MAIN(tests)
