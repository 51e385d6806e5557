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

#define KD_PI 3.14159265358979323846
#define MAX_DIM KD_CONFIG_MAX_DIM

void kd_config_defaults(kd_config *c) {
    *c = (kd_config){0};
    c->max_position_embeddings = 2048;
    c->rope_theta = 10000.0;
    c->rope_type = KD_ROPE_TYPE_DEFAULT;
    c->rope_factor = 1.0;
    c->rms_norm_eps = 1e-5;
    c->tie_word_embeddings = 0;           /* transformers' LlamaConfig default */
    c->bos_token_id = 1;
    c->eos_token_id = 2;
}

/* ---- keys ------------------------------------------------------------------------------ */

/* Keys that never change the numbers of the forward pass (metadata, generation
 * defaults, training-only switches): accepted and not used. Any key neither here
 * nor read below is refused, so an unknown key can never change a model silently. */
static const char *const k_ignored[] = {
    "_name_or_path", "_commit_hash", "_attn_implementation", "attn_implementation", "_from_model_config",
    "transformers_version", "torch_dtype", "dtype", "use_cache", "pad_token_id", "sep_token_id",
    "decoder_start_token_id", "initializer_range", "pretraining_tp", "attention_dropout", "output_attentions",
    "output_hidden_states", "return_dict", "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder", "cross_attention_hidden_size",
    "chunk_size_feed_forward", "id2label", "label2id", "problem_type", "finetuning_task", "task_specific_params",
    "tokenizer_class", "prefix", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
    "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
    "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "output_router_logits",
};

/* Keys read by kd_config_parse (each one checked there). */
static const char *const k_read[] = {
    "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_theta", "rope_scaling",
    "rope_parameters", "partial_rotary_factor", "rms_norm_eps", "tie_word_embeddings", "sliding_window",
    "use_sliding_window", "max_window_layers", "layer_types", "bos_token_id", "eos_token_id", "hidden_act",
    "attention_bias", "mlp_bias", "original_max_position_embeddings",
};

static int in_list(const char *key, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(key, list[i])) return 1;
    return 0;
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

/* A boolean key that must be false (or absent/null): `what` says why true is refused. */
static int must_be_false(const cJSON *root, const char *key, const char *name, const char *what, kd_err *err) {
    int v = 0;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (kd_json_get_bool(root, key, name, 0, &v, err)) return -1;
    if (v) return kd_errf(err, "%s: '%s' is true: %s; kd refuses it rather than compute another model", name, key, what);
    return 0;
}

/* ---- RoPE ------------------------------------------------------------------------------ */

typedef struct rope_spec {
    int present;
    double theta;                 /* < 0: not given */
    kd_rope_type type;
    double factor, low, high;
    int64_t orig;
} rope_spec;

/* One RoPE dict: a 4.x rope_scaling or a 5.x rope_parameters (`key` names it). */
static int parse_rope_dict(const cJSON *d, const char *key, const char *name, rope_spec *r, kd_err *err) {
    *r = (rope_spec){1, -1.0, KD_ROPE_TYPE_DEFAULT, 1.0, 0, 0, 0};
    char where[128];
    snprintf(where, sizeof where, "%s ('%s')", name, key);
    if (!cJSON_IsObject(d))
        return kd_errf(err, "%s: '%s' is %s, expected an object or null", name, key, kd_json_type_name(d));
    static const char *const known[] = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor",
                                        "high_freq_factor", "original_max_position_embeddings",
                                        "partial_rotary_factor"};
    const cJSON *it;
    cJSON_ArrayForEach(it, d) {
        if (!in_list(it->string, known, sizeof known / sizeof *known)) {
            if (!strcmp(it->string, "full_attention") || !strcmp(it->string, "sliding_attention"))
                return kd_errf(err, "%s: '%s.%s': per-layer-type RoPE (a different RoPE for sliding and full "
                               "attention layers) is not supported", name, key, it->string);
            return kd_errf(err, "%s: '%s.%s' is not a key kd knows for RoPE (it reads rope_type, rope_theta, factor, "
                           "low_freq_factor, high_freq_factor, original_max_position_embeddings)", name, key, it->string);
        }
    }
    char type[32] = "default";
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "rope_type");
    if (!t || cJSON_IsNull(t)) t = cJSON_GetObjectItemCaseSensitive(d, "type");   /* the older spelling */
    if (t && !cJSON_IsNull(t)) {
        if (!cJSON_IsString(t) || strlen(t->valuestring) >= sizeof type)
            return kd_errf(err, "%s: '%s.rope_type' must be a string", name, key);
        snprintf(type, sizeof type, "%s", t->valuestring);
    }
    double prf = 1.0;
    if (kd_json_get_float(d, "rope_theta", where, 0, 1.0, 1e12, &r->theta, err) ||
        kd_json_get_float(d, "partial_rotary_factor", where, 0, 0.0, 1.0, &prf, err))
        return -1;
    if (prf != 1.0)
        return kd_errf(err, "%s: '%s.partial_rotary_factor' is %g: partial RoPE is not supported (expected 1)", name,
                       key, prf);
    if (!strcmp(type, "default")) {
        r->type = KD_ROPE_TYPE_DEFAULT;
    } else if (!strcmp(type, "linear")) {
        r->type = KD_ROPE_TYPE_LINEAR;
        if (kd_json_get_float(d, "factor", where, 1, 1e-6, 1e6, &r->factor, err)) return -1;
    } else if (!strcmp(type, "llama3")) {
        r->type = KD_ROPE_TYPE_LLAMA3;
        if (kd_json_get_float(d, "factor", where, 1, 1e-6, 1e6, &r->factor, err) ||
            kd_json_get_float(d, "low_freq_factor", where, 1, 1e-9, 1e9, &r->low, err) ||
            kd_json_get_float(d, "high_freq_factor", where, 1, 1e-9, 1e9, &r->high, err) ||
            kd_json_get_int(d, "original_max_position_embeddings", where, 0, 1, (int64_t)1 << 30, &r->orig, err))
            return -1;
        if (!(r->high > r->low))
            return kd_errf(err, "%s: '%s': high_freq_factor %g must be greater than low_freq_factor %g", name, key,
                           r->high, r->low);
    } else if (!strcmp(type, "dynamic") || !strcmp(type, "yarn") || !strcmp(type, "longrope") ||
               !strcmp(type, "su") || !strcmp(type, "ntk")) {
        return kd_errf(err, "%s: '%s.rope_type' is \"%s\": not supported (kd computes RoPE types \"default\", "
                       "\"linear\" and \"llama3\")", name, key, type);
    } else {
        return kd_errf(err, "%s: '%s.rope_type' is \"%s\", an unknown RoPE type (kd computes \"default\", \"linear\" "
                       "and \"llama3\")", name, key, type);
    }
    return 0;
}

static int rope_same(const rope_spec *a, const rope_spec *b) {
    if (a->type != b->type) return 0;
    if (a->type == KD_ROPE_TYPE_DEFAULT) return 1;
    if (a->factor != b->factor) return 0;
    return a->type != KD_ROPE_TYPE_LLAMA3 || (a->low == b->low && a->high == b->high && a->orig == b->orig);
}

/* rope_theta, rope_scaling (4.x) and rope_parameters (5.x): either spelling, or
 * both when they agree. */
static int parse_rope(const cJSON *root, const char *name, kd_config *c, kd_err *err) {
    rope_spec s4 = {0}, s5 = {0};
    double theta = -1.0;
    if (kd_json_get_float(root, "rope_theta", name, 0, 1.0, 1e12, &theta, err)) return -1;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rs && !cJSON_IsNull(rs) && parse_rope_dict(rs, "rope_scaling", name, &s4, err)) return -1;
    if (rp && !cJSON_IsNull(rp) && parse_rope_dict(rp, "rope_parameters", name, &s5, err)) return -1;
    if (s4.present && s4.theta > 0 && theta > 0 && s4.theta != theta)
        return kd_errf(err, "%s: 'rope_scaling.rope_theta' %g differs from 'rope_theta' %g", name, s4.theta, theta);
    if (s4.present && s4.theta > 0) theta = s4.theta;
    if (s5.present && s5.theta > 0) {
        if (theta > 0 && theta != s5.theta)
            return kd_errf(err, "%s: 'rope_parameters.rope_theta' %g differs from 'rope_theta' %g", name, s5.theta,
                           theta);
        theta = s5.theta;
    }
    if (s4.present && s5.present && !rope_same(&s4, &s5))
        return kd_errf(err, "%s: 'rope_scaling' (%s) and 'rope_parameters' (%s) describe different RoPE; give one",
                       name, kd_rope_type_name(s4.type), kd_rope_type_name(s5.type));
    const rope_spec *s = s5.present ? &s5 : s4.present ? &s4 : NULL;
    if (theta > 0) c->rope_theta = theta;
    if (s) {
        c->rope_type = s->type;
        if (s->type != KD_ROPE_TYPE_DEFAULT) c->rope_factor = s->factor;
        if (s->type == KD_ROPE_TYPE_LLAMA3) {
            /* transformers 5: a top-level original_max_position_embeddings wins, then the dict's,
             * then max_position_embeddings */
            int64_t top = 0;
            if (kd_json_get_int(root, "original_max_position_embeddings", name, 0, 1, (int64_t)1 << 30, &top, err))
                return -1;
            c->rope_low_freq_factor = s->low;
            c->rope_high_freq_factor = s->high;
            c->rope_original_max_position_embeddings = top > 0 ? top : s->orig > 0 ? s->orig : c->max_position_embeddings;
        }
    }
    double prf = 1.0;
    if (kd_json_get_float(root, "partial_rotary_factor", name, 0, 0.0, 1.0, &prf, err)) return -1;
    if (prf != 1.0)
        return kd_errf(err, "%s: 'partial_rotary_factor' is %g: partial RoPE is not supported (expected 1)", name, prf);
    return 0;
}

/* model_type / architectures: the families whose forward kd computes. */
static int check_family(const cJSON *root, const char *name, kd_err *err) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsString(mt))
            return kd_errf(err, "%s: 'model_type' is %s, expected a string", name, kd_json_type_name(mt));
        if (!strcmp(mt->valuestring, "qwen2"))
            return kd_errf(err, "%s: 'model_type' is \"qwen2\": Qwen2 has q/k/v biases, which kd does not implement "
                           "(supported: \"llama\", \"mistral\")", name);
        if (strcmp(mt->valuestring, "llama") && strcmp(mt->valuestring, "mistral"))
            return kd_errf(err, "%s: 'model_type' is \"%s\"; kd computes \"llama\" and \"mistral\" models", name,
                           mt->valuestring);
    }
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(root, "architectures"), *a;
    if (ar && !cJSON_IsNull(ar)) {
        if (!cJSON_IsArray(ar))
            return kd_errf(err, "%s: 'architectures' is %s, expected a list", name, kd_json_type_name(ar));
        cJSON_ArrayForEach(a, ar) {
            if (!cJSON_IsString(a) ||
                (strcmp(a->valuestring, "LlamaForCausalLM") && strcmp(a->valuestring, "MistralForCausalLM")))
                return kd_errf(err, "%s: 'architectures' names %s; kd computes LlamaForCausalLM and "
                               "MistralForCausalLM", name, cJSON_IsString(a) ? a->valuestring : "a non-string");
        }
    }
    return 0;
}

/* sliding_window with Qwen2's use_sliding_window / max_window_layers and 5.x's layer_types. */
static int parse_window(const cJSON *root, const char *name, kd_config *c, kd_err *err) {
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    if (sw && !cJSON_IsNull(sw) &&
        kd_json_get_int(root, "sliding_window", name, 1, 1, (int64_t)1 << 30, &c->sliding_window, err))
        return -1;
    int use = 1;
    if (kd_json_get_bool(root, "use_sliding_window", name, 0, &use, err)) return -1;
    if (!use) c->sliding_window = 0;
    int64_t mwl = -1;
    if (kd_json_get_int(root, "max_window_layers", name, 0, 0, 1 << 20, &mwl, err)) return -1;
    if (c->sliding_window > 0 && mwl > 0) {   /* Qwen2: layers l >= max_window_layers use the window */
        if (mwl < c->num_hidden_layers)
            return kd_errf(err, "%s: 'max_window_layers' %lld: a window on some layers only is not supported (kd "
                           "applies sliding_window to every layer)", name, (long long)mwl);
        c->sliding_window = 0;
    }
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types"), *it;
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt)) return kd_errf(err, "%s: 'layer_types' must be a list", name);
        int n_full = 0, n_slide = 0;
        cJSON_ArrayForEach(it, lt) {
            if (cJSON_IsString(it) && !strcmp(it->valuestring, "full_attention")) n_full++;
            else if (cJSON_IsString(it) && !strcmp(it->valuestring, "sliding_attention")) n_slide++;
            else return kd_errf(err, "%s: 'layer_types' holds %s, expected \"full_attention\" or \"sliding_attention\"",
                                name, cJSON_IsString(it) ? it->valuestring : "a non-string");
        }
        if (n_full && n_slide)
            return kd_errf(err, "%s: 'layer_types' mixes full and sliding attention layers; kd applies one kind to "
                           "every layer", name);
        if (n_slide && c->sliding_window <= 0)
            return kd_errf(err, "%s: 'layer_types' says sliding_attention but 'sliding_window' is not set", name);
        if (n_full) c->sliding_window = 0;
    }
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
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (in_list(it->string, k_read, sizeof k_read / sizeof *k_read) ||
            in_list(it->string, k_ignored, sizeof k_ignored / sizeof *k_ignored))
            continue;
        if (!strcmp(it->string, "quantization_config"))
            kd_errf(err, "%s: 'quantization_config': quantized Hugging Face checkpoints are not supported (kd "
                    "reads F32, F16 and BF16 weights)", name);
        else if (!strcmp(it->string, "auto_map"))
            kd_errf(err, "%s: 'auto_map': the model brings its own Python code, which kd cannot know", name);
        else
            kd_errf(err, "%s: key '%s' is unknown to kd, which refuses keys that could change the model; remove it "
                    "if it does not (docs/checkpoints.md lists the keys kd reads and ignores)", name, it->string);
        goto done;
    }
    if (check_family(root, name, err)) goto done;
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
        kd_json_get_float(root, "rms_norm_eps", name, 0, 1e-12, 1.0, &c->rms_norm_eps, err) ||
        kd_json_get_bool(root, "tie_word_embeddings", name, 0, &c->tie_word_embeddings, err) ||
        get_token_id(root, "bos_token_id", name, &c->bos_token_id, err) ||
        get_token_id(root, "eos_token_id", name, &c->eos_token_id, err) ||
        parse_rope(root, name, c, err) || parse_window(root, name, c, err) ||
        must_be_false(root, "attention_bias", name, "q/k/v/o projections with biases (Qwen2 style) are not "
                      "implemented", err) ||
        must_be_false(root, "mlp_bias", name, "MLP projections with biases are not implemented", err))
        goto done;
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (hd && !cJSON_IsNull(hd) && kd_json_get_int(root, "head_dim", name, 1, 2, 4096, &c->head_dim, err)) goto done;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !(cJSON_IsString(act) && (!strcmp(act->valuestring, "silu") || !strcmp(act->valuestring, "swish")))) {
        kd_errf(err, "%s: 'hidden_act' is %s, expected \"silu\" (SwiGLU)", name,
                cJSON_IsString(act) ? act->valuestring : kd_json_type_name(act));
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
    if (c->rope_type != KD_ROPE_TYPE_DEFAULT && !(c->rope_factor > 0))
        return kd_errf(err, "%s: RoPE type %s needs a positive factor", name, kd_rope_type_name(c->rope_type));
    if (c->rope_type == KD_ROPE_TYPE_LLAMA3 &&
        !(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
          c->rope_original_max_position_embeddings > 0))
        return kd_errf(err, "%s: llama3 RoPE needs 0 < low_freq_factor < high_freq_factor and a positive "
                       "original_max_position_embeddings", name);
    if ((unsigned)c->rope_type > KD_ROPE_TYPE_LLAMA3) return kd_errf(err, "%s: unknown RoPE type %d", name, (int)c->rope_type);
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

/* The RoPE dict: rope_type and its parameters (+ rope_theta for 5.x's rope_parameters). */
static cJSON *rope_json(const kd_config *c, int with_theta) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    if (with_theta) cJSON_AddNumberToObject(r, "rope_theta", c->rope_theta);
    cJSON_AddStringToObject(r, "rope_type", kd_rope_type_name(c->rope_type));
    if (c->rope_type != KD_ROPE_TYPE_DEFAULT) cJSON_AddNumberToObject(r, "factor", c->rope_factor);
    if (c->rope_type == KD_ROPE_TYPE_LLAMA3) {
        cJSON_AddNumberToObject(r, "low_freq_factor", c->rope_low_freq_factor);
        cJSON_AddNumberToObject(r, "high_freq_factor", c->rope_high_freq_factor);
        cJSON_AddNumberToObject(r, "original_max_position_embeddings", (double)c->rope_original_max_position_embeddings);
    }
    return r;
}

int kd_config_save_dtype(const kd_config *c, const char *path, const char *torch_dtype, kd_err *err) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return kd_errf(err, "%s: out of memory", path);
    /* transformers' LlamaForCausalLM has no sliding window (it would ignore the key):
     * a windowed model is a Mistral, which has the same tensor names. */
    int mistral = c->sliding_window > 0;
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(mistral ? "MistralForCausalLM" : "LlamaForCausalLM"));
    cJSON_AddStringToObject(o, "model_type", mistral ? "mistral" : "llama");
    cJSON_AddNumberToObject(o, "hidden_size", (double)c->hidden_size);
    cJSON_AddNumberToObject(o, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", (double)c->num_hidden_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", (double)c->num_attention_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", (double)c->num_key_value_heads);
    cJSON_AddNumberToObject(o, "head_dim", (double)c->head_dim);
    cJSON_AddNumberToObject(o, "vocab_size", (double)c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", (double)c->max_position_embeddings);
    /* RoPE in both spellings: 4.x reads rope_theta + rope_scaling, 5.x rope_parameters */
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    if (c->rope_type == KD_ROPE_TYPE_DEFAULT) cJSON_AddNullToObject(o, "rope_scaling");
    else cJSON_AddItemToObject(o, "rope_scaling", rope_json(c, 0));
    cJSON_AddItemToObject(o, "rope_parameters", rope_json(c, 1));
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    if (c->sliding_window > 0) cJSON_AddNumberToObject(o, "sliding_window", (double)c->sliding_window);
    else cJSON_AddNullToObject(o, "sliding_window");
    cJSON_AddNumberToObject(o, "bos_token_id", (double)c->bos_token_id);
    cJSON_AddNumberToObject(o, "eos_token_id", (double)c->eos_token_id);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddBoolToObject(o, "attention_bias", 0);
    if (!mistral) cJSON_AddBoolToObject(o, "mlp_bias", 0);
    cJSON_AddNumberToObject(o, "initializer_range", 0.02);
    cJSON_AddStringToObject(o, "torch_dtype", torch_dtype);
    int rc = kd_json_write_atomic(path, o, err);
    cJSON_Delete(o);
    return rc;
}

/* ---- RoPE frequencies ------------------------------------------------------------------- */

const char *kd_rope_type_name(kd_rope_type t) {
    switch (t) {
    case KD_ROPE_TYPE_LINEAR: return "linear";
    case KD_ROPE_TYPE_LLAMA3: return "llama3";
    default: return "default";
    }
}

/* Llama 3.1's rule (transformers' _compute_llama3_parameters): wavelength λ = 2π/inv;
 * λ < L/high: kept; λ > L/low: divided by factor; between: the inverse of the
 * divisor moves linearly in L/λ from 1/factor (at low) to 1 (at high). Returns
 * the divisor. */
static double llama3_divisor(const kd_config *c, double inv) {
    double L = (double)c->rope_original_max_position_embeddings, lo = c->rope_low_freq_factor,
           hi = c->rope_high_freq_factor, f = c->rope_factor;
    double wavelen = 2.0 * KD_PI / inv;
    if (wavelen < L / hi) return 1.0;
    if (wavelen > L / lo) return f;
    double s = (L / wavelen - lo) / (hi - lo);
    return 1.0 / ((1.0 - s) / f + s);
}

void kd_config_rope_inv_freq(const kd_config *c, double *inv) {
    int64_t D = c->head_dim;
    for (int64_t i = 0; i < D / 2; i++) {
        double base = pow(c->rope_theta, -2.0 * (double)i / (double)D);
        double div = c->rope_type == KD_ROPE_TYPE_LINEAR   ? c->rope_factor
                     : c->rope_type == KD_ROPE_TYPE_LLAMA3 ? llama3_divisor(c, base)
                                                           : 1.0;
        inv[i] = base / div;
    }
}

void kd_config_rope_freq_factors(const kd_config *c, float *ff) {
    int64_t D = c->head_dim;
    for (int64_t i = 0; i < D / 2; i++) {
        double base = pow(c->rope_theta, -2.0 * (double)i / (double)D);
        ff[i] = (float)(c->rope_type == KD_ROPE_TYPE_LINEAR   ? c->rope_factor
                        : c->rope_type == KD_ROPE_TYPE_LLAMA3 ? llama3_divisor(c, base)
                                                              : 1.0);
    }
}

/* The divisors of llama3 are a clamped line in x = 1/λ: g = 1/divisor is 1/factor
 * for x ≤ x_lo = low/L, 1 for x ≥ x_hi = high/L, linear between. Fit factor, x_lo
 * and x_hi to the points, then check every divisor. */
int kd_config_rope_from_factors(kd_config *c, const float *ff, int64_t n, int64_t original_ctx, const char *name,
                                kd_err *err) {
    const double tol = 1e-6;
    int64_t D = c->head_dim;
    if (n != D / 2)
        return kd_errf(err, "%s: rope_freqs has %lld values, expected head_dim/2 = %lld", name, (long long)n,
                       (long long)(D / 2));
    double fmax = 0, fmin = 1e300;
    for (int64_t i = 0; i < n; i++) {
        if (!(ff[i] > 0) || !isfinite(ff[i]))
            return kd_errf(err, "%s: rope_freqs[%lld] is %g, expected a positive divisor", name, (long long)i,
                           (double)ff[i]);
        fmax = ff[i] > fmax ? ff[i] : fmax;
        fmin = ff[i] < fmin ? ff[i] : fmin;
    }
    if (fmax - fmin <= tol * fmax) {          /* one divisor for all: default or linear */
        c->rope_type = fabs(fmax - 1.0) <= tol ? KD_ROPE_TYPE_DEFAULT : KD_ROPE_TYPE_LINEAR;
        c->rope_factor = c->rope_type == KD_ROPE_TYPE_LINEAR ? fmax : 1.0;
        return 0;
    }
    double gmin = 1.0 / fmax;
    /* x decreases with i; classify: at the floor (g = gmin), at 1, or on the line */
    int64_t first_mid = -1, last_mid = -1, last_one = -1, first_floor = -1;
    double *x = malloc((size_t)n * sizeof *x);
    if (!x) return kd_errf(err, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        x[i] = pow(c->rope_theta, -2.0 * (double)i / (double)D) / (2.0 * KD_PI);
        double g = 1.0 / ff[i];
        if (fabs(g - 1.0) <= tol) last_one = i;
        else if (fabs(g - gmin) <= tol * gmin) { if (first_floor < 0) first_floor = i; }
        else { if (first_mid < 0) first_mid = i; last_mid = i; }
    }
    double x_lo, x_hi;
    if (first_mid >= 0 && last_mid > first_mid) {      /* two points fix the line */
        double g1 = 1.0 / ff[first_mid], g2 = 1.0 / ff[last_mid];
        double a = (g1 - g2) / (x[first_mid] - x[last_mid]);
        x_lo = x[last_mid] - (g2 - gmin) / a;
        x_hi = x[last_mid] + (1.0 - g2) / a;
    } else if (first_mid >= 0) {                       /* one point: any line through it between its neighbours */
        double xm = x[first_mid], gm = 1.0 / ff[first_mid];
        double below = first_mid + 1 < n ? x[first_mid + 1] : 0.0, above = first_mid > 0 ? x[first_mid - 1] : 2 * xm;
        x_lo = (below + xm) / 2;
        double a = (gm - gmin) / (xm - x_lo);
        x_hi = x_lo + (1.0 - gmin) / a;
        if (x_hi > above) {
            x_hi = (xm + above) / 2;
            a = (1.0 - gm) / (x_hi - xm);
            x_lo = xm - (gm - gmin) / a;
        }
    } else {                                           /* a step: the ramp lies between two neighbours */
        double xa = last_one >= 0 ? x[last_one] : 2 * x[0], xb = first_floor >= 0 ? x[first_floor] : 0.0;
        x_lo = xb + (xa - xb) / 3;
        x_hi = xb + 2 * (xa - xb) / 3;
    }
    free(x);
    double L = (double)(original_ctx > 0 ? original_ctx : 8192);
    kd_config t = *c;
    t.rope_type = KD_ROPE_TYPE_LLAMA3;
    t.rope_factor = fmax;
    t.rope_low_freq_factor = L * x_lo;
    t.rope_high_freq_factor = L * x_hi;
    t.rope_original_max_position_embeddings = (int64_t)L;
    float *back = malloc((size_t)n * sizeof *back);
    if (!back) return kd_errf(err, "out of memory");
    int ok = x_lo > 0 && x_hi > x_lo;
    if (ok) {
        kd_config_rope_freq_factors(&t, back);
        for (int64_t i = 0; i < n && ok; i++) ok = fabs(back[i] - ff[i]) <= 1e-5 * ff[i];
    }
    free(back);
    if (!ok)
        return kd_errf(err, "%s: rope_freqs (per-dimension RoPE divisors) fit no llama3 RoPE; kd computes default, "
                       "linear and llama3 RoPE", name);
    *c = t;
    return 0;
}
