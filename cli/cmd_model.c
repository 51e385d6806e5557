/*
 * cmd_model.c — model subcommands: `kd init`, `kd import llama2c`, `kd logits`.
 * None of them trains, so every model here is made without gradient buffers
 * (KD_MODEL_NO_GRAD; kd_model_load does that by default).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "core/kd_file.h"
#include "data/kd_dump_tok.h"
#include "data/kd_tokenizer.h"
#include "student/kd_checkpoint.h"
#include "infer/kd_infer.h"
#include "student/kd_llama2c.h"

/* ---- kd init ------------------------------------------------------------------ */
int kd_cmd_init(int argc, char **argv) {
    static const char *const DTYPES[] = {"f32", "bf16", "f16", NULL};
    static const kd_st_dtype DTYPE_OF[] = {KD_ST_F32, KD_ST_BF16, KD_ST_F16};
    const char *config = NULL, *out = NULL;
    int64_t seed = 1234;
    int dtype_i = 0;
    const kd_opt opts[] = {
        {"--config", KD_OPT_STRING, &config, "C.json", .help = "the architecture (a model config)", .flags = KD_OPT_REQUIRED},
        {"--out", KD_OPT_STRING, &out, "DIR", .help = "the checkpoint directory to write", .flags = KD_OPT_REQUIRED},
        {"--seed", KD_OPT_INT, &seed, "S", .help = "initialisation seed: same seed, same weights", .lo = 0, .hi = INT64_MAX},
        {"--dtype", KD_OPT_CHOICE, &dtype_i, NULL,
         .help = "stores the weights as F32, BF16 or F16 (half the file; every\n"
                 "kd command loads it, converted to F32)",
         .choices = DTYPES},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("init", opts);
        printf("\nWrites a freshly initialised student checkpoint (config.json + model.safetensors\n"
               "in Hugging Face Llama layout) for the architecture in C.json.\n"
               "Initialisation: linear and embedding weights ~ N(0, 0.02^2), the residual output\n"
               "projections (o_proj, down_proj) scaled by 1/sqrt(2*layers); RMSNorm weights 1.\n"
               "Memory: the F32 weights only (no gradients), 12 GiB for configs/student-3b.json.\n\n");
        kd_opts_help(opts);
        return 0;
    }
    int st = kd_opts_parse("init", opts, argc, argv);
    if (st) return st;
    kd_st_dtype dtype = DTYPE_OF[dtype_i];
    kd_err err;
    kd_config cfg;
    kd_model m;
    if (kd_config_load(&cfg, config, &err) || kd_model_new_flags(&m, &cfg, KD_MODEL_NO_GRAD, &err)) {
        fprintf(stderr, "kd init: %s\n", err.msg);
        return 1;
    }
    kd_model_init(&m, (uint64_t)seed);
    int rc = kd_checkpoint_save_as(&m, out, dtype, &err);
    if (rc) fprintf(stderr, "kd init: %s\n", err.msg);
    else printf("wrote %s (%.2fM parameters)\n", out, (double)kd_config_n_params(&cfg) * 1e-6);
    kd_model_free(&m);
    return rc ? 1 : 0;
}

/* ---- kd import llama2c --------------------------------------------------------- */
int kd_cmd_import(int argc, char **argv) {
    const char *model = NULL, *tok = NULL, *out = NULL;
    const kd_opt opts[] = {
        {"--model", KD_OPT_STRING, &model, "X.bin", .help = "the llama2.c checkpoint", .flags = KD_OPT_REQUIRED},
        {"--tokenizer", KD_OPT_STRING, &tok, "tok.bin", .help = "its tokenizer, stored in DIR as tokenizer.bin"},
        {"--out", KD_OPT_STRING, &out, "DIR", .help = "the checkpoint directory to write", .flags = KD_OPT_REQUIRED},
        {0}};
    if (kd_cli_wants_help(argc, argv) || argc < 2 || strcmp(argv[1], "llama2c") != 0) {
        kd_opts_usage("import llama2c", opts);
        printf("\nConverts a llama2.c checkpoint into a kd checkpoint directory (Hugging Face\n"
               "layout: q/k rows permuted from llama2.c's adjacent-pair RoPE to rotate_half).\n"
               "The tokenizer, when given, is stored in the directory as tokenizer.bin.\n\n");
        kd_opts_help(opts);
        return kd_cli_wants_help(argc, argv) ? 0 : 2;
    }
    int st = kd_opts_parse("import llama2c", opts, argc - 1, argv + 1);
    if (st) return st;
    kd_err err;
    kd_model m;
    if (kd_llama2c_load_flags(&m, model, KD_MODEL_NO_GRAD, &err)) {
        fprintf(stderr, "kd import: %s\n", err.msg);
        return 1;
    }
    /* the tokenizer is parsed (and checked against the model) before anything is written */
    size_t len = 0;
    char *bytes = tok ? kd_read_file(tok, &len, &err) : NULL;
    kd_tokenizer *parsed = bytes ? kd_tokenizer_parse_llama2c(bytes, len, tok, &err) : NULL;
    int rc = tok && !parsed;
    if (rc && bytes) kd_err_prefix(&err, "--tokenizer: not a llama2.c tokenizer.bin");
    if (!rc && parsed && kd_tokenizer_n_vocab(parsed) != m.cfg.vocab_size)
        rc = kd_errf(&err, "--tokenizer %s: %d pieces, expected the model's vocab_size %lld (%s)", tok,
                     kd_tokenizer_n_vocab(parsed), (long long)m.cfg.vocab_size, model);
    if (!rc) rc = kd_checkpoint_save(&m, out, &err);
    if (!rc && tok) {
        char path[4096];
        rc = kd_path_join(path, sizeof path, out, "tokenizer.bin", &err) ||
             kd_write_file_atomic(path, bytes, len, &err);
        if (!rc) kd_tokenizer_save_hf_or_warn(parsed, out);   /* + tokenizer.json for transformers */
    }
    kd_tokenizer_free(parsed);
    free(bytes);
    if (rc) fprintf(stderr, "kd import: %s\n", err.msg);
    else printf("wrote %s (%.2fM parameters)\n", out, (double)kd_config_n_params(&m.cfg) * 1e-6);
    kd_model_free(&m);
    return rc ? 1 : 0;
}

/* ---- kd logits ------------------------------------------------------------------- */
static int parse_tokens(const char *s, int32_t **out, int64_t *n) {
    int64_t cap = 16, cnt = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return -1;
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t') s++;
        if (!*s) break;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX) {
            free(ids);
            return -1;
        }
        if (cnt == cap) {
            int32_t *nb = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!nb) { free(ids); return -1; }
            ids = nb;
        }
        ids[cnt++] = (int32_t)v;
        s = end;
    }
    *out = ids;
    *n = cnt;
    return 0;
}

static int is_gguf(const char *path) {
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int ok = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
    fclose(f);
    return ok;
}

int kd_cmd_logits(int argc, char **argv) {
    const char *model = NULL, *tokens = NULL, *out = NULL;
    const kd_opt opts[] = {
        {"--model", KD_OPT_STRING, &model, "M", .help = "a checkpoint directory, a llama2.c .bin or a GGUF file",
         .flags = KD_OPT_REQUIRED},
        {"--tokens", KD_OPT_STRING, &tokens, "\"1 5 9 ...\"", .help = "the token ids, separated by spaces",
         .flags = KD_OPT_REQUIRED},
        {"--out", KD_OPT_STRING, &out, "FILE", .help = "the logits file to write", .flags = KD_OPT_REQUIRED},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("logits", opts);
        printf("\nRuns one sequence through model M (a checkpoint directory or a llama2.c .bin,\n"
               "through the training forward; a GGUF file, through the inference engine)\n"
               "and writes the raw logits as float32 [n_tokens, vocab], little-endian,\n"
               "row-major: row t holds the logits predicting token t+1.\n\n");
        kd_opts_help(opts);
        return 0;
    }
    int st = kd_opts_parse("logits", opts, argc, argv);
    if (st) return st;
    int32_t *ids;
    int64_t n;
    if (parse_tokens(tokens, &ids, &n) || n == 0) {
        fprintf(stderr, "kd logits: --tokens: expected non-negative integer ids separated by spaces\n");
        return 2;
    }
    kd_err err;
    if (is_gguf(model)) {   /* the inference engine runs GGUF files in their own types */
        kd_infer_opts o;
        kd_infer_opts_init(&o);
        o.n_ctx = n;
        kd_infer *e = kd_infer_open(model, &o, &err);
        float *lg = e ? malloc((size_t)n * (size_t)e->V * sizeof *lg) : NULL;
        int bad = !e || (!lg && kd_errf(&err, "out of memory")) || kd_infer_eval(e, ids, n, lg, 1, NULL, &err) ||
                  kd_write_file_atomic(out, lg, (size_t)n * (size_t)e->V * sizeof *lg, &err);
        if (bad) fprintf(stderr, "kd logits: %s\n", err.msg);
        free(lg);
        kd_infer_close(e);
        free(ids);
        return bad ? 1 : 0;
    }
    kd_model m;
    if (kd_model_load(&m, model, &err)) {
        fprintf(stderr, "kd logits: %s\n", err.msg);
        free(ids);
        return 1;
    }
    int rc = 1;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= m.cfg.vocab_size) {
            fprintf(stderr, "kd logits: token %d at position %lld is outside the vocabulary (%lld)\n", ids[i],
                    (long long)i, (long long)m.cfg.vocab_size);
            goto done;
        }
    kd_graph g;
    if (kd_graph_init(&g, 0, &err)) goto done;
    g.no_grad = 1;
    kd_tensor *logits = kd_model_logits(&g, &m, ids, 1, n);
    if (kd_write_file_atomic(out, logits->data, (size_t)logits->n * sizeof(float), &err))
        fprintf(stderr, "kd logits: %s\n", err.msg);
    else
        rc = 0;
    kd_graph_free(&g);
done:
    kd_model_free(&m);
    free(ids);
    return rc;
}
