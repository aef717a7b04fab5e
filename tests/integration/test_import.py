"""
test_import.py - `tern import` on fixture config trees of a Postfix + Dovecot host
(tests/integration/fixtures/import/): hash maps with a passwd-file passdb, and
postfixadmin-style MySQL maps with a dovecot-sql.conf.ext. The dry run prints the
tern.conf and directory settings and what cannot be carried over, and changes nothing;
--write writes tern.conf (refusing to replace one) and adds domains and aliases.
"""

import shutil
import subprocess
from pathlib import Path

from conftest import tern_bin

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
    assert "cannot store an existing hash" in notes
    assert "smtpd_banner" not in notes  # install details are not noise
    assert not config.exists()  # a dry run changes nothing


def test_import_sql_maps(tmp_path):
    pf, dc = tree(tmp_path, "sql")
    out = run("--postfix", pf, "--dovecot", dc, config=tmp_path / "tern.conf").stdout
    d = section(out, "directory (")
    assert "directory.driver = mysql" in d
    assert "directory.host = localhost" in d and "directory.dbname = postfixadmin" in d
    assert "directory.user_query = SELECT maildir FROM mailbox WHERE username='%s'" in d
    assert "directory.alias_query = SELECT goto FROM alias" in d
    assert "directory.default_pass_scheme = SHA512-CRYPT" in d
    # the backslash-continued query of dovecot-sql.conf.ext, joined
    assert ("directory.password_query = SELECT username AS user, password FROM mailbox "
            "WHERE username = '%u' AND active = '1'") in d
    assert "smtp.max_message_size = 0" in section(out, "tern.conf")
    notes = section(out, "not carried over")
    assert "mysql_virtual_domains_maps.cf" in notes  # missing file: said so


def test_import_write(tmp_path):
    pf, dc = tree(tmp_path, "hash")
    config = tmp_path / "tern.conf"
    data_dir = tmp_path / "data"
    r = run("--postfix", pf, "--dovecot", dc, "--write", config=config)
    assert "wrote " + str(config) in r.stdout
    assert "added 2 domains and 3 aliases" in r.stdout, r.stdout + r.stderr
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
    assert "added 0 domains and 0 aliases" in r.stdout, r.stdout + r.stderr  # already there
    config.write_text(config.read_text() + f"data_dir = {data_dir}\n")
    lst = subprocess.run([str(tern_bin()), "-c", str(config), "alias", "list"],
                         capture_output=True, text=True, timeout=60)
    assert "info@example.com" in lst.stdout, lst.stdout + lst.stderr
