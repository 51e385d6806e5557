/*
 * kd_teacher_dump.h — producing teacher dumps by running a teacher kd can
 * load (a kd/HF checkpoint directory or a llama2.c .bin) over
 *   (a) text files: each document (a file, or the pieces between --doc-sep
 *       separators; empty pieces are skipped, the text is used byte for byte)
 *       is tokenized as BOS + text + EOS (the tokenizer's space prefix
 *       applies, control-token texts are not parsed), the documents are
 *       concatenated and cut into consecutive, non-overlapping sequences of
 *       T+1 tokens; the last partial sequence is padded with EOS and its
 *       padding masked out (loss_mask 0 where the label is padding); or
 *   (b) sequences sampled from the teacher itself (sequence-level KD data):
 *       each starts at BOS and is sampled at temperature τ (0 = greedy) with a
 *       per-sequence seed (seed and index), so a resumed run produces the same
 *       sequences. Sampling runs kd's inference engine (infer/kd_infer.h) with a
 *       KV cache per sequence, up to 64 sequences per decode step (fewer when
 *       their caches and distributions would pass 1 GiB; more with a larger
 *       batch): linear in T. The distributions stored are the engine's logits
 *       the tokens were drawn from (the training forward's up to float
 *       summation order: ~1e-6 relative, at most one float16 ulp in a stored
 *       value; docs/dump-format.md). The sequences sampled together are fixed
 *       by their ordinals, so --batch and resuming do not change the dump.
 * and storing, per position, the teacher's top-k log-probabilities (or full
 * logits) at temperature 1. k must not exceed the teacher's vocabulary (an
 * error, not a silent clamp: every dump a loader combines must share k) nor
 * KD_DUMP_MAX_K; T must not exceed the teacher's max_position_embeddings.
 * Sequences go to a validation file instead when a hash of their index falls
 * below val_fraction.
 *
 * Tokens only (tokens_only): no teacher at all. Text files are packed exactly
 * as in (a), with the tokenizer given (required), and the dump holds the
 * tokens and loss_mask only (attribute distribution = "none", k = 0,
 * vocab_size = the tokenizer's vocabulary, teacher ""): text to train a model
 * with plain cross-entropy (alpha = 0), e.g. a first teacher. No forward pass,
 * so it runs at tokenizer speed; batch defaults to 1024 sequences per append
 * (fewer when they would exceed 4M tokens).
 * --generate is an error (there is no teacher to sample).
 *
 * Resuming: an interrupted dump leaves OUT.partial (and VAL.partial), holding
 * every complete batch; running the same command again checks that the file
 * has the same kind (tokens only or not), k, T, vocabulary, dtype and teacher
 * name, verifies every sequence it holds against its checksum (rolling back to
 * the last that verifies: data/kd_dump.h, "Safety"), skips the sequences it
 * holds and appends the rest. An error during the run (a full disk included)
 * also leaves the .partial files (when they hold sequences). Options the file
 * does not record (text files, --doc-sep, seed, temperature, val fraction) must
 * be the same. OUT (and VAL) must be absent or regular files (a symbolic link
 * is followed); a device or a FIFO is refused, never replaced.
 * Progress goes to the caller's callback (kd teacher dump draws a bar with
 * sequences, tokens/s and ETA on stderr).
 *
 * Testing knob: the environment variable KD_DUMP_STOP_AFTER=N makes the
 * process exit with status 75 immediately after its N-th append, without
 * closing the writers — what a kill between two batches leaves behind
 * (tests/test_teacher_dump.c).
 */
#ifndef KD_TEACHER_DUMP_H
#define KD_TEACHER_DUMP_H

#include <stdint.h>

#include "core/kd_err.h"
#include "data/kd_dump.h"

/* What kd_teacher_dump reports as it goes; the caller shows it (kd prints a bar). */
typedef struct kd_teacher_dump_progress {
    const char *resumed;          /* non-NULL only on a resume note: this file's .partial is kept ... */
    int64_t done, total;          /* ... with `done` sequences; otherwise sequences written of total */
    int64_t computed;             /* sequences this process computed (done minus what it resumed after) */
    int64_t seq_len;              /* tokens per sequence */
    double elapsed_s;             /* since this process started writing */
    int last;                     /* 1 on the report after the last append */
} kd_teacher_dump_progress;

typedef struct kd_teacher_dump_opts {
    const char *teacher;          /* model path (NULL with tokens_only) */
    const char *tokenizer;        /* NULL: TEACHER/tokenizer.bin (required with tokens_only) */
    int tokens_only;              /* no teacher: pack the text into a tokens-only dump */
    const char *const *text;      /* text files (mode a) */
    int n_text;
    const char *doc_sep;          /* NULL: every file is one document */
    int64_t generate;             /* > 0: mode b, this many sequences */
    double gen_temperature;       /* sampling temperature (mode b) */
    uint64_t seed;
    int64_t seq_len;              /* T */
    int64_t topk;                 /* 0: full logits */
    int64_t sample;               /* > 0: sampled classes (distribution "sampled"): this many i.i.d. draws per
                                     position from the teacher's distribution at T = 1, stored as the distinct
                                     ids with their counts (k = sample, ≤ KD_DUMP_MAX_SAMPLES; topk is ignored).
                                     The draws of position t of sequence i come from their own stream
                                     (seed, i, t): resuming or --batch do not change them */
    kd_dump_dtype dtype;
    int packed;                   /* write the compressed layout "topk-packed-v1" (top-k only) */
    double pack_step, pack_knee;  /* its log-prob quantization; 0 = the defaults (kd_dump_codec.h) */
    double val_fraction;          /* with val_out */
    const char *val_out;          /* NULL: no validation file */
    int64_t batch;                /* sequences per teacher forward (and append); 0: 16, tokens only up to 1024;
                                     --generate samples max(batch, 64) at a time */
    int64_t max_sequences;        /* 0: all the text gives */
    /* Called after every append and once at the end (and once per file that is
     * resumed, before the first batch); NULL: no reports. */
    void (*progress)(void *ctx, const kd_teacher_dump_progress *p);
    void *progress_ctx;
} kd_teacher_dump_opts;

void kd_teacher_dump_opts_init(kd_teacher_dump_opts *o);
int kd_teacher_dump(const kd_teacher_dump_opts *o, const char *out, kd_err *err);

/* Sampled classes of one row of logits (distribution "sampled"): n i.i.d. draws from softmax(logits)
 * (T = 1) with the stream seeded by `stream`; ids/lp (room for n) receive the distinct ids drawn, by
 * count descending (ties: smaller id first), and kd_dump_sample_lp(count, n); unused slots id 0 and
 * −inf. cum: scratch of V doubles. */
void kd_sample_classes(const float *logits, int64_t V, int64_t n, uint64_t stream, double *cum, int32_t *ids,
                       float *lp);
/* The stream of position t of sequence i (kd_sample_classes). */
uint64_t kd_sample_stream(uint64_t seed, int64_t seq, int64_t t);

/* Top-k of one row of logits as log-probabilities at temperature 1, sorted
 * descending (ties: smaller id first). ids/lp have room for k. */
void kd_topk_logprobs(const float *logits, int64_t V, int64_t k, int32_t *ids, float *lp);

#endif
