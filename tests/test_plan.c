/*
 * test_plan.c — the memory planner's prediction against the measured peak
 * RSS of real training steps (`kd plan --measure`), within 15%, and its
 * arithmetic on the 3B config (parameter count of Llama-3.2-3B).
 */
#include "kd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "student/kd_plan.h"

/* predicted / measured peak RSS of `kd plan --measure` (mode "fp32" or "lean", chunk rows of the LM head) */
static double __attribute__((unused)) measured_ratio(const char *config, int batch, int seq, int chunk,
                                                     const char *mode) {
    char out[600];
    snprintf(out, sizeof out, "%s/plan.txt", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("'%s' plan --config '%s/configs/%s' --batch %d --seq %d --lm-chunk %d "
                                "--memory-mode %s --measure > '%s'", kd_test_env("KD_BIN"),
                                kd_test_env("KD_SOURCE_DIR"), config, batch, seq, chunk, mode, out), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char line[512];
    double ratio = -1;
    while (fgets(line, sizeof line, f)) {
        char *r = strstr(line, "ratio ");
        if (r) ratio = atof(r + 6);
    }
    fclose(f);
    fprintf(stderr, "%s %s batch %d seq %d lm-chunk %d: predicted/measured peak RSS = %.3f\n", mode, config, batch,
            seq, chunk, ratio);
    return ratio;
}

static void __attribute__((unused)) test_plan_matches_rss(void **state) {
    (void)state;
    /* the step kd train runs (train/kd_step.h), both memory modes, the LM head in chunks of
     * 256 rows and unchunked (one chunk of all B·T rows), two shapes: within 10% */
    static const char *const modes[] = {"fp32", "lean"};
    for (int m = 0; m < 2; m++) {
        assert_in_range(1000 * measured_ratio("student-tiny-gqa-swa.json", 4, 512, 256, modes[m]), 900, 1100);
        assert_in_range(1000 * measured_ratio("student-tiny-gqa-swa.json", 4, 512, 2048, modes[m]), 900, 1100);
        assert_in_range(1000 * measured_ratio("student-15m.json", 8, 256, 256, modes[m]), 900, 1100);
        assert_in_range(1000 * measured_ratio("student-15m.json", 8, 256, 2048, modes[m]), 900, 1100);
    }
    assert_in_range(1000 * measured_ratio("student-tiny.json", 8, 256, 64, "fp32"), 900, 1100);
}

static void test_plan_3b(void **state) {
    (void)state;
    kd_config c;
    char path[600];
    snprintf(path, sizeof path, "%s/configs/student-3b.json", kd_test_env("KD_SOURCE_DIR"));
    assert_int_equal(kd_config_load(&c, path, NULL), 0);
    kd_plan_opts o = {.batch = 1, .seq = 512, .threads = 2, .lm_chunk = 256, .topk = 64, .ranks = 1};
    kd_plan p;
    kd_plan_compute(&c, &o, &p);
    /* Llama-3.2-3B: 3,212,749,824 parameters with tied embeddings */
    assert_int_equal(p.n_params, 3212749824LL);
    assert_int_equal(p.weights, 4 * p.n_params);
    assert_int_equal(p.optimizer, 8 * p.n_params);
    /* FP32 AdamW does not fit 24 GiB; 4 ranks shard the optimizer state to a quarter */
    assert_true(p.train_peak > (int64_t)24 << 30);
    o.ranks = 4;
    kd_plan q;
    kd_plan_compute(&c, &o, &q);
    assert_int_equal(q.optimizer, p.optimizer / 4);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
#ifndef __SANITIZE_ADDRESS__   /* ASan's shadow memory and quarantine change the RSS being predicted */
        cmocka_unit_test(test_plan_matches_rss),
#endif
        cmocka_unit_test(test_plan_3b)};
    return KD_RUN_GROUP(tests, NULL, NULL);
}
