/*
 * test_bpe_vocab.c — byte-level BPE ("gpt2") tokenizers end to end, on a
 * small synthetic vocabulary built here (<|endoftext|>, the 256 byte
 * characters, then one piece per merge):
 *   - GPT-2's byte ↔ character map;
 *   - a dump carrying the tokenizer (with "pre") reads back, converts to a
 *     kd_tokenizer and back, and round-trips through a checkpoint's
 *     tokenizer.h5 (checked with h5py by the Python reference);
 *   - kd's encoder agrees with an independent Python byte-level BPE
 *     (tests/py/bpe_ref.py) and decodes back to the text;
 *   - hostile dumps (a malformed merge, an id out of range) fail with the file
 *     and the field named; a "gpt2" GGUF without merges is refused;
 *   - kd train on such a dump keeps the tokenizer, kd export writes the GGUF
 *     keys llama.cpp reads, llama.cpp (tests/node, node-llama-cpp) loads the
 *     file and tokenizes like the reference and kd, and kd run / kd eval work
 *     on it.
 */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "data/kd_tokenizer_bpe.h"
#include "data/kd_tokenizer_load.h"
#include "kd_test.h"
#include "format/kd_gguf.h"
#include "format/kd_gguf_write.h"
#include "data/kd_dump.h"
#include "data/kd_dump_tok.h"

/* Merges of the synthetic vocabulary; each adds the piece left+right. */
static const char *const MERGES[] = {
    "\xC4\xA0 t", "h e", "\xC4\xA0t he", "i n", "\xC4\xA0 a", "a n", "\xC4\xA0" "a n", "e r", "l l", "o w",
    "\xC4\xA0 w", "\xC4\xA0w o", "r l", "\xC4\xA0wo rl", "\xC4\xA0worl d", "H e", "He ll", "Hell o", "1 2", "12 3",
    "\xC4\xA0 \xC4\xA0", "\xC4\x8A \xC4\x8A", "' s", "i t", "\xC4\xA0 it", "\xC4\xA0it 's", "c a", "\xC4\xA0 ca",
    "\xC4\xA0" "ca t", "\xC3\x83 \xC2\xA9",
};
#define N_MERGES ((int32_t)(sizeof MERGES / sizeof *MERGES))
#define N_PIECES (1 + 256 + N_MERGES)

/* The test strings (ASCII, Latin-1 letters, an emoji, runs of spaces and newlines). */
static const char *const STRINGS[] = {
    "Hello world",
    "the cat in an apple",
    "it's 123 and 4567!",
    "  two  spaces\n\nnew\tline ",
    "caf\xC3\xA9 \xC3\xBC" "ber na\xC3\xAFve",
    "smile \xF0\x9F\x99\x82 ok a\xF0\x9F\x99\x82" "b",
    "Hello, the world's cat-123...",
    "HE'S 12345 x\r\n\r\ny  \n  z",
    "tab\thello !!!\n  end_of it's",
};
#define N_STRINGS ((int)(sizeof STRINGS / sizeof *STRINGS))

static const char *kd(void) { return kd_test_env("KD_BIN"); }

/* The synthetic tokenizer as dump arrays; bad = 1: merge 2 without its space. */
static void make_vocab(kd_dump_tokenizer *t, int bad) {
    memset(t, 0, sizeof *t);
    snprintf(t->model, sizeof t->model, "gpt2");
    snprintf(t->pre, sizeof t->pre, "gpt-2");
    t->n = N_PIECES;
    t->piece_bytes = malloc(16 * N_PIECES);
    t->piece_offsets = malloc((N_PIECES + 1) * sizeof *t->piece_offsets);
    t->types = malloc(N_PIECES * sizeof *t->types);
    int64_t off = 0;
    const char *eot = "<|endoftext|>";
    t->piece_offsets[0] = 0;
    memcpy(t->piece_bytes, eot, strlen(eot));
    off = (int64_t)strlen(eot);
    t->types[0] = KD_TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = kd_bpe_byte_char((uint8_t)b);
        t->piece_offsets[1 + b] = off;
        if (cp < 0x80) t->piece_bytes[off++] = (uint8_t)cp;
        else {
            t->piece_bytes[off++] = (uint8_t)(0xC0 | (cp >> 6));
            t->piece_bytes[off++] = (uint8_t)(0x80 | (cp & 0x3F));
        }
        t->types[1 + b] = KD_TOKEN_NORMAL;
    }
    t->n_merges = N_MERGES;
    t->merge_bytes = malloc(16 * N_MERGES);
    t->merge_offsets = malloc((N_MERGES + 1) * sizeof *t->merge_offsets);
    int64_t moff = 0;
    for (int32_t i = 0; i < N_MERGES; i++) {
        const char *m = MERGES[i], *sp = strchr(m + 1, ' ');
        t->piece_offsets[257 + i] = off;
        memcpy(t->piece_bytes + off, m, (size_t)(sp - m));
        off += sp - m;
        memcpy(t->piece_bytes + off, sp + 1, strlen(sp + 1));
        off += (int64_t)strlen(sp + 1);
        t->types[257 + i] = KD_TOKEN_NORMAL;
        t->merge_offsets[i] = moff;
        for (const char *c = m; *c; c++)
            if (!(bad && i == 2 && *c == ' ')) t->merge_bytes[moff++] = (uint8_t)*c;
    }
    t->piece_offsets[N_PIECES] = off;
    t->merge_offsets[N_MERGES] = moff;
    t->bos_id = t->eos_id = 0;
    t->unk_id = t->pad_id = -1;
}

/* A small top-k dump over the synthetic vocabulary at path, with tokenizer t. */
static void write_dump(const char *path, const kd_dump_tokenizer *t, int n_seq) {
    enum { T = 16, K = 4 };
    kd_dump_meta m = {.vocab_size = N_PIECES, .k = K, .seq_len = T, .temperature = 1.0, .value_dtype = KD_DUMP_F32};
    snprintf(m.teacher, sizeof m.teacher, "synthetic-gpt2");
    kd_err err;
    kd_dump_writer *w = kd_dump_writer_create(path, &m, t, &err);
    if (!w) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(w);
    int32_t *tok = malloc((size_t)n_seq * (T + 1) * sizeof *tok), *ids = malloc((size_t)n_seq * T * K * sizeof *ids);
    float *lp = malloc((size_t)n_seq * T * K * sizeof *lp);
    kd_rng r;
    kd_rng_seed(&r, 7);
    for (int64_t i = 0; i < (int64_t)n_seq * (T + 1); i++) tok[i] = (int32_t)kd_rng_below(&r, N_PIECES);
    for (int64_t p = 0; p < (int64_t)n_seq * T; p++)
        for (int j = 0; j < K; j++) {
            ids[p * K + j] = (int32_t)((tok[p] * 7 + j * 13 + 1) % N_PIECES);
            lp[p * K + j] = -1.0f - (float)j;
        }
    assert_int_equal(kd_dump_writer_append(w, n_seq, tok, NULL, ids, lp, &err), 0);
    assert_int_equal(kd_dump_writer_close(w, &err), 0);
    free(tok);
    free(ids);
    free(lp);
}

static void test_byte_map(void **state) {
    (void)state;
    assert_int_equal(kd_bpe_byte_char(' '), 0x120);    /* "Ġ" */
    assert_int_equal(kd_bpe_byte_char('\n'), 0x10A);   /* "Ċ" */
    assert_int_equal(kd_bpe_byte_char('a'), 'a');
    assert_int_equal(kd_bpe_byte_char(0xAD), 0x143);   /* the last non-printable byte */
    for (int b = 0; b < 256; b++) assert_int_equal(kd_bpe_char_byte(kd_bpe_byte_char((uint8_t)b)), b);
    assert_int_equal(kd_bpe_char_byte(0x144), -1);
    assert_int_equal(kd_bpe_char_byte(' '), -1);
}

static void test_dump_checkpoint_roundtrip(void **state) {
    (void)state;
    char path[700], dir[700], p[800];
    snprintf(path, sizeof path, "%s/gpt2.h5", kd_test_tmpdir());
    kd_dump_tokenizer t, back, again;
    make_vocab(&t, 0);
    write_dump(path, &t, 4);
    kd_err err;
    kd_dump *d = kd_dump_open(path, &err);
    assert_non_null(d);
    assert_int_equal(kd_dump_read_tokenizer(d, &back, &err), 0);
    kd_dump_close(d);
    assert_string_equal(back.model, "gpt2");
    assert_string_equal(back.pre, "gpt-2");
    assert_int_equal(back.n_merges, N_MERGES);
    assert_int_equal(kd_dump_tokenizer_compare(&t, "made", &back, "read", &err), 0);
    kd_tokenizer *tok = kd_tokenizer_from_dump(&back, path, &err);
    assert_non_null(tok);
    assert_string_equal(kd_tokenizer_model(tok), "gpt2");
    assert_string_equal(kd_tokenizer_pre(tok), "gpt-2");
    assert_int_equal(kd_tokenizer_n_merges(tok), N_MERGES);
    assert_int_equal(kd_tokenizer_flags(tok) & KD_TOK_ADD_SPACE_PREFIX, 0);
    assert_int_equal(kd_dump_tokenizer_from(tok, &again, &err), 0);
    assert_int_equal(kd_dump_tokenizer_compare(&t, "made", &again, "converted", &err), 0);
    assert_string_equal(again.pre, "gpt-2");
    assert_int_equal(again.merge_offsets[N_MERGES], t.merge_offsets[N_MERGES]);
    assert_memory_equal(again.merge_bytes, t.merge_bytes, (size_t)t.merge_offsets[N_MERGES]);
    /* a checkpoint directory keeps it as tokenizer.h5 (tokenizer.bin cannot hold merges) */
    snprintf(dir, sizeof dir, "%s/ck", kd_test_tmpdir());
    assert_int_equal(kd_mkdirs(dir, &err), 0);
    assert_int_equal(kd_tokenizer_save_dir(tok, dir, &err), 0);
    snprintf(p, sizeof p, "%s/tokenizer.bin", dir);
    assert_false(kd_file_exists(p));
    snprintf(p, sizeof p, "%s/tokenizer.h5", dir);
    assert_true(kd_file_exists(p));
    kd_tokenizer *tok2 = NULL;
    assert_int_equal(kd_tokenizer_load_dir(dir, &tok2, &err), 0);
    assert_non_null(tok2);
    assert_string_equal(kd_tokenizer_model(tok2), "gpt2");
    assert_string_equal(kd_tokenizer_pre(tok2), "gpt-2");
    assert_int_equal(kd_tokenizer_n_vocab(tok2), N_PIECES);
    assert_int_equal(kd_tokenizer_type(tok2, 0), KD_TOKEN_CONTROL);
    assert_int_equal(kd_tokenizer_bos(tok2), 0);
    for (int32_t i = 0; i < N_MERGES; i++) assert_string_equal(kd_tokenizer_merge(tok2, i, NULL), MERGES[i]);
    kd_tokenizer *tok3 = kd_tokenizer_open(p, &err);   /* --tokenizer DIR/tokenizer.h5 */
    assert_non_null(tok3);
    kd_tokenizer_free(tok3);
    /* encode: kd vs the Python reference (which also reads tokenizer.h5 with h5py); decode back */
    char sj[800], rj[800];
    snprintf(sj, sizeof sj, "%s/strings.json", kd_test_tmpdir());
    snprintf(rj, sizeof rj, "%s/ref.json", kd_test_tmpdir());
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < N_STRINGS; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(STRINGS[i]));
    assert_int_equal(kd_json_write_atomic(sj, arr, &err), 0);
    cJSON_Delete(arr);
    assert_int_equal(kd_test_python("bpe_ref.py", "'%s' '%s' '%s'", p, sj, rj), 0);
    cJSON *ref = kd_json_load(rj, &err);
    assert_non_null(ref);
    cJSON *rids = cJSON_GetObjectItem(ref, "ids");
    for (int i = 0; i < N_STRINGS; i++) {
        kd_tokens x = {0};
        assert_int_equal(kd_tokenizer_encode(tok2, STRINGS[i], strlen(STRINGS[i]), 0, &x, &err), 0);
        cJSON *row = cJSON_GetArrayItem(rids, i);
        fprintf(stderr, "  %-36.36s kd %2zu ids, reference %2d\n", STRINGS[i], x.n, cJSON_GetArraySize(row));
        assert_int_equal((int)x.n, cJSON_GetArraySize(row));
        for (size_t k = 0; k < x.n; k++) assert_int_equal(x.ids[k], (int32_t)cJSON_GetArrayItem(row, (int)k)->valuedouble);
        char *text;
        size_t len;
        assert_int_equal(kd_tokenizer_decode(tok2, x.ids, x.n, 0, &text, &len, &err), 0);
        assert_int_equal(len, strlen(STRINGS[i]));
        assert_memory_equal(text, STRINGS[i], len);
        free(text);
        kd_tokens_free(&x);
    }
    cJSON_Delete(ref);
    /* a 199999-byte word (a run of spaces: merge "Ġ Ġ") encodes in O(n log n) and decodes back */
    size_t big = 200000;
    char *sp = malloc(big + 2);
    memset(sp, ' ', big);
    memcpy(sp + big, "x", 2);
    kd_tokens xs = {0};
    assert_int_equal(kd_tokenizer_encode(tok2, sp, big + 1, 0, &xs, &err), 0);
    assert_int_equal(xs.n, big / 2 + 2);   /* "ĠĠ" × 99999, "Ġ" (the run but its last space), "Ġ" "x" */
    char *back_text;
    size_t back_len;
    assert_int_equal(kd_tokenizer_decode(tok2, xs.ids, xs.n, 0, &back_text, &back_len, &err), 0);
    assert_int_equal(back_len, big + 1);
    assert_memory_equal(back_text, sp, big + 1);
    free(back_text);
    free(sp);
    kd_tokens_free(&xs);
    /* a merged piece decodes to its bytes: "Ġworld" → " world" */
    char buf[16];
    int32_t w = kd_tokenizer_find(tok2, "\xC4\xA0world", 7);
    assert_true(w > 256);
    assert_int_equal(kd_tokenizer_decode_token(tok2, w, 0, buf, sizeof buf, &err), 6);
    assert_memory_equal(buf, " world", 6);
    kd_tokenizer_free(tok2);
    kd_tokenizer_free(tok);
    kd_dump_tokenizer_free(&t);
    kd_dump_tokenizer_free(&back);
    kd_dump_tokenizer_free(&again);
}

static void test_hostile(void **state) {
    (void)state;
    char path[700];
    kd_err err;
    kd_dump_tokenizer t, back;
    /* a merge without its separating space */
    snprintf(path, sizeof path, "%s/badmerge.h5", kd_test_tmpdir());
    make_vocab(&t, 1);
    write_dump(path, &t, 1);
    kd_dump *d = kd_dump_open(path, &err);
    assert_non_null(d);
    assert_int_equal(kd_dump_read_tokenizer(d, &back, &err), 0);
    kd_dump_close(d);
    assert_null(kd_tokenizer_from_dump(&back, path, &err));
    fprintf(stderr, "  %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "tokenizer/merge_bytes"));
    assert_non_null(strstr(err.msg, "merge 2"));
    kd_dump_tokenizer_free(&back);
    /* kd train on it fails with that message */
    char cfg[800], run[800], out[800];
    snprintf(cfg, sizeof cfg, "%s/badcfg.json", kd_test_tmpdir());
    FILE *f = fopen(cfg, "w");
    fprintf(f, "{\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
               "\"vocab_size\": %d, \"max_position_embeddings\": 64}\n", N_PIECES);
    fclose(f);
    snprintf(run, sizeof run, "%s/badrun.json", kd_test_tmpdir());
    f = fopen(run, "w");
    fprintf(f, "{\"student\": \"%s\", \"train_data\": \"%s\", \"val_data\": \"%s\", \"batch_size\": 1, \"steps\": 1}\n",
            cfg, path, path);
    fclose(f);
    snprintf(out, sizeof out, "%s/badrun.err", kd_test_tmpdir());
    assert_int_not_equal(kd_test_sh("'%s' train --config '%s' --out '%s/badrun' --quiet 2>'%s'", kd(), run,
                                    kd_test_tmpdir(), out), 0);
    if (kd_test_sh("grep -q 'tokenizer/merge_bytes' '%s'", out)) kd_test_sh("cat '%s' >&2", out);
    assert_int_equal(kd_test_sh("grep -q 'tokenizer/merge_bytes' '%s'", out), 0);
    /* a special id out of range */
    kd_dump_tokenizer_free(&t);
    make_vocab(&t, 0);
    t.eos_id = N_PIECES;
    snprintf(path, sizeof path, "%s/badid.h5", kd_test_tmpdir());
    write_dump(path, &t, 1);
    d = kd_dump_open(path, &err);
    assert_non_null(d);
    assert_int_equal(kd_dump_read_tokenizer(d, &back, &err), -1);
    kd_dump_close(d);
    fprintf(stderr, "  %s\n", err.msg);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "eos_id"));
    /* an unknown tokenizer model */
    t.eos_id = 0;
    snprintf(t.model, sizeof t.model, "bert");
    assert_null(kd_tokenizer_from_dump(&t, "x.h5", &err));
    assert_non_null(strstr(err.msg, "'bert'"));
    assert_non_null(strstr(err.msg, "tokenizer/model"));
    /* a "gpt2" GGUF without merges */
    kd_gguf_writer *w = kd_gguf_writer_new(&err);
    const char *pcs[2] = {"a", "b"};
    size_t lens[2] = {1, 1};
    assert_int_equal(kd_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2", (size_t)-1, &err), 0);
    assert_int_equal(kd_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", pcs, lens, 2, &err), 0);
    snprintf(path, sizeof path, "%s/nomerges.gguf", kd_test_tmpdir());
    assert_int_equal(kd_gguf_writer_write(w, path, &err), 0);
    kd_gguf_writer_free(w);
    assert_null(kd_tokenizer_load(path, &err));
    assert_non_null(strstr(err.msg, "tokenizer.ggml.merges is missing"));
    kd_dump_tokenizer_free(&t);
}

/* The GGUF's tokenizer keys, read back with kd's reader. */
static void check_gguf_keys(const char *path) {
    kd_err err;
    kd_gguf *g = kd_gguf_open(path, &err);
    assert_non_null(g);
    const char *s;
    assert_int_equal(kd_gguf_get_str(g, "tokenizer.ggml.model", &s, NULL, &err), 0);
    assert_string_equal(s, "gpt2");
    assert_int_equal(kd_gguf_get_str(g, "tokenizer.ggml.pre", &s, NULL, &err), 0);
    assert_string_equal(s, "gpt-2");
    kd_gguf_arr a;
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.merges", KD_GGUF_STRING, N_MERGES, &a, &err), 0);
    size_t len;
    const char *m0 = kd_gguf_arr_str(&a, 0, &len);
    assert_int_equal(len, strlen(MERGES[0]));
    assert_memory_equal(m0, MERGES[0], len);
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.tokens", KD_GGUF_STRING, N_PIECES, &a, &err), 0);
    assert_int_equal(kd_gguf_get_arr(g, "tokenizer.ggml.token_type", KD_GGUF_INT32, N_PIECES, &a, &err), 0);
    assert_true(kd_gguf_find_key(g, "tokenizer.ggml.scores") < 0);
    uint32_t v;
    assert_int_equal(kd_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v, &err), 0);
    assert_int_equal(v, 0);
    assert_int_equal(kd_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v, &err), 0);
    int b;
    assert_int_equal(kd_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, &err), 0);
    assert_int_equal(b, 0);
    kd_tokenizer *tok = kd_tokenizer_from_gguf(g, &err);   /* kd's engine reads it back */
    assert_non_null(tok);
    assert_string_equal(kd_tokenizer_model(tok), "gpt2");
    assert_int_equal(kd_tokenizer_n_merges(tok), N_MERGES);
    kd_tokenizer_free(tok);
    kd_gguf_close(g);
}

/* Copy checkpoint src to dst with the tokenizer's pre-tokenizer replaced by pre ("" = none). */
static void copy_with_pre(const char *src, const char *dst, const char *pre) {
    kd_err err;
    assert_int_equal(kd_test_sh("rm -rf '%s' && cp -r '%s' '%s'", dst, src, dst), 0);
    kd_tokenizer *tok = NULL;
    assert_int_equal(kd_tokenizer_load_dir(src, &tok, &err), 0);
    const char *ms[N_MERGES];
    for (int32_t i = 0; i < N_MERGES; i++) ms[i] = kd_tokenizer_merge(tok, i, NULL);
    kd_tokenizer *t2 = NULL;
    assert_int_equal(kd_tokenizer_load_dir(src, &t2, &err), 0);
    assert_int_equal(kd_tokenizer_set_bpe(t2, pre, N_MERGES, ms, NULL, "test", &err), 0);
    assert_int_equal(kd_tokenizer_save_dir(t2, dst, &err), 0);
    kd_tokenizer_free(t2);
    kd_tokenizer_free(tok);
}

static int have_node(void) {
    char mod[700];
    snprintf(mod, sizeof mod, "%s/tests/node/node_modules/node-llama-cpp/package.json", kd_test_env("KD_SOURCE_DIR"));
    return kd_file_exists(mod) &&
           !kd_test_sh("node -e 'process.exit(+process.versions.node.split(\".\")[0] >= 20 ? 0 : 1)' 2>/dev/null");
}

static void write_strings(const char *path) {
    kd_err err;
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < N_STRINGS; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(STRINGS[i]));
    assert_int_equal(kd_json_write_atomic(path, arr, &err), 0);
    cJSON_Delete(arr);
}

/* llama.cpp's tokenization of STRINGS with the GGUF gguf (and its detokenization)
 * = the Python reference's on checkpoint dir's tokenizer.h5 = kd's; with n > 0,
 * llama.cpp also generates n tokens. */
static void compare_llama_cpp(const char *gguf, const char *dir, int n) {
    const char *tmp = kd_test_tmpdir();
    char sj[800], nj[800], rj[800], h5[800];
    kd_err err;
    snprintf(sj, sizeof sj, "%s/cmp_strings.json", tmp);
    snprintf(nj, sizeof nj, "%s/cmp_node.json", tmp);
    snprintf(rj, sizeof rj, "%s/cmp_ref.json", tmp);
    snprintf(h5, sizeof h5, "%s/tokenizer.h5", dir);
    write_strings(sj);
    assert_int_equal(kd_test_python("bpe_ref.py", "'%s' '%s' '%s'", h5, sj, rj), 0);
    int rc = kd_test_sh("cd '%s/tests/node' && node tokenize_check.mjs '%s' '%s' --n %d >'%s'",
                        kd_test_env("KD_SOURCE_DIR"), gguf, sj, n, nj);
    if (rc) kd_test_sh("cat '%s' >&2", nj);
    assert_int_equal(rc, 0);
    kd_tokenizer *tok = NULL;
    assert_int_equal(kd_tokenizer_load_dir(dir, &tok, &err), 0);
    assert_non_null(tok);
    cJSON *nd = kd_json_load(nj, &err), *ref = kd_json_load(rj, &err);
    assert_non_null(nd);
    assert_non_null(ref);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(nd, "ok")));
    fprintf(stderr, "llama.cpp %s loaded %s (pre-tokenizer %s)\n",
            cJSON_GetObjectItem(nd, "llama_cpp_release")->valuestring, gguf, kd_tokenizer_pre(tok));
    cJSON *lt = cJSON_GetObjectItem(nd, "tokenize"), *rt = cJSON_GetObjectItem(ref, "ids");
    cJSON *dt = cJSON_GetObjectItem(nd, "detokenize");
    for (int i = 0; i < N_STRINGS; i++) {
        cJSON *l = cJSON_GetArrayItem(lt, i), *r = cJSON_GetArrayItem(rt, i);
        kd_tokens x = {0};
        assert_int_equal(kd_tokenizer_encode(tok, STRINGS[i], strlen(STRINGS[i]), 0, &x, &err), 0);
        fprintf(stderr, "  %-36.36s llama.cpp %2d ids, reference %2d, kd %2zu\n", STRINGS[i], cJSON_GetArraySize(l),
                cJSON_GetArraySize(r), x.n);
        for (int k = 0; k < cJSON_GetArraySize(l) && k < cJSON_GetArraySize(r) && k < (int)x.n; k++)
            if ((int32_t)cJSON_GetArrayItem(l, k)->valuedouble != x.ids[k] ||
                (int32_t)cJSON_GetArrayItem(r, k)->valuedouble != x.ids[k]) {
                fprintf(stderr, "    first difference at %d: llama.cpp %d, reference %d, kd %d\n", k,
                        (int)cJSON_GetArrayItem(l, k)->valuedouble, (int)cJSON_GetArrayItem(r, k)->valuedouble, x.ids[k]);
                break;
            }
        assert_int_equal(cJSON_GetArraySize(l), cJSON_GetArraySize(r));
        assert_int_equal(cJSON_GetArraySize(l), (int)x.n);
        for (int k = 0; k < cJSON_GetArraySize(l); k++) {
            int32_t a = (int32_t)cJSON_GetArrayItem(l, k)->valuedouble;
            assert_int_equal(a, (int32_t)cJSON_GetArrayItem(r, k)->valuedouble);
            assert_int_equal(a, x.ids[k]);
        }
        /* llama.cpp's byte decoding; except for "qwen2" it also cleans up tokenization spaces (a space
         * before ? ! . , is dropped, as Hugging Face's clean_up_tokenization_spaces), which kd does not */
        char want[128];
        size_t w = 0;
        int clean = strcmp(kd_tokenizer_pre(tok), "qwen2") != 0;
        for (const char *c = STRINGS[i]; *c && w + 1 < sizeof want; c++)
            if (!(clean && c[0] == ' ' && c[1] && strchr("?!.,", c[1]))) want[w++] = *c;
        want[w] = '\0';
        assert_string_equal(cJSON_GetArrayItem(dt, i)->valuestring, want);
        kd_tokens_free(&x);
    }
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(nd, "generated")), n);   /* it runs the model */
    cJSON *log = cJSON_GetObjectItem(nd, "log");
    for (int i = 0; i < cJSON_GetArraySize(log); i++)
        fprintf(stderr, "  llama.cpp log: %s\n", cJSON_GetArrayItem(log, i)->valuestring);
    cJSON_Delete(nd);
    cJSON_Delete(ref);
    kd_tokenizer_free(tok);
}

static void test_train_export_llama_cpp(void **state) {
    (void)state;
    const char *tmp = kd_test_tmpdir();
    char dump[700], cfg[700], run[700], p[900], gguf[700], sj[700];
    snprintf(dump, sizeof dump, "%s/train_gpt2.h5", tmp);
    kd_dump_tokenizer t;
    make_vocab(&t, 0);
    write_dump(dump, &t, 8);
    kd_dump_tokenizer_free(&t);
    /* kd teacher info shows the tokenizer and its pre-tokenizer */
    snprintf(p, sizeof p, "%s/info.txt", tmp);
    assert_int_equal(kd_test_sh("'%s' teacher info '%s' >'%s'", kd(), dump, p), 0);
    assert_int_equal(kd_test_sh("grep -q 'tokenizer    gpt2 (pre-tokenizer gpt-2), %d pieces + %d merges' '%s'",
                                N_PIECES, N_MERGES, p), 0);
    /* kd train keeps the tokenizer in tokenizer.h5 */
    snprintf(cfg, sizeof cfg, "%s/cfg.json", tmp);
    FILE *f = fopen(cfg, "w");
    fprintf(f, "{\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
               "\"vocab_size\": %d, \"max_position_embeddings\": 64}\n", N_PIECES);
    fclose(f);
    snprintf(run, sizeof run, "%s/run.json", tmp);
    f = fopen(run, "w");
    fprintf(f, "{\"student\": \"%s\", \"train_data\": \"%s\", \"val_data\": \"%s\", \"batch_size\": 2, \"steps\": 3, "
               "\"eval_every\": 3, \"save_every\": 3, \"alpha\": 0.5}\n", cfg, dump, dump);
    fclose(f);
    assert_int_equal(kd_test_sh("env OMP_NUM_THREADS=1 '%s' train --config '%s' --out '%s/run' --quiet", kd(), run, tmp), 0);
    snprintf(p, sizeof p, "%s/run/final/tokenizer.h5", tmp);
    assert_true(kd_file_exists(p));
    kd_err err;
    kd_tokenizer *tok = NULL;
    snprintf(p, sizeof p, "%s/run/final", tmp);
    assert_int_equal(kd_tokenizer_load_dir(p, &tok, &err), 0);
    assert_non_null(tok);
    assert_string_equal(kd_tokenizer_model(tok), "gpt2");
    /* a second run starting from that checkpoint inherits it from the student */
    assert_int_equal(kd_test_sh("env OMP_NUM_THREADS=1 '%s' train --config '%s' --set student='%s/run/final' --set steps=1 "
                                "--out '%s/run2' --quiet", kd(), run, tmp, tmp), 0);
    snprintf(p, sizeof p, "%s/run2/final/tokenizer.h5", tmp);
    assert_true(kd_file_exists(p));
    /* kd quantize copies it, and tokenizes calibration text with it */
    snprintf(p, sizeof p, "%s/calib.txt", tmp);
    f = fopen(p, "w");
    for (int i = 0; i < 40; i++) fprintf(f, "Hello world, the cat in an apple. It's 123!\n");
    fclose(f);
    assert_int_equal(kd_test_sh("'%s' quantize --model '%s/run/final' --method awq --format q4_0 --calib-text '%s' --seq 16 "
                                "--out '%s/awq' >/dev/null 2>&1", kd(), tmp, p, tmp), 0);
    snprintf(p, sizeof p, "%s/awq/tokenizer.h5", tmp);
    assert_true(kd_file_exists(p));
    /* kd export writes tokenizer.ggml.model "gpt2", pre, merges, ... */
    snprintf(gguf, sizeof gguf, "%s/gpt2.gguf", tmp);
    assert_int_equal(kd_test_sh("'%s' export --model '%s/run/final' --type f32 --out '%s' 2>/dev/null", kd(), tmp, gguf), 0);
    check_gguf_keys(gguf);
    /* kd's engine: eval on the dump, run with prompt ids and with a text prompt */
    snprintf(p, sizeof p, "%s/eval.json", tmp);
    assert_int_equal(kd_test_sh("'%s' eval --model '%s' --data '%s' >'%s' 2>/dev/null", kd(), gguf, dump, p), 0);
    assert_int_equal(kd_test_sh("grep -q '\"ppl\"' '%s'", p), 0);
    snprintf(p, sizeof p, "%s/run_ids.txt", tmp);
    int32_t hello = kd_tokenizer_find(tok, "Hello", 5), world = kd_tokenizer_find(tok, "\xC4\xA0world", 7);
    assert_true(hello > 256 && world > 256);
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt-ids '%d %d' -n 4 --temp 0 >'%s' 2>/dev/null", kd(), gguf,
                                hello, world, p), 0);
    assert_int_equal(kd_test_sh("grep -q '^Hello world' '%s'", p), 0);   /* the prompt ids, decoded byte-level */
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt 'the cat' -n 4 --temp 0 2>/dev/null | grep -q '^the cat'",
                                kd(), gguf), 0);
    assert_int_equal(kd_test_sh("'%s' run --model '%s/run/final' --prompt 'the cat' -n 2 --temp 0 >/dev/null 2>&1", kd(),
                                tmp), 0);
    /* a pre-tokenizer llama.cpp does not know: kd decodes but does not encode; kd run says so and takes ids */
    char q[700], qg[700];
    snprintf(q, sizeof q, "%s/unknown", tmp);
    snprintf(qg, sizeof qg, "%s/unknown.gguf", tmp);
    snprintf(p, sizeof p, "%s/run/final", tmp);
    copy_with_pre(p, q, "no-such-pre");
    assert_int_equal(kd_test_sh("'%s' export --model '%s' --type f32 --out '%s' 2>/dev/null", kd(), q, qg), 0);
    snprintf(p, sizeof p, "%s/unknown.err", tmp);
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt 'the cat' -n 2 2>'%s' >/dev/null", kd(), qg, p), 1);
    assert_int_equal(kd_test_sh("grep -q 'gpt2.*no-such-pre.*--prompt-ids' '%s'", p), 0);
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt-ids '%d %d' -n 2 --temp 0 2>/dev/null | grep -q '^Hello world'",
                                kd(), qg, hello, world), 0);
    assert_int_equal(kd_test_sh("'%s' eval --model '%s' --data '%s' >/dev/null 2>&1", kd(), qg, dump), 0);
    /* "smollm" (digits alone, then GPT-2's split; tests/test_pretok.c checks every pre-tokenizer): kd encodes */
    snprintf(q, sizeof q, "%s/smollm", tmp);
    snprintf(qg, sizeof qg, "%s/smollm.gguf", tmp);
    snprintf(p, sizeof p, "%s/run/final", tmp);
    copy_with_pre(p, q, "smollm");
    assert_int_equal(kd_test_sh("'%s' export --model '%s' --type f32 --out '%s' 2>/dev/null", kd(), q, qg), 0);
    assert_int_equal(kd_test_sh("'%s' run --model '%s' --prompt 'the cat' -n 2 --temp 0 2>/dev/null | grep -q '^the cat'",
                                kd(), qg), 0);
    /* no pre-tokenizer in the dump: kd export writes "default" */
    char dg[700];
    snprintf(dg, sizeof dg, "%s/default.gguf", tmp);
    snprintf(p, sizeof p, "%s/run/final", tmp);
    copy_with_pre(p, q, "");
    assert_int_equal(kd_test_sh("'%s' export --model '%s' --type f32 --out '%s' 2>/dev/null", kd(), q, dg), 0);
    kd_gguf *g = kd_gguf_open(dg, &err);
    assert_non_null(g);
    const char *pre;
    assert_int_equal(kd_gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL, &err), 0);
    assert_string_equal(pre, "default");
    kd_gguf_close(g);
    kd_tokenizer_free(tok);
    if (!have_node())
        KD_TEST_MISSING("llama.cpp check: node >= 20 or tests/node/node_modules/node-llama-cpp missing "
                        "(tools/setup.sh installs them)");
    /* the "smollm" and "default" files load and run in llama.cpp too */
    snprintf(sj, sizeof sj, "%s/strings2.json", tmp);
    write_strings(sj);
    assert_int_equal(kd_test_sh("cd '%s/tests/node' && node tokenize_check.mjs '%s' '%s' --n 2 >/dev/null && "
                                "node tokenize_check.mjs '%s' '%s' --n 2 >/dev/null",
                                kd_test_env("KD_SOURCE_DIR"), qg, sj, dg, sj), 0);
    /* llama.cpp tokenizes like the Python reference and like kd, for each pre-tokenizer kd implements */
    snprintf(p, sizeof p, "%s/run/final", tmp);
    compare_llama_cpp(gguf, p, 4);
    static const char *const pres[] = {"qwen2", "llama-bpe"};
    for (int i = 0; i < 2; i++) {
        snprintf(q, sizeof q, "%s/%s", tmp, pres[i]);
        snprintf(qg, sizeof qg, "%s/%s.gguf", tmp, pres[i]);
        copy_with_pre(p, q, pres[i]);
        assert_int_equal(kd_test_sh("'%s' export --model '%s' --type f32 --out '%s' 2>/dev/null", kd(), q, qg), 0);
        compare_llama_cpp(qg, q, 0);
    }
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_map),
        cmocka_unit_test(test_dump_checkpoint_roundtrip),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_train_export_llama_cpp),
    };
    return KD_RUN_GROUP(tests, NULL, NULL);
}
