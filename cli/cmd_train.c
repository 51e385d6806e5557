/*
 * cmd_train.c — `kd train`: distill a student from teacher dumps.
 */
#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "train/kd_trainer.h"

/* The run's lines on stderr: a bar redrawn in place on a terminal, otherwise a
 * line every log_every steps; evaluations and the end on lines of their own. */
static void train_progress(void *ctx, const kd_train_progress *p) {
    (void)ctx;
    const int tty = isatty(2);
    const kd_eval_result *e = &p->eval;
    switch (p->event) {
    case KD_TRAIN_START:
        fprintf(stderr,
                "kd train: %.2fM-parameter student, %lld steps of %lld tokens, alpha %.2f T %.2f %s, %d rank(s)%s%s%s\n",
                p->n_params * 1e-6, (long long)p->total_steps, (long long)p->tokens_per_step, p->alpha, p->temperature,
                p->kd_mode, p->world, p->sharded ? " (optimizer state sharded)" : "",
                p->restarted ? ", restarted from step 0 (killed before its first checkpoint)" : p->resumed ? ", resumed" : "",
                p->lean ? ", memory_mode lean" : "");
        break;
    case KD_TRAIN_STEP:
        if (tty) {
            int width = 24, fill = (int)(width * p->step / (p->total_steps ? p->total_steps : 1));
            char bar[32];
            for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
            bar[width] = 0;
            fprintf(stderr, "\r[%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %.0fs   ", bar, (long long)p->step,
                    (long long)p->total_steps, p->loss, p->lr, p->tokens_per_s, p->eta_s);
        } else if (p->step % p->log_every == 0 || p->step == p->total_steps) {
            fprintf(stderr, "step %lld/%lld loss %.4f lr %.2e %.0f tok/s eta %.0fs\n", (long long)p->step,
                    (long long)p->total_steps, p->loss, p->lr, p->tokens_per_s, p->eta_s);
        }
        break;
    case KD_TRAIN_EVAL:
        if (isfinite(e->kl))
            fprintf(stderr, "%seval step %lld: ce %.4f ppl %.2f kl %.4f top1 %.3f (%lld tokens)\n", tty ? "\n" : "",
                    (long long)p->step, e->ce, e->ppl, e->kl, e->top1, (long long)e->tokens);
        else if (isfinite(e->xent))
            fprintf(stderr, "%seval step %lld: ce %.4f ppl %.2f xent %.4f (%lld tokens)\n", tty ? "\n" : "",
                    (long long)p->step, e->ce, e->ppl, e->xent, (long long)e->tokens);
        else
            fprintf(stderr, "%seval step %lld: ce %.4f ppl %.2f (%lld tokens)\n", tty ? "\n" : "", (long long)p->step,
                    e->ce, e->ppl, (long long)e->tokens);
        break;
    case KD_TRAIN_STEPS_DONE:
        if (tty) fputc('\n', stderr);
        break;
    case KD_TRAIN_DONE:
        if (isfinite(e->kl))
            fprintf(stderr, "kd train: done: validation ce %.4f ppl %.2f kl %.4f top1 %.3f -> %s/final\n", e->ce, e->ppl,
                    e->kl, e->top1, p->run_dir);
        else
            fprintf(stderr, "kd train: done: validation ce %.4f ppl %.2f -> %s/final\n", e->ce, e->ppl, p->run_dir);
        break;
    }
}

static void usage(const kd_opt *opts) {
    printf("usage: kd train --config RUN.json [--set key=value ...] --out RUN_DIR [--quiet]\n"
           "       kd train --resume RUN_DIR [--quiet]\n"
           "       mpirun -np N kd train ...          (data-parallel over N processes)\n\n"
           "Trains a student against cached teacher logits, minimising\n"
           "  L = (1-alpha)*CE(labels, student) + alpha*T^2*KL(teacher^T || student^T)\n"
           "averaged over valid tokens, with AdamW, warmup + cosine learning rate and\n"
           "gradient-norm clipping. Every key of RUN.json can be overridden with --set\n"
           "(value parsed as JSON when it is valid JSON, else taken as a string).\n\n");
    kd_opts_help(opts);
    printf("\nRun config keys (default):\n"
           "  student        config.json (fresh init) or checkpoint directory   (required)\n"
           "  train_data     teacher dump .h5, or a list of them                (required)\n"
           "  val_data       validation dump (\"\": hold out 5%% of train_data)\n"
           "  alpha (0.5)  temperature (2.0)\n"
           "  kd_mode        topk_tail | topk_zero (top-k dumps) | full (full-logit dumps)  (topk_tail)\n"
           "                 topk_tail also matches the teacher's tail (1 - its top-k mass) as one\n"
           "                 bucket; topk_zero drops the tail and renormalises the top-k: choose it\n"
           "                 only when `kd teacher info` shows a mean top-k mass of 0.98 or more\n"
           "                 (or to reproduce DistillKit), else it costs cross-entropy\n"
           "                 sampled: for dumps of sampled classes (kd teacher dump --sample; RS-KD):\n"
           "                 KL(p^ || student) with p^ = count / N, unbiased in expectation for the\n"
           "                 full KL's gradient; needs temperature 1 and the forward divergence\n"
           "  divergence     forward | reverse (not with topk_zero or sampled)  (forward)\n"
           "  batch_size (8) sequences per optimizer step, over all ranks\n"
           "  seq_len (0)    must be 0 or the dump's positions per sequence\n"
           "  grad_accum (1) micro-batches per step   steps (100)   tokens (0: use steps)\n"
           "  lr (1e-3)  lr_min (1e-4)  warmup (10)  beta1 (0.9)  beta2 (0.95)  eps (1e-8)\n"
           "  weight_decay (0.1)  decay_embeddings (false)  grad_clip (1.0)\n"
           "  eval_every (50)  eval_batches (0: all)  save_every (100)  keep_last (2)\n"
           "  log_every (1)  seed (1234)  lm_chunk (256 rows per LM-head chunk)\n"
           "  vocab_policy   strict | pad (allow a teacher vocabulary padded past the student's)\n"
           "  memory_mode    fp32 | lean (about 4 instead of 16 bytes per parameter: BF16 weights and\n"
           "                 first moment, factored second moment, per-layer recompute and update;\n"
           "                 grad_accum 1; see docs/training.md, Scaling)      (fp32)\n"
           "  lean_weights   bf16 | fp32   lean_m  bf16 | fp32   lean_v  factored | full\n"
           "  lean_clip      previous (clip with the last step's norm) | exact (two backward\n"
           "                 walks, ~1.5x the time)                            (previous)\n"
           "  shard_optimizer under mpirun, each rank keeps and updates 1/N of the optimizer\n"
           "                 state and the weights are all-gathered (ZeRO-1); resume needs the\n"
           "                 same rank count; false: every rank holds all of it   (true)\n"
           "  teacher        online distillation: a model (checkpoint dir, GGUF, llama2.c .bin)\n"
           "                 run forward on every batch's tokens instead of the dumps' stored\n"
           "                 distributions (a tokens-only dump suffices); its vocabulary\n"
           "                 must be the student's                               (\"\")\n"
           "  teacher_topk   with teacher: the top-K log-probs the loss sees (kd_mode topk_*),\n"
           "                 0 = all its logits (kd_mode full)                   (64)\n"           "RUN_DIR receives run.json (the resolved config), metrics.jsonl,\n"
           "checkpoints/step-N/ (+ checkpoints/latest), best/ (lowest validation ce), final/\n"
           "and final_eval.json. A killed run continues with --resume from its last\n"
           "checkpoint (from step 0 when it had none yet) and, with the same thread\n"
           "count, gives the same weights. One kd train per RUN_DIR at a time (a lock on\n"
           "RUN_DIR/.lock). Before allocating, the memory plan (kd plan) of one step is\n"
           "checked against the memory available; a run that cannot fit is refused with\n"
           "the largest batch_size that fits (KD_MEMORY_CHECK=0 skips the check).\n\n"
           "Metrics (the same definitions whatever kd_mode, divergence, temperature, alpha):\n"
           "  metrics.jsonl step lines   on the training batch: loss (L), ce, top1, and\n"
           "                             train_divergence = the run's own divergence at T\n"
           "                             (kd_mode, direction; without the T^2 factor)\n"
           "  metrics.jsonl eval lines,  on the validation set, the keys and numbers of\n"
           "  final_eval.json            kd eval --model RUN_DIR/final --data VAL.h5:\n"
           "                             ppl, ce, kl = forward KL(teacher || student) at T = 1\n"
           "                             over the dump's top-k + tail bucket (or full logits),\n"
           "                             top1 = argmax agreement, tokens (kl, top1 only when the\n"
           "                             validation dump has a teacher distribution)\n"
           "kd sweep's results.csv/results.md read final_eval.json.\n");
}

int kd_cmd_train(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *resume = NULL, *sets[256];
    kd_opt_list set_list = {sets, 0, 256};
    int quiet = 0;
    int64_t stop_after = 0;
    const kd_opt opts[] = {
        {"--config", KD_OPT_STRING, &config, "RUN.json", .help = "the run config (its keys below)"},
        {"--set", KD_OPT_LIST, &set_list, "key=value", .help = "override a key of RUN.json"},
        {"--out", KD_OPT_STRING, &out, "RUN_DIR", .help = "the run directory to create (what it receives below)"},
        {"--resume", KD_OPT_STRING, &resume, "RUN_DIR", .help = "continue the run in RUN_DIR from its last checkpoint"},
        {"--quiet", KD_OPT_FLAG, &quiet, NULL, .help = "no progress on stderr"},
        {"--stop-after", KD_OPT_INT, &stop_after, "N", .help = "testing: stop with a checkpoint after step N, like a kill",
         .flags = KD_OPT_HIDDEN, .lo = 1, .hi = INT64_MAX},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        usage(opts);
        return 0;
    }
    int st = kd_opts_parse("train", opts, argc, argv);
    if (st) return st;
    kd_train_opts o = {stop_after, quiet ? NULL : train_progress, NULL};
    int n_sets = set_list.n;
    if (!resume && (!config || !out)) {
        fprintf(stderr, "kd train: give --config and --out, or --resume RUN_DIR (see kd train --help)\n");
        return 2;
    }
    if (resume && (config || n_sets)) {
        fprintf(stderr, "kd train: --resume continues the run as configured in RUN_DIR/run.json; "
                        "--config/--set do not apply\n");
        return 2;
    }
    kd_err err;
    kd_dist dist;
    if (kd_dist_init(&dist, &argc, &argv, &err)) {
        fprintf(stderr, "kd train: %s\n", err.msg);
        return 1;
    }
    kd_run_config rc;
    int bad = resume ? kd_train_load_run_config(&rc, resume, &err)
                     : kd_run_config_load(&rc, config, (char **)sets, n_sets, NULL, &err);
    if (!bad) bad = kd_train(&rc, resume ? resume : out, resume != NULL, &o, &dist, &err);
    if (bad) {
        fprintf(stderr, "kd train: %s\n", err.msg);
        if (dist.world > 1) kd_dist_abort(&dist, 1);
    }
    kd_dist_finalize(&dist);
    return bad ? 1 : 0;
}
