"""Resident memory of the idle five-service stack, vs five bare Python interpreters."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.context import Bench, Row, new_stack
from tests.support.stack import Stack


def rss_kb(pid: int) -> int:
    """RSS of a process and its children (uvicorn workers)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            total += rss_kb(int(child))
    return total


def run(bench: Bench) -> None:
    # The default configuration (one API process), not the benchmark's tuned one.
    stack = new_stack({"MAILGATE_API_WORKERS": "1"})
    try:
        stack.start_default()
        time.sleep(5)
        _measure(bench, stack)
    finally:
        stack.destroy()


def _measure(bench: Bench, stack: Stack) -> None:
    services = {name: s for name, s in stack.services.items() if s.proc is not None}
    ours = sum(rss_kb(s.proc.pid) for s in services.values() if s.proc) / 1024
    bare = [subprocess.Popen([sys.executable, "-c", "import asyncio, time; time.sleep(30)"]) for _ in services]
    time.sleep(1)
    reference = sum(rss_kb(p.pid) for p in bare) / 1024
    for p in bare:
        p.kill()
    detail = ", ".join(f"{n} {rss_kb(s.proc.pid) / 1024:.0f}" for n, s in services.items() if s.proc)
    bench.add(Row("Memory", f"idle stack RSS, {len(services)} processes ({detail} MB)", ours, "MB",
                  f"{len(services)} bare Python interpreters", reference, higher_is_better=False,
                  target="< 400 MB"))
