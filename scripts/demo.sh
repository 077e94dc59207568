#!/usr/bin/env bash
# The main job on a built-in default: the 4x9 matrix of a 3x3 input and a
# 2x2 kernel, checked against the direct convolution.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# CLI11: the convmat command; pybind11, the Python headers, NumPy, SciPy and
# PyTorch: the Python module (import convmat).
convmat_require $CONVMAT_BASE_PACKAGES libcli11-dev python3 python3-dev pybind11-dev python3-numpy python3-scipy \
  python3-torch
build=${CONVMAT_BUILD_DIR:-build/demo}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_TESTS=OFF -DCONVMAT_BUILD_EXAMPLES=ON >/dev/null
cmake --build "$build" --target quickstart -j "$(nproc)" >/dev/null
"$build/examples/quickstart"

# The convmat command: its worked example, then a multi-channel strided layer
# through files. examples/data/ holds numpy.save'd weights (3, 2, 3, 3) and
# bias (3,) of a Conv2d(2, 3, 3), so no Python is needed here.
cmake --build "$build" --target convmat_cli -j "$(nproc)" >/dev/null
convmat=$build/app/convmat
show() { echo; echo "\$ convmat${*:+ ${*//$build\//}}"; "$convmat" "$@"; }
show
layer=(examples/data/conv2d_weights.npy --input-size 6,6 --stride 2 --padding 1)
bias=(--bias examples/data/conv2d_bias.npy --bias-out "$build/b.npy")
show "${layer[@]}" --info
show "${layer[@]}" "${bias[@]}" --check -o "$build/T.npy"
show "${layer[@]}" "${bias[@]}" --check -o "$build/T.mtx"
echo; echo "\$ head -7 T.mtx"; head -7 "$build/T.mtx"

# The Python module: a torch layer in, its matrix out (python/examples/tour.py).
cmake -S . -B "$build" -DCONVMAT_BUILD_PYTHON=ON -DPython_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$build" --target convmat_python -j "$(nproc)" >/dev/null
echo; echo "\$ python3 python/examples/tour.py"
PYTHONPATH="$build/python" /usr/bin/python3 -W ignore::UserWarning python/examples/tour.py
