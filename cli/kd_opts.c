/*
 * kd_opts.c — parsing argv against a command's option table, and the usage
 * line and option list of its --help from the same table (cli/kd_opts.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/kd_opts.h"

#define MAX_OPTS 64   /* rows of one table */

/* The row of option NAME, or else (an argument not starting with "-") the first positional row not yet given. */
static const kd_opt *find(const kd_opt *opts, const char *name, const unsigned char *seen) {
    for (const kd_opt *o = opts; o->name; o++)
        if (o->kind != KD_OPT_ARG && !strcmp(o->name, name)) return o;
    for (const kd_opt *o = opts; o->name && name[0] != '-'; o++)
        if (o->kind == KD_OPT_ARG && !seen[o - opts]) return o;
    return NULL;
}

/* "[lo, hi]" (either bracket may be open, either bound inf) → bounds; 0 when the text is well formed. */
static int parse_range(const char *r, double *lo, double *hi, int *lo_open, int *hi_open) {
    char *end;
    if (*r != '[' && *r != '(') return -1;
    *lo_open = *r == '(';
    *lo = strtod(r + 1, &end);
    if (*end != ',') return -1;
    *hi = strtod(end + 1, &end);
    if (*end != ']' && *end != ')') return -1;
    *hi_open = *end == ')';
    return 0;
}

static int in_range(double v, const char *range) {
    double lo, hi;
    int lo_open, hi_open;
    if (!range) return 1;
    if (parse_range(range, &lo, &hi, &lo_open, &hi_open)) return 0;   /* a bad table accepts nothing */
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
}

/* "a, b or c" */
static void print_alternatives(FILE *f, const char *const *names, const char *last_sep) {
    int n = 0;
    while (names[n]) n++;
    for (int i = 0; i < n; i++) fprintf(f, "%s%s", i == 0 ? "" : i == n - 1 ? last_sep : ", ", names[i]);
}

static int set_value(const char *cmd, const kd_opt *o, const char *v) {
    char *end;
    kd_err err;
    switch (o->kind) {
    case KD_OPT_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < o->lo || x > o->hi) {
            fprintf(stderr, "kd %s: %s: '%s' is not an integer in [%lld, %lld]\n", cmd, o->name, v, (long long)o->lo,
                    (long long)o->hi);
            return 2;
        }
        *(int64_t *)o->dst = x;
        return 0;
    }
    case KD_OPT_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x)) {
            fprintf(stderr, "kd %s: %s: '%s' is not a finite number\n", cmd, o->name, v);
            return 2;
        }
        if (!in_range(x, o->range)) {
            fprintf(stderr, "kd %s: %s: '%s' is not in %s\n", cmd, o->name, v, o->range);
            return 2;
        }
        *(double *)o->dst = x;
        return 0;
    }
    case KD_OPT_STRING:
        *(const char **)o->dst = v;
        return 0;
    case KD_OPT_CHOICE:
        for (int k = 0; o->choices[k]; k++)
            if (!strcmp(o->choices[k], v)) {
                *(int *)o->dst = k;
                return 0;
            }
        fprintf(stderr, "kd %s: %s is ", cmd, o->name);
        print_alternatives(stderr, o->choices, " or ");
        fprintf(stderr, ", not '%s'\n", v);
        return 2;
    case KD_OPT_LIST: {
        kd_opt_list *l = o->dst;
        if (l->n >= l->cap) {
            fprintf(stderr, "kd %s: %s: at most %d values\n", cmd, o->name, l->cap);
            return 2;
        }
        l->v[l->n++] = v;
        return 0;
    }
    case KD_OPT_CALL:
        if (o->call(o->dst, v, &err)) {
            fprintf(stderr, "kd %s: %s\n", cmd, err.msg);
            return 2;
        }
        return 0;
    default:
        return 2;
    }
}

/* Rows [g, end) of the group that starts at row g (KD_OPT_ALT rows follow it). */
static int group_end(const kd_opt *opts, int g) {
    int e = g + 1;
    while (opts[e].name && (opts[e].flags & KD_OPT_ALT)) e++;
    return e;
}

/* "X, one of A and B and Y are required (see ...)", then "A and B exclude each other". */
static int check_groups(const char *cmd, const kd_opt *opts, const unsigned char *seen) {
    const kd_opt *missing[MAX_OPTS];
    int n_missing = 0, group_of[MAX_OPTS];
    for (int g = 0; opts[g].name; g = group_end(opts, g)) {
        int e = group_end(opts, g), any = 0;
        for (int k = g; k < e; k++) any |= seen[k];
        if ((opts[g].flags & KD_OPT_REQUIRED) && !any) group_of[n_missing] = e - g, missing[n_missing++] = &opts[g];
    }
    if (n_missing) {
        fprintf(stderr, "kd %s: ", cmd);
        for (int m = 0; m < n_missing; m++) {
            const kd_opt *o = missing[m];
            fprintf(stderr, "%s%s", m == 0 ? "" : m == n_missing - 1 ? " and " : ", ", group_of[m] > 1 ? "one of " : "");
            for (int k = 0; k < group_of[m]; k++)
                fprintf(stderr, "%s%s", k == 0 ? "" : k == group_of[m] - 1 ? " and " : ", ", o[k].name);
        }
        fprintf(stderr, " %s required (see kd %s --help)\n", n_missing == 1 ? "is" : "are", cmd);
        return 2;
    }
    for (int g = 0; opts[g].name; g = group_end(opts, g))
        for (int k = g, first = -1; k < group_end(opts, g); k++) {
            if (!seen[k]) continue;
            if (first >= 0) {
                fprintf(stderr, "kd %s: %s and %s exclude each other\n", cmd, opts[first].name, opts[k].name);
                return 2;
            }
            first = k;
        }
    return 0;
}

int kd_opts_parse(const char *cmd, const kd_opt *opts, int argc, char **argv) {
    unsigned char seen[MAX_OPTS] = {0};
    int n = 0;
    while (opts[n].name) n++;
    if (n > MAX_OPTS) {
        fprintf(stderr, "kd %s: %d options, at most %d in one table\n", cmd, n, MAX_OPTS);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const kd_opt *o = find(opts, argv[i], seen);
        if (!o) {
            fprintf(stderr, "kd %s: unknown argument '%s' (see kd %s --help)\n", cmd, argv[i], cmd);
            return 2;
        }
        seen[o - opts] = 1;
        if (o->given) *o->given = 1;
        if (o->kind == KD_OPT_FLAG || o->kind == KD_OPT_FLAG_OFF) {
            *(int *)o->dst = o->kind == KD_OPT_FLAG;
            continue;
        }
        if (o->kind == KD_OPT_ARG) {
            *(const char **)o->dst = argv[i];
            continue;
        }
        int taken = 0, rc = 0;
        if (o->kind == KD_OPT_LIST && (o->flags & KD_OPT_MULTI))   /* --text A B C */
            while (!rc && i + 1 < argc && strncmp(argv[i + 1], "--", 2)) rc = set_value(cmd, o, argv[++i]), taken++;
        else if (i + 1 < argc)
            rc = set_value(cmd, o, argv[++i]), taken++;
        if (rc) return rc;
        if (!taken) {
            fprintf(stderr, "kd %s: %s needs a value\n", cmd, o->name);
            return 2;
        }
    }
    return check_groups(cmd, opts, seen);
}

/* ---- --help -------------------------------------------------------------------------- */

/* "--name ARG" of a row into buf. */
static void label(const kd_opt *o, char *buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "%s", o->name);
    if (o->kind == KD_OPT_FLAG || o->kind == KD_OPT_FLAG_OFF || o->kind == KD_OPT_ARG || len >= n) return;
    if (o->arg || o->kind != KD_OPT_CHOICE) {
        snprintf(buf + len, n - len, " %s%s", o->arg ? o->arg : "VALUE", (o->flags & KD_OPT_MULTI) ? "..." : "");
        return;
    }
    for (int k = 0; o->choices[k] && len < n; k++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s", k ? "|" : " ", o->choices[k]);
}

/* The default a row shows in --help, into buf ("" for none). */
static void default_text(const kd_opt *o, char *buf, size_t n) {
    buf[0] = 0;
    if (o->def) {
        snprintf(buf, n, "%s", o->def);
        return;
    }
    switch (o->kind) {
    case KD_OPT_INT: snprintf(buf, n, "%lld", (long long)*(const int64_t *)o->dst); break;
    case KD_OPT_DOUBLE: snprintf(buf, n, "%g", *(const double *)o->dst); break;
    case KD_OPT_CHOICE: snprintf(buf, n, "%s", o->choices[*(const int *)o->dst]); break;
    case KD_OPT_STRING:
        if (*(const char *const *)o->dst) snprintf(buf, n, "%s", *(const char *const *)o->dst);
        break;
    default: break;
    }
}

void kd_opts_usage(const char *cmd, const kd_opt *opts) {
    char line[256], item[512], lab[160];
    int indent = snprintf(line, sizeof line, "usage: kd %s", cmd), len = indent;
    for (int g = 0; opts[g].name; g = group_end(opts, g)) {
        int e = group_end(opts, g), req = (opts[g].flags & KD_OPT_REQUIRED) != 0, k0 = g;
        while (k0 < e && (opts[k0].flags & KD_OPT_HIDDEN)) k0++;
        if (k0 == e) continue;
        size_t il = 0;
        item[0] = 0;
        for (int k = k0; k < e; k++) {
            if (opts[k].flags & KD_OPT_HIDDEN) continue;
            label(&opts[k], lab, sizeof lab);
            il += (size_t)snprintf(item + il, sizeof item - il, "%s%s", il ? " | " : "", lab);
            if (il >= sizeof item) il = sizeof item - 1;
        }
        int alt = e - k0 > 1, list = (opts[k0].kind == KD_OPT_LIST && !(opts[k0].flags & KD_OPT_MULTI)) ||
                                     (opts[k0].flags & KD_OPT_REPEAT);
        char whole[600];
        if (list && req) snprintf(whole, sizeof whole, "%s [%s ...]", item, opts[k0].name);
        else if (list) snprintf(whole, sizeof whole, "[%s ...]", item);
        else if (req) snprintf(whole, sizeof whole, alt ? "(%s)" : "%s", item);
        else snprintf(whole, sizeof whole, "[%s]", item);
        int wl = (int)strlen(whole);
        if (len + 1 + wl > 100 && len > indent) {
            printf("%s\n", line);
            len = snprintf(line, sizeof line, "%*s", indent, "");
        }
        len += snprintf(line + len, sizeof line - (size_t)len, " %s", whole);
        if (len >= (int)sizeof line) len = (int)sizeof line - 1;
    }
    printf("%s\n", line);
}

void kd_opts_help(const kd_opt *opts) {
    char lab[160], def[160];
    int width = 0;
    for (const kd_opt *o = opts; o->name; o++) {
        if (o->flags & KD_OPT_HIDDEN) continue;
        label(o, lab, sizeof lab);
        int l = (int)strlen(lab);
        if (l <= 24 && l > width) width = l;
    }
    for (const kd_opt *o = opts; o->name; o++) {
        if (o->flags & KD_OPT_HIDDEN) continue;
        label(o, lab, sizeof lab);
        default_text(o, def, sizeof def);
        if ((int)strlen(lab) > width) printf("  %s\n%*s", lab, width + 4, "");
        else printf("  %-*s  ", width, lab);
        for (const char *h = o->help ? o->help : ""; *h; h++) {
            putchar(*h);
            if (*h == '\n') printf("%*s", width + 4, "");
        }
        if (def[0]) printf("%s(%s)", o->help && o->help[0] ? " " : "", def);
        putchar('\n');
    }
}
