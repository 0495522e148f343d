"""The MLP chapter's experiments (logic gates, XOR, digits), runnable on any backend.

* :func:`perceptron`: one threshold unit (eq. 1.7) trained by the perceptron rule learns AND,
  OR, NAND and NOR; on XOR and XNOR it never gets all four points right.
* :func:`best_line_accuracy`: the best any single threshold unit on a grid of weights gets
  (75% on XOR and XNOR: the points are not linearly separable).
* :func:`hand_wired_xor`: figure 1.7's network, hidden OR and NAND units and an AND output,
  computes XOR exactly.
* :func:`train_gate`: an MLP with one hidden layer learns XOR (XNOR) by backpropagation.
* :func:`digits`: scikit-learn's bundled handwritten digits (no download) with an MLP.

Each runs on the selected backend (``mlcore.use_backend``); ``mlcore demo ...`` prints them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .arrays.namespace import count_dtype
from .backend import Backend, get_backend
from .layers.core import Activation, Dense, on_device
from .models.sequential import MLP, Sequential

__all__ = ["GATES", "INPUTS", "perceptron", "best_line_accuracy", "hand_wired_xor",
           "train_gate", "xor_seed_successes", "digits", "load_digits_split",
           "PerceptronResult", "DigitsResult"]

INPUTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
"""The four input pairs (x1, x2) of a two-input gate."""

GATES: dict[str, list[int]] = {
    "AND": [0, 0, 0, 1], "OR": [0, 1, 1, 1], "NAND": [1, 1, 1, 0],
    "NOR": [1, 0, 0, 0], "XOR": [0, 1, 1, 0], "XNOR": [1, 0, 0, 1],
}
"""Each gate's output for :data:`INPUTS`."""


def _gate_data(backend: Backend, gate: str) -> tuple[Any, Any]:
    X = backend.asarray(INPUTS, dtype=backend.xp.float32)
    t = backend.asarray([[float(v)] for v in GATES[gate.upper()]], dtype=backend.xp.float32)
    return X, t


def _accuracy(xp: Any, y: Any, t: Any) -> float:
    return int(xp.count_nonzero(y == t)) / int(t.shape[0])


@dataclass
class PerceptronResult:
    """A perceptron run: final weights, whether it converged, the accuracies per epoch."""

    gate: str
    weights: list[float]
    bias: float
    converged: bool
    accuracies: list[float] = field(default_factory=list)

    @property
    def best_accuracy(self) -> float:
        return max(self.accuracies)


def perceptron(gate: str, *, epochs: int = 20, lr: float = 1.0) -> PerceptronResult:
    """Train one step unit ``y = step(w·x + b)`` (eq. 1.7) with the perceptron rule.

    Rosenblatt's rule, one sample at a time: ``w ← w + lr (t - y) x``, ``b ← b + lr (t - y)``,
    starting from zero. It converges for linearly separable gates (AND, OR, NAND, NOR) and
    cycles for XOR and XNOR; the accuracy of every epoch is recorded.
    """
    backend = get_backend()
    xp = backend.xp
    X, t = _gate_data(backend, gate)
    unit = Dense(2, 1, init="zeros")
    weight, bias = unit.parameters()
    model = Sequential([unit, Activation("step")])
    result = PerceptronResult(gate.upper(), [], 0.0, False)
    with on_device(backend.device):
        for _ in range(epochs):
            result.accuracies.append(_accuracy(xp, model(X), t))
            if result.accuracies[-1] == 1.0:
                result.converged = True
                break
            for i in range(X.shape[0]):
                x = X[i:i + 1, ...]
                err = t[i:i + 1, ...] - model(x)
                weight.value += lr * (err.T @ x)
                bias.value += lr * err[0, ...]
    result.weights = [float(v) for v in backend.to_numpy(weight.value).reshape(-1)]
    result.bias = float(backend.to_numpy(bias.value)[0])
    return result


def best_line_accuracy(gate: str, *, steps: int = 9, limit: float = 2.0) -> float:
    """The best accuracy of any single step unit with ``w1, w2, b`` on a grid.

    All ``steps³`` units (values from ``-limit`` to ``limit``) are evaluated at once as one
    Dense layer of ``steps³`` outputs. 100% for AND, OR, NAND, NOR; 75% for XOR and XNOR.
    """
    backend = get_backend()
    xp = backend.xp
    X, t = _gate_data(backend, gate)
    grid = [-limit + 2 * limit * k / (steps - 1) for k in range(steps)]
    units = [(w1, w2, b) for w1 in grid for w2 in grid for b in grid]
    layer = Dense(2, len(units), init="zeros")
    weight, bias = layer.parameters()
    weight.value = backend.asarray([[w1, w2] for w1, w2, _ in units], dtype=xp.float32)
    bias.value = backend.asarray([b for _, _, b in units], dtype=xp.float32)
    y = Sequential([layer, Activation("step")])(X)  # (4, units)
    with on_device(backend.device):
        correct = xp.sum(xp.astype(y == t, count_dtype(xp)), axis=0)
        return int(xp.max(correct)) / 4


def hand_wired_xor() -> Sequential:
    """Figure 1.7: hidden units OR(x1, x2) and NAND(x1, x2), output AND of the two.

    OR is ``step(x1 + x2 - 0.5)``, NAND ``step(-x1 - x2 + 1.5)``, AND
    ``step(h1 + h2 - 1.5)``: no training, XOR exactly.
    """
    backend = get_backend()
    xp = backend.xp
    model = Sequential([Dense(2, 2, init="zeros"), Activation("step"),
                        Dense(2, 1, init="zeros"), Activation("step")])
    weights = {"layers.0.weight": [[1.0, 1.0], [-1.0, -1.0]], "layers.0.bias": [-0.5, 1.5],
               "layers.2.weight": [[1.0, 1.0]], "layers.2.bias": [-1.5]}
    model.load_state_dict({k: backend.asarray(v, dtype=xp.float32) for k, v in weights.items()})
    return model


def train_gate(gate: str = "XOR", *, seed: int = 0, hidden: int = 4, epochs: int = 200,
               lr: float = 0.1) -> tuple[MLP, float]:
    """Train ``MLP([2, hidden, 1], tanh, sigmoid)`` on a gate with binary cross-entropy
    and Adam (full batch); return the model and its accuracy on the four points."""
    X, t = INPUTS, [float(v) for v in GATES[gate.upper()]]
    model = MLP([2, hidden, 1], activation="tanh", output_activation="sigmoid", seed=seed)
    model.fit(X, t, loss="binary_cross_entropy", optimizer="adam", lr=lr, epochs=epochs,
              batch_size=4, seed=seed, verbose=False)
    return model, model.evaluate(X, t)["accuracy"]


def xor_seed_successes(gate: str = "XOR", seeds: range = range(10)) -> list[int]:
    """The seeds from which :func:`train_gate` reaches 100% on ``gate``."""
    return [s for s in seeds if train_gate(gate, seed=s)[1] == 1.0]


@dataclass
class DigitsResult:
    """The digits experiment's outcome."""

    backend: str
    accuracy: float
    seconds: float
    history: dict[str, list[float]]
    n_train: int
    n_test: int


def load_digits_split(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), split 75/25 stratified
    with ``random_state=seed`` and standardised with the training set's mean and scale.

    Returns host (NumPy) arrays ``X_train, X_test, y_train, y_test``.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:
        raise ModuleNotFoundError(
            "The digits example needs scikit-learn, which is not installed. Install it with: "
            "pip install 'mlcore[examples]'.") from exc
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


DIGITS_SIZES = (64, 256, 128, 10)


def digits(*, epochs: int = 15, seed: int = 0, batch_size: int = 64, lr: float = 2e-3,
           verbose: bool | str = "auto", validate: bool = False) -> DigitsResult:
    """Train ``MLP([64, 256, 128, 10], relu, softmax)`` with Adam on the digits and test it.

    The split is fixed (``random_state=0``); ``seed`` seeds the weights and the shuffling.
    Data goes in as NumPy arrays and is converted at the ``fit`` boundary, so this runs on
    whichever backend is selected. The time covers ``fit`` alone (with ``validate``, the
    test set is also scored after each epoch, for ``val_`` learning curves).
    """
    backend = get_backend()
    X_train, X_test, y_train, y_test = load_digits_split()
    model = MLP(list(DIGITS_SIZES), activation="relu", output_activation="softmax", seed=seed)
    start = time.perf_counter()
    history = model.fit(X_train, y_train, loss="cross_entropy", optimizer="adam", lr=lr,
                        epochs=epochs, batch_size=batch_size, seed=seed, verbose=verbose,
                        validation_data=(X_test, y_test) if validate else None)
    backend.synchronize()
    seconds = time.perf_counter() - start
    accuracy = model.evaluate(X_test, y_test)["accuracy"]
    return DigitsResult(backend.name, accuracy, seconds, history, len(y_train), len(y_test))
