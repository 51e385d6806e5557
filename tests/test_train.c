/*
 * test_train.c — `kd train` end to end on dumps of the real teacher
 * (aidreams260K sampling its own sequences): learning happens, the same seed
 * gives the same weights, N steps + resume + N steps equals 2N steps bit for
 * bit, 2 MPI ranks equal 1 rank on the same global batch (≤ 1e-5), a NaN loss
 * stops the run naming the step with the last checkpoint intact, and bad
 * configs are refused with the key named.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "student/kd_checkpoint.h"

static char g_dir[600];

static const char *kd(void) { return kd_test_env("KD_BIN"); }

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    return kd_test_train_fixture(g_dir);
}

static int train(const char *env, const char *out, const char *extra) {
    return kd_test_sh("env OMP_NUM_THREADS=1 %s '%s' train --config '%s/run.json' --out '%s/%s' --quiet %s", env, kd(),
                      g_dir, g_dir, out, extra);
}


static void test_learns_and_is_deterministic(void **state) {
    (void)state;
    assert_int_equal(train("", "a", ""), 0);
    assert_int_equal(train("", "b", ""), 0);
    /* same seed, same threads: identical files */
    assert_int_equal(kd_test_sh("cmp -s '%s/a/final/model.safetensors' '%s/b/final/model.safetensors'", g_dir, g_dir), 0);
    /* the final evaluation has the kd eval keys and improved on the first evaluation */
    double ce = kd_test_json_number(g_dir, "a/final_eval.json", "ce");
    double ppl = kd_test_json_number(g_dir, "a/final_eval.json", "ppl");
    double kl = kd_test_json_number(g_dir, "a/final_eval.json", "kl");
    double top1 = kd_test_json_number(g_dir, "a/final_eval.json", "top1");
    assert_true(fabs(ppl - exp(ce)) < 1e-6 * ppl);
    assert_true(top1 > 0 && top1 <= 1);
    char p[700];
    snprintf(p, sizeof p, "%s/a/metrics.jsonl", g_dir);
    char *s = kd_read_file(p, NULL, NULL);
    char *first_eval = strstr(s, "\"eval\":");
    assert_non_null(first_eval);
    double kl0 = atof(strstr(first_eval, "\"kl\":") + 5);
    fprintf(stderr, "validation KL to the teacher: step 4 %.4f -> final %.4f (ce %.4f, top1 %.3f)\n", kl0, kl, ce, top1);
    assert_true(kl < kl0);
    free(s);
    /* run directory layout */
    snprintf(p, sizeof p, "%s/a/run.json", g_dir);
    assert_true(kd_file_exists(p));
    snprintf(p, sizeof p, "%s/a/best/model.safetensors", g_dir);
    assert_true(kd_file_exists(p));
    snprintf(p, sizeof p, "%s/a/final/tokenizer.bin", g_dir);
    assert_true(kd_file_exists(p));   /* inherited from the dump */
    /* keep_last 2: steps 8 and 12 remain */
    snprintf(p, sizeof p, "%s/a/checkpoints/step-00000004", g_dir);
    assert_false(kd_file_exists(p));
    snprintf(p, sizeof p, "%s/a/checkpoints/step-00000012/optimizer.safetensors", g_dir);
    assert_true(kd_file_exists(p));
    /* a second train into the same directory is refused */
    assert_int_not_equal(train("", "a", "2>/dev/null"), 0);
}

static void test_resume_bit_exact(void **state) {
    (void)state;
    /* 6 steps, "killed" (stop with a checkpoint), resumed to 12: same bytes as 12 in one go */
    assert_int_equal(train("", "r", "--stop-after 6"), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/r/final", g_dir);
    assert_false(kd_file_exists(p));
    assert_int_equal(kd_test_sh("env OMP_NUM_THREADS=1 '%s' train --resume '%s/r' --quiet", kd(), g_dir), 0);
    assert_int_equal(kd_test_sh("cmp -s '%s/a/final/model.safetensors' '%s/r/final/model.safetensors'", g_dir, g_dir), 0);
    assert_true(kd_test_json_number(g_dir, "a/final_eval.json", "ce") ==
                kd_test_json_number(g_dir, "r/final_eval.json", "ce"));
    /* a real kill -9 in the middle: the run resumes from its last complete checkpoint */
    assert_int_equal(train("", "k", "--stop-after 5"), 0);
    assert_int_equal(kd_test_sh("rm -rf '%s/k/checkpoints/step-00000005.tmp'; mkdir '%s/k/checkpoints/step-00000006.tmp'",
                                g_dir, g_dir), 0);   /* debris of a checkpoint cut short */
    assert_int_equal(kd_test_sh("env OMP_NUM_THREADS=1 '%s' train --resume '%s/k' --quiet", kd(), g_dir), 0);
    assert_int_equal(kd_test_sh("cmp -s '%s/a/final/model.safetensors' '%s/k/final/model.safetensors'", g_dir, g_dir), 0);
}

static void test_mpi_two_ranks(void **state) {
    (void)state;
    /* The ranks sum their halves of the batch, so float sums happen in another order (≈1e-7 relative
     * in each gradient). AdamW's update lr·m/(sqrt(v)+ε) is ill-conditioned where |g| ≈ ε = 1e-8
     * (float noise around a zero gradient), which turns that into weight differences of a few
     * 1e-3·lr per step (measured: 3.9e-6 after one step at lr 1.5e-3). Checked at lr 1e-3 for
     * 4 steps (≤ 1e-5), and at the run's lr 3e-3 for 12 steps (≤ 1e-4). */
    /* OpenMPI's own start-up allocations are never freed (seen under LeakSanitizer in its MCA
     * components); kd's leaks are checked by every non-MPI run, so leak checking is off here. */
    const char *mpirun = "env OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 mpirun --allow-run-as-root --oversubscribe "
                         "-x ASAN_OPTIONS -np 2";
    assert_int_equal(train("", "one4", "--set steps=4 --set lr=1e-3"), 0);
    assert_int_equal(kd_test_sh("%s '%s' train --config '%s/run.json' --out '%s/mpi4' --quiet --set steps=4 --set lr=1e-3",
                                mpirun, kd(), g_dir, g_dir), 0);
    assert_int_equal(kd_test_sh("%s '%s' train --config '%s/run.json' --out '%s/mpi' --quiet", mpirun, kd(), g_dir,
                                g_dir), 0);
    double rel, d4 = kd_test_weight_diff(g_dir, "one4/final", "mpi4/final", &rel);
    fprintf(stderr, "2 ranks vs 1 rank, same global batch: max |weight difference| %.2e after 4 AdamW steps", d4);
    double d12 = kd_test_weight_diff(g_dir, "a/final", "mpi/final", &rel);
    fprintf(stderr, ", %.2e after 12 at lr 3e-3\n", d12);
    assert_true(d4 <= 1e-5);
    assert_true(d12 <= 1e-4);
    assert_true(fabs(kd_test_json_number(g_dir, "a/final_eval.json", "ce") -
                     kd_test_json_number(g_dir, "mpi/final_eval.json", "ce")) < 1e-4);
}

static void test_nan_stops(void **state) {
    (void)state;
    char out[700], p[700];
    snprintf(out, sizeof out, "%s/nan.txt", g_dir);
    /* a NaN appears in the weights at step 7 (fault injection), after the checkpoint of step 4 */
    int rc = kd_test_sh("env OMP_NUM_THREADS=1 KD_TRAIN_POISON_STEP=7 '%s' train --config '%s/run.json' --out '%s/nan' "
                        "--quiet 2> '%s'", kd(), g_dir, g_dir, out);
    assert_int_not_equal(rc, 0);
    char *msg = kd_read_file(out, NULL, NULL);
    fprintf(stderr, "NaN run said: %s", msg);
    assert_non_null(strstr(msg, "step 7"));
    assert_true(strstr(msg, "NaN") || strstr(msg, "nan") || strstr(msg, "infinite") || strstr(msg, "finite"));
    free(msg);
    /* the checkpoints written before are intact and load */
    snprintf(p, sizeof p, "%s/nan/checkpoints/latest", g_dir);
    char *latest = kd_read_file(p, NULL, NULL);
    assert_non_null(latest);
    assert_string_equal(latest, "step-00000004");
    snprintf(p, sizeof p, "%s/nan/checkpoints/%s", g_dir, latest);
    free(latest);
    kd_model m;
    kd_err err;
    assert_int_equal(kd_checkpoint_load(&m, p, &err), 0);
    kd_model_free(&m);
}

static void expect_fail(const char *sets, const char *needle) {
    char out[700];
    snprintf(out, sizeof out, "%s/err.txt", g_dir);
    int rc = kd_test_sh("'%s' train --config '%s/run.json' --out '%s/bad' --quiet %s 2> '%s'", kd(), g_dir, g_dir, sets, out);
    char *msg = kd_read_file(out, NULL, NULL);
    if (!strstr(msg, needle)) fprintf(stderr, "%s: expected '%s' in: %s", sets, needle, msg);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(msg, needle));
    free(msg);
}

static void test_bad_configs(void **state) {
    (void)state;
    expect_fail("--set alpah=0.5", "unknown key 'alpah'");
    expect_fail("--set alpha=1.5", "alpha");
    expect_fail("--set kd_mode=topk", "kd_mode");
    expect_fail("--set kd_mode=full", "full teacher logits");
    expect_fail("--set seq_len=64", "seq_len 64");
    expect_fail("--set train_data=/nonexistent.h5", "/nonexistent.h5");
    expect_fail("--set student=/nonexistent", "/nonexistent");
    /* absurd sizes are refused before the first step (issue 17: a mutated run.json ran for minutes or aborted) */
    expect_fail("--set batch_size=1048576", "'batch_size' = 1048576, but the training split");
    expect_fail("--set steps=0 --set tokens=1125899906842624", "expected at most 1099511627776 steps");
    /* a student whose vocabulary differs from the dump's */
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/v1000.json", g_dir);
    FILE *f = fopen(cfg, "w");
    fprintf(f, "{\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
               "\"vocab_size\": 1000}");
    fclose(f);
    char set[800];
    snprintf(set, sizeof set, "--set student=%s", cfg);
    expect_fail(set, "1000");
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_and_is_deterministic),
        cmocka_unit_test(test_resume_bit_exact),
        cmocka_unit_test(test_mpi_two_ranks),
        cmocka_unit_test(test_nan_stops),
        cmocka_unit_test(test_bad_configs),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
