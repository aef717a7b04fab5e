"""
test_imap_quota.py - QUOTA (RFC 9208) with Python's imaplib and curl: GETQUOTAROOT and
GETQUOTA report the quota set with `tern user quota` (STORAGE in 1024-octet units, root
"User quota"), a user without a limit has no quota root, SETQUOTA is refused, and APPEND
and COPY that would pass the limit get NO [OVERQUOTA] and store nothing, while MOVE (same
user) still works. A quota changed by the admin applies to an open session at once.
"""

import re
import subprocess

from test_imap_lib import fresh_user, imaplib_login, sample_message
from tern_util import send_mail


def quota_of(c, mailbox="INBOX"):
    typ, data = c.getquotaroot(mailbox)
    assert typ == "OK", data
    roots, quotas = data
    return roots, quotas


def test_quota_reported_and_enforced(tern):
    user, pw = fresh_user(tern, "quota", [sample_message(1)])
    c = imaplib_login(tern, user, pw)
    typ, caps = c.capability()
    assert b"QUOTA" in caps[0].split() and b"QUOTA=RES-STORAGE" in caps[0].split()

    # no limit: no quota root
    roots, quotas = quota_of(c)
    assert roots == [b'INBOX'] and quotas == [None], (roots, quotas)
    typ, data = c.getquota('"User quota"')
    assert typ == "NO"

    # 20 KiB; the admin's change applies to this open session at once
    tern.cli("user", "quota", user, str(20 * 1024))
    roots, quotas = quota_of(c)
    assert roots == [b'INBOX "User quota"'], roots
    m = re.fullmatch(rb'"User quota" \(STORAGE (\d+) 20\)', quotas[0])
    assert m, quotas
    used_kib = int(m.group(1))
    assert 1 <= used_kib <= 2  # one small message, rounded up to whole KiB
    typ, data = c.getquota('"User quota"')
    assert typ == "OK" and data[0] == quotas[0]
    typ, data = c._simple_command("SETQUOTA", '"User quota"', "(STORAGE 99999)")
    assert typ == "NO" and b"[NOPERM]" in data[-1]

    # an APPEND that fits, then one that does not
    medium = "Subject: medium\r\n\r\n" + "m" * 1500 + "\r\n"
    typ, data = c.append("INBOX", None, None, medium.encode())
    assert typ == "OK", data
    big = ("Subject: big\r\n\r\n" + "x" * 78 + "\r\n") * 400  # ~32 KB
    typ, data = c.append("INBOX", None, None, big.encode())
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    c.select("INBOX")
    typ, data = c.search(None, "ALL")
    assert data[0].split() == [b"1", b"2"]

    # a limit just above the usage (less than 1 KiB of room): COPY of both messages
    # (> 1.5 KB) is refused and copies nothing; MOVE does not add usage and works
    _, quotas = quota_of(c)
    used_kib = int(re.search(rb"STORAGE (\d+)", quotas[0]).group(1))
    tern.cli("user", "quota", user, str(used_kib * 1024))
    typ, data = c.copy("1:2", "Archive")
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    typ, data = c.status("Archive", "(MESSAGES)")
    assert b"MESSAGES 0" in data[0]
    typ, data = c._simple_command("MOVE", "1", "Archive")
    assert typ == "OK", data
    typ, data = c.status("Archive", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0]
    c.logout()


def test_quota_with_curl(tern):
    user, pw = fresh_user(tern, "cquota", [sample_message(1)])
    tern.cli("user", "quota", user, "1M")
    out = subprocess.run(
        ["curl", "-s", "--max-time", "20", "-u", f"{user}:{pw}",
         f"imap://127.0.0.1:{tern.ports['imap']}/", "-X", "GETQUOTAROOT INBOX"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert '* QUOTAROOT INBOX "User quota"' in out.stdout
    assert re.search(r'\* QUOTA "User quota" \(STORAGE \d+ 1024\)', out.stdout), out.stdout


def test_smtp_delivery_counts_toward_imap_quota(tern):
    user, pw = fresh_user(tern, "squota")
    tern.cli("user", "quota", user, "1M")
    c = imaplib_login(tern, user, pw)
    _, before = quota_of(c)
    send_mail(tern, "someone@example.org", [user], "y" * 5000)
    _, after = quota_of(c)
    used = lambda q: int(re.search(rb"STORAGE (\d+)", q[0]).group(1))
    assert used(after) >= used(before) + 5
    c.logout()
