/*
 * cmd_export.c — `kd export`: write a checkpoint as a GGUF file that llama.cpp loads.
 */
#include <stdio.h>
#include <string.h>

#include "cli/kd_cli.h"
#include "export/kd_export.h"
#include "quant/kd_quant_plan.h"

static void export_help(void) {
    int n;
    const kd_export_preset *p = kd_export_presets(&n);
    printf("usage: kd export --model CKPT_DIR --type PRESET --out FILE.gguf\n\n"
           "Writes the checkpoint CKPT_DIR (config.json, model.safetensors and its tokenizer.bin,\n"
           "or tokenizer.h5 for a byte-level BPE tokenizer) as a GGUF v3 file of architecture\n"
           "\"llama\" that stock llama.cpp loads: hyper-parameters, the vocabulary (SentencePiece\n"
           "\"llama\", or \"gpt2\" with its merges and pre-tokenizer), q/k rows permuted back to\n"
           "GGUF's adjacent-pair RoPE, 1-D (norm) tensors always F32. Quantizers are ggml's\n"
           "reference quantizers. FILE is replaced atomically; a character device or a FIFO\n"
           "(/dev/stdout, a pipe) is written as a stream instead, never replaced.\n\n"
           "presets (--type):\n");
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
    if (kd_cli_wants_help(argc, argv)) {
        export_help();
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model")) { if (!(model = kd_cli_value("export", argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--type")) { if (!(type = kd_cli_value("export", argc, argv, &i))) return 2; }
        else if (!strcmp(argv[i], "--out")) { if (!(out = kd_cli_value("export", argc, argv, &i))) return 2; }
        else {
            fprintf(stderr, "kd export: unknown argument '%s' (see kd export --help)\n", argv[i]);
            return 2;
        }
    }
    if (!model || !type || !out) {
        fprintf(stderr, "kd export: --model, --type and --out are required (see kd export --help)\n");
        return 2;
    }
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
