"""Postfix (the Debian package) as the MTA in front of the MX door: a transport map sends a
domain to the door, as an operator's relay would, and the message reaches its route's webhook."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Stack, free_port, wait_for
from tests.support.webhook_receiver import WebhookReceiver

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A throwaway instance: its own config, queue and data directories, no chroot, logging to a file
    (there is no syslog here), relaying one domain to ``relay_to`` and nothing else."""

    def __init__(self, base: Path, domain: str, relay_to: int) -> None:
        self.base = base
        self.port = free_port()
        etc, queue, data = base / "etc", base / "queue", base / "data"
        for directory in (etc, queue, data):
            directory.mkdir(parents=True)
        shutil.chown(data, "postfix")  # master.lock lives here
        self.log = base / "maillog"
        (etc / "transport").write_text(f"{domain} smtp:[127.0.0.1]:{relay_to}\n")
        (etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (etc / "main.cf").write_text("\n".join([
            "compatibility_level = 3.6",
            f"queue_directory = {queue}",
            f"data_directory = {data}",
            "myhostname = relay.postfix.test",
            "mydomain = postfix.test",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            f"relay_domains = {domain}",
            f"transport_maps = texthash:{etc}/transport",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
            "alias_maps =",
            "alias_database =",
            f"maillog_file = {self.log}",
            f"maillog_file_prefixes = {base}",
            "smtp_tls_security_level = may",
            "smtp_dns_support_level = disabled",
            "biff = no",
            "",
        ]))
        self.etc = etc

    def start(self) -> None:
        # The postfix command reports to syslog only (absent here): its log file says why it failed.
        done = subprocess.run([POSTFIX, "-c", str(self.etc), "start"], capture_output=True, timeout=30)
        assert done.returncode == 0, self.log.read_text() if self.log.exists() else done

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True, timeout=30)


@pytest.fixture
def postfix(stack: Stack) -> Iterator[Postfix]:
    # Not under pytest's tmp_path: its parents are root-only and Postfix's daemons run as "postfix";
    # a short path too, as its unix sockets live under the queue directory.
    base = Path(tempfile.mkdtemp(prefix="mg-pfx-"))
    base.chmod(0o755)
    server = Postfix(base / "p", "relayed.example.com", stack.mx_port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_into_a_route(
        stack: Stack, postfix: Postfix, receivers: Callable[..., WebhookReceiver],
        endpoints: Callable[..., dict[str, Any]], routes: Callable[..., dict[str, Any]]) -> None:
    app = receivers()
    routes(name="via postfix", match={"recipient": "help@relayed.example.com"},
           actions=[{"type": "webhook", "endpoints": [endpoints(app.url)["id"]]}])
    stack.wait_routed("help@relayed.example.com")
    subject = f"through postfix {uuid.uuid4().hex[:6]}"
    msg = EmailMessage()
    msg["From"] = "dave@sender.example.net"
    msg["To"] = "help+42@relayed.example.com"
    msg["Subject"] = subject
    msg.set_content("Relayed by a real MTA.\n")
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=15) as client:
        client.send_message(msg)

    def arrived() -> list[dict[str, Any]]:
        return [h.json["data"] for h in app.received("inboundMessage") if h.json["data"]["subject"] == subject]
    # Postfix hands the message on at once; the door's refusal or deferral would show in its log.
    data = wait_for(arrived, timeout=30, message=f"the relayed message (postfix log: {postfix.log})")[0]
    assert data["recipient"]["tag"] == "42"
    assert data["envelope"]["helo"] == "relay.postfix.test" and data["envelope"]["tls"]
    assert data["envelope"]["mailFrom"] == "dave@sender.example.net"
