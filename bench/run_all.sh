#!/usr/bin/env bash
# bench/run_all.sh BUILD_DIR — run kd's benchmarks and print figures, each
# next to a reference measured in the same command (the machine is shared and
# noisy: compare ratios, not absolute numbers).
set -euo pipefail
B=${1:-build}
echo "== sgemm: generic kernels (forced Prescott) vs kd's selection"
slow=$(OPENBLAS_CORETYPE=Prescott KD_BLAS_AUTO=0 "$B/bench_gemm" | tee /dev/stderr | awk '/^overall/{print $2}')
fast=$(env -u OPENBLAS_CORETYPE "$B/bench_gemm" | tee /dev/stderr | awk '/^overall/{print $2}')
awk -v s="$slow" -v f="$fast" 'BEGIN{printf "kernel selection speed-up: %.1fx (%.1f -> %.1f GFLOP/s)\n", f/s, s, f}'
echo "== loader: batches/s and tokens/s from a 1M-token k=64 dump (target >= 2M tokens/s)"
"$B/bench_loader"
