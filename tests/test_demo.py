"""The chapter's experiments, each claim proved on every backend: perceptrons learn the
linearly separable gates and never XOR/XNOR, figure 1.7's hand-wired network computes XOR,
a one-hidden-layer MLP learns XOR and XNOR from at least 9 of 10 seeds, and an MLP reaches
97% on scikit-learn's digits; plus the ``mlcore demo`` commands."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from mlcore import demo
from mlcore.cli import main

LINEAR = ["AND", "OR", "NAND", "NOR"]


@pytest.mark.parametrize("gate", LINEAR)
def test_a_perceptron_learns_the_separable_gates(backend: Any, gate: str) -> None:
    run = demo.perceptron(gate)
    assert run.converged and run.accuracies[-1] == 1.0
    w1, w2 = run.weights
    predicted = [int(w1 * a + w2 * b + run.bias > 0) for a, b in demo.INPUTS]
    assert predicted == demo.GATES[gate]
    assert demo.best_line_accuracy(gate) == 1.0


@pytest.mark.parametrize("gate", ["XOR", "XNOR"])
def test_no_single_unit_computes_xor_or_xnor(backend: Any, gate: str) -> None:
    run = demo.perceptron(gate, epochs=50)
    assert not run.converged and run.best_accuracy < 1.0
    assert demo.best_line_accuracy(gate) == 0.75  # three of four points, never four


def test_hand_wired_network_of_figure_1_7_is_xor(backend: Any) -> None:
    model = demo.hand_wired_xor()
    out = backend.to_numpy(model.predict(demo.INPUTS)).reshape(-1)
    assert out.tolist() == demo.GATES["XOR"]
    hidden = backend.to_numpy(model.layers[1](model.layers[0](
        backend.asarray(np.asarray(demo.INPUTS, dtype=np.float32)))))
    assert hidden[:, 0].tolist() == demo.GATES["OR"] and hidden[:, 1].tolist() == demo.GATES["NAND"]


@pytest.mark.parametrize("gate", ["XOR", "XNOR"])
@pytest.mark.slow
def test_one_hidden_layer_learns_xor_and_xnor(backend: Any, gate: str) -> None:
    assert len(demo.xor_seed_successes(gate, range(10))) >= 9


@pytest.mark.slow
def test_digits_reach_97_percent(backend: Any) -> None:
    pytest.importorskip("sklearn")
    result = demo.digits(verbose=False)
    assert result.accuracy >= 0.97
    assert result.backend == backend.name and (result.n_train, result.n_test) == (1347, 450)
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_demo_commands_print_the_results() -> None:
    runner = CliRunner()
    gates = runner.invoke(main, ["demo", "gates"])
    assert gates.exit_code == 0, gates.output
    assert "XOR     50%  never converges" in gates.output and "[0, 1, 1, 0]" in gates.output
    xor = runner.invoke(main, ["demo", "xor", "--seeds", "2"])
    assert xor.exit_code == 0 and "XOR: 100% accuracy from 2 of 2 seeds" in xor.output


def test_demo_digits_command(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    result = CliRunner().invoke(main, ["demo", "digits", "--backend", "numpy", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "training time" in result.output
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    missing = CliRunner().invoke(main, ["demo", "digits"])
    assert missing.exit_code == 1 and "pip install 'mlcore[examples]'" in missing.output
