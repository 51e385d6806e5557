/*
 * fuzz_tokenizer.c — fuzz target: a tokenizer file of any kind kd reads
 * (data/kd_dump_tok.c kd_tokenizer_open): llama2.c tokenizer.bin (SPM),
 * tokenizer.h5 (SPM or byte-level BPE) and a GGUF's tokenizer.ggml.* keys.
 * A loaded tokenizer encodes a fixed text (with and without special tokens)
 * and decodes every id and the encoding.
 */
#include <stdlib.h>
#include <string.h>

#include "data/kd_dump_tok.h"
#include "data/kd_tokenizer.h"
#include "data/kd_tokenizer_bpe.h"
#include "fuzz_common.h"

static const char TEXT[] = " Hello world,\n\tit's 2024! <s>Ünïcödé ▁ 😀 </s> 'll  end ";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *name = size >= 4 && !memcmp(data, "GGUF", 4) ? "tokenizer.gguf"
                       : size >= 8 && !memcmp(data, "\x89HDF\r\n\x1a\n", 8) ? "tokenizer.h5"
                                                                             : "tokenizer.bin";
    const char *path = kdf_write_temp(name, data, size);
    kd_err err = {{0}};
    kd_tokenizer *tok = kd_tokenizer_open(path, &err);
    if (!tok) {
        kdf_rejected(path, &err);
        return 0;
    }
    int32_t n = kd_tokenizer_n_vocab(tok);
    char *text = NULL, buf[256];
    size_t len;
    for (int32_t id = 0; id < n && id < 4096; id++) {
        kd_tokenizer_decode_token(tok, id, KD_TOK_DEC_SPECIAL, buf, sizeof buf, NULL);
        (void)kd_tokenizer_piece(tok, id, &len);
    }
    for (int32_t i = 0; i < kd_tokenizer_n_merges(tok) && i < 4096; i++) (void)kd_tokenizer_merge(tok, i, &len);
    if (kd_tokenizer_can_encode(tok, NULL, 0)) {
        for (unsigned opts = 0; opts < 4; opts++) {
            kd_tokens t = {0};
            if (!kd_tokenizer_encode(tok, TEXT, sizeof TEXT - 1, opts, &t, &err) &&
                !kd_tokenizer_decode(tok, t.ids, t.n, opts & 1 ? KD_TOK_DEC_SPECIAL : 0, &text, &len, &err))
                free(text);
            kd_tokens_free(&t);
        }
    }
    kd_tokenizer_free(tok);
    return 0;
}
