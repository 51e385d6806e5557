/*
 * test_train.c — `kd train` end to end on dumps of the real teacher
 * (aidreams260K sampling its own sequences): learning happens, the same seed
 * gives the same weights, N steps + resume + N steps equals 2N steps bit for
 * bit, 2 MPI ranks equal 1 rank on the same global batch (≤ 1e-5), a NaN loss
 * stops the run naming the step with the last checkpoint intact, bad
 * configs are refused with the key named, and the evaluation does not depend
 * on the loss: final_eval.json equals `kd eval` on final/ for forward/reverse x
 * topk_tail/topk_zero runs, and an independent PyTorch evaluation
 * (tests/py/eval_ref.py).
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
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
    assert_int_equal(train("OMP_NUM_THREADS=2", "b", ""), 0);
    /* same seed, 1 vs 2 threads: identical files (core/kd_linalg.h) */
    assert_int_equal(kd_test_sh("cmp -s '%s/a/final/model.safetensors' '%s/b/final/model.safetensors'", g_dir, g_dir), 0);
    /* and so on OpenBLAS's AVX2 kernels, whose threaded products differ by thread count */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        assert_int_equal(train("OPENBLAS_CORETYPE=Haswell KD_ISA=avx2", "h1", ""), 0);
        assert_int_equal(train("OPENBLAS_CORETYPE=Haswell KD_ISA=avx2 OMP_NUM_THREADS=2", "h2", ""), 0);
        assert_int_equal(kd_test_sh("cmp -s '%s/h1/final/model.safetensors' '%s/h2/final/model.safetensors'", g_dir, g_dir), 0);
    }
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

/* One evaluation whatever the loss: final_eval.json equals `kd eval` on final/ for every key, in
 * every divergence x kd_mode (the evaluation used to copy the run's loss options, so a reverse or
 * topk_zero run reported another "kl"), the eval lines of metrics.jsonl carry the same keys, step
 * lines report the training divergence under its own key, and an independent PyTorch evaluation
 * written from docs/training.md gives the same numbers. */
static int same_number(double a, double b, double rtol) { return fabs(a - b) <= rtol * fmax(1.0, fabs(b)); }

static double jnum(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void test_eval_is_independent_of_the_loss(void **state) {
    (void)state;
    static const char *const modes[][3] = {{"forward", "topk_tail", "ev-fwd-tail"},
                                           {"reverse", "topk_tail", "ev-rev-tail"},
                                           {"forward", "topk_zero", "ev-fwd-zero"}};
    kd_err err;
    for (int m = 0; m < 3; m++) {
        char extra[300], p[900];
        snprintf(extra, sizeof extra, "--set steps=4 --set eval_every=2 --set divergence=%s --set kd_mode=%s",
                 modes[m][0], modes[m][1]);
        assert_int_equal(train("", modes[m][2], extra), 0);
        assert_int_equal(kd_test_sh("env OMP_NUM_THREADS=1 '%s' eval --model '%s/%s/final' --data '%s/val.h5' "
                                    "> '%s/%s/kd_eval.json'", kd(), g_dir, modes[m][2], g_dir, g_dir, modes[m][2]), 0);
        snprintf(p, sizeof p, "%s/%s/final_eval.json", g_dir, modes[m][2]);
        cJSON *fin = kd_json_load(p, &err);
        snprintf(p, sizeof p, "%s/%s/kd_eval.json", g_dir, modes[m][2]);
        cJSON *ev = kd_json_load(p, &err);
        assert_non_null(fin);
        assert_non_null(ev);
        fprintf(stderr, "%s %s: final_eval.json / kd eval:", modes[m][0], modes[m][1]);
        int n_keys = 0;
        double worst = 0;
        for (const cJSON *f = fin->child; f; f = f->next, n_keys++) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(ev, f->string);
            assert_non_null(e);
            assert_true(cJSON_IsNumber(f) && cJSON_IsNumber(e));
            fprintf(stderr, " %s %.7g / %.7g", f->string, f->valuedouble, e->valuedouble);
            worst = fmax(worst, fabs(f->valuedouble - e->valuedouble) / fmax(1.0, fabs(e->valuedouble)));
            if (!strcmp(f->string, "tokens"))
                assert_true(f->valuedouble == e->valuedouble && f->valuedouble > 0);
            else if (!strcmp(f->string, "top1"))   /* an argmax may flip on float rounding: one position */
                assert_true(fabs(f->valuedouble - e->valuedouble) * jnum(fin, "tokens") <= 1 + 1e-9);
            else   /* the training forward (batch of 8) vs the inference engine (one sequence) */
                assert_true(same_number(f->valuedouble, e->valuedouble, 1e-6));
        }
        fprintf(stderr, "; max difference %.1e\n", worst);
        assert_int_equal(n_keys, 5);                          /* ppl, ce, kl, top1, tokens */
        assert_int_equal(cJSON_GetArraySize(ev), n_keys + 1); /* + model */
        /* metrics.jsonl: the eval line has the same keys; step lines name the training divergence */
        snprintf(p, sizeof p, "%s/%s/metrics.jsonl", g_dir, modes[m][2]);
        char *s = kd_read_file(p, NULL, NULL);
        assert_non_null(s);
        assert_non_null(strstr(s, "\"eval\":{\"ppl\":"));
        assert_non_null(strstr(s, "\"train_divergence\":"));
        for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
            cJSON *o = cJSON_Parse(line);
            assert_non_null(o);
            const cJSON *e = cJSON_GetObjectItem(o, "eval");
            if (!e) e = cJSON_GetObjectItem(o, "final_eval");
            if (e) {
                assert_int_equal(cJSON_GetArraySize(e), n_keys);
                for (const cJSON *f = fin->child; f; f = f->next) assert_non_null(cJSON_GetObjectItem(e, f->string));
            } else {
                assert_null(cJSON_GetObjectItem(o, "kl"));
            }
            cJSON_Delete(o);
        }
        free(s);
        if (m == 1) {   /* the reverse run: checked against an independent evaluation */
            snprintf(p, sizeof p, "%s/%s/eval_ref.json", g_dir, modes[m][2]);
            assert_int_equal(kd_test_python("eval_ref.py", "'%s/%s/final' '%s/val.h5' '%s'", g_dir, modes[m][2], g_dir, p), 0);
            cJSON *ref = kd_json_load(p, &err);
            assert_non_null(ref);
            fprintf(stderr, "PyTorch reference (float64):");
            double worst_ref = 0;
            for (const cJSON *r = ref->child; r; r = r->next) {
                const cJSON *f = cJSON_GetObjectItem(fin, r->string);
                assert_non_null(f);
                fprintf(stderr, " %s %.7g", r->string, r->valuedouble);
                worst_ref = fmax(worst_ref, fabs(f->valuedouble - r->valuedouble) / fmax(1.0, fabs(r->valuedouble)));
                if (!strcmp(r->string, "top1"))
                    assert_true(fabs(f->valuedouble - r->valuedouble) * jnum(fin, "tokens") <= 1 + 1e-9);
                else
                    assert_true(same_number(f->valuedouble, r->valuedouble, 1e-6));
            }
            fprintf(stderr, "; max difference to final_eval.json %.1e\n", worst_ref);
            cJSON_Delete(ref);
        }
        cJSON_Delete(fin);
        cJSON_Delete(ev);
    }
    /* reverse KL against a top-k teacher without its tail is infinite: refused before training */
    expect_fail("--set divergence=reverse --set kd_mode=topk_zero", "reverse KL is undefined with teacher mode topk_zero");
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
    expect_fail("--set batch_size=1048576", "batch_size 1048576 × seq_len 32 needs about");   /* the memory check */
    expect_fail("--set batch_size=4096", "'batch_size' = 4096, but the training split");        /* fits, but no data */
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

/* Online distillation (run-config "teacher"): the same teacher run per batch gives the
 * offline run's numbers up to the dump's float16 rounding of the stored log-probs. */
static void test_online_teacher(void **state) {
    (void)state;
    char sets[2048];
    assert_int_equal(train("", "off", "--set steps=6"), 0);
    snprintf(sets, sizeof sets, "--set steps=6 --set teacher='%s/teacher' --set teacher_topk=16", g_dir);
    assert_int_equal(train("", "on", sets), 0);
    /* step 1 sees the same weights: its loss differs by the fp16 rounding of the teacher's values only */
    double l_off = kd_test_json_number(g_dir, "off/metrics.jsonl", "loss");
    double l_on = kd_test_json_number(g_dir, "on/metrics.jsonl", "loss");
    fprintf(stderr, "online vs offline: step-1 loss %.7f vs %.7f", l_on, l_off);
    assert_true(fabs(l_on - l_off) <= 1e-3 * fabs(l_off));
    double rel, d = kd_test_weight_diff(g_dir, "off/final", "on/final", &rel);
    double kl_off = kd_test_json_number(g_dir, "off/final_eval.json", "kl");
    double kl_on = kd_test_json_number(g_dir, "on/final_eval.json", "kl");
    fprintf(stderr, "; after 6 steps max |weight difference| %.2e (%.2e relative); eval kl %.6f vs %.6f\n", d, rel,
            kl_on, kl_off);
    /* Adam's normalised step turns float16-level gradient differences into up to lr per step on
     * weights whose gradient is near zero (measured 2.7e-3 relative after 6 steps at lr 3e-3) */
    assert_true(rel <= 1e-2);
    assert_true(fabs(kl_on - kl_off) <= 1e-3 * kl_off);
    /* full logits online (kd_mode full), although the dump holds a top-k */
    snprintf(sets, sizeof sets, "--set steps=2 --set teacher='%s/teacher' --set teacher_topk=0 --set kd_mode=full",
             g_dir);
    assert_int_equal(train("", "onfull", sets), 0);
    assert_true(kd_test_json_number(g_dir, "onfull/final_eval.json", "kl") > 0);
    /* keys that do not fit together are refused before anything runs */
    snprintf(sets, sizeof sets, "--set teacher='%s/teacher' --set teacher_topk=0 2>/dev/null", g_dir);
    assert_int_not_equal(train("", "bad1", sets), 0);
    assert_int_not_equal(train("", "bad2", "--set teacher_topk=8 2>/dev/null"), 0);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_and_is_deterministic),
        cmocka_unit_test(test_resume_bit_exact),
        cmocka_unit_test(test_mpi_two_ranks),
        cmocka_unit_test(test_nan_stops),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_eval_is_independent_of_the_loss),
        cmocka_unit_test(test_online_teacher),
    };
    return KD_RUN_GROUP(tests, setup, NULL);
}
