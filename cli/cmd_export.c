/*
 * cmd_export.c — `kd export`: write a checkpoint as a GGUF file that llama.cpp loads.
 */
#include <stdio.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "export/kd_export.h"
#include "quant/kd_quant_plan.h"

static void export_help(const kd_opt *opts) {
    int n;
    const kd_export_preset *p = kd_export_presets(&n);
    kd_opts_usage("export", opts);
    printf("\nWrites the checkpoint CKPT_DIR (config.json, model.safetensors and its tokenizer.bin,\n"
           "or tokenizer.h5 for a byte-level BPE tokenizer) as a GGUF v3 file of architecture\n"
           "\"llama\" that stock llama.cpp loads: hyper-parameters, the vocabulary (SentencePiece\n"
           "\"llama\", or \"gpt2\" with its merges and pre-tokenizer), q/k rows permuted back to\n"
           "GGUF's adjacent-pair RoPE, 1-D (norm) tensors always F32. Quantizers are ggml's\n"
           "reference quantizers. FILE is replaced atomically; a character device or a FIFO\n"
           "(/dev/stdout, a pipe) is written as a stream instead, never replaced.\n\n");
    kd_opts_help(opts);
    printf("\npresets (--type):\n");
    for (int i = 0; i < n; i++) printf("  %-8s %s\n", p[i].name, p[i].summary);
    printf("\nA weight whose row length the chosen block does not divide falls back\n"
           "(Q4_K and Q6_K need multiples of 256, the others of 32): Q4_K -> Q8_0 -> F16,\n"
           "Q6_K -> Q8_0 -> F16, Q8_0/Q4_0/Q4_1 -> F16, with a warning. (llama-quantize uses\n"
           "Q5_0 for Q4_K, which kd does not implement.)\n"
           "A sliding-window model is refused unless its window covers the whole context:\n"
           "the llama architecture has no sliding window.\n");
}

int kd_cmd_export(int argc, char **argv) {
    const char *model = NULL, *type = NULL, *out = NULL;
    const kd_opt opts[] = {
        {"--model", KD_OPT_STRING, &model, "CKPT_DIR", .help = "the checkpoint directory", .flags = KD_OPT_REQUIRED},
        {"--type", KD_OPT_STRING, &type, "PRESET", .help = "the tensor types: one of the presets below", .flags = KD_OPT_REQUIRED},
        {"--out", KD_OPT_STRING, &out, "FILE.gguf", .help = "the GGUF file to write", .flags = KD_OPT_REQUIRED},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        export_help(opts);
        return 0;
    }
    int rc = kd_opts_parse("export", opts, argc, argv);
    if (rc) return rc;
    if (!kd_export_preset_find(type)) {
        fprintf(stderr, "kd export: --type: unknown preset '%s' (see kd export --help)\n", type);
        return 2;
    }
    kd_err err;
    if (kd_export_checkpoint(model, type, out, &err)) {
        fprintf(stderr, "kd export: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s (%s)\n", out, type);
    return 0;
}
