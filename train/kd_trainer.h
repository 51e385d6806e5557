/*
 * kd_trainer.h — the distillation training loop behind `kd train`.
 *
 * A run directory holds:
 *   run.json                 the resolved run config (every key)
 *   metrics.jsonl            one JSON object per logged step and per evaluation
 *   checkpoints/step-NNNNNNNN/  checkpoint (config.json, model.safetensors,
 *                            tokenizer.bin or, for "gpt2", tokenizer.h5) + optimizer.safetensors
 *                            + trainer_state.json (optimizer state sharded over N
 *                            ranks: one optimizer-0000K-of-0000N.safetensors per rank)
 *   checkpoints/latest       name of the newest complete checkpoint
 *   best/                    the checkpoint with the lowest validation CE so far
 *   final/, final_eval.json  the last weights and their evaluation (train/kd_eval.h: the keys
 *                            and numbers of `kd eval` on final/, whatever the training loss)
 * Checkpoints are written to a temporary directory, fsync'ed and renamed, and
 * `latest` is replaced atomically afterwards: a killed run resumes from the
 * last complete checkpoint (from step 0 when it had none yet) and, with the
 * same thread count, continues bit for bit as if it had never stopped; its
 * metrics.jsonl is cut back to the checkpoint's step. Rank 0 holds an
 * exclusive lock on RUN_DIR/.lock for the whole run (a second kd train on the
 * directory is refused); trainer_state.json is checked field by field before
 * it is restored; the memory plan of one step is checked against the memory
 * available before anything big is allocated (KD_MEMORY_CHECK=0 skips it).
 */
#ifndef KD_TRAINER_H
#define KD_TRAINER_H

#include "train/kd_dist.h"
#include "train/kd_eval.h"
#include "train/kd_run_config.h"

/* What a run reports as it goes (rank 0 only); the caller shows it (kd prints a bar and lines). */
typedef enum kd_train_event {
    KD_TRAIN_START,       /* before the first step: the run's shape */
    KD_TRAIN_STEP,        /* after every optimizer step */
    KD_TRAIN_EVAL,        /* after an evaluation during the run */
    KD_TRAIN_STEPS_DONE,  /* the last step is done; the final evaluation and saves follow */
    KD_TRAIN_DONE,        /* the run is complete: final evaluation in eval, weights in run_dir/final */
} kd_train_event;

typedef struct kd_train_progress {
    kd_train_event event;
    int64_t step, total_steps, first_step;   /* first_step: where this process started (resume) */
    /* START */
    double n_params;
    int64_t tokens_per_step;
    double alpha, temperature;
    const char *kd_mode;
    int world, sharded, resumed, lean;
    int restarted;            /* resumed from step 0: killed before its first checkpoint */
    /* STEP */
    double loss, lr, tokens_per_s, eta_s;
    int64_t log_every;
    /* EVAL, DONE */
    kd_eval_result eval;
    const char *run_dir;
} kd_train_progress;

typedef struct kd_train_opts {
    int64_t stop_after;   /* stop (with a checkpoint) after this many steps in this process; 0 = run to the end */
    void (*progress)(void *ctx, const kd_train_progress *p);   /* NULL: no reports */
    void *progress_ctx;
} kd_train_opts;

/* Train from scratch into run_dir (must not hold a run yet) or, with resume, continue run_dir. */
int kd_train(const kd_run_config *rc, const char *run_dir, int resume, const kd_train_opts *o, const kd_dist *dist,
             kd_err *err);
/* Read run_dir/run.json into rc (for --resume). */
int kd_train_load_run_config(kd_run_config *rc, const char *run_dir, kd_err *err);

#endif
