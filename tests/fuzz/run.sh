#!/bin/bash
# run.sh - run every built libFuzzer target for a bounded time with its seed corpus.
#
# Usage: tests/fuzz/run.sh [-j JOBS] [BUILD_DIR] [SECONDS]
#   BUILD_DIR  a build configured with -Dfuzz=true and CC=clang (default: build-fuzz)
#   SECONDS    per target (default 20); -j runs that many targets at once (default 1)
# Seeds are read from tests/fuzz/corpus/<target>/ and never written to: new inputs go to
# a scratch corpus under BUILD_DIR/fuzz-work/<target>/. A crash, leak, timeout or
# sanitizer report fails the target; its reproducer is saved as
# BUILD_DIR/fuzz-artifacts/<target>/crash-* (replay: BUILD_DIR/tests/fuzz/<target> FILE).
# The last line is "fuzz: N passed, N failed"; exit status 1 if any target failed.
set -u -o pipefail

JOBS=1
if [ "${1:-}" = "-j" ]; then JOBS=$2; shift 2; fi
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="$(cd "${1:-build-fuzz}" && pwd)" || { echo "run.sh: no build dir ${1:-build-fuzz}" >&2; exit 2; }
SECONDS_PER=${2:-20}
OUT="$BUILD/fuzz-results"
rm -rf "$OUT"
mkdir -p "$OUT"

targets=()
for bin in "$BUILD"/tests/fuzz/fuzz_*; do
    [ -f "$bin" ] && [ -x "$bin" ] && targets+=("$bin")
done
if [ ${#targets[@]} = 0 ]; then
    echo "run.sh: no fuzz targets in $BUILD/tests/fuzz (configure with -Dfuzz=true, CC=clang)" >&2
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi

# run_one BIN: fuzz one target; writes OUT/<name>.rc and OUT/<name>.log
run_one() {
    local bin=$1 name
    name=$(basename "$bin")
    local seeds="$HERE/corpus/$name" work="$BUILD/fuzz-work/$name" art="$BUILD/fuzz-artifacts/$name"
    mkdir -p "$work" "$art"
    local dirs=("$work")
    [ -d "$seeds" ] && dirs+=("$seeds")
    # -timeout: one input may take at most 10 s (a parser budget bug shows as a timeout);
    # the outer timeout is only a backstop should libFuzzer itself hang.
    ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}" \
    timeout -k 10 $((SECONDS_PER + 60)) "$bin" -max_total_time="$SECONDS_PER" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/" "${dirs[@]}" \
        >"$OUT/$name.log" 2>&1
    echo $? >"$OUT/$name.rc"
}

running=0
for bin in "${targets[@]}"; do
    run_one "$bin" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

pass=0 fail=0
for bin in "${targets[@]}"; do
    name=$(basename "$bin")
    rc=$(cat "$OUT/$name.rc" 2>/dev/null || echo 99)
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$OUT/$name.log" | grep -Eo '[0-9]+$' | tail -1)
    if [ "$rc" = 0 ]; then
        pass=$((pass + 1))
        echo "PASS $name (${execs:-?} runs in ${SECONDS_PER}s)"
    else
        fail=$((fail + 1))
        echo "FAIL $name (exit $rc) -- log $OUT/$name.log, artifacts $BUILD/fuzz-artifacts/$name/"
        tail -n 60 "$OUT/$name.log" | sed 's/^/    /'
    fi
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" = 0 ]
