/*
 * kd_awq.h — activation-aware weight quantization (AWQ) of a student for a
 * GGUF target, and the plain round-to-nearest baseline (docs/quantization.md).
 *
 * AWQ changes FP32 weights only; the model stays an ordinary checkpoint and
 * `kd export` quantizes it afterwards. Layer by layer, on calibration tokens:
 *
 *   1. Run the unquantized layer on its input (the FP output of the previous
 *      unquantized layer), caching the inputs of every linear; the layer's FP
 *      output becomes the next layer's input.
 *   2. Scale search, one group of linears sharing an input at a time:
 *        prev op (gets 1/s)         linears (columns ×s)   error measured on
 *        input_layernorm            q, k, v                self-attention output (o FP)
 *        v_proj rows (no GQA only)  o                      o_proj output
 *        post_attention_layernorm   gate, up               MLP output (down FP)
 *        up_proj rows               down                   down_proj output
 *      s_x[c] = mean |x_c| over every calibration token (input of the group's
 *      first linear); for r = k/n_grid, k = 0..n_grid−1:
 *      s = max(s_x^r, 1e-4), s /= sqrt(max(s)·min(s)); each linear becomes
 *      Q(W·diag(s))·diag(s)⁻¹ and the loss is the mean squared difference
 *      between the block's FP output and its output with those weights, on
 *      the cached FP input. r = 0 (s = 1) is plain rounding; the lowest loss
 *      wins (ties: the smaller r), so the chosen loss never exceeds it.
 *      The chosen s is folded exactly: the prev op's weight (RMSNorm weight,
 *      or the rows of v_proj / up_proj) is divided by s, the linears'
 *      columns multiplied by s, and the cached inputs divided by s.
 *   3. Clip search (every linear but q and k): ~clip_tokens tokens, one per
 *      window of n/clip_tokens at a pseudo-random offset (a plain stride
 *      that the sequence length divides would pick one position only); per (output row, quantization group) the clip
 *      m = max|w|·(1 − i/n_grid), i = 0..n_grid·max_shrink−1, minimising the
 *      mean over tokens of (Σ_group x·(Q(clamp(w, ±m)) − w))²; W ← clamp(W, ±m*).
 *
 * Q, the pseudo-quantizer, is the real ggml quantizer of the type the export
 * will give each tensor (kd_export_tensor_type under the preset: "q4_0" and
 * "q4_1" → that preset; "q4_k" → the q4_k_m recipe with Q6_K for some attn_v /
 * ffn_down and the fallbacks of rows that the block does not divide), applied
 * to whole rows, so the search optimises the numbers that will ship. The
 * quantization group of the clip search is that type's block (32, or 256 for
 * the K-quants). With group_size > 0 the quantizer is instead the reference's
 * asymmetric int4 with groups of group_size along the input (round half to
 * even, docs/quantization.md), which reproduces llm-awq's w4-g128 with group_size 128.
 * Tensors that stay unquantized (F32/F16/BF16 by fallback) take no part in a
 * group's search (a group of only such tensors is skipped) nor in clipping.
 *
 * Threads: OpenMP over rows and heads, OpenBLAS for the matrix products.
 * Memory: about 6·C + 3·F + 3·H·D + 2·Hkv·D floats per calibration token
 * (≈ 450 MB for 8192 tokens of a 768-wide, 12-head, 2048-FFN model).
 */
#ifndef KD_AWQ_H
#define KD_AWQ_H

#include <cJSON.h>
#include <stdint.h>

#include "core/kd_err.h"
#include "student/kd_model.h"

typedef enum kd_quant_method {
    KD_QUANT_RTN = 0,   /* round to nearest: change nothing (the baseline) */
    KD_QUANT_AWQ = 1,
} kd_quant_method;

/* What the AWQ search reports as it goes; the caller shows it (kd prints a bar). */
typedef struct kd_awq_progress {
    const char *start;       /* non-NULL only on the note before the search: the target ("q4_k", "int4
                                (reference)") and the calibration, samples sequences of seq tokens */
    int64_t samples, seq;
    int64_t done, total;     /* search stages done of total (5 per layer: forward, the scale groups, clip) */
    int64_t layer, n_layers; /* the layer being searched (0-based; n_layers once done) */
    const char *stage;       /* what runs now: "forward", the block a group is measured on, "clip", "done" */
    double elapsed_s;
    int failed;              /* 1: the search stopped on an error (err says why) */
} kd_awq_progress;

typedef struct kd_awq_opts {
    kd_quant_method method;
    const char *format;      /* "q4_0" | "q4_1" | "q4_k" (the q4_k_m recipe); may be NULL with group_size > 0 */
    int group_size;          /* 0: the target type's quantizer; > 0: reference int4 asymmetric, groups of this */
    int n_grid;              /* scale ratios and clip steps (20) */
    double max_shrink;       /* the clip search tries shrinks below this (0.5) */
    int clip;                /* run the clip search (1) */
    int64_t clip_tokens;     /* tokens the clip search samples (512) */
    int clip_guard;          /* undo a block's clips when they raise its loss: 1, 0 (the reference), −1 auto:
                                on for GGUF types, off for the reference int4 (group_size > 0) */
    double force_ratio;      /* ≥ 0: skip the search and use this ratio for every group (tests); −1: search */
    void (*progress)(void *ctx, const kd_awq_progress *p);   /* NULL: no reports */
    void *progress_ctx;
} kd_awq_opts;

void kd_awq_opts_init(kd_awq_opts *o);
/* The export preset of a format ("q4_0" → "q4_0", "q4_1" → "q4_1", "q4_k" → "q4_k_m"), NULL when unknown. */
const char *kd_awq_preset(const char *format);
/* "rtn" / "awq" → method; -1 when unknown. */
int kd_quant_method_parse(const char *name);

/* Check options against a model: format known (or group_size > 0), group_size
 * dividing every decoder linear's row length, grid and shrink ranges. */
int kd_awq_check(const kd_model *m, const kd_awq_opts *o, kd_err *err);

/* Quantize m in place on calibration tokens [n_seq, T] (ids < vocab_size).
 * RTN changes nothing. record (may be NULL) receives "layers": for each layer
 * the ratio, loss, loss at ratio 0 and every grid loss of each scale group and
 * the clip statistics of each linear. */
int kd_awq_quantize(kd_model *m, const int32_t *tokens, int64_t n_seq, int64_t T, const kd_awq_opts *o,
                    cJSON *record, kd_err *err);

/* The pseudo-quantizer applied to the [rows, cols] weight of HF tensor `name`
 * (in place): the export type under the options' preset, or the reference
 * int4 with group_size. *type receives the ggml type (−1 for reference int4). */
int kd_awq_fake_quant(const kd_model *m, const kd_awq_opts *o, const char *name, float *w, int64_t rows,
                      int64_t cols, int32_t *type, kd_err *err);
/* The ggml type the export gives HF tensor `name` under preset (F32 for 1-D). */
int32_t kd_awq_export_type(const kd_model *m, const char *preset, const char *name);
/* Replace every weight of m by what a GGUF export of `preset` stores (its
 * dequantized values): the model llama.cpp computes with, up to activations. */
int kd_quant_fake_model(kd_model *m, const char *preset, kd_err *err);

/* The four block errors of layer `layer` as the search measures them: inputs
 * from ref's FP forward up to that layer; m's layer run in FP with, in turn,
 * the linears of one group pseudo-quantized; error = mean squared difference
 * to ref's FP block output. err4: attention (q,k,v), o_proj, MLP (gate, up),
 * down_proj; −1 where the group does not apply (o_proj under GQA). With
 * m == ref this is the loss at ratio 0. */
int kd_awq_block_errors(const kd_model *ref, const kd_model *m, const int32_t *tokens, int64_t n_seq, int64_t T,
                        int64_t layer, const kd_awq_opts *o, double err4[4], kd_err *err);

/* ---- the checkpoint-level command (kd quantize) ------------------------------------ */

typedef struct kd_quantize_opts {
    const char *model;       /* checkpoint directory (or llama2.c .bin) */
    const char *calib;       /* teacher dump .h5 (its tokens) */
    const char *calib_text;  /* or a text file, tokenized with the model's tokenizer */
    int64_t samples;         /* calibration sequences (0: KD_AWQ_CALIB_TOKENS tokens' worth) */
    int64_t seq;             /* tokens per sequence (0: the dump's T+1 up to 512; text: 512) */
    const char *out;         /* output checkpoint directory */
    kd_awq_opts awq;
} kd_quantize_opts;

void kd_quantize_opts_init(kd_quantize_opts *o);
/* Load, quantize, write OUT (config.json, model.safetensors, tokenizer.bin
 * copied when present, quantize.json: the options, calibration, the type of
 * every tensor, the record and the run time). */
int kd_quantize_checkpoint(const kd_quantize_opts *o, kd_err *err);
/* Default calibration size in tokens. The reference takes 128 × 512 on a GPU;
 * the search costs about 40·n·(params of a layer) flops per layer, so on a
 * CPU kd defaults to 8192 tokens (docs/quantization.md measures the effect). */
#define KD_AWQ_CALIB_TOKENS 8192

/* Calibration tokens: n sequences of T tokens, evenly spaced over a dump
 * (the first T of its T+1 tokens per sequence) or cut from a tokenized text
 * (BOS + text). *T 0 takes the dump's T+1 (at most 512) or 512 for text; *n 0
 * takes KD_AWQ_CALIB_TOKENS / T. *tokens is malloc'ed [n, T]; *n shrinks to
 * what the source holds — a T above the dump's is an error. */
int kd_calib_tokens(const char *dump, const char *text, const char *tokenizer, int64_t vocab, int64_t *n,
                    int64_t *T, int32_t **tokens, kd_err *err);

/* ---- evaluation against the FP model -------------------------------------------------- */

typedef struct kd_quant_eval {
    double ce, ppl;          /* on the dump's labels */
    double kl;               /* KL(ref ‖ model) over the full vocabulary, mean per position */
    double top1;             /* argmax agreement with ref */
    int64_t tokens;
} kd_quant_eval;

/* Evaluate m against ref on every unmasked position of the dump's sequences
 * (at most max_seq > 0 of them). */
int kd_quant_evaluate(kd_model *ref, kd_model *m, const char *dump, int64_t max_seq, kd_quant_eval *out,
                      kd_err *err);

#endif
