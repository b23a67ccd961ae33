#!/usr/bin/env bash
# One command on a GPU machine: build tram with its benchmarks against the
# local python3's torch, check the CUDA kernels (the CUDA tests when
# GoogleTest is available; bench_kernels checks every kernel anyway), then
# run every benchmark, writing CSVs and logs into the output directory.
#
#   bash bench/run.sh [OUT_DIR]                 # default OUT_DIR: bench/out
#   TRAM_BENCH_DEVICE=cpu bash bench/run.sh     # CPU smoke run, tiny shapes
#
# Environment:
#   TRAM_BENCH_DEVICE     cuda (default) or cpu (implies --small shapes)
#   TRAM_BENCH_BUILD      build directory (default: build-bench)
#   TRAM_CUDA_ARCHS       CUDA architectures to build (default: 90, H100/H200)
#   TRAM_BENCH_STEP_ARGS  extra flags for tram-bench-step and python_baseline.py
#                         (e.g. "--batch 8" if 16 x 1024 does not fit)
#   TRAM_BENCH_KERNEL_ARGS extra flags for tram-bench-kernels
#   TRAM_BENCH_CMAKE_ARGS extra configure flags, e.g. -DGTest_DIR=... for a
#                         GoogleTest unpacked from a carried .deb
#   TRAM_BENCH_STAGES     comma-separated subset of build,tests,kernels,step,python
#                         (default: all), e.g. to split the run across calls
#                         that each have a time limit (the build is incremental)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/bench/out}" && cd "${1:-$ROOT/bench/out}" && pwd)
BUILD="${TRAM_BENCH_BUILD:-$ROOT/build-bench}"
DEVICE="${TRAM_BENCH_DEVICE:-cuda}"
ARCHS="${TRAM_CUDA_ARCHS:-90}"
JOBS=$(nproc 2>/dev/null || echo 4)
SMALL=()
[ "$DEVICE" = cpu ] && SMALL=(--small)
read -r -a STEP_ARGS <<<"${TRAM_BENCH_STEP_ARGS:-}"
read -r -a KERNEL_ARGS <<<"${TRAM_BENCH_KERNEL_ARGS:-}"
read -r -a CMAKE_ARGS <<<"${TRAM_BENCH_CMAKE_ARGS:-}"
STAGES=",${TRAM_BENCH_STAGES:-build,tests,kernels,step,python},"
stage() { [[ "$STAGES" == *",$1,"* ]]; }
log() { echo "== $*" | tee -a "$OUT/run.log"; }
touch "$OUT/run.log"

PYTHON=${PYTHON:-python3}
TORCH_PREFIX=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "torch $("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)') at $TORCH_PREFIX"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/run.log" || true
fi

# Tests need GoogleTest; the GPU machines may not have it: build without
# them then (bench_kernels still checks every kernel against its composite).
configure() {
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
    -DTRAM_BUILD_BENCHMARKS=ON -DTRAM_BUILD_EXAMPLES=OFF -DTRAM_BUILD_TOOLS=OFF \
    -DTRAM_CUDA_ARCHITECTURES="$ARCHS" -DTRAM_BUILD_TESTS="$1" "${CMAKE_ARGS[@]}" >"$OUT/configure.log" 2>&1
}
if stage build; then
  TESTS=ON
  if ! configure ON; then
    log "configure with tests failed (no GoogleTest?); building without tests, see $OUT/configure.log"
    rm -rf "$BUILD"
    TESTS=OFF
    configure OFF || { cat "$OUT/configure.log"; exit 1; }
  fi
  grep -E "TRAM_WITH_CUDA" "$OUT/configure.log" | tee -a "$OUT/run.log"
  TARGETS=(tram-bench-kernels tram-bench-step)
  [ "$TESTS" = ON ] && TARGETS+=(tram_tests)
  log "building ${TARGETS[*]} with $JOBS jobs"
  cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}" >"$OUT/build.log" 2>&1 || {
    tail -50 "$OUT/build.log"
    exit 1
  }
fi

STATUS=0
if stage tests; then
  if [ -x "$BUILD/tests/tram_tests" ]; then
    log "CUDA tests"
    "$BUILD/tests/tram_tests" --gtest_filter='*Cuda*' 2>&1 | tee "$OUT/cuda_tests.log" | tail -30 || STATUS=1
  else
    log "no tram_tests (built without GoogleTest): CUDA tests not run"
  fi
fi

if stage kernels; then
  log "kernel benchmarks"
  "$BUILD/bench/tram-bench-kernels" --device "$DEVICE" --out "$OUT" "${SMALL[@]}" "${KERNEL_ARGS[@]}" \
    2>&1 | tee "$OUT/kernels.log" || STATUS=1
fi

if stage step; then
  log "step benchmarks (C++)"
  "$BUILD/bench/tram-bench-step" --device "$DEVICE" --out "$OUT" "${SMALL[@]}" "${STEP_ARGS[@]}" \
    2>&1 | tee "$OUT/step.log" || STATUS=1
fi

if stage python; then
  log "step benchmarks (Python baseline)"
  PY_SMALL=()
  [ "$DEVICE" = cpu ] && PY_SMALL=(--small)
  CPP_CSV=()
  [ -f "$OUT/step.csv" ] && CPP_CSV=(--cpp-csv "$OUT/step.csv")
  "$PYTHON" "$ROOT/bench/python_baseline.py" --device "$DEVICE" --out "$OUT" "${PY_SMALL[@]}" \
    "${CPP_CSV[@]}" "${STEP_ARGS[@]}" 2>&1 | tee "$OUT/python.log" || STATUS=1
fi

log "done: $(ls "$OUT" | tr '\n' ' ')"
exit $STATUS
