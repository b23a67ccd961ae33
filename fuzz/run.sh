#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/*.cpp) with Clang, ASan, UBSan and
# coverage, and fuzzes each for a budget: FUZZ_RUNS executions or
# FUZZ_SECONDS seconds, whichever comes first (default 1,000,000 / 600),
# with -rss_limit_mb=2048 (the two LibTorch-archive harnesses: a 4200 MB
# allocation limit, below) and -timeout=10. Prints per harness the
# executions, the time, libFuzzer's coverage (cov: edges, ft: features) and
# the findings (crash-/leak-/timeout-/oom- files under
# <build>/fuzz-work/<harness>/artifacts/). Not run by CI: docs/FUZZING.md.
#
#   fuzz/run.sh [HARNESS...]        every harness when none is named
#
# Environment: FUZZ_BUILD (build dir, default build-fuzz), FUZZ_RUNS,
# FUZZ_SECONDS, FUZZ_JOBS (build parallelism, default 2), FUZZ_NO_BUILD=1
# (use the binaries as they are), FUZZ_SEEDS=1
# (first copy fuzz/make_seeds.py's seeds into the corpora), FUZZ_MERGE=1
# (afterwards, refresh fuzz/corpus/<harness>, the committed corpus the
# ctests replay: see FUZZ_CORPUS_KB below).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
runs=${FUZZ_RUNS:-1000000}
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-2}
all=(safetensors hf_config gpt2_bpe wordpiece sentencepiece idx cifar nli text_labels optimizer_checkpoint run_state)
harnesses=("$@")
[[ $# -eq 0 ]] && harnesses=("${all[@]}")

if [[ ! -f $build/CMakeCache.txt ]]; then
  prefix=$(cat "$root/build/torch-prefix.txt" 2>/dev/null || python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug '-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g' \
    -DCMAKE_PREFIX_PATH="$prefix" -DTRAM_WITH_CUDA=OFF -DTRAM_BUILD_TESTS=ON -DTRAM_BUILD_HF=ON \
    -DTRAM_BUILD_EXAMPLES=ON -DTRAM_BUILD_TOOLS=OFF \
    -DTRAM_BUILD_FUZZERS=ON -DTRAM_SANITIZE=address,undefined,fuzzer-no-link
fi
[[ ${FUZZ_NO_BUILD:-0} == 1 ]] || cmake --build "$build" -j"$jobs" --target "${harnesses[@]/#/fuzz_}"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:check_initialization_order=1
export LSAN_OPTIONS=suppressions=$root/cmake/sanitizers/lsan.supp
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1:suppressions=$root/cmake/sanitizers/ubsan.supp

if [[ ${FUZZ_SEEDS:-0} == 1 ]]; then
  rm -rf "$build/fuzz-work/seeds" && (cd "$root" && python3 fuzz/make_seeds.py "$build/fuzz-work/seeds")
fi

summary=()
status=0
for harness in "${harnesses[@]}"; do
  binary=$build/fuzz/fuzz_$harness
  corpus=$root/fuzz/corpus/$harness
  work=$build/fuzz-work/$harness
  mkdir -p "$work/corpus" "$work/artifacts" "$corpus"
  if [[ ${FUZZ_SEEDS:-0} == 1 ]]; then
    # The seeds go into the committed corpus as they are, named seed-*.
    rm -f "$corpus"/seed-*
    for seed in "$build/fuzz-work/seeds/$harness"/*; do
      [[ -f $seed ]] && cp "$seed" "$corpus/seed-$(basename "$seed")"
    done
    if [[ $harness == run_state ]]; then
      mkdir -p "$work/seeds" && TRAM_FUZZ_WRITE_SEEDS=$work/seeds "$binary" -runs=0 "$work/seeds" >/dev/null 2>&1
      for seed in "$work/seeds"/*; do cp "$seed" "$corpus/seed-$(basename "$seed")"; done
    fi
  fi
  # The two harnesses that read LibTorch archives: LibTorch's zip reader
  # leaks 152 bytes on every archive it rejects (mz_zip_reader_init,
  # suppressed in lsan.supp), so libFuzzer's leak check, which scans the
  # whole heap whenever an input frees less than it allocated, ran on almost
  # every input: 21 executions/s. Their leaks are checked once at exit
  # instead (LSan at exit, with the suppressions); docs/FUZZING.md.
  # (The third run also allowed them 4200 MB allocations, for LibTorch's
  # unpickler reserving what a BINUNICODE length states; the archive check
  # rejects such lengths before LibTorch reads them, so the allowance is gone.)
  limits=(-rss_limit_mb=2048)
  if [[ $harness == optimizer_checkpoint || $harness == run_state ]]; then
    limits=(-detect_leaks=0 -rss_limit_mb=2048)
  fi
  log=$work/fuzz.log
  start=$(date +%s)
  set +e
  nice -n 10 "$binary" -runs="$runs" -max_total_time="$seconds" -timeout=10 "${limits[@]}" \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$corpus" >"$log" 2>&1
  code=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  coverage=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  findings=$(find "$work/artifacts" -type f | wc -l)
  [[ $code -ne 0 ]] && status=1
  line=$(printf '%-22s %10s execs %5ss  %-22s findings %s (exit %s)' "$harness" "${executions:-?}" "$elapsed" \
         "${coverage:-cov: ?}" "$findings" "$code")
  echo "$line"
  summary+=("$line")
  if [[ ${FUZZ_MERGE:-0} == 1 && $code -eq 0 ]]; then
    # The committed corpus: the seeds, every finding's input (regression-*),
    # and of the inputs -merge=1 keeps (each adds coverage) the smallest, up
    # to FUZZ_CORPUS_KB (default 12) per harness, so that the repository and
    # the replay ctests stay small.
    rm -rf "$work/merged" && mkdir -p "$work/merged"
    "$binary" -merge=1 "$work/merged" "$corpus" "$work/corpus" >"$work/merge.log" 2>&1
    rm -f "$corpus"/cov-*
    budget=$(( ${FUZZ_CORPUS_KB:-12} * 1024 ))
    while read -r bytes file; do
      (( budget -= bytes )) || true
      (( budget < 0 )) && break
      cp "$file" "$corpus/cov-$(basename "$file")"
    done < <(find "$work/merged" -type f -printf '%s %p\n' | sort -n)
  fi
done
echo
echo "harness                 executions   time  coverage               findings"
printf '%s\n' "${summary[@]}"
exit $status
