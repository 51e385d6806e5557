/*
 * kd_cli.h — the subcommands of the kd program and the --help test.
 *
 * Each subcommand is `int kd_cmd_NAME(int argc, char **argv)` with argv[0]
 * the subcommand name; it returns the process exit status (0 ok, 1 error,
 * 2 usage error) and prints its own --help.
 */
#ifndef KD_CLI_H
#define KD_CLI_H

typedef struct kd_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} kd_command;

/* True when argv[i] is -h or --help for any i ≥ 1. Options: cli/kd_opts.h. */
int kd_cli_wants_help(int argc, char **argv);

int kd_cmd_version(int argc, char **argv);
int kd_cmd_tokenize(int argc, char **argv);
int kd_cmd_tokenizer(int argc, char **argv);
int kd_cmd_init(int argc, char **argv);
int kd_cmd_import(int argc, char **argv);
int kd_cmd_logits(int argc, char **argv);
int kd_cmd_teacher(int argc, char **argv);
int kd_cmd_plan(int argc, char **argv);
int kd_cmd_train(int argc, char **argv);
int kd_cmd_sweep(int argc, char **argv);
int kd_cmd_export(int argc, char **argv);
int kd_cmd_quantize(int argc, char **argv);
int kd_cmd_run(int argc, char **argv);
int kd_cmd_eval(int argc, char **argv);

#endif
