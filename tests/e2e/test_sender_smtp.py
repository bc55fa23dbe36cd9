"""The sender's SMTP client against a real SMTP server (aiosmtpd), with and without
PIPELINING: what arrives, what each refusal means, and when a connection is reused."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest
import uvloop

from mailgate_sender.outcome import Outcome
from mailgate_sender.smtp_client import SmtpPool, SmtpServer
from tests.support.smtp_sink import PASSWORD, SmtpSink
from tests.support.stack import free_port

RAW = (b"From: a@sender.test\r\nTo: b@example.org\r\nSubject: pipelined\r\n\r\n"
       b"first line\r\n.a line that starts with a dot\r\nlone LF\nlast line\r\n")


@pytest.fixture(scope="module", params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    sink = SmtpSink(free_port(), pipelining=request.param)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def pool(sink: SmtpSink) -> AsyncIterator[SmtpPool]:
    pool = SmtpPool(timeout=5.0, helo_name="sender.test")
    yield pool
    pool.close()


def _server(sink: SmtpSink) -> SmtpServer:
    return SmtpServer("127.0.0.1", sink.port, secure=False, user="user", password=PASSWORD.decode())


async def test_messages_arrive_intact_over_one_connection(sink: SmtpSink, pool: SmtpPool) -> None:
    sessions = len(sink.handler.sessions)
    for n in range(3):
        outcome = await pool.deliver(_server(sink), "a@sender.test", [f"intact{n}@example.org"], RAW)
        assert (outcome.kind, outcome.code, outcome.command) == ("sent", 250, "DATA")
        assert outcome.response.startswith("250 2.0.0 Ok: queued as SINK")
    for n in range(3):
        [received] = sink.to(f"intact{n}@example.org")
        assert received.mail_from == "a@sender.test"
        # Dot-stuffing undone by the server, the lone LF sent as CRLF.
        assert received.data.endswith(b"first line\r\n.a line that starts with a dot\r\nlone LF\r\nlast line\r\n")
    assert len(sink.handler.sessions) == sessions + 1


async def test_some_recipients_refused_is_sent_to_the_others(sink: SmtpSink, pool: SmtpPool) -> None:
    outcome = await pool.deliver(_server(sink), "a@sender.test",
                                 ["bounce-x@example.org", "mixed-ok@example.org"], RAW)
    assert outcome.kind == "sent"
    assert outcome.refused.keys() == {"bounce-x@example.org"}
    assert outcome.refused["bounce-x@example.org"].startswith("550 5.1.1")
    [received] = sink.to("mixed-ok@example.org")
    assert received.rcpt_tos == ["mixed-ok@example.org"]


async def test_every_recipient_refused_sends_nothing_and_keeps_the_connection(
        sink: SmtpSink, pool: SmtpPool) -> None:
    sessions = len(sink.handler.sessions)
    outcome = await pool.deliver(_server(sink), "a@sender.test",
                                 ["bounce-1@example.org", "bounce-2@example.org"], RAW)
    assert (outcome.kind, outcome.code, outcome.status) == ("permanent", 550, "5.1.1")
    assert (outcome.command, outcome.error_code) == ("RCPT TO", "EENVELOPE")
    assert outcome.refused.keys() == {"bounce-1@example.org", "bounce-2@example.org"}
    assert sink.to("bounce-1@example.org") == []
    # The failed transaction was reset, not left half-open: the next message
    # goes out on the same connection.
    outcome = await pool.deliver(_server(sink), "a@sender.test", ["after-refusal@example.org"], RAW)
    assert outcome.kind == "sent"
    assert len(sink.to("after-refusal@example.org")) == 1
    assert len(sink.handler.sessions) == sessions + 1


async def test_refused_sender_is_reported_against_mail_from(sink: SmtpSink, pool: SmtpPool) -> None:
    outcome = await pool.deliver(_server(sink), "refuse-me@sender.test", ["never-1@example.org"], RAW)
    assert (outcome.kind, outcome.code, outcome.command) == ("permanent", 550, "MAIL FROM")
    assert outcome.response == "550 5.7.1 Sender refused"
    assert sink.to("never-1@example.org") == []
    outcome = await pool.deliver(_server(sink), "a@sender.test", ["after-mail-refusal@example.org"], RAW)
    assert outcome.kind == "sent"


async def test_421_is_a_temporary_slow_down_and_the_connection_is_not_reused(
        sink: SmtpSink, pool: SmtpPool) -> None:
    tag = "pipe" if sink.handler.pipelining else "step"
    sessions = len(sink.handler.sessions)
    outcome = await pool.deliver(_server(sink), "a@sender.test", [f"throttle1-{tag}@example.org"], RAW)
    assert (outcome.kind, outcome.code, outcome.status, outcome.command) == ("temporary", 421, "4.7.0", "RCPT TO")
    outcome = await pool.deliver(_server(sink), "a@sender.test", [f"throttle1-{tag}@example.org"], RAW)
    assert outcome.kind == "sent"
    assert len(sink.to(f"throttle1-{tag}@example.org")) == 1
    assert len(sink.handler.sessions) == sessions + 2


async def test_a_reply_the_server_sends_while_idle_retires_the_connection(
        sink: SmtpSink, pool: SmtpPool) -> None:
    server = _server(sink)
    assert (await pool.deliver(server, "a@sender.test", ["before-notice@example.org"], RAW)).kind == "sent"
    sessions = len(sink.handler.sessions)
    session = sink.handler.sessions[-1]
    # What servers send before hanging up on an idle client; it must not be
    # taken as the reply to the next MAIL.
    sink.controller.loop.call_soon_threadsafe(session.transport.write, b"421 4.4.2 Idle too long\r\n")
    [(connection, _)] = pool._idle[server]
    for _ in range(500):  # until the client has read it (at most 5 s)
        if not connection.usable:
            break
        await asyncio.sleep(0.01)
    assert not connection.usable
    outcome = await pool.deliver(server, "a@sender.test", ["after-notice@example.org"], RAW)
    assert outcome.kind == "sent"
    assert len(sink.to("after-notice@example.org")) == 1
    assert len(sink.handler.sessions) == sessions + 1


async def test_a_connection_the_server_closed_while_idle_is_replaced(sink: SmtpSink, pool: SmtpPool) -> None:
    server = _server(sink)
    assert (await pool.deliver(server, "a@sender.test", ["before-close@example.org"], RAW)).kind == "sent"
    sessions = len(sink.handler.sessions)
    sink.controller.loop.call_soon_threadsafe(sink.handler.sessions[-1].transport.close)
    outcome = await pool.deliver(server, "a@sender.test", ["after-close@example.org"], RAW)
    assert outcome.kind == "sent"
    assert len(sink.to("after-close@example.org")) == 1
    assert len(sink.handler.sessions) == sessions + 1


async def test_a_connection_lost_after_the_message_was_written_is_an_unknown_outcome_not_retried(
        sink: SmtpSink, pool: SmtpPool) -> None:
    server = _server(sink)
    tag = "pipe" if sink.handler.pipelining else "step"
    assert (await pool.deliver(server, "a@sender.test", [f"before-hangup-{tag}@example.org"], RAW)).kind == "sent"
    # Reused connection, dropped after the server took the message: sending it
    # again on a fresh connection could deliver it twice, and so could a retry.
    outcome = await pool.deliver(server, "a@sender.test", [f"hangup-{tag}@example.org"], RAW)
    assert (outcome.kind, outcome.error_code, outcome.command) == ("unknown", "EUNKNOWNOUTCOME", "DATA")
    assert len(sink.to(f"hangup-{tag}@example.org")) == 1


async def test_a_server_silent_after_the_message_is_an_unknown_outcome(sink: SmtpSink) -> None:
    pool = SmtpPool(timeout=5.0, helo_name="sender.test", data_timeout=0.5)
    tag = "pipe" if sink.handler.pipelining else "step"
    try:
        outcome = await pool.deliver(_server(sink), "a@sender.test", [f"slow-{tag}@example.org"], RAW)
    finally:
        pool.close()
    assert (outcome.kind, outcome.error_code, outcome.command) == ("unknown", "EUNKNOWNOUTCOME", "DATA")


async def test_a_server_silent_before_the_message_times_out_as_temporary(sink: SmtpSink) -> None:
    pool = SmtpPool(timeout=0.5, helo_name="sender.test")
    tag = "pipe" if sink.handler.pipelining else "step"
    try:
        outcome = await pool.deliver(_server(sink), "a@sender.test", [f"slowrcpt-silent-{tag}@example.org"], RAW)
    finally:
        pool.close()
    assert (outcome.kind, outcome.error_code, outcome.command) == ("temporary", "ETIMEDOUT", "RCPT TO")
    assert sink.to(f"slowrcpt-silent-{tag}@example.org") == []


async def test_the_verdict_on_a_message_is_waited_for_longer_than_a_command_reply(sink: SmtpSink) -> None:
    # RFC 5321 4.5.3.2.6: servers may take minutes (content scanning) to answer the final dot.
    pool = SmtpPool(timeout=0.5, helo_name="sender.test", data_timeout=5.0)
    tag = "pipe" if sink.handler.pipelining else "step"
    try:
        outcome = await pool.deliver(_server(sink), "a@sender.test", [f"slow-verdict-{tag}@example.org"], RAW)
    finally:
        pool.close()
    assert (outcome.kind, outcome.code) == ("sent", 250)
    assert len(sink.to(f"slow-verdict-{tag}@example.org")) == 1


async def test_wrong_password_is_an_auth_failure(sink: SmtpSink, pool: SmtpPool) -> None:
    server = SmtpServer("127.0.0.1", sink.port, secure=False, user="user", password="wrong")
    outcome = await pool.deliver(server, "a@sender.test", ["never-2@example.org"], RAW)
    assert (outcome.kind, outcome.command, outcome.error_code) == ("permanent", "AUTH", "EAUTH")


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # the services run uvloop
@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_connections_are_taken_over_and_reused(server_tls: ssl.SSLContext, tls: str, loop: str) -> None:
    sink = SmtpSink(free_port(), starttls=server_tls if tls == "starttls" else None,
                    implicit_tls=server_tls if tls == "implicit" else None)
    server = SmtpServer("127.0.0.1", sink.port, secure=tls == "implicit", user="user",
                        password=PASSWORD.decode(), verify_tls=False)
    recipients = [f"tls-{tls}-{loop}-{n}@example.org" for n in range(3)]

    async def deliver_all() -> list[Outcome]:
        pool = SmtpPool(timeout=5.0, helo_name="sender.test")
        try:
            return [await pool.deliver(server, "a@sender.test", [rcpt], RAW) for rcpt in recipients]
        finally:
            pool.close()

    sink.start()
    try:
        outcomes = (uvloop.run if loop == "uvloop" else asyncio.run)(deliver_all())
    finally:
        sink.stop()
    assert [o.kind for o in outcomes] == ["sent"] * 3, outcomes
    for rcpt in recipients:
        [received] = sink.to(rcpt)
        assert received.tls
        assert received.data.endswith(b".a line that starts with a dot\r\nlone LF\r\nlast line\r\n")
    assert len({id(session) for session in sink.handler.sessions}) == 1  # one connection for all three


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("tls", ["plain", "starttls", "implicit"])
def test_a_large_message_is_streamed_whole_over_each_transport(server_tls: ssl.SSLContext, tls: str, loop: str) -> None:
    # Written in pieces with flow control (the transport pauses and resumes the
    # writer), through each kind of transport the services may get.
    sink = SmtpSink(free_port(), starttls=server_tls if tls == "starttls" else None,
                    implicit_tls=server_tls if tls == "implicit" else None)
    server = SmtpServer("127.0.0.1", sink.port, secure=tls == "implicit", user="user",
                        password=PASSWORD.decode(), verify_tls=False)
    # 6 MB, every other line starting with a dot (stuffed, piece by piece).
    raw = b"Subject: large\r\n\r\n" + b"".join(b".%07d " % n + b"x" * 90 + b"\r\n" if n % 2 else b"%07d \r\n" % n
                                                  for n in range(120_000))
    rcpt = f"large-{tls}-{loop}@example.org"

    async def deliver() -> Outcome:
        pool = SmtpPool(timeout=5.0, helo_name="sender.test")
        try:
            return await pool.deliver(server, "a@sender.test", [rcpt], raw)
        finally:
            pool.close()

    sink.start()
    try:
        outcome = (uvloop.run if loop == "uvloop" else asyncio.run)(deliver())
    finally:
        sink.stop()
    assert outcome.kind == "sent", outcome
    [received] = sink.to(rcpt)
    assert received.data == raw
