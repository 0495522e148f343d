"""PyTorch competitors (imported only when PyTorch is installed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import reference_torch as ref
from .bench_reference import FnBench, train_epochs
from .cases import (
    ActivationCase,
    Case,
    DenseCase,
    FitCase,
    LossCase,
    StepCase,
    TrainCase,
    TutorialCase,
)
from .timing import UnavailableError

__all__ = ["make"]


def _host(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().cpu().numpy()).copy()


def _bench(step: Any, result: Any, device: str) -> FnBench:
    memory = "torch-cuda" if device == "cuda" else ""
    return FnBench(step, result, ref.sync(device), memory, {"threads": torch.get_num_threads()})


def make(case: Case, dtype: Any, device: str) -> FnBench:
    tdt = ref.torch_dtype(dtype)

    def put(a: np.ndarray, grad: bool = False) -> torch.Tensor:
        kind = torch.long if a.dtype.kind == "i" else tdt
        return torch.tensor(a, dtype=kind, device=device, requires_grad=grad)

    return _BUILDERS[case.group](case, dtype, put, device)


def _activation(case: ActivationCase, dtype: Any, put: Any, device: str) -> FnBench:
    if case.activation not in ref.ACTIVATIONS:
        raise UnavailableError(f"no PyTorch version of activation {case.activation!r}")
    fn = ref.ACTIVATIONS[case.activation]
    x64, dy64 = case.data()
    x, dy = put(x64, grad=True), put(dy64)
    out: list[torch.Tensor] = []

    def step() -> None:
        x.grad = None
        y = fn(x)
        y.backward(dy)
        out[:] = [y, x.grad]

    return _bench(step, lambda: [_host(t) for t in out], device)


def _loss(case: LossCase, dtype: Any, put: Any, device: str) -> FnBench:
    if case.variant not in ref.LOSSES:
        raise UnavailableError(f"no PyTorch version of loss {case.variant!r}")
    fn = ref.LOSSES[case.variant]
    p64, t64 = case.data()
    p, t = put(p64, grad=True), put(t64)
    out: list[torch.Tensor] = []

    def step() -> None:
        p.grad = None
        value = fn(p, t)
        value.backward()
        out[:] = [value, p.grad]

    return _bench(step, lambda: [_host(t) for t in out], device)


def _dense(case: DenseCase, dtype: Any, put: Any, device: str) -> FnBench:
    x64, dy64, (w64, b64) = case.data()
    x, dy = put(x64, grad=True), put(dy64)
    lin = torch.nn.Linear(case.in_features, case.out_features, device=device,
                          dtype=dy.dtype)
    with torch.no_grad():
        lin.weight.copy_(put(w64))
        lin.bias.copy_(put(b64))
    out: list[torch.Tensor] = []

    def step() -> None:
        x.grad = lin.weight.grad = lin.bias.grad = None
        y = lin(x)
        y.backward(dy)
        out[:] = [y, x.grad, lin.weight.grad, lin.bias.grad]

    return _bench(step, lambda: [_host(t) for t in out], device)


def _step(case: StepCase, dtype: Any, put: Any, device: str) -> FnBench:
    X64, y64, weights = case.data()
    X, y = put(X64), put(y64)
    model = ref.TorchMLP(weights, dtype, device, case.hidden, case.loss, case.optimizer,
                         case.lr)
    return _bench(lambda: model.step(X, y), model.params, device)


def _train(case: TrainCase, dtype: Any, put: Any, device: str) -> FnBench:
    X_tr, y_tr, X_te, y_te, weights = case.data()
    X, y, Xt, yt = put(X_tr), put(y_tr), put(X_te), put(y_te)
    out: list[Any] = []

    def at(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(idx).to(device)

    def step() -> None:
        model = ref.TorchMLP(weights, dtype, device, "relu", "softmax_ce", "adam", case.lr)
        out[:] = train_epochs(
            case, lambda i: model.step(X[at(i)], y[at(i)]),
            lambda: float((model.predict(Xt) == yt).double().mean()), len(X_tr))

    return _bench(step, lambda: list(out), device)


def _fit(case: FitCase, dtype: Any, put: Any, device: str) -> FnBench:
    X64, y64, weights = case.data()
    X, y = put(X64), put(y64)
    batches = case.batches()
    out: list[Any] = []

    def step() -> None:
        model = ref.TorchMLP(weights, dtype, device, case.hidden, case.loss, case.optimizer,
                             case.lr)
        for _ in range(case.epochs):
            for a, b in batches:
                model.step(X[a:b], y[a:b])
        out[:] = [model]

    return _bench(step, lambda: out[0].params(), device)


def _tutorial(case: TutorialCase, dtype: Any, put: Any, device: str) -> FnBench:
    """The Keras-tutorial model as a PyTorch user writes its training: ``torch.nn`` layers,
    ``torch.optim.Adam``, a shuffled loop over the first 80 % of the rows, the validation
    loss after each epoch under ``torch.no_grad()`` in eval mode, early stopping on it."""
    X64, y64 = case.data()
    X, y = put(X64), put(y64)
    n_val = case.validation_rows
    n_train = case.samples - n_val
    tdt = ref.torch_dtype(dtype)
    out: list[Any] = []

    def build() -> torch.nn.Sequential:
        layers: list[torch.nn.Module] = []
        width = case.features
        for h in case.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.BatchNorm1d(h), torch.nn.ReLU(),
                       torch.nn.Dropout(case.dropout)]
            width = h
        return torch.nn.Sequential(*layers, torch.nn.Linear(width, 2)).to(device, tdt)

    def step() -> None:
        model = build()
        opt = torch.optim.Adam(model.parameters(), lr=case.lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        best, waited, epochs = float("inf"), 0, 0
        for _ in range(case.epochs):
            epochs += 1
            model.train()
            order = torch.randperm(n_train, device=device)
            for s in range(0, n_train, case.batch):
                idx = order[s:s + case.batch]
                opt.zero_grad()
                loss_fn(model(X[idx]), y[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val = float(loss_fn(model(X[n_train:]), y[n_train:]))
            if val < best:
                best, waited = val, 0
            else:
                waited += 1
                if waited >= case.patience:
                    break
        out[:] = [model, epochs]

    def result() -> list[Any]:
        model, epochs = out
        with torch.no_grad():
            predicted = _host(model(X[n_train:]).argmax(dim=1))
        return [epochs, case.accuracy(predicted, y64)]

    return _bench(step, result, device)


_BUILDERS: dict[str, Callable[..., FnBench]] = {
    "activation": _activation, "loss": _loss, "dense": _dense, "mlp_step": _step,
    "train": _train, "fit": _fit, "tutorial": _tutorial}
