"""
test_import.py - `tern import` on fixture config trees of a Postfix + Dovecot host
(tests/integration/fixtures/import/): hash maps with a passwd-file passdb, and
postfixadmin-style MySQL maps with a dovecot-sql.conf.ext. The dry run prints the
tern.conf and directory settings and what cannot be carried over, and changes nothing;
--write writes tern.conf (refusing to replace one) and adds domains and aliases.
"""

import re
import shutil
import subprocess
from pathlib import Path

from conftest import TernServer, _chown_tree, _finish, tern_bin
from test_directory_sql import imap_login

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "import"


def tree(tmp_path, name):
    """Copy a fixture tree; "/ETC" in its files names the folder the file sits in."""
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    for part in ("postfix", "dovecot"):
        for f in (root / part).rglob("*"):
            if f.is_file():
                f.write_text(f.read_text().replace("/ETC", str(root / part)))
    return root / "postfix", root / "dovecot"


def run(*args, config, check=True):
    # -o data_dir: the directory --write fills must be the test's (as root the default
    # is /var/lib/tern)
    data_dir = Path(config).parent / "data"
    r = subprocess.run([str(tern_bin()), "-c", str(config), "-o", f"data_dir={data_dir}",
                        "import", *map(str, args)],
                       capture_output=True, text=True, timeout=60, cwd=Path(config).parent)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def section(out, title):
    part = out.split(f"# ---- {title}", 1)[1]
    return part.split("# ----", 1)[0]


def test_import_hash_maps_dry_run(tmp_path):
    pf, dc = tree(tmp_path, "hash")
    config = tmp_path / "tern.conf"
    out = run("--postfix", pf, "--dovecot", dc, config=config).stdout
    conf = section(out, "tern.conf")
    assert "hostname = mail.example.com" in conf
    assert "smtp.max_message_size = 26214400" in conf
    assert "tls.cert = /etc/letsencrypt/live/mail.example.com/fullchain.pem" in conf
    assert "relay_networks = 127.0.0.0/8 ::1/128 192.168.10.0/24" in conf  # continuation
    assert "relayhost = [smtp.isp.example]:587" in conf
    assert "pop3.uidl_format = %08Xv%08Xu" in conf  # from protocol pop3 { } in conf.d
    assert "auth.default_domain = example.com" in conf
    data = section(out, "directory data")
    assert "domain example.com" in data and "domain example.org" in data
    assert "mailbox alice@example.com  (mail in /var/vmail/example.com/alice/)" in data
    assert "mailbox bob@example.com" in data  # postmap folds keys to lower case
    assert "@example.org" not in data.replace("carol@example.org", "")  # catch-all: none
    assert "alias info@example.com -> alice@example.com" in data
    assert "alias info@example.com -> bob@example.com" in data  # continued value
    assert "user alice@example.com  (password {SHA512-CRYPT}" in data
    notes = section(out, "not carried over")
    assert "header_checks" in notes  # no Tern equivalent: said, not dropped silently
    assert "lmtp:unix:<data_dir>/lmtp" in notes
    assert "mail_location = maildir:/var/vmail/%d/%n" in notes
    assert "2 users: --write adds them to tern.db with their password hashes" in notes
    assert "1 mailbox of virtual_mailbox_maps (carol@example.org) has no password" in notes
    assert "smtpd_banner" not in notes  # install details are not noise
    assert not config.exists()  # a dry run changes nothing


def test_import_sql_maps(tmp_path):
    """postfixadmin's tables (mysql: maps and seed-003-style Dovecot queries): the schema is
    postfixadmin, no query is written (Tern's own replace them), config check passes."""
    pf, dc = tree(tmp_path, "sql")
    config = tmp_path / "tern.conf"
    out = run("--postfix", pf, "--dovecot", dc, "--write", config=config).stdout
    d = section(out, "directory (")
    assert "directory.driver = mysql" in d
    assert "directory.host = localhost" in d and "directory.dbname = postfixadmin" in d
    assert "directory.user = postfix" in d  # the maps' user: they read every table
    assert "directory.default_pass_scheme = SHA512-CRYPT" in d
    assert "directory.schema = postfixadmin" in d
    assert not re.search(r"^directory\.\w+_query", d, re.M), d
    # the queries it replaces, rewritten for a custom schema, as comments
    assert "#   directory.alias_query = SELECT goto FROM alias WHERE address='%u'" in d
    # the backslash-continued query of dovecot-sql.conf.ext, joined
    assert ("#   directory.password_query = SELECT username AS user, password FROM mailbox "
            "WHERE username = '%u' AND active = '1'") in d
    assert "s3cret" not in out and "d0vec0t" not in out  # passwords: --write only
    assert "smtp.max_message_size = 0" in section(out, "tern.conf")
    notes = section(out, "not carried over")
    assert "mysql_virtual_domains_maps.cf" in notes  # missing file: said so
    assert "connects as dovecot; Tern uses one database user" in notes
    assert "postfixadmin's maildir example.org/alice/" in notes
    assert "directory.password = s3cret" in config.read_text()
    check(config, tmp_path)


def check(config, tmp_path):
    """`tern config check` accepts the written file (with a data folder of the test's)."""
    chk = subprocess.run([str(tern_bin()), "-c", str(config), "-o",
                          f"data_dir={tmp_path / 'data'}", "config", "check"],
                         capture_output=True, text=True, timeout=60)
    assert chk.returncode == 0, chk.stdout + chk.stderr + config.read_text()


def test_import_custom_schema(tmp_path):
    """Another schema (PostgreSQL): directory.schema = custom with every query it needs,
    Postfix's expansions rewritten (%u is Tern's %n), a domain query made from main.cf's
    domain list, what cannot be expressed refused with the reason; config check passes."""
    pf, dc = tree(tmp_path, "custom")
    config = tmp_path / "tern.conf"
    out = run("--postfix", pf, "--dovecot", dc, "--write", config=config).stdout
    d = section(out, "directory (")
    for line in ("directory.driver = postgresql", "directory.host = db.example.net",
                 "directory.port = 5433", "directory.dbname = mail", "directory.user = mail",
                 # Dovecot's connect, same database: its TLS settings join the map's
                 "directory.tls = verify", "directory.tls_ca = /etc/ssl/db-ca.pem",
                 "directory.default_pass_scheme = BLF-CRYPT", "directory.schema = custom",
                 "directory.password_query = SELECT login || '@' || dom AS user, pw AS "
                 "password FROM users WHERE login = '%n' AND dom = '%d' AND active",
                 # Postfix's %u is the local part; the trailing ';' goes
                 "directory.user_query = SELECT maildir FROM users WHERE login='%n' AND "
                 "dom='%d' AND active",
                 "directory.domain_query = SELECT 1 WHERE '%d' IN ('example.com', "
                 "'example.net')",
                 # table/select_field/where_field (before Postfix 2.2) made a query
                 "directory.alias_query = SELECT target FROM forwards WHERE source = '%u' "
                 "AND active"):
        assert line + "\n" in d, (line, d)
    assert "directory.iterate_query" not in d  # userdb static: its queries are not used
    notes = section(out, "not carried over")
    assert "%1 (a label of the domain, counted from the right) has no Tern equivalent" in notes
    assert "hosts=db2.example.net: not carried over (Tern connects to one database" in notes
    assert "virtual_alias_maps has 1 aliases in text maps (postmaster@example.com" in notes
    assert "map-pw" not in out
    check(config, tmp_path)


def test_import_write(tmp_path):
    pf, dc = tree(tmp_path, "hash")
    config = tmp_path / "tern.conf"
    data_dir = tmp_path / "data"
    r = run("--postfix", pf, "--dovecot", dc, "--write", config=config)
    assert "wrote " + str(config) in r.stdout
    assert "added 2 domains, 2 users and 3 aliases" in r.stdout, r.stdout + r.stderr
    text = config.read_text()
    assert "hostname = mail.example.com" in text
    # the written file is a valid config that `tern config check` accepts
    config.write_text(text + f"data_dir = {data_dir}\ntls.cert = \ntls.key = \n")
    chk = subprocess.run([str(tern_bin()), "-c", str(config), "config", "check"],
                         capture_output=True, text=True, timeout=60)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    r = run("--postfix", pf, "--dovecot", dc, "--write", config=config, check=False)
    assert r.returncode == 1 and "exists" in r.stderr  # never replaced silently
    r = run("--postfix", pf, "--dovecot", dc, "--write", "--force", config=config)
    assert "added 0 domains, 0 users and 0 aliases" in r.stdout, r.stdout + r.stderr
    config.write_text(config.read_text() + f"data_dir = {data_dir}\n")
    lst = subprocess.run([str(tern_bin()), "-c", str(config), "alias", "list"],
                         capture_output=True, text=True, timeout=60)
    assert "info@example.com" in lst.stdout, lst.stdout + lst.stderr
    # the passwd-file's users keep their passwords: Tern logs them in with the old ones
    srv = TernServer({}, name="import")  # its data folder is one the run user can reach
    try:
        for f in data_dir.glob("tern.db*"):
            shutil.copy(f, srv.data_dir / f.name)
        _chown_tree(srv.data_dir, srv.run_user)
        srv.start()
        for user, password in (("alice@example.com", "alice-pw"), ("bob@example.com", "bob-pw")):
            assert imap_login(srv, user, password)[0], user
            ok, text = imap_login(srv, user, password + "x")
            assert not ok and "AUTHENTICATIONFAILED" in text, text
    finally:
        _finish(srv)


def test_user_add_with_a_hash(tern):
    """`tern user add --hash`: a hash made elsewhere is stored as it is; what Tern cannot
    read is refused (it would lock the user out)."""
    stored = subprocess.run(["openssl", "passwd", "-6", "moved-pw"], capture_output=True,
                            text=True, check=True, timeout=30).stdout.strip()
    tern.cli("user", "add", "moved@example.test", "--hash", stored)  # bare crypt(3)
    assert imap_login(tern, "moved@example.test", "moved-pw")[0]
    assert not imap_login(tern, "moved@example.test", "other")[0]
    for bad in ("{NOSUCH}abc", "plain-text", "{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$x$y"):
        cp = tern.cli("user", "add", "bad@example.test", "--hash", bad, check=False)
        assert cp.returncode == 1 and ("not a password hash" in cp.stderr or
                                       "malformed" in cp.stderr), (bad, cp.stderr)
    cp = tern.cli("user", "add", "x@example.test", "--hash", stored, "--password-stdin",
                  check=False)
    assert cp.returncode == 2  # one or the other
