#!/bin/bash
# test.sh - build Tern and run every test; the last line is the overall summary
# "N passed, N failed[, N skipped]" and the exit status is 1 if anything failed.
#
# Usage (as root on Debian 12): ./scripts/test.sh
# Stages (each one's counts go into the summary; a stage that cannot run counts as failed):
#   deps         scripts/install-deps.sh (skip with TERN_SKIP_DEPS=1)
#   build        gcc build in build/                     (failure = 1 failed)
#   unit         meson test -C build                     (cmocka units)
#   integration  pytest tests/integration tests/stress with build/tern (tests/stress: the
#                stress tester's model units; tests/integration/test_stress.py runs it);
#                with pytest-xdist, TERN_PYTEST_WORKERS (default: cores) test files at once
#   asan-build   gcc ASan+UBSan build in build-asan/      (failure = 1 failed)
#   asan-unit    meson test -C build-asan
#   asan-integ   pytest tests/integration tests/stress with build-asan/tern
#   tsan-build   clang ThreadSanitizer build in build-tsan/     (failure = 1 failed)
#   tsan-unit    meson test -C build-tsan (a TSan report fails the unit: exit code 66)
#   tsan-integ   pytest tests/integration tests/stress -m threads with build-tsan/tern; a
#                TSan report in a server log fails the test during which it appeared
#   fuzz-build   clang libFuzzer build in build-fuzz/ (ASan+UBSan, coverage in every library)
#   fuzz         tests/fuzz/run.sh: every target for TERN_FUZZ_SECONDS (default 10) each
# Knobs: TERN_STAGES="build unit ..." to run a subset; TERN_FUZZ_SECONDS; TERN_PYTEST_ARGS;
#        TERN_PYTEST_WORKERS (pytest-xdist processes; 1: none; default: cores);
#        TERN_TSAN_ALL=1 (tsan-integ runs every test, not only those marked "threads").
# Time budget: the whole run must stay under 20 minutes on 2 cores (README, "Tests").
# Logs and JUnit XML land in build-logs/.
set -u -o pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
LOGS="$ROOT/build-logs"
mkdir -p "$LOGS"
export LC_ALL=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

STAGES="${TERN_STAGES:-deps build unit integration asan-build asan-unit asan-integ tsan-build tsan-unit tsan-integ fuzz-build fuzz}"
# 10 s: the 25 targets, two at a time, took 157 s on a loaded 2-core machine (at 20 s, CI took 255 s)
FUZZ_SECONDS="${TERN_FUZZ_SECONDS:-10}"
JOBS="$(nproc 2>/dev/null || echo 2)"
# Integration tests mostly wait (on replies, fsync, child processes), so two test files
# at a time take about 40% off a stage on 2 cores (344 s -> 206 s for the same ten files,
# measured back to back). Each worker takes its servers' ports from
# its own range (tests/integration/conftest.py free_ports) and every server has its own
# temp folder; --dist loadfile keeps a module (and its shared server) on one worker.
PYTEST_WORKERS="${TERN_PYTEST_WORKERS:-$JOBS}"
# Python from Debian (python3-pytest), not whatever python3 is first in PATH.
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3
# Bounds so one hung stage cannot eat the CI budget (they are limits, not assertions).
# The per-test limit catches hangs; the stage limit is only a last resort (a killed
# pytest writes no report, so the whole stage would count as one failure).
PYTEST_STAGE_LIMIT=${TERN_PYTEST_STAGE_LIMIT:-1200}
PER_TEST_LIMIT=${TERN_PER_TEST_LIMIT:-300}

TOTAL_PASS=0 TOTAL_FAIL=0 TOTAL_SKIP=0
SUMMARY=()

has_stage() { [[ " $STAGES " == *" $1 "* ]]; }

# record STAGE PASS FAIL SKIP SECONDS [NOTE]
record() {
    TOTAL_PASS=$((TOTAL_PASS + $2)); TOTAL_FAIL=$((TOTAL_FAIL + $3)); TOTAL_SKIP=$((TOTAL_SKIP + $4))
    SUMMARY+=("$(printf '%-12s %5s passed %4s failed %4s skipped %5ss  %s' "$1" "$2" "$3" "$4" "$5" "${6:-}")")
    echo "=== stage $1: $2 passed, $3 failed, $4 skipped (${5}s) ${6:-}"
}

banner() { echo; echo "=================== $* ==================="; }

# meson_counts BUILDDIR -> "pass fail skip" from meson-logs/testlog.json
meson_counts() {
    "$PYTHON" - "$1/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        if not line.strip():
            continue
        r = json.loads(line).get("result", "")
        if r in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif r == "SKIP":
            s += 1
        else:
            f += 1
except FileNotFoundError:
    f = 1
print(p, f, s)
PY
}

# junit_counts FILE -> "pass fail skip" (a missing/corrupt file counts as one failure)
junit_counts() {
    "$PYTHON" - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    t = sum(int(s.get("tests", 0)) for s in suites)
    f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    s = sum(int(x.get("skipped", 0)) for x in suites)
    print(t - f - s, f, s)
except Exception:
    print(0, 1, 0)
PY
}

# build_dir NAME DIR CC SETUP-ARGS... -> 0 on success
build_dir() {
    local name=$1 dir=$2 cc=$3; shift 3
    local t0=$SECONDS rc=0
    banner "$name ($dir, CC=$cc)"
    if [ ! -f "$dir/build.ninja" ]; then
        CC=$cc meson setup "$dir" "$@" 2>&1 | tee "$LOGS/$name.log" || rc=1
    fi
    if [ $rc = 0 ]; then
        # -k 0: build everything that can be built, so the unit tests of healthy modules
        # still run when one target is broken (the break counts as one failure).
        ninja -C "$dir" -k 0 2>&1 | tee -a "$LOGS/$name.log" || rc=1
    fi
    if [ $rc = 0 ]; then record "$name" 0 0 0 $((SECONDS - t0))
    else record "$name" 0 1 0 $((SECONDS - t0)) "(see build-logs/$name.log)"; fi
    return $rc
}

# unit_stage NAME DIR [MESON-TEST-ARGS...]
unit_stage() {
    local t0=$SECONDS
    banner "$1 (meson test -C $2)"
    rm -f "$2/meson-logs/testlog.json"
    meson test -C "$2" --no-rebuild --print-errorlogs --num-processes "$JOBS" "${@:3}" 2>&1 \
        | tee "$LOGS/$1.log"
    # shellcheck disable=SC2046
    record "$1" $(meson_counts "$2") $((SECONDS - t0))
}

# integ_stage NAME TERN_BIN [PYTEST-ARGS...]
integ_stage() {
    local t0=$SECONDS xml="$LOGS/$1.xml" timeout_args=() xdist_args=()
    rm -f "$xml"
    if "$PYTHON" -c 'import pytest_timeout' 2>/dev/null; then
        timeout_args=(--timeout="$PER_TEST_LIMIT")  # plugin auto-loads when installed
    fi
    if [ "$PYTEST_WORKERS" -gt 1 ] && "$PYTHON" -c 'import xdist' 2>/dev/null; then
        xdist_args=(-n "$PYTEST_WORKERS" --dist loadfile)
    fi
    banner "$1 (pytest tests/integration tests/stress ${xdist_args[*]}, TERN_BIN=$2)"
    # shellcheck disable=SC2086
    TERN_BIN="$2" timeout -k 10 "$PYTEST_STAGE_LIMIT" "$PYTHON" -m pytest \
        tests/integration tests/stress -q -rfEs --durations=15 -p no:cacheprovider \
        "${timeout_args[@]}" "${xdist_args[@]}" --junitxml="$xml" \
        "${@:3}" ${TERN_PYTEST_ARGS:-} </dev/null 2>&1 | tee "$LOGS/$1.log"
    local rc=${PIPESTATUS[0]}
    local note=""
    [ "$rc" = 124 ] && note="(stage limit ${PYTEST_STAGE_LIMIT}s hit)"
    # shellcheck disable=SC2046
    record "$1" $(junit_counts "$xml") $((SECONDS - t0)) "$note"
}

T_START=$SECONDS

if has_stage deps; then
    t0=$SECONDS
    banner "deps"
    if "$ROOT/scripts/install-deps.sh"; then record deps 0 0 0 $((SECONDS - t0))
    else record deps 0 1 0 $((SECONDS - t0)) "(install-deps.sh failed)"; fi
fi

# Integration needs the binary; without it the build failure already counts.
if has_stage build; then
    build_dir build build gcc
    has_stage unit && unit_stage unit build
    if has_stage integration && [ -x build/tern ]; then
        integ_stage integration "$ROOT/build/tern"
    fi
fi

# ASan+UBSan: every UBSan report is fatal (-fno-sanitize-recover) so none goes unnoticed.
# LeakSanitizer stays on everywhere (units, CLI, server at SIGTERM): the integration
# fixtures fail a test whose server log holds any sanitizer report.
if has_stage asan-build; then
    build_dir asan-build build-asan gcc \
        -Db_sanitize=address,undefined -Db_lundef=false -Dc_args=-fno-sanitize-recover=all
    export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
    has_stage asan-unit && unit_stage asan-unit build-asan
    if has_stage asan-integ && [ -x build-asan/tern ]; then
        # Tests marked slow/no_sanitizer (volume, memory figures) are skipped here; the
        # normal build runs them (tests/integration/conftest.py).
        TERN_SANITIZED=1 integ_stage asan-integ "$ROOT/build-asan/tern"
    fi
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi

# ThreadSanitizer: every report is printed and the run goes on (halt_on_error=0), so one
# run lists them all; a report makes the process exit 66 (units fail) and the integration
# fixtures fail the test whose server logged it. tests/tsan.supp holds only reports inside
# libraries, each with its reason; a race in our code is fixed, never suppressed.
if has_stage tsan-build; then
    build_dir tsan-build build-tsan clang -Db_sanitize=thread -Db_lundef=false
    export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1:history_size=4:suppressions=$ROOT/tests/tsan.supp}"
    # TSan runs code 5-15 times slower: meson's 30 s per unit becomes 120 s (test_store
    # took over 30 s on a loaded machine)
    has_stage tsan-unit && unit_stage tsan-unit build-tsan --timeout-multiplier 4
    if has_stage tsan-integ && [ -x build-tsan/tern ]; then
        # The whole suite under TSan takes 13-19 minutes on 2 cores; CI runs the tests
        # marked "threads" (test_stress, test_concurrency and a few other hand-offs
        # between the loop and the workpool: 18 tests). TERN_TSAN_ALL=1: every test.
        # Like asan-integ, slow/no_sanitizer tests are skipped (TERN_SANITIZED=1).
        tsan_select=(-m threads)
        [ "${TERN_TSAN_ALL:-0}" = 1 ] && tsan_select=()
        TERN_SANITIZED=1 integ_stage tsan-integ "$ROOT/build-tsan/tern" "${tsan_select[@]}"
    fi
    unset TSAN_OPTIONS
fi

if has_stage fuzz-build; then
    t0=$SECONDS
    banner "fuzz-build (build-fuzz, clang libFuzzer)"
    rc=0
    if [ ! -f build-fuzz/build.ninja ]; then
        # Coverage instrumentation in every library (not only the harness) so libFuzzer
        # is guided by the parser code itself; ASan+UBSan so memory errors are crashes.
        CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
            -Db_lundef=false -Dc_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" \
            2>&1 | tee "$LOGS/fuzz-build.log" || rc=1
    fi
    if [ $rc = 0 ]; then
        ninja -C build-fuzz -k 0 2>&1 | tee -a "$LOGS/fuzz-build.log" || rc=1
    fi
    if [ $rc = 0 ]; then
        record fuzz-build 0 0 0 $((SECONDS - t0))
    else
        record fuzz-build 0 1 0 $((SECONDS - t0)) "(see build-logs/fuzz-build.log)"
    fi
    # Fuzz whatever targets were built, even if another target failed to build.
    if has_stage fuzz; then
        t0=$SECONDS
        banner "fuzz (${FUZZ_SECONDS}s per target)"
        tests/fuzz/run.sh -j "$JOBS" build-fuzz "$FUZZ_SECONDS" 2>&1 | tee "$LOGS/fuzz.log"
        # run.sh ends with "fuzz: N passed, N failed"
        line=$(grep -E '^fuzz: [0-9]+ passed, [0-9]+ failed' "$LOGS/fuzz.log" | tail -1)
        if [ -n "$line" ]; then
            p=$(sed -E 's/^fuzz: ([0-9]+) passed.*/\1/' <<<"$line")
            f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
            record fuzz "$p" "$f" 0 $((SECONDS - t0))
        else
            record fuzz 0 1 0 $((SECONDS - t0)) "(run.sh gave no summary)"
        fi
    fi
fi

echo
echo "=================== summary ($((SECONDS - T_START))s) ==================="
for s in "${SUMMARY[@]}"; do echo "$s"; done
if [ "$TOTAL_SKIP" -gt 0 ]; then
    echo "$TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
else
    echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
fi
[ "$TOTAL_FAIL" = 0 ]
