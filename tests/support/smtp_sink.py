"""A real SMTP server (aiosmtpd) to deliver to, with scripted answers per address.

    bounce-*@…   -> 550 5.1.1 at RCPT (permanent)
    defer-*@…    -> 451 4.7.1 at RCPT, always (temporary)
    deferN-*@…   -> 451 4.3.0 the first N times that address is offered, then accepted
    slow-*@…     -> accepted after a 2 s pause at DATA
    throttleN-*@…-> 421 4.7.0 "slow down" the first N times, then accepted
    refuse-*@…   -> 550 5.7.1 at MAIL (as envelope sender)
    hangup-*@…   -> kept, then the connection is closed before the reply to
                    the message (the client cannot know it was accepted)
    slowrcpt-*@… -> accepted after a 3 s pause at RCPT (a client killed meanwhile
                    has not handed over the message yet)
    slowdotN-*@… -> kept, then answered after N seconds (a server scanning the
                    message before its verdict on the final dot)
    silent-*@…   -> kept, then never answered (until the client hangs up)
Everything else is accepted and kept in ``messages``.  AUTH PLAIN/LOGIN
is offered (unless ``auth=False``: a relay that trusts its clients' addresses);
any user with password ``smtp-password`` gets in.  PIPELINING is
offered, as by Postfix, Exchange and Gmail, unless the sink is told otherwise.
DSN (RFC 3461) is offered with ``dsn=True``; each message keeps its MAIL and
RCPT parameters, and the client's address and EHLO name.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

PASSWORD = b"smtp-password"


class _NoLoginDataWarning(logging.Filter):
    # aiosmtpd warns about its own use of the deprecated Session.login_data on every AUTH.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_NoLoginDataWarning())


def _authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: object) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD
    # handled=False: aiosmtpd then answers 535 itself (its default, True, sends no reply at all).
    # auth_data kept on the session: who logged in (``SmtpSink.sessions_of``).
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float
    tls: bool = False  # arrived over TLS (implicit or STARTTLS)
    mail_options: list[str] = field(default_factory=list)  # as sent (DSN values keep their case)
    rcpt_options: dict[str, list[str]] = field(default_factory=dict)
    peer: str = ""  # the client's address
    ehlo: str = ""  # the name the client greeted with

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


_DSN_PARAMS = ("RET=", "ENVID=", "NOTIFY=", "ORCPT=")


def _take_dsn(arg: str) -> tuple[str, list[str]]:
    """``arg`` without its DSN parameters (aiosmtpd refuses parameters it does not know), and those."""
    words = arg.split(" ")
    taken = [w for w in words if w.upper().startswith(_DSN_PARAMS)]
    return " ".join(w for w in words if w not in taken), taken


class DsnSmtp(SMTP):
    """aiosmtpd's server, taking DSN parameters off MAIL and RCPT before it reads them."""

    offers_dsn = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.dsn_mail: list[str] = []
        self.dsn_rcpt: dict[str, list[str]] = {}

    async def smtp_MAIL(self, arg: str) -> None:
        if self.offers_dsn and arg:
            arg, self.dsn_mail = _take_dsn(arg)
            self.dsn_rcpt = {}
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        if self.offers_dsn and arg:
            arg, taken = _take_dsn(arg)
            address = arg.split(":", 1)[-1].split(" ", 1)[0].strip().strip("<>")
            self.dsn_rcpt[address] = taken
        await super().smtp_RCPT(arg)


class _Controller(Controller):
    def __init__(self, *args: object, dsn: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.dsn = dsn

    def factory(self) -> SMTP:
        server = DsnSmtp(self.handler, **self.SMTP_kwargs)
        server.offers_dsn = self.dsn
        return server


@dataclass
class SinkHandler:
    pipelining: bool = True
    dsn: bool = False
    auth: bool = True
    messages: list[Received] = field(default_factory=list)
    offered: Counter[str] = field(default_factory=Counter)
    sessions: list[SMTP] = field(default_factory=list)  # one per EHLO, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.sessions.append(server)
        if self.pipelining:  # aiosmtpd reads commands in order, so pipelining just works
            responses.insert(-1, "250-PIPELINING")
        if self.dsn:
            responses.insert(-1, "250-DSN")
        if not self.auth:  # aiosmtpd offers AUTH even without an authenticator
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if address.split("@", 1)[0].lower().startswith("refuse-"):
            return "550 5.7.1 Sender refused"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        local = address.split("@", 1)[0].lower()
        with self.lock:
            self.offered[address.lower()] += 1
            seen = self.offered[address.lower()]
        if local.startswith("slowrcpt-"):
            await asyncio.sleep(3)
        if local.startswith("bounce-"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("defer-"):
            return f"451 4.7.1 <{address}>: Try again later"
        throttled = re.match(r"throttle(\d+)-", local)
        if throttled and seen <= int(throttled.group(1)):
            return "421 4.7.0 Too many messages, slow down"
        found = re.match(r"defer(\d+)-", local)
        if found and seen <= int(found.group(1)):
            return f"451 4.3.0 <{address}>: Temporary failure {seen}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if any(r.split("@")[0].lower().startswith("slow-") for r in envelope.rcpt_tos):
            await asyncio.sleep(2)
        data = envelope.original_content or envelope.content or b""
        assert isinstance(data, bytes)
        with self.lock:
            tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
            dsn_mail = server.dsn_mail if isinstance(server, DsnSmtp) else []
            dsn_rcpt = server.dsn_rcpt if isinstance(server, DsnSmtp) else {}
            self.messages.append(Received(
                envelope.mail_from or "", list(envelope.rcpt_tos), data, time.time(), tls,
                [*envelope.mail_options, *dsn_mail], {r: dsn_rcpt.get(r, []) for r in envelope.rcpt_tos},
                str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer),
                str(session.host_name or ""),
            ))
            number = len(self.messages)
        locals_ = [r.split("@")[0].lower() for r in envelope.rcpt_tos]
        if any(local.startswith("hangup-") for local in locals_):
            assert server.transport is not None
            server.transport.close()
        if any(local.startswith("silent-") for local in locals_):
            await asyncio.Event().wait()  # cancelled when the client goes away
        for local in locals_:
            if slow := re.match(r"slowdot(\d+)-", local):
                await asyncio.sleep(int(slow.group(1)))
        return f"250 2.0.0 Ok: queued as SINK{number}"


class SmtpSink:
    def __init__(self, port: int, pipelining: bool = True, starttls: ssl.SSLContext | None = None,
                 implicit_tls: ssl.SSLContext | None = None, auth: bool = True, dsn: bool = False) -> None:
        self.handler = SinkHandler(pipelining, dsn, auth)
        self.port = port
        self.controller = _Controller(
            self.handler, hostname="127.0.0.1", port=port, decode_data=False,
            data_size_limit=50 * 1024 * 1024,
            authenticator=_authenticate if auth else None, auth_require_tls=False,
            tls_context=starttls, ssl_context=implicit_tls, dsn=dsn,
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def sessions_of(self, user: str) -> list[SMTP]:
        """The sessions (in order) that logged in as ``user``."""
        with self.handler.lock:
            sessions = list(self.handler.sessions)
        return [s for s in sessions if s.session is not None and isinstance(s.session.auth_data, LoginPassword)
                and s.session.auth_data.login == user.encode()]

    def to(self, address: str) -> list[Received]:
        with self.handler.lock:
            return [m for m in self.handler.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    def with_header(self, name: str, value: str) -> list[Received]:
        with self.handler.lock:
            messages = list(self.handler.messages)
        return [m for m in messages if str(m.message.get(name, "")).strip() == value]
