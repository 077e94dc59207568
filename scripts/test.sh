#!/usr/bin/env bash
# Builds and runs every test: the suite, the examples (their output is
# checked). Installs what is missing (as root) first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
convmat_require $CONVMAT_BASE_PACKAGES
jobs=$(nproc)
build=${CONVMAT_BUILD_DIR:-build/test}

echo "== build and test (C++17, -Werror)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_TESTS=ON -DCONVMAT_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
