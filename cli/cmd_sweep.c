/*
 * cmd_sweep.c — `kd sweep`: train one student per point of a hyper-parameter
 * grid and compare them (argument parsing; the logic is train/kd_sweep.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/kd_cli.h"
#include "train/kd_sweep.h"

static void usage(void) {
    printf("usage: kd sweep --config RUN.json --grid key=v1,v2,... [--grid key=...] [--set key=value ...]\n"
           "                --out SWEEP_DIR [--jobs N] [--metric ce|kl|ppl|top1] [--quiet]\n\n"
           "Trains one student per point of the grid (the cartesian product of the --grid\n"
           "values) with `kd train`, then compares them. Any run-config key can be swept\n"
           "(see kd train --help); values are parsed as JSON when they are valid JSON, else\n"
           "taken as strings, and commas inside [...] or \"...\" do not split. --set fixes\n"
           "a key for every point. Every point's config is checked before anything runs.\n\n"
           "  --grid key=v1,v2,...  a swept key and its values (up to %d keys)\n"
           "  --set key=value       override a key of RUN.json for all points\n"
           "  --out SWEEP_DIR       where the runs and the results go\n"
           "  --jobs N              points trained at once, as child processes (1); the\n"
           "                        OMP_NUM_THREADS threads (default: all cores) are divided among them\n"
           "  --metric M            final validation metric that picks the best point:\n"
           "                        ce, kl, ppl (lower is better) or top1 (higher is better); ce\n"
           "  --quiet               no progress lines\n\n"
           "Example: kd sweep --config run.json --grid alpha=0,0.25,0.5,0.75,1 \\\n"
           "                  --grid temperature=1,2,4 --set steps=2000 --out sweeps/at --jobs 2\n\n"
           "SWEEP_DIR receives:\n"
           "  runs/<name>/    one kd train run per point, named after it: alpha=0.5 and\n"
           "                  temperature=2 give runs/alpha-0.5_temperature-2; train.log holds\n"
           "                  the command that trains the point alone and its output\n"
           "  results.csv     one row per point: the swept keys, final validation ce, ppl, kl,\n"
           "                  top1 (from the point's final_eval.json: kd eval's definitions, so kl\n"
           "                  is the forward KL at T = 1 whatever divergence or kd_mode is swept),\n"
           "                  tokens_per_s (training throughput), best (1 on the best row),\n"
           "                  status (ok | failed), run\n"
           "  results.md      the same as a Markdown table with each point's rank, and the pictures\n"
           "  best.txt, best  the best point's final checkpoint: its absolute path, and a symlink\n"
           "  heatmap.png     the metric over the first two swept keys, values printed in the cells,\n"
           "                  the best cell framed in red (more keys: best over the others);\n"
           "                  with one swept key, a line chart of the metric over its values\n"
           "  curves.png      validation metric against step of every run, overlaid\n"
           "  plots/          the gnuplot data and scripts (cd plots && gnuplot heatmap.gp)\n"
           "The pictures need gnuplot (gnuplot-nox); without it kd sweep warns and skips them.\n\n"
           "Interrupted? Run the same command again: finished points (final_eval.json) are\n"
           "skipped, points with a checkpoint resume from it, the rest start over. Running it\n"
           "again after the end only rewrites the results. Changing a key of a finished point\n"
           "is refused: sweep into another --out.\n\n"
           "Comparing runs side by side:\n"
           "  column -s, -t SWEEP_DIR/results.csv        the table in a terminal\n"
           "  sort -t, -k<n>g SWEEP_DIR/results.csv      ordered by column n\n"
           "  SWEEP_DIR/results.md                      ranked table + pictures (any Markdown viewer)\n"
           "  curves.png                                how each run's validation metric evolved\n"
           "  SWEEP_DIR/runs/*/metrics.jsonl            every step: loss, ce, train_divergence, top1,\n"
           "                                            lr, grad_norm; every evaluation: eval {...}\n"
           "  kd export --model $(cat SWEEP_DIR/best.txt) ...   carry the best student on\n",
           KD_SWEEP_MAX_KEYS);
}

int kd_cmd_sweep(int argc, char **argv) {
    if (kd_cli_wants_help(argc, argv)) {
        usage();
        return 0;
    }
    kd_sweep_grid grid;
    memset(&grid, 0, sizeof grid);
    kd_sweep_opts o;
    memset(&o, 0, sizeof o);
    o.jobs = 1;
    o.metric = KD_SWEEP_CE;
    char **sets = calloc((size_t)argc, sizeof *sets);
    kd_err err;
    int status = 2;
    if (!sets) return 1;
    o.sets = sets;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int64_t n;
#define VAL() if (!(v = kd_cli_value("sweep", argc, argv, &i))) goto done
        if (!strcmp(argv[i], "--config")) { VAL(); o.config = v; }
        else if (!strcmp(argv[i], "--out")) { VAL(); o.out = v; }
        else if (!strcmp(argv[i], "--set")) { VAL(); sets[o.n_sets++] = (char *)v; }
        else if (!strcmp(argv[i], "--quiet")) o.quiet = 1;
        else if (!strcmp(argv[i], "--grid")) {
            VAL();
            if (kd_sweep_grid_add(&grid, v, &err)) {
                fprintf(stderr, "kd sweep: %s\n", err.msg);
                goto done;
            }
        } else if (!strcmp(argv[i], "--jobs")) {
            VAL();
            if (kd_cli_int("sweep", "--jobs", v, 1, 1024, &n)) goto done;
            o.jobs = (int)n;
        } else if (!strcmp(argv[i], "--metric")) {
            VAL();
            if (kd_sweep_metric_parse(v, &o.metric, &err)) {
                fprintf(stderr, "kd sweep: %s\n", err.msg);
                goto done;
            }
        } else {
            fprintf(stderr, "kd sweep: unknown argument '%s' (see kd sweep --help)\n", argv[i]);
            goto done;
        }
#undef VAL
    }
    if (!o.config || !o.out || !grid.n_axes) {
        fprintf(stderr, "kd sweep: give --config RUN.json, at least one --grid key=v1,v2,... and --out SWEEP_DIR "
                        "(see kd sweep --help)\n");
        goto done;
    }
    o.grid = &grid;
    status = 0;
    if (kd_sweep_run(&o, NULL, &err)) {
        fprintf(stderr, "kd sweep: %s\n", err.msg);
        status = 1;
    }
done:
    kd_sweep_grid_free(&grid);
    free(sets);
    return status;
}
