"""
test_directory_sql.py - Tern on a postfixadmin database (issue 14), against REAL servers:
a private MariaDB and a private PostgreSQL (tests/integration/sqldb_util.py), each loaded
with the tables postfixadmin 3.3 creates and rows as postfixadmin writes them.

Every test runs once per database (module fixture parametrised over the two drivers; one
database server per driver for the whole module). Checked with real clients (smtplib,
imaplib, poplib):
  - logins over SMTP AUTH, POP3 and IMAP with each password form postfixadmin writes:
    md5crypt ($1$, its default), php_crypt SHA512 ($6$), DES crypt ("system"),
    {SHA512-CRYPT.B64} ("sha512.b64"), and doveadm's {SHA512-CRYPT}, {BLF-CRYPT},
    {PLAIN-MD5}, {SSHA256}, {ARGON2ID} ("dovecot:X"); bare md5 hex ("md5") with
    directory.default_pass_scheme = PLAIN-MD5;
  - inactive mailboxes and domains are refused, backup-MX domains are not ours;
  - aliases (goto lists), catch-all, alias domains for delivery and for login;
  - quota from mailbox.quota;
  - `tern domain/user/alias` write rows postfixadmin can read (checked with doveadm);
  - custom Dovecot-style queries, read-only for the CLI, injection attempts harmless;
  - TLS to the database (a user the server accepts over TLS only);
  - the database stopped mid-run: temporary errors on every protocol (451 4.3.0,
    454 4.7.0, NO [UNAVAILABLE], -ERR [SYS/TEMP]), one log line for the outage, and
    recovery when it is back; a database that hangs (SIGSTOP) costs the timeouts, not a
    hang; a wrong database password is a temporary failure, logged at start.
Skipped only when a database's server binaries are not installed (CI installs them).
"""

import functools
import hashlib
import imaplib
import os
import poplib
import re
import smtplib
import subprocess

import pytest

from conftest import TernServer, _finish
from sqldb_util import TERN_DB_PASSWORD, TERN_DB_USER, TLS_DB_USER, module_server
from tern_util import (IO_TIMEOUT, Client, b64, make_message, maildir_messages, send_mail,
                       wait_for)

DB = "postfix"
PW = "Secret-pw-1"


# ---- password forms postfixadmin writes (made by other programs than Tern) -----------

def _out(*cmd, input=None):
    return subprocess.run(cmd, input=input, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def doveadm(scheme):
    """What postfixadmin's $CONF['encrypt'] = 'dovecot:SCHEME' stores (it runs doveadm pw)."""
    return _out("doveadm", "pw", "-s", scheme, "-p", PW)


@functools.lru_cache(maxsize=1)
def password_forms():
    """username local part -> stored password column value (made once per run)."""
    return {
        "alice": _out("openssl", "passwd", "-1", PW),  # md5crypt, postfixadmin's default
        "sha512crypt": _out("openssl", "passwd", "-6", PW),  # php_crypt:SHA512
        "descrypt": _out("perl", "-e", f"print crypt('{PW}', 'ab')"),  # 'system'
        "sha512b64": doveadm("SHA512-CRYPT.B64"),  # 'sha512.b64'
        "dvsha512": doveadm("SHA512-CRYPT"),
        "blf": doveadm("BLF-CRYPT"),
        "plainmd5": doveadm("PLAIN-MD5"),
        "ssha256": doveadm("SSHA256"),
        "argon2id": doveadm("ARGON2ID"),
    }


def md5_hex(pw):  # postfixadmin's 'md5' setting: a bare hex digest
    return hashlib.md5(pw.encode()).hexdigest()


# ---- the database ----------------------------------------------------------------------

def q(v):
    return "'" + str(v).replace("'", "''") + "'"


def load_rows(db, forms):
    """Domains, mailboxes, aliases as postfixadmin writes them (every mailbox has an alias
    row delivering to itself)."""
    t, f = "TRUE", "FALSE"
    sql = []

    def domain(name, active=t, backupmx=f):
        sql.append("INSERT INTO domain (domain, description, aliases, mailboxes, maxquota, "
                   "quota, transport, backupmx, active) VALUES "
                   f"({q(name)}, '', 0, 0, 0, 0, 'virtual', {backupmx}, {active});")

    def mailbox(address, password, quota=0, active=t):
        local, dom = address.split("@")
        sql.append("INSERT INTO mailbox (username, password, name, maildir, quota, local_part, "
                   f"domain, active) VALUES ({q(address)}, {q(password)}, '', "
                   f"{q(dom + '/' + local + '/')}, {quota}, {q(local)}, {q(dom)}, {active});")
        alias(address, address, active)

    def alias(address, goto, active=t):
        dom = address.split("@")[1]
        sql.append(f"INSERT INTO alias (address, goto, domain, active) VALUES ({q(address)}, "
                   f"{q(goto)}, {q(dom)}, {active});")

    for d in ("example.org", "aliasdom.example", "catchall.example"):
        domain(d)
    domain("inactive.example", active=f)
    domain("backup.example", backupmx=t)
    sql.append("INSERT INTO alias_domain (alias_domain, target_domain, active) "
               "VALUES ('aliasdom.example', 'example.org', TRUE);")
    for local, stored in forms.items():
        mailbox(f"{local}@example.org", stored)
    mailbox("md5hex@example.org", md5_hex(PW))
    mailbox("bob@example.org", forms["alice"], active=f)
    mailbox("carol@inactive.example", forms["alice"])
    mailbox("dave@example.org", forms["alice"], quota=2000)
    alias("info@example.org", "alice@example.org,dave@example.org")
    alias("@catchall.example", "alice@example.org")
    alias("gone@example.org", "alice@example.org", active=f)
    db.sql(DB, "\n".join(sql))


@pytest.fixture(scope="module", params=["mysql", "postgresql"])
def sqldb(request):
    def load(db):
        db.load_postfixadmin(DB)
        load_rows(db, password_forms())

    db = module_server(request.param, load)
    yield db
    db.cleanup()


def start_tern(overrides):
    # the tests fail logins on purpose, many times, from one address
    srv = TernServer(dict({"auth.max_failures": 0}, **overrides), name="sqldir")
    try:
        srv.start()
    except BaseException:
        srv.cleanup()
        raise
    return srv


@pytest.fixture(scope="module")
def tern(sqldb):
    srv = start_tern(sqldb.tern_keys(DB))
    yield srv
    _finish(srv)


@pytest.fixture
def extra_tern():
    made = []

    def factory(overrides):
        srv = start_tern(overrides)
        made.append(srv)
        return srv

    yield factory
    for srv in made:
        _finish(srv)


# ---- clients ----------------------------------------------------------------------------

def imap_login(tern, user, password):
    """(ok, text) of an IMAP LOGIN."""
    c = imaplib.IMAP4(tern.host, tern.ports["imap"], timeout=IO_TIMEOUT)
    try:
        c.login(user, password)
        c.logout()
        return True, "OK"
    except imaplib.IMAP4.error as e:
        return False, str(e)
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


def pop3_login(tern, user, password):
    p = poplib.POP3(tern.host, tern.ports["pop3"], timeout=IO_TIMEOUT)
    try:
        p.user(user)
        p.pass_(password)
        n = p.stat()[0]
        p.quit()
        return True, n
    except poplib.error_proto as e:
        return False, e.args[0].decode(errors="replace")
    finally:
        p.close()


def smtp_auth(tern, user, password):
    """(code, text) of AUTH PLAIN on the submission port (plaintext allowed on loopback)."""
    with smtplib.SMTP(tern.host, tern.ports["submission"], timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        code, text = s.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{password}"))
        return code, text.decode(errors="replace")


def rcpt(tern, to, mail_from="sender@remote.example"):
    with smtplib.SMTP(tern.host, tern.ports["smtp"], timeout=IO_TIMEOUT) as s:
        s.ehlo("client.test")
        s.mail(mail_from)
        code, text = s.rcpt(to)
        return code, text.decode(errors="replace")


# ---- settings (no database needed) -------------------------------------------------------

def test_bad_directory_settings_stop_start_up(tmp_path):
    """`tern config check` and `tern serve` refuse bad directory.* values with file:line
    and the reason, before anything binds."""
    from conftest import tern_bin
    cases = [
        ("directory.driver = mysql\n", "tern.conf:1: directory.dbname: must be set"),
        ("directory.driver = postgresql\ndirectory.dbname = p\ndirectory.schema = custom\n"
         "directory.password_query = SELECT password FROM m WHERE u = '%x'\n",
         "tern.conf:4: directory.password_query: at offset 34: unknown variable %x"),
        ("directory.driver = mysql\ndirectory.dbname = p\ndirectory.pool_size = 0\n",
         "tern.conf:3: directory.pool_size: must be 1..64"),
        ("directory.driver = mysql\ndirectory.dbname = p\ndirectory.default_pass_scheme = X\n",
         "tern.conf:3: directory.default_pass_scheme: unknown password scheme 'X'"),
        ("directory.tls = maybe\n", "tern.conf:1: bad value 'maybe' for directory.tls (use no, "
                                     "yes or verify)"),
    ]
    for text, want in cases:
        conf = tmp_path / "tern.conf"
        conf.write_text(text + f"data_dir = {tmp_path}/data\n")  # case lines keep their numbers
        want = want.replace("tern.conf:", f"{conf}:")
        for args in (["config", "check"], ["serve", "-f"]):
            cp = subprocess.run([str(tern_bin()), "-c", str(conf)] + args, capture_output=True,
                                text=True, timeout=30)
            assert cp.returncode == 1, (args, text, cp.stdout, cp.stderr)
            assert want in cp.stderr, (args, want, cp.stderr)


# ---- logins ----------------------------------------------------------------------------

@pytest.mark.parametrize("local", ["alice", "sha512crypt", "descrypt", "sha512b64", "dvsha512",
                                   "blf", "plainmd5", "ssha256", "argon2id"])
def test_login_with_each_password_form(tern, local):
    user = f"{local}@example.org"
    ok, text = imap_login(tern, user, PW)
    assert ok, (user, text)
    ok, text = imap_login(tern, user, "x" + PW)  # DES crypt reads only 8 characters
    assert not ok and "AUTHENTICATIONFAILED" in text, text


def test_smtp_auth_pop3_imap(tern):
    assert smtp_auth(tern, "alice@example.org", PW)[0] == 235
    code, text = smtp_auth(tern, "alice@example.org", "wrong")
    assert code == 535, (code, text)
    assert pop3_login(tern, "alice@example.org", PW)[0]
    ok, text = pop3_login(tern, "alice@example.org", "wrong")
    assert not ok and "[AUTH]" in text, text
    assert imap_login(tern, "alice@example.org", PW)[0]
    # postfixadmin's maildir "example.org/alice/" under the mail root is Tern's layout
    tern.wait_log(r"Login: user=<alice@example\.org>, method=PLAIN")


def test_inactive_mailbox_and_domain_refused(tern):
    ok, text = imap_login(tern, "bob@example.org", PW)
    assert not ok and "AUTHENTICATIONFAILED" in text, text
    assert smtp_auth(tern, "bob@example.org", PW)[0] == 535
    assert rcpt(tern, "bob@example.org")[0] == 550
    ok, text = imap_login(tern, "carol@inactive.example", PW)
    assert not ok and "AUTHENTICATIONFAILED" in text, text
    # an inactive domain is not ours: unauthenticated mail for it is relaying
    code, text = rcpt(tern, "carol@inactive.example")
    assert code == 554 and "Relay access denied" in text, (code, text)
    # a backup-MX domain neither (postfixadmin's backupmx flag)
    assert rcpt(tern, "x@backup.example")[0] == 554
    # an inactive alias does not deliver
    assert rcpt(tern, "gone@example.org")[0] == 550
    assert rcpt(tern, "nobody@example.org")[0] == 550


def test_aliases_catchall_and_alias_domain(tern):
    alice, dave = tern.maildir("alice@example.org"), tern.maildir("dave@example.org")
    before_a, before_d = len(maildir_messages(alice)), len(maildir_messages(dave))
    code, _ = send_mail(tern, "sender@remote.example", "info@example.org", "goto list")
    assert code == 250
    wait_for(lambda: len(maildir_messages(alice)) == before_a + 1, what="info -> alice")
    wait_for(lambda: len(maildir_messages(dave)) == before_d + 1, what="info -> dave")
    # the alias domain: alice@aliasdom.example is alice@example.org
    assert send_mail(tern, "sender@remote.example", "alice@aliasdom.example", "via alias dom")[0] == 250
    wait_for(lambda: len(maildir_messages(alice)) == before_a + 2, what="alias domain")
    assert rcpt(tern, "nobody@aliasdom.example")[0] == 550
    # catch-all of catchall.example
    assert send_mail(tern, "sender@remote.example", "anything@catchall.example", "catch")[0] == 250
    wait_for(lambda: len(maildir_messages(alice)) == before_a + 3, what="catch-all")
    # login through the alias domain is the user of the target domain
    since = tern.log_offset()
    ok, text = imap_login(tern, "alice@aliasdom.example", PW)
    assert ok, text
    tern.wait_log(r"Login: user=<alice@example\.org>", since=since)


def test_quota_from_mailbox_row(tern, sqldb):
    # dave: mailbox.quota = 2000 bytes
    assert send_mail(tern, "sender@remote.example", "dave@example.org", "x" * 900)[0] == 250
    code, text = send_mail(tern, "sender@remote.example", "dave@example.org", "x" * 3000)
    assert code == 552, (code, text)  # over quota: refused at the end of DATA
    # a quota lowered in the database applies at once: full at RCPT
    sqldb.sql(DB, "UPDATE mailbox SET quota = 100 WHERE username = 'dave@example.org'")
    assert rcpt(tern, "dave@example.org")[0] == 452
    sqldb.sql(DB, "UPDATE mailbox SET quota = 2000 WHERE username = 'dave@example.org'")
    c = imaplib.IMAP4(tern.host, tern.ports["imap"], timeout=IO_TIMEOUT)
    c.login("dave@example.org", PW)
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK" and re.search(rb"STORAGE \d+ 1\)", data[1][0]), data  # 2000 B = 1 KiB
    c.logout()
    # alice has quota 0: unlimited (postfixadmin's meaning), no quota root
    c = imaplib.IMAP4(tern.host, tern.ports["imap"], timeout=IO_TIMEOUT)
    c.login("alice@example.org", PW)
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK" and data[1] == [None], data
    c.logout()


def test_pipelined_envelope(tern):
    """RFC 2920: MAIL, RCPTs and DATA in one write; each lookup is a workpool job with an
    SQL directory, and the replies still come back in order."""
    c = Client(tern.host, tern.ports["smtp"])
    try:
        c.read_until(r"^220 ")
        c.send("EHLO client.test")
        c.read_until(r"^250 ")
        c.send_raw(b"MAIL FROM:<sender@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
                   b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<x@catchall.example>\r\n"
                   b"RCPT TO:<carol@inactive.example>\r\nDATA\r\n")
        got = c.read_until(r"^354 ")
        codes = [line[:3] for line in got.splitlines()]
        assert codes == ["250", "250", "550", "250", "554", "354"], got
        c.send_raw(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        got = c.read_until(r"^221 ")
        assert got.startswith("250 2.0.0 Ok: queued as"), got
    finally:
        c.close()


# ---- administration ----------------------------------------------------------------

def test_cli_writes_rows_postfixadmin_reads(tern, sqldb):
    tern.cli("domain", "add", "new.example")
    tern.cli("user", "add", "erin@new.example", "--password-stdin", "--quota", "5M",
             input=PW + "\n")
    row = sqldb.sql(DB, "SELECT password, maildir, local_part, domain, quota FROM mailbox "
                        "WHERE username = 'erin@new.example'")
    stored, maildir, local, dom, quota = row[0]
    assert stored.startswith("$6$"), stored  # SHA512-CRYPT, bare: default_pass_scheme CRYPT
    assert (maildir, local, dom, int(quota)) == ("new.example/erin/", "erin", "new.example",
                                                  5 * 1024 * 1024)
    # another program (doveadm, as postfixadmin and Dovecot do) verifies what Tern wrote
    out = _out("doveadm", "pw", "-t", "{CRYPT}" + stored, "-p", PW)
    assert "(verified)" in out, out
    assert sqldb.sql(DB, "SELECT goto FROM alias WHERE address = 'erin@new.example'") == \
        [["erin@new.example"]]
    assert imap_login(tern, "erin@new.example", PW)[0]
    assert "erin@new.example" in tern.cli("user", "list", "new.example").stdout

    # aliases: one row per source, goto extended
    tern.cli("alias", "add", "team@new.example", "erin@new.example")
    tern.cli("alias", "add", "team@new.example", "alice@example.org")
    assert sqldb.sql(DB, "SELECT goto FROM alias WHERE address = 'team@new.example'") == \
        [["erin@new.example,alice@example.org"]]
    listing = tern.cli("alias", "list").stdout
    assert "team@new.example -> alice@example.org" in listing
    assert "erin@new.example -> erin@new.example" not in listing  # the mailbox's own row
    cp = tern.cli("alias", "del", "erin@new.example", "erin@new.example", check=False)
    assert cp.returncode == 1 and "is a mailbox" in cp.stderr

    # disable: mailbox and its alias row, as postfixadmin's edit does
    tern.cli("user", "disable", "erin@new.example")
    assert sqldb.sql(DB, "SELECT m.active, a.active FROM mailbox m JOIN alias a "
                         "ON a.address = m.username WHERE m.username = 'erin@new.example'") == \
        [[sqldb.false(), sqldb.false()]]
    assert not imap_login(tern, "erin@new.example", PW)[0]
    tern.cli("user", "enable", "erin@new.example")
    tern.cli("user", "passwd", "erin@new.example", "--password-stdin", input="Other-pw-2\n")
    assert imap_login(tern, "erin@new.example", "Other-pw-2")[0]

    cp = tern.cli("domain", "del", "new.example", check=False)
    assert cp.returncode == 1 and "still has 1 user" in cp.stderr
    tern.cli("user", "del", "erin@new.example")
    assert sqldb.sql(DB, "SELECT count(*) FROM alias WHERE address = 'erin@new.example'") == [["0"]]
    tern.cli("domain", "del", "new.example")
    assert sqldb.sql(DB, "SELECT count(*) FROM domain WHERE domain = 'new.example'") == [["0"]]
    assert sqldb.sql(DB, "SELECT count(*) FROM alias WHERE domain = 'new.example'") == [["0"]]


def test_bare_md5_hex_with_default_scheme(extra_tern, sqldb):
    keys = sqldb.tern_keys(DB)
    keys["directory.default_pass_scheme"] = "PLAIN-MD5"
    # through the Unix socket this time (MySQL: the socket file; PostgreSQL: its folder)
    keys.pop("directory.host")
    keys.pop("directory.port")
    if sqldb.driver == "mysql":
        keys["directory.socket"] = str(sqldb.socket)
        keys["directory.user"] = TERN_DB_USER
    else:
        keys["directory.socket"] = str(sqldb.root)
        keys["directory.port"] = sqldb.port
    srv = extra_tern(keys)
    assert imap_login(srv, "md5hex@example.org", PW)[0]
    assert not imap_login(srv, "md5hex@example.org", PW + "x")[0]
    # {SCHEME}-marked values still read as marked
    assert imap_login(srv, "plainmd5@example.org", PW)[0]


CUSTOM = {  # no directory.schema: queries given make it "custom"
    "directory.password_query":
        "SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'",
    "directory.user_query":
        "SELECT CONCAT('%d', '/', '%n') AS home, quota AS quota FROM mailbox "
        "WHERE username = '%u' AND active = '1'",
    "directory.iterate_query": "SELECT username AS user FROM mailbox",
    "directory.domain_query": "SELECT domain FROM domain WHERE domain = '%d' AND active = '1'",
    # as pasted from Postfix's mysql_virtual_alias_maps.cf: %s is the address looked up
    "directory.alias_query": "SELECT goto FROM alias WHERE address='%s' AND active = '1'",
    "directory.alias_domain_query":
        "SELECT target_domain FROM alias_domain WHERE alias_domain = '%d' AND active = '1'",
}


def test_custom_queries(extra_tern, sqldb):
    keys = sqldb.tern_keys(DB)
    keys.update(CUSTOM)
    # Dovecot's and MariaDB's names for the drivers are understood too
    keys["directory.driver"] = {"mysql": "mariadb", "postgresql": "pgsql"}[sqldb.driver]
    srv = extra_tern(keys)
    assert imap_login(srv, "alice@example.org", PW)[0]
    assert imap_login(srv, "alice@aliasdom.example", PW)[0]
    assert not imap_login(srv, "bob@example.org", PW)[0]  # the query leaves inactive out
    assert rcpt(srv, "info@example.org")[0] == 250
    assert rcpt(srv, "nobody@example.org")[0] == 550
    # names are bound parameters, never SQL: quotes and comment markers are just bytes
    for hostile in ("alice@example.org' OR '1'='1", "x' UNION SELECT 'a','b' -- @example.org",
                    "alice@example.org\\'"):
        code, text = smtp_auth(srv, hostile, PW)  # AUTH PLAIN carries any bytes
        assert code == 535, (hostile, code, text)
        ok, text = pop3_login(srv, hostile, PW)
        assert not ok and "[AUTH]" in text, (hostile, text)
    assert rcpt(srv, "a'--@example.org")[0] == 550
    assert "alice@example.org" in srv.cli("user", "list").stdout
    cp = srv.cli("user", "add", "new@example.org", "--password-stdin", input="x\n", check=False)
    assert cp.returncode == 1 and "read-only" in cp.stderr, cp.stderr
    assert srv.is_running()


def test_tls_to_the_database(extra_tern, sqldb):
    keys = sqldb.tern_keys(DB, user=TLS_DB_USER, password=TERN_DB_PASSWORD, tls="verify")
    srv = extra_tern(keys)
    assert imap_login(srv, "alice@example.org", PW)[0]  # that user is refused without TLS
    plain = dict(keys, **{"directory.tls": "no"})
    plain.pop("directory.tls_ca")
    srv2 = extra_tern(plain)
    ok, text = imap_login(srv2, "alice@example.org", PW)
    assert not ok and "UNAVAILABLE" in text, text  # a database refusal is never "bad password"


def test_start_with_a_wrong_database_password(extra_tern, sqldb):
    """Start-up goes on, the log says at once why the directory cannot answer, and
    clients get temporary failures (a refused database login is not a refused user)."""
    srv = extra_tern(dict(sqldb.tern_keys(DB), **{"directory.password": "not-the-password"}))
    srv.wait_log(r"directory: \S+ is unavailable: .*(denied|authentication failed)")
    ok, text = imap_login(srv, "alice@example.org", PW)
    assert not ok and "[UNAVAILABLE]" in text, text
    assert rcpt(srv, "alice@example.org")[0] == 451


# ---- the database goes away and comes back -------------------------------------------

def test_hung_database_times_out(extra_tern, sqldb):
    """A database that stops answering (SIGSTOP) costs a lookup at most the timeouts:
    the client gets a temporary failure, not a hang, and logins work once it answers."""
    keys = dict(sqldb.tern_keys(DB), **{"directory.query_timeout": 2,
                                          "directory.connect_timeout": 2})
    srv = extra_tern(keys)
    assert imap_login(srv, "alice@example.org", PW)[0]  # a pooled connection
    sqldb.freeze()
    try:
        ok, text = imap_login(srv, "alice@example.org", PW)  # the client's bound: 15 s
        assert not ok and "[UNAVAILABLE]" in text, text
        srv.wait_log(r"directory: .* is unavailable: .*(timed out|timeout|Lost connection)")
    finally:
        sqldb.thaw()
    wait_for(lambda: imap_login(srv, "alice@example.org", PW)[0], timeout=90,
             what="logins after the database answers again")


def test_database_down_then_back(tern, sqldb):
    imap_login(tern, "alice@example.org", PW)  # a pooled connection exists
    since = tern.log_offset()
    sqldb.stop()
    try:
        code, text = rcpt(tern, "alice@example.org")
        assert code == 451 and text.startswith("4.3.0"), (code, text)
        code, text = smtp_auth(tern, "alice@example.org", PW)
        assert code == 454 and text.startswith("4.7.0"), (code, text)
        ok, text = imap_login(tern, "alice@example.org", PW)
        assert not ok and "[UNAVAILABLE]" in text, text
        ok, text = pop3_login(tern, "alice@example.org", PW)
        assert not ok and "[SYS/TEMP]" in text, text
        # a wrong password is not told apart from a right one while the database is down
        ok, text = imap_login(tern, "alice@example.org", "wrong")
        assert not ok and "[UNAVAILABLE]" in text, text
        assert tern.is_running()
        log = tern.log_text()[since:]
        assert len(re.findall(r"directory: .* is unavailable:", log)) == 1, log[-3000:]
    finally:
        sqldb.start()
    # back: the pool reconnects after its back-off (bounded here, not asserted on time)
    wait_for(lambda: imap_login(tern, "alice@example.org", PW)[0], timeout=90,
             what="logins after the database is back")
    tern.wait_log(r"directory: .* is available again after \d+s", since=since)
    assert rcpt(tern, "alice@example.org")[0] == 250
    assert smtp_auth(tern, "alice@example.org", PW)[0] == 235
    assert pop3_login(tern, "alice@example.org", PW)[0]
