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
 * last complete checkpoint and, with the same thread count, continues bit for
 * bit as if it had never stopped.
 */
#ifndef KD_TRAINER_H
#define KD_TRAINER_H

#include "train/kd_dist.h"
#include "train/kd_eval.h"
#include "train/kd_run_config.h"

typedef struct kd_train_opts {
    int quiet;            /* no progress output */
    int64_t stop_after;   /* stop (with a checkpoint) after this many steps in this process; 0 = run to the end */
} kd_train_opts;

/* Train from scratch into run_dir (must not hold a run yet) or, with resume, continue run_dir. */
int kd_train(const kd_run_config *rc, const char *run_dir, int resume, const kd_train_opts *o, const kd_dist *dist,
             kd_err *err);
/* Read run_dir/run.json into rc (for --resume). */
int kd_train_load_run_config(kd_run_config *rc, const char *run_dir, kd_err *err);

#endif
