#!/usr/bin/env bash
# Builds and runs every test convmat has: the suite (g++ C++17 and clang
# C++20 under the sanitizers, -Werror), the examples (their output is
# checked), and the stages below.
# Installs what is missing (as root) first. Keep it under 40 minutes on 2
# cores, installs included: build in parallel, keep test binaries few.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
jobs=$(nproc)
root=${CONVMAT_BUILD_DIR:-build}
SECONDS=0
stage() { echo; echo "== [$(printf '%4d' "$SECONDS")s] $*"; }

# ---- packages: each stage adds the Debian packages it needs here --------
packages="$CONVMAT_BASE_PACKAGES python3 python3-dev pybind11-dev python3-pytest libonnx-dev libprotobuf-dev protobuf-compiler libcli11-dev python3-numpy python3-scipy python3-torch python3-onnx python3-torchvision python3-venv python3-setuptools python3-pip petsc-dev slepc-dev openmpi-bin libbenchmark-dev libtorch-dev clang-14 libclang-rt-14-dev libstb-dev"
convmat_require $packages

# ---- stage: the suite, C++17 ---------------------------------------------
# (The Python module is built and tested once, in its own stage below.)
stage "suite and examples (C++17, -Werror)"
cmake -S . -B "$root/test" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_TESTS=ON \
  -DCONVMAT_BUILD_EXAMPLES=ON -DCONVMAT_BUILD_PYTHON=OFF >/dev/null
cmake --build "$root/test" -j "$jobs"
ctest --test-dir "$root/test" --output-on-failure -j "$jobs"

# ---- packaging ---------------------------------------------------------------
# The consumer projects (install + find_package, build-tree find_package,
# add_subdirectory, pkg-config, #include, the single header alone), the
# single header's freshness and the README's snippets ran in the ctest of
# the suite above. The suite against the single header, and as C++20, runs
# in the sanitizers' stage below (clang, so a second compiler too).

# ---- stage: convmat-onnx ---------------------------------------------------
# Built and tested (convmat_onnx_tests) in the suite above; libonnx-dev is
# installed, so a missing converter is an error. Then the README's command.
stage "convmat-onnx: a CNN in ONNX to Gemm + Relu"
test -x "$root/test/onnx/convmat-onnx" || { echo "convmat-onnx was not built" >&2; exit 1; }
"$root/test/onnx/convmat-onnx" tests/data/onnx/lenet.onnx "$root/test/lenet_fully_connected.onnx"

# ---- stage: convmat-onnx on torchvision's networks -------------------------
# ResNet-18, a VGG, MobileNetV2 (random weights, 3x16x16) exported by torch,
# converted, run as Gemm + Relu (numpy, float32, external data for the
# ResNet) and as Matrix Market (scipy, float64), compared with torch. Then
# the ONNX convention models are what tools/make_onnx_conventions.py writes.
stage "convmat-onnx on torchvision networks (tools/check_onnx_torchvision.py)"
/usr/bin/python3 tools/check_onnx_torchvision.py --convmat-onnx "$root/test/onnx/convmat-onnx"
rm -rf "$root/onnx-conventions" && /usr/bin/python3 tools/make_onnx_conventions.py --out "$root/onnx-conventions" >/dev/null
diff -r "$root/onnx-conventions" tests/data/onnx/conventions ||
  { echo "tests/data/onnx/conventions differs from tools/make_onnx_conventions.py" >&2; exit 1; }

# ---- stage: the convmat command against PyTorch ------------------------------
# Its own tests (round trips, bad inputs, the worked example) ran in the
# suite's ctest; here real torch.nn layers go through numpy.save -> convmat ->
# numpy.load / scipy.io.mmread and are compared with PyTorch's outputs.
stage "the convmat command against PyTorch (tools/check_cli_with_torch.py)"
/usr/bin/python3 tools/check_cli_with_torch.py --convmat "$root/test/app/convmat"

# ---- stage: the README as a newcomer walks it ----------------------------------
# tools/walk_readme.py runs the README's marked commands in order, in a scratch
# directory that looks like a clone, with a fresh HOME: the install line into
# $HOME/.local (convmat and convmat-onnx then on PATH), the command on a torch
# layer, the Python snippets, convmat-onnx, the examples; every output the
# README shows is compared. The suite's build above stands in for build/demo
# (the same layout), and every build/demo path the README names must be a
# target that scripts/demo.sh builds.
stage "the README's walkthrough (tools/walk_readme.py)"
/usr/bin/python3 tools/walk_readme.py --build "$root/test"

# ---- stage: the Python module ----------------------------------------------
# import convmat (python/): required here, so missing pybind11 or Python
# headers fail instead of skipping. Built with -Werror, then ctest runs
# pytest on /usr/bin/python3 (every layer kind and format against torch,
# zero copy, errors) and the README's install line into a clean prefix, with
# the README's examples run from there.
stage "Python module: import convmat (pytest, install into a clean prefix)"
cmake -S . -B "$root/python" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_PYTHON=ON -DCONVMAT_BUILD_TESTS=ON \
  -DCONVMAT_BUILD_EXAMPLES=OFF -DCONVMAT_TEST_CONSUMERS=OFF -DCONVMAT_BUILD_CLI=OFF -DCONVMAT_BUILD_ONNX=OFF \
  -DCONVMAT_BUILD_PETSC=OFF -DPython_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$root/python" -j "$jobs" --target convmat_python
ctest --test-dir "$root/python" --output-on-failure -R '^python\.'

# ---- stage: pip install . ---------------------------------------------------
# The README's pip line: a fresh venv that sees Debian's torch, numpy and
# scipy, pip install --no-build-isolation . (pyproject.toml, setup.py driving
# the project's CMake; here in the build just made, so it is incremental),
# then the quick start run from another directory.
stage "pip install --no-build-isolation . into a fresh venv, the quick start from elsewhere"
python_build=$(cd "$root/python" && pwd) venv="$(cd "$root" && pwd)/venv"
rm -rf "$venv" "$root/elsewhere" && /usr/bin/python3 -m venv --system-site-packages "$venv"
CONVMAT_CMAKE_BUILD_DIR="$python_build" "$venv/bin/pip" install -q --no-build-isolation .
find python -maxdepth 1 -name '*.egg-info' -exec rm -rf {} +
mkdir -p "$root/elsewhere"
printed=$(cd "$root/elsewhere" && "$venv/bin/python" "$OLDPWD/python/examples/quickstart.py")
echo "$printed"
[ "$printed" = "$(cat python/examples/quickstart.txt)" ] || { echo "the quick start from the pip install failed" >&2; exit 1; }

# ---- stage: PETSc/SLEPc over MPI --------------------------------------------
# The suite above already built and ran the PETSc examples (CONVMAT_BUILD_PETSC
# is ON when pkg-config finds PETSc); here it is required, so a PETSc that is
# not found fails instead of being skipped, and the two-rank runs are listed.
stage "PETSc/SLEPc: MATMPIAIJ, MATSHELL, SVD and LSQR on 2 MPI ranks"
cmake -S . -B "$root/test" -DCONVMAT_BUILD_PETSC=ON >/dev/null
cmake --build "$root/test" -j "$jobs" --target petsc_quickstart petsc_assemble petsc_singular_values \
  petsc_deblur petsc_assembly_rate
ctest --test-dir "$root/test" --output-on-failure -R '^example_petsc_'

# ---- stage: the golden data is what PyTorch computes today -----------------
# The suite ran every path against tests/data; here PyTorch regenerates that
# data (exact values, fixed seed) and it must be byte for byte what is checked in.
stage "golden data: tools/make_golden.py reproduces tests/data"
rm -rf "$root/golden" && /usr/bin/python3 tools/make_golden.py --out "$root/golden"
for file in "$root"/golden/*.txt; do
  cmp "$file" "tests/data/$(basename "$file")" || { echo "tests/data differs from tools/make_golden.py" >&2; exit 1; }
done

# ---- stage: the benchmarks still build -------------------------------------
# scripts/bench.sh runs them (minutes, timing); here they are only built, with
# libtorch's rows, and the smallest rows run once so the binary never rots.
stage "benchmarks build (benchmarks/, Google Benchmark + libtorch)"
torch_prefix=$(/usr/bin/python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)
cmake -S . -B "$root/bench" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_BENCHMARKS=ON -DCONVMAT_BUILD_TESTS=OFF \
  -DCONVMAT_BUILD_EXAMPLES=OFF ${torch_prefix:+-DCMAKE_PREFIX_PATH="$torch_prefix"} >/dev/null
cmake --build "$root/bench" -j "$jobs" --target convmat_bench
"$root/bench/benchmarks/convmat_bench" --benchmark_filter='/8$' --benchmark_min_time=0.01

# ---- stages: reliability (sanitizers, fuzzers) -----------------------------
# One build with clang-14, as C++20 (so the suite's second compiler and
# second standard), the suite against the single header: the suite
# (-Werror), the examples (their output checked), the reliability programs
# (-fno-exceptions, user-defined CONVMAT_THROW, the 4 GiB address space) and
# the tools' own tests (convmat: bad inputs, round trips, a signal;
# convmat-onnx; the README's table of hostile inputs), all under
# AddressSanitizer and UBSan. The suite runs as one ctest per source file,
# on both cores. (clang builds this in about half of g++'s time, and its
# instrumented suite runs about three times faster.) No build type, so the
# flags below are all the flags.
stage "suite, examples and tools under AddressSanitizer and UBSan (clang-14, C++20, the suite against the single header, -O1)"
cmake -S . -B "$root/sanitize-clang" -DCMAKE_BUILD_TYPE= -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_CXX_STANDARD=20 \
  "-DCMAKE_CXX_FLAGS=-O1 -gline-tables-only -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -fsanitize-recover=alignment" \
  -DCONVMAT_BUILD_TESTS=ON -DCONVMAT_BUILD_EXAMPLES=ON -DCONVMAT_TEST_SINGLE_HEADER=ON -DCONVMAT_TEST_CONSUMERS=OFF \
  -DCONVMAT_BUILD_CLI=ON -DCONVMAT_BUILD_ONNX=ON -DCONVMAT_BUILD_PETSC=OFF -DCONVMAT_BUILD_PYTHON=OFF >/dev/null
cmake --build "$root/sanitize-clang" -j "$jobs"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tests/ubsan.supp" \
  ctest --test-dir "$root/sanitize-clang" --output-on-failure -j "$jobs"

# libFuzzer (clang-14, ASan, UBSan), each target from tests/fuzz/corpus/TARGET;
# see README, "Reliability".
stage "fuzzers: the library ${CONVMAT_FUZZ_SECONDS:-60} s, the .npy reader and the ONNX converter ${CONVMAT_FUZZ_PARSER_SECONDS:-45} s each"
CONVMAT_BUILD_DIR="$root" CONVMAT_FUZZ_REQUIRED=1 ./scripts/fuzz.sh convmat "${CONVMAT_FUZZ_SECONDS:-60}"
CONVMAT_BUILD_DIR="$root" CONVMAT_FUZZ_REQUIRED=1 ./scripts/fuzz.sh npy "${CONVMAT_FUZZ_PARSER_SECONDS:-45}"
CONVMAT_BUILD_DIR="$root" CONVMAT_FUZZ_REQUIRED=1 ./scripts/fuzz.sh onnx "${CONVMAT_FUZZ_PARSER_SECONDS:-45}"

stage "all stages passed"
