/*
 * test_gguf_model.c — GGUF files load back as trainable kd models: the F32
 * export of the real aidreams260K teacher gives back the checkpoint's weights
 * exactly (q/k rows permuted back to the HF layout) and the same logits; a
 * Q8_0 export gives the dequantized weights; the tokenizer comes along.
 */
#include "kd_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"
#include "data/kd_tokenizer.h"
#include "student/kd_checkpoint.h"
#include "student/kd_gguf_model.h"
#include "format/kd_quant.h"

static void test_roundtrip(void **state) {
    (void)state;
    const char *tmp = kd_test_tmpdir(), *kd = kd_test_env("KD_BIN"), *shared = kd_test_env("KD_DATA_DIR");
    assert_int_equal(kd_test_sh("'%s' import llama2c --model '%s/models/aidreams260K/aidreams260K.bin' --tokenizer "
                                "'%s/models/aidreams260K/tok512.bin' --out '%s/ck' >/dev/null && "
                                "'%s' export --model '%s/ck' --type f32 --out '%s/f32.gguf' 2>/dev/null && "
                                "'%s' export --model '%s/ck' --type q8_0 --out '%s/q8.gguf' 2>/dev/null",
                                kd, shared, shared, tmp, kd, tmp, tmp, kd, tmp, tmp), 0);
    char p[600];
    kd_err err;
    kd_model ck, f32, q8;
    snprintf(p, sizeof p, "%s/ck", tmp);
    assert_int_equal(kd_checkpoint_load(&ck, p, &err), 0);
    snprintf(p, sizeof p, "%s/f32.gguf", tmp);
    kd_tokenizer *tok = NULL;
    assert_int_equal(kd_model_load_gguf(&f32, p, &tok, &err), 0);
    assert_non_null(tok);
    assert_int_equal(kd_tokenizer_n_vocab(tok), 512);
    kd_tokenizer_free(tok);
    assert_true(f32.cfg.hidden_size == 64 && f32.cfg.num_hidden_layers == 4 && f32.cfg.tie_word_embeddings);
    assert_int_equal(f32.n_params, ck.n_params);
    for (int i = 0; i < ck.n_params; i++)
        assert_memory_equal(f32.params[i]->data, ck.params[i]->data, (size_t)ck.params[i]->n * sizeof(float));
    /* through kd_model_load (magic detection) as well */
    snprintf(p, sizeof p, "%s/q8.gguf", tmp);
    assert_int_equal(kd_model_load(&q8, p, &err), 0);
    /* Q8_0 tensors equal the checkpoint's fake-quantized weights (q/k: quantized in GGUF row order,
     * so compare the un-permuted ones: v, o, gate, up; down has 172 columns and stays F16) */
    kd_tensor *a = kd_model_param(&q8, "model.layers.2.self_attn.v_proj.weight");
    kd_tensor *b = kd_model_param(&ck, "model.layers.2.self_attn.v_proj.weight");
    float *fq = malloc((size_t)b->n * sizeof(float));
    assert_int_equal(kd_fake_quant_rows(KD_GGML_TYPE_Q8_0, b->data, fq, b->shape[0], b->shape[1], &err), 0);
    assert_memory_equal(a->data, fq, (size_t)b->n * sizeof(float));
    free(fq);
    kd_model_free(&ck);
    kd_model_free(&f32);
    kd_model_free(&q8);
    /* logits of the F32 GGUF through the command line equal the checkpoint's (≤ 1e-4 of the largest) */
    assert_int_equal(kd_test_sh("'%s' logits --model '%s/ck' --tokens '1 403 407 261' --out '%s/a.f32' && "
                                "'%s' logits --model '%s/f32.gguf' --tokens '1 403 407 261' --out '%s/b.f32'",
                                kd, tmp, tmp, kd, tmp, tmp), 0);
    size_t la, lb;
    snprintf(p, sizeof p, "%s/a.f32", tmp);
    float *la_ = (float *)kd_read_file(p, &la, NULL);
    snprintf(p, sizeof p, "%s/b.f32", tmp);
    float *lb_ = (float *)kd_read_file(p, &lb, NULL);
    assert_non_null(la_);
    assert_non_null(lb_);
    assert_int_equal(la, 4 * 512 * 4);
    assert_int_equal(la, lb);
    double mx = 0, e = 0;
    for (int i = 0; i < 4 * 512; i++) {
        mx = fmax(mx, fabs(la_[i]));
        e = fmax(e, fabs(la_[i] - lb_[i]));
    }
    assert_true(e <= 1e-4 * mx);
    free(la_);
    free(lb_);
}

/* A GGUF file is a teacher too: its tokenizer comes from its metadata, and the F32 export's
 * dump equals the checkpoint's (same weights, same tokenizer). */
static void test_gguf_teacher(void **state) {
    (void)state;
    const char *tmp = kd_test_tmpdir(), *kd = kd_test_env("KD_BIN");
    char txt[600];
    snprintf(txt, sizeof txt, "%s/t.txt", tmp);
    FILE *f = fopen(txt, "w");
    fputs("The robot dreamed of stars and quiet circuits.\nA whisper of code in the night.\n", f);
    fclose(f);
    assert_int_equal(kd_test_sh("'%s' teacher dump --teacher '%s/f32.gguf' --text '%s' --seq-len 8 --topk 8 --dtype f32 "
                                "--out '%s/g.h5' --quiet && '%s' teacher dump --teacher '%s/ck' --text '%s' --seq-len 8 "
                                "--topk 8 --dtype f32 --out '%s/c.h5' --quiet && '%s' teacher info '%s/g.h5' >/dev/null",
                                kd, tmp, txt, tmp, kd, tmp, txt, tmp, kd, tmp), 0);
    assert_int_equal(kd_test_sh("h5dump -d topk_ids '%s/g.h5' | tail -n +5 > '%s/g.txt' && h5dump -d topk_ids '%s/c.h5' | "
                                "tail -n +5 > '%s/c.txt' && grep -q DATA '%s/g.txt' && cmp -s '%s/g.txt' '%s/c.txt'", tmp, tmp, tmp, tmp, tmp, tmp, tmp), 0);
}

static void test_errors(void **state) {
    (void)state;
    char p[600];
    snprintf(p, sizeof p, "%s/vocab.gguf", kd_test_tmpdir());
    /* a vocab-only GGUF (llama.cpp's) has no tensors: refused by name */
    kd_model m;
    kd_err err;
    char v[600];
    snprintf(v, sizeof v, "%s/vocab/ggml-vocab-llama-spm.gguf", kd_test_env("KD_DATA_DIR"));
    assert_int_equal(kd_model_load_gguf(&m, v, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "ggml-vocab-llama-spm.gguf"));
}

int main(int argc, char **argv) {
    kd_test_init(argc, argv);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_gguf_teacher),
                                       cmocka_unit_test(test_errors)};
    return KD_RUN_GROUP(tests, NULL, NULL);
}
