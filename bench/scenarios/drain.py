"""Drain: 20,000 queued messages delivered into Postfix smtp-sink, vs smtp-source's own rate."""

from __future__ import annotations

import subprocess
import time

from bench.context import Bench, Row
from bench.peers import SmtpSink, smtp_source
from tests.support.stack import free_port

RAW = ("From: bench@bench.test\r\nTo: rcpt@example.org\r\nSubject: drain\r\n"
       "Message-ID: <{id}@bench.test>\r\nMIME-Version: 1.0\r\n\r\n" + "x" * 1000 + "\r\n")

INSERT = """
INSERT INTO outbox (id, account_id, source, message_id, envelope_from, envelope_to, subject, raw,
                    state, send_at, next_attempt_at, max_attempts)
SELECT 'drain' || g || '-' || '{tag}', '{account}', 'api', '<' || g || '@bench.test>', 'bench@bench.test',
       ARRAY['rcpt@example.org'], 'drain', convert_to(replace($raw${raw}$raw$, '{{id}}', g::text), 'UTF8'),
       'queued', now(), now(), 3
FROM generate_series(1, {count}) g
"""


def _psql(bench: Bench, sql: str) -> str:
    db = bench.stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    return subprocess.run(["psql", db, "-tAq", "-c", sql], check=True, capture_output=True, text=True).stdout.strip()


def run(bench: Bench, count: int = 20000) -> None:
    port = free_port()
    with SmtpSink(port):
        account = bench.create_account(port)
        reference = smtp_source(port, count, sessions=20, reuse=True)
        bench.commands.append(f"smtp-source -d -s 20 -m {count} -l 1024 … 127.0.0.1:{port}")
        for replicas in (1, 2):
            sender = bench.stack.services["sender"]
            sender.kill()
            extra = [bench.stack.add_worker(f"sender-{i}", "mailgate-sender") for i in range(1, replicas)]
            tag = f"r{replicas}"
            _psql(bench, INSERT.format(tag=tag, account=account, raw=RAW, count=count))
            started = time.perf_counter()
            sender.start(wait=False)
            for worker in extra:
                worker.start(wait=False)
            deadline = started + 600
            while time.perf_counter() < deadline:
                done = int(_psql(bench, f"SELECT count(*) FROM outbox WHERE id LIKE 'drain%-{tag}' "
                                        "AND state IN ('sent', 'failed')"))
                if done >= count:
                    break
                time.sleep(0.5)
            elapsed = time.perf_counter() - started
            sent = int(_psql(bench, f"SELECT count(*) FROM outbox WHERE id LIKE 'drain%-{tag}' AND state = 'sent'"))
            for worker in extra:
                worker.kill()
                del bench.stack.services[worker.name]
            sender.wait_ready()
            bench.add(Row("Drain", f"{count:,} queued -> smtp-sink, {replicas} sender(s)", sent / elapsed,
                          "msg/s", "smtp-source -> smtp-sink (20 sessions)", reference,
                          target="≥ 1,000/s" if replicas == 1 else ""))
