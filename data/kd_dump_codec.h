/*
 * kd_dump_codec.h — the compressed top-k layout of teacher dumps,
 * "topk-packed-v1" (docs/dump-format.md, "Compressed dumps").
 *
 * Per sequence, one record (two bit streams: values and ids, decoded side by
 * side) holds every unmasked position's top-k:
 *   - the top-1 log-prob as q0 = round(−lp0 / step) (so |error| ≤ step/2);
 *   - the other log-probs as gaps g_j = r0 − lp_j from the quantized top
 *     r0 = −q0·step, on a companded grid c = round((knee/step)·ln(1 + g/knee))
 *     (fine near the top, coarser down the tail), stored as the
 *     non-negative differences c_j − c_{j−1} (the entries are sorted);
 *   - the ids as their rank in a per-file frequency order (dataset
 *     topk_id_order), so frequent ids take few bits;
 * all as Rice codes (parameters chosen per sequence, per band of slots) with
 * an escape to ceil(log2 V) raw bits for ids: an id never costs more than
 * 16 + ceil(log2 V) bits. Masked positions store nothing.
 *
 * Decoded log-probs are sorted, never above 0, and within
 *   |lp̂_0 − lp_0| ≤ step/2,
 *   |lp̂_j − lp_j| ≤ (knee + ĝ_j)·(exp(step/(2·knee)) − 1)   (ĝ_j = lp̂_0 − lp̂_j ≤ 64)
 * of the stored values; gaps past 64 nats are stored as 64. Ids are exact.
 *
 * The encoder and decoder below work on memory only; kd_dump.c / kd_dump_write.c
 * call the HDF5 side (kdd_codec_*, kd_dump_impl.h) through them.
 */
#ifndef KD_DUMP_CODEC_H
#define KD_DUMP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"

#define KD_DUMP_LAYOUT_PACKED "topk-packed-v1"
#define KD_PACK_GAP_MAX 64.0        /* nats: larger gaps from the top are stored as this */
#define KD_PACK_STEP_DEFAULT 0.0625 /* step: 1/16 nat at the top */
#define KD_PACK_KNEE_DEFAULT 2.0    /* knee: the grid spacing is step·(1 + gap/knee) */

typedef struct kd_pack_codec {
    int32_t k;
    int64_t vocab;
    double step, knee;
    int id_bits;          /* ceil(log2 V), at least 1: width of an escaped id */
    int32_t *order;       /* [V] rank → id (the dataset topk_id_order) */
    int32_t *rank;        /* [V] id → rank */
    float *gap;           /* [cmax + 1] decoded gap of each grid code */
    int32_t cmax;         /* largest grid code (the code of a 64-nat gap) */
    int32_t *work;        /* encoder scratch */
    size_t work_cap;
} kd_pack_codec;

/* step in [2^-10, 1], knee in [1/16, 64]; order: [V] a permutation of [0, V)
 * (rank → id), copied; NULL = identity. */
int kd_pack_init(kd_pack_codec *c, int32_t k, int64_t vocab, double step, double knee, const int32_t *order,
                 kd_err *err);
void kd_pack_free(kd_pack_codec *c);
/* The frequency order of the ids in ids[0..n) (most frequent first, ties by id). */
void kd_pack_order_from(const int32_t *ids, int64_t n, int64_t vocab, int32_t *order);

/* An upper bound on the bytes kd_pack_encode writes for T positions. */
size_t kd_pack_bound(const kd_pack_codec *c, int64_t T);
/* Encode one sequence of T positions (mask [T], NULL = all 1; ids, lp [T, k],
 * valid top-k as the writer checks them) into out; returns the byte count. */
size_t kd_pack_encode(kd_pack_codec *c, int64_t T, const uint8_t *mask, const int32_t *ids, const float *lp,
                      uint8_t *out);
/* Bytes a decoder may read past the end of a record: callers pad their buffers so. */
size_t kd_pack_pad(const kd_pack_codec *c);
/* Decode a record of n bytes (readable up to in[n + kd_pack_pad(c)]) into ids and
 * lp [T, k]; masked positions get ids 0 and log-probs 0. -1 with a message
 * naming `what` when the stream is malformed. */
int kd_pack_decode(const kd_pack_codec *c, int64_t T, const uint8_t *mask, const uint8_t *in, size_t n,
                   int32_t *ids, float *lp, const char *what, kd_err *err);
/* The documented error bound of slot j's decoded log-prob, given its decoded gap. */
double kd_pack_error_bound(const kd_pack_codec *c, int j, double gap);

/* ---- whole dumps (kd_dump_repack.c) ------------------------------------------------ */

typedef struct kd_dump kd_dump;

/* Rewrite the top-k dump `in` (any layout) as `out` in the packed layout
 * (step/knee 0 = the defaults), tokens, loss_mask and tokenizer unchanged.
 * The id order comes from the first block of 64 sequences. */
int kd_dump_repack(const char *in, const char *out, double step, double knee, kd_err *err);

/* How far the top-k of dump a (decoded) is from dump b's, position by position
 * (same shape, tokens and masks required). Unmasked positions only; slots
 * finite in both. */
typedef struct kd_dump_diff {
    int64_t positions, entries;      /* unmasked positions, finite entries compared */
    int64_t id_mismatch;             /* entries whose ids differ */
    int64_t over_bound;              /* entries whose error exceeds a's documented bound (packed a only; plus
                                        b's float16 rounding, |log p|·2^-11, when b is a plain float16 dump) */
    double max_lp_err, mean_lp_err;  /* |log p_a − log p_b| */
    double max_p_err;                /* |p_a − p_b| */
    double mean_mass_err;            /* mean |Σ p_a − Σ p_b| over positions */
    double kl_topk;                  /* mean KL(b ‖ a) over the top-k entries plus the tail bucket (1 − Σ p) */
} kd_dump_diff;
int kd_dump_compare(kd_dump *a, kd_dump *b, kd_dump_diff *diff, kd_err *err);

/* Bytes per token of dump d in the packed layout, measured by packing its
 * first max_seq sequences in memory (tokens and loss_mask included). */
int kd_dump_pack_measure(kd_dump *d, int64_t max_seq, double step, double knee, double *bytes_per_token, kd_err *err);

#endif
