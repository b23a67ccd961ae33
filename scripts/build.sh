#!/usr/bin/env bash
# Configures and builds tram in build/ against the LibTorch set-up found.
# Extra arguments go to the CMake configure step (e.g. -DTRAM_BUILD_BENCHMARKS=ON).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${TRAM_BUILD_DIR:-$ROOT/build}"
bash "$ROOT/scripts/setup.sh"
if [ ! -f "$BUILD/CMakeCache.txt" ] || [ $# -gt 0 ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$(cat "$BUILD/torch-prefix.txt")" "$@" >"$BUILD/configure.log" 2>&1 \
    || { cat "$BUILD/configure.log"; exit 1; }
fi
# TRAM_BUILD_TARGET: build only that target (and what it needs).
cmake --build "$BUILD" -j"${TRAM_JOBS:-$(nproc)}" ${TRAM_BUILD_TARGET:+--target "$TRAM_BUILD_TARGET"}
