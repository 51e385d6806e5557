/*
 * kd_dump_check.c — validation of teacher dumps (kd_dump_check/kd_dump_validate,
 * see kd_dump.h): per-position checks shared with the writer, a scan of every
 * sequence, and the file offset of the first bad element (so it can be
 * inspected with a hex dump or h5dump). Tokens-only dumps have their tokens
 * and loss_mask checked, nothing else.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_cpu.h"
#include "data/kd_dump.h"
#include "data/kd_dump_impl.h"

#define CHECK_BLOCK (8u << 20)   /* bytes of float32 values checked per read */

/* Returns 0 when fine, 1 for a bad id (dataset topk_ids), 2 for a bad value (topk_logprobs). */
int kdd_check_topk(const int32_t *ids, const float *lp, int k, int64_t vocab, int masked, double eps, double eps_abs, uint32_t *stamp,
                   uint32_t *mark, kdd_pos_stats *st, int64_t *slot, char *what, size_t n) {
    for (int j = 0; j < k; j++)
        if (ids[j] < 0 || ids[j] >= vocab) {
            *slot = j;
            snprintf(what, n, "id %d outside [0, %" PRId64 ")", ids[j], vocab);
            return 1;
        }
    if (masked) return 0;
    if (++*mark == 0) {
        memset(stamp, 0, (size_t)vocab * sizeof *stamp);
        *mark = 1;
    }
    double sum = 0, bound = 0;
    for (int j = 0; j < k; j++) {
        float x = lp[j];
        *slot = j;
        if (isnan(x)) return snprintf(what, n, "log-prob is NaN"), 2;
        if (x == INFINITY) return snprintf(what, n, "log-prob is +Inf"), 2;
        if (j > 0 && x > lp[j - 1]) return snprintf(what, n, "not sorted: %.6g after %.6g", x, lp[j - 1]), 2;
        if (x == -INFINITY) {
            if (j == 0) return snprintf(what, n, "log-prob of the top entry is -Inf (no distribution)"), 2;
            continue;   /* an unfilled slot: so are all later ones (sorted) */
        }
        if (x > KD_DUMP_SUM_TOL) return snprintf(what, n, "log-prob %.6g > 0", x), 2;
        if (stamp[ids[j]] == *mark) return snprintf(what, n, "id %d appears twice", ids[j]), 1;
        stamp[ids[j]] = *mark;
        double p = exp((double)x);
        sum += p;
        bound += p * fabs((double)x);
    }
    if (sum > 1.0 + KD_DUMP_SUM_TOL + eps * bound + eps_abs * sum) {
        *slot = -1;
        snprintf(what, n, "probabilities sum to %.6f > 1", sum);
        return 2;
    }
    st->mass = sum;
    st->top1 = k ? exp((double)lp[0]) : 0;
    return 0;
}

/* A sampled position (distribution "sampled"): a top-k (distinct ids, sorted values, unused slots −inf
 * last) whose every finite value is exactly log(c / N) for a count c in [1, N] (kd_dump_sample_lp),
 * the counts adding up to N. Returns as kdd_check_topk. */
int kdd_check_sampled(const int32_t *ids, const float *lp, int k, int64_t vocab, int n_samples, int masked,
                      uint32_t *stamp, uint32_t *mark, kdd_pos_stats *st, int64_t *slot, char *what, size_t n) {
    int bad = kdd_check_topk(ids, lp, k, vocab, masked, 1.0 / 16777216, 0, stamp, mark, st, slot, what, n);
    if (bad || masked) return bad;
    int64_t total = 0;
    for (int j = 0; j < k && lp[j] != -INFINITY; j++) {
        long c = lrint((double)n_samples * exp((double)lp[j]));
        *slot = j;
        if (c < 1 || c > n_samples || kd_dump_sample_lp((int)c, n_samples) != lp[j])
            return snprintf(what, n, "log-prob %.9g is not log(c / %d) for a count c in [1, %d]", lp[j], n_samples,
                            n_samples), 2;
        total += c;
    }
    if (total != n_samples) {
        *slot = -1;
        return snprintf(what, n, "the counts add up to %" PRId64 ", expected n_samples = %d", total, n_samples), 2;
    }
    return 0;
}

int kdd_check_logits(const float *z, int64_t vocab, int64_t *slot, char *what, size_t n) {
    int64_t finite = 0;
    for (int64_t j = 0; j < vocab; j++) {
        *slot = j;
        if (isnan(z[j])) return snprintf(what, n, "logit is NaN"), 2;
        if (z[j] == INFINITY) return snprintf(what, n, "logit is +Inf"), 2;
        finite += z[j] != -INFINITY;
    }
    *slot = -1;
    if (!finite) return snprintf(what, n, "every logit is -Inf"), 2;
    return 0;
}

/* Byte offset in the file of element coord of ds; −1 when unknown. */
static int64_t elem_offset(hid_t ds, const hsize_t *coord, int *compressed) {
    hid_t sp = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds), ty = H5Dget_type(ds);
    hsize_t dims[8], cd[8], origin[8];
    int rank = H5Sget_simple_extent_ndims(sp);
    size_t es = H5Tget_size(ty);
    int64_t off = -1;
    *compressed = 0;
    if (rank > 0 && rank <= 8) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        H5D_layout_t lay = H5Pget_layout(dcpl);
        if (lay == H5D_CONTIGUOUS) {
            haddr_t a = H5Dget_offset(ds);
            uint64_t lin = 0;
            for (int i = 0; i < rank; i++) lin = lin * dims[i] + coord[i];
            if (a != HADDR_UNDEF) off = (int64_t)(a + lin * es);
        } else if (lay == H5D_CHUNKED && H5Pget_chunk(dcpl, rank, cd) == rank) {
            uint64_t lin = 0;
            for (int i = 0; i < rank; i++) {
                origin[i] = coord[i] / cd[i] * cd[i];
                lin = lin * cd[i] + (coord[i] - origin[i]);
            }
            unsigned fmask = 0;
            haddr_t a = HADDR_UNDEF;
            hsize_t size = 0;
            if (H5Dget_chunk_info_by_coord(ds, origin, &fmask, &a, &size) >= 0 && a != HADDR_UNDEF) {
                int nf = H5Pget_nfilters(dcpl);
                *compressed = nf > 0 && fmask != (1u << nf) - 1;
                off = (int64_t)(*compressed ? a : a + lin * es);
            }
        }
    }
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Tclose(ty);
    H5Eclear2(H5E_DEFAULT);
    return off;
}

static int report_bad(kd_dump *d, kd_dump_report *rep, int dsi, int64_t s, int64_t t, int64_t slot, double value,
                      const char *what, kd_err *err) {
    rep->bad = 1;
    snprintf(rep->dataset, sizeof rep->dataset, "%s", kdd_dname(d, dsi));
    rep->seq = s;
    rep->pos = t;
    rep->slot = slot;
    rep->value = value;
    snprintf(rep->what, sizeof rep->what, "%s", what);
    hsize_t c[3] = {(hsize_t)s, (hsize_t)t, (hsize_t)(slot < 0 ? 0 : slot)};
    rep->file_offset = elem_offset(d->ds[dsi], c, &rep->offset_in_compressed_chunk);
    char where[96] = "";
    if (dsi == D_TOKENS) snprintf(where, sizeof where, "token %" PRId64, t);
    else if (slot < 0 || dsi == D_MASK) snprintf(where, sizeof where, "position %" PRId64, t);
    else snprintf(where, sizeof where, "position %" PRId64 ", %s %" PRId64, t, d->meta.k ? "slot" : "column", slot);
    char off[96] = "file offset unknown";
    if (rep->file_offset >= 0)
        snprintf(off, sizeof off, "%sfile offset %" PRId64,
                 rep->offset_in_compressed_chunk ? "in the compressed chunk at " : slot < 0 && dsi >= D_IDS ? "position at " : "",
                 rep->file_offset);
    return kd_errf(err, "%s: dataset '%s': sequence %" PRId64 ", %s: %s (%s)", d->path, rep->dataset, s, where, what, off);
}

static int check_locked(kd_dump *d, kd_dump_report *rep, kd_err *err) {
    const kd_dump_meta *m = &d->meta;
    int64_t T = m->seq_len, k = m->k, V = m->vocab_size, N = m->n_seq;
    const int teacher = !m->tokens_only;
    int64_t row = k ? k : V;   /* values per position */
    int64_t pb = (int64_t)CHECK_BLOCK / (row * 4), sb = (int64_t)CHECK_BLOCK / ((T + 1) * 4);
    if (pb < 1) pb = 1;
    if (pb > T) pb = T;
    if (sb < 1) sb = 1;
    if (sb > N) sb = N > 0 ? N : 1;
    double eps = m->value_dtype == KD_DUMP_F16 ? 1.0 / 2048 : 1.0 / 16777216, eps_abs = 0;
    if (d->pack) eps = kdd_pack_check_eps(&d->meta, &eps_abs);   /* decoded values: the layout's error bound */
    int32_t *tok = malloc((size_t)(sb * (T + 1)) * 4), *ids = k ? malloc((size_t)(pb * k) * 4) : NULL;
    uint8_t *mask = malloc((size_t)(sb * T));
    float *val = teacher ? malloc((size_t)(pb * row) * 4) : NULL;
    uint32_t *stamp = k ? calloc((size_t)V, 4) : NULL, mark = 0;
    int rc = 0;
    double mass = 0, top1 = 0;
    char what[160];
    int64_t slot;
    if (!tok || !mask || (teacher && !val) || (k && (!ids || !stamp))) {
        rc = kd_errf(err, "%s: out of memory", d->path);
        goto out;
    }
    for (int64_t s0 = 0; s0 < N && !rc; s0 += sb) {
        int64_t ns = s0 + sb <= N ? sb : N - s0;
        if (kdd_read_2d(d, D_TOKENS, s0, ns, tok, err) || kdd_read_2d(d, D_MASK, s0, ns, mask, err)) {
            rc = -1;
            break;
        }
        for (int64_t i = 0; i < ns * (T + 1) && !rc; i++)
            if (tok[i] < 0 || tok[i] >= V) {
                snprintf(what, sizeof what, "token id %d outside [0, %" PRId64 ")", tok[i], V);
                rc = report_bad(d, rep, D_TOKENS, s0 + i / (T + 1), i % (T + 1), -1, tok[i], what, err);
            }
        for (int64_t i = 0; i < ns * T && !rc; i++)
            if (mask[i] > 1) {
                snprintf(what, sizeof what, "loss_mask value %d, expected 0 or 1", mask[i]);
                rc = report_bad(d, rep, D_MASK, s0 + i / T, i % T, -1, mask[i], what, err);
            }
        for (int64_t i = 0; !teacher && i < ns * T && !rc; i++) rep->n_masked += !mask[i];
        for (int64_t s = s0; teacher && s < s0 + ns && !rc; s++)
            for (int64_t p0 = 0; p0 < T && !rc; p0 += pb) {
                int64_t np = p0 + pb <= T ? pb : T - p0;
                if ((k && kdd_read_3d(d, D_IDS, s, 1, p0, np, ids, k, err)) ||
                    kdd_read_3d(d, D_VALUES, s, 1, p0, np, val, row, err)) {
                    rc = -1;
                    break;
                }
                for (int64_t t = p0; t < p0 + np && !rc; t++) {
                    int masked = !mask[(s - s0) * T + t];
                    rep->n_masked += masked;
                    kdd_pos_stats st = {0, 0};
                    int bad;
                    if (k) {
                        size_t o = (size_t)((t - p0) * k);
                        bad = m->sampled ? kdd_check_sampled(ids + o, val + o, (int)k, V, m->n_samples, masked, stamp,
                                                             &mark, &st, &slot, what, sizeof what)
                                         : kdd_check_topk(ids + o, val + o, (int)k, V, masked, eps, eps_abs, stamp, &mark,
                                                          &st, &slot, what, sizeof what);
                        if (bad)
                            rc = report_bad(d, rep, bad == 1 ? D_IDS : D_VALUES, s, t, slot,
                                            slot < 0 ? st.mass : bad == 1 ? ids[o + (size_t)slot] : val[o + (size_t)slot],
                                            what, err);
                    } else if (!masked) {
                        const float *z = val + (size_t)(t - p0) * (size_t)V;
                        if ((bad = kdd_check_logits(z, V, &slot, what, sizeof what)))
                            rc = report_bad(d, rep, D_VALUES, s, t, slot, slot < 0 ? 0 : z[slot], what, err);
                        double mx = -INFINITY, se = 0;
                        for (int64_t j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
                        for (int64_t j = 0; j < V && !rc; j++) se += exp(z[j] - mx);
                        st.mass = 1;
                        st.top1 = se > 0 ? 1 / se : 0;
                    }
                    if (!masked && !rc) {
                        mass += st.mass;
                        top1 += st.top1;
                        if (st.mass < rep->min_topk_mass) rep->min_topk_mass = st.mass;
                    }
                }
            }
    }
    int64_t used = rep->n_positions - rep->n_masked;
    if (used > 0) {
        rep->mean_topk_mass = mass / (double)used;
        rep->mean_top1_prob = top1 / (double)used;
    }
out:
    free(tok);
    free(ids);
    free(mask);
    free(val);
    free(stamp);
    return rc ? -1 : 0;
}

int kd_dump_check(kd_dump *d, kd_dump_report *rep, kd_err *err) {
    kd_dump_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    rep->n_seq = d->meta.n_seq;
    rep->n_positions = d->meta.n_seq * d->meta.seq_len;
    rep->min_topk_mass = d->meta.tokens_only ? 0 : d->meta.k ? INFINITY : 1;
    rep->file_offset = -1;
    if (d->meta.has_tokenizer) {
        kd_dump_tokenizer tok;
        if (kd_dump_read_tokenizer(d, &tok, err)) return -1;
        kd_dump_tokenizer_free(&tok);
    }
    kdd_guard g;
    kdd_enter(&g);
    int rc = check_locked(d, rep, err);
    kdd_leave(&g);
    if (rep->min_topk_mass == INFINITY) rep->min_topk_mass = 0;
    return rc;
}

/* ---- the fast path of the loader's check ----------------------------------------------
 *
 * kdd_check_topk spends most of its time in exp(). The loader first runs the
 * branch-free test below: a float exp (|relative error| < FEXP_ERR, asserted
 * by tests/test_dump.c over [−87, 0]), vector code, and a sum test whose
 * margins cover that error and the float rounding of the sums. When it proves
 * the position fine, that is the exact check's verdict too; anything else
 * (a bad entry, or a sum within the margins of the limit) goes to
 * kdd_check_topk, which decides and words the message. So the verdicts are
 * exactly kdd_check_topk's, only faster. */

#define FEXP_ERR 4e-6   /* claimed bound on kdd_fexp's relative error (measured: < 1e-6) */

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

/* out = e^x for x in [−87, 0.01] (callers clamp), in float: 2^n · poly(r), r = x − n·ln 2. A macro, not a
 * function: vectors of 32 bytes cross no function boundary (their ABI depends on the target). */
#define FEXP8(out, x)                                                                 \
    do {                                                                              \
        const v8f magic_ = (v8f){0} + 12582912.0f; /* 1.5·2^23: rounds to an integer */ \
        v8f n_ = ((x) * 1.44269504f + magic_) - magic_;                               \
        v8f r_ = (x) - n_ * 0.693359375f - n_ * -2.12194440e-4f;                      \
        v8f p_ = (v8f){0} + (1.0f / 720);                                             \
        p_ = p_ * r_ + (1.0f / 120);                                                  \
        p_ = p_ * r_ + (1.0f / 24);                                                   \
        p_ = p_ * r_ + (1.0f / 6);                                                    \
        p_ = p_ * r_ + 0.5f;                                                          \
        p_ = p_ * r_ + 1.0f;                                                          \
        p_ = p_ * r_ + 1.0f;                                                          \
        v8i e_ = (__builtin_convertvector(n_, v8i) + 127) << 23;                      \
        (out) = p_ * (v8f)e_;                                                         \
    } while (0)

/* Lanes of a where m is all ones, of b elsewhere. */
#define SEL(m, a, b) ((v8f)(((v8i)(m) & (v8i)(a)) | (~(v8i)(m) & (v8i)(b))))

float kdd_fexp(float x) {
    v8f v = (v8f){0} + x, e;
    FEXP8(e, v);
    return e[0];
}

/* 0 when kdd_check_topk (masked = 0) has to decide (a bad entry, or a duplicate id); else 1 with bounds on
 * its sums: Σp in [bounds[0], bounds[1]], Σp·|log p| ≥ bounds[2]. */
static inline __attribute__((always_inline)) int fast_body(const int32_t *ids, const float *lp, int k, int64_t vocab,
                                                          uint32_t *stamp, uint32_t *mark, double *bounds) {
    const uint32_t lim = (uint32_t)(vocab < ((int64_t)1 << 31) ? vocab : ((int64_t)1 << 31));
    float tol = (float)KD_DUMP_SUM_TOL;   /* the largest float ≤ the tolerance */
    if ((double)tol > KD_DUMP_SUM_TOL) tol = nextafterf(tol, 0);
    const v8f lo = (v8f){0} - 87.0f, zero = {0};
    if (k < 1 || lp[0] == -INFINITY) return 0;
    v8i bad = {0};
    v8f sum = {0}, bnd = {0};
    int j = 0;
    for (; j + 8 <= k; j += 8) {
        v8u id;
        v8f x, prev;
        memcpy(&id, ids + j, sizeof id);
        memcpy(&x, lp + j, sizeof x);
        if (j) memcpy(&prev, lp + j - 1, sizeof prev);
        else
            for (int i = 0; i < 8; i++) prev[i] = lp[i ? i - 1 : 0];
        bad |= (v8i)(id >= lim) | ~(x <= tol) | (x > prev);
        v8i under = x < lo;
        v8f xc = SEL(under, lo, x), p;
        FEXP8(p, xc);
        p = SEL(under, zero, p);
        sum += p;
        bnd += p * SEL(xc < zero, -xc, xc);
    }
    int any = 0;
    for (int i = 0; i < 8; i++) any |= bad[i];
    if (any) return 0;
    /* the lanes added as a tree (a chain of 16 dependent additions costs more than the vector loop) */
    double s = (((double)sum[0] + sum[1]) + ((double)sum[2] + sum[3])) + (((double)sum[4] + sum[5]) + ((double)sum[6] + sum[7]));
    double b = (((double)bnd[0] + bnd[1]) + ((double)bnd[2] + bnd[3])) + (((double)bnd[4] + bnd[5]) + ((double)bnd[6] + bnd[7]));
    for (; j < k; j++) {   /* the tail, scalar */
        float x = lp[j];
        if ((uint32_t)ids[j] >= lim || !(x <= tol) || (j && x > lp[j - 1])) return 0;
        float xc = x < -87.0f ? -87.0f : x, p = x < -87.0f ? 0 : kdd_fexp(xc);
        s += p;
        b += (double)p * fabsf(xc);
    }
    if (++*mark == 0) {
        memset(stamp, 0, (size_t)vocab * sizeof *stamp);
        *mark = 1;
    }
    const uint32_t mk = *mark;   /* (a local: stamp's stores could alias *mark) */
    int nf = k;
    while (nf > 0 && lp[nf - 1] == -INFINITY) nf--;   /* the finite entries: a prefix (sorted) */
    for (j = 0; j < nf; j++) {   /* duplicates among them */
        uint32_t *st = &stamp[ids[j]];
        if (*st == mk) return 0;
        *st = mk;
    }
    /* the exact Σp lies in s·(1 ± d) (+ the e^x < 2^-125 zeroed below −87), Σp·|x| above b·(1 − d) */
    double d = FEXP_ERR + ((double)(k / 8) + 8) * 0x1p-23;
    bounds[0] = s * (1 - d);
    bounds[1] = s * (1 + d) + k * 0x1p-125;
    bounds[2] = b * (1 - d);
    return 1;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static int fast_avx2(const int32_t *ids, const float *lp, int k, int64_t vocab,
                                                         uint32_t *stamp, uint32_t *mark, double *bounds) {
    return fast_body(ids, lp, k, vocab, stamp, mark, bounds);
}
#endif

static int fast_generic(const int32_t *ids, const float *lp, int k, int64_t vocab, uint32_t *stamp, uint32_t *mark,
                        double *bounds) {
    return fast_body(ids, lp, k, vocab, stamp, mark, bounds);
}

static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;
static int g_avx2;
static void cpu_once(void) {
    kd_cpu_info cpu;
    kd_cpu_detect(&cpu);
    g_avx2 = cpu.avx2 && cpu.fma;
}

int kd_dump_check_position(const kd_dump_meta *m, const int32_t *ids, const float *values, int64_t width,
                           uint32_t *stamp, uint32_t *mark, int64_t *slot, char *what, size_t n) {
    if (m->k == 0) return kdd_check_logits(values, width, slot, what, n);
    kdd_pos_stats st;
    if (m->sampled) return kdd_check_sampled(ids, values, m->k, m->vocab_size, m->n_samples, 0, stamp, mark, &st, slot, what, n);
    double bounds[3];
    pthread_once(&g_cpu_once, cpu_once);
#if defined(__x86_64__)
    int clean = g_avx2 && !kd_cpu_generic() ? fast_avx2(ids, values, m->k, m->vocab_size, stamp, mark, bounds)
                       : fast_generic(ids, values, m->k, m->vocab_size, stamp, mark, bounds);
#else
    int clean = fast_generic(ids, values, m->k, m->vocab_size, stamp, mark, bounds);
#endif
    /* Σp ≤ 1 + tolerance passes whatever the dtype's allowance (≥ 0) below: most positions stop here */
    if (clean && bounds[1] <= (1.0 + KD_DUMP_SUM_TOL) * (1 - 1e-12)) return 0;
    double eps = m->value_dtype == KD_DUMP_F16 ? 1.0 / 2048 : 1.0 / 16777216, eps_abs = 0;
    if (m->packed) eps = kdd_pack_check_eps(m, &eps_abs);   /* decoded values: the layout's error bound */
    if (clean && bounds[1] <= (1.0 + KD_DUMP_SUM_TOL + eps * bounds[2] + eps_abs * bounds[0]) * (1 - 1e-12)) return 0;
    return kdd_check_topk(ids, values, m->k, m->vocab_size, 0, eps, eps_abs, stamp, mark, &st, slot, what, n);
}

int kd_dump_validate(const char *path, kd_dump_report *rep, kd_err *err) {
    if (rep) memset(rep, 0, sizeof *rep);
    kd_dump *d = kd_dump_open(path, err);
    if (!d) return -1;
    int rc = kd_dump_check(d, rep, err);
    kd_dump_close(d);
    return rc;
}
