/*
 * kd_dump_codec.c — encoder and decoder of the "topk-packed-v1" bit stream
 * (see kd_dump_codec.h and docs/dump-format.md, "Compressed dumps"). Memory
 * only: the HDF5 datasets around it are kd_dump_pack.c's.
 *
 * Record of one sequence: two bit streams, each filled from the least
 * significant bit of each byte up, so that a decoder runs both at once:
 *   bytes 0–3: r_id[0..3], r_val[0..3]       8 × 4 bits (Rice parameters)
 *   bytes 4–7: len_a                          uint32 little-endian: bytes of stream A
 *   stream A (bytes 8 .. 8+len_a), per unmasked position t:
 *     full                                    1 bit: 1 = all k entries finite
 *     n_fin − 1                               ceil(log2 k) bits, only when full = 0
 *     q0                                      Rice(r_val[0]), escape 24 bits
 *     c_j − c_{j−1}, j = 1 .. n_fin−1          Rice(r_val[band j]), escape 16 bits
 *   stream B (the rest), per unmasked position t:
 *     rank(id_j), j = 0 .. n_fin−1             Rice(r_id[band j]), escape ceil(log2 V) bits
 * band j: 0 for slot 0, 1 for slots 1–3, 2 for 4–15, 3 for 16 and up.
 * Rice(r) of x: q = x >> r; q < 16: q one bits, a zero bit, the r low bits
 * of x; q ≥ 16 (escape): 16 one bits, then x in the escape width.
 */
#include "data/kd_dump_codec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/kd_cpu.h"

#define QMAX 16        /* unary length that means "escape" */
#define Q0_BITS 24     /* escape width of q0 */
#define DC_BITS 16     /* escape width of a grid-code difference */

static inline int band_of(int j) { return j == 0 ? 0 : j < 4 ? 1 : j < 16 ? 2 : 3; }

static int ceil_log2(int64_t n) {
    int b = 0;
    while (((int64_t)1 << b) < n) b++;
    return b;
}

int kd_pack_init(kd_pack_codec *c, int32_t k, int64_t vocab, double step, double knee, const int32_t *order,
                 kd_err *err) {
    memset(c, 0, sizeof *c);
    if (!(step >= 1.0 / 1024 && step <= 1.0))
        return kd_errf(err, "packed layout: lp_step = %g, expected [2^-10, 1] nats", step);
    if (!(knee >= 1.0 / 16 && knee <= 64.0))
        return kd_errf(err, "packed layout: lp_knee = %g, expected [1/16, 64] nats", knee);
    if (k < 1 || vocab < 1 || vocab > (1 << 24))
        return kd_errf(err, "packed layout: k = %d, vocab_size = %lld, expected k ≥ 1 and V in [1, 2^24]", k,
                       (long long)vocab);
    c->k = k;
    c->vocab = vocab;
    c->step = step;
    c->knee = knee;
    c->id_bits = vocab > 1 ? ceil_log2(vocab) : 1;
    c->cmax = (int32_t)ceil(knee / step * log1p(KD_PACK_GAP_MAX / knee));
    if (c->cmax > 65535) c->cmax = 65535;
    c->order = malloc((size_t)vocab * sizeof *c->order);
    c->rank = malloc((size_t)vocab * sizeof *c->rank);
    c->gap = malloc((size_t)(c->cmax + 1) * sizeof *c->gap);
    if (!c->order || !c->rank || !c->gap) {
        kd_pack_free(c);
        return kd_errf(err, "packed layout: out of memory (vocab_size %lld)", (long long)vocab);
    }
    for (int64_t i = 0; i < vocab; i++) c->rank[i] = -1;
    for (int64_t r = 0; r < vocab; r++) {
        int32_t id = order ? order[r] : (int32_t)r;
        if (id < 0 || id >= vocab || c->rank[id] >= 0) {
            kd_pack_free(c);
            return kd_errf(err, "dataset 'topk_id_order': entry %lld = %d, expected a permutation of [0, %lld)",
                           (long long)r, id, (long long)vocab);
        }
        c->order[r] = id;
        c->rank[id] = (int32_t)r;
    }
    for (int32_t i = 0; i <= c->cmax; i++) c->gap[i] = (float)(knee * expm1((double)i * step / knee));
    return 0;
}

void kd_pack_free(kd_pack_codec *c) {
    if (!c) return;
    free(c->order);
    free(c->rank);
    free(c->gap);
    free(c->work);
    memset(c, 0, sizeof *c);
}

typedef struct id_count {
    int64_t count;
    int32_t id;
} id_count;

static int cmp_count(const void *a, const void *b) {
    const id_count *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void kd_pack_order_from(const int32_t *ids, int64_t n, int64_t vocab, int32_t *order) {
    id_count *c = malloc((size_t)vocab * sizeof *c);
    for (int64_t i = 0; i < vocab; i++) order[i] = (int32_t)i;
    if (!c) return;   /* the identity order: valid, only less compact */
    for (int64_t i = 0; i < vocab; i++) c[i] = (id_count){0, (int32_t)i};
    for (int64_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < vocab) c[ids[i]].count++;
    qsort(c, (size_t)vocab, sizeof *c, cmp_count);
    for (int64_t i = 0; i < vocab; i++) order[i] = c[i].id;
    free(c);
}

double kd_pack_error_bound(const kd_pack_codec *c, int j, double gap) {
    if (j == 0) return c->step / 2;
    return (c->knee + gap) * expm1(c->step / (2 * c->knee));
}

/* ---- encoder ----------------------------------------------------------------------- */

typedef struct bitw {
    uint8_t *out;
    uint64_t acc;
    int nb;
} bitw;

static inline void put(bitw *w, uint64_t v, int n) {   /* n ≤ 32 */
    w->acc |= v << w->nb;
    w->nb += n;
    while (w->nb >= 8) {
        *w->out++ = (uint8_t)w->acc;
        w->acc >>= 8;
        w->nb -= 8;
    }
}

static inline int rice_len(uint32_t x, int r, int wide) {
    uint32_t q = x >> r;
    return q < QMAX ? (int)q + 1 + r : QMAX + wide;
}

static inline void put_rice(bitw *w, uint32_t x, int r, int wide) {
    uint32_t q = x >> r;
    if (q < QMAX) {
        put(w, ((uint64_t)1 << q) - 1, (int)q + 1);
        if (r) put(w, x & ((1u << r) - 1), r);
    } else {
        put(w, (1u << QMAX) - 1, QMAX);
        put(w, x, wide);
    }
}

static int best_r(const uint32_t *x, int64_t n, int wide) {
    int best = 0;
    uint64_t best_bits = UINT64_MAX;
    for (int r = 0; r < 16; r++) {
        uint64_t bits = 0;
        for (int64_t i = 0; i < n; i++) bits += (uint64_t)rice_len(x[i], r, wide);
        if (bits < best_bits) best_bits = bits, best = r;
    }
    return best;
}

size_t kd_pack_bound(const kd_pack_codec *c, int64_t T) {
    int64_t per_pos = 1 + ceil_log2(c->k) + (QMAX + Q0_BITS) + (int64_t)(c->k - 1) * (QMAX + DC_BITS) +
                      (int64_t)c->k * (QMAX + c->id_bits);
    return (size_t)(8 + (T * per_pos + 7) / 8 + 2);
}

size_t kd_pack_encode(kd_pack_codec *c, int64_t T, const uint8_t *mask, const int32_t *ids, const float *lp,
                      uint8_t *out) {
    const int k = c->k;
    /* per band: the values it codes, gathered to pick each band's Rice parameter */
    size_t need = (size_t)T * (size_t)(2 * k + 2) + 8;
    if (need > c->work_cap) {
        free(c->work);
        c->work = malloc(need * sizeof *c->work);
        c->work_cap = c->work ? need : 0;
        if (!c->work) return 0;
    }
    uint32_t *q0 = (uint32_t *)c->work, *nfin = q0 + T, *dc = nfin + T, *rk = dc + T * k;
    const double inv = c->knee / c->step;
    for (int64_t t = 0; t < T; t++) {
        if (mask && !mask[t]) continue;
        const float *l = lp + t * k;
        const int32_t *id = ids + t * k;
        int n = 0;
        while (n < k && l[n] != -INFINITY) n++;
        nfin[t] = (uint32_t)n;
        double q = nearbyint(-(double)l[0] / c->step);
        q = q < 0 ? 0 : q > (double)((1u << Q0_BITS) - 1) ? (double)((1u << Q0_BITS) - 1) : q;
        q0[t] = (uint32_t)q;
        double r0 = -q * c->step;
        int32_t prev = 0;
        for (int j = 0; j < n; j++) {
            if (j > 0) {
                double g = r0 - (double)l[j];
                g = g < 0 ? 0 : g > KD_PACK_GAP_MAX ? KD_PACK_GAP_MAX : g;
                int32_t code = (int32_t)nearbyint(inv * log1p(g / c->knee));
                code = code < prev ? prev : code > c->cmax ? c->cmax : code;
                dc[t * k + j] = (uint32_t)(code - prev);
                prev = code;
            }
            rk[t * k + j] = (uint32_t)c->rank[id[j]];
        }
    }
    /* Rice parameters: gather each band's symbols into the scratch tail (reusing q0.. is not possible) */
    int r_id[4], r_val[4];
    uint32_t *tmp = malloc((size_t)T * (size_t)k * sizeof *tmp + 4);
    if (!tmp) return 0;
    static const int lo[4] = {0, 1, 4, 16}, hi[4] = {1, 4, 16, 1 << 30};
    for (int b = 0; b < 4; b++) {
        int64_t n_id = 0, n_val = 0;
        for (int64_t t = 0; t < T; t++) {
            if (mask && !mask[t]) continue;
            for (int j = lo[b]; j < hi[b] && j < (int)nfin[t]; j++) tmp[n_id++] = rk[t * k + j];
        }
        r_id[b] = best_r(tmp, n_id, c->id_bits);
        for (int64_t t = 0; t < T; t++) {
            if (mask && !mask[t]) continue;
            if (b == 0) tmp[n_val++] = q0[t];
            else
                for (int j = lo[b]; j < hi[b] && j < (int)nfin[t]; j++) tmp[n_val++] = dc[t * k + j];
        }
        r_val[b] = best_r(tmp, n_val, b == 0 ? Q0_BITS : DC_BITS);
    }
    free(tmp);
    uint64_t hdr = 0;
    for (int b = 0; b < 4; b++) hdr |= (uint64_t)r_id[b] << (4 * b) | (uint64_t)r_val[b] << (16 + 4 * b);
    const int kb = ceil_log2(k);
    bitw w = {out + 8, 0, 0};
    for (int64_t t = 0; t < T; t++) {   /* stream A: values */
        if (mask && !mask[t]) continue;
        int n = (int)nfin[t];
        put(&w, n == k, 1);
        if (n != k) put(&w, (uint64_t)(n - 1), kb);
        put_rice(&w, q0[t], r_val[0], Q0_BITS);
        for (int j = 1; j < n; j++) put_rice(&w, dc[t * k + j], r_val[band_of(j)], DC_BITS);
    }
    if (w.nb) *w.out++ = (uint8_t)w.acc;
    hdr |= (uint64_t)(w.out - out - 8) << 32;
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(hdr >> (8 * i));
    w.acc = 0;
    w.nb = 0;
    for (int64_t t = 0; t < T; t++) {   /* stream B: ids */
        if (mask && !mask[t]) continue;
        for (int j = 0; j < (int)nfin[t]; j++) put_rice(&w, rk[t * k + j], r_id[band_of(j)], c->id_bits);
    }
    if (w.nb) *w.out++ = (uint8_t)w.acc;
    return (size_t)(w.out - out);
}

/* ---- decoder ----------------------------------------------------------------------- */

static inline uint64_t peek(const uint8_t *in, uint64_t pos) {
    uint64_t x;
    memcpy(&x, in + (pos >> 3), 8);
    return x >> (pos & 7);
}

/* The number of trailing one bits of x, or any value ≥ QMAX when there are ≥ QMAX of them. With BMI1,
 * tzcnt of ~x (64 for x = all ones) saves the OR that makes __builtin_ctzll's argument nonzero. */
#if defined(__x86_64__)
static inline __attribute__((always_inline)) int ones_tzcnt(uint64_t x) {
    uint64_t r;
    __asm__("tzcnt %1, %0" : "=r"(r) : "r"(~x) : "cc");
    return (int)r;
}
#define ONES(x) (bmi ? ones_tzcnt(x) : __builtin_ctzll(~(x) | (1ull << QMAX)))
#else
#define ONES(x) __builtin_ctzll(~(x) | (1ull << QMAX))
#endif

/* One Rice symbol at *pos; the caller checks *pos against the end afterwards. */
static inline __attribute__((always_inline)) uint32_t get_rice(const uint8_t *in, uint64_t *pos, int r, int wide,
                                                               const int bmi) {
    (void)bmi;
    uint64_t x = peek(in, *pos);
    int q = ONES(x);
    if (q < QMAX) {
        *pos += (uint64_t)(q + 1 + r);
        return ((uint32_t)q << r) | (uint32_t)((x >> (q + 1)) & ((1u << r) - 1));
    }
    *pos += QMAX;
    x = peek(in, *pos);
    *pos += (uint64_t)wide;
    return (uint32_t)(x & ((1ull << wide) - 1));
}

size_t kd_pack_pad(const kd_pack_codec *c) { return kd_pack_bound(c, 1) + 16; }


/* One Rice symbol through a window (the decoder's fast path, see decode_body): the symbol starts at
 * bit p and w holds at least 16 + r valid bits from p (zeros past them). The peek at p is issued
 * first and the next symbol's window is cut from it, so its load overlaps this symbol's decoding.
 * An escape (q = 16) is decoded from that fresh peek and leaves a fresh window. */
#define RICE_W(out, p, w, r, wide)                                                             \
    do {                                                                                       \
        const uint64_t at_ = (p), fresh_ = peek(in, at_); /* ≥ 57 valid bits */                 \
        const uint64_t x_ = (w);                                                               \
        const int q_ = ONES(x_);                                                               \
        if (__builtin_expect(q_ < QMAX, 1)) {                                                  \
            const int n_ = q_ + 1 + (r);                                                       \
            (out) = ((uint32_t)q_ << (r)) | (uint32_t)((x_ >> (q_ + 1)) & ((1u << (r)) - 1));  \
            (p) = at_ + (uint64_t)n_;                                                          \
            (w) = fresh_ >> n_;                                                                \
        } else {                                                                               \
            (out) = (uint32_t)((fresh_ >> QMAX) & ((1ull << (wide)) - 1));                     \
            (p) = at_ + QMAX + (uint64_t)(wide);                                               \
            (w) = peek(in, (p));                                                               \
        }                                                                                      \
    } while (0)

/* The decoder. Its speed is one dependency chain per stream: where a symbol starts depends on the
 * previous one's length (peek, count the ones, add; ~14 cycles a symbol with a peek per symbol), so
 * the two streams are decoded side by side, and, in the bands whose Rice parameters are ≤ 12, each
 * symbol takes its bits from a window cut from the peek its predecessor issued (RICE_W: the load
 * leaves the chain). A window after a symbol of ≤ 16 + r bits holds ≥ 57 − (16 + r) ≥ 16 + r valid
 * bits when r ≤ 12: enough for the next symbol; every band starts from a fresh peek. Values and bit
 * positions are those of a peek per symbol (tests/test_dump_pack.c decodes with one and compares).
 * The grid code only grows: clamped per entry for the table, checked once per position; a rank out
 * of range is remembered as the largest one seen. Compiled twice: for any x86-64, and with BMI2's
 * shifts where the CPU has them (picked at run time); both give the same values. */
static inline __attribute__((always_inline)) int decode_body(const kd_pack_codec *c, int64_t T, const uint8_t *mask,
                                                            const uint8_t *in, size_t n, int32_t *ids, float *lp,
                                                            int64_t *bad_t, uint64_t *bits, const int bmi) {
    (void)bmi;
    static const int lo[4] = {0, 1, 4, 16};
    const int k = c->k, kb = ceil_log2(k);
    int r_id[4], r_val[4];
    uint64_t h = peek(in, 0);
    for (int b = 0; b < 4; b++) r_id[b] = (int)(h >> (4 * b)) & 15;
    for (int b = 0; b < 4; b++) r_val[b] = (int)(h >> (16 + 4 * b)) & 15;
    uint64_t len_a = h >> 32;
    /* two cursors: pa in stream A (values), pb in stream B (ids); a position reads at most
     * kd_pack_bound(c, 1) bytes past where it starts, within the caller's padding; checked after each */
    uint64_t pa = 64, end_a = (8 + len_a) * 8, pb = end_a, end_b = (uint64_t)n * 8;
    const float step = (float)c->step;
    const float *gap = c->gap;
    const int32_t *order = c->order;
    const uint64_t cmax = (uint64_t)c->cmax;
    const uint32_t V = (uint32_t)c->vocab;
    const int idb = c->id_bits;
    for (int64_t t = 0; t < T; t++) {
        int32_t *id = ids + t * k;
        float *l = lp + t * k;
        if (mask && !mask[t]) {
            memset(id, 0, (size_t)k * sizeof *id);
            memset(l, 0, (size_t)k * sizeof *l);
            continue;
        }
        int nf = k;
        uint64_t x = peek(in, pa);
        if (x & 1) pa += 1;
        else {
            nf = (int)((x >> 1) & ((1ull << kb) - 1)) + 1;
            pa += 1 + (uint64_t)kb;
            if (nf > k) goto bad;
        }
        float r0 = -(float)get_rice(in, &pa, r_val[0], Q0_BITS, bmi) * step;
        l[0] = r0;
        uint32_t rk = get_rice(in, &pb, r_id[0], idb, bmi), rmax = rk;
        uint64_t code = 0;
        id[0] = order[rk < V ? rk : 0];
        for (int b = 1; b < 4; b++) {
            int j = lo[b], j1 = b < 3 ? lo[b + 1] : k;
            if (j1 > nf) j1 = nf;
            const int rv = r_val[b], ri = r_id[b];
            if (rv <= 12 && ri <= 12) {   /* both streams through windows */
                uint64_t wa = peek(in, pa), wb = peek(in, pb);
                for (; j < j1; j++) {
                    uint32_t dc;
                    RICE_W(dc, pa, wa, rv, DC_BITS);
                    RICE_W(rk, pb, wb, ri, idb);
                    code += dc;
                    rmax = rk > rmax ? rk : rmax;
                    l[j] = r0 - gap[code < cmax ? code : cmax];
                    id[j] = order[rk < V ? rk : 0];
                }
            } else if (rv <= 12) {   /* the values through a window, the ids peeked per symbol */
                uint64_t wa = peek(in, pa);
                for (; j < j1; j++) {
                    uint32_t dc;
                    RICE_W(dc, pa, wa, rv, DC_BITS);
                    rk = get_rice(in, &pb, ri, idb, bmi);
                    code += dc;
                    rmax = rk > rmax ? rk : rmax;
                    l[j] = r0 - gap[code < cmax ? code : cmax];
                    id[j] = order[rk < V ? rk : 0];
                }
            } else {
                for (; j < j1; j++) {
                    code += get_rice(in, &pa, rv, DC_BITS, bmi);
                    rk = get_rice(in, &pb, ri, idb, bmi);
                    rmax = rk > rmax ? rk : rmax;
                    l[j] = r0 - gap[code < cmax ? code : cmax];
                    id[j] = order[rk < V ? rk : 0];
                }
            }
        }
        for (int j = nf; j < k; j++) {
            id[j] = 0;
            l[j] = -INFINITY;
        }
        if (code > cmax || rmax >= V || pa > end_a || pb > end_b) goto bad;
        continue;
    bad:
        *bad_t = t;
        bits[0] = pa, bits[1] = end_a, bits[2] = pb, bits[3] = end_b;
        return -1;
    }
    return 0;
}

#if defined(__x86_64__)
__attribute__((target("bmi,bmi2"))) static int decode_bmi2(const kd_pack_codec *c, int64_t T, const uint8_t *mask,
                                                           const uint8_t *in, size_t n, int32_t *ids, float *lp,
                                                           int64_t *bad_t, uint64_t *bits) {
    return decode_body(c, T, mask, in, n, ids, lp, bad_t, bits, 1);
}
#endif

static int decode_generic(const kd_pack_codec *c, int64_t T, const uint8_t *mask, const uint8_t *in, size_t n,
                          int32_t *ids, float *lp, int64_t *bad_t, uint64_t *bits) {
    return decode_body(c, T, mask, in, n, ids, lp, bad_t, bits, 0);
}

int kd_pack_decode(const kd_pack_codec *c, int64_t T, const uint8_t *mask, const uint8_t *in, size_t n,
                   int32_t *ids, float *lp, const char *what, kd_err *err) {
    if (n < 8) return kd_errf(err, "%s: %zu bytes, too short for the header", what, n);
    uint64_t len_a = peek(in, 0) >> 32;
    if (len_a > n - 8) return kd_errf(err, "%s: stream A of %llu bytes in a record of %zu", what, (unsigned long long)len_a, n);
    int64_t t = 0;
    uint64_t b[4];
#if defined(__x86_64__)
    int rc = __builtin_cpu_supports("bmi2") && !kd_cpu_generic() ? decode_bmi2(c, T, mask, in, n, ids, lp, &t, b)
                                            : decode_generic(c, T, mask, in, n, ids, lp, &t, b);
#else
    int rc = decode_generic(c, T, mask, in, n, ids, lp, &t, b);
#endif
    if (rc)
        return kd_errf(err, "%s: position %lld: malformed packed stream (bits %llu of %llu, %llu of %llu)", what,
                       (long long)t, (unsigned long long)b[0], (unsigned long long)b[1], (unsigned long long)b[2],
                       (unsigned long long)b[3]);
    return 0;
}
