#!/usr/bin/env bash
# The main job: set-up (idempotent), build, and run the quickstart comparison
# of every method. Arguments go to tram-quickstart.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${TRAM_BUILD_DIR:-$ROOT/build}"
bash "$ROOT/scripts/build.sh" >/dev/null
"$BUILD/examples/tram-quickstart" "$@"
