/*
 * test_shard.c — the optimizer state sharded over MPI ranks (ZeRO-1,
 * run-config key shard_optimizer), in both memory modes:
 *   - the row partition covers every row once, balanced to one row;
 *   - each shard allocates 1/N of m and v (lean: the factored row/column means
 *     stay whole on every rank), and the shards' AdamW updates applied one after
 *     the other give the unsharded update bit for bit;
 *   - 2 ranks sharded equal 1 rank on the same global batch within the
 *     tolerances of the unsharded MPI tests (tests/test_train.c, test_lean.c),
 *     and equal 2 ranks unsharded bit for bit; each rank's checkpoint shard
 *     holds half of the state;
 *   - resume of a sharded run is bit-exact (6 steps + resume + 6 = 12 steps:
 *     weights and every shard file), resuming with another rank count fails
 *     naming the count the checkpoint needs, and a shard file under another
 *     rank's name is refused;
 *   - `kd plan --ranks N` divides the optimizer state by N, everything else as
 *     with one rank, in both memory modes.
 * The MPI tests skip when mpirun is absent.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "format/kd_safetensors.h"
#include "student/kd_checkpoint.h"
#include "student/kd_plan.h"
#include "train/kd_lean.h"
#include "train/kd_optim.h"

static char g_dir[600];

static const char *kd(void) { return kd_test_env("KD_BIN"); }

/* OpenMPI's own start-up allocations are never freed: leak checking is off under mpirun (as test_train.c) */
#define MPIRUN                                                                                                   \
    "env OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0 mpirun --allow-run-as-root --oversubscribe -x ASAN_OPTIONS " \
    "-np 2"

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s", kd_test_tmpdir());
    return kd_test_train_fixture(g_dir);
}

static int have_mpirun(void) { return kd_test_sh("command -v mpirun > /dev/null 2>&1") == 0; }

/* kd train with 1 process (np 1) or under mpirun -np 2 (np 2) */
static int train(int np, const char *out, const char *sets) {
    return kd_test_sh("%s '%s' train --config '%s/run.json' --out '%s/%s' --quiet %s",
                      np > 1 ? MPIRUN : "env OMP_NUM_THREADS=1", kd(), g_dir, g_dir, out, sets);
}

static int same_file(const char *a, const char *b) {
    return kd_test_sh("cmp -s '%s/%s' '%s/%s'", g_dir, a, g_dir, b) == 0;
}


static void load_config(kd_config *c, const char *name) {
    char path[700];
    snprintf(path, sizeof path, "%s/configs/%s", kd_test_env("KD_SOURCE_DIR"), name);
    assert_int_equal(kd_config_load(c, path, NULL), 0);
}

/* elements of the tensors named PREFIX* in a safetensors file, and the file's shard metadata */
static int64_t numel_with_prefix(const char *path, const char *prefix, char *shard, size_t n) {
    kd_err err;
    kd_st_file *f = kd_st_open(path, &err);
    assert_non_null(f);
    int64_t total = 0;
    for (int i = 0; i < f->count; i++)
        if (!strncmp(f->tensors[i].name, prefix, strlen(prefix))) total += f->tensors[i].numel;
    const char *s = kd_st_meta(f, "kd_optimizer_shard");
    snprintf(shard, n, "%s", s ? s : "");
    kd_st_close(f);
    return total;
}

/* ---- the pieces ----------------------------------------------------------------------- */

static void test_shard_rows(void **state) {
    (void)state;
    static const int64_t rows[] = {0, 1, 3, 7, 64, 1000, 128256};
    static const int worlds[] = {1, 2, 3, 4, 64};
    for (size_t a = 0; a < sizeof rows / sizeof *rows; a++)
        for (size_t b = 0; b < sizeof worlds / sizeof *worlds; b++) {
            int64_t next = 0, lo = rows[a], hi = 0;
            for (int k = 0; k < worlds[b]; k++) {
                int64_t r0, r1;
                kd_dist_shard_rows(rows[a], k, worlds[b], &r0, &r1);
                assert_true(r0 == next && r1 >= r0);   /* contiguous, in rank order */
                next = r1;
                lo = r1 - r0 < lo ? r1 - r0 : lo;
                hi = r1 - r0 > hi ? r1 - r0 : hi;
            }
            assert_true(next == rows[a]);   /* every row, once */
            assert_true(hi - lo <= 1);      /* balanced */
        }
}

/* FP32 AdamW: shard k of N holds 1/N of m + v; the N shards' steps applied one after
 * another to one model (disjoint rows) give the unsharded step's weights bit for bit. */
static void test_adamw_shards(void **state) {
    (void)state;
    kd_config c;
    load_config(&c, "student-tiny.json");
    kd_err err;
    kd_model whole, parts;
    assert_int_equal(kd_model_new(&whole, &c, &err), 0);
    assert_int_equal(kd_model_new(&parts, &c, &err), 0);
    kd_model_init(&whole, 7);
    kd_model_init(&parts, 7);
    const int N = 3;
    kd_adamw ow, os[3];
    assert_int_equal(kd_adamw_init(&ow, whole.params, whole.n_params, 0, &err), 0);
    int64_t sum = 0, full = kd_adamw_state_bytes(&ow), max_row = 0;
    for (int i = 0; i < whole.n_params; i++) {
        int64_t row = whole.params[i]->n / whole.params[i]->shape[0] * 8;
        max_row = row > max_row ? row : max_row;
    }
    assert_int_equal(full, 8 * kd_config_n_params(&c));
    for (int k = 0; k < N; k++) {
        assert_int_equal(kd_adamw_init_shard(&os[k], parts.params, parts.n_params, 0, k, N, &err), 0);
        int64_t b = kd_adamw_state_bytes(&os[k]);
        fprintf(stderr, "AdamW shard %d of %d: %lld of %lld bytes of m + v\n", k, N, (long long)b, (long long)full);
        assert_true(llabs(b * N - full) <= (int64_t)N * whole.n_params * max_row);   /* 1/N up to whole rows */
        sum += b;
    }
    assert_int_equal(sum, full);
    kd_adamw bad;
    assert_int_not_equal(kd_adamw_init_shard(&bad, parts.params, parts.n_params, 0, 3, 3, &err), 0);
    assert_non_null(strstr(err.msg, "no such rank"));
    kd_adamw_opts ao = kd_adamw_defaults();
    kd_rng r;
    kd_rng_seed(&r, 11);
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < whole.n_params; i++) {
            kd_test_fill_normal(&r, whole.params[i]->grad, whole.params[i]->n, 1e-2f);
            memcpy(parts.params[i]->grad, whole.params[i]->grad, (size_t)whole.params[i]->n * sizeof(float));
        }
        kd_adamw_step(&ow, &ao, 1e-3f);
        for (int k = 0; k < N; k++) kd_adamw_step(&os[k], &ao, 1e-3f);
    }
    for (int i = 0; i < whole.n_params; i++)
        assert_memory_equal(whole.params[i]->data, parts.params[i]->data, (size_t)whole.params[i]->n * sizeof(float));
    for (int k = 0; k < N; k++) kd_adamw_free(&os[k]);
    kd_adamw_free(&ow);
    kd_model_free(&whole);
    kd_model_free(&parts);
}

/* Lean: shard k of N holds 1/N of m (and of a full v); the factors are whole on each. */
static void test_lean_shard_bytes(void **state) {
    (void)state;
    kd_config c;
    load_config(&c, "student-tiny.json");
    kd_err err;
    for (int full_v = 0; full_v < 2; full_v++) {
        kd_lean_opts o;
        kd_lean_opts_init(&o);
        o.v_factored = !full_v;
        kd_lean whole;
        assert_int_equal(kd_lean_new(&whole, &c, &o, &err), 0);
        int64_t all = kd_lean_state_bytes(&whole), factors = 0;
        for (int i = 0; i < whole.m.n_params; i++)
            if (whole.p[i].vc) {
                const kd_tensor *t = whole.m.params[i];
                factors += (t->shape[0] + t->n / t->shape[0]) * 4;   /* v_row [R] + v_col [C] */
            }
        const int N = 2;
        int64_t sum = 0;
        for (int k = 0; k < N; k++) {
            o.shard_rank = k;
            o.shard_world = N;
            kd_lean part;
            assert_int_equal(kd_lean_new(&part, &c, &o, &err), 0);
            int64_t b = kd_lean_state_bytes(&part);
            fprintf(stderr, "lean (v %s) shard %d of %d: %lld bytes of optimizer state, unsharded %lld (factors %lld)\n",
                    full_v ? "full" : "factored", k, N, (long long)b, (long long)all, (long long)factors);
            /* tiny's rows split evenly in two: exactly half of what is split, plus the whole factors */
            assert_int_equal(b, (all - factors) / N + factors);
            assert_int_equal(kd_lean_weight_bytes(&part), kd_lean_weight_bytes(&whole));
            sum += b - factors;
            kd_lean_free(&part);
        }
        assert_int_equal(sum, all - factors);
        o.shard_rank = 2;
        kd_lean bad;
        assert_int_not_equal(kd_lean_new(&bad, &c, &o, &err), 0);
        assert_non_null(strstr(err.msg, "no such rank"));
        kd_lean_free(&whole);
    }
}

/* ---- 2 ranks -------------------------------------------------------------------------- */

/* Each rank's shard file in DIR holds half of m (numel over m.*) of the unsharded file. */
static void check_shard_files(const char *run, const char *unsharded_run, int64_t step) {
    char p[800], shard[48];
    snprintf(p, sizeof p, "%s/%s/checkpoints/step-%08lld/optimizer.safetensors", g_dir, unsharded_run, (long long)step);
    int64_t all_m = numel_with_prefix(p, "m.", shard, sizeof shard);
    int64_t all_v = numel_with_prefix(p, "v", shard, sizeof shard);   /* v.*, or v_row.* + v_col.* */
    assert_string_equal(shard, "");
    int64_t sum_m = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s/checkpoints/step-%08lld/optimizer-%05d-of-00002.safetensors", g_dir, run,
                 (long long)step, k);
        int64_t m = numel_with_prefix(p, "m.", shard, sizeof shard), v = numel_with_prefix(p, "v", shard, sizeof shard);
        char want[16];
        snprintf(want, sizeof want, "%d/2", k);
        assert_string_equal(shard, want);
        fprintf(stderr, "  %s rank %d: %lld of %lld m values, %lld of %lld v values\n", run, k, (long long)m,
                (long long)all_m, (long long)v, (long long)all_v);
        assert_int_equal(2 * m, all_m);   /* tiny's rows split evenly */
        sum_m += m;
    }
    assert_int_equal(sum_m, all_m);
    snprintf(p, sizeof p, "%s/%s/checkpoints/step-%08lld/optimizer.safetensors", g_dir, run, (long long)step);
    assert_false(kd_file_exists(p));
}

static void test_mpi_fp32(void **state) {
    (void)state;
    if (!have_mpirun()) KD_TEST_MISSING("mpirun not found (tools/setup.sh installs openmpi-bin)");
    /* 4 AdamW steps at lr 1e-3, 2 ranks sharded vs 1 rank (the bound of the unsharded test: float-order noise) */
    assert_int_equal(train(1, "one4", "--set steps=4 --set lr=1e-3"), 0);
    assert_int_equal(train(2, "s4", "--set steps=4 --set lr=1e-3"), 0);
    assert_int_equal(train(2, "u4", "--set steps=4 --set lr=1e-3 --set shard_optimizer=false"), 0);
    double d = kd_test_weight_diff(g_dir, "one4/final", "s4/final", NULL);
    fprintf(stderr, "fp32, 2 ranks sharded vs 1 rank after 4 steps: max |weight diff| %.2e\n", d);
    assert_true(d <= 1e-5);
    /* sharded and unsharded 2-rank runs: the same all-reduced gradients, the same elementwise arithmetic */
    assert_true(same_file("s4/final/model.safetensors", "u4/final/model.safetensors"));
    assert_true(same_file("s4/final_eval.json", "u4/final_eval.json"));
    check_shard_files("s4", "u4", 4);
    /* the whole run: 12 steps at lr 3e-3 (≤ 1e-4 in the unsharded test) */
    assert_int_equal(train(1, "one12", ""), 0);
    assert_int_equal(train(2, "s12", ""), 0);
    d = kd_test_weight_diff(g_dir, "one12/final", "s12/final", NULL);
    fprintf(stderr, "fp32, 2 ranks sharded vs 1 rank after 12 steps at lr 3e-3: max |weight diff| %.2e\n", d);
    assert_true(d <= 1e-4);
    assert_true(fabs(kd_test_json_number(g_dir, "one12/final_eval.json", "ce") -
                     kd_test_json_number(g_dir, "s12/final_eval.json", "ce")) < 1e-4);
}

static void test_mpi_lean(void **state) {
    (void)state;
    if (!have_mpirun()) KD_TEST_MISSING("mpirun not found (tools/setup.sh installs openmpi-bin)");
    /* default lean (BF16 + stochastic rounding): within test_lean.c's 2-rank bounds */
    assert_int_equal(train(1, "l1", "--set memory_mode=lean"), 0);
    assert_int_equal(train(2, "ls", "--set memory_mode=lean"), 0);
    assert_int_equal(train(2, "lu", "--set memory_mode=lean --set shard_optimizer=false"), 0);
    double d = kd_test_weight_diff(g_dir, "l1/final", "ls/final", NULL);
    double c1 = kd_test_json_number(g_dir, "l1/final_eval.json", "ce");
    double c2 = kd_test_json_number(g_dir, "ls/final_eval.json", "ce");
    fprintf(stderr, "lean, 2 ranks sharded vs 1 rank after 12 steps: max |weight diff| %.2e, final val CE %.6f vs %.6f\n",
            d, c2, c1);
    assert_true(d <= 1e-2);
    assert_true(fabs(c1 - c2) <= 1e-3);
    /* sharded vs unsharded 2 ranks: the random bits follow the element, so the same bits */
    assert_true(same_file("ls/final/model.safetensors", "lu/final/model.safetensors"));
    check_shard_files("ls", "lu", 12);
    /* lean with FP32 storage and full v (sharded m and v): AdamW's arithmetic, the fp32 bound */
    const char *exact = "--set memory_mode=lean --set lean_weights=fp32 --set lean_m=fp32 --set lean_v=full "
                        "--set steps=4 --set lr=1e-3";
    assert_int_equal(train(1, "lx1", exact), 0);
    assert_int_equal(train(2, "lxs", exact), 0);
    d = kd_test_weight_diff(g_dir, "lx1/final", "lxs/final", NULL);
    fprintf(stderr, "lean FP32 storage + full v, 2 ranks sharded vs 1 rank after 4 steps: max |weight diff| %.2e\n", d);
    assert_true(d <= 1e-5);
}

static void expect_resume_fails(int np, const char *run, const char *needle) {
    char out[700];
    snprintf(out, sizeof out, "%s/resume-err.txt", g_dir);
    int rc = kd_test_sh("%s '%s' train --resume '%s/%s' --quiet 2> '%s'", np > 1 ? MPIRUN : "env OMP_NUM_THREADS=1",
                        kd(), g_dir, run, out);
    char *msg = kd_read_file(out, NULL, NULL);
    assert_non_null(msg);
    const char *line = strstr(msg, "kd train");
    fprintf(stderr, "  resume of %s with %d rank(s): %s", run, np, line ? line : msg);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(msg, needle));
    free(msg);
}

/* 6 steps + resume + 6 steps == 12 steps (2 ranks, sharded): weights, every shard, trainer state */
static void resume_case(const char *whole, const char *cut, const char *sets) {
    char extra[300], a[128], b[128];
    snprintf(extra, sizeof extra, "%s --stop-after 6", sets);
    assert_int_equal(train(2, cut, extra), 0);
    /* one rank cannot take a 2-way sharded state */
    expect_resume_fails(1, cut, "sharded over 2 ranks; resume it with mpirun -np 2");
    /* a shard in the wrong place (rank 0's file under rank 1's name) is named, not loaded */
    char bad[140];
    snprintf(bad, sizeof bad, "%s_swapped", cut);
    assert_int_equal(kd_test_sh("cd '%s' && cp -r '%s' '%s' && cd '%s/checkpoints/step-00000006' && "
                                "cp optimizer-00000-of-00002.safetensors optimizer-00001-of-00002.safetensors",
                                g_dir, cut, bad, bad), 0);
    expect_resume_fails(2, bad, "holds shard 0/2 of the optimizer state, this process needs shard 1/2");
    assert_int_equal(kd_test_sh(MPIRUN " '%s' train --resume '%s/%s' --quiet", kd(), g_dir, cut), 0);
    snprintf(a, sizeof a, "%s/final/model.safetensors", whole);
    snprintf(b, sizeof b, "%s/final/model.safetensors", cut);
    assert_true(same_file(a, b));
    static const char *files[] = {"optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors",
                                  "trainer_state.json", "model.safetensors"};
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s/checkpoints/step-00000012/%s", whole, files[i]);
        snprintf(b, sizeof b, "%s/checkpoints/step-00000012/%s", cut, files[i]);
        assert_true(same_file(a, b));
    }
}

static void test_resume_sharded(void **state) {
    (void)state;
    if (!have_mpirun()) KD_TEST_MISSING("mpirun not found (tools/setup.sh installs openmpi-bin)");
    resume_case("s12", "sr", "");                            /* fp32 (s12: test_mpi_fp32) */
    resume_case("ls", "lsr", "--set memory_mode=lean");      /* lean (ls: test_mpi_lean) */
    /* a whole (1-rank) state cannot be split by a sharded 2-rank run */
    assert_int_equal(train(1, "one_cut", "--stop-after 4"), 0);
    expect_resume_fails(2, "one_cut", "holds the whole optimizer state");
}

/* ---- the planner ---------------------------------------------------------------------- */

static void test_plan_ranks(void **state) {
    (void)state;
    kd_config c;
    load_config(&c, "student-3b.json");
    for (int lean = 0; lean < 2; lean++) {
        kd_plan_opts o = {.batch = 1, .seq = 512, .threads = 2, .lm_chunk = 256, .topk = 64, .ranks = 1, .lean = lean};
        kd_plan one;
        kd_plan_compute(&c, &o, &one);
        /* the factored second moment stays whole on every rank (R + C floats per matrix) */
        int64_t whole = 0;
        if (lean) {   /* the split part: BF16 m of the matrices, FP32 m + v of the norms */
            int64_t one_d = (2 * c.num_hidden_layers + 1) * c.hidden_size;
            whole = one.optimizer - ((one.n_params - one_d) * 2 + 2 * one_d * 4);
            assert_true(whole > 0 && whole < (int64_t)16 << 20);
        }
        static const int ranks[] = {4, 64};
        for (int k = 0; k < 2; k++) {
            o.ranks = ranks[k];
            kd_plan p;
            kd_plan_compute(&c, &o, &p);
            fprintf(stderr, "3B %s, %d ranks: optimizer %.1f -> %.1f MiB per rank, peak %.2f -> %.2f GiB\n",
                    lean ? "lean" : "fp32", ranks[k], one.optimizer / 1048576.0, p.optimizer / 1048576.0,
                    one.train_peak / 1073741824.0, p.train_peak / 1073741824.0);
            assert_int_equal(p.optimizer, (one.optimizer - whole) / ranks[k] + whole);
            assert_int_equal(p.weights, one.weights);
            assert_int_equal(p.grads, one.grads);
            assert_int_equal(p.activations, one.activations);
            assert_int_equal(p.loss, one.loss);
            assert_int_equal(p.working, one.working);
            assert_int_equal(p.train_peak - p.optimizer, one.train_peak - one.optimizer);
        }
        /* what fits 24 GiB: lean at 4 ranks; FP32 AdamW not even at 64 (weights + gradients alone are 24 GiB) */
        o.ranks = 64;
        kd_plan p64;
        kd_plan_compute(&c, &o, &p64);
        if (lean) assert_true(p64.train_peak < (int64_t)12 << 30);
        else assert_true(p64.train_peak > (int64_t)24 << 30);
    }
    /* the command prints the per-rank figure it computes */
    char out[700];
    snprintf(out, sizeof out, "%s/plan.txt", g_dir);
    assert_int_equal(kd_test_sh("'%s' plan --config '%s/configs/student-3b.json' --batch 1 --seq 512 --lm-chunk 256 "
                                "--memory-mode lean --ranks 4 > '%s'", kd(), kd_test_env("KD_SOURCE_DIR"), out), 0);
    char *s = kd_read_file(out, NULL, NULL);
    assert_non_null(s);
    assert_non_null(strstr(s, "4 rank(s) sharing the optimizer state"));
    char *row = strstr(s, "optimizer (per rank)");
    assert_non_null(row);
    kd_plan_opts o = {.batch = 1, .seq = 512, .threads = 2, .lm_chunk = 256, .ranks = 4, .lean = 1};
    kd_plan p;
    kd_plan_compute(&c, &o, &p);
    assert_true(fabs(atof(row + strlen("optimizer (per rank)")) - p.optimizer / 1048576.0) < 0.06);
    free(s);
    /* --measure runs one process: refused with several ranks */
    assert_int_not_equal(kd_test_sh("'%s' plan --config '%s/configs/student-tiny.json' --ranks 2 --measure "
                                    "> /dev/null 2>&1", kd(), kd_test_env("KD_SOURCE_DIR")), 0);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_rows),       cmocka_unit_test(test_adamw_shards),
        cmocka_unit_test(test_lean_shard_bytes), cmocka_unit_test(test_mpi_fp32),
        cmocka_unit_test(test_mpi_lean),         cmocka_unit_test(test_resume_sharded),
        cmocka_unit_test(test_plan_ranks),
    };
    return KD_RUN_GROUP(tests, setup, NULL);
}
