/*
 * fuzz_gguf.c — fuzz target: a GGUF file through the container reader, the
 * F32 model loader (student/kd_gguf_model.c, with its tokenizer) and the
 * inference engine (infer/kd_infer.c): open, evaluate a 2-token prompt,
 * sample 3 tokens and decode them.
 */
#include <stdlib.h>
#include <string.h>

#include "data/kd_tokenizer.h"
#include "format/kd_gguf.h"
#include "infer/kd_infer.h"
#include "student/kd_gguf_model.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = kdf_write_temp("model.gguf", data, size);
    kd_err err = {{0}};
    kd_gguf *g = kd_gguf_open(path, &err);
    if (!g) {
        kdf_rejected(path, &err);
        return 0;
    }
    for (int64_t i = 0; i < kd_gguf_n_tensors(g); i++) (void)kd_gguf_tensor_at(g, i)->name[0];
    kd_gguf_close(g);

    kd_model m;
    kd_tokenizer *tok = NULL;
    if (kd_model_load_gguf_flags(&m, path, &tok, KD_MODEL_NO_GRAD, &err)) {
        kdf_rejected(path, &err);
    } else {
        kd_model_free(&m);
        kd_tokenizer_free(tok);
    }

    kd_infer_opts o;
    kd_infer_opts_init(&o);
    o.n_ctx = 8;
    kd_infer *e = kd_infer_open(path, &o, &err);
    if (!e) {
        kdf_rejected(path, &err);
        return 0;
    }
    kd_sampler s;
    int32_t prompt[2] = {e->bos >= 0 && e->bos < e->V ? e->bos : 0, (int32_t)(1 % e->V)}, out[3];
    int64_t n_out = 0;
    if (!kd_sampler_init(&s, e->V, 1.0f, 5, 0.9f, 7, &err)) {
        if (!kd_infer_generate(e, prompt, 2, 3, &s, out, &n_out, NULL, NULL, &err) && e->tok) {
            char *text = NULL;
            size_t len;
            if (!kd_tokenizer_decode(e->tok, out, (size_t)n_out, 0, &text, &len, &err)) free(text);
        }
        kd_sampler_free(&s);
    }
    kd_infer_close(e);
    return 0;
}
