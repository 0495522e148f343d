"""The benchmark suite (``mlcore bench``): runs, writes its JSON and plots, references are right.

No timing assertions: only structure, the equality check, and the reference maths.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from mlcore_bench import cases, timing
from mlcore_bench import reference_numpy as ref

from mlcore.cli import main


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--quick", "--rounds", "1", "--cases", "activation/relu",
            "--cases", "mlp_step/2-4-1/sgd", "--json", str(out / "r.json"),
            "--plot", str(out / "r.png"), "--progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (out / "r.png").stat().st_size > 1000
    assert (out / "r-ratios.png").stat().st_size > 1000
    data: dict[str, Any] = json.loads((out / "r.json").read_text())
    data["_output"] = result.stdout
    data["_stderr"] = result.stderr
    return data


@pytest.mark.slow
def test_bench_json_records_machine_and_competitors(quick_report: dict[str, Any]) -> None:
    m = quick_report["machine"]
    for key in ("cpu", "cpu_count", "python", "versions", "thread_pools", "commit", "dirty"):
        assert key in m
    assert "numpy" in m["versions"] and "mlcore" in m["versions"]
    labels = {c["label"]: c for c in quick_report["competitors"]}
    assert labels["numpy"]["available"] and labels["numpy-hand"]["available"]
    assert all(c["reason"] for c in labels.values() if not c["available"])
    assert quick_report["dtypes"] == ["float32"]


def test_bench_progress_bar_goes_to_stderr(quick_report: dict[str, Any]) -> None:
    assert "mlcore bench" in quick_report["_stderr"] and "2/2" in quick_report["_stderr"]
    assert "mlcore bench:" not in quick_report["_output"]


def test_bench_results_rows_and_check(quick_report: dict[str, Any]) -> None:
    names = [(e["case"], e["dtype"]) for e in quick_report["results"]]
    assert names == [("activation/relu", "float32"), ("mlp_step/2-4-1/sgd", "float32")]
    for entry in quick_report["results"]:
        assert entry["check"]["passed"], entry["check"]
        for label in ("numpy", "strict", "numpy-hand"):
            row = entry["rows"][label]
            assert row["status"] == "ok"
            assert row["q1_s"] <= row["median_s"] <= row["q3_s"]
            assert len(row["round_medians_s"]) == 1
        assert {(r["a"], r["b"]) for r in entry["ratios"]} >= {("numpy", "numpy-hand"),
                                                                ("strict", "numpy")}


def test_bench_targets_and_recommendation(quick_report: dict[str, Any]) -> None:
    measured = [t for t in quick_report["targets"] if t["ratio"] is not None]
    assert any("strict / numpy, 2-4-1" in t["target"] for t in measured)
    assert all(t["passed"] in (True, False) for t in measured)
    assert all(t["reason"] for t in quick_report["targets"] if t["ratio"] is None)
    if quick_report["recommendation_withheld"]:  # a busy machine
        assert quick_report["recommendations"] == []
    else:
        assert quick_report["recommendations"][0].startswith("2-4-1/sgd float32: use numpy")
    assert "targets (float32" in quick_report["_output"]
    assert "(reason above)" not in quick_report["_output"]


def test_python_m_mlcore_bench_help(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mlcore_bench", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--backend" in out.stdout
    assert "Usage: python -m mlcore_bench" in out.stdout


def test_ratio_is_paired_by_round() -> None:
    a, b = timing.Stats([[2.0, 2.0], [6.0, 6.0]]), timing.Stats([[1.0], [4.0]])
    assert timing.ratio(a, b) == (1.75, 1.5, 2.0)


def test_case_selection() -> None:
    found = cases.all_cases(["relu", "tanh"], ["mse"], quick=False)
    assert [c.name for c in cases.select(found, ["activation/*"])] == [
        "activation/relu", "activation/tanh"]
    assert {c.batch for c in cases.select(found, ["mlp_step/784"])} == {32, 256, 1024}
    quick = cases.all_cases(["relu", "tanh"], ["mse"], quick=True)
    assert {c.batch for c in cases.select(quick, ["mlp_step/784"])} == {32, 256}  # a line
    assert {c.batch for c in cases.select(quick, ["dense"])} == {32}
    assert not cases.select(quick, ["train/"])


def _adam_oracle(params: list[np.ndarray], grads_fn: Any, steps: int) -> list[np.ndarray]:
    """PyTorch's Adam written out plainly (bias-corrected m̂ and v̂), float64."""
    p = [x.copy() for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t in range(1, steps + 1):
        for i, g in enumerate(grads_fn(p)):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            mhat, vhat = m[i] / (1 - 0.9**t), v[i] / (1 - 0.999**t)
            p[i] = p[i] - 1e-3 * mhat / (np.sqrt(vhat) + 1e-8)
    return p


def _grads_of(sizes: tuple[int, ...], x: np.ndarray, y: np.ndarray) -> Any:
    """Gradients of the mean softmax-CE of a ReLU MLP, by a separate float64 formula."""
    def grads(p: list[np.ndarray]) -> list[np.ndarray]:
        acts, a = [x], x
        for i in range(0, len(p), 2):
            a = a @ p[i].T + p[i + 1]
            if i < len(p) - 2:
                a = np.maximum(a, 0)
            acts.append(a)
        e = np.exp(a - a.max(1, keepdims=True))
        d = e / e.sum(1, keepdims=True) - np.eye(sizes[-1])[y]
        d /= len(y)
        out: list[np.ndarray] = []
        for i in range(len(p) - 2, -1, -2):
            out = [d.T @ acts[i // 2], d.sum(0), *out]
            d = (d @ p[i]) * (acts[i // 2] > 0)
        return out
    return grads


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_hand_numpy_step_matches_plain_formulas(optimizer: str) -> None:
    sizes = (6, 5, 4, 3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 6)), rng.integers(0, 3, 8)
    weights = cases.init_weights(sizes)
    model = ref.NumpyMLP(weights, np.float64, optimizer=optimizer,
                         lr=1e-3 if optimizer == "adam" else 0.1)
    for _ in range(3):
        model.step(x, y)
    grads = _grads_of(sizes, x, y)
    if optimizer == "adam":
        want = _adam_oracle(weights, grads, 3)
    else:
        want = [w.copy() for w in weights]
        for _ in range(3):
            want = [w - 0.1 * g for w, g in zip(want, grads(want), strict=True)]
    for got, w in zip(model.params, want, strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-10, atol=1e-12)


def test_hand_numpy_matches_torch_on_one_step() -> None:
    torch = pytest.importorskip("torch")
    from mlcore_bench.bench_reference import make_hand, make_torch

    case = cases.StepCase((20, 16, 4), 8)
    hand, tch = make_hand(case, np.float64), make_torch(case, np.float64, "cpu")
    hand.step()
    tch.step()
    assert torch.get_num_threads() >= 1
    # torch.optim.Adam keeps its step count, hence the bias corrections, in float32 even for
    # float64 parameters: its first update is lr·(1 ± 5e-6), not lr. Hence atol 1e-8.
    for a, b in zip(hand.result(), tch.result(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("backend_name", ["numpy", "strict"])
def test_digits_case_trains_on_the_backend_it_names(backend_name: str) -> None:
    """The digits case builds its model when timed, outside make()'s use_backend: the
    model must still be on the named backend (its weights are loaded in place)."""
    from mlcore_bench import bench_mlcore

    bench = bench_mlcore.make(cases.TrainCase(), np.float32, backend_name)
    bench.step()
    epochs, accuracy = bench.result()[:2]
    assert accuracy >= 0.97 and epochs <= cases.TrainCase().max_epochs


class _FakeEvent:
    """Stands in for a CUDA event: records a fake GPU clock that each step advances."""

    gpu_ms = 0.0

    def __init__(self, **_: Any) -> None:
        self.at: float | None = None
        self.synced = False

    def record(self) -> None:
        self.at = _FakeEvent.gpu_ms

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, end: _FakeEvent) -> float:  # torch.cuda.Event's API
        assert end.synced and self.at is not None and end.at is not None
        return end.at - self.at


@pytest.mark.parametrize("kind", ["cupy", "torch-cuda"])
def test_gpu_competitors_are_timed_with_cuda_events(kind: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from mlcore_bench.bench_reference import FnBench

    cuda = types.SimpleNamespace(Event=_FakeEvent,
                                 get_elapsed_time=lambda a, b: a.elapsed_time(b))
    module = "cupy" if kind == "cupy" else "torch"
    monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(cuda=cuda))

    def step() -> None:
        _FakeEvent.gpu_ms += 2.0  # each call keeps the fake GPU busy for 2 ms

    entered: list[str] = []

    class Device:  # the GPU the bench runs on: events must be recorded while it is current
        def __enter__(self) -> None:
            entered.append("in")

        def __exit__(self, *exc: object) -> None:
            entered.append("out")

    gpu = FnBench(step, list, memory=kind, device_ctx=Device())
    host = FnBench(lambda: None, list, memory="host")
    assert timing.clock_name(gpu) == "cuda-events"
    assert timing.clock_name(host) == "perf_counter"
    assert timing._block(gpu, 5) == pytest.approx(2e-3)  # GPU time, not the host's ~0 s
    assert entered == ["in", "out"]
    assert timing._block(host, 5) < 1e-3


class _Sleeper:
    """A competitor whose every call sleeps ``s`` seconds (no timing is asserted: a sleep
    lasts at least its length, so the cap is certainly passed)."""

    memory = ""

    def __init__(self, s: float) -> None:
        self.s, self.calls = s, 0

    def step(self) -> None:
        import time

        self.calls += 1
        time.sleep(self.s)

    def sync(self) -> None:
        pass

    def result(self) -> list[Any]:
        return []


def test_a_slow_competitor_is_cut_not_waited_for() -> None:
    from mlcore_bench.timing import Settings, measure

    settings = Settings(rounds=4, samples=2, block_s=0.0, warmup=1, pause_s=0.0, max_s=0.05)
    slow, fast = _Sleeper(0.03), _Sleeper(0.0)
    stats = measure({"slow": slow, "fast": fast}, settings)
    assert "s spent" in stats["slow"].cut and "--max-seconds 0.05" in stats["slow"].cut
    assert len(stats["slow"].rounds) < 4 and slow.calls < 1 + 4 * 2
    assert not stats["fast"].cut and len(stats["fast"].rounds) == 4
    spent = measure({"fast": _Sleeper(0.0)}, settings, spent={"fast": 1.0})["fast"]
    assert spent.cut and spent.rounds == []  # its set-up already took the budget


def test_quick_caps_each_competitor_and_the_option_overrides() -> None:
    from mlcore_bench.cases import StepCase
    from mlcore_bench.runner import QUICK_MAX_S, Options

    case = StepCase((2, 4, 1), 4)
    assert Options(quick=True).settings(case).max_s == QUICK_MAX_S
    assert Options().settings(case).max_s is None
    assert Options(max_seconds=9.0).settings(case).max_s == 9.0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_keras_step_matches_the_hand_written_step(optimizer: str) -> None:
    """keras-jax's training step, first call, equals the hand-written NumPy step (Keras's
    Adam ε is set so that its first step is torch.optim's), on a network and a bce XOR."""
    if importlib.util.find_spec("keras") is None:  # not imported here: it reads
        pytest.skip("keras is not installed")     # KERAS_BACKEND once, bench_keras sets it
    from mlcore_bench.bench_keras import status
    from mlcore_bench.bench_reference import make_hand, make_keras

    if status():
        pytest.skip(status())
    for case in (cases.StepCase((20, 16, 4), 8, optimizer=optimizer),
                 cases.StepCase(cases.XOR_SIZES, 4, hidden="tanh", loss="sigmoid_bce",
                                optimizer=optimizer, lr=0.1)):
        hand, keras = make_hand(case, np.float32), make_keras(case, np.float32)
        hand.step()
        keras.step()
        for a, b in zip(keras.result(), hand.result(), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.slow
def test_tutorial_case_trains_to_its_target_on_every_competitor() -> None:
    """The Keras-tutorial fit (BatchNorm, Dropout, validation_split, EarlyStopping) on a
    tenth of its rows: mlcore, PyTorch and Keras each reach the case's accuracy; the
    hand-written NumPy reference says it has no version of it."""
    import dataclasses

    from mlcore_bench import bench_mlcore
    from mlcore_bench.bench_reference import make_hand, make_keras, make_torch

    case = dataclasses.replace(cases.TutorialCase(), samples=20_000, epochs=2)
    makers = [lambda: bench_mlcore.make(case, np.float32, "numpy")]
    if importlib.util.find_spec("torch"):
        makers.append(lambda: make_torch(case, np.float32, "cpu"))
    if importlib.util.find_spec("keras"):
        makers.append(lambda: make_keras(case, np.float32))
    for make in makers:
        bench = make()
        bench.step()
        epochs, accuracy = bench.result()
        assert 1 <= epochs <= case.epochs and accuracy >= case.target, (make, accuracy)
    with pytest.raises(timing.UnavailableError, match="no hand-written NumPy version"):
        make_hand(case, np.float32)


def test_quick_leaves_keras_out_unless_named() -> None:
    """--quick keeps its two minutes: Keras (seconds of compiling per case) is listed as
    left out, with the option that runs it; named, or without --quick, it runs."""
    from mlcore_bench.runner import competitors

    def reason(wanted: list[str], quick: bool) -> str:
        row = next(c for c in competitors(wanted, quick) if c.label == "keras-jax")
        return row.reason

    if reason([], False):  # Keras not installed here: the reason says so either way
        pytest.skip(reason([], False))
    assert reason([], True) == ("left out of --quick (slow to start); name it: "
                                "--backend keras-jax")
    assert reason(["keras-jax"], True) == ""


def test_the_check_allows_what_the_independent_references_disagree_by() -> None:
    """A case over many float32 steps: torch-cpu is 1.2e-4 from numpy-hand (rounding), so a
    competitor as close passes, and one five times farther still fails; one step, where the
    references agree to 1e-7, keeps the 1e-4 tolerance; the tolerance is capped."""
    import numpy as np
    from mlcore_bench.cases import StepCase
    from mlcore_bench.runner import MAX_TOLERANCE, TOLERANCE, check

    case = StepCase((2, 4, 1), 4)
    ref = [np.ones(100)]

    def off(rel: float) -> list[Any]:
        return [np.ones(100) * (1 + rel)]

    drift = check(case, {"numpy-hand": ref, "torch-cpu": off(1.2e-4), "jax": off(1.1e-4),
                         "numpy": off(1e-6), "torch": off(6e-4)})
    assert drift["reference"] == "numpy-hand"
    assert drift["tolerance"] == pytest.approx(2.4e-4) and not drift["passed"]
    assert drift["errors"]["jax"] <= drift["tolerance"] < drift["errors"]["torch"]
    step = check(case, {"numpy-hand": ref, "torch-cpu": off(1e-7), "numpy": off(2e-4)})
    assert step["tolerance"] == TOLERANCE and not step["passed"]
    mine = check(case, {"numpy-hand": ref, "mlcore-steps": off(0.5), "numpy": off(0.4)})
    assert mine["tolerance"] == TOLERANCE  # mlcore's own rows never widen it
    wild = check(case, {"numpy-hand": ref, "torch-cpu": off(0.3), "numpy": off(0.1)})
    assert wild["tolerance"] == MAX_TOLERANCE and not wild["passed"]
