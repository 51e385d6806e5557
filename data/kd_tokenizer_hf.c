/*
 * kd_tokenizer_hf.c — tokenizer.json + tokenizer_config.json (Hugging Face
 * `tokenizers`) for SPM and byte-level BPE kd_tokenizers, written and read
 * (see kd_tokenizer_hf.h).
 */
#include "data/kd_tokenizer_hf.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "core/kd_json.h"
#include "data/kd_pretok.h"
#include "data/kd_tokenizer_bpe.h"

#define SPACE_MARK "\xE2\x96\x81"

/* The GPT-2 / Llama 3 / Qwen2 expressions as their tokenizer.json files write them (for reading). */
static const struct {
    const char *re, *pre;
} HF_KNOWN[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "llama-bpe"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
     "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "qwen2"},
};

static int utf8_ok(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t l = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF5 ? 4 : 0;
        if (!l || i + l > n) return 0;
        for (size_t k = 1; k < l; k++)
            if ((u[i + k] & 0xC0) != 0x80) return 0;
        i += l;
    }
    return 1;
}

static int is_special(kd_token_type t) {
    return t == KD_TOKEN_CONTROL || t == KD_TOKEN_UNKNOWN || t == KD_TOKEN_USER_DEFINED;
}

/* ---- writing ---------------------------------------------------------------------------------------------- */

static cJSON *obj_type(const char *type) {
    cJSON *o = cJSON_CreateObject();
    if (o) cJSON_AddStringToObject(o, "type", type);
    return o;
}

static cJSON *replace_item(const char *from, const char *to) {
    cJSON *o = obj_type("Replace"), *pat = cJSON_CreateObject();
    cJSON_AddStringToObject(pat, "String", from);
    cJSON_AddItemToObject(o, "pattern", pat);
    cJSON_AddStringToObject(o, "content", to);
    return o;
}

/* BOS/EOS around the sequence(s), as add_bos/add_eos say (NULL when neither). */
static cJSON *post_processor(const kd_tokenizer *tok) {
    unsigned f = kd_tokenizer_flags(tok);
    int32_t bos = (f & KD_TOK_ADD_BOS) ? kd_tokenizer_bos(tok) : -1, eos = (f & KD_TOK_ADD_EOS) ? kd_tokenizer_eos(tok) : -1;
    if (bos < 0 && eos < 0) return NULL;
    cJSON *o = obj_type("TemplateProcessing"), *sp = cJSON_CreateObject();
    const char *names[2] = {"single", "pair"};
    for (int k = 0; k < 2; k++) {
        cJSON *a = cJSON_CreateArray();
        for (int part = 0; part <= k; part++) {
            cJSON *it = cJSON_CreateObject(), *in = cJSON_CreateObject();
            if (bos >= 0) {
                cJSON_AddStringToObject(in, "id", kd_tokenizer_piece(tok, bos, NULL));
                cJSON_AddNumberToObject(in, "type_id", part);
                cJSON_AddItemToObject(it, "SpecialToken", in);
                cJSON_AddItemToArray(a, it);
                it = cJSON_CreateObject();
                in = cJSON_CreateObject();
            }
            cJSON_AddStringToObject(in, "id", part ? "B" : "A");
            cJSON_AddNumberToObject(in, "type_id", part);
            cJSON_AddItemToObject(it, "Sequence", in);
            cJSON_AddItemToArray(a, it);
            if (eos >= 0) {
                it = cJSON_CreateObject();
                in = cJSON_CreateObject();
                cJSON_AddStringToObject(in, "id", kd_tokenizer_piece(tok, eos, NULL));
                cJSON_AddNumberToObject(in, "type_id", part);
                cJSON_AddItemToObject(it, "SpecialToken", in);
                cJSON_AddItemToArray(a, it);
            }
        }
        cJSON_AddItemToObject(o, names[k], a);
    }
    int32_t ids[2] = {bos, eos};
    for (int k = 0; k < 2; k++) {
        if (ids[k] < 0 || (k == 1 && eos == bos)) continue;
        const char *p = kd_tokenizer_piece(tok, ids[k], NULL);
        cJSON *e = cJSON_CreateObject(), *il = cJSON_CreateArray(), *tl = cJSON_CreateArray();
        cJSON_AddStringToObject(e, "id", p);
        cJSON_AddItemToArray(il, cJSON_CreateNumber(ids[k]));
        cJSON_AddItemToArray(tl, cJSON_CreateString(p));
        cJSON_AddItemToObject(e, "ids", il);
        cJSON_AddItemToObject(e, "tokens", tl);
        cJSON_AddItemToObject(sp, p, e);
    }
    cJSON_AddItemToObject(o, "special_tokens", sp);
    return o;
}

typedef struct spm_merge {
    float score;
    int32_t id;
    uint32_t at;   /* split point in the piece */
} spm_merge;

static int merge_cmp(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* SPM merges from the scores: every split of a NORMAL piece into two pieces, highest score first. */
static int spm_merges(const kd_tokenizer *tok, cJSON *arr, kd_err *err) {
    size_t n = 0, cap = 1024;
    spm_merge *m = malloc(cap * sizeof *m);
    if (!m) return kd_errf(err, "tokenizer.json: out of memory");
    for (int32_t id = 0; id < kd_tokenizer_n_vocab(tok); id++) {
        size_t len;
        const char *p = kd_tokenizer_piece(tok, id, &len);
        if (kd_tokenizer_type(tok, id) != KD_TOKEN_NORMAL || len < 2 || memchr(p, ' ', len)) continue;
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)p[k] & 0xC0) == 0x80) continue;   /* split between characters only */
            if (kd_tokenizer_find(tok, p, k) < 0 || kd_tokenizer_find(tok, p + k, len - k) < 0) continue;
            if (n == cap) {
                spm_merge *t = realloc(m, 2 * cap * sizeof *m);
                if (!t) {
                    free(m);
                    return kd_errf(err, "tokenizer.json: out of memory");
                }
                m = t;
                cap *= 2;
            }
            m[n++] = (spm_merge){kd_tokenizer_score(tok, id), id, (uint32_t)k};
        }
    }
    qsort(m, n, sizeof *m, merge_cmp);
    char buf[2048];
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = kd_tokenizer_piece(tok, m[i].id, &len);
        if (len + 2 > sizeof buf) continue;
        memcpy(buf, p, m[i].at);
        buf[m[i].at] = ' ';
        memcpy(buf + m[i].at + 1, p + m[i].at, len - m[i].at);
        buf[len + 1] = '\0';
        cJSON_AddItemToArray(arr, cJSON_CreateString(buf));
    }
    free(m);
    return 0;
}

/* Byte-level merges in rank order, without those tokenizers refuses (a side or the result not a token). */
static void bpe_merges(const kd_tokenizer *tok, cJSON *arr) {
    char buf[4096];
    for (int32_t i = 0; i < kd_tokenizer_n_merges(tok); i++) {
        size_t len;
        const char *s = kd_tokenizer_merge(tok, i, &len);
        const char *sp = memchr(s + 1, ' ', len - 1);
        if (!sp || len >= sizeof buf) continue;
        size_t l = (size_t)(sp - s);
        memcpy(buf, s, l);
        memcpy(buf + l, sp + 1, len - l - 1);
        if (kd_tokenizer_find(tok, s, l) < 0 || kd_tokenizer_find(tok, sp + 1, len - l - 1) < 0 ||
            kd_tokenizer_find(tok, buf, len - 1) < 0 || memchr(s, ' ', l))
            continue;
        cJSON_AddItemToArray(arr, cJSON_CreateString(s));
    }
}

int kd_tokenizer_save_hf(const kd_tokenizer *tok, const char *dir, kd_err *err) {
    int bpe = !strcmp(kd_tokenizer_model(tok), "gpt2");
    const kd_pretok *pt = kd_tokenizer_pretok(tok);
    if (bpe && !pt)
        return kd_errf(err, "tokenizer.json: pre-tokenizer '%s' is unknown: cannot write it", kd_tokenizer_pre(tok));
    unsigned pf = pt ? kd_pretok_flags(pt) : 0;
    int raw = bpe && (pf & KD_PRETOK_RAW);
    cJSON *root = cJSON_CreateObject(), *cfg = cJSON_CreateObject(), *added = cJSON_CreateArray();
    cJSON *vocab = cJSON_CreateObject(), *merges = cJSON_CreateArray(), *model = obj_type("BPE");
    int rc = -1;
    char path[4096];
    if (!root || !cfg || !added || !vocab || !merges || !model) {
        kd_errf(err, "tokenizer.json: out of memory");
        goto done;
    }
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    for (int32_t id = 0; id < kd_tokenizer_n_vocab(tok); id++) {
        size_t len;
        const char *p = kd_tokenizer_piece(tok, id, &len);
        if (!len) continue;
        if (strlen(p) != len || !utf8_ok(p, len)) {
            kd_errf(err, "tokenizer.json: token %" PRId32 " is not valid UTF-8 text; JSON cannot hold it", id);
            goto done;
        }
        cJSON_AddItemToObject(vocab, p, cJSON_CreateNumber(id));
        kd_token_type t = kd_tokenizer_type(tok, id);
        if (!is_special(t)) continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", id);
        cJSON_AddStringToObject(a, "content", p);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddBoolToObject(a, "special", t != KD_TOKEN_USER_DEFINED);
        cJSON_AddItemToArray(added, a);
    }
    cJSON_AddItemToObject(root, "added_tokens", added);
    added = NULL;
    /* normalizer */
    if (!bpe) {
        cJSON *seq = obj_type("Sequence"), *l = cJSON_CreateArray();
        if (kd_tokenizer_flags(tok) & KD_TOK_ADD_SPACE_PREFIX) {
            cJSON *pre = obj_type("Prepend");
            cJSON_AddStringToObject(pre, "prepend", SPACE_MARK);
            cJSON_AddItemToArray(l, pre);
        }
        cJSON_AddItemToArray(l, replace_item(" ", SPACE_MARK));
        cJSON_AddItemToObject(seq, "normalizers", l);
        cJSON_AddItemToObject(root, "normalizer", seq);
    } else if (pf & KD_PRETOK_ESCAPE_SPACE) {
        cJSON_AddItemToObject(root, "normalizer", replace_item(" ", SPACE_MARK));
    } else {
        cJSON_AddNullToObject(root, "normalizer");
    }
    /* pre-tokenizer */
    if (bpe) {
        cJSON *seq = obj_type("Sequence"), *l = cJSON_CreateArray();
        for (int i = 0; i < kd_pretok_n_regex(pt); i++) {
            cJSON *s = obj_type("Split"), *pat = cJSON_CreateObject();
            cJSON_AddStringToObject(pat, "Regex", kd_pretok_regex(pt, i));
            cJSON_AddItemToObject(s, "pattern", pat);
            cJSON_AddStringToObject(s, "behavior", "Isolated");
            cJSON_AddBoolToObject(s, "invert", 0);
            cJSON_AddItemToArray(l, s);
        }
        if (!raw) {
            cJSON *bl = obj_type("ByteLevel");
            cJSON_AddBoolToObject(bl, "add_prefix_space", 0);
            cJSON_AddBoolToObject(bl, "trim_offsets", 1);
            cJSON_AddBoolToObject(bl, "use_regex", 0);
            cJSON_AddItemToArray(l, bl);
        }
        cJSON_AddItemToObject(seq, "pretokenizers", l);
        cJSON_AddItemToObject(root, "pre_tokenizer", seq);
    } else {
        cJSON_AddNullToObject(root, "pre_tokenizer");
    }
    cJSON *pp = post_processor(tok);
    if (pp) cJSON_AddItemToObject(root, "post_processor", pp);
    else cJSON_AddNullToObject(root, "post_processor");
    /* decoder */
    if (bpe && !raw) {
        cJSON *d = obj_type("ByteLevel");
        cJSON_AddBoolToObject(d, "add_prefix_space", 1);
        cJSON_AddBoolToObject(d, "trim_offsets", 1);
        cJSON_AddBoolToObject(d, "use_regex", 1);
        cJSON_AddItemToObject(root, "decoder", d);
    } else {
        cJSON *d = obj_type("Sequence"), *l = cJSON_CreateArray();
        if (!bpe || (pf & KD_PRETOK_ESCAPE_SPACE)) cJSON_AddItemToArray(l, replace_item(SPACE_MARK, " "));
        cJSON_AddItemToArray(l, obj_type("ByteFallback"));
        cJSON_AddItemToArray(l, obj_type("Fuse"));
        if (!bpe && (kd_tokenizer_flags(tok) & KD_TOK_ADD_SPACE_PREFIX)) {
            cJSON *st = obj_type("Strip");
            cJSON_AddStringToObject(st, "content", " ");
            cJSON_AddNumberToObject(st, "start", 1);
            cJSON_AddNumberToObject(st, "stop", 0);
            cJSON_AddItemToArray(l, st);
        }
        cJSON_AddItemToObject(d, "decoders", l);
        cJSON_AddItemToObject(root, "decoder", d);
    }
    /* model */
    int32_t unk = kd_tokenizer_unk(tok);
    cJSON_AddNullToObject(model, "dropout");
    if (!bpe && unk >= 0) cJSON_AddStringToObject(model, "unk_token", kd_tokenizer_piece(tok, unk, NULL));
    else cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", !bpe);
    cJSON_AddBoolToObject(model, "byte_fallback", !bpe || raw);
    cJSON_AddBoolToObject(model, "ignore_merges", (pf & KD_PRETOK_IGNORE_MERGES) != 0);
    cJSON_AddItemToObject(model, "vocab", vocab);
    vocab = NULL;
    if (bpe) bpe_merges(tok, merges);
    else if (spm_merges(tok, merges, err)) goto done;
    cJSON_AddItemToObject(model, "merges", merges);
    merges = NULL;
    cJSON_AddItemToObject(root, "model", model);
    model = NULL;
    /* tokenizer_config.json */
    cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    const char *keys[3] = {"bos_token", "eos_token", "unk_token"};
    int32_t ids[3] = {kd_tokenizer_bos(tok), kd_tokenizer_eos(tok), unk};
    for (int k = 0; k < 3; k++) {
        if (ids[k] >= 0) cJSON_AddStringToObject(cfg, keys[k], kd_tokenizer_piece(tok, ids[k], NULL));
        else cJSON_AddNullToObject(cfg, keys[k]);
    }
    cJSON_AddBoolToObject(cfg, "add_bos_token", (kd_tokenizer_flags(tok) & KD_TOK_ADD_BOS) != 0);
    cJSON_AddBoolToObject(cfg, "add_eos_token", (kd_tokenizer_flags(tok) & KD_TOK_ADD_EOS) != 0);
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", 0);
    if (bpe) cJSON_AddStringToObject(cfg, "kd_pre_tokenizer", kd_tokenizer_pre(tok));
    if (kd_path_join(path, sizeof path, dir, "tokenizer.json", err) || kd_json_write_atomic(path, root, err) ||
        kd_path_join(path, sizeof path, dir, "tokenizer_config.json", err) || kd_json_write_atomic(path, cfg, err))
        goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    cJSON_Delete(added);
    cJSON_Delete(vocab);
    cJSON_Delete(merges);
    cJSON_Delete(model);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------------------------------- */

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {   /* {"content": "..."} (AddedToken form) */
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        return cJSON_IsString(c) ? c->valuestring : NULL;
    }
    return NULL;
}

static int is_type(const cJSON *o, const char *type) {
    const char *t = str_of(o, "type");
    return t && !strcmp(t, type);
}

/* Components of a normalizer / pre-tokenizer / decoder: itself, or the items of a Sequence. */
static const cJSON *items(const cJSON *o, const char *list) {
    return is_type(o, "Sequence") ? cJSON_GetObjectItemCaseSensitive(o, list) : NULL;
}

kd_tokenizer *kd_tokenizer_load_hf(const char *dir, kd_err *err) {
    char path[4096], cpath[4096];
    if (kd_path_join(path, sizeof path, dir, "tokenizer.json", err) ||
        kd_path_join(cpath, sizeof cpath, dir, "tokenizer_config.json", err))
        return NULL;
    cJSON *root = kd_json_load(path, err), *cfg = kd_file_exists(cpath) ? kd_json_load(cpath, err) : NULL;
    kd_tokenizer *tok = NULL;
    const char **pcs = NULL, **mg = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    if (!root || (kd_file_exists(cpath) && !cfg)) goto done;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!is_type(model, "BPE")) {
        kd_errf(err, "%s: model.type is '%s', expected 'BPE' (kd reads byte-level BPE and SentencePiece-style BPE)", path,
                str_of(model, "type") ? str_of(model, "type") : "(none)");
        goto done;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || (merges && !cJSON_IsArray(merges))) {
        kd_errf(err, "%s: model.vocab must be an object and model.merges an array", path);
        goto done;
    }
    int64_t n = 0;
    for (const cJSON *v = vocab->child; v; v = v->next)
        if (cJSON_IsNumber(v) && v->valuedouble + 1 > (double)n) n = (int64_t)v->valuedouble + 1;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (cJSON_IsNumber(id) && id->valuedouble + 1 > (double)n) n = (int64_t)id->valuedouble + 1;
    }
    if (n < 1 || n > KD_TOK_MAX_VOCAB) {
        kd_errf(err, "%s: %" PRId64 " tokens, expected 1..%d", path, n, KD_TOK_MAX_VOCAB);
        goto done;
    }
    pcs = calloc((size_t)n, sizeof *pcs);
    types = malloc((size_t)n * sizeof *types);
    scores = calloc((size_t)n, sizeof *scores);
    if (!pcs || !types || !scores) {
        kd_errf(err, "%s: out of memory", path);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) types[i] = KD_TOKEN_UNUSED;   /* ids without a token */
    for (const cJSON *v = vocab->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) {
            kd_errf(err, "%s: model.vocab['%.40s'] is not a token id", path, v->string);
            goto done;
        }
        pcs[(int64_t)v->valuedouble] = v->string;
        types[(int64_t)v->valuedouble] = KD_TOKEN_NORMAL;
    }
    const char *unk = str_of(model, "unk_token");
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id"), *sp = cJSON_GetObjectItemCaseSensitive(a, "special");
        const char *c = str_of(a, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || !c) {
            kd_errf(err, "%s: added_tokens: an entry without id or content", path);
            goto done;
        }
        int64_t i = (int64_t)id->valuedouble;
        pcs[i] = c;
        types[i] = !cJSON_IsTrue(sp) ? KD_TOKEN_USER_DEFINED : unk && !strcmp(unk, c) ? KD_TOKEN_UNKNOWN : KD_TOKEN_CONTROL;
    }
    /* which kind: ByteLevel somewhere → byte-level; byte_fallback + " " → "▁" → SentencePiece-style */
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    const cJSON *pl = items(pre, "pretokenizers"), *nl = items(norm, "normalizers"), *dl = items(dec, "decoders");
    int byte_level = is_type(pre, "ByteLevel") || is_type(dec, "ByteLevel"), gpt2_regex = is_type(pre, "ByteLevel");
    const char *re[8];
    int nre = 0, odd = 0, escape = 0, prepend = 0;
    for (const cJSON *p = pl ? pl->child : NULL; p; p = p->next) {
        if (is_type(p, "ByteLevel")) {
            byte_level = 1;
            gpt2_regex |= !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "use_regex"));
        } else if (is_type(p, "Split") && nre < 8 &&
                   str_of(cJSON_GetObjectItemCaseSensitive(p, "pattern"), "Regex")) {
            re[nre++] = str_of(cJSON_GetObjectItemCaseSensitive(p, "pattern"), "Regex");
        } else {
            odd = 1;
        }
    }
    for (const cJSON *d = dl ? dl->child : NULL; d; d = d->next) byte_level |= is_type(d, "ByteLevel");
    const cJSON *nitem = nl ? nl->child : norm;
    for (const cJSON *x = nitem; x; x = nl ? x->next : NULL) {
        if (is_type(x, "Replace")) {
            const char *from = str_of(cJSON_GetObjectItemCaseSensitive(x, "pattern"), "String");
            const char *to = str_of(x, "content");
            escape |= from && to && !strcmp(from, " ") && !strcmp(to, SPACE_MARK);
        }
        if (is_type(x, "Prepend")) prepend |= str_of(x, "prepend") && !strcmp(str_of(x, "prepend"), SPACE_MARK);
        if (!nl) break;
    }
    int fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    /* BOS/EOS: tokenizer_config.json's names, else the post-processor's template */
    int32_t bos = -1, eos = -1, unk_id = -1;
    unsigned flags = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!pcs[i]) continue;
        if (cfg && str_of(cfg, "bos_token") && !strcmp(pcs[i], str_of(cfg, "bos_token"))) bos = (int32_t)i;
        if (cfg && str_of(cfg, "eos_token") && !strcmp(pcs[i], str_of(cfg, "eos_token"))) eos = (int32_t)i;
        if (unk && !strcmp(pcs[i], unk)) unk_id = (int32_t)i;
        if (fallback && !byte_level && types[i] == KD_TOKEN_NORMAL && strlen(pcs[i]) == 6 && !strncmp(pcs[i], "<0x", 3) &&
            pcs[i][5] == '>')
            types[i] = KD_TOKEN_BYTE;
    }
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *single = is_type(post, "TemplateProcessing") ? cJSON_GetObjectItemCaseSensitive(post, "single") : NULL;
    int seen_seq = 0;
    for (const cJSON *it = single ? single->child : NULL; it; it = it->next) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) seen_seq = 1;
        if (!st || !str_of(st, "id")) continue;
        for (int64_t i = 0; i < n; i++)
            if (pcs[i] && !strcmp(pcs[i], str_of(st, "id"))) {
                if (seen_seq) eos = (int32_t)i, flags |= KD_TOK_ADD_EOS;
                else bos = (int32_t)i, flags |= KD_TOK_ADD_BOS;
                break;
            }
    }
    if (cfg && cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token")))
        flags = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token")) ? flags | KD_TOK_ADD_BOS
                                                                                      : flags & ~KD_TOK_ADD_BOS;
    if (cfg && cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token")))
        flags = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token")) ? flags | KD_TOK_ADD_EOS
                                                                                      : flags & ~KD_TOK_ADD_EOS;
    int32_t nm = merges ? cJSON_GetArraySize(merges) : 0;
    mg = calloc((size_t)nm + 1, sizeof *mg);
    char **owned = calloc((size_t)nm + 1, sizeof *owned);
    if (!mg || !owned) {
        free(owned);
        kd_errf(err, "%s: out of memory", path);
        goto done;
    }
    int32_t k = 0;
    for (const cJSON *m = merges ? merges->child : NULL; m; m = m->next, k++) {
        if (cJSON_IsString(m)) {
            mg[k] = m->valuestring;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {   /* ["left", "right"] (tokenizers >= 0.20) */
            size_t a = strlen(m->child->valuestring), b = strlen(m->child->next->valuestring);
            if ((owned[k] = malloc(a + b + 2))) {
                memcpy(owned[k], m->child->valuestring, a);
                owned[k][a] = ' ';
                memcpy(owned[k] + a + 1, m->child->next->valuestring, b + 1);
            }
            mg[k] = owned[k] ? owned[k] : "";
        } else {
            mg[k] = "";
        }
    }
    const char *pre_name = NULL;
    if (byte_level || (fallback && escape && nre > 0 && !prepend)) {
        const char *cfg_pre = cfg ? str_of(cfg, "kd_pre_tokenizer") : NULL;
        const char *from_re = odd ? NULL : kd_pretok_from_regex(re, nre);
        if (cfg_pre && from_re) {   /* the name kd wrote, when its split is the one written */
            kd_pretok *p = kd_pretok_new(cfg_pre, NULL);
            int same = p && kd_pretok_n_regex(p) == nre;
            for (int i = 0; same && i < nre; i++) same = !strcmp(kd_pretok_regex(p, i), re[i]);
            kd_pretok_free(p);
            pre_name = same ? cfg_pre : from_re;
        } else if (from_re && !gpt2_regex) {
            pre_name = from_re;
        } else if (!odd && gpt2_regex && nre == 0) {
            pre_name = "gpt-2";
        } else if (!odd && !gpt2_regex && nre == 1) {
            for (size_t i = 0; i < sizeof HF_KNOWN / sizeof *HF_KNOWN; i++)
                if (!strcmp(re[0], HF_KNOWN[i].re)) pre_name = HF_KNOWN[i].pre;
        }
        if (!pre_name) {
            kd_errf(err, "%s: byte-level BPE with a pre_tokenizer kd does not recognise (%d Split expression%s%s%.80s%s); "
                    "convert the teacher to GGUF with llama.cpp and give kd that file", path, nre, nre == 1 ? "" : "s",
                    nre ? ", the first '" : "", nre ? re[0] : "", nre ? "'" : "");
        }
    } else if (!(fallback && escape)) {
        kd_errf(err, "%s: BPE that is neither byte-level (no ByteLevel pre_tokenizer or decoder) nor "
                "SentencePiece-style (byte_fallback and a normalizer replacing ' ' by U+2581)", path);
    }
    if (pre_name || (fallback && escape && !byte_level)) {
        int spm = !pre_name;
        if (spm) {   /* scores from the merge ranks: the piece a merge makes scores -(its first rank) */
            for (int64_t i = 0; i < n; i++) scores[i] = -(float)nm - 1.0f;
            kd_tokenizer *t0 = kd_tokenizer_new((int32_t)n, pcs, NULL, types, bos, eos, unk_id, 0, err);
            if (!t0) goto free_merges;
            for (int32_t r = nm - 1; r >= 0; r--) {   /* down to rank 0: the first rank wins */
                size_t l = strlen(mg[r]);
                const char *sp = l > 1 ? memchr(mg[r] + 1, ' ', l - 1) : NULL;
                char buf[1024];
                if (!sp || l > sizeof buf) continue;
                size_t a = (size_t)(sp - mg[r]);
                memcpy(buf, mg[r], a);
                memcpy(buf + a, sp + 1, l - a - 1);
                int32_t id = kd_tokenizer_find(t0, buf, l - 1);
                if (id >= 0) scores[id] = -(float)r;
            }
            kd_tokenizer_free(t0);
            if (prepend) flags |= KD_TOK_ADD_SPACE_PREFIX;
        }
        tok = kd_tokenizer_new((int32_t)n, pcs, spm ? scores : NULL, types, bos, eos, unk_id, flags, err);
        if (tok && !spm && kd_tokenizer_set_bpe(tok, pre_name, nm, mg, NULL, path, err) < 0) {
            kd_tokenizer_free(tok);
            tok = NULL;
        }
    }
free_merges:
    for (int32_t i = 0; i < nm; i++) free(owned[i]);
    free(owned);
done:
    if (tok == NULL && err && !err->msg[0]) kd_errf(err, "%s: cannot read the tokenizer", path);
    free(pcs);
    free(types);
    free(scores);
    free(mg);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    return tok;
}
