#!/usr/bin/env bash
# tests/fuzz/replay.sh SRC BIN TARGET... — the CTest test fuzz_replay: every
# file of corpus/<target>/ and crashers/<target>/ (regression files of fixed
# findings) through replay_<target>, built without libFuzzer. Fails on a crash,
# a sanitizer report or a rejection whose message does not name the file.
set -euo pipefail
src=$1 bin=$2
shift 2
for t in "$@"; do
  dirs=("$src/corpus/$t")
  [ -d "$src/crashers/$t" ] && dirs+=("$src/crashers/$t")
  "$bin/replay_$t" "${dirs[@]}"
done
