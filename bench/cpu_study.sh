#!/usr/bin/env bash
# The CPU measurement of bench/RESULTS.md ("CPU: interleaved rounds"), on a
# machine with nothing else running: every method's step against its own
# passes in interleaved rounds at two model sizes, then Python / C++ as
# alternating process pairs (C++, Python, C++, Python, ...), each pair's
# ratio from two runs seconds apart, so that the machine's drift over minutes
# lands in the spread between pairs instead of in one ratio.
#
#   bash bench/cpu_study.sh OUT_DIR [BUILD_DIR]    # BUILD_DIR: build
#
# First the fused CPU ops on their own (tram-bench-kernels, when built). Size
# A (the performance issue's configuration, 5.5M parameters) times every
# method; size B (15.0M) the methods the Python baseline has.
# Environment: TRAM_STUDY_ROUNDS (15), TRAM_STUDY_PAIRS (3).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
BUILD="${2:-$ROOT/build}"
STEP="$BUILD/bench/tram-bench-step"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python3}"
ROUNDS="${TRAM_STUDY_ROUNDS:-15}"
PAIRS="${TRAM_STUDY_PAIRS:-3}"
[ -x "$STEP" ] || { echo "cpu_study: no $STEP (build with -DTRAM_BUILD_BENCHMARKS=ON)" >&2; exit 1; }
SIZE_A=(--layers 4 --hidden 256 --heads 4 --vocab 8000 --batch 4 --seq 128)
SIZE_B=(--layers 2 --hidden 512 --heads 8 --vocab 16000 --batch 2 --seq 256)
COMMON=(--device cpu --dropout 0 --warmup 2)
PY_METHODS=adam,sam,asam,fsam,tram-prev,tram-noise
KERNELS="$BUILD/bench/tram-bench-kernels"
if [ -x "$KERNELS" ]; then
  # The fused CPU ops against their ATen reference and this machine's copy
  # bandwidth, at the step benchmark's sizes (parameters of size A, logits of
  # sizes A and B).
  echo "== kernels: fused CPU ops vs tram::ops::reference and the copy bandwidth"
  "$KERNELS" --device cpu --models gpt2-cpu --kl-shapes 512x8000,512x16000 --dtypes fp32,bf16 \
    --copy-bytes 268435456 --warmup 2 --iters 10 --out "$OUT/kernels" > "$OUT/kernels.log" 2>&1
fi
for size in A B; do
  declare -n dims="SIZE_$size"
  methods=()
  [ "$size" = B ] && methods=(--methods "$PY_METHODS")
  echo "== size $size: ${methods[1]:-every method}, $ROUNDS interleaved rounds"
  "$STEP" "${COMMON[@]}" "${dims[@]}" --iters 1 --rounds "$ROUNDS" "${methods[@]}" --out "$OUT/rounds-$size" \
    > "$OUT/rounds-$size.log" 2>&1
  for pair in $(seq 1 "$PAIRS"); do
    echo "== size $size: Python / C++ pair $pair"
    "$STEP" "${COMMON[@]}" "${dims[@]}" --iters 5 --phases 0 --methods "$PY_METHODS" \
      --out "$OUT/pair-$size-$pair" > "$OUT/pair-$size-$pair-cpp.log" 2>&1
    "$PYTHON" "$ROOT/bench/python_baseline.py" "${COMMON[@]}" "${dims[@]}" --iters 5 \
      --methods "$PY_METHODS" --cpp-csv "$OUT/pair-$size-$pair/step.csv" --out "$OUT/pair-$size-$pair" \
      > "$OUT/pair-$size-$pair-python.log" 2>&1
  done
  unset -n dims
done
echo "cpu_study: wrote $OUT"
