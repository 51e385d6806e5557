#!/usr/bin/env bash
# bench/bench_dump.sh BUILD_DIR — `kd teacher dump` speed: --generate (sampling
# with the engine's KV cache, the distributions kept as it samples) against
# --text (one teacher forward over given tokens), tokens/s by sequence length,
# on two teachers:
#   260K  the real aidreams260K (llama2.c import); its config's context is
#         raised from 128 to 1024 for the timing only (RoPE is computed, so the
#         model runs at any length; what it generates there is not meaningful)
#   15M   kd init of configs/student-15m.json widened to C 384, F 1024, 6 heads,
#         with aidreams' 512-piece tokenizer (14.4M parameters, random weights)
# Each case runs REPEATS times (default 3) and the median is printed: tokens/s
# of wall time and of user CPU time. The machine may be shared (other jobs on
# the same cores): compare the two columns of one row, not rows of different
# runs. THREADS (default 1) sets OMP_NUM_THREADS.
set -euo pipefail
B=$(cd "${1:-build}" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${KD_DATA_DIR:-$SRC/tests/data}
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-1}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
KD="$B/kd"

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores visible;" \
     "ISA flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16)$' | tr '\n' ' ')"
echo "kd: $("$KD" --version | sed -n "2,3p" | tr "\n" ";") OMP_NUM_THREADS=$THREADS; median of $REPEATS runs; uptime load: $(cut -d' ' -f1-3 /proc/loadavg)"

"$KD" import llama2c --model "$SHARED/models/aidreams260K/aidreams260K.bin" \
      --tokenizer "$SHARED/models/aidreams260K/tok512.bin" --out "$W/t260k" >/dev/null
sed -i 's/"max_position_embeddings":[[:space:]]*128/"max_position_embeddings": 1024/' "$W/t260k/config.json"
/usr/bin/python3 - "$SRC/configs/student-15m.json" "$W/t15m.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(hidden_size=384, intermediate_size=1024, num_attention_heads=6, num_key_value_heads=6, vocab_size=512)
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF
"$KD" init --config "$W/t15m.json" --out "$W/t15m" >/dev/null
cp "$SHARED/models/aidreams260K/tok512.bin" "$W/t15m/tokenizer.bin"
for i in 1 2 3 4; do cat "$SRC"/docs/*.md "$SRC/README.md"; done >"$W/corpus.txt"

# one case: prints "wall_tokens_per_s cpu_tokens_per_s" (medians)
run() {   # teacher T N mode...
  local t=$1 T=$2 N=$3; shift 3
  local walls=() cpus=()
  for _ in $(seq "$REPEATS"); do
    rm -f "$W/x.h5"
    local r
    r=$( { env OMP_NUM_THREADS="$THREADS" OMP_WAIT_POLICY=passive /usr/bin/time -f "%e %U" \
           "$KD" teacher dump --teacher "$W/$t" "$@" --max-sequences "$N" --seq-len "$T" --topk 64 \
           --out "$W/x.h5" --quiet; } 2>&1 | tail -1)
    walls+=("$(awk -v r="$r" -v n=$((N * T)) 'BEGIN{split(r,a," "); printf "%.0f", n / (a[1] > 0 ? a[1] : 1e-3)}')")
    cpus+=("$(awk -v r="$r" -v n=$((N * T)) 'BEGIN{split(r,a," "); printf "%.0f", n / (a[2] > 0 ? a[2] : 1e-3)}')")
  done
  local mw mc
  mw=$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  mc=$(printf '%s\n' "${cpus[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  echo "$mw $mc"
}

printf '%-7s %6s %5s | %16s %16s | %16s %16s | %s\n' teacher T seqs "text tok/s wall" "text tok/s cpu" \
       "gen tok/s wall" "gen tok/s cpu" "text/gen (cpu)"
for spec in "t260k 128 256" "t260k 256 128" "t260k 1024 32" "t15m 128 128" "t15m 256 64" "t15m 1024 32"; do
  set -- $spec
  read -r tw tc <<<"$(run "$1" "$2" "$3" --text "$W/corpus.txt")"
  read -r gw gc <<<"$(run "$1" "$2" "$3" --generate "$3" --seed 1)"
  printf '%-7s %6s %5s | %16s %16s | %16s %16s | %.2fx\n' "${1#t}" "$2" "$3" "$tw" "$tc" "$gw" "$gc" \
         "$(awk -v a="$tc" -v b="$gc" 'BEGIN{print a / b}')"
done
