/*
 * kd_eval.h — the evaluation of a model against a teacher dump: one definition
 * of every metric, used by the trainer's periodic `eval` lines, final_eval.json,
 * the sweep table (which reads final_eval.json) and `kd eval`.
 *
 * Over the valid positions (label ≠ KD_IGNORE_INDEX) of the batches scored:
 *   ce      mean −log softmax(z)_y, the true next token (nats)
 *   ppl     exp(ce)
 *   kl      mean forward KL(teacher ‖ model) at T = 1 over the distribution the
 *           dump stores: a top-k dump gives k + 1 buckets, the top-k tokens and
 *           a tail bucket holding the rest of the vocabulary (kd_loss.h,
 *           KD_TEACHER_TOPK_TAIL at T = 1); a full-logit dump the full softmax
 *   top1    fraction of positions where the model's argmax is the teacher's
 *   xent    sampled dumps only (distribution "sampled"): mean −Σ p̂_i log softmax(z)_i over
 *           the drawn ids, p̂ = count / N: an unbiased estimate of the cross-entropy
 *           H(p, s) = KL(p‖s) + H(p) against the teacher's full p. kl and top1 are not
 *           reported for such dumps (NAN, absent from the JSON): KL(p̂‖s) is a biased
 *           estimate of KL(p‖s) (by H(p) − E[H(p̂)] > 0, which H(p) alone would fix, and
 *           the dump does not hold H(p)), and the most drawn id is a noisy argmax
 *   tokens  positions scored
 * kl and top1 exist only when the dump has a teacher distribution (NAN for a
 * tokens-only dump, and absent from the JSON).
 *
 * None of this depends on how the model was trained: kd_mode, divergence,
 * temperature and alpha of a run change what is optimised, never what is
 * reported here, so runs trained with different losses compare on the same
 * numbers.
 */
#ifndef KD_EVAL_H
#define KD_EVAL_H

#include <stdint.h>

#include <cJSON.h>

#include "train/kd_loss.h"

typedef struct kd_eval_result {
    double ce, ppl, kl, top1;   /* kl, top1: NAN without a teacher distribution, or on a sampled dump */
    double xent;                /* sampled dumps: −Σ p̂ log s (NAN otherwise) */
    int64_t tokens;
} kd_eval_result;

/* Running sums (plain doubles, so that ranks can all-reduce them as KD_EVAL_NSUMS values). */
enum { KD_EVAL_CE, KD_EVAL_KL, KD_EVAL_TOP1, KD_EVAL_N, KD_EVAL_XENT, KD_EVAL_SAMPLED, KD_EVAL_NSUMS };
typedef struct kd_eval_acc {
    double sum[KD_EVAL_NSUMS];   /* ce·n, kl·n, top-1 agreements, n, xent·n, positions from sampled dumps */
    int teacher;                 /* a batch with a teacher distribution was scored */
} kd_eval_acc;

/* The loss options that define the metrics for a batch: α 1 (0 without a teacher), T 1,
 * forward, topk_tail for top-k data, full for full logits. */
kd_loss_opts kd_eval_loss_opts(const kd_loss_batch *b);

/* Score one batch: the model's final hidden states [N, C] (after the last norm) and its LM
 * head [V, C], against b (labels, and the teacher's top-k or full logits, or neither for
 * tokens only). Adds into acc. */
int kd_eval_batch(kd_eval_acc *acc, const float *hidden, const float *head, int64_t N, int64_t C, int64_t V,
                  const kd_loss_batch *b, kd_err *err);

/* The metrics of the sums (ce 0, ppl 1 when nothing was scored). */
kd_eval_result kd_eval_result_of(const kd_eval_acc *acc);

/* {"ppl", "ce", "kl", "top1", "xent", "tokens"}: final_eval.json, the eval lines of metrics.jsonl and
 * `kd eval` (kl, top1 and xent left out when NAN). */
cJSON *kd_eval_to_json(const kd_eval_result *e);
/* The same keys back (missing kl/top1/xent → NAN); ce, ppl and tokens are required. name: for messages. */
int kd_eval_from_json(const cJSON *o, const char *name, kd_eval_result *e, kd_err *err);

#endif
