"""What is benchmarked: each case's shapes and its data, made once on the host.

Every competitor of a case receives the same host arrays (float64, seeded), cast to the
dtype under test and moved to its own device, and the same initial weights, so their
results can be compared before they are timed.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .timing import UnavailableError

__all__ = ["ActivationCase", "LossCase", "DenseCase", "StepCase", "TrainCase", "FitCase",
           "TutorialCase", "Case", "WHOLE_FITS",
           "all_cases", "select", "QUICK", "init_weights", "LOSS_VARIANTS", "MNIST_SIZES",
           "XOR_SIZES"]

SEED = 20240601
MNIST_SIZES = (784, 512, 512, 10)
XOR_SIZES = (2, 4, 1)
SMALL_SIZES = (64, 128, 128, 10)
"""A small network, where per-operation overhead rules and a compiled whole step wins."""


def _rng(salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(SEED + salt)


def init_weights(sizes: tuple[int, ...], salt: int = 0) -> list[np.ndarray]:
    """``[W0, b0, W1, b1, ...]`` with W of shape (out, in), uniform ±1/√in (float64)."""
    rng, out = _rng(100 + salt), []
    for n_in, n_out in itertools.pairwise(sizes):
        bound = 1.0 / np.sqrt(n_in)
        out += [rng.uniform(-bound, bound, (n_out, n_in)), rng.uniform(-bound, bound, n_out)]
    return out


@dataclass(frozen=True)
class ActivationCase:
    """``y = f(x)`` then ``dx = f.backward(x, y, dy)`` on a (batch, features) array."""

    activation: str
    batch: int = 256
    features: int = 512
    group: str = "activation"

    @property
    def name(self) -> str:
        return f"activation/{self.activation}"

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(1)
        shape = (self.batch, self.features)
        return rng.normal(0, 2, shape), rng.normal(0, 1, shape)


@dataclass(frozen=True)
class LossVariant:
    loss: str
    params: dict[str, Any]
    pred: str  # logits | probs | prob_rows | values | logit_col | prob_col
    target: str  # labels | binary | prob_rows | values


LOSS_VARIANTS: dict[str, LossVariant] = {
    "cross_entropy(logits)": LossVariant("cross_entropy", {"from_logits": True},
                                         "logits", "labels"),
    "cross_entropy": LossVariant("cross_entropy", {}, "prob_rows", "labels"),
    "binary_cross_entropy(logits)": LossVariant("binary_cross_entropy", {"from_logits": True},
                                                "logit_col", "binary"),
    "binary_cross_entropy": LossVariant("binary_cross_entropy", {}, "prob_col", "binary"),
    "kl_divergence": LossVariant("kl_divergence", {}, "prob_rows", "prob_rows"),
    "mse": LossVariant("mse", {}, "values", "values"),
    "mae": LossVariant("mae", {}, "values", "values"),
}
"""Benchmark name -> which mlcore loss, with which parameters and data."""


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class LossCase:
    """``value = loss.forward(pred, target)`` and ``grad = loss.backward(pred, target)``."""

    variant: str
    batch: int = 256
    classes: int = 10
    group: str = "loss"

    @property
    def name(self) -> str:
        return f"loss/{self.variant}"

    @property
    def spec(self) -> LossVariant:
        return LOSS_VARIANTS[self.variant]

    def _array(self, kind: str, rng: np.random.Generator) -> np.ndarray:
        n, k = self.batch, self.classes
        if kind == "labels":
            return rng.integers(0, k, n)
        if kind == "binary":
            return rng.integers(0, 2, n).astype(np.float64)
        if kind == "prob_rows":
            return _softmax_rows(rng.normal(0, 1, (n, k)))
        if kind == "prob_col":
            return rng.uniform(0.05, 0.95, n)
        if kind == "logit_col":
            return rng.normal(0, 2, n)
        return rng.normal(0, 1, (n, k))

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        rng = _rng(2)
        return self._array(self.spec.pred, rng), self._array(self.spec.target, rng)


@dataclass(frozen=True)
class DenseCase:
    """One Dense layer (eq. 1.5): forward, then backward to dX, dW and db."""

    batch: int
    in_features: int = 784
    out_features: int = 512
    group: str = "dense"

    @property
    def name(self) -> str:
        return f"dense/{self.in_features}-{self.out_features}"

    def data(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        rng = _rng(3)
        x = rng.normal(0, 1, (self.batch, self.in_features))
        dy = rng.normal(0, 1, (self.batch, self.out_features))
        return x, dy, init_weights((self.in_features, self.out_features), salt=3)


@dataclass(frozen=True)
class StepCase:
    """One full training step: forward, loss from logits, backward, optimiser update."""

    sizes: tuple[int, ...]
    batch: int
    hidden: str = "relu"
    loss: str = "softmax_ce"  # softmax_ce (integer labels) or sigmoid_bce (one output)
    optimizer: str = "adam"
    lr: float = 1e-3
    group: str = "mlp_step"

    @property
    def name(self) -> str:
        return f"mlp_step/{'-'.join(map(str, self.sizes))}/{self.optimizer}"

    def data(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        weights = init_weights(self.sizes, salt=4)
        if self.sizes == XOR_SIZES:
            x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * (self.batch // 4), np.float64)
            return x, np.logical_xor(x[:, 0], x[:, 1]).astype(np.float64), weights
        rng = _rng(4)
        x = rng.normal(0, 1, (self.batch, self.sizes[0]))
        return x, rng.integers(0, self.sizes[-1], self.batch), weights


@dataclass(frozen=True)
class TrainCase:
    """The digits demo (``mlcore demo digits``), timed to a target: train from the same
    weights, on the same shuffled mini-batches, until test accuracy reaches ``target``
    (checked after each epoch).

    Data, network and optimiser are the demo's (:mod:`mlcore.demo`): scikit-learn's bundled
    8x8 digits, split 75/25 stratified and standardised, ``MLP([64, 256, 128, 10])`` with
    ReLU, softmax-cross-entropy, Adam at lr 2e-3, batches of 64.
    """

    sizes: tuple[int, ...] = (64, 256, 128, 10)
    batch: int = 64
    target: float = 0.97
    max_epochs: int = 50
    lr: float = 2e-3
    group: str = "train"

    @property
    def name(self) -> str:
        return "train/digits"

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """(X_train, y_train, X_test, y_test, initial weights) as host arrays."""
        from mlcore.demo import load_digits_split

        try:
            X_tr, X_te, y_tr, y_te = load_digits_split()
        except ModuleNotFoundError as exc:  # scikit-learn holds the digits
            raise UnavailableError("scikit-learn is not installed: pip install "
                                   "'mlcore-bench[digits]'") from exc
        return X_tr, y_tr, X_te, y_te, init_weights(self.sizes, salt=5)

    def batches(self, n: int, epoch: int) -> list[np.ndarray]:
        """The same shuffled mini-batch indices for every competitor."""
        order = _rng(1000 + epoch).permutation(n)
        return [order[i:i + self.batch] for i in range(0, n, self.batch)]


@dataclass(frozen=True)
class FitCase:
    """Whole epochs of training from the same weights, batches in order (no shuffling, so
    every competitor takes the same batches and ends with the same weights).

    ``mode``: ``"fit"``, mlcore's ``model.fit`` as a user calls it; ``"fit+metrics"``, the
    same with ``metrics=["accuracy", "f1"]`` and an ``EarlyStopping`` callback (that never
    stops here), run as the ``mlcore-metrics`` row of the ``"fit"`` case, interleaved with
    the plain fit. The references run the same loop of their own training steps; the
    ``mlcore-steps`` row is mlcore's own loop of ``make_train_step`` calls on NumPy (the
    floor ``fit`` is held to).
    """

    sizes: tuple[int, ...]
    batch: int
    epochs: int
    samples: int
    mode: str = "fit"
    hidden: str = "relu"
    loss: str = "softmax_ce"
    optimizer: str = "adam"
    lr: float = 1e-3
    group: str = "fit"

    @property
    def name(self) -> str:
        return f"fit/{'-'.join(map(str, self.sizes))}/b{self.batch}/{self.mode}"

    def data(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        weights = init_weights(self.sizes, salt=6)
        if self.sizes == XOR_SIZES:
            x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * (self.samples // 4), np.float64)
            return x, np.logical_xor(x[:, 0], x[:, 1]).astype(np.float64), weights
        rng = _rng(6)
        x = rng.normal(0, 1, (self.samples, self.sizes[0]))
        return x, rng.integers(0, self.sizes[-1], self.samples), weights

    def batches(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.batch, self.samples))
                for s in range(0, self.samples, self.batch)]


@dataclass(frozen=True)
class TutorialCase:
    """The MLP of the Keras tutorials, trained by a whole ``fit`` as practitioners write it:
    ``features -> Dense(256) -> BatchNorm -> ReLU -> Dropout(0.3) -> Dense(128) -> BatchNorm
    -> ReLU -> Dropout(0.3) -> Dense(2)``, softmax cross-entropy from logits, Adam (lr 1e-3),
    batches of 256, the last 20 % of the rows held out for validation (``validation_split``),
    ``EarlyStopping(monitor="val_loss", patience=2)`` and shuffling every epoch.

    The data: ``samples`` synthetic rows of ``features`` standard normal values; the label of
    a row is whether a fixed random two-layer "teacher" network scores it above zero. Each
    competitor starts from its own library's initialisation and its own random streams (as a
    user's would), so they cannot be compared number by number: the check is that each
    reaches ``target`` accuracy on the validation rows, and the timed quantity is the whole
    ``fit`` call.
    """

    samples: int = 200_000
    features: int = 64
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.3
    batch: int = 256
    epochs: int = 3
    validation_split: float = 0.2
    lr: float = 1e-3
    patience: int = 2
    target: float = 0.85
    group: str = "tutorial"

    @property
    def name(self) -> str:
        sizes = "-".join(map(str, (self.features, *self.hidden, 2)))
        return f"fit/tutorial-{sizes}/b{self.batch}"

    @property
    def validation_rows(self) -> int:
        """How many of the last rows are held out (Keras's and mlcore's rounding)."""
        return int(self.samples * self.validation_split)

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """(X of shape (samples, features) float64, integer labels 0/1)."""
        rng = _rng(7)
        X = rng.normal(0, 1, (self.samples, self.features))
        A = rng.normal(0, 1 / np.sqrt(self.features), (self.features, 32))
        c = rng.normal(0, 1, 32)
        score = np.tanh(X @ A) @ c
        return X, (score > np.median(score)).astype(np.int64)

    def accuracy(self, predicted: np.ndarray, y: np.ndarray) -> float:
        """Validation accuracy from the predicted class of each held-out row."""
        return float(np.mean(np.asarray(predicted) == y[-self.validation_rows:]))


WHOLE_FITS = (TrainCase, TutorialCase)
"""Cases timed as one whole training run per sample, checked by the accuracy reached."""

Case = ActivationCase | LossCase | DenseCase | StepCase | TrainCase | FitCase | TutorialCase


def fit_cases(quick: bool) -> list[FitCase]:
    """XOR 2-4-1 through fit(epochs=400, batch_size=4) and as a train_step loop; the
    784-512-512-10 network for one epoch of 2048 samples (with metrics: its row
    ``mlcore-metrics``)."""
    xor = {"hidden": "tanh", "loss": "sigmoid_bce", "optimizer": "sgd", "lr": 0.5}
    out = [FitCase(XOR_SIZES, 4, 400, 4, **xor)]  # type: ignore[arg-type]
    for b in (32,) if quick else (32, 256):
        out.append(FitCase(MNIST_SIZES, b, 1, 2048))  # with its mlcore-metrics row
    return out


QUICK = ("activation/relu", "activation/softmax", "loss/cross_entropy(logits)", "loss/mse")
"""With ``--quick``, the only activation and loss cases kept (plus every other group)."""


GPU_BATCHES = (256, 4096)
"""Training-step batches added when a GPU backend runs: its targets are set there."""


def all_cases(activations: list[str], losses: list[str], quick: bool,
              gpu: bool = False) -> list[Case]:
    """Every case, in table order; ``quick`` keeps a representative subset; ``gpu`` adds
    the training-step batches of :data:`GPU_BATCHES`."""
    step_batches: tuple[int, ...] = (32, 256) if quick else (32, 256, 1024)
    if gpu:
        step_batches = tuple(sorted(set(step_batches) | set(GPU_BATCHES)))
    cases: list[Case] = [ActivationCase(a) for a in activations]
    # Losses from plugins are left out: the suite cannot know what targets they expect.
    cases += [LossCase(v) for v, spec in LOSS_VARIANTS.items() if spec.loss in losses]
    if quick:
        cases = [c for c in cases if c.name in QUICK]
    cases += [DenseCase(b) for b in step_batches[:1 if quick else None]]
    for opt, lr in (("adam", 1e-3), ("sgd", 1e-2)):
        cases += [StepCase(MNIST_SIZES, b, optimizer=opt, lr=lr) for b in step_batches]
        cases.append(StepCase(SMALL_SIZES, 32, optimizer=opt, lr=lr))
        cases.append(StepCase(XOR_SIZES, 4, hidden="tanh", loss="sigmoid_bce", optimizer=opt,
                              lr=lr))
    cases += fit_cases(quick)
    if not quick:
        cases += [TrainCase(), TutorialCase()]
    return cases


def select(cases: list[Case], patterns: list[str]) -> list[Case]:
    """Cases whose name contains, or glob-matches, any of ``patterns`` (all when empty)."""
    if not patterns:
        return cases
    return [c for c in cases
            if any(p in c.name or fnmatch.fnmatch(c.name, p) for p in patterns)]
