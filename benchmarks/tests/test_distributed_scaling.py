"""The scaling benchmark's performance model (docs/distributed.md, "A model for larger jobs";
its equations in ``mlcore_bench.scaling_model``), on made-up timings generated from known
parameters: the fits recover them, no cost comes out negative, the model reproduces timings
it generated (each variant with its own packing time), and ``mlcore bench --distributed``
runs the script, which refuses one batch size and writes its JSON atomically."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from click.testing import CliRunner
from mlcore_bench import distributed_scaling as ds
from mlcore_bench import scaling_model as sm

from mlcore.cli import main

C0, C1, GATHER = 1.25e-3, 15e-6, 0.67e-6  # seconds per step, per row, per gathered row
ALPHA, BETA = 6e-6, 1.5e9
PACK = {True: 0.35e-3, False: 0.3e-3}  # packing and unpacking, with overlap and without
BUCKETS = {True: [20_524, 2_658_304], False: [2_678_828]}  # with overlap, without
FIXED = {1: 4e-3, 2: 9e-3, 3: 11e-3}
ROWS = 60_000


def test_nnls_recovers_known_coefficients_and_never_goes_negative() -> None:
    columns = [[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]]
    assert sm.nnls(columns, [2 * x + 5 for x in columns[0]]) == pytest.approx([2.0, 5.0])
    # the least-squares line through these has a negative slope: the slope is held at 0
    x = sm.nnls(columns, [9.0, 7.0, 5.0, 3.0])
    assert x[0] == 0.0 and x[1] == pytest.approx(6.0)
    assert sm.nnls(columns, [-1.0, -2.0, -3.0, -4.0]) == [0.0, 0.0]


def _one(batch: int, k: int = 1, overlap: bool = True, spread: float = 0.0) -> dict[str, Any]:
    """One fit's result as the worker reports it, made by the model from the constants.
    ``spread``: the 1-process steps last their mean minus or plus ``spread``, half each, so
    the slowest of K steps exceeds the mean by ``spread (1 - 2^(1-K))``, which the K-process
    steps wait in their allreduce."""
    steps = sm.steps_of(ROWS, k, batch)
    buckets = BUCKETS[overlap] if k > 1 else []
    t_comm = sm.comm_seconds(k, buckets, ALPHA, BETA, PACK[overlap])
    wait = spread * (1 - 2.0 ** (1 - k))
    gather = ROWS / k * GATHER
    step_seconds = steps * (C0 + t_comm + wait) + ROWS / k * (C1 - GATHER)
    seconds = step_seconds + gather + FIXED[k]
    mean = step_seconds / steps
    times = [mean + (spread if i % 2 else -spread) for i in range(steps)] if k == 1 else []
    return {"batch": batch, "rows": ROWS, "steps": steps, "seconds": seconds,
            "bucket_bytes": buckets,
            "step_seconds": step_seconds, "gather_seconds": gather,
            "permutation_seconds": 1e-3, "allreduce_seconds": steps * (t_comm + wait),
            "early_buckets": 0, "samples_per_s": ROWS / seconds,
            "step_ms": 1e3 * seconds / steps, "allreduce_ms": 1e3 * (t_comm + wait),
            "step_times": times}


def _sweep(k: int) -> list[dict[str, float]]:
    return [{"bytes": b, "seconds": sm.ring_allreduce(k, b, ALPHA, BETA)}
            for b in ds.MESSAGE_BYTES]


BATCHES = [32, 128, 512]


def _rounds(ks: list[int], spread: float = 0.0) -> list[dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, Any]] = {"mlcore-1": {
        "size": 1, "fits": [_one(b, spread=spread) for b in BATCHES],
        "pack_seconds": PACK[False], "pack_seconds_overlap": PACK[True]}}
    for k in ks:
        for key, on in ((f"mlcore-{k}", True), (f"mlcore-{k}-no-overlap", False)):
            found[key] = {"size": k, "fits": [_one(b, k, on, spread) for b in BATCHES],
                          "sweep": _sweep(k)}
    return [found, found]


def test_the_straggler_wait_is_the_expected_slowest_of_k_steps_less_the_mean() -> None:
    assert sm.straggler_seconds([1.0, 3.0], 2) == pytest.approx(0.5)  # E max = 2.5, mean 2
    assert sm.straggler_seconds([1.0, 3.0], 3) == pytest.approx(0.75)
    assert sm.straggler_seconds([2.0] * 10, 64) == pytest.approx(0.0)  # steps that never vary
    assert sm.straggler_seconds([1.0, 3.0], 1) == 0.0 and sm.straggler_seconds([], 4) == 0.0
    times = [0.01 * (1 + (i % 7) / 10) for i in range(700)]
    waits = [sm.straggler_seconds(times, k) for k in (2, 8, 64, 10_000)]
    assert waits == sorted(waits) and waits[-1] == pytest.approx(max(times) - sum(times) / 700)


def test_the_model_reproduces_the_straggler_wait_it_generated(
        capsys: pytest.CaptureFixture[str]) -> None:
    spread = 2e-4
    result = ds.report(_rounds([2, 3], spread), BATCHES, [2, 3], "both", ROWS)
    model = result["model"]
    # odd step counts put a step more of one kind: the waits are near, not exact
    assert model["wait"]["2"] == pytest.approx([spread / 2] * 3, rel=2e-3)
    assert model["wait"]["3"] == pytest.approx([spread * 3 / 4] * 3, rel=2e-3)
    for row in result["check"]:
        assert abs(row["epoch_error"]) < 1e-4 and abs(row["efficiency_error"]) < 1e-4, row
    mean_steps = [_one(b)["step_seconds"] / _one(b)["steps"] for b in BATCHES]
    for p in ds.MACHINES:  # the extrapolation's wait: the fraction of a step, median over B
        expected = sorted(spread * (1 - 2.0 ** (1 - p)) / m for m in mean_steps)[1]
        assert model["wait_fraction"][str(p)] == pytest.approx(expected, rel=1e-2)
        for row in result["extrapolation"]:
            if row["machines"] == p:
                assert row["wait_fraction"] == model["wait_fraction"][str(p)]
    assert "straggler wait (the expected slowest of K" in capsys.readouterr().out


def test_the_step_batch_for_a_target_counts_the_straggler_wait() -> None:
    b = sm.step_batch_for(0.9, C0, C1, 1e-3, 0.05)
    assert b is not None
    step = C0 + b * C1
    assert step / (1.05 * step + 1e-3) == pytest.approx(0.9)
    assert sm.step_batch_for(0.9, C0, C1, 1e-3, 0.12) is None  # the wait alone costs >10 %


def test_the_compute_fit_recovers_the_costs_per_step_and_per_row() -> None:
    runs = [_one(b) for b in BATCHES]
    c0, c1 = sm.fit_compute(runs)
    assert c0 == pytest.approx(C0, rel=1e-9) and c1 == pytest.approx(C1, rel=1e-9)
    assert sm.fixed_seconds(runs[0]) == pytest.approx(FIXED[1], rel=1e-9)


def test_the_compute_fit_cannot_give_a_negative_cost() -> None:
    """The timings of a loaded machine (bigger batches ran in quieter moments): a straight
    line through the time per step falls with B ("4299 ms - 5.8 ms/sample"). Here the costs
    stay >= 0 and the fit is the best such."""
    runs = [{"steps": s, "rows": ROWS, "step_seconds": t, "gather_seconds": 0.0}
            for s, t in ((1875, 9.0), (469, 4.0), (118, 0.5))]
    c0, c1 = sm.fit_compute(runs)
    assert c0 >= 0.0 and c1 >= 0.0 and c0 + c1 > 0.0


@pytest.mark.parametrize("k", [2, 3, 8])
def test_the_ping_test_gives_back_the_latency_and_bandwidth(k: int) -> None:
    alpha, beta = sm.fit_network(_sweep(k), k)
    assert alpha == pytest.approx(ALPHA, rel=1e-9) and beta == pytest.approx(BETA, rel=1e-9)
    flat = [{"bytes": b, "seconds": 1e-5} for b in ds.MESSAGE_BYTES]  # no growth with size
    assert sm.fit_network(flat, k)[1] == math.inf


def test_the_model_reproduces_timings_it_generated_and_extrapolates(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds.os, "cpu_count", lambda: 4)  # K = 3 has a core per process
    result = ds.report(_rounds([2, 3]), BATCHES, [2, 3], "both", ROWS)
    model = result["model"]
    assert model["c0"] == pytest.approx(C0, rel=1e-9)
    assert model["c1"] == pytest.approx(C1, rel=1e-9)
    assert model["variants"]["2"]["fixed"] == pytest.approx([FIXED[2]] * 3, rel=1e-9)
    assert model["variants"]["3-no-overlap"]["bucket_bytes"] == BUCKETS[False]
    checked = {(r["who"], r["processes"], r["batch"]) for r in result["check"]}
    assert checked == {(who, k, b) for who, k in (("mlcore", 1), ("mlcore", 2), ("mlcore", 3),
                                                  ("mlcore/no-overlap", 2),
                                                  ("mlcore/no-overlap", 3))
                       for b in BATCHES}
    for row in result["check"]:
        assert abs(row["epoch_error"]) < 1e-6 and abs(row["efficiency_error"]) < 1e-6, row
    printed = capsys.readouterr().out
    assert "model check mlcore/no-overlap K=3 B=512: T predicted" in printed
    assert "achievable 70% of the line rate 1.25 GB/s" in printed
    rows = {(r["network"], r["machines"]): r for r in result["extrapolation"]}
    assert set(rows) == {(n["name"], p) for n in ds.NETWORKS for p in ds.MACHINES}
    for (name, p), row in rows.items():
        net = next(n for n in ds.NETWORKS if n["name"] == name)
        t_comm = sm.comm_seconds(p, BUCKETS[False], net["latency"],  # K=3 without overlap
                                 net["fraction"] * net["line_rate"], PACK[False])
        assert row["t_comm"] == pytest.approx(t_comm)
        def eff(batch: int, p: int = p, t_comm: float = t_comm) -> float:
            return sm.efficiency(p, ROWS, batch, C0, C1, t_comm, FIXED[3], FIXED[1])
        for b in (32, 256, 1024):
            assert row[f"efficiency_at_{b}"] == pytest.approx(eff(b))
        need = row["batch_for_target"]
        if need is not None:  # the smallest batch that reaches 90 %
            assert eff(need) >= 0.9 and (need == 1 or eff(need - 1) < 0.9)
        step = row["step_batch_for_target"]
        assert step is not None and (C0 + step * C1) / (C0 + step * C1 + t_comm) \
            == pytest.approx(0.9)


def test_mlcore_bench_distributed_runs_the_scaling_script(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(ds, "main", lambda argv=None: seen.append(list(argv or [])))
    result = CliRunner().invoke(main, ["bench", "--distributed", "-n", "2,3", "--rounds", "2",
                                       "--json", "scaling.json"])
    assert result.exit_code == 0, result.output
    assert seen == [["-n", "2,3", "--rounds", "2", "--json", "scaling.json"]]


@pytest.mark.parametrize("batches", ["512", "512,512"])
def test_one_batch_size_cannot_fit_the_cost_per_step_and_per_row(
        batches: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One batch size gives one equation for c0 and c1 (c1 would silently be 0): refused
    before anything runs, unless --steps times steps (rows and steps then both known)."""
    def launched(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("launched")

    monkeypatch.setattr(ds, "_launch", launched)
    with pytest.raises(SystemExit, match="--batches needs at least two different sizes to "
                       "fit c0 and c1 \\(per step, per row\\); give e.g. --batches 32,512"):
        ds.main(["--batches", batches, "--rounds", "1", "--no-torch"])
    with pytest.raises(RuntimeError, match="launched"):
        ds.main(["--batches", batches, "--steps", "5", "--rounds", "1", "--no-torch"])


def test_the_json_file_is_written_whole_or_not_at_all(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--json goes to a temporary file in the same folder, then replaces the target: a
    failure while writing leaves the earlier file as it was, and no temporary file."""
    rounds = _rounds([2])[0]
    monkeypatch.setattr(ds, "_launch", lambda k, batches, steps, rows, torch=False,
                        overlap=True: rounds[f"mlcore-{k}" + ("" if overlap else
                                                              "-no-overlap")])
    target = tmp_path / "scaling.json"
    argv = ["-n", "2", "--batches", ",".join(map(str, BATCHES)), "--rows", str(ROWS),
            "--rounds", "1", "--no-torch", "--json", str(target)]
    ds.main(argv)
    written = target.read_text()
    assert '"model"' in written
    monkeypatch.setattr(ds, "report", lambda *a, **k: {"loadavg_end": 0, "bad": object()})
    with pytest.raises(TypeError):
        ds.main(argv)
    assert target.read_text() == written
    assert [p.name for p in tmp_path.iterdir()] == ["scaling.json"]


def test_the_extrapolation_takes_costs_from_processes_with_a_core_each(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """On 2 cores the 3-process runs share cores: their fixed costs are not a machine's, so
    the extrapolation takes K = 2's (without overlap); with no K that fits, the largest."""
    monkeypatch.setattr(ds.os, "cpu_count", lambda: 2)
    result = ds.report(_rounds([2, 3]), BATCHES, [2, 3], "both", ROWS)
    assert "as K=2-no-overlap here" in capsys.readouterr().out
    row = result["extrapolation"][0]
    t_comm = row["t_comm"]
    assert row["efficiency_at_256"] == pytest.approx(
        sm.efficiency(row["machines"], ROWS, 256, C0, C1, t_comm, FIXED[2], FIXED[1]))
    monkeypatch.setattr(ds.os, "cpu_count", lambda: 1)
    ds.report(_rounds([2, 3]), BATCHES, [2, 3], "both", ROWS)
    assert "as K=3-no-overlap here" in capsys.readouterr().out


def test_the_report_can_be_printed_again_from_a_saved_run(tmp_path: Any) -> None:
    """``--report FILE``: the same model, check and extrapolation from the saved rounds,
    nothing timed (a later model on an earlier measurement)."""
    rounds = _rounds([2, 3], 2e-4)
    path = tmp_path / "scaling.json"
    path.write_text(json.dumps({"rounds": rounds}))
    again = ds.reprint(str(path))
    first = ds.report(rounds, BATCHES, [2, 3], "both", ROWS)
    assert again["check"] == first["check"] and again["model"] == first["model"]
    ds.main(["--report", str(path)])  # the command line's way
