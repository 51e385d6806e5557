/*
 * cmd_tokenize.c — `kd tokenize`: encode text with a GGUF or llama2.c
 * tokenizer and print the token ids, one per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/kd_cli.h"
#include "cli/kd_opts.h"
#include "core/kd_file.h"
#include "data/kd_tokenizer.h"
#include "data/kd_dump_tok.h"

int kd_cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *text = NULL, *file = NULL;
    int add_special = 1, parse_special = 0, pieces = 0;
    const kd_opt opts[] = {
        {"--tokenizer", KD_OPT_STRING, &tok_path, "FILE",
         .help = "a GGUF file (its tokenizer.ggml.* keys; recognised by the\n"
                 "magic \"GGUF\"), a llama2.c tokenizer.bin, a checkpoint's\n"
                 "tokenizer.h5 or a Hugging Face tokenizer.json (with the\n"
                 "tokenizer_config.json beside it)",
         .flags = KD_OPT_REQUIRED},
        {"--text", KD_OPT_STRING, &text, "STRING", .help = "the text to encode", .flags = KD_OPT_REQUIRED},
        {"--file", KD_OPT_STRING, &file, "PATH", .help = "encode the bytes of this file instead (all of it, as one text)",
         .flags = KD_OPT_ALT},
        {"--no-bos", KD_OPT_FLAG_OFF, &add_special, NULL,
         .help = "do not prepend BOS (by default BOS/EOS are added as the\n"
                 "tokenizer's add_bos/add_eos flags say)"},
        {"--parse-special", KD_OPT_FLAG, &parse_special, NULL,
         .help = "treat control-token texts in the input (e.g. \"<s>\") as those tokens"},
        {"--pieces", KD_OPT_FLAG, &pieces, NULL, .help = "print \"id<TAB>piece\" instead of the id alone"},
        {0}};
    if (kd_cli_wants_help(argc, argv)) {
        kd_opts_usage("tokenize", opts);
        printf("\n"
               "Encodes text with a SentencePiece (\"llama\") tokenizer, or a byte-level BPE (\"gpt2\")\n"
               "one with any pre-tokenizer llama.cpp knows (tokenizer.ggml.pre), as llama.cpp does,\n"
               "and prints the token ids, one per line.\n"
               "\n");
        kd_opts_help(opts);
        return 0;
    }
    int rc = kd_opts_parse("tokenize", opts, argc, argv);
    if (rc) return rc;
    unsigned enc = (add_special ? KD_TOK_ENC_ADD_SPECIAL : 0) | (parse_special ? KD_TOK_ENC_PARSE_SPECIAL : 0);
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
    if (kd_tokenizer_encode(tok, text, len, enc, &ids, &err) < 0) {
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
