/*
 * cmd_plan.c — `kd plan`: predicted memory of training and inference for a
 * config, and (--measure) the peak RSS of a real training step to check it, in
 * FP32 + AdamW or in the lean memory mode (train/kd_lean.h).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "core/kd_rng.h"
#include "student/kd_model.h"
#include "student/kd_plan.h"
#include "train/kd_lean.h"
#include "train/kd_loss.h"
#include "train/kd_online.h"
#include "train/kd_optim.h"
#include "train/kd_step.h"

static void row(const char *what, int64_t bytes) {
    printf("  %-22s %12.1f MiB\n", what, (double)bytes / (1 << 20));
}

static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_maxrss * 1024;
}

/* Random tokens and labels, and (topk > 0) a random teacher top-k with descending log-probs. */
typedef struct fake_batch {
    int32_t *tok, *lab, *ids;
    float *lp;
} fake_batch;

static int fake_batch_new(fake_batch *f, int64_t N, int64_t V, int64_t K, kd_err *err) {
    memset(f, 0, sizeof *f);
    f->tok = malloc((size_t)N * sizeof(int32_t));
    f->lab = malloc((size_t)N * sizeof(int32_t));
    if (K > 0) {
        f->ids = malloc((size_t)(N * K) * sizeof(int32_t));
        f->lp = malloc((size_t)(N * K) * sizeof(float));
    }
    if (!f->tok || !f->lab || (K > 0 && (!f->ids || !f->lp))) return kd_errf(err, "out of memory for the batch");
    kd_rng r;
    kd_rng_seed(&r, 5);
    for (int64_t i = 0; i < N; i++) {
        f->tok[i] = (int32_t)kd_rng_below(&r, (uint64_t)V);
        f->lab[i] = (int32_t)kd_rng_below(&r, (uint64_t)V);
        for (int64_t j = 0; j < K; j++) {   /* distinct ids (K ≤ V), log-probs summing below 1 */
            f->ids[i * K + j] = (int32_t)((f->lab[i] + j) % V);
            f->lp[i * K + j] = -1.0f - 0.1f * (float)j - logf((float)K);
        }
    }
    return 0;
}

static void fake_batch_free(fake_batch *f) {
    free(f->tok);
    free(f->lab);
    free(f->ids);
    free(f->lp);
}

static int next_same(void *ctx, kd_step_batch *out, kd_err *err) {
    (void)err;
    *out = *(const kd_step_batch *)ctx;
    return 0;
}

/* Two real training steps through kd_step_run, the function kd train runs, with
 * kd train's loss options: the chunked LM head (--lm-chunk), CE only, or with
 * --topk K the KD loss on a random top-K teacher (alpha 0.5, T 2, topk_tail). */
static int measure(const kd_config *cfg, const kd_plan_opts *o, int64_t *peak, kd_err *err) {
    kd_model m;
    kd_adamw opt;
    kd_lean l;
    kd_stepper s;
    kd_adamw_opts ao = kd_adamw_defaults();
    if (o->lean) {
        kd_lean_opts lo;
        kd_lean_opts_init(&lo);
        lo.weights = o->lean_weights_fp32 ? KD_LEAN_F32 : KD_LEAN_BF16;
        lo.m = o->lean_m_fp32 ? KD_LEAN_F32 : KD_LEAN_BF16;
        lo.v_factored = !o->lean_v_full;
        lo.exact_clip = o->lean_clip_exact;
        if (kd_lean_new(&l, cfg, &lo, err)) return -1;
        kd_lean_init(&l, 1);
        s = kd_stepper_lean(&l);
    } else {
        if (kd_model_new(&m, cfg, err)) return -1;
        kd_model_init(&m, 1);
        if (kd_adamw_init(&opt, m.params, m.n_params, 0, err)) {
            kd_model_free(&m);
            return -1;
        }
        s = kd_stepper_fp32(&m, &opt, &ao, NULL);
    }
    int64_t N = o->batch * o->seq, K = o->topk < cfg->vocab_size ? o->topk : cfg->vocab_size;
    fake_batch f;
    kd_loss_opts lso = kd_loss_opts_default();
    lso.chunk_rows = o->lm_chunk;
    lso.alpha = K > 0 ? 0.5f : 0.0f;
    lso.temperature = K > 0 ? 2.0f : 1.0f;
    lso.mode = KD_TEACHER_TOPK_TAIL;
    kd_graph g;
    int rc = fake_batch_new(&f, N, cfg->vocab_size, K, err) || kd_graph_init(&g, 0, err) ? -1 : 0;
    kd_step_batch b = {f.tok, o->batch, o->seq, {f.lab, NULL, f.ids, f.lp, (int32_t)K, 0}};
    for (int step = 0; !rc && step < 2; step++) {
        kd_step_result res;
        rc = kd_step_run(&s, &g, 1, next_same, &b, &lso, 1e-4f, 1.0, NULL, &res, err);
    }
    *peak = peak_rss_bytes();
    if (!rc) kd_graph_free(&g);
    fake_batch_free(&f);
    if (o->lean) {
        kd_lean_free(&l);
    } else {
        kd_adamw_free(&opt);
        kd_model_free(&m);
    }
    return rc;
}

int kd_cmd_plan(int argc, char **argv) {
    static const char *const MODES[] = {"fp32", "lean", NULL}, *const PRECISIONS[] = {"bf16", "fp32", NULL},
                             *const V_KINDS[] = {"factored", "full", NULL}, *const CLIPS[] = {"previous", "exact", NULL};
    const char *config = NULL, *teacher = NULL;
    int64_t batch = 1, seq = 512, ranks = 1, chunk = KD_LOSS_DEFAULT_CHUNK, topk = 0;
    int do_measure = 0, lean = 0, w32 = 0, m32 = 0, vfull = 0, cexact = 0;
    const kd_opt opts[] = {
        {"--config", KD_OPT_STRING, &config, "C.json", .help = "the student's model config", .flags = KD_OPT_REQUIRED},
        {"--batch", KD_OPT_INT, &batch, "B", .help = "sequences per step (with --ranks: of one rank)", .lo = 1, .hi = 1 << 20},
        {"--seq", KD_OPT_INT, &seq, "T", .help = "positions per sequence (training and the KV cache)", .lo = 1, .hi = 1 << 24},
        {"--ranks", KD_OPT_INT, &ranks, "N",
         .help = "plan one of N data-parallel ranks that shard the optimizer state\n"
                 "(run-config key shard_optimizer, the default under mpirun): its\n"
                 "1/N of m and v (lean: the factored v stays whole), everything else\n"
                 "as with one rank; --batch is then the batch of one rank",
         .lo = 1, .hi = 1 << 16},
        {"--lm-chunk", KD_OPT_INT, &chunk, "R",
         .help = "plan the LM-head loss computed R rows at a time, as kd train\n"
                 "runs it (its lm_chunk key)",
         .lo = 1, .hi = 1 << 24},
        {"--topk", KD_OPT_INT, &topk, "K",
         .help = "with --measure: the KD loss on a random top-K teacher;\n"
                 "0 measures the CE loss",
         .lo = 0, .hi = 1 << 20},
        {"--memory-mode", KD_OPT_CHOICE, &lean, NULL,
         .help = "lean plans the lean mode of kd train (memory_mode \"lean\":\n"
                 "BF16 weights, BF16 first moment, factored second moment,\n"
                 "per-layer recompute and update) at its peak, the loss phase",
         .choices = MODES},
        {"--lean-weights", KD_OPT_CHOICE, &w32, NULL, .help = "lean: run-config key lean_weights", .choices = PRECISIONS},
        {"--lean-m", KD_OPT_CHOICE, &m32, NULL, .help = "lean: run-config key lean_m", .choices = PRECISIONS},
        {"--lean-v", KD_OPT_CHOICE, &vfull, NULL, .help = "lean: run-config key lean_v", .choices = V_KINDS},
        {"--lean-clip", KD_OPT_CHOICE, &cexact, NULL, .help = "lean: run-config key lean_clip", .choices = CLIPS},
        {"--teacher-config", KD_OPT_STRING, &teacher, "T.json",
         .help = "online distillation (run-config key teacher): add the teacher's\n"
                 "F32 weights and its per-batch forward (activations, logits,\n"
                 "top-K) to the training peak; --topk K is teacher_topk"},
        {"--measure", KD_OPT_FLAG, &do_measure, NULL,
         .help = "also run two real training steps, through the step function\n"
                 "kd train runs (random tokens; CE loss, or with --topk K the KD\n"
                 "loss on a random top-K teacher), and print the measured peak\n"
                 "RSS next to the prediction"},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("plan", opts);
        printf("\nPredicts the memory of one training step (FP32 weights, gradients, AdamW moments,\n"
               "activations, LM head + loss, batch) and of inference (weights + KV cache for T\n"
               "positions), from the config alone. The defaults are kd train's.\n\n");
        kd_opts_help(opts);
        return 0;
    }
    int st = kd_opts_parse("plan", opts, argc, argv);
    if (st) return st;
    kd_err err;
    kd_config cfg;
    if (kd_config_load(&cfg, config, &err)) {
        fprintf(stderr, "kd plan: %s\n", err.msg);
        return 1;
    }
    if (do_measure && teacher) {
        fprintf(stderr, "kd plan: --measure runs no teacher: give --teacher-config without --measure\n");
        return 2;
    }
    if (do_measure && ranks > 1) {
        fprintf(stderr, "kd plan: --measure runs one process, which holds the whole optimizer state: use --ranks 1\n");
        return 2;
    }
    kd_plan_opts o = {.batch = batch, .seq = seq, .threads = omp_get_max_threads(), .lm_chunk = chunk,
                      .topk = topk, .ranks = (int)ranks, .lean = lean, .lean_weights_fp32 = w32,
                      .lean_m_fp32 = m32, .lean_v_full = vfull, .lean_clip_exact = cexact};
    kd_plan p;
    kd_plan_compute(&cfg, &o, &p);
    int64_t t_weights = 0, t_work = 0;   /* online teacher (train/kd_online.h) */
    if (teacher) {
        kd_config tc;
        if (kd_config_load(&tc, teacher, &err)) {
            fprintf(stderr, "kd plan: --teacher-config: %s\n", err.msg);
            return 1;
        }
        t_weights = kd_config_n_params(&tc) * (int64_t)sizeof(float);
        t_work = kd_online_work_bytes(&tc, batch, seq, topk);
        p.train_peak += t_weights + t_work;
    }
    printf("%s: %.2fM parameters (%lld layers, hidden %lld, vocab %lld)\n", config, (double)p.n_params * 1e-6,
           (long long)cfg.num_hidden_layers, (long long)cfg.hidden_size, (long long)cfg.vocab_size);
    if (lean) {
        printf("training, batch %lld x seq %lld per rank, %lld rank(s)%s,\n"
               "lean (weights %s, m %s, v %s, clip %s; per-layer recompute + update):\n",
               (long long)batch, (long long)seq, (long long)ranks, ranks > 1 ? " sharing the optimizer state" : "", w32 ? "FP32" : "BF16", m32 ? "FP32" : "BF16",
               vfull ? "full FP32" : "factored", cexact ? "exact" : "previous");
        row("weights (storage)", p.weights);
        row(ranks > 1 ? "optimizer (per rank)" : "optimizer (m + v)", p.optimizer);
        row("FP32 layer + LM head", p.working);
        row("gradients (layer+head)", p.grads);
        row("activations (saved+1)", p.activations);
        row("loss (chunk scratch)", p.loss);
    } else {
        printf("training, batch %lld x seq %lld per rank, %lld rank(s)%s, FP32 + AdamW:\n", (long long)batch,
               (long long)seq, (long long)ranks, ranks > 1 ? " sharing the optimizer state" : "");
        row("weights", p.weights);
        row("gradients", p.grads);
        row(ranks > 1 ? "AdamW state (per rank)" : "AdamW state", p.optimizer);
        row("activations", p.activations);
        row("LM head + loss (chunk)", p.loss);
    }
    row("batch", p.batch);
    if (teacher) {
        row("teacher weights (F32)", t_weights);
        row("teacher forward", t_work);
    }
    row("process baseline", p.baseline);
    row(ranks > 1 ? "peak per rank" : "peak (predicted)", p.train_peak);
    printf("inference, one sequence of %lld tokens, F32 weights:\n", (long long)seq);
    row("KV cache", p.kv_cache);
    row("peak (predicted)", p.infer_peak);
    int64_t phys = (int64_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE);
    printf("this machine: %.1f GiB of memory: training %s, inference %s\n", (double)phys / (1 << 30),
           p.train_peak < phys * 9 / 10 ? "fits" : "does NOT fit",
           p.infer_peak < phys * 9 / 10 ? "fits" : "does NOT fit");
    if (do_measure) {
        if (p.train_peak > phys * 9 / 10) {
            fprintf(stderr, "kd plan: --measure refused: the step would need %.1f GiB\n", (double)p.train_peak / (1 << 30));
            return 1;
        }
        int64_t peak;
        if (measure(&cfg, &o, &peak, &err)) {
            fprintf(stderr, "kd plan: %s\n", err.msg);
            return 1;
        }
        printf("measured peak RSS: %.1f MiB (predicted %.1f MiB, ratio %.3f)\n", (double)peak / (1 << 20),
               (double)p.train_peak / (1 << 20), (double)p.train_peak / (double)peak);
    }
    return 0;
}
