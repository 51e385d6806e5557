/*
 * test_docs.c — the documentation cannot drift from the program.
 *
 *   cli_reference   docs/cli.md is exactly what tools/gen_cli_md.sh prints from
 *                   the --help of every command and subcommand of this build;
 *   doc_commands    every kd command in the shell blocks of README.md and
 *                   docs/ (every .md) is a real command and uses only options its
 *                   --help documents (tests/py/check_docs.py);
 *   readme_tour     README's tour, run for real in order on a small teacher
 *                   (aidreams260K from tests/data) by tests/docs_tour.sh;
 *   quickstart      README's main job (tools/quickstart.sh) end to end with a few
 *                   training steps: every stage runs and the report has its table,
 *                   pictures and sample; a second run skips every stage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_test.h"

static void test_cli_reference(void **state) {
    (void)state;
    const char *src = kd_test_env("KD_SOURCE_DIR"), *kd = kd_test_env("KD_BIN"), *tmp = kd_test_tmpdir();
    assert_int_equal(kd_test_sh("'%s/tools/gen_cli_md.sh' '%s' > '%s/cli.md'", src, kd, tmp), 0);
    int rc = kd_test_sh("diff -u '%s/docs/cli.md' '%s/cli.md' >&2", src, tmp);
    if (rc) fprintf(stderr, "docs/cli.md is stale: run tools/gen_cli_md.sh build/kd > docs/cli.md\n");
    assert_int_equal(rc, 0);
}

static void test_doc_commands(void **state) {
    (void)state;
    assert_int_equal(kd_test_python("check_docs.py", "'%s' '%s'", kd_test_env("KD_BIN"), kd_test_env("KD_SOURCE_DIR")), 0);
}

static void test_readme_tour(void **state) {
    (void)state;
    const char *src = kd_test_env("KD_SOURCE_DIR"), *shared = kd_test_env("KD_DATA_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/aidreams260K/aidreams260K.bin", shared);
    FILE *f = fopen(path, "rb");
    if (!f) KD_TEST_MISSING("README tour: tests/data/models/aidreams260K/aidreams260K.bin missing");
    fclose(f);
    assert_int_equal(kd_test_sh("'%s/tests/docs_tour.sh' '%s' '%s' '%s' '%s/tour'", src, kd_test_env("KD_BIN"), src,
                                shared, kd_test_tmpdir()),
                     0);
}

/* The number of lines of FILE that contain every one of the strings (NULL-terminated). */
static int count_lines(const char *file, const char *const *needles) {
    FILE *f = fopen(file, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        int all = 1;
        for (int i = 0; needles[i]; i++) all &= strstr(line, needles[i]) != NULL;
        n += all;
    }
    fclose(f);
    return n;
}

static void test_quickstart(void **state) {
    (void)state;
    FILE *f = fopen("/usr/share/games/fortunes/fortunes", "r");
    if (!f) KD_TEST_MISSING("quick start: /usr/share/games/fortunes/fortunes missing (tools/setup.sh installs it)");
    fclose(f);
    const char *src = kd_test_env("KD_SOURCE_DIR"), *tmp = kd_test_tmpdir();
    char out[4096], p[4200];
    snprintf(out, sizeof out, "%s/qs", tmp);
    assert_int_equal(kd_test_sh("KD='%s' TEACHER_STEPS=12 STUDENT_STEPS=6 '%s/tools/quickstart.sh' '%s' > '%s/qs.log' 2>&1 "
                                "|| { tail -30 '%s/qs.log' >&2; exit 1; }",
                                kd_test_env("KD_BIN"), src, out, tmp, tmp),
                     0);
    /* the report: a table row per model, each with a perplexity, and the pictures and sample */
    snprintf(p, sizeof p, "%s/report/README.md", out);
    const char *rows[][3] = {{"| teacher (F16) |", "teacher-f16.gguf", NULL},
                             {"| best KD student (F16) |", "student-f16.gguf", NULL},
                             {"| CE-only student (F16) |", "ce-only-f16.gguf", NULL},
                             {"| best student, AWQ Q4_0 |", "student-awq-q4_0.gguf", NULL}};
    for (int i = 0; i < 4; i++) assert_int_equal(count_lines(p, rows[i]), 1);
    const char *nan_cell[] = {"nan", NULL}, *sample[] = {"The secret of life is", NULL};
    assert_int_equal(count_lines(p, nan_cell), 0);
    assert_true(count_lines(p, sample) >= 1);
    for (const char *const *png = (const char *const[]){"heatmap.png", "curves.png", NULL}; *png; png++) {
        snprintf(p, sizeof p, "%s/report/%s", out, *png);
        assert_int_equal(kd_test_sh("test -s '%s'", p), 0);
    }
    /* every stage is done; a second run skips them all and only rewrites the report */
    assert_int_equal(kd_test_sh("KD='%s' '%s/tools/quickstart.sh' '%s' > '%s/qs2.log' 2>&1", kd_test_env("KD_BIN"), src,
                                out, tmp),
                     0);
    assert_int_equal(kd_test_sh("! grep -q '^\\$ ' '%s/qs2.log'", tmp), 0);   /* no kd command ran */
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_reference),
        cmocka_unit_test(test_doc_commands),
        cmocka_unit_test(test_readme_tour),
        cmocka_unit_test(test_quickstart),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
