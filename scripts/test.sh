#!/usr/bin/env bash
# Set-up (idempotent), build, and the whole test suite through ctest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="${TRAM_BUILD_DIR:-$ROOT/build}"
bash "$ROOT/scripts/build.sh"
cd "$BUILD"
ctest --output-on-failure -j"${TRAM_TEST_JOBS:-2}" "$@"
