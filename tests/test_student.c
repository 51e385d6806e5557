/*
 * test_student.c — the Llama student against an independent PyTorch
 * implementation (tests/py/llama_ref.py): logits ≤ 1e-4 relative error and
 * every parameter's CE gradient ≤ 1e-3, for a tiny config and a GQA +
 * sliding-window config (tied and untied heads); the imported llama2.c
 * aidreams260K against llama2.c's own forward (tests/py/llama2c_ref.py);
 * checkpoint round trips; and clear errors for bad configs and checkpoints.
 * Models loaded for inference (KD_MODEL_NO_GRAD, kd_model_load) have no
 * gradient buffers, record no tape and give bit-identical logits; a frozen
 * parameter inside a graph that trains something else is never written to.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_fp16.h"
#include "format/kd_safetensors.h"
#include "student/kd_checkpoint.h"
#include "student/kd_llama2c.h"

static void make_config(kd_config *c, int64_t C, int64_t F, int64_t L, int64_t H, int64_t Hkv, int64_t V,
                        int64_t window, int tied) {
    kd_config_defaults(c);
    c->hidden_size = C;
    c->intermediate_size = F;
    c->num_hidden_layers = L;
    c->num_attention_heads = H;
    c->num_key_value_heads = Hkv;
    c->head_dim = C / H;
    c->vocab_size = V;
    c->max_position_embeddings = 128;
    c->sliding_window = window;
    c->tie_word_embeddings = tied;
    c->rope_theta = 10000.0;
    c->rms_norm_eps = 1e-5;
}

/* Relative error of a against reference b, scaled by max|b|. */
static double rel_err(const float *a, const float *b, int64_t n) {
    double m = 0, e = 0;
    for (int64_t i = 0; i < n; i++) {
        m = fmax(m, fabs(b[i]));
        e = fmax(e, fabs((double)a[i] - b[i]));
    }
    return m > 0 ? e / m : e;
}

static void parity(const char *what, const kd_config *cfg, int64_t B, int64_t T) {
    kd_err err;
    kd_model m;
    assert_int_equal(kd_model_new(&m, cfg, &err), 0);
    kd_model_init(&m, 7);
    /* larger weights than the training init, so attention and the MLP are far from uniform */
    for (int i = 0; i < m.n_params; i++)
        if (m.params[i]->ndim == 2)
            for (int64_t j = 0; j < m.params[i]->n; j++) m.params[i]->data[j] *= 8.0f;
        else
            for (int64_t j = 0; j < m.params[i]->n; j++) m.params[i]->data[j] = 1.0f + 0.1f * (float)((j * 7) % 5 - 2);
    char dir[600], in[700], out[700];
    snprintf(dir, sizeof dir, "%s/%s", kd_test_tmpdir(), what);
    snprintf(in, sizeof in, "%s/io.safetensors", dir);
    snprintf(out, sizeof out, "%s/ref.safetensors", dir);
    assert_int_equal(kd_checkpoint_save(&m, dir, &err), 0);

    int32_t *tok = malloc((size_t)(B * T) * sizeof(int32_t)), *tgt = malloc((size_t)(B * T) * sizeof(int32_t));
    kd_rng r;
    kd_rng_seed(&r, 3);
    for (int64_t i = 0; i < B * T; i++) {
        tok[i] = (int32_t)kd_rng_below(&r, (uint64_t)cfg->vocab_size);
        tgt[i] = i % 5 == 4 ? KD_IGNORE_INDEX : (int32_t)kd_rng_below(&r, (uint64_t)cfg->vocab_size);
    }
    kd_st_writer *w = kd_st_writer_new(&err);
    int64_t shape[2] = {B, T};
    assert_int_equal(kd_st_writer_add(w, "tokens", KD_ST_I32, 2, shape, tok, &err), 0);
    assert_int_equal(kd_st_writer_add(w, "targets", KD_ST_I32, 2, shape, tgt, &err), 0);
    assert_int_equal(kd_st_writer_save(w, in, &err), 0);
    kd_st_writer_free(w);
    assert_int_equal(kd_test_python("llama_ref.py", "'%s' '%s' '%s'", dir, in, out), 0);

    kd_graph g;
    kd_graph_init(&g, 0, &err);
    kd_model_zero_grad(&m);
    kd_tensor *logits = kd_model_logits(&g, &m, tok, B, T);
    int64_t lshape[2] = {B * T, cfg->vocab_size};
    (void)lshape;
    kd_tensor *loss = kd_cross_entropy(&g, logits, tgt, KD_IGNORE_INDEX);
    kd_graph_backward(&g, loss);

    kd_st_file *ref = kd_st_open(out, &err);
    assert_non_null(ref);
    float *buf = malloc((size_t)logits->n * sizeof(float));
    assert_int_equal(kd_st_read_f32(ref, "logits", buf, logits->ndim, logits->shape, &err), 0);
    double e = rel_err(logits->data, buf, logits->n);
    fprintf(stderr, "%s: logits relative error %.2e\n", what, e);
    assert_true(e <= 1e-4);
    float lref;
    int64_t one = 1;
    assert_int_equal(kd_st_read_f32(ref, "loss", &lref, 1, &one, &err), 0);
    assert_true(fabs(loss->data[0] - lref) <= 1e-4 * fabs(lref));
    double worst = 0;
    for (int i = 0; i < m.n_params; i++) {
        kd_tensor *p = m.params[i];
        char name[128];
        snprintf(name, sizeof name, "grad.%s", p->name);
        float *gr = malloc((size_t)p->n * sizeof(float));
        assert_int_equal(kd_st_read_f32(ref, name, gr, p->ndim, p->shape, &err), 0);
        double ge = rel_err(p->grad, gr, p->n);
        if (ge > 1e-3) fprintf(stderr, "%s: %s relative error %.2e\n", what, name, ge);
        worst = fmax(worst, ge);
        free(gr);
    }
    fprintf(stderr, "%s: worst parameter-gradient relative error %.2e over %d tensors\n", what, worst, m.n_params);
    assert_true(worst <= 1e-3);
    free(buf);
    kd_st_close(ref);
    kd_graph_free(&g);
    free(tok);
    free(tgt);
    kd_model_free(&m);
}

static void test_parity_tiny(void **state) {
    (void)state;
    kd_config c;
    make_config(&c, 64, 160, 2, 4, 4, 97, 0, 1);
    parity("tiny", &c, 2, 24);
}

static void test_parity_gqa_window(void **state) {
    (void)state;
    kd_config c;
    make_config(&c, 64, 128, 2, 8, 2, 80, 7, 0);
    parity("gqa_window", &c, 2, 80);       /* T > one attention query block (64) */
}

/* Llama 3.1 RoPE scaling (and linear) through forward and backward: llama_ref.py
 * computes the frequencies from config.json as transformers does. */
static void test_parity_rope_scaled(void **state) {
    (void)state;
    kd_config c;
    make_config(&c, 64, 128, 2, 2, 1, 80, 0, 0);   /* head dim 32: several dims in each llama3 band */
    c.rope_type = KD_ROPE_TYPE_LLAMA3, c.rope_factor = 8.0, c.rope_low_freq_factor = 1.0;
    c.rope_high_freq_factor = 8.0, c.rope_original_max_position_embeddings = 256;
    parity("rope_llama3", &c, 2, 40);
    make_config(&c, 64, 128, 2, 4, 2, 80, 0, 1);
    c.rope_type = KD_ROPE_TYPE_LINEAR, c.rope_factor = 3.0;
    parity("rope_linear", &c, 2, 24);
}

/* The imported aidreams260K against llama2.c's forward on the original file. */
static void test_llama2c_import(void **state) {
    (void)state;
    char bin[600], out[700], dir[700];
    snprintf(bin, sizeof bin, "%s/models/aidreams260K/aidreams260K.bin", kd_test_env("KD_DATA_DIR"));
    snprintf(out, sizeof out, "%s/l2c_ref.f32", kd_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/aidreams", kd_test_tmpdir());
    const char *toks = "1 403 407 261 378 280 30 432 360 271 311 292 46 13 1 82 29 290 7 511 2 3 100 200";
    assert_int_equal(kd_test_python("llama2c_ref.py", "'%s' '%s' '%s'", bin, toks, out), 0);
    /* through the command line, like a user */
    assert_int_equal(kd_test_sh("'%s' import llama2c --model '%s' --out '%s' >/dev/null", kd_test_env("KD_BIN"), bin, dir), 0);
    char mine[700];
    snprintf(mine, sizeof mine, "%s/kd.f32", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("'%s' logits --model '%s' --tokens '%s' --out '%s'", kd_test_env("KD_BIN"), dir, toks, mine), 0);
    size_t la, lb;
    float *a = (float *)kd_read_file(mine, &la, NULL), *b = (float *)kd_read_file(out, &lb, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(la, 24 * 512 * 4);
    assert_int_equal(la, lb);
    double e = rel_err(a, b, 24 * 512);
    fprintf(stderr, "aidreams260K import: logits relative error vs llama2.c %.2e\n", e);
    assert_true(e <= 1e-4);
    /* a real trained model: the argmax after BOS is a plausible start, not noise — its logit spread is wide */
    float mx = -1e30f, mn = 1e30f;
    for (int v = 0; v < 512; v++) { mx = fmaxf(mx, a[v]); mn = fminf(mn, a[v]); }
    assert_true(mx - mn > 5.0f);
    free(a);
    free(b);
    /* the llama2.c file loads directly too, with identical logits */
    snprintf(mine, sizeof mine, "%s/kd_direct.f32", kd_test_tmpdir());
    assert_int_equal(kd_test_sh("'%s' logits --model '%s' --tokens '%s' --out '%s'", kd_test_env("KD_BIN"), bin, toks, mine), 0);
    assert_int_equal(kd_test_sh("cmp -s '%s' '%s/kd.f32'", mine, kd_test_tmpdir()), 0);
}

static void test_rope_permutation(void **state) {
    (void)state;
    /* rows of one head (D = 8): pairs → half and back is the identity; the map is docs/gguf.md's (RoPE layout of q and k) */
    float w[8 * 2], orig[8 * 2];
    for (int i = 0; i < 16; i++) w[i] = orig[i] = (float)i;
    kd_rope_permute_rows(w, 1, 8, 2, 1);
    /* HF row j·4 + i = pairs row 2i + j: HF row 1 = pairs row 2, HF row 4 = pairs row 1 */
    assert_true(w[1 * 2] == orig[2 * 2]);
    assert_true(w[4 * 2] == orig[1 * 2]);
    assert_true(w[7 * 2 + 1] == orig[7 * 2 + 1]);
    kd_rope_permute_rows(w, 1, 8, 2, 0);
    assert_memory_equal(w, orig, sizeof w);
}

static void test_checkpoint_roundtrip(void **state) {
    (void)state;
    kd_config c;
    make_config(&c, 32, 64, 2, 4, 2, 50, 0, 0);
    kd_err err;
    kd_model a, b;
    assert_int_equal(kd_model_new(&a, &c, &err), 0);
    kd_model_init(&a, 11);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/rt", kd_test_tmpdir());
    assert_int_equal(kd_checkpoint_save(&a, dir, &err), 0);
    assert_int_equal(kd_checkpoint_load(&b, dir, &err), 0);
    assert_int_equal(a.n_params, b.n_params);
    for (int i = 0; i < a.n_params; i++) {
        assert_string_equal(a.params[i]->name, b.params[i]->name);
        assert_memory_equal(a.params[i]->data, b.params[i]->data, (size_t)a.params[i]->n * sizeof(float));
    }
    assert_true(b.cfg.num_key_value_heads == 2 && b.cfg.tie_word_embeddings == 0);
    /* same seed, same weights; another seed, other weights */
    kd_model d;
    kd_model_new(&d, &c, &err);
    kd_model_init(&d, 11);
    assert_memory_equal(d.params[2]->data, a.params[2]->data, (size_t)a.params[2]->n * sizeof(float));
    kd_model_init(&d, 12);
    assert_memory_not_equal(d.params[2]->data, a.params[2]->data, (size_t)a.params[2]->n * sizeof(float));
    kd_model_free(&d);
    kd_model_free(&b);

    /* a checkpoint with a missing tensor, an unexpected one, or a wrong shape is refused by name */
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    kd_st_writer *w = kd_st_writer_new(&err);
    for (int i = 1; i < a.n_params; i++)
        kd_st_writer_add(w, a.params[i]->name, KD_ST_F32, a.params[i]->ndim, a.params[i]->shape, a.params[i]->data, &err);
    kd_st_writer_save(w, path, &err);
    kd_st_writer_free(w);
    assert_int_equal(kd_checkpoint_load(&b, dir, &err), -1);
    assert_non_null(strstr(err.msg, "model.embed_tokens.weight"));
    assert_non_null(strstr(err.msg, "missing"));

    w = kd_st_writer_new(&err);
    for (int i = 0; i < a.n_params; i++)
        kd_st_writer_add(w, a.params[i]->name, KD_ST_F32, a.params[i]->ndim, a.params[i]->shape, a.params[i]->data, &err);
    int64_t s1 = 3;
    float junk[3] = {0};
    kd_st_writer_add(w, "model.layers.9.extra.weight", KD_ST_F32, 1, &s1, junk, &err);
    kd_st_writer_save(w, path, &err);
    kd_st_writer_free(w);
    assert_int_equal(kd_checkpoint_load(&b, dir, &err), -1);
    assert_non_null(strstr(err.msg, "model.layers.9.extra.weight"));

    w = kd_st_writer_new(&err);
    for (int i = 0; i < a.n_params; i++) {
        int64_t sh[2] = {a.params[i]->shape[0], a.params[i]->shape[1]};
        if (i == 2) sh[0] = 1, sh[1] = a.params[i]->n;   /* same bytes, wrong shape */
        kd_st_writer_add(w, a.params[i]->name, KD_ST_F32, a.params[i]->ndim, sh, a.params[i]->data, &err);
    }
    kd_st_writer_save(w, path, &err);
    kd_st_writer_free(w);
    assert_int_equal(kd_checkpoint_load(&b, dir, &err), -1);
    assert_non_null(strstr(err.msg, a.params[2]->name));
    kd_model_free(&a);
}

/* Logits [1, T, V] of tokens through the training forward, with a recording graph. */
static float *logits_of(kd_model *m, const int32_t *tok, int64_t T, int *n_nodes) {
    kd_err err;
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    kd_tensor *y = kd_model_logits(&g, m, tok, 1, T);
    float *out = malloc((size_t)y->n * sizeof *out);
    assert_non_null(out);
    memcpy(out, y->data, (size_t)y->n * sizeof *out);
    *n_nodes = g.n_nodes;
    kd_graph_free(&g);
    return out;
}

static void expect_nograd(const kd_model *m) {
    assert_int_equal(m->no_grad, 1);
    for (int i = 0; i < m->n_params; i++) {
        assert_null(m->params[i]->grad);
        assert_int_equal(m->params[i]->requires_grad, 0);
        assert_non_null(m->params[i]->data);
    }
}

static void test_nograd_load(void **state) {
    (void)state;
    kd_config c;
    make_config(&c, 32, 64, 2, 4, 2, 50, 0, 0);
    kd_err err;
    kd_model a, b, d;
    assert_int_equal(kd_model_new_flags(&a, &c, KD_MODEL_NO_GRAD, &err), 0);
    expect_nograd(&a);
    kd_model_init(&a, 21);
    char dir[600], dir16[600];
    snprintf(dir, sizeof dir, "%s/nograd", kd_test_tmpdir());
    snprintf(dir16, sizeof dir16, "%s/nograd_bf16", kd_test_tmpdir());
    assert_int_equal(kd_checkpoint_save(&a, dir, &err), 0);

    /* training-style load: every parameter has a zeroed gradient */
    assert_int_equal(kd_checkpoint_load(&b, dir, &err), 0);
    assert_int_equal(b.no_grad, 0);
    for (int i = 0; i < b.n_params; i++) {
        assert_non_null(b.params[i]->grad);
        assert_int_equal(b.params[i]->requires_grad, 1);
    }
    /* inference loads, explicit and through kd_model_load's default */
    assert_int_equal(kd_checkpoint_load_flags(&d, dir, KD_MODEL_NO_GRAD, &err), 0);
    expect_nograd(&d);
    kd_model e;
    assert_int_equal(kd_model_load(&e, dir, &err), 0);
    expect_nograd(&e);
    kd_model_free(&e);
    assert_int_equal(kd_model_load_flags(&e, dir, 0, &err), 0);
    assert_non_null(e.params[0]->grad);
    kd_model_free(&e);

    /* the same weights, the same logits to the bit; the no-grad model records no tape */
    const int32_t tok[7] = {1, 4, 9, 16, 25, 36, 49};
    int na, nb, nd;
    float *la = logits_of(&a, tok, 7, &na), *lb = logits_of(&b, tok, 7, &nb), *ld = logits_of(&d, tok, 7, &nd);
    assert_memory_equal(la, lb, 7 * 50 * sizeof(float));
    assert_memory_equal(ld, lb, 7 * 50 * sizeof(float));
    assert_int_equal(na, 0);
    assert_int_equal(nd, 0);
    assert_true(nb > 0);
    free(la);
    free(lb);
    free(ld);

    /* backward through a frozen parameter reaches the trainable input, never the parameter */
    kd_graph g;
    assert_int_equal(kd_graph_init(&g, 0, &err), 0);
    kd_tensor *x = kd_tensor_new2(&g, 3, 32, "x");
    for (int64_t i = 0; i < x->n; i++) x->data[i] = 0.01f * (float)(i % 17) - 0.05f;
    x->requires_grad = 1;
    kd_tensor *loss = kd_sum(&g, kd_linear(&g, x, d.layers[0].wq));
    kd_graph_backward(&g, loss);
    assert_non_null(x->grad);
    assert_null(d.layers[0].wq->grad);
    double gsum = 0;
    for (int64_t i = 0; i < x->n; i++) gsum += fabs(x->grad[i]);
    assert_true(gsum > 0);
    kd_graph_free(&g);
    kd_model_zero_grad(&d);   /* a no-op without buffers */

    /* BF16 checkpoint: half the bytes, loads as the BF16 rounding of every weight */
    assert_int_equal(kd_checkpoint_save_as(&a, dir16, KD_ST_BF16, &err), 0);
    kd_model h;
    assert_int_equal(kd_model_load(&h, dir16, &err), 0);
    expect_nograd(&h);
    for (int i = 0; i < a.n_params; i++)
        for (int64_t j = 0; j < a.params[i]->n; j++)
            assert_true(h.params[i]->data[j] == kd_bf16_to_f32(kd_f32_to_bf16(a.params[i]->data[j])));
    kd_model_free(&h);
    assert_int_equal(kd_checkpoint_save_as(&a, dir16, KD_ST_I8, &err), -1);
    assert_non_null(strstr(err.msg, "I8"));

    /* unknown flags are refused; a failed load leaves an empty model that frees */
    assert_int_equal(kd_model_new_flags(&e, &c, 4, &err), -1);
    assert_non_null(strstr(err.msg, "flags"));
    kd_model_free(&e);
    assert_int_equal(kd_model_load(&e, "/nonexistent/kd-model", &err), -1);
    kd_model_free(&e);

    /* kd init --dtype: BF16 on disk (same values as kd_checkpoint_save_as), bad values refused */
    char cli[700], path[800];
    snprintf(cli, sizeof cli, "%s/nograd_cli", kd_test_tmpdir());
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *kd = kd_test_env("KD_BIN");
    assert_int_equal(kd_test_sh("'%s' init --config '%s' --out '%s' --seed 5 --dtype bf16 >/dev/null", kd, path, cli), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", cli);
    kd_st_file *sf = kd_st_open(path, &err);
    assert_non_null(sf);
    for (int i = 0; i < sf->count; i++) assert_int_equal(sf->tensors[i].dtype, KD_ST_BF16);
    kd_st_close(sf);
    assert_int_equal(kd_model_load(&h, cli, &err), 0);
    assert_int_equal(kd_model_new(&e, &c, &err), 0);
    kd_model_init(&e, 5);
    for (int i = 0; i < e.n_params; i++)
        for (int64_t j = 0; j < e.params[i]->n; j++)
            assert_true(h.params[i]->data[j] == kd_bf16_to_f32(kd_f32_to_bf16(e.params[i]->data[j])));
    kd_model_free(&e);
    kd_model_free(&h);
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(kd_test_sh("'%s' init --config '%s' --out '%s' --dtype f8 2>/dev/null", kd, path, cli), 2);

    /* llama2.c import for inference: no gradients, same weights */
    char bin[600];
    snprintf(bin, sizeof bin, "%s/models/aidreams260K/aidreams260K.bin", kd_test_env("KD_DATA_DIR"));
    kd_model l0, l1;
    assert_int_equal(kd_llama2c_load(&l0, bin, &err), 0);
    assert_int_equal(kd_llama2c_load_flags(&l1, bin, KD_MODEL_NO_GRAD, &err), 0);
    expect_nograd(&l1);
    assert_non_null(l0.params[0]->grad);
    for (int i = 0; i < l0.n_params; i++)
        assert_memory_equal(l0.params[i]->data, l1.params[i]->data, (size_t)l0.params[i]->n * sizeof(float));
    kd_model_free(&l0);
    kd_model_free(&l1);

    kd_model_free(&a);
    kd_model_free(&b);
    kd_model_free(&d);
}

static void expect_config_error(const char *json, const char *needle) {
    kd_config c;
    kd_err err;
    int rc = kd_config_parse(&c, json, strlen(json), "cfg.json", &err);
    if (rc == 0 || !strstr(err.msg, needle)) fprintf(stderr, "config %s: got '%s', wanted '%s'\n", json, rc ? err.msg : "success", needle);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, needle));
    assert_non_null(strstr(err.msg, "cfg.json"));
}

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"vocab_size\": 100"

static void test_config_errors(void **state) {
    (void)state;
    expect_config_error("{" BASE ", \"num_attention_heads\": 5}", "does not divide hidden_size");
    expect_config_error("{" BASE ", \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", "num_key_value_heads 3 does not divide");
    expect_config_error("{\"hidden_size\": 0, \"intermediate_size\": 1, \"num_hidden_layers\": 1, \"num_attention_heads\": 1, \"vocab_size\": 5}", "hidden_size");
    expect_config_error("{\"intermediate_size\": 1, \"num_hidden_layers\": 1, \"num_attention_heads\": 1, \"vocab_size\": 5}", "hidden_size");
    expect_config_error("{" BASE ", \"num_attention_heads\": \"four\"}", "num_attention_heads");
    expect_config_error("{\"hidden_size\": 1000000, \"intermediate_size\": 1000000, \"num_hidden_layers\": 1000, \"num_attention_heads\": 1000, \"vocab_size\": 100}", "parameters");
    expect_config_error("{" BASE ", \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}", "hidden_act");
    expect_config_error("{" BASE ", \"num_attention_heads\": 4, \"bos_token_id\": 100}", "bos_token_id");
    expect_config_error("{" BASE ", \"num_attention_heads\": 4,", "cfg.json");
    kd_config c;
    const char *ok = "{" BASE ", \"num_attention_heads\": 4, \"sliding_window\": null, \"eos_token_id\": [2, 5]}";
    assert_int_equal(kd_config_parse(&c, ok, strlen(ok), "ok.json", NULL), 0);
    assert_true(c.sliding_window == 0 && c.head_dim == 16 && c.eos_token_id == 2);
}

static void test_llama2c_errors(void **state) {
    (void)state;
    char bin[600], cut[700];
    snprintf(bin, sizeof bin, "%s/models/aidreams260K/aidreams260K.bin", kd_test_env("KD_DATA_DIR"));
    snprintf(cut, sizeof cut, "%s/cut.bin", kd_test_tmpdir());
    size_t len;
    char *bytes = kd_read_file(bin, &len, NULL);
    assert_non_null(bytes);
    kd_err err;
    kd_model m;
    size_t lens[] = {0, 10, 28, 1000, len - 4, len + 4};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        char *b = calloc(1, lens[i] + 1);
        memcpy(b, bytes, lens[i] < len ? lens[i] : len);
        kd_write_file_atomic(cut, b, lens[i], NULL);
        assert_int_equal(kd_llama2c_load(&m, cut, &err), -1);
        assert_non_null(strstr(err.msg, "cut.bin"));
        free(b);
    }
    /* a hostile header (negative layers) */
    int32_t bad = -4;
    memcpy(bytes + 8, &bad, 4);
    kd_write_file_atomic(cut, bytes, len, NULL);
    assert_int_equal(kd_llama2c_load(&m, cut, &err), -1);
    assert_non_null(strstr(err.msg, "n_layers"));
    free(bytes);
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parity_tiny),       cmocka_unit_test(test_parity_gqa_window),
        cmocka_unit_test(test_parity_rope_scaled),
        cmocka_unit_test(test_llama2c_import),    cmocka_unit_test(test_rope_permutation),
        cmocka_unit_test(test_checkpoint_roundtrip), cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_llama2c_errors),    cmocka_unit_test(test_nograd_load),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
