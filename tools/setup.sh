#!/usr/bin/env bash
# tools/setup.sh — install the Debian packages kd needs to build, test and run.
#
# Idempotent: packages already installed are skipped, and nothing is done when
# all are present. Works as root on a fresh Debian 12 machine (uses sudo when
# not root and sudo exists). Set KD_SETUP_SKIP=1 to skip entirely.
set -euo pipefail
[ "${KD_SETUP_SKIP:-0}" = 1 ] && exit 0

# Build: compiler, CMake, and the libraries kd links against.
BUILD_PKGS=(build-essential cmake pkg-config
  libopenblas-openmp-dev    # OpenBLAS built with OpenMP (no thread oversubscription)
  libhdf5-dev               # teacher logit dumps
  libcjson-dev              # configs, safetensors headers
  libpcre2-dev              # Unicode-exact pre-tokenizers of byte-level BPE tokenizers
  libcmocka-dev             # unit tests
  libopenmpi-dev openmpi-bin # data-parallel training
)
# The quick start (tools/quickstart.sh): its corpus and the sweep's pictures.
RUN_PKGS=(fortunes gnuplot-nox)
# Tests and tools: PyTorch/numpy/h5py references, h5dump.
TEST_PKGS=(python3 python3-torch python3-numpy python3-h5py hdf5-tools
  python3-venv              # test_export: a venv with llama.cpp's gguf-py reader
  clang libclang-rt-14-dev libomp-14-dev   # tools/fuzz.sh: libFuzzer targets (tests/fuzz), clang's OpenMP
  time                      # tools/fuzz.sh campaign: CPU time per target
)

want=("${BUILD_PKGS[@]}")
case "${1:-all}" in
  build) ;;
  run) want+=("${RUN_PKGS[@]}") ;;
  all) want+=("${RUN_PKGS[@]}" "${TEST_PKGS[@]}") ;;
  *) echo "usage: tools/setup.sh [build|run|all]" >&2; exit 2 ;;
esac

# node/npm (for llama.cpp via node-llama-cpp) only when no node is present at all.
[ "${1:-all}" = all ] && ! command -v npm >/dev/null && want+=(nodejs npm)

# llama.cpp for the GGUF export tests: node-llama-cpp's prebuilt CPU binaries in
# tests/node (pinned by its package-lock.json; node_modules is not committed).
# Installed only when missing; without the npm registry the tests that need it skip.
node_deps() {
  [ "${1:-all}" = all ] && command -v npm >/dev/null || return 0
  local dir; dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/node"
  [ -f "$dir/package-lock.json" ] && [ ! -d "$dir/node_modules/node-llama-cpp" ] || return 0
  echo "tools/setup.sh: npm ci in tests/node (node-llama-cpp, CPU build only)" >&2
  (cd "$dir" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error >&2) ||
    echo "tools/setup.sh: warning: npm ci in $dir failed; the llama.cpp checks will be skipped" >&2
}

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then node_deps "${1:-all}"; exit 0; fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "tools/setup.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "tools/setup.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
node_deps "${1:-all}"
