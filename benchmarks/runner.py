"""The benchmark runner behind ``mlcore bench`` and ``python -m benchmarks``.

For each dtype and case it builds every competitor (mlcore on each installed backend, the
hand-written NumPy reference, PyTorch on CPU and CUDA), runs each once and checks that
they computed the same thing, measures peak memory on a second untimed call, then times
them interleaved (:mod:`benchmarks.timing`). The report is a plain dict, JSON-ready.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from . import bench_mlcore, bench_reference, cases, machine
from .cases import Case, TrainCase
from .timing import (
    Bench,
    Settings,
    Stats,
    UnavailableError,
    clock_name,
    measure,
    peak_memory,
    ratio,
)

__all__ = ["Options", "Competitor", "main", "run", "competitors", "TOLERANCE"]

TOLERANCE = 1e-4
"""Largest relative error (norm-wise, per array) allowed against the check's reference."""

REFERENCES = ("numpy-hand", "torch-cpu", "torch-cuda")


@dataclass
class Options:
    quick: bool = False
    backends: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=lambda: ["float32", "float64"])
    cases: list[str] = field(default_factory=list)
    rounds: int | None = None
    threads: int | None = None  # cap BLAS/OpenMP pools and PyTorch (None: library defaults)
    echo: Callable[[str], None] = print

    def settings(self, case: Case) -> Settings:
        if isinstance(case, TrainCase):
            return Settings(rounds=self.rounds or (2 if self.quick else 3), samples=1,
                            block_s=0.0, warmup=0)
        if self.quick:
            return Settings(rounds=self.rounds or 2, samples=3, block_s=0.002, warmup=1,
                            pause_s=0.1)
        return Settings(rounds=self.rounds or 5)


@dataclass
class Competitor:
    """A row label, what it is, and how to build its bench for a case and dtype."""

    label: str
    kind: str  # "mlcore" or "reference"
    make: Callable[[Case, Any], Bench]
    reason: str = ""  # why it cannot run at all here ("" when it can)


def competitors(wanted: list[str]) -> list[Competitor]:
    """mlcore on every installed backend, then the references, filtered by ``wanted``.

    ``wanted`` names backends and/or references; references stay unless one is named.
    """
    import mlcore

    rows = [Competitor(n, "mlcore", partial(bench_mlcore.make, name=n), bench_mlcore.status(n))
            for n in mlcore.backend_names()]
    rows.append(Competitor("numpy-hand", "reference", bench_reference.make_hand))
    rows.append(Competitor("mlcore-steps", "reference", bench_mlcore.make_steps,
                           bench_mlcore.status("numpy")))
    rows += [Competitor(f"torch-{dev}", "reference",
                        partial(bench_reference.make_torch, device=dev),
                        bench_reference.torch_status(dev)) for dev in ("cpu", "cuda")]
    if wanted:
        keep_refs = not any(w in REFERENCES for w in wanted)
        rows = [r for r in rows if r.label in wanted or (keep_refs and r.kind == "reference")]
    return rows


def _rel_error(a: Any, b: Any) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return float("inf")
    scale = float(np.linalg.norm(b64))
    return float(np.linalg.norm(a64 - b64)) / (scale if scale > 0 else 1.0)


def check(case: Case, results: dict[str, list[Any]]) -> dict[str, Any]:
    """Compare every competitor's first-call result with the reference's."""
    if isinstance(case, TrainCase):
        errors = {k: (0.0 if r[1] >= case.target else float("inf")) for k, r in results.items()}
        return {"reference": None, "tolerance": case.target, "errors": errors,
                "epochs": {k: r[0] for k, r in results.items()},
                "accuracy": {k: r[1] for k, r in results.items()},
                "passed": all(e == 0 for e in errors.values())}
    ref = next((k for k in REFERENCES if k in results), next(iter(results), None))
    errors = {}
    for label, res in results.items():
        pairs = list(zip(res, results[ref], strict=False)) if ref else []
        errors[label] = max((_rel_error(a, b) for a, b in pairs), default=0.0)
        if ref and len(res) != len(results[ref]):
            errors[label] = float("inf")
    return {"reference": ref, "tolerance": TOLERANCE, "errors": errors,
            "passed": all(e <= TOLERANCE for e in errors.values())}


def _prepare(comp: Competitor, case: Case, dtype: Any) -> tuple[Bench, list[Any], int | None]:
    """Build, run once (the check's result), then measure memory on a second call."""
    bench = comp.make(case, dtype)
    bench.step()
    bench.sync()
    result = bench.result()
    memory = None if isinstance(case, TrainCase) else peak_memory(bench)
    return bench, result, memory


def _stats_row(stats: Stats, memory: int | None) -> dict[str, Any]:
    q1, q3 = stats.quartiles()
    xs = stats.samples
    return {"status": "ok", "median_s": stats.median, "q1_s": q1, "q3_s": q3,
            "min_s": min(xs), "max_s": max(xs), "round_medians_s": stats.round_medians(),
            "samples": len(xs), "peak_memory_bytes": memory}


def _ratios(stats: dict[str, Stats], comps: list[Competitor], info: dict[str, Any]) -> list[
        dict[str, Any]]:
    """mlcore rows against numpy-hand and against PyTorch on the same kind of device."""
    out = []
    for c in comps:
        if c.kind != "mlcore" or c.label not in stats:
            continue
        torch_ref = "torch-cuda" if info.get(c.label, {}).get("gpu") else "torch-cpu"
        for ref in ("numpy-hand", torch_ref, "numpy", "mlcore-steps"):
            if ref in stats and ref != c.label:
                med, lo, hi = ratio(stats[c.label], stats[ref])
                out.append({"a": c.label, "b": ref, "median": med, "min": lo, "max": hi})
    return out


def run_case(case: Case, dtype: str, comps: list[Competitor], opts: Options) -> dict[str, Any]:
    """Everything measured for one case and dtype."""
    rows: dict[str, dict[str, Any]] = {}
    benches: dict[str, Bench] = {}
    results: dict[str, list[Any]] = {}
    memory: dict[str, int | None] = {}
    for comp in comps:
        try:
            benches[comp.label], results[comp.label], memory[comp.label] = _prepare(
                comp, case, np.dtype(dtype))
        except UnavailableError as exc:
            rows[comp.label] = {"status": "n/a", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a failing competitor is reported, not fatal
            rows[comp.label] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    verdict = check(case, results)
    stats = measure(benches, opts.settings(case)) if benches else {}
    for label, s in stats.items():
        rows[label] = _stats_row(s, memory[label]) | {"clock": clock_name(benches[label])}
    gpu = {label: {"gpu": getattr(b, "memory", "") in ("cupy", "torch-cuda")}
           for label, b in benches.items()}
    return {"case": case.name, "group": case.group, "batch": case.batch, "dtype": dtype,
            "params": _case_params(case), "check": verdict,
            "rows": {c.label: rows[c.label] for c in comps if c.label in rows},
            "ratios": _ratios(stats, comps, gpu)}


def _case_params(case: Case) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(case).items() if k != "group"}


def _case_list(opts: Options) -> list[Case]:
    import mlcore

    found = cases.all_cases(mlcore.activation_names(), mlcore.loss_names(), opts.quick)
    chosen = cases.select(found, opts.cases)
    if not chosen:
        names = ", ".join(c.name for c in found)
        raise ValueError(f"No benchmark case matches {opts.cases!r}. Cases: {names}.")
    return chosen


def run(opts: Options) -> dict[str, Any]:
    """Run the selected cases for every dtype; return the JSON-ready report."""
    from . import report as rep

    comps = competitors(opts.backends)  # imports PyTorch when present: threads are known
    case_list = _case_list(opts)
    started = time.time()
    out: dict[str, Any] = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "quick": opts.quick,
        "machine": machine.machine_info(),
        "settings": {"timing": vars(opts.settings(case_list[0])), "tolerance": TOLERANCE},
        "dtypes": opts.dtypes,
        "competitors": [{"label": c.label, "kind": c.kind, "available": not c.reason,
                         "reason": c.reason} for c in comps],
        "results": [],
    }
    rep.print_header(out, opts.echo)
    quiet = {c.label for c in comps if c.reason}
    for dtype in opts.dtypes:
        for case in case_list:
            entry = run_case(case, dtype, comps, opts)
            rep.print_case(entry, opts.echo, quiet)
            out["results"].append(entry)
    out["elapsed_s"] = time.time() - started
    out["machine"]["thread_pools"] = machine.blas_info()  # every pool loaded by now
    out["targets"] = rep.targets(out)
    out["recommendations"] = rep.recommendations(out)
    rep.print_summary(out, opts.echo)
    return out


@contextmanager
def thread_limit(n: int | None) -> Iterator[None]:
    """Cap every native thread pool (threadpoolctl) and PyTorch's at ``n`` threads."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch") if bench_reference.torch_status("cpu") == "" else None
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def main(opts: Options, json_path: str | None = None, plot_path: str | None = None) -> dict[
        str, Any]:
    """Run, print, and write the JSON report and the plot when asked."""
    import json
    from pathlib import Path

    with thread_limit(opts.threads):
        out = run(opts)
    out["settings"]["threads"] = opts.threads
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1, default=str) + "\n")
        opts.echo(f"wrote {json_path}")
    if plot_path:
        from .plot import plot

        opts.echo(f"wrote {plot(out, plot_path)}")
    return out
