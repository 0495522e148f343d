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
  cross-entropy from logits).
* Each is written on :class:`mlcore.plugin.LossBase` as a plugin's loss is: the class gives
  the bare formulas, the base the checks, the reduction and the unchecked twins training
  runs (:class:`mlcore.hookspecs.LossKernels`). Cross-entropy and binary cross-entropy also
  give their from-logits form (``logits_form()``, eq. 1.15/1.16 from the logits), which
  ``fit`` runs when the model ends in the matching softmax / sigmoid: each formula is written
  once, here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import cast

from .arrays import numerics as nm
from .arrays.loss_checks import (
    CE_FIX,
    DISTRIBUTION_FIX,
    MULTI_HOT_FIX,
    NAMES,
    PROBABILITIES_FIX,
    PROBABILITY_TOLERANCE,
    check_distribution,
    check_distributions,
    check_labels,
    check_pred,
    check_probability_rows,
    check_unit_interval,
    check_unit_intervals,
    class_targets,
    eps_param,
    eps_value,
    float_target,
    logits_flag,
    probability_tolerance,
    same_shape_float,
    smallest_normal,
    smoothing_param,
    training_target,
    two_classes,
)
from .arrays.loss_domains import BinaryProbabilities, ClassProbabilities, TwoDistributions
from .arrays.namespace import check_same_shape
from .bases import REDUCTIONS, ElementwiseLoss, LossBase
from .errors import DTypeError, ShapeError
from .hookspecs import LossFn, hookimpl
from .plugins import kernel, make, registry
from .types import Array, DType, Namespace

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

def loss(name: str, **params: object) -> LossFn:
    """Build the registered loss ``name`` with ``params`` (e.g. ``reduction="sum"``).

    Raises :class:`~mlcore.errors.UnknownNameError` listing the registered names, or
    :class:`~mlcore.errors.InvalidParameterError` for a parameter it does not accept.
    """
    return make("losses", name, params)  # type: ignore[no-any-return]


def loss_names() -> list[str]:
    """Names of every registered loss, built-in and from plugins."""
    return registry().names("losses")


# -- regression --------------------------------------------------------------------------
class MSE(ElementwiseLoss):
    """Mean squared error: per sample ``mean_j (pred_j - target_j)^2`` over the features;
    gradient ``2 (pred - target) / F`` (F features per sample), then the reduction.

    With ``reduction="mean"`` this equals ``torch.nn.functional.mse_loss``.
    """

    name = "mse"

    def terms(self, xp: Namespace, pred: Array, target: Array) -> Array:
        d = pred - target
        return d * d

    def terms_gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return (pred - target) * 2.0

    def _terms_gradient_times(self, xp: Namespace, pred: Array, target: Array,
                              scale: float) -> Array:
        return (pred - target) * (2.0 * scale)  # the same numbers: doubling is exact


class MAE(ElementwiseLoss):
    """Mean absolute error: per sample ``mean_j |pred_j - target_j|``; gradient
    ``sign(pred - target) / F`` (0 where they are equal), then the reduction.

    With ``reduction="mean"`` this equals ``torch.nn.functional.l1_loss``.
    """

    name = "mae"

    def terms(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return xp.abs(pred - target)

    def terms_gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return xp.sign(pred - target)


# -- binary cross-entropy ----------------------------------------------------------------
_BCE_TARGET_FIX = "Use 0/1 labels or probabilities."


class BinaryCrossEntropy(BinaryProbabilities, ElementwiseLoss):
    """Binary cross-entropy, eq. (1.15): ``-[y log p + (1 - y) log(1 - p)]`` per output,
    averaged over the outputs of a sample (shape (N,) or (N, K) for K independent labels).

    ``from_logits=None`` (default): as ``False`` when called directly; in ``fit`` the model
    decides, exactly as for the name ``"binary_cross_entropy"``: logits unless the model ends
    in a sigmoid (:mod:`mlcore.training.lossplan`).

    ``from_logits=False``: ``pred`` holds probabilities in [0, 1] (NaN refused), clipped to
    ``[eps, 1 - eps]`` before the logs (``eps=None``: the machine epsilon of pred's dtype,
    1.19e-7 in float32, 2.22e-16 in float64; so one term is at most 15.9 or 36.0).
    Gradient ``(p - y) / (p (1 - p)) / K`` at the clipped ``p`` (not zero outside the clip
    range, so a confidently wrong prediction still learns).

    ``from_logits=True``: ``pred`` holds logits z, ``p = sigmoid(z)``; the value uses the
    stable softplus form ``max(z, 0) - z y + log(1 + e^(-|z|))`` (finite for any finite z)
    and the gradient is ``(sigmoid(z) - y) / K``. This is what ``fit`` computes for a model
    ending in a sigmoid (:meth:`logits_form`).

    ``target`` is a floating array of pred's shape with values in [0, 1] (soft labels are
    allowed); probabilities and targets outside [0, 1] raise :class:`InvalidValueError`.
    """

    name = "binary_cross_entropy"
    logits_activation = "sigmoid"
    """The output activation whose logits :meth:`logits_form` takes."""

    def __init__(
        self, reduction: str = "mean", from_logits: bool | None = None, eps: float | None = None
    ) -> None:
        super().__init__(reduction)
        self.from_logits = logits_flag(self.name, from_logits)
        self.eps = eps_param(self.name, eps)

    def logits_form(self) -> BinaryCrossEntropy:
        """This loss computed from the logits z of ``sigmoid(z)`` (itself when it already is)."""
        if self.from_logits:
            return self
        return BinaryCrossEntropy(self.reduction, from_logits=True, eps=self.eps)

    def check(self, xp: Namespace, pred: Array, target: Array) -> Array:
        target = same_shape_float(xp, pred, target, self.name)
        if self.from_logits:
            check_unit_interval(xp, target, "target", self.name, _BCE_TARGET_FIX)
        else:  # target, then pred: one reduction for both
            check_unit_intervals(xp, self.name, ((target, "target", _BCE_TARGET_FIX),
                                                 (pred, "pred (probabilities)", PROBABILITIES_FIX)))
        return target

    def prepare_target(self, xp: Namespace, target: Array, n_out: int | None,
                       dtype: DType) -> Array:
        target = training_target(xp, target, n_out, dtype)
        check_unit_interval(xp, target, "target", self.name, _BCE_TARGET_FIX)
        return target

    def value_and_grad_unchecked(self, xp: Namespace, pred: Array,
                                 target: Array) -> tuple[Array, Array]:
        if target.shape != pred.shape:  # (N,) labels for one output: take its (N, 1) shape
            target = xp.reshape(target, pred.shape)
        return super().value_and_grad_unchecked(xp, pred, target)

    def _clipped(self, xp: Namespace, pred: Array) -> Array:
        eps = eps_value(xp, pred, self.eps)
        return xp.minimum(xp.maximum(pred, eps), 1.0 - eps)  # clip, minus its wrappers

    def terms(self, xp: Namespace, pred: Array, target: Array) -> Array:
        if self.from_logits:
            return xp.maximum(pred, 0.0) - pred * target + nm.softplus_neg_abs(xp, pred)
        p = self._clipped(xp, pred)
        return -(target * xp.log(p) + (1.0 - target) * xp.log1p(-p))

    def terms_gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        if self.from_logits:
            return nm.sigmoid(xp, pred) - target
        p = self._clipped(xp, pred)
        return (p - target) / (p * (1.0 - p))


# -- multi-class cross-entropy and KL ----------------------------------------------------
class CrossEntropy(ClassProbabilities, LossBase):
    """Multi-class cross-entropy, eq. (1.16) (``H(P, Q)`` of eq. 1.14 per sample): per sample
    ``-sum_j y_j log p_j``; with a class index ``c`` that is ``-log p_c``.

    ``pred`` has shape (N, M). ``target`` is either integer class indices of shape (N,) in
    [0, M) or floating rows of shape (N, M) that are probability distributions (one-hot or
    soft; rows must sum to 1 within 1e-3 and be non-negative).

    ``from_logits=None`` (default): as ``False`` when called directly; in ``fit`` the model
    decides, exactly as for the name ``"cross_entropy"``: logits unless the model ends in a
    softmax (:mod:`mlcore.training.lossplan`).

    ``from_logits=False``: ``pred`` holds probabilities (softmax outputs): rows in [0, 1]
    summing to 1 within the dtype's tolerance (logits are refused, with the fix), clipped
    below at ``eps`` before the log (``eps=None``: the machine epsilon of pred's dtype);
    gradient ``-y / p`` at the clipped ``p``.

    ``from_logits=True``: ``pred`` holds logits z; the value is the fused log-sum-exp form
    ``logsumexp(z) - sum_j y_j z_j`` (finite for any finite z) and the gradient is
    ``softmax(z) - y``: cheaper and more accurate than softmax then cross-entropy. This is
    what ``fit`` computes for a model ending in a softmax (:meth:`logits_form`).

    ``label_smoothing`` (default 0, in [0, 1)) replaces ``y`` by ``(1 - s) y + s / M``, as
    PyTorch does. Cross-entropy needs M >= 2 classes: one output is refused, naming
    ``binary_cross_entropy``; (N, M) targets must be distributions (multi-hot rows, several
    classes per sample, are refused, naming ``binary_cross_entropy``).
    """

    name = "cross_entropy"
    logits_activation = "softmax"
    """The output activation whose logits :meth:`logits_form` takes."""

    def __init__(
        self,
        reduction: str = "mean",
        from_logits: bool | None = None,
        label_smoothing: float = 0.0,
        eps: float | None = None,
    ) -> None:
        super().__init__(reduction)
        self.from_logits = logits_flag(self.name, from_logits)
        self.label_smoothing = smoothing_param(label_smoothing)
        self.eps = eps_param(self.name, eps)

    def logits_form(self) -> CrossEntropy:
        """This loss computed from the logits z of ``softmax(z)`` (itself when it already is)."""
        if self.from_logits:
            return self
        return CrossEntropy(self.reduction, from_logits=True,
                            label_smoothing=self.label_smoothing, eps=self.eps)

    def check(self, xp: Namespace, pred: Array, target: Array) -> Array:
        check_pred(xp, pred, self.name, ndim=2)
        two_classes(int(pred.shape[1]), "pred has")
        if not self.from_logits:
            check_probability_rows(xp, pred, self.name, CE_FIX)
        return class_targets(xp, pred, target, self.name)

    def prepare_target(self, xp: Namespace, target: Array, n_out: int | None,
                       dtype: DType) -> Array:
        """(N,) integer labels in [0, M), or (N, M) rows cast to ``dtype``, for a model with
        M = ``n_out`` outputs; checked once where ``fit`` receives them."""
        m = int(n_out or 0)
        two_classes(m, "the model has")
        if target.ndim == 2:
            if tuple(target.shape[1:]) != (m,):
                raise ShapeError(
                    f"cross_entropy targets of shape {tuple(target.shape)} do not fit a model "
                    f"with {m} outputs; pass (N, {m}) rows or (N,) labels.", target)
            target = training_target(xp, target, n_out, dtype)
            check_distribution(xp, target, self.name, fix=MULTI_HOT_FIX)
            return target
        if target.ndim != 1 or not xp.isdtype(target.dtype, "integral"):
            raise DTypeError(
                f"cross_entropy labels must be integer class indices of shape (N,), received "
                f"dtype {target.dtype} and shape {tuple(target.shape)}. Convert with "
                f"astype(int64), or pass one-hot rows of shape (N, {m}).", target)
        check_labels(xp, target, m, f"a model with {m} outputs")
        return target

    def _dense_target(self, xp: Namespace, pred: Array, target: Array) -> Array:
        """The (N, M) target distribution after label smoothing (for the gradient)."""
        m = pred.shape[1]
        y = nm.one_hot(xp, target, m, pred.dtype) if target.ndim == 1 else target
        s = self.label_smoothing
        return y if s == 0.0 else y * (1.0 - s) + s / m

    def _weighted(self, xp: Namespace, a: Array, target: Array) -> Array:
        """``sum_j y_j a_j`` per sample for the smoothed target y; class indices are picked
        (:func:`_pick`)."""
        picked = _pick(xp, a, target) if target.ndim == 1 else xp.sum(target * a, axis=1)
        s = self.label_smoothing
        return picked if s == 0.0 else picked * (1.0 - s) + xp.mean(a, axis=1) * s

    def _shifted(self, xp: Namespace, pred: Array) -> tuple[Array, Array, Array]:
        """Logits shifted by the row maximum ``z``, ``e^z`` and the row sums of ``e^z``."""
        z = pred - xp.max(pred, axis=1, keepdims=True)
        e = xp.exp(z)
        return z, e, xp.sum(e, axis=1, keepdims=True)

    def values(self, xp: Namespace, pred: Array, target: Array) -> Array:
        if self.from_logits:  # log sum e^z - sum_j y_j z_j: the shift cancels, rows sum to 1
            z, _, total = self._shifted(xp, pred)
            return xp.log(total[:, 0]) - self._weighted(xp, z, target)
        eps = eps_value(xp, pred, self.eps)
        if target.ndim == 1 and self.label_smoothing == 0.0:  # the log of N picked values
            return -xp.log(xp.maximum(_pick(xp, pred, target), eps))
        return -self._weighted(xp, xp.log(xp.maximum(pred, eps)), target)

    def gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return self._gradient(xp, pred, target, 1.0)

    def _gradient(self, xp: Namespace, pred: Array, target: Array, scale: float) -> Array:
        """``scale`` times the gradient; from probabilities the scale goes into ``y`` (one
        pass fewer than scaling the (N, M) result)."""
        y = self._dense_target(xp, pred, target)
        if self.from_logits:
            g = nm.softmax(xp, pred, axis=1) - y
            return g if scale == 1.0 else g * scale
        return (y * -scale) / xp.maximum(pred, eps_value(xp, pred, self.eps))

    def value_and_grad_unchecked(self, xp: Namespace, pred: Array,
                                 target: Array) -> tuple[Array, Array]:
        """As the base's, through the backend's fused ``softmax_cross_entropy`` kernel (one
        launch on a GPU, one compiled pass per row in NumPy; :data:`mlcore.hookspecs.KERNELS`)
        when it has one for these inputs."""
        both = self._fused(xp, pred, target, grad=True)
        if both is None:
            return super().value_and_grad_unchecked(xp, pred, target)
        return cast("tuple[Array, Array]", both)

    def forward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        both = self._fused(xp, pred, target, grad=False)
        return super().forward_unchecked(xp, pred, target) if both is None else both[0]

    def backward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        both = self._fused(xp, pred, target, grad=True)
        if both is None or both[1] is None:
            return self._gradient(xp, pred, target,
                                  1.0 / pred.shape[0] if self.reduction == "mean" else 1.0)
        return both[1]

    def _fused(self, xp: Namespace, pred: Array, target: Array,
               grad: bool) -> tuple[Array, Array | None] | None:
        """The fused kernel's (value, gradient or None) for the mean from logits, or None
        (no kernel, another reduction or form, inputs the kernel does not take)."""
        fused = _softmax_ce(xp) if self.from_logits and self.reduction == "mean" else None
        if fused is None:
            return None
        s = self.label_smoothing
        if s and target.ndim == 2:  # the kernel takes rows as they are
            target, s = self._dense_target(xp, pred, target), 0.0
        return fused(xp, pred, target, s, grad)

    def values_and_gradient(self, xp: Namespace, pred: Array, target: Array) -> tuple[Array, Array]:
        if not self.from_logits:
            return super().values_and_gradient(xp, pred, target)
        y = self._dense_target(xp, pred, target)  # one softmax serves value and gradient
        z, e, total = self._shifted(xp, pred)
        return xp.log(total[:, 0]) - xp.sum(y * z, axis=1), e / total - y


def _pick(xp: Namespace, a: Array, labels: Array) -> Array:
    """``a[i, labels[i]]`` for each row i: by ``take_along_axis`` (O(N), no one-hot rows),
    or through one-hot rows where the library lacks that function (it is new in the 2024.12
    standard; dask has none)."""
    take = getattr(xp, "take_along_axis", None)
    if take is not None:
        return take(a, labels[:, None], axis=1)[:, 0]
    return xp.sum(nm.one_hot(xp, labels, a.shape[1], a.dtype) * a, axis=1)


@functools.cache
def _softmax_ce(xp: Namespace) -> Callable[..., tuple[Array, Array | None] | None] | None:
    """The backend's fused softmax cross-entropy for ``xp``, or None (asked once per xp)."""
    return kernel("softmax_cross_entropy", xp)


_KL_PRED_FIX = "Apply softmax to pred first (or normalise each row)."


class KLDivergence(TwoDistributions, LossBase):
    """Kullback-Leibler divergence, eq. (1.13): ``D_KL(target || pred) =
    sum_j y_j (log y_j - log p_j)`` summed over the classes of each sample.

    ``pred`` and ``target`` are (N, M) probability rows (target rows must sum to 1 within
    1e-3, pred rows within the dtype's tolerance; negative values and NaN are refused, so
    the divergence is never negative); terms where ``y_j = 0`` contribute 0. ``pred`` is
    clipped below at ``eps`` (``eps=None``: the machine epsilon of its dtype) before the
    log. Gradient ``-y / p`` at the clipped ``p``. Equals
    ``torch.nn.functional.kl_div(log(pred), target, reduction="batchmean")`` for the default
    ``reduction="mean"``.
    """

    name = "kl_divergence"

    def __init__(self, reduction: str = "mean", eps: float | None = None) -> None:
        super().__init__(reduction)
        self.eps = eps_param(self.name, eps)

    def check(self, xp: Namespace, pred: Array, target: Array) -> Array:
        check_pred(xp, pred, self.name, ndim=2)
        check_same_shape(pred, target, NAMES)
        target = float_target(xp, pred, target)
        check_distributions(xp, self.name, (  # target, then pred: one host round trip
            (target, "target", PROBABILITY_TOLERANCE, DISTRIBUTION_FIX),
            (pred, "pred", probability_tolerance(xp, pred.dtype), _KL_PRED_FIX)))
        return target

    def _terms(self, xp: Namespace, pred: Array, target: Array) -> Array:
        """The (N, M) terms ``y_j (log y_j - log p_j)`` (0 where ``y_j = 0``)."""
        log_ratio = xp.log(xp.maximum(target, smallest_normal(xp, pred.dtype))) - xp.log(
            xp.maximum(pred, eps_value(xp, pred, self.eps))
        )
        return target * log_ratio

    def values(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return xp.sum(self._terms(xp, pred, target), axis=1)

    def gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return -target / xp.maximum(pred, eps_value(xp, pred, self.eps))

    def forward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        """The mean or sum as one sum over every term: no per-sample sums (a sum along a
        short last axis costs NumPy more than a whole-array one)."""
        if self.reduction == "none":
            return self.values(xp, pred, target)
        return self._reduce_total(xp.sum(self._terms(xp, pred, target)), pred)

    def backward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        """``-y / p`` with the reduction's 1/N folded into ``y``: one pass fewer."""
        factor = -1.0 / pred.shape[0] if self.reduction == "mean" else -1.0
        return (target * factor) / xp.maximum(pred, eps_value(xp, pred, self.eps))

    def value_and_grad_unchecked(self, xp: Namespace, pred: Array,
                                 target: Array) -> tuple[Array, Array]:
        return (self.forward_unchecked(xp, pred, target),
                self.backward_unchecked(xp, pred, target))


_BUILTIN: dict[str, type[LossBase]] = {
    cls.name: cls for cls in (MSE, MAE, BinaryCrossEntropy, CrossEntropy, KLDivergence)
}


@hookimpl
def mlcore_losses() -> dict[str, Callable[..., LossFn]]:
    """mlcore's own losses, registered like any plugin's."""
    return dict(_BUILTIN)
