/*
 * cmd_tokenizer.c — `kd tokenizer <subcommand>`: make tokenizers. Subcommands
 * are rows of TOKENIZER_COMMANDS.
 *
 *   kd tokenizer train --text FILE... --vocab-size N --out tok.bin
 *       train a BPE vocabulary (data/kd_bpe_train.h), write it as a llama2.c
 *       tokenizer.bin, print a summary measured with the real encoder.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "core/kd_file.h"
#include "core/kd_time.h"
#include "data/kd_bpe_train.h"
#include "data/kd_tokenizer.h"

/* ---- kd tokenizer train ------------------------------------------------------------ */

static void train_help(const kd_opt *opts) {
    kd_opts_usage("tokenizer train", opts);
    printf("\n"
           "Trains a BPE vocabulary for kd's SentencePiece-style tokenizer (byte fallback,\n"
           "\"\xE2\x96\x81\" for spaces, merges by score) and writes it as a llama2.c tokenizer.bin,\n"
           "the form kd checkpoints store. Ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 the byte\n"
           "pieces <0x00>..<0xFF>, 259 \"\xE2\x96\x81\", then the other characters, then merged\n"
           "pieces in merge order.\n"
           "Merges stay inside words: a letter run, a punctuation run or a digit, with at\n"
           "most one leading space; whitespace runs (spaces, newlines, tabs) merge among\n"
           "themselves only.\n"
           "\n");
    kd_opts_help(opts);
    printf("\n"
           "Example (Debian's fortunes corpus):\n"
           "  kd tokenizer train --text /usr/share/games/fortunes/* --doc-sep %% \\\n"
           "     --vocab-size 4096 --out tok4096.bin\n");
}

typedef struct corpus {
    char **bufs;              /* file contents */
    int n_bufs;
    const char **texts;       /* documents, pointing into bufs */
    size_t *lens;
    int n_texts, cap;
    int skipped, dups;        /* files with NUL bytes; files given twice */
} corpus;

static void corpus_free(corpus *c) {
    for (int i = 0; i < c->n_bufs; i++) free(c->bufs[i]);
    free(c->bufs);
    free(c->texts);
    free(c->lens);
}

static int add_doc(corpus *c, const char *p, size_t n) {
    if (!n) return 0;
    if (c->n_texts == c->cap) {
        int cap = c->cap ? 2 * c->cap : 1024;
        const char **t = realloc(c->texts, (size_t)cap * sizeof *t);
        if (t) c->texts = t;
        size_t *l = realloc(c->lens, (size_t)cap * sizeof *l);
        if (l) c->lens = l;
        if (!t || !l) return -1;
        c->cap = cap;
    }
    c->texts[c->n_texts] = p;
    c->lens[c->n_texts++] = n;
    return 0;
}

/* Split buf[0..n) into documents at lines equal to sep (or keep it whole). */
static int split_docs(corpus *c, const char *buf, size_t n, const char *sep) {
    if (!sep) return add_doc(c, buf, n);
    size_t sl = strlen(sep), doc = 0;
    for (size_t line = 0; line < n;) {
        const char *nl = memchr(buf + line, '\n', n - line);
        size_t end = nl ? (size_t)(nl - buf) : n, next = nl ? end + 1 : n;
        size_t ll = end - line - (end > line && buf[end - 1] == '\r');
        if (ll == sl && !memcmp(buf + line, sep, sl)) {
            if (add_doc(c, buf + doc, line - doc) < 0) return -1;
            doc = next;
        }
        line = next;
    }
    return add_doc(c, buf + doc, n - doc);
}

static int read_corpus(corpus *c, const char **files, int n_files, const char *sep) {
    struct stat *seen = calloc((size_t)n_files + 1, sizeof *seen);
    int n_seen = 0, rc = -1;
    if (!seen || !(c->bufs = calloc((size_t)n_files + 1, sizeof *c->bufs))) goto oom;
    for (int i = 0; i < n_files; i++) {
        struct stat st;
        if (stat(files[i], &st) < 0) {
            fprintf(stderr, "kd tokenizer train: %s: %s\n", files[i], strerror(errno));
            goto done;
        }
        int dup = 0;
        for (int k = 0; k < n_seen && !dup; k++) dup = seen[k].st_dev == st.st_dev && seen[k].st_ino == st.st_ino;
        if (dup) {
            c->dups++;
            continue;
        }
        seen[n_seen++] = st;
        kd_err err;
        size_t n;
        char *buf = kd_read_file(files[i], &n, &err);
        if (!buf) {
            fprintf(stderr, "kd tokenizer train: %s\n", err.msg);
            goto done;
        }
        if (memchr(buf, '\0', n)) {
            if (!c->skipped)
                fprintf(stderr, "kd tokenizer train: skipping files with NUL bytes (not text): %s", files[i]);
            else if (c->skipped < 4) fprintf(stderr, ", %s", files[i]);
            else if (c->skipped == 4) fprintf(stderr, ", ...");
            free(buf);
            c->skipped++;
            continue;
        }
        c->bufs[c->n_bufs++] = buf;
        if (split_docs(c, buf, n, sep) < 0) goto oom;
    }
    if (c->skipped) fprintf(stderr, " (%d)\n", c->skipped);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "kd tokenizer train: out of memory reading the corpus\n");
done:
    free(seen);
    return rc;
}

static void progress(void *ctx, int32_t vocab, int32_t vocab_size, int64_t count) {
    (void)ctx;
    fprintf(stderr, "\rkd tokenizer train: %" PRId32 "/%" PRId32 " pieces, last pair count %" PRId64 "   ", vocab,
            vocab_size, count);
}

static int tokenizer_train(int argc, char **argv) {
    const char *C = "tokenizer train", *out = NULL, *sep = NULL;
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    kd_opt_list file_list = {files, 0, argc};
    int quiet = 0;
    kd_bpe_stats st = {0};
    kd_bpe_opts o = {.stats = &st};
    int64_t vocab_size = 0, min_frequency = 0, max_piece_len = 0;
    double coverage = 0;
    const kd_opt opts[] = {
        {"--text", KD_OPT_LIST, &file_list, "FILE",
         .help = "training text (all following arguments up to the next\n"
                 "option; may be repeated). A file given twice, also via\n"
                 "a symlink, is read once; files with NUL bytes (e.g. the\n"
                 ".dat indexes next to fortune files) are skipped",
         .flags = KD_OPT_REQUIRED | KD_OPT_MULTI},
        {"--doc-sep", KD_OPT_STRING, &sep, "STRING",
         .help = "a line holding only STRING ends a document (the line is\n"
                 "dropped); e.g. --doc-sep % for fortune files. Without it\n"
                 "each file is one document. Each document gets its own\n"
                 "space prefix, as when encoded alone"},
        {"--vocab-size", KD_OPT_INT, &vocab_size, "N",
         .help = "total pieces, the 260 fixed ones included (fewer when\n"
                 "no pair occurs --min-frequency times any more)",
         .flags = KD_OPT_REQUIRED, .lo = KD_BPE_MIN_VOCAB, .hi = KD_TOK_MAX_VOCAB, .def = ""},
        {"--out", KD_OPT_STRING, &out, "FILE", .help = "where to write tokenizer.bin", .flags = KD_OPT_REQUIRED},
        {"--min-frequency", KD_OPT_INT, &min_frequency, "F",
         .help = "merge a pair only when it occurs F times or more", .lo = 1, .hi = INT64_MAX, .def = "2"},
        {"--character-coverage", KD_OPT_DOUBLE, &coverage, "C",
         .help = "keep the most frequent characters covering this share\n"
                 "of character occurrences; rarer ones use byte\n"
                 "fallback",
         .range = "(0, 1]", .def = "0.9995"},
        {"--max-piece-len", KD_OPT_INT, &max_piece_len, "L", .help = "longest merged piece in characters", .lo = 2,
         .hi = 1 << 20, .def = "16"},
        {"--merge-digits", KD_OPT_FLAG, &o.merge_digits, NULL, .help = "let digit runs merge (default: each digit alone)"},
        {"--quiet", KD_OPT_FLAG, &quiet, NULL, .help = "no progress on stderr"},
        {0}};
    if (!files) return 1;
    if (kd_cli_wants_help(argc, argv)) {
        train_help(opts);
        free(files);
        return 0;
    }
    int st_rc = kd_opts_parse(C, opts, argc, argv);
    if (st_rc) {
        free(files);
        return st_rc;
    }
    o.vocab_size = (int32_t)vocab_size;
    o.min_frequency = min_frequency;
    o.max_piece_len = (int32_t)max_piece_len;
    o.character_coverage = coverage;
    int n_files = file_list.n;
    corpus c = {0};
    int rc = read_corpus(&c, files, n_files, sep);
    free(files);
    if (rc < 0) {
        corpus_free(&c);
        return 1;
    }
    if (!quiet && isatty(2)) o.progress = progress;
    kd_err err;
    kd_tokenizer *tok = kd_bpe_train(c.texts, c.lens, c.n_texts, &o, &err);
    if (o.progress) fputc('\n', stderr);
    if (!tok || kd_tokenizer_write_llama2c(tok, out, &err) < 0) {
        fprintf(stderr, "kd %s: %s\n", C, err.msg);
        kd_tokenizer_free(tok);
        corpus_free(&c);
        return 1;
    }
    /* Compression with the real encoder, each document alone, no BOS. */
    double t0 = kd_now_s();
    int64_t tokens = 0;
    rc = kd_bpe_count_tokens(tok, c.texts, c.lens, c.n_texts, &tokens, &err);
    double enc_s = kd_now_s() - t0;
    if (rc < 0) {
        fprintf(stderr, "kd %s: %s\n", C, err.msg);
        kd_tokenizer_free(tok);
        corpus_free(&c);
        return 1;
    }
    printf("corpus       %d files (skipped: %d with NUL bytes, %d given twice), %d documents, %.2f MB\n", c.n_bufs,
           c.skipped, c.dups, c.n_texts, (double)st.n_bytes / 1e6);
    printf("vocabulary   %" PRId32 " pieces = 259 fixed + %" PRId32 " characters + %" PRId32 " merges%s\n",
           kd_tokenizer_n_vocab(tok), st.n_chars, st.n_merges,
           st.stop == KD_BPE_STOP_FREQ ? " (stopped early: no pair left with the minimum frequency)" : "");
    printf("characters   %" PRId32 " of %" PRId32 " distinct (the rest use byte fallback)\n", st.n_chars,
           st.n_chars_seen);
    printf("compression  %.3f bytes/token (%" PRId64 " tokens; the trainer's own count %" PRId64 ")\n",
           tokens ? (double)st.n_bytes / (double)tokens : 0.0, tokens, st.n_tokens);
    printf("time         %.2f s training (%" PRId64 " unique words), %.2f s encoding\n", st.seconds, st.n_words,
           enc_s);
    printf("wrote        %s\n", out);
    kd_tokenizer_free(tok);
    corpus_free(&c);
    return fflush(stdout) ? 1 : 0;
}

/* ---- dispatch ---------------------------------------------------------------------- */

static const kd_command TOKENIZER_COMMANDS[] = {
    {"train", tokenizer_train, "train a BPE vocabulary on text, write a llama2.c tokenizer.bin"},
};
#define N_TOKENIZER (sizeof TOKENIZER_COMMANDS / sizeof TOKENIZER_COMMANDS[0])

int kd_cmd_tokenizer(int argc, char **argv) {
    int help = argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help");
    if (!help)
        for (size_t i = 0; i < N_TOKENIZER; i++)
            if (!strcmp(argv[1], TOKENIZER_COMMANDS[i].name)) return TOKENIZER_COMMANDS[i].run(argc - 1, argv + 1);
    FILE *f = help && argc >= 2 ? stdout : stderr;
    if (!help) fprintf(stderr, "kd tokenizer: '%s' is not a tokenizer subcommand\n\n", argv[1]);
    fprintf(f, "usage: kd tokenizer <subcommand> [<args>]\n\nMake tokenizers (use one with 'kd tokenize').\n\n"
               "subcommands:\n");
    for (size_t i = 0; i < N_TOKENIZER; i++)
        fprintf(f, "  %-8s %s\n", TOKENIZER_COMMANDS[i].name, TOKENIZER_COMMANDS[i].summary);
    return help && argc >= 2 ? 0 : 2;
}
