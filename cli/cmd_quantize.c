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

static void quantize_help(void) {
    printf("usage: kd quantize --model CKPT_DIR --method awq|rtn --format q4_0|q4_1|q4_k --out OUT_DIR\n"
           "                   (--calib DUMP.h5 | --calib-text FILE) [options]\n"
           "       kd quantize eval --reference FP_DIR --model DIR --type PRESET --data DUMP.h5 [--max-seq N]\n\n"
           "Activation-aware weight quantization (AWQ, docs/quantization.md), layer by layer on\n"
           "calibration activations of the FP model: per scale group (input norm -> q,k,v;\n"
           "v -> o unless GQA; post-attention norm -> gate,up; up -> down) the ratio r of the\n"
           "20-point grid whose scales s = mean|x|^r minimise the block output error, folded\n"
           "exactly into the norm weight or the previous linear's rows; then a clip search on\n"
           "every linear but q and k. The pseudo-quantizer is the real ggml quantizer of the\n"
           "type `kd export` will give each tensor, so the search optimises what ships.\n"
           "OUT_DIR is an ordinary FP32 checkpoint (scales and clips applied, tokenizer copied)\n"
           "plus quantize.json (every ratio, loss and clip); then run\n"
           "  kd export --model OUT_DIR --type q4_0|q4_1|q4_k_m --out MODEL.gguf\n\n"
           "  --method awq|rtn    rtn changes nothing (the baseline) and needs no calibration (awq)\n"
           "  --format FMT        q4_0, q4_1 or q4_k (the q4_k_m export recipe) (q4_0)\n"
           "  --calib DUMP.h5     calibration tokens: sequences of a teacher dump, evenly spaced\n"
           "  --calib-text FILE   or a text, tokenized with CKPT_DIR/tokenizer.bin or tokenizer.h5\n"
           "                      (BOS + text)\n"
           "  --samples N         calibration sequences (default: 8192 tokens' worth)\n"
           "  --seq T             tokens per sequence (dump: all it holds, T+1, up to 512; text: 512)\n"
           "  --group-size G      reference mode: llm-awq's asymmetric int4 with groups of G (e.g.\n"
           "                      128) as the pseudo-quantizer instead of the GGUF type's\n"
           "  --grid N            ratio grid and clip steps (20)\n"
           "  --no-clip           skip the clip search\n"
           "  --clip-tokens N     tokens the clip search samples (512)\n"
           "  --clip-always       keep every clip the search picks (the reference); by default a\n"
           "                      block's clips are undone when they raise its measured error\n"
           "                      (--clip-guard forces that check in --group-size mode too)\n"
           "  --quiet             no progress bar\n\n"
           "kd quantize eval runs the FP32 reference and DIR's weights as the GGUF preset\n"
           "(f32, q4_0, q4_1, q4_k_m, ...) stores them (the dequantized values of kd export)\n"
           "over every unmasked position of DUMP.h5 and prints one JSON line: ppl and ce on\n"
           "the dump's labels, kl = KL(reference || model) over the full vocabulary, top1 =\n"
           "argmax agreement with the reference, tokens.\n");
}

static int quantize_eval(int argc, char **argv) {
    const char *ref = NULL, *model = NULL, *type = NULL, *data = NULL;
    int64_t max_seq = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
#define VAL() if (!(v = kd_cli_value("quantize eval", argc, argv, &i))) return 2
        if (!strcmp(argv[i], "--reference")) { VAL(); ref = v; }
        else if (!strcmp(argv[i], "--model")) { VAL(); model = v; }
        else if (!strcmp(argv[i], "--type")) { VAL(); type = v; }
        else if (!strcmp(argv[i], "--data")) { VAL(); data = v; }
        else if (!strcmp(argv[i], "--max-seq")) { VAL(); if (kd_cli_int("quantize eval", "--max-seq", v, 1, INT64_MAX, &max_seq)) return 2; }
        else {
            fprintf(stderr, "kd quantize eval: unknown argument '%s' (see kd quantize --help)\n", argv[i]);
            return 2;
        }
#undef VAL
    }
    if (!ref || !model || !type || !data) {
        fprintf(stderr, "kd quantize eval: --reference, --model, --type and --data are required\n");
        return 2;
    }
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
    if (kd_cli_wants_help(argc, argv)) {
        quantize_help();
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "eval")) return quantize_eval(argc - 1, argv + 1);
    kd_quantize_opts o;
    kd_quantize_opts_init(&o);
    int method_set = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int64_t n;
#define VAL() if (!(v = kd_cli_value("quantize", argc, argv, &i))) return 2
#define INT(lo, hi) if (kd_cli_int("quantize", argv[i - 1], v, lo, hi, &n)) return 2
        if (!strcmp(argv[i], "--model")) { VAL(); o.model = v; }
        else if (!strcmp(argv[i], "--out")) { VAL(); o.out = v; }
        else if (!strcmp(argv[i], "--calib")) { VAL(); o.calib = v; }
        else if (!strcmp(argv[i], "--calib-text")) { VAL(); o.calib_text = v; }
        else if (!strcmp(argv[i], "--format")) {
            VAL();
            if (!kd_awq_preset(v)) {
                fprintf(stderr, "kd quantize: --format is q4_0, q4_1 or q4_k, not '%s'\n", v);
                return 2;
            }
            o.awq.format = v;
        } else if (!strcmp(argv[i], "--method")) {
            VAL();
            int mth = kd_quant_method_parse(v);
            if (mth < 0) {
                fprintf(stderr, "kd quantize: --method is awq or rtn, not '%s'\n", v);
                return 2;
            }
            o.awq.method = (kd_quant_method)mth;
            method_set = 1;
        }
        else if (!strcmp(argv[i], "--samples")) { VAL(); INT(1, 1 << 20); o.samples = n; }
        else if (!strcmp(argv[i], "--seq")) { VAL(); INT(1, 1 << 20); o.seq = n; }
        else if (!strcmp(argv[i], "--group-size")) { VAL(); INT(1, 1 << 20); o.awq.group_size = (int)n; }
        else if (!strcmp(argv[i], "--grid")) { VAL(); INT(1, 1000); o.awq.n_grid = (int)n; }
        else if (!strcmp(argv[i], "--clip-tokens")) { VAL(); INT(1, INT64_MAX); o.awq.clip_tokens = n; }
        else if (!strcmp(argv[i], "--no-clip")) o.awq.clip = 0;
        else if (!strcmp(argv[i], "--clip-always")) o.awq.clip_guard = 0;
        else if (!strcmp(argv[i], "--clip-guard")) o.awq.clip_guard = 1;
        else if (!strcmp(argv[i], "--quiet")) quiet = 1;
        else {
            fprintf(stderr, "kd quantize: unknown argument '%s' (see kd quantize --help)\n", argv[i]);
            return 2;
        }
#undef VAL
#undef INT
    }
    if (!o.model || !o.out || !method_set) {
        fprintf(stderr, "kd quantize: --model, --method and --out are required (see kd quantize --help)\n");
        return 2;
    }
    if (o.calib && o.calib_text) {
        fprintf(stderr, "kd quantize: --calib and --calib-text exclude each other\n");
        return 2;
    }
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
