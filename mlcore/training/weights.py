"""Sample and class weights: one weight per sample, and the weighted training loss.

With weights ``w`` the training loss of a batch of N samples is ``sum_i w_i l_i / N`` (Keras'
convention, and PyTorch's ``reduction="none"`` losses multiplied by ``w`` and averaged), so
weights of 1 give the unweighted mean exactly. ``l_i`` is the loss of sample ``i``: for
cross-entropy the sum over the classes, for binary cross-entropy, mse and mae the mean over
the sample's outputs. For the fused sigmoid/softmax forms (eq. 1.15/1.16) the gradient is
``w_i (p_i - y_i) / N``.
"""

from __future__ import annotations

import math
from typing import Any, cast

from ..arrays.checks import is_integer, is_real
from ..arrays.namespace import check_finite, count_dtype, device_of
from ..backend import Backend
from ..errors import InvalidParameterError, InvalidValueError, ShapeError
from ..hookspecs import LossFn
from ..losses import loss as make_loss
from ..types import Array, DType, Namespace
from .lossplan import LossPlan

__all__ = ["sample_weights", "weighted_loss", "check_some_weight"]


def sample_weights(xp: Namespace, backend: Backend, plan: LossPlan, labels: Array | None, n: int,
                   dtype: DType, sample_weight: object, class_weight: object,
                   n_out: int | None) -> Array | None:
    """The (N,) weights from ``sample_weight`` times ``class_weight`` (None when neither)."""
    w = None
    if sample_weight is not None:
        w = cast("Array", sample_weight) if backend.owns(sample_weight) \
            else backend.asarray(sample_weight)
        if tuple(w.shape) != (n,):
            raise ShapeError(f"sample_weight must have one weight per sample, shape ({n},); "
                             f"received shape {tuple(w.shape)}.", sample_weight)
        w = xp.astype(w, dtype)
        check_finite(xp, w, "sample_weight")
        if bool(xp.any(w < 0.0)):
            raise InvalidValueError("sample_weight must be >= 0; received negative weights.",
                                    sample_weight)
    if class_weight is not None:
        cw = _class_weights(xp, plan, labels, dtype, class_weight, n_out)
        w = cw if w is None else w * cw
    return w


def check_some_weight(xp: Namespace, w: Array | None, class_weight: object) -> None:
    """Refuse training weights that are 0 for every sample: the loss and its gradient would
    be 0, so fit would change nothing while reporting a loss of 0 (scikit-learn refuses
    all-zero sample_weight too)."""
    if w is not None and w.shape[0] and not bool(xp.any(w > 0.0)):
        what = "sample_weight" if class_weight is None else (
            "the sample weights (sample_weight times class_weight)")
        verb = "is" if class_weight is None else "are"
        raise InvalidValueError(
            f"{what} {verb} 0 for every training sample, so the loss and its gradient are 0 and "
            f"fit would train nothing. Give some samples a weight > 0 (check that class_weight "
            f"does not zero every class present in y).", w)


def _class_weights(xp: Namespace, plan: LossPlan, labels: Array | None, dtype: DType,
                   class_weight: object, n_out: int | None) -> Array:
    if plan.task is None or labels is None:
        raise InvalidParameterError(
            "class_weight applies to classification (cross_entropy or binary_cross_entropy "
            "losses); use sample_weight for other losses.", class_weight)
    m = int(n_out or 1) if plan.task == "multiclass" else 2
    # NumPy keys and weights too: the usual dict(zip(np.unique(y), weights))
    if not isinstance(class_weight, dict) or not all(
            is_integer(k) and 0 <= int(k) < m and is_real(v) and math.isfinite(float(v))
            and float(v) >= 0 for k, v in class_weight.items()):
        raise InvalidParameterError(
            f"class_weight must be a dict {{class index in 0..{m - 1}: finite weight >= 0}}, "
            f"received {class_weight!r}. Keys are integer class indices (Python or NumPy), "
            f"weights finite numbers; an infinite weight makes the loss infinite.",
            class_weight)
    class_weight = {int(k): float(v) for k, v in class_weight.items()}
    table = xp.asarray([float(class_weight.get(c, 1.0)) for c in range(m)], dtype=dtype,
                       device=device_of(labels))
    if plan.task == "binary":
        if labels.ndim > 1 and any(int(d) != 1 for d in labels.shape[1:]):
            raise InvalidParameterError(
                "class_weight needs one label per sample; this binary model has several "
                "outputs. Use sample_weight instead.", class_weight)
        labels = xp.astype(xp.reshape(labels, (-1,)), count_dtype(xp))
    return xp.take(table, labels, axis=0)


def _rows(xp: Namespace, w: Array, like: Array) -> Any:
    """``w`` shaped (N, 1, ...) to broadcast against ``like``."""
    return xp.reshape(w, (w.shape[0],) + (1,) * (like.ndim - 1))


def weighted_loss(plan: LossPlan, loss: str | LossFn) -> Any:
    """``value_and_grad(xp, out, t, w)`` for ``plan``: the weighted mean loss and its gradient.

    A loss built on :class:`mlcore.plugin.LossBase` (every built-in) gives its per-sample
    values and their gradient in one call (``values_and_gradient``, on the logits for a
    fused plan, label smoothing included); any other loss runs with ``reduction="none"``.
    """
    fn = plan.fn
    both = getattr(fn, "values_and_gradient", None)
    if both is None:
        fn = _per_sample_loss(plan, loss)
        both = lambda xp, out, t: (fn.forward(out, t), fn.backward(out, t))  # noqa: E731

    def value_and_grad(xp: Namespace, out: Array, t: Array, w: Array) -> tuple[Any, Any]:
        if t.ndim == 1 and out.ndim == 2 and out.shape[1] == 1:
            t = xp.reshape(t, out.shape)  # (N,) 0/1 labels of a one-output model
        n = out.shape[0]
        values, grad = both(xp, out, t)
        return xp.sum(w * values) / n, _rows(xp, w, grad) * grad / n

    return value_and_grad


def _per_sample_loss(plan: LossPlan, loss: str | LossFn) -> Any:
    if isinstance(loss, str):
        return make_loss(loss, reduction="none")
    if getattr(loss, "reduction", None) == "none":
        return loss
    raise InvalidParameterError(
        f"Sample or class weights need the loss per sample: pass the loss by name "
        f"(loss={plan.name!r}) or build it with reduction='none'.", loss)
