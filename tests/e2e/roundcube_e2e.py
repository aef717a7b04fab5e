#!/usr/bin/env python3
"""
roundcube_e2e.py - by hand (not in CI: it needs Debian's roundcube-core, roundcube-sqlite3,
php-cli, chromium, chromium-driver and python3-selenium, and takes about a minute): a real
webmail client on the real server. Starts tern (the integration fixtures, loopback ports) with
a user whose INBOX holds a few threads, serves Roundcube with `php -S` on loopback against
it, and drives headless Chromium through Selenium: log in, list folders, open a message,
sort by date, subject and size (Roundcube asks the server: SORT), thread view (THREAD),
move a message to a folder, delete one, search, flag one. Each step is checked in the page
and, for what changes mail, on the server over IMAP; Roundcube's IMAP log shows the SORT and
THREAD commands it sent. Screenshots go to tests/e2e/artifacts/ (or --out).

    /usr/bin/python3 tests/e2e/roundcube_e2e.py [--out DIR] [--keep]

Exit status 0 when every step passed; the summary line is "N passed, N failed".
"""

import argparse
import imaplib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
import conftest  # noqa: E402
from test_imap_lib import deliver_file, fresh_user  # noqa: E402

RC = Path("/usr/share/roundcube")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def messages():
    """Three threads and loose mail: subjects, dates and sizes that sort differently."""
    out = []
    base = "Sun, {d} Jan 2026 10:00:00 +0000"
    out.append(("<t1@x>", None, "Quarterly report", 3, "Alice <alice@example.org>", 2000))
    out.append(("<t2@x>", "<t1@x>", "Re: Quarterly report", 4, "Bob <bob@example.org>", 300))
    out.append(("<t3@x>", "<t2@x>", "Re: Quarterly report", 6, "Alice <alice@example.org>", 500))
    out.append(("<u1@x>", None, "Lunch on Friday", 1, "Carol <carol@example.org>", 100))
    out.append(("<u2@x>", "<u1@x>", "Re: Lunch on Friday", 2, "Dave <dave@example.org>", 4000))
    out.append(("<v1@x>", None, "Zebra crossing", 5, "Erin <erin@example.org>", 50))
    msgs = []
    for mid, parent, subj, day, frm, size in out:
        hdr = [f"Message-ID: {mid}", f"Subject: {subj}", f"From: {frm}",
               "To: <rc@example.test>", f"Date: {base.format(d=day)}"]
        if parent:
            hdr += [f"In-Reply-To: {parent}", f"References: {parent}"]
        msgs.append("\n".join(hdr) + "\n\n" + ("word " * (size // 5)) + "\n")
    return msgs


def write_config(root, imap_port, smtp_port, db):
    cfg = root / "config"
    cfg.mkdir(parents=True)
    for f in ("defaults.inc.php", "mimetypes.php"):
        if (Path("/etc/roundcube") / f).exists():
            shutil.copy(Path("/etc/roundcube") / f, cfg / f)
    (root / "logs").mkdir()
    (root / "temp").mkdir()
    (cfg / "config.inc.php").write_text(f"""<?php
$config = [];
$config['db_dsnw'] = 'sqlite:///{db}?mode=0646';
$config['imap_host'] = '127.0.0.1:{imap_port}';
$config['smtp_host'] = '127.0.0.1:{smtp_port}';
$config['support_url'] = '';
$config['des_key'] = 'tern-e2e-0123456789abcdef';
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['log_dir'] = '{root}/logs/';
$config['temp_dir'] = '{root}/temp/';
$config['imap_debug'] = true;
$config['imap_cache'] = null;
$config['messages_cache'] = false;
$config['enable_installer'] = false;
$config['language'] = 'en_US';
$config['mail_pagesize'] = 50;
""")
    return cfg


class Steps:
    def __init__(self, out):
        self.out, self.passed, self.failed, self.n = out, 0, 0, 0

    def check(self, name, ok, detail=""):
        self.n += 1
        print(f"{'ok ' if ok else 'FAIL'} {self.n:2d} {name}{(': ' + detail) if detail else ''}",
              flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1

    def shot(self, driver, name):
        path = self.out / f"{self.n + 1:02d}-{name}.png"
        driver.save_screenshot(str(path))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "artifacts"))
    ap.add_argument("--keep", action="store_true", help="leave the temporary folders")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    srv = conftest._make_server()
    root = Path(tempfile.mkdtemp(prefix="rc-e2e-"))
    os.chmod(root, 0o777)
    php = driver = None
    st = Steps(out)
    try:
        user, pw = fresh_user(srv, "rc", messages=messages())
        db = root / "rc.db"
        subprocess.run(["sqlite3", str(db)], input=(RC / "SQL/sqlite.initial.sql").read_text(),
                       text=True, check=True)
        os.chmod(db, 0o666)
        cfg = write_config(root, srv.ports["imap"], srv.ports["submission"], db)
        port = free_port()
        env = dict(os.environ, ROUNDCUBE_CONFIG_DIR=str(cfg))
        php = subprocess.Popen(["php", "-S", f"127.0.0.1:{port}", "-t", str(RC)], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(root / "php.log", "wb"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for f in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                  f"--user-data-dir={root / 'chrome'}"):
            opts.add_argument(f)
        from selenium.webdriver.chrome.service import Service
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"),
                                  options=opts)
        wait = WebDriverWait(driver, 30)
        base = f"http://127.0.0.1:{port}/"

        def rows():
            """Subjects of the message list, in order."""
            time.sleep(0.3)
            wait.until(lambda d: d.execute_script(
                "return window.rcmail && !rcmail.busy && rcmail.message_list != null"))
            return [e.text for e in driver.find_elements(
                By.CSS_SELECTOR, "#messagelist tbody tr span.subject a") if e.text.strip()]

        def uid_of(subject):
            """The UID of the listed message with this subject (Roundcube's row data)."""
            return driver.execute_script(
                "var rows = rcmail.message_list.rows; for (var id in rows) {"
                "  var a = rows[id].obj && rows[id].obj.querySelector('span.subject a');"
                "  if (a && a.textContent.trim() == arguments[0]) return String(rows[id].uid);"
                "} return null;", subject)

        def imap():
            m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"])
            m.login(user, pw)
            return m

        # 1. log in
        driver.get(base)
        wait.until(EC.presence_of_element_located((By.ID, "rcmloginuser")))
        driver.find_element(By.ID, "rcmloginuser").send_keys(user)
        driver.find_element(By.ID, "rcmloginpwd").send_keys(pw)
        st.shot(driver, "login")
        driver.find_element(By.ID, "rcmloginsubmit").click()
        try:
            wait.until(EC.presence_of_element_located((By.ID, "messagelist")))
            ok = True
        except Exception:
            ok = False
        st.check("log in", ok, driver.title)
        st.shot(driver, "inbox")
        # 2. folders (the special-use ones Tern creates)
        folders = [e.get_attribute("rel") for e in
                   driver.find_elements(By.CSS_SELECTOR, "#mailboxlist li a")]
        st.check("list folders", all(f in folders for f in
                                     ("INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive")),
                 str(folders))
        # 3. sort by date, subject, size (server-side SORT)
        driver.execute_script("rcmail.set_list_options(null, 'date', 'ASC', 0)")
        by_date = rows()
        st.check("sort by date", by_date[:1] == ["Lunch on Friday"] and by_date[-1] ==
                 "Re: Quarterly report", str(by_date))
        st.shot(driver, "sort-date")
        driver.execute_script("rcmail.set_list_options(null, 'subject', 'ASC', 0)")
        by_subject = rows()
        st.check("sort by subject", by_subject[0].endswith("Lunch on Friday") and
                 by_subject[-1] == "Zebra crossing", str(by_subject))
        st.shot(driver, "sort-subject")
        driver.execute_script("rcmail.set_list_options(null, 'size', 'DESC', 0)")
        by_size = rows()
        st.check("sort by size", by_size[0] == "Re: Lunch on Friday" and
                 by_size[-1] == "Zebra crossing", str(by_size))
        st.shot(driver, "sort-size")
        # 4. thread view (THREAD)
        driver.execute_script("rcmail.set_list_options(null, 'date', 'ASC', 1)")
        rows()
        threads = driver.execute_script(
            "var n = 0, rows = rcmail.message_list.rows; for (var id in rows) "
            "  if (rows[id].has_children && !rows[id].parent_uid) n++; return n;")
        st.check("thread view", threads == 2, f"{threads} thread roots with replies")
        driver.execute_script("rcmail.command('expand-all')")
        time.sleep(0.5)
        st.shot(driver, "threads")
        driver.execute_script("rcmail.set_list_options(null, 'date', 'ASC', 0)")
        rows()
        # 5. open a message
        uid = uid_of("Zebra crossing")
        driver.get(base + f"?_task=mail&_action=show&_uid={uid}&_mbox=INBOX")
        wait.until(EC.presence_of_element_located((By.ID, "messagebody")))
        body = driver.find_element(By.ID, "messagebody").text
        st.check("open a message", "word word" in body,
                 driver.find_element(By.CSS_SELECTOR, "h2.subject").text)
        st.shot(driver, "message")
        driver.get(base + "?_task=mail&_mbox=INBOX")
        rows()
        # 6. flag one
        driver.execute_script(f"rcmail.message_list.select('{uid}'); rcmail.command('mark', 'flagged')")
        time.sleep(1)
        m = imap()
        m.select("INBOX")
        flagged = m.uid("SEARCH", None, "FLAGGED")[1][0].split()
        st.check("flag a message", flagged == [uid.encode()], str(flagged))
        st.shot(driver, "flagged")
        # 7. move to a folder
        lunch_uid = uid_of("Lunch on Friday")
        driver.execute_script(f"rcmail.message_list.select('{lunch_uid}'); "
                              "rcmail.move_messages('Archive')")
        time.sleep(1.5)
        m.select("Archive")
        archived = m.search(None, 'SUBJECT "Lunch on Friday"')[1][0].split()
        m.select("INBOX")
        left = m.search(None, 'SUBJECT "Lunch on Friday" NOT SUBJECT "Re:"')[1][0].split()
        st.check("move to a folder", len(archived) == 1 and not left, f"{archived} {left}")
        st.shot(driver, "moved")
        # 8. delete one (to Trash)
        rows()
        zuid = uid_of("Zebra crossing")
        driver.execute_script(f"rcmail.message_list.select('{zuid}'); rcmail.command('delete')")
        time.sleep(1.5)
        m.select("Trash")
        trashed = m.search(None, 'SUBJECT "Zebra"')[1][0].split()
        st.check("delete a message", len(trashed) == 1, str(trashed))
        st.shot(driver, "deleted")
        # 9. search
        rows()
        box = driver.execute_script("return rcmail.gui_objects.qsearchbox")
        box.send_keys("Quarterly" + Keys.ENTER)
        time.sleep(1)
        found = rows()
        st.check("search", len(found) == 3 and all("Quarterly" in s for s in found), str(found))
        st.shot(driver, "search")
        m.logout()
        # the IMAP commands Roundcube chose (its imap_debug log)
        log = (root / "logs" / "imap.log").read_text(errors="replace") \
            if (root / "logs" / "imap.log").exists() else ""
        st.check("Roundcube used server-side SORT", re.search(r"UID SORT \(", log) is not None)
        st.check("Roundcube used server-side THREAD", re.search(r"UID THREAD ", log) is not None)
        # the commands that show it (never the LOGIN line: it holds the password)
        (out / "imap-sort-thread.log").write_text(
            "\n".join(ln for ln in log.splitlines() if re.search(r"C: \S+ UID (SORT|THREAD)", ln)))
    except Exception as e:  # a step that could not even run counts as failed
        st.check("unexpected error", False, repr(e))
        if driver:
            st.shot(driver, "error")
    finally:
        if driver:
            driver.quit()
        if php:
            php.terminate()
            php.wait(timeout=10)
        srv.stop()
        srv.cleanup()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{st.passed} passed, {st.failed} failed")
    return 0 if st.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
