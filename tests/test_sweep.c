/*
 * test_sweep.c — kd sweep: grid parsing and point names through the library;
 * then, on a dump of the llama2.c aidreams260K teacher, a 2x2 alpha x
 * temperature sweep end to end (results.csv with one best row, valid PNGs,
 * best.txt), a point interrupted with `kd train --stop-after` that the sweep
 * resumes instead of restarting, a second run of the same command that skips
 * every point and leaves results.csv unchanged, a missing gnuplot, a one-key
 * sweep (line chart), a failing point, clear errors for bad grids, and a
 * sweep over the divergence ranked by the evaluation `kd eval` reports.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_time.h"
#include "train/kd_sweep.h"

static char g_dir[600];   /* teacher, dumps and run.json */

static char *slurp(const char *fmt, const char *a, const char *b) {
    char p[1400];
    snprintf(p, sizeof p, fmt, a, b);
    kd_err err;
    char *s = kd_read_file(p, NULL, &err);
    if (!s) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(s);
    return s;
}

static int group_setup(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN"), *m = kd_test_env("KD_DATA_DIR");
    snprintf(g_dir, sizeof g_dir, "%s/data", kd_test_tmpdir());
    if (kd_test_sh("mkdir -p '%s' && cd '%s' && '%s' import llama2c --model '%s/models/aidreams260K/aidreams260K.bin' "
                   "--tokenizer '%s/models/aidreams260K/tok512.bin' --out T >/dev/null && "
                   "'%s' teacher dump --teacher T --generate 100 --seq-len 32 --topk 16 --out train.h5 "
                   "--val-out val.h5 --val-fraction 0.1 --batch 50 --quiet",
                   g_dir, g_dir, kd, m, m, kd))
        return -1;
    return kd_test_sh("printf '{\"student\": \"%s/configs/student-tiny.json\", \"train_data\": \"%s/train.h5\", "
                      "\"val_data\": \"%s/val.h5\", \"batch_size\": 8, \"steps\": 20, \"eval_every\": 10, "
                      "\"save_every\": 10, \"lr\": 3e-3, \"warmup\": 2}' > '%s/run.json'",
                      kd_test_env("KD_SOURCE_DIR"), g_dir, g_dir, g_dir);
}

/* ---- the library: grids and names ------------------------------------------------------ */

static void expect_bad_grid(const char *spec, const char *msg) {
    kd_sweep_grid g;
    memset(&g, 0, sizeof g);
    kd_err err;
    assert_int_equal(kd_sweep_grid_add(&g, "alpha=0,1", &err), 0);
    assert_int_equal(kd_sweep_grid_add(&g, spec, &err), -1);
    if (!strstr(err.msg, msg)) fprintf(stderr, "'%s': got \"%s\", expected \"%s\"\n", spec, err.msg, msg);
    assert_non_null(strstr(err.msg, msg));
    assert_int_equal(g.n_axes, 1);
    kd_sweep_grid_free(&g);
}

static void test_grid(void **state) {
    (void)state;
    kd_sweep_grid g;
    memset(&g, 0, sizeof g);
    kd_err err;
    char name[256], v[64];
    assert_int_equal(kd_sweep_grid_add(&g, "alpha=0, 0.50,1", &err), 0);
    assert_int_equal(kd_sweep_grid_add(&g, "temperature=1,2", &err), 0);
    assert_int_equal(kd_sweep_grid_add(&g, "train_data=[\"a.h5\",\"b,c.h5\"],d/e f.h5,\"g.h5\"", &err), 0);
    assert_int_equal(g.axes[0].n, 3);
    assert_int_equal(g.axes[2].n, 3);
    assert_true(cJSON_IsArray(g.axes[2].values[0]) && cJSON_GetArraySize(g.axes[2].values[0]) == 2);
    assert_true(cJSON_IsString(g.axes[2].values[1]) && cJSON_IsString(g.axes[2].values[2]));
    kd_sweep_value_text(g.axes[0].values[1], v, sizeof v);
    assert_string_equal(v, "0.5");
    assert_int_equal(kd_sweep_grid_size(&g), 18);
    int idx[KD_SWEEP_MAX_KEYS];
    kd_sweep_point_index(&g, 7, idx);   /* the last key varies fastest */
    assert_true(idx[0] == 1 && idx[1] == 0 && idx[2] == 1);
    assert_int_equal(kd_sweep_point_name(&g, 7, name, sizeof name, &err), 0);
    assert_string_equal(name, "alpha-0.5_temperature-1_train_data-d_e_f.h5");
    assert_int_equal(kd_sweep_point_name(&g, 15, name, sizeof name, &err), 0);
    assert_string_equal(name, "alpha-1_temperature-2_train_data-__a.h5___b_c.h5__");
    assert_int_equal(kd_sweep_point_name(&g, 7, name, 10, &err), -1);
    kd_sweep_grid_free(&g);
    kd_sweep_metric m;
    assert_int_equal(kd_sweep_metric_parse("top1", &m, &err), 0);
    assert_int_equal(m, KD_SWEEP_TOP1);
    assert_int_equal(kd_sweep_metric_parse("loss", &m, &err), -1);
    assert_non_null(strstr(err.msg, "expected ce, ppl, kl or top1"));
    expect_bad_grid("temperature", "expected key=v1,v2,... (no '=')");
    expect_bad_grid("temperature=", "no values after '='");
    expect_bad_grid("temperature=1,,2", "value 2 is empty");
    expect_bad_grid("temperature=1, ", "value 2 is empty");
    expect_bad_grid("=1,2", "the key before '=' is empty");
    expect_bad_grid("alpha=0.5", "key 'alpha' is given twice");
    expect_bad_grid("temperature=2,2.0", "value '2' is listed twice");
}

/* ---- kd sweep end to end ---------------------------------------------------------------- */

typedef struct row {
    char alpha[16], temperature[16], status[16], run[128];
    double ce, ppl, kl, top1, tps;
    int best;
} row;

/* Read results.csv of a sweep over alpha x temperature. */
static int read_csv(const char *sweep, row *rows, int max) {
    char *s = slurp("%s/%s", sweep, "results.csv");
    char *line = strtok(s, "\n");
    assert_non_null(line);
    assert_string_equal(line, "alpha,temperature,ce,ppl,kl,top1,tokens_per_s,best,status,run");
    int n = 0;
    while ((line = strtok(NULL, "\n")) && n < max) {
        row *r = &rows[n++];
        assert_int_equal(sscanf(line, "%15[^,],%15[^,],%lf,%lf,%lf,%lf,%lf,%d,%15[^,],%127s", r->alpha, r->temperature,
                                &r->ce, &r->ppl, &r->kl, &r->top1, &r->tps, &r->best, r->status, r->run),
                         10);
    }
    free(s);
    return n;
}

static void expect_png(const char *sweep, const char *name) {
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", sweep, name);
    kd_err err;
    size_t len = 0;
    char *s = kd_read_file(p, &len, &err);
    if (!s) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(s);
    assert_memory_equal(s, "\x89PNG\r\n\x1a\n", 8);
    assert_memory_equal(s + 12, "IHDR", 4);
    fprintf(stderr, "%s: %zu bytes\n", name, len);
    assert_true(len > 8000);
    free(s);
}

static void test_sweep(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN");
    char sweep[700], sweep_cmd[2400], point[800];
    snprintf(sweep, sizeof sweep, "%s/at", kd_test_tmpdir());
    snprintf(point, sizeof point, "%s/runs/alpha-0_temperature-1", sweep);
    snprintf(sweep_cmd, sizeof sweep_cmd, "'%s' sweep --config '%s/run.json' --grid alpha=0,1 --grid temperature=1,2 "
             "--out '%s' --jobs 2", kd, g_dir, sweep);
    /* one point interrupted after 5 of its 20 steps (with a checkpoint), as if killed */
    assert_int_equal(kd_test_sh("OMP_NUM_THREADS=1 '%s' train --config '%s/run.json' --set alpha=0 --set temperature=1 "
                                "--out '%s' --stop-after 5 --quiet", kd, g_dir, point), 0);
    char *before = slurp("%s/%s", point, "metrics.jsonl");
    assert_null(strstr(before, "final_eval"));

    assert_int_equal(kd_test_sh("OMP_NUM_THREADS=2 %s 2> '%s.log1'", sweep_cmd, sweep), 0);
    kd_test_sh("cat '%s.log1' >&2", sweep);
    assert_int_equal(kd_test_sh("grep -q '4 points -> .*: 0 finished, 1 to resume, 3 to train; 2 job(s) x 1 thread(s)' "
                                "'%s.log1'", sweep), 0);
    assert_int_equal(kd_test_sh("grep -q 'start alpha=0 temperature=1 (resuming from step 5)' '%s.log1'", sweep), 0);
    assert_int_equal(kd_test_sh("grep -q '\\[4/4\\] done' '%s.log1'", sweep), 0);
    /* resumed, not restarted: the first 5 steps' lines are still there, once, then steps 6..20 */
    char *after = slurp("%s/%s", point, "metrics.jsonl");
    assert_memory_equal(after, before, strlen(before));
    assert_non_null(strstr(after + strlen(before), "{\"step\":6,"));
    assert_null(strstr(after + strlen(before), "{\"step\":5,"));
    assert_non_null(strstr(after, "\"final_eval\""));
    free(before);
    free(after);

    row rows[8];
    assert_int_equal(read_csv(sweep, rows, 8), 4);
    int n_best = 0, best = -1;
    for (int i = 0; i < 4; i++) {
        row *r = &rows[i];
        assert_string_equal(r->status, "ok");
        assert_true(isfinite(r->ce) && r->ce > 0 && r->ce < 10);
        assert_true(fabs(log(r->ppl) - r->ce) < 1e-4 * r->ce);
        assert_true(isfinite(r->kl) && r->kl >= 0);
        assert_true(r->top1 >= 0 && r->top1 <= 1);
        assert_true(isfinite(r->tps) && r->tps > 0);
        n_best += r->best == 1;
        if (r->best) best = i;
    }
    assert_int_equal(n_best, 1);
    for (int i = 0; i < 4; i++) assert_true(rows[best].ce <= rows[i].ce);
    assert_string_equal(rows[0].alpha, "0");
    assert_string_equal(rows[1].temperature, "2");
    assert_string_equal(rows[0].run, "runs/alpha-0_temperature-1");
    /* alpha=0 ignores the temperature, and the resumed point continued bit for bit on the
     * same thread count: it ends where the uninterrupted alpha=0, T=2 point does */
    assert_true(rows[0].ce == rows[1].ce && rows[0].kl == rows[1].kl);
    assert_true(rows[2].ce != rows[0].ce);

    expect_png(sweep, "heatmap.png");
    expect_png(sweep, "curves.png");
    char *best_txt = slurp("%s/%s", sweep, "best.txt"), want[200];
    snprintf(want, sizeof want, "/%s/final\n", rows[best].run);
    assert_non_null(strstr(best_txt, want));
    best_txt[strlen(best_txt) - 1] = 0;
    assert_int_equal(kd_test_sh("test -f '%s/config.json' && test -f '%s/best/model.safetensors'", best_txt, sweep), 0);
    free(best_txt);
    assert_int_equal(kd_test_sh("test $(grep -c '(best)' '%s/results.md') = 1", sweep), 0);
    assert_int_equal(kd_test_sh("grep -q 'boxxyerror' '%s/plots/heatmap.gp' && grep -q 'index 3' '%s/plots/curves.gp'",
                                sweep, sweep), 0);

    /* the same command again: every point is skipped, the results do not change */
    char *csv1 = slurp("%s/%s", sweep, "results.csv");
    double t0 = kd_now_s();
    assert_int_equal(kd_test_sh("OMP_NUM_THREADS=2 %s 2> '%s.log2'", sweep_cmd, sweep), 0);
    double dt = kd_now_s() - t0;
    fprintf(stderr, "second run: %.2f s\n", dt);
    assert_true(dt < 20);
    assert_int_equal(kd_test_sh("grep -q '4 finished, 0 to resume, 0 to train' '%s.log2'", sweep), 0);
    assert_int_equal(kd_test_sh("grep -q 'start' '%s.log2'", sweep), 1);
    char *csv2 = slurp("%s/%s", sweep, "results.csv");
    assert_string_equal(csv1, csv2);
    free(csv1);
    free(csv2);

    /* no gnuplot: a warning, the results, no failure */
    assert_int_equal(kd_test_sh("PATH=/nonexistent %s --quiet 2> '%s.log3'", sweep_cmd, sweep), 0);
    assert_int_equal(kd_test_sh("grep -q 'gnuplot is not installed' '%s.log3'", sweep), 0);
    /* a point trained with other settings is not silently reused */
    assert_int_equal(kd_test_sh("%s --set lr=0.01 2> '%s.log4'", sweep_cmd, sweep), 1);
    assert_int_equal(kd_test_sh("grep -q 'run.json was trained with lr=0.003, but this sweep gives lr=0.01' '%s.log4'",
                                sweep), 0);
}

static void test_one_key_and_failures(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN");
    char sweep[700];
    snprintf(sweep, sizeof sweep, "%s/one", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("OMP_NUM_THREADS=2 '%s' sweep --config '%s/run.json' --grid alpha=0,1 --set steps=4 "
                                "--set eval_every=2 --out '%s' --jobs 2 --metric top1 --quiet",
                                kd, g_dir, sweep), 0);
    expect_png(sweep, "heatmap.png");
    expect_png(sweep, "curves.png");
    assert_int_equal(kd_test_sh("grep -q 'linespoints' '%s/plots/heatmap.gp' && grep -q 'top1 (higher is better)' "
                                "'%s/plots/heatmap.gp'", sweep, sweep), 0);
    assert_int_equal(kd_test_sh("head -1 '%s/results.csv' | grep -q '^alpha,ce,'", sweep), 0);

    /* a point that fails in the trainer: reported, the others still summarised */
    snprintf(sweep, sizeof sweep, "%s/fail", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("'%s' sweep --config '%s/run.json' --grid seq_len=0,16 --set steps=2 --out '%s' "
                                "2> '%s.log'", kd, g_dir, sweep, sweep), 1);
    kd_test_sh("cat '%s.log' >&2", sweep);
    assert_int_equal(kd_test_sh("grep -q 'FAILED seq_len=16 (exit status 1): kd train: seq_len 16 differs' '%s.log'",
                                sweep), 0);
    assert_int_equal(kd_test_sh("grep -q '1 of 2 points failed' '%s.log'", sweep), 0);
    assert_int_equal(kd_test_sh("grep -q '^0,.*,1,ok,runs/seq_len-0$' '%s/results.csv' && "
                                "grep -q '^16,,,,,,0,failed,runs/seq_len-16$' '%s/results.csv'", sweep, sweep), 0);
}

/* A sweep over the training divergence ranks on the documented metric: each row's kl is what
 * `kd eval` (forward KL(teacher ‖ student) at T = 1) reports for that point's final checkpoint,
 * not the divergence the point was trained with, and the best row has the lowest. */
static void test_divergence_sweep(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN");
    char sweep[700];
    snprintf(sweep, sizeof sweep, "%s/div", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("OMP_NUM_THREADS=2 '%s' sweep --config '%s/run.json' --grid divergence=forward,reverse "
                                "--set alpha=1 --set steps=6 --set eval_every=3 --out '%s' --jobs 2 --metric kl --quiet",
                                kd, g_dir, sweep), 0);
    char *csv = slurp("%s/%s", sweep, "results.csv");
    char *line = strtok(csv, "\n");
    assert_string_equal(line, "divergence,ce,ppl,kl,top1,tokens_per_s,best,status,run");
    double kl[2], ref[2];
    int best[2], n = 0;
    while ((line = strtok(NULL, "\n")) && n < 2) {
        char div[16], run[128], out[1000];
        double ce, ppl, top1, tps;
        assert_int_equal(sscanf(line, "%15[^,],%lf,%lf,%lf,%lf,%lf,%d,ok,%127s", div, &ce, &ppl, &kl[n], &top1, &tps,
                                &best[n], run), 8);
        assert_string_equal(div, n ? "reverse" : "forward");
        snprintf(out, sizeof out, "%s/%s/kd_eval.json", sweep, run);
        assert_int_equal(kd_test_sh("'%s' eval --model '%s/%s/final' --data '%s/val.h5' > '%s'", kd, sweep, run, g_dir,
                                    out), 0);
        char *ev = kd_read_file(out, NULL, NULL);
        assert_non_null(ev);
        char *at = strstr(ev, "\"kl\":");
        assert_non_null(at);
        ref[n] = atof(at + 5);
        free(ev);
        fprintf(stderr, "%s: results.csv kl %.6g, kd eval kl %.9g, best %d\n", div, kl[n], ref[n], best[n]);
        assert_true(fabs(kl[n] - ref[n]) <= 1e-5 * ref[n]);   /* %.6g in the table */
        n++;
    }
    free(csv);
    assert_int_equal(n, 2);
    assert_int_equal(best[0] + best[1], 1);
    assert_int_equal(best[1], ref[1] < ref[0]);
}

static void expect_cli_error(const char *args, int status, const char *msg) {
    char out[700];
    snprintf(out, sizeof out, "%s/bad", kd_test_tmpdir());
    int rc = kd_test_sh("'%s' sweep --config '%s/run.json' %s --out '%s' 2> '%s.err'", kd_test_env("KD_BIN"), g_dir,
                        args, out, out);
    kd_test_sh("cat '%s.err' >&2", out);
    assert_int_equal(rc, status);
    assert_int_equal(kd_test_sh("grep -q \"%s\" '%s.err'", msg, out), 0);
    assert_int_equal(kd_test_sh("test -e '%s'", out), 1);   /* nothing was started */
}

static void test_bad_grids(void **state) {
    (void)state;
    expect_cli_error("--grid alpha", 2, "kd sweep: --grid 'alpha': expected key=v1,v2,... (no '=')");
    expect_cli_error("--grid alpha=", 2, "kd sweep: --grid 'alpha=': no values after '='");
    expect_cli_error("--grid alpha=0,,1", 2, "kd sweep: --grid 'alpha=0,,1': value 2 is empty");
    expect_cli_error("--grid alpah=0,1", 1, "kd sweep: point alpah=0: .*run.json: unknown key 'alpah' (see kd train --help)");
    expect_cli_error("--grid alpha=0,2", 1, "kd sweep: point alpha=2: .*field 'alpha': found 2, expected a number in \\[0, 1\\]");
    expect_cli_error("--grid alpha=0,1 --set alpha=1", 1, "'alpha' is both swept (--grid) and fixed (--set alpha=1)");
    expect_cli_error("", 2, "kd sweep: --grid is required (see kd sweep --help)");
    expect_cli_error("--grid alpha=0,1 --metric loss", 2, "expected ce, ppl, kl or top1");
    assert_int_equal(kd_test_sh("'%s' sweep --help | grep -q 'Comparing runs side by side'", kd_test_env("KD_BIN")), 0);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_bad_grids),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_one_key_and_failures),
        cmocka_unit_test(test_divergence_sweep),
    };
    return KD_RUN_GROUP(tests, group_setup, NULL);
}
