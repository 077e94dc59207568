#!/usr/bin/env bash
# The build the README uses: everything it later runs, in build/demo/ —
#   build/demo/examples/{quickstart,tour,spec,layers,spectrum,torch_weights,deblur}
#   build/demo/app/convmat, build/demo/onnx/convmat-onnx
#   build/demo/python (PYTHONPATH for import convmat)
# then the worked examples. `cmake --install build/demo --prefix P` puts the
# library, convmat, convmat-onnx and the Python module under P.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# CLI11: the convmat command; libonnx-dev, protobuf: convmat-onnx; libstb-dev:
# the deblur example's PNGs; pybind11, the Python headers, NumPy, SciPy and
# PyTorch: the Python module (import convmat).
convmat_require $CONVMAT_BASE_PACKAGES libcli11-dev libonnx-dev libprotobuf-dev protobuf-compiler libstb-dev \
  python3 python3-dev pybind11-dev python3-numpy python3-scipy python3-torch
build=${CONVMAT_BUILD_DIR:-build/demo}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_TESTS=OFF -DCONVMAT_BUILD_EXAMPLES=ON \
  -DCONVMAT_BUILD_CLI=ON -DCONVMAT_BUILD_ONNX=ON -DCONVMAT_BUILD_PYTHON=ON -DPython_EXECUTABLE=/usr/bin/python3 \
  >/dev/null
# First the quick start and the command (well under a minute), run at once;
# the rest after them.
cmake --build "$build" -j "$(nproc)" --target quickstart convmat_cli >/dev/null
echo "\$ $build/examples/quickstart"
"$build/examples/quickstart"

# The convmat command: its worked example, then a multi-channel strided layer
# through files. examples/data/ holds numpy.save'd weights (3, 2, 3, 3) and
# bias (3,) of a Conv2d(2, 3, 3), so no Python is needed here. Each command
# is printed as it runs, with the paths it writes.
convmat=$build/app/convmat
show() { echo; echo "\$ $convmat${*:+ $*}"; "$convmat" "$@"; }
show
layer=(examples/data/conv2d_weights.npy --input-size 6,6 --stride 2 --padding 1)
bias=(--bias examples/data/conv2d_bias.npy --bias-out "$build/b.npy")
show "${layer[@]}" --info
show "${layer[@]}" "${bias[@]}" --check -o "$build/T.npy"
show "${layer[@]}" "${bias[@]}" --check -o "$build/T.mtx"
echo; echo "\$ head -7 $build/T.mtx"; head -7 "$build/T.mtx"

# The rest: the other examples, the converter and the Python module.
echo
echo "convmat: now building the other examples, convmat-onnx and the Python module (import convmat)"
echo "         in $build: about 7 minutes on 2 cores, less with more"
cmake --build "$build" -j "$(nproc)" --target tour spec layers spectrum torch_weights deblur convmat-onnx \
  convmat_python >/dev/null
test -x "$build/onnx/convmat-onnx" || { echo "convmat: convmat-onnx was not built (libonnx-dev?)" >&2; exit 1; }

# convmat-onnx: a CNN exported from torch to its Gemm + Relu form.
echo; echo "\$ $build/onnx/convmat-onnx tests/data/onnx/lenet.onnx $build/lenet_fc.onnx"
"$build/onnx/convmat-onnx" tests/data/onnx/lenet.onnx "$build/lenet_fc.onnx"

# The Python module: a torch layer in, its matrix out (python/examples/tour.py).
echo; echo "\$ PYTHONPATH=$build/python python3 python/examples/tour.py"
PYTHONPATH="$build/python" /usr/bin/python3 -W ignore::UserWarning python/examples/tour.py
