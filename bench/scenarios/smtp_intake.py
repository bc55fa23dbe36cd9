"""SMTP intake: Postfix smtp-source into smtp-ingress (counting only durably queued
messages) with one replica and with two sharing the port, vs the same load into a
bare aiosmtpd sink and into Postfix smtp-sink."""

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
    env = {"MAILGATE_SMTP_AUTH": "false", "MAILGATE_SMTP_DEFAULT_ACCOUNT": account,
           "MAILGATE_SMTP_REUSE_PORT": "true"}
    first = bench.stack.add_smtp_ingress("smtp-bench", env)
    port = int(first.env["MAILGATE_SMTP_PORT"])
    # A second replica on the same port, as a second pod behind one Service would be:
    # one Python process uses one core, and the kernel spreads connections among them.
    second = bench.stack.add_smtp_ingress("smtp-bench-2", {**env, "MAILGATE_SMTP_PORT": str(port)})
    bench.stack.services["sender"].kill()
    first.start()
    bare_port, sink_port = free_port(), free_port()
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare_sink", str(bare_port)])
    try:
        wait_for(lambda: _port_open(bare_port), message="bare aiosmtpd sink")
        with SmtpSink(sink_port):
            references = {}
            for reuse, count in ((True, reused), (False, fresh)):
                references[reuse] = (smtp_source(bare_port, count, sessions=20, reuse=reuse),
                                     smtp_source(sink_port, count, sessions=20, reuse=reuse))
            for replicas in (1, 2):
                if replicas == 2:
                    second.start()
                for reuse, count in ((True, reused), (False, fresh)):
                    label = "reused connections" if reuse else "new connection per message"
                    label += "" if replicas == 1 else ", 2 replicas"
                    before = _queued(bench, account)
                    started = time.perf_counter()
                    smtp_source(port, count, sessions=20, reuse=reuse)
                    elapsed = time.perf_counter() - started
                    stored = _queued(bench, account) - before
                    bench.commands.append(f"smtp-source {'-d ' if reuse else ''}-s 20 -m {count} -l 1024 "
                                          f"-f bench@example.test -t sink@example.test 127.0.0.1:PORT")
                    ours = stored / elapsed
                    bare_rate, postfix_rate = references[reuse]
                    bench.add(Row("SMTP intake", f"durably queued/s, 20 sessions, {label}", ours, "msg/s",
                                  "bare aiosmtpd sink (accept and drop)", bare_rate,
                                  target="≥ 75% of the bare sink"))
                    bench.add(Row("SMTP intake", f"durably queued/s vs Postfix, {label}", ours, "msg/s",
                                  "Postfix smtp-sink", postfix_rate))
    finally:
        bare.terminate()
        bare.wait(10)
        for name in ("smtp-bench", "smtp-bench-2"):
            bench.stack.services.pop(name).kill()
        with bench.api() as api:
            api.delete(f"/v1/account/{account}")
        bench.stack.services["sender"].start()
