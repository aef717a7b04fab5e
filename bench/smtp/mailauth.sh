# bench/smtp/mailauth.sh - sourced by bench/smtp/run.sh when MAILAUTH=1 (issue 12): what
# mail authentication costs per message on the SMTP bench path. Tern only (the reference
# has no equivalent in its default setup), same smtp-source load, RUNS timed runs each,
# median; rate = MESSAGES / smtp-source wall time (Tern answers 250 only once the copy is
# durable, so that is receive + checks + durable delivery):
#
#   verify-off  port 25, a DKIM-signed message (RSA-2048 + Ed25519, relaxed/relaxed),
#               mailauth.verify = no                          -> local Maildir
#   verify-on   the same with mailauth.verify = yes: SPF at MAIL, both DKIM signatures,
#               DMARC, A-R field; answers from a DNS server on loopback (python, from
#               tests/integration/outbound_util.py), libunbound caching as in production
#   sign-off    relayed (relay_networks) to a remote domain, queued; the From domain has
#               no DKIM key                                   -> queue file
#   sign-on     the same after `tern dkim keygen`: RSA-2048 + Ed25519 signatures added
#
#     MAILAUTH=1 bench/smtp/run.sh
#     MAILAUTH=1 MESSAGES=2000 RUNS=3 bench/smtp/run.sh
#
# Needs Debian's /usr/bin/python3 with python3-dkim (dkimpy signs the test message) and openssl.

ma_stop_tern() {
    kill "$TERN_PID" 2>/dev/null || true
    wait "$TERN_PID" 2>/dev/null || true
}

# ma_restart "config lines": restart tern with these lines replacing the previous phase's.
ma_restart() {
    ma_stop_tern
    sed -i '/^# mailauth-bench$/,$d' "$WORK/tern/tern.conf"
    printf '# mailauth-bench\n%s\n' "$1" >> "$WORK/tern/tern.conf"
    tern_start
}

# ma_load port rcpt: MESSAGES copies of the prepared message.
ma_load() {
    "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -F "$WORK/ma/message.txt" \
        -f bench@load.example -t "$2" -M load.example "127.0.0.1:$1"
}

# tern_cpu: CPU seconds (user + system, all threads) tern has used so far.
tern_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$TERN_PID/stat"
}

# ma_runs label rcpt: RUNS timed runs; sets MA_RATE (median msg/s) and MA_CPU (median CPU
# milliseconds tern spent per message: unlike the rate, hardly moved by a busy machine).
ma_runs() {
    local label=$1 rcpt=$2 rates=() cpus=() t0 t1 c0 c1 rate cpu
    MESSAGES=100 ma_load "$TPORT" "$rcpt" >/dev/null # warm-up (caches, connections)
    for run in $(seq "$RUNS"); do
        log "$label run $run: load average $(cut -d' ' -f1-3 /proc/loadavg)"
        c0=$(tern_cpu)
        t0=$(now)
        ma_load "$TPORT" "$rcpt" >/dev/null
        t1=$(now)
        c1=$(tern_cpu)
        rate=$(echo "$MESSAGES / ($t1 - $t0)" | bc -l)
        cpu=$(echo "1000 * ($c1 - $c0) / $MESSAGES" | bc -l)
        log "$label run $run: $(printf %.1f "$rate") msg/s, tern cpu $(printf %.3f "$cpu") ms/msg"
        rates+=("$rate")
        cpus+=("$cpu")
    done
    MA_RATE=$(printf '%s\n' "${rates[@]}" | median)
    MA_CPU=$(printf '%s\n' "${cpus[@]}" | median)
    MA_RUNS+=("$label: $(printf '%.1f ' "${rates[@]}")msg/s; cpu $(printf '%.3f ' "${cpus[@]}")ms/msg")
}

mailauth_bench() {
    mkdir -p "$WORK/ma"
    MA_RUNS=()
    # keys and the signed message (dkimpy, an independent signer)
    openssl genrsa -out "$WORK/ma/rsa.pem" 2048 2>/dev/null
    /usr/bin/python3 - "$WORK/ma" "$SIZE" <<'EOF' || die "cannot make the signed test message"
import base64, subprocess, sys
import dkim, nacl.signing
d, size = sys.argv[1], int(sys.argv[2])
body = ("".join("line %05d of the bench message, some text to fill it up .......\n" % i
                for i in range(size // 66 + 1)))[:size]
msg = ("From: Bench <bench@load.example>\nTo: bench@example.test\nSubject: mailauth bench\n"
       "Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <bench@load.example>\n\n" + body)
crlf = msg.replace("\n", "\r\n").encode()
sk = nacl.signing.SigningKey.generate()
ed = dkim.sign(crlf, b"ed", b"load.example", base64.b64encode(bytes(sk)),
               canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=b"ed25519-sha256")
rsa = dkim.sign(crlf, b"rsa", b"load.example", open(d + "/rsa.pem", "rb").read(),
                canonicalize=(b"relaxed", b"relaxed"))
signed = (ed + rsa).replace(b"\r\n", b"\n") + msg.encode()
open(d + "/message.txt", "wb").write(signed)
der = subprocess.run(["openssl", "rsa", "-in", d + "/rsa.pem", "-pubout", "-outform", "DER"],
                     capture_output=True, check=True).stdout
open(d + "/records.txt", "w").write(
    "rsa._domainkey.load.example|TXT|v=DKIM1; k=rsa; p=%s\n" % base64.b64encode(der).decode() +
    "ed._domainkey.load.example|TXT|v=DKIM1; k=ed25519; p=%s\n"
    % base64.b64encode(bytes(sk.verify_key)).decode() +
    "load.example|TXT|v=spf1 ip4:127.0.0.1 -all\n"
    "_dmarc.load.example|TXT|v=DMARC1; p=reject\n")
EOF
    # the DNS server on loopback
    /usr/bin/python3 - "$REPO/tests/integration" "$WORK/ma" <<'EOF' &
import sys, time
sys.path.insert(0, sys.argv[1])
from outbound_util import DnsServer
recs = {}
for line in open(sys.argv[2] + "/records.txt"):
    name, t, value = line.rstrip("\n").split("|", 2)
    recs.setdefault((name, t), []).append(value)
d = DnsServer(recs)
open(sys.argv[2] + "/dns.port", "w").write(str(d.port))
time.sleep(24 * 3600)
EOF
    PIDS+=("$!")
    for _ in $(seq 100); do [ -s "$WORK/ma/dns.port" ] && break; sleep 0.05; done
    local dns_port
    dns_port=$(cat "$WORK/ma/dns.port") || die "the bench DNS server did not start"
    local base="dns.resolver = 127.0.0.1@$dns_port"

    ma_restart "$base
mailauth.verify = no"
    ma_runs verify-off bench@example.test
    local r_voff=$MA_RATE c_voff=$MA_CPU
    ma_restart "$base
mailauth.verify = yes"
    ma_runs verify-on bench@example.test
    local r_von=$MA_RATE c_von=$MA_CPU
    grep -q "dkim=pass (2 of 2 signatures) arc=none dmarc=pass" "$WORK/tern/server.log" ||
        die "verify-on: the checks did not pass (see $WORK/tern/server.log; KEEP=1 keeps it)"

    local relay="$base
mailauth.verify = no
relay_networks = 127.0.0.1/32
transport.remote.example = [127.0.0.1]:1
queue.retry_min = 86400
queue.scan_interval = 3600"
    ma_restart "$relay"
    ma_runs sign-off someone@remote.example
    local r_soff=$MA_RATE c_soff=$MA_CPU
    tern_cli dkim keygen load.example bench >/dev/null
    chown -R "$TERN_RUN_USER" "$WORK/tern"
    ma_restart "$relay"
    ma_runs sign-on someone@remote.example
    local r_son=$MA_RATE c_son=$MA_CPU
    grep -q "DKIM-Signature field added (d=load.example)" "$WORK/tern/server.log" ||
        die "sign-on: nothing was signed (see $WORK/tern/server.log; KEEP=1 keeps it)"

    printf '\nMail authentication on the SMTP path, %d x %d-byte messages, %d sessions (median of %d)\n' \
        "$MESSAGES" "$SIZE" "$SESSIONS" "$RUNS"
    printf '  %-12s %10.1f msg/s  %8.3f ms tern CPU per message\n' verify-off "$r_voff" "$c_voff" \
        verify-on "$r_von" "$c_von" sign-off "$r_soff" "$c_soff" sign-on "$r_son" "$c_son"
    printf '  verify: +%.3f ms CPU per message\n' "$(echo "$c_von - $c_voff" | bc -l)"
    printf '  sign:   +%.3f ms CPU per message\n' "$(echo "$c_son - $c_soff" | bc -l)"
    # cost per message at this concurrency: the difference of the wall times per message
    printf '  verify: %.3f ms of wall time per message (%.0f%% of the rate)\n' \
        "$(echo "1000 / $r_von - 1000 / $r_voff" | bc -l)" "$(echo "100 * $r_von / $r_voff" | bc -l)"
    printf '  sign:   %.3f ms of wall time per message (%.0f%% of the rate)\n' \
        "$(echo "1000 / $r_son - 1000 / $r_soff" | bc -l)" "$(echo "100 * $r_son / $r_soff" | bc -l)"
    printf '  runs: %s\n' "${MA_RUNS[@]}"
}
