/*
 * cmd_teacher.c — `kd teacher <subcommand>`: teacher-logit dumps
 * (docs/dump-format.md). Subcommands are rows of TEACHER_COMMANDS; each parses
 * its own arguments and calls data/kd_dump.h.
 *
 *   kd teacher dump --teacher MODEL ...       run a teacher, write a dump
 *   kd teacher dump --tokens-only ...         pack text into a tokens-only dump
 *   kd teacher info DUMP.h5 [--no-check] [--compare ORIG.h5] [--estimate N]
 *                                             summary + full validation (+ decode error, sizes)
 *   kd teacher pack IN.h5 --out OUT.h5        rewrite a dump in the compressed layout
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"
#include "teacher/kd_teacher_dump.h"

/* ---- kd teacher info ------------------------------------------------------------ */

static void print_tokenizer(kd_dump *d) {
    kd_dump_tokenizer tok;
    kd_err err;
    if (kd_dump_read_tokenizer(d, &tok, &err)) {
        printf("tokenizer    invalid: %s\n", err.msg);
        return;
    }
    char pre[96] = "";
    if (tok.pre[0]) snprintf(pre, sizeof pre, " (pre-tokenizer %s)", tok.pre);
    printf("tokenizer    %s%s, %d pieces", tok.model, pre, tok.n);
    if (tok.n_merges) printf(" + %d merges", tok.n_merges);
    printf(", bos %d, eos %d, unk %d%s\n", tok.bos_id, tok.eos_id, tok.unk_id, tok.scores ? ", scores" : "");
    kd_dump_tokenizer_free(&tok);
}

static int teacher_info(int argc, char **argv) {
    const char *path = NULL, *compare = NULL;
    int check = 1;
    int64_t estimate = 0;
    const kd_opt opts[] = {
        {"DUMP.h5", KD_OPT_ARG, &path, NULL, .help = "the dump to summarise and check", .flags = KD_OPT_REQUIRED},
        {"--no-check", KD_OPT_FLAG_OFF, &check, NULL,
         .help = "print the summary only (attributes, shapes and dtypes are\n"
                 "always checked)"},
        {"--compare", KD_OPT_STRING, &compare, "ORIG.h5",
         .help = "DUMP is a repacked copy of ORIG (kd teacher pack, or dump\n"
                 "--compress beside a plain run): print the decode error of its\n"
                 "log-probs against ORIG's (max/mean, against the layout's bound),\n"
                 "id mismatches and the KL the quantization adds"},
        {"--estimate", KD_OPT_INT, &estimate, "N",
         .help = "print the size of a dump of N tokens like this one, plain and\n"
                 "packed (the packed rate measured on up to 64 of its sequences)",
         .lo = 1, .hi = INT64_MAX, .def = ""},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("teacher info", opts);
        printf("\nPrints a summary of a teacher dump (sequences, tokens, vocabulary, k, dtypes,\n"
               "bytes per token, teacher, tokenizer) and validates every position: token and\n"
               "id ranges, NaN/Inf, top-k sorted in descending order, no duplicate ids,\n"
               "probabilities summing to at most 1. Exits 1 at the first bad element, naming\n"
               "its dataset, sequence, position, slot and byte offset in the file.\n"
               "For a top-k dump it then prints the mean (and min) probability mass of the\n"
               "top-k over the unmasked positions: the tail 1 - mass is what kd_mode topk_tail\n"
               "keeps and topk_zero drops (see kd train --help: choose topk_zero only when the\n"
               "tail is about 2%% or less).\n\n");
        kd_opts_help(opts);
        return 0;
    }
    int usage_rc = kd_opts_parse("teacher info", opts, argc, argv);
    if (usage_rc) return usage_rc;
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
    printf("teacher      %s\n", m->teacher[0] ? m->teacher : m->tokens_only ? "(none)" : "(unnamed)");
    printf("sequences    %" PRId64 " x %d positions = %" PRId64 " tokens %s\n", m->n_seq, m->seq_len, tokens,
           m->tokens_only ? "(no teacher distribution)" : "with a teacher distribution");
    printf("vocabulary   %" PRId64 "\n", m->vocab_size);
    if (m->tokens_only) printf("distribution none (tokens only)\n");
    else if (m->packed)
        printf("distribution top-%d, layout " KD_DUMP_LAYOUT_PACKED ": log-prob grid step %g nats, knee %g; ids "
               "Rice-coded by frequency rank\n", m->k, m->pack_step, m->pack_knee);
    else if (m->sampled)
        printf("distribution sampled: %d draws per position at T = 1, distinct ids with counts: sample_ids %s, "
               "sample_counts uint8\n", m->n_samples, m->ids_dtype);
    else if (m->k) printf("distribution top-%d: topk_ids %s, topk_logprobs %s\n", m->k, m->ids_dtype, m->values_dtype);
    else printf("distribution full logits: logits %s\n", m->values_dtype);
    printf("tokens       %s; loss_mask %s\n", m->tokens_dtype, m->has_loss_mask ? "uint8" : "absent (all positions)");
    printf("bytes/token  %.1f (datasets %.1f MB)\n", tokens ? (double)bytes / (double)tokens : 0.0, (double)bytes / 1e6);
    if (m->has_tokenizer) print_tokenizer(d);
    else printf("tokenizer    absent\n");
    int rc = 0;
    if (estimate) {
        double plain = m->tokens_only ? 5.0
                       : m->k ? 5.0 + m->k * ((m->vocab_size <= 65536 ? 2.0 : 4.0) + (m->sampled ? 1.0 : 2.0))
                              : 5.0 + 2.0 * (double)m->vocab_size;
        printf("estimate     %" PRId64 " tokens: plain (%s) %.3g GB (%.1f bytes/token)\n", estimate,
               m->sampled ? "sampled, uint8 counts" : "float16", plain * (double)estimate / 1e9, plain);
        if (m->k && !m->tokens_only && !m->sampled) {
            double bpt = 0;
            if (m->packed) bpt = tokens ? (double)bytes / (double)tokens : 0;
            else if (kd_dump_pack_measure(d, 64, 0, 0, &bpt, &err)) {
                fprintf(stderr, "kd teacher info: --estimate: %s\n", err.msg);
                kd_dump_close(d);
                return 1;
            }
            printf("estimate     %" PRId64 " tokens: packed (" KD_DUMP_LAYOUT_PACKED ") %.3g GB (%.1f bytes/token, %s)\n",
                   estimate, bpt * (double)estimate / 1e9, bpt, m->packed ? "this dump's rate" : "measured on its first sequences");
        }
    }
    if (compare && m->sampled) {
        fprintf(stderr, "kd teacher info: --compare: %s holds sampled classes (counts of random draws), not a "
                "decoding of a top-k: there is no decode error to measure\n", path);
        kd_dump_close(d);
        return 1;
    }
    if (compare) {
        kd_dump *o = kd_dump_open(compare, &err);
        kd_dump_diff df;
        if (!o || kd_dump_compare(d, o, &df, &err)) {
            fprintf(stderr, "kd teacher info: --compare: %s\n", err.msg);
            kd_dump_close(o);
            kd_dump_close(d);
            return 1;
        }
        kd_dump_close(o);
        printf("vs original  %s: %" PRId64 " positions, %" PRId64 " entries, %" PRId64 " ids differ\n", compare,
               df.positions, df.entries, df.id_mismatch);
        printf("decode error log-prob max %.4g mean %.4g nats; p max %.4g; top-k mass mean |diff| %.4g; "
               "KL(orig || decoded) over top-k + tail %.3g nats/position", df.max_lp_err, df.mean_lp_err, df.max_p_err,
               df.mean_mass_err, df.kl_topk);
        if (m->packed) printf("; %" PRId64 " entries over the documented bound", df.over_bound);
        printf("\n");
        if (df.id_mismatch || df.over_bound) rc = 1;
    }
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
            if (m->sampled) printf(", counts add up to %d at every position, mean largest share %.4f", m->n_samples,
                                   rep.mean_top1_prob);
            else if (m->k) printf(", top-k mass mean %.4f min %.4f", rep.mean_topk_mass, rep.min_topk_mass);
            if (!m->tokens_only && !m->sampled) printf(", mean top-1 p %.4f", rep.mean_top1_prob);
            printf("\n");
            if (m->sampled)
                printf("sampled      train with kd_mode sampled (temperature 1): the KD term is unbiased for the "
                       "full KL's gradient\n");
            else if (m->k) {   /* what kd_mode to train with (docs/training.md) */
                const double tail = 1.0 - rep.mean_topk_mass;
                printf("top-k mass   mean %.4f (min %.4f): the top-%d holds %.1f%% of the teacher's probability, the "
                       "tail %.1f%%; %s\n", rep.mean_topk_mass, rep.min_topk_mass, m->k, 100.0 * rep.mean_topk_mass,
                       100.0 * tail,
                       tail <= 0.02 ? "kd_mode topk_tail (default) and topk_zero nearly agree"
                                    : "train with kd_mode topk_tail (default): topk_zero would drop the tail and "
                                      "renormalise the top-k");
            }
        }
    }
    kd_dump_close(d);
    return rc;
}

/* ---- kd teacher pack ------------------------------------------------------------ */

static int teacher_pack(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    double step = 0, knee = 0;
    const kd_opt opts[] = {
        {"IN.h5", KD_OPT_ARG, &in, NULL, .help = "the top-k dump to rewrite", .flags = KD_OPT_REQUIRED},
        {"--out", KD_OPT_STRING, &out, "OUT.h5", .help = "the packed dump to write", .flags = KD_OPT_REQUIRED},
        {"--compress-step", KD_OPT_DOUBLE, &step, "S", .help = "grid step at the top, nats (error <= S/2)",
         .range = "[0.0009765625, 1]", .def = "0.0625"},
        {"--compress-knee", KD_OPT_DOUBLE, &knee, "G", .help = "the grid spacing grows as S*(1 + gap/G)",
         .range = "[0.0625, 64]", .def = "2.0"},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("teacher pack", opts);
        printf("\nRewrites the top-k dump IN.h5 in the compressed layout \"topk-packed-v1\"\n"
               "(docs/dump-format.md): the same tokens, loss_mask and tokenizer; log-probs on a grid\n"
               "of S nats at the top, its spacing growing as S*(1 + gap/G); ids coded by their\n"
               "frequency rank. Every reader of kd takes the result as it is.\n"
               "Check it with kd teacher info OUT.h5 --compare IN.h5.\n\n");
        kd_opts_help(opts);
        return 0;
    }
    int usage_rc = kd_opts_parse("teacher pack", opts, argc, argv);
    if (usage_rc) return usage_rc;
    kd_err err;
    if (kd_dump_repack(in, out, step, knee, &err)) {
        fprintf(stderr, "kd teacher pack: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* ---- kd teacher dump ------------------------------------------------------------ */

/* "1:02:03" or "2:03" */
static void fmt_duration(char *buf, size_t n, double s) {
    long t = s < 0 ? 0 : s > 3.6e8 ? 360000000L : (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* The progress bar on stderr: redrawn in place on a terminal; otherwise one
 * line at the first and last batch and at most every 10 s in between. */
typedef struct dump_bar {
    double last;
    int tty, lines;
} dump_bar;

static void dump_progress(void *ctx, const kd_teacher_dump_progress *p) {
    dump_bar *b = ctx;
    if (p->resumed) {
        fprintf(stderr, "dump: resuming %s.partial after its %lld sequences\n", p->resumed, (long long)p->done);
        return;
    }
    double el = p->elapsed_s;
    if (!b->tty && !p->last && b->lines && el - b->last < 10.0) return;
    b->last = el;
    b->lines++;
    double rate = el > 0 ? (double)p->computed / el : 0;   /* sequences/s computed in this run */
    char when[32], bar[32];
    if (p->last) fmt_duration(when, sizeof when, el);
    else fmt_duration(when, sizeof when, rate > 0 ? (double)(p->total - p->done) / rate : 0);
    int fill = p->total > 0 ? (int)(24 * p->done / p->total) : 24;
    for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '-';
    bar[24] = '\0';
    fprintf(stderr, "%sdump [%s] %lld/%lld sequences, %.0f tokens/s, %s %s%s", b->tty ? "\r" : "", bar,
            (long long)p->done, (long long)p->total, rate * (double)p->seq_len, p->last ? "took" : "ETA", when,
            b->tty && !p->last ? "   " : "\n");
}

static int teacher_dump(int argc, char **argv) {
    static const char *const DTYPES[] = {"f16", "f32", NULL};
    static const kd_dump_dtype DTYPE_OF[] = {KD_DUMP_F16, KD_DUMP_F32};
    kd_teacher_dump_opts o;
    kd_teacher_dump_opts_init(&o);
    const char *out = NULL, *texts[256];
    kd_opt_list text_list = {texts, 0, 256};
    int full = 0, batch_given = 0, quiet = 0, topk_given = 0, dtype_given = 0, dtype = o.dtype == KD_DUMP_F32;
    int64_t seed = (int64_t)o.seed;
    const kd_opt opts[] = {
        {"--teacher", KD_OPT_STRING, &o.teacher, "MODEL", .help = "a checkpoint directory or a llama2.c .bin"},
        {"--text", KD_OPT_LIST, &text_list, "FILE",
         .help = "tokenize the files with the teacher's tokenizer; each document\n"
                 "becomes BOS + text + EOS; documents are concatenated and cut\n"
                 "into sequences of T+1 tokens (the last one padded and masked)",
         .flags = KD_OPT_MULTI},
        {"--generate", KD_OPT_INT, &o.generate, "N",
         .help = "instead, sample N sequences from the teacher, starting at BOS\n"
                 "(kd's engine with a KV cache, up to 64 sequences per step; the\n"
                 "distributions stored are the ones it samples from)",
         .lo = 1, .hi = INT64_MAX, .def = ""},
        {"--out", KD_OPT_STRING, &out, "DUMP.h5", .help = "the dump to write"},
        {"--doc-sep", KD_OPT_STRING, &o.doc_sep, "STRING",
         .help = "split files into documents at STRING (e.g. $'\\n%\\n' for\n"
                 "fortune files); default: one document per file"},
        {"--temperature", KD_OPT_DOUBLE, &o.gen_temperature, "TAU",
         .help = "sampling temperature for --generate; 0 = greedy", .range = "[0, inf)"},
        {"--seed", KD_OPT_INT, &seed, "S", .help = "sampling seed; sequence i uses seed and i", .lo = 0, .hi = INT64_MAX},
        {"--seq-len", KD_OPT_INT, &o.seq_len, "T",
         .help = "positions with a teacher distribution per sequence (at\n"
                 "most the teacher's max_position_embeddings)",
         .lo = 1, .hi = 1 << 20},
        {"--topk", KD_OPT_INT, &o.topk, "K",
         .help = "store the top K log-probs at temperature 1 (at most the\n"
                 "teacher's vocabulary and 4096)",
         .lo = 1, .hi = 1 << 20, .given = &topk_given},
        {"--full", KD_OPT_FLAG, &full, NULL, .help = "store the full logits instead of the top K"},
        {"--sample", KD_OPT_INT, &o.sample, "N",
         .help = "instead of the top K: draw N classes per position i.i.d. from\n"
                 "the teacher's distribution (T = 1) and store the distinct ids\n"
                 "with their counts (distribution \"sampled\", RS-KD; train with\n"
                 "kd_mode sampled: unbiased in expectation). Draws are seeded by\n"
                 "--seed, the sequence and the position",
         .lo = 1, .hi = 255, .def = ""},
        {"--compress", KD_OPT_FLAG, &o.packed, NULL,
         .help = "write the compressed top-k layout \"topk-packed-v1\" (about 3x\n"
                 "smaller; docs/dump-format.md): log-probs on a grid of STEP nats\n"
                 "at the top, coarser down the tail, ids coded by frequency"},
        {"--compress-step", KD_OPT_DOUBLE, &o.pack_step, "S",
         .help = "with --compress: grid step at the top, nats (error <= S/2)", .range = "[0.0009765625, 1]",
         .def = "0.0625"},
        {"--compress-knee", KD_OPT_DOUBLE, &o.pack_knee, "G",
         .help = "with --compress: the grid spacing grows as S*(1 + gap/G)", .range = "[0.0625, 64]", .def = "2.0"},
        {"--dtype", KD_OPT_CHOICE, &dtype, NULL, .help = "storage of log-probs/logits", .choices = DTYPES,
         .given = &dtype_given},
        {"--val-out", KD_OPT_STRING, &o.val_out, "VAL.h5", .help = "with --val-fraction F: send a fraction F of\nsequences to VAL.h5"},
        {"--val-fraction", KD_OPT_DOUBLE, &o.val_fraction, "F", .help = "with --val-out", .range = "[0, 1)", .def = ""},
        {"--tokenizer", KD_OPT_STRING, &o.tokenizer, "FILE", .help = "tokenizer", .def = "MODEL/tokenizer.bin"},
        {"--tokens-only", KD_OPT_FLAG, &o.tokens_only, NULL,
         .help = "no teacher: pack the --text files as above (same sequences, same\n"
                 "loss_mask) into a dump of tokens only (distribution \"none\",\n"
                 "vocab_size = the tokenizer's), to train a model with plain\n"
                 "cross-entropy (alpha 0), e.g. a first teacher; needs --tokenizer,\n"
                 "takes no --teacher, --generate, --topk, --full or --dtype"},
        {"--batch", KD_OPT_INT, &o.batch, "B",
         .help = "sequences per teacher forward; with --tokens-only, per\n"
                 "append (there the default is up to 1024)",
         .lo = 1, .hi = 1024, .given = &batch_given},
        {"--max-sequences", KD_OPT_INT, &o.max_sequences, "N", .help = "stop after N sequences", .lo = 1, .hi = INT64_MAX,
         .def = ""},
        {"--quiet", KD_OPT_FLAG, &quiet, NULL, .help = "no progress"},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        printf("usage: kd teacher dump --teacher MODEL (--text FILE... | --generate N) --seq-len T\n"
               "                       [--topk K | --full | --sample N] --out DUMP.h5 [options]\n"
               "       kd teacher dump --tokens-only --tokenizer TOK --text FILE... --seq-len T\n"
               "                       --out DUMP.h5 [options]\n\n"
               "Runs a teacher kd can load (a checkpoint directory or a llama2.c .bin) and writes\n"
               "its distribution at every position to an HDF5 dump (docs/dump-format.md).\n\n");
        kd_opts_help(opts);
        printf("\nProgress (a bar, tokens/s and ETA) goes to stderr. An interrupted dump resumes\n"
               "where it stopped when run again with the same arguments: DUMP.h5.partial (and\n"
               "VAL.h5.partial) hold the sequences written so far; a rerun checks k, T, the\n"
               "vocabulary, the dtype and the teacher against them, verifies every sequence\n"
               "against the checksum stored with it (rolling back to the last that verifies)\n"
               "and appends the rest. A full disk stops the dump before an append is written.\n"
               "One dump per --out at a time (a lock on DUMP.h5.partial); --out must be a\n"
               "file path (a dump is never written into a device or a FIFO).\n");
        return 0;
    }
    int usage_rc = kd_opts_parse("teacher dump", opts, argc, argv);
    if (usage_rc) return usage_rc;
    o.seed = (uint64_t)seed;
    o.dtype = DTYPE_OF[dtype];
    int n_text = text_list.n;
    const char *teacher_only = full ? "--full" : dtype_given ? "--dtype" : topk_given ? "--topk"
                               : o.packed ? "--compress" : o.sample ? "--sample" : NULL;
    if (o.sample && (full || topk_given || o.packed || dtype_given)) {
        fprintf(stderr, "kd teacher dump: --sample stores sampled ids with counts: it excludes %s\n",
                full ? "--full" : topk_given ? "--topk" : o.packed ? "--compress" : "--dtype");
        return 2;
    }
    if (full) o.topk = 0;
    if ((o.pack_step || o.pack_knee) && !o.packed) {
        fprintf(stderr, "kd teacher dump: --compress-step and --compress-knee go with --compress\n");
        return 2;
    }
    o.text = texts;
    o.n_text = n_text;
    if (o.tokens_only) {
        const char *bad = o.generate ? "--generate" : o.teacher ? "--teacher" : teacher_only;
        if (bad) {
            fprintf(stderr, "kd teacher dump: --tokens-only runs no teacher and stores no distribution: %s does not "
                    "apply (see --help)\n", bad);
            return 2;
        }
        if (!o.tokenizer || !out || !n_text) {
            fprintf(stderr, "kd teacher dump: --tokens-only needs --tokenizer, --text and --out (see --help)\n");
            return 2;
        }
        if (!batch_given) o.batch = 0;   /* the library's tokens-only default */
    } else if (!o.teacher || !out || (!n_text && !o.generate)) {
        fprintf(stderr, "kd teacher dump: --teacher, --out and --text or --generate are required (see --help)\n");
        return 2;
    }
    if (n_text && o.generate) {
        fprintf(stderr, "kd teacher dump: --text and --generate exclude each other (see --help)\n");
        return 2;
    }
    if ((o.val_out != NULL) != (o.val_fraction > 0)) {
        fprintf(stderr, "kd teacher dump: --val-out and --val-fraction go together\n");
        return 2;
    }
    kd_err err;
    dump_bar bar = {0, isatty(2), 0};
    if (!quiet) o.progress = dump_progress, o.progress_ctx = &bar;
    if (kd_teacher_dump(&o, out, &err)) {
        fprintf(stderr, "kd teacher dump: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* ---- dispatch --------------------------------------------------------------------- */

static const kd_command TEACHER_COMMANDS[] = {
    {"dump", teacher_dump, "run a teacher over text (or its own samples) and write DUMP.h5"},
    {"info", teacher_info, "summarise and validate a teacher dump (DUMP.h5)"},
    {"pack", teacher_pack, "rewrite a top-k dump in the compressed layout (topk-packed-v1)"},
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
