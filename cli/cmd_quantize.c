/*
 * cmd_quantize.c — `kd quantize`: AWQ (or the RTN baseline) for a GGUF target,
 * writing a checkpoint that `kd export` then quantizes; and `kd quantize eval`,
 * which measures a checkpoint as a GGUF preset would store it against its FP32
 * original (quant/kd_awq.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "quant/kd_awq.h"
#include "student/kd_checkpoint.h"
#include "quant/kd_quant_plan.h"

/* The AWQ search's progress: a note, then a bar redrawn in place on stderr. */
static void awq_progress(void *ctx, const kd_awq_progress *p) {
    (void)ctx;
    if (p->start) {
        fprintf(stderr, "kd quantize: AWQ for %s on %" PRId64 " calibration sequences of %" PRId64 " tokens\n", p->start,
                p->samples, p->seq);
        return;
    }
    if (p->failed) {
        fprintf(stderr, "\n");
        return;
    }
    char bar[31];
    int fill = (int)(30 * p->done / (p->total ? p->total : 1));
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    double el = p->elapsed_s, eta = p->done ? el * (double)(p->total - p->done) / (double)p->done : 0;
    int64_t L = p->n_layers;
    fprintf(stderr, "\rawq [%s] layer %" PRId64 "/%" PRId64 " %-10s %5.0fs, ETA %5.0fs ", bar,
            p->layer + 1 < L ? p->layer + 1 : L, L, p->stage, el, eta);
    if (p->done == p->total) fprintf(stderr, "\n");
    fflush(stderr);
}

/* --format: kd_awq_preset's names (q4_k_m, the preset itself, is accepted too). */
static int parse_format(void *dst, const char *v, kd_err *err) {
    if (!kd_awq_preset(v)) return kd_errf(err, "--format is q4_0, q4_1 or q4_k, not '%s'", v);
    *(const char **)dst = v;
    return 0;
}

static void quantize_help(const kd_opt *opts, const kd_opt *eval_opts) {
    kd_opts_usage("quantize", opts);
    printf("\nActivation-aware weight quantization (AWQ, docs/quantization.md), layer by layer on\n"
           "calibration activations of the FP model: per scale group (input norm -> q,k,v;\n"
           "v -> o unless GQA; post-attention norm -> gate,up; up -> down) the ratio r of the\n"
           "20-point grid whose scales s = mean|x|^r minimise the block output error, folded\n"
           "exactly into the norm weight or the previous linear's rows; then a clip search on\n"
           "every linear but q and k. The pseudo-quantizer is the real ggml quantizer of the\n"
           "type `kd export` will give each tensor, so the search optimises what ships.\n"
           "OUT_DIR is an ordinary FP32 checkpoint (scales and clips applied, tokenizer copied)\n"
           "plus quantize.json (every ratio, loss and clip); then run\n"
           "  kd export --model OUT_DIR --type q4_0|q4_1|q4_k_m --out MODEL.gguf\n\n");
    kd_opts_help(opts);
    printf("\n");
    kd_opts_usage("quantize eval", eval_opts);
    printf("\nkd quantize eval runs the FP32 reference and DIR's weights as the GGUF preset\n"
           "(f32, q4_0, q4_1, q4_k_m, ...) stores them (the dequantized values of kd export)\n"
           "over every unmasked position of DUMP.h5 and prints one JSON line: ppl and ce on\n"
           "the dump's labels, kl = KL(reference || model) over the full vocabulary, top1 =\n"
           "argmax agreement with the reference, tokens.\n\n");
    kd_opts_help(eval_opts);
}

/* The options of kd quantize eval, into the given destinations. */
#define EVAL_OPTS(ref, model, type, data, max_seq)                                                                   \
    {                                                                                                                 \
        {"--reference", KD_OPT_STRING, ref, "FP_DIR", .help = "the FP32 checkpoint", .flags = KD_OPT_REQUIRED},       \
        {"--model", KD_OPT_STRING, model, "DIR", .help = "the checkpoint to measure (e.g. kd quantize's OUT_DIR)",     \
         .flags = KD_OPT_REQUIRED},                                                                                   \
        {"--type", KD_OPT_STRING, type, "PRESET", .help = "the GGUF preset of kd export --type", .flags = KD_OPT_REQUIRED}, \
        {"--data", KD_OPT_STRING, data, "DUMP.h5", .help = "the tokens (a teacher dump)", .flags = KD_OPT_REQUIRED},  \
        {"--max-seq", KD_OPT_INT, max_seq, "N", .help = "score at most N sequences", .lo = 1, .hi = INT64_MAX,        \
         .def = "all"},                                                                                               \
        {0}                                                                                                           \
    }

static int quantize_eval(int argc, char **argv) {
    const char *ref = NULL, *model = NULL, *type = NULL, *data = NULL;
    int64_t max_seq = 0;
    const kd_opt opts[] = EVAL_OPTS(&ref, &model, &type, &data, &max_seq);
    int st = kd_opts_parse("quantize eval", opts, argc, argv);
    if (st) return st;
    if (!kd_export_preset_find(type)) {
        fprintf(stderr, "kd quantize eval: --type: unknown preset '%s' (see kd export --help)\n", type);
        return 2;
    }
    kd_err err;
    kd_model r, m;
    if (kd_model_load(&r, ref, &err)) {
        fprintf(stderr, "kd quantize eval: %s\n", err.msg);
        return 1;
    }
    if (kd_model_load(&m, model, &err)) {
        fprintf(stderr, "kd quantize eval: %s\n", err.msg);
        kd_model_free(&r);
        return 1;
    }
    kd_quant_eval e;
    int bad = kd_quant_fake_model(&m, type, &err) || kd_quant_evaluate(&r, &m, data, max_seq, &e, &err);
    if (bad) fprintf(stderr, "kd quantize eval: %s\n", err.msg);
    else
        printf("{\"ppl\": %.6f, \"ce\": %.6f, \"kl\": %.8f, \"top1\": %.6f, \"tokens\": %" PRId64 "}\n", e.ppl, e.ce,
               e.kl, e.top1, e.tokens);
    kd_model_free(&r);
    kd_model_free(&m);
    return bad ? 1 : 0;
}

int kd_cmd_quantize(int argc, char **argv) {
    static const char *const METHODS[] = {"awq", "rtn", NULL};
    if (argc > 1 && !strcmp(argv[1], "eval") && !kd_cli_wants_help(argc, argv)) return quantize_eval(argc - 1, argv + 1);
    kd_quantize_opts o;
    kd_quantize_opts_init(&o);
    int method = 0, quiet = 0;
    int64_t group_size = o.awq.group_size, grid = o.awq.n_grid;
    char samples_def[64];
    snprintf(samples_def, sizeof samples_def, "default: %d tokens' worth", KD_AWQ_CALIB_TOKENS);
    const kd_opt opts[] = {
        {"--model", KD_OPT_STRING, &o.model, "CKPT_DIR", .help = "the FP32 checkpoint to quantize", .flags = KD_OPT_REQUIRED},
        {"--method", KD_OPT_CHOICE, &method, NULL,
         .help = "awq searches scales and clips; rtn changes nothing (the baseline)\n"
                 "and needs no calibration",
         .flags = KD_OPT_REQUIRED, .choices = METHODS, .def = ""},
        {"--format", KD_OPT_CALL, &o.awq.format, "q4_0|q4_1|q4_k",
         .help = "the GGUF type the search optimises for (q4_k: the q4_k_m\nexport recipe)", .call = parse_format,
         .def = o.awq.format},
        {"--out", KD_OPT_STRING, &o.out, "OUT_DIR", .help = "the checkpoint to write", .flags = KD_OPT_REQUIRED},
        {"--calib", KD_OPT_STRING, &o.calib, "DUMP.h5",
         .help = "calibration tokens (awq needs them): sequences of a teacher dump,\nevenly spaced"},
        {"--calib-text", KD_OPT_STRING, &o.calib_text, "FILE",
         .help = "or a text, tokenized with CKPT_DIR/tokenizer.bin or tokenizer.h5\n(BOS + text)",
         .flags = KD_OPT_ALT},
        {"--samples", KD_OPT_INT, &o.samples, "N", .help = "calibration sequences", .lo = 1, .hi = 1 << 20,
         .def = samples_def},
        {"--seq", KD_OPT_INT, &o.seq, "T", .help = "tokens per sequence", .lo = 1, .hi = 1 << 20,
         .def = "dump: all it holds, T+1, up to 512; text: 512"},
        {"--group-size", KD_OPT_INT, &group_size, "G",
         .help = "reference mode: llm-awq's asymmetric int4 with groups of G (e.g.\n"
                 "128) as the pseudo-quantizer instead of the GGUF type's",
         .lo = 1, .hi = 1 << 20, .def = ""},
        {"--grid", KD_OPT_INT, &grid, "N", .help = "ratio grid and clip steps", .lo = 1, .hi = 1000},
        {"--no-clip", KD_OPT_FLAG_OFF, &o.awq.clip, NULL, .help = "skip the clip search"},
        {"--clip-tokens", KD_OPT_INT, &o.awq.clip_tokens, "N", .help = "tokens the clip search samples", .lo = 1,
         .hi = INT64_MAX},
        {"--clip-always", KD_OPT_FLAG_OFF, &o.awq.clip_guard, NULL,
         .help = "keep every clip the search picks (the reference); by default a\n"
                 "block's clips are undone when they raise its measured error"},
        {"--clip-guard", KD_OPT_FLAG, &o.awq.clip_guard, NULL, .help = "force that check in --group-size mode too"},
        {"--quiet", KD_OPT_FLAG, &quiet, NULL, .help = "no progress bar"},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        const char *s = NULL;
        int64_t n = 0;
        const kd_opt eval_opts[] = EVAL_OPTS(&s, &s, &s, &s, &n);
        quantize_help(opts, eval_opts);
        return 0;
    }
    int st = kd_opts_parse("quantize", opts, argc, argv);
    if (st) return st;
    o.awq.method = method == 0 ? KD_QUANT_AWQ : KD_QUANT_RTN;
    o.awq.group_size = (int)group_size;
    o.awq.n_grid = (int)grid;
    if (o.awq.method == KD_QUANT_AWQ && !o.calib && !o.calib_text) {
        fprintf(stderr, "kd quantize: --method awq needs --calib DUMP.h5 or --calib-text FILE\n");
        return 2;
    }
    kd_err err;
    if (!quiet) o.awq.progress = awq_progress;
    if (kd_quantize_checkpoint(&o, &err)) {
        fprintf(stderr, "kd quantize: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s (%s, %s; record in quantize.json)\n", o.out, o.awq.method == KD_QUANT_AWQ ? "awq" : "rtn",
           o.awq.group_size > 0 ? "reference int4" : o.awq.format);
    return 0;
}
