/*
 * cmd_infer.c — inference subcommands on the engine (infer/kd_infer.h):
 *   kd run   generate text from a prompt
 *   kd eval  perplexity (and KL / top-1 agreement against a teacher dump)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/kd_kernels.h"
#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "core/kd_file.h"
#include "core/kd_mem.h"
#include "data/kd_tokenizer_bpe.h"
#include "infer/kd_infer.h"
#include "data/kd_dump.h"
#include "data/kd_loader.h"
#include "train/kd_eval.h"

/* ---- kd run ------------------------------------------------------------------------ */

typedef struct run_out {
    kd_infer *e;
    int ids;          /* print ids instead of text */
    int64_t count;
} run_out;

static int on_token(void *user, int32_t id) {
    run_out *r = user;
    if (r->ids) printf("%s%d", r->count ? " " : "", id);
    else {
        char buf[512];
        int64_t n = kd_tokenizer_decode_token(r->e->tok, id, 0, buf, sizeof buf, NULL);
        if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    }
    r->count++;
    fflush(stdout);
    return 0;
}

/* "12 7 99" (spaces or commas) → ids, each in [0, V). */
static int parse_prompt_ids(const char *s, int64_t V, kd_tokens *out, kd_err *err) {
    const char *p = s;
    while (*p) {
        char *end;
        if (*p == ' ' || *p == ',' || *p == '\t') {
            p++;
            continue;
        }
        long long v = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ' ' && *end != ',' && *end != '\t'))
            return kd_errf(err, "--prompt-ids '%s': expected token ids separated by spaces or commas", s);
        if (v < 0 || v >= V) return kd_errf(err, "--prompt-ids: id %lld out of range [0, %lld)", v, (long long)V);
        if (kd_tokens_push(out, (int32_t)v, err)) return -1;
        p = end;
    }
    return 0;
}

int kd_cmd_run(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *prompt_ids = NULL, *tokp = NULL;
    int64_t n_new = 256, top_k = 40, seed = 1234, ctx = 0;
    double temp = 0.8, top_p = 0.95;
    int ids = 0, fast = 0;
    char ctx_def[64];
    snprintf(ctx_def, sizeof ctx_def, "default: the model's context, at most %d", KD_INFER_MAX_CTX_DEFAULT);
    const kd_opt opts[] = {
        {"--model", KD_OPT_STRING, &model, "FILE|DIR", .help = "a GGUF file, a checkpoint directory or a llama2.c .bin",
         .flags = KD_OPT_REQUIRED},
        {"--prompt", KD_OPT_STRING, &prompt, "TEXT", .help = "the prompt, encoded after a BOS token",
         .flags = KD_OPT_REQUIRED},
        {"--prompt-ids", KD_OPT_STRING, &prompt_ids, "IDS",
         .help = "the prompt as token ids (\"1 15043 3186\"), used as they are (no BOS\n"
                 "added): for tokenizers kd decodes but cannot encode (a \"gpt2\" tokenizer\n"
                 "whose pre-tokenizer llama.cpp does not know)",
         .flags = KD_OPT_ALT},
        {"-n", KD_OPT_INT, &n_new, "N", .help = "tokens to sample at most (stopping at EOS)", .lo = 0, .hi = 1 << 24},
        {"--temp", KD_OPT_DOUBLE, &temp, "T", .help = "temperature; 0 = greedy: the most likely token", .range = "[0, inf)"},
        {"--top-k", KD_OPT_INT, &top_k, "K", .help = "keep the K most likely tokens; 0 = all", .lo = 0, .hi = INT32_MAX},
        {"--top-p", KD_OPT_DOUBLE, &top_p, "P", .help = "then the smallest set reaching probability P; 1 = all",
         .range = "(0, 1]"},
        {"--seed", KD_OPT_INT, &seed, "S", .help = "sampling seed: same seed, same text", .lo = 0, .hi = INT64_MAX},
        {"--ids", KD_OPT_FLAG, &ids, NULL, .help = "print the generated token ids instead of text"},
        {"--fast", KD_OPT_FLAG, &fast, NULL,
         .help = "llama.cpp's numerics: activations rounded to 8-bit blocks (F16/BF16\n"
                 "for such weights) and integer kernels; faster on quantized models.\n"
                 "Default: activations stay F32 (the exact quantized model)"},
        {"--tokenizer", KD_OPT_STRING, &tokp, "FILE", .help = "the tokenizer, when the model has none"},
        {"--ctx", KD_OPT_INT, &ctx, "N", .help = "KV cache size", .lo = 1, .hi = 1 << 24, .def = ctx_def},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("run", opts);
        printf("\nGenerates text with kd's inference engine from a GGUF file (any type kd exports,\n"
               "weights used in place), a checkpoint directory or a llama2.c .bin. The prompt is\n"
               "encoded with the model's tokenizer (GGUF metadata, DIR/tokenizer.h5, .bin or .json,\n"
               "or --tokenizer) after a BOS token; then up to N tokens are sampled, stopping at EOS.\n\n");
        kd_opts_help(opts);
        printf("\nstdout: the prompt and its continuation (or the ids); stderr: speed.\n");
        return 0;
    }
    int usage_rc = kd_opts_parse("run", opts, argc, argv);
    if (usage_rc) return usage_rc;
    kd_err err;
    kd_infer_opts o;
    kd_infer_opts_init(&o);
    o.n_ctx = ctx;
    o.tokenizer = tokp;
    o.ggml_rounding = fast;
    kd_infer *e = kd_infer_open(model, &o, &err);
    if (!e) {
        fprintf(stderr, "kd run: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    kd_tokens toks = {0};
    kd_sampler s = {0};
    if (!e->tok) {
        fprintf(stderr, "kd run: %s has no tokenizer: pass --tokenizer FILE\n", model);
        goto done;
    }
    char why[256];
    if (prompt && !kd_tokenizer_can_encode(e->tok, why, sizeof why)) {
        fprintf(stderr, "kd run: %s; pass the prompt as token ids with --prompt-ids\n", why);
        goto done;
    }
    if ((prompt ? kd_tokenizer_encode(e->tok, prompt, strlen(prompt), KD_TOK_ENC_ADD_SPECIAL, &toks, &err)
                : parse_prompt_ids(prompt_ids, e->V, &toks, &err)) ||
        (toks.n == 0 && kd_tokens_push(&toks, e->bos >= 0 ? e->bos : 0, &err)) ||
        kd_sampler_init(&s, e->V, (float)temp, top_k, (float)top_p, (uint64_t)seed, &err)) {
        fprintf(stderr, "kd run: %s\n", err.msg);
        goto done;
    }
    if ((int64_t)toks.n >= e->n_ctx) {
        fprintf(stderr, "kd run: the prompt has %zu tokens, the context %lld\n", toks.n, (long long)e->n_ctx);
        goto done;
    }
    run_out ro = {e, ids, 0};
    if (!ids && prompt) fputs(prompt, stdout);
    for (size_t i = 0; !ids && !prompt && i < toks.n; i++) {   /* the prompt ids as text */
        char buf[512];
        int64_t n = kd_tokenizer_decode_token(e->tok, toks.ids[i], 0, buf, sizeof buf, NULL);
        if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    }
    fflush(stdout);
    int64_t n_out;
    if (kd_infer_generate(e, toks.ids, (int64_t)toks.n, n_new, &s, NULL, &n_out, on_token, &ro, &err)) {
        fprintf(stderr, "\nkd run: %s\n", err.msg);
        goto done;
    }
    printf("\n");
    char types[128];
    kd_infer_describe_types(e, types, sizeof types);
    const kd_infer_stats *st = &e->stats;
    fprintf(stderr, "kd run: %s (%s, %s kernels%s): prompt %lld tokens at %.1f tokens/s, generated %lld at %.1f tokens/s\n",
            model, types, kd_isa_name(kd_isa_get()), fast ? ", --fast" : "", (long long)st->n_prompt,
            st->prompt_s > 0 ? (double)st->n_prompt / st->prompt_s : 0.0, (long long)n_out,
            st->decode_s > 0 ? (double)st->n_decode / st->decode_s : 0.0);
    rc = 0;
done:
    kd_sampler_free(&s);
    kd_tokens_free(&toks);
    kd_infer_close(e);
    return rc;
}

/* ---- kd eval ------------------------------------------------------------------------- */

typedef struct eval_acc {
    kd_eval_acc sums;       /* --data: train/kd_eval.h */
    double ce;              /* --text: sum of −log p over scored tokens */
    int64_t n;              /* scored tokens */
} eval_acc;

/* Score a teacher dump with kd_eval_batch (train/kd_eval.h), the evaluation of `kd train`: read
 * through the trainer's loader (one sequence per batch, in order, every sequence), CE against
 * the labels, forward KL(teacher ‖ model) at T = 1 over the dump's distribution, top-1. Top-k ids
 * beyond the model's vocabulary join the tail, as under vocab_policy "pad". */
static int eval_dump(kd_infer *e, const char *path, int64_t max_tokens, eval_acc *acc, kd_err *err) {
    const int64_t V = e->V, C = e->C;
    kd_loader_opts lo;
    kd_loader_opts_init(&lo);
    lo.paths = &path;
    lo.n_paths = 1;
    lo.batch_size = 1;
    lo.shuffle = 0;
    lo.split = KD_SPLIT_ALL;
    lo.student_vocab = V;
    lo.vocab_policy = KD_VOCAB_PADDED;
    kd_loader *L = kd_loader_new(&lo, err);
    if (!L) return -1;
    const int64_t T = kd_loader_meta(L)->seq_len, nb = kd_loader_batches_per_epoch(L);
    int rc = -1;
    int32_t *labels = malloc((size_t)T * sizeof *labels);
    float *hidden = kd_alloc((size_t)(T * C) * sizeof(float), err);
    const float *head = hidden ? kd_infer_head_f32(e, err) : NULL;
    if (!labels || !hidden || !head) {
        if (!labels) kd_errf(err, "out of memory");
        goto done;
    }
    if (T > e->n_ctx) {
        kd_errf(err, "%s: sequences of %lld tokens exceed the context (%lld)", path, (long long)T, (long long)e->n_ctx);
        goto done;
    }
    for (int64_t s = 0; s < nb && (max_tokens <= 0 || acc->n < max_tokens); s++) {
        const kd_batch *b = kd_loader_next(L, err);
        if (!b) goto done;
        int64_t n = acc->n;   /* --max-tokens: labels past the budget are not scored */
        for (int64_t t = 0; t < T; t++) {
            labels[t] = max_tokens <= 0 || n < max_tokens ? b->labels[t] : KD_IGNORE_INDEX;
            n += labels[t] != KD_IGNORE_INDEX;
        }
        kd_infer_reset(e);
        if (kd_infer_eval(e, b->tokens, T, NULL, 0, hidden, err)) {
            kd_err_prefix(err, "%s: sequence %lld", path, (long long)s);
            goto done;
        }
        kd_loss_batch lb = {.labels = labels, .teacher_logits = b->logits, .topk_ids = b->topk_ids,
                            .topk_logprobs = b->topk_logprobs, .k = b->k, .sampled = b->sampled};
        if (kd_eval_batch(&acc->sums, hidden, head, T, C, V, &lb, err)) {
            kd_err_prefix(err, "%s: sequence %lld", path, (long long)s);
            goto done;
        }
        acc->n = n;
    }
    acc->sums.teacher = !kd_loader_meta(L)->tokens_only;
    rc = 0;
done:
    free(labels);
    kd_free(hidden);
    kd_loader_free(L);
    return rc;
}

/* Score a text: BOS + its tokens, in windows of the context, each token predicted once. */
static int eval_text(kd_infer *e, const char *path, int64_t max_tokens, eval_acc *acc, kd_err *err) {
    size_t len;
    char *text = kd_read_file(path, &len, err);
    if (!text) return -1;
    kd_tokens toks = {0};
    float *logits = NULL;
    int rc = -1;
    if (!e->tok) {
        kd_errf(err, "the model has no tokenizer: pass --tokenizer FILE");
        goto done;
    }
    if (kd_tokenizer_encode(e->tok, text, len, KD_TOK_ENC_ADD_SPECIAL, &toks, err)) goto done;
    if (toks.n < 2) {
        kd_errf(err, "%s: fewer than 2 tokens to score", path);
        goto done;
    }
    const int64_t nb = e->n_batch, V = e->V, N = (int64_t)toks.n;
    if (!(logits = kd_alloc((size_t)(nb * V) * sizeof(float), err))) goto done;
    for (int64_t w0 = 0; w0 < N - 1 && (max_tokens <= 0 || acc->n < max_tokens); w0 += e->n_ctx) {
        kd_infer_reset(e);
        const int64_t wn = N - 1 - w0 < e->n_ctx ? N - 1 - w0 : e->n_ctx;   /* inputs w0..w0+wn−1 */
        for (int64_t c0 = 0; c0 < wn && (max_tokens <= 0 || acc->n < max_tokens); c0 += nb) {
            const int64_t cn = wn - c0 < nb ? wn - c0 : nb;
            if (kd_infer_eval(e, toks.ids + w0 + c0, cn, logits, 1, NULL, err)) goto done;
            for (int64_t i = 0; i < cn && (max_tokens <= 0 || acc->n < max_tokens); i++) {
                const float *z = logits + i * V;
                acc->ce += (double)kd_logsumexp(z, V) - (double)z[toks.ids[w0 + c0 + i + 1]];
                acc->n++;
            }
        }
    }
    rc = 0;
done:
    kd_free(logits);
    kd_tokens_free(&toks);
    free(text);
    return rc;
}

int kd_cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *textf = NULL, *tokp = NULL;
    int64_t max_tokens = 0, ctx = 0;
    char ctx_help[128];
    snprintf(ctx_help, sizeof ctx_help, "KV cache size (default: with --data the dump's sequence length,\n"
             "with --text the model's context, at most %d)", KD_INFER_MAX_CTX_DEFAULT);
    const kd_opt opts[] = {
        {"--model", KD_OPT_STRING, &model, "FILE|DIR", .help = "a GGUF file, a checkpoint directory or a llama2.c .bin",
         .flags = KD_OPT_REQUIRED},
        {"--data", KD_OPT_STRING, &data, "DUMP.h5", .help = "a teacher dump: each sequence is one forward pass",
         .flags = KD_OPT_REQUIRED},
        {"--text", KD_OPT_STRING, &textf, "FILE",
         .help = "or a text: BOS + the file's tokens in windows of the context\n"
                 "(each window starts a fresh cache)",
         .flags = KD_OPT_ALT},
        {"--max-tokens", KD_OPT_INT, &max_tokens, "N", .help = "stop after N scored tokens", .lo = 1, .hi = INT64_MAX,
         .def = "all"},
        {"--tokenizer", KD_OPT_STRING, &tokp, "FILE", .help = "the tokenizer for --text, when the model has none"},
        {"--ctx", KD_OPT_INT, &ctx, "N", .help = ctx_help, .lo = 1, .hi = 1 << 24, .def = ""},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("eval", opts);
        printf("\nScores a model (GGUF file, checkpoint directory or llama2.c .bin) with kd's\n"
               "inference engine and prints one JSON object:\n"
               "  tokens  predicted tokens scored\n"
               "  ce      mean cross-entropy (nats) of the actual next token\n"
               "  ppl     exp(ce)\n"
               "with --data (a teacher dump: each sequence is one forward pass) also, when the\n"
               "dump has a teacher distribution (not for a tokens-only dump)\n"
               "  kl      mean forward KL(teacher || model) at temperature 1: against the dump's\n"
               "          top-k with a tail bucket for the rest of the vocabulary, or its full logits\n"
               "  top1    fraction of positions where the model's argmax is the teacher's\n"
               "on a dump of sampled classes (kd teacher dump --sample) instead of kl and top1\n"
               "  xent    mean -sum p^ log model over the drawn ids, p^ = count / N: an unbiased\n"
               "          estimate of the cross-entropy H(teacher, model) = KL + H(teacher)\n"
               "          (KL against p^ would be biased; docs/dump-format.md, \"Sampled dumps\")\n"
               "The same evaluation as kd train's eval lines and final_eval.json (train/kd_eval.h):\n"
               "kd eval --model RUN/final --data VAL.h5 gives RUN/final_eval.json back.\n\n");
        kd_opts_help(opts);
        return 0;
    }
    int st = kd_opts_parse("eval", opts, argc, argv);
    if (st) return st;
    kd_err err;
    kd_infer_opts o;
    kd_infer_opts_init(&o);
    o.n_ctx = ctx;
    o.tokenizer = tokp;
    if (data && !ctx) {   /* room for the dump's sequences */
        kd_dump *d = kd_dump_open(data, &err);
        if (!d) {
            fprintf(stderr, "kd eval: %s\n", err.msg);
            return 1;
        }
        o.n_ctx = kd_dump_get_meta(d)->seq_len;
        kd_dump_close(d);
    }
    kd_infer *e = kd_infer_open(model, &o, &err);
    if (!e) {
        fprintf(stderr, "kd eval: %s\n", err.msg);
        return 1;
    }
    eval_acc acc = {0};
    int rc = data ? eval_dump(e, data, max_tokens, &acc, &err) : eval_text(e, textf, max_tokens, &acc, &err);
    if (!rc && acc.n == 0) rc = kd_errf(&err, "no tokens to score");
    if (rc) {
        fprintf(stderr, "kd eval: %s\n", err.msg);
        kd_infer_close(e);
        return 1;
    }
    kd_eval_result r;
    if (data) {
        r = kd_eval_result_of(&acc.sums);
    } else {
        r = (kd_eval_result){.ce = acc.ce / (double)acc.n, .kl = NAN, .top1 = NAN, .xent = NAN, .tokens = acc.n};
        r.ppl = exp(r.ce);
    }
    /* {"model", then the keys of final_eval.json}: one line */
    cJSON *j = cJSON_CreateObject(), *m = kd_eval_to_json(&r);
    cJSON_AddStringToObject(j, "model", model);
    while (m->child) {
        cJSON *it = cJSON_DetachItemViaPointer(m, m->child);
        cJSON_AddItemToObject(j, it->string, it);   /* copies the key before freeing the old one */
    }
    cJSON_Delete(m);
    char *line = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (line) printf("%s\n", line);
    free(line);
    kd_infer_close(e);
    return 0;
}
