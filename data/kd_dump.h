/*
 * kd_dump.h — teacher-logit dumps: the HDF5 schema of docs/dump-format.md
 * ("kd-teacher-dump" version 1), its writer, its reader and its validator.
 *
 * A dump holds n_seq sequences of T+1 tokens and, for each of the first T
 * positions, the teacher's distribution over the next token: either the top k
 * (ids + log-probabilities at temperature 1, sorted in descending order) or
 * the full logits. Position t (0 ≤ t < T) has read tokens[0..t] and predicts
 * tokens[t+1]; its label is tokens[t+1], or −100 where loss_mask[t] == 0.
 *
 * Root attributes: format="kd-teacher-dump", version=1, vocab_size, k (0 =
 * full logits), seq_len (T), temperature=1.0, teacher; n_seq (optional: the
 * commit marker kd's writer updates at every flush); distribution (optional:
 * "topk", "logits" or "none"; inferred from k when absent).
 * Datasets: tokens [n_seq, T+1] int32; loss_mask [n_seq, T] uint8 (optional);
 * topk_ids [n_seq, T, k] uint16 (V ≤ 65536) or int32, topk_logprobs
 * [n_seq, T, k] float16 or float32 — or logits [n_seq, T, V] float16/float32.
 * Optional group "tokenizer": raw arrays other code builds a tokenizer from.
 *
 * Tokens-only dumps (distribution = "none", k = 0) hold tokens (+ loss_mask and
 * tokenizer) and no teacher distribution: text for plain cross-entropy
 * training (alpha = 0), e.g. of a first teacher. vocab_size then only bounds
 * the token ids (the tokenizer's vocabulary).
 *
 * Values at masked positions (loss_mask 0) are not used and not validated,
 * but ids there must still lie in [0, V). Handles are not thread-safe: use one
 * kd_dump per thread (kd serialises its own HDF5 calls with a mutex).
 */
#ifndef KD_DUMP_H
#define KD_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "core/kd_err.h"

#define KD_DUMP_FORMAT "kd-teacher-dump"
#define KD_DUMP_VERSION 1
#define KD_DUMP_MAX_VOCAB (1 << 24)
#define KD_DUMP_MAX_K 4096
#define KD_DUMP_MAX_SEQ_LEN (1 << 20)
/* Σ p over the top-k may exceed 1 by this much plus the storage rounding bound
 * (2^-11 · Σ p·|log p| for float16, 2^-24 · ... for float32). */
#define KD_DUMP_SUM_TOL 1e-3

typedef enum kd_dump_dtype {
    KD_DUMP_F16 = 0,   /* IEEE binary16 (numpy float16) */
    KD_DUMP_F32 = 1,
} kd_dump_dtype;

typedef struct kd_dump_meta {
    int64_t vocab_size;        /* V: width of the teacher's distribution (may be padded past the tokenizer) */
    int32_t k;                 /* top-k entries per position; 0 = full logits */
    int32_t seq_len;           /* T: positions with a teacher distribution per sequence */
    double temperature;        /* capture temperature of the log-probs: 1.0 in version 1 */
    char teacher[256];         /* the teacher's name, e.g. "Qwen/Qwen2.5-7B" */
    kd_dump_dtype value_dtype; /* storage of topk_logprobs or logits */
    int has_loss_mask;         /* the dataset loss_mask exists */
    int tokens_only;           /* distribution "none": no topk/logits datasets (k must be 0) */
    /* Filled by the reader (ignored by the writer, which picks the narrowest id type): */
    int64_t n_seq;
    char tokens_dtype[32], ids_dtype[32], values_dtype[32];   /* "int32", "uint16", "float16", ... */
    int has_tokenizer;
    /* The compressed layout "topk-packed-v1" (docs/dump-format.md, kd_dump_codec.h): set packed (top-k
     * dumps only) and the quantization of the log-probs for the writer (0 = the defaults); the reader fills them. */
    int packed;
    double pack_step, pack_knee;
    /* Sampled classes (distribution "sampled", docs/dump-format.md "Sampled dumps"): per position the
     * distinct ids of n_samples i.i.d. draws from the teacher's distribution (at T = 1) with their counts,
     * in k = n_samples slots. Readers return log(count / n_samples) as the log-prob (kd_dump_sample_lp),
     * −inf in unused slots. The writer takes such log-probs (rounded to the nearest count). */
    int sampled;
    int32_t n_samples;         /* N, 1..KD_DUMP_MAX_SAMPLES; k == N */
} kd_dump_meta;

#define KD_DUMP_MAX_SAMPLES 255   /* counts are stored as uint8 */

/* The log-prob a reader returns for a sampled slot with this count: log(count / n), −inf for count 0.
 * Writers of sampled dumps pass these values (kd's writer rounds to the nearest count). */
float kd_dump_sample_lp(int count, int n);

/* The teacher's tokenizer as raw arrays (group "tokenizer"). Pieces and merges
 * are byte strings stored concatenated: piece i is piece_bytes[piece_offsets[i]
 * .. piece_offsets[i+1]). Pieces use GGUF's internal form (SPM: "▁" for space). */
typedef struct kd_dump_tokenizer {
    char model[32];            /* GGUF tokenizer.ggml.model: "llama" (SentencePiece), "gpt2" (BPE), ... */
    char pre[64];              /* GGUF tokenizer.ggml.pre ("llama-bpe", "qwen2", "default", ...); "" = absent */
    int32_t n;                 /* number of pieces (≤ vocab_size) */
    uint8_t *piece_bytes;
    int64_t *piece_offsets;    /* [n + 1], starts at 0, non-decreasing */
    float *scores;             /* [n] or NULL */
    int32_t *types;            /* [n] or NULL (GGUF token types: 1 normal ... 6 byte) */
    int32_t n_merges;          /* BPE merges "left right", 0 when none */
    uint8_t *merge_bytes;
    int64_t *merge_offsets;    /* [n_merges + 1] */
    int32_t bos_id, eos_id, unk_id, pad_id;   /* −1 = none */
    int add_bos, add_eos, add_space_prefix;
} kd_dump_tokenizer;

/* Frees the arrays of a tokenizer filled by kd_dump_read_tokenizer. */
void kd_dump_tokenizer_free(kd_dump_tokenizer *tok);
/* 0 when a and b have the same pieces, types, model and special ids; otherwise
 * -1 with a message naming the first difference ("piece 17: 'a' vs 'b'"). */
int kd_dump_tokenizer_compare(const kd_dump_tokenizer *a, const char *a_name, const kd_dump_tokenizer *b,
                              const char *b_name, kd_err *err);

/* ---- writer ---------------------------------------------------------------------- */

/* Writes go to PATH.partial; every append ends with an HDF5 flush that also
 * records n_seq, so a killed writer leaves a .partial file that
 * kd_dump_writer_resume continues after its last complete append. close
 * renames PATH.partial to PATH.
 *
 * Safety (docs/dump-format.md, "Writing safely"):
 *   - the writer holds an exclusive lock (flock) on PATH.partial from create or
 *     resume to close: a second writer of the same file is refused;
 *   - every sequence gets a 64-bit checksum in the dataset 'seq_checksum'
 *     (kd_dump_seq_checksum), written with it; a resume recomputes the checksum of
 *     every sequence the file holds (or, for a file without checksums, validates
 *     its values) and rolls back to the last sequence that verifies, so data a
 *     failed or interrupted write left half-written is never continued;
 *   - before each append the bytes it needs are reserved on the device
 *     (fallocate): a full disk fails the append before anything is written;
 *   - a file cut short in the middle of an HDF5 write (its superblock's end of
 *     allocation differs from its size) is not extended in place: its verified
 *     sequences are copied into a new file that replaces it (kd_dump_salvage.c);
 *   - the writer caches no chunks, so a write error surfaces in the append that
 *     made it; the writer then refuses further appends, rolls back to the last
 *     complete append, and close/release leave PATH.partial for a resume. */
typedef struct kd_dump_writer kd_dump_writer;

/* meta: vocab_size, k, seq_len, temperature (must be 1.0), teacher, value_dtype,
 * has_loss_mask, tokens_only (then k must be 0; value_dtype is ignored). tok
 * may be NULL. An existing PATH.partial is replaced (unless another writer holds it). */
kd_dump_writer *kd_dump_writer_create(const char *path, const kd_dump_meta *meta, const kd_dump_tokenizer *tok,
                                      kd_err *err);
/* Continue PATH.partial (or reopen a finished PATH as PATH.partial) after its
 * last verified sequence (see above): sequences of an append cut short, and any
 * whose checksum fails, are dropped; kd_dump_writer_note says what was dropped. */
kd_dump_writer *kd_dump_writer_resume(const char *path, kd_err *err);
int64_t kd_dump_writer_n_seq(const kd_dump_writer *w);
const kd_dump_meta *kd_dump_writer_meta(const kd_dump_writer *w);
/* After a resume: "" when every sequence verified, else one sentence naming the
 * first sequence that did not and how many were dropped. */
const char *kd_dump_writer_note(const kd_dump_writer *w);
/* Append n sequences. tokens [n, T+1]; loss_mask [n, T] (NULL = all 1; only
 * when the dump has one); top-k dumps: ids [n, T, k] + values = log-probs
 * [n, T, k]; full dumps: ids NULL + values = logits [n, T, V]; tokens-only
 * dumps: ids = values = NULL. The data is checked as kd_dump_validate would
 * check it before anything is written. */
int kd_dump_writer_append(kd_dump_writer *w, int64_t n, const int32_t *tokens, const uint8_t *loss_mask,
                          const int32_t *ids, const float *values, kd_err *err);
/* Flush, close and rename PATH.partial → PATH. The writer is freed either way;
 * after a failed write PATH.partial is kept (and -1 returned). */
int kd_dump_writer_close(kd_dump_writer *w, kd_err *err);
/* Flush and close, keeping PATH.partial for a later resume. Freed either way. */
int kd_dump_writer_release(kd_dump_writer *w, kd_err *err);
/* Close and delete PATH.partial. */
void kd_dump_writer_abort(kd_dump_writer *w);

/* The checksum of one sequence as 'seq_checksum' stores it: tokens [T+1], mask
 * [T] (NULL: all 1), ids [T·k] (NULL when k = 0), values [T·cols] as a reader
 * returns them (int32, float32; NULL for tokens only). See docs/dump-format.md. */
uint64_t kd_dump_seq_checksum(int64_t T, int64_t k, int64_t cols, const int32_t *tokens, const uint8_t *mask,
                              const int32_t *ids, const float *values);

/* ---- reader ---------------------------------------------------------------------- */

typedef struct kd_dump kd_dump;

/* Open and check attributes, dataset shapes and dtypes; messages name the file,
 * the attribute or dataset, what was found and what was expected. */
kd_dump *kd_dump_open(const char *path, kd_err *err);
void kd_dump_close(kd_dump *d);
const kd_dump_meta *kd_dump_get_meta(const kd_dump *d);
const char *kd_dump_path(const kd_dump *d);
/* Bytes the datasets occupy in the file (all sequences). */
uint64_t kd_dump_storage_bytes(const kd_dump *d);
/* The tokenizer group (kd_dump_tokenizer_free it); -1 when absent or malformed. */
int kd_dump_read_tokenizer(kd_dump *d, kd_dump_tokenizer *tok, kd_err *err);

/* Destinations of a read; NULL skips that dataset. */
typedef struct kd_dump_rows {
    int32_t *tokens;        /* [count, T+1] */
    uint8_t *loss_mask;     /* [count, T]; all 1 when the dump has no loss_mask */
    int32_t *topk_ids;      /* [count, T, k] */
    float *topk_logprobs;   /* [count, T, k] */
    float *logits;          /* [count, T, logits_width] */
    int64_t logits_width;   /* 0 = V; < V drops the columns ≥ width, > V fills them with −inf */
} kd_dump_rows;

/* Read sequences [first, first + count) (one hyperslab per dataset), converted
 * to int32 / float32. Asking a tokens-only dump for top-k or logits is an error. */
int kd_dump_read(kd_dump *d, int64_t first, int64_t count, const kd_dump_rows *out, kd_err *err);

/* ---- validator ------------------------------------------------------------------- */

typedef struct kd_dump_report {
    int64_t n_seq, n_positions, n_masked;   /* positions = n_seq · T */
    double mean_topk_mass;   /* mean Σ p over the top-k of unmasked positions (top-k dumps) */
    double min_topk_mass;
    double mean_top1_prob;   /* mean max p of unmasked positions */
    /* The first bad element, when bad == 1: */
    int bad;
    char dataset[32];        /* "tokens", "topk_ids", "topk_logprobs", "logits" */
    int64_t seq, pos, slot;  /* slot: index along k (or the vocabulary, or the token index) */
    double value;
    int64_t file_offset;     /* byte offset of that element in the file, −1 when unknown */
    int offset_in_compressed_chunk;   /* then file_offset is the chunk's offset */
    char what[160];          /* "NaN", "not sorted: -1.5 after -2.25", ... */
} kd_dump_report;

/* Check every sequence: token and id ranges, NaN/±Inf, sortedness of the
 * top-k, 0 < Σp ≤ 1 + tolerance, no duplicate ids (tokens-only dumps: token
 * ranges and loss_mask values only; the mass/top-1 statistics stay 0). Returns 0 when the dump is
 * valid; -1 otherwise, with the message naming the file, the dataset, the
 * sequence, position and slot and the file offset (and rep->bad set), or with
 * a structural error from kd_dump_open (rep->bad == 0). rep may be NULL. */
int kd_dump_validate(const char *path, kd_dump_report *rep, kd_err *err);
int kd_dump_check(kd_dump *d, kd_dump_report *rep, kd_err *err);

/* The validator's checks of one unmasked position as a reader returns it, for
 * loaders that check every batch: top-k (k > 0: ids [k] in [0, vocab), no
 * duplicates, log-probs sorted, finite except trailing −inf, ≤ 0, Σp ≤ 1 +
 * tolerance) or full logits (k = 0: [width] values, no NaN or +Inf, not all
 * −Inf). stamp: zeroed uint32 [vocab] (top-k), *mark bumped per call. Returns 0,
 * or 1 for a bad id (topk_ids) / 2 for a bad value, with *slot (−1: the whole
 * position) and what[0..n) describing it. */
int kd_dump_check_position(const kd_dump_meta *m, const int32_t *ids, const float *values, int64_t width,
                           uint32_t *stamp, uint32_t *mark, int64_t *slot, char *what, size_t n);

/* The id dtype kd writes for a vocabulary: "uint16" when V ≤ 65536, else "int32". */
const char *kd_dump_id_dtype_for(int64_t vocab_size);

#endif
