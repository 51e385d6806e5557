/*
 * kd_loss.h — the distillation loss: LM head + softmaxes + CE/KL + backward,
 * fused and computed in chunks of rows so that the [N, V] logits never exist.
 *
 * For each valid token t (label ≠ KD_IGNORE_INDEX), with student logits
 * z_s = h_t·Wᵀ (h: final hidden [N, C], W: LM head [V, C]) and p^T = softmax(z/T):
 *
 *   ℓ_t = (1−α)·CE(y_t, softmax(z_s)) + α·T²·D_T(teacher, student)
 *   L   = Σ_valid ℓ_t / N_valid                      (0 when no token is valid)
 *
 * The divergence D_T depends on how the teacher is given (kd_teacher_mode) and
 * on the direction (kd_divergence):
 *
 *   KD_TEACHER_FULL       teacher logits z_t [N, V]: q = softmax(z_t/T);
 *                         forward KL(q‖p_s^T) or reverse KL(p_s^T‖q).
 *   KD_TEACHER_TOPK_ZERO  top-k ids [N, k] + log-probs [N, k] (at T = 1): the
 *                         teacher is re-tempered and renormalised over its top-k
 *                         set K (q_i ∝ p_i^{1/T}, zero elsewhere); the student is
 *                         log_softmax(z/T) over the FULL vocabulary, gathered at K:
 *                         D = Σ_K q_i (log q_i − log p_s,i). Forward only: the
 *                         reverse KL against a teacher with zero mass outside K is
 *                         infinite, so that combination is rejected.
 *   KD_TEACHER_TOPK_TAIL  k+1 buckets: the top-k tokens plus a "rest" bucket, built for
 *                         both sides at T = 1 and then tempered the same way. Teacher:
 *                         p_i = exp(logprob_i) for i ∈ K, m_t = max(0, 1 − Σ_K p_i).
 *                         Student: s_i = softmax(z)_i for i ∈ K, s_tail = 1 − Σ_K s_i
 *                         (computed as log s_tail = logsumexp_{j∉K} z_j − logsumexp_j z_j).
 *                         Each bucket vector b is tempered as b_i^{1/T} / Σ_b' b'^{1/T},
 *                         i.e. softmax((log b)/T) over the k+1 entries: q (teacher) and
 *                         P (student). Forward: KL(q‖P); reverse: KL(P‖q).
 *                         Why: a student whose buckets equal the teacher's has D_T = 0 at
 *                         every T, and its gradient there is 0. (The previous rule tempered
 *                         the student token by token, softmax(z/T), so its tail was
 *                         Σ_{j∉K} p_j^{1/T} against the teacher's single m_t^{1/T}: D_T > 0
 *                         for an identical student, which was pushed to shrink its tail.)
 *                         At T = 1 both rules agree (up to the tiny-tail case below). The
 *                         gradient reaches every token: those in the tail through log s_tail,
 *                         in proportion to softmax(z)_j.
 *                         Tiny teacher tail (m_t ≤ 1e-6, DistillKit's threshold): forward
 *                         treats it as 0 (noise of Σ_K p_i ≈ 1, which tempering would inflate:
 *                         (1e-7)^{1/4} ≈ 0.018): the teacher's tail bucket is dropped before
 *                         tempering, its K buckets are renormalised, there is no tail term
 *                         (0·log 0), and the student is pushed to empty its tail bucket. (At
 *                         T = 1 this differs from the older "skip the tail term" rule, which
 *                         has the same minimiser, by about m_t·(1 + D) in such a row.)
 *                         Reverse floors m_t at 1e-6 before tempering (a zero teacher tail
 *                         would make KL(P‖q) infinite). When K covers the whole vocabulary
 *                         there is no tail bucket on either side.
 *
 *   KD_TEACHER_SAMPLED    sampled classes (RS-KD, a dump of distribution "sampled"): the
 *                         top-k inputs hold the distinct ids of N i.i.d. draws from the
 *                         teacher's p (T = 1) with log p̂_i = log(count_i / N). The term is
 *                         D = Σ_K p̂_i (log p̂_i − log s_i), s = softmax(z) over the FULL
 *                         vocabulary: the topk_zero computation at T = 1 (p̂ sums to 1, so
 *                         renormalising changes nothing). Its gradient, s_j − p̂_j, has
 *                         expectation s_j − p_j (E[p̂] = p): unbiased for the gradient of the
 *                         full KL(p‖s). The value D is a biased estimate of KL(p‖s) (it is
 *                         H(p̂, s) − H(p̂), and E[H(p̂)] < H(p)); −Σ p̂ log s alone is unbiased
 *                         for H(p, s). Only T = 1 and the forward divergence: p̂^{1/T}
 *                         renormalised is not an unbiased estimate of p^{1/T}/Z, and the
 *                         reverse KL against a sparse p̂ is infinite; both are refused.
 *
 * Top-k inputs: slots sorted by log-prob (descending, not required), padded
 * with id −1 and/or log-prob −inf (such slots are ignored). Ids must lie in
 * [0, V) and be distinct within a row. Teacher values of ignored rows are never
 * read. NaN or +inf in the teacher inputs of a valid row, −inf teacher logits
 * with the reverse divergence (infinite KL), a row whose teacher logits are all
 * −inf, and a topk_zero row with no usable slot are errors naming the row.
 *
 * Memory: besides inputs and outputs, O(chunk_rows × (V + C + k)) scratch
 * (kd_alloc'd and freed in the call, see kd_distill_scratch_bytes) plus an
 * index of the valid rows (N int64). Only valid rows are computed: ignored
 * rows cost nothing and get a zero gradient.
 */
#ifndef KD_LOSS_H
#define KD_LOSS_H

#include <stddef.h>
#include <stdint.h>

#include "autograd/kd_ops.h"

typedef enum kd_teacher_mode {
    KD_TEACHER_FULL = 0,       /* full teacher logits [N, V] */
    KD_TEACHER_TOPK_ZERO = 1,  /* top-k log-probs, zero mass outside the top-k */
    KD_TEACHER_TOPK_TAIL = 2,  /* top-k log-probs plus a tail bucket */
    KD_TEACHER_SAMPLED = 3,    /* sampled classes: p̂ = count / N over the drawn ids (RS-KD), T = 1 */
} kd_teacher_mode;

typedef enum kd_divergence {
    KD_DIV_FORWARD = 0,        /* KL(teacher ‖ student) */
    KD_DIV_REVERSE = 1,        /* KL(student ‖ teacher) */
} kd_divergence;

#define KD_LOSS_DEFAULT_CHUNK 256

typedef struct kd_loss_opts {
    float alpha;              /* weight of the KD term, in [0, 1] (0: pure CE) */
    float temperature;        /* T > 0 */
    kd_teacher_mode mode;
    kd_divergence div;
    int64_t chunk_rows;       /* rows per chunk; 0 → KD_LOSS_DEFAULT_CHUNK */
    int grad_into_params;     /* kd_distill_loss: add W's gradient straight into head->grad
                                 (see there); ignored by kd_distill_eval */
} kd_loss_opts;

typedef struct kd_loss_batch {
    const int32_t *labels;          /* [N]: target ids, or KD_IGNORE_INDEX */
    const float *teacher_logits;    /* [N, V] (KD_TEACHER_FULL) */
    const int32_t *topk_ids;        /* [N, k] (top-k modes) */
    const float *topk_logprobs;     /* [N, k], log-probs at T = 1 (sampled: log p̂ = log(count / N)) */
    int64_t k;
    int sampled;                    /* the top-k inputs are sampled classes (a dump of distribution "sampled") */
} kd_loss_batch;

typedef struct kd_loss_stats {
    double loss;              /* L */
    double ce;                /* mean CE over valid tokens */
    double kl;                /* mean D_T over valid tokens (without the T² factor) */
    double kl_t1;             /* mean of the same divergence at T = 1 */
    int64_t n_valid;
    int64_t top1_agree;       /* valid tokens where argmax student == argmax teacher */
} kd_loss_stats;

/* α 0.5, T 1, full, forward, default chunk, grad_into_params 0. */
kd_loss_opts kd_loss_opts_default(void);
/* Reject out-of-range values and ill-defined combinations (topk_zero + reverse). */
int kd_loss_opts_check(const kd_loss_opts *o, kd_err *err);

/* "full" / "topk_zero" / "topk_tail" / "sampled" and "forward" / "reverse" (for configs). */
const char *kd_teacher_mode_name(kd_teacher_mode m);
const char *kd_divergence_name(kd_divergence d);
int kd_teacher_mode_parse(const char *s, kd_teacher_mode *out, kd_err *err);
int kd_divergence_parse(const char *s, kd_divergence *out, kd_err *err);

/* Upper bound of the scratch one call allocates (and frees) for N rows, C channels, vocabulary V, top-k k. */
size_t kd_distill_scratch_bytes(const kd_loss_opts *o, int64_t N, int64_t C, int64_t V, int64_t k);

/*
 * The loss as a graph op. hidden [..., C] (N = its rows), head [V, C]. Returns
 * a [1] tensor holding L (NULL with err on bad options or data; shape
 * mismatches abort). The teacher is a constant. When a gradient is needed
 * (graph recording, hidden or head requiring grad), the forward pass already
 * computes dL/dhidden into an arena [N, C] buffer and dL/dhead into an arena
 * [V, C] buffer; the recorded backward adds upstream·those into the grads.
 *
 * grad_into_params (saves the [V, C] buffer, 1.5 GB for a 3B model's head):
 * dL/dhead is added directly into head->grad during THIS CALL (head must be a
 * parameter). The loss must then be the final node, back-propagated with seed 1
 * (kd_graph_backward); another upstream gradient aborts in backward. The head's
 * gradient is in place even if backward never runs, and on an error found after
 * the first chunk (non-finite student logits) it is partly accumulated: treat the
 * step as failed. Teacher and label errors are found before any gradient is written.
 * st (may be NULL) receives the statistics.
 */
kd_tensor *kd_distill_loss(kd_graph *g, kd_tensor *hidden, kd_tensor *head, const kd_loss_batch *b,
                           const kd_loss_opts *o, kd_loss_stats *st, kd_err *err);

/* The same loss and statistics without gradients (validation). hidden [N, C], head [V, C]. */
int kd_distill_eval(const float *hidden, const float *head, int64_t N, int64_t C, int64_t V, const kd_loss_batch *b,
                    const kd_loss_opts *o, kd_loss_stats *st, kd_err *err);

#endif
