/*
 * kd_sweep.h — hyper-parameter sweeps behind `kd sweep`: one `kd train` per
 * point of a grid (the cartesian product of --grid key=v1,v2,...), run as
 * child processes, resumable, summarised in tables and gnuplot pictures.
 *
 * A sweep directory holds:
 *   runs/<name>/          one kd train run directory per point; name encodes the
 *                         point: alpha=0.5, temperature=2 -> "alpha-0.5_temperature-2"
 *   runs/<name>/train.log the child's command line and output
 *   results.csv           one row per point: the swept keys, final validation ce,
 *                         ppl, kl, top1 (final_eval.json: train/kd_eval.h, the same
 *                         definitions whatever the point's loss options),
 *                         tokens_per_s, best (1 on the best row), run
 *   results.md            the same as a Markdown table, with the pictures
 *   best.txt, best        the best point's final checkpoint: its path, and a symlink
 *   heatmap.png           the chosen metric over the first two swept keys
 *                         (a bar chart when one key is swept)
 *   curves.png            validation metric against step, every run overlaid
 *   plots/                gnuplot data and scripts (cd plots && gnuplot heatmap.gp)
 * A point whose run holds final_eval.json is skipped; one with a checkpoint is
 * resumed (kd train --resume); any other leftover is removed and retrained.
 */
#ifndef KD_SWEEP_H
#define KD_SWEEP_H

#include <stdint.h>

#include <cJSON.h>

#include "core/kd_err.h"

#define KD_SWEEP_MAX_KEYS 8
#define KD_SWEEP_MAX_POINTS 10000

typedef struct kd_sweep_axis {
    char key[128];
    int n;               /* number of values */
    cJSON **values;      /* each parsed as JSON, or a string when not valid JSON */
} kd_sweep_axis;

typedef struct kd_sweep_grid {
    kd_sweep_axis axes[KD_SWEEP_MAX_KEYS];
    int n_axes;
} kd_sweep_grid;

/* Add one axis from "key=v1,v2,...". Commas inside [], {} or "..." do not split,
 * so list values work: "train_data=[\"a.h5\",\"b.h5\"],c.h5". Refuses a missing
 * '=', an empty key, empty values, a key given twice and repeated values. */
int kd_sweep_grid_add(kd_sweep_grid *g, const char *spec, kd_err *err);
void kd_sweep_grid_free(kd_sweep_grid *g);
/* Number of points (the product of the axis sizes). */
int64_t kd_sweep_grid_size(const kd_sweep_grid *g);
/* The value index on each axis of point p (the last axis varies fastest). */
void kd_sweep_point_index(const kd_sweep_grid *g, int64_t p, int *idx);
/* A value as text: strings raw, everything else as compact JSON ("0.5", "[1,2]"). */
void kd_sweep_value_text(const cJSON *v, char *out, size_t n);
/* The directory name of point p: "key-value" joined by '_'; characters other than
 * letters, digits and ".+-" become '_'. */
int kd_sweep_point_name(const kd_sweep_grid *g, int64_t p, char *out, size_t n, kd_err *err);

typedef enum kd_sweep_metric { KD_SWEEP_CE, KD_SWEEP_PPL, KD_SWEEP_KL, KD_SWEEP_TOP1 } kd_sweep_metric;
/* "ce", "ppl", "kl" or "top1". */
int kd_sweep_metric_parse(const char *s, kd_sweep_metric *m, kd_err *err);

typedef struct kd_sweep_opts {
    const char *config;        /* the run config every point starts from (required) */
    char **sets;               /* "key=value" overrides applied to every point */
    int n_sets;
    const kd_sweep_grid *grid; /* at least one axis */
    const char *out;           /* the sweep directory */
    int jobs;                  /* points trained at once; OMP_NUM_THREADS is divided among them */
    kd_sweep_metric metric;    /* picks the best point (lower is better, higher for top1) */
    const char *exe;           /* the kd program to run `train` with (NULL: /proc/self/exe) */
    int quiet;                 /* no progress output (warnings still go to stderr) */
} kd_sweep_opts;

typedef struct kd_sweep_summary {
    int64_t points, skipped, resumed, trained, failed;
    int64_t best;              /* index of the best point, -1 if none finished */
    int plotted;               /* 1 when gnuplot drew heatmap.png and curves.png */
} kd_sweep_summary;

/* Run (or finish) the sweep, then write the results and pictures. Every point's
 * config is resolved and validated before any training starts, so a bad value or
 * an unknown key fails at once with the trainer's message. Fails (after writing
 * the results of the points that did finish) when any point failed. */
int kd_sweep_run(const kd_sweep_opts *o, kd_sweep_summary *s, kd_err *err);

#endif
