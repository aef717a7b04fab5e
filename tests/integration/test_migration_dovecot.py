"""
test_migration_dovecot.py - issue 14: a move from Dovecot that no client notices.

A real Dovecot (Debian's dovecot-imapd/-pop3d, started here on loopback with its own
config and mail location, dovecot_util.py) serves a mailbox with subfolders, keywords,
expunged UIDs and subscriptions; mbsync and fetchmail (keep, UIDL) sync it; Dovecot stops;
the user is added to Tern with the passwd-file's SHA512-CRYPT hash as Dovecot stored it and
the Maildir is copied into its home; then over IMAP and POP3 Tern must show the
same UIDVALIDITY, UIDNEXT, UIDs, flags and keywords, subscriptions and UIDLs, mbsync must
re-sync transferring 0 messages and fetchmail must fetch 0 old messages (and each exactly
the one message delivered after the move, which proves the checks can see a transfer).
"""

import imaplib
import os
import poplib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dovecot_util import HAS_DOVECOT, Dovecot
from tern_util import IO_TIMEOUT, wait_for
from test_pop3_lib import deliver_file

MBSYNC = shutil.which("mbsync")
FETCHMAIL = shutil.which("fetchmail")

pytestmark = [
    pytest.mark.skipif(not HAS_DOVECOT, reason="dovecot-imapd/dovecot-pop3d not installed"),
    pytest.mark.skipif(MBSYNC is None or FETCHMAIL is None, reason="isync/fetchmail missing"),
    pytest.mark.skipif(os.geteuid() != 0, reason="Dovecot needs root to start its services"),
]

USER, PASSWORD = "mig1@example.test", "migpw"


def message(n, folder, user=USER):
    return (f"From: sender{n}@example.org\r\nTo: {user}\r\nSubject: {folder} {n}\r\n"
            f"Message-ID: <{folder.replace('/', '.')}.{n}@migration.test>\r\n"
            f"Date: Sat, 05 Dec 2026 10:{n:02d}:00 +0000\r\n\r\nbody {n} of {folder}\r\n")


def imap(port, user=USER, password=PASSWORD):
    m = imaplib.IMAP4("127.0.0.1", port, timeout=IO_TIMEOUT)
    m.login(user, password)
    return m


def populate(port, user=USER, password=PASSWORD):
    """Folders, messages with flags and keywords, expunged UIDs, subscriptions."""
    m = imap(port, user, password)
    layout = {"INBOX": 12, "Work": 4, "Lists/dovecot": 3, "Sent": 2}
    for folder, n in layout.items():
        if folder != "INBOX":
            assert m.create(folder)[0] == "OK"
        for i in range(1, n + 1):
            flags = "(\\Seen)" if i % 3 == 0 else "()"
            typ, _ = m.append(folder, flags, None, message(i, folder, user).encode())
            assert typ == "OK"
    m.select("INBOX")
    # keywords: Dovecot keeps them as letters a-z in the file names + dovecot-keywords
    assert m.uid("STORE", "2,5", "+FLAGS", "($Label1 project)")[0] == "OK"
    assert m.uid("STORE", "7", "+FLAGS", "(\\Flagged $Forwarded)")[0] == "OK"
    assert m.uid("STORE", "4,12", "+FLAGS", "(\\Deleted)")[0] == "OK"
    m.expunge()  # UIDs 4 and 12 are gone: 1-3, 5-11 remain, UIDNEXT stays 13
    m.select("Work")
    assert m.uid("STORE", "1", "+FLAGS", "(\\Answered urgent)")[0] == "OK"
    m.close()
    for folder in ("INBOX", "Work", "Lists/dovecot"):
        assert m.subscribe(folder)[0] == "OK"
    m.logout()


def snapshot(port, user=USER, password=PASSWORD):
    """What an IMAP client caches: per mailbox UIDVALIDITY, UIDNEXT, and per UID its
    flags and Message-ID; plus the subscriptions."""
    m = imap(port, user, password)
    boxes = {}
    for folder in ("INBOX", "Work", "Lists/dovecot", "Sent"):
        typ, st = m.status(f'"{folder}"', "(MESSAGES UIDNEXT UIDVALIDITY)")
        assert typ == "OK", st
        status = dict(re.findall(r"(MESSAGES|UIDNEXT|UIDVALIDITY) (\d+)", st[0].decode()))
        m.select(f'"{folder}"', readonly=True)
        typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        msgs = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            head = item[0].decode()
            uid = int(re.search(r"UID (\d+)", head).group(1))
            flags = set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()) - {"\\Recent"}
            msgs[uid] = (frozenset(flags), item[1].decode().strip())
        boxes[folder] = (status, msgs)
    typ, lsub = m.lsub('""', "*")
    names = (re.search(r'(?:"([^"]*)"|(\S+))$', x.decode()) for x in lsub if x)
    subs = sorted(n.group(1) or n.group(2) for n in names)
    m.logout()
    return boxes, subs


def pop3_uidls(port, user=USER, password=PASSWORD):
    p = poplib.POP3("127.0.0.1", port, timeout=IO_TIMEOUT)
    p.user(user)
    p.pass_(password)
    uidls = [x.decode().split()[1] for x in p.uidl()[1]]
    p.quit()
    return uidls


def mbsync(tmp_path, port, user=USER, password=PASSWORD):
    """Sync every folder into tmp_path/local (state kept there across servers)."""
    local = tmp_path / "local"
    local.mkdir(exist_ok=True)
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""IMAPAccount server
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account server

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel c
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    r = subprocess.run([MBSYNC, "-c", str(rc), "-V", "c"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def local_files(tmp_path):
    local = tmp_path / "local"
    return sorted(str(p.relative_to(local)).split(",")[0]
                  for p in local.rglob("*") if p.is_file() and p.parent.name in ("cur", "new"))


def fetchmail(tmp_path, port):
    """fetchmail --keep with UIDL, its .fetchids kept in tmp_path/fm across servers; returns
    how many messages it handed to the MDA this run."""
    home = tmp_path / "fm"
    home.mkdir(exist_ok=True)
    out = home / "mbox"
    out.write_text("")
    mda = home / "mda.sh"
    mda.write_text(f"#!/bin/sh\ncat >> {out}\necho '--END--' >> {out}\n")
    mda.chmod(0o755)
    rc = home / "fetchmailrc"
    rc.write_text(f"set no syslog\n"
                  f"poll 127.0.0.1 service {port} protocol pop3 uidl timeout 60\n"
                  f"  user \"{USER}\" password \"{PASSWORD}\" is root here\n"
                  f"  keep sslproto '' mda \"{mda}\"\n")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    # the lock file of the previous run (one per server here) is removed first: fetchmail
    # refuses to run when the pid in it is alive, and a recycled pid can be
    pidfile = home / "fetchmail.pid"
    pidfile.unlink(missing_ok=True)
    r = subprocess.run([FETCHMAIL, "-f", str(rc), "-v", "--nodetach", "--nosyslog",
                        "--pidfile", str(pidfile)],
                       capture_output=True, text=True, timeout=120, env=env)
    # exit 1 = "no new mail", 0 = mail fetched
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return out.read_text().count("--END--"), r.stdout + r.stderr


def move_maildir(src, tern):
    """What the admin does: copy the Dovecot Maildir into the Tern user's home."""
    dest = tern.maildir(USER)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest, symlinks=False)
    if tern.run_user:
        import pwd
        pw = pwd.getpwnam(tern.run_user)
        for p in [dest.parent.parent, dest.parent, *dest.parent.rglob("*")]:
            os.lchown(p, pw.pw_uid, pw.pw_gid)


def test_move_from_dovecot_no_client_notices(tern, tmp_path):
    dc = Dovecot(mail_user=tern.run_user or "nobody")
    request_cleanup = dc.cleanup
    try:
        dc.add_user(USER, PASSWORD)
        dc.start()
        populate(dc.ports["imap"])
        before, subs_before = snapshot(dc.ports["imap"])
        uidls_before = pop3_uidls(dc.ports["pop3"])
        out = mbsync(tmp_path, dc.ports["imap"])
        n_fetched, fm_out = fetchmail(tmp_path, dc.ports["pop3"])
        dc.stop()
        _check_dovecot_side(dc, before, subs_before, tmp_path, out, n_fetched, fm_out)
        _move_and_check(tern, dc, before, subs_before, uidls_before, tmp_path)
    finally:
        request_cleanup()


def _check_dovecot_side(dc, before, subs_before, tmp_path, out, n_fetched, fm_out):
    assert n_fetched == 10, fm_out  # INBOX: 12 appended, 2 expunged
    synced = local_files(tmp_path)
    assert len(synced) == 10 + 4 + 3 + 2, out
    # the uidlist really carries what we check below: holes in the UIDs, keyword letters
    assert sorted(before["INBOX"][1]) == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    assert before["INBOX"][0]["UIDNEXT"] == "13"
    assert (dc.maildir(USER) / "dovecot-keywords").exists()
    assert "Lists/dovecot" in subs_before and "Sent" not in subs_before


def _move_and_check(tern, dc, before, subs_before, uidls_before, tmp_path):
    synced = local_files(tmp_path)
    # the user moves with Dovecot's stored hash, not a new password: every client below
    # logs in with the old one
    tern.cli("user", "add", USER, "--hash", dc.stored_hash(USER))
    tern.users[USER] = PASSWORD
    move_maildir(dc.maildir(USER), tern)
    # a fresh UIDVALIDITY would be the time now: let it differ from Dovecot's values
    newest = max(int(st["UIDVALIDITY"]) for st, _ in before.values())
    wait_for(lambda: int(time.time()) > newest, timeout=5, what="the clock to pass Dovecot's")

    after, subs_after = snapshot(tern.ports["imap"])
    for folder in before:
        assert after[folder][0] == before[folder][0], folder  # UIDVALIDITY, UIDNEXT, MESSAGES
        assert after[folder][1] == before[folder][1], folder  # UIDs -> flags, keywords, msg
    assert subs_after == subs_before
    assert pop3_uidls(tern.ports["pop3"]) == uidls_before
    assert all(re.fullmatch(r"[0-9a-f]{16}", u) for u in uidls_before)  # Dovecot's X: lower

    # mbsync re-syncs against Tern and transfers nothing
    out = mbsync(tmp_path, tern.ports["imap"])
    assert "changed" not in out and "Creating" not in out, out  # UIDVALIDITY, new folders
    assert local_files(tmp_path) == synced, out
    # fetchmail (keep, UIDL) fetches no old message
    n_fetched, fm_out = fetchmail(tmp_path, tern.ports["pop3"])
    assert n_fetched == 0, fm_out

    # one new message after the move: each client fetches exactly that one
    deliver_file(tern, USER, message(99, "INBOX"))
    n_fetched, fm_out = fetchmail(tmp_path, tern.ports["pop3"])
    assert n_fetched == 1, fm_out
    out = mbsync(tmp_path, tern.ports["imap"])
    assert len(local_files(tmp_path)) == len(synced) + 1, out
    m = imap(tern.ports["imap"])
    m.select("INBOX", readonly=True)
    typ, data = m.uid("SEARCH", "HEADER", "Message-ID", "INBOX.99@migration.test")
    assert data[0].split() == [b"13"]  # after Dovecot's UIDNEXT, not in a hole
    m.logout()
