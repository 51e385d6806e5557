/*
 * kd_checkpoint.c — save and load student checkpoints (see kd_checkpoint.h).
 */
#include "student/kd_checkpoint.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_log.h"
#include "format/kd_safetensors.h"
#include "student/kd_gguf_model.h"
#include "student/kd_llama2c.h"

#include <sys/stat.h>

int kd_checkpoint_save_as(const kd_model *m, const char *dir, kd_st_dtype dtype, kd_err *err) {
    char path[4096];
    if (dtype != KD_ST_F32 && dtype != KD_ST_BF16 && dtype != KD_ST_F16)
        return kd_errf(err, "%s: checkpoint weights are F32, BF16 or F16, not %s", dir, kd_st_dtype_name(dtype));
    if (kd_mkdirs(dir, err)) return -1;
    if (kd_path_join(path, sizeof path, dir, "config.json", err) || kd_config_save(&m->cfg, path, err)) return -1;
    kd_st_writer *w = kd_st_writer_new(err);
    if (!w) return -1;
    int rc = kd_st_writer_set_meta(w, "format", "pt", err);
    for (int i = 0; !rc && i < m->n_params; i++) {
        const kd_tensor *p = m->params[i];
        rc = dtype == KD_ST_F32 ? kd_st_writer_add(w, p->name, KD_ST_F32, p->ndim, p->shape, p->data, err)
                                : kd_st_writer_add_f32_as(w, p->name, dtype, p->ndim, p->shape, p->data, err);
    }
    if (!rc) rc = kd_path_join(path, sizeof path, dir, "model.safetensors", err);
    if (!rc) rc = kd_st_writer_save(w, path, err);
    kd_st_writer_free(w);
    return rc;
}

int kd_checkpoint_save(const kd_model *m, const char *dir, kd_err *err) {
    return kd_checkpoint_save_as(m, dir, KD_ST_F32, err);
}

/* Names that may appear in HF checkpoints and carry nothing kd needs. */
static int ignorable(const char *name, const kd_model *m) {
    if (strstr(name, "rotary_emb.inv_freq")) return 1;
    if (!strcmp(name, "lm_head.weight") && m->cfg.tie_word_embeddings) return 1;
    return 0;
}

/* Hand every parameter found in one safetensors file to put; marks found[i]. */
static int read_file(const kd_model *m, const char *path, int *found, kd_checkpoint_put_fn put, void *ctx,
                     kd_err *err) {
    kd_st_file *f = kd_st_open(path, err);
    if (!f) return -1;
    int rc = 0;
    for (int i = 0; i < m->n_params && !rc; i++) {
        const kd_tensor *p = m->params[i];
        const kd_st_tensor *t = kd_st_find(f, p->name);
        if (!t) continue;
        rc = kd_st_check_float(f, t, p->ndim, p->shape, err) || put(ctx, i, f, t, err) ? -1 : 0;
        kd_st_release(f, t);
        found[i] = 1;
    }
    for (int j = 0; j < f->count && !rc; j++) {
        const char *name = f->tensors[j].name;
        if (!kd_model_param(m, name) && !ignorable(name, m))
            rc = kd_errf(err, "%s: unexpected tensor '%s' (not a parameter of this Llama config)", path, name);
    }
    kd_st_close(f);
    return rc;
}

int kd_checkpoint_read(const kd_model *m, const char *dir, kd_checkpoint_put_fn put, void *ctx, kd_err *err) {
    char path[4096];
    int *found = calloc((size_t)m->n_params, sizeof *found);
    if (!found) return kd_errf(err, "out of memory");
    int rc = -1;
    if (kd_path_join(path, sizeof path, dir, "model.safetensors", err)) goto done;
    if (kd_file_exists(path)) {
        if (read_file(m, path, found, put, ctx, err)) goto done;
    } else {
        /* sharded: model.safetensors.index.json {"weight_map": {name: shard file}} */
        if (kd_path_join(path, sizeof path, dir, "model.safetensors.index.json", err)) goto done;
        if (!kd_file_exists(path)) {
            kd_errf(err, "%s: no model.safetensors (or model.safetensors.index.json)", dir);
            goto done;
        }
        cJSON *idx = kd_json_load(path, err);
        if (!idx) goto done;
        const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
        if (!cJSON_IsObject(map)) {
            cJSON_Delete(idx);
            kd_errf(err, "%s: 'weight_map' must be an object", path);
            goto done;
        }
        /* each distinct shard once, in order of first appearance */
        const cJSON *e;
        int bad = 0;
        cJSON_ArrayForEach(e, map) {
            if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
                kd_errf(err, "%s: weight_map['%s'] must be a file name in the checkpoint directory", path, e->string);
                bad = 1;
                break;
            }
            int seen = 0;
            for (const cJSON *p = map->child; p != e; p = p->next)
                if (cJSON_IsString(p) && !strcmp(p->valuestring, e->valuestring)) seen = 1;
            if (seen) continue;
            char shard[4096];
            if (kd_path_join(shard, sizeof shard, dir, e->valuestring, err) ||
                read_file(m, shard, found, put, ctx, err)) {
                bad = 1;
                break;
            }
        }
        cJSON_Delete(idx);
        if (bad) goto done;
    }
    for (int i = 0; i < m->n_params; i++)   /* path: model.safetensors, or the index of the shards */
        if (!found[i]) {
            kd_errf(err, "%s: tensor '%s' is missing (config.json's Llama needs it)", path, m->params[i]->name);
            goto done;
        }
    rc = 0;
done:
    free(found);
    return rc;
}

/* kd_checkpoint_load_weights: convert into the FP32 parameter (shape and dtype
 * checked by read_file), dropping the file's pages slice by slice */
static int put_f32(void *ctx, int i, const kd_st_file *f, const kd_st_tensor *t, kd_err *err) {
    return kd_st_copy_f32(f, t, ((const kd_model *)ctx)->params[i]->data, err);
}

int kd_checkpoint_load_weights(kd_model *m, const char *dir, kd_err *err) {
    return kd_checkpoint_read(m, dir, put_f32, m, err);
}

static int put_nothing(void *ctx, int i, const kd_st_file *f, const kd_st_tensor *t, kd_err *err) {
    (void)ctx, (void)i, (void)f, (void)t, (void)err;
    return 0;
}

int kd_checkpoint_load_flags(kd_model *m, const char *dir, int flags, kd_err *err) {
    char path[4096];
    kd_config cfg;
    memset(m, 0, sizeof *m);
    if (kd_path_join(path, sizeof path, dir, "config.json", err) || kd_config_load(&cfg, path, err)) return -1;
    /* every tensor's name, dtype and shape is checked (a model without storage) before the
     * parameters are allocated: a hostile config.json must not make kd allocate gigabytes
     * for a model.safetensors that does not hold them */
    kd_model shell;
    if (kd_model_new_shell(&shell, &cfg, err)) return kd_err_prefix(err, "%s", path);
    int bad = kd_checkpoint_read(&shell, dir, put_nothing, NULL, err);
    kd_model_free(&shell);
    if (bad) return -1;
    if (kd_model_new_flags(m, &cfg, flags, err)) return kd_err_prefix(err, "%s", path);
    if (kd_checkpoint_load_weights(m, dir, err) ||
        (kd_path_join(path, sizeof path, dir, "model.safetensors", err) || kd_model_check_finite(m, path, err))) {
        kd_model_free(m);
        return -1;
    }
    return 0;
}

int kd_checkpoint_load(kd_model *m, const char *dir, kd_err *err) { return kd_checkpoint_load_flags(m, dir, 0, err); }

int kd_model_load_flags(kd_model *m, const char *path, int flags, kd_err *err) {
    struct stat st;
    memset(m, 0, sizeof *m);
    if (stat(path, &st) != 0) return kd_errf(err, "%s: no such file or directory", path);
    if (S_ISDIR(st.st_mode)) return kd_checkpoint_load_flags(m, path, flags, err);
    FILE *f = fopen(path, "rb");
    if (!f) return kd_errf(err, "%s: cannot open", path);
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && !memcmp(magic, "GGUF", 4)) return kd_model_load_gguf_flags(m, path, NULL, flags, err);
    return kd_llama2c_load_flags(m, path, flags, err);
}

int kd_model_load(kd_model *m, const char *path, kd_err *err) {
    return kd_model_load_flags(m, path, KD_MODEL_NO_GRAD, err);
}
