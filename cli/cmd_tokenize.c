/*
 * cmd_tokenize.c — `kd tokenize`: encode text with a GGUF or llama2.c
 * tokenizer and print the token ids, one per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/kd_cli.h"
#include "core/kd_file.h"
#include "data/kd_tokenizer.h"
#include "data/kd_dump_tok.h"

static void help(void) {
    printf("usage: kd tokenize --tokenizer FILE (--text STRING | --file PATH) [--no-bos]\n"
           "                   [--parse-special] [--pieces]\n"
           "\n"
           "Encodes text with a SentencePiece (\"llama\") tokenizer, or a byte-level BPE (\"gpt2\")\n"
           "one with any pre-tokenizer llama.cpp knows (tokenizer.ggml.pre), as llama.cpp does,\n"
           "and prints the token ids, one per line.\n"
           "\n"
           "  --tokenizer FILE   a GGUF file (its tokenizer.ggml.* keys; recognised by the\n"
           "                     magic \"GGUF\"), a llama2.c tokenizer.bin, a checkpoint's\n"
           "                     tokenizer.h5 or a Hugging Face tokenizer.json (with the\n"
           "                     tokenizer_config.json beside it)\n"
           "  --text STRING      the text to encode\n"
           "  --file PATH        encode the bytes of this file instead (all of it, as one text)\n"
           "  --no-bos           do not prepend BOS (by default BOS/EOS are added as the\n"
           "                     tokenizer's add_bos/add_eos flags say)\n"
           "  --parse-special    treat control-token texts in the input (e.g. \"<s>\") as those tokens\n"
           "  --pieces           print \"id<TAB>piece\" instead of the id alone\n");
}

int kd_cmd_tokenize(int argc, char **argv) {
    if (kd_cli_wants_help(argc, argv)) {
        help();
        return 0;
    }
    const char *tok_path = NULL, *text = NULL, *file = NULL;
    unsigned opts = KD_TOK_ENC_ADD_SPECIAL;
    int pieces = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--tokenizer")) {
            if (!(tok_path = kd_cli_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--text")) {
            if (!(text = kd_cli_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--file")) {
            if (!(file = kd_cli_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--no-bos")) {
            opts &= ~KD_TOK_ENC_ADD_SPECIAL;
        } else if (!strcmp(a, "--parse-special")) {
            opts |= KD_TOK_ENC_PARSE_SPECIAL;
        } else if (!strcmp(a, "--pieces")) {
            pieces = 1;
        } else {
            fprintf(stderr, "kd tokenize: unknown argument '%s' (see 'kd tokenize --help')\n", a);
            return 2;
        }
    }
    if (!tok_path || (!text) == (!file)) {
        fprintf(stderr, "kd tokenize: needs --tokenizer and exactly one of --text and --file\n");
        return 2;
    }
    kd_err err = {{0}};
    kd_tokenizer *tok = kd_tokenizer_open(tok_path, &err);
    if (!tok) {
        fprintf(stderr, "kd tokenize: %s\n", err.msg);
        return 1;
    }
    char *buf = NULL;
    size_t len = 0;
    if (file) {
        if (!(buf = kd_read_file(file, &len, &err))) {
            fprintf(stderr, "kd tokenize: %s\n", err.msg);
            kd_tokenizer_free(tok);
            return 1;
        }
        text = buf;
    } else {
        len = strlen(text);
    }
    kd_tokens ids = {0};
    int rc = 0;
    if (kd_tokenizer_encode(tok, text, len, opts, &ids, &err) < 0) {
        fprintf(stderr, "kd tokenize: %s\n", err.msg);
        rc = 1;
    }
    for (size_t i = 0; i < ids.n && rc == 0; i++) {
        if (!pieces) {
            printf("%d\n", ids.ids[i]);
            continue;
        }
        size_t pl;
        const char *p = kd_tokenizer_piece(tok, ids.ids[i], &pl);
        printf("%d\t", ids.ids[i]);
        for (size_t k = 0; k < pl; k++) {   /* keep one line per token */
            unsigned char c = (unsigned char)p[k];
            if (c == '\n') fputs("\\n", stdout);
            else if (c == '\t') fputs("\\t", stdout);
            else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
            else putchar(c);
        }
        putchar('\n');
    }
    if (fflush(stdout) != 0) rc = 1;
    kd_tokens_free(&ids);
    free(buf);
    kd_tokenizer_free(tok);
    return rc;
}
