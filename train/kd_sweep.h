/*
 * kd_sweep.h — hyper-parameter sweeps behind `kd sweep`: one `kd train` per
 * point of a grid (the cartesian product of --grid key=v1,v2,...), resumable,
 * summarised in tables and gnuplot pictures. The library plans the points,
 * gives each its `kd train` command line, reads what the runs left and writes
 * the results; the program (cli/cmd_sweep.c) runs the commands as child
 * processes and draws the pictures with gnuplot.
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
#include "train/kd_trainer.h"

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

/* The metric's name ("ce", ...) and its value in an evaluation. */
const char *kd_sweep_metric_name(kd_sweep_metric m);
double kd_sweep_metric_of(const kd_eval_result *e, kd_sweep_metric m);

typedef struct kd_sweep_opts {
    const char *config;        /* the run config every point starts from (required) */
    char **sets;               /* "key=value" overrides applied to every point */
    int n_sets;
    const kd_sweep_grid *grid; /* at least one axis */
    const char *out;           /* the sweep directory */
    kd_sweep_metric metric;    /* picks the best point (lower is better, higher for top1) */
} kd_sweep_opts;

typedef enum kd_sweep_state {
    KD_SWEEP_TODO,             /* to train from the start */
    KD_SWEEP_RESUME,           /* has a checkpoint: kd train --resume */
    KD_SWEEP_SKIP,             /* finished before this sweep ran (final_eval.json) */
    KD_SWEEP_RUNNING,          /* set by the program while its process runs */
    KD_SWEEP_OK,               /* trained now */
    KD_SWEEP_FAILED,
} kd_sweep_state;

typedef struct kd_sweep_point {
    char name[256];            /* its directory under runs/ */
    char label[512];           /* "alpha=0.5 temperature=2" */
    char dir[4096];            /* OUT/runs/NAME */
    int64_t steps, resume_step;
    kd_sweep_state state;
    kd_eval_result ev;         /* the final evaluation once OK or SKIP */
    /* the library's own */
    int idx[KD_SWEEP_MAX_KEYS];
    char *axis_sets[KD_SWEEP_MAX_KEYS];  /* "key=<json>" */
    cJSON *resolved;
    double tps;
} kd_sweep_point;

typedef struct kd_sweep_summary {
    int64_t points, skipped, resumed, trained, failed;
    int64_t best;              /* index of the best point, -1 if none finished */
    int plotted;               /* 1 when gnuplot drew heatmap.png and curves.png */
} kd_sweep_summary;

typedef struct kd_sweep kd_sweep;

/* Plan the sweep: every point's config resolved and validated (a bad value or
 * an unknown key fails at once with the trainer's message), finished points
 * skipped, points with a checkpoint marked for resuming, other leftovers
 * removed, the sweep directory made. */
kd_sweep *kd_sweep_plan(const kd_sweep_opts *o, kd_err *err);
void kd_sweep_free(kd_sweep *s);
int64_t kd_sweep_n_points(const kd_sweep *s);
kd_sweep_point *kd_sweep_get(kd_sweep *s, int64_t i);
/* The counts so far (points, skipped, resumed, failed; trained and best after kd_sweep_collect). */
const kd_sweep_summary *kd_sweep_counts(const kd_sweep *s);

/* Point i's command: *argv (malloc'd, NULL-terminated; free the array only) is
 * `kd train ...` with argv[0] "kd"; makes the run directory and appends the
 * command line to its train.log, whose path goes to log[0..log_n). */
int kd_sweep_command(kd_sweep *s, int64_t i, char ***argv, char *log, size_t log_n, kd_err *err);
/* Point i's process ended (exit_ok: with status 0): reads its final_eval.json.
 * 0 when the point finished, -1 when it failed (counted in failed). */
int kd_sweep_finished(kd_sweep *s, int64_t i, int exit_ok);
/* The last non-empty line of point i's train.log (for failure messages). */
void kd_sweep_log_tail(const kd_sweep *s, int64_t i, char *out, size_t n);
/* The newest step point i's run has logged in metrics.jsonl (0 before the first). */
int64_t kd_sweep_newest_step(const kd_sweep *s, int64_t i);

/* After the runs: training throughput of every finished point and the best point. */
const kd_sweep_summary *kd_sweep_collect(kd_sweep *s);
/* Write plots/heatmap.{dat,gp} and plots/curves.{dat,gp} (plots gets that
 * directory; the scripts run in it). Returns the number of curves drawn (0:
 * no evaluation lines, so no curves.png), or -1 when there is no finished point
 * or the files cannot be written (a warning says so). */
int kd_sweep_write_plots(kd_sweep *s, char *plots, size_t n);
/* results.csv, results.md (with the pictures when plotted), best.txt and the
 * best link. */
int kd_sweep_write_results(kd_sweep *s, int plotted, kd_err *err);

#endif
