#!/usr/bin/env bash
# The main job on a built-in default: the 4x9 matrix of a 3x3 input and a
# 2x2 kernel, checked against the direct convolution.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
convmat_require $CONVMAT_BASE_PACKAGES
build=${CONVMAT_BUILD_DIR:-build/demo}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_TESTS=OFF -DCONVMAT_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" --target quickstart -j "$(nproc)" >/dev/null
"$build/examples/quickstart"
