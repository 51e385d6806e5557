/*
 * kd_online.c — the teacher's distribution computed per batch (see kd_online.h).
 */
#include "train/kd_online.h"

#include <stdlib.h>
#include <string.h>

#include "student/kd_checkpoint.h"
#include "teacher/kd_teacher_dump.h"

int kd_online_open(kd_online *t, const char *path, int64_t k, int64_t student_vocab, kd_err *err) {
    memset(t, 0, sizeof *t);
    if (kd_model_load_flags(&t->m, path, KD_MODEL_NO_GRAD, err)) return kd_err_prefix(err, "teacher %s", path);
    const int64_t V = t->m.cfg.vocab_size;
    int rc = 0;
    if (V != student_vocab)
        rc = kd_errf(err, "teacher %s: vocabulary of %lld tokens, the student's has %lld (they must be the same)", path,
                     (long long)V, (long long)student_vocab);
    else if (k > V)
        rc = kd_errf(err, "teacher_topk %lld exceeds the teacher's vocabulary (%s: %lld)", (long long)k, path,
                     (long long)V);
    else
        rc = kd_graph_init(&t->g, 0, err);
    if (rc) {
        kd_model_free(&t->m);
        memset(t, 0, sizeof *t);
        return -1;
    }
    t->g.no_grad = 1;
    t->k = k;
    return 0;
}

void kd_online_close(kd_online *t) {
    if (!t->m.params) return;
    kd_graph_free(&t->g);
    kd_model_free(&t->m);
    free(t->ids);
    free(t->lp);
    memset(t, 0, sizeof *t);
}

int kd_online_fill(kd_online *t, const int32_t *tokens, int64_t B, int64_t T, kd_loss_batch *lb, kd_err *err) {
    const int64_t N = B * T, V = t->m.cfg.vocab_size, k = t->k;
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return kd_errf(err, "teacher: token %d at position %lld is outside its vocabulary (%lld)", tokens[i],
                           (long long)i, (long long)V);
    if (k > 0 && N > t->cap) {
        free(t->ids);
        free(t->lp);
        t->ids = malloc((size_t)(N * k) * sizeof *t->ids);
        t->lp = malloc((size_t)(N * k) * sizeof *t->lp);
        t->cap = t->ids && t->lp ? N : 0;
        if (!t->cap) return kd_errf(err, "teacher: out of memory for the top-%lld of %lld positions", (long long)k,
                                    (long long)N);
    }
    kd_graph_reset(&t->g);
    t->g.no_grad = 1;
    kd_tensor *lg = kd_model_logits(&t->g, &t->m, tokens, B, T);   /* [B, T, V], as kd teacher dump */
    if (k > 0) {
#pragma omp parallel for
        for (int64_t r = 0; r < N; r++) kd_topk_logprobs(lg->data + r * V, V, k, t->ids + r * k, t->lp + r * k);
        lb->teacher_logits = NULL;
        lb->topk_ids = t->ids;
        lb->topk_logprobs = t->lp;
        lb->k = k;
    } else {
        lb->teacher_logits = lg->data;   /* in the graph's arena until the next reset */
        lb->topk_ids = NULL;
        lb->topk_logprobs = NULL;
        lb->k = 0;
    }
    return 0;
}

int64_t kd_online_work_bytes(const kd_config *c, int64_t B, int64_t T, int64_t k) {
    const int64_t N = B * T, C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    const int64_t qd = c->num_attention_heads * c->head_dim, kvd = c->num_key_value_heads * c->head_dim;
    /* the no-grad forward keeps every layer's outputs in its arena (as kd_plan's forward count) */
    int64_t act = c->num_hidden_layers * N * (6 * C + 3 * qd + 3 * kvd + 3 * F) + 2 * N * C;
    return (act + N * V) * (int64_t)sizeof(float) + N * k * 8;
}
