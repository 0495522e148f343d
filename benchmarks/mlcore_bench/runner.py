"""The benchmark runner behind ``mlcore bench`` and ``python -m mlcore_bench``.

For each dtype and case it builds every competitor that can run here (mlcore on each
installed backend, then each of :data:`~mlcore_bench.bench_reference.REFERENCES`), runs each
once and checks that they computed the same thing, measures peak memory on a second untimed
call, then times them interleaved (:mod:`mlcore_bench.timing`). The report is a plain dict,
JSON-ready. Competitors that cannot run here are reported once, at the top, not per case.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from . import bench_mlcore, bench_reference, cases, machine
from .bench_reference import REFERENCES
from .cases import WHOLE_FITS, Case
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

__all__ = ["Options", "Competitor", "main", "run", "competitors", "reference_labels",
           "TOLERANCE"]

TOLERANCE = 1e-4
"""Largest relative error (norm-wise, per array) allowed against the check's reference,
unless the independent references disagree more among themselves (:func:`check`)."""

INDEPENDENT = ("numpy-hand", "torch-cpu", "torch-cuda", "jax-hand", "keras-jax")
"""The references written without mlcore: how far they are from each other on a case says
how far float rounding alone carries a result (Adam over 64 float32 steps of a
784-512-512-10 network: 1.2e-4, where one step agrees to 1e-7)."""

MAX_TOLERANCE = 1e-2
"""The check's tolerance never exceeds this, however far the references are apart."""



def reference_labels() -> list[str]:
    return [r.label for r in REFERENCES]


@dataclass
class Options:
    quick: bool = False
    backends: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=lambda: ["float32", "float64"])
    cases: list[str] = field(default_factory=list)
    rounds: int | None = None
    threads: int | None = None  # cap BLAS/OpenMP pools and PyTorch (None: library defaults)
    echo: Callable[[str], None] = print
    progress: bool | None = None  # a bar on stderr: None when stderr is a terminal
    max_seconds: float | None = None  # per competitor and case (None: QUICK_MAX_S with quick)

    def settings(self, case: Case) -> Settings:
        cap = self.max_seconds if self.max_seconds is not None or not self.quick \
            else QUICK_MAX_S
        if isinstance(case, WHOLE_FITS):
            return Settings(rounds=self.rounds or (2 if self.quick else 3), samples=1,
                            block_s=0.0, warmup=0, max_s=cap)
        if self.quick:  # a 20 ms settle between blocks: 0.1 s cost --quick ~30 s of sleep
            return Settings(rounds=self.rounds or 2, samples=3, block_s=0.002, warmup=1,
                            pause_s=0.02, max_s=cap)
        return Settings(rounds=self.rounds or 5, max_s=cap)


QUICK_MAX_S = 5.0
"""With ``--quick``, the seconds one competitor may spend on one case unless
``--max-seconds`` says otherwise: ~16 cases and 7 competitors then fit in about 2 minutes."""


@dataclass
class Competitor:
    """A row label, what it is, and how to build its bench for a case and dtype."""

    label: str
    kind: str  # "mlcore" or "reference"
    make: Callable[[Case, Any], Bench]
    reason: str = ""  # why it cannot run at all here ("" when it can)
    family: str = ""  # a reference's ratio column (torch-cpu and torch-cuda: "torch")
    gpu: bool = False
    conformance: bool = False  # a conformance backend (strict): never recommended
    install: str = ""  # for a reference whose library is missing: the pip command


def _mlcore_row(name: str) -> Competitor:
    reason = bench_mlcore.status(name)
    return Competitor(name, "mlcore", partial(bench_mlcore.make, name=name), reason,
                      gpu=not reason and bench_mlcore.is_gpu(name),
                      conformance=bench_mlcore.is_conformance(name))


def competitors(wanted: list[str], quick: bool = False) -> list[Competitor]:
    """mlcore on every installed backend, then the references, filtered by ``wanted``.

    ``wanted`` names backends and/or references; references stay unless one is named.
    With ``quick``, a reference that is slow to start (``Reference.quick`` False: Keras)
    is listed as left out unless named.
    """
    import mlcore

    rows = [_mlcore_row(n) for n in mlcore.backend_names()]
    rows += [Competitor(r.label, "reference", r.make,
                        r.reason() or ("" if r.quick or not quick or r.label in wanted else
                                       f"left out of --quick (slow to start); name it: "
                                       f"--backend {r.label}"),
                        r.family, r.gpu, install=r.install if r.missing() else "")
             for r in REFERENCES]
    if wanted:
        keep_refs = not any(w in reference_labels() for w in wanted)
        rows = [r for r in rows if r.label in wanted or (keep_refs and r.kind == "reference")]
    return rows


def _rel_error(a: Any, b: Any) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return float("inf")
    scale = float(np.linalg.norm(b64))
    return float(np.linalg.norm(a64 - b64)) / (scale if scale > 0 else 1.0)


def check(case: Case, results: dict[str, list[Any]]) -> dict[str, Any]:
    """Compare every competitor's first-call result with the reference's: within
    :data:`TOLERANCE`, or twice the largest error of another independent reference
    (:data:`INDEPENDENT`) when that is larger (rounding over many steps: two libraries that
    share no code disagree that much, so a result as close is as right), at most
    :data:`MAX_TOLERANCE`."""
    if isinstance(case, WHOLE_FITS):
        errors = {k: (0.0 if r[1] >= case.target else float("inf")) for k, r in results.items()}
        return {"reference": None, "tolerance": case.target, "errors": errors,
                "epochs": {k: r[0] for k, r in results.items()},
                "accuracy": {k: r[1] for k, r in results.items()},
                "passed": all(e == 0 for e in errors.values())}
    ref = next((k for k in reference_labels() if k in results), next(iter(results), None))
    errors = {}
    for label, res in results.items():
        pairs = list(zip(res, results[ref], strict=False)) if ref else []
        errors[label] = max((_rel_error(a, b) for a, b in pairs), default=0.0)
        if ref and len(res) != len(results[ref]):
            errors[label] = float("inf")
    spread = max((e for k, e in errors.items() if k in INDEPENDENT and k != ref
                  and math.isfinite(e)), default=0.0)
    tolerance = min(MAX_TOLERANCE, max(TOLERANCE, 2 * spread))
    return {"reference": ref, "tolerance": tolerance, "reference_spread": spread,
            "errors": errors, "passed": all(e <= tolerance for e in errors.values())}


def _prepare(comp: Competitor, case: Case, dtype: Any) -> tuple[Bench, list[Any], int | None]:
    """Build, run once (the check's result), then measure memory on a second call."""
    bench = comp.make(case, dtype)
    bench.step()
    bench.sync()
    result = bench.result()
    memory = None if isinstance(case, WHOLE_FITS) else peak_memory(bench)
    return bench, result, memory


def _stats_row(stats: Stats, memory: int | None) -> dict[str, Any]:
    q1, q3 = stats.quartiles()
    xs = stats.samples
    return {"status": "ok", "median_s": stats.median, "q1_s": q1, "q3_s": q3,
            "min_s": min(xs), "max_s": max(xs), "round_medians_s": stats.round_medians(),
            "samples": len(xs), "peak_memory_bytes": memory}


def reference_for(row: Competitor, family: str, ran: list[Competitor]) -> str | None:
    """The reference of ``family`` an mlcore row is compared with: the one on the same kind
    of device; a family with no GPU member (numpy-hand) serves every row."""
    members = [c for c in ran if c.kind == "reference" and c.family == family]
    same = [c for c in members if c.gpu == row.gpu]
    if same:
        return same[0].label
    has_gpu_member = any(r.gpu for r in REFERENCES if r.family == family)
    return None if has_gpu_member or not members else members[0].label


def _ratios(stats: dict[str, Stats], comps: list[Competitor]) -> list[dict[str, Any]]:
    """mlcore rows against each reference family, and against the ``numpy`` backend."""
    ran = [c for c in comps if c.label in stats]
    families = list(dict.fromkeys(c.family for c in ran if c.kind == "reference"))
    out = []
    for c in ran:
        if c.kind != "mlcore":
            continue
        refs = [reference_for(c, f, ran) for f in families] + ["numpy"]
        for ref in refs:
            if ref is not None and ref in stats and ref != c.label:
                med, lo, hi = ratio(stats[c.label], stats[ref])
                out.append({"a": c.label, "b": ref, "median": med, "min": lo, "max": hi})
    return out


def run_case(case: Case, dtype: str, comps: list[Competitor], opts: Options,
             progress: Callable[[], None] | None = None) -> dict[str, Any]:
    """Everything measured for one case and dtype (``comps``: those that can run here)."""
    rows: dict[str, dict[str, Any]] = {}
    benches: dict[str, Bench] = {}
    results: dict[str, list[Any]] = {}
    memory: dict[str, int | None] = {}
    spent: dict[str, float] = {}
    for comp in comps:
        t0 = time.perf_counter()
        try:
            benches[comp.label], results[comp.label], memory[comp.label] = _prepare(
                comp, case, np.dtype(dtype))
            spent[comp.label] = time.perf_counter() - t0
        except UnavailableError as exc:
            rows[comp.label] = {"status": "n/a", "reason": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a failing competitor is reported, not fatal
            rows[comp.label] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    verdict = check(case, results)
    stats = measure(benches, opts.settings(case), progress, spent) if benches else {}
    for label, s in list(stats.items()):
        if s.cut:  # timed no further: no median, no ratio
            rows[label] = {"status": "cut", "reason": s.cut}
            del stats[label]
            continue
        rows[label] = _stats_row(s, memory[label]) | {"clock": clock_name(benches[label])}
    return {"case": case.name, "group": case.group, "batch": case.batch, "dtype": dtype,
            "params": _case_params(case), "check": verdict,
            "rows": {c.label: rows[c.label] for c in comps if c.label in rows},
            "ratios": _ratios(stats, comps)}


def _case_params(case: Case) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(case).items() if k != "group"}


def case_list(opts: Options) -> list[Case]:
    """The cases ``opts`` selects; ValueError listing every case when none matches."""
    import mlcore

    from .bench_mlcore import status

    gpu = "cupy" in opts.backends if opts.backends else status("cupy") == ""
    found = cases.all_cases(mlcore.activation_names(), mlcore.loss_names(), opts.quick, gpu)
    chosen = cases.select(found, opts.cases)
    if not chosen:
        names = ", ".join(c.name for c in found)
        raise ValueError(f"No benchmark case matches --cases {', '.join(opts.cases)}. "
                         f"Cases{' with --quick' if opts.quick else ''}: {names}.")
    return chosen


def run(opts: Options) -> dict[str, Any]:
    """Run the selected cases for every dtype; return the JSON-ready report."""
    from . import report as rep
    from .progress import progress_bar

    chosen = case_list(opts)
    comps = competitors(opts.backends, opts.quick)  # imports PyTorch when present
    runnable = [c for c in comps if not c.reason]
    started = time.time()
    out: dict[str, Any] = {
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "quick": opts.quick,
        "machine": machine.machine_info(),
        "settings": {"timing": vars(opts.settings(chosen[0])), "tolerance": TOLERANCE},
        "dtypes": opts.dtypes,
        "competitors": [{"label": c.label, "kind": c.kind, "available": not c.reason,
                         "reason": c.reason, "family": c.family, "gpu": c.gpu,
                         "conformance": c.conformance, "install": c.install} for c in comps],
        "results": [],
    }
    todo = [(dtype, case) for dtype in opts.dtypes for case in chosen]
    with progress_bar(len(todo), opts.progress, opts.echo) as (bar, echo):
        rep.print_header(out, echo)
        for dtype, case in todo:
            bar.set_postfix_str(f"{case.name}, batch {case.batch}, {dtype}")
            entry = run_case(case, dtype, runnable, opts, bar.refresh)
            rep.print_case(entry, echo, rep.ratio_columns(out))
            out["results"].append(entry)
            bar.update()
    out["elapsed_s"] = time.time() - started
    out["machine"]["load_average_after"] = machine.load_average()
    out["machine"]["thread_pools"] = machine.blas_info()  # every pool loaded by now
    out["targets"] = rep.targets(out)
    out["recommendation_withheld"] = rep.withheld(out)
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
    """Check the options and output paths, run, print, and write the JSON report and the
    plots when asked. Bad options raise ValueError before anything runs."""
    import json
    from pathlib import Path

    from .validate import check_options

    check_options(opts, json_path, plot_path)
    with thread_limit(opts.threads):
        out = run(opts)
    out["settings"]["threads"] = opts.threads
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1, default=str) + "\n")
        opts.echo(f"wrote {json_path}")
    if plot_path:
        from .plot import plot

        opts.echo("wrote " + ", ".join(str(p) for p in plot(out, plot_path)))
    return out
