"""SMTP intake: Postfix smtp-source into smtp-ingress (counting only durably queued
messages), vs the same load into a bare aiosmtpd sink and into Postfix smtp-sink."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.context import Bench, Row
from bench.peers import SmtpSink, smtp_source
from tests.support.stack import free_port, wait_for


def _queued(bench: Bench, account: str) -> int:
    with bench.api() as api:
        total: int = api.get("/v1/outbox", params={"account": account, "state": "all", "pageSize": 1}).json()["total"]
        return total


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(bench: Bench, reused: int = 6000, fresh: int = 3000) -> None:
    account = bench.create_account(smtp_port=9)  # the sender is stopped: intake only
    ingress = bench.stack.add_smtp_ingress("smtp-bench", {
        "MAILGATE_SMTP_AUTH": "false", "MAILGATE_SMTP_DEFAULT_ACCOUNT": account,
    })
    bench.stack.services["sender"].kill()
    ingress.start()
    bare_port, sink_port = free_port(), free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare_sink", str(bare_port)])
    try:
        wait_for(lambda: _port_open(bare_port), message="bare aiosmtpd sink")
        port = int(ingress.env["MAILGATE_SMTP_PORT"])
        with SmtpSink(sink_port):
            for reuse, count in ((True, reused), (False, fresh)):
                label = "reused connections" if reuse else "new connection per message"
                before = _queued(bench, account)
                started = time.perf_counter()
                smtp_source(port, count, sessions=20, reuse=reuse)
                elapsed = time.perf_counter() - started
                stored = _queued(bench, account) - before
                bench.commands.append(f"smtp-source {'-d ' if reuse else ''}-s 20 -m {count} -l 1024 "
                                      f"-f bench@example.test -t sink@example.test 127.0.0.1:PORT")
                ours = stored / elapsed
                bare_rate = smtp_source(bare_port, count, sessions=20, reuse=reuse)
                postfix_rate = smtp_source(sink_port, count, sessions=20, reuse=reuse)
                bench.add(Row("SMTP intake", f"durably queued/s, 20 sessions, {label}", ours, "msg/s",
                              "bare aiosmtpd sink (accept and drop)", bare_rate, target="≥ 75% of the bare sink"))
                bench.add(Row("SMTP intake", f"durably queued/s vs Postfix, {label}", ours, "msg/s",
                              "Postfix smtp-sink", postfix_rate))
    finally:
        bare.terminate()
        bare.wait(10)
        ingress.kill()
        del bench.stack.services["smtp-bench"]
        with bench.api() as api:
            api.delete(f"/v1/account/{account}")
        bench.stack.services["sender"].start()
