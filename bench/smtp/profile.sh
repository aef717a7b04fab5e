#!/usr/bin/env bash
# bench/smtp/profile.sh - where tern's time goes per SMTP delivery, process by process
# (docs/PERFORMANCE.md §12.8). Tern alone, set up as bench/smtp/run.sh does (one local
# user, smtp-source load: MESSAGES x SIZE bytes over SESSIONS sessions), then for each of
# RUNS runs, per tern process (master, login, mail workers, auth, queue: told apart by
# their user): CPU microseconds (utime + stime) and context switches (all its threads)
# per delivered message. Run by hand, as root:
#
#     WORKERS=2 MESSAGES=3000 bench/smtp/profile.sh
#     MODE=perf PERF_USER=tern bench/smtp/profile.sh      # perf (dwarf call graphs) of the
#                                                         # processes running as that user
#     MODE=strace bench/smtp/profile.sh                   # strace -c of every process
#
# MODE=perf writes $OUT/perf.data (read it with `perf report -i $OUT/perf.data --children
# --sort sym -g none`); MODE=strace writes $OUT/strace-<user>-<pid>.txt for the first
# STRACE_S seconds of the load (strace slows the processes it watches: never compare the
# rates of such a run). OUT defaults to /tmp/tern-smtp-profile. TERN_BIN as in run.sh.
set -euo pipefail
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-10240}
OUT=${OUT:-/tmp/tern-smtp-profile}
# log, now, load, wait_count, tern_*: bench/lib/mta.sh
# shellcheck source=../lib/mta.sh
. "$(dirname "$0")/../lib/mta.sh"
bench_init smtpprofile
mkdir -p "$OUT"
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
[ -x "$SMTP_SOURCE" ] || die "no smtp-source (apt-get install postfix, or run bench/smtp/run.sh once)"
tern_setup "smtp.max_recipients = 1000
worker_processes = ${WORKERS:-2}"
echo benchpw | tern_cli user add bench@example.test --password-stdin >/dev/null
tern_start
TMAIL="$WORK/tern/data/mail/example.test/bench/Maildir"
MESSAGES=200 load "$TPORT" bench@example.test >/dev/null
wait_count "$TMAIL/new" 200 60 || die "tern did not deliver the warm-up"
HZ=$(getconf CLK_TCK)

# procs: TERN_PID and its descendants, one per line
procs() {
    ps -eo pid=,ppid= | awk -v root="$TERN_PID" '
        { parent[$1] = $2 }
        END { keep[root] = 1; changed = 1
              while (changed) { changed = 0
                  for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
              for (p in keep) print p }'
}
user_of() { if [ "$1" = "$TERN_PID" ]; then echo master; else ps -o user= -p "$1"; fi; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }

for run in $(seq "${RUNS:-1}"); do
    declare -A t0 s0
    for p in $(procs); do t0[$p]=$(ticks "$p"); s0[$p]=$(switches "$p"); done
    before=$(count_files "$TMAIL/new")
    start=$(now)
    case "${MODE:-plain}" in
    perf)
        pids=$(for p in $(procs); do
                   if [ "$(user_of "$p")" = "${PERF_USER:-tern}" ]; then echo "$p"; fi
               done | paste -sd, -)
        perf record -q -e cpu-clock -F "${PERF_F:-250}" --call-graph dwarf,16384 -p "$pids" \
            -o "$OUT/perf.data" 2>/dev/null &
        PERF_PID=$!
        sleep 0.5 ;;
    strace)
        for p in $(procs); do
            timeout "${STRACE_S:-4}" strace -c -f -p "$p" -o "$OUT/strace-$(user_of "$p")-$p.txt" 2>/dev/null &
        done ;;
    esac
    load "$TPORT" bench@example.test >/dev/null
    end=$(now)
    wait_count "$TMAIL/new" $((before + MESSAGES)) 600 || die "tern lost messages"
    if [ "${MODE:-plain}" = perf ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
    log "run $run: $(echo "$MESSAGES / ($end - $start)" | bc -l | xargs printf %.1f) msg/s, load $(cut -d' ' -f1-3 /proc/loadavg)"
    for p in $(procs); do
        printf '  %-7s %-10s %6d us CPU, %5.1f context switches per message\n' "$p" "$(user_of "$p")" \
            $(( ($(ticks "$p") - ${t0[$p]:-0}) * 1000000 / HZ / MESSAGES )) \
            "$(echo "($(switches "$p") - ${s0[$p]:-0}) / $MESSAGES" | bc -l)"
    done
done
