/*
 * kd_tokenizer_load.c — tokenizers from files (see kd_tokenizer_load.h): the
 * tokenizer.ggml.* keys of a GGUF, SentencePiece, byte-level BPE or Gemma 4's
 * BPE on UTF-8, and a file of any format told apart by its first bytes
 * (GGUF, a Hugging Face tokenizer.json, else a llama2.c tokenizer.bin).
 */
#include "data/kd_tokenizer_load.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "data/kd_tokenizer_bpe.h"
#include "data/kd_tokenizer_hf.h"
#include "format/kd_gguf.h"

/* ---- GGUF tokenizer.ggml.* --------------------------------------------------- */

static int opt_id(const kd_gguf *g, const char *key, int32_t dflt, int32_t n, int32_t *out, kd_err *err) {
    *out = dflt < n ? dflt : -1;
    if (kd_gguf_find_key(g, key) < 0) return 0;
    uint32_t v;
    if (kd_gguf_get_u32(g, key, &v, err) < 0) return -1;
    if (v >= (uint32_t)n)
        return kd_errf(err, "%s: %s is %" PRIu32 ", expected < n_vocab %" PRId32, kd_gguf_name(g), key, v, n);
    *out = (int32_t)v;
    return 0;
}

static int opt_bool(const kd_gguf *g, const char *key, unsigned bit, unsigned *flags, kd_err *err) {
    if (kd_gguf_find_key(g, key) < 0) return 0;
    int v;
    if (kd_gguf_get_bool(g, key, &v, err) < 0) return -1;
    *flags = v ? (*flags | bit) : (*flags & ~bit);
    return 0;
}

/* tokenizer.ggml.merges (required, as in llama.cpp) and tokenizer.ggml.pre (unless force_pre) of a BPE tokenizer. */
static int bpe_from_gguf(const kd_gguf *g, kd_tokenizer *tok, const char *force_pre, kd_err *err) {
    const char *name = kd_gguf_name(g), *pre = "";
    kd_gguf_arr mg;
    if (kd_gguf_find_key(g, "tokenizer.ggml.merges") < 0)
        return kd_errf(err, "%s: tokenizer.ggml.merges is missing (a \"gpt2\" tokenizer needs its merges)", name);
    if (kd_gguf_get_arr(g, "tokenizer.ggml.merges", KD_GGUF_STRING, -1, &mg, err) < 0 ||
        (kd_gguf_find_key(g, "tokenizer.ggml.pre") >= 0 && kd_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL, err) < 0))
        return -1;
    if (force_pre) pre = force_pre;
    if (mg.n > KD_TOK_MAX_MERGES)
        return kd_errf(err, "%s: tokenizer.ggml.merges has %" PRIu64 " entries, expected at most %d", name, mg.n,
                       KD_TOK_MAX_MERGES);
    int32_t m = (int32_t)mg.n;
    const char **ms = malloc(((size_t)m + 1) * sizeof *ms);
    size_t *ls = malloc(((size_t)m + 1) * sizeof *ls);
    char what[300];
    int rc = -1;
    snprintf(what, sizeof what, "%s: tokenizer.ggml.merges", name);
    if (!ms || !ls) {
        kd_errf(err, "%s: out of memory", name);
    } else {
        for (int32_t i = 0; i < m; i++) ms[i] = kd_gguf_arr_str(&mg, (uint64_t)i, &ls[i]);
        rc = kd_tokenizer_set_bpe(tok, pre, m, ms, ls, what, err);
    }
    free(ms);
    free(ls);
    return rc;
}

kd_tokenizer *kd_tokenizer_from_gguf(const kd_gguf *g, kd_err *err) {
    const char *name = kd_gguf_name(g), *model;
    if (kd_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL, err) < 0) return NULL;
    /* "gemma4" is BPE over raw UTF-8 with the "gemma4" pre-tokenizer, whatever tokenizer.ggml.pre says (as llama.cpp) */
    int gemma4 = !strcmp(model, "gemma4"), bpe = !strcmp(model, "gpt2") || gemma4;
    if (strcmp(model, "llama") && !bpe) {
        kd_errf(err, "%s: tokenizer.ggml.model is '%.40s', expected 'llama' (SentencePiece), 'gpt2' (byte-level "
                "BPE) or 'gemma4' (BPE on UTF-8; kd supports no other)", name, model);
        return NULL;
    }
    kd_gguf_arr toks, sc = {0}, ty = {0};
    if (kd_gguf_get_arr(g, "tokenizer.ggml.tokens", KD_GGUF_STRING, -1, &toks, err) < 0) return NULL;
    if (toks.n < 1 || toks.n > KD_TOK_MAX_VOCAB) {
        kd_errf(err, "%s: tokenizer.ggml.tokens has %" PRIu64 " entries, expected 1..%d", name, toks.n,
                KD_TOK_MAX_VOCAB);
        return NULL;
    }
    int32_t n = (int32_t)toks.n, bos, eos, unk;
    int has_sc = kd_gguf_find_key(g, "tokenizer.ggml.scores") >= 0;
    int has_ty = kd_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0;
    if ((has_sc && kd_gguf_get_arr(g, "tokenizer.ggml.scores", KD_GGUF_FLOAT32, n, &sc, err) < 0) ||
        (has_ty && kd_gguf_get_arr(g, "tokenizer.ggml.token_type", KD_GGUF_INT32, n, &ty, err) < 0))
        return NULL;
    /* SPM defaults as llama.cpp's; a "gpt2" file without the keys gets no special ids and no BOS */
    unsigned flags = bpe ? 0 : KD_TOK_ADD_BOS | KD_TOK_ADD_SPACE_PREFIX;
    if (opt_id(g, "tokenizer.ggml.bos_token_id", bpe ? -1 : 1, n, &bos, err) < 0 ||
        opt_id(g, "tokenizer.ggml.eos_token_id", bpe ? -1 : 2, n, &eos, err) < 0 ||
        opt_id(g, "tokenizer.ggml.unknown_token_id", bpe ? -1 : 0, n, &unk, err) < 0 ||
        opt_bool(g, "tokenizer.ggml.add_bos_token", KD_TOK_ADD_BOS, &flags, err) < 0 ||
        opt_bool(g, "tokenizer.ggml.add_eos_token", KD_TOK_ADD_EOS, &flags, err) < 0 ||
        opt_bool(g, "tokenizer.ggml.add_space_prefix", KD_TOK_ADD_SPACE_PREFIX, &flags, err) < 0)
        return NULL;
    const char **pcs = malloc((size_t)n * sizeof *pcs);
    size_t *lens = malloc((size_t)n * sizeof *lens);
    float *scores = has_sc ? malloc((size_t)n * sizeof *scores) : NULL;
    int32_t *types = has_ty ? malloc((size_t)n * sizeof *types) : NULL;
    kd_tokenizer *tok = NULL;
    if (!pcs || !lens || (has_sc && !scores) || (has_ty && !types)) {
        kd_errf(err, "%s: out of memory", name);
    } else {
        for (int32_t i = 0; i < n; i++) {
            pcs[i] = kd_gguf_arr_str(&toks, (uint64_t)i, &lens[i]);
            if (scores) scores[i] = kd_gguf_arr_f32(&sc, (uint64_t)i);
            if (types) types[i] = kd_gguf_arr_i32(&ty, (uint64_t)i);
        }
        tok = kd_tokenizer_build(name, n, pcs, lens, scores, types, bos, eos, unk, flags, err);
        if (tok && bpe && bpe_from_gguf(g, tok, gemma4 ? "gemma4" : NULL, err) < 0) {
            kd_tokenizer_free(tok);
            tok = NULL;
        }
    }
    free(pcs);
    free(lens);
    free(scores);
    free(types);
    return tok;
}

kd_tokenizer *kd_tokenizer_load(const char *path, kd_err *err) {
    kd_mmap m;
    if (kd_mmap_open(&m, path, err) < 0) return NULL;
    kd_tokenizer *tok = NULL;
    if (m.len >= 4 && !memcmp(m.data, KD_GGUF_MAGIC, 4)) {
        kd_gguf *g = kd_gguf_parse(m.data, m.len, path, err);
        if (g) tok = kd_tokenizer_from_gguf(g, err);
        kd_gguf_close(g);
    } else if (m.len >= 1 && ((const char *)m.data)[0] == '{') {   /* tokenizer.json, with the config beside it */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
        tok = kd_tokenizer_load_hf(dir, err);
    } else {
        tok = kd_tokenizer_parse_llama2c(m.data, m.len, path, err);
    }
    kd_mmap_close(&m);
    return tok;
}
