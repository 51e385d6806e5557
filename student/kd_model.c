/*
 * kd_model.c — parameters, initialisation and forward pass of the Llama
 * student (see kd_model.h for the data flow).
 */
#include "student/kd_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_rng.h"

/* A parameter header without storage (kd_model_new_shell). */
static kd_tensor *shell_param(const char *name, int ndim, const int64_t *shape, kd_err *err) {
    kd_tensor *p = calloc(1, sizeof *p);
    if (!p) {
        kd_errf(err, "out of memory allocating parameter '%s'", name);
        return NULL;
    }
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->n = 1;
    for (int i = 0; i < KD_MAX_DIMS; i++) {
        p->shape[i] = i < ndim ? shape[i] : 1;
        p->n *= p->shape[i];
    }
    p->requires_grad = 1;
    p->is_param = 1;
    return p;
}

static kd_tensor *add_param(kd_model *m, const char *name, int64_t d0, int64_t d1, kd_err *err) {
    int64_t shape[2] = {d0, d1};
    int nd = d1 ? 2 : 1;
    kd_tensor *p = m->shell     ? shell_param(name, nd, shape, err)
                   : m->no_grad ? kd_param_new_nograd(name, nd, shape, err)
                                : kd_param_new(name, nd, shape, err);
    if (p) m->params[m->n_params++] = p;
    return p;
}

static int model_new(kd_model *m, const kd_config *cfg, int shell, int flags, kd_err *err) {
    memset(m, 0, sizeof *m);
    if (flags & ~KD_MODEL_NO_GRAD) return kd_errf(err, "model: unknown flags 0x%x", (unsigned)flags);
    if (kd_config_validate(cfg, "config", err)) return -1;
    m->cfg = *cfg;
    m->shell = shell;
    m->no_grad = (flags & KD_MODEL_NO_GRAD) != 0;
    int64_t C = cfg->hidden_size, F = cfg->intermediate_size, V = cfg->vocab_size, L = cfg->num_hidden_layers;
    int64_t qd = cfg->num_attention_heads * cfg->head_dim, kvd = cfg->num_key_value_heads * cfg->head_dim;
    m->layers = calloc((size_t)L, sizeof *m->layers);
    m->params = calloc((size_t)(9 * L + 3), sizeof *m->params);
    if (!m->layers || !m->params) {
        kd_model_free(m);
        return kd_errf(err, "out of memory allocating the model");
    }
    char name[96];
    if (!(m->embed = add_param(m, "model.embed_tokens.weight", V, C, err))) goto fail;
    for (int64_t l = 0; l < L; l++) {
        kd_layer *ly = &m->layers[l];
#define P(field, suffix, d0, d1)                                                      \
    snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix);        \
    if (!(ly->field = add_param(m, name, d0, d1, err))) goto fail;
        P(attn_norm, "input_layernorm.weight", C, 0)
        P(wq, "self_attn.q_proj.weight", qd, C)
        P(wk, "self_attn.k_proj.weight", kvd, C)
        P(wv, "self_attn.v_proj.weight", kvd, C)
        P(wo, "self_attn.o_proj.weight", C, qd)
        P(ffn_norm, "post_attention_layernorm.weight", C, 0)
        P(w_gate, "mlp.gate_proj.weight", F, C)
        P(w_up, "mlp.up_proj.weight", F, C)
        P(w_down, "mlp.down_proj.weight", C, F)
#undef P
    }
    if (!(m->norm = add_param(m, "model.norm.weight", C, 0, err))) goto fail;
    if (!cfg->tie_word_embeddings && !(m->lm_head = add_param(m, "lm_head.weight", V, C, err))) goto fail;
    return 0;
fail:
    kd_err_prefix(err, "allocating %.1fM parameters", (double)kd_config_n_params(cfg) * 1e-6);
    kd_model_free(m);
    return -1;
}

int kd_model_new(kd_model *m, const kd_config *cfg, kd_err *err) { return model_new(m, cfg, 0, 0, err); }
int kd_model_new_flags(kd_model *m, const kd_config *cfg, int flags, kd_err *err) {
    return model_new(m, cfg, 0, flags, err);
}
int kd_model_new_shell(kd_model *m, const kd_config *cfg, kd_err *err) { return model_new(m, cfg, 1, 0, err); }

void kd_model_free(kd_model *m) {
    for (int i = 0; i < m->n_params; i++) {
        if (m->shell) free(m->params[i]);   /* the numbers belong to someone else */
        else kd_param_free(m->params[i]);
    }
    free(m->params);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* one stream per parameter, so adding a parameter never shifts the others */
uint64_t kd_model_init_seed(uint64_t seed, int i) { return seed * 1000003u + (uint64_t)i; }

float kd_model_init_std(const kd_model *m, const kd_tensor *p) {
    if (p->ndim == 1) return 0.0f;
    int is_out = strstr(p->name, "o_proj") || strstr(p->name, "down_proj");
    return is_out ? 0.02f / sqrtf(2.0f * (float)m->cfg.num_hidden_layers) : 0.02f;
}

void kd_model_init(kd_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        kd_tensor *p = m->params[i];
        kd_rng r;
        kd_rng_seed(&r, kd_model_init_seed(seed, i));
        float s = kd_model_init_std(m, p);
        if (s == 0.0f) {
            for (int64_t j = 0; j < p->n; j++) p->data[j] = 1.0f;
            continue;
        }
        for (int64_t j = 0; j < p->n; j++) p->data[j] = s * kd_rng_normal(&r);
    }
}

kd_tensor *kd_model_param(const kd_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i]->name, name)) return m->params[i];
    return NULL;
}

kd_tensor *kd_model_head(const kd_model *m) { return m->lm_head ? m->lm_head : m->embed; }

void kd_model_zero_grad(kd_model *m) {
    for (int i = 0; i < m->n_params; i++) kd_param_zero_grad(m->params[i]);
}

kd_tensor *kd_model_block(kd_graph *g, kd_model *m, int64_t l, kd_tensor *x, const int32_t *pos) {
    const kd_config *c = &m->cfg;
    int64_t H = c->num_attention_heads, Hkv = c->num_key_value_heads;
    float eps = (float)c->rms_norm_eps;
    double *inv = kd_graph_alloc(g, (size_t)(c->head_dim / 2 + 1) * sizeof(double));   /* the config's RoPE type */
    kd_config_rope_inv_freq(c, inv);
    kd_layer *ly = &m->layers[l];
    kd_tensor *h = kd_rmsnorm(g, x, ly->attn_norm, eps);
    kd_tensor *q = kd_rope_inv(g, kd_linear(g, h, ly->wq), H, pos, inv, KD_ROPE_HALF);
    kd_tensor *k = kd_rope_inv(g, kd_linear(g, h, ly->wk), Hkv, pos, inv, KD_ROPE_HALF);
    kd_tensor *v = kd_linear(g, h, ly->wv);
    kd_tensor *a = kd_attention(g, q, k, v, H, Hkv, c->sliding_window);
    x = kd_add(g, x, kd_linear(g, a, ly->wo));
    h = kd_rmsnorm(g, x, ly->ffn_norm, eps);
    kd_tensor *ff = kd_swiglu(g, kd_linear(g, h, ly->w_gate), kd_linear(g, h, ly->w_up));
    return kd_add(g, x, kd_linear(g, ff, ly->w_down));
}

kd_tensor *kd_model_hidden(kd_graph *g, kd_model *m, const int32_t *tokens, int64_t B, int64_t T) {
    const kd_config *c = &m->cfg;
    int32_t *pos = kd_graph_alloc(g, (size_t)T * sizeof(int32_t));
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)t;

    kd_tensor *x = kd_embedding(g, m->embed, tokens, B, T);
    for (int64_t l = 0; l < c->num_hidden_layers; l++) x = kd_model_block(g, m, l, x, pos);
    return kd_rmsnorm(g, x, m->norm, (float)c->rms_norm_eps);
}

kd_tensor *kd_model_logits(kd_graph *g, kd_model *m, const int32_t *tokens, int64_t B, int64_t T) {
    return kd_linear(g, kd_model_hidden(g, m, tokens, B, T), kd_model_head(m));
}

int64_t kd_first_nonfinite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

int kd_model_check_finite(const kd_model *m, const char *file, kd_err *err) {
    for (int i = 0; i < m->n_params; i++) {
        const kd_tensor *p = m->params[i];
        if (!p->data) continue;
        int64_t n = 1;
        for (int d = 0; d < p->ndim; d++) n *= p->shape[d];
        int64_t j = kd_first_nonfinite(p->data, n);
        if (j >= 0)
            return kd_errf(err, "%s: tensor '%s': element %lld is %g, expected finite weights", file, p->name,
                           (long long)j, (double)p->data[j]);
    }
    return 0;
}
