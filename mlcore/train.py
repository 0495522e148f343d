"""Training: ``fit``, ``predict``, ``evaluate`` and the single training step.

The conversion boundary: ``fit``, ``predict`` and ``evaluate`` accept data from anywhere
(lists, NumPy arrays while another backend is selected, arrays of the model's backend) and
convert it once with the model backend's ``asarray``, to the parameters' floating dtype for
inputs (float32 by default). Inside (``forward``, ``train_step``, the layers, losses and
optimisers) arrays never change backend: arrays from another backend raise
:class:`~mlcore.errors.BackendMismatchError`.

A training step resolves the namespace once, runs the layers forward, computes the loss
(fused with a softmax/sigmoid output, see :mod:`mlcore._lossplan`), backpropagates, and
updates the parameters in place. It never reads a value back to the host: ``fit`` sums the
batch losses and correct counts on the device and converts them once per epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from ._array import check_finite, describe, device_of, device_scope, namespace
from ._guards import make_guard
from ._lossplan import LossPlan, prepare_targets, resolve_loss
from .backend import get_backend
from .errors import (
    BackendMismatchError,
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    ShapeError,
)
from .layers import positive_int
from .model import Sequential, chain
from .optim import Optimizer, get_optimizer

__all__ = ["fit", "predict", "evaluate", "make_train_step", "to_model_input"]

Step = Callable[[Any, Any, Any], tuple[Any, Any]]


class _Data(NamedTuple):
    X: Any
    targets: Any
    labels: Any  # for accuracy, or None


def _convert(backend: Any, data: Any, name: str) -> Any:
    """``data`` as an array of ``backend`` (unchanged when it already is one) holding real
    numbers (complex is refused, never cast)."""
    try:
        array = data if backend.owns(data) else backend.asarray(data)
    except (TypeError, ValueError, RuntimeError) as exc:
        detail = str(exc).rstrip(".")
        if type(data).__module__ == "numpy" and hasattr(data, "astype"):
            raise DTypeError(
                f"{name} is a {describe(data)}, which the {backend.name} backend cannot hold: "
                f"{detail}. Convert it first: {name}.astype('float32').", data) from exc
        if hasattr(data, "shape"):  # an array of another library or device
            raise BackendMismatchError(
                f"{name} is a {describe(data)} and could not be converted to a "
                f"{backend.name} array: {detail}. Convert it explicitly first (for example "
                f"to a NumPy float32 array).", data) from exc
        raise InvalidValueError(f"{name} could not be converted to an array: {detail}. Pass "
                                f"a rectangular list or array of numbers.", data) from exc
    xp = backend.xp
    if not xp.isdtype(array.dtype, ("real floating", "integral", "bool")):
        fix = (f" mlcore trains on real numbers: pass {name}.real, or the real and imaginary "
               f"parts as separate features." if xp.isdtype(array.dtype, "complex floating")
               else "")
        raise DTypeError(f"{name} must hold real numbers, received dtype {array.dtype}.{fix}",
                         data)
    return array


def to_model_input(model: Sequential, X: Any, name: str = "X") -> Any:
    """``X`` as a finite array of the model's backend and dtype (the conversion boundary)."""
    X = _convert(model.backend, X, name)
    xp = model.namespace(X)
    if X.dtype != model.dtype:
        X = xp.astype(X, model.dtype)
    check_finite(xp, X, name)
    return X


def to_layer_input(layer: Any, X: Any) -> Any:
    """A list (or other non-array) ``X`` given to ``layer(X)``, as an array of the layer's
    backend and parameter dtype (float32 for a layer without parameters)."""
    params = layer.parameters()
    backend = getattr(layer, "backend", None) or get_backend()
    array = _convert(backend, X, "X")
    xp = namespace(array, names=("X",))
    dtype = params[0].value.dtype if params else xp.float32
    return array if array.dtype == dtype else xp.astype(array, dtype)


def _prepare(model: Sequential, plan: LossPlan, X: Any, y: Any,
             names: tuple[str, str] = ("X", "y")) -> _Data:
    Xa = to_model_input(model, X, names[0])
    ya = _convert(model.backend, y, names[1])
    xp = model.namespace(Xa, ya)
    n = Xa.shape[0] if Xa.ndim else 0
    if n == 0 or ya.ndim == 0 or ya.shape[0] != n:
        raise ShapeError(
            f"{names[0]} and {names[1]} must hold the same number (>= 1) of samples; "
            f"received {names[0]} of shape {tuple(Xa.shape)} and {names[1]} of shape "
            f"{tuple(ya.shape)}.", (X, y))
    targets, labels = prepare_targets(xp, plan, ya, model.out_features, model.dtype)
    return _Data(Xa, targets, labels)


def _prepare_validation(model: Sequential, plan: LossPlan, validation_data: Any) -> _Data:
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise InvalidParameterError(
            f"validation_data must be a pair (X_val, y_val), received "
            f"{_kind(validation_data)}. Pass validation_data=(X_val, y_val).", validation_data)
    return _prepare(model, plan, validation_data[0], validation_data[1],
                    names=("validation_data[0] (X_val)", "validation_data[1] (y_val)"))


def _kind(obj: Any) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return describe(obj) if hasattr(obj, "shape") else type(obj).__name__


def _compile(model: Sequential, plan: LossPlan, opt: Optimizer,
             sync: Callable[[list[Any], int], None] | None = None,
             guard: Callable[[Any], None] | None = None) -> Step:
    """The training step for ``plan`` and ``opt``: ``step(X, T, xp) -> (loss, output)``.

    ``guard(loss)`` runs before the backward pass and the update (it raises on a
    non-finite loss, see :mod:`mlcore._guards`).

    ``sync(params, rows)`` runs between backward and the update (data-parallel training
    averages the gradients over the processes there); with it, a batch of no rows
    contributes zero gradients and returns no output.
    """
    layers = model.layers[: len(model.layers) - plan.trim]
    params = model.parameters()

    def step(X: Any, T: Any, xp: Any) -> tuple[Any, Any]:
        for p in params:
            p.grad = None
        if sync is not None and X.shape[0] == 0:
            sync(params, 0)
            opt.step()
            return xp.zeros((), dtype=X.dtype), None
        out, backprop = chain(layers, X, xp, False)
        value, grad = plan.value_and_grad(xp, out, T)
        if guard is not None:
            guard(value)
        backprop(grad)
        if sync is not None:
            sync(params, X.shape[0])
        opt.step()
        return value, out

    return step


def make_train_step(model: Sequential, loss: Any, optimizer: str | Optimizer = "sgd",
                    lr: float | None = None) -> Callable[[Any, Any], Any]:
    """A prepared training step ``step(X, y) -> loss`` (a 0-d array; nothing is synced).

    ``X`` and ``y`` must already be arrays of the model's backend and dtype (``y``: class
    indices or rows for cross-entropy, targets shaped like the output otherwise); they are
    not converted or validated, which is what makes the step cheap (use :func:`fit` for
    checked input). Each call clears the gradients, runs forward and backward once and
    updates the parameters with ``optimizer`` (a name or an :class:`~mlcore.optim.Optimizer`
    over ``model.parameters()``). This is what benchmarks time.
    """
    plan = resolve_loss(model, loss)
    step = _compile(model, plan, get_optimizer(optimizer, model.parameters(), lr))
    first = model.parameters()[0].value
    device = device_of(first)
    names = ("X", "y", "model parameters")

    def train_step(X: Any, y: Any) -> Any:
        return step(X, y, namespace(X, y, first, names=names))[0]

    if not hasattr(type(device), "__enter__"):
        return train_step

    def train_step_on_device(X: Any, y: Any) -> Any:
        with device:  # CuPy computes on its current device: enter the model's
            return train_step(X, y)

    return train_step_on_device


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _shuffled(xp: Any, data: _Data, order: Any) -> _Data:
    return _Data(*(None if a is None else xp.take(a, order, axis=0) for a in data))


def _run_epoch(xp: Any, step: Step, plan: LossPlan, data: _Data,
               batches: list[tuple[int, int]], bar: Any, dp: Any = None) -> dict[str, float]:
    total = xp.zeros((), dtype=data.X.dtype)
    correct = xp.zeros((), dtype=xp.int64)
    for start, stop in batches:
        value, out = step(data.X[start:stop, ...], data.targets[start:stop, ...], xp)
        total = total + value * (stop - start)
        if data.labels is not None and out is not None:
            correct = correct + plan.correct(xp, out, data.labels[start:stop, ...])
        bar.update(1)
    if dp is not None:  # every process's sums: the epoch over all of the data
        total, correct = dp.reduce_sums([total, correct])
    return _summary(plan, data, total, correct)


def _summary(plan: LossPlan, data: _Data, total: Any, correct: Any) -> dict[str, float]:
    n = data.X.shape[0]
    result = {"loss": float(total) / n}
    if data.labels is not None:
        per_sample = 1
        for d in data.labels.shape[1:]:
            per_sample *= int(d)
        result["accuracy"] = int(correct) / (n * per_sample)
    return result


def _evaluate_data(model: Sequential, plan: LossPlan, data: _Data,
                   batch_size: int | None) -> dict[str, float]:
    xp = model.namespace(data.X)
    layers = model.layers[: len(model.layers) - plan.trim]
    n = data.X.shape[0]
    total = xp.zeros((), dtype=data.X.dtype)
    correct = xp.zeros((), dtype=xp.int64)
    for start, stop in _batches(n, batch_size or n):
        out = chain(layers, data.X[start:stop, ...], xp, False)[0]
        total = total + plan.value(xp, out, data.targets[start:stop, ...]) * (stop - start)
        if data.labels is not None:
            correct = correct + plan.correct(xp, out, data.labels[start:stop, ...])
    return _summary(plan, data, total, correct)


def fit(model: Sequential, X: Any, y: Any, *, loss: Any, optimizer: str | Optimizer = "adam",
        lr: float | None = None, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
        seed: int | None = None, validation_data: tuple[Any, Any] | None = None,
        verbose: bool | str = "auto", distributed: Any = False,
        on_nonfinite: str = "raise") -> dict[str, list[float]]:
    """Train ``model`` on mini-batches of ``(X, y)``; return the history.

    ``loss``: a registered loss name or loss object; ``optimizer``: ``"sgd"``, ``"adam"``,
    ``"adamw"`` (with ``lr``, default per optimiser) or an optimiser instance. ``shuffle``
    draws a new order each epoch from ``backend.rng(seed)``, so a fixed ``seed`` (and
    model seed) gives identical weights and history on the same backend. The history has
    ``"loss"`` per epoch, ``"accuracy"`` for cross-entropy losses, and ``"val_loss"`` /
    ``"val_accuracy"`` with ``validation_data=(X_val, y_val)``. ``verbose="auto"`` shows a
    tqdm progress bar only when stderr is a terminal; ``True`` always, ``False`` never.

    ``distributed=True`` (or a :class:`mlcore.distributed.DataParallel`) trains data-parallel
    over the processes of an MPI job, each taking its share of every global batch of
    ``size · batch_size`` rows (see :mod:`mlcore.distributed.parallel`); in a single
    process it changes nothing.

    A NaN or infinite loss stops training with :class:`~mlcore.errors.NonFiniteError`
    naming the epoch, the batch and the likely cause, the model left at its last finite
    weights (:mod:`mlcore._guards`); ``on_nonfinite="warn"`` warns once and trains on,
    ``"ignore"`` does not check.
    """
    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    plan = resolve_loss(model, loss)
    data = _prepare(model, plan, X, y)
    val = None if validation_data is None else _prepare_validation(model, plan, validation_data)
    opt = get_optimizer(optimizer, model.parameters(), lr)
    guard = make_guard(model, data.X, opt, on_nonfinite)
    dp = _data_parallel(distributed, model, data, val, loss=loss, optimizer=opt,
                        epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed)
    step = _compile(model, plan, opt, None if dp is None else dp.reduce_gradients, guard)
    model.last_loss = loss
    seed = seed if dp is None else dp.agree_seed(seed)
    xp, rng = model.namespace(data.X), model.backend.rng(seed)
    history: dict[str, list[float]] = {}
    batches = _batches(data.X.shape[0], batch_size) if dp is None else dp.batches(
        data.X.shape[0], batch_size)
    verbose = verbose if dp is None or dp.rank == 0 else False
    with _scope(model, data.X), _progress(verbose, epochs * len(batches)) as bar, \
            _guard(dp):
        for epoch in range(epochs):
            if guard is not None:
                guard.start_epoch(epoch)
            epoch_data = _shuffled(xp, data, rng.permutation(data.X.shape[0])) if shuffle else data
            stats = _run_epoch(xp, step, plan, epoch_data, batches, bar, dp)
            if val is not None:
                stats |= {f"val_{k}": v for k, v in _evaluate_data(model, plan, val, None).items()}
                if guard is not None:
                    guard.check_validation(stats["val_loss"])
            for key, value in stats.items():
                history.setdefault(key, []).append(value)
            bar.set_postfix({k: round(v, 4) for k, v in stats.items()})
    return history


def _data_parallel(distributed: Any, model: Sequential, data: _Data, val: _Data | None,
                   **settings: Any) -> Any:
    """The :class:`~mlcore.distributed.DataParallel` of a distributed fit, started (facts
    checked, weights broadcast), or None (not asked, or a single process)."""
    if distributed is False or distributed is None:
        return None
    from .distributed.parallel import for_fit

    return for_fit(distributed, model, data.X, None if val is None else val.X, settings)


def _guard(dp: Any) -> Any:
    from contextlib import nullcontext

    return nullcontext() if dp is None else dp.guard()


def predict(model: Sequential, X: Any, *, batch_size: int | None = None) -> Any:
    """The model's full output for ``X`` (softmax probabilities for a softmax model),
    as an array of the model's backend; ``X`` is converted at this boundary."""
    Xa = to_model_input(model, X)
    xp = model.namespace(Xa)
    n = Xa.shape[0]
    with _scope(model, Xa):
        if batch_size is None or batch_size >= n:
            return chain(model.layers, Xa, xp, False)[0]
        size = positive_int(batch_size, "batch_size")
        parts = [chain(model.layers, Xa[a:b, ...], xp, False)[0] for a, b in _batches(n, size)]
        return xp.concat(parts, axis=0)


def evaluate(model: Sequential, X: Any, y: Any, *, loss: Any = None,
             batch_size: int | None = None) -> dict[str, float]:
    """``{"loss": ..., "accuracy": ...}`` on ``(X, y)`` (accuracy for cross-entropy losses).

    ``loss`` defaults to the loss of the model's last :func:`fit`.
    """
    loss = model.last_loss if loss is None else loss
    if loss is None:
        raise InvalidParameterError(
            "evaluate needs a loss: pass loss='cross_entropy' (or any loss), or fit the model "
            "first.", None)
    plan = resolve_loss(model, loss)
    data = _prepare(model, plan, X, y)
    with _scope(model, data.X):
        return _evaluate_data(model, plan, data, batch_size)


def _scope(model: Sequential, X: Any) -> Any:
    """Run on the device of ``X`` and the parameters (CuPy's current device); see
    :func:`mlcore._array.device_scope`."""
    first = [p.value for p in model.parameters()[:1]]
    return device_scope(X, *first, names=("X", "model parameters")[: 1 + len(first)])


class _Quiet:
    """A progress bar that shows nothing."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, stats: dict[str, float]) -> None:
        return None


class _Lines(_Quiet):
    """Progress as one line per epoch on stderr (when tqdm is not installed)."""

    epoch = 0

    def set_postfix(self, stats: dict[str, float]) -> None:
        self.epoch += 1
        text = " ".join(f"{k}={v:.4f}" for k, v in stats.items())
        print(f"epoch {self.epoch}: {text}", file=sys.stderr)


def _progress(verbose: bool | str, total: int) -> Any:
    if verbose not in (True, False, "auto", 0, 1):
        raise InvalidParameterError(
            f"verbose must be True, False or 'auto', received {verbose!r}.", verbose)
    show = sys.stderr.isatty() if verbose == "auto" else bool(verbose)
    if not show:
        return _Quiet()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines()
    return tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True)
