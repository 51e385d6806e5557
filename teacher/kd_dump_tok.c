/*
 * kd_dump_tok.c — tokenizer conversion for dumps (see kd_dump_tok.h).
 */
#include "teacher/kd_dump_tok.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

kd_tokenizer *kd_tokenizer_from_dump(const kd_dump_tokenizer *dt, const char *name, kd_err *err) {
    if (strcmp(dt->model, "llama") != 0) {
        kd_errf(err, "%s: tokenizer model '%s' is not supported (kd reads SentencePiece-style \"llama\")", name,
                dt->model);
        return NULL;
    }
    if (dt->n <= 0) {
        kd_errf(err, "%s: the tokenizer has no pieces", name);
        return NULL;
    }
    char **pieces = calloc((size_t)dt->n, sizeof *pieces);
    kd_tokenizer *tok = NULL;
    if (!pieces) {
        kd_errf(err, "out of memory");
        return NULL;
    }
    for (int32_t i = 0; i < dt->n; i++) {
        int64_t a = dt->piece_offsets[i], b = dt->piece_offsets[i + 1];
        pieces[i] = malloc((size_t)(b - a) + 1);
        if (!pieces[i]) {
            kd_errf(err, "out of memory");
            goto done;
        }
        memcpy(pieces[i], dt->piece_bytes + a, (size_t)(b - a));
        pieces[i][b - a] = '\0';
    }
    unsigned flags = (dt->add_bos ? KD_TOK_ADD_BOS : 0) | (dt->add_eos ? KD_TOK_ADD_EOS : 0) |
                     (dt->add_space_prefix ? KD_TOK_ADD_SPACE_PREFIX : 0);
    tok = kd_tokenizer_new(dt->n, (const char *const *)pieces, dt->scores, dt->types, dt->bos_id, dt->eos_id,
                           dt->unk_id, flags, err);
    if (!tok) kd_err_prefix(err, "%s: tokenizer", name);
done:
    for (int32_t i = 0; i < dt->n; i++) free(pieces[i]);
    free(pieces);
    return tok;
}

int kd_dump_tokenizer_from(const kd_tokenizer *tok, kd_dump_tokenizer *out, kd_err *err) {
    memset(out, 0, sizeof *out);
    int32_t n = kd_tokenizer_n_vocab(tok);
    snprintf(out->model, sizeof out->model, "llama");
    out->n = n;
    out->piece_offsets = malloc((size_t)(n + 1) * sizeof *out->piece_offsets);
    out->scores = malloc((size_t)n * sizeof *out->scores);
    out->types = malloc((size_t)n * sizeof *out->types);
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len;
        kd_tokenizer_piece(tok, i, &len);
        total += (int64_t)len;
    }
    out->piece_bytes = malloc((size_t)total + 1);
    if (!out->piece_offsets || !out->scores || !out->types || !out->piece_bytes) {
        kd_dump_tokenizer_free(out);
        return kd_errf(err, "out of memory");
    }
    int64_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len;
        const char *p = kd_tokenizer_piece(tok, i, &len);
        out->piece_offsets[i] = off;
        memcpy(out->piece_bytes + off, p, len);
        off += (int64_t)len;
        out->scores[i] = kd_tokenizer_score(tok, i);
        out->types[i] = (int32_t)kd_tokenizer_type(tok, i);
    }
    out->piece_offsets[n] = off;
    out->bos_id = kd_tokenizer_bos(tok);
    out->eos_id = kd_tokenizer_eos(tok);
    out->unk_id = kd_tokenizer_unk(tok);
    out->pad_id = -1;
    unsigned f = kd_tokenizer_flags(tok);
    out->add_bos = !!(f & KD_TOK_ADD_BOS);
    out->add_eos = !!(f & KD_TOK_ADD_EOS);
    out->add_space_prefix = !!(f & KD_TOK_ADD_SPACE_PREFIX);
    return 0;
}
