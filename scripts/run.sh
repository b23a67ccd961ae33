#!/usr/bin/env bash
# The main job: set-up (idempotent), build the study, and run it: every method
# on three out-of-distribution experiments with real data (docs/STUDY.md).
# The default preset takes about 21 minutes on 2 CPU cores; arguments go to
# tram-study (--full, --methods, --seeds, --experiments, --out; see --help).
# Results, tables and plots land in study-results/ (finished runs found there
# are reused: delete it to start over).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${TRAM_BUILD_DIR:-$ROOT/build}"
TRAM_BUILD_TARGET=tram-study bash "$ROOT/scripts/build.sh" >/dev/null
cd "$ROOT"
"$BUILD/examples/study/tram-study" "$@"
