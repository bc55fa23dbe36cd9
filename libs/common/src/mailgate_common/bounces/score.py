"""Score parse_bounce() against a corpus with an expectations.jsonl (see its README).

uv run python -m mailgate_common.bounces.score tests/data/bounces/sisimai
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .model import BounceReport
from .parser import parse_bounce


@dataclass
class Ratio:
    hit: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.total += 1
        self.hit += int(ok)

    @property
    def rate(self) -> float:
        return self.hit / self.total if self.total else 1.0

    def __str__(self) -> str:
        if not self.total:
            return "-"
        return f"{100 * self.rate:5.1f}% ({self.hit}/{self.total})"


@dataclass
class FolderScore:
    files: int = 0
    detection: Ratio = field(default_factory=Ratio)
    recipient: Ratio = field(default_factory=Ratio)
    status: Ratio = field(default_factory=Ratio)
    reason: Ratio = field(default_factory=Ratio)
    false_positives: Ratio = field(default_factory=Ratio)  # hit = wrongly called a bounce
    complaints: Ratio = field(default_factory=Ratio)
    autoreplies: Ratio = field(default_factory=Ratio)
    delivered: Ratio = field(default_factory=Ratio)
    misses: list[str] = field(default_factory=list)


@dataclass
class CorpusScore:
    folders: dict[str, FolderScore]
    messages: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else float("inf")


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0]


def score_corpus(root: Path) -> CorpusScore:
    rows = [
        json.loads(line)
        for line in (root / "expectations.jsonl").read_text().splitlines()
        if line.strip()
    ]
    by_file: dict[str, list[dict[str, object]]] = defaultdict(list)
    for row in rows:
        by_file[str(row["file"])].append(row)

    reports: dict[str, BounceReport] = {}
    started = time.perf_counter()
    for name in by_file:
        reports[name] = parse_bounce((root / name).read_bytes())
    seconds = time.perf_counter() - started

    folders: dict[str, FolderScore] = defaultdict(FolderScore)
    for name, expected in sorted(by_file.items()):
        score = folders[_folder(name)]
        score.files += 1
        report = reports[name]
        first = expected[0]
        if not first["is_bounce"]:
            score.false_positives.add(report.kind == "bounce")
            if first["kind"] == "feedback":
                score.complaints.add(report.kind == "complaint")
            elif first["kind"] == "vacation":
                score.autoreplies.add(report.kind == "autoreply")
            elif first["kind"] == "delivered":
                score.delivered.add(report.kind == "delivered")
            if report.kind == "bounce":
                score.misses.append(f"{name}: false positive")
            continue
        score.detection.add(report.kind == "bounce")
        if report.kind != "bounce":
            score.misses.append(f"{name}: not detected (kind={report.kind})")
        found = {r.address.lower(): r for r in report.recipients}
        for row in expected:
            want = row["recipient"]
            if not isinstance(want, str):
                continue
            got = found.get(want.lower())
            score.recipient.add(got is not None)
            if got is None:
                score.misses.append(f"{name}: recipient {want} not in {sorted(found)}")
            if row["status"] and not row.get("status_is_sisimai_pseudo", False):
                ok = got is not None and got.status == row["status"]
                score.status.add(ok)
                if got is not None and not ok:
                    score.misses.append(f"{name}: status {got.status} != {row['status']}")
            if row["reason"]:
                ok = got is not None and got.reason == row["reason"]
                score.reason.add(ok)
                if got is not None and not ok:
                    score.misses.append(f"{name}: reason {got.reason} != {row['reason']}")
    return CorpusScore(dict(sorted(folders.items())), len(reports), seconds)


def format_table(result: CorpusScore) -> str:
    head = (
        "folder",
        "files",
        "detection",
        "recipient",
        "status",
        "reason",
        "false-pos",
        "complaints",
        "auto-replies",
        "delivered",
    )
    rows = [head]
    for folder, s in result.folders.items():
        rows.append(
            (
                folder,
                str(s.files),
                str(s.detection),
                str(s.recipient),
                str(s.status),
                str(s.reason),
                str(s.false_positives),
                str(s.complaints),
                str(s.autoreplies),
                str(s.delivered),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.append(
        f"{result.messages} messages in {result.seconds:.2f}s = "
        f"{result.per_second:.0f} messages/second"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args
    paths = [a for a in args if a != "-v"]
    root = Path(paths[0] if paths else "tests/data/bounces/sisimai")
    result = score_corpus(root)
    print(format_table(result))
    if verbose:
        for folder in result.folders.values():
            for miss in folder.misses:
                print(miss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
