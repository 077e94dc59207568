#!/usr/bin/env bash
# Builds convmat's libFuzzer targets (clang, AddressSanitizer and UBSan) and
# runs each from its checked-in seed corpus for a given time.
#   ./scripts/fuzz.sh [TARGET...] [SECONDS=60] [libFuzzer flags...]
#   TARGET: convmat (the library), npy (the .npy reader), onnx (the ONNX
#           loader and converter) or all (the default)
#   ./scripts/fuzz.sh 60                           # each target for 60 s
#   nice -n 19 ./scripts/fuzz.sh npy 3600 -jobs=1  # a long run of one target
# New inputs go to $CONVMAT_BUILD_DIR/fuzz/corpus/TARGET (never into the
# repository); a failing input is written to $CONVMAT_BUILD_DIR/fuzz/TARGET/
# and the script fails. Prints, per target, the executions and the coverage
# (cov:, ft:) reached. Needs clang-14 and libclang-rt-14-dev (and, for onnx,
# libonnx-dev); without them it says so and exits 0 (CONVMAT_FUZZ_REQUIRED=1
# makes that an error).
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
targets=()
seconds=60
flags=()
for arg in "$@"; do
  case "$arg" in
    all) targets=(convmat npy onnx) ;;
    convmat | npy | onnx) targets+=("$arg") ;;
    -*) flags+=("$arg") ;;
    *[!0-9]* | '') echo "fuzz: '$arg' is neither a target (convmat, npy, onnx, all), seconds nor a -flag" >&2; exit 2 ;;
    *) seconds=$arg ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(convmat npy onnx)
root=${CONVMAT_BUILD_DIR:-build}
out="$root/fuzz"
cxx=${CONVMAT_FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || true)}

skip() {
  echo "fuzz: SKIPPED — $*" >&2
  [ "${CONVMAT_FUZZ_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
}
[ -n "$cxx" ] || skip "no clang++ found (install clang-14 and libclang-rt-14-dev)"
mkdir -p "$out"
echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' > "$out/probe.cpp"
"$cxx" -fsanitize=fuzzer "$out/probe.cpp" -o "$out/probe" 2>/dev/null ||
  skip "$cxx cannot link -fsanitize=fuzzer (install libclang-rt-14-dev)"

# One CMake build, everything in it instrumented (the ONNX converter too,
# built only when the onnx target is asked for).
sanitize="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
with_onnx=OFF
for target in "${targets[@]}"; do [ "$target" = onnx ] && with_onnx=ON; done
cmake -S . -B "$out/build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE= "-DCMAKE_CXX_FLAGS=$sanitize" \
  -DCONVMAT_BUILD_FUZZERS=ON -DCONVMAT_BUILD_ONNX=$with_onnx -DCONVMAT_BUILD_TESTS=OFF -DCONVMAT_BUILD_EXAMPLES=OFF \
  -DCONVMAT_BUILD_CLI=OFF -DCONVMAT_BUILD_PETSC=OFF -DCONVMAT_INSTALL=OFF >"$out/configure.log" 2>&1 ||
  { cat "$out/configure.log" >&2; exit 1; }
runnable=()
for target in "${targets[@]}"; do
  if [ "$target" = onnx ] && [ ! -d "$out/build/tests/fuzz/CMakeFiles/fuzz_onnx.dir" ]; then
    echo "fuzz: onnx SKIPPED — convmat-onnx is not built here (install libonnx-dev libprotobuf-dev protobuf-compiler)" >&2
    [ "${CONVMAT_FUZZ_REQUIRED:-0}" = 1 ] && exit 1
    continue
  fi
  runnable+=("$target")
done
[ ${#runnable[@]} -gt 0 ] || exit 0
cmake --build "$out/build" -j "${CONVMAT_FUZZ_JOBS:-2}" --target "${runnable[@]/#/fuzz_}"

# A single allocation above the limit fails the run: the readers never
# allocate what an input only claims (the library's and the converter's
# memory guard is set to 64 MiB inside their targets).
malloc_limit() { case "$1" in npy) echo 64 ;; onnx) echo 512 ;; *) echo 2048 ;; esac; }

summary=()
status=0
for target in "${runnable[@]}"; do
  seeds="tests/fuzz/corpus/$target"
  work="$out/$target"  # the run's logs (with -jobs: fuzz-N.log) and any failing input
  mkdir -p "$out/corpus/$target" "$work"
  rm -f "$work"/fuzz-*.log
  log="$work/run.log"
  echo "fuzz: $target for ${seconds}s from $seeds ($(ls "$seeds" | wc -l) seeds)"
  result=0
  (cd "$work" && "../build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=20 \
    -malloc_limit_mb="$(malloc_limit "$target")" -artifact_prefix="./" ${flags[@]+"${flags[@]}"} \
    "../corpus/$target" "$OLDPWD/$seeds") >"$log" 2>&1 || result=$?
  # With -jobs, each worker logs to fuzz-N.log (and the run's log repeats them).
  workers=("$work"/fuzz-*.log)
  if [ ${#workers[@]} -gt 0 ]; then all_logs=$(cat "${workers[@]}"); else all_logs=$(cat "$log"); fi
  grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)" <<<"$all_logs" || true
  # Executions summed over the jobs; coverage and memory as the last (largest) report says.
  runs=$(awk '/stat::number_of_executed_units:/ {n += $2} END {print n + 0}' <<<"$all_logs")
  coverage=$(awk 'match($0, /cov: [0-9]+ ft: [0-9]+/) {last = substr($0, RSTART, RLENGTH)} END {print last}' \
             <<<"$all_logs")
  peak=$(awk '/stat::peak_rss_mb:/ && $2 > m {m = $2} END {print m + 0}' <<<"$all_logs")
  summary+=("$(printf '%-8s %6ss  %12s executions  %-22s peak %4s MB  %s' "$target" "$seconds" "$runs" "${coverage:-cov: ?}" \
    "$peak" "$([ "$result" = 0 ] && echo ok || echo "FAILED (exit $result)")")")
  if [ "$result" != 0 ]; then
    tail -n 60 <<<"$all_logs" >&2
    echo "fuzz: $target FAILED (exit $result); the input is in $work/ (crash-*, leak-*, timeout-*, oom-*)" >&2
    status=$result
  fi
done
echo "fuzz: summary (corpora grown in $out/corpus/)"
printf '  %s\n' "${summary[@]}"
exit "$status"
