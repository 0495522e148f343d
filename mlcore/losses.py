"""Built-in losses (eq. 1.13-1.16, plus mse and mae), value and gradient together.

Registered through the ``mlcore_losses`` hook, exactly as a third-party plugin would.

Conventions shared by every built-in loss:

* Axis 0 indexes the N samples. A loss first computes one value per sample (for mse, mae
  and binary cross-entropy the mean over any further axes; for cross-entropy and KL the sum
  over the classes of axis 1), then ``reduction`` combines them: ``"mean"`` (default, the
  chapter's 1/N), ``"sum"``, or ``"none"`` (the per-sample values, shape (N,)).
* ``backward(pred, target)`` is the gradient of exactly what ``forward`` returns; with
  ``reduction="none"`` it is the gradient of the *sum* of the per-sample values.
* Results keep ``pred``'s namespace, device and floating dtype; a floating ``target`` is
  cast to ``pred``'s dtype first, so float32 predictions give a float32 loss.
* ``value_and_grad(pred, target)`` returns both at once, sharing the work (one softmax for
  cross-entropy from logits); training loops may use it when present.
"""

from __future__ import annotations

from typing import Any

from . import _numerics as nm
from ._array import check_same_shape, device_of, namespace
from ._loss_checks import (
    NAMES,
    PROBABILITY_TOLERANCE,
    bool_param,
    check_distribution,
    check_pred,
    check_unit_interval,
    class_targets,
    eps_param,
    eps_value,
    float_target,
    same_shape_float,
    smoothing_param,
)
from .errors import InvalidParameterError
from .hookspecs import LossFn, hookimpl
from .plugins import make, registry

__all__ = [
    "loss",
    "loss_names",
    "REDUCTIONS",
    "PROBABILITY_TOLERANCE",
    "MSE",
    "MAE",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "KLDivergence",
]

REDUCTIONS = ("mean", "sum", "none")
_on_pred_device = nm.on_input_device(NAMES)


def loss(name: str, **params: Any) -> LossFn:
    """Build the registered loss ``name`` with ``params`` (e.g. ``reduction="sum"``).

    Raises :class:`~mlcore.errors.UnknownNameError` listing the registered names, or
    :class:`~mlcore.errors.InvalidParameterError` for a parameter it does not accept.
    """
    return make("losses", name, params)  # type: ignore[no-any-return]


def loss_names() -> list[str]:
    """Names of every registered loss, built-in and from plugins."""
    return registry().names("losses")


class _Loss:
    """Validation, reduction and the public methods; subclasses give ``_check``,
    ``_values`` (per-sample values, shape (N,)) and ``_grad`` (gradient of their sum)."""

    name = ""

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise InvalidParameterError(
                f"Loss {self.name!r}: reduction must be one of {', '.join(REDUCTIONS)}; "
                f"received {reduction!r}.",
                reduction,
            )
        self.reduction = reduction

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"loss({self.name!r}, {params})"

    @_on_pred_device
    def forward(self, pred: Any, target: Any) -> Any:
        """The loss value: a 0-d array, or per-sample values when ``reduction="none"``."""
        xp = namespace(pred, target, names=NAMES)
        target = self._check(xp, pred, target)
        return self._reduce(xp, self._values(xp, pred, target))

    @_on_pred_device
    def backward(self, pred: Any, target: Any) -> Any:
        """d forward(pred, target) / d pred, same shape and dtype as ``pred``."""
        xp = namespace(pred, target, names=NAMES)
        target = self._check(xp, pred, target)
        return self._scale(pred, self._grad(xp, pred, target))

    @_on_pred_device
    def value_and_grad(self, pred: Any, target: Any) -> tuple[Any, Any]:
        """``(forward(pred, target), backward(pred, target))``, validating once."""
        xp = namespace(pred, target, names=NAMES)
        target = self._check(xp, pred, target)
        values, grad = self._values_and_grad(xp, pred, target)
        return self._reduce(xp, values), self._scale(pred, grad)

    def _values_and_grad(self, xp: Any, pred: Any, target: Any) -> tuple[Any, Any]:
        return self._values(xp, pred, target), self._grad(xp, pred, target)

    def _reduce(self, xp: Any, values: Any) -> Any:
        if self.reduction == "none":
            return values
        total = xp.sum(values)  # sum * (1/N): NumPy's mean costs twice a sum on small arrays
        return total * (1.0 / values.shape[0]) if self.reduction == "mean" else total

    def _scale(self, pred: Any, grad: Any) -> Any:
        return grad * (1.0 / pred.shape[0]) if self.reduction == "mean" else grad

    # subclasses -------------------------------------------------------------------------
    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        """Validate; return ``target`` ready to use (cast to ``pred``'s dtype)."""
        raise NotImplementedError

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        raise NotImplementedError

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        raise NotImplementedError


def _per_sample_mean(xp: Any, x: Any) -> Any:
    """The mean over every axis but the first (identity for 1-d input)."""
    return x if x.ndim == 1 else xp.mean(x, axis=tuple(range(1, x.ndim)))


def _feature_count(x: Any) -> int:
    n = 1
    for d in x.shape[1:]:
        n *= int(d)
    return n


# -- regression --------------------------------------------------------------------------
class MSE(_Loss):
    """Mean squared error: per sample ``mean_j (pred_j - target_j)^2`` over the features;
    gradient ``2 (pred - target) / F`` (F features per sample), then the reduction.

    With ``reduction="mean"`` this equals ``torch.nn.functional.mse_loss``.
    """

    name = "mse"

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        return same_shape_float(xp, pred, target, self.name)

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        d = pred - target
        return _per_sample_mean(xp, d * d)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        return (pred - target) * (2.0 / _feature_count(pred))


class MAE(_Loss):
    """Mean absolute error: per sample ``mean_j |pred_j - target_j|``; gradient
    ``sign(pred - target) / F`` (0 where they are equal), then the reduction.

    With ``reduction="mean"`` this equals ``torch.nn.functional.l1_loss``.
    """

    name = "mae"

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        return same_shape_float(xp, pred, target, self.name)

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        return _per_sample_mean(xp, xp.abs(pred - target))

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        return xp.sign(pred - target) * (1.0 / _feature_count(pred))


# -- binary cross-entropy ----------------------------------------------------------------
class BinaryCrossEntropy(_Loss):
    """Binary cross-entropy, eq. (1.15): ``-[y log p + (1 - y) log(1 - p)]`` per output,
    averaged over the outputs of a sample (shape (N,) or (N, K) for K independent labels).

    ``from_logits=False`` (default): ``pred`` holds probabilities in [0, 1], clipped to
    ``[eps, 1 - eps]`` before the logs (``eps=None``: the machine epsilon of pred's dtype,
    1.19e-7 in float32, 2.22e-16 in float64; so one term is at most 15.9 or 36.0).
    Gradient ``(p - y) / (p (1 - p)) / K`` at the clipped ``p`` (not zero outside the clip
    range, so a confidently wrong prediction still learns).

    ``from_logits=True``: ``pred`` holds logits z, ``p = sigmoid(z)``; the value uses the
    stable softplus form ``max(z, 0) - z y + log(1 + e^(-|z|))`` (finite for any finite z)
    and the gradient is ``(sigmoid(z) - y) / K``.

    ``target`` is a floating array of pred's shape with values in [0, 1] (soft labels are
    allowed); probabilities and targets outside [0, 1] raise :class:`InvalidValueError`.
    """

    name = "binary_cross_entropy"

    def __init__(
        self, reduction: str = "mean", from_logits: bool = False, eps: float | None = None
    ) -> None:
        super().__init__(reduction)
        self.from_logits = bool_param(self.name, "from_logits", from_logits)
        self.eps = eps_param(self.name, eps)

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        target = same_shape_float(xp, pred, target, self.name)
        check_unit_interval(xp, target, "target", self.name)
        if not self.from_logits:
            check_unit_interval(xp, pred, "pred (probabilities)", self.name)
        return target

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        if self.from_logits:
            terms = xp.maximum(pred, 0.0) - pred * target + nm.softplus_neg_abs(xp, pred)
        else:
            eps = eps_value(xp, pred, self.eps)
            p = xp.clip(pred, eps, 1.0 - eps)
            terms = -(target * xp.log(p) + (1.0 - target) * xp.log1p(-p))
        return _per_sample_mean(xp, terms)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        scale = 1.0 / _feature_count(pred)
        if self.from_logits:
            return (nm.sigmoid(xp, pred) - target) * scale
        eps = eps_value(xp, pred, self.eps)
        p = xp.clip(pred, eps, 1.0 - eps)
        return (p - target) / (p * (1.0 - p)) * scale


# -- multi-class cross-entropy and KL ----------------------------------------------------
def _one_hot(xp: Any, labels: Any, m: int, dtype: Any) -> Any:
    """(N, M) one-hot rows of ``labels`` built by a broadcast comparison (no scatter)."""
    classes = xp.arange(m, device=device_of(labels))
    return xp.astype(labels[:, None] == classes, dtype)


class CrossEntropy(_Loss):
    """Multi-class cross-entropy, eq. (1.16) (``H(P, Q)`` of eq. 1.14 per sample): per sample
    ``-sum_j y_j log p_j``; with a class index ``c`` that is ``-log p_c``.

    ``pred`` has shape (N, M). ``target`` is either integer class indices of shape (N,) in
    [0, M) or floating rows of shape (N, M) that are probability distributions (one-hot or
    soft; rows must sum to 1 within 1e-3 and be non-negative).

    ``from_logits=False`` (default): ``pred`` holds probabilities (softmax outputs), clipped
    below at ``eps`` before the log (``eps=None``: the machine epsilon of pred's dtype);
    gradient ``-y / p`` at the clipped ``p``.

    ``from_logits=True``: ``pred`` holds logits z; the value is the fused log-sum-exp form
    ``logsumexp(z) - sum_j y_j z_j`` (finite for any finite z) and the gradient is
    ``softmax(z) - y``: cheaper and more accurate than softmax then cross-entropy.

    ``label_smoothing`` (default 0, in [0, 1)) replaces ``y`` by ``(1 - s) y + s / M``, as
    PyTorch does.
    """

    name = "cross_entropy"

    def __init__(
        self,
        reduction: str = "mean",
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        eps: float | None = None,
    ) -> None:
        super().__init__(reduction)
        self.from_logits = bool_param(self.name, "from_logits", from_logits)
        self.label_smoothing = smoothing_param(label_smoothing)
        self.eps = eps_param(self.name, eps)

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        check_pred(xp, pred, self.name, ndim=2)
        return class_targets(xp, pred, target, self.name)

    def _dense_target(self, xp: Any, pred: Any, target: Any) -> Any:
        """The (N, M) target distribution after label smoothing (for the gradient)."""
        m = pred.shape[1]
        y = _one_hot(xp, target, m, pred.dtype) if target.ndim == 1 else target
        s = self.label_smoothing
        return y if s == 0.0 else y * (1.0 - s) + s / m

    def _weighted(self, xp: Any, a: Any, target: Any) -> Any:
        """``sum_j y_j a_j`` per sample for the smoothed target y; class indices are picked
        with ``take_along_axis`` (O(N), no one-hot rows), or through one-hot rows where the
        library lacks that function (it is new in the 2024.12 standard; dask has none)."""
        take = getattr(xp, "take_along_axis", None)
        if target.ndim == 1 and take is not None:
            picked = take(a, target[:, None], axis=1)[:, 0]
        elif target.ndim == 1:
            picked = xp.sum(_one_hot(xp, target, a.shape[1], a.dtype) * a, axis=1)
        else:
            picked = xp.sum(target * a, axis=1)
        s = self.label_smoothing
        return picked if s == 0.0 else picked * (1.0 - s) + xp.mean(a, axis=1) * s

    def _logit_parts(self, xp: Any, pred: Any, target: Any) -> tuple[Any, Any, Any]:
        """Shifted logits z, ``e^z``, and per-sample values ``log sum e^z - sum_j y_j z_j``
        (the max shift cancels because target rows sum to 1)."""
        z = pred - xp.max(pred, axis=1, keepdims=True)
        e = xp.exp(z)
        total = xp.sum(e, axis=1, keepdims=True)
        return e, total, xp.log(total[:, 0]) - self._weighted(xp, z, target)

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        if self.from_logits:
            return self._logit_parts(xp, pred, target)[2]
        logp = xp.log(xp.clip(pred, eps_value(xp, pred, self.eps), None))
        return -self._weighted(xp, logp, target)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        y = self._dense_target(xp, pred, target)
        if self.from_logits:
            return nm.softmax(xp, pred, axis=1) - y
        return -y / xp.clip(pred, eps_value(xp, pred, self.eps), None)

    def _values_and_grad(self, xp: Any, pred: Any, target: Any) -> tuple[Any, Any]:
        if not self.from_logits:
            return super()._values_and_grad(xp, pred, target)
        e, total, values = self._logit_parts(xp, pred, target)
        return values, e / total - self._dense_target(xp, pred, target)


class KLDivergence(_Loss):
    """Kullback-Leibler divergence, eq. (1.13): ``D_KL(target || pred) =
    sum_j y_j (log y_j - log p_j)`` summed over the classes of each sample.

    ``pred`` and ``target`` are (N, M) probability rows (target rows must sum to 1 within
    1e-3); terms where ``y_j = 0`` contribute 0. ``pred`` is clipped below at ``eps``
    (``eps=None``: the machine epsilon of its dtype) before the log. Gradient ``-y / p`` at
    the clipped ``p``. Equals ``torch.nn.functional.kl_div(log(pred), target,
    reduction="batchmean")`` for the default ``reduction="mean"``.
    """

    name = "kl_divergence"

    def __init__(self, reduction: str = "mean", eps: float | None = None) -> None:
        super().__init__(reduction)
        self.eps = eps_param(self.name, eps)

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        check_pred(xp, pred, self.name, ndim=2)
        check_same_shape(pred, target, NAMES)
        target = float_target(xp, pred, target)
        check_distribution(xp, target, self.name)
        return target

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        tiny = xp.finfo(pred.dtype).smallest_normal
        log_ratio = xp.log(xp.maximum(target, tiny)) - xp.log(
            xp.clip(pred, eps_value(xp, pred, self.eps), None)
        )
        return xp.sum(target * log_ratio, axis=1)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        return -target / xp.clip(pred, eps_value(xp, pred, self.eps), None)


_BUILTIN: dict[str, Any] = {
    cls.name: cls for cls in (MSE, MAE, BinaryCrossEntropy, CrossEntropy, KLDivergence)
}


@hookimpl
def mlcore_losses() -> dict[str, Any]:
    """mlcore's own losses, registered like any plugin's."""
    return dict(_BUILTIN)
