"""Reference competitors for every case: hand-written NumPy (``numpy-hand``) and PyTorch
(``torch-cpu``, ``torch-cuda``), and for training steps a hand-written jitted JAX step
(``jax-hand``), listed in :data:`REFERENCES`. Each builder returns a
:class:`FnBench` or raises :class:`~mlcore_bench.timing.UnavailableError` with the reason.

To add a reference, write its builders (one per case group, as :mod:`mlcore_bench.bench_torch`
does) and append a :class:`Reference` to :data:`REFERENCES`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from . import reference_numpy as ref
from .cases import ActivationCase, Case, DenseCase, FitCase, LossCase, StepCase, TrainCase
from .timing import UnavailableError

__all__ = ["FnBench", "Reference", "REFERENCES", "make_hand", "make_torch", "torch_status",
           "train_epochs"]


@dataclass
class FnBench:
    """A competitor made of closures: what to time, how to wait, what it computed."""

    step_fn: Callable[[], Any]
    result_fn: Callable[[], list[Any]]
    sync_fn: Callable[[], None] = lambda: None
    memory: str = "host"
    info: dict[str, Any] = field(default_factory=dict)
    device_ctx: Any = None
    """For a GPU competitor: a context manager that makes its device current (CuPy's
    ``Device``), so the timing's CUDA events are recorded on that device's stream."""

    def step(self) -> None:
        self.step_fn()

    def sync(self) -> None:
        self.sync_fn()

    def result(self) -> list[Any]:
        return self.result_fn()


def train_epochs(case: TrainCase, step: Callable[[np.ndarray], Any],
                 accuracy: Callable[[], float], n: int) -> tuple[int, float]:
    """Epochs until ``accuracy() >= case.target``; the shared loop of every competitor."""
    acc = 0.0
    for epoch in range(1, case.max_epochs + 1):
        for idx in case.batches(n, epoch):
            step(idx)
        acc = accuracy()
        if acc >= case.target:
            return epoch, acc
    return case.max_epochs, acc


@dataclass(frozen=True)
class Reference:
    """A reference competitor: its row label, how to build it, and what it needs to run."""

    label: str
    """The row label, ``<library>-<device>`` by convention (``torch-cpu``)."""
    family: str
    """The ratio column it belongs to (``x torch``): one per library."""
    make: Callable[[Case, Any], Any]
    """``make(case, dtype)`` -> a :class:`FnBench`, or raise UnavailableError."""
    status: Callable[[], str] = lambda: ""
    """Why it cannot run here (no GPU, say), or "" when it can."""
    needs: str = ""
    """The module it imports; when that is missing, the report says ``install`` once."""
    install: str = ""
    """The pip command that provides ``needs``."""
    gpu: bool = False
    """Whether it runs on a GPU: GPU backends are compared with GPU references."""
    quick: bool = True
    """Whether ``--quick`` runs it without being named (Keras: seconds of compiling per
    case would take ``--quick`` past its two minutes)."""

    def reason(self) -> str:
        """Why it cannot run here ("" when it can); a missing module names ``install``."""
        if self.needs and importlib.util.find_spec(self.needs) is None:
            return f"{self.needs} is not installed: {self.install}"
        return self.status()

    def missing(self) -> bool:
        """Whether what it needs is not installed (rather than unusable here)."""
        return bool(self.needs) and importlib.util.find_spec(self.needs) is None


# ----------------------------------------------------------------------------- numpy-hand
def make_hand(case: Case, dtype: Any) -> FnBench:
    """The hand-written NumPy competitor for ``case``."""
    builders: dict[str, Callable[..., FnBench]] = {
        "activation": _hand_activation, "loss": _hand_loss, "dense": _hand_dense,
        "mlp_step": _hand_step, "train": _hand_train, "fit": _hand_fit}
    if case.group not in builders:
        raise UnavailableError(f"no hand-written NumPy version of {case.name}")
    return builders[case.group](case, dtype)


def _hand_activation(case: ActivationCase, dtype: Any) -> FnBench:
    if case.activation not in ref.ACTIVATIONS:
        raise UnavailableError(f"no hand-written version of activation {case.activation!r}")
    fwd, bwd = ref.ACTIVATIONS[case.activation]
    x, dy = (a.astype(dtype) for a in case.data())
    out: list[Any] = []

    def step() -> None:
        y = fwd(x)
        out[:] = [y, bwd(x, y, dy)]

    return FnBench(step, lambda: list(out))


def _hand_loss(case: LossCase, dtype: Any) -> FnBench:
    if case.variant not in ref.LOSSES:
        raise UnavailableError(f"no hand-written version of loss {case.variant!r}")
    fn = ref.LOSSES[case.variant]
    pred, target = case.data()
    p = pred.astype(dtype)
    t = target if target.dtype.kind == "i" else target.astype(dtype)
    out: list[Any] = []
    return FnBench(lambda: out.__setitem__(slice(None), fn(p, t)), lambda: list(out))


def _hand_dense(case: DenseCase, dtype: Any) -> FnBench:
    x64, dy64, (w64, b64) = case.data()
    x, dy, W, b = (a.astype(dtype) for a in (x64, dy64, w64, b64))
    bufs = [np.empty_like(dy), np.empty_like(x), np.empty_like(W), np.empty_like(b)]

    def step() -> None:
        out, dx, dW, db = bufs
        np.matmul(x, W.T, out=out)
        out += b
        np.matmul(dy, W, out=dx)
        np.matmul(dy.T, x, out=dW)
        np.sum(dy, axis=0, out=db)

    return FnBench(step, lambda: [a.copy() for a in bufs])


def _hand_step(case: StepCase, dtype: Any) -> FnBench:
    X64, y, weights = case.data()
    X = X64.astype(dtype)
    target = y if case.loss == "softmax_ce" else y.astype(dtype)
    model = ref.NumpyMLP(weights, dtype, case.hidden, case.loss, case.optimizer, case.lr)
    return FnBench(lambda: model.step(X, target), lambda: [p.copy() for p in model.params])


def _hand_train(case: TrainCase, dtype: Any) -> FnBench:
    X_tr, y_tr, X_te, y_te, weights = case.data()
    X, Xt = X_tr.astype(dtype), X_te.astype(dtype)
    out: list[Any] = []

    def step() -> None:
        model = ref.NumpyMLP(weights, dtype, "relu", "softmax_ce", "adam", case.lr)
        out[:] = train_epochs(case, lambda i: model.step(X[i], y_tr[i]),
                              lambda: float(np.mean(model.predict(Xt) == y_te)), len(X))

    return FnBench(step, lambda: list(out))


def _hand_fit(case: FitCase, dtype: Any) -> FnBench:
    X64, y, weights = case.data()
    X = X64.astype(dtype)
    target = y if case.loss == "softmax_ce" else y.astype(dtype)
    out: list[Any] = []

    def step() -> None:
        model = ref.NumpyMLP(weights, dtype, case.hidden, case.loss, case.optimizer, case.lr)
        for _ in range(case.epochs):
            for a, b in case.batches():
                model.step(X[a:b], target[a:b])
        out[:] = [p.copy() for p in model.params]

    return FnBench(step, lambda: list(out))


# ----------------------------------------------------------------------------- torch
def torch_status(device: str) -> str:
    """Why ``torch-<device>`` cannot run here, or "" when it can."""
    try:
        import torch
    except ImportError as exc:
        return f"PyTorch is not installed ({exc})"
    if device == "cuda" and not torch.cuda.is_available():
        return "torch.cuda.is_available() is False (CPU-only PyTorch or no GPU)"
    return ""


def make_torch(case: Case, dtype: Any, device: str) -> FnBench:
    """The PyTorch competitor for ``case`` on ``device`` ("cpu" or "cuda")."""
    reason = torch_status(device)
    if reason:
        raise UnavailableError(reason)
    from . import bench_torch

    return bench_torch.make(case, dtype, device)


def make_mlcore_steps(case: Case, dtype: Any) -> FnBench:
    """mlcore's own loop of prepared NumPy train steps: the floor for the fit cases."""
    from . import bench_mlcore

    return bench_mlcore.make_steps(case, dtype)


def make_mlcore_metrics(case: Case, dtype: Any) -> FnBench:
    """mlcore's numpy fit with metrics and EarlyStopping, beside the plain fit's row."""
    from . import bench_mlcore

    return bench_mlcore.make_metrics(case, dtype)


TORCH_INSTALL = "pip install 'mlcore-bench[torch]'"
JAX_INSTALL = "pip install 'mlcore-bench[jax]'"
KERAS_INSTALL = "pip install 'mlcore-bench[keras]'"


def make_jax_hand(case: Case, dtype: Any) -> FnBench:
    """The hand-written, jitted JAX training step (:mod:`mlcore_bench.reference_jax`)."""
    from . import bench_jax

    return bench_jax.make(case, dtype)

def make_keras(case: Case, dtype: Any) -> FnBench:
    """Keras 3 on JAX (:mod:`mlcore_bench.bench_keras`): training steps and the tutorial fit."""
    from . import bench_keras

    return bench_keras.make(case, dtype)


def keras_status() -> str:
    """Why ``keras-jax`` cannot run here (Keras imported with another backend), or ""."""
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None:
        return ""  # Reference.reason names the missing module and the install command
    from . import bench_keras

    return bench_keras.status()


REFERENCES: list[Reference] = [
    Reference("numpy-hand", "numpy-hand", make_hand),
    Reference("torch-cpu", "torch", partial(make_torch, device="cpu"),
              partial(torch_status, "cpu"), "torch", TORCH_INSTALL),
    Reference("torch-cuda", "torch", partial(make_torch, device="cuda"),
              partial(torch_status, "cuda"), "torch", TORCH_INSTALL, gpu=True),
    Reference("mlcore-steps", "mlcore-steps", make_mlcore_steps),
    Reference("mlcore-metrics", "mlcore-metrics", make_mlcore_metrics),
    Reference("jax-hand", "jax-hand", make_jax_hand, needs="jax", install=JAX_INSTALL),
    Reference("keras-jax", "keras", make_keras, keras_status, needs="keras",
              install=KERAS_INSTALL, quick=False),
]
"""Every reference, in column order. The first one that ran is the equality check's
reference for a case."""
