/*
 * kd_awq_run.c — `kd quantize` at the checkpoint level (see kd_awq.h):
 * calibration tokens from a teacher dump or a text file, the quantized
 * checkpoint and its quantize.json record, and the evaluation of a
 * (pseudo-)quantized model against its FP32 original (perplexity, KL over the
 * full vocabulary, top-1 agreement).
 */
#include "quant/kd_awq.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kd_kernels.h"
#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_time.h"
#include "data/kd_tokenizer.h"
#include "student/kd_checkpoint.h"
#include "format/kd_gguf.h"
#include "data/kd_dump.h"
#include "data/kd_dump_tok.h"

void kd_quantize_opts_init(kd_quantize_opts *o) {
    memset(o, 0, sizeof *o);
    o->samples = 0;
    kd_awq_opts_init(&o->awq);
}

/* ---- calibration tokens ---------------------------------------------------------------------- */

static int calib_from_dump(const char *path, int64_t *n, int64_t *T, int32_t **tokens, kd_err *err) {
    kd_dump *d = kd_dump_open(path, err);
    if (!d) return -1;
    const kd_dump_meta *m = kd_dump_get_meta(d);
    const int64_t T1 = (int64_t)m->seq_len + 1, have = m->n_seq;
    int32_t *one = NULL;
    int rc = -1;
    if (have < 1) {
        kd_errf(err, "%s: the dump holds no sequences", path);
        goto done;
    }
    if (*T <= 0) *T = T1 < 512 ? T1 : 512;
    if (*n <= 0) *n = (KD_AWQ_CALIB_TOKENS + *T - 1) / *T;
    if (*T > T1) {
        kd_errf(err, "%s: --seq %" PRId64 " exceeds the dump's %" PRId64 " tokens per sequence", path, *T, T1);
        goto done;
    }
    if (*n > have) *n = have;
    one = malloc((size_t)T1 * sizeof *one);
    *tokens = malloc((size_t)(*n * *T) * sizeof **tokens);
    if (!one || !*tokens) {
        kd_errf(err, "%s: out of memory for %" PRId64 " sequences", path, *n);
        goto done;
    }
    for (int64_t i = 0; i < *n; i++) {   /* evenly spaced over the dump */
        kd_dump_rows rows = {.tokens = one};
        if (kd_dump_read(d, i * have / *n, 1, &rows, err)) goto done;
        memcpy(*tokens + i * *T, one, (size_t)*T * sizeof **tokens);
    }
    rc = 0;
done:
    if (rc) {
        free(*tokens);
        *tokens = NULL;
    }
    free(one);
    kd_dump_close(d);
    return rc;
}

static int calib_from_text(const char *path, const char *tok_path, int64_t *n, int64_t *T, int32_t **tokens,
                           kd_err *err) {
    size_t len;
    char *text = kd_read_file(path, &len, err);
    if (!text) return -1;
    kd_tokenizer *tok = kd_tokenizer_open(tok_path, err);   /* tokenizer.bin or tokenizer.h5 */
    kd_tokens ids = {0};
    int rc = -1;
    if (!tok || kd_tokenizer_encode(tok, text, len, KD_TOK_ENC_ADD_SPECIAL, &ids, err)) goto done;
    if (*T <= 0) *T = 512;
    if (*n <= 0) *n = (KD_AWQ_CALIB_TOKENS + *T - 1) / *T;
    int64_t blocks = (int64_t)ids.n / *T;
    if (blocks < 1) {
        kd_errf(err, "%s: %zu tokens, fewer than one sequence of --seq %" PRId64, path, ids.n, *T);
        goto done;
    }
    if (*n > blocks) *n = blocks;
    if (!(*tokens = malloc((size_t)(*n * *T) * sizeof **tokens))) {
        kd_errf(err, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < *n; i++) memcpy(*tokens + i * *T, ids.ids + (i * blocks / *n) * *T, (size_t)*T * sizeof(int32_t));
    rc = 0;
done:
    if (rc && tok_path && !tok) kd_err_prefix(err, "calibration text needs the model's tokenizer");
    kd_tokens_free(&ids);
    kd_tokenizer_free(tok);
    free(text);
    return rc;
}

int kd_calib_tokens(const char *dump, const char *text, const char *tokenizer, int64_t vocab, int64_t *n,
                    int64_t *T, int32_t **tokens, kd_err *err) {
    *tokens = NULL;
    if (*n < 0) return kd_errf(err, "calibration samples %" PRId64 " must be ≥ 1 (0: %d tokens' worth)", *n, KD_AWQ_CALIB_TOKENS);
    if ((dump != NULL) == (text != NULL)) return kd_errf(err, "give exactly one calibration source (a dump or a text file)");
    int rc = dump ? calib_from_dump(dump, n, T, tokens, err) : calib_from_text(text, tokenizer, n, T, tokens, err);
    for (int64_t i = 0; !rc && vocab > 0 && i < *n * *T; i++)
        if ((*tokens)[i] < 0 || (*tokens)[i] >= vocab) {
            kd_errf(err, "%s: calibration token %" PRId32 " (sequence %" PRId64 ", position %" PRId64
                    ") is outside the model's vocabulary [0, %" PRId64 ") — a dump of another tokenizer?",
                    dump ? dump : text, (*tokens)[i], i / *T, i % *T, vocab);
            free(*tokens);
            *tokens = NULL;
            rc = -1;
        }
    return rc;
}

/* ---- the command ------------------------------------------------------------------------------ */

static int copy_file(const char *from, const char *to, kd_err *err) {
    size_t len;
    char *b = kd_read_file(from, &len, err);
    if (!b) return -1;
    int rc = kd_write_file_atomic(to, b, len, err);
    free(b);
    return rc;
}

/* The type each 2-D tensor gets: its export type, or the reference int4 for decoder linears. */
static cJSON *tensor_types(const kd_model *m, const kd_awq_opts *o) {
    cJSON *t = cJSON_CreateObject();
    char ref[32];
    snprintf(ref, sizeof ref, "int4-asym-g%d", o->group_size);
    for (int i = 0; i < m->n_params; i++) {
        const kd_tensor *p = m->params[i];
        if (p->ndim != 2) continue;
        if (o->group_size > 0)
            cJSON_AddStringToObject(t, p->name, strstr(p->name, "model.layers.") ? ref : "unchanged");
        else
            cJSON_AddStringToObject(t, p->name, kd_ggml_type_name(kd_awq_export_type(m, kd_awq_preset(o->format), p->name)));
    }
    return t;
}

int kd_quantize_checkpoint(const kd_quantize_opts *o, kd_err *err) {
    const kd_awq_opts *a = &o->awq;
    if (!o->model || !o->out) return kd_errf(err, "a model and an output directory are required");
    if (a->method == KD_QUANT_AWQ && !o->calib && !o->calib_text)
        return kd_errf(err, "AWQ needs calibration data (a teacher dump or a text file)");
    kd_model m;
    char path[4096], tok[4096], tok_h5[4096];
    if (kd_model_load(&m, o->model, err)) return -1;
    int32_t *tokens = NULL;
    int64_t n = o->samples, T = o->seq;
    cJSON *rec = cJSON_CreateObject();
    int rc = -1;
    double t0 = kd_now_s();
    if (kd_awq_check(&m, a, err)) goto done;
    if (kd_path_join(tok, sizeof tok, o->model, "tokenizer.bin", err)) goto done;
    int have_tok = kd_file_exists(tok);
    /* a byte-level BPE ("gpt2") tokenizer lives in tokenizer.h5 (data/kd_dump_tok.h) */
    if (kd_path_join(tok_h5, sizeof tok_h5, o->model, "tokenizer.h5", err)) goto done;
    int have_h5 = kd_file_exists(tok_h5);
    cJSON_AddStringToObject(rec, "method", a->method == KD_QUANT_AWQ ? "awq" : "rtn");
    if (a->group_size > 0) {
        cJSON_AddNumberToObject(rec, "group_size", a->group_size);
    } else {
        cJSON_AddStringToObject(rec, "format", a->format);
        cJSON_AddStringToObject(rec, "export_preset", kd_awq_preset(a->format));
    }
    cJSON_AddStringToObject(rec, "quantizer", a->group_size > 0 ? "reference int4 asymmetric (llm-awq)"
                                                                : "ggml reference quantizer of each tensor's export type");
    cJSON_AddStringToObject(rec, "source", o->model);
    if (a->method == KD_QUANT_AWQ) {
        if (kd_calib_tokens(o->calib, o->calib_text, have_h5 ? tok_h5 : have_tok ? tok : NULL, m.cfg.vocab_size, &n, &T,
                            &tokens, err))
            goto done;
        cJSON *c = cJSON_AddObjectToObject(rec, "calibration");
        cJSON_AddStringToObject(c, o->calib ? "dump" : "text", o->calib ? o->calib : o->calib_text);
        cJSON_AddNumberToObject(c, "samples", (double)n);
        cJSON_AddNumberToObject(c, "seq", (double)T);
        cJSON_AddNumberToObject(c, "tokens", (double)(n * T));
        cJSON_AddNumberToObject(rec, "n_grid", a->n_grid);
        cJSON_AddBoolToObject(rec, "clip", a->clip);
        cJSON_AddNumberToObject(rec, "clip_tokens", (double)a->clip_tokens);
        cJSON_AddNumberToObject(rec, "max_shrink", a->max_shrink);
        if (a->progress) {
            kd_awq_progress p = {a->group_size > 0 ? "int4 (reference)" : a->format, n, T, 0, 0, 0, 0, NULL, 0, 0};
            a->progress(a->progress_ctx, &p);
        }
    }
    cJSON_AddItemToObject(rec, "tensors", tensor_types(&m, a));
    if (kd_awq_quantize(&m, tokens, n, T, a, rec, err)) goto done;
    cJSON_AddNumberToObject(rec, "seconds", kd_now_s() - t0);
    if (kd_checkpoint_save(&m, o->out, err)) goto done;
    if (have_tok && (kd_path_join(path, sizeof path, o->out, "tokenizer.bin", err) || copy_file(tok, path, err)))
        goto done;
    if (have_h5 && (kd_path_join(path, sizeof path, o->out, "tokenizer.h5", err) || copy_file(tok_h5, path, err)))
        goto done;
    if (have_tok || have_h5) {   /* tokenizer.json + tokenizer_config.json beside it, for transformers */
        kd_tokenizer *t = NULL;
        if (kd_tokenizer_load_dir(o->out, &t, err)) goto done;
        if (t) kd_tokenizer_save_hf_or_warn(t, o->out);
        kd_tokenizer_free(t);
    }
    if (kd_path_join(path, sizeof path, o->out, "quantize.json", err) || kd_json_write_atomic(path, rec, err)) goto done;
    rc = 0;
done:
    cJSON_Delete(rec);
    free(tokens);
    kd_model_free(&m);
    return rc;
}

/* ---- evaluation ------------------------------------------------------------------------------ */

#define EVAL_BATCH 8

int kd_quant_evaluate(kd_model *ref, kd_model *m, const char *dump, int64_t max_seq, kd_quant_eval *out,
                      kd_err *err) {
    memset(out, 0, sizeof *out);
    if (ref->cfg.vocab_size != m->cfg.vocab_size)
        return kd_errf(err, "vocabularies differ: %" PRId64 " vs %" PRId64, ref->cfg.vocab_size, m->cfg.vocab_size);
    kd_dump *d = kd_dump_open(dump, err);
    if (!d) return -1;
    const kd_dump_meta *meta = kd_dump_get_meta(d);
    const int64_t T = meta->seq_len, T1 = T + 1, V = m->cfg.vocab_size;
    int64_t n_seq = max_seq > 0 && max_seq < meta->n_seq ? max_seq : meta->n_seq;
    int32_t *tok = malloc((size_t)(EVAL_BATCH * T1) * sizeof *tok), *in = malloc((size_t)(EVAL_BATCH * T) * sizeof *in);
    uint8_t *mask = malloc((size_t)(EVAL_BATCH * T));
    kd_graph g1, g2;
    int rc = -1, g_ok = 0;
    double ce = 0, kl = 0, agree = 0;
    int64_t count = 0;
    if (!tok || !in || !mask) {
        kd_errf(err, "out of memory");
        goto done;
    }
    if (T > m->cfg.max_position_embeddings || T > ref->cfg.max_position_embeddings) {
        kd_errf(err, "%s: sequences of %" PRId64 " positions exceed the model's context", dump, T);
        goto done;
    }
    if (kd_graph_init(&g1, 1 << 20, err)) goto done;
    if (kd_graph_init(&g2, 1 << 20, err)) {
        kd_graph_free(&g1);
        goto done;
    }
    g_ok = 1;
    g1.no_grad = g2.no_grad = 1;
    for (int64_t s0 = 0; s0 < n_seq; s0 += EVAL_BATCH) {
        int64_t B = n_seq - s0 < EVAL_BATCH ? n_seq - s0 : EVAL_BATCH;
        kd_dump_rows rows = {.tokens = tok, .loss_mask = mask};
        if (kd_dump_read(d, s0, B, &rows, err)) goto done;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T1; t++)
                if (tok[b * T1 + t] < 0 || tok[b * T1 + t] >= V) {
                    kd_errf(err, "%s: token %" PRId32 " (sequence %" PRId64 ") outside the vocabulary [0, %" PRId64 ")",
                            dump, tok[b * T1 + t], s0 + b, V);
                    goto done;
                }
        for (int64_t b = 0; b < B; b++) memcpy(in + b * T, tok + b * T1, (size_t)T * sizeof *in);
        kd_graph_reset(&g1);
        kd_graph_reset(&g2);
        const float *lr = kd_model_logits(&g1, ref, in, B, T)->data, *lm = kd_model_logits(&g2, m, in, B, T)->data;
#pragma omp parallel for reduction(+ : ce, kl, agree, count) schedule(dynamic, 16)
        for (int64_t i = 0; i < B * T; i++) {
            int64_t b = i / T, t = i % T;
            if (!mask[b * T + t]) continue;
            const float *r = lr + i * V, *q = lm + i * V;
            float lse_r = kd_logsumexp(r, V), lse_q = kd_logsumexp(q, V);
            int64_t ar = 0, aq = 0;
            double k = 0;
            for (int64_t v = 0; v < V; v++) {
                double lpr = (double)r[v] - lse_r, lpq = (double)q[v] - lse_q;
                k += exp(lpr) * (lpr - lpq);
                ar = r[v] > r[ar] ? v : ar;
                aq = q[v] > q[aq] ? v : aq;
            }
            ce += (double)lse_q - (double)q[tok[b * T1 + t + 1]];
            kl += k;
            agree += ar == aq;
            count++;
        }
    }
    if (!count) {
        kd_errf(err, "%s: no unmasked positions to evaluate", dump);
        goto done;
    }
    out->tokens = count;
    out->ce = ce / (double)count;
    out->ppl = exp(out->ce);
    out->kl = kl / (double)count;
    out->top1 = agree / (double)count;
    rc = 0;
done:
    if (g_ok) {
        kd_graph_free(&g1);
        kd_graph_free(&g2);
    }
    free(tok), free(in), free(mask);
    kd_dump_close(d);
    return rc;
}
