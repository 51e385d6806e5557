/*
 * test_docs.c — the documentation cannot drift from the program.
 *
 *   cli_reference   docs/cli.md is exactly what tools/gen_cli_md.sh prints from
 *                   the --help of every command and subcommand of this build;
 *   doc_commands    every kd command in the shell blocks of README.md and
 *                   docs/ (every .md) is a real command and uses only options its
 *                   --help documents (tests/py/check_docs.py);
 *   readme_tour     README's tour, run for real in order on a small teacher
 *                   (aidreams260K from ../shared) by tests/docs_tour.sh.
 */
#include <stdio.h>
#include <stdlib.h>

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
    const char *src = kd_test_env("KD_SOURCE_DIR"), *shared = kd_test_env("KD_SHARED_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/aidreams260K/aidreams260K.bin", shared);
    FILE *f = fopen(path, "rb");
    if (!f) skip();   /* ../shared is not there: the tour needs a real teacher */
    fclose(f);
    assert_int_equal(kd_test_sh("'%s/tests/docs_tour.sh' '%s' '%s' '%s' '%s/tour'", src, kd_test_env("KD_BIN"), src,
                                shared, kd_test_tmpdir()),
                     0);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_reference),
        cmocka_unit_test(test_doc_commands),
        cmocka_unit_test(test_readme_tour),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
