/*
 * make_corpus.c — writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/)
 * with kd itself: tiny students exported as GGUF (F32, F16, Q8_0; SPM and BPE
 * tokenizers), checkpoints (F32, BF16, tied), llama2.c .bin files, teacher
 * dumps (top-k with a tokenizer, full logits, tokens only), tokenizer files
 * (tokenizer.bin, tokenizer.h5 SPM and BPE) and run.json files.
 * Usage: fuzz_make_corpus OUTDIR   (tools/fuzz.sh corpus regenerates the committed set)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "core/kd_rng.h"
#include "data/kd_dump.h"
#include "data/kd_dump_tok.h"
#include "data/kd_tokenizer.h"
#include "data/kd_tokenizer_bpe.h"
#include "export/kd_export.h"
#include "student/kd_checkpoint.h"
#include "student/kd_llama2c.h"
#include "train/kd_run_config.h"
#include "fuzz_common.h"

static const char *g_out;
static kd_err g_err;

static void check(int rc, const char *what) {
    if (rc) {
        fprintf(stderr, "make_corpus: %s: %s\n", what, g_err.msg);
        exit(1);
    }
}

static const char *path_of(const char *target, const char *name) {
    static char p[2048];
    snprintf(p, sizeof p, "%s/%s", g_out, target);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/%s", g_out, target, name);
    return p;
}

static void put(const char *target, const char *name, const void *a, size_t na, const void *b, size_t nb) {
    const char *p = path_of(target, name);
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        exit(1);
    }
    fwrite(a, 1, na, f);
    if (b) {
        fwrite(KDF_SEP, 1, sizeof KDF_SEP - 1, f);
        fwrite(b, 1, nb, f);
    }
    fclose(f);
}

static char *slurp(const char *path, size_t *n) {
    char *s = kd_read_file(path, n, &g_err);
    check(!s, path);
    return s;
}

static void copy_in(const char *target, const char *name, const char *src) {
    size_t n;
    char *s = slurp(src, &n);
    put(target, name, s, n, NULL, 0);
    free(s);
}

/* ---- tokenizers -------------------------------------------------------------------- */

static kd_tokenizer *spm_tokenizer(void) {
    static const char *words[] = {"▁", "▁the", "▁H", "He", "ll", "llo", "▁w", "or", "ld", "e", "l", "o", "d", ",", "'",
                                  "s", "t", "!", "2", "0", "4", "▁it", "▁end", "Ü", "n", "ï", "c", "ö", "é"};
    const int nw = (int)(sizeof words / sizeof *words);
    const int nb = 6;   /* byte tokens for \n \t space and three of 😀's bytes */
    static const unsigned char bytes[] = {0x0A, 0x09, 0x20, 0xF0, 0x9F, 0x98};
    int32_t n = 3 + nb + nw;
    char **pieces = calloc((size_t)n, sizeof *pieces);
    float *scores = calloc((size_t)n, sizeof *scores);
    int32_t *types = calloc((size_t)n, sizeof *types);
    pieces[0] = strdup("<unk>"), types[0] = KD_TOKEN_UNKNOWN;
    pieces[1] = strdup("<s>"), types[1] = KD_TOKEN_CONTROL;
    pieces[2] = strdup("</s>"), types[2] = KD_TOKEN_CONTROL;
    for (int i = 0; i < nb; i++) {
        pieces[3 + i] = malloc(8);
        snprintf(pieces[3 + i], 8, "<0x%02X>", bytes[i]);
        types[3 + i] = KD_TOKEN_BYTE;
    }
    for (int i = 0; i < nw; i++) {
        pieces[3 + nb + i] = strdup(words[i]);
        types[3 + nb + i] = KD_TOKEN_NORMAL;
        scores[3 + nb + i] = -(float)i;
    }
    kd_tokenizer *t = kd_tokenizer_new(n, (const char *const *)pieces, scores, types, 1, 2, 0,
                                       KD_TOK_ADD_BOS | KD_TOK_ADD_SPACE_PREFIX, &g_err);
    check(!t, "spm tokenizer");
    for (int i = 0; i < n; i++) free(pieces[i]);
    free(pieces);
    free(scores);
    free(types);
    return t;
}

static kd_tokenizer *bpe_tokenizer(void) {
    static const char *pieces[] = {"<|endoftext|>", "H", "e", "l", "o", "Ġ", "w", "r", "d", ",", "Ċ", "t", "'", "s",
                                   "i", "n", "!", "2", "0", "4", "ll", "llo", "He", "Hello", "Ġw", "or", "Ġwor",
                                   "Ġworld", "ld", "Ġi", "Ġit", "'s", "Ġe", "Ġen", "Ġend"};
    static const char *merges[] = {"l l", "ll o", "H e", "He llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
                                   "Ġ i", "Ġi t", "' s", "Ġ e", "Ġe n", "Ġen d"};
    int32_t n = (int32_t)(sizeof pieces / sizeof *pieces);
    int32_t *types = calloc((size_t)n, sizeof *types);
    for (int i = 0; i < n; i++) types[i] = i ? KD_TOKEN_NORMAL : KD_TOKEN_CONTROL;
    kd_tokenizer *t = kd_tokenizer_new(n, pieces, NULL, types, 0, 0, -1, 0, &g_err);
    check(!t, "bpe tokenizer");
    free(types);
    check(kd_tokenizer_set_bpe(t, "gpt-2", (int32_t)(sizeof merges / sizeof *merges), merges, NULL, "make_corpus",
                               &g_err), "bpe merges");
    return t;
}

/* ---- models ------------------------------------------------------------------------ */

static void tiny_model(kd_model *m, int64_t C, int64_t F, int64_t H, int64_t Hkv, int64_t V, int tied, uint64_t seed) {
    kd_config c;
    kd_config_defaults(&c);
    c.hidden_size = C;
    c.intermediate_size = F;
    c.num_hidden_layers = 1;
    c.num_attention_heads = H;
    c.num_key_value_heads = Hkv;
    c.head_dim = C / H;
    c.vocab_size = V;
    c.max_position_embeddings = 16;
    c.tie_word_embeddings = tied;
    check(kd_model_new_flags(m, &c, KD_MODEL_NO_GRAD, &g_err), "model");
    kd_model_init(m, seed);
}

/* A llama2.c .bin of m (q/k rows back to adjacent pairs). */
static void write_llama2c(const kd_model *m, const char *name) {
    const kd_config *c = &m->cfg;
    int64_t C = c->hidden_size, F = c->intermediate_size, L = c->num_hidden_layers, V = c->vocab_size,
            D = c->head_dim, KVD = c->num_key_value_heads * D, T = c->max_position_embeddings;
    int32_t h[7] = {(int32_t)C, (int32_t)F, (int32_t)L, (int32_t)c->num_attention_heads,
                    (int32_t)c->num_key_value_heads, (int32_t)(m->lm_head ? -V : V), (int32_t)T};
    const char *p = path_of("llama2c", name);
    FILE *f = fopen(p, "wb");
    fwrite(h, 4, 7, f);
    fwrite(m->embed->data, 4, (size_t)(V * C), f);
    for (int64_t l = 0; l < L; l++) fwrite(m->layers[l].attn_norm->data, 4, (size_t)C, f);
    float *tmp = malloc((size_t)(C * C) * 4);
    for (int64_t l = 0; l < L; l++) {
        memcpy(tmp, m->layers[l].wq->data, (size_t)(C * C) * 4);
        kd_rope_permute_rows(tmp, c->num_attention_heads, D, C, 0);
        fwrite(tmp, 4, (size_t)(C * C), f);
    }
    for (int64_t l = 0; l < L; l++) {
        memcpy(tmp, m->layers[l].wk->data, (size_t)(KVD * C) * 4);
        kd_rope_permute_rows(tmp, c->num_key_value_heads, D, C, 0);
        fwrite(tmp, 4, (size_t)(KVD * C), f);
    }
    free(tmp);
    for (int64_t l = 0; l < L; l++) fwrite(m->layers[l].wv->data, 4, (size_t)(KVD * C), f);
    for (int64_t l = 0; l < L; l++) fwrite(m->layers[l].wo->data, 4, (size_t)(C * C), f);
    for (int64_t l = 0; l < L; l++) fwrite(m->layers[l].ffn_norm->data, 4, (size_t)C, f);
    for (int64_t l = 0; l < L; l++) fwrite(m->layers[l].w_gate->data, 4, (size_t)(F * C), f);
    for (int64_t l = 0; l < L; l++) fwrite(m->layers[l].w_down->data, 4, (size_t)(C * F), f);
    for (int64_t l = 0; l < L; l++) fwrite(m->layers[l].w_up->data, 4, (size_t)(F * C), f);
    fwrite(m->norm->data, 4, (size_t)C, f);
    float *fc = calloc((size_t)(T * D), 4);
    fwrite(fc, 4, (size_t)(T * D), f);
    free(fc);
    if (m->lm_head) fwrite(m->lm_head->data, 4, (size_t)(V * C), f);
    fclose(f);
}

static void checkpoint_seed(const kd_model *m, kd_st_dtype dt, const char *name) {
    char dir[1024], p[1100];
    snprintf(dir, sizeof dir, "%s/ckpt-%s", kdf_tmpdir(), name);
    check(kd_checkpoint_save_as(m, dir, dt, &g_err), "checkpoint");
    size_t n1, n2;
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *a = slurp(p, &n1);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    char *b = slurp(p, &n2);
    put("checkpoint", name, a, n1, b, n2);
    free(a);
    free(b);
}

/* ---- dumps ------------------------------------------------------------------------- */

/* layout: 0 plain, 1 packed ("topk-packed-v1"), 2 sampled classes (k draws: counts 2, 1, …, 1, one slot unused) */
static void dump_seed(const char *name, int32_t k, int tokens_only, kd_dump_dtype vt, const kd_tokenizer *tok,
                      int layout) {
    const int32_t V = 40, T = 6, N = 3;
    kd_dump_meta meta = {0};
    meta.packed = layout == 1;
    meta.sampled = layout == 2;
    meta.n_samples = layout == 2 ? k : 0;
    meta.vocab_size = V;
    meta.k = tokens_only ? 0 : k;
    meta.seq_len = T;
    meta.temperature = 1.0;
    snprintf(meta.teacher, sizeof meta.teacher, "kd-fuzz-seed");
    meta.value_dtype = vt;
    meta.has_loss_mask = 1;
    meta.tokens_only = tokens_only;
    kd_dump_tokenizer dt, *pdt = NULL;
    if (tok) {
        check(kd_dump_tokenizer_from(tok, &dt, &g_err), "dump tokenizer");
        pdt = &dt;
    }
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", kdf_tmpdir(), name);
    kd_dump_writer *w = kd_dump_writer_create(p, &meta, pdt, &g_err);
    check(!w, "dump writer");
    kd_rng r;
    kd_rng_seed(&r, 42);
    int32_t tokens[N * (T + 1)], ids[N * T * 4];
    uint8_t mask[N * T];
    float vals[N * T * V];
    for (int i = 0; i < N * (T + 1); i++) tokens[i] = (int32_t)(kd_rng_u64(&r) % (uint64_t)V);
    for (int i = 0; i < N * T; i++) mask[i] = i % 5 != 0;
    for (int i = 0; i < N * T; i++) {
        float lg[40], mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = fmaxf(mx, lg[v] = 3.0f * kd_rng_uniform(&r));
        for (int v = 0; v < V; v++) s += expf(lg[v] - mx);
        if (k == 0) {
            for (int v = 0; v < V; v++) vals[i * V + v] = lg[v];
            continue;
        }
        for (int j = 0; j < k; j++) {   /* selection of the k largest, descending */
            int best = -1;
            for (int v = 0; v < V; v++)
                if (lg[v] > -INFINITY && (best < 0 || lg[v] > lg[best])) best = v;
            ids[i * k + j] = best;
            vals[i * k + j] = lg[best] - mx - logf(s);
            lg[best] = -INFINITY;
        }
        if (layout == 2)   /* k draws: the first id twice, the next k − 2 once, the last slot unused */
            for (int j = 0; j < k; j++)
                vals[i * k + j] = j == k - 1 ? -INFINITY : kd_dump_sample_lp(j == 0 ? 2 : 1, k);
    }
    check(kd_dump_writer_append(w, N, tokens, mask, tokens_only ? NULL : k ? ids : NULL, tokens_only ? NULL : vals,
                                &g_err), "dump append");
    check(kd_dump_writer_close(w, &g_err), "dump close");
    if (tok) kd_dump_tokenizer_free(&dt);
    copy_in("dump", name, p);
}

/* ---- run.json ------------------------------------------------------------------------ */

static void run_seed(const char *name, const char *json, const char *set) {
    put("run_config", name, json, strlen(json), set, set ? strlen(set) : 0);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    g_out = argv[1];
    mkdir(g_out, 0755);
    char p[1024];
    kd_tokenizer *spm = spm_tokenizer(), *bpe = bpe_tokenizer();

    /* tokenizers */
    snprintf(p, sizeof p, "%s/tokenizer.bin", kdf_tmpdir());
    check(kd_tokenizer_write_llama2c(spm, p, &g_err), "tokenizer.bin");
    copy_in("tokenizer", "spm-tokenizer.bin", p);
    snprintf(p, sizeof p, "%s/bpe.h5", kdf_tmpdir());
    check(kd_tokenizer_save_h5(bpe, p, &g_err), "tokenizer.h5");
    copy_in("tokenizer", "bpe-tokenizer.h5", p);
    snprintf(p, sizeof p, "%s/spm.h5", kdf_tmpdir());
    check(kd_tokenizer_save_h5(spm, p, &g_err), "tokenizer.h5");
    copy_in("tokenizer", "spm-tokenizer.h5", p);

    /* GGUF: a tiny F32 model with the SPM tokenizer, F16 untied, Q8_0 with the BPE tokenizer */
    kd_model m;
    tiny_model(&m, 8, 16, 2, 1, 40, 1, 1);
    snprintf(p, sizeof p, "%s/tiny-f32.gguf", kdf_tmpdir());
    check(kd_export_gguf(&m, spm, "f32", p, &g_err), "gguf f32");
    copy_in("gguf", "tiny-f32-spm.gguf", p);
    copy_in("tokenizer", "spm.gguf", p);
    checkpoint_seed(&m, KD_ST_F32, "tied-f32");
    write_llama2c(&m, "tied.bin");
    kd_model_free(&m);

    tiny_model(&m, 8, 16, 2, 2, 40, 0, 2);
    snprintf(p, sizeof p, "%s/tiny-f16.gguf", kdf_tmpdir());
    check(kd_export_gguf(&m, spm, "f16", p, &g_err), "gguf f16");
    copy_in("gguf", "tiny-f16-untied.gguf", p);
    checkpoint_seed(&m, KD_ST_BF16, "untied-bf16");
    checkpoint_seed(&m, KD_ST_F16, "untied-f16");
    write_llama2c(&m, "untied.bin");
    kd_model_free(&m);

    tiny_model(&m, 32, 64, 4, 2, 40, 1, 3);
    snprintf(p, sizeof p, "%s/tiny-q8.gguf", kdf_tmpdir());
    check(kd_export_gguf(&m, bpe, "q8_0", p, &g_err), "gguf q8_0");
    copy_in("gguf", "tiny-q8_0-bpe.gguf", p);
    copy_in("tokenizer", "bpe.gguf", p);
    kd_model_free(&m);

    /* config.json alone (no separator) */
    snprintf(p, sizeof p, "%s/ckpt-tied-f32/config.json", kdf_tmpdir());
    copy_in("checkpoint", "config-only.json", p);

    /* dumps */
    dump_seed("topk4-f16-spm.h5", 4, 0, KD_DUMP_F16, spm, 0);
    dump_seed("logits-f32.h5", 0, 0, KD_DUMP_F32, NULL, 0);
    dump_seed("tokens-only-bpe.h5", 0, 1, KD_DUMP_F16, bpe, 0);
    dump_seed("topk4-packed.h5", 4, 0, KD_DUMP_F16, NULL, 1);
    dump_seed("sampled4.h5", 4, 0, KD_DUMP_F16, NULL, 2);

    /* run.json */
    run_seed("minimal.json", "{\"student\": \"configs/student-tiny.json\", \"train_data\": \"train.h5\"}\n", NULL);
    kd_run_config rc;
    cJSON *root = cJSON_Parse("{\"student\": \"s\", \"train_data\": [\"a.h5\", \"b.h5\"], \"val_data\": \"v.h5\"}");
    check(kd_run_config_from_json(&rc, root, "seed", &g_err), "run config");
    cJSON_Delete(root);
    cJSON *full = kd_run_config_to_json(&rc);
    char *s = cJSON_Print(full);
    run_seed("resolved.json", s, NULL);
    run_seed("resolved-set.json", s, "memory_mode=\"lean\"");
    free(s);
    cJSON_Delete(full);
    run_seed("lean.json",
             "{\"student\": \"ckpt\", \"train_data\": \"t.h5\", \"memory_mode\": \"lean\", \"lean_v\": \"full\", "
             "\"lean_clip\": \"exact\", \"tokens\": 100000, \"steps\": 0, \"kd_mode\": \"full\", \"alpha\": 0}\n",
             "steps=12");

    kd_tokenizer_free(spm);
    kd_tokenizer_free(bpe);
    printf("corpus written to %s\n", g_out);
    return 0;
}
