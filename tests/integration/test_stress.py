"""
test_stress.py - CI run of the concurrency stress tester (tests/stress/stress.py, issue 9)
against the binary under test ($TERN_BIN: build/tern in the integration stage,
build-asan/tern in asan-integ): 10 clients on one user's two mailboxes for 30 s (IMAP,
POP3, SMTP, a quarter over TLS), then the end-of-run accounting, SIGTERM under load and the restart
check. Any violation fails the test; its summary (counts per kind, first examples with a
transcript tail) is the failure message.

The tester starts its own server (the same TernServer as the other integration tests)
and bounds every wait (--io-timeout per reply, the SIGTERM limit); the subprocess
timeout below is a last resort, not an assertion on speed.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, is_sanitized, tern_bin

pytestmark = pytest.mark.threads  # loop/workpool hand-offs: the TSan stage runs these

STRESS = REPO / "tests" / "stress" / "stress.py"
SECONDS = 30


def run_stress(*extra, seconds=SECONDS):
    """Run the stress tester on tern_bin() for seconds; (exit status, its output)."""
    cmd = [sys.executable, str(STRESS), "--binary", str(tern_bin()), "--seconds", str(seconds),
           "--seed", "1", "--examples", "2", "--io-timeout", "20"] + list(extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(Path(REPO)))
    try:
        out, err = proc.communicate(timeout=seconds + 240)
    except subprocess.TimeoutExpired:
        proc.terminate()                  # the tester stops its server on SIGTERM
        out, err = proc.communicate(timeout=30)
        err += f"\n(stress tester stopped after {seconds + 240} s)"
    return proc.returncode, out + ("\n--- stderr ---\n" + err if err else "")


def test_ten_clients_on_shared_mailboxes():
    """10 clients share one user: INBOX (three quarters of the SELECTs, all deliveries)
    and a second mailbox, so that MOVE runs too."""
    rc, out = run_stress("--clients", "10", "--users", "1", "--mailboxes", "2")
    print(out[-4000:])
    assert rc == 0, f"stress tester exit status {rc} (sanitized={is_sanitized()}):\n" \
                    f"{out[:30000]}"
