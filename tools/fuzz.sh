#!/usr/bin/env bash
# tools/fuzz.sh — the fuzz targets of tests/fuzz with libFuzzer (clang, ASan + UBSan).
#
#   tools/fuzz.sh build               configure and build build-fuzz/ (clang, -DKD_FUZZ=ON -DKD_SANITIZE=ON)
#   tools/fuzz.sh ci [SECONDS]        build, then CTest fuzz_replay + fuzz_short (SECONDS per target, default 15)
#   tools/fuzz.sh campaign SECONDS [TARGET...]
#                                     fuzz each target for SECONDS on one core from its committed corpus
#                                     (working copy in build-fuzz/campaign/TARGET, kept between runs), findings
#                                     in build-fuzz/campaign/TARGET-findings/; one table row per target
#                                     (CPU time includes the HDF5 probe children; libFuzzer stops at a finding)
#   tools/fuzz.sh corpus              rewrite tests/fuzz/corpus/ with fuzz_make_corpus (seeds made by kd)
#
# A finding that is fixed is kept as a regression file in tests/fuzz/crashers/TARGET/
# (replayed by the CTest test fuzz_replay in every build). docs/testing.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(gguf checkpoint dump tokenizer llama2c run_config)
dir=${KD_FUZZ_BUILD:-build-fuzz}   # KD_FUZZ_BUILD: another build directory
# One allocation over 2 GiB fails (NULL) instead of stopping libFuzzer: kd must refuse the input; in an
# HDF5 probe child (data/kd_dump_probe.c) libhdf5's own huge allocations then fail there. The process as
# a whole is still limited by -rss_limit_mb; -malloc_limit_mb is set out of the way (libFuzzer's malloc
# hook would otherwise fire in probe children and write oom-* files for inputs the parent refused).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=16:malloc_context_size=10:max_allocation_size_mb=2048:allocator_may_return_null=1}
# Temporary input files on tmpfs when there is one (the readers take paths)
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

build() {
  command -v clang >/dev/null || { echo "tools/fuzz.sh: clang is missing (tools/setup.sh installs it)" >&2; exit 1; }
  CC=clang cmake -S . -B "$dir" -DKD_FUZZ=ON -DKD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Release \
    -DKD_FUZZ_SECONDS="${1:-15}" >/dev/null
  cmake --build "$dir" -j"$(nproc)" --target $(for t in "${targets[@]}"; do echo "fuzz_$t replay_$t"; done) >&2
}

case "${1:-}" in
  build) build ;;
  ci)
    build "${2:-15}"
    (cd "$dir" && ctest --output-on-failure -R '^fuzz_')
    ;;
  campaign)
    secs=${2:?seconds per target}
    shift 2
    [ $# -gt 0 ] && targets=("$@")
    build
    printf '| target | execs | CPU time | crashes / hangs / leaks | corpus (files, bytes) | coverage (edges) |\n|---|---|---|---|---|---|\n'
    for t in "${targets[@]}"; do
      work="$dir/campaign/$t" out="$dir/campaign/$t-findings"
      mkdir -p "$work" "$out"
      cp -n tests/fuzz/corpus/"$t"/* "$work"/
      [ -d tests/fuzz/crashers/"$t" ] && cp -n tests/fuzz/crashers/"$t"/* "$work"/ 2>/dev/null || true
      log="$dir/campaign/$t.log"
      /usr/bin/time -f '%U %S' -o "$dir/campaign/$t.time" "$dir/tests/fuzz/fuzz_$t" -max_total_time="$secs" \
        -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=1000000 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$out/" "$work" >"$log" 2>&1 || true
      execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$' || echo 0)
      cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo 0)
      cpu=$(tail -n 1 "$dir/campaign/$t.time" | awk '{printf "%.0f s", $1 + $2}')
      n_crash=$(find "$out" -name 'crash-*' | wc -l) n_hang=$(find "$out" -name 'timeout-*' -o -name 'slow-unit-*' | wc -l)
      n_leak=$(find "$out" -name 'leak-*' | wc -l) n_oom=$(find "$out" -name 'oom-*' | wc -l)
      files=$(find "$work" -type f | wc -l) bytes=$(du -sb "$work" | cut -f1)
      printf '| %s | %s | %s | %s / %s / %s%s | %s, %s | %s |\n' "$t" "$execs" "$cpu" "$n_crash" "$n_hang" "$n_leak" \
        "$([ "$n_oom" -gt 0 ] && echo " (+$n_oom oom)")" "$files" "$bytes" "$cov"
      # sanitizer reports of HDF5 probe children (they do not stop libFuzzer): any outside libhdf5 is a kd bug
      python3 tests/fuzz/child_reports.py "$log" >&2 || true
    done
    ;;
  corpus)
    cmake --build build -j"$(nproc)" --target fuzz_make_corpus >/dev/null
    rm -rf tests/fuzz/corpus
    build/tests/fuzz/fuzz_make_corpus tests/fuzz/corpus
    ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
