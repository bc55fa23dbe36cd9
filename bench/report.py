"""Write the benchmark table (markdown) and chart (PNG)."""

from __future__ import annotations

from pathlib import Path

from bench.context import Row


def write_report(folder: Path, rows: list[Row], commands: list[str], facts: dict[str, str],
                 seconds: float, failures: list[str]) -> None:
    lines = [
        "# mailgate benchmark results",
        "",
        f"Produced by `make bench` (`uv run python -m bench.run`) in {seconds:.0f} s.",
        "Every figure is paired with a reference measured in the same run on the same machine;",
        "ratio = figure / reference (for latencies, lower is better, so a ratio above 1 means slower).",
        "",
        "| scenario | figure | value | reference | reference value | ratio | target |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r.scenario} | {r.figure} | {r.value:,.1f} {r.unit} | {r.reference} | "
                     f"{r.reference_value:,.1f} {r.unit} | {r.ratio:.2f} | {r.target} |")
    if failures:
        lines += ["", f"**Scenarios that failed this run:** {', '.join(failures)}"]
    lines += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", "## Load commands", ""] + [f"- `{c}`" for c in dict.fromkeys(commands)]
    (folder / "latest.md").write_text("\n".join(lines) + "\n")
    _chart(folder / "latest.png", rows)


def _chart(path: Path, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.scenario}: {r.figure}" for r in rows]
    ratios = [r.ratio for r in rows]
    colors = ["#2e7d32" if r.higher_is_better else "#1565c0" for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.5))
    ax.barh(labels, ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to the reference measured in the same run "
                  "(green: throughput, higher is better; blue: latency, lower is better)")
    ax.set_title("mailgate vs reference")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
