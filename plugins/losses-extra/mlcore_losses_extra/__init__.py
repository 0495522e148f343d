"""Extra losses for mlcore, each value next to its gradient.

Found by mlcore through the ``mlcore`` entry-point group (see ``pyproject.toml``); every loss
is written against the Array API namespace of its inputs, so it runs on every backend.
Conventions (mlcore's own, see :mod:`mlcore_losses_extra._base`): axis 0 indexes samples,
``reduction`` is ``"mean"`` over samples (default), ``"sum"`` or ``"none"`` (shape (N,)),
and ``backward`` is the gradient of exactly what ``forward`` returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pluggy
from array_api_compat import device

from mlcore.errors import DTypeError, InvalidParameterError, InvalidValueError, ShapeError

from ._base import Loss, feature_count, number, per_sample_mean, sigmoid, softplus

__all__ = ["Huber", "BinaryFocal", "Focal", "Hinge", "SquaredHinge", "CosineSimilarity",
           "PoissonNLL", "mlcore_losses"]
__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mlcore")


class Huber(Loss):
    """Huber loss: per element ``d²/2`` if ``|d| <= delta`` else ``delta (|d| - delta/2)``,
    ``d = pred - target``, averaged per sample; gradient ``clip(d, -delta, delta) / F``.
    ``delta`` > 0 (default 1). With ``reduction="mean"`` it is ``torch.nn.functional.
    huber_loss``."""

    name = "huber"

    def __init__(self, *, delta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.delta = number(self.name, "delta", delta, low=0.0)

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        a = xp.abs(pred - target)
        small = xp.minimum(a, self.delta)  # the quadratic part, then the linear rest
        return per_sample_mean(xp, small * (0.5 * small) + self.delta * (a - small))

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        return xp.clip(pred - target, -self.delta, self.delta) * (1.0 / feature_count(pred))


def _gamma(owner: str, gamma: Any) -> float:
    """The focusing parameter: a finite number >= 0 (0 turns focusing off)."""
    value = number(owner, "gamma", gamma)
    if value < 0.0:
        raise InvalidParameterError(
            f"Loss {owner!r}: gamma must be >= 0, received {gamma!r}.", gamma)
    return value


class BinaryFocal(Loss):
    """Binary focal loss (Lin et al., 2017) on logits ``z``, torchvision's
    ``sigmoid_focal_loss``: per element ``alpha_t (1 - p_t)^gamma · BCE(z, y)`` with
    ``p = sigmoid(z)``, ``p_t = p y + (1 - p)(1 - y)``, ``alpha_t = alpha y + (1 - alpha)(1 - y)``
    (``alpha=None`` disables the weighting), averaged per sample. ``target`` in [0, 1].

    With ``m = 1 - p_t = p (1 - y) + sigmoid(-z) y`` and ``ce = softplus(z) - z y``:
    ``d/dz = alpha_t [(p - y) m^gamma + ce · gamma m^(gamma-1) · p sigmoid(-z) (1 - 2y)]``.
    """

    name = "binary_focal"

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = 0.25,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.gamma = _gamma(self.name, gamma)
        self.alpha = None if alpha is None else number(self.name, "alpha", alpha)

    def _parts(self, xp: Any, z: Any, y: Any) -> tuple[Any, Any, Any, Any, Any]:
        p, q = sigmoid(xp, z), sigmoid(xp, -z)
        ce = softplus(xp, z) - z * y
        m = p * (1.0 - y) + q * y
        w = 1.0 if self.alpha is None else self.alpha * y + (1.0 - self.alpha) * (1.0 - y)
        return p, q, ce, m, w

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        _, _, ce, m, w = self._parts(xp, pred, target)
        return per_sample_mean(xp, w * ce * m**self.gamma)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        p, q, ce, m, w = self._parts(xp, pred, target)
        m_safe = xp.maximum(m, xp.finfo(pred.dtype).smallest_normal)
        dm = p * q * (1.0 - 2.0 * target)
        g = (p - target) * m**self.gamma + ce * (self.gamma * m_safe ** (self.gamma - 1.0)) * dm
        return w * g * (1.0 / feature_count(pred))


class Focal(Loss):
    """Multi-class focal loss (Lin et al., 2017) on logits ``z`` of shape (N, M): per sample
    ``-Σ_j alpha_j y_j (1 - p_j)^gamma log p_j`` with ``p = softmax(z)``; ``gamma = 0`` and
    no ``alpha`` is cross-entropy from logits. ``target`` is integer class indices (N,) in
    [0, M) or probability rows (N, M). ``alpha``: None (default), one number, or M weights.

    Gradient, with ``h_j = -alpha_j y_j [(1 - p_j)^gamma - gamma (1 - p_j)^(gamma-1) p_j
    log p_j]`` (that is ``p_j dL/dp_j``): ``dL/dz_k = h_k - p_k Σ_j h_j``.
    """

    name = "focal"

    def __init__(self, *, gamma: float = 2.0, alpha: float | Sequence[float] | None = None,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.gamma = _gamma(self.name, gamma)
        self.alpha = _class_weights(self.name, alpha)

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        if target.ndim == 1 and xp.isdtype(target.dtype, "integral"):
            self._check_pred_shape(pred, 2)
            _check_labels(xp, pred, target, self.name)
            classes = xp.arange(pred.shape[1], device=device(target))
            return xp.astype(target[:, None] == classes, pred.dtype)
        if target.ndim == 1:
            raise DTypeError(
                f"Loss 'focal': a target of shape {tuple(target.shape)} holds class indices "
                f"and must be an integer array, received dtype {target.dtype}.", target)
        return self._same_shape(xp, pred, target, ndim=2)

    def _h(self, xp: Any, pred: Any, y: Any) -> tuple[Any, Any, Any]:
        """log p, p and h (see the class docstring)."""
        z = pred - xp.max(pred, axis=1, keepdims=True)
        logp = z - xp.log(xp.sum(xp.exp(z), axis=1, keepdims=True))
        p = xp.exp(logp)
        rest = xp.maximum(-xp.expm1(logp), xp.finfo(pred.dtype).smallest_normal)  # 1 - p
        w = y if self.alpha is None else y * self._weights(xp, pred)
        h = -w * (rest**self.gamma - (self.gamma * rest ** (self.gamma - 1.0)) * (p * logp))
        return logp, rest, h

    def _weights(self, xp: Any, pred: Any) -> Any:
        if isinstance(self.alpha, float):
            return self.alpha
        if len(self.alpha) != pred.shape[1]:
            raise ShapeError(f"Loss 'focal': alpha has {len(self.alpha)} class weights but "
                             f"pred has {pred.shape[1]} classes.", self.alpha)
        return xp.asarray(self.alpha, dtype=pred.dtype, device=device(pred))

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        logp, rest, _ = self._h(xp, pred, target)
        w = target if self.alpha is None else target * self._weights(xp, pred)
        return -xp.sum(w * rest**self.gamma * logp, axis=1)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        logp, _, h = self._h(xp, pred, target)
        return h - xp.exp(logp) * xp.sum(h, axis=1, keepdims=True)


def _class_weights(owner: str, alpha: Any) -> float | tuple[float, ...] | None:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        return number(owner, "alpha", alpha)
    try:
        return tuple(number(owner, "alpha", a) for a in alpha)
    except TypeError:
        raise InvalidParameterError(
            f"Loss {owner!r}: alpha must be None, a number or one number per class, "
            f"received {alpha!r}.", alpha) from None


def _check_labels(xp: Any, pred: Any, target: Any, owner: str) -> None:
    n, m = pred.shape
    if target.shape[0] != n:
        raise ShapeError(
            f"Loss {owner!r}: pred has {n} samples but target has {target.shape[0]} labels; "
            f"received pred {tuple(pred.shape)} and target {tuple(target.shape)}.",
            (pred, target))
    lo, hi = int(xp.min(target)), int(xp.max(target))
    if lo < 0 or hi >= m:
        raise InvalidValueError(
            f"Loss {owner!r}: class indices must lie in [0, {m - 1}] for pred with {m} "
            f"classes, received indices from {lo} to {hi}.", target)


class Hinge(Loss):
    """Hinge loss for labels ``y`` in {-1, +1} (convert 0/1 labels with ``2 y - 1``): per
    element ``max(0, margin - y · pred)``, averaged per sample; gradient ``-y / F`` where
    ``margin - y · pred > 0``, else 0. ``margin`` > 0 (default 1)."""

    name = "hinge"
    power = 1

    def __init__(self, *, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = number(self.name, "margin", margin, low=0.0)

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        gap = xp.maximum(self.margin - target * pred, 0.0)
        return per_sample_mean(xp, gap if self.power == 1 else gap * gap)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        gap = xp.maximum(self.margin - target * pred, 0.0)
        slope = xp.astype(gap > 0.0, pred.dtype) if self.power == 1 else 2.0 * gap
        return -target * slope * (1.0 / feature_count(pred))


class SquaredHinge(Hinge):
    """Squared hinge loss: per element ``max(0, margin - y · pred)²``, averaged per sample;
    gradient ``-2 y max(0, margin - y · pred) / F``. Labels ``y`` in {-1, +1}."""

    name = "squared_hinge"
    power = 2


class CosineSimilarity(Loss):
    """Cosine-similarity loss: per sample (row of an (N, D) array) ``1 - cos`` with
    ``cos = p·t / (max(|p|, eps) max(|t|, eps))`` (PyTorch's ``cosine_similarity``);
    gradient ``-(t / (P T) - cos · [|p| > eps] p / P²)`` with ``P, T`` the clamped norms."""

    name = "cosine_similarity"

    def __init__(self, *, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.eps = number(self.name, "eps", eps, low=0.0)

    def _check(self, xp: Any, pred: Any, target: Any) -> Any:
        return self._same_shape(xp, pred, target, ndim=2)

    def _cos(self, xp: Any, pred: Any, target: Any) -> tuple[Any, Any, Any, Any]:
        norm_p = xp.sqrt(xp.sum(pred * pred, axis=1, keepdims=True))
        big_p = xp.maximum(norm_p, self.eps)
        big_t = xp.maximum(xp.sqrt(xp.sum(target * target, axis=1, keepdims=True)), self.eps)
        cos = xp.sum(pred * target, axis=1, keepdims=True) / (big_p * big_t)
        return cos, norm_p, big_p, big_t

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        return 1.0 - self._cos(xp, pred, target)[0][:, 0]

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        cos, norm_p, big_p, big_t = self._cos(xp, pred, target)
        moving = xp.astype(norm_p > self.eps, pred.dtype)
        return -(target / (big_p * big_t) - cos * moving * pred / (big_p * big_p))


class PoissonNLL(Loss):
    """Poisson negative log-likelihood, PyTorch's ``poisson_nll_loss``: per element
    ``e^pred - y pred`` (``log_input=True``, pred a log-rate; gradient ``e^pred - y``) or
    ``pred - y log(pred + eps)`` (``log_input=False``, pred a rate >= 0; gradient
    ``1 - y / (pred + eps)``), averaged per sample. ``full=True`` adds Stirling's term
    ``y log y - y + log(2π y) / 2`` where ``y > 1`` (no gradient). ``target``: counts >= 0.
    """

    name = "poisson_nll"

    def __init__(self, *, log_input: bool = True, full: bool = False, eps: float = 1e-8,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        for flag, value in (("log_input", log_input), ("full", full)):
            if not isinstance(value, bool):
                raise InvalidParameterError(
                    f"Loss 'poisson_nll': {flag} must be True or False, received {value!r}.",
                    value)
        self.log_input, self.full = log_input, full
        self.eps = number(self.name, "eps", eps, low=0.0)

    def _values(self, xp: Any, pred: Any, target: Any) -> Any:
        if self.log_input:
            terms = xp.exp(pred) - target * pred
        else:
            terms = pred - target * xp.log(pred + self.eps)
        if self.full:
            y = xp.maximum(target, 1.0)
            stirling = y * xp.log(y) - y + 0.5 * xp.log((2.0 * math.pi) * y)
            terms = terms + xp.where(target > 1.0, stirling, 0.0)
        return per_sample_mean(xp, terms)

    def _grad(self, xp: Any, pred: Any, target: Any) -> Any:
        g = xp.exp(pred) - target if self.log_input else 1.0 - target / (pred + self.eps)
        return g * (1.0 / feature_count(pred))


_LOSSES: dict[str, Any] = {
    cls.name: cls
    for cls in (Huber, BinaryFocal, Focal, Hinge, SquaredHinge, CosineSimilarity, PoissonNLL)
}


@hookimpl
def mlcore_losses() -> dict[str, Any]:
    """The losses this distribution provides, by name."""
    return dict(_LOSSES)
