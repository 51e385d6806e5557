/*
 * cmd_teacher.c — `kd teacher <subcommand>`: teacher-logit dumps
 * (docs/dump-format.md). Subcommands are rows of TEACHER_COMMANDS; each parses
 * its own arguments and calls teacher/kd_dump.h.
 *
 *   kd teacher info DUMP.h5 [--no-check]   summary + full validation
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/kd_cli.h"
#include "teacher/kd_dump.h"

/* ---- kd teacher info ------------------------------------------------------------ */

static void print_tokenizer(kd_dump *d) {
    kd_dump_tokenizer tok;
    kd_err err;
    if (kd_dump_read_tokenizer(d, &tok, &err)) {
        printf("tokenizer    invalid: %s\n", err.msg);
        return;
    }
    printf("tokenizer    %s, %d pieces%s, bos %d, eos %d, unk %d%s\n", tok.model, tok.n,
           tok.n_merges ? " + merges" : "", tok.bos_id, tok.eos_id, tok.unk_id, tok.scores ? ", scores" : "");
    kd_dump_tokenizer_free(&tok);
}

static int teacher_info(int argc, char **argv) {
    const char *path = NULL;
    int check = 1;
    if (kd_cli_wants_help(argc, argv)) {
        printf("usage: kd teacher info DUMP.h5 [--no-check]\n\n"
               "Prints a summary of a teacher dump (sequences, tokens, vocabulary, k, dtypes,\n"
               "bytes per token, teacher, tokenizer) and validates every position: token and\n"
               "id ranges, NaN/Inf, top-k sorted in descending order, no duplicate ids,\n"
               "probabilities summing to at most 1. Exits 1 at the first bad element, naming\n"
               "its dataset, sequence, position, slot and byte offset in the file.\n"
               "--no-check prints the summary only (attributes, shapes and dtypes are\n"
               "always checked).\n");
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-check")) check = 0;
        else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "kd teacher info: unexpected argument '%s' (see kd teacher info --help)\n", argv[i]);
            return 2;
        } else path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "kd teacher info: a dump file is required (see kd teacher info --help)\n");
        return 2;
    }
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    if (!d) {
        fprintf(stderr, "kd teacher info: %s\n", err.msg);
        return 1;
    }
    const kd_dump_meta *m = kd_dump_get_meta(d);
    struct stat st;
    double file_mb = stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0;
    int64_t tokens = m->n_seq * m->seq_len;
    uint64_t bytes = kd_dump_storage_bytes(d);
    printf("file         %s (%.1f MB)\n", path, file_mb);
    printf("format       " KD_DUMP_FORMAT " version %d\n", KD_DUMP_VERSION);
    printf("teacher      %s\n", m->teacher[0] ? m->teacher : "(unnamed)");
    printf("sequences    %" PRId64 " x %d positions = %" PRId64 " tokens with a teacher distribution\n", m->n_seq,
           m->seq_len, tokens);
    printf("vocabulary   %" PRId64 "\n", m->vocab_size);
    if (m->k) printf("distribution top-%d: topk_ids %s, topk_logprobs %s\n", m->k, m->ids_dtype, m->values_dtype);
    else printf("distribution full logits: logits %s\n", m->values_dtype);
    printf("tokens       %s; loss_mask %s\n", m->tokens_dtype, m->has_loss_mask ? "uint8" : "absent (all positions)");
    printf("bytes/token  %.1f (datasets %.1f MB)\n", tokens ? (double)bytes / (double)tokens : 0.0, (double)bytes / 1e6);
    if (m->has_tokenizer) print_tokenizer(d);
    else printf("tokenizer    absent\n");
    int rc = 0;
    if (check) {
        kd_dump_report rep;
        if (kd_dump_check(d, &rep, &err)) {
            fprintf(stderr, "kd teacher info: INVALID: %s\n", err.msg);
            if (rep.bad)
                printf("first bad    dataset %s, sequence %" PRId64 ", position %" PRId64 ", slot %" PRId64
                       ", file offset %" PRId64 "%s: %s\n",
                       rep.dataset, rep.seq, rep.pos, rep.slot, rep.file_offset,
                       rep.offset_in_compressed_chunk ? " (compressed chunk)" : "", rep.what);
            rc = 1;
        } else {
            printf("check        ok: %" PRId64 " positions (%" PRId64 " masked)", rep.n_positions, rep.n_masked);
            if (m->k) printf(", top-k mass mean %.4f min %.4f", rep.mean_topk_mass, rep.min_topk_mass);
            printf(", mean top-1 p %.4f\n", rep.mean_top1_prob);
        }
    }
    kd_dump_close(d);
    return rc;
}

/* ---- dispatch --------------------------------------------------------------------- */

static const kd_command TEACHER_COMMANDS[] = {
    {"info", teacher_info, "summarise and validate a teacher dump (DUMP.h5)"},
};
#define N_TEACHER (sizeof TEACHER_COMMANDS / sizeof TEACHER_COMMANDS[0])

int kd_cmd_teacher(int argc, char **argv) {
    int help = argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help");
    if (!help)
        for (size_t i = 0; i < N_TEACHER; i++)
            if (!strcmp(argv[1], TEACHER_COMMANDS[i].name)) return TEACHER_COMMANDS[i].run(argc - 1, argv + 1);
    FILE *f = help && argc >= 2 ? stdout : stderr;
    if (!help) fprintf(stderr, "kd teacher: '%s' is not a teacher subcommand\n\n", argv[1]);
    fprintf(f, "usage: kd teacher <subcommand> [<args>]\n\nTeacher-logit dumps (docs/dump-format.md).\n\n"
               "subcommands:\n");
    for (size_t i = 0; i < N_TEACHER; i++) fprintf(f, "  %-8s %s\n", TEACHER_COMMANDS[i].name, TEACHER_COMMANDS[i].summary);
    return help && argc >= 2 ? 0 : 2;
}
