/*
 * kd_opts.h — declarative command-line options: one table per command drives
 * both the parsing of argv and the options part of its --help.
 *
 * A command declares its options as an array of kd_opt ending in {0}; each row
 * names the option, the kind of its value, where the value goes and one help
 * text. The destination holds the default before parsing; --help shows it
 * (or the row's own `def` text), so the help cannot disagree with the code.
 *
 *   int64_t batch = 1;
 *   const char *config = NULL;
 *   const kd_opt opts[] = {
 *       {"--config", KD_OPT_STRING, &config, "C.json", .help = "the model config", .flags = KD_OPT_REQUIRED},
 *       {"--batch", KD_OPT_INT, &batch, "B", .help = "sequences per step", .lo = 1, .hi = 1 << 20},
 *       {0}};
 *   if (kd_cli_wants_help(argc, argv)) { kd_opts_usage("plan", opts); ...; kd_opts_help(opts); }
 *   int rc = kd_opts_parse("plan", opts, argc, argv);   (0, or 2 after a message)
 *
 * Errors are printed on stderr as "kd CMD: ..." and are usage errors (exit 2):
 * an unknown argument, a missing value, an integer out of [lo, hi], a number
 * out of its range, a value not among the choices, a rejected CALL value, a
 * positional argument where the table has none (left), two
 * options of one KD_OPT_ALT group, a required option (or group) not given.
 * A later value of the same option replaces an earlier one (LIST appends).
 */
#ifndef KD_OPTS_H
#define KD_OPTS_H

#include <stdint.h>

#include "core/kd_err.h"

typedef enum kd_opt_kind {
    KD_OPT_FLAG,     /* no value: *(int *)dst = 1 */
    KD_OPT_FLAG_OFF, /* no value: *(int *)dst = 0 (--no-clip) */
    KD_OPT_INT,      /* *(int64_t *)dst, an integer in [lo, hi] */
    KD_OPT_DOUBLE,   /* *(double *)dst, a finite number within `range` ("(0, 1]", "[0, inf)"; NULL: any) */
    KD_OPT_STRING,   /* *(const char **)dst = the argument itself */
    KD_OPT_CHOICE,   /* *(int *)dst = the index of the value in choices (NULL-terminated) */
    KD_OPT_LIST,     /* repeatable: appended to *(kd_opt_list *)dst; with KD_OPT_MULTI one option
                      * takes every following argument up to the next one starting with "--" */
    KD_OPT_CALL,     /* call(dst, value, err); a -1 is a usage error printed as "kd CMD: err" */
    KD_OPT_ARG,      /* a positional argument: *(const char **)dst = the first argument that is no
                      * option and does not start with "-"; name is its placeholder ("DUMP.h5") */
} kd_opt_kind;

enum {
    KD_OPT_REQUIRED = 1,   /* must be given (for a group: one of it) */
    KD_OPT_ALT = 2,        /* an alternative to the row before: at most one of such a group */
    KD_OPT_HIDDEN = 4,     /* parsed but not shown in --help (testing aids) */
    KD_OPT_MULTI = 8,      /* LIST: several values after one option (--text A B C) */
    KD_OPT_REPEAT = 16,    /* CALL: meant to be given several times (shown so in the usage line) */
};

/* Storage of a LIST option: the caller's array of cap pointers. */
typedef struct kd_opt_list {
    const char **v;
    int n, cap;
} kd_opt_list;

typedef struct kd_opt {
    const char *name;     /* "--seq", "-n" (ARG: the placeholder); NULL ends the table */
    kd_opt_kind kind;
    void *dst;
    const char *arg;      /* the value's placeholder in --help ("N", "FILE"); CHOICE: NULL shows a|b|c */
    const char *help;     /* the description; '\n' starts an indented continuation line */
    int flags;            /* KD_OPT_REQUIRED | KD_OPT_ALT | ... */
    int64_t lo, hi;       /* INT: the accepted range */
    const char *range;    /* DOUBLE: "[lo, hi]" with ( or ) for an open end, inf for none */
    const char *const *choices;                             /* CHOICE */
    int (*call)(void *dst, const char *value, kd_err *err); /* CALL */
    const char *def;      /* default shown in --help; NULL: the destination's value (INT, DOUBLE,
                           * CHOICE, a non-NULL STRING); "": none */
    int *given;           /* optional: set to 1 when the option appears */
} kd_opt;

/* Parse argv[1..argc-1] against opts into their destinations. 0, or 2 after
 * printing "kd CMD: ..." on stderr. */
int kd_opts_parse(const char *cmd, const kd_opt *opts, int argc, char **argv);

/* "usage: kd CMD --req ARG [--opt ARG] ..." from the table, wrapped at 100 columns:
 * required rows bare, others in brackets, KD_OPT_ALT groups as (A | B), LIST
 * rows followed by "...". Commands of several forms print their own synopsis. */
void kd_opts_usage(const char *cmd, const kd_opt *opts);

/* The option list: "  --name ARG   help (default)", aligned, one row per option. */
void kd_opts_help(const kd_opt *opts);

#endif
