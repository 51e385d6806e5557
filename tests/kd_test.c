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
#include "core/kd_file.h"
#include "student/kd_checkpoint.h"

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

static int g_skipped;

int kd_test_ci(void) {
    const char *ci = getenv("CI");
    return ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
}

void kd_test_missing(const char *file, int line, const char *why) {
    if (kd_test_ci()) {
        fprintf(stderr, "FAILED (CI=true): a reference this test needs is missing: %s\n", why);
        _fail(file, line);
    }
    fprintf(stderr, "[  SKIPPED ] %s\n", why);
    g_skipped++;
    _skip(file, line);
}

int kd_test_finish(int failed) {
    if (failed == 0 && g_skipped > 0) {
        fprintf(stderr, "%d test(s) skipped: CTest reports this program as Skipped\n", g_skipped);
        return KD_TEST_SKIP_CODE;
    }
    return failed;
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

int kd_test_import_aidreams(const char *out) {
    const char *shared = kd_test_env("KD_DATA_DIR");
    return kd_test_sh("'%s' import llama2c --model '%s/models/aidreams260K/aidreams260K.bin' --tokenizer "
                      "'%s/models/aidreams260K/tok512.bin' --out '%s' > /dev/null",
                      kd_test_env("KD_BIN"), shared, shared, out);
}

int kd_test_train_fixture(const char *dir) {
    const char *kd = kd_test_env("KD_BIN");
    char p[4096];
    snprintf(p, sizeof p, "%s/teacher", dir);
    if (kd_test_import_aidreams(p) ||
        kd_test_sh("'%s' teacher dump --teacher '%s/teacher' --generate 160 --seq-len 32 --topk 16 --out '%s/train.h5' "
                   "--val-out '%s/val.h5' --val-fraction 0.2 --batch 40 --quiet", kd, dir, dir, dir))
        return -1;
    snprintf(p, sizeof p, "%s/run.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fprintf(f, "{\"student\": \"%s/configs/student-tiny.json\", \"train_data\": \"%s/train.h5\", "
               "\"val_data\": \"%s/val.h5\", \"batch_size\": 8, \"steps\": 12, \"lr\": 3e-3, \"warmup\": 2, "
               "\"eval_every\": 4, \"save_every\": 4, \"alpha\": 0.5, \"temperature\": 2.0}\n",
            kd_test_env("KD_SOURCE_DIR"), dir, dir);
    return fclose(f) == 0 ? 0 : -1;
}

double kd_test_weight_diff(const char *dir, const char *a, const char *b, double *rel) {
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s", dir, a);
    snprintf(pb, sizeof pb, "%s/%s", dir, b);
    kd_model ma, mb;
    kd_err err;
    assert_int_equal(kd_checkpoint_load(&ma, pa, &err), 0);
    assert_int_equal(kd_checkpoint_load(&mb, pb, &err), 0);
    assert_int_equal(ma.n_params, mb.n_params);
    double d = 0, m = 0;
    for (int i = 0; i < ma.n_params; i++)
        for (int64_t j = 0; j < ma.params[i]->n; j++) {
            d = fmax(d, fabs((double)ma.params[i]->data[j] - mb.params[i]->data[j]));
            m = fmax(m, fabs((double)ma.params[i]->data[j]));
        }
    kd_model_free(&ma);
    kd_model_free(&mb);
    if (rel) *rel = d / m;
    return d;
}

double kd_test_json_number(const char *dir, const char *rel, const char *key) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    char *s = kd_read_file(path, NULL, NULL);
    assert_non_null(s);
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *at = strstr(s, pat);
    assert_non_null(at);
    double v = atof(at + strlen(pat));
    free(s);
    return v;
}
