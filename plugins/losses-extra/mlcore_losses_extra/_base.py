"""What every loss here shares: validation, the reduction, stable sigmoid and softplus.

The conventions are mlcore's own (see ``mlcore.losses``): axis 0 indexes the N samples; a
loss computes one value per sample, then ``reduction`` combines them (``"mean"`` over the
samples, ``"sum"``, or ``"none"``: the per-sample values, shape (N,)); ``backward`` is the
gradient of exactly what ``forward`` returns (of the sum for ``"none"``); a floating target
is cast to ``pred``'s dtype, so float32 in gives float32 out.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from mlcore.errors import DTypeError, InvalidParameterError, ShapeError

__all__ = ["Loss", "number", "sigmoid", "softplus", "per_sample_mean", "feature_count"]

REDUCTIONS = ("mean", "sum", "none")


def number(owner: str, name: str, value: Any, low: float | None = None) -> float:
    """``value`` as a finite float (> ``low`` when given), or an InvalidParameterError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or (low is not None and value <= low):
        bound = f" greater than {low:g}" if low is not None else ""
        raise InvalidParameterError(
            f"Loss {owner!r}: {name} must be a finite real number{bound}, received {value!r}.",
            value)
    return float(value)


def sigmoid(xp: Any, x: Any) -> Any:
    """``1 / (1 + e^(-x))`` from ``e^(-|x|)``: no overflow for any finite x."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(xp: Any, x: Any) -> Any:
    """``log(1 + e^x)`` as ``max(x, 0) + log1p(e^(-|x|))``."""
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


def per_sample_mean(xp: Any, x: Any) -> Any:
    """The mean over every axis but the first (identity for 1-d input)."""
    return x if x.ndim == 1 else xp.mean(x, axis=tuple(range(1, x.ndim)))


def feature_count(x: Any) -> int:
    """How many values each sample has (the product of the shape after axis 0)."""
    return math.prod(int(d) for d in x.shape[1:])


def _floating(xp: Any, x: Any, label: str) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        raise DTypeError(f"{label} must be a floating-point array, received dtype {x.dtype}. "
                         f"Convert it with astype(float32) or astype(float64).", x)


class Loss:
    """Reduction and the public methods; subclasses give ``_values`` (shape (N,)) and
    ``_grad`` (of the values' sum), and ``_check`` when pred and target may differ in shape."""

    name = ""

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise InvalidParameterError(
                f"Loss {self.name!r}: reduction must be one of {', '.join(REDUCTIONS)}; "
                f"received {reduction!r}.", reduction)
        self.reduction = reduction

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"loss({self.name!r}, {params})"

    def forward(self, pred: Any, target: Any) -> Any:
        """The loss: a 0-d array, or the per-sample values when ``reduction="none"``."""
        xp = array_namespace(pred, target)
        values = self._values(xp, pred, self._check(xp, pred, target))
        if self.reduction == "mean":
            return xp.mean(values)
        return xp.sum(values) if self.reduction == "sum" else values

    def backward(self, pred: Any, target: Any) -> Any:
        """d forward(pred, target) / d pred, same shape and dtype as ``pred``."""
        xp = array_namespace(pred, target)
        grad = self._grad(xp, pred, self._check(xp, pred, target))
        return grad * (1.0 / pred.shape[0]) if self.reduction == "mean" else grad

    # -- validation shared by subclasses -----------------------------------------------
    def _same_shape(self, xp: Any, pred: Any, target: Any, ndim: int | None = None) -> Any:
        """Check pred/target are floating, of one shape (and ``ndim`` if given); return
        target in pred's dtype."""
        _floating(xp, pred, "pred")
        _floating(xp, target, "target")
        if tuple(pred.shape) != tuple(target.shape):
            raise ShapeError(
                f"Loss {self.name!r}: pred and target must have the same shape, received "
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)}.", (pred, target))
        self._check_pred_shape(pred, ndim)
        return target if target.dtype == pred.dtype else xp.astype(target, pred.dtype)

    def _check_pred_shape(self, pred: Any, ndim: int | None) -> None:
        if (ndim is not None and pred.ndim != ndim) or pred.ndim < 1 or pred.shape[0] == 0:
            want = "(N, M)" if ndim == 2 else "(N, ...)"
            raise ShapeError(
                f"Loss {self.name!r} expected pred of shape {want} with N >= 1 samples, "
                f"received shape {tuple(pred.shape)}.", pred)

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        """Validate; return the target ready to use. Default: same shape, floating."""
        return self._same_shape(xp, pred, target)

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        raise NotImplementedError

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        raise NotImplementedError
