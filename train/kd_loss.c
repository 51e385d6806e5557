/*
 * kd_loss.c — the fused, chunked distillation loss (definitions in kd_loss.h).
 *
 * Per chunk of R valid rows (gathered into hc [R, C]):
 *   logits [R, V] = hc · Wᵀ                                  (sgemm)
 *   per row, in place: loss terms, then dlogits = dℓ/dz / N_valid    (OpenMP over rows)
 *   dhc [R, C] = dlogits · W,  scattered into dh             (sgemm)
 *   dW [V, C] += dlogitsᵀ · hc                               (sgemm)
 *
 * Gradients w.r.t. the student logits z of one row, with s = z/T, p = softmax(s),
 * p¹ = softmax(z), lp = log p, and the KD weight α·T² times ∂/∂z = (1/T)·∂/∂s:
 *   CE:          (1−α)·(p¹_j − [j = y])
 *   full fwd:    α·T·(p_j − q_j)
 *   full rev:    α·T·p_j·(lp_j − lq_j − D),               D = Σ p (lp − lq)
 *   top-k zero:  α·T·(p_j − q_j),                          q_j = 0 outside K
 *   top-k tail: k+1 buckets b (each K token alone, the tail = all j ∉ K) built at T = 1 and then
 *   tempered. Bucket logits u_i = z_i (i ∈ K), u_tail = log Σ_{j∉K} e^{z_j}, so softmax(u) = the T = 1
 *   bucket masses (s_i = p¹_i, s_tail = 1 − Σ_K p¹_i) and the tempered student buckets
 *   P_b = s_b^{1/T} / Σ s^{1/T} = softmax(u/T)_b; teacher τ = softmax(v/T), v_i = log p_i,
 *   v_tail = log m_t. With ∂log P_b/∂u_a = ([a = b] − P_a)/T, and the α·T² weight:
 *     forward  D = Σ_b τ_b (log τ_b − log P_b)  (τ_tail = 0 → no tail term):
 *              T·∂D/∂u_a = P_a·Q − τ_a,  Q = Σ_b τ_b (1 up to rounding)
 *     reverse  D = Σ_b P_b (log P_b − log τ_b):  T·∂D/∂u_a = P_a·(log P_a − log τ_a − D)
 *   and the chain to z: ∂u_i/∂z_j = [i = j] for i ∈ K; ∂u_tail/∂z_j = [j ∉ K]·r_j with
 *   r_j = e^{z_j − u_tail} = p¹_j / s_tail, so every tail token gets r_j × (the tail bucket's term):
 *     → j∈K: P_j·Q − τ_j   |  P_j·(log P_j − log τ_j − D)
 *       j∉K: r_j·(P_tail·Q − τ_tail)   |  r_j·P_tail·(log P_tail − log τ_tail − D)
 *   (all times α·T). Unlike top-k zero, the student side never uses softmax(z/T) over the vocabulary:
 *   tempering whole buckets is what makes a student equal to the teacher give D = 0 at every T.
 * Everything is fp32 with max-subtracted log-sum-exps; per-row sums accumulate
 * in double; u_tail is a log-sum-exp over j ∉ K (K masked to −inf), so a tiny
 * student tail never underflows to log 0. Row results are reduced in row order,
 * so the statistics do not depend on the thread count.
 */
#include "train/kd_loss.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/kd_linalg.h"

#define TAIL_EPS 1e-6   /* teacher tail mass (at T = 1) treated as "no tail" (forward) / the floor (reverse) */

/* ---- options -------------------------------------------------------------------- */
static const char *const g_mode_names[] = {"full", "topk_zero", "topk_tail", "sampled"};
static const char *const g_div_names[] = {"forward", "reverse"};

kd_loss_opts kd_loss_opts_default(void) {
    return (kd_loss_opts){.alpha = 0.5f, .temperature = 1.0f, .mode = KD_TEACHER_FULL, .div = KD_DIV_FORWARD,
                          .chunk_rows = KD_LOSS_DEFAULT_CHUNK, .grad_into_params = 0};
}

const char *kd_teacher_mode_name(kd_teacher_mode m) {
    return (unsigned)m < 4 ? g_mode_names[m] : "?";
}

const char *kd_divergence_name(kd_divergence d) {
    return (unsigned)d < 2 ? g_div_names[d] : "?";
}

int kd_teacher_mode_parse(const char *s, kd_teacher_mode *out, kd_err *err) {
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, g_mode_names[i])) {
            *out = (kd_teacher_mode)i;
            return 0;
        }
    return kd_errf(err, "teacher mode '%s': expected full, topk_zero, topk_tail or sampled", s ? s : "(null)");
}

int kd_divergence_parse(const char *s, kd_divergence *out, kd_err *err) {
    for (int i = 0; i < 2; i++)
        if (s && !strcmp(s, g_div_names[i])) {
            *out = (kd_divergence)i;
            return 0;
        }
    return kd_errf(err, "divergence '%s': expected forward or reverse", s ? s : "(null)");
}

int kd_loss_opts_check(const kd_loss_opts *o, kd_err *err) {
    if (!(o->alpha >= 0.0f && o->alpha <= 1.0f))
        return kd_errf(err, "distillation loss: alpha %g outside [0, 1]", o->alpha);
    if (!(o->temperature > 0.0f) || !isfinite(o->temperature))
        return kd_errf(err, "distillation loss: temperature %g must be positive and finite", o->temperature);
    if ((unsigned)o->mode > KD_TEACHER_SAMPLED)
        return kd_errf(err, "distillation loss: unknown teacher mode %d", (int)o->mode);
    if ((unsigned)o->div > KD_DIV_REVERSE)
        return kd_errf(err, "distillation loss: unknown divergence %d", (int)o->div);
    if (o->mode == KD_TEACHER_TOPK_ZERO && o->div == KD_DIV_REVERSE)
        return kd_errf(err, "distillation loss: reverse KL is undefined with teacher mode topk_zero (the teacher has "
                            "zero mass outside its top-k, so KL(student‖teacher) is infinite); use topk_tail or "
                            "the forward divergence");
    if (o->mode == KD_TEACHER_SAMPLED && o->div == KD_DIV_REVERSE)
        return kd_errf(err, "distillation loss: reverse KL is undefined with teacher mode sampled (the sampled "
                            "target p̂ is zero outside the drawn ids); use the forward divergence");
    if (o->mode == KD_TEACHER_SAMPLED && o->temperature != 1.0f && o->alpha > 0.0f)
        return kd_errf(err, "distillation loss: temperature %g with teacher mode sampled: the sampled target "
                            "p̂ = count / N estimates the teacher at T = 1 only (p̂^(1/T) renormalised is not an "
                            "unbiased estimate of p^(1/T)); set temperature 1", o->temperature);
    if (o->chunk_rows < 0)
        return kd_errf(err, "distillation loss: chunk_rows %lld is negative", (long long)o->chunk_rows);
    return 0;
}

static int64_t chunk_of(const kd_loss_opts *o, int64_t n) {
    int64_t R = o->chunk_rows > 0 ? o->chunk_rows : KD_LOSS_DEFAULT_CHUNK;
    return R < n ? R : (n > 0 ? n : 1);
}

typedef struct { double ce, kl, kl1; int agree; } row_out;

size_t kd_distill_scratch_bytes(const kd_loss_opts *o, int64_t N, int64_t C, int64_t V, int64_t k) {
    size_t R = (size_t)chunk_of(o, N);
    return R * (size_t)(V + 2 * C + 2 * k) * sizeof(float) + R * sizeof(row_out) + (size_t)N * sizeof(int64_t);
}

/* ---- per-row math ---------------------------------------------------------------- */
typedef struct {
    int64_t V, k;
    float T;
    kd_teacher_mode mode;
    kd_divergence div;
    int teacher;          /* teacher inputs present */
    int grad;             /* overwrite the row with dlogits */
    float w_ce, w_kd;     /* dlogits weights: (1−α)/N_valid and α·T/N_valid */
} row_cfg;

/* Max of x[0..n) and the first index holding it (−inf and 0 when all are −inf). */
static float row_max(const float *x, int64_t n, int64_t *arg) {
    float m = -INFINITY;
    int64_t a = 0;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > m) {
            m = x[i];
            a = i;
        }
    *arg = a;
    return m;
}

/* Full-teacher divergence at inverse temperature it. Student lp_j = (z_j − zm)·it − ls,
 * teacher lq_j = (zt_j − tm)·it − tl. Forward skips q = 0 entries (0·log 0 = 0). */
static double full_div(kd_divergence div, const float *z, const float *zt, int64_t V, float zm, float tm, float it,
                       float ls, float tl) {
    double D = 0.0;
    for (int64_t j = 0; j < V; j++) {
        float lq = (zt[j] - tm) * it - tl;
        float lp = (z[j] - zm) * it - ls;
        if (div == KD_DIV_FORWARD) {
            if (lq != -INFINITY) D += (double)expf(lq) * (double)(lq - lp);
        } else {
            D += (double)expf(lp) * (double)(lp - lq);
        }
    }
    return D;
}

/* One row, full teacher logits zt [V]. z [V] is overwritten with dlogits when c->grad. */
static void row_full(const row_cfg *c, float *z, const float *zt, int32_t y, row_out *o) {
    const int64_t V = c->V;
    const float iT = 1.0f / c->T;
    int64_t zarg, targ;
    float zm = row_max(z, V, &zarg);
    double S1 = 0.0, ST = 0.0;
    for (int64_t j = 0; j < V; j++) {
        float d = z[j] - zm;
        S1 += expf(d);
        ST += expf(d * iT);
    }
    float ls1 = (float)log(S1), lsT = (float)log(ST);   /* log p¹_j = z_j − zm − ls1 */
    o->ce = (double)zm + log(S1) - (double)z[y];
    o->kl = o->kl1 = 0.0;
    o->agree = 0;
    float tm = 0.0f, tlT = 0.0f;
    if (c->teacher) {
        tm = row_max(zt, V, &targ);
        double U1 = 0.0, UT = 0.0;
        for (int64_t j = 0; j < V; j++) {
            float d = zt[j] - tm;
            U1 += expf(d);
            UT += expf(d * iT);
        }
        tlT = (float)log(UT);
        o->agree = zarg == targ;
        o->kl = full_div(c->div, z, zt, V, zm, tm, iT, lsT, tlT);
        o->kl1 = c->T == 1.0f ? o->kl : full_div(c->div, z, zt, V, zm, tm, 1.0f, ls1, (float)log(U1));
    }
    if (!c->grad) return;
    const int kd = c->teacher && c->w_kd != 0.0f;
    const float D = (float)o->kl;
    for (int64_t j = 0; j < V; j++) {
        float d = z[j] - zm;
        float g = c->w_ce * expf(d - ls1);
        if (kd) {
            float lp = d * iT - lsT, lq = (zt[j] - tm) * iT - tlT;
            float p = expf(lp);
            g += c->w_kd * (c->div == KD_DIV_FORWARD ? p - expf(lq) : p * (lp - lq - D));
        }
        z[j] = g;
    }
    z[y] -= c->w_ce;
}

static int slot_ok(int32_t id, float lp) { return id >= 0 && lp != -INFINITY; }

/* Student side of a top-k row at inverse temperature it: log P_i = (z_i − zm)·it − ls for i ∈ K,
 * log P_tail = lms (−inf without a tail). */
typedef struct { float ls, lms; } stud_lse;

/* lt: log of the tail term at this temperature, relative to the row max zm (−inf without a tail):
 *   topk_zero, softmax(z/T) over the vocabulary:  lt = log Σ_{j∉K} exp((z_j − zm)·it)
 *   topk_tail, tempered T = 1 buckets:            lt = it · log Σ_{j∉K} exp(z_j − zm)
 * zk the K logits. Σ ≥ 1 (the row max is in K or in the tail), so ls is finite and lms = lt − ls
 * stays exact even where exp(lt) underflows. */
static stud_lse topk_student(double lt, const float *zk, const int32_t *ids, const float *lps, int64_t k, float zm,
                             float it) {
    double all = lt == -INFINITY ? 0.0 : exp(lt);
    for (int64_t i = 0; i < k; i++)
        if (slot_ok(ids[i], lps[i])) all += exp((double)(zk[i] - zm) * it);
    stud_lse s = {(float)log(all), -INFINITY};
    if (lt != -INFINITY) s.lms = (float)(lt - log(all));
    return s;
}

/* Teacher buckets at inverse temperature it: lq[i] for usable slots, *lqt for the tail
 * (−inf when there is none). mt: the tail mass at T = 1 to use (already floored / zeroed). */
static void topk_teacher(const int32_t *ids, const float *lps, int64_t k, double mt, float it, float *lq, float *lqt) {
    float lwt = mt > 0.0 ? (float)(log(mt) * it) : -INFINITY, mx = lwt;
    for (int64_t i = 0; i < k; i++)
        if (slot_ok(ids[i], lps[i]) && lps[i] * it > mx) mx = lps[i] * it;
    double Z = lwt == -INFINITY ? 0.0 : exp((double)(lwt - mx));
    for (int64_t i = 0; i < k; i++)
        if (slot_ok(ids[i], lps[i])) Z += exp((double)(lps[i] * it - mx));
    float lZ = mx + (float)log(Z);
    for (int64_t i = 0; i < k; i++) lq[i] = slot_ok(ids[i], lps[i]) ? lps[i] * it - lZ : -INFINITY;
    *lqt = lwt - lZ;
}

/* Top-k divergence given both sides at one temperature; ct: the teacher has a tail bucket
 * (τ_tail > 0). *Q = Σ_b τ_b (forward; 1 up to rounding). */
static double topk_div(const row_cfg *c, const int32_t *ids, const float *lps, const float *zk, float zm, float it,
                       stud_lse s, const float *lq, float lqt, int ct, double *Q) {
    double D = 0.0, qs = 0.0;
    for (int64_t i = 0; i < c->k; i++) {
        if (!slot_ok(ids[i], lps[i])) continue;
        float lp = (zk[i] - zm) * it - s.ls;
        if (c->div == KD_DIV_FORWARD) {
            double q = expf(lq[i]);
            D += q * (double)(lq[i] - lp);
            qs += q;
        } else {
            D += (double)expf(lp) * (double)(lp - lq[i]);
        }
    }
    if (ct) {
        if (c->div == KD_DIV_FORWARD) {
            double qt = expf(lqt);
            D += qt * (double)(lqt - s.lms);
            qs += qt;
        } else {
            D += (double)expf(s.lms) * (double)(s.lms - lqt);
        }
    }
    *Q = qs;
    return D;
}

/* One row, top-k teacher. zk, lq: k floats of scratch. z is overwritten with dlogits when c->grad. */
static void row_topk(const row_cfg *c, float *z, const int32_t *ids, const float *lps, int32_t y, float *zk,
                     float *lq, row_out *o) {
    const int64_t V = c->V, k = c->k;
    const float iT = 1.0f / c->T;
    const int tmode = c->mode == KD_TEACHER_TOPK_TAIL;
    const float zy = z[y];
    int64_t nK = 0;
    double ptot = 0.0;
    for (int64_t i = 0; i < k; i++) {   /* save and mask the K logits */
        if (!slot_ok(ids[i], lps[i])) continue;
        zk[i] = z[ids[i]];
        z[ids[i]] = -INFINITY;
        ptot += exp((double)lps[i]);
        nK++;
    }
    const int tail = nK < V;
    int64_t zarg;
    float M = row_max(z, V, &zarg);     /* over j ∉ K */
    double S1 = 0.0, ST = 0.0;          /* Σ_{j∉K} exp(z_j − M), and at 1/T (topk_zero only) */
    const int needST = !tmode && c->T != 1.0f;
    if (tail)
        for (int64_t j = 0; j < V; j++) {
            float d = z[j] - M;
            S1 += expf(d);
            if (needST) ST += expf(d * iT);
        }
    float zm = tail ? M : -INFINITY;    /* the row max and argmax (lowest index on ties) */
    int64_t tbest = -1;
    for (int64_t i = 0; i < k; i++) {
        if (!slot_ok(ids[i], lps[i])) continue;
        z[ids[i]] = zk[i];                /* unmask */
        if (zk[i] > zm || (zk[i] == zm && ids[i] < zarg)) {
            zm = zk[i];
            zarg = ids[i];
        }
        if (tbest < 0 || lps[i] > lps[tbest]) tbest = i;
    }
    o->agree = tbest >= 0 && ids[tbest] == zarg;
    /* lt1 = log Σ_{j∉K} exp(z_j − zm) = u_tail − zm: the student's T = 1 tail, s_tail = exp(lt1 − s1.ls) */
    const double lt1 = tail ? (double)(M - zm) + log(S1) : -INFINITY;
    stud_lse s1 = topk_student(lt1, zk, ids, lps, k, zm, 1.0f);
    o->ce = (double)zm + (double)s1.ls - (double)zy;

    /* teacher tail mass (T = 1): forward drops a tail ≤ 1e-6 (treated as 0), reverse floors it at 1e-6 */
    double mt = 0.0;
    if (tmode && tail) {
        mt = fmax(0.0, 1.0 - ptot);
        if (c->div == KD_DIV_REVERSE)
            mt = fmax(mt, TAIL_EPS);
        else if (mt <= TAIL_EPS)
            mt = 0.0;
    }
    const int ct = mt > 0.0;
    float lqt;
    double Q;
    if (c->T != 1.0f) {
        topk_teacher(ids, lps, k, mt, 1.0f, lq, &lqt);
        o->kl1 = topk_div(c, ids, lps, zk, zm, 1.0f, s1, lq, lqt, ct, &Q);
    }
    /* the student at T: tail mode tempers the T = 1 buckets (tail term exp(lt1)^(1/T)); topk_zero
     * takes softmax(z/T) over the vocabulary (tail term Σ_{j∉K} exp((z_j − zm)/T), unused by D) */
    stud_lse sT = s1;
    if (c->T != 1.0f) {
        const double ltT = !tail ? -INFINITY : tmode ? lt1 * iT : (double)(M - zm) * iT + log(ST);
        sT = topk_student(ltT, zk, ids, lps, k, zm, iT);
    }
    topk_teacher(ids, lps, k, mt, iT, lq, &lqt);
    o->kl = topk_div(c, ids, lps, zk, zm, iT, sT, lq, lqt, ct, &Q);
    if (c->T == 1.0f) o->kl1 = o->kl;
    if (!c->grad) return;

    /* w_kd = α·T/N_valid; each KD term below is T·∂D/∂(bucket logit), see the top of the file */
    const int kd = c->w_kd != 0.0f, fwd = c->div == KD_DIV_FORWARD;
    const float D = (float)o->kl, Qf = (float)Q, qt = ct ? expf(lqt) : 0.0f;
    /* tail mode, the tail bucket: T·∂D/∂u_tail, spread over j ∉ K by r_j = exp(z_j − zm − lt1) */
    float gtail = 0.0f;
    if (tmode && tail) {
        const float Pt = expf(sT.lms);
        gtail = fwd ? Pt * Qf - qt : Pt * (sT.lms - lqt - D);
    }
    const float lt1f = (float)lt1;
    for (int64_t j = 0; j < V; j++) {   /* every entry as a tail entry; K is fixed up below */
        float d = z[j] - zm;
        float g = c->w_ce * expf(d - s1.ls);
        if (kd) g += c->w_kd * (tmode ? gtail * expf(d - lt1f) : expf(d * iT - sT.ls) * Qf);
        z[j] = g;
    }
    for (int64_t i = 0; i < k; i++) {
        if (!slot_ok(ids[i], lps[i])) continue;
        float d = zk[i] - zm;
        float g = c->w_ce * expf(d - s1.ls);
        if (kd) {
            float lp = d * iT - sT.ls, p = expf(lp);
            g += c->w_kd * (fwd ? p * Qf - expf(lq[i]) : p * (lp - lq[i] - D));
        }
        z[ids[i]] = g;
    }
    z[y] -= c->w_ce;
}

/* ---- input checks ------------------------------------------------------------------ */
/* Describe what is wrong with the teacher inputs of row r (msg may be NULL); 0 when usable. */
static int teacher_row_bad(const kd_loss_batch *b, const kd_loss_opts *o, int64_t V, int64_t r, char *msg,
                           size_t n) {
    if (o->mode == KD_TEACHER_FULL) {
        const float *zt = b->teacher_logits + r * V;
        int64_t finite = 0;
        for (int64_t j = 0; j < V; j++) {
            float x = zt[j];
            if (isnan(x) || x == INFINITY || (x == -INFINITY && o->div == KD_DIV_REVERSE)) {
                if (msg)
                    snprintf(msg, n, "teacher logit at row %lld, vocabulary entry %lld is %s%s", (long long)r,
                             (long long)j, isnan(x) ? "nan" : x > 0 ? "+inf" : "-inf",
                             x == -INFINITY ? " (the reverse KL against a zero teacher probability is infinite)" : "");
                return 1;
            }
            finite += x != -INFINITY;
        }
        if (!finite) {
            if (msg) snprintf(msg, n, "teacher logits at row %lld are all -inf", (long long)r);
            return 1;
        }
        return 0;
    }
    const int32_t *ids = b->topk_ids + r * b->k;
    const float *lps = b->topk_logprobs + r * b->k;
    int64_t used = 0;
    for (int64_t i = 0; i < b->k; i++) {
        if (ids[i] < -1 || ids[i] >= V) {
            if (msg)
                snprintf(msg, n, "teacher top-k id %d at row %lld, slot %lld outside [0, %lld) (or -1 for padding)",
                         ids[i], (long long)r, (long long)i, (long long)V);
            return 1;
        }
        if (isnan(lps[i]) || lps[i] == INFINITY) {
            if (msg)
                snprintf(msg, n, "teacher top-k log-prob at row %lld, slot %lld is %s", (long long)r, (long long)i,
                         isnan(lps[i]) ? "nan" : "+inf");
            return 1;
        }
        if (!slot_ok(ids[i], lps[i])) continue;
        for (int64_t u = 0; u < i; u++)
            if (ids[u] == ids[i] && slot_ok(ids[u], lps[u])) {
                if (msg)
                    snprintf(msg, n, "teacher top-k id %d repeated at row %lld (slots %lld and %lld)", ids[i],
                             (long long)r, (long long)u, (long long)i);
                return 1;
            }
        used++;
    }
    if (!used && (o->mode == KD_TEACHER_TOPK_ZERO || o->mode == KD_TEACHER_SAMPLED)) {
        if (msg)
            snprintf(msg, n, "teacher top-k at row %lld has no usable slot (%s needs one)", (long long)r,
                     kd_teacher_mode_name(o->mode));
        return 1;
    }
    return 0;
}

/* ---- the driver ------------------------------------------------------------------------ */
static void gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float beta, float *C, int64_t ldc) {
    kd_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* Loss and statistics; dh [N, C] and dW [V, C] (either may be NULL) receive += the gradients. */
static int distill_run(const float *h, const float *W, int64_t N, int64_t C, int64_t V, const kd_loss_batch *b,
                       const kd_loss_opts *o, float *dh, float *dW, kd_loss_stats *st, kd_err *err) {
    memset(st, 0, sizeof *st);
    if (kd_loss_opts_check(o, err)) return -1;
    if (!b || !b->labels) return kd_errf(err, "distillation loss: no labels given");
    const int full = o->mode == KD_TEACHER_FULL;
    const int teacher = full ? b->teacher_logits != NULL : (b->topk_ids && b->topk_logprobs && b->k > 0);
    if (!teacher && o->alpha > 0.0f)
        return kd_errf(err, "distillation loss: alpha %g > 0 needs the teacher's %s", o->alpha,
                       full ? "logits (teacher_logits)" : "top-k (topk_ids, topk_logprobs, k > 0)");
    int64_t nv = 0;
    for (int64_t r = 0; r < N; r++) {
        int32_t y = b->labels[r];
        if (y == KD_IGNORE_INDEX) continue;
        if (y < 0 || y >= V)
            return kd_errf(err, "distillation loss: label %d at row %lld outside [0, %lld)", y, (long long)r,
                           (long long)V);
        nv++;
    }
    if (nv == 0) return 0;
    int64_t *idx = kd_alloc((size_t)nv * sizeof(int64_t), err);
    if (!idx) return kd_err_prefix(err, "distillation loss");
    for (int64_t r = 0, i = 0; r < N; r++)
        if (b->labels[r] != KD_IGNORE_INDEX) idx[i++] = r;
    if (teacher) {   /* before any gradient is written */
        int64_t bad = nv;
#pragma omp parallel for schedule(dynamic, 16) reduction(min : bad)
        for (int64_t i = 0; i < nv; i++)
            if (i < bad && teacher_row_bad(b, o, V, idx[i], NULL, 0)) bad = i;
        if (bad < nv) {
            char msg[512];
            teacher_row_bad(b, o, V, idx[bad], msg, sizeof msg);
            kd_free(idx);
            return kd_errf(err, "distillation loss: %s", msg);
        }
    }

    const int64_t R = chunk_of(o, nv), k = full ? 0 : b->k;
    const int grad = dh || dW;
    float *hc = kd_alloc((size_t)R * (size_t)(V + 2 * C + 2 * k) * sizeof(float), err);
    row_out *ro = hc ? kd_alloc((size_t)R * sizeof(row_out), err) : NULL;
    if (!ro) {
        kd_free(hc);
        kd_free(idx);
        return kd_err_prefix(err, "distillation loss: scratch for %lld rows × %lld", (long long)R, (long long)V);
    }
    float *lg = hc + R * C, *dhc = lg + R * V, *kscr = dhc + R * C;   /* [R,C] [R,V] [R,C] [R,2k] */
    const row_cfg rc = {.V = V, .k = k, .T = o->temperature, .mode = o->mode, .div = o->div, .teacher = teacher,
                        .grad = grad,
                        .w_ce = (float)((1.0 - o->alpha) / (double)nv),
                        .w_kd = teacher ? (float)((double)o->alpha * o->temperature / (double)nv) : 0.0f};
    double sce = 0.0, skl = 0.0, skl1 = 0.0;
    int64_t agree = 0, bad_row = -1;
    for (int64_t c0 = 0; c0 < nv; c0 += R) {
        const int64_t rows = nv - c0 < R ? nv - c0 : R;
        for (int64_t r = 0; r < rows; r++) memcpy(hc + r * C, h + idx[c0 + r] * C, (size_t)C * sizeof(float));
        gemm(0, 1, rows, V, C, hc, C, W, C, 0.0f, lg, V);   /* logits [rows, V] = hc · Wᵀ */
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t r = 0; r < rows; r++) {
            int64_t n = idx[c0 + r];
            float *z = lg + r * V;
            if (full)
                row_full(&rc, z, teacher ? b->teacher_logits + n * V : NULL, b->labels[n], &ro[r]);
            else
                row_topk(&rc, z, b->topk_ids + n * k, b->topk_logprobs + n * k, b->labels[n], kscr + r * 2 * k,
                         kscr + r * 2 * k + k, &ro[r]);
        }
        for (int64_t r = 0; r < rows; r++) {   /* row order: independent of the thread count */
            if (bad_row < 0 && !(isfinite(ro[r].ce) && isfinite(ro[r].kl) && isfinite(ro[r].kl1)))
                bad_row = idx[c0 + r];
            sce += ro[r].ce;
            skl += ro[r].kl;
            skl1 += ro[r].kl1;
            agree += ro[r].agree;
        }
        if (bad_row >= 0) break;
        if (dh) {   /* dhc [rows, C] = dlogits · W, scattered back to the rows */
            gemm(0, 0, rows, C, V, lg, V, W, C, 0.0f, dhc, C);
#pragma omp parallel for if (rows * C > 65536)
            for (int64_t r = 0; r < rows; r++) {
                float *dst = dh + idx[c0 + r] * C;
                const float *src = dhc + r * C;
                for (int64_t i = 0; i < C; i++) dst[i] += src[i];
            }
        }
        if (dW) gemm(1, 0, V, C, rows, lg, V, hc, C, 1.0f, dW, C);   /* dW [V, C] += dlogitsᵀ · hc */
    }
    kd_free(ro);
    kd_free(hc);
    kd_free(idx);
    if (bad_row >= 0)
        return kd_errf(err, "distillation loss: the loss at row %lld is not finite (are the student's hidden states "
                            "or LM head finite?)", (long long)bad_row);
    const double a = o->alpha, T = o->temperature;
    st->n_valid = nv;
    st->ce = sce / (double)nv;
    st->kl = skl / (double)nv;
    st->kl_t1 = skl1 / (double)nv;
    st->top1_agree = agree;
    st->loss = (1.0 - a) * st->ce + (teacher ? a * T * T * st->kl : 0.0);
    return 0;
}

int kd_distill_eval(const float *hidden, const float *head, int64_t N, int64_t C, int64_t V, const kd_loss_batch *b,
                    const kd_loss_opts *o, kd_loss_stats *st, kd_err *err) {
    kd_loss_stats local;
    return distill_run(hidden, head, N, C, V, b, o, NULL, NULL, st ? st : &local, err);
}

/* ---- the graph op -------------------------------------------------------------------- */
typedef struct { float *dh, *dW; int direct; } distill_ctx;

static void distill_backward(kd_graph *g, kd_node *nd) {
    distill_ctx *c = nd->ctx;
    kd_tensor *h = nd->in[0], *W = nd->in[1];
    const float s = nd->out->grad[0];
    if (c->dh) {
        float *d = kd_grad(g, h);
        int64_t n = h->n;
#pragma omp parallel for simd if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] += s * c->dh[i];
    }
    if (c->direct) {
        if (s != 1.0f)
            kd_panic("distill_loss: grad_into_params needs the loss to be the final node with seed 1, got upstream "
                     "gradient %g", s);
    } else if (c->dW) {
        float *d = kd_grad(g, W);
        int64_t n = W->n;
#pragma omp parallel for simd if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] += s * c->dW[i];
    }
}

kd_tensor *kd_distill_loss(kd_graph *g, kd_tensor *hidden, kd_tensor *head, const kd_loss_batch *b,
                           const kd_loss_opts *o, kd_loss_stats *st, kd_err *err) {
    const int64_t N = kd_rows(hidden), C = kd_last_dim(hidden);
    if (head->ndim != 2 || head->shape[1] != C) {
        char sh[64], sw[64];
        kd_panic("distill_loss: hidden %s and LM head %s (expected [V, %lld])", kd_shape_str(hidden, sh, sizeof sh),
                 kd_shape_str(head, sw, sizeof sw), (long long)C);
    }
    const int64_t V = head->shape[0];
    const int want_h = !g->no_grad && hidden->requires_grad, want_W = !g->no_grad && head->requires_grad;
    const int direct = want_W && o->grad_into_params;
    if (direct && (!head->is_param || !head->grad)) {
        kd_errf(err, "distillation loss: grad_into_params needs the LM head '%s' to be a parameter", head->name);
        return NULL;
    }
    float *dh = NULL, *dW = NULL;
    if (want_h) {
        dh = kd_graph_alloc(g, (size_t)N * (size_t)C * sizeof(float));
        memset(dh, 0, (size_t)N * (size_t)C * sizeof(float));
    }
    if (direct) {
        dW = head->grad;
    } else if (want_W) {
        dW = kd_graph_alloc(g, (size_t)V * (size_t)C * sizeof(float));
        memset(dW, 0, (size_t)V * (size_t)C * sizeof(float));
    }
    kd_loss_stats local;
    if (!st) st = &local;
    if (distill_run(hidden->data, head->data, N, C, V, b, o, dh, dW, st, err)) return NULL;
    int64_t one = 1;
    kd_tensor *y = kd_tensor_new(g, 1, &one, "distill_loss");
    y->data[0] = (float)st->loss;
    kd_node *nd = kd_graph_record(g, "distill_loss", distill_backward, y, hidden, head, NULL);
    if (nd) {
        distill_ctx *c = kd_graph_alloc(g, sizeof *c);
        *c = (distill_ctx){dh, direct ? NULL : dW, direct};
        nd->ctx = c;
    }
    return y;
}
