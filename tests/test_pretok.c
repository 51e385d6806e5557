/*
 * test_pretok.c — byte-level BPE pre-tokenizers against llama.cpp's own
 * tokenization (fixtures in tests/data/vocab, README.md there):
 *   - llama.cpp's test vectors (.inp/.out) for each of its BPE test
 *     vocabularies (reduced copies that give llama.cpp the same ids): kd's ids
 *     equal the .out ids, text by text;
 *   - the sweep: llama.cpp's ids (node-llama-cpp, recorded by
 *     tools/vocab_fixtures.py) for llama.cpp's texts and extra ones (scripts,
 *     digits, emoji, runs of spaces) with the Llama 3 vocabulary under every
 *     tokenizer.ggml.pre name llama.cpp knows: kd's ids equal them, and every
 *     name kd knows is in the sweep (the raw-UTF-8 "whitespace" split on the
 *     texts without whitespace: llama.cpp aborts on the others);
 *   - unknown names are refused, the split keeps every byte, invalid UTF-8 is
 *     repaired as llama.cpp does.
 */
#include "kd_test.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_err.h"
#include "core/kd_file.h"
#include "data/kd_pretok.h"
#include "data/kd_tokenizer.h"
#include "data/kd_tokenizer_bpe.h"
#include "data/kd_tokenizer_load.h"

#define SEP "\n__ggml_vocab_test__\n"

static const char *const OFFICIAL[] = {"gpt-2", "llama-bpe", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder",
                                       "falcon", "mpt", "starcoder", "refact", "command-r", "gemma-4"};
#define N_OFFICIAL (sizeof OFFICIAL / sizeof *OFFICIAL)

/* tests/data/vocab/REL.xz decompressed into the test's temporary directory; returns that path. */
static const char *unxz(const char *rel, char *out, size_t n) {
    snprintf(out, n, "%s/%s", kd_test_tmpdir(), rel);
    if (kd_test_sh("'%s' -c \"import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())\" "
                   "'%s/vocab/%s.xz' '%s'",
                   kd_test_env("KD_PYTHON"), kd_test_env("KD_DATA_DIR"), rel, out))
        fail_msg("cannot decompress tests/data/vocab/%s.xz", rel);
    return out;
}

static char *read_fixture(const char *rel, size_t *n) {
    char path[4096];
    kd_err err = {{0}};
    snprintf(path, sizeof path, "%s/vocab/%s", kd_test_env("KD_DATA_DIR"), rel);
    char *s = kd_read_file(path, n, &err);
    if (!s) fail_msg("%s", err.msg);
    return s;
}

/* Encode text[0..n) without BOS/EOS and without parsing special texts (llama.cpp's test-tokenizer-0). */
static void encode(const kd_tokenizer *tok, const char *text, size_t n, kd_tokens *t) {
    kd_err err = {{0}};
    t->n = 0;
    if (kd_tokenizer_encode(tok, text, n, 0, t, &err) < 0) fail_msg("%s", err.msg);
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

static void test_official_vectors(void **state) {
    (void)state;
    int types = 0, total = 0;
    for (size_t v = 0; v < N_OFFICIAL; v++) {
        char rel[256], path[4096];
        size_t ni;
        snprintf(rel, sizeof rel, "ggml-vocab-%s.gguf", OFFICIAL[v]);
        kd_err err = {{0}};
        kd_tokenizer *tok = kd_tokenizer_load(unxz(rel, path, sizeof path), &err);
        if (!tok) fail_msg("%s", err.msg);
        assert_string_equal(kd_tokenizer_model(tok), "gpt2");
        snprintf(rel, sizeof rel, "ggml-vocab-%s.gguf.inp", OFFICIAL[v]);
        char *inp = read_fixture(rel, &ni);
        snprintf(rel, sizeof rel, "ggml-vocab-%s.gguf.out", OFFICIAL[v]);
        char *out = read_fixture(rel, NULL);
        char *p = inp, *o = out, *hit;
        kd_tokens t = {0};
        int n = 0, bad = 0;
        /* texts separated by SEP, the last one ended by SEP or the end of the file (llama.cpp's reading) */
        while (p < inp + ni) {
            hit = strstr(p, SEP);
            if (!hit) hit = inp + ni;
            char *eol = strchr(o, '\n');
            assert_non_null(eol);
            *eol = '\0';
            encode(tok, p, (size_t)(hit - p), &t);
            int32_t want[512];
            size_t nw = 0;
            for (char *q = o, *e; nw < 512; q = e) {
                long id = strtol(q, &e, 10);
                if (e == q) break;
                want[nw++] = (int32_t)id;
            }
            if (nw != t.n || memcmp(want, t.ids, nw * sizeof *want)) {
                fprintf(stderr, "%s: vector %d ('%.*s') differs\n", OFFICIAL[v], n, (int)(hit - p < 60 ? hit - p : 60), p);
                print_ids("llama.cpp", want, nw);
                print_ids("kd", t.ids, t.n);
                bad++;
            }
            n++;
            p = hit + (hit < inp + ni ? strlen(SEP) : 0);
            o = eol + 1;
        }
        assert_int_equal(*o, '\0');   /* as many .out lines as texts */
        fprintf(stderr, "%-15s pre %-15s %2d vectors, %2d equal\n", OFFICIAL[v], kd_tokenizer_pre(tok), n, n - bad);
        assert_int_equal(bad, 0);
        assert_true(n >= 40);
        types++;
        total += n;
        kd_tokens_free(&t);
        free(inp);
        free(out);
        kd_tokenizer_free(tok);
    }
    fprintf(stderr, "official vectors: %d vocabularies, %d texts, all equal\n", types, total);
}

/* A copy of base with tokenizer.ggml.pre = pre (same vocabulary and merges). */
static void set_pre(kd_tokenizer *tok, const char *pre) {
    int32_t m = kd_tokenizer_n_merges(tok);
    char **ms = malloc((size_t)m * sizeof *ms);
    size_t *ls = malloc((size_t)m * sizeof *ls);
    assert_non_null(ms);
    assert_non_null(ls);
    for (int32_t i = 0; i < m; i++) {
        const char *s = kd_tokenizer_merge(tok, i, &ls[i]);
        ms[i] = malloc(ls[i] + 1);
        memcpy(ms[i], s, ls[i] + 1);
    }
    kd_err err = {{0}};
    if (kd_tokenizer_set_bpe(tok, pre, m, (const char *const *)ms, ls, "sweep", &err) < 0) fail_msg("%s", err.msg);
    for (int32_t i = 0; i < m; i++) free(ms[i]);
    free(ms);
    free(ls);
}

static void test_sweep(void **state) {
    (void)state;
    char path[4096];
    size_t n;
    char *raw = kd_read_file(unxz("pre-sweep.json", path, sizeof path), &n, NULL);
    assert_non_null(raw);
    cJSON *j = cJSON_Parse(raw);
    free(raw);
    assert_non_null(j);
    const char *vocab = cJSON_GetObjectItem(j, "vocab")->valuestring;
    char rel[256];
    snprintf(rel, sizeof rel, "%.*s", (int)(strlen(vocab) - 3), vocab);   /* without .xz */
    kd_err err = {{0}};
    kd_tokenizer *tok = kd_tokenizer_load(unxz(rel, path, sizeof path), &err);
    if (!tok) fail_msg("%s", err.msg);
    cJSON *texts = cJSON_GetObjectItem(j, "texts"), *ids = cJSON_GetObjectItem(j, "ids");
    cJSON *failed = cJSON_GetObjectItem(j, "failed");
    int nt = cJSON_GetArraySize(texts), names = 0, bad = 0;
    char seen_types[64][24];
    int n_types = 0;
    kd_tokens t = {0};
    for (cJSON *e = ids->child; e; e = e->next) {
        set_pre(tok, e->string);
        assert_string_equal(kd_tokenizer_pre(tok), e->string);
        assert_int_equal(cJSON_GetArraySize(e), nt);
        int wrong = 0, compared = 0;
        for (int i = 0; i < nt; i++) {
            const char *s = cJSON_GetArrayItem(texts, i)->valuestring;
            cJSON *want = cJSON_GetArrayItem(e, i);
            if (cJSON_IsNull(want)) continue;   /* llama.cpp aborts on this text with this split (README.md) */
            compared++;
            encode(tok, s, strlen(s), &t);
            int same = (size_t)cJSON_GetArraySize(want) == t.n;
            for (size_t k = 0; same && k < t.n; k++) same = cJSON_GetArrayItem(want, (int)k)->valueint == t.ids[k];
            if (!same && wrong++ < 3) {
                int32_t w[1024];
                size_t nw = 0;
                for (cJSON *x = want->child; x && nw < 1024; x = x->next) w[nw++] = x->valueint;
                fprintf(stderr, "pre %s: text %d ('%.50s') differs\n", e->string, i, s);
                print_ids("llama.cpp", w, nw);
                print_ids("kd", t.ids, t.n);
            }
        }
        kd_pretok *p = kd_pretok_new(e->string, &err);
        if (!p) fail_msg("%s", err.msg);
        int k = 0;
        while (k < n_types && strcmp(seen_types[k], kd_pretok_type(p))) k++;
        if (k == n_types && n_types < 64) snprintf(seen_types[n_types++], sizeof seen_types[0], "%s", kd_pretok_type(p));
        kd_pretok_free(p);
        if (compared < nt) fprintf(stderr, "sweep: '%s' compared on the %d texts without whitespace\n", e->string, compared);
        assert_true(compared > 0);
        bad += wrong > 0;
        names++;
    }
    /* every name kd knows was swept (or llama.cpp itself failed on it) */
    const char *const *all;
    size_t na = kd_pretok_names(&all);
    for (size_t i = 0; i < na; i++)
        if (!cJSON_GetObjectItem(ids, all[i]) && !cJSON_GetObjectItem(failed, all[i]))
            fail_msg("pre-tokenizer '%s' is not in the sweep: rerun tools/vocab_fixtures.py", all[i]);
    for (cJSON *e = failed ? failed->child : NULL; e; e = e->next)
        fprintf(stderr, "sweep: llama.cpp fails on '%s' with some texts (%s)\n", e->string, e->valuestring);
    fprintf(stderr, "sweep: %d names (%d pre-tokenizer types) x %d texts, %d names differ\n", names, n_types, nt, bad);
    assert_int_equal(bad, 0);
    assert_true(n_types >= 10);
    kd_tokens_free(&t);
    kd_tokenizer_free(tok);
    cJSON_Delete(j);
}

static void test_split_basics(void **state) {
    (void)state;
    kd_err err = {{0}};
    assert_null(kd_pretok_new("no-such-pre", &err));
    assert_non_null(strstr(err.msg, "no-such-pre"));
    assert_false(kd_pretok_known("no-such-pre"));
    assert_true(kd_pretok_known(""));   /* llama.cpp's "default" */
    kd_pretok *p = kd_pretok_new("llama-bpe", &err);
    assert_non_null(p);
    assert_string_equal(kd_pretok_type(p), "LLAMA3");
    assert_true(kd_pretok_flags(p) & KD_PRETOK_IGNORE_MERGES);
    kd_words w = {0};
    /* words cover the text; a digit run splits in threes; a run of spaces gives its last one to the word after */
    const char *s = "Hello  world 12345\xE4\xB8\xAD!";
    assert_int_equal(kd_pretok_split(p, s, strlen(s), &w, &err), 0);
    const char *want[] = {"Hello", " ", " world", " ", "123", "45", "\xE4\xB8\xAD", "!"};
    assert_int_equal(w.n, sizeof want / sizeof *want);
    for (size_t i = 0, a = 0; i < w.n; a = w.end[i++]) {
        assert_int_equal(w.end[i] - a, strlen(want[i]));
        assert_memory_equal(w.text + a, want[i], strlen(want[i]));
    }
    /* invalid UTF-8: each bad byte is U+FFFD, as llama.cpp's decoder does */
    assert_int_equal(kd_pretok_split(p, "a\xFF" "b", 3, &w, &err), 0);
    assert_int_equal(w.len, 5);
    assert_memory_equal(w.text, "a\xEF\xBF\xBD" "b", 5);
    kd_words_free(&w);
    kd_pretok_free(p);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_split_basics),
    cmocka_unit_test(test_official_vectors),
    cmocka_unit_test(test_sweep),
};
KD_TEST_MAIN(tests)
