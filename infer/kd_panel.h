/*
 * kd_panel.h — weight matrices interleaved for products with a few rows of
 * activations: the inference engine's lockstep steps (kd_infer_eval_seqs, one
 * row per sequence, e.g. `kd teacher dump --generate`).
 *
 * With a few rows, a BLAS sgemm spends most of its time packing the weights
 * into its own panel layout on every call. A kd_panel holds that layout once:
 * the weights as F32, 16 rows interleaved (P[b][c][j] = W[16·b + j][c], rows
 * past the end zero), so one vector load gives column c of 16 rows, and each
 * output is accumulated in a vector lane with one fused multiply-add per
 * column, c = 0, 1, … in order, from 0. That sum does not depend on the
 * instruction set (AVX-512, AVX2 and the scalar fmaf path give the same bits),
 * on the number of activation rows or on the number of threads.
 */
#ifndef KD_PANEL_H
#define KD_PANEL_H

#include <stdint.h>

#include "core/kd_err.h"
#include "infer/kd_matvec.h"

#define KD_PANEL_MAX_N 64   /* activation rows a panel product takes; more go to sgemm */

typedef struct kd_panel {
    float *p;               /* [ceil(rows/16), cols, 16], owned */
    int64_t rows, cols;
} kd_panel;

/* The panel of W (any type, dequantized as kd_dequantize_row does). */
int kd_panel_make(kd_panel *P, const kd_qmat *W, kd_err *err);
void kd_panel_free(kd_panel *P);
/* Bytes a panel of rows × cols takes. */
uint64_t kd_panel_bytes(int64_t rows, int64_t cols);
/* Y[i, r] = W[r]·X[i] for i < n ≤ KD_PANEL_MAX_N (X [n, cols], Y [n, ldy], ldy ≥ rows),
 * OpenMP over blocks of rows (at most n_threads threads). */
void kd_panel_matmul(const kd_panel *P, const float *X, int64_t n, float *Y, int64_t ldy, int n_threads);

#endif
