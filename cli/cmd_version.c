/*
 * cmd_version.c — `kd version` / `kd --version`: what this build runs on.
 */
#include <stdio.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "core/kd_cpu.h"

int kd_cmd_version(int argc, char **argv) {
    const kd_opt opts[] = {{0}};   /* none */
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("version", opts);
        printf("\nPrints kd's version, the OpenBLAS kernels in use and how they were chosen,\n"
               "the CPU features kd detected, and the number of threads.\n");
        return 0;
    }
    int rc = kd_opts_parse("version", opts, argc, argv);
    if (rc) return rc;
    char blas[256], cpu_s[256];
    kd_cpu_info cpu;
    kd_cpu_detect(&cpu);
    kd_cpu_describe(&cpu, cpu_s, sizeof cpu_s);
    kd_blas_describe(blas, sizeof blas);
    printf("kd %s\n", KD_VERSION);
    printf("blas: %s\n", blas);
    printf("cpu: %s\n", cpu_s);
    printf("threads: %d\n", kd_num_threads());
    return 0;
}
