"""``python -m mlcore_bench.markdown bench.json``: a report as compact Markdown tables.

One row per case, batch and dtype, one column per competitor (median time), then the
ratios of the mlcore numpy backend; the targets and the recommendation follow. This is
how docs/benchmarks.md is refreshed from a ``mlcore bench --json`` run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .report import fmt_bytes, fmt_ratio, fmt_time

__all__ = ["to_markdown"]


def _load(load: list[float] | None) -> str:
    return "?" if not load else "/".join(f"{x:.2f}" for x in load)


def _cell(row: dict[str, Any] | None) -> str:
    if row is None or row["status"] != "ok":
        return "cut" if row is not None and row["status"] == "cut" else "n/a"
    return fmt_time(row["median_s"])


def _ratio(entry: dict[str, Any], a: str, b: str) -> str:
    r = next((r for r in entry["ratios"] if r["a"] == a and r["b"] == b), None)
    return fmt_ratio(r)


def _table(report: dict[str, Any], groups: tuple[str, ...]) -> list[str]:
    labels = [c["label"] for c in report["competitors"] if c["available"]]
    torch = "torch-cpu" in labels
    head = ["case", "batch", "dtype", *labels, "numpy / hand", *(["numpy / torch"] * torch),
            "strict / numpy", "numpy mem", "check"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in report["results"]:
        if e["group"] not in groups:
            continue
        cells = [e["case"], str(e["batch"]), e["dtype"]]
        cells += [_cell(e["rows"].get(label)) for label in labels]
        cells += [_ratio(e, "numpy", "numpy-hand"),
                  *([_ratio(e, "numpy", "torch-cpu")] * torch), _ratio(e, "strict", "numpy")]
        numpy_row = e["rows"].get("numpy", {})
        cells.append(fmt_bytes(numpy_row.get("peak_memory_bytes")))
        cells.append("ok" if e["check"]["passed"] else "FAIL")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, Python {m['python']}; "
           f"load average (1, 5, 15 min) before the run {_load(m.get('load_average'))}, "
           f"after {_load(m.get('load_average_after'))}; commit "
           f"`{m['commit'][:10] if m['commit'] else 'none (installed from wheels)'}`"
           f"{' (with local edits)' if m['dirty'] else ''}; "
           f"{report['created']}; {report['elapsed_s']:.0f} s.", ""]
    out += ["Thread pools: " + "; ".join(
        f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('num_threads')} threads)"
        for p in m["thread_pools"]) + f"; torch threads {m['torch_threads']}.", ""]
    out += ["Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", ""]
    if m.get("kernels"):
        out += ["Backend kernels: " + "; ".join(f"{k}: {v}" for k, v in m["kernels"].items())
                + ".", ""]
    out += ["### Training steps, Dense, end-to-end", ""]
    out += [*_table(report, ("mlp_step", "dense", "fit", "train", "tutorial")), ""]
    out += ["### Activations and losses (forward + backward)", ""]
    out += [*_table(report, ("activation", "loss")), ""]
    out += ["### Targets", "", "| target | ratio, median [min-max] | limit | verdict |",
            "|---|---|---|---|"]
    for t in report["targets"]:
        verdict = "n/a" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")
        out.append(f"| {t['target']} | {fmt_ratio(t['ratio'])} | {t['op']} {t['limit']:g} | "
                   f"{verdict} |")
    out += ["", "### Recommendation", ""] + [f"- {line}" for line in report["recommendations"]]
    if report.get("recommendation_withheld"):
        out.append(f"- withheld: {report['recommendation_withheld']}")
    na = [c for c in report["competitors"] if not c["available"]]
    out += [f"- {c['label']}: n/a here ({c['reason']})" for c in na]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(to_markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
