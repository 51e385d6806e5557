/*
 * kd_dump_tok.c — tokenizer conversion for dumps and the tokenizer file of a
 * checkpoint directory (see kd_dump_tok.h).
 */
#include "data/kd_dump_tok.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/kd_file.h"
#include "core/kd_log.h"
#include "data/kd_tokenizer_bpe.h"
#include "data/kd_tokenizer_hf.h"
#include "data/kd_tokenizer_load.h"
#include "data/kd_dump_impl.h"
#include "data/kd_dump_probe.h"

/* Offsets [n+1] over a blob → NUL-terminated copies (pieces or merges). */
static char **split_blob(const uint8_t *bytes, const int64_t *off, int32_t n, size_t **lens) {
    char **s = calloc((size_t)n + 1, sizeof *s);
    *lens = malloc(((size_t)n + 1) * sizeof **lens);
    if (!s || !*lens) goto oom;
    for (int32_t i = 0; i < n; i++) {
        int64_t a = off[i], b = off[i + 1];
        if (!(s[i] = malloc((size_t)(b - a) + 1))) goto oom;
        if (b > a) memcpy(s[i], bytes + a, (size_t)(b - a));
        s[i][b - a] = '\0';
        (*lens)[i] = (size_t)(b - a);
    }
    return s;
oom:
    for (int32_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
    free(*lens);
    *lens = NULL;
    return NULL;
}

static void free_strs(char **s, int32_t n) {
    for (int32_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

kd_tokenizer *kd_tokenizer_from_dump(const kd_dump_tokenizer *dt, const char *name, kd_err *err) {
    int bpe = !strcmp(dt->model, "gpt2");
    if (strcmp(dt->model, "llama") && !bpe) {
        kd_errf(err, "%s: attribute 'tokenizer/model' = '%s': tokenizer model not supported (kd reads \"llama\" "
                "(SentencePiece) and \"gpt2\" (byte-level BPE))", name, dt->model);
        return NULL;
    }
    if (dt->n <= 0) {
        kd_errf(err, "%s: the tokenizer has no pieces", name);
        return NULL;
    }
    size_t *lens = NULL, *mlens = NULL;
    char **pieces = split_blob(dt->piece_bytes, dt->piece_offsets, dt->n, &lens), **merges = NULL;
    kd_tokenizer *tok = NULL;
    if (!pieces) {
        kd_errf(err, "out of memory");
        return NULL;
    }
    for (int32_t i = 0; i < dt->n; i++)
        if (memchr(pieces[i], '\0', lens[i])) {
            kd_errf(err, "%s: dataset 'tokenizer/piece_bytes': piece %d contains a NUL byte", name, i);
            goto done;
        }
    unsigned flags = (dt->add_bos ? KD_TOK_ADD_BOS : 0) | (dt->add_eos ? KD_TOK_ADD_EOS : 0) |
                     (dt->add_space_prefix && !bpe ? KD_TOK_ADD_SPACE_PREFIX : 0);
    tok = kd_tokenizer_new(dt->n, (const char *const *)pieces, dt->scores, dt->types, dt->bos_id, dt->eos_id,
                           dt->unk_id, flags, err);
    if (!tok) {
        kd_err_prefix(err, "%s: tokenizer", name);
        goto done;
    }
    if (bpe) {
        char what[4200];
        snprintf(what, sizeof what, "%s: dataset 'tokenizer/merge_bytes'", name);
        if (dt->n_merges > 0 && !(merges = split_blob(dt->merge_bytes, dt->merge_offsets, dt->n_merges, &mlens))) {
            kd_errf(err, "out of memory");
            kd_tokenizer_free(tok);
            tok = NULL;
        } else if (kd_tokenizer_set_bpe(tok, dt->pre, dt->n_merges, (const char *const *)merges, mlens, what, err)) {
            kd_tokenizer_free(tok);
            tok = NULL;
        }
    }
done:
    free_strs(pieces, dt->n);
    free_strs(merges, dt->n_merges);
    free(lens);
    free(mlens);
    return tok;
}

int kd_dump_tokenizer_from(const kd_tokenizer *tok, kd_dump_tokenizer *out, kd_err *err) {
    memset(out, 0, sizeof *out);
    int32_t n = kd_tokenizer_n_vocab(tok), nm = kd_tokenizer_n_merges(tok);
    snprintf(out->model, sizeof out->model, "%s", kd_tokenizer_model(tok));
    snprintf(out->pre, sizeof out->pre, "%s", kd_tokenizer_pre(tok));
    out->n = n;
    out->piece_offsets = malloc((size_t)(n + 1) * sizeof *out->piece_offsets);
    out->scores = malloc((size_t)n * sizeof *out->scores);
    out->types = malloc((size_t)n * sizeof *out->types);
    int64_t total = 0, mtotal = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len;
        kd_tokenizer_piece(tok, i, &len);
        total += (int64_t)len;
    }
    for (int32_t i = 0; i < nm; i++) {
        size_t len;
        kd_tokenizer_merge(tok, i, &len);
        mtotal += (int64_t)len;
    }
    out->piece_bytes = malloc((size_t)total + 1);
    if (!strcmp(out->model, "gpt2")) {
        out->n_merges = nm;
        out->merge_bytes = malloc((size_t)mtotal + 1);
        out->merge_offsets = malloc((size_t)(nm + 1) * sizeof *out->merge_offsets);
    }
    if (!out->piece_offsets || !out->scores || !out->types || !out->piece_bytes ||
        (!strcmp(out->model, "gpt2") && (!out->merge_bytes || !out->merge_offsets))) {
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
    off = 0;
    for (int32_t i = 0; out->merge_offsets && i < nm; i++) {
        size_t len;
        const char *p = kd_tokenizer_merge(tok, i, &len);
        out->merge_offsets[i] = off;
        memcpy(out->merge_bytes + off, p, len);
        off += (int64_t)len;
    }
    if (out->merge_offsets) out->merge_offsets[nm] = off;
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

/* ---- tokenizer.h5 ---------------------------------------------------------------------- */

int kd_tokenizer_save_h5(const kd_tokenizer *tok, const char *path, kd_err *err) {
    kd_dump_tokenizer dt;
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return kd_errf(err, "%s: path too long", path);
    if (kd_dump_tokenizer_from(tok, &dt, err)) return -1;
    kdd_guard g;
    kdd_enter(&g);
    int rc = -1;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        kdd_h5_fail(err, "%s: cannot create", tmp);
    } else {
        rc = kdd_attr_write_str(f, "format", KD_TOKENIZER_H5_FORMAT) || kdd_attr_write_i64(f, "version", 1)
                 ? kdd_h5_fail(err, "%s: cannot write the root attributes", tmp)
                 : kdd_write_tokenizer(f, tmp, &dt, err);
        if (H5Fclose(f) < 0 && !rc) rc = kdd_h5_fail(err, "%s: cannot close", tmp);
    }
    kdd_leave(&g);
    kd_dump_tokenizer_free(&dt);
    if (!rc && rename(tmp, path) != 0) rc = kd_errf(err, "%s: cannot rename to %s", tmp, path);
    if (rc) unlink(tmp);
    return rc;
}

/* The root attributes and the tokenizer group of tokenizer.h5 (HDF5 lock held). */
static int load_h5_locked(const char *path, kd_dump_tokenizer *dt, kd_err *err) {
    char fmt[64] = "";
    int64_t version = 0;
    int rc = -1;
    kdd_stage("the file's superblock");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return kdd_h5_fail(err, "%s: cannot open as HDF5 (truncated or not HDF5?)", path);
    if (!kdd_attr_string(f, path, "format", 1, fmt, sizeof fmt, err) &&
        !kdd_attr_int(f, path, "version", 1, 0, INT32_MAX, &version, err)) {
        if (strcmp(fmt, KD_TOKENIZER_H5_FORMAT))
            kd_errf(err, "%s: attribute 'format' = '%s', expected '%s'", path, fmt, KD_TOKENIZER_H5_FORMAT);
        else if (version != 1)
            kd_errf(err, "%s: attribute 'version' = %lld, expected 1", path, (long long)version);
        else
            rc = kdd_read_tokenizer(f, path, KD_TOK_MAX_VOCAB, dt, err);
    }
    H5Fclose(f);
    return rc;
}

static int probe_h5(const char *path, kd_err *err) {
    kd_dump_tokenizer dt;
    memset(&dt, 0, sizeof dt);
    int rc = load_h5_locked(path, &dt, err);
    kd_dump_tokenizer_free(&dt);
    return rc;
}

kd_tokenizer *kd_tokenizer_load_h5(const char *path, kd_err *err) {
    kd_dump_tokenizer dt;
    memset(&dt, 0, sizeof dt);
    kdd_guard g;
    kdd_enter(&g);
    int rc = kdd_probe(path, "kd tokenizer.h5", probe_h5, err) ? -1 : load_h5_locked(path, &dt, err);
    kdd_leave(&g);
    kd_tokenizer *tok = rc ? NULL : kd_tokenizer_from_dump(&dt, path, err);
    kd_dump_tokenizer_free(&dt);
    return tok;
}

kd_tokenizer *kd_tokenizer_open(const char *path, kd_err *err) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char head[8] = {0};
    FILE *f = fopen(path, "rb");
    int h5 = f && fread(head, 1, 8, f) == 8 && !memcmp(head, sig, 8);
    if (f) fclose(f);
    return h5 ? kd_tokenizer_load_h5(path, err) : kd_tokenizer_load(path, err);
}

const char *kd_tokenizer_dir_file(const kd_tokenizer *tok) {
    return strcmp(kd_tokenizer_model(tok), "gpt2") ? "tokenizer.bin" : "tokenizer.h5";
}

int kd_tokenizer_load_dir(const char *dir, kd_tokenizer **out, kd_err *err) {
    char p[4096];
    *out = NULL;
    if (kd_path_join(p, sizeof p, dir, "tokenizer.h5", err)) return -1;
    if (kd_file_exists(p)) return (*out = kd_tokenizer_load_h5(p, err)) ? 0 : -1;
    if (kd_path_join(p, sizeof p, dir, "tokenizer.bin", err)) return -1;
    if (kd_file_exists(p)) return (*out = kd_tokenizer_load(p, err)) ? 0 : -1;
    if (kd_path_join(p, sizeof p, dir, "tokenizer.json", err)) return -1;   /* e.g. a transformers directory */
    if (kd_file_exists(p)) return (*out = kd_tokenizer_load_hf(dir, err)) ? 0 : -1;
    return 0;
}

int kd_tokenizer_save_dir(const kd_tokenizer *tok, const char *dir, kd_err *err) {
    char p[4096];
    const char *name = kd_tokenizer_dir_file(tok);
    if (kd_path_join(p, sizeof p, dir, name, err)) return -1;
    if (strcmp(name, "tokenizer.h5") ? kd_tokenizer_write_llama2c(tok, p, err) : kd_tokenizer_save_h5(tok, p, err))
        return -1;
    kd_tokenizer_save_hf_or_warn(tok, dir);
    return 0;
}

void kd_tokenizer_save_hf_or_warn(const kd_tokenizer *tok, const char *dir) {
    kd_err e = {{0}};
    if (kd_tokenizer_save_hf(tok, dir, &e)) kd_warn("%s: no tokenizer.json for transformers: %s", dir, e.msg);
}
