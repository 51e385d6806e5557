/*
 * cmd_sweep.c — `kd sweep`: train one student per point of a hyper-parameter
 * grid and compare them. The plan, the command lines and the results are
 * train/kd_sweep.c; here are the arguments, the child `kd train` processes
 * (this program, re-executed), the progress lines and gnuplot.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "core/kd_cpu.h"
#include "core/kd_log.h"
#include "core/kd_time.h"
#include "train/kd_sweep.h"

extern char **environ;

typedef struct job {
    pid_t pid;
    double t0;
} job;

static void clear_status(void) {
    if (isatty(2)) fputs("\r\033[K", stderr);
}

/* A status line (terminals only): each running point and its newest step in metrics.jsonl. */
static void show_running(kd_sweep *s) {
    char line[160];
    size_t len = (size_t)snprintf(line, sizeof line, "  running:"), first = len;
    for (int64_t i = 0; i < kd_sweep_n_points(s) && len < sizeof line; i++) {
        const kd_sweep_point *pt = kd_sweep_get(s, i);
        if (pt->state != KD_SWEEP_RUNNING) continue;
        len += (size_t)snprintf(line + len, sizeof line - len, "%s %s %lld/%lld", len > first ? "," : "", pt->label,
                                (long long)kd_sweep_newest_step(s, i), (long long)pt->steps);
    }
    clear_status();
    fprintf(stderr, "%s", line);
}

/* Start point i's `kd train` with its output appended to its train.log. */
static int spawn(kd_sweep *s, int64_t i, job *jb, char **envp, kd_err *err) {
    char logp[4096], **argv;
    if (kd_sweep_command(s, i, &argv, logp, sizeof logp, err)) return -1;
    int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(argv);
        return kd_errf(err, "%s: cannot open: %s", logp, strerror(errno));
    }
    fflush(NULL);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        if (in >= 0) dup2(in, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        prctl(PR_SET_PDEATHSIG, SIGTERM);   /* a killed sweep takes its runs with it */
        if (getppid() != parent) _exit(1);
        execve("/proc/self/exe", argv, envp);
        ssize_t w = write(2, "kd sweep: cannot execute the kd program\n", 40);
        _exit(w < 0 ? 126 : 127);
    }
    int saved = errno;
    close(fd);
    free(argv);
    if (pid < 0) return kd_errf(err, "fork: %s", strerror(saved));
    jb->pid = pid;
    jb->t0 = kd_now_s();
    kd_sweep_get(s, i)->state = KD_SWEEP_RUNNING;
    return 0;
}

/* Run up to `jobs` points at a time until every point has finished or failed. */
static int run_points(kd_sweep *s, const char *out, int jobs, int quiet, kd_err *err) {
    int64_t n = kd_sweep_n_points(s);
    const kd_sweep_summary *sum = kd_sweep_counts(s);
    int total = kd_num_threads();
    const char *omp = getenv("OMP_NUM_THREADS");
    if (omp && atoi(omp) > 0) total = atoi(omp);
    int threads = total / jobs > 1 ? total / jobs : 1, n_env = 0;
    while (environ[n_env]) n_env++;
    char **envp = calloc((size_t)n_env + 2, sizeof *envp), omp_var[64];
    job *jb = calloc((size_t)n, sizeof *jb);
    if (!envp || !jb) {
        free(envp);
        free(jb);
        return kd_errf(err, "out of memory");
    }
    snprintf(omp_var, sizeof omp_var, "OMP_NUM_THREADS=%d", threads);
    int k = 0;
    for (int i = 0; i < n_env; i++)
        if (strncmp(environ[i], "OMP_NUM_THREADS=", 16)) envp[k++] = environ[i];
    envp[k] = omp_var;
    int64_t done = sum->skipped, running = 0, next = 0;
    int tty = isatty(2) && !quiet, rc = 0;
    if (!quiet)
        fprintf(stderr, "kd sweep: %lld points -> %s/runs: %lld finished, %lld to resume, %lld to train; %d job(s) x %d thread(s)\n",
                (long long)n, out, (long long)sum->skipped, (long long)sum->resumed,
                (long long)(n - sum->skipped - sum->resumed), jobs, threads);
    double last_show = 0;
    while (done < n && !rc) {
        while (running < jobs && next < n && !rc) {
            int64_t i = next++;
            kd_sweep_point *pt = kd_sweep_get(s, i);
            if (pt->state != KD_SWEEP_TODO && pt->state != KD_SWEEP_RESUME) continue;
            int resumed = pt->state == KD_SWEEP_RESUME;
            if ((rc = spawn(s, i, &jb[i], envp, err))) break;
            running++;
            if (quiet) continue;
            clear_status();
            char from[64] = "";
            if (resumed) snprintf(from, sizeof from, " (resuming from step %lld)", (long long)pt->resume_step);
            fprintf(stderr, "[%lld/%lld] start %s%s, log %s/train.log\n", (long long)done, (long long)n, pt->label,
                    from, pt->dir);
        }
        int reaped = 0;
        for (int64_t i = 0; i < n && running; i++) {
            kd_sweep_point *pt = kd_sweep_get(s, i);
            int st;
            if (pt->state != KD_SWEEP_RUNNING || waitpid(jb[i].pid, &st, WNOHANG) != jb[i].pid) continue;
            running--, done++, reaped = 1;
            if (!kd_sweep_finished(s, i, WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                if (quiet) continue;
                clear_status();
                fprintf(stderr, "[%lld/%lld] done  %s in %.1f s: ce %.4f ppl %.2f kl %.4f top1 %.3f\n", (long long)done,
                        (long long)n, pt->label, kd_now_s() - jb[i].t0, pt->ev.ce, pt->ev.ppl, pt->ev.kl, pt->ev.top1);
            } else {
                char tail[300];
                kd_sweep_log_tail(s, i, tail, sizeof tail);
                clear_status();
                fprintf(stderr, "[%lld/%lld] FAILED %s (%s %d): %s\n", (long long)done, (long long)n, pt->label,
                        WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), tail);
            }
        }
        if (!reaped && running) {
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
            if (tty && kd_now_s() - last_show > 1.0) show_running(s), last_show = kd_now_s();
        }
    }
    for (int64_t i = 0; i < n; i++) {   /* after an error: stop the others (they resume from their checkpoints) */
        kd_sweep_point *pt = kd_sweep_get(s, i);
        if (pt->state == KD_SWEEP_RUNNING)
            kill(jb[i].pid, SIGTERM), waitpid(jb[i].pid, NULL, 0), pt->state = KD_SWEEP_FAILED;
    }
    if (tty) clear_status();
    free(envp);
    free(jb);
    return rc;
}

/* gnuplot SCRIPT run in the plots directory; 0 when it succeeded. */
static int run_gnuplot(const char *gp, const char *plots, const char *script) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(plots) == 0) {
            int fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
            execl(gp, "gnuplot", script, (char *)NULL);
        }
        _exit(127);
    }
    int st;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* The plot files, then gnuplot on them; 1 when both pictures were drawn. */
static int draw(kd_sweep *s) {
    char plots[4096], gp[4096] = "";
    int blocks = kd_sweep_write_plots(s, plots, sizeof plots);
    if (blocks < 0) return 0;
    const char *path = getenv("PATH");   /* gnuplot on PATH? */
    char *dirs = strdup(path ? path : ""), *save = NULL;
    for (char *dir = dirs ? strtok_r(dirs, ":", &save) : NULL; dir && !gp[0]; dir = strtok_r(NULL, ":", &save))
        if (snprintf(gp, sizeof gp, "%s/gnuplot", dir) >= (int)sizeof gp || access(gp, X_OK)) gp[0] = 0;
    free(dirs);
    if (!gp[0])
        kd_warn("sweep: gnuplot is not installed (apt-get install gnuplot-nox): skipping heatmap.png and curves.png; "
                "the data and scripts are in %s", plots);
    else if (run_gnuplot(gp, plots, "heatmap.gp") || (blocks && run_gnuplot(gp, plots, "curves.gp")))
        kd_warn("sweep: gnuplot failed (see %s/gnuplot.log)", plots);
    else if (!blocks) kd_warn("sweep: no evaluation lines in the runs' metrics.jsonl: no curves.png");
    else return 1;
    return 0;
}

/* Plan, run, collect, draw and write the results; the error of the first step that failed. */
static int sweep(const kd_sweep_opts *o, int jobs, int quiet, kd_err *err) {
    kd_sweep *s = kd_sweep_plan(o, err);
    if (!s) return -1;
    int rc = run_points(s, o->out, jobs, quiet, err);
    const kd_sweep_summary *sum = kd_sweep_counts(s);
    if (!rc) {
        sum = kd_sweep_collect(s);
        rc = kd_sweep_write_results(s, draw(s), err);
    }
    if (!rc && !quiet && sum->best >= 0) {
        const kd_sweep_point *b = kd_sweep_get(s, sum->best);
        fprintf(stderr, "kd sweep: best %s (%s %.4f) -> %s/final; results in %s/results.md\n", b->label,
                kd_sweep_metric_name(o->metric), kd_sweep_metric_of(&b->ev, o->metric), b->dir, o->out);
    }
    if (!rc && sum->failed)
        rc = kd_errf(err, "%lld of %lld points failed (status \"failed\" in %s/results.csv; see their train.log)",
                     (long long)sum->failed, (long long)sum->points, o->out);
    kd_sweep_free(s);
    return rc;
}

static void usage(const kd_opt *opts) {
    kd_opts_usage("sweep", opts);
    printf("\nTrains one student per point of the grid (the cartesian product of the --grid\n"
           "values) with `kd train`, then compares them. Any run-config key can be swept\n"
           "(see kd train --help); values are parsed as JSON when they are valid JSON, else\n"
           "taken as strings, and commas inside [...] or \"...\" do not split. --set fixes\n"
           "a key for every point. Every point's config is checked before anything runs.\n\n");
    kd_opts_help(opts);
    printf("\nExample: kd sweep --config run.json --grid alpha=0,0.25,0.5,0.75,1 \\\n"
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
           "  kd export --model $(cat SWEEP_DIR/best.txt) ...   carry the best student on\n");
}

static int add_grid(void *grid, const char *v, kd_err *err) {
    return kd_sweep_grid_add(grid, v, err);
}

static int parse_metric(void *metric, const char *v, kd_err *err) {
    return kd_sweep_metric_parse(v, metric, err);
}

int kd_cmd_sweep(int argc, char **argv) {
    kd_sweep_grid grid;
    memset(&grid, 0, sizeof grid);
    kd_sweep_opts o;
    memset(&o, 0, sizeof o);
    o.metric = KD_SWEEP_CE;
    int64_t jobs = 1;
    int quiet = 0;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    kd_opt_list set_list = {sets, 0, argc};
    char grid_help[64];
    snprintf(grid_help, sizeof grid_help, "a swept key and its values (up to %d keys)", KD_SWEEP_MAX_KEYS);
    const kd_opt opts[] = {
        {"--config", KD_OPT_STRING, &o.config, "RUN.json", .help = "the run config of every point (kd train --help)",
         .flags = KD_OPT_REQUIRED},
        {"--grid", KD_OPT_CALL, &grid, "key=v1,v2,...", .help = grid_help, .flags = KD_OPT_REQUIRED | KD_OPT_REPEAT,
         .call = add_grid},
        {"--set", KD_OPT_LIST, &set_list, "key=value", .help = "override a key of RUN.json for all points"},
        {"--out", KD_OPT_STRING, &o.out, "SWEEP_DIR", .help = "where the runs and the results go", .flags = KD_OPT_REQUIRED},
        {"--jobs", KD_OPT_INT, &jobs, "N",
         .help = "points trained at once, as child processes; the OMP_NUM_THREADS\n"
                 "threads (default: all cores) are divided among them",
         .lo = 1, .hi = 1024},
        {"--metric", KD_OPT_CALL, &o.metric, "ce|kl|ppl|top1",
         .help = "final validation metric that picks the best point:\n"
                 "ce, kl, ppl (lower is better) or top1 (higher is better)",
         .call = parse_metric, .def = kd_sweep_metric_name(o.metric)},
        {"--quiet", KD_OPT_FLAG, &quiet, NULL, .help = "no progress lines"},
        {0}};
    kd_err err;
    int status = 2;
    if (!sets) return 1;
    if (kd_cli_wants_help(argc, argv)) {
        usage(opts);
        status = 0;
        goto done;
    }
    if (kd_opts_parse("sweep", opts, argc, argv)) goto done;
    o.sets = (char **)sets;
    o.n_sets = set_list.n;
    o.grid = &grid;
    status = 0;
    if (sweep(&o, (int)jobs, quiet, &err)) {
        fprintf(stderr, "kd sweep: %s\n", err.msg);
        status = 1;
    }
done:
    kd_sweep_grid_free(&grid);
    free(sets);
    return status;
}
