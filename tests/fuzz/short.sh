#!/usr/bin/env bash
# tests/fuzz/short.sh SRC BIN SECONDS TARGET... — the CTest test fuzz_short
# (-DKD_FUZZ=ON builds): SECONDS of libFuzzer per target, from the committed
# corpus (a scratch copy: the committed one is not changed), one process, any
# crash, leak or input over 10 s failing the test. Findings are written to
# BIN/findings/<target>/.
set -euo pipefail
# as tools/fuzz.sh: a single allocation over 2 GiB fails instead of stopping libFuzzer
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=16:malloc_context_size=10:max_allocation_size_mb=2048:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm
src=$1 bin=$2 secs=$3
shift 3
for t in "$@"; do
  work="$bin/short-corpus/$t" out="$bin/findings/$t"
  rm -rf "$work"
  mkdir -p "$work" "$out"
  cp "$src/corpus/$t"/* "$work/"
  [ -d "$src/crashers/$t" ] && cp "$src/crashers/$t"/* "$work/" 2>/dev/null || true
  echo "fuzz_short: $t, ${secs}s"
  "$bin/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=1000000 \
    -max_len=262144 -print_final_stats=1 -artifact_prefix="$out/" "$work" 2>"$bin/findings/$t.log" ||
    { tail -n 60 "$bin/findings/$t.log"; exit 1; }
  grep -E "stat::number_of_executed_units|cov:" "$bin/findings/$t.log" | tail -n 2
  python3 "$src/child_reports.py" "$bin/findings/$t.log" || { echo "fuzz_short: $t: a sanitizer report outside libhdf5 in a probe child"; exit 1; }
done
