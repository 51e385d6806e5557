/*
 * test_tokenizer.c — the SPM tokenizer: llama.cpp's test vectors for the
 * Llama-2 vocabulary (tests/data/vocab), decode round trips, the aidreams llama2.c
 * tokenizer against a Python llama2.c reference (tests/py/tok_ref.py), the
 * llama2.c writer, hand-built vocabularies for the edge cases, and truncated
 * tokenizer.bin files.
 */
#include "kd_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/kd_err.h"
#include "core/kd_file.h"
#include "core/kd_rng.h"
#include "data/kd_tokenizer.h"
#include "data/kd_tokenizer_load.h"

#define SEP "\n__ggml_vocab_test__\n"

static char *shared_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", kd_test_env("KD_DATA_DIR"), rel);
    return buf;
}

static kd_tokenizer *load_or_fail(const char *rel) {
    char path[4096];
    kd_err err = {{0}};
    kd_tokenizer *tok = kd_tokenizer_load(shared_path(path, sizeof path, rel), &err);
    if (!tok) fail_msg("%s", err.msg);
    return tok;
}

/* The .inp texts: each one ends with SEP (a newline, the marker, a newline). */
typedef struct vectors {
    char *inp, *out;
    const char *text[64];
    size_t len[64];
    const char *expect[64];   /* lines of .out */
    int n;
} vectors;

static void load_vectors(vectors *v) {
    char path[4096];
    kd_err err = {{0}};
    size_t n;
    v->inp = kd_read_file(shared_path(path, sizeof path, "vocab/ggml-vocab-llama-spm.gguf.inp"), &n, &err);
    v->out = kd_read_file(shared_path(path, sizeof path, "vocab/ggml-vocab-llama-spm.gguf.out"), NULL, &err);
    if (!v->inp || !v->out) fail_msg("%s", err.msg);
    v->n = 0;
    char *p = v->inp, *hit;
    while ((hit = strstr(p, SEP)) && v->n < 64) {
        v->text[v->n] = p;
        v->len[v->n] = (size_t)(hit - p);
        *hit = '\0';
        v->n++;
        p = hit + strlen(SEP);
    }
    assert_int_equal(p - v->inp, (long)n);   /* the file ends with a separator */
    int lines = 0;
    for (char *q = v->out; lines < 64 && *q;) {
        v->expect[lines++] = q;
        char *nl = strchr(q, '\n');
        if (!nl) break;
        *nl = '\0';
        q = nl + 1;
    }
    assert_int_equal(lines, v->n);
}

static void test_llama_spm_vectors(void **state) {
    (void)state;
    kd_tokenizer *tok = load_or_fail("vocab/ggml-vocab-llama-spm.gguf");
    vectors v;
    load_vectors(&v);
    assert_int_equal(v.n, 46);
    int bad = 0;
    for (int i = 0; i < v.n; i++) {
        kd_tokens ids = {0};
        kd_err err = {{0}};
        /* llama.cpp's test-tokenizer-0: no BOS/EOS, no special parsing */
        if (kd_tokenizer_encode(tok, v.text[i], v.len[i], 0, &ids, &err) < 0) fail_msg("%s", err.msg);
        char got[8192];
        size_t w = 0;
        got[0] = '\0';
        for (size_t k = 0; k < ids.n && w + 16 < sizeof got; k++)
            w += (size_t)snprintf(got + w, sizeof got - w, " %d", ids.ids[k]);
        if (strcmp(got, v.expect[i])) {
            fprintf(stderr, "case %d ('%s'):\n  got     '%s'\n  expected '%s'\n", i, v.text[i], got, v.expect[i]);
            bad++;
        }
        kd_tokens_free(&ids);
    }
    assert_int_equal(bad, 0);
    free(v.inp);
    free(v.out);
    kd_tokenizer_free(tok);
}

static void check_roundtrip(const kd_tokenizer *tok, const char *text, size_t len, unsigned enc_opts) {
    kd_tokens ids = {0};
    kd_err err = {{0}};
    if (kd_tokenizer_encode(tok, text, len, enc_opts, &ids, &err) < 0) fail_msg("%s", err.msg);
    char *back;
    size_t blen;
    if (kd_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, &err) < 0) fail_msg("%s", err.msg);
    if (blen != len || memcmp(back, text, len)) fail_msg("round trip of '%s' gave '%s'", text, back);
    free(back);
    kd_tokens_free(&ids);
}

static void test_llama_spm_roundtrip(void **state) {
    (void)state;
    kd_tokenizer *tok = load_or_fail("vocab/ggml-vocab-llama-spm.gguf");
    vectors v;
    load_vectors(&v);
    /* Every input is valid UTF-8 without control-token text, so all round-trip,
     * with and without BOS. */
    for (int i = 0; i < v.n; i++) {
        check_roundtrip(tok, v.text[i], v.len[i], 0);
        check_roundtrip(tok, v.text[i], v.len[i], KD_TOK_ENC_ADD_SPECIAL);
    }
    /* Speed on a 32k vocabulary: all inputs joined, 100 times over. */
    size_t total = 0;
    for (int i = 0; i < v.n; i++) total += v.len[i] + 1;
    char *big = malloc(total * 100 + 1);
    size_t w = 0;
    for (int r = 0; r < 100; r++)
        for (int i = 0; i < v.n; i++) {
            memcpy(big + w, v.text[i], v.len[i]);
            w += v.len[i];
            big[w++] = '\n';
        }
    kd_tokens ids = {0};
    kd_err err = {{0}};
    clock_t t0 = clock();
    if (kd_tokenizer_encode(tok, big, w, 0, &ids, &err) < 0) fail_msg("%s", err.msg);
    double s = (double)(clock() - t0) / CLOCKS_PER_SEC;
    fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s (%.1f MB/s)\n", w, ids.n, s, w / 1e6 / (s + 1e-9));
    check_roundtrip(tok, big, w, 0);
    kd_tokens_free(&ids);
    free(big);
    free(v.inp);
    free(v.out);
    kd_tokenizer_free(tok);
}

static void test_llama_spm_vocab(void **state) {
    (void)state;
    kd_tokenizer *tok = load_or_fail("vocab/ggml-vocab-llama-spm.gguf");
    assert_int_equal(kd_tokenizer_n_vocab(tok), 32000);
    assert_int_equal(kd_tokenizer_bos(tok), 1);
    assert_int_equal(kd_tokenizer_eos(tok), 2);
    assert_int_equal(kd_tokenizer_unk(tok), 0);
    assert_true(kd_tokenizer_flags(tok) & KD_TOK_ADD_BOS);
    assert_true(kd_tokenizer_flags(tok) & KD_TOK_ADD_SPACE_PREFIX);
    assert_false(kd_tokenizer_flags(tok) & KD_TOK_ADD_EOS);
    assert_int_equal(kd_tokenizer_type(tok, 0), KD_TOKEN_UNKNOWN);
    assert_int_equal(kd_tokenizer_type(tok, 1), KD_TOKEN_CONTROL);
    assert_string_equal(kd_tokenizer_piece(tok, 1, NULL), "<s>");
    for (int b = 0; b < 256; b++) assert_int_equal(kd_tokenizer_type(tok, 3 + b), KD_TOKEN_BYTE);
    assert_int_equal(kd_tokenizer_find(tok, "<0x0A>", 6), 13);
    assert_int_equal(kd_tokenizer_find(tok, "\xE2\x96\x81Hello", 8), 15043);

    /* BOS only with ADD_SPECIAL; special texts only with PARSE_SPECIAL. */
    kd_tokens ids = {0};
    kd_err err = {{0}};
    assert_int_equal(kd_tokenizer_encode(tok, "Hello", 5, KD_TOK_ENC_ADD_SPECIAL, &ids, &err), 0);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], 1);
    assert_int_equal(ids.ids[1], 15043);
    ids.n = 0;
    assert_int_equal(kd_tokenizer_encode(tok, "<s>Hello", 8, KD_TOK_ENC_PARSE_SPECIAL, &ids, &err), 0);
    assert_int_equal(ids.n, 2);   /* <s>, then "▁Hello": the space prefix follows a special token */
    assert_int_equal(ids.ids[0], 1);
    assert_int_equal(ids.ids[1], 15043);
    ids.n = 0;
    assert_int_equal(kd_tokenizer_encode(tok, "<s>", 3, 0, &ids, &err), 0);
    for (size_t i = 0; i < ids.n; i++) assert_int_not_equal(ids.ids[i], 1);

    /* Decoding options. */
    int32_t seq[] = {1, 15043, 2};
    char *text;
    size_t len;
    assert_int_equal(kd_tokenizer_decode(tok, seq, 3, 0, &text, &len, &err), 0);
    assert_string_equal(text, "Hello");
    free(text);
    assert_int_equal(kd_tokenizer_decode(tok, seq, 3, KD_TOK_DEC_SPECIAL | KD_TOK_DEC_KEEP_SPACE, &text, &len, &err),
                     0);
    assert_string_equal(text, "<s> Hello</s>");
    free(text);
    int32_t bad[] = {15043, 32000};
    assert_int_equal(kd_tokenizer_decode(tok, bad, 2, 0, &text, &len, &err), -1);
    assert_non_null(strstr(err.msg, "32000"));
    char one[16];
    assert_int_equal(kd_tokenizer_decode_token(tok, 13, 0, one, sizeof one, &err), 1);
    assert_int_equal(one[0], '\n');
    assert_int_equal(kd_tokenizer_decode_token(tok, 15043, 0, one, 3, &err), -1);
    kd_tokens_free(&ids);
    kd_tokenizer_free(tok);
}

/* Random bytes (invalid UTF-8, spaces, specials) always encode; random valid
 * UTF-8 without U+2581 round-trips exactly. */
static void test_llama_spm_random(void **state) {
    (void)state;
    kd_tokenizer *tok = load_or_fail("vocab/ggml-vocab-llama-spm.gguf");
    static const char alphabet[] = {' ', ' ', 'a', 'e', 't', '\n', '<', 's', '>', '\xC3', '\xA9', '\xE2', '\x96',
                                    '\x81', '\xF0', '\x9F', '\x80', '\xFF', '\0'};
    kd_rng r;
    kd_rng_seed(&r, 7);
    for (int it = 0; it < 2000; it++) {
        size_t n = (size_t)kd_rng_below(&r, 40);
        char *t = malloc(n ? n : 1);   /* exact size */
        for (size_t k = 0; k < n; k++)
            t[k] = kd_rng_below(&r, 4) ? alphabet[kd_rng_below(&r, sizeof alphabet)] : (char)kd_rng_below(&r, 256);
        kd_tokens ids = {0};
        kd_err err = {{0}};
        if (kd_tokenizer_encode(tok, t, n, KD_TOK_ENC_ADD_SPECIAL | KD_TOK_ENC_PARSE_SPECIAL, &ids, &err) < 0)
            fail_msg("%s", err.msg);
        char *back;
        assert_int_equal(kd_tokenizer_decode(tok, ids.ids, ids.n, KD_TOK_DEC_SPECIAL, &back, NULL, &err), 0);
        free(back);
        kd_tokens_free(&ids);
        free(t);
    }
    static const uint32_t cps[] = {' ', ' ', 'a', 'Z', '0', '\n', '\t', 0xE9, 0x416, 0x4E2D, 0x1F600, 0x2580, 0x7F};
    for (int it = 0; it < 2000; it++) {
        char t[256];
        size_t n = 0, m = (size_t)kd_rng_below(&r, 30);
        for (size_t k = 0; k < m; k++) {
            uint32_t c = cps[kd_rng_below(&r, sizeof cps / sizeof cps[0])];
            if (c < 0x80) t[n++] = (char)c;
            else if (c < 0x800) t[n++] = (char)(0xC0 | c >> 6), t[n++] = (char)(0x80 | (c & 63));
            else if (c < 0x10000)
                t[n++] = (char)(0xE0 | c >> 12), t[n++] = (char)(0x80 | ((c >> 6) & 63)), t[n++] = (char)(0x80 | (c & 63));
            else
                t[n++] = (char)(0xF0 | c >> 18), t[n++] = (char)(0x80 | ((c >> 12) & 63)),
                t[n++] = (char)(0x80 | ((c >> 6) & 63)), t[n++] = (char)(0x80 | (c & 63));
        }
        t[n] = '\0';
        check_roundtrip(tok, t, n, it & 1 ? KD_TOK_ENC_ADD_SPECIAL : 0);
    }
    kd_tokenizer_free(tok);
}

/* ---- aidreams tok512.bin (llama2.c format) ------------------------------------ */

static const char *const SAMPLES[] = {
    "The dreams whisper softly in the night.",
    "the",
    "In a world where machines dream, the light unfolds like a memory.",
    "  two  spaces, then\nnewline and\ttab",
    "caf\xC3\xA9 na\xC3\xAFve \xF0\x9F\x98\x80 emoji",
    " leading space",
    "\"Quoted\" words, commas; and: colons!",
    "x",
};
#define N_SAMPLES (sizeof SAMPLES / sizeof SAMPLES[0])

static void test_tok512(void **state) {
    (void)state;
    kd_tokenizer *tok = load_or_fail("models/aidreams260K/tok512.bin");
    assert_int_equal(kd_tokenizer_n_vocab(tok), 512);
    assert_string_equal(kd_tokenizer_piece(tok, 0, NULL), "<unk>");
    assert_string_equal(kd_tokenizer_piece(tok, 1, NULL), "<s>");
    assert_string_equal(kd_tokenizer_piece(tok, 2, NULL), "</s>");
    assert_int_equal(kd_tokenizer_type(tok, 1), KD_TOKEN_CONTROL);
    assert_int_equal(kd_tokenizer_type(tok, 3), KD_TOKEN_BYTE);
    assert_string_equal(kd_tokenizer_piece(tok, 3 + 0x41, NULL), "<0x41>");
    assert_int_equal(kd_tokenizer_type(tok, 259), KD_TOKEN_NORMAL);
    /* spaces are "▁" internally */
    assert_string_equal(kd_tokenizer_piece(tok, 262, NULL), "\xE2\x96\x81" "a");   /* " a" in the file */
    assert_int_equal(kd_tokenizer_bos(tok), 1);
    assert_true(kd_tokenizer_flags(tok) & KD_TOK_ADD_BOS);

    for (size_t i = 0; i < N_SAMPLES; i++) {
        check_roundtrip(tok, SAMPLES[i], strlen(SAMPLES[i]), 0);
        check_roundtrip(tok, SAMPLES[i], strlen(SAMPLES[i]), KD_TOK_ENC_ADD_SPECIAL);
    }
    /* Common words are single tokens: "the" → "▁the", "whispers" → "▁whispers". */
    const char *words[] = {"the", "whispers", "like", "and"};
    for (size_t i = 0; i < 4; i++) {
        kd_tokens ids = {0};
        kd_err err = {{0}};
        assert_int_equal(kd_tokenizer_encode(tok, words[i], strlen(words[i]), KD_TOK_ENC_ADD_SPECIAL, &ids, &err), 0);
        assert_int_equal(ids.n, 2);
        assert_int_equal(ids.ids[0], 1);
        const char *p = kd_tokenizer_piece(tok, ids.ids[1], NULL);
        assert_memory_equal(p, "\xE2\x96\x81", 3);
        assert_string_equal(p + 3, words[i]);
        kd_tokens_free(&ids);
    }
    /* A character outside the vocabulary falls back to its UTF-8 bytes (id = byte + 3). */
    kd_tokens ids = {0};
    kd_err err = {{0}};
    assert_int_equal(kd_tokenizer_encode(tok, "\xF0\x9F\x98\x80", 4, 0, &ids, &err), 0);
    assert_int_equal(ids.n, 5);
    assert_int_equal(ids.ids[1], 0xF0 + 3);
    assert_int_equal(ids.ids[4], 0x80 + 3);
    kd_tokens_free(&ids);
    kd_tokenizer_free(tok);
}

/* kd's encoder on the llama2.c vocabulary equals llama2.c's own algorithm. */
static void test_tok512_matches_reference(void **state) {
    (void)state;
    kd_tokenizer *tok = load_or_fail("models/aidreams260K/tok512.bin");
    char in[4096], out[4096], bin[4096];
    snprintf(in, sizeof in, "%s/ref_in.bin", kd_test_tmpdir());
    snprintf(out, sizeof out, "%s/ref_out.txt", kd_test_tmpdir());
    shared_path(bin, sizeof bin, "models/aidreams260K/tok512.bin");
    for (int bos = 0; bos < 2; bos++) {
        FILE *f = fopen(in, "wb");
        assert_non_null(f);
        for (size_t i = 0; i < N_SAMPLES; i++) {
            if (i) fputc('\0', f);
            fputs(SAMPLES[i], f);
        }
        fclose(f);
        assert_int_equal(kd_test_python("tok_ref.py", "'%s' '%s' '%s' %s", bin, in, out, bos ? "--bos" : ""), 0);
        char *ref = kd_read_file(out, NULL, NULL);
        assert_non_null(ref);
        char *line = ref;
        for (size_t i = 0; i < N_SAMPLES; i++) {
            char *nl = strchr(line, '\n');
            assert_non_null(nl);
            *nl = '\0';
            kd_tokens ids = {0};
            kd_err err = {{0}};
            if (kd_tokenizer_encode(tok, SAMPLES[i], strlen(SAMPLES[i]), bos ? KD_TOK_ENC_ADD_SPECIAL : 0, &ids,
                                    &err) < 0)
                fail_msg("%s", err.msg);
            char got[4096];
            size_t w = 0;
            got[0] = '\0';
            for (size_t k = 0; k < ids.n; k++)
                w += (size_t)snprintf(got + w, sizeof got - w, "%s%d", k ? " " : "", ids.ids[k]);
            if (strcmp(got, line)) fail_msg("'%s': kd '%s', reference '%s'", SAMPLES[i], got, line);
            kd_tokens_free(&ids);
            line = nl + 1;
        }
        free(ref);
    }
    kd_tokenizer_free(tok);
}

/* Writing tok512 back as llama2.c reproduces the original file byte for byte. */
static void test_llama2c_write(void **state) {
    (void)state;
    char src[4096], dst[4096];
    shared_path(src, sizeof src, "models/aidreams260K/tok512.bin");
    snprintf(dst, sizeof dst, "%s/tok_copy.bin", kd_test_tmpdir());
    kd_err err = {{0}};
    kd_tokenizer *tok = kd_tokenizer_load_llama2c(src, &err);
    assert_non_null(tok);
    if (kd_tokenizer_write_llama2c(tok, dst, &err) < 0) fail_msg("%s", err.msg);
    size_t a_len, b_len;
    char *a = kd_read_file(src, &a_len, &err), *b = kd_read_file(dst, &b_len, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a_len, b_len);
    assert_memory_equal(a, b, a_len);
    free(a);
    free(b);
    kd_tokenizer_free(tok);

    /* The Llama-2 GGUF vocabulary survives a trip through llama2.c format. */
    char gg[4096];
    tok = load_or_fail("vocab/ggml-vocab-llama-spm.gguf");
    shared_path(gg, sizeof gg, "vocab/ggml-vocab-llama-spm.gguf");
    if (kd_tokenizer_write_llama2c(tok, dst, &err) < 0) fail_msg("%s", err.msg);
    kd_tokenizer *back = kd_tokenizer_load(dst, &err);
    if (!back) fail_msg("%s", err.msg);
    assert_int_equal(kd_tokenizer_n_vocab(back), 32000);
    for (int32_t i = 0; i < 32000; i++) {
        assert_string_equal(kd_tokenizer_piece(back, i, NULL), kd_tokenizer_piece(tok, i, NULL));
        assert_true(kd_tokenizer_score(back, i) == kd_tokenizer_score(tok, i));
        assert_int_equal(kd_tokenizer_type(back, i), kd_tokenizer_type(tok, i));
    }
    kd_tokenizer_free(back);
    kd_tokenizer_free(tok);
}

/* Truncated and corrupted tokenizer.bin files fail cleanly. */
static void test_llama2c_hostile(void **state) {
    (void)state;
    char src[4096];
    kd_err err = {{0}};
    size_t len;
    unsigned char *bytes = (unsigned char *)kd_read_file(shared_path(src, sizeof src, "models/aidreams260K/tok512.bin"),
                                                         &len, &err);
    assert_non_null(bytes);
    int ok = 0;
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *b = malloc(cut ? cut : 1);   /* exact size: ASan sees any overread */
        memcpy(b, bytes, cut);
        err.msg[0] = '\0';
        kd_tokenizer *tok = kd_tokenizer_parse_llama2c(b, cut, "cut.bin", &err);
        if (tok) ok++;
        else assert_true(strlen(err.msg) > 0);
        kd_tokenizer_free(tok);
        free(b);
    }
    assert_true(ok > 0 && ok < 512);   /* only cuts at record boundaries parse */
    unsigned char *b = malloc(len);
    memcpy(b, bytes, len);
    int32_t v = -5;
    memcpy(b + 4 + 4, &v, 4);   /* token 0's length */
    assert_null(kd_tokenizer_parse_llama2c(b, len, "neg.bin", &err));
    assert_non_null(strstr(err.msg, "token 0: length -5"));
    v = 11;
    memcpy(b + 4 + 4, &v, 4);
    assert_null(kd_tokenizer_parse_llama2c(b, len, "long.bin", &err));
    assert_non_null(strstr(err.msg, "max_token_length"));
    free(b);
    free(bytes);
}

/* ---- hand-built vocabularies --------------------------------------------------- */

#define SP "\xE2\x96\x81"

static void test_new_edge_cases(void **state) {
    (void)state;
    kd_err err = {{0}};
    const char *pieces[] = {"<unk>", "<s>", "</s>", "<0x61>", "a", "b", SP, SP "a", "ab", "<tool>", "<ctl>"};
    float scores[] = {0, 0, 0, 0, -1, -2, -3, -4, -0.5f, 0, 0};
    int32_t types[] = {2, 3, 3, 6, 1, 1, 1, 1, 1, 4, 3};
    kd_tokenizer *tok = kd_tokenizer_new(11, pieces, scores, types, 1, 2, 0, KD_TOK_ADD_SPACE_PREFIX, &err);
    if (!tok) fail_msg("%s", err.msg);
    kd_tokens ids = {0};
    /* "ab" merges first (score -0.5 beats "▁a" at -4), ties none. */
    assert_int_equal(kd_tokenizer_encode(tok, "ab", 2, 0, &ids, &err), 0);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], 6);
    assert_int_equal(ids.ids[1], 8);
    /* A byte with no piece and no <0xXX> token: a clean error, out unchanged. */
    ids.n = 0;
    assert_int_equal(kd_tokenizer_encode(tok, "az", 2, 0, &ids, &err), -1);
    assert_non_null(strstr(err.msg, "0x7A"));
    assert_int_equal(ids.n, 0);
    /* USER_DEFINED texts are always split out; CONTROL only with PARSE_SPECIAL. */
    assert_int_equal(kd_tokenizer_encode(tok, "a<tool>b", 8, 0, &ids, &err), 0);
    assert_int_equal(ids.n, 4);   /* ▁a <tool> ▁ b: the prefix follows a special token */
    assert_int_equal(ids.ids[0], 7);
    assert_int_equal(ids.ids[1], 9);
    assert_int_equal(ids.ids[2], 6);
    assert_int_equal(ids.ids[3], 5);
    char *text;
    size_t len;
    assert_int_equal(kd_tokenizer_decode(tok, ids.ids, ids.n, 0, &text, &len, &err), 0);
    assert_string_equal(text, "a<tool> b");
    free(text);
    kd_tokens_free(&ids);
    kd_tokenizer_free(tok);

    /* Construction errors name the problem. */
    const char *dup[] = {"a", "b", "a"};
    assert_null(kd_tokenizer_new(3, dup, NULL, NULL, -1, -1, -1, 0, &err));
    assert_non_null(strstr(err.msg, "token 2"));
    int32_t bad_type[] = {1, 9, 1};
    const char *three[] = {"a", "b", "c"};
    assert_null(kd_tokenizer_new(3, three, NULL, bad_type, -1, -1, -1, 0, &err));
    assert_non_null(strstr(err.msg, "type 9"));
    int32_t byte_type[] = {1, 6, 1};
    assert_null(kd_tokenizer_new(3, three, NULL, byte_type, -1, -1, -1, 0, &err));
    assert_non_null(strstr(err.msg, "BYTE"));
    assert_null(kd_tokenizer_new(3, three, NULL, NULL, 3, -1, -1, 0, &err));
    assert_non_null(strstr(err.msg, "BOS"));
    assert_null(kd_tokenizer_new(0, three, NULL, NULL, -1, -1, -1, 0, &err));
    /* Without the space prefix, an empty vocabulary of merges: one token per char. */
    tok = kd_tokenizer_new(3, three, NULL, NULL, -1, -1, -1, 0, &err);
    assert_non_null(tok);
    assert_int_equal(kd_tokenizer_encode(tok, "cab", 3, KD_TOK_ENC_ADD_SPECIAL, &ids, &err), 0);
    assert_int_equal(ids.n, 3);
    assert_int_equal(ids.ids[0], 2);
    assert_int_equal(ids.ids[2], 1);
    kd_tokens_free(&ids);
    assert_int_equal(kd_tokenizer_encode(tok, "", 0, KD_TOK_ENC_ADD_SPECIAL, &ids, &err), 0);
    assert_int_equal(ids.n, 0);
    kd_tokenizer_free(tok);
}

/* `kd tokenize` prints one id per line; --no-bos drops BOS; bad usage exits 2. */
static void test_cli(void **state) {
    (void)state;
    const char *kd = kd_test_env("KD_BIN"), *dir = kd_test_tmpdir();
    char tok[4096], gg[4096];
    shared_path(tok, sizeof tok, "models/aidreams260K/tok512.bin");
    shared_path(gg, sizeof gg, "vocab/ggml-vocab-llama-spm.gguf");
    assert_int_equal(kd_test_sh("'%s' tokenize --tokenizer '%s' --text 'the' > '%s/a.txt'", kd, tok, dir), 0);
    assert_int_equal(kd_test_sh("printf ' Hello, world!' > '%s/in.txt'", dir), 0);
    assert_int_equal(kd_test_sh("'%s' tokenize --tokenizer '%s' --file '%s/in.txt' --no-bos > '%s/b.txt'", kd, gg, dir,
                                dir),
                     0);
    char path[4200];
    snprintf(path, sizeof path, "%s/a.txt", dir);
    char *a = kd_read_file(path, NULL, NULL);
    snprintf(path, sizeof path, "%s/b.txt", dir);
    char *b = kd_read_file(path, NULL, NULL);
    assert_non_null(a);
    assert_non_null(b);
    kd_err err = {{0}};
    kd_tokenizer *t = kd_tokenizer_load(tok, &err);
    assert_non_null(t);
    char want[64];
    snprintf(want, sizeof want, "1\n%d\n", kd_tokenizer_find(t, "\xE2\x96\x81the", 6));
    assert_string_equal(a, want);
    assert_string_equal(b, "29871\n15043\n29892\n3186\n29991\n");   /* the .out line of " Hello, world!" */
    kd_tokenizer_free(t);
    free(a);
    free(b);
    assert_int_equal(kd_test_sh("'%s' tokenize --help > /dev/null", kd), 0);
    assert_int_equal(kd_test_sh("'%s' tokenize --text x 2> /dev/null", kd), 2);
    assert_int_equal(kd_test_sh("'%s' tokenize --tokenizer /nonexistent --text x 2> /dev/null", kd), 1);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_llama_spm_vectors),
    cmocka_unit_test(test_llama_spm_roundtrip),
    cmocka_unit_test(test_llama_spm_vocab),
    cmocka_unit_test(test_llama_spm_random),
    cmocka_unit_test(test_tok512),
    cmocka_unit_test(test_tok512_matches_reference),
    cmocka_unit_test(test_llama2c_write),
    cmocka_unit_test(test_llama2c_hostile),
    cmocka_unit_test(test_new_edge_cases),
    cmocka_unit_test(test_cli),
};
KD_TEST_MAIN(tests)
