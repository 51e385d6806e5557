/*
 * kd_cli_util.c — the --help test shared by the subcommands (their options: cli/kd_opts.c).
 */
#include <string.h>

#include "cli/kd_cli.h"

int kd_cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}
