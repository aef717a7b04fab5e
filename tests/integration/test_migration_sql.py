"""
test_migration_sql.py - issue 14 end to end, the way an admin moves a Postfix + Dovecot
host whose users live in SQL (seed 003's setup) to Tern, against REAL servers: a private
MariaDB and a private PostgreSQL (sqldb_util.py, one server per driver for the module)
and a real Dovecot (dovecot_util.py) running on the old host's own config tree.

postfixadmin (test_move_postfixadmin_host): the old host is postfixadmin's documented
setup: main.cf with proxy:mysql:/pgsql: maps (POSTFIX_CONF.txt: domains, aliases, alias
domains and their catch-alls and mailboxes), dovecot.conf + dovecot-sql.conf.ext with seed
003's queries and default_pass_scheme = CRYPT, users with md5crypt, SHA512-CRYPT and
{SHA512-CRYPT} passwords. Dovecot serves a mailbox (folders, keywords, expunged UIDs,
subscriptions) to IMAP, POP3 and mbsync; then, as README "Moving from Postfix + Dovecot"
says: `tern import --write`, `tern config check`, the Maildir copied with the command the
import printed, Tern started on the written config. Real clients see the old passwords
work and a wrong one fail (IMAP, POP3, SMTP AUTH), the same UIDVALIDITY, UIDNEXT, UIDs,
flags, keywords, subscriptions and POP3 UIDLs, mbsync transfers nothing, and mail to an
alias and to an alias domain is delivered.

Custom schema (test_move_custom_schema_host): a widely copied non-postfixadmin layout
(accounts / aliases / domains tables keyed by local part and domain), whose Postfix maps
use %u (the local part) and %d and whose Dovecot queries return user + domain. Dovecot
logs the users in first (the tree is a working one); the import writes
directory.schema = custom with every query the schema needs, rewritten (Postfix's %u is
Tern's %n: the alias delivery below fails without that), config check passes, and Tern
logs the users in and routes the aliases.
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import TernServer, _chown_tree, _finish, tern_bin
from dovecot_util import HAS_DOVECOT, Dovecot
from sqldb_util import TERN_DB_PASSWORD, TERN_DB_USER, module_server
from tern_util import maildir_messages, send_mail, wait_for
from test_directory_sql import imap_login, pop3_login, q, smtp_auth
from test_migration_dovecot import mbsync, local_files, pop3_uidls, populate, snapshot

pytestmark = [
    pytest.mark.skipif(not HAS_DOVECOT, reason="dovecot-imapd/dovecot-pop3d not installed"),
    pytest.mark.skipif(not all(os.path.exists(f"/usr/lib/dovecot/modules/libdriver_{d}.so")
                               for d in ("mysql", "pgsql")),
                       reason="dovecot-mysql/dovecot-pgsql not installed"),
    pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync missing"),
    pytest.mark.skipif(os.geteuid() != 0, reason="Dovecot needs root to start its services"),
]

PFA_DB, CUSTOM_DB = "mail", "vmail"
CHARLIE, DORA, ERIN = ("charlie@alpha.example.org", "dora@alpha.example.org",
                       "erin@alpha.example.org")
PASSWORDS = {CHARLIE: "charlie-old-pw", DORA: "dora-old-pw", ERIN: "erin-old-pw"}


def _out(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def load_postfixadmin(db):
    """postfixadmin's tables with rows as postfixadmin writes them: a domain, an alias
    domain of it, three mailboxes (md5crypt: its default; SHA512-CRYPT bare: php_crypt;
    {SHA512-CRYPT}: dovecot:SHA512-CRYPT), an alias to two of them."""
    db.load_postfixadmin(PFA_DB)
    stored = {CHARLIE: _out("openssl", "passwd", "-1", PASSWORDS[CHARLIE]),
              DORA: _out("openssl", "passwd", "-6", PASSWORDS[DORA]),
              ERIN: "{SHA512-CRYPT}" + _out("openssl", "passwd", "-6", PASSWORDS[ERIN])}
    sql = []
    for d in ("alpha.example.org", "beta.example.net"):
        sql.append("INSERT INTO domain (domain, description, aliases, mailboxes, maxquota, "
                   "quota, transport, backupmx, active) VALUES "
                   f"({q(d)}, '', 0, 0, 0, 0, 'virtual', FALSE, TRUE);")
    sql.append("INSERT INTO alias_domain (alias_domain, target_domain, active) "
               "VALUES ('beta.example.net', 'alpha.example.org', TRUE);")
    for address, password in stored.items():
        local, dom = address.split("@")
        sql.append("INSERT INTO mailbox (username, password, name, maildir, quota, local_part, "
                   f"domain, active) VALUES ({q(address)}, {q(password)}, '', "
                   f"{q(dom + '/' + local + '/')}, 0, {q(local)}, {q(dom)}, TRUE);")
        sql.append(f"INSERT INTO alias (address, goto, domain, active) VALUES ({q(address)}, "
                   f"{q(address)}, {q(dom)}, TRUE);")
    sql.append("INSERT INTO alias (address, goto, domain, active) VALUES "
               f"('info@alpha.example.org', '{CHARLIE},{DORA}', 'alpha.example.org', TRUE);")
    db.sql(PFA_DB, "\n".join(sql))


CUSTOM_SCHEMA = """
CREATE TABLE domains (domain varchar(255) NOT NULL PRIMARY KEY);
CREATE TABLE accounts (username varchar(64) NOT NULL, domain varchar(255) NOT NULL,
  password varchar(255) NOT NULL, quota int NOT NULL DEFAULT 0,
  enabled boolean NOT NULL DEFAULT true, sendonly boolean NOT NULL DEFAULT false,
  PRIMARY KEY (username, domain));
CREATE TABLE aliases (source_username varchar(64), source_domain varchar(255) NOT NULL,
  destination_username varchar(64) NOT NULL, destination_domain varchar(255) NOT NULL,
  enabled boolean NOT NULL DEFAULT true);
"""


def load_custom(db):
    """The accounts/aliases/domains layout, one account disabled."""
    if db.driver == "mysql":
        db.sql(None, f"CREATE DATABASE {CUSTOM_DB};"
                     f"GRANT ALL ON {CUSTOM_DB}.* TO '{TERN_DB_USER}'@'127.0.0.1';")
        db.sql(CUSTOM_DB, CUSTOM_SCHEMA)
    else:
        db.sql(None, f"CREATE DATABASE {CUSTOM_DB} OWNER {TERN_DB_USER};")
        db.sql(CUSTOM_DB, f"SET ROLE {TERN_DB_USER};\n" + CUSTOM_SCHEMA)
    rows = ["INSERT INTO domains (domain) VALUES ('alpha.example.org');"]
    for address, enabled in ((CHARLIE, "true"), (DORA, "true"), (ERIN, "false")):
        local, dom = address.split("@")
        hashed = "{SHA512-CRYPT}" + _out("openssl", "passwd", "-6", PASSWORDS[address])
        rows.append("INSERT INTO accounts (username, domain, password, quota, enabled) VALUES "
                    f"({q(local)}, {q(dom)}, {q(hashed)}, 64, {enabled});")
    rows.append("INSERT INTO aliases (source_username, source_domain, destination_username, "
                "destination_domain) VALUES ('team', 'alpha.example.org', 'dora', "
                "'alpha.example.org');")
    db.sql(CUSTOM_DB, "\n".join(rows))


@pytest.fixture(scope="module", params=["mysql", "postgresql"])
def sqldb(request):
    def load(db):
        load_postfixadmin(db)
        load_custom(db)

    db = module_server(request.param, load)
    yield db
    db.cleanup()


# ---- the old host's configuration ------------------------------------------------------

class OldHost:
    """/etc/postfix, /etc/dovecot and /var/vmail of the host being moved, in a folder
    Dovecot's own processes can read, and that host's Dovecot (started on demand)."""

    def __init__(self, sqldb, run_user):
        self.root = Path(tempfile.mkdtemp(prefix="oldhost-"))
        os.chmod(self.root, 0o755)
        self.postfix = self.root / "etc" / "postfix"
        self.dovecot_dir = self.root / "etc" / "dovecot"
        self.vmail = self.root / "vmail"
        for d in (self.postfix / "sql", self.dovecot_dir, self.vmail):
            d.mkdir(parents=True)
            os.chmod(d, 0o755)
        self.mail_user = run_user or "nobody"
        pw = pwd.getpwnam(self.mail_user)
        os.chown(self.vmail, pw.pw_uid, pw.pw_gid)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.db = sqldb
        self.type = "mysql" if sqldb.driver == "mysql" else "pgsql"
        self.dc = None

    def write(self, name, text):
        path = self.root / "etc" / name
        path.write_text(text.lstrip("\n"))
        return path

    def postfix_maps(self, dbname, maps):
        """main.cf's parameters -> list of (file stem, query); written as mysql_table(5) /
        pgsql_table(5) files (host given in each driver's usual form)."""
        hosts = (f"127.0.0.1:{self.db.port}" if self.type == "mysql"
                 else f"inet:127.0.0.1:{self.db.port}")
        lines = []
        for param, files in maps.items():
            specs = []
            for stem, query in files:
                f = self.write(f"postfix/sql/{self.type}_{stem}.cf",
                               f"user = {TERN_DB_USER}\npassword = {TERN_DB_PASSWORD}\n"
                               f"hosts = {hosts}\ndbname = {dbname}\nquery = {query}\n")
                specs.append(f"proxy:{self.type}:{f}")
            lines.append(f"{param} =\n   " + ",\n   ".join(specs))
        return "\n".join(lines) + "\n"

    def dovecot(self, dbname, queries, mail_location):
        """dovecot.conf (a working config for dovecot_util's instance) with sql passdb and
        userdb over dovecot-sql.conf.ext."""
        ext = self.write("dovecot/dovecot-sql.conf.ext", f"""
driver = {self.type}
connect = host=127.0.0.1 port={self.db.port} dbname={dbname} user={TERN_DB_USER} password={TERN_DB_PASSWORD}
{queries}""")
        auth = f"""passdb {{
  driver = sql
  args = {ext}
}}
userdb {{
  driver = sql
  args = {ext}
}}
"""
        self.dc = Dovecot(self.mail_user, auth=auth, mail_location=mail_location,
                          conf_dir=self.dovecot_dir)
        (self.dovecot_dir / "dovecot.conf").write_text(self.dc.config())

    def cleanup(self):
        if self.dc:
            self.dc.cleanup()
        if not os.environ.get("TERN_KEEP_DATA"):
            shutil.rmtree(self.root, ignore_errors=True)


def tern_import(host, conf):
    """`tern import --write` as the admin runs it; returns its output."""
    cp = subprocess.run([str(tern_bin()), "-c", str(conf), "import", "--postfix",
                         str(host.postfix), "--dovecot", str(host.dovecot_dir), "--write"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert f"wrote {conf}" in cp.stdout, cp.stdout
    return cp.stdout


def section(out, title):
    return out.split(f"# ---- {title}", 1)[1].split("# ----", 1)[0]


def tern_on(imported, srv):
    """The written tern.conf plus only what this test machine needs (ports, data folder,
    run user, log to stderr): tern.conf then passes `tern config check`."""
    text = imported.read_text()
    have = {line.split("=", 1)[0].strip() for line in text.splitlines()
            if "=" in line and not line.lstrip().startswith("#")}
    extra = [f"{k} = {v}" for k, v in srv.base_config().items() if k not in have]
    srv.config_path.write_text(text + "\n# the test machine\n" + "\n".join(extra) + "\n")
    cp = subprocess.run([str(tern_bin()), "-c", str(srv.config_path), "config", "check"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr + srv.config_path.read_text()
    return text


def delivered(srv, address, subject):
    """Has a message with this subject arrived in address's INBOX?"""
    for f in maildir_messages(srv.maildir(address)):
        with open(f, "rb") as fh:
            if f"Subject: {subject}".encode() in fh.read(4096):
                return True
    return False


# ---- postfixadmin ----------------------------------------------------------------------

# seed 003's queries (its uid/gid: the mail files' owner here)
PFA_DOVECOT_QUERIES = """
default_pass_scheme = CRYPT
password_query = SELECT password FROM mailbox WHERE username = '%u' AND active = '1'
user_query = SELECT maildir, {uid} AS uid, {gid} AS gid FROM mailbox WHERE username = '%u' AND active = '1'
iterate_query = SELECT username AS user FROM mailbox WHERE active = '1'
"""

# postfixadmin's DOCUMENTS/POSTFIX_CONF.txt (active = '1' reads the same in both databases)
PFA_MAPS = {
    "virtual_mailbox_domains": [
        ("virtual_domains_maps",
         "SELECT domain FROM domain WHERE domain='%s' AND active = '1'")],
    "virtual_alias_maps": [
        ("virtual_alias_maps", "SELECT goto FROM alias WHERE address='%s' AND active = '1'"),
        ("virtual_alias_domain_maps",
         "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and "
         "alias.address = CONCAT('%u', '@', alias_domain.target_domain) AND "
         "alias.active = '1' AND alias_domain.active='1'"),
        ("virtual_alias_domain_catchall_maps",
         "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and "
         "alias.address = CONCAT('@', alias_domain.target_domain) AND alias.active = '1' "
         "AND alias_domain.active='1'")],
    "virtual_mailbox_maps": [
        ("virtual_mailbox_maps",
         "SELECT maildir FROM mailbox WHERE username='%s' AND active = '1'"),
        ("virtual_alias_domain_mailbox_maps",
         "SELECT maildir FROM mailbox,alias_domain WHERE alias_domain.alias_domain = '%d' "
         "and mailbox.username = CONCAT('%u', '@', alias_domain.target_domain) AND "
         "mailbox.active = '1' AND alias_domain.active='1'")],
}


def test_move_postfixadmin_host(sqldb, tmp_path):
    srv = TernServer({}, name="migsql")
    host = OldHost(sqldb, srv.run_user)
    try:
        _move_postfixadmin_host(sqldb, host, srv, tmp_path)
    finally:
        _finish(srv)
        host.cleanup()


def _move_postfixadmin_host(sqldb, host, srv, tmp_path):
    host.write("postfix/main.cf", f"""
# postfixadmin's setup (seed 003)
myhostname = mail.alpha.example.org
virtual_mailbox_base = {host.vmail}
virtual_transport = lmtp:unix:private/dovecot-lmtp
message_size_limit = 26214400
""" + host.postfix_maps(PFA_DB, PFA_MAPS))
    # Dovecot keeps each Maildir where Postfix's virtual(8) delivered it: base/%d/%n
    host.dovecot(PFA_DB, PFA_DOVECOT_QUERIES.format(uid=host.uid, gid=host.gid),
                 f"maildir:{host.vmail}/%d/%n")

    # the old host serves the mailbox: the users log in with their passwords from SQL
    dc = host.dc
    dc.start()
    imap_port, pop3_port = dc.ports["imap"], dc.ports["pop3"]
    populate(imap_port, CHARLIE, PASSWORDS[CHARLIE])
    before, subs_before = snapshot(imap_port, CHARLIE, PASSWORDS[CHARLIE])
    uidls_before = pop3_uidls(pop3_port, CHARLIE, PASSWORDS[CHARLIE])
    mbsync(tmp_path, imap_port, CHARLIE, PASSWORDS[CHARLIE])
    synced = local_files(tmp_path)
    for user in (DORA, ERIN):
        assert imap_login(_At(imap_port), user, PASSWORDS[user])[0], user
    dc.stop()
    old_maildir = host.vmail / "alpha.example.org" / "charlie"
    assert (old_maildir / "dovecot-uidlist").exists() and (old_maildir / "dovecot-keywords").exists()
    assert sorted(before["INBOX"][1]) == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]  # holes kept below

    # 1. tern import --write: postfixadmin recognised, no queries written
    conf = srv.root / "imported.conf"
    out = tern_import(host, conf)
    d = section(out, "directory (")
    assert f"directory.driver = {sqldb.driver}" in d
    assert "directory.schema = postfixadmin" in d
    assert "directory.default_pass_scheme = CRYPT" in d
    assert f"directory.port = {sqldb.port}" in d and "directory.host = 127.0.0.1" in d
    assert not re.search(r"^directory\.\w+_query", d, re.M), d  # only commented ones
    assert TERN_DB_PASSWORD not in out  # the dry-run view hides the database password
    assert f"directory.password = {TERN_DB_PASSWORD}" in conf.read_text()
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    # 2. tern config check on it (with this machine's ports and data folder)
    tern_on(conf, srv)
    # 3. the mail: the command the import printed, for this user
    notes = section(out, "not carried over")
    m = re.search(r"`cp -a (\S+)/\. (\S+)/`", notes)
    assert m, notes
    src, dest = (x.replace("example.org/alice", "alpha.example.org/charlie")
                 .replace("<data_dir>", str(srv.data_dir)) for x in m.groups())
    assert src == str(old_maildir) and dest == str(srv.maildir(CHARLIE)), (src, dest)
    os.makedirs(dest)
    subprocess.run(["cp", "-a", src + "/.", dest + "/"], check=True, timeout=60)
    _chown_tree(srv.data_dir, srv.run_user)

    # 4. Tern on the written config: what the clients knew is what they see
    srv.start()
    after, subs_after = snapshot(srv.ports["imap"], CHARLIE, PASSWORDS[CHARLIE])
    for folder in before:
        assert after[folder] == before[folder], folder  # UIDVALIDITY, UIDNEXT, UIDs, flags
    assert subs_after == subs_before
    assert pop3_uidls(srv.ports["pop3"], CHARLIE, PASSWORDS[CHARLIE]) == uidls_before
    sync_out = mbsync(tmp_path, srv.ports["imap"], CHARLIE, PASSWORDS[CHARLIE])
    assert local_files(tmp_path) == synced, sync_out  # nothing downloaded again
    assert "changed" not in sync_out and "Creating" not in sync_out, sync_out

    # the old passwords, in each form postfixadmin wrote, on every protocol; a wrong one
    # fails (5 failures: under auth.max_failures' default of 10 per client address)
    for user, password in PASSWORDS.items():
        assert imap_login(srv, user, password)[0], user
        assert pop3_login(srv, user, password)[0], user
        assert smtp_auth(srv, user, password)[0] == 235, user
        ok, text = imap_login(srv, user, password + "x")
        assert not ok and "AUTHENTICATIONFAILED" in text, text
    ok, text = pop3_login(srv, DORA, "wrong")
    assert not ok and "[AUTH]" in text, text
    assert smtp_auth(srv, ERIN, "wrong")[0] == 535

    # an alias (goto list) and an alias domain deliver
    assert send_mail(srv, "x@remote.example", "info@alpha.example.org", "hi",
                     subject="to the alias")[0] == 250
    assert send_mail(srv, "x@remote.example", "charlie@beta.example.net", "hi",
                     subject="to the alias domain")[0] == 250
    wait_for(lambda: delivered(srv, CHARLIE, "to the alias") and
             delivered(srv, DORA, "to the alias") and
             delivered(srv, CHARLIE, "to the alias domain"), what="alias deliveries")
    assert uidls_before == pop3_uidls(srv.ports["pop3"], CHARLIE,
                                      PASSWORDS[CHARLIE])[:len(uidls_before)]


class _At:
    """Where imap_login connects: Dovecot's port."""

    def __init__(self, imap_port):
        self.host, self.ports = "127.0.0.1", {"imap": imap_port}


# ---- a custom schema ---------------------------------------------------------------------

CUSTOM_DOVECOT_QUERIES = """
default_pass_scheme = SHA512-CRYPT
password_query = SELECT username AS user, domain, password FROM accounts \\
  WHERE username = '%n' AND domain = '%d' and enabled = true;
user_query = SELECT concat('*:storage=', quota, 'M') AS quota_rule, {uid} AS uid, \\
  {gid} AS gid FROM accounts WHERE username = '%n' AND domain = '%d' AND sendonly = false;
iterate_query = SELECT username, domain FROM accounts where sendonly = false;
"""

CUSTOM_MAPS = {
    "virtual_mailbox_domains": [("domains", "SELECT domain FROM domains WHERE domain='%s'")],
    "virtual_mailbox_maps": [
        ("accounts", "select 1 as found from accounts where username = '%u' and "
                     "domain = '%d' and enabled = true LIMIT 1;")],
    "virtual_alias_maps": [
        ("aliases", "select concat(destination_username, '@', destination_domain) as "
                    "destinations from aliases where source_username = '%u' and "
                    "source_domain = '%d' and enabled = true;")],
}


def test_move_custom_schema_host(sqldb):
    srv = TernServer({}, name="migcustom")
    host = OldHost(sqldb, srv.run_user)
    try:
        _move_custom_schema_host(sqldb, host, srv)
    finally:
        _finish(srv)
        host.cleanup()


def _move_custom_schema_host(sqldb, host, srv):
    host.write("postfix/main.cf", "myhostname = mail.alpha.example.org\n" +
               host.postfix_maps(CUSTOM_DB, CUSTOM_MAPS))
    host.dovecot(CUSTOM_DB, CUSTOM_DOVECOT_QUERIES.format(uid=host.uid, gid=host.gid),
                 f"maildir:{host.vmail}/%d/%n")
    host.dc.start()  # the tree works for Dovecot: it logs the users in
    assert imap_login(_At(host.dc.ports["imap"]), CHARLIE, PASSWORDS[CHARLIE])[0]
    host.dc.stop()

    conf = srv.root / "imported.conf"
    out = tern_import(host, conf)
    d = section(out, "directory (")
    assert "directory.schema = custom" in d, d
    assert re.search(r"reads table \w+, not one of postfixadmin.s", d), d
    # Postfix's %u (local part) is Tern's %n; %s of a domain map is the domain; ';' goes
    assert ("directory.alias_query = select concat(destination_username, '@', "
            "destination_domain) as destinations from aliases where source_username = '%n' "
            "and source_domain = '%d' and enabled = true\n") in d, d
    assert "directory.domain_query = SELECT domain FROM domains WHERE domain='%d'\n" in d, d
    # Dovecot's user_query (the userdb) wins over Postfix's mailbox map
    assert "directory.user_query = SELECT concat('*:storage=', quota, 'M')" in d, d
    assert re.search(r"^directory\.password_query = SELECT username AS user, domain", d, re.M)
    assert "directory.iterate_query = SELECT username, domain FROM accounts" in d
    notes = section(out, "not carried over")
    assert "accounts.cf (virtual_mailbox_maps): not carried over: Tern runs one " \
           "directory.user_query" in notes, notes
    tern_on(conf, srv)

    srv.start()
    for user in (CHARLIE, DORA):
        assert imap_login(srv, user, PASSWORDS[user])[0], user
        assert smtp_auth(srv, user, PASSWORDS[user])[0] == 235, user
        ok, text = imap_login(srv, user, "wrong")
        assert not ok and "AUTHENTICATIONFAILED" in text, text
    assert not imap_login(srv, ERIN, PASSWORDS[ERIN])[0]  # enabled = false
    # the canonical name is Dovecot's user + domain columns, not the bare local part
    since = srv.log_offset()
    assert pop3_login(srv, DORA, PASSWORDS[DORA])[0]
    srv.wait_log(r"Login: user=<dora@alpha\.example\.org>", since=since)
    # the alias query runs with the local part (it would find nothing with the address)
    assert send_mail(srv, "x@remote.example", "team@alpha.example.org", "hi",
                     subject="to the team")[0] == 250
    wait_for(lambda: delivered(srv, DORA, "to the team"), what="alias delivery")
    users = srv.cli("user", "list").stdout
    assert CHARLIE in users and DORA in users, users
