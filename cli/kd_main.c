/*
 * kd_main.c — the kd program: git-style subcommand dispatch.
 *
 * Thin by design: every subcommand parses its arguments and calls the
 * library; no logic lives here that a test cannot reach through libkd.
 */
#include <stdio.h>
#include <string.h>

#include "cli/kd_cli.h"
#include "core/kd_cpu.h"

static const kd_command COMMANDS[] = {
    {"init", kd_cmd_init, "write a freshly initialised student checkpoint"},
    {"import", kd_cmd_import, "convert a llama2.c checkpoint into a kd checkpoint"},
    {"quantize", kd_cmd_quantize, "AWQ (or RTN) for a GGUF target: scales and clips into a checkpoint"},
    {"export", kd_cmd_export, "write a checkpoint as a GGUF file for llama.cpp (f32 ... q4_k_m)"},
    {"run", kd_cmd_run, "generate text with the inference engine (GGUF, checkpoint or llama2.c model)"},
    {"eval", kd_cmd_eval, "perplexity of a model on text, or its KL and top-1 agreement with a teacher dump"},
    {"logits", kd_cmd_logits, "write a model's raw logits for one token sequence"},
    {"teacher", kd_cmd_teacher, "dump a teacher's logits to HDF5 (kd teacher dump), validate dumps (kd teacher info)"},
    {"tokenize", kd_cmd_tokenize, "encode text with a GGUF or llama2.c tokenizer, print the ids"},
    {"tokenizer", kd_cmd_tokenizer, "train a BPE tokenizer on text (kd tokenizer train)"},
    {"train", kd_cmd_train, "distill a student from teacher dumps (alpha, temperature, AdamW, MPI)"},
    {"sweep", kd_cmd_sweep, "train one student per point of a hyper-parameter grid, compare them"},
    {"plan", kd_cmd_plan, "predict (and measure) training and inference memory for a config"},
    {"version", kd_cmd_version, "print the version, BLAS kernels, CPU features and threads"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f,
            "usage: kd [--version] [--help] <command> [<args>]\n"
            "\n"
            "kd distills a large teacher's logits into a small Llama-architecture student.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nRun 'kd <command> --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    kd_blas_select(argc, argv);   /* may re-exec once with the right OpenBLAS kernels */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        if (argc > 2 && strcmp(cmd, "help") == 0) {
            for (size_t i = 0; i < N_COMMANDS; i++)
                if (!strcmp(argv[2], COMMANDS[i].name)) {
                    char *hargv[] = {argv[2], "--help", NULL};
                    return COMMANDS[i].run(2, hargv);
                }
        }
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) return kd_cmd_version(1, argv + 1);
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(cmd, COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kd: '%s' is not a kd command. See 'kd --help'.\n", cmd);
    return 2;
}
