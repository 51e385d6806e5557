/*
 * kd_run_config.c — run config parsing, overrides and validation
 * (see kd_run_config.h).
 */
#include "train/kd_run_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_json.h"

static const char *KNOWN[] = {
    "student", "train_data", "val_data", "alpha", "temperature", "kd_mode", "divergence", "batch_size", "seq_len",
    "grad_accum", "steps", "tokens", "lr", "lr_min", "warmup", "beta1", "beta2", "eps", "weight_decay",
    "decay_embeddings", "grad_clip", "eval_every", "eval_batches", "save_every", "keep_last", "log_every", "seed",
    "lm_chunk", "vocab_policy", "memory_mode", "lean_weights", "lean_m", "lean_v", "lean_clip",
    "shard_optimizer", "description", "teacher", "teacher_topk",
};

static int known_key(const char *k) {
    for (size_t i = 0; i < sizeof KNOWN / sizeof *KNOWN; i++)
        if (!strcmp(KNOWN[i], k)) return 1;
    return 0;
}

int kd_run_config_set(cJSON *root, const char *assignment, kd_err *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return kd_errf(err, "--set '%s': expected key=value", assignment);
    char key[256];
    size_t klen = (size_t)(eq - assignment);
    if (klen >= sizeof key) return kd_errf(err, "--set: key too long");
    memcpy(key, assignment, klen);
    key[klen] = '\0';
    const char *val = eq + 1;
    cJSON *v = cJSON_Parse(val);
    if (!v) v = cJSON_CreateString(val);
    if (!v) return kd_errf(err, "out of memory");
    /* walk a.b.c, creating objects on the way */
    cJSON *obj = root;
    char *part = key, *dot;
    while ((dot = strchr(part, '.'))) {
        *dot = '\0';
        cJSON *next = cJSON_GetObjectItemCaseSensitive(obj, part);
        if (!next) next = cJSON_AddObjectToObject(obj, part);
        if (!cJSON_IsObject(next)) {
            cJSON_Delete(v);
            return kd_errf(err, "--set %s: '%s' is not an object", assignment, part);
        }
        obj = next;
        part = dot + 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, part)) cJSON_ReplaceItemInObjectCaseSensitive(obj, part, v);
    else cJSON_AddItemToObject(obj, part, v);
    return 0;
}

static int get_path(const cJSON *root, const char *key, const char *name, int required, char *out, kd_err *err) {
    return kd_json_get_string(root, key, name, required, out, KD_RUN_PATH, err);
}

static int one_of(const char *name, const char *key, const char *v, const char *a, const char *b, const char *c,
                  kd_err *err) {
    if (!strcmp(v, a) || !strcmp(v, b) || (c && !strcmp(v, c))) return 0;
    return kd_errf(err, "%s: '%s' is \"%s\", expected one of \"%s\", \"%s\"%s%s%s", name, key, v, a, b,
                   c ? ", \"" : "", c ? c : "", c ? "\"" : "");
}

static int one_of4(const char *name, const char *key, const char *v, const char *a, const char *b, const char *c,
                   const char *d, kd_err *err) {
    if (!strcmp(v, d)) return 0;
    if (!strcmp(v, a) || !strcmp(v, b) || !strcmp(v, c)) return 0;
    return kd_errf(err, "%s: '%s' is \"%s\", expected one of \"%s\", \"%s\", \"%s\", \"%s\"", name, key, v, a, b, c, d);
}

int kd_run_config_from_json(kd_run_config *c, const cJSON *root, const char *name, kd_err *err) {
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) return kd_errf(err, "%s: expected a JSON object", name);
    for (const cJSON *e = root->child; e; e = e->next)
        if (!known_key(e->string)) return kd_errf(err, "%s: unknown key '%s' (see kd train --help)", name, e->string);
    c->alpha = 0.5;
    c->temperature = 2.0;
    snprintf(c->kd_mode, sizeof c->kd_mode, "topk_tail");
    snprintf(c->divergence, sizeof c->divergence, "forward");
    c->batch_size = 8;
    c->grad_accum = 1;
    c->steps = 100;
    c->lr = 1e-3;
    c->lr_min = 1e-4;
    c->warmup = 10;
    c->beta1 = 0.9;
    c->beta2 = 0.95;
    c->eps = 1e-8;
    c->weight_decay = 0.1;
    c->grad_clip = 1.0;
    c->eval_every = 50;
    c->save_every = 100;
    c->keep_last = 2;
    c->log_every = 1;
    c->seed = 1234;
    c->lm_chunk = 256;
    snprintf(c->vocab_policy, sizeof c->vocab_policy, "strict");
    snprintf(c->memory_mode, sizeof c->memory_mode, "fp32");
    snprintf(c->lean_weights, sizeof c->lean_weights, "bf16");
    snprintf(c->lean_m, sizeof c->lean_m, "bf16");
    snprintf(c->lean_v, sizeof c->lean_v, "factored");
    snprintf(c->lean_clip, sizeof c->lean_clip, "previous");
    c->shard_optimizer = 1;
    c->teacher_topk = 64;

    if (get_path(root, "student", name, 1, c->student, err) || get_path(root, "val_data", name, 0, c->val_data, err) ||
        get_path(root, "teacher", name, 0, c->teacher, err) ||
        kd_json_get_int(root, "teacher_topk", name, 0, 0, 4096, &c->teacher_topk, err))
        return -1;
    if (!c->teacher[0] && cJSON_GetObjectItemCaseSensitive(root, "teacher_topk"))
        return kd_errf(err, "%s: 'teacher_topk' applies only to online distillation: set 'teacher' too, or remove it",
                       name);
    const cJSON *td = cJSON_GetObjectItemCaseSensitive(root, "train_data");
    if (!td) return kd_errf(err, "%s: 'train_data' is missing (a dump path or a list of paths)", name);
    if (cJSON_IsString(td)) {
        snprintf(c->train_data[0], KD_RUN_PATH, "%s", td->valuestring);
        c->n_train_data = 1;
    } else if (cJSON_IsArray(td)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, td) {
            if (!cJSON_IsString(e) || c->n_train_data == KD_RUN_MAX_DATA)
                return kd_errf(err, "%s: 'train_data' must be a path or a list of at most %d paths", name, KD_RUN_MAX_DATA);
            snprintf(c->train_data[c->n_train_data++], KD_RUN_PATH, "%s", e->valuestring);
        }
        if (!c->n_train_data) return kd_errf(err, "%s: 'train_data' is an empty list", name);
    } else {
        return kd_errf(err, "%s: 'train_data' must be a path or a list of paths", name);
    }
    if (kd_json_get_float(root, "alpha", name, 0, 0.0, 1.0, &c->alpha, err) ||
        kd_json_get_float(root, "temperature", name, 0, 0.05, 100.0, &c->temperature, err) ||
        kd_json_get_string(root, "kd_mode", name, 0, c->kd_mode, sizeof c->kd_mode, err) ||
        kd_json_get_string(root, "divergence", name, 0, c->divergence, sizeof c->divergence, err) ||
        kd_json_get_int(root, "batch_size", name, 0, 1, 1 << 20, &c->batch_size, err) ||
        kd_json_get_int(root, "seq_len", name, 0, 0, 1 << 24, &c->seq_len, err) ||
        kd_json_get_int(root, "grad_accum", name, 0, 1, 1 << 20, &c->grad_accum, err) ||
        kd_json_get_int(root, "steps", name, 0, 0, (int64_t)1 << 40, &c->steps, err) ||
        kd_json_get_int(root, "tokens", name, 0, 0, (int64_t)1 << 50, &c->tokens, err) ||
        kd_json_get_float(root, "lr", name, 0, 0.0, 10.0, &c->lr, err) ||
        kd_json_get_float(root, "lr_min", name, 0, 0.0, 10.0, &c->lr_min, err) ||
        kd_json_get_int(root, "warmup", name, 0, 0, (int64_t)1 << 40, &c->warmup, err) ||
        kd_json_get_float(root, "beta1", name, 0, 0.0, 0.999999, &c->beta1, err) ||
        kd_json_get_float(root, "beta2", name, 0, 0.0, 0.999999999, &c->beta2, err) ||
        kd_json_get_float(root, "eps", name, 0, 0.0, 1.0, &c->eps, err) ||
        kd_json_get_float(root, "weight_decay", name, 0, 0.0, 10.0, &c->weight_decay, err) ||
        kd_json_get_bool(root, "decay_embeddings", name, 0, &c->decay_embeddings, err) ||
        kd_json_get_bool(root, "shard_optimizer", name, 0, &c->shard_optimizer, err) ||
        kd_json_get_float(root, "grad_clip", name, 0, 0.0, 1e9, &c->grad_clip, err) ||
        kd_json_get_int(root, "eval_every", name, 0, 0, (int64_t)1 << 40, &c->eval_every, err) ||
        kd_json_get_int(root, "eval_batches", name, 0, 0, (int64_t)1 << 40, &c->eval_batches, err) ||
        kd_json_get_int(root, "save_every", name, 0, 0, (int64_t)1 << 40, &c->save_every, err) ||
        kd_json_get_int(root, "keep_last", name, 0, 1, 1000, &c->keep_last, err) ||
        kd_json_get_int(root, "log_every", name, 0, 1, (int64_t)1 << 40, &c->log_every, err) ||
        kd_json_get_int(root, "seed", name, 0, 0, INT64_MAX / 2, &c->seed, err) ||
        kd_json_get_int(root, "lm_chunk", name, 0, 1, 1 << 20, &c->lm_chunk, err) ||
        kd_json_get_string(root, "vocab_policy", name, 0, c->vocab_policy, sizeof c->vocab_policy, err) ||
        kd_json_get_string(root, "memory_mode", name, 0, c->memory_mode, sizeof c->memory_mode, err) ||
        kd_json_get_string(root, "lean_weights", name, 0, c->lean_weights, sizeof c->lean_weights, err) ||
        kd_json_get_string(root, "lean_m", name, 0, c->lean_m, sizeof c->lean_m, err) ||
        kd_json_get_string(root, "lean_v", name, 0, c->lean_v, sizeof c->lean_v, err) ||
        kd_json_get_string(root, "lean_clip", name, 0, c->lean_clip, sizeof c->lean_clip, err))
        return -1;
    if (one_of4(name, "kd_mode", c->kd_mode, "full", "topk_zero", "topk_tail", "sampled", err) ||
        one_of(name, "divergence", c->divergence, "forward", "reverse", NULL, err) ||
        one_of(name, "vocab_policy", c->vocab_policy, "strict", "pad", NULL, err) ||
        one_of(name, "memory_mode", c->memory_mode, "fp32", "lean", NULL, err) ||
        one_of(name, "lean_weights", c->lean_weights, "bf16", "fp32", NULL, err) ||
        one_of(name, "lean_m", c->lean_m, "bf16", "fp32", NULL, err) ||
        one_of(name, "lean_v", c->lean_v, "factored", "full", NULL, err) ||
        one_of(name, "lean_clip", c->lean_clip, "previous", "exact", NULL, err))
        return -1;
    if (!strcmp(c->memory_mode, "fp32")) {
        const char *set = cJSON_GetObjectItemCaseSensitive(root, "lean_weights") ? "lean_weights"
                          : cJSON_GetObjectItemCaseSensitive(root, "lean_m")     ? "lean_m"
                          : cJSON_GetObjectItemCaseSensitive(root, "lean_v")     ? "lean_v"
                          : cJSON_GetObjectItemCaseSensitive(root, "lean_clip")  ? "lean_clip"
                                                                                 : NULL;
        if (set) return kd_errf(err, "%s: '%s' applies only to memory_mode \"lean\" (memory_mode is \"fp32\")", name, set);
    } else if (c->grad_accum != 1) {
        return kd_errf(err, "%s: memory_mode \"lean\" needs grad_accum 1, got %lld (each layer is updated as soon as "
                            "its gradient is complete, so micro-batch gradients cannot be summed first; raise "
                            "batch_size instead)", name, (long long)c->grad_accum);
    }
    if (c->teacher[0] && (c->teacher_topk == 0) != !strcmp(c->kd_mode, "full"))
        return kd_errf(err, "%s: teacher_topk %lld needs kd_mode %s, got \"%s\"", name, (long long)c->teacher_topk,
                       c->teacher_topk ? "\"topk_tail\" or \"topk_zero\"" : "\"full\"", c->kd_mode);
    if (!strcmp(c->kd_mode, "sampled") && c->alpha > 0 && c->temperature != 1.0)
        return kd_errf(err, "%s: kd_mode \"sampled\" needs \"temperature\": 1, got %g (the sampled target p̂ = count / N "
                       "estimates the teacher at T = 1 only; docs/dump-format.md, \"Sampled dumps\")", name,
                       c->temperature);
    if (!strcmp(c->kd_mode, "sampled") && c->teacher[0])
        return kd_errf(err, "%s: kd_mode \"sampled\" reads sampled classes from a dump; with \"teacher\" (online) "
                       "use topk_tail, topk_zero or full", name);
    if (c->steps == 0 && c->tokens == 0) return kd_errf(err, "%s: set 'steps' or 'tokens' (both are 0)", name);
    if (c->lr_min > c->lr) return kd_errf(err, "%s: 'lr_min' %g is above 'lr' %g", name, c->lr_min, c->lr);
    return 0;
}

int kd_run_config_load(kd_run_config *c, const char *path, char **sets, int n_sets, cJSON **resolved, kd_err *err) {
    cJSON *root = kd_json_load(path, err);
    if (!root) return -1;
    for (int i = 0; i < n_sets; i++)
        if (kd_run_config_set(root, sets[i], err)) {
            cJSON_Delete(root);
            return -1;
        }
    int rc = kd_run_config_from_json(c, root, path, err);
    cJSON_Delete(root);
    if (!rc && resolved) *resolved = kd_run_config_to_json(c);
    return rc;
}

cJSON *kd_run_config_to_json(const kd_run_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "student", c->student);
    if (c->n_train_data == 1) {
        cJSON_AddStringToObject(o, "train_data", c->train_data[0]);
    } else {
        cJSON *a = cJSON_AddArrayToObject(o, "train_data");
        for (int i = 0; i < c->n_train_data; i++) cJSON_AddItemToArray(a, cJSON_CreateString(c->train_data[i]));
    }
    cJSON_AddStringToObject(o, "val_data", c->val_data);
    cJSON_AddNumberToObject(o, "alpha", c->alpha);
    cJSON_AddNumberToObject(o, "temperature", c->temperature);
    cJSON_AddStringToObject(o, "kd_mode", c->kd_mode);
    cJSON_AddStringToObject(o, "divergence", c->divergence);
#define NUM(k) cJSON_AddNumberToObject(o, #k, (double)c->k)
    NUM(batch_size); NUM(seq_len); NUM(grad_accum); NUM(steps); NUM(tokens); NUM(lr); NUM(lr_min); NUM(warmup);
    NUM(beta1); NUM(beta2); NUM(eps); NUM(weight_decay);
    cJSON_AddBoolToObject(o, "decay_embeddings", c->decay_embeddings);
    NUM(grad_clip); NUM(eval_every); NUM(eval_batches); NUM(save_every); NUM(keep_last); NUM(log_every);
    NUM(seed); NUM(lm_chunk);
#undef NUM
    cJSON_AddStringToObject(o, "vocab_policy", c->vocab_policy);
    cJSON_AddStringToObject(o, "memory_mode", c->memory_mode);
    cJSON_AddBoolToObject(o, "shard_optimizer", c->shard_optimizer);
    if (c->teacher[0]) {   /* online distillation only (an offline run.json stays as it was) */
        cJSON_AddStringToObject(o, "teacher", c->teacher);
        cJSON_AddNumberToObject(o, "teacher_topk", (double)c->teacher_topk);
    }
    if (!strcmp(c->memory_mode, "lean")) {   /* only where they apply (an fp32 run.json stays as it was) */
        cJSON_AddStringToObject(o, "lean_weights", c->lean_weights);
        cJSON_AddStringToObject(o, "lean_m", c->lean_m);
        cJSON_AddStringToObject(o, "lean_v", c->lean_v);
        cJSON_AddStringToObject(o, "lean_clip", c->lean_clip);
    }
    return o;
}
