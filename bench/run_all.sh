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
echo "== training: kd vs PyTorch $(/usr/bin/python3 -c 'import torch;print(torch.__version__)' 2>/dev/null), same architecture, KD loss, batch, threads"
core=$("$B/kd" --version | sed -n "s/.*kernels '\([A-Za-z]*\)'.*/\1/p")
for spec in "student-tiny.json 8 256 3" "student-15m.json 8 256 2" "student-125m.json 4 512 1"; do
  set -- $spec
  cfg="$(dirname "$0")/../configs/$1"
  kd_line=$("$B/bench_train" "$cfg" "$2" "$3" "$4"); echo "$kd_line"
  th_line=$(OPENBLAS_CORETYPE=$core /usr/bin/python3 "$(dirname "$0")/torch_train.py" "$cfg" "$2" "$3" "$4"); echo "$th_line"
  awk -v a="$kd_line" -v b="$th_line" 'BEGIN{split(a,x,"tokens/s"); n=split(x[1],y," "); split(b,p,"tokens/s"); m=split(p[1],q," ");
       printf "   kd / PyTorch = %.2fx\n", y[n]/q[m]}'
done
echo "== inference: kd's engine vs llama.cpp (node-llama-cpp), 15M and 125M students, F32/Q8_0/Q4_0/Q4_K_M (target: decode >= 0.8x llama.cpp)"
"$B/bench_infer" --src "$(cd "$(dirname "$0")/.." && pwd)" --threads 1,2
echo "== teacher dump: --generate (engine, KV cache) vs --text, tokens/s by sequence length (target: within 2x)"
"$(dirname "$0")/bench_dump.sh" "$B"
