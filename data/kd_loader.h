/*
 * kd_loader.h — batches for distillation from one or more teacher dumps
 * (data/kd_dump.h): [B, T] tokens and labels with the teacher's top-k
 * (ids + log-probs) or full logits, shuffled per epoch, split into train and
 * validation, sharded by rank, resumable from a cursor, read ahead by a
 * background thread.
 *
 * Sequences. The loader's universe is the concatenation of the dumps, in the
 * order given; sequence s of dump d has the global id (d, s). All dumps must
 * share seq_len, k (top-k or full) and vocab_size (and their tokenizers, when
 * present, must agree), and either all hold a teacher distribution or all
 * hold tokens only (distribution "none"): a loader does not mix the two.
 *
 * Split. Sequence (d, s) belongs to the validation split when
 * splitmix64(split_seed ^ (d << 40) ^ s) < val_fraction · 2^64: a fixed,
 * seed-independent choice that does not move when a dump grows by appending.
 * KD_SPLIT_ALL takes every sequence (e.g. a separate validation dump).
 *
 * Epochs and shards. Epoch e visits the split in the order of a Fisher–Yates
 * permutation seeded by (seed, e) (identity when shuffle is 0). Rank r of
 * `world` takes the permutation's entries r, r + world, r + 2·world, ...;
 * ranks see disjoint sequences and together the whole split. Every rank gets
 * ceil(ceil(n / world) / B) batches per epoch; rows past a rank's share are
 * padding (tokens 0, labels −100, seq_id −1), so all ranks step in lockstep
 * and no sequence is dropped. The loader runs epoch after epoch.
 *
 * Labels. Row b, position t: tokens = dump tokens[t], labels = tokens[t+1],
 * or −100 where loss_mask[t] is 0. The teacher data at t is the distribution
 * that predicts labels[t]. Positions with label −100 must be skipped by the
 * loss; their teacher values are whatever the dump holds.
 *
 * Vocabulary. With student_vocab > 0, KD_VOCAB_EXACT requires the dumps'
 * vocab_size to equal it. KD_VOCAB_PADDED (for teachers whose logit width is
 * padded past the tokenizer, e.g. 152064 vs 151936) accepts any difference:
 * top-k entries with ids ≥ student_vocab are removed (the later entries move
 * up, the freed slots get id 0 and log-prob −inf, their mass joins the tail)
 * and counted in kd_loader_stats; full logits are cut to student_vocab
 * columns or padded with −inf; a token or label ≥ student_vocab is an error
 * in both policies. With a student tokenizer, a dump tokenizer must equal it.
 *
 * Tokens only. Batches of tokens-only dumps carry tokens and labels and no
 * teacher data: k = 0, tokens_only = 1, topk_ids, topk_logprobs and logits
 * NULL (train them with alpha = 0, plain cross-entropy).
 *
 * Memory: prefetch + 1 batch buffers; a full-logits batch is B·T·V·4 bytes
 * (nothing of the kind for tokens-only dumps).
 *
 * Cursor. kd_loader_cursor_get() returns the position of the next batch; a loader
 * built with the same options and kd_loader_restore()d to it returns exactly
 * the batches the original would have returned.
 */
#ifndef KD_LOADER_H
#define KD_LOADER_H

#include <stdint.h>

#include "core/kd_err.h"
#include "data/kd_dump.h"

typedef enum kd_split {
    KD_SPLIT_TRAIN = 0,   /* sequences not in the validation fraction */
    KD_SPLIT_VAL = 1,     /* the validation fraction */
    KD_SPLIT_ALL = 2,
} kd_split;

typedef enum kd_vocab_policy {
    KD_VOCAB_EXACT = 0,
    KD_VOCAB_PADDED = 1,
} kd_vocab_policy;

typedef struct kd_loader_opts {
    const char *const *paths;   /* dumps, in order */
    int n_paths;
    int batch_size;             /* B ≥ 1 */
    uint64_t seed;              /* shuffling */
    int shuffle;                /* 1: permute each epoch; 0: dump order */
    kd_split split;
    double val_fraction;        /* [0, 1] */
    uint64_t split_seed;        /* which sequences are validation (keep fixed across runs) */
    int rank, world;            /* 0 ≤ rank < world; world 0 counts as 1 */
    int prefetch;               /* batches read ahead by a background thread; 0 = read in kd_loader_next */
    int64_t student_vocab;      /* 0 = no check */
    kd_vocab_policy vocab_policy;
    const kd_dump_tokenizer *student_tokenizer;   /* NULL = no check */
} kd_loader_opts;

/* Defaults: batch 8, shuffle on, KD_SPLIT_ALL, world 1, prefetch 2. */
void kd_loader_opts_init(kd_loader_opts *o);

typedef struct kd_batch {
    int B, T, k;           /* k = 0: full logits, or tokens only */
    int tokens_only;       /* no teacher data: topk_ids, topk_logprobs and logits are NULL */
    int sampled;           /* the top-k are sampled classes (distribution "sampled"): log p̂ = log(count / N) */
    int64_t V;             /* row width of logits (student_vocab, or the dumps' vocab_size) */
    int64_t epoch, index;  /* the batch's place: batch `index` of epoch `epoch` on this rank */
    int n_rows;            /* rows holding sequences; the rest are padding */
    int64_t n_labels;      /* labels ≠ −100 */
    int32_t *tokens;       /* [B, T] model input */
    int32_t *labels;       /* [B, T] next token or −100 */
    int32_t *topk_ids;     /* [B, T, k] (NULL when k = 0) */
    float *topk_logprobs;  /* [B, T, k] log p at temperature 1, descending */
    float *logits;         /* [B, T, V] (NULL when k > 0 or tokens_only) */
    int32_t *dump;         /* [B] index of the dump of each row, −1 for padding */
    int64_t *seq;          /* [B] sequence index within that dump, −1 for padding */
} kd_batch;

/* Where the next batch comes from. Plain data: save it in a checkpoint. */
typedef struct kd_loader_cursor {
    uint64_t seed;
    int64_t epoch;
    int64_t batch;          /* next batch index within the epoch */
    uint64_t config_hash;   /* of the options that shape batches; restore checks it */
} kd_loader_cursor;

typedef struct kd_loader_stats {
    int64_t batches, sequences;   /* delivered */
    int64_t topk_dropped;         /* top-k entries removed by KD_VOCAB_PADDED */
    double wait_seconds;          /* time kd_loader_next spent waiting for the reader */
} kd_loader_stats;

typedef struct kd_loader kd_loader;

kd_loader *kd_loader_new(const kd_loader_opts *o, kd_err *err);
void kd_loader_free(kd_loader *L);

/* The next batch, owned by the loader and valid until the next call (or free).
 * NULL on error (a read error of the prefetch thread is reported here). */
const kd_batch *kd_loader_next(kd_loader *L, kd_err *err);

int64_t kd_loader_n_sequences(const kd_loader *L);      /* in the split, all ranks */
int64_t kd_loader_batches_per_epoch(const kd_loader *L); /* per rank */
const kd_dump_meta *kd_loader_meta(const kd_loader *L);  /* of the first dump (tokens_only: of all) */

kd_loader_cursor kd_loader_cursor_get(const kd_loader *L);
/* Continue at the cursor (drops read-ahead batches). -1 when it was saved by a
 * loader with other options (batch size, dumps, split, rank/world, shuffle). */
int kd_loader_restore(kd_loader *L, const kd_loader_cursor *c, kd_err *err);
void kd_loader_get_stats(const kd_loader *L, kd_loader_stats *s);

#endif
