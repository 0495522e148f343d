"""How a model's output meets its loss during training: fusion, targets, accuracy.

A softmax output trained with cross-entropy, or a sigmoid output trained with binary
cross-entropy, is fused: the last activation is skipped and the loss is computed from the
logits, with gradient ``softmax(z) - y`` (``sigmoid(z) - y``), eq. (1.15)/(1.16). The fused
kernels below do no validation (no host round-trip): :func:`prepare_targets` checks labels
once, at the ``fit``/``evaluate`` boundary. Any other loss runs through its registered
object (``value_and_grad`` when it has one, else ``forward`` and ``backward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._array import check_finite, device_of
from .errors import DTypeError, InvalidValueError, ShapeError
from .layers import Activation
from .losses import loss as make_loss
from .plugins import kernel

__all__ = ["LossPlan", "resolve_loss", "prepare_targets", "softmax_cross_entropy",
           "sigmoid_binary_cross_entropy"]

_FUSABLE = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


def one_hot(xp: Any, labels: Any, m: int, dtype: Any, smoothing: float = 0.0) -> Any:
    """(N, M) rows of ``labels`` (label smoothing ``(1 - s) y + s / M`` when ``s > 0``)."""
    y = xp.astype(labels[:, None] == xp.arange(m, device=device_of(labels)), dtype)
    return y if smoothing == 0.0 else y * (1.0 - smoothing) + smoothing / m


def softmax_cross_entropy(xp: Any, z: Any, t: Any, smoothing: float = 0.0,
                          grad: bool = True) -> tuple[Any, Any]:
    """Mean cross-entropy of ``softmax(z)`` and its gradient ``(softmax(z) - y) / N``.

    ``t`` is (N,) class indices or (N, M) rows summing to 1; log-sum-exp keeps it finite.
    """
    if t.ndim == 1:
        t = one_hot(xp, t, z.shape[1], z.dtype, smoothing)
    s = z - xp.max(z, axis=1, keepdims=True)
    e = xp.exp(s)
    total = xp.sum(e, axis=1, keepdims=True)
    n = z.shape[0]
    value = (xp.sum(xp.log(total)) - xp.sum(t * s)) / n
    return value, ((e / total - t) / n if grad else None)


def sigmoid_binary_cross_entropy(xp: Any, z: Any, t: Any, smoothing: float = 0.0,
                                 grad: bool = True) -> tuple[Any, Any]:
    """Mean binary cross-entropy of ``sigmoid(z)`` and its gradient ``(sigmoid(z) - t) / size``.

    One exponential serves both: with ``e = exp(-|z|)`` the value is
    ``max(z, 0) - z t + log1p(e)`` (the stable softplus form) and ``sigmoid(z)`` is
    ``1 / (1 + e)`` for z >= 0, ``e / (1 + e)`` below (full precision in both tails).
    """
    if t.shape != z.shape:
        t = xp.reshape(t, z.shape)
    size = 1
    for d in z.shape:
        size *= int(d)
    e = xp.exp(-xp.abs(z))
    value = xp.sum(xp.maximum(z, 0.0) - z * t + xp.log1p(e)) / size
    if not grad:
        return value, None
    return value, (xp.where(z >= 0.0, 1.0, e) / (1.0 + e) - t) / size


_KERNELS = {"cross_entropy": softmax_cross_entropy,
            "binary_cross_entropy": sigmoid_binary_cross_entropy}

_RESOLVED: dict[tuple[str, Any], Any] = {}


def fused_kernel(name: str, xp: Any) -> Any:
    """The fused loss kernel for loss ``name`` in ``xp``: the backend's version of the
    function above (hook ``mlcore_kernel``, same name and signature) or the plain one;
    looked up once per loss and namespace."""
    found = _RESOLVED.get((name, xp))
    if found is None:
        plain = _KERNELS[name]
        found = _RESOLVED[(name, xp)] = kernel(plain.__name__, xp) or plain
    return found


@dataclass(frozen=True)
class LossPlan:
    """What training computes: ``trim`` trailing layers are absorbed by a fused kernel."""

    name: str | None
    task: str | None  # "multiclass", "binary" or None: accuracy is reported when set
    trim: int = 0
    fn: Any = None  # the loss object on the generic path
    smoothing: float = 0.0
    threshold: float = 0.0  # binary accuracy: output > threshold means class 1

    @property
    def fused(self) -> bool:
        return self.fn is None

    def value_and_grad(self, xp: Any, out: Any, t: Any) -> tuple[Any, Any]:
        if self.fn is None:
            return fused_kernel(str(self.name), xp)(xp, out, t, self.smoothing)  # type: ignore[no-any-return]
        both = getattr(self.fn, "value_and_grad", None)
        if both is not None:
            return both(out, t)  # type: ignore[no-any-return]
        return self.fn.forward(out, t), self.fn.backward(out, t)

    def value(self, xp: Any, out: Any, t: Any) -> Any:
        if self.fn is None:
            return fused_kernel(str(self.name), xp)(xp, out, t, self.smoothing, grad=False)[0]
        return self.fn.forward(out, t)

    def correct(self, xp: Any, out: Any, labels: Any) -> Any:
        """How many predictions in ``out`` match ``labels`` (a 0-d integer array)."""
        if self.task == "multiclass":
            return xp.count_nonzero(xp.argmax(out, axis=1) == labels)
        return xp.count_nonzero((out > self.threshold) == labels)


def _output_activation(model: Any) -> str | None:
    last = model.layers[-1] if model.layers else None
    return last.name if isinstance(last, Activation) and not last.params else None


def resolve_loss(model: Any, loss: Any) -> LossPlan:
    """The plan for training ``model`` with ``loss`` (a registered name or a loss object).

    By name, ``cross_entropy`` / ``binary_cross_entropy`` are fused with a softmax / sigmoid
    output; a model without that output activation is taken to output logits (as PyTorch's
    losses assume). A loss object is fused when it is one of those two with the default
    ``reduction="mean"`` and its ``from_logits`` agrees with the model's output.
    """
    fn = make_loss(loss) if isinstance(loss, str) else loss
    name = getattr(fn, "name", None)
    task = {"cross_entropy": "multiclass", "binary_cross_entropy": "binary"}.get(str(name))
    from_logits = None if isinstance(loss, str) else getattr(fn, "from_logits", None)
    last = _output_activation(model)
    if name in _FUSABLE and getattr(fn, "reduction", "mean") == "mean":
        smoothing = float(getattr(fn, "label_smoothing", 0.0))
        if last == _FUSABLE[name] and from_logits is not True:
            return LossPlan(name, task, trim=1, smoothing=smoothing)
        if last != _FUSABLE[name] and from_logits is not False:
            return LossPlan(name, task, trim=0, smoothing=smoothing)
    threshold = 0.0 if from_logits else 0.5
    return LossPlan(name, task, fn=fn, threshold=threshold)


def prepare_targets(xp: Any, plan: LossPlan, y: Any, n_out: int | None,
                    dtype: Any) -> tuple[Any, Any]:
    """Check ``y`` once and return ``(targets for the loss, labels for accuracy)``."""
    if plan.task == "multiclass":
        return _class_targets(xp, plan, y, n_out, dtype)
    if xp.isdtype(y.dtype, "bool") or xp.isdtype(y.dtype, "integral"):
        y = xp.astype(y, dtype)
    elif y.dtype != dtype:
        y = xp.astype(y, dtype)
    check_finite(xp, y, "y")
    if y.ndim == 1 and n_out == 1:
        y = xp.reshape(y, (y.shape[0], 1))
    if plan.task == "binary":
        if bool((xp.min(y) < 0.0) | (xp.max(y) > 1.0)):
            raise InvalidValueError(
                f"binary_cross_entropy targets must lie in [0, 1]; received values from "
                f"{float(xp.min(y)):g} to {float(xp.max(y)):g}. Use 0/1 labels.", y)
        return y, y > 0.5
    return y, None


def _class_targets(xp: Any, plan: LossPlan, y: Any, n_out: int | None,
                   dtype: Any) -> tuple[Any, Any]:
    m = int(n_out or 0)
    if y.ndim == 2:
        if tuple(y.shape[1:]) != (m,):
            raise ShapeError(f"cross_entropy targets of shape {tuple(y.shape)} do not fit a "
                             f"model with {m} outputs; pass (N, {m}) rows or (N,) labels.", y)
        y = xp.astype(y, dtype)
        check_finite(xp, y, "y")
        s = plan.smoothing if plan.fused else 0.0
        return (y if s == 0.0 else y * (1.0 - s) + s / m), xp.argmax(y, axis=1)
    if y.ndim != 1 or not xp.isdtype(y.dtype, "integral"):
        raise DTypeError(
            f"cross_entropy labels must be integer class indices of shape (N,), received "
            f"dtype {y.dtype} and shape {tuple(y.shape)}. Convert with astype(int64), or pass "
            f"one-hot rows of shape (N, {m}).", y)
    lo, hi = int(xp.min(y)), int(xp.max(y))
    if lo < 0 or hi >= m:
        raise InvalidValueError(
            f"Labels must be class indices in [0, {m - 1}] for a model with {m} outputs; "
            f"received labels from {lo} to {hi}. Remap them to 0..{m - 1}, or give the model "
            f"{hi + 1} outputs.", y)
    if not plan.fused:
        return y, y
    return one_hot(xp, y, m, dtype, plan.smoothing), y
