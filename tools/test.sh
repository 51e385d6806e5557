#!/usr/bin/env bash
# tools/test.sh [--sanitize] — install what is missing, build kd, run every test.
#
# Builds into build/ (or build-asan/ with --sanitize: AddressSanitizer +
# UndefinedBehaviorSanitizer, debug build) with warnings as errors, then runs
# the whole suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build
flags=(-DKD_WERROR=ON -DCMAKE_BUILD_TYPE=Release)
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  flags=(-DKD_WERROR=ON -DKD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  # OpenMP's runtime keeps thread pools alive at exit; those are not leaks of kd's.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
tools/setup.sh all
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir"
ctest --output-on-failure -j"$(nproc)"
