/*
 * kd_llama2c.c — llama2.c checkpoint import (see kd_llama2c.h).
 */
#include "student/kd_llama2c.h"

#include <stdlib.h>
#include <string.h>

#include "core/kd_file.h"

void kd_rope_permute_rows(float *w, int64_t n_heads, int64_t D, int64_t cols, int to_half) {
    float *tmp = malloc((size_t)(D * cols) * sizeof(float));
    if (!tmp) abort();
    int64_t half = D / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float *head = w + h * D * cols;
        memcpy(tmp, head, (size_t)(D * cols) * sizeof(float));
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                int64_t r_half = j * half + i, r_pairs = 2 * i + j;
                int64_t dst = to_half ? r_half : r_pairs, src = to_half ? r_pairs : r_half;
                memcpy(head + dst * cols, tmp + src * cols, (size_t)cols * sizeof(float));
            }
    }
    free(tmp);
}

int kd_llama2c_load_flags(kd_model *m, const char *path, int flags, kd_err *err) {
    kd_mmap map;
    memset(m, 0, sizeof *m);
    if (kd_mmap_open(&map, path, err)) return -1;
    int rc = -1;
    int32_t h[7];
    if (map.len < sizeof h) {
        kd_errf(err, "%s: %zu bytes, too short for the 28-byte llama2.c header", path, map.len);
        goto done;
    }
    memcpy(h, map.data, sizeof h);
    static const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    static const char *const what[7] = {
        "the model width, in [1, 1048576]", "the FFN width, in [1, 1048576]", "the layer count, in [1, 1048576]",
        "the attention head count, in [1, 1048576]", NULL,
        "the vocabulary size, nonzero with |vocab_size| ≤ 1048576 (negative: an unshared output head)",
        "the context length, in [1, 1048576]"};
    for (int i = 0; i < 7; i++) {
        int64_t v = i == 5 ? llabs((int64_t)h[i]) : h[i];   /* (int64_t: abs(INT32_MIN) overflows) */
        int bad = v <= 0 || v > (1 << 20);
        if (i == 4) bad = h[4] <= 0 || h[4] > h[3] || h[3] % h[4] != 0;
        if (i == 4 && bad) {
            kd_errf(err, "%s: header field n_kv_heads = %d, expected a divisor of n_heads = %d (1 ≤ n_kv_heads ≤ %d; "
                    "n_heads = n_kv_heads without grouped-query attention)", path, h[4], h[3], h[3]);
            goto done;
        }
        if (bad) {
            kd_errf(err, "%s: header field %s = %d, expected %s", path, names[i], h[i], what[i]);
            goto done;
        }
    }
    kd_config c;
    kd_config_defaults(&c);
    c.hidden_size = h[0];
    c.intermediate_size = h[1];
    c.num_hidden_layers = h[2];
    c.num_attention_heads = h[3];
    c.num_key_value_heads = h[4];
    c.vocab_size = llabs((int64_t)h[5]);
    c.max_position_embeddings = h[6];
    c.tie_word_embeddings = h[5] > 0;
    c.head_dim = c.hidden_size / c.num_attention_heads;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-5;
    if (kd_config_validate(&c, path, err)) goto done;
    int64_t C = c.hidden_size, F = c.intermediate_size, L = c.num_hidden_layers, V = c.vocab_size, D = c.head_dim;
    int64_t kvd = c.num_key_value_heads * D, T = c.max_position_embeddings;
    int64_t n_floats = V * C + L * (2 * C + C * C + 2 * kvd * C + C * C + 3 * F * C) + C + T * D + (h[5] < 0 ? V * C : 0);
    if ((int64_t)map.len != 28 + 4 * n_floats) {
        kd_errf(err, "%s: %zu bytes, expected %lld for dim %d, hidden_dim %d, %d layers, vocab %d, seq_len %d", path,
                map.len, (long long)(28 + 4 * n_floats), h[0], h[1], h[2], h[5], h[6]);
        goto done;
    }
    if (kd_model_new_flags(m, &c, flags, err)) goto done;
    const unsigned char *p = map.data + 28;
    /* each array is copied, then its mapped pages dropped: the file is never resident whole */
#define TAKE(dst, count)                                           \
    do {                                                           \
        memcpy((dst), p, (size_t)(count) * sizeof(float));         \
        kd_mmap_release(&map, p, (size_t)(count) * sizeof(float)); \
        p += (size_t)(count) * sizeof(float);                      \
    } while (0)
    TAKE(m->embed->data, V * C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].attn_norm->data, C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].wq->data, C * C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].wk->data, kvd * C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].wv->data, kvd * C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].wo->data, C * C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].ffn_norm->data, C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].w_gate->data, F * C);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].w_down->data, C * F);
    for (int64_t l = 0; l < L; l++) TAKE(m->layers[l].w_up->data, F * C);
    TAKE(m->norm->data, C);
    p += (size_t)(T * D) * sizeof(float);        /* freq_cis_real, freq_cis_imag: recomputed */
    if (m->lm_head) TAKE(m->lm_head->data, V * C);
#undef TAKE
    if (kd_model_check_finite(m, path, err)) {
        kd_model_free(m);
        goto done;
    }
    for (int64_t l = 0; l < L; l++) {
        kd_rope_permute_rows(m->layers[l].wq->data, c.num_attention_heads, D, C, 1);
        kd_rope_permute_rows(m->layers[l].wk->data, c.num_key_value_heads, D, C, 1);
    }
    rc = 0;
done:
    kd_mmap_close(&map);
    return rc;
}

int kd_llama2c_load(kd_model *m, const char *path, kd_err *err) { return kd_llama2c_load_flags(m, path, 0, err); }
