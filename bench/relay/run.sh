#!/usr/bin/env bash
# bench/relay/run.sh - outbound relaying, side by side: smtp-source -> MTA -> smtp-sink,
# Tern's queue runner versus Postfix, 10 KB messages over 20 concurrent sessions, all on
# loopback. Run by hand (not in CI), as root, on an idle box:
#
#     bench/relay/run.sh                # MESSAGES=2000 SESSIONS=20 SIZE=10240 RUNS=3
#     MESSAGES=10000 RUNS=1 bench/relay/run.sh
#
# What it does:
#   - a Postfix smtp-sink on a free loopback port dumps every message it accepts into a
#     file (-d), so "delivered" = a file exists;
#   - Tern: relay_networks = 127.0.0.0/8, transport.sink.example = [127.0.0.1]:<sink>,
#     queue.max_deliveries = queue.destination_concurrency = 20; Tern acknowledges after the
#     queue file is fsync'd, the queue runner then relays;
#   - reference: a private Postfix instance (own config, queue and data directories under
#     the temp dir, smtpd on a free loopback port, chroot off), relayhost = the sink,
#     default_destination_concurrency_limit = 20;
#   - time = from the start of smtp-source until the sink holds every message;
#   - both MTAs are up at once and the runs alternate (tern, reference, tern, ...), so a
#     busy minute on a shared machine hits both alike;
#   - prints messages/s for each (median of RUNS) and the ratio Tern / reference.
# The system's own Postfix (if any) is never touched.
#
# Status: both halves work; numbers in bench/relay/README.md. Both MTAs reuse their
# connections to the sink (Tern parks a session up to 5 s after a transaction). Run the
# script on its own: it needs the box quiet-ish and is not part of CI.
set -euo pipefail

MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-10240}
RUNS=${RUNS:-3}
# log die free_port load count_files wait_count now median, tern_*, postfix_start, cleanup
# shellcheck source=../lib/mta.sh
. "$(dirname "$0")/../lib/mta.sh"
bench_init relay

if smtp_tools_missing; then bench_install postfix; fi
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)

# ---- the sink ----------------------------------------------------------------------------
SPORT=$(free_port)
mkdir -p "$WORK/sink"
chown nobody "$WORK/sink"
# -u: run as nobody; -d: one file per message under the dir; 256: listen backlog
"$SMTP_SINK" -u nobody -d "$WORK/sink/m." "127.0.0.1:$SPORT" 256 &
PIDS+=($!)
wait_port "$SPORT" || die "smtp-sink did not start"
# the dump template holds no "/" after the dir: files land directly in $WORK/sink
SINK="$WORK/sink"

# ---- Tern ----------------------------------------------------------------------------------
tern_setup "relay_networks = 127.0.0.0/8
transport.sink.example = [127.0.0.1]:$SPORT
queue.max_deliveries = 20
queue.destination_concurrency = 20
outbound.tls = none"
tern_start

# ---- reference: Postfix, relaying to the sink ----------------------------------------------
postfix_start "relayhost = [127.0.0.1]:$SPORT
default_destination_concurrency_limit = 20
smtp_tls_security_level = none"

measure() { # label port -> one rate on stdout
    local before t0 t1
    before=$(count_files "$SINK")
    t0=$(now)
    load "$2" bench@sink.example >/dev/null
    wait_count "$SINK" $((before + MESSAGES)) 1200 || die "$1 lost messages (KEEP=1 keeps $WORK)"
    t1=$(now)
    echo "$MESSAGES / ($t1 - $t0)" | bc -l
}

warm_up() { # label port
    local before
    before=$(count_files "$SINK")
    log "$1: warm-up"
    MESSAGES=100 load "$2" bench@sink.example >/dev/null
    wait_count "$SINK" $((before + 100)) 120 || die "$1 did not relay the warm-up (KEEP=1 keeps $WORK)"
}

# Both MTAs run side by side (the idle one costs nothing) and the runs alternate
# tern, postfix, tern, ... so that load from other jobs on a shared machine hits both
# alike instead of whichever happened to run during a busy minute.
warm_up tern "$TPORT"
warm_up reference "$PPORT"
tern_rates=()
ref_rates=()
for run in $(seq "$RUNS"); do
    rate=$(measure tern "$TPORT")
    log "tern run $run: $(printf %.1f "$rate") msg/s (load $(cut -d' ' -f1 /proc/loadavg))"
    tern_rates+=("$rate")
    rate=$(measure reference "$PPORT")
    log "reference run $run: $(printf %.1f "$rate") msg/s (load $(cut -d' ' -f1 /proc/loadavg))"
    ref_rates+=("$rate")
done
TERN_RATE=$(printf '%s\n' "${tern_rates[@]}" | median)
REF_RATE=$(printf '%s\n' "${ref_rates[@]}" | median)
kill "$TERN_PID"; wait "$TERN_PID" 2>/dev/null || true

printf '\nRelay (receive, queue, deliver to smtp-sink), %d x %d-byte messages, %d sessions (median of %d)\n' \
    "$MESSAGES" "$SIZE" "$SESSIONS" "$RUNS"
printf '  tern:                   %10.1f msg/s\n' "$TERN_RATE"
printf '  postfix:                %10.1f msg/s\n' "$REF_RATE"
printf '  ratio tern / reference: %10.2f x\n' "$(echo "$TERN_RATE / $REF_RATE" | bc -l)"
