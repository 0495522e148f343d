"""What ``mlcore bench`` tells the user, from made-up reports: the recommendation (production
backends only, only when the rounds' ranges do not overlap, withheld under load), the targets
it could not measure, the one-line missing-reference hint, and options checked before a run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mlcore_bench import report

from mlcore.cli import main

STEP = "mlp_step/784-512-512-10/adam"


def _comp(label: str, kind: str = "mlcore", available: bool = True, **extra: Any) -> dict[
        str, Any]:
    return {"label": label, "kind": kind, "available": available, "reason": "" if available
            else "not installed", "conformance": False, "install": "", "family": "",
            "gpu": False} | extra


def _entry(rounds: dict[str, list[float]], batch: int = 32) -> dict[str, Any]:
    rows = {label: {"status": "ok", "median_s": statistics.median(r), "round_medians_s": r}
            for label, r in rounds.items()}
    return {"case": STEP, "group": "mlp_step", "batch": batch, "dtype": "float32",
            "params": {"sizes": [784, 512, 512, 10], "optimizer": "adam"}, "rows": rows,
            "ratios": [], "check": {"passed": True}}


def _report(entries: list[dict[str, Any]], load: float = 0.2, **competitors: bool) -> dict[
        str, Any]:
    comps = [_comp("numpy"), _comp("cupy"), _comp("strict", conformance=True)]
    comps += [_comp(k, "reference", v) for k, v in competitors.items()]
    return {"machine": {"load_average": [load, load, load], "cpu_count": 2},
            "competitors": comps, "results": entries}


def test_a_conformance_backend_is_never_recommended() -> None:
    rep = _report([_entry({"strict": [1.0, 1.1], "numpy": [2.0, 2.1]})])
    assert report.recommendations(rep) == [
        "784-512-512-10/adam float32: use numpy (batches measured: 32)"]


def test_overlapping_rounds_name_both_backends() -> None:
    rep = _report([_entry({"numpy": [1.0, 1.3], "cupy": [1.2, 1.4]}),
                   _entry({"numpy": [4.0, 4.1], "cupy": [1.0, 1.1]}, batch=1024)])
    assert report.recommendations(rep) == [
        "784-512-512-10/adam float32: for batch <= 32 use numpy or cupy (ranges overlap), "
        "above use cupy (batches measured: 32, 1024)"]


def test_recommendation_withheld_under_load() -> None:
    rep = _report([_entry({"numpy": [1.0], "cupy": [2.0]})], load=3.5)
    assert report.recommendations(rep) == []
    reason = report.withheld(rep)
    assert reason.startswith("load average 3.50 before the run on 2 CPUs (above 1)")
    assert report.withheld(_report([], load=0.9)) == ""


def test_recommendation_phrase() -> None:
    best = [(32, "numpy"), (256, "numpy"), (1024, "cupy")]
    assert report._phrase(best).startswith("for batch <= 256 use numpy, above use cupy")
    assert report._phrase([(4, "numpy")]).startswith("use numpy")


def test_unmeasurable_targets_are_listed_once_with_the_reason() -> None:
    rep = _report([_entry({"numpy": [1.0], "strict": [2.0]})], **{"numpy-hand": True,
                                                                 "torch-cpu": False})
    rep["targets"] = report.targets(rep)
    reasons = {t["reason"] for t in rep["targets"] if t["ratio"] is None}
    # (the torch and jax backend targets need those backends, absent from this report)
    assert reasons == {"needs torch-cpu", "case not run", "needs torch-cuda", "needs jax",
                       "needs jax and jax-hand", "needs torch and torch-cpu"}
    lines: list[str] = []
    rep |= {"recommendations": [], "recommendation_withheld": ""}
    report.print_summary(rep, lines.append)
    torch_lines = [line for line in lines if "torch-cpu" in line and "needs torch and" not in line]
    assert len(torch_lines) == 1 and torch_lines[0].startswith("  not measured (needs torch-cpu)")
    assert "numpy / torch-cpu, 784-512-512-10 step, batch 32 (adam)" in torch_lines[0]


def test_a_missing_reference_is_one_line_with_the_pip_command() -> None:
    install = "pip install 'mlcore-bench[torch]'"
    rep = _report([])
    rep["competitors"] += [_comp(f"torch-{d}", "reference", False, install=install)
                           for d in ("cpu", "cuda")]
    rep["machine"] |= {"cpu": "x", "python": "3", "commit": None, "dirty": False,
                       "thread_pools": [], "torch_threads": None}
    lines: list[str] = []
    report.print_header(rep, lines.append)
    missing = [line for line in lines if "torch-cpu" in line]
    assert missing == [f"missing reference: torch-cpu, torch-cuda (not installed); for it: "
                       f"{install}"]


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "nope"], "Unknown --backend 'nope'. Choices: "),
    (["--backend", "numpyy"], "Unknown --backend 'numpyy'. Did you mean 'numpy'?"),
    (["--cases", "nope"], "No benchmark case matches --cases nope. Cases with --quick: "),
    (["--json", "/nonexistent/x.json"], "--json /nonexistent/x.json: the folder "),
    (["--plot", "chart.txt"], "--plot chart.txt: matplotlib cannot write 'txt' files. Use"),
])
def test_bad_options_fail_before_anything_runs(args: list[str], message: str,
                                               tmp_path: Path) -> None:
    args = [str(tmp_path / a) if a == "chart.txt" else a for a in args]
    message = message.replace("chart.txt", str(tmp_path / "chart.txt"))
    result = CliRunner().invoke(main, ["bench", "--quick", *args])
    assert result.exit_code == 1
    assert result.stdout == ""  # not even the machine header: nothing ran
    assert result.stderr.startswith(f"mlcore: error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
    if "--backend" in args:
        assert "numpy, strict" in result.stderr and "numpy-hand, torch-cpu" in result.stderr


def test_a_target_is_judged_by_its_own_rows_checks_only() -> None:
    """A third-party row failing its equality check does not mark numpy / numpy-hand void."""
    entry = {"check": {"reference": "numpy-hand", "tolerance": 1e-4, "passed": False,
                       "errors": {"numpy-hand": 0.0, "numpy": 2e-7, "stranger": 0.5}}}
    assert report.rows_checked(entry, ("numpy", "numpy-hand"))
    assert not report.rows_checked(entry, ("stranger", "numpy-hand"))
    assert not report.rows_checked(entry, ("absent",))
    assert not report.rows_checked(None, ("numpy",))
    trained = {"check": {"reference": None, "tolerance": 0.97, "passed": False,
                         "errors": {"numpy": 0.0, "stranger": float("inf")}}}
    assert report.rows_checked(trained, ("numpy",))
    assert not report.rows_checked(trained, ("numpy", "stranger"))


def test_every_activation_and_loss_is_held_to_torch_and_the_hand_version() -> None:
    entry = {"case": "activation/relu", "group": "activation", "batch": 256,
             "dtype": "float32", "params": {},
             "rows": {"numpy": {"status": "ok"}, "torch-cpu": {"status": "ok"},
                      "numpy-hand": {"status": "n/a", "reason": "no hand-written version"}},
             "ratios": [{"a": "numpy", "b": "torch-cpu", "median": 0.8, "min": 0.7,
                         "max": 1.1}],
             "check": {"reference": "torch-cpu", "tolerance": 1e-4, "passed": True,
                       "errors": {"numpy": 0.0, "torch-cpu": 0.0}}}
    found = [t for t in report.targets(_report([entry])) if "activation/relu" in t["target"]]
    assert len(found) == 1  # no numpy-hand target: that case has no hand-written version
    (t,) = found
    assert t["target"].startswith("numpy / torch-cpu, activation/relu forward + backward")
    assert t["passed"] and t["check_passed"] and t["limit"] == 1.0
