/*
 * kd_config.c — Hugging Face style config.json for the Llama student
 * (see kd_config.h).
 */
#include "student/kd_config.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"

#define MAX_DIM KD_CONFIG_MAX_DIM

void kd_config_defaults(kd_config *c) {
    *c = (kd_config){0};
    c->max_position_embeddings = 2048;
    c->rope_theta = 10000.0;
    c->rms_norm_eps = 1e-5;
    c->tie_word_embeddings = 0;           /* transformers' LlamaConfig default */
    c->bos_token_id = 1;
    c->eos_token_id = 2;
}

static int get_token_id(const cJSON *root, const char *key, const char *name, int64_t *out, kd_err *err) {
    /* HF allows an int, null, or (Llama 3 instruct) a list; kd uses the first id. */
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    /* range first: converting a double beyond int64 is undefined behaviour */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= INT32_MAX) ||
        v->valuedouble != floor(v->valuedouble))
        return kd_errf(err, "%s: '%s' must be a non-negative integer token id (at most %d)", name, key, INT32_MAX);
    *out = (int64_t)v->valuedouble;
    return 0;
}

int kd_config_parse(kd_config *c, const char *text, size_t len, const char *name, kd_err *err) {
    kd_config_defaults(c);
    cJSON *root = kd_json_parse(text, len, name, err);
    if (!root) return -1;
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        kd_errf(err, "%s: expected a JSON object", name);
        goto done;
    }
    if (kd_json_get_int(root, "hidden_size", name, 1, 1, MAX_DIM, &c->hidden_size, err) ||
        kd_json_get_int(root, "intermediate_size", name, 1, 1, 4 * MAX_DIM, &c->intermediate_size, err) ||
        kd_json_get_int(root, "num_hidden_layers", name, 1, 1, 1024, &c->num_hidden_layers, err) ||
        kd_json_get_int(root, "num_attention_heads", name, 1, 1, 4096, &c->num_attention_heads, err) ||
        kd_json_get_int(root, "vocab_size", name, 1, 1, MAX_DIM, &c->vocab_size, err))
        goto done;
    c->num_key_value_heads = c->num_attention_heads;
    c->head_dim = c->hidden_size / c->num_attention_heads;
    if (kd_json_get_int(root, "num_key_value_heads", name, 0, 1, 4096, &c->num_key_value_heads, err) ||
        kd_json_get_int(root, "max_position_embeddings", name, 0, 1, (int64_t)1 << 24, &c->max_position_embeddings, err) ||
        kd_json_get_float(root, "rope_theta", name, 0, 1.0, 1e12, &c->rope_theta, err) ||
        kd_json_get_float(root, "rms_norm_eps", name, 0, 1e-12, 1.0, &c->rms_norm_eps, err) ||
        kd_json_get_bool(root, "tie_word_embeddings", name, 0, &c->tie_word_embeddings, err) ||
        get_token_id(root, "bos_token_id", name, &c->bos_token_id, err) ||
        get_token_id(root, "eos_token_id", name, &c->eos_token_id, err))
        goto done;
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (hd && !cJSON_IsNull(hd) && kd_json_get_int(root, "head_dim", name, 1, 2, 4096, &c->head_dim, err)) goto done;
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    if (sw && !cJSON_IsNull(sw) && kd_json_get_int(root, "sliding_window", name, 1, 1, (int64_t)1 << 24, &c->sliding_window, err))
        goto done;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !(cJSON_IsString(act) && (!strcmp(act->valuestring, "silu") || !strcmp(act->valuestring, "swish")))) {
        kd_errf(err, "%s: 'hidden_act' is %s, expected \"silu\" (SwiGLU)", name,
                cJSON_IsString(act) ? act->valuestring : kd_json_type_name(act));
        goto done;
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        kd_errf(err, "%s: 'rope_scaling' is not supported yet (expected null)", name);
        goto done;
    }
    rc = kd_config_validate(c, name, err);
done:
    cJSON_Delete(root);
    return rc;
}

int kd_config_load(kd_config *c, const char *path, kd_err *err) {
    size_t len;
    char *text = kd_read_file(path, &len, err);
    if (!text) return -1;
    int rc = kd_config_parse(c, text, len, path, err);
    free(text);
    return rc;
}

int kd_config_validate(const kd_config *c, const char *name, kd_err *err) {
    const struct { const char *key; int64_t v, lo, hi; } r[] = {
        {"hidden_size", c->hidden_size, 1, KD_CONFIG_MAX_DIM},
        {"intermediate_size", c->intermediate_size, 1, 4 * KD_CONFIG_MAX_DIM},
        {"num_hidden_layers", c->num_hidden_layers, 1, KD_CONFIG_MAX_LAYERS},
        {"num_attention_heads", c->num_attention_heads, 1, KD_CONFIG_MAX_HEADS},
        {"num_key_value_heads", c->num_key_value_heads, 1, KD_CONFIG_MAX_HEADS},
        {"head_dim", c->head_dim, 1, KD_CONFIG_MAX_HEAD_DIM},
        {"vocab_size", c->vocab_size, 1, KD_CONFIG_MAX_DIM},
        {"max_position_embeddings", c->max_position_embeddings, 1, KD_CONFIG_MAX_CTX},
        {"sliding_window", c->sliding_window, 0, KD_CONFIG_MAX_CTX},
        {"bos_token_id", c->bos_token_id, -1, INT32_MAX},
        {"eos_token_id", c->eos_token_id, -1, INT32_MAX},
    };
    for (size_t i = 0; i < sizeof r / sizeof *r; i++)
        if (r[i].v < r[i].lo || r[i].v > r[i].hi)
            return kd_errf(err, "%s: %s = %lld, expected an integer in [%lld, %lld]", name, r[i].key, (long long)r[i].v,
                           (long long)r[i].lo, (long long)r[i].hi);
    if (!(c->rms_norm_eps >= KD_CONFIG_MIN_EPS && c->rms_norm_eps <= KD_CONFIG_MAX_EPS))
        return kd_errf(err, "%s: rms_norm_eps = %g, expected a number in [%g, %g]", name, c->rms_norm_eps,
                       KD_CONFIG_MIN_EPS, KD_CONFIG_MAX_EPS);
    if (!(c->rope_theta >= KD_CONFIG_MIN_THETA && c->rope_theta <= KD_CONFIG_MAX_THETA))
        return kd_errf(err, "%s: rope_theta = %g, expected a number in [%g, %g]", name, c->rope_theta,
                       KD_CONFIG_MIN_THETA, KD_CONFIG_MAX_THETA);
    if (c->num_attention_heads % c->num_key_value_heads)
        return kd_errf(err, "%s: num_key_value_heads %lld does not divide num_attention_heads %lld", name,
                       (long long)c->num_key_value_heads, (long long)c->num_attention_heads);
    if (c->head_dim % 2)
        return kd_errf(err, "%s: head dimension %lld is odd; RoPE needs an even head dimension", name,
                       (long long)c->head_dim);
    if (c->head_dim * c->num_attention_heads != c->hidden_size && c->head_dim == c->hidden_size / c->num_attention_heads)
        return kd_errf(err, "%s: num_attention_heads %lld does not divide hidden_size %lld", name,
                       (long long)c->num_attention_heads, (long long)c->hidden_size);
    if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size)
        return kd_errf(err, "%s: bos_token_id %lld / eos_token_id %lld outside the vocabulary of %lld", name,
                       (long long)c->bos_token_id, (long long)c->eos_token_id, (long long)c->vocab_size);
    if (kd_config_n_params(c) > (int64_t)20e9)
        return kd_errf(err, "%s: %.1fB parameters; kd trains students below 20B", name,
                       (double)kd_config_n_params(c) * 1e-9);
    return 0;
}

int64_t kd_config_n_params(const kd_config *c) {
    int64_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t qd = c->num_attention_heads * c->head_dim, kvd = c->num_key_value_heads * c->head_dim;
    int64_t per_layer = 2 * C + C * qd + 2 * C * kvd + qd * C + 3 * C * F;
    return V * C * (c->tie_word_embeddings ? 1 : 2) + C + c->num_hidden_layers * per_layer;
}

int kd_config_save(const kd_config *c, const char *path, kd_err *err) {
    return kd_config_save_dtype(c, path, "float32", err);
}

int kd_config_save_dtype(const kd_config *c, const char *path, const char *torch_dtype, kd_err *err) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return kd_errf(err, "%s: out of memory", path);
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(o, "model_type", "llama");
    cJSON_AddNumberToObject(o, "hidden_size", (double)c->hidden_size);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)c->num_hidden_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", (double)c->num_attention_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", (double)c->num_key_value_heads);
    cJSON_AddNumberToObject(o, "head_dim", (double)c->head_dim);
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", (double)c->max_position_embeddings);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    if (c->sliding_window > 0) cJSON_AddNumberToObject(o, "sliding_window", (double)c->sliding_window);
    else cJSON_AddNullToObject(o, "sliding_window");
    cJSON_AddNumberToObject(o, "bos_token_id", (double)c->bos_token_id);
    cJSON_AddNumberToObject(o, "eos_token_id", (double)c->eos_token_id);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddBoolToObject(o, "attention_bias", 0);
    cJSON_AddBoolToObject(o, "mlp_bias", 0);
    cJSON_AddNumberToObject(o, "initializer_range", 0.02);
    cJSON_AddNullToObject(o, "rope_scaling");
    cJSON_AddStringToObject(o, "torch_dtype", torch_dtype);
    int rc = kd_json_write_atomic(path, o, err);
    cJSON_Delete(o);
    return rc;
}
