/*
 * kd_sweep.c — grid sweeps over run-config keys (see kd_sweep.h): grid parsing,
 * per-point config resolution and resume detection, each point's `kd train`
 * command line, results.csv / results.md / best.txt, and the gnuplot data and
 * scripts. The program (cli/cmd_sweep.c) runs the processes.
 */
#include "train/kd_sweep.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_log.h"
#include "train/kd_eval.h"
#include "train/kd_run_config.h"

#define PATHBUF 4096

/* ---- the grid ------------------------------------------------------------------------ */

static int add_value(kd_sweep_axis *a, const char *spec, const char *s, size_t len, kd_err *err) {
    while (len && isspace((unsigned char)*s)) s++, len--;
    while (len && isspace((unsigned char)s[len - 1])) len--;
    if (!len) return kd_errf(err, "--grid '%s': value %d is empty (expected key=v1,v2,...)", spec, a->n + 1);
    char *buf = strndup(s, len);
    if (!buf) return kd_errf(err, "out of memory");
    cJSON *v = cJSON_ParseWithOpts(buf, NULL, 1);
    if (!v) v = cJSON_CreateString(buf);
    free(buf);
    cJSON **nv = v ? realloc(a->values, (size_t)(a->n + 1) * sizeof *nv) : NULL;
    if (!nv) {
        cJSON_Delete(v);
        return kd_errf(err, "out of memory");
    }
    a->values = nv;
    for (int i = 0; i < a->n; i++)
        if (cJSON_Compare(a->values[i], v, 1)) {
            char t[128];
            kd_sweep_value_text(v, t, sizeof t);
            cJSON_Delete(v);
            return kd_errf(err, "--grid '%s': value '%s' is listed twice", spec, t);
        }
    a->values[a->n++] = v;
    return 0;
}

static void axis_free(kd_sweep_axis *a) {
    for (int i = 0; i < a->n; i++) cJSON_Delete(a->values[i]);
    free(a->values);
    memset(a, 0, sizeof *a);
}

int kd_sweep_grid_add(kd_sweep_grid *g, const char *spec, kd_err *err) {
    const char *eq = strchr(spec, '=');
    if (!eq) return kd_errf(err, "--grid '%s': expected key=v1,v2,... (no '=')", spec);
    if (eq == spec) return kd_errf(err, "--grid '%s': the key before '=' is empty", spec);
    if (!eq[1]) return kd_errf(err, "--grid '%s': no values after '=' (expected key=v1,v2,...)", spec);
    if (g->n_axes == KD_SWEEP_MAX_KEYS) return kd_errf(err, "--grid '%s': at most %d keys can be swept", spec, KD_SWEEP_MAX_KEYS);
    kd_sweep_axis *a = &g->axes[g->n_axes];
    memset(a, 0, sizeof *a);
    if ((size_t)(eq - spec) >= sizeof a->key) return kd_errf(err, "--grid '%s': key too long", spec);
    memcpy(a->key, spec, (size_t)(eq - spec));
    for (int i = 0; i < g->n_axes; i++)
        if (!strcmp(g->axes[i].key, a->key))
            return kd_errf(err, "--grid: key '%s' is given twice (list all its values in one --grid)", a->key);
    int depth = 0, inq = 0;
    const char *start = eq + 1;
    for (const char *c = start;; c++) {
        if (*c && inq) {
            if (*c == '\\' && c[1]) c++;
            else if (*c == '"') inq = 0;
            continue;
        }
        if (*c == '"') inq = 1;
        else if (*c == '[' || *c == '{') depth++;
        else if ((*c == ']' || *c == '}') && depth > 0) depth--;
        else if (!*c || (*c == ',' && depth == 0)) {
            if (add_value(a, spec, start, (size_t)(c - start), err)) {
                axis_free(a);
                return -1;
            }
            if (!*c) break;
            start = c + 1;
        }
    }
    g->n_axes++;
    return 0;
}

void kd_sweep_grid_free(kd_sweep_grid *g) {
    for (int i = 0; i < g->n_axes; i++) axis_free(&g->axes[i]);
    g->n_axes = 0;
}

int64_t kd_sweep_grid_size(const kd_sweep_grid *g) {
    int64_t n = g->n_axes ? 1 : 0;
    for (int i = 0; i < g->n_axes; i++) n = n * g->axes[i].n > KD_SWEEP_MAX_POINTS ? KD_SWEEP_MAX_POINTS + 1 : n * g->axes[i].n;
    return n;
}

void kd_sweep_point_index(const kd_sweep_grid *g, int64_t p, int *idx) {
    for (int i = g->n_axes - 1; i >= 0; i--) {
        idx[i] = (int)(p % g->axes[i].n);
        p /= g->axes[i].n;
    }
}

void kd_sweep_value_text(const cJSON *v, char *out, size_t n) {
    char *s = cJSON_IsString(v) ? NULL : cJSON_PrintUnformatted(v);
    snprintf(out, n, "%s", cJSON_IsString(v) ? v->valuestring : s ? s : "?");
    free(s);
}

int kd_sweep_point_name(const kd_sweep_grid *g, int64_t p, char *out, size_t n, kd_err *err) {
    int idx[KD_SWEEP_MAX_KEYS];
    kd_sweep_point_index(g, p, idx);
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < g->n_axes; i++) {
        char val[256];
        kd_sweep_value_text(g->axes[i].values[idx[i]], val, sizeof val);
        int w = snprintf(out + len, n - len, "%s%s-%s", i ? "_" : "", g->axes[i].key, val);
        if (w < 0 || (size_t)w >= n - len) return kd_errf(err, "point %lld: directory name too long", (long long)p);
        for (size_t j = len; j < len + (size_t)w; j++)
            if (!isalnum((unsigned char)out[j]) && !strchr(".+-", out[j])) out[j] = '_';
        len += (size_t)w;
    }
    return 0;
}

static const char *METRIC[] = {"ce", "ppl", "kl", "top1"};
static const char *METRIC_FMT[] = {"%.4f", "%.2f", "%.4f", "%.3f"};

int kd_sweep_metric_parse(const char *s, kd_sweep_metric *m, kd_err *err) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, METRIC[i])) {
            *m = (kd_sweep_metric)i;
            return 0;
        }
    return kd_errf(err, "--metric '%s': expected ce, ppl, kl or top1", s);
}

/* ---- points ---------------------------------------------------------------------------- */

#define IS_OK(pt) ((pt)->state == KD_SWEEP_OK || (pt)->state == KD_SWEEP_SKIP)
typedef kd_sweep_point point;

struct kd_sweep {
    kd_sweep_opts o;
    point *pts;
    int64_t n;
    kd_sweep_summary sum;
};

const char *kd_sweep_metric_name(kd_sweep_metric m) { return METRIC[m]; }

double kd_sweep_metric_of(const kd_eval_result *e, kd_sweep_metric m) {
    return m == KD_SWEEP_CE ? e->ce : m == KD_SWEEP_PPL ? e->ppl : m == KD_SWEEP_KL ? e->kl : e->top1;
}
#define metric_of kd_sweep_metric_of

static int better(double a, double b, kd_sweep_metric m) { return m == KD_SWEEP_TOP1 ? a > b : a < b; }

/* Compare a run directory's run.json with the point's resolved config. */
static int check_same_config(const point *pt, kd_err *err) {
    kd_run_config rc;
    if (kd_train_load_run_config(&rc, pt->dir, err)) return -1;
    cJSON *have = kd_run_config_to_json(&rc);
    int rc2 = 0;
    for (const cJSON *e = pt->resolved->child; e && !rc2; e = e->next) {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(have, e->string);
        if (h && cJSON_Compare(h, e, 1)) continue;
        char a[128], b[128];
        kd_sweep_value_text(h, a, sizeof a);
        kd_sweep_value_text(e, b, sizeof b);
        rc2 = kd_errf(err, "%s/run.json was trained with %s=%s, but this sweep gives %s=%s "
                      "(remove that directory, or sweep into another --out)", pt->dir, e->string, a, e->string, b);
    }
    cJSON_Delete(have);
    return rc2;
}

/* Skip a finished run, resume one with a checkpoint, clear any other leftover. */
static int classify(point *pt, kd_err *err) {
    char p[PATHBUF];
    pt->state = KD_SWEEP_TODO;
    if (kd_path_join(p, sizeof p, pt->dir, "final_eval.json", err)) return -1;
    if (kd_file_exists(p)) {
        pt->state = KD_SWEEP_SKIP;
        return check_same_config(pt, err);
    }
    if (kd_path_join(p, sizeof p, pt->dir, "checkpoints/latest", err)) return -1;
    if (kd_file_exists(p)) {
        char *s = kd_read_file(p, NULL, err);
        if (!s) return -1;
        pt->resume_step = strncmp(s, "step-", 5) ? 0 : strtoll(s + 5, NULL, 10);
        free(s);
        pt->state = KD_SWEEP_RESUME;
        return check_same_config(pt, err);
    }
    return kd_file_exists(pt->dir) ? kd_rmtree(pt->dir, err) : 0;
}

/* Resolve and validate every point's config before anything runs. */
static int make_points(const kd_sweep_opts *o, point *pts, int64_t n, kd_err *err) {
    const kd_sweep_grid *g = o->grid;
    for (int i = 0; i < o->n_sets; i++)
        for (int a = 0; a < g->n_axes; a++)
            if (!strncmp(o->sets[i], g->axes[a].key, strlen(g->axes[a].key)) && o->sets[i][strlen(g->axes[a].key)] == '=')
                return kd_errf(err, "'%s' is both swept (--grid) and fixed (--set %s)", g->axes[a].key, o->sets[i]);
    cJSON *root = kd_json_load(o->config, err);
    if (!root) return -1;
    int rc = 0;
    for (int64_t p = 0; p < n && !rc; p++) {
        point *pt = &pts[p];
        kd_sweep_point_index(g, p, pt->idx);
        rc = kd_sweep_point_name(g, p, pt->name, sizeof pt->name, err);
        size_t ll = 0;
        for (int a = 0; a < g->n_axes && !rc; a++) {
            char val[256];
            kd_sweep_value_text(g->axes[a].values[pt->idx[a]], val, sizeof val);
            ll += (size_t)snprintf(pt->label + ll, sizeof pt->label - ll, "%s%s=%s", a ? " " : "", g->axes[a].key, val);
            if (ll >= sizeof pt->label) ll = sizeof pt->label - 1;
            char *js = cJSON_PrintUnformatted(g->axes[a].values[pt->idx[a]]);
            size_t len = strlen(g->axes[a].key) + (js ? strlen(js) : 0) + 2;
            if (!js || !(pt->axis_sets[a] = malloc(len))) rc = kd_errf(err, "out of memory");
            else snprintf(pt->axis_sets[a], len, "%s=%s", g->axes[a].key, js);
            free(js);
        }
        if (!rc && snprintf(pt->dir, sizeof pt->dir, "%s/runs/%s", o->out, pt->name) >= (int)sizeof pt->dir)
            rc = kd_errf(err, "%s: path too long", o->out);
        for (int64_t q = 0; q < p && !rc; q++)
            if (!strcmp(pts[q].name, pt->name))
                rc = kd_errf(err, "points '%s' and '%s' map to the same directory name '%s'", pts[q].label, pt->label,
                             pt->name);
        if (rc) break;
        cJSON *t = cJSON_Duplicate(root, 1);
        for (int i = 0; i < o->n_sets && !rc; i++) rc = kd_run_config_set(t, o->sets[i], err);
        for (int a = 0; a < g->n_axes && !rc; a++) rc = kd_run_config_set(t, pt->axis_sets[a], err);
        kd_run_config c;
        if (!rc) rc = kd_run_config_from_json(&c, t, o->config, err);
        cJSON_Delete(t);
        if (rc) {
            kd_err_prefix(err, "point %s", pt->label);
            break;
        }
        pt->resolved = kd_run_config_to_json(&c);
        pt->steps = c.steps;
    }
    cJSON_Delete(root);
    return rc ? -1 : 0;
}

/* ---- reading a finished run -------------------------------------------------------------- */

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* final_eval.json, read with the keys kd_eval_to_json writes (train/kd_eval.h). */
static int load_eval(point *pt, kd_err *err) {
    char p[PATHBUF];
    cJSON *o = kd_path_join(p, sizeof p, pt->dir, "final_eval.json", err) ? NULL : kd_json_load(p, err);
    if (!o) return -1;
    int rc = kd_eval_from_json(o, p, &pt->ev, err);
    cJSON_Delete(o);
    if (rc) return -1;
    if (!isfinite(pt->ev.kl + pt->ev.top1))
        return kd_errf(err, "%s: expected finite numbers ce, ppl, kl and top1", p);
    return 0;
}

/* From metrics.jsonl: training tokens/s (tokens / elapsed_s of the last step line,
 * summed over the segments of a resumed run, whose elapsed_s restarts) and the
 * validation curve (eval lines and the final eval; a resumed run's re-logged steps
 * replace the earlier ones). */
static void read_metrics(const point *pt, kd_sweep_metric m, double *tps, double **steps, double **vals, int *n) {
    char p[PATHBUF];
    *tps = NAN;
    *n = 0;
    *steps = *vals = NULL;
    size_t len;
    char *text = kd_path_join(p, sizeof p, pt->dir, "metrics.jsonl", NULL) ? NULL : kd_read_file(p, &len, NULL);
    if (!text) return;
    double tok_sum = 0, el_sum = 0, seg_tok0 = NAN, last_tok = NAN, last_el = NAN, last_step = 0;
    int cap = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;
        double step = num(o, "step"), tok = num(o, "tokens"), el = num(o, "elapsed_s");
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "eval");
        if (!ev) ev = cJSON_GetObjectItemCaseSensitive(o, "final_eval");
        if (isfinite(tok) && isfinite(el) && step > 0) {
            if (!isfinite(last_el) || el < last_el || step <= last_step) {   /* a new process: a new segment */
                if (isfinite(last_el)) tok_sum += last_tok - seg_tok0, el_sum += last_el;
                seg_tok0 = tok - tok / step;
            }
            last_tok = tok, last_el = el, last_step = step;
        } else if (ev && isfinite(step) && isfinite(num(ev, METRIC[m]))) {
            while (*n && (*steps)[*n - 1] >= step) (*n)--;
            if (*n == cap) {
                double *a = realloc(*steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *a);
                double *b = a ? realloc(*vals, (size_t)cap * sizeof *b) : NULL;
                if (a) *steps = a;
                if (!b) {   /* out of memory: keep the curve so far */
                    cJSON_Delete(o);
                    break;
                }
                *vals = b;
            }
            (*steps)[*n] = step;
            (*vals)[(*n)++] = num(ev, METRIC[m]);
        }
        cJSON_Delete(o);
    }
    if (isfinite(last_el)) tok_sum += last_tok - seg_tok0, el_sum += last_el;
    if (el_sum > 0) *tps = tok_sum / el_sum;
    free(text);
}

/* ---- running the points (the program runs the processes) -------------------------------- */

int64_t kd_sweep_n_points(const kd_sweep *s) { return s->n; }
kd_sweep_point *kd_sweep_get(kd_sweep *s, int64_t i) { return &s->pts[i]; }
const kd_sweep_summary *kd_sweep_counts(const kd_sweep *s) { return &s->sum; }

int kd_sweep_command(kd_sweep *s, int64_t i, char ***argv_out, char *log, size_t log_n, kd_err *err) {
    const kd_sweep_opts *o = &s->o;
    point *pt = &s->pts[i];
    *argv_out = NULL;
    if (kd_mkdirs(pt->dir, err) || kd_path_join(log, log_n, pt->dir, "train.log", err)) return -1;
    char **argv = calloc((size_t)(2 * (o->n_sets + KD_SWEEP_MAX_KEYS) + 8), sizeof *argv);
    if (!argv) return kd_errf(err, "out of memory");
    int k = 0;
    argv[k++] = "kd";
    argv[k++] = "train";
    if (pt->state == KD_SWEEP_RESUME) {
        argv[k++] = "--resume";
        argv[k++] = pt->dir;
    } else {
        argv[k++] = "--config";
        argv[k++] = (char *)o->config;
        for (int j = 0; j < o->n_sets; j++) argv[k++] = "--set", argv[k++] = o->sets[j];
        for (int a = 0; a < o->grid->n_axes; a++) argv[k++] = "--set", argv[k++] = pt->axis_sets[a];
        argv[k++] = "--out";
        argv[k++] = pt->dir;
    }
    FILE *f = fopen(log, "a");
    if (!f) {
        free(argv);
        return kd_errf(err, "%s: cannot open for appending", log);
    }
    fprintf(f, "$");
    for (int j = 0; j < k; j++) fprintf(f, strpbrk(argv[j], " \"'$\\") ? " '%s'" : " %s", argv[j]);
    fprintf(f, "\n");
    if (fclose(f)) {
        free(argv);
        return kd_errf(err, "%s: write error", log);
    }
    *argv_out = argv;
    return 0;
}

int kd_sweep_finished(kd_sweep *s, int64_t i, int exit_ok) {
    point *pt = &s->pts[i];
    kd_err e2;
    if (exit_ok && !load_eval(pt, &e2)) {
        pt->state = KD_SWEEP_OK;
        return 0;
    }
    pt->state = KD_SWEEP_FAILED;
    s->sum.failed++;
    return -1;
}

void kd_sweep_log_tail(const kd_sweep *s, int64_t i, char *out, size_t n) {
    char p[PATHBUF + 16];
    snprintf(p, sizeof p, "%s/train.log", s->pts[i].dir);
    char *t = kd_read_file(p, NULL, NULL);
    out[0] = 0;
    if (!t) return;
    char *e = t + strlen(t);
    while (e > t && isspace((unsigned char)e[-1])) *--e = 0;
    char *b = strrchr(t, '\n');
    snprintf(out, n, "%s", b ? b + 1 : t);
    free(t);
}

int64_t kd_sweep_newest_step(const kd_sweep *s, int64_t i) {
    char p[PATHBUF + 16], buf[4096];
    snprintf(p, sizeof p, "%s/metrics.jsonl", s->pts[i].dir);
    FILE *f = fopen(p, "rb");
    size_t got = 0;
    if (f && fseek(f, -(long)(sizeof buf - 1), SEEK_END)) rewind(f);
    if (f) got = fread(buf, 1, sizeof buf - 1, f), fclose(f);
    buf[got] = 0;
    char *st = NULL, *q = buf;
    while ((q = strstr(q, "{\"step\":"))) st = q++;
    return st ? strtoll(st + 8, NULL, 10) : 0;
}

/* ---- results ------------------------------------------------------------------------------ */

/* s into f, with the characters in `special` preceded by `esc` (CSV, Markdown, gnuplot strings). */
static void put_escaped(FILE *f, const char *s, const char *special, char esc) {
    for (; *s; s++) {
        if (strchr(special, *s)) fputc(esc, f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
}

static void csv_put(FILE *c, const char *s) {
    int q = strpbrk(s, ",\"\n") != NULL;
    fputs(q ? "\"" : "", c), put_escaped(c, s, q ? "\"" : "", '"'), fputs(q ? "\"," : ",", c);
}

/* results.csv and results.md, one row per point in grid order; best.txt and the best link. */
static int write_results(const kd_sweep_opts *o, point *pts, int64_t n, int64_t best, int plotted, kd_err *err) {
    const kd_sweep_grid *g = o->grid;
    char p[PATHBUF], v[256];
    kd_atomic_file csv, md;
    if (kd_path_join(p, sizeof p, o->out, "results.csv", err) || kd_atomic_open(&csv, p, err)) return -1;
    if (kd_path_join(p, sizeof p, o->out, "results.md", err) || kd_atomic_open(&md, p, err)) {
        kd_atomic_abort(&csv);
        return -1;
    }
    FILE *c = csv.f, *f = md.f;
    fprintf(f, "# Sweep results\n\nConfig `%s`, %lld points. Metric: **%s** on the validation set (%s is better).\n\n",
            o->config, (long long)n, METRIC[o->metric], o->metric == KD_SWEEP_TOP1 ? "higher" : "lower");
    if (best >= 0)
        fprintf(f, "Best: **%s** -> `runs/%s/final` (also in `best.txt` and the `best` link).\n\n", pts[best].label,
                pts[best].name);
    fputc('|', f);
    for (int a = 0; a < g->n_axes; a++) {
        csv_put(c, g->axes[a].key);
        fputc(' ', f), put_escaped(f, g->axes[a].key, "|", '\\'), fputs(" |", f);
    }
    fprintf(c, "ce,ppl,kl,top1,tokens_per_s,best,status,run\n");
    fprintf(f, " ce | ppl | kl | top1 | tokens/s | rank | run |\n|");
    for (int a = 0; a < g->n_axes + 7; a++) fputs(a < g->n_axes + 6 ? "---:|" : "---|\n", f);
    for (int64_t i = 0; i < n; i++) {
        const point *pt = &pts[i];
        int rank = 1;
        for (int64_t j = 0; j < n; j++)
            rank += IS_OK(&pts[j]) && better(metric_of(&pts[j].ev, o->metric), metric_of(&pt->ev, o->metric), o->metric);
        fputc('|', f);
        for (int a = 0; a < g->n_axes; a++) {
            kd_sweep_value_text(g->axes[a].values[pt->idx[a]], v, sizeof v);
            csv_put(c, v);
            fputc(' ', f), put_escaped(f, v, "|", '\\'), fputs(" |", f);
        }
        double tps = isfinite(pt->tps) ? pt->tps : 0.0;
        if (IS_OK(pt)) {
            fprintf(c, "%.6g,%.6g,%.6g,%.6g,%.1f,%d,ok,", pt->ev.ce, pt->ev.ppl, pt->ev.kl, pt->ev.top1, tps, i == best);
            fprintf(f, " %.4f | %.2f | %.4f | %.3f | %.0f | %s%d%s | runs/%s |\n", pt->ev.ce, pt->ev.ppl, pt->ev.kl,
                    pt->ev.top1, tps, i == best ? "**" : "", rank, i == best ? " (best)**" : "", pt->name);
        } else {
            fprintf(c, ",,,,,0,failed,");
            fprintf(f, " failed | | | | | | runs/%s (see train.log) |\n", pt->name);
        }
        fprintf(c, "runs/%s\n", pt->name);
    }
    if (plotted) fprintf(f, "\n![%s heatmap](heatmap.png)\n\n![validation curves](curves.png)\n", METRIC[o->metric]);
    if (kd_atomic_commit(&csv, err)) {
        kd_atomic_abort(&md);
        return -1;
    }
    if (kd_atomic_commit(&md, err)) return -1;
    if (best < 0) return 0;
    char fin[PATHBUF + 16], abs[PATH_MAX + 32], link[PATHBUF + 16], tmp[PATHBUF + 16];
    snprintf(fin, sizeof fin, "%s/final", pts[best].dir);
    if (!realpath(fin, abs)) snprintf(abs, sizeof abs, "%s", fin);
    size_t len = strlen(abs);
    abs[len] = '\n';
    if (kd_path_join(p, sizeof p, o->out, "best.txt", err) || kd_write_file_atomic(p, abs, len + 1, err)) return -1;
    snprintf(fin, sizeof fin, "runs/%s/final", pts[best].name);
    snprintf(link, sizeof link, "%s/best", o->out);
    snprintf(tmp, sizeof tmp, "%s/best.tmp", o->out);
    unlink(tmp);
    if (symlink(fin, tmp) || rename(tmp, link))
        kd_warn("sweep: could not point %s at %s: %s", link, fin, strerror(errno));
    return 0;
}

/* ---- pictures ------------------------------------------------------------------------------- */

/* `set WHAT "s"TAIL`, s escaped as a gnuplot string. */
static void gp_set(FILE *f, const char *what, const char *s, const char *tail) {
    fprintf(f, "set %s \"", what);
    for (; *s; s++)
        if (*s == '\n') fputs("\\n", f);
        else put_escaped(f, (char[]){*s, 0}, "\"\\", '\\');
    fprintf(f, "\"%s\n", tail);
}

static void gp_header(FILE *f, int w, int h, const char *name) {
    fprintf(f, "# written by kd sweep; run it from this directory: gnuplot %s.gp\n"
               "set terminal pngcairo size %d,%d font \"sans,11\" noenhanced\nset output '../%s.png'\n"
               "set palette defined (0 '#440154', 1 '#3b528b', 2 '#21918c', 3 '#5ec962', 4 '#fde725')\n",
            name, w, h, name);
}

static void gp_tics(FILE *f, const char *which, const kd_sweep_axis *a) {
    fprintf(f, "set %s (", which);
    for (int i = 0; i < a->n; i++) {
        char v[128];
        kd_sweep_value_text(a->values[i], v, sizeof v);
        fputs(i ? ", \"" : "\"", f);
        put_escaped(f, v, "\"\\", '\\');
        fprintf(f, "\" %d", i);
    }
    fputs(")\n", f);
}

/* The metric over the first two keys (cells: the best over any other keys) as a
 * labelled heatmap, or over the one key as a line chart. */
static void write_heatmap(const kd_sweep_opts *o, const point *pts, int64_t n, int64_t best, FILE *d, FILE *f) {
    const kd_sweep_grid *g = o->grid;
    const kd_sweep_axis *ax = &g->axes[0], *ay = g->n_axes > 1 ? &g->axes[1] : NULL;
    int nx = ax->n, ny = ay ? ay->n : 1, bx = pts[best].idx[0], by = ay ? pts[best].idx[1] : 0;
    double *cell = malloc((size_t)nx * (size_t)ny * sizeof *cell), lo = INFINITY, hi = -INFINITY;
    if (!cell) return;
    for (int i = 0; i < nx * ny; i++) cell[i] = NAN;
    for (int64_t i = 0; i < n; i++) {
        double v = metric_of(&pts[i].ev, o->metric), *c = &cell[(ay ? pts[i].idx[1] : 0) * nx + pts[i].idx[0]];
        if (IS_OK(&pts[i]) && (isnan(*c) || better(v, *c, o->metric))) *c = v;
    }
    for (int i = 0; i < nx * ny; i++)
        if (isfinite(cell[i])) lo = fmin(lo, cell[i]), hi = fmax(hi, cell[i]);
    if (!(hi - lo > 1e-12 * fabs(hi))) lo -= 1e-3 * fabs(lo) + 1e-6, hi += 1e-3 * fabs(hi) + 1e-6;
    for (int i = 0; i < nx * ny; i++) {
        double v = cell[i], bright = (v - lo) / (hi - lo);
        if (o->metric != KD_SWEEP_TOP1) bright = 1 - bright;   /* better is brighter */
        char lab[64];
        snprintf(lab, sizeof lab, METRIC_FMT[o->metric], v);
        if (isfinite(v)) fprintf(d, "%d %d %.17g %s \"%s\"\n", i % nx, i / nx, v, bright > 0.55 ? "0x000000" : "0xffffff", lab);
    }
    free(cell);
    const char *m = METRIC[o->metric];
    char t[1600], others[300] = "";
    for (int a = 2, len = 0; a < g->n_axes && len < (int)sizeof others; a++)
        len += snprintf(others + len, sizeof others - (size_t)len, "%s%s", a > 2 ? ", " : "\neach cell: the best over ",
                        g->axes[a].key);
    snprintf(t, sizeof t, "validation %s (%s is better) over %s%s%s%s\nbest: %s", m,
             o->metric == KD_SWEEP_TOP1 ? "higher" : "lower", ax->key, ay ? " x " : "", ay ? ay->key : "", others,
             pts[best].label);
    int w = 260 + 120 * nx, h = 200 + 90 * ny + 20 * (g->n_axes > 2);
    gp_header(f, ay ? (w < 760 ? 760 : w > 1800 ? 1800 : w) : nx > 8 ? 1000 : 800,
              ay ? (h < 520 ? 520 : h > 1400 ? 1400 : h) : 520, "heatmap");
    gp_set(f, "title", t, " font \",13\"");
    gp_set(f, "xlabel", ax->key, "");
    gp_set(f, "ylabel", ay ? ay->key : m, "");
    gp_tics(f, "xtics", ax);
    fprintf(f, "set xrange [-0.5:%g]\nunset key\n", nx - 0.5);
    if (ay) {
        gp_tics(f, "ytics", ay);
        fprintf(f, "set yrange [-0.5:%g]\nset cbrange [%.17g:%.17g]\nset cblabel \"%s\"\nset tics scale 0\n%s"
                   "set object 1 rect from %g,%g to %g,%g front fillstyle empty border lc rgb \"red\" lw 4\n"
                   "plot 'heatmap.dat' using 1:2:(0.5):(0.5):3 with boxxyerror fillstyle solid 1.0 noborder lc palette, \\\n"
                   "     '' using 1:2:5:4 with labels tc rgb variable font \",%d\"\n",
                ny - 0.5, lo, hi, m, o->metric == KD_SWEEP_TOP1 ? "" : "set palette negative\n", bx - 0.5, by - 0.5,
                bx + 0.5, by + 0.5, nx * ny > 64 ? 8 : 13);
    } else {
        fprintf(f, "set offsets 0,0,graph 0.12,graph 0.08\nset grid ytics\n"
                   "set label 1 \"best\" at %d, %.17g center offset 0,-1.5 tc rgb \"red\"\n"
                   "plot 'heatmap.dat' using 1:3 with linespoints lw 2 pt 7 ps 1.2 lc rgb \"#3b528b\", \\\n"
                   "     '' using 1:3:5 with labels offset 0,1.2, \\\n"
                   "     '' using 1:($1 == %d ? $3 : 1/0) with points pt 7 ps 2.2 lc rgb \"red\"\n",
                bx, metric_of(&pts[best].ev, o->metric), bx);
    }
}

/* Every run's validation curve; returns the number of runs with one. */
static int write_curves(const kd_sweep_opts *o, const point *pts, int64_t n, FILE *d, FILE *f) {
    int blocks = 0;
    gp_header(f, n > 8 ? 1200 : 1000, n > 20 ? 800 : 600, "curves");
    fprintf(f, "set title \"validation %s per step\" font \",13\"\nset xlabel \"step\"\nset ylabel \"%s\"\n"
               "set key outside right top\nset grid\nplot ", METRIC[o->metric], METRIC[o->metric]);
    for (int64_t i = 0; i < n; i++) {
        double tps, *st, *va;
        int k;
        read_metrics(&pts[i], o->metric, &tps, &st, &va, &k);
        for (int j = 0; j < k; j++) fprintf(d, "%.17g %.17g%s", st[j], va[j], j == k - 1 ? "\n\n\n" : "\n");
        if (k) {
            fprintf(f, "%s'curves.dat' index %d using 1:2 with linespoints lw 2 pt %d ps 0.8 lc %d dt %d title \"",
                    blocks ? ", \\\n     " : "", blocks, 7 + blocks % 3 * 2, blocks % 8 + 1, blocks / 8 % 5 + 1);
            put_escaped(f, pts[i].label, "\"\\", '\\');
            fputc('"', f);
            blocks++;
        }
        free(st);
        free(va);
    }
    fputc('\n', f);
    return blocks;
}

int kd_sweep_write_plots(kd_sweep *s, char *plots, size_t n) {
    const kd_sweep_opts *o = &s->o;
    char p[4][PATHBUF + 32];
    static const char *files[4] = {"heatmap.dat", "heatmap.gp", "curves.dat", "curves.gp"};
    FILE *fs[4];
    int ok = 1, blocks = 0;
    if (s->sum.best < 0 || kd_path_join(plots, n, o->out, "plots", NULL) || kd_mkdirs(plots, NULL)) return -1;
    for (int i = 0; i < 4; i++) {
        snprintf(p[i], sizeof p[i], "%s/%s", plots, files[i]);
        ok = (fs[i] = fopen(p[i], "w")) && ok;
    }
    if (ok) write_heatmap(o, s->pts, s->n, s->sum.best, fs[0], fs[1]), blocks = write_curves(o, s->pts, s->n, fs[2], fs[3]);
    for (int i = 0; i < 4; i++) ok = (!fs[i] || fclose(fs[i]) == 0) && ok;
    snprintf(p[0], sizeof p[0], "%s/gnuplot.log", plots);
    unlink(p[0]);
    if (!ok) {
        kd_warn("sweep: cannot write the gnuplot files in %s: no pictures", plots);
        return -1;
    }
    return blocks;
}

/* ---- the sweep ------------------------------------------------------------------------------- */

kd_sweep *kd_sweep_plan(const kd_sweep_opts *o, kd_err *err) {
    if (!o->config || !o->out || !o->grid) {
        kd_errf(err, "a run config, a grid and an output directory are required");
        return NULL;
    }
    if (o->grid->n_axes == 0) {
        kd_errf(err, "give at least one --grid key=v1,v2,...");
        return NULL;
    }
    int64_t n = kd_sweep_grid_size(o->grid);
    if (n > KD_SWEEP_MAX_POINTS) {
        kd_errf(err, "the grid has more than %d points", KD_SWEEP_MAX_POINTS);
        return NULL;
    }
    kd_sweep *s = calloc(1, sizeof *s);
    point *pts = calloc((size_t)n, sizeof *pts);
    if (!s || !pts) {
        free(s);
        free(pts);
        kd_errf(err, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->pts = pts;
    s->n = n;
    s->sum.best = -1;
    s->sum.points = n;
    int rc = make_points(o, pts, n, err);
    for (int64_t i = 0; i < n && !rc; i++) {
        rc = classify(&pts[i], err);
        s->sum.skipped += pts[i].state == KD_SWEEP_SKIP;
        s->sum.resumed += pts[i].state == KD_SWEEP_RESUME;
        if (pts[i].state == KD_SWEEP_SKIP && !rc) rc = load_eval(&pts[i], err);
    }
    if (!rc) rc = kd_mkdirs(o->out, err);
    if (rc) {
        kd_sweep_free(s);
        return NULL;
    }
    return s;
}

const kd_sweep_summary *kd_sweep_collect(kd_sweep *s) {
    const kd_sweep_opts *o = &s->o;
    point *pts = s->pts;
    s->sum.trained = 0;
    s->sum.best = -1;
    for (int64_t i = 0; i < s->n; i++) {
        if (!IS_OK(&pts[i])) continue;
        s->sum.trained += pts[i].state == KD_SWEEP_OK;
        double *st, *va;
        int k;
        read_metrics(&pts[i], o->metric, &pts[i].tps, &st, &va, &k);
        free(st);
        free(va);
        if (s->sum.best < 0 ||
            better(metric_of(&pts[i].ev, o->metric), metric_of(&pts[s->sum.best].ev, o->metric), o->metric))
            s->sum.best = i;
    }
    return &s->sum;
}

int kd_sweep_write_results(kd_sweep *s, int plotted, kd_err *err) {
    s->sum.plotted = plotted;
    return write_results(&s->o, s->pts, s->n, s->sum.best, plotted, err);
}

void kd_sweep_free(kd_sweep *s) {
    if (!s) return;
    for (int64_t i = 0; i < s->n; i++) {
        for (int a = 0; a < KD_SWEEP_MAX_KEYS; a++) free(s->pts[i].axis_sets[a]);
        cJSON_Delete(s->pts[i].resolved);
    }
    free(s->pts);
    free(s);
}
