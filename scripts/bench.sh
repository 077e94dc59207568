#!/usr/bin/env bash
# Builds the benchmarks (-O3 -march=native; libtorch's rows when libtorch is
# found), runs every row, then each peak-memory row in a process of its
# own, and writes docs/benchmarks.md, docs/build_time.png and the table in
# README.md's "Performance" section. Takes about 5 minutes on 2 cores.
#   scripts/bench.sh                                   every row, best of 3
#   CONVMAT_BENCH_FILTER='threads' scripts/bench.sh    re-run only some rows:
#     they replace their earlier values, the other rows are kept
# On a shared machine, single-threaded rows count CPU time (robust to other
# processes), 2-thread rows wall time: re-run those when the machine is idle.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
convmat_require $CONVMAT_BASE_PACKAGES libbenchmark-dev python3-matplotlib
# libtorch is optional: its rows are skipped without it.
[ "$(id -u)" = 0 ] && convmat_require libtorch-dev python3-torch || true

build=${CONVMAT_BENCH_DIR:-build/bench}
repetitions=${CONVMAT_BENCH_REPETITIONS:-3}
filter=${CONVMAT_BENCH_FILTER:-}
torch_prefix=$(/usr/bin/python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCONVMAT_BUILD_BENCHMARKS=ON \
  -DCONVMAT_BUILD_TESTS=OFF -DCONVMAT_BUILD_EXAMPLES=OFF ${torch_prefix:+-DCMAKE_PREFIX_PATH="$torch_prefix"} >/dev/null
cmake --build "$build" -j 2 --target convmat_bench
bench="$build/benchmarks/convmat_bench"

if [ -z "$filter" ]; then  # a full run starts afresh
  rm -f "$build"/bench-*.json "$build/commands.txt"
  out="$build/bench-0.json"
  echo "CONVMAT_BENCH_REPETITIONS=$repetitions scripts/bench.sh" > "$build/commands.txt"
else
  [ -f "$build/bench-0.json" ] || { echo "bench.sh: run it once without CONVMAT_BENCH_FILTER first" >&2; exit 1; }
  out="$build/bench-$(date +%s).json"
  echo "CONVMAT_BENCH_REPETITIONS=$repetitions CONVMAT_BENCH_FILTER='$filter' scripts/bench.sh" >> "$build/commands.txt"
fi
"$bench" --benchmark_filter="${filter:-.}" --benchmark_repetitions="$repetitions" \
  --benchmark_out="$out" --benchmark_out_format=json

if [ -z "$filter" ]; then
  : > "$build/memory.txt"
  for row in $("$bench" --memory-list); do
    "$bench" --memory "$row" | tee -a "$build/memory.txt"
  done
fi

/usr/bin/python3 scripts/bench_report.py "$build/memory.txt" "$build/commands.txt" \
  $(ls "$build"/bench-*.json | sort -t- -k2 -n)
echo "bench.sh: wrote docs/benchmarks.md, docs/build_time.png and README.md's Performance table"
