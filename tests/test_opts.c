/*
 * test_opts.c — the option tables of the kd commands (cli/kd_opts.h): values
 * land in their destinations, every kind of usage error exits 2 with its
 * "kd CMD: ..." message, and --help shows the table's options and defaults.
 *
 *   parse_values     every kind, repeated options, MULTI lists, defaults kept
 *   parse_errors     unknown, missing value, ranges, choices, CALL, groups, required
 *   help_text        the usage line and the option list, defaults from the destinations
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/kd_opts.h"
#include "kd_test.h"

typedef struct vals {
    const char *model, *out, *a, *b, *path;
    int64_t n, seed;
    double temp;
    int quiet, clip, mode, n_calls;
    const char *items[4];
    kd_opt_list list;
} vals;

static int count_call(void *dst, const char *v, kd_err *err) {
    if (!strcmp(v, "bad")) return kd_errf(err, "--call: '%s' is refused", v);
    ++*(int *)dst;
    return 0;
}

static const char *const MODES[] = {"fp32", "lean", NULL};

/* The test table; v holds the defaults. */
static void table(vals *v, kd_opt *t) {
    memset(v, 0, sizeof *v);
    v->n = 512, v->seed = 7, v->temp = 0.8, v->clip = 1, v->mode = 0;
    v->list = (kd_opt_list){v->items, 0, 4};
    const kd_opt opts[] = {
        {"--model", KD_OPT_STRING, &v->model, "DIR", .help = "the model", .flags = KD_OPT_REQUIRED},
        {"--a", KD_OPT_STRING, &v->a, "X", .help = "first form", .flags = KD_OPT_REQUIRED},
        {"--b", KD_OPT_STRING, &v->b, "Y", .help = "second form", .flags = KD_OPT_ALT},
        {"-n", KD_OPT_INT, &v->n, "N", .help = "tokens", .lo = 0, .hi = 1000},
        {"--seed", KD_OPT_INT, &v->seed, "S", .help = "seed\nsecond line", .lo = 0, .hi = INT64_MAX, .def = ""},
        {"--temp", KD_OPT_DOUBLE, &v->temp, "T", .help = "temperature", .range = "(0, 1]"},
        {"--mode", KD_OPT_CHOICE, &v->mode, NULL, .help = "memory mode", .choices = MODES},
        {"--text", KD_OPT_LIST, &v->list, "FILE", .help = "texts", .flags = KD_OPT_MULTI},
        {"--call", KD_OPT_CALL, &v->n_calls, "C", .help = "counted", .flags = KD_OPT_REPEAT, .call = count_call},
        {"--quiet", KD_OPT_FLAG, &v->quiet, NULL, .help = "no progress"},
        {"--no-clip", KD_OPT_FLAG_OFF, &v->clip, NULL, .help = "skip the clip"},
        {"PATH", KD_OPT_ARG, &v->path, NULL, .help = "a positional argument"},
        {"--secret", KD_OPT_FLAG, &v->quiet, NULL, .help = "hidden", .flags = KD_OPT_HIDDEN},
        {0}};
    memcpy(t, opts, sizeof opts);
}

/* Capture what is written to fd (1 or 2) between capture_begin and capture_end into out. */
typedef struct capture {
    FILE *f;
    int fd, saved;
} capture;

static capture capture_begin(int fd) {
    char path[4096];
    snprintf(path, sizeof path, "%s/fd%d.txt", kd_test_tmpdir(), fd);
    fflush(NULL);
    capture c = {fopen(path, "w+"), fd, dup(fd)};
    assert_non_null(c.f);
    dup2(fileno(c.f), fd);
    return c;
}

static void capture_end(capture *c, char *out, size_t cap) {
    fflush(NULL);
    dup2(c->saved, c->fd);
    close(c->saved);
    rewind(c->f);
    size_t n = fread(out, 1, cap - 1, c->f);
    out[n] = 0;
    fclose(c->f);
}

/* Parse the words of line against the test table; the status, stderr in err_out. */
static int parse(vals *v, const char *line, char *err_out, size_t cap) {
    kd_opt t[16];
    table(v, t);
    static char buf[512];
    char *argv[32];
    int argc = 0;
    snprintf(buf, sizeof buf, "test %s", line);
    for (char *s = strtok(buf, " "); s && argc < 31; s = strtok(NULL, " ")) argv[argc++] = s;
    argv[argc] = NULL;
    capture c = capture_begin(2);
    int rc = kd_opts_parse("test", t, argc, argv);
    capture_end(&c, err_out, cap);
    return rc;
}

static void parse_values(void **state) {
    (void)state;
    vals v;
    char err[1024];
    assert_int_equal(parse(&v, "--model m --b y", err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(v.model, "m");
    assert_null(v.a);
    assert_string_equal(v.b, "y");
    assert_true(v.n == 512 && v.seed == 7 && v.temp == 0.8 && v.mode == 0 && v.clip == 1 && !v.quiet);
    assert_null(v.path);
    assert_int_equal(parse(&v,
                           "--a x -n 5 -n 1000 --seed 9223372036854775807 --temp 1 --mode lean --text p q --quiet "
                           "--model m --no-clip --call 1 --call 2 PATH --text r --secret",
                           err, sizeof err),
                     0);
    assert_string_equal(err, "");
    assert_true(v.n == 1000 && v.seed == INT64_MAX && v.temp == 1.0 && v.mode == 1 && v.quiet && !v.clip);
    assert_int_equal(v.n_calls, 2);
    assert_int_equal(v.list.n, 3);
    assert_string_equal(v.items[0], "p");
    assert_string_equal(v.items[2], "r");
    assert_string_equal(v.path, "PATH");   /* the placeholder is no option name */
    /* a single value starting with "--" is still a value */
    assert_int_equal(parse(&v, "--model --out --a x", err, sizeof err), 0);
    assert_string_equal(v.model, "--out");
}

static void parse_errors(void **state) {
    (void)state;
    static const struct {
        const char *line, *msg;
    } cases[] = {
        {"--model m --a x --bogus", "kd test: unknown argument '--bogus' (see kd test --help)\n"},
        {"--model m --a x p stray", "kd test: unknown argument 'stray' (see kd test --help)\n"},
        {"--model m --a x -p", "kd test: unknown argument '-p' (see kd test --help)\n"},
        {"--model m --a", "kd test: --a needs a value\n"},
        {"--model m --a x --text --quiet", "kd test: --text needs a value\n"},
        {"--model m --a x -n 1001", "kd test: -n: '1001' is not an integer in [0, 1000]\n"},
        {"--model m --a x -n 5x", "kd test: -n: '5x' is not an integer in [0, 1000]\n"},
        {"--model m --a x --temp nan", "kd test: --temp: 'nan' is not a finite number\n"},
        {"--model m --a x --temp 0", "kd test: --temp: '0' is not in (0, 1]\n"},
        {"--model m --a x --temp 1.5", "kd test: --temp: '1.5' is not in (0, 1]\n"},
        {"--model m --a x --mode bf16", "kd test: --mode is fp32 or lean, not 'bf16'\n"},
        {"--model m --a x --call bad", "kd test: --call: 'bad' is refused\n"},
        {"--model m --a x --text 1 2 3 4 5", "kd test: --text: at most 4 values\n"},
        {"--model m --a x --b y", "kd test: --a and --b exclude each other\n"},
        {"--a x", "kd test: --model is required (see kd test --help)\n"},
        {"--quiet", "kd test: --model and one of --a and --b are required (see kd test --help)\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vals v;
        char err[1024];
        int rc = parse(&v, cases[i].line, err, sizeof err);
        if (rc != 2 || strcmp(err, cases[i].msg))
            fprintf(stderr, "'%s': status %d, message '%s', expected '%s'\n", cases[i].line, rc, err, cases[i].msg);
        assert_int_equal(rc, 2);
        assert_string_equal(err, cases[i].msg);
    }
}

static void help_text(void **state) {
    (void)state;
    vals v;
    kd_opt t[16];
    table(&v, t);
    char out[4096];
    capture c = capture_begin(1);
    kd_opts_usage("test", t);
    kd_opts_help(t);
    capture_end(&c, out, sizeof out);
    fprintf(stderr, "%s", out);
    assert_non_null(strstr(out, "usage: kd test --model DIR (--a X | --b Y) [-n N] [--seed S] [--temp T] "
                                "[--mode fp32|lean]\n"));
    assert_non_null(strstr(out, "[--text FILE...] [--call C ...] [--quiet] [--no-clip] [PATH]\n"));
    assert_null(strstr(out, "secret"));
    assert_non_null(strstr(out, "\n  -n N              tokens (512)\n"));
    assert_non_null(strstr(out, "\n  --seed S          seed\n                    second line\n"));   /* def "" */
    assert_non_null(strstr(out, "\n  --temp T          temperature (0.8)\n"));
    assert_non_null(strstr(out, "\n  --mode fp32|lean  memory mode (fp32)\n"));
    assert_non_null(strstr(out, "\n  --quiet           no progress\n"));
    assert_non_null(strstr(out, "\n  PATH              a positional argument\n"));
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_values),
        cmocka_unit_test(parse_errors),
        cmocka_unit_test(help_text),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
