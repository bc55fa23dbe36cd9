"""Real peers and load generators for the benchmarks: Postfix's smtp-sink and
smtp-source, wrk, a bare aiosmtpd sink, and an open-loop HTTP load at a fixed rate."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        raise SystemExit(f"bench needs {binary}; run `make setup-bench`")
    return path


class SmtpSink:
    """Postfix smtp-sink: accepts and drops everything, the protocol's ceiling."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SmtpSink:
        self.proc = subprocess.Popen(
            [require("smtp-sink"), "-u", "nobody", "-c", f"127.0.0.1:{self.port}", "1024"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.2)
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(5)


def smtp_source(port: int, messages: int, sessions: int = 20, reuse: bool = True,
                size: int = 1024, timeout: float = 120) -> float:
    """Send with smtp-source; returns messages per second."""
    args = [require("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", "bench@example.test", "-t", "sink@example.test", f"127.0.0.1:{port}"]
    if reuse:
        args.insert(1, "-d")
    started = time.perf_counter()
    subprocess.run(["timeout", str(timeout), *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return messages / (time.perf_counter() - started)


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    requests: int
    command: str


def _ms(value: str) -> float:
    found = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if found is None:
        raise RuntimeError(f"unexpected wrk latency {value!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk_post(url: str, body: bytes, headers: dict[str, str], connections: int,
             seconds: int = 10, threads: int = 2) -> WrkResult:
    """Closed-loop POST load with wrk (C, so the load generator costs little CPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        lua = Path(tmp) / "post.lua"
        header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        lua.write_text(
            f'wrk.method = "POST"\nlocal f = io.open("{body_path}", "rb")\n'
            f"wrk.body = f:read(\"*a\")\nf:close()\n{header_lines}\n"
        )
        command = [require("wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                   "--latency", "-s", str(lua), url]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "Latency Distribution" not in out or "Requests/sec" not in out:
        raise RuntimeError(f"wrk gave no figures:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: a "+/- Stdev" column such as "68.50%" must not pass for the 50th percentile.
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return WrkResult(rps, p50, p99, int(non2xx.group(1)) if non2xx else 0, total,
                     " ".join([*command[:-3], "-s", "post.lua", url]))


@dataclass
class OpenLoopResult:
    sent: int
    ok: int
    latencies_ms: list[float] = field(default_factory=list)
    started_at: dict[str, float] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def open_loop(url: str, bodies: list[bytes], rate: float, headers: dict[str, str]) -> OpenLoopResult:
    """Fire requests at a fixed rate regardless of answers (no coordinated omission).

    aiohttp, not httpx: at a fixed 100 req/s httpx's connection pool showed p50
    3.2 s where aiohttp, against the same server in the same run, showed 57 ms
    (the server's own handling time stayed under 0.3 s): the figure measured the
    client."""
    result = OpenLoopResult(sent=len(bodies), ok=0)
    connector = aiohttp.TCPConnector(limit=400)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers={"content-type": "application/json", **headers}) as client:

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            wall = time.time()
            try:
                async with client.post(url, data=body) as response:
                    answer = await response.read()
            except (aiohttp.ClientError, TimeoutError):
                return  # counted as not accepted (sent - ok)
            if response.status == 200:
                result.ok += 1
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                result.started_at[json.loads(answer)["queueId"]] = wall

        tasks = []
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return result
