"""Bounce parsing speed over the Sisimai corpus, vs the stdlib parser alone."""

from __future__ import annotations

import email
import time
from pathlib import Path

from bench.context import Bench, Row
from mailgate_common.bounces import parse_bounce

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "data" / "bounces" / "sisimai" / "maildir"


def run(bench: Bench, rounds: int = 3) -> None:
    files = [p.read_bytes() for p in sorted(CORPUS.rglob("*")) if p.is_file()]
    t0 = time.perf_counter()
    for _ in range(rounds):
        for raw in files:
            parse_bounce(raw)
    ours = len(files) * rounds / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(rounds):
        for raw in files:
            email.message_from_bytes(raw)
    reference = len(files) * rounds / (time.perf_counter() - t0)
    bench.add(Row("Bounce parsing", f"messages/s over {len(files)} corpus files", ours, "msg/s",
                  "email.message_from_bytes alone", reference))
