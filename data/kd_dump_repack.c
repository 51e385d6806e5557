/*
 * kd_dump_repack.c — whole-dump tools around the packed layout
 * (kd_dump_codec.h): rewrite a dump as "topk-packed-v1" (kd teacher pack),
 * compare a decoded dump with its original (kd teacher info --compare), and
 * measure what packing a dump would give (kd teacher info --estimate).
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/kd_dump.h"
#include "data/kd_dump_codec.h"

#define BLOCK 64   /* sequences per read/append */

int kd_dump_repack(const char *in, const char *out, double step, double knee, kd_err *err) {
    kd_dump *d = kd_dump_open(in, err);
    if (!d) return -1;
    const kd_dump_meta *m = kd_dump_get_meta(d);
    int rc = -1;
    kd_dump_writer *w = NULL;
    kd_dump_tokenizer tok = {0};
    int have_tok = 0;
    int64_t T = m->seq_len, k = m->k, N = m->n_seq;
    int32_t *tokens = malloc((size_t)(BLOCK * (T + 1)) * 4), *ids = malloc((size_t)(BLOCK * T * (k ? k : 1)) * 4);
    uint8_t *mask = malloc((size_t)(BLOCK * T));
    float *lp = malloc((size_t)(BLOCK * T * (k ? k : 1)) * 4);
    if (m->k < 1 || m->tokens_only) {
        kd_errf(err, "%s: not a top-k dump (k = %d%s): only a top-k packs", in, m->k, m->tokens_only ? ", tokens only" : "");
        goto out;
    }
    if (!tokens || !ids || !mask || !lp) {
        kd_errf(err, "%s: out of memory", in);
        goto out;
    }
    if (m->has_tokenizer) {
        if (kd_dump_read_tokenizer(d, &tok, err)) goto out;
        have_tok = 1;
    }
    kd_dump_meta wm = *m;
    wm.packed = 1;
    wm.pack_step = step;
    wm.pack_knee = knee;
    if (!(w = kd_dump_writer_create(out, &wm, have_tok ? &tok : NULL, err))) goto out;
    for (int64_t s = 0; s < N; s += BLOCK) {
        int64_t n = N - s < BLOCK ? N - s : BLOCK;
        kd_dump_rows rows = {.tokens = tokens, .loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
        if (kd_dump_read(d, s, n, &rows, err) ||
            kd_dump_writer_append(w, n, tokens, m->has_loss_mask ? mask : NULL, ids, lp, err))
            goto out;
    }
    rc = kd_dump_writer_close(w, err);
    w = NULL;
out:
    if (w) kd_dump_writer_abort(w);
    if (have_tok) kd_dump_tokenizer_free(&tok);
    free(tokens);
    free(ids);
    free(mask);
    free(lp);
    kd_dump_close(d);
    return rc;
}

int kd_dump_compare(kd_dump *a, kd_dump *b, kd_dump_diff *df, kd_err *err) {
    memset(df, 0, sizeof *df);
    const kd_dump_meta *ma = kd_dump_get_meta(a), *mb = kd_dump_get_meta(b);
    if (ma->k < 1 || mb->k != ma->k || ma->seq_len != mb->seq_len || ma->n_seq != mb->n_seq ||
        ma->vocab_size != mb->vocab_size || ma->tokens_only || mb->tokens_only)
        return kd_errf(err, "%s and %s differ in shape (k %d/%d, seq_len %d/%d, sequences %" PRId64 "/%" PRId64
                       ", vocab_size %" PRId64 "/%" PRId64 "): only a dump and its repacked copy compare",
                       kd_dump_path(a), kd_dump_path(b), ma->k, mb->k, ma->seq_len, mb->seq_len, ma->n_seq, mb->n_seq,
                       ma->vocab_size, mb->vocab_size);
    const int64_t T = ma->seq_len, k = ma->k;
    int rc = -1;
    kd_pack_codec codec;
    int have_codec = 0;
    int32_t *ta = malloc((size_t)(T + 1) * 4), *tb = malloc((size_t)(T + 1) * 4);
    int32_t *ia = malloc((size_t)(T * k) * 4), *ib = malloc((size_t)(T * k) * 4);
    float *la = malloc((size_t)(T * k) * 4), *lb = malloc((size_t)(T * k) * 4);
    uint8_t *xa = malloc((size_t)T), *xb = malloc((size_t)T);
    if (!ta || !tb || !ia || !ib || !la || !lb || !xa || !xb) {
        kd_errf(err, "out of memory");
        goto out;
    }
    if (ma->packed) {
        if (kd_pack_init(&codec, (int32_t)k, 1, ma->pack_step, ma->pack_knee, NULL, err)) goto out;
        have_codec = 1;
    }
    /* b's own storage rounding: a packed a written from the teacher's float32 values is compared with b's float16 */
    const double b_round = !mb->packed && mb->value_dtype == KD_DUMP_F16 ? 1.0 / 2048 : 0;
    double sum_err = 0, sum_mass = 0, sum_kl = 0;
    for (int64_t s = 0; s < ma->n_seq; s++) {
        kd_dump_rows ra = {.tokens = ta, .loss_mask = xa, .topk_ids = ia, .topk_logprobs = la};
        kd_dump_rows rb = {.tokens = tb, .loss_mask = xb, .topk_ids = ib, .topk_logprobs = lb};
        if (kd_dump_read(a, s, 1, &ra, err) || kd_dump_read(b, s, 1, &rb, err)) goto out;
        if (memcmp(ta, tb, (size_t)(T + 1) * 4) || memcmp(xa, xb, (size_t)T)) {
            kd_errf(err, "%s and %s: sequence %" PRId64 " has other tokens or another loss_mask", kd_dump_path(a),
                    kd_dump_path(b), s);
            goto out;
        }
        for (int64_t t = 0; t < T; t++) {
            if (!xa[t]) continue;
            df->positions++;
            double pa_sum = 0, pb_sum = 0, top_a = la[t * k];
            for (int64_t j = 0; j < k; j++) {
                float va = la[t * k + j], vb = lb[t * k + j];
                if (isfinite(va)) pa_sum += exp((double)va);
                if (isfinite(vb)) pb_sum += exp((double)vb);
                if (!isfinite(va) || !isfinite(vb)) continue;
                df->entries++;
                df->id_mismatch += ia[t * k + j] != ib[t * k + j];
                double e = fabs((double)va - (double)vb), pe = fabs(exp((double)va) - exp((double)vb));
                sum_err += e;
                if (e > df->max_lp_err) df->max_lp_err = e;
                if (pe > df->max_p_err) df->max_p_err = pe;
                sum_kl += exp((double)vb) * ((double)vb - (double)va);   /* + the tail bucket below */
                /* the bound, plus float rounding of the decoded value; gaps past 64 nats are clamped */
                if (have_codec && top_a - va < KD_PACK_GAP_MAX &&
                    e > kd_pack_error_bound(&codec, (int)j, top_a - (double)va) + 1e-6 * (1 + fabs((double)va)) +
                            b_round * fabs((double)vb))
                    df->over_bound++;
            }
            sum_mass += fabs(pa_sum - pb_sum);
            double tail_a = 1 - pa_sum, tail_b = 1 - pb_sum;
            if (tail_b > 1e-12) sum_kl += tail_b * log(tail_b / (tail_a > 1e-12 ? tail_a : 1e-12));
        }
    }
    if (df->entries) df->mean_lp_err = sum_err / (double)df->entries;
    if (df->positions) {
        df->mean_mass_err = sum_mass / (double)df->positions;
        df->kl_topk = sum_kl / (double)df->positions;
    }
    rc = 0;
out:
    if (have_codec) kd_pack_free(&codec);
    free(ta);
    free(tb);
    free(ia);
    free(ib);
    free(la);
    free(lb);
    free(xa);
    free(xb);
    return rc;
}

int kd_dump_pack_measure(kd_dump *d, int64_t max_seq, double step, double knee, double *bpt, kd_err *err) {
    const kd_dump_meta *m = kd_dump_get_meta(d);
    *bpt = 0;
    if (m->k < 1 || m->tokens_only)
        return kd_errf(err, "%s: not a top-k dump: the packed layout stores a top-k", kd_dump_path(d));
    int64_t T = m->seq_len, k = m->k, n = m->n_seq < max_seq ? m->n_seq : max_seq;
    if (n < 1) return kd_errf(err, "%s: no sequences to measure", kd_dump_path(d));
    int rc = -1;
    kd_pack_codec c;
    int have = 0;
    int32_t *ids = malloc((size_t)(n * T * k) * 4), *order = malloc((size_t)m->vocab_size * 4);
    float *lp = malloc((size_t)(n * T * k) * 4);
    uint8_t *mask = malloc((size_t)(n * T)), *buf = NULL;
    if (!ids || !order || !lp || !mask) {
        kd_errf(err, "out of memory");
        goto out;
    }
    kd_dump_rows rows = {.loss_mask = mask, .topk_ids = ids, .topk_logprobs = lp};
    if (kd_dump_read(d, 0, n, &rows, err)) goto out;
    kd_pack_order_from(ids, n * T * k, m->vocab_size, order);
    if (kd_pack_init(&c, (int32_t)k, m->vocab_size, step ? step : KD_PACK_STEP_DEFAULT,
                     knee ? knee : KD_PACK_KNEE_DEFAULT, order, err))
        goto out;
    have = 1;
    if (!(buf = malloc(kd_pack_bound(&c, T)))) {
        kd_errf(err, "out of memory");
        goto out;
    }
    double bytes = 0;
    for (int64_t s = 0; s < n; s++) {
        size_t nb = kd_pack_encode(&c, T, mask + s * T, ids + s * T * k, lp + s * T * k, buf);
        if (!nb) {
            kd_errf(err, "out of memory");
            goto out;
        }
        bytes += (double)nb + 8;   /* + its entry in topk_offsets */
    }
    /* tokens int32 [T+1] and loss_mask uint8 [T] per sequence, as stored */
    *bpt = (bytes + (double)n * (4.0 * (double)(T + 1) + (m->has_loss_mask ? (double)T : 0))) / (double)(n * T);
    rc = 0;
out:
    if (have) kd_pack_free(&c);
    free(ids);
    free(order);
    free(lp);
    free(mask);
    free(buf);
    return rc;
}
