/*
 * kd_trainer.c — the distillation training loop (see kd_trainer.h).
 *
 * One optimizer step:
 *   for each of grad_accum micro-batches [B/world, T] on this rank:
 *     hidden = student(tokens)                         (recorded on the tape)
 *     loss   = chunked LM head + KD loss (train/kd_loss.c)
 *     backward with seed n_valid, so parameter grads hold Σ over tokens
 *   all-reduce grads and token counts over ranks; grads /= global n_valid
 *   clip the global norm; AdamW at the scheduled learning rate
 * so the update equals the one of a single process on the whole global batch.
 *
 * memory_mode "lean" (train/kd_lean.h) replaces the model, the gradients and
 * AdamW by kd_lean: BF16 storage, a recomputing backward that updates each
 * layer as soon as its gradient is complete, clipping with the previous step's
 * norm. The rest (data, schedule, evaluation, checkpoints, resume) is shared;
 * checkpoints then hold BF16 weights and the lean optimizer state.
 *
 * shard_optimizer under mpirun (ZeRO-1): each rank holds the optimizer state of
 * its rows of every parameter (kd_dist_shard_rows), updates only those and
 * all-gathers the weights, in both memory modes. Each rank writes its shard of
 * a checkpoint's optimizer state (optimizer-RANK-of-WORLD.safetensors) into the
 * directory rank 0 then completes and renames; resume needs the same number of
 * shards (trainer_state.json "optimizer_shards").
 */
#include "train/kd_trainer.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_log.h"
#include "core/kd_time.h"
#include "format/kd_safetensors.h"
#include "data/kd_loader.h"
#include "data/kd_tokenizer.h"
#include "student/kd_checkpoint.h"
#include "student/kd_plan.h"
#include "data/kd_dump_tok.h"
#include "train/kd_lean.h"
#include "train/kd_step.h"
#include "train/kd_loss.h"
#include "train/kd_online.h"
#include "train/kd_optim.h"

typedef struct run {
    const kd_run_config *rc;
    const kd_dist *dist;
    kd_dist shard;            /* the ranks sharing the optimizer state: *dist, or rank 0 of 1 (not sharded) */
    kd_train_opts opts;
    char dir[KD_RUN_PATH];
    kd_model m;               /* fp32 mode; in lean mode only m.cfg is set (the model is lean.m) */
    int have_model;
    int is_lean;
    kd_lean lean;
    kd_tokenizer *tok;
    kd_adamw opt;
    kd_adamw_opts ao;
    kd_stepper stepper;       /* one optimizer step, FP32 or lean (train/kd_step.h) */
    kd_loader *train, *val;
    kd_loader_cursor val_start;
    kd_graph g;
    kd_loss_opts lo;
    int64_t step, total_steps, tokens_per_step;
    double best_val;
    FILE *metrics;
    int lock_fd;              /* RUN_DIR/.lock, flock'ed by rank 0 for the whole run */
    double t_start;
    int64_t first_step;       /* the step this process started at */
    kd_online online;         /* run-config "teacher": the teacher run per batch (train/kd_online.h) */
    int is_online;
} run;

#define PATHBUF (2 * KD_RUN_PATH + 128)

static int path2(char *out, const char *a, const char *b, kd_err *err) {
    return kd_path_join(out, PATHBUF, a, b, err);
}

/* ---- set-up ------------------------------------------------------------------------ */

static int lean_opts(const kd_run_config *rc, const kd_dist *shard, kd_lean_opts *o, kd_err *err) {
    kd_lean_opts_init(o);
    o->shard_rank = shard->rank;
    o->shard_world = shard->world;
    o->adam = (kd_adamw_opts){(float)rc->beta1, (float)rc->beta2, (float)rc->eps, (float)rc->weight_decay};
    o->decay_embeddings = rc->decay_embeddings;
    o->seed = (uint64_t)rc->seed;
    o->v_factored = !strcmp(rc->lean_v, "factored");
    o->exact_clip = !strcmp(rc->lean_clip, "exact");
    return kd_lean_dtype_parse(rc->lean_weights, &o->weights, err) || kd_lean_dtype_parse(rc->lean_m, &o->m, err);
}

/* Lean mode: the student straight into lean storage (a 3B model never exists in FP32). */
static int load_student_lean(run *r, int is_dir, kd_err *err) {
    const char *s = r->rc->student;
    kd_config c;
    kd_lean_opts o;
    char cp[PATHBUF];
    if (is_dir ? path2(cp, s, "config.json", err) : snprintf(cp, sizeof cp, "%s", s) < 0) return -1;
    if (kd_config_load(&c, cp, err) || lean_opts(r->rc, &r->shard, &o, err) || kd_lean_new(&r->lean, &c, &o, err))
        return -1;
    r->is_lean = 1;
    r->m.cfg = c;
    if (is_dir) return kd_lean_load_weights(&r->lean, s, err);
    kd_lean_init(&r->lean, (uint64_t)r->rc->seed);
    return 0;
}

static int load_student(run *r, kd_err *err) {
    struct stat st;
    const char *s = r->rc->student;
    if (stat(s, &st) != 0) return kd_errf(err, "student '%s': no such file or directory", s);
    if (!strcmp(r->rc->memory_mode, "lean")) {
        if (load_student_lean(r, S_ISDIR(st.st_mode), err)) return -1;
        if (S_ISDIR(st.st_mode) && kd_tokenizer_load_dir(s, &r->tok, err)) return -1;
        return 0;
    }
    if (S_ISDIR(st.st_mode)) {
        if (kd_checkpoint_load(&r->m, s, err)) return -1;
        if (kd_tokenizer_load_dir(s, &r->tok, err)) return -1;   /* tokenizer.h5 ("gpt2") or tokenizer.bin */
    } else {
        kd_config c;
        if (kd_config_load(&c, s, err) || kd_model_new(&r->m, &c, err)) return -1;
        kd_model_init(&r->m, (uint64_t)r->rc->seed);
    }
    r->have_model = 1;
    return 0;
}

/* Sizes that cannot give a useful run, refused before the first step (issue: a
 * mutated run.json made kd train work for minutes or abort on an arena allocation). */
static int check_sizes(run *r, const kd_dump_meta *meta, kd_err *err) {
    const kd_run_config *rc = r->rc;
    const int64_t n_train = kd_loader_n_sequences(r->train), max_steps = (int64_t)1 << 40;
    if (rc->batch_size > n_train)
        return kd_errf(err, "run config: 'batch_size' = %lld, but the training split of %s%s holds %lld sequences (every "
                       "batch would be mostly padding): expected at most %lld", (long long)rc->batch_size,
                       rc->train_data[0], rc->n_train_data > 1 ? " ..." : "", (long long)n_train, (long long)n_train);
    if (r->total_steps > max_steps)
        return kd_errf(err, "run config: 'tokens' = %lld means %lld steps of %lld tokens, expected at most %lld steps",
                       (long long)rc->tokens, (long long)r->total_steps, (long long)r->tokens_per_step,
                       (long long)max_steps);
    kd_plan_opts po = {.batch = rc->batch_size / r->dist->world, .seq = meta->seq_len, .threads = omp_get_max_threads(),
                       .lm_chunk = rc->lm_chunk, .topk = meta->k, .ranks = r->shard.world, .lean = r->is_lean,
                       .lean_weights_fp32 = !strcmp(rc->lean_weights, "fp32"), .lean_m_fp32 = !strcmp(rc->lean_m, "fp32"),
                       .lean_v_full = !strcmp(rc->lean_v, "full"), .lean_clip_exact = !strcmp(rc->lean_clip, "exact")};
    kd_plan p;
    kd_plan_compute(&r->m.cfg, &po, &p);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const double ram = pages > 0 && page > 0 ? (double)pages * (double)page : 0;
    if (ram > 0 && (double)p.train_peak > ram)
        return kd_errf(err, "run config: 'batch_size' = %lld with %d positions per sequence needs about %.1f GiB per "
                       "process for a training step (kd plan), more than this machine's %.1f GiB: expected a smaller "
                       "batch_size (or memory_mode \"lean\")", (long long)rc->batch_size, meta->seq_len,
                       (double)p.train_peak / (1 << 30), ram / (1 << 30));
    return 0;
}

static int open_loaders(run *r, kd_err *err) {
    const kd_run_config *rc = r->rc;
    if (rc->batch_size % r->dist->world)
        return kd_errf(err, "batch_size %lld is not divisible by the %d ranks", (long long)rc->batch_size, r->dist->world);
    const char *train_paths[KD_RUN_MAX_DATA];
    for (int i = 0; i < rc->n_train_data; i++) train_paths[i] = rc->train_data[i];
    const char *val_path = rc->val_data;
    kd_loader_opts o;
    kd_loader_opts_init(&o);
    o.batch_size = (int)(rc->batch_size / r->dist->world);
    o.seed = (uint64_t)rc->seed;
    o.rank = r->dist->rank;
    o.world = r->dist->world;
    o.student_vocab = r->m.cfg.vocab_size;
    o.vocab_policy = strcmp(rc->vocab_policy, "pad") ? KD_VOCAB_EXACT : KD_VOCAB_PADDED;
    o.paths = train_paths;
    o.n_paths = rc->n_train_data;
    o.split = val_path[0] ? KD_SPLIT_ALL : KD_SPLIT_TRAIN;
    o.val_fraction = val_path[0] ? 0.0 : 0.05;
    if (!(r->train = kd_loader_new(&o, err))) return kd_err_prefix(err, "train_data");
    /* validation: a separate dump, or the 5% of train_data the split holds out; no shuffling */
    if (val_path[0]) {
        o.paths = &val_path;
        o.n_paths = 1;
        o.split = KD_SPLIT_ALL;
    } else {
        o.split = KD_SPLIT_VAL;
    }
    o.shuffle = 0;
    o.prefetch = 0;
    if (!(r->val = kd_loader_new(&o, err))) return kd_err_prefix(err, "val_data");
    if (kd_loader_n_sequences(r->val) == 0) {
        kd_loader_free(r->val);
        r->val = NULL;
        kd_warn("no validation sequences (val_data empty, train_data too small to hold 5%% out): no evaluation");
    } else {
        r->val_start = kd_loader_cursor_get(r->val);
    }
    const kd_dump_meta *meta = kd_loader_meta(r->train);
    if (rc->seq_len && rc->seq_len != meta->seq_len)
        return kd_errf(err, "seq_len %lld differs from the dump's %d positions per sequence (set seq_len to 0 or %d)",
                       (long long)rc->seq_len, meta->seq_len, meta->seq_len);
    if (rc->teacher[0]) {   /* online: the teacher runs per batch; the dumps give tokens and masks only */
        if (kd_online_open(&r->online, rc->teacher, rc->teacher_topk, r->m.cfg.vocab_size, err)) return -1;
        r->is_online = 1;
    } else if (meta->tokens_only) {   /* text without a teacher: plain cross-entropy; kd_mode and temperature do not apply */
        if (rc->alpha != 0)
            return kd_errf(err, "%s%s holds tokens only (no teacher distribution), so \"alpha\" must be 0 (plain "
                           "cross-entropy), not %g: set \"alpha\": 0, or give a teacher dump as train_data",
                           rc->train_data[0], rc->n_train_data > 1 ? " ..." : "", rc->alpha);
    } else if (meta->k == 0 && strcmp(rc->kd_mode, "full"))
        return kd_errf(err, "kd_mode \"%s\" needs a top-k dump, but %s holds full logits (use kd_mode \"full\")",
                       rc->kd_mode, rc->train_data[0]);
    if (!r->is_online && meta->sampled != !strcmp(rc->kd_mode, "sampled"))
        return kd_errf(err, meta->sampled ? "%s holds sampled classes (distribution \"sampled\"): train it with "
                                            "\"kd_mode\": \"sampled\" (and temperature 1), not \"%s\""
                                          : "%s holds no sampled classes: \"kd_mode\": \"%s\" needs a dump written with "
                                            "kd teacher dump --sample",
                       rc->train_data[0], rc->kd_mode);
    if (!r->is_online && meta->k > 0 && !strcmp(rc->kd_mode, "full"))
        return kd_errf(err, "kd_mode \"full\" needs full teacher logits, but %s holds top-%d (use topk_tail or topk_zero)",
                       rc->train_data[0], meta->k);
    r->tokens_per_step = rc->batch_size * rc->grad_accum * meta->seq_len;
    r->total_steps = rc->steps ? rc->steps : (rc->tokens + r->tokens_per_step - 1) / r->tokens_per_step;
    if (check_sizes(r, meta, err)) return -1;
    /* the tokenizer the student inherits: the student checkpoint's, else the dump's */
    if (!r->tok) {
        const char *p = rc->train_data[0];
        kd_dump *d = kd_dump_open(p, err);
        if (!d) return -1;
        if (kd_dump_get_meta(d)->has_tokenizer) {
            kd_dump_tokenizer dt;
            memset(&dt, 0, sizeof dt);
            int rc2 = kd_dump_read_tokenizer(d, &dt, err);
            if (!rc2) r->tok = kd_tokenizer_from_dump(&dt, p, err);
            kd_dump_tokenizer_free(&dt);
            if (rc2 || !r->tok) {
                kd_dump_close(d);
                return -1;
            }
        }
        kd_dump_close(d);
    }
    return 0;
}

/* ---- checkpoints ------------------------------------------------------------------- */

static int save_model_dir(run *r, const char *dir, kd_err *err) {
    if (r->is_lean ? kd_lean_save(&r->lean, dir, err) : kd_checkpoint_save(&r->m, dir, err)) return -1;
    if (r->tok && kd_tokenizer_save_dir(r->tok, dir, err)) return -1;   /* tokenizer.bin, or tokenizer.h5 for "gpt2" */
    return 0;
}

/* Replace dir by a freshly written copy, atomically (tmp dir + rename). */
static int save_model_swap(run *r, const char *dir, kd_err *err) {
    char tmp[PATHBUF], old[PATHBUF];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    snprintf(old, sizeof old, "%s.old", dir);
    if (kd_rmtree(tmp, err) || save_model_dir(r, tmp, err) || kd_fsync_dir(tmp, err)) return -1;
    if (kd_rmtree(old, err)) return -1;
    if (kd_file_exists(dir) && rename(dir, old) != 0) return kd_errf(err, "%s: cannot rename", dir);
    if (rename(tmp, dir) != 0) return kd_errf(err, "%s: cannot rename into place", dir);
    return kd_rmtree(old, err);
}

static int save_trainer_state(run *r, const char *dir, kd_err *err);

/* dir/optimizer.safetensors, or this rank's shard dir/optimizer-RANK-of-WORLD.safetensors. */
static int optimizer_path(const run *r, char *out, const char *dir, kd_err *err) {
    char name[64];
    if (r->shard.world > 1)
        snprintf(name, sizeof name, "optimizer-%05d-of-%05d.safetensors", r->shard.rank, r->shard.world);
    else
        snprintf(name, sizeof name, "optimizer.safetensors");
    return path2(out, dir, name, err);
}

/* This rank's part of the optimizer state (all of it when not sharded): m.NAME and v.NAME of its rows. */
static int save_optimizer(run *r, const char *dir, kd_err *err) {
    char p[PATHBUF];
    if (optimizer_path(r, p, dir, err)) return -1;
    if (r->is_lean) return kd_lean_save_optimizer(&r->lean, p, err);
    kd_st_writer *w = kd_st_writer_new(err);
    if (!w) return -1;
    char (*names)[128] = malloc((size_t)r->m.n_params * 2 * sizeof *names);
    int rc = names ? 0 : kd_errf(err, "out of memory");
    if (!rc) rc = kd_optim_shard_mark(w, r->shard.rank, r->shard.world, err);
    for (int i = 0; !rc && i < r->m.n_params; i++) {
        kd_tensor *t = r->m.params[i];
        int64_t shape[KD_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        shape[0] = (r->opt.hi[i] - r->opt.lo[i]) / (t->n / t->shape[0]);   /* this rank's rows */
        snprintf(names[2 * i], 128, "m.%s", t->name);
        snprintf(names[2 * i + 1], 128, "v.%s", t->name);
        rc = kd_st_writer_add(w, names[2 * i], KD_ST_F32, t->ndim, shape, r->opt.m[i], err) ||
             kd_st_writer_add(w, names[2 * i + 1], KD_ST_F32, t->ndim, shape, r->opt.v[i], err);
    }
    if (!rc) rc = kd_st_writer_save(w, p, err);
    kd_st_writer_free(w);
    free(names);
    return rc ? -1 : 0;
}

static int save_trainer_state(run *r, const char *dir, kd_err *err) {
    char p[PATHBUF];
    kd_loader_cursor c = kd_loader_cursor_get(r->train);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)r->step);
    cJSON_AddNumberToObject(o, "adam_step", (double)(r->is_lean ? r->lean.step : r->opt.step));
    cJSON_AddNumberToObject(o, "optimizer_shards", r->shard.world);
    if (r->is_lean) {   /* clips the next step; %a text so that resume gets the same bits */
        char nb[64];
        snprintf(nb, sizeof nb, "%a", r->lean.last_grad_norm);
        cJSON_AddStringToObject(o, "memory_mode", "lean");
        cJSON_AddStringToObject(o, "last_grad_norm", nb);
    }
    cJSON_AddNumberToObject(o, "best_val_ce", isfinite(r->best_val) ? r->best_val : 1e308);
    char buf[32];
    cJSON *cur = cJSON_AddObjectToObject(o, "cursor");
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c.seed);
    cJSON_AddStringToObject(cur, "seed", buf);
    cJSON_AddNumberToObject(cur, "epoch", (double)c.epoch);
    cJSON_AddNumberToObject(cur, "batch", (double)c.batch);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c.config_hash);
    cJSON_AddStringToObject(cur, "config_hash", buf);
    int rc = path2(p, dir, "trainer_state.json", err) || kd_json_write_atomic(p, o, err);
    cJSON_Delete(o);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Keep the newest keep_last step-* directories. */
static int prune(run *r, const char *ckdir, kd_err *err) {
    DIR *d = opendir(ckdir);
    if (!d) return kd_errf(err, "%s: cannot list", ckdir);
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096)
        if (!strncmp(e->d_name, "step-", 5) && !strchr(e->d_name, '.')) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!rc && i < n - r->rc->keep_last) {
            char p[PATHBUF];
            rc = path2(p, ckdir, names[i], err) || kd_rmtree(p, err);
        }
        free(names[i]);
    }
    return rc;
}

/* Rank 0's part of a checkpoint: the model, the whole optimizer state unless
 * sharded, the trainer state; then the rename into place, `latest`, pruning. */
static int finish_checkpoint(run *r, const char *ckdir, const char *name, const char *tmp, const char *fin,
                             kd_err *err) {
    char latest[PATHBUF];
    if (save_model_dir(r, tmp, err) || (r->shard.world == 1 && save_optimizer(r, tmp, err)) ||
        save_trainer_state(r, tmp, err) || kd_fsync_dir(tmp, err))
        return kd_err_prefix(err, "checkpoint at step %lld", (long long)r->step);
    if (kd_rmtree(fin, err)) return -1;
    if (rename(tmp, fin) != 0) return kd_errf(err, "%s: cannot rename into place", fin);
    if (kd_fsync_dir(ckdir, err) || path2(latest, ckdir, "latest", err) ||
        kd_write_file_atomic(latest, name, strlen(name), err))
        return -1;
    return prune(r, ckdir, err);
}

/*
 * Written into step-N.tmp/ and renamed to step-N/ when complete. Sharded, every
 * rank writes its optimizer shard into the directory rank 0 made (the run
 * directory is on a file system all ranks share, as resume already needs), and
 * the ranks agree after each phase, so rank 0 renames only a complete checkpoint
 * and every rank stops when any rank failed.
 */
static int save_checkpoint(run *r, kd_err *err) {
    const int sharded = r->shard.world > 1, rank = r->dist->rank;
    if (!sharded && rank != 0) return 0;
    char ckdir[PATHBUF], name[64], tmp[PATHBUF], fin[PATHBUF];
    snprintf(name, sizeof name, "step-%08lld", (long long)r->step);
    if (path2(ckdir, r->dir, "checkpoints", err)) return -1;
    if (snprintf(tmp, sizeof tmp, "%s/%s.tmp", ckdir, name) >= (int)sizeof tmp) return kd_errf(err, "%s: path too long", ckdir);
    if (snprintf(fin, sizeof fin, "%s/%s", ckdir, name) >= (int)sizeof fin) return kd_errf(err, "%s: path too long", ckdir);
    int ok = rank != 0 || !(kd_mkdirs(ckdir, err) || kd_rmtree(tmp, err) || kd_mkdirs(tmp, err));
    if (!sharded && !ok) return kd_err_prefix(err, "checkpoint at step %lld", (long long)r->step);
    if (sharded) {
        if (!kd_dist_all_ok(r->dist, ok))
            return ok ? kd_errf(err, "checkpoint at step %lld: rank 0 could not create %s", (long long)r->step, tmp)
                      : kd_err_prefix(err, "checkpoint at step %lld", (long long)r->step);
        ok = !save_optimizer(r, tmp, err);
        if (!ok) kd_err_prefix(err, "checkpoint at step %lld: optimizer shard %d of %d", (long long)r->step, rank,
                               r->shard.world);
        if (!kd_dist_all_ok(r->dist, ok))
            return ok ? kd_errf(err, "checkpoint at step %lld: another rank could not write its optimizer shard",
                                (long long)r->step)
                      : -1;
    }
    if (rank == 0 && ok) ok = !finish_checkpoint(r, ckdir, name, tmp, fin, err);
    if (sharded && !kd_dist_all_ok(r->dist, ok) && ok)
        return kd_errf(err, "checkpoint at step %lld: rank 0 could not complete it", (long long)r->step);
    return ok ? 0 : -1;
}

static int load_trainer_state(run *r, const char *dir, kd_err *err);

/* The checkpoint's optimizer state must be split as this run splits it: the same
 * number of shards (trainer_state.json "optimizer_shards"; absent: 1). */
static int check_shards(run *r, const char *dir, kd_err *err) {
    char p[PATHBUF];
    if (path2(p, dir, "trainer_state.json", err)) return -1;
    cJSON *o = kd_json_load(p, err);
    if (!o) return kd_err_prefix(err, "bad trainer state");
    int64_t n = 1;
    int bad = kd_json_get_int(o, "optimizer_shards", p, 0, 1, 1 << 24, &n, err);
    cJSON_Delete(o);
    if (bad) return kd_err_prefix(err, "bad trainer state");
    const int want = r->shard.world;
    if (n == want) return 0;
    if (n > 1)
        return kd_errf(err, "%s: the optimizer state of this checkpoint is sharded over %lld ranks; resume it with "
                            "mpirun -np %lld (this run has %d rank(s)%s)", dir, (long long)n, (long long)n,
                       r->dist->world, r->rc->shard_optimizer ? "" : " and shard_optimizer false");
    return kd_errf(err, "%s: this checkpoint holds the whole optimizer state (written by one rank or with "
                        "shard_optimizer false), but this run shards it over %d ranks; resume it with 1 rank, or set "
                        "\"shard_optimizer\": false in %s/run.json", dir, want, r->dir);
}

/* This rank's FP32 AdamW state from its file (its shard, or the whole state). */
static int load_optimizer_fp32(run *r, const char *p, kd_err *err) {
    kd_st_file *f = kd_st_open(p, err);
    if (!f) return -1;
    if (kd_optim_shard_check(f, p, r->shard.rank, r->shard.world, err) < 0) {
        kd_st_close(f);
        return -1;
    }
    for (int i = 0; i < r->m.n_params; i++) {
        kd_tensor *t = r->m.params[i];
        int64_t shape[KD_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        shape[0] = (r->opt.hi[i] - r->opt.lo[i]) / (t->n / t->shape[0]);
        char nm[128];
        snprintf(nm, sizeof nm, "m.%s", t->name);
        int bad = kd_st_read_f32(f, nm, r->opt.m[i], t->ndim, shape, err);
        snprintf(nm, sizeof nm, "v.%s", t->name);
        if (bad || kd_st_read_f32(f, nm, r->opt.v[i], t->ndim, shape, err)) {
            kd_st_close(f);
            return -1;
        }
    }
    kd_st_close(f);
    return 0;
}

/* The newest complete checkpoint's name (step-N without .tmp) in ckdir into out; 0 when there is none. */
static int newest_checkpoint(const char *ckdir, char *out, size_t n) {
    DIR *d = opendir(ckdir);
    if (!d) return 0;
    struct dirent *e;
    out[0] = 0;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "step-", 5) && !strchr(e->d_name, '.') && strcmp(e->d_name, out) > 0 &&
            strlen(e->d_name) < n)
            snprintf(out, n, "%s", e->d_name);
    closedir(d);
    return out[0] != 0;
}

/* Returns 1 when the run has no checkpoint yet (it was killed before its first one):
 * the run then starts from step 0, as configured in its run.json. */
static int load_checkpoint(run *r, kd_err *err) {
    char ckdir[PATHBUF], latest[PATHBUF], dir[PATHBUF], p[PATHBUF], found[64];
    if (path2(ckdir, r->dir, "checkpoints", err) || path2(latest, ckdir, "latest", err)) return -1;
    size_t len;
    char *name = NULL;
    if (kd_file_exists(latest)) {
        if (!(name = kd_read_file(latest, &len, err))) return kd_err_prefix(err, "cannot resume");
    } else if (newest_checkpoint(ckdir, found, sizeof found)) {
        /* killed after renaming step-N into place, before `latest` named it: step-N is complete */
        name = strdup(found);
        len = name ? strlen(name) : 0;
        if (!name) return kd_errf(err, "out of memory");
    } else {
        return 1;
    }
    while (len && (name[len - 1] == '\n' || name[len - 1] == ' ')) name[--len] = 0;
    if (strncmp(name, "step-", 5) || strchr(name, '/') || strchr(name, '.')) {
        kd_errf(err, "%s: names \"%.64s\", expected a checkpoint directory name step-NNNNNNNN", latest, name);
        free(name);
        return -1;
    }
    int bad_dir = path2(dir, ckdir, name, err);
    free(name);
    if (bad_dir || check_shards(r, dir, err) || optimizer_path(r, p, dir, err)) return -1;
    if (r->is_lean) {
        if (kd_lean_load_weights(&r->lean, dir, err) || kd_lean_load_optimizer(&r->lean, p, err)) return -1;
        return load_trainer_state(r, dir, err);
    }
    if (kd_checkpoint_load_weights(&r->m, dir, err) || load_optimizer_fp32(r, p, err)) return -1;
    return load_trainer_state(r, dir, err);
}

/* A decimal uint64 written as a string (cursor seeds and hashes exceed a double's 53 bits). */
static int state_u64(const cJSON *cur, const char *key, const char *file, uint64_t *out, kd_err *err) {
    char s[32];
    if (kd_json_get_string(cur, key, file, 1, s, sizeof s, err)) return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!s[0] || s[0] < '0' || s[0] > '9' || *end || errno == ERANGE)
        return kd_errf(err, "%s: field 'cursor.%s': found string \"%s\", expected a decimal integer in [0, 2^64) "
                       "as a string", file, key, s);
    *out = (uint64_t)v;
    return 0;
}

/* "field 'batch'" → "field 'cursor.batch'" in a message of the JSON getters; returns rc. */
static int cursor_field(int rc, kd_err *err) {
    char *f = rc && err ? strstr(err->msg, "field '") : NULL;
    if (f && strlen(err->msg) + 8 < sizeof err->msg) {
        f += 7;
        memmove(f + 7, f, strlen(f) + 1);
        memcpy(f, "cursor.", 7);
    }
    return rc;
}

static int load_trainer_state(run *r, const char *dir, kd_err *err) {
    char p[PATHBUF];
    if (path2(p, dir, "trainer_state.json", err)) return -1;
    cJSON *o = kd_json_load(p, err);
    if (!o) return kd_err_prefix(err, "bad trainer state");
    int64_t step, astep, epoch, batch;
    uint64_t seed = 0, hash = 0;
    double best;
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(o, "cursor");
    char mode[16] = "fp32", gn[64] = "0x0p+0";
    int rc = kd_json_get_int(o, "step", p, 1, 0, r->total_steps, &step, err) ||
             kd_json_get_int(o, "adam_step", p, 1, 0, step, &astep, err) ||
             kd_json_get_float(o, "best_val_ce", p, 1, -1e308, 1e308, &best, err) ||
             (!cJSON_IsObject(cur) &&
              kd_errf(err, "%s: field 'cursor' is %s, expected an object {seed, epoch, batch, config_hash}", p,
                      cur ? kd_json_type_name(cur) : "missing")) ||
             state_u64(cur, "seed", p, &seed, err) || state_u64(cur, "config_hash", p, &hash, err) ||
             cursor_field(kd_json_get_int(cur, "epoch", p, 1, 0, INT64_MAX / 2, &epoch, err), err) ||
             cursor_field(kd_json_get_int(cur, "batch", p, 1, 0, INT64_MAX / 2, &batch, err), err) ||
             kd_json_get_string(o, "memory_mode", p, 0, mode, sizeof mode, err) ||
             kd_json_get_string(o, "last_grad_norm", p, 0, gn, sizeof gn, err);
    cJSON_Delete(o);
    if (rc) return kd_err_prefix(err, "bad trainer state");
    if (strcmp(mode, r->is_lean ? "lean" : "fp32"))
        return kd_errf(err, "%s: the checkpoint was written in memory_mode \"%s\", this run is \"%s\"", p, mode,
                       r->is_lean ? "lean" : "fp32");
    char *end = NULL;
    double norm = strtod(gn, &end);
    if (*end || !isfinite(norm) || norm < 0)
        return kd_errf(err, "bad trainer state: %s: field 'last_grad_norm': found string \"%s\", expected a finite "
                       "norm ≥ 0 in C99 hex notation (e.g. \"0x1.8p-1\")", p, gn);
    if (seed != (uint64_t)r->rc->seed)
        return kd_errf(err, "bad trainer state: %s: field 'cursor.seed': found \"%llu\", expected \"%llu\" (the run's "
                       "seed in %s/run.json)", p, (unsigned long long)seed, (unsigned long long)r->rc->seed, r->dir);
    /* every step takes grad_accum batches from the training loader: the cursor follows from the step */
    int64_t bpe = kd_loader_batches_per_epoch(r->train), taken = step * (r->is_lean ? 1 : r->rc->grad_accum);
    if (batch >= bpe || epoch > taken / bpe || epoch * bpe + batch != taken)
        return kd_errf(err, "bad trainer state: %s: fields 'cursor.epoch' %lld and 'cursor.batch' %lld, expected "
                       "epoch %lld and batch %lld (step %lld has taken %lld batches of %lld per epoch)", p,
                       (long long)epoch, (long long)batch, (long long)(taken / bpe), (long long)(taken % bpe),
                       (long long)step, (long long)taken, (long long)bpe);
    r->step = step;
    if (r->is_lean) {
        r->lean.step = astep;
        r->lean.last_grad_norm = norm;
    } else {
        r->opt.step = astep;
    }
    r->best_val = best >= 1e300 ? INFINITY : best;
    kd_loader_cursor c = {seed, epoch, batch, hash};
    /* rank 0 wrote its own cursor; the ranks step in lockstep (same epoch and batch), but each
     * loader's hash covers its rank: rank 0 checks the hash (world size included), the others
     * take the position */
    if (r->dist->rank != 0) c.config_hash = kd_loader_cursor_get(r->train).config_hash;
    if (kd_loader_restore(r->train, &c, err)) return kd_err_prefix(err, "bad trainer state: %s", p);
    return 0;
}

/* ---- evaluation ---------------------------------------------------------------------- */

static kd_loss_batch loss_batch(const kd_batch *b) {
    return (kd_loss_batch){b->labels, b->logits, b->topk_ids, b->topk_logprobs, b->k, b->sampled};
}

/* The validation set scored by kd_eval_batch (train/kd_eval.h): the metrics do not depend on
 * the run's loss options. kl and top1 only when the validation dump has a teacher
 * distribution: on a tokens-only dump they are NAN and left out of the JSON and the eval lines. */
static int evaluate(run *r, kd_eval_result *out, kd_err *err) {
    memset(out, 0, sizeof *out);
    if (!r->val) return 0;
    if (kd_loader_restore(r->val, &r->val_start, err)) return -1;
    int64_t nb = kd_loader_batches_per_epoch(r->val);
    if (r->rc->eval_batches > 0 && r->rc->eval_batches < nb) nb = r->rc->eval_batches;
    kd_eval_acc acc = {{0}, 0};
    for (int64_t i = 0; i < nb; i++) {
        const kd_batch *b = kd_loader_next(r->val, err);
        if (!b) return -1;
        kd_step_batch sb = {b->tokens, b->B, b->T, loss_batch(b)};
        if ((r->is_online && kd_online_fill(&r->online, b->tokens, b->B, b->T, &sb.lb, err)) ||
            kd_step_eval(&r->stepper, &r->g, &sb, &acc, err)) return kd_err_prefix(err, "evaluation batch %lld", (long long)i);
    }
    if (kd_dist_allreduce_sum_f64(r->dist, acc.sum, KD_EVAL_NSUMS, err)) return -1;
    acc.teacher = r->is_online || !kd_loader_meta(r->val)->tokens_only;
    *out = kd_eval_result_of(&acc);
    return 0;
}

static void log_json(run *r, cJSON *o) {
    if (r->metrics) {
        char *s = cJSON_PrintUnformatted(o);
        fprintf(r->metrics, "%s\n", s);
        fflush(r->metrics);
        free(s);
    }
    cJSON_Delete(o);
}

/* The caller's progress callback (rank 0), with the run's position filled in. */
static void report_full(run *r, kd_train_progress *p) {
    if (!r->opts.progress || r->dist->rank != 0) return;
    p->step = r->step;
    p->total_steps = r->total_steps;
    p->first_step = r->first_step;
    p->run_dir = r->dir;
    r->opts.progress(r->opts.progress_ctx, p);
}

static void report(run *r, kd_train_event ev, const kd_eval_result *e) {
    kd_train_progress p = {.event = ev};
    if (e) p.eval = *e;
    report_full(r, &p);
}

static void progress(run *r, double loss, float lr) {
    if (!r->opts.progress || r->dist->rank != 0) return;
    double el = kd_now_s() - r->t_start;
    int64_t done = r->step - r->first_step;
    kd_train_progress p = {.event = KD_TRAIN_STEP, .loss = loss, .lr = lr, .log_every = r->rc->log_every};
    p.tokens_per_s = el > 0 ? (double)(done * r->tokens_per_step) / el : 0;
    p.eta_s = done > 0 ? el / (double)done * (double)(r->total_steps - r->step) : 0;
    report_full(r, &p);
}

static int eval_and_log(run *r, kd_err *err) {
    kd_eval_result e;
    if (!r->val || evaluate(r, &e, err)) return r->val ? -1 : 0;
    if (r->dist->rank == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "step", (double)r->step);
        cJSON_AddItemToObject(o, "eval", kd_eval_to_json(&e));
        log_json(r, o);
        report(r, KD_TRAIN_EVAL, &e);
    }
    if (e.ce < r->best_val) {
        r->best_val = e.ce;
        char best[PATHBUF];
        if (r->dist->rank == 0 && (path2(best, r->dir, "best", err) || save_model_swap(r, best, err))) return -1;
    }
    return 0;
}

/* ---- one optimizer step ------------------------------------------------------------- */

static void log_step(run *r, const double *sums, double loss, double gnorm, float lr);

/* The next micro-batch of the training loader (kd_step_next_fn). */
static int next_train_batch(void *ctx, kd_step_batch *out, kd_err *err) {
    run *r = ctx;
    const kd_batch *b = kd_loader_next(r->train, err);
    if (!b) return -1;
    *out = (kd_step_batch){b->tokens, b->B, b->T, loss_batch(b)};
    return r->is_online ? kd_online_fill(&r->online, b->tokens, b->B, b->T, &out->lb, err) : 0;
}

static int train_step(run *r, double *loss_out, double *gnorm_out, float *lr_out, kd_err *err) {
    /* fault injection for tests: KD_TRAIN_POISON_STEP=N puts a NaN into the weights before step N */
    const char *poison = getenv("KD_TRAIN_POISON_STEP");
    if (poison && atoll(poison) == r->step + 1) kd_step_poison(&r->stepper);
    *lr_out = kd_lr_schedule(r->step, r->rc->warmup, r->total_steps, (float)r->rc->lr, (float)r->rc->lr_min);
    kd_step_result res;
    if (kd_step_run(&r->stepper, &r->g, r->rc->grad_accum, next_train_batch, r, &r->lo, *lr_out, r->rc->grad_clip,
                    r->dist, &res, err))
        return kd_err_prefix(err, "step %lld", (long long)r->step + 1);
    *loss_out = res.loss;
    *gnorm_out = res.grad_norm;
    r->step++;
    log_step(r, res.sums, *loss_out, *gnorm_out, *lr_out);
    return 0;
}

/* One metrics line; sums = loss·n, ce·n, D_T·n, agreements, n over all ranks. train_divergence is
 * the run's own divergence (kd_mode, direction, at its temperature, without the T² factor) on the
 * training batch: what the loss optimises, not the evaluation's kl (train/kd_eval.h). */
static void log_step(run *r, const double *sums, double loss, double gnorm, float lr) {
    if (r->dist->rank != 0) return;
    double n = sums[4];
    cJSON *o = cJSON_CreateObject();
    double el = kd_now_s() - r->t_start;
    cJSON_AddNumberToObject(o, "step", (double)r->step);
    cJSON_AddNumberToObject(o, "loss", loss);
    cJSON_AddNumberToObject(o, "ce", n > 0 ? sums[1] / n : 0);
    cJSON_AddNumberToObject(o, "train_divergence", n > 0 ? sums[2] / n : 0);
    cJSON_AddNumberToObject(o, "top1", n > 0 ? sums[3] / n : 0);
    cJSON_AddNumberToObject(o, "lr", lr);
    cJSON_AddNumberToObject(o, "grad_norm", gnorm);
    cJSON_AddNumberToObject(o, "tokens", (double)(r->step * r->tokens_per_step));
    cJSON_AddNumberToObject(o, "elapsed_s", el);
    log_json(r, o);
}

/* ---- resources ------------------------------------------------------------------------ */

/* Bytes one rank needs for per-rank batch b: kd_plan's training step plus the loader's
 * batch buffers (prefetch + 1 slots for training, 1 for validation). */
static int64_t plan_bytes(const kd_config *c, const kd_run_config *rc, const kd_dump_meta *m, int ranks, int64_t b,
                          kd_plan *p) {
    kd_plan_opts o = {.batch = b, .seq = m->seq_len, .threads = omp_get_max_threads(), .lm_chunk = rc->lm_chunk,
                      .topk = m->k, .ranks = ranks, .lean = !strcmp(rc->memory_mode, "lean"),
                      .lean_weights_fp32 = !strcmp(rc->lean_weights, "fp32"), .lean_m_fp32 = !strcmp(rc->lean_m, "fp32"),
                      .lean_v_full = !strcmp(rc->lean_v, "full"), .lean_clip_exact = !strcmp(rc->lean_clip, "exact")};
    kd_plan_compute(c, &o, p);
    int64_t per_pos = 8 + (m->tokens_only ? 0 : m->k ? 8 * (int64_t)m->k : 4 * m->vocab_size);
    return p->train_peak + 4 * b * m->seq_len * per_pos;
}

/*
 * Before anything big is allocated: the plan of one training step (student/kd_plan.h)
 * against the memory this process may use (kd_mem_available). Over it, the run is
 * refused with the figures and the largest batch_size that fits, instead of being
 * killed by the kernel's OOM killer without a word. KD_MEMORY_CHECK=0 skips the check.
 */
static int check_memory(run *r, kd_err *err) {
    const kd_run_config *rc = r->rc;
    const char *env = getenv("KD_MEMORY_CHECK");
    if (env && !strcmp(env, "0")) return 0;
    int64_t avail = kd_mem_available();
    if (avail <= 0) return 0;
    kd_config c;
    char cp[PATHBUF];
    struct stat st;
    if (stat(rc->student, &st) != 0) return 0;   /* load_student reports it */
    if (S_ISDIR(st.st_mode) ? path2(cp, rc->student, "config.json", NULL) : snprintf(cp, sizeof cp, "%s", rc->student) < 0)
        return 0;
    kd_err e2;
    if (kd_config_load(&c, cp, &e2)) return 0;    /* so does load_student */
    kd_dump *d = kd_dump_open(rc->train_data[0], &e2);
    if (!d) return 0;                             /* and open_loaders */
    kd_dump_meta m = *kd_dump_get_meta(d);
    kd_dump_close(d);
    int world = r->dist->world > 0 ? r->dist->world : 1, ranks = r->shard.world;
    int64_t b = rc->batch_size / world;
    if (b < 1) return 0;
    kd_plan p;
    int64_t need = plan_bytes(&c, rc, &m, ranks, b, &p);
    if (need <= avail) return 0;
    int64_t lo = 0, hi = b;   /* the largest per-rank batch that fits: plan_bytes grows with b */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        kd_plan q;
        if (plan_bytes(&c, rc, &m, ranks, mid, &q) <= avail) lo = mid;
        else hi = mid - 1;
    }
    const double G = 1.0 / (1 << 30);
    char fits[200];
    if (lo > 0)
        snprintf(fits, sizeof fits, "batch_size %lld fits (raise grad_accum to keep the tokens per step)",
                 (long long)(lo * world));
    else
        snprintf(fits, sizeof fits, "not even batch_size %d fits", world);
    return kd_errf(err, "batch_size %lld × seq_len %d needs about %.1f GiB per process (weights %.2f, gradients %.2f, "
                   "optimizer %.2f, activations %.1f, loss %.1f, data %.1f GiB; kd plan --config %s --batch %lld --seq "
                   "%d shows the plan), but only %.1f GiB of memory is available: %s; memory_mode \"lean\" or a smaller "
                   "lm_chunk also need less (KD_MEMORY_CHECK=0 skips this check)",
                   (long long)rc->batch_size, m.seq_len, (double)need * G, (double)p.weights * G, (double)p.grads * G,
                   (double)p.optimizer * G, (double)p.activations * G, (double)p.loss * G,
                   (double)(need - p.train_peak) * G, cp, (long long)b, m.seq_len, (double)avail * G, fits);
}

/* On resume: keep the metrics lines of the steps up to the checkpoint's (a killed run's later
 * lines are logged again as its steps are redone, and so is final_eval), dropping a torn
 * last line. */
static int trim_metrics(const char *path, int64_t step, kd_err *err) {
    if (!kd_file_exists(path)) return 0;
    size_t len;
    char *text = kd_read_file(path, &len, err);
    if (!text) return -1;
    char *out = malloc(len + 1);
    size_t n = 0;
    int dropped = 0;
    for (char *line = text; out && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) {   /* no newline: a line cut short */
            dropped = 1;
            break;
        }
        *nl = 0;
        cJSON *o = cJSON_Parse(line);
        const cJSON *sv = o ? cJSON_GetObjectItemCaseSensitive(o, "step") : NULL;
        int keep = cJSON_IsNumber(sv) && sv->valuedouble <= (double)step &&
                   !cJSON_GetObjectItemCaseSensitive(o, "final_eval");   /* logged again at the end */
        cJSON_Delete(o);
        if (keep) {
            size_t l = (size_t)(nl - line);
            memcpy(out + n, line, l);
            out[n + l] = '\n';
            n += l + 1;
        } else {
            dropped = 1;
        }
        line = nl + 1;
    }
    int rc = !out ? kd_errf(err, "%s: out of memory", path) : dropped ? kd_write_file_atomic(path, out, n, err) : 0;
    free(out);
    free(text);
    return rc;
}

/* ---- the run -------------------------------------------------------------------------- */

int kd_train_load_run_config(kd_run_config *rc, const char *run_dir, kd_err *err) {
    char p[PATHBUF];
    if (kd_path_join(p, sizeof p, run_dir, "run.json", err)) return -1;
    cJSON *o = kd_json_load(p, err);
    if (!o) return kd_err_prefix(err, "%s is not a kd run directory", run_dir);
    int status = kd_run_config_from_json(rc, o, p, err);
    cJSON_Delete(o);
    return status;
}

static void run_free(run *r) {
    if (r->metrics) fclose(r->metrics);
    kd_lock_release(r->lock_fd);
    kd_loader_free(r->train);
    kd_loader_free(r->val);
    kd_graph_free(&r->g);
    kd_adamw_free(&r->opt);
    if (r->have_model) kd_model_free(&r->m);
    if (r->is_lean) kd_lean_free(&r->lean);
    kd_online_close(&r->online);
    kd_tokenizer_free(r->tok);
}

int kd_train(const kd_run_config *rc, const char *run_dir, int resume, const kd_train_opts *o, const kd_dist *dist,
             kd_err *err) {
    run r;
    memset(&r, 0, sizeof r);
    r.rc = rc;
    r.dist = dist;
    r.shard = rc->shard_optimizer && dist->world > 1 ? *dist : (kd_dist){.rank = 0, .world = 1, .active = 0};
    if (o) r.opts = *o;
    r.best_val = INFINITY;
    r.lock_fd = -1;
    snprintf(r.dir, sizeof r.dir, "%s", run_dir);
    char p[PATHBUF];
    int status = -1;
    if (path2(p, run_dir, "run.json", err)) return -1;
    if (!resume && kd_file_exists(p))
        return kd_errf(err, "%s already holds a run (use --resume, or another --out)", run_dir);
    struct stat rst;
    if (stat(run_dir, &rst) == 0 && !S_ISDIR(rst.st_mode))
        return kd_errf(err, "%s: is %s, expected a run directory", run_dir, kd_path_what(run_dir));
    if (check_memory(&r, err) || kd_graph_init(&r.g, 0, err) || load_student(&r, err) || open_loaders(&r, err))
        goto done;
    r.lo = kd_loss_opts_default();
    r.lo.alpha = (float)rc->alpha;
    r.lo.temperature = (float)rc->temperature;
    r.lo.chunk_rows = rc->lm_chunk;
    r.lo.grad_into_params = 0;
    if (kd_teacher_mode_parse(rc->kd_mode, &r.lo.mode, err) || kd_divergence_parse(rc->divergence, &r.lo.div, err) ||
        kd_loss_opts_check(&r.lo, err))
        goto done;
    r.ao = (kd_adamw_opts){(float)rc->beta1, (float)rc->beta2, (float)rc->eps, (float)rc->weight_decay};
    if (!r.is_lean && kd_adamw_init_shard(&r.opt, r.m.params, r.m.n_params, rc->decay_embeddings, r.shard.rank,
                                          r.shard.world, err))
        goto done;
    r.stepper = r.is_lean ? kd_stepper_lean(&r.lean) : kd_stepper_fp32(&r.m, &r.opt, &r.ao, &r.shard);
    if (dist->rank == 0) {
        /* one kd train per run directory: the lock is held until the process ends */
        char lp[PATHBUF];
        if (kd_mkdirs(run_dir, err) || path2(lp, run_dir, ".lock", err)) goto done;
        r.lock_fd = kd_lock_acquire(lp, "another kd train is running in this run directory; wait for it to finish, "
                                        "or give another --out", NULL, err);
        if (r.lock_fd < 0) goto done;
        if (!resume && kd_file_exists(p)) {   /* again, now that no other process can be writing it */
            kd_errf(err, "%s already holds a run (use --resume, or another --out)", run_dir);
            goto done;
        }
        if (!resume) {
            cJSON *j = kd_run_config_to_json(rc);
            int bad = kd_json_write_atomic(p, j, err);
            cJSON_Delete(j);
            if (bad) goto done;
        }
    }
    int fresh = 0;   /* resumed a run that was killed before its first checkpoint */
    if (resume) {
        int lc = load_checkpoint(&r, err);
        if (lc < 0) goto done;
        fresh = lc == 1;
    }
    if (dist->rank == 0) {
        char mp[PATHBUF];
        if (path2(mp, run_dir, "metrics.jsonl", err) || (resume && trim_metrics(mp, r.step, err))) goto done;
        if (!(r.metrics = fopen(mp, "a"))) {
            kd_errf(err, "%s: cannot open for appending: %s", mp, strerror(errno));
            goto done;
        }
    }
    int64_t first = r.step;
    r.first_step = first;
    r.t_start = kd_now_s();
    {
        kd_train_progress p = {.event = KD_TRAIN_START, .n_params = (double)kd_config_n_params(&r.m.cfg),
                               .tokens_per_step = r.tokens_per_step, .alpha = rc->alpha, .temperature = rc->temperature,
                               .kd_mode = rc->kd_mode, .world = dist->world, .sharded = r.shard.world > 1,
                               .resumed = resume, .restarted = fresh, .lean = r.is_lean};
        report_full(&r, &p);
    }
    while (r.step < r.total_steps) {
        double loss = 0, gnorm = 0;
        float lr = 0;
        if (train_step(&r, &loss, &gnorm, &lr, err)) goto done;
        progress(&r, loss, lr);
        int last = r.step == r.total_steps;
        if (rc->eval_every && r.step % rc->eval_every == 0 && !last && eval_and_log(&r, err)) goto done;
        int stop = r.opts.stop_after && r.step - first >= r.opts.stop_after;
        if (((rc->save_every && r.step % rc->save_every == 0) || stop) && !last && save_checkpoint(&r, err)) goto done;
        if (stop && !last) {
            status = 0;
            goto done;
        }
    }
    report(&r, KD_TRAIN_STEPS_DONE, NULL);
    /* the end: final weights, final evaluation, a checkpoint to resume or extend from */
    kd_eval_result e;
    if (evaluate(&r, &e, err)) goto done;
    char fin[PATHBUF];
    if (dist->rank == 0 && (path2(fin, run_dir, "final", err) || save_model_swap(&r, fin, err))) goto done;
    if (save_checkpoint(&r, err)) goto done;   /* every rank: a sharded checkpoint holds a shard of each */
    if (dist->rank == 0) {
        if (r.val && e.ce < r.best_val) {
            r.best_val = e.ce;
            char best[PATHBUF];
            if (path2(best, run_dir, "best", err) || save_model_swap(&r, best, err)) goto done;
        }
        cJSON *j = kd_eval_to_json(&e);
        int bad = path2(p, run_dir, "final_eval.json", err) || kd_json_write_atomic(p, j, err);
        cJSON *line = cJSON_CreateObject();
        cJSON_AddNumberToObject(line, "step", (double)r.step);
        cJSON_AddItemToObject(line, "final_eval", j);
        log_json(&r, line);
        if (bad) goto done;
        report(&r, KD_TRAIN_DONE, &e);
    }
    status = 0;
done:
    run_free(&r);
    return status;
}
