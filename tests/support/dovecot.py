"""A throwaway real Dovecot IMAP server for the tests.

Started once per test session from its own base directory under /tmp (short:
unix socket paths are limited to 108 bytes), listening on 127.0.0.1 only:
plain IMAP with STARTTLS on ``port`` and implicit TLS on ``imaps_port``,
with a self-signed certificate.  Users ``user1`` .. ``userN`` (password
``secret``) live in a passwd-file; mail is stored as Maildir owned by the
``mail`` user (uid/gid 8), because Dovecot never runs mail processes as root.

Settings that would slow tests down are changed: failed logins are answered at
once, one user may hold many connections, each imap process serves many
connections, and IDLE re-checks every second where change notification is
unavailable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
PASSWORD = "secret"
# Where the test session leaves its logs (see the ``stack`` fixture).
KEPT_LOGS = Path("var/test-logs")

CONFIG = """\
instance_name = mailgate-test-{port}
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{base}/etc/cert.pem
ssl_key = <{base}/etc/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {base}/etc/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/%n
}}
mail_location = maildir:~/Maildir
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_fsync = never
mailbox_idle_check_interval = 1 secs
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
  mailbox Archive {{
    special_use = \\Archive
    auto = subscribe
  }}
}}
protocol imap {{
  mail_max_userip_connections = 500
}}
# Room for one connection per account when a benchmark watches 1,000 accounts.
default_process_limit = 1500
default_client_limit = 3000
default_vsz_limit = 512M
service imap {{
  # Many connections per imap process (possible because every user has the same
  # uid).  One process per connection, 1,000 watched accounts plus the
  # benchmark's own connections went over Dovecot's built-in imap process_limit
  # of 1024 (connections beyond it were dropped: logins timed out); and past the
  # kernel's 128 inotify instances per uid (one per imap process) Dovecot stops
  # getting change notifications and IDLE falls back to polling every
  # mailbox_idle_check_interval.  A few long-lived processes stay far below both.
  service_count = 0
  client_limit = 50
  process_limit = 40
}}
service auth {{
  # Dovecot warns below the sum of the login and imap services' limits.
  client_limit = 4000
}}
service imap-login {{
  # High-performance mode: a few login processes each proxy many connections,
  # instead of one process per connection (2,000 processes at 1,000 accounts).
  service_count = 0
  process_min_avail = 2
  client_limit = 1500
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  # anvil tracks every login; Dovecot warns below the sum of the services' limits.
  client_limit = 3500
}}
"""


class Dovecot:
    def __init__(self, port: int, imaps_port: int, users: int = 40) -> None:
        self.port = port
        self.imaps_port = imaps_port
        self.users = [f"user{i}" for i in range(1, users + 1)]
        self.password = PASSWORD
        # Under /tmp, not pytest's tmp dir: short path, and reachable by the
        # dovecot/dovenull/mail users (a parent under /root would not be).
        self.base = Path(tempfile.mkdtemp(prefix="mgdc", dir="/tmp"))
        self.conf = self.base / "etc" / "dovecot.conf"
        self._next_user = 0

    def start(self) -> None:
        mail = pwd.getpwnam("mail")
        for sub in ("etc", "run", "state", "mail"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chmod(self.base / "etc", 0o755)
        os.chown(self.base / "mail", mail.pw_uid, mail.pw_gid)
        users = self.base / "etc" / "users"
        users.write_text("".join(f"{u}:{{PLAIN}}{self.password}::::::\n" for u in self.users))
        users.chmod(0o644)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(self.base / "etc" / "key.pem"),
             "-out", str(self.base / "etc" / "cert.pem")],
            check=True, capture_output=True,
        )
        (self.base / "etc" / "key.pem").chmod(0o600)
        self.conf.write_text(CONFIG.format(base=self.base, port=self.port, imaps_port=self.imaps_port,
                                           uid=mail.pw_uid, gid=mail.pw_gid))
        # The master daemonizes: no pipes, or run() would wait for its children.
        errors = self.base / "start.err"
        with errors.open("wb") as err:
            code = subprocess.call([DOVECOT, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=err)
        if code != 0:
            raise RuntimeError(f"dovecot failed: {errors.read_text()}{self.log_tail()}")
        deadline = time.monotonic() + 10
        while not self._greets():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no IMAP greeting on {self.port}: {self.log_tail()}")
            time.sleep(0.05)

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(4).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        pidfile = self.base / "run" / "master.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip())
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        log = self.base / "dovecot.log"
        if log.exists():
            # Beside the services' logs: what a failed run needs to be explained.
            KEPT_LOGS.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, KEPT_LOGS / "dovecot.log")
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = self.base / "dovecot.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def new_user(self) -> str:
        """A user no other test has used yet (mailboxes start empty); more are added
        when the first ``users`` are taken (Dovecot re-reads its passwd-file)."""
        if self._next_user == len(self.users):
            user = f"user{len(self.users) + 1}"
            with (self.base / "etc" / "users").open("a") as users:
                users.write(f"{user}:{{PLAIN}}{self.password}::::::\n")
            self.users.append(user)
            self._wait_for_user(user)
        user = self.users[self._next_user]
        self._next_user += 1
        return user

    def _wait_for_user(self, user: str) -> None:
        # Dovecot notices a changed passwd-file by its timestamp, to the second:
        # a login in the same second as the change may still be refused.
        deadline = time.monotonic() + 10
        while subprocess.run([DOVEADM, "-c", str(self.conf), "auth", "test", user, self.password],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot does not know the new user {user}: {self.log_tail()}")
            time.sleep(0.2)

    def fill(self, user: str, count: int, message: Callable[[int], bytes]) -> None:
        """Put ``count`` messages (``message(n)`` for n = 1..count) straight into a new
        user's Maildir, as files in ``cur/`` owned by ``mail``: Dovecot indexes them
        on first access.  ``deliver`` (one doveadm process per message) would take
        many minutes for thousands."""
        mail = pwd.getpwnam("mail")
        home = self.base / "mail" / user
        maildir = home / "Maildir"
        for path in (home, maildir, *(maildir / sub for sub in ("cur", "new", "tmp"))):
            path.mkdir(exist_ok=True)
            os.chown(path, mail.pw_uid, mail.pw_gid)
        stamp = int(time.time())
        for n in range(1, count + 1):
            raw = message(n)
            # Maildir names: unique, with the size (S=) and no flags (":2,").
            path = maildir / "cur" / f"{stamp}.M{n}P{os.getpid()}.mgtest,S={len(raw)}:2,"
            path.write_bytes(raw)
            os.chown(path, mail.pw_uid, mail.pw_gid)

    def logins(self, user: str) -> int:
        """How many times the user has logged in over IMAP (from Dovecot's log)."""
        return self.log_tail(1_000_000).count(f" Login: user=<{user}>,")

    def deliver(self, user: str, raw: bytes, mailbox: str = "INBOX") -> None:
        """Store a message the way an MTA would, without IMAP."""
        subprocess.run([DOVEADM, "-c", str(self.conf), "save", "-u", user, "-m", mailbox],
                       input=raw, check=True, capture_output=True)

    def doveadm(self, *args: str) -> str:
        result = subprocess.run([DOVEADM, "-c", str(self.conf), *args], check=True,
                                capture_output=True, text=True)
        return result.stdout

    def kick(self, user: str) -> None:
        """Drop the user's connections, as a server restart or an admin would.

        ``-f``: an imap process serves many users here (see CONFIG), and the
        others' connections drop with it."""
        self.doveadm("kick", "-f", user)

    def fetch_headers(self, user: str, mailbox: str, field: str = "hdr.subject") -> list[str]:
        """A header of every message in a mailbox, e.g. to check a Sent copy."""
        out = self.doveadm("fetch", "-u", user, field, "mailbox", mailbox, "all")
        return [line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line]

    def connections(self) -> dict[str, int]:
        """Logged-in IMAP connections per user, as ``doveadm who`` reports them."""
        counts: dict[str, int] = {}
        for line in self.doveadm("who").splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "imap":
                counts[parts[0]] = counts.get(parts[0], 0) + int(parts[1])
        return counts
