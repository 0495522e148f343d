"""The terminal table, the performance targets and the backend recommendation.

Every time is a median over all samples of all rounds; the spread shown is the
interquartile range. Ratios are ``a / b`` per round (same round, so a machine stall hits
both), shown as median [min-max] over the rounds: below 1 means ``a`` is faster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cases import MNIST_SIZES, SMALL_SIZES, XOR_SIZES, TutorialCase

__all__ = ["print_header", "print_case", "ratio_columns", "targets", "recommendations",
           "withheld", "print_summary", "fmt_time", "fmt_bytes", "fmt_ratio"]

Echo = Callable[[str], None]


def fmt_time(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _num(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def fmt_ratio(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    return f"{_num(r['median'])} [{_num(r['min'])}-{_num(r['max'])}]"


def print_header(report: dict[str, Any], echo: Echo) -> None:
    """Machine, threads and the competitors: those that run, then once each, those that
    cannot run here and why (a missing library with the pip command that installs it)."""
    m = report["machine"]
    commit = (m["commit"] or "")[:10] + (" (dirty)" if m["dirty"] else "")
    echo(f"machine: {m['cpu']}, {m['cpu_count']} CPUs, Python {m['python']}, "
         f"{'commit ' + commit if commit else 'mlcore installed from a wheel (no commit)'}")
    pools = ", ".join(f"{p.get('internal_api')} {p.get('version') or ''} "
                      f"{p.get('num_threads')} threads".replace("  ", " ")
                      for p in m["thread_pools"])
    echo(f"thread pools: {pools}; torch threads: {m['torch_threads']}")
    for name, line in (m.get("kernels") or {}).items():
        echo(f"{name} kernels: {line}")
    load = m.get("load_average")
    if load and load[0] > 0.5:
        echo(f"warning: load average {load[0]:.2f} before the run: other processes share "
             f"these {m['cpu_count']} CPUs, so times will be noisy (ratios less so).")
    comps = report["competitors"]
    running = [c["label"] + (" (conformance)" if c.get("conformance") else "")
               for c in comps if c["available"]]
    echo(f"competitors: {', '.join(running)}")
    for install, labels in _missing(comps).items():
        echo(f"missing reference: {', '.join(labels)} (not installed); for it: {install}")
    for c in comps:
        if not c["available"] and not c.get("install"):
            echo(f"not here: {c['label']}: {c['reason']}")


def _missing(comps: list[dict[str, Any]]) -> dict[str, list[str]]:
    """pip command -> the labels it would make runnable."""
    out: dict[str, list[str]] = {}
    for c in comps:
        if not c["available"] and c.get("install"):
            out.setdefault(c["install"], []).append(c["label"])
    return out


def ratio_columns(report: dict[str, Any]) -> dict[str, set[str]]:
    """Reference family -> its labels that run here: one ``x <family>`` column each."""
    out: dict[str, set[str]] = {}
    for c in report["competitors"]:
        if c["kind"] == "reference" and c["available"]:
            out.setdefault(c.get("family") or c["label"], set()).add(c["label"])
    return out


def _ratio_for(entry: dict[str, Any], a: str, labels: set[str]) -> dict[str, Any] | None:
    return next((r for r in entry["ratios"] if r["a"] == a and r["b"] in labels), None)


def _check_text(label: str, entry: dict[str, Any]) -> str:
    check = entry["check"]
    err = check["errors"].get(label)
    if check["reference"] is None:  # training: the target accuracy was reached
        return (f"{'ok' if err == 0 else 'FAIL'} {check['accuracy'][label]:.3f} in "
                f"{check['epochs'][label]} ep")
    ok = "ok" if err is not None and err <= check["tolerance"] else "FAIL"
    return f"{ok} {err:.1e}"


def _row_line(label: str, row: dict[str, Any], entry: dict[str, Any],
              columns: dict[str, set[str]]) -> str:
    if row["status"] != "ok":
        return f"  {label:<14} {row['status']}: {row['reason']}"
    spread = f"{fmt_time(row['q1_s'])}-{fmt_time(row['q3_s'])}"
    ratios = "".join(f"{fmt_ratio(_ratio_for(entry, label, labels)):<24} "
                     for labels in columns.values())
    return (f"  {label:<14} {fmt_time(row['median_s']):>9} {spread:>21} "
            f"{fmt_bytes(row['peak_memory_bytes']):>9}  {ratios}{_check_text(label, entry)}")


def print_case(entry: dict[str, Any], echo: Echo, columns: dict[str, set[str]]) -> None:
    """One case: a row per competitor that ran, a ratio column per reference family."""
    echo(f"{entry['case']}, batch {entry['batch']}, {entry['dtype']}")
    reasons = {row.get("reason") for row in entry["rows"].values() if row["status"] == "n/a"}
    if len(reasons) == 1 and all(r["status"] == "n/a" for r in entry["rows"].values()):
        echo(f"  n/a for every competitor: {reasons.pop()}")
        return
    heads = "".join(f"{'x ' + family:<24} " for family in columns)
    echo(f"  {'':<14} {'median':>9} {'IQR':>21} {'peak mem':>9}  {heads}check")
    for label, row in entry["rows"].items():
        if label in FIT_ONLY and entry["group"] != "fit":
            continue  # a row of the fit cases only
        echo(_row_line(label, row, entry, columns))


def _find(report: dict[str, Any], sizes: tuple[int, ...], batch: int, dtype: str,
          optimizer: str) -> dict[str, Any] | None:
    """The training-step entry of network ``sizes`` at ``batch``, ``dtype``, ``optimizer``."""
    for e in report["results"]:
        p = e["params"]
        if (e["group"] == "mlp_step" and tuple(p["sizes"]) == sizes and e["batch"] == batch
                and e["dtype"] == dtype and p["optimizer"] == optimizer):
            return e
    return None


_TARGETS = (  # (description, case, batch, a, b, limit, "<=" or ">=")
    ("numpy / numpy-hand, 784-512-512-10 step, batch 32", MNIST_SIZES, 32, "numpy", "numpy-hand",
     1.10, "<="),
    ("numpy / numpy-hand, 784-512-512-10 step, batch 256", MNIST_SIZES, 256, "numpy", "numpy-hand",
     1.10, "<="),
    ("numpy / torch-cpu, 784-512-512-10 step, batch 32", MNIST_SIZES, 32, "numpy", "torch-cpu",
     1.0, "<="),
    ("numpy / numpy-hand, 64-128-128-10 step, batch 32", SMALL_SIZES, 32, "numpy", "numpy-hand",
     1.0, "<="),
    ("torch-cpu / numpy, 2-4-1 XOR step, batch 4", XOR_SIZES, 4, "torch-cpu", "numpy", 5.0, ">="),
    ("strict / numpy, 784-512-512-10 step, batch 32", MNIST_SIZES, 32, "strict", "numpy", 2.0,
     "<="),
    ("strict / numpy, 784-512-512-10 step, batch 256", MNIST_SIZES, 256, "strict", "numpy", 2.0,
     "<="),
    ("strict / numpy, 2-4-1 XOR step, batch 4", XOR_SIZES, 4, "strict", "numpy", 2.0, "<="),
    ("cupy / torch-cuda, 784-512-512-10 step, batch 256", MNIST_SIZES, 256, "cupy",
     "torch-cuda", 0.5, "<="),
    ("cupy / torch-cuda, 784-512-512-10 step, batch 4096", MNIST_SIZES, 4096, "cupy",
     "torch-cuda", 0.9, "<="),
    ("jax / jax-hand, 64-128-128-10 step, batch 32", SMALL_SIZES, 32, "jax", "jax-hand",
     1.05, "<="),
    ("jax / jax-hand, 2-4-1 XOR step, batch 4", XOR_SIZES, 4, "jax", "jax-hand", 1.05, "<="),
    ("jax / numpy, 64-128-128-10 step, batch 32", SMALL_SIZES, 32, "jax", "numpy", 0.8, "<="),
    ("jax / numpy, 2-4-1 XOR step, batch 4", XOR_SIZES, 4, "jax", "numpy", 0.8, "<="),
    ("torch / torch-cpu, 784-512-512-10 step, batch 32", MNIST_SIZES, 32, "torch", "torch-cpu",
     1.0, "<="),
    ("torch / torch-cpu, 784-512-512-10 step, batch 256", MNIST_SIZES, 256, "torch",
     "torch-cpu", 1.0, "<="),
    ("torch / torch-cpu, 784-512-512-10 step, batch 1024", MNIST_SIZES, 1024, "torch",
     "torch-cpu", 1.0, "<="),
)
"""The training-step targets (issue 26 set the 64-128-128-10, jax and torch ones)."""

ELEMENTWISE_REFERENCES = ("torch-cpu", "numpy-hand")
"""Every activation and loss case (forward + backward): numpy at most 1.0x each of these,
where the case has that row."""


def _elementwise_targets(report: dict[str, Any], dtype: str) -> list[dict[str, Any]]:
    out = []
    for e in report["results"]:
        if e["group"] not in ("activation", "loss") or e["dtype"] != dtype:
            continue
        for ref in ELEMENTWISE_REFERENCES:
            if ref not in e["rows"] or e["rows"][ref].get("status") == "n/a":
                continue  # no such reference for this case (no hand-written version)
            r = _paired(e, "numpy", ref)
            out.append({"target": f"numpy / {ref}, {e['case']} forward + backward, batch "
                                  f"{e['batch']}, {dtype}", "limit": 1.0, "op": "<=",
                        "ratio": r, "passed": None if r is None else r["median"] <= 1.0,
                        "check_passed": rows_checked(e, ("numpy", ref)),
                        "reason": "" if r is not None else "a row did not run"})
    return out


def _paired(entry: dict[str, Any], a: str, b: str) -> dict[str, float] | None:
    """``a / b`` for an entry, from the stored ratios or inverted from ``b / a``."""
    for r in entry["ratios"]:
        if r["a"] == a and r["b"] == b:
            return {"median": r["median"], "min": r["min"], "max": r["max"]}
        if r["a"] == b and r["b"] == a:
            return {"median": 1 / r["median"], "min": 1 / r["max"], "max": 1 / r["min"]}
    return None


TUTORIAL = TutorialCase().name

_FIT_TARGETS = (  # (description, (case, row) a, (case, row) b, limit, op)
    ("torch-cpu / numpy, 2-4-1 XOR through fit(epochs=400, batch_size=4)",
     ("fit/2-4-1/b4/fit", "torch-cpu"), ("fit/2-4-1/b4/fit", "numpy"), 8.0, ">="),
    ("numpy fit / numpy train_step loop, 2-4-1 XOR, 400 epochs",
     ("fit/2-4-1/b4/fit", "numpy"), ("fit/2-4-1/b4/fit", "mlcore-steps"), 1.2, "<="),
    ("numpy fit with metrics and EarlyStopping / plain fit, 784-512-512-10, batch 32",
     ("fit/784-512-512-10/b32/fit", "mlcore-metrics"), ("fit/784-512-512-10/b32/fit", "numpy"),
     1.05, "<="),
    ("numpy fit with metrics and EarlyStopping / plain fit, 784-512-512-10, batch 256",
     ("fit/784-512-512-10/b256/fit", "mlcore-metrics"),
     ("fit/784-512-512-10/b256/fit", "numpy"), 1.05, "<="),
    ("numpy / keras-jax, the Keras-tutorial model's whole fit (200 000 x 64 rows, "
     "BatchNorm, Dropout, validation_split, EarlyStopping)",
     (TUTORIAL, "numpy"), (TUTORIAL, "keras-jax"), 0.8, "<="),
    ("jax / keras-jax, the Keras-tutorial model's whole fit",
     (TUTORIAL, "jax"), (TUTORIAL, "keras-jax"), 1.0, "<="),
)
"""Targets between rows of one fit case: interleaved, round by round."""

FIT_ONLY = ("mlcore-steps", "mlcore-metrics")
"""Rows that run the fit cases only (mlcore's own variants of the numpy fit)."""


def _entry(report: dict[str, Any], case: str, dtype: str) -> dict[str, Any] | None:
    return next((e for e in report["results"] if e["case"] == case and e["dtype"] == dtype),
                None)


def rows_checked(entry: dict[str, Any] | None, labels: tuple[str, ...]) -> bool:
    """Whether the equality check passed for the rows ``labels`` of ``entry``: a target is
    judged by its own rows only, so a third-party row that failed its check does not void a
    ratio between two others."""
    if entry is None:
        return False
    check = entry["check"]
    errors = check.get("errors")
    if errors is None:  # a report without per-row errors: the case's own verdict
        return bool(check.get("passed"))
    if check["reference"] is None:  # training: each row reached the target accuracy
        return all(errors.get(label) == 0 for label in labels)
    return all(errors.get(label) is not None and errors[label] <= check["tolerance"]
               for label in labels)


def _cross_ratio(report: dict[str, Any], a: tuple[str, str], b: tuple[str, str],
                 dtype: str) -> tuple[dict[str, float] | None, bool]:
    """``a / b`` between rows of one entry (interleaved) or of two (round by round)."""
    ea, eb = _entry(report, a[0], dtype), _entry(report, b[0], dtype)
    if ea is None or eb is None:
        return None, False
    checked = rows_checked(ea, (a[1],)) and rows_checked(eb, (b[1],))
    if ea is eb:
        return _paired(ea, a[1], b[1]), checked
    ra, rb = ea["rows"].get(a[1], {}), eb["rows"].get(b[1], {})
    if ra.get("status") != "ok" or rb.get("status") != "ok":
        return None, checked
    rounds = [x / y for x, y in zip(ra["round_medians_s"], rb["round_medians_s"], strict=False)]
    return {"median": ra["median_s"] / rb["median_s"], "min": min(rounds),
            "max": max(rounds)}, checked


def _fit_targets(report: dict[str, Any], dtype: str) -> list[dict[str, Any]]:
    out = []
    for text, a, b, limit, op in _FIT_TARGETS:
        r, checked = _cross_ratio(report, a, b, dtype)
        if r is None and not checked:
            continue
        passed = None if r is None else (r["median"] <= limit if op == "<="
                                         else r["median"] >= limit)
        cut = [row for (case, row) in (a, b) if (_entry(report, case, dtype) or {}).get(
            "rows", {}).get(row, {}).get("status") == "cut"]
        reason = ("" if r is not None else f"{' and '.join(cut)} cut by --max-seconds" if cut
                  else "a row did not run")
        out.append({"target": f"{text}, {dtype}", "limit": limit, "op": op, "ratio": r,
                    "passed": passed, "check_passed": checked, "reason": reason})
    return out


def targets(report: dict[str, Any], dtype: str = "float32") -> list[dict[str, Any]]:
    """The performance bar, each with its measured ratio, for every optimiser; a target
    that was not measured says why in ``reason``."""
    out = _fit_targets(report, dtype) + _elementwise_targets(report, dtype)
    optimizers = sorted({e["params"].get("optimizer") for e in report["results"]
                         if e["group"] == "mlp_step"})
    running = {c["label"] for c in report["competitors"] if c["available"]}
    for opt in optimizers:
        for text, case, batch, a, b, limit, op in _TARGETS:
            entry = _find(report, case, batch, dtype, opt)
            r = _paired(entry, a, b) if entry else None
            passed = None if r is None else (r["median"] <= limit if op == "<="
                                             else r["median"] >= limit)
            checked = rows_checked(entry, (a, b))
            absent = [x for x in (a, b) if x not in running]
            cut = [x for x in (a, b) if entry and entry["rows"].get(x, {}).get("status") == "cut"]
            reason = ("" if r is not None else
                      f"needs {' and '.join(absent)}" if absent else
                      f"{' and '.join(cut)} cut by --max-seconds" if cut else "case not run")
            out.append({"target": f"{text}, {opt}, {dtype}", "limit": limit, "op": op,
                        "ratio": r, "passed": passed, "check_passed": checked,
                        "reason": reason})
    return out


# -------------------------------------------------------------------------- recommendation
LOAD_PER_CPU = 0.5
"""Above this 1-minute load average per CPU before the run, the recommendation is withheld."""


def withheld(report: dict[str, Any]) -> str:
    """Why no backend is recommended from this run ("" when one can be)."""
    m = report["machine"]
    load, cpus = (m.get("load_average") or [0.0])[0], m.get("cpu_count") or 1
    if load > LOAD_PER_CPU * cpus:
        return (f"load average {load:.2f} before the run on {cpus} CPUs (above "
                f"{LOAD_PER_CPU * cpus:g}): other processes were using the CPUs, so the "
                f"times are unreliable; rerun on a quieter machine")
    return ""


def recommendations(report: dict[str, Any]) -> list[str]:
    """One line per network, optimiser and dtype: which production mlcore backend to use by
    batch. Conformance backends (strict) are never named; a batch where the fastest
    backend's round times overlap another's names both; empty when :func:`withheld`."""
    if withheld(report):
        return []
    steps = [e for e in report["results"] if e["group"] == "mlp_step"]
    production = {c["label"] for c in report["competitors"]
                  if c["kind"] == "mlcore" and not c.get("conformance")}
    lines = []
    for case, dtype in sorted({(e["case"], e["dtype"]) for e in steps}):
        entries = sorted((e for e in steps if (e["case"], e["dtype"]) == (case, dtype)),
                         key=lambda e: e["batch"])
        best = [(e["batch"], w) for e in entries if (w := _fastest(e, production))]
        if best:
            lines.append(f"{case.removeprefix('mlp_step/')} {dtype}: {_phrase(best)}")
    return lines


def _fastest(entry: dict[str, Any], production: set[str]) -> str | None:
    """The fastest production backend; if its rounds' min-max range overlaps another's,
    both are named ("numpy or cupy (ranges overlap)")."""
    timed = sorted((row["median_s"], label) for label, row in entry["rows"].items()
                   if label in production and row["status"] == "ok")
    if not timed:
        return None
    best = timed[0][1]
    top = max(entry["rows"][best]["round_medians_s"])
    tied = [label for _, label in timed[1:]
            if min(entry["rows"][label]["round_medians_s"]) <= top]
    return best if not tied else f"{' or '.join([best, *tied])} (ranges overlap)"


def _phrase(best: list[tuple[int, str]]) -> str:
    """[(32, numpy), (256, numpy), (1024, cupy)] -> "for batch <= 256 use numpy, above use cupy"."""
    parts: list[str] = []
    i = 0
    while i < len(best):
        j = i
        while j + 1 < len(best) and best[j + 1][1] == best[i][1]:
            j += 1
        name, last = best[i][1], best[j][0]
        if not parts:
            parts.append(f"use {name}" if j == len(best) - 1 else f"for batch <= {last} use {name}")
        else:
            parts.append(f"above use {name}" if j == len(best) - 1
                         else f"up to {last} use {name}")
        i = j + 1
    measured = ", ".join(str(b) for b, _ in best)
    return ", ".join(parts) + f" (batches measured: {measured})"


# -------------------------------------------------------------------------- summary
def _unmeasured(report: dict[str, Any]) -> dict[str, list[str]]:
    """reason -> the targets (optimisers folded together) not measured for it."""
    out: dict[str, dict[str, list[str]]] = {}
    for t in report["targets"]:
        if t["ratio"] is None:
            text, opt, _ = t["target"].rsplit(", ", 2)
            out.setdefault(t["reason"], {}).setdefault(text, []).append(opt)
    return {reason: [f"{text} ({', '.join(opts)})" for text, opts in found.items()]
            for reason, found in out.items()}


def print_summary(report: dict[str, Any], echo: Echo) -> None:
    echo("")
    echo("targets (float32; ratio = median [min-max] over interleaved rounds):")
    for t in report["targets"]:
        r = t["ratio"]
        if r is None:
            continue
        verdict = "PASS" if t["passed"] else "FAIL"
        note = "" if t["check_passed"] else " (equality check FAILED: ratio not meaningful)"
        echo(f"  {verdict} {t['target']}: {fmt_ratio(r)} (target {t['op']} {t['limit']:g})"
             f"{note}")
    for reason, names in _unmeasured(report).items():
        echo(f"  not measured ({reason}): {'; '.join(names)}")
    if not report["targets"]:
        echo("  (none: no training-step case was run)")
    echo("")
    echo("recommendation (production backends only):")
    if report.get("recommendation_withheld"):
        echo(f"  withheld: {report['recommendation_withheld']}")
    for line in report["recommendations"]:
        echo(f"  {line}")
    if not report["recommendations"] and not report.get("recommendation_withheld"):
        echo("  (none: no training-step case was run)")
