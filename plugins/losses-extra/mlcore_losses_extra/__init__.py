"""Extra losses for mlcore, each value next to its gradient.

Found by mlcore through the ``mlcore`` entry-point group (see ``pyproject.toml``); every loss
is written against the Array API namespace of its inputs, so it runs on every backend.
Each is written on :mod:`mlcore.plugin`'s bases, as mlcore's own losses are, so it follows
mlcore's conventions (axis 0 indexes samples, ``reduction`` is ``"mean"`` over samples
(default), ``"sum"`` or ``"none"`` (shape (N,)), ``backward`` is the gradient of exactly what
``forward`` returns) and takes the path of a built-in inside training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlcore.errors import DTypeError, InvalidParameterError, ShapeError
from mlcore.plugin import (
    ElementwiseLoss,
    LossBase,
    check_class_indices,
    check_pred,
    hookimpl,
    number_param,
    one_hot,
    same_shape_float,
    sigmoid,
    softplus,
)

__all__ = ["Huber", "BinaryFocal", "Focal", "Hinge", "SquaredHinge", "CosineSimilarity",
           "PoissonNLL", "mlcore_losses"]
__version__ = "0.1.0"


class Huber(ElementwiseLoss):
    """Huber loss: per element ``d²/2`` if ``|d| <= delta`` else ``delta (|d| - delta/2)``,
    ``d = pred - target``, averaged per sample; gradient ``clip(d, -delta, delta) / F``.
    ``delta`` > 0 (default 1). With ``reduction="mean"`` it is ``torch.nn.functional.
    huber_loss``."""

    name = "huber"

    def __init__(self, *, delta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.delta = number_param("Loss 'huber'", "delta", delta, above=0.0)

    def terms(self, xp: Any, pred: Any, target: Any) -> Any:
        a = xp.abs(pred - target)
        small = xp.minimum(a, self.delta)  # the quadratic part, then the linear rest
        return small * (0.5 * small) + self.delta * (a - small)

    def terms_gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        return xp.clip(pred - target, -self.delta, self.delta)


def _gamma(owner: str, gamma: Any) -> float:
    """The focusing parameter: a finite number >= 0 (0 turns focusing off)."""
    value = number_param(f"Loss {owner!r}", "gamma", gamma)
    if value < 0.0:
        raise InvalidParameterError(
            f"Loss {owner!r}: gamma must be >= 0, received {gamma!r}.", gamma)
    return value


class BinaryFocal(ElementwiseLoss):
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
        self.alpha = None if alpha is None else number_param("Loss 'binary_focal'", "alpha",
                                                             alpha)

    def _parts(self, xp: Any, z: Any, y: Any) -> tuple[Any, Any, Any, Any, Any]:
        p, q = sigmoid(xp, z), sigmoid(xp, -z)
        ce = softplus(xp, z) - z * y
        m = p * (1.0 - y) + q * y
        w = 1.0 if self.alpha is None else self.alpha * y + (1.0 - self.alpha) * (1.0 - y)
        return p, q, ce, m, w

    def terms(self, xp: Any, pred: Any, target: Any) -> Any:
        _, _, ce, m, w = self._parts(xp, pred, target)
        return w * ce * m**self.gamma

    def terms_gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        p, q, ce, m, w = self._parts(xp, pred, target)
        m_safe = xp.maximum(m, xp.finfo(pred.dtype).smallest_normal)
        dm = p * q * (1.0 - 2.0 * target)
        g = (p - target) * m**self.gamma + ce * (self.gamma * m_safe ** (self.gamma - 1.0)) * dm
        return w * g


class Focal(LossBase):
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

    def check(self, xp: Any, pred: Any, target: Any) -> Any:
        if target.ndim == 1 and xp.isdtype(target.dtype, "integral"):
            check_pred(xp, pred, self.name, ndim=2)
            check_class_indices(xp, pred, target, self.name)
            return one_hot(xp, target, pred.shape[1], pred.dtype)
        if target.ndim == 1:
            raise DTypeError(
                f"Loss 'focal': a target of shape {tuple(target.shape)} holds class indices "
                f"and must be an integer array, received dtype {target.dtype}.", target)
        return same_shape_float(xp, pred, target, self.name, ndim=2)

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
        return xp.asarray(self.alpha, dtype=pred.dtype, device=pred.device)

    def values(self, xp: Any, pred: Any, target: Any) -> Any:
        logp, rest, _ = self._h(xp, pred, target)
        w = target if self.alpha is None else target * self._weights(xp, pred)
        return -xp.sum(w * rest**self.gamma * logp, axis=1)

    def gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        logp, _, h = self._h(xp, pred, target)
        return h - xp.exp(logp) * xp.sum(h, axis=1, keepdims=True)


def _class_weights(owner: str, alpha: Any) -> float | tuple[float, ...] | None:
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        return number_param(f"Loss {owner!r}", "alpha", alpha)
    try:
        return tuple(number_param(f"Loss {owner!r}", "alpha", a) for a in alpha)
    except TypeError:
        raise InvalidParameterError(
            f"Loss {owner!r}: alpha must be None, a number or one number per class, "
            f"received {alpha!r}.", alpha) from None


class Hinge(ElementwiseLoss):
    """Hinge loss for labels ``y`` in {-1, +1} (convert 0/1 labels with ``2 y - 1``): per
    element ``max(0, margin - y · pred)``, averaged per sample; gradient ``-y / F`` where
    ``margin - y · pred > 0``, else 0. ``margin`` > 0 (default 1)."""

    name = "hinge"
    power = 1

    def __init__(self, *, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = number_param(f"Loss {self.name!r}", "margin", margin, above=0.0)

    def terms(self, xp: Any, pred: Any, target: Any) -> Any:
        gap = xp.maximum(self.margin - target * pred, 0.0)
        return gap if self.power == 1 else gap * gap

    def terms_gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        gap = xp.maximum(self.margin - target * pred, 0.0)
        slope = xp.astype(gap > 0.0, pred.dtype) if self.power == 1 else 2.0 * gap
        return -target * slope


class SquaredHinge(Hinge):
    """Squared hinge loss: per element ``max(0, margin - y · pred)²``, averaged per sample;
    gradient ``-2 y max(0, margin - y · pred) / F``. Labels ``y`` in {-1, +1}."""

    name = "squared_hinge"
    power = 2


class CosineSimilarity(LossBase):
    """Cosine-similarity loss: per sample (row of an (N, D) array) ``1 - cos`` with
    ``cos = p·t / (max(|p|, eps) max(|t|, eps))`` (PyTorch's ``cosine_similarity``);
    gradient ``-(t / (P T) - cos · [|p| > eps] p / P²)`` with ``P, T`` the clamped norms."""

    name = "cosine_similarity"

    def __init__(self, *, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.eps = number_param("Loss 'cosine_similarity'", "eps", eps, above=0.0)

    def check(self, xp: Any, pred: Any, target: Any) -> Any:
        return same_shape_float(xp, pred, target, self.name, ndim=2)

    def _cos(self, xp: Any, pred: Any, target: Any) -> tuple[Any, Any, Any, Any]:
        norm_p = xp.sqrt(xp.sum(pred * pred, axis=1, keepdims=True))
        big_p = xp.maximum(norm_p, self.eps)
        big_t = xp.maximum(xp.sqrt(xp.sum(target * target, axis=1, keepdims=True)), self.eps)
        cos = xp.sum(pred * target, axis=1, keepdims=True) / (big_p * big_t)
        return cos, norm_p, big_p, big_t

    def values(self, xp: Any, pred: Any, target: Any) -> Any:
        return 1.0 - self._cos(xp, pred, target)[0][:, 0]

    def gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        cos, norm_p, big_p, big_t = self._cos(xp, pred, target)
        moving = xp.astype(norm_p > self.eps, pred.dtype)
        return -(target / (big_p * big_t) - cos * moving * pred / (big_p * big_p))


class PoissonNLL(ElementwiseLoss):
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
        self.eps = number_param("Loss 'poisson_nll'", "eps", eps, above=0.0)

    def terms(self, xp: Any, pred: Any, target: Any) -> Any:
        if self.log_input:
            terms = xp.exp(pred) - target * pred
        else:
            terms = pred - target * xp.log(pred + self.eps)
        if self.full:
            y = xp.maximum(target, 1.0)
            stirling = y * xp.log(y) - y + 0.5 * xp.log((2.0 * math.pi) * y)
            terms = terms + xp.where(target > 1.0, stirling, 0.0)
        return terms

    def terms_gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        return xp.exp(pred) - target if self.log_input else 1.0 - target / (pred + self.eps)


_LOSSES: dict[str, Any] = {
    cls.name: cls
    for cls in (Huber, BinaryFocal, Focal, Hinge, SquaredHinge, CosineSimilarity, PoissonNLL)
}


@hookimpl
def mlcore_losses() -> dict[str, Any]:
    """The losses this distribution provides, by name."""
    return dict(_LOSSES)
