/*
 * kd_online.h — online distillation: the teacher runs forward in-process on
 * each batch's tokens, so no distribution is stored (run-config key
 * "teacher", train/kd_run_config.h).
 *
 * The teacher is any model kd loads (a checkpoint directory, a GGUF —
 * quantized files are dequantized to F32 — or a llama2.c .bin), held in F32.
 * Its distribution is computed exactly as `kd teacher dump --text` computes
 * the one it stores: the same forward (kd_model_logits) and the same top-k
 * selection (kd_topk_logprobs), so an online run and an offline run on the
 * same tokens see the same numbers, up to the dump's float16 rounding of the
 * stored log-probs (and float summation order when batches differ).
 *
 *   kd_online t;
 *   kd_online_open(&t, "teacher/", 64, student_vocab, &err);
 *   kd_online_fill(&t, tokens, B, T, &loss_batch, &err);   // per batch
 *   kd_online_close(&t);
 */
#ifndef KD_ONLINE_H
#define KD_ONLINE_H

#include <stdint.h>

#include "autograd/kd_ops.h"
#include "core/kd_err.h"
#include "student/kd_model.h"
#include "train/kd_loss.h"

typedef struct kd_online {
    kd_model m;          /* the teacher, F32 */
    kd_graph g;          /* its forward (no gradients) */
    int64_t k;           /* top-k log-probs per position; 0 = full logits */
    int32_t *ids;        /* [cap, k] */
    float *lp;           /* [cap, k] */
    int64_t cap;         /* rows the buffers hold */
} kd_online;

/* Load the teacher at path; its vocabulary must be student_vocab (the student's
 * logits and the teacher's must mean the same tokens). */
int kd_online_open(kd_online *t, const char *path, int64_t k, int64_t student_vocab, kd_err *err);
void kd_online_close(kd_online *t);

/* The teacher's distribution on tokens [B, T] into lb's teacher fields (top-k
 * ids and log-probs at T = 1, or full logits); lb->labels is left as it is.
 * Valid until the next call. */
int kd_online_fill(kd_online *t, const int32_t *tokens, int64_t B, int64_t T, kd_loss_batch *lb, kd_err *err);

/* Bytes of a teacher forward on B × T tokens beyond the teacher's weights (its
 * no-grad activations, the logits, the top-k buffers), for memory planning. */
int64_t kd_online_work_bytes(const kd_config *teacher, int64_t B, int64_t T, int64_t k);

#endif
