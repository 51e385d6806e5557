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
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_log.h"
#include "format/kd_safetensors.h"
#include "data/kd_loader.h"
#include "data/kd_tokenizer.h"
#include "student/kd_checkpoint.h"
#include "student/kd_plan.h"
#include "data/kd_dump_tok.h"
#include "train/kd_lean.h"
#include "train/kd_loss.h"
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
    kd_loader *train, *val;
    kd_loader_cursor val_start;
    kd_graph g;
    kd_loss_opts lo;
    int64_t step, total_steps, tokens_per_step;
    double best_val;
    FILE *metrics;
    double t_start;
} run;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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
    if (meta->tokens_only) {   /* text without a teacher: plain cross-entropy; kd_mode and temperature do not apply */
        if (rc->alpha != 0)
            return kd_errf(err, "%s%s holds tokens only (no teacher distribution), so \"alpha\" must be 0 (plain "
                           "cross-entropy), not %g: set \"alpha\": 0, or give a teacher dump as train_data",
                           rc->train_data[0], rc->n_train_data > 1 ? " ..." : "", rc->alpha);
    } else if (meta->k == 0 && strcmp(rc->kd_mode, "full"))
        return kd_errf(err, "kd_mode \"%s\" needs a top-k dump, but %s holds full logits (use kd_mode \"full\")",
                       rc->kd_mode, rc->train_data[0]);
    if (meta->k > 0 && !strcmp(rc->kd_mode, "full"))
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

/* "RANK/WORLD": the metadata that names a shard of the FP32 AdamW state (lean: kd_lean_save_optimizer). */
static void shard_name(const run *r, char *out, size_t n) { snprintf(out, n, "%d/%d", r->shard.rank, r->shard.world); }

/* This rank's part of the optimizer state (all of it when not sharded): m.NAME and v.NAME of its rows. */
static int save_optimizer(run *r, const char *dir, kd_err *err) {
    char p[PATHBUF];
    if (optimizer_path(r, p, dir, err)) return -1;
    if (r->is_lean) return kd_lean_save_optimizer(&r->lean, p, err);
    kd_st_writer *w = kd_st_writer_new(err);
    if (!w) return -1;
    char (*names)[128] = malloc((size_t)r->m.n_params * 2 * sizeof *names);
    char shard[48];
    shard_name(r, shard, sizeof shard);
    int rc = names ? 0 : kd_errf(err, "out of memory");
    if (!rc && r->shard.world > 1) rc = kd_st_writer_set_meta(w, "kd_optimizer_shard", shard, err);
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
    if (!o) return -1;
    int64_t n = 1;
    int bad = kd_json_get_int(o, "optimizer_shards", p, 0, 1, 1 << 24, &n, err);
    cJSON_Delete(o);
    if (bad) return -1;
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
    char want[48];
    shard_name(r, want, sizeof want);
    const char *has = kd_st_meta(f, "kd_optimizer_shard");
    if (r->shard.world > 1 ? !has || strcmp(has, want) : has != NULL) {
        kd_errf(err, "%s holds %s%s of the optimizer state, this process needs %s%s", p, has ? "shard " : "",
                has ? has : "all", r->shard.world > 1 ? "shard " : "", r->shard.world > 1 ? want : "all of it");
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

static int load_checkpoint(run *r, kd_err *err) {
    char ckdir[PATHBUF], latest[PATHBUF], dir[PATHBUF], p[PATHBUF];
    if (path2(ckdir, r->dir, "checkpoints", err) || path2(latest, ckdir, "latest", err)) return -1;
    size_t len;
    char *name = kd_read_file(latest, &len, err);
    if (!name) return kd_err_prefix(err, "%s holds no checkpoint to resume from", r->dir);
    while (len && (name[len - 1] == '\n' || name[len - 1] == ' ')) name[--len] = 0;
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

static int load_trainer_state(run *r, const char *dir, kd_err *err) {
    char p[PATHBUF];
    if (path2(p, dir, "trainer_state.json", err)) return -1;
    cJSON *o = kd_json_load(p, err);
    if (!o) return -1;
    int64_t step, astep, epoch, batch;
    double best;
    char seed_s[32], hash_s[32];
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(o, "cursor");
    int rc = kd_json_get_int(o, "step", p, 1, 0, INT64_MAX / 2, &step, err) ||
             kd_json_get_int(o, "adam_step", p, 1, 0, INT64_MAX / 2, &astep, err) ||
             kd_json_get_float(o, "best_val_ce", p, 1, -1e308, 1e308, &best, err) ||
             !cJSON_IsObject(cur) ||
             kd_json_get_string(cur, "seed", p, 1, seed_s, sizeof seed_s, err) ||
             kd_json_get_string(cur, "config_hash", p, 1, hash_s, sizeof hash_s, err) ||
             kd_json_get_int(cur, "epoch", p, 1, 0, INT64_MAX / 2, &epoch, err) ||
             kd_json_get_int(cur, "batch", p, 1, 0, INT64_MAX / 2, &batch, err);
    char mode[16] = "fp32", gn[64] = "0x0p+0";
    if (!rc) rc = kd_json_get_string(o, "memory_mode", p, 0, mode, sizeof mode, err) ||
                  kd_json_get_string(o, "last_grad_norm", p, 0, gn, sizeof gn, err);
    cJSON_Delete(o);
    if (rc) return kd_errf(err, "%s: bad trainer state: %s", p, err ? err->msg : "");
    if (strcmp(mode, r->is_lean ? "lean" : "fp32"))
        return kd_errf(err, "%s: the checkpoint was written in memory_mode \"%s\", this run is \"%s\"", p, mode,
                       r->is_lean ? "lean" : "fp32");
    r->step = step;
    if (r->is_lean) {
        r->lean.step = astep;
        r->lean.last_grad_norm = strtod(gn, NULL);
    } else {
        r->opt.step = astep;
    }
    r->best_val = best >= 1e300 ? INFINITY : best;
    kd_loader_cursor c = {strtoull(seed_s, NULL, 10), epoch, batch, strtoull(hash_s, NULL, 10)};
    /* rank 0 wrote its own cursor; the ranks step in lockstep (same epoch and batch), but each
     * loader's hash covers its rank: rank 0 checks the hash (world size included), the others
     * take the position */
    if (r->dist->rank != 0) c.config_hash = kd_loader_cursor_get(r->train).config_hash;
    if (kd_loader_restore(r->train, &c, err)) return kd_err_prefix(err, "%s", p);
    return 0;
}

/* ---- evaluation ---------------------------------------------------------------------- */

static kd_loss_batch loss_batch(const kd_batch *b) {
    return (kd_loss_batch){b->labels, b->logits, b->topk_ids, b->topk_logprobs, b->k};
}

/* kl and top1 only when the validation dump has a teacher distribution: on a
 * tokens-only dump they are NAN and left out of the JSON and the eval lines. */
static int evaluate(run *r, kd_eval_result *out, kd_err *err) {
    memset(out, 0, sizeof *out);
    if (!r->val) return 0;
    if (kd_loader_restore(r->val, &r->val_start, err)) return -1;
    int64_t nb = kd_loader_batches_per_epoch(r->val);
    if (r->rc->eval_batches > 0 && r->rc->eval_batches < nb) nb = r->rc->eval_batches;
    const kd_dump_meta *vm = kd_loader_meta(r->val);
    kd_loss_opts eo = r->lo;
    eo.alpha = vm->tokens_only ? 0.0f : 1.0f;
    eo.temperature = 1.0f;
    if (!vm->tokens_only && vm->k == 0) eo.mode = KD_TEACHER_FULL;   /* the validation dump's kind decides */
    else if (!vm->tokens_only && eo.mode == KD_TEACHER_FULL) eo.mode = KD_TEACHER_TOPK_TAIL;
    if (eo.div == KD_DIV_REVERSE && eo.mode == KD_TEACHER_TOPK_ZERO) eo.div = KD_DIV_FORWARD;
    double sums[4] = {0, 0, 0, 0};   /* ce·n, kl·n, agree, n */
    for (int64_t i = 0; i < nb; i++) {
        const kd_batch *b = kd_loader_next(r->val, err);
        if (!b) return -1;
        kd_loss_batch lb = loss_batch(b);
        kd_loss_stats st;
        int rc;
        if (r->is_lean) {
            rc = kd_lean_eval(&r->lean, &r->g, b->tokens, b->B, b->T, &lb, &eo, &st, err);
        } else {
            kd_graph_reset(&r->g);
            r->g.no_grad = 1;
            kd_tensor *h = kd_model_hidden(&r->g, &r->m, b->tokens, b->B, b->T);
            rc = kd_distill_eval(h->data, kd_model_head(&r->m)->data, (int64_t)b->B * b->T, r->m.cfg.hidden_size,
                                 r->m.cfg.vocab_size, &lb, &eo, &st, err);
            r->g.no_grad = 0;
            kd_graph_reset(&r->g);
        }
        if (rc) return kd_err_prefix(err, "evaluation batch %lld", (long long)i);
        sums[0] += st.ce * (double)st.n_valid;
        sums[1] += st.kl_t1 * (double)st.n_valid;
        sums[2] += (double)st.top1_agree;
        sums[3] += (double)st.n_valid;
    }
    if (kd_dist_allreduce_sum_f64(r->dist, sums, 4, err)) return -1;
    double n = sums[3] > 0 ? sums[3] : 1;
    out->ce = sums[0] / n;
    out->ppl = exp(out->ce);
    out->kl = vm->tokens_only ? NAN : sums[1] / n;
    out->top1 = vm->tokens_only ? NAN : sums[2] / n;
    out->tokens = (int64_t)sums[3];
    return 0;
}

static cJSON *eval_json(const kd_eval_result *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "ppl", e->ppl);
    cJSON_AddNumberToObject(o, "ce", e->ce);
    if (isfinite(e->kl)) cJSON_AddNumberToObject(o, "kl", e->kl);   /* absent without a teacher */
    if (isfinite(e->top1)) cJSON_AddNumberToObject(o, "top1", e->top1);
    cJSON_AddNumberToObject(o, "tokens", (double)e->tokens);
    return o;
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

static int eval_and_log(run *r, kd_err *err) {
    kd_eval_result e;
    if (!r->val || evaluate(r, &e, err)) return r->val ? -1 : 0;
    if (r->dist->rank == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "step", (double)r->step);
        cJSON_AddItemToObject(o, "eval", eval_json(&e));
        log_json(r, o);
        if (!r->opts.quiet && isfinite(e.kl))
            fprintf(stderr, "%seval step %lld: ce %.4f ppl %.2f kl %.4f top1 %.3f (%lld tokens)\n",
                    isatty(2) ? "\n" : "", (long long)r->step, e.ce, e.ppl, e.kl, e.top1, (long long)e.tokens);
        else if (!r->opts.quiet)
            fprintf(stderr, "%seval step %lld: ce %.4f ppl %.2f (%lld tokens)\n", isatty(2) ? "\n" : "",
                    (long long)r->step, e.ce, e.ppl, (long long)e.tokens);
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

/* Lean mode: one batch, one kd_lean_step (forward, loss, recomputing backward with per-layer updates). */
static int train_step_lean(run *r, double *loss_out, double *gnorm_out, float *lr_out, kd_err *err) {
    const char *poison = getenv("KD_TRAIN_POISON_STEP");
    if (poison && atoll(poison) == r->step + 1) kd_lean_set(&r->lean, r->lean.m.n_params - 1, 0, NAN);
    const kd_batch *b = kd_loader_next(r->train, err);
    if (!b) return -1;
    kd_loss_batch lb = loss_batch(b);
    *lr_out = kd_lr_schedule(r->step, r->rc->warmup, r->total_steps, (float)r->rc->lr, (float)r->rc->lr_min);
    kd_lean_result res;
    if (kd_lean_step(&r->lean, &r->g, b->tokens, b->B, b->T, &lb, &r->lo, *lr_out, r->rc->grad_clip, r->dist, &res,
                     err))
        return -1;
    double n = res.sums[4];
    *loss_out = n > 0 ? res.sums[0] / n : 0.0;
    *gnorm_out = res.grad_norm;
    r->step++;
    log_step(r, res.sums, *loss_out, *gnorm_out, *lr_out);
    return 0;
}

static int train_step(run *r, double *loss_out, double *gnorm_out, float *lr_out, kd_err *err) {
    if (r->is_lean) return train_step_lean(r, loss_out, gnorm_out, lr_out, err);
    kd_model_zero_grad(&r->m);
    /* fault injection for tests: KD_TRAIN_POISON_STEP=N puts a NaN into the weights before step N */
    const char *poison = getenv("KD_TRAIN_POISON_STEP");
    if (poison && atoll(poison) == r->step + 1) r->m.params[r->m.n_params - 1]->data[0] = NAN;
    kd_tensor *head = kd_model_head(&r->m);
    double sums[5] = {0, 0, 0, 0, 0};   /* loss·n, ce·n, kl·n, agree, n */
    for (int64_t a = 0; a < r->rc->grad_accum; a++) {
        const kd_batch *b = kd_loader_next(r->train, err);
        if (!b) return -1;
        kd_graph_reset(&r->g);
        kd_tensor *h = kd_model_hidden(&r->g, &r->m, b->tokens, b->B, b->T);
        kd_loss_batch lb = loss_batch(b);
        kd_loss_stats st;
        kd_tensor *loss = kd_distill_loss(&r->g, h, head, &lb, &r->lo, &st, err);
        if (!loss) return kd_err_prefix(err, "step %lld", (long long)r->step + 1);
        if (st.n_valid > 0) {
            float seed = (float)st.n_valid;     /* gradient of the token sum */
            kd_graph_backward_from(&r->g, loss, &seed);
        }
        sums[0] += st.loss * (double)st.n_valid;
        sums[1] += st.ce * (double)st.n_valid;
        sums[2] += st.kl * (double)st.n_valid;
        sums[3] += (double)st.top1_agree;
        sums[4] += (double)st.n_valid;
    }
    kd_graph_reset(&r->g);
    if (kd_dist_allreduce_sum_f64(r->dist, sums, 5, err)) return -1;
    for (int i = 0; i < r->m.n_params; i++)
        if (kd_dist_allreduce_sum_f32(r->dist, r->m.params[i]->grad, r->m.params[i]->n, err)) return -1;
    double n = sums[4];
    *loss_out = n > 0 ? sums[0] / n : 0.0;
    if (!isfinite(*loss_out))
        return kd_errf(err, "step %lld: the loss is %s; stopping (the last checkpoint is intact)",
                       (long long)r->step + 1, isnan(*loss_out) ? "NaN" : "infinite");
    if (n > 0) {
        float inv = (float)(1.0 / n);
        for (int i = 0; i < r->m.n_params; i++) {
            float *gr = r->m.params[i]->grad;
            for (int64_t j = 0; j < r->m.params[i]->n; j++) gr[j] *= inv;
        }
    }
    *gnorm_out = kd_grad_clip(r->m.params, r->m.n_params, r->rc->grad_clip);
    if (!isfinite(*gnorm_out))
        return kd_errf(err, "step %lld: the gradient norm is not finite; stopping (the last checkpoint is intact)",
                       (long long)r->step + 1);
    *lr_out = kd_lr_schedule(r->step, r->rc->warmup, r->total_steps, (float)r->rc->lr, (float)r->rc->lr_min);
    kd_adamw_step(&r->opt, &r->ao, *lr_out);
    if (kd_adamw_gather(&r->opt, &r->shard, err)) return kd_err_prefix(err, "step %lld", (long long)r->step + 1);
    r->step++;
    log_step(r, sums, *loss_out, *gnorm_out, *lr_out);
    return 0;
}

/* One metrics line; sums = loss·n, ce·n, kl·n, agreements, n over all ranks. */
static void log_step(run *r, const double *sums, double loss, double gnorm, float lr) {
    if (r->dist->rank != 0) return;
    double n = sums[4];
    cJSON *o = cJSON_CreateObject();
    double el = now_s() - r->t_start;
    cJSON_AddNumberToObject(o, "step", (double)r->step);
    cJSON_AddNumberToObject(o, "loss", loss);
    cJSON_AddNumberToObject(o, "ce", n > 0 ? sums[1] / n : 0);
    cJSON_AddNumberToObject(o, "kl", n > 0 ? sums[2] / n : 0);
    cJSON_AddNumberToObject(o, "top1", n > 0 ? sums[3] / n : 0);
    cJSON_AddNumberToObject(o, "lr", lr);
    cJSON_AddNumberToObject(o, "grad_norm", gnorm);
    cJSON_AddNumberToObject(o, "tokens", (double)(r->step * r->tokens_per_step));
    cJSON_AddNumberToObject(o, "elapsed_s", el);
    log_json(r, o);
}

static void progress(run *r, int64_t first_step, double loss, float lr) {
    if (r->opts.quiet || r->dist->rank != 0) return;
    double el = now_s() - r->t_start;
    int64_t done = r->step - first_step;
    double tps = el > 0 ? (double)(done * r->tokens_per_step) / el : 0;
    double eta = done > 0 ? el / (double)done * (double)(r->total_steps - r->step) : 0;
    if (isatty(2)) {
        int width = 24, fill = (int)(width * r->step / (r->total_steps ? r->total_steps : 1));
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r[%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ETA %.0fs   ", bar, (long long)r->step,
                (long long)r->total_steps, loss, lr, tps, eta);
    } else if (r->step % r->rc->log_every == 0 || r->step == r->total_steps) {
        fprintf(stderr, "step %lld/%lld loss %.4f lr %.2e %.0f tok/s eta %.0fs\n", (long long)r->step,
                (long long)r->total_steps, loss, lr, tps, eta);
    }
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
    kd_loader_free(r->train);
    kd_loader_free(r->val);
    kd_graph_free(&r->g);
    kd_adamw_free(&r->opt);
    if (r->have_model) kd_model_free(&r->m);
    if (r->is_lean) kd_lean_free(&r->lean);
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
    snprintf(r.dir, sizeof r.dir, "%s", run_dir);
    char p[PATHBUF];
    int status = -1;
    if (path2(p, run_dir, "run.json", err)) return -1;
    if (!resume && kd_file_exists(p))
        return kd_errf(err, "%s already holds a run (use --resume, or another --out)", run_dir);
    if (kd_graph_init(&r.g, 0, err) || load_student(&r, err) || open_loaders(&r, err)) goto done;
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
    if (dist->rank == 0) {
        if (kd_mkdirs(run_dir, err)) goto done;
        if (!resume) {
            cJSON *j = kd_run_config_to_json(rc);
            int bad = kd_json_write_atomic(p, j, err);
            cJSON_Delete(j);
            if (bad) goto done;
        }
        char mp[PATHBUF];
        if (path2(mp, run_dir, "metrics.jsonl", err)) goto done;
        if (!(r.metrics = fopen(mp, "a"))) {
            kd_errf(err, "%s: cannot open for appending", mp);
            goto done;
        }
    }
    if (resume && load_checkpoint(&r, err)) goto done;
    int64_t first = r.step;
    r.t_start = now_s();
    if (!r.opts.quiet && dist->rank == 0)
        fprintf(stderr,
                "kd train: %.2fM-parameter student, %lld steps of %lld tokens, alpha %.2f T %.2f %s, %d rank(s)%s%s%s\n",
                (double)kd_config_n_params(&r.m.cfg) * 1e-6, (long long)r.total_steps, (long long)r.tokens_per_step,
                rc->alpha, rc->temperature, rc->kd_mode, dist->world,
                r.shard.world > 1 ? " (optimizer state sharded)" : "", resume ? ", resumed" : "",
                r.is_lean ? ", memory_mode lean" : "");
    while (r.step < r.total_steps) {
        double loss = 0, gnorm = 0;
        float lr = 0;
        if (train_step(&r, &loss, &gnorm, &lr, err)) goto done;
        progress(&r, first, loss, lr);
        int last = r.step == r.total_steps;
        if (rc->eval_every && r.step % rc->eval_every == 0 && !last && eval_and_log(&r, err)) goto done;
        int stop = r.opts.stop_after && r.step - first >= r.opts.stop_after;
        if (((rc->save_every && r.step % rc->save_every == 0) || stop) && !last && save_checkpoint(&r, err)) goto done;
        if (stop && !last) {
            status = 0;
            goto done;
        }
    }
    if (!r.opts.quiet && dist->rank == 0 && isatty(2)) fputc('\n', stderr);
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
        cJSON *j = eval_json(&e);
        int bad = path2(p, run_dir, "final_eval.json", err) || kd_json_write_atomic(p, j, err);
        cJSON *line = cJSON_CreateObject();
        cJSON_AddNumberToObject(line, "step", (double)r.step);
        cJSON_AddItemToObject(line, "final_eval", j);
        log_json(&r, line);
        if (bad) goto done;
        if (!r.opts.quiet && isfinite(e.kl))
            fprintf(stderr, "kd train: done: validation ce %.4f ppl %.2f kl %.4f top1 %.3f -> %s/final\n", e.ce, e.ppl,
                    e.kl, e.top1, run_dir);
        else if (!r.opts.quiet)
            fprintf(stderr, "kd train: done: validation ce %.4f ppl %.2f -> %s/final\n", e.ce, e.ppl, run_dir);
    }
    status = 0;
done:
    run_free(&r);
    return status;
}
