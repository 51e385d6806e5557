#!/usr/bin/env bash
# tests/fuzz/short.sh SRC BIN SECONDS TARGET... — the CTest test fuzz_short
# (-DKD_FUZZ=ON builds): SECONDS of libFuzzer per target, from the committed
# corpus (a scratch copy: the committed one is not changed), one process, any
# crash, leak or input over 10 s failing the test. Findings are written to
# BIN/findings/<target>/.
set -euo pipefail
src=$1 bin=$2 secs=$3
shift 3
for t in "$@"; do
  work="$bin/short-corpus/$t" out="$bin/findings/$t"
  rm -rf "$work"
  mkdir -p "$work" "$out"
  cp "$src/corpus/$t"/* "$work/"
  [ -d "$src/crashers/$t" ] && cp "$src/crashers/$t"/* "$work/" 2>/dev/null || true
  echo "fuzz_short: $t, ${secs}s"
  "$bin/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len=262144 -print_final_stats=1 -artifact_prefix="$out/" "$work" 2>"$bin/findings/$t.log" ||
    { tail -n 60 "$bin/findings/$t.log"; exit 1; }
  grep -E "stat::number_of_executed_units|cov:" "$bin/findings/$t.log" | tail -n 2
done
