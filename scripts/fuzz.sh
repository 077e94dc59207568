#!/usr/bin/env bash
# Builds convmat's libFuzzer target (clang, AddressSanitizer and UBSan) and
# runs it from the checked-in seed corpus for a given time.
#   ./scripts/fuzz.sh [seconds=60] [extra libFuzzer flags...]
#   ./scripts/fuzz.sh 3600 -jobs=2 -workers=2     # the long run
# New inputs go to $CONVMAT_BUILD_DIR/fuzz/corpus (never into the
# repository); a crashing input is written to $CONVMAT_BUILD_DIR/fuzz/ and
# the script fails. Prints the executions and the coverage (cov:, ft:)
# reached. Needs clang-14 and libclang-rt-14-dev; without them it says so
# and exits 0 (CONVMAT_FUZZ_REQUIRED=1 makes that an error).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
root=${CONVMAT_BUILD_DIR:-build}
out="$root/fuzz"
cxx=${CONVMAT_FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || true)}

skip() {
  echo "fuzz: SKIPPED — $*" >&2
  [ "${CONVMAT_FUZZ_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
}
[ -n "$cxx" ] || skip "no clang++ found (install clang-14 and libclang-rt-14-dev)"
mkdir -p "$out/corpus"
echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' > "$out/probe.cpp"
"$cxx" -fsanitize=fuzzer "$out/probe.cpp" -o "$out/probe" 2>/dev/null ||
  skip "$cxx cannot link -fsanitize=fuzzer (install libclang-rt-14-dev)"

eigen_flags=$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)
binary="$out/fuzz_convmat"
if [ ! -x "$binary" ] || [ -n "$(find include tests/fuzz/fuzz_convmat.cpp -newer "$binary" -print -quit)" ]; then
  echo "fuzz: building $binary with $cxx"
  # shellcheck disable=SC2086
  "$cxx" -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Wpedantic -Werror -Iinclude $eigen_flags tests/fuzz/fuzz_convmat.cpp -o "$binary"
fi

echo "fuzz: running for ${seconds}s from tests/fuzz/corpus ($(ls tests/fuzz/corpus | wc -l) seeds)"
log="$out/fuzz.log"
status=0
(cd "$out" && ./fuzz_convmat -max_total_time="$seconds" -print_final_stats=1 -timeout=20 "$@" \
  corpus "$OLDPWD/tests/fuzz/corpus") >"$log" 2>&1 || status=$?
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)" "$log" || true
grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" || true
if [ "$status" != 0 ]; then
  tail -n 60 "$log" >&2
  echo "fuzz: FAILED (exit $status); the input is in $out/ (crash-*, timeout-*, oom-*)" >&2
  exit "$status"
fi
echo "fuzz: no failure in ${seconds}s; the corpus grown is in $out/corpus"
