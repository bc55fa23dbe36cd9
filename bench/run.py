"""`make bench`: start the services and real peers, run each scenario for a bounded
time, write bench/results/latest.md and latest.png.

    uv run python -m bench.run [scenario ...]
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

from bench.context import Bench, Row, dump_json, machine_facts, new_stack
from bench.report import write_report
from bench.scenarios import (
    bounce_parsing,
    drain,
    end_to_end,
    imap,
    inbound,
    memory,
    merge,
    rest_submit,
    smtp_client,
    smtp_intake,
    webhooks,
)

SCENARIOS = {
    "memory": memory.run,
    "bounce": bounce_parsing.run,
    "smtp": smtp_intake.run,
    "rest": rest_submit.run,
    "drain": drain.run,
    "smtp-client": smtp_client.run,
    "e2e": end_to_end.run,
    "webhooks": webhooks.run,
    "imap": imap.run,
    "merge": merge.run,
    "inbound": inbound.run,
}
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument("--keep-others", action="store_true",
                        help="keep the figures of scenarios not run this time from results/latest.json")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.scenarios = args.scenarios or list(SCENARIOS)
    started = time.time()
    stack = new_stack()
    try:
        stack.start_default()
        bench = Bench(stack, stack.env.get("MAILGATE_ADMIN_TOKEN"))
        failures: list[str] = []
        for name in args.scenarios:
            print(f"== {name}", flush=True)
            try:
                SCENARIOS[name](bench)
            except Exception:
                failures.append(name)
                traceback.print_exc()
        RESULTS.mkdir(exist_ok=True)
        if args.keep_others and (RESULTS / "latest.json").exists():
            rerun = {bench_row.scenario for bench_row in bench.rows} | set(failures)
            kept = [Row(**r) for r in json.loads((RESULTS / "latest.json").read_text())
                     if r["scenario"] not in rerun]
            bench.rows = kept + bench.rows
        dump_json(RESULTS / "latest.json", bench.rows)
        write_report(RESULTS, bench.rows, bench.commands, machine_facts(), time.time() - started, failures)
        print(f"wrote {RESULTS / 'latest.md'} in {time.time() - started:.0f} s")
        if failures:
            raise SystemExit(f"scenarios failed: {', '.join(failures)}")
    finally:
        stack.destroy()


if __name__ == "__main__":
    main()


__all__ = ["Row", "main"]
