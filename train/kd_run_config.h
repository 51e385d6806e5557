/*
 * kd_run_config.h — the run config of `kd train` / `kd sweep`: a JSON file,
 * every key overridable from the command line with `--set a.b=value`.
 *
 * Keys (defaults in parentheses; docs/training.md explains each):
 *   student       config.json or checkpoint directory to start from (required)
 *   train_data    teacher dump(s) for training: a path or a list (required)
 *   val_data      teacher dump for validation ("" = none)
 *   alpha (0.5)  temperature (2.0)  kd_mode ("topk_tail")  divergence ("forward")
 *   batch_size (8)  seq_len (0 = the dump's)  grad_accum (1)  steps (100)  tokens (0)
 *   lr (1e-3)  lr_min (1e-4)  warmup (10)  beta1 (0.9)  beta2 (0.95)  eps (1e-8)
 *   weight_decay (0.1)  decay_embeddings (false)  grad_clip (1.0)
 *   eval_every (50)  eval_batches (0 = whole validation set)  save_every (100)  keep_last (2)
 *   log_every (1)  seed (1234)  lm_chunk (256)  vocab_policy ("strict")
 *   memory_mode ("fp32" | "lean", see train/kd_lean.h)  and, for lean only:
 *   lean_weights ("bf16" | "fp32")  lean_m ("bf16" | "fp32")  lean_v ("factored" | "full")
 *   lean_clip ("previous" | "exact")
 *   shard_optimizer (true): under mpirun, each rank keeps 1/N of the optimizer
 *   state (ZeRO-1, train/kd_dist.h); false replicates it on every rank
 *   teacher (""): online distillation: a model kd loads (checkpoint directory,
 *   GGUF, llama2.c .bin) run forward on every batch's tokens instead of the
 *   dumps' stored distributions, which are then not read (a tokens-only dump
 *   suffices); teacher_topk (64): how many of its log-probs the loss sees
 *   (kd_mode topk_tail / topk_zero), 0 = all its logits (kd_mode full)
 */
#ifndef KD_RUN_CONFIG_H
#define KD_RUN_CONFIG_H

#include <stdint.h>

#include <cJSON.h>

#include "core/kd_err.h"

#define KD_RUN_MAX_DATA 16
#define KD_RUN_PATH 1024

typedef struct kd_run_config {
    char student[KD_RUN_PATH];
    char train_data[KD_RUN_MAX_DATA][KD_RUN_PATH];
    int n_train_data;
    char val_data[KD_RUN_PATH];
    double alpha, temperature;
    char kd_mode[32];          /* full | topk_zero | topk_tail */
    char divergence[16];       /* forward | reverse */
    int64_t batch_size, seq_len, grad_accum, steps, tokens;
    double lr, lr_min;
    int64_t warmup;
    double beta1, beta2, eps, weight_decay;
    int decay_embeddings;
    double grad_clip;
    int64_t eval_every, eval_batches, save_every, keep_last, log_every, seed, lm_chunk;
    char vocab_policy[16];     /* strict | pad */
    char memory_mode[16];      /* fp32 | lean */
    char lean_weights[8];      /* bf16 | fp32 (lean) */
    char lean_m[8];            /* bf16 | fp32 (lean) */
    char lean_v[16];           /* factored | full (lean) */
    char lean_clip[16];        /* previous | exact (lean) */
    int shard_optimizer;       /* shard the optimizer state over ranks (no effect with one rank) */
    char teacher[KD_RUN_PATH]; /* online distillation: the teacher model ("" = the dumps' distributions) */
    int64_t teacher_topk;      /* online: top-k of the teacher's log-probs, 0 = full logits */
} kd_run_config;

/* Apply one "a.b=value" override to a JSON tree. value is parsed as JSON when
 * it is valid JSON (numbers, true/false, null, lists, quoted strings) and taken
 * as a plain string otherwise. */
int kd_run_config_set(cJSON *root, const char *assignment, kd_err *err);
/* Fill c from a JSON tree: defaults for absent keys, unknown keys refused
 * (a typo must not silently train something else). name is used in messages. */
int kd_run_config_from_json(kd_run_config *c, const cJSON *root, const char *name, kd_err *err);
/* Load a file, apply overrides, parse. Returns the resolved tree in *resolved (caller frees) if non-NULL. */
int kd_run_config_load(kd_run_config *c, const char *path, char **sets, int n_sets, cJSON **resolved, kd_err *err);
/* The resolved config as JSON (every key, defaults included). */
cJSON *kd_run_config_to_json(const kd_run_config *c);

#endif
