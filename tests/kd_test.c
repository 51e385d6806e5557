/*
 * kd_test.c — helpers shared by the cmocka tests (see kd_test.h).
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/kd_cpu.h"

static char g_tmpdir[512];

static void cleanup_tmpdir(void) {
    if (g_tmpdir[0] && !getenv("KD_TEST_KEEP")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmpdir);
    }
}

void kd_test_init(int argc, char **argv) {
    kd_blas_select(argc, argv);
}

const char *kd_test_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "test environment variable %s is not set (run the tests through ctest)\n", name);
        exit(1);
    }
    return v;
}

const char *kd_test_tmpdir(void) {
    if (!g_tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/kdtest.XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(cleanup_tmpdir);
    }
    return g_tmpdir;
}

void kd_test_fill_normal(kd_rng *r, float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = scale * kd_rng_normal(r);
}

double kd_test_compare(const char *what, const float *a, const float *b, int64_t n, double atol, double rtol) {
    double worst = 0.0;
    int64_t wi = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double r = d / (atol + rtol * fabs((double)b[i]));
        if (isnan(a[i]) || isnan(b[i])) r = INFINITY;
        if (r > worst || wi < 0) {
            worst = r;
            wi = i;
        }
    }
    if (worst > 1.0)
        fprintf(stderr, "%s: element %lld: got %.8g, expected %.8g (%.3g× the tolerance atol=%g rtol=%g)\n", what,
                (long long)wi, a[wi], b[wi], worst, atol, rtol);
    return worst;
}

static int run_status(const char *cmd) {
    int st = system(cmd);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int kd_test_python(const char *script, const char *args_fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, args_fmt);
    vsnprintf(args, sizeof args, args_fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/py/%s' %s", kd_test_env("KD_PYTHON"), kd_test_env("KD_SOURCE_DIR"),
             script, args);
    return run_status(cmd);
}

int kd_test_sh(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return run_status(cmd);
}
