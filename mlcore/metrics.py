"""Built-in metrics: accuracy, binary_accuracy, precision, recall, f1, auc, mae, mse, rmse, r2.

Metrics are the third plugin kind beside activations and losses, registered through the
``mlcore_metrics`` hook exactly as a third-party plugin would (see
:func:`mlcore.hookspecs.mlcore_metrics`). A metric object accumulates on the device:

``state = m.update(state, y_pred, y_true)``
    adds one batch (``state`` is None at the start); no value is read back to the host;
``m.result(state) -> float``
    reads the accumulated value back once (``fit`` calls it once per epoch);
``m(y_pred, y_true) -> float``
    both at once, for a whole data set.

``y_pred`` is the model's output (probabilities for a sigmoid/softmax model); ``y_true`` is
class indices (N,) or one-hot rows (N, M) for a multi-output classifier, 0/1 labels for a
one-output classifier, targets shaped like ``y_pred`` for a regressor. Definitions follow
scikit-learn's (the tests compare): classification thresholds probabilities at 0.5 (the
argmax for several outputs); precision, recall and F1 of several outputs are macro averages
over the classes (``average="macro"``), 0 where a denominator is 0 (``zero_division=0``);
mae/mse/rmse/r2 average over the outputs with equal weight (``"uniform_average"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast, overload

from .arrays.namespace import count_dtype, device_of, namespace, wide_float
from .backend import backend_of, get_backend
from .errors import InvalidParameterError, InvalidValueError, ShapeError
from .hookspecs import hookimpl
from .plugins import make, registry
from .types import Array, ArrayLike, Namespace

S = TypeVar("S")
"""A metric's state: whatever its ``update`` accumulates (sums and counts on the device)."""

Counts = tuple[Array | int, ...]
"""The state of the counting metrics: sums and counts, 0-d arrays on the device or ints."""
Batch = tuple[Array, Array, tuple[Array, Array]]
"""One batch as :class:`AUC` keeps it: scores, 0/1 truths and the faults' counts."""
Moments = tuple[int, Array, Array, Array]
""":class:`R2`'s state per output: count, mean, squared deviations and squared residuals."""

__all__ = ["metric", "metric_names", "Metric", "Accuracy", "BinaryAccuracy", "Precision",
           "Recall", "F1", "AUC", "MAE", "MSE", "RMSE", "R2"]


def metric(name: str, **params: object) -> Metric[Any]:
    """Build the registered metric ``name`` (e.g. ``metric("binary_accuracy", threshold=0.3)``).

    Raises :class:`~mlcore.errors.UnknownNameError` listing the registered names.
    """
    return make("metrics", name, params)  # type: ignore[no-any-return]


def metric_names() -> list[str]:
    """Names of every registered metric, built-in and from plugins."""
    return registry().names("metrics")


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _columns(xp: Namespace, y_pred: Array, y_true: Array, name: str) -> tuple[Array, Array]:
    """``y_pred`` as (N, k) and ``y_true`` cast to its dtype and shape."""
    if y_pred.ndim == 1:
        y_pred = xp.reshape(y_pred, (y_pred.shape[0], 1))
    if y_true.ndim == 0 or _count(y_true.shape) != _count(y_pred.shape) \
            or y_true.shape[0] != y_pred.shape[0]:
        raise ShapeError(f"Metric {name!r}: y_true of shape {tuple(y_true.shape)} does not fit "
                         f"y_pred of shape {tuple(y_pred.shape)}. Pass one target per "
                         f"output.", y_true)
    return y_pred, xp.reshape(xp.astype(y_true, y_pred.dtype), y_pred.shape)


class Metric(Generic[S]):
    """Base class: subclasses give ``update`` and ``result``; ``name`` is the history key.

    The metric input contract, what ``fit`` (and ``evaluate``) hand ``update`` batch by
    batch, arrays of the model's backend on its device (``mlcore.testing.TASKS``):

    * loss ``binary_cross_entropy``: ``y_pred`` (N, 1) probabilities (the sigmoid applied
      when the model outputs logits) in the model's floating dtype; ``y_true`` (N, 1)
      **bool** labels;
    * loss ``cross_entropy``: ``y_pred`` (N, M) probability rows; ``y_true`` (N,)
      **integer** class labels (one-hot targets are given as their argmax);
    * any other loss: ``y_pred`` (N, k) and ``y_true`` (N, k), both in the model's dtype.

    Called directly, ``metric(y_pred, y_true)`` takes host data too (lists, NumPy). A metric
    casts ``y_true`` to what it computes with (``xp.astype(y_true, y_pred.dtype)``): a
    comparison of bool labels with a number fails on array-api-strict. The state stays on
    the device; ``result`` reads it back once. :func:`mlcore.testing.check_metric` feeds a
    metric exactly this (``task=``).
    """

    name = ""

    def update(self, state: S | None, y_pred: Array, y_true: Array) -> S:
        """``state`` with the batch ``(y_pred, y_true)`` added (on the device); ``state`` is
        None for the first batch."""
        raise NotImplementedError

    def result(self, state: S) -> float:
        """The metric over everything added to ``state`` (one read-back)."""
        raise NotImplementedError

    def __call__(self, y_pred: ArrayLike, y_true: ArrayLike) -> float:
        """The metric of a whole data set; ``y_true`` (and a ``y_pred`` that is not an
        array) may be host data such as lists or NumPy arrays, converted to the backend of
        ``y_pred`` (the selected backend for a list) as ``fit`` converts its inputs."""

        backend = backend_of(y_pred) or get_backend()
        pred, true = (cast("Array", a) if backend.owns(a) else backend.asarray(a)
                      for a in (y_pred, y_true))
        return self.result(self.update(None, pred, true))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@overload
def _add(state: tuple[Array, ...] | None, new: tuple[Array, ...]) -> tuple[Array, ...]: ...
@overload
def _add(state: Counts | None, new: Counts) -> Counts: ...
def _add(state: Counts | None, new: Counts) -> Counts:
    return new if state is None else tuple(a + b for a, b in zip(state, new, strict=True))


def _faults(xp: Namespace, y_pred: Array, true: Array, m: int) -> tuple[Array, Array]:
    """Counts (0-d, on the device) of non-finite predictions and of targets that are no
    class label: not 0/1 for one output or one-hot rows, not an integer in [0, m) for class
    indices. Read back once, in ``result``."""
    bad_pred = xp.sum(xp.astype(~xp.isfinite(y_pred), count_dtype(xp)))
    if xp.isdtype(true.dtype, "bool"):
        return bad_pred, xp.sum(xp.zeros((1,), dtype=count_dtype(xp), device=device_of(true)))
    if m and true.ndim == 1:
        t = xp.astype(true, wide_float(xp)) if not xp.isdtype(true.dtype, "integral") else true
        ok = (t >= 0) & (t < m) & (t == xp.floor(t)) if not xp.isdtype(t.dtype, "integral") \
            else (t >= 0) & (t < m)
    else:
        ok = (true == 0) | (true == 1)
    return bad_pred, xp.sum(xp.astype(~ok, count_dtype(xp)))


def _refuse(name: str, faults: Sequence[Array | int]) -> None:
    """Refuse, as scikit-learn does, a classification metric of garbage: a NaN prediction
    thresholds to a confident class, a continuous target to an arbitrary one."""
    bad_pred, bad_true = int(faults[0]), int(faults[1])
    if bad_pred:
        raise InvalidValueError(
            f"Metric {name!r}: y_pred holds {bad_pred} NaN or infinite values; a "
            f"classification metric of them would be meaningless. Check the model's "
            f"outputs (a diverged fit gives NaN).", bad_pred)
    if bad_true:
        raise InvalidValueError(
            f"Metric {name!r}: y_true holds {bad_true} values that are not class labels (0/1 "
            f"for one output or one-hot rows, integers in [0, M) for class indices), as a "
            f"continuous regression target does. Classification metrics need labels; for a "
            f"regressor use 'mae', 'mse', 'rmse' or 'r2'.", bad_true)


class _Classification(Metric[S]):
    """Predicted and true classes: argmax for several outputs, ``> threshold`` for one."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)

    def faults(self, xp: Namespace, y_pred: Array, y_true: Array, m: int) -> tuple[Array, Array]:
        return _faults(xp, y_pred, y_true, m)

    def classes(self, y_pred: Array, y_true: Array) -> tuple[Array, Array, int]:
        """``(predicted, true, classes)``: integer indices (N,) for several outputs
        (``classes`` = M), booleans shaped like ``y_pred`` for one (``classes`` = 0)."""
        xp = namespace(y_pred, y_true, names=("y_pred", "y_true"))
        if y_pred.ndim == 2 and y_pred.shape[1] > 1:
            m = int(y_pred.shape[1])
            true = xp.argmax(y_true, axis=1) if y_true.ndim == 2 else y_true
            if true.ndim != 1 or true.shape[0] != y_pred.shape[0]:
                raise ShapeError(
                    f"Metric {self.name!r}: y_true of shape {tuple(y_true.shape)} does not fit "
                    f"y_pred of shape {tuple(y_pred.shape)}; pass (N,) class indices or (N, "
                    f"{m}) one-hot rows.", y_true)
            return xp.argmax(y_pred, axis=1), xp.astype(true, count_dtype(xp)), m
        pred, true = _columns(xp, y_pred, y_true, self.name)
        return pred > self.threshold, true > 0.5, 0


class Accuracy(_Classification[Counts]):
    """The fraction of correct predictions (``sklearn.metrics.accuracy_score``)."""

    name = "accuracy"

    def update(self, state: Counts | None, y_pred: Array, y_true: Array) -> Counts:
        xp = namespace(y_pred, y_true, names=("y_pred", "y_true"))
        pred, true, m = self.classes(y_pred, y_true)
        return _add(state, (xp.count_nonzero(pred == true), _count(pred.shape),
                            *self.faults(xp, y_pred, y_true, m)))

    def result(self, state: Counts) -> float:
        _refuse(self.name, state[2:])
        return int(state[0]) / int(state[1])


class BinaryAccuracy(Accuracy):
    """Accuracy of every output thresholded at ``threshold`` against 0/1 targets."""

    name = "binary_accuracy"

    def classes(self, y_pred: Array, y_true: Array) -> tuple[Array, Array, int]:
        xp = namespace(y_pred, y_true, names=("y_pred", "y_true"))
        pred, true = _columns(xp, y_pred, y_true, self.name)
        return pred > self.threshold, true > 0.5, 0


class _Counts(_Classification[tuple[Array, ...]]):
    """True positives, false positives and false negatives, per class (on the device)."""

    def update(self, state: tuple[Array, ...] | None, y_pred: Array,
               y_true: Array) -> tuple[Array, ...]:
        xp = namespace(y_pred, y_true, names=("y_pred", "y_true"))
        pred, true, m = self.classes(y_pred, y_true)
        if m:
            ids = xp.arange(m, device=device_of(pred))
            pred, true = pred[:, None] == ids, true[:, None] == ids
        else:
            pred, true = xp.reshape(pred, (-1,)), xp.reshape(true, (-1,))
        tp = xp.sum(xp.astype(pred & true, count_dtype(xp)), axis=0)
        fp = xp.sum(xp.astype(pred & ~true, count_dtype(xp)), axis=0)
        fn = xp.sum(xp.astype(~pred & true, count_dtype(xp)), axis=0)
        return _add(state, (tp, fp, fn, *self.faults(xp, y_pred, y_true, m)))

    def result(self, state: tuple[Array, ...]) -> float:
        _refuse(self.name, state[3:])
        state = state[:3]
        xp = namespace(state[0])
        wide = wide_float(xp)
        tp, fp, fn = (xp.astype(a, wide) for a in state)
        values = self.score(xp, tp, fp, fn)
        if values.ndim == 0:
            return float(values)
        present = xp.astype((tp + fp + fn) > 0, wide)  # classes seen, as scikit-learn
        return float(xp.sum(values * present) / xp.maximum(xp.sum(present), 1.0))

    def score(self, xp: Namespace, tp: Array, fp: Array, fn: Array) -> Array:
        raise NotImplementedError


def _ratio(xp: Namespace, num: Array, den: Array) -> Array:
    """num / den, 0 where den is 0 (scikit-learn's ``zero_division=0``)."""
    return xp.where(den > 0, num / xp.where(den > 0, den, 1.0), 0.0)


class Precision(_Counts):
    """tp / (tp + fp) (``sklearn.metrics.precision_score``; macro for several outputs)."""

    name = "precision"

    def score(self, xp: Namespace, tp: Array, fp: Array, fn: Array) -> Array:
        return _ratio(xp, tp, tp + fp)


class Recall(_Counts):
    """tp / (tp + fn) (``sklearn.metrics.recall_score``; macro for several outputs)."""

    name = "recall"

    def score(self, xp: Namespace, tp: Array, fp: Array, fn: Array) -> Array:
        return _ratio(xp, tp, tp + fn)


class F1(_Counts):
    """2 tp / (2 tp + fp + fn) (``sklearn.metrics.f1_score``; macro for several outputs)."""

    name = "f1"

    def score(self, xp: Namespace, tp: Array, fp: Array, fn: Array) -> Array:
        return _ratio(xp, 2.0 * tp, 2.0 * tp + fp + fn)


class AUC(Metric[list[Batch]]):
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    One output: the binary AUC. Several outputs (softmax probabilities with class-index or
    one-hot ``y_true``, or one sigmoid per label with a 0/1 matrix): the unweighted mean of
    each column's one-vs-rest AUC, as ``roc_auc_score(multi_class="ovr", average="macro")``
    (and its multilabel ``average="macro"``). Keeps the batches' scores on the device and,
    at :meth:`result`, sorts each column once and integrates the ROC curve with the
    trapezoid rule over the distinct scores (ties count half, as in the Mann-Whitney
    statistic).
    """

    name = "auc"

    def update(self, state: list[Batch] | None, y_pred: Array, y_true: Array) -> list[Batch]:
        xp = namespace(y_pred, y_true, names=("y_pred", "y_true"))
        if y_pred.ndim == 2 and y_pred.shape[1] > 1:
            batch = (y_pred, _one_vs_rest(xp, y_pred, y_true),
                     _faults(xp, y_pred, y_true, y_pred.shape[1]))
            return [batch] if state is None else [*state, batch]
        pred, true = _columns(xp, y_pred, y_true, self.name)
        batch = (xp.reshape(pred, (-1,)), xp.reshape(true > 0.5, (-1,)),
                 _faults(xp, pred, true, 0))
        return [batch] if state is None else [*state, batch]

    def result(self, state: list[Batch]) -> float:
        for batch in state:
            _refuse(self.name, batch[2])
        xp = namespace(state[0][0])
        dt = wide_float(xp)
        s = xp.astype(xp.concat([b[0] for b in state]), dt)
        t = xp.astype(xp.concat([b[1] for b in state]), dt)
        if s.ndim == 1:
            return _binary_auc(xp, s, t, state, "")
        return float(sum(_binary_auc(xp, s[:, c], t[:, c], state, f" for class {c}")
                         for c in range(s.shape[1])) / s.shape[1])


def _one_vs_rest(xp: Namespace, y_pred: Array, y_true: Array) -> Array:
    """``y_true`` as an (N, M) 0/1 matrix: class indices one-hot, a matrix as it is."""
    m = y_pred.shape[1]
    if y_true.ndim == 2 and y_true.shape[1] == m:
        return y_true > 0.5
    if y_true.ndim != 1 or y_true.shape[0] != y_pred.shape[0]:
        raise ShapeError(
            f"Metric 'auc' with {m} outputs takes y_true as class indices of shape "
            f"({y_pred.shape[0]},) or a 0/1 matrix of shape {tuple(y_pred.shape)}; received "
            f"shape {tuple(y_true.shape)}.", y_true)
    classes = xp.arange(m, device=device_of(y_pred))
    return xp.astype(y_true, classes.dtype)[:, None] == classes[None, :]


def _binary_auc(xp: Namespace, s: Array, t: Array, state: list[Batch], which: str) -> float:
    """The ROC AUC of scores ``s`` for the 0/1 truths ``t`` (both 1-D, a wide float)."""
    dt = s.dtype
    order = xp.argsort(s, descending=True, stable=True)
    s, t = xp.take(s, order), xp.take(t, order)
    last = xp.ones((1,), dtype=xp.bool, device=device_of(s))
    distinct = xp.concat([s[1:] != s[:-1], last])
    tps, fps = xp.cumulative_sum(t)[distinct], xp.cumulative_sum(1.0 - t)[distinct]
    pos, neg = float(tps[-1]), float(fps[-1])
    if pos == 0.0 or neg == 0.0:
        raise InvalidValueError(
            f"Metric 'auc' needs both classes in y_true{which}; received only "
            f"{'negatives' if pos == 0.0 else 'positives'}. Evaluate it on data holding "
            f"both (a larger validation set, or stratify the split).", state)
    zero = xp.zeros((1,), dtype=dt, device=device_of(s))
    tpr, fpr = xp.concat([zero, tps / pos]), xp.concat([zero, fps / neg])
    return float(xp.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1])) / 2.0)


class _Errors(Metric[Counts]):
    """Sums of an element-wise error over the batches, divided by the count at the end."""

    def error(self, xp: Namespace, diff: Array) -> Array:
        raise NotImplementedError

    def update(self, state: Counts | None, y_pred: Array, y_true: Array) -> Counts:
        xp = namespace(y_pred, y_true, names=("y_pred", "y_true"))
        pred, true = _columns(xp, y_pred, y_true, self.name)
        return _add(state, (xp.sum(self.error(xp, pred - true)), _count(pred.shape)))

    def result(self, state: Counts) -> float:
        return float(state[0]) / int(state[1])


class MAE(_Errors):
    """Mean absolute error (``sklearn.metrics.mean_absolute_error``)."""

    name = "mae"

    def error(self, xp: Namespace, diff: Array) -> Array:
        return xp.abs(diff)


class MSE(_Errors):
    """Mean squared error (``sklearn.metrics.mean_squared_error``)."""

    name = "mse"

    def error(self, xp: Namespace, diff: Array) -> Array:
        return diff * diff


class RMSE(MSE):
    """Root of the mean squared error over every output (``root_mean_squared_error`` for
    one output)."""

    name = "rmse"

    def result(self, state: Counts) -> float:
        return math.sqrt(super().result(state))


class R2(Metric[Moments]):
    """Coefficient of determination 1 - SS_res / SS_tot per output, averaged
    (``sklearn.metrics.r2_score``; 1 for a constant target fitted exactly, else 0 there).

    Per-output count, mean and sum of squared deviations are merged batch by batch (Chan
    et al.'s pairwise update), so SS_tot keeps its precision in float32.
    """

    name = "r2"

    def update(self, state: Moments | None, y_pred: Array, y_true: Array) -> Moments:
        xp = namespace(y_pred, y_true, names=("y_pred", "y_true"))
        pred, true = _columns(xp, y_pred, y_true, self.name)
        nb = int(true.shape[0])
        mb = xp.mean(true, axis=0)
        m2b = xp.sum((true - mb) ** 2, axis=0)
        resb = xp.sum((true - pred) ** 2, axis=0)
        if state is None:
            return (nb, mb, m2b, resb)
        na, ma, m2a, resa = state
        n = na + nb
        delta = mb - ma
        return (n, ma + delta * (nb / n), m2a + m2b + delta * delta * (na * nb / n), resa + resb)

    def result(self, state: Moments) -> float:
        _, _, tot, res = state
        xp = namespace(tot)
        ok = tot > 0
        exact = xp.astype(res == 0, tot.dtype)  # a constant target: 1 if fitted exactly
        score = xp.where(ok, 1.0 - res / xp.where(ok, tot, 1.0), exact)
        return float(xp.mean(score))


def _threshold(cls: type[_Classification[Any]]) -> Callable[..., Metric[Any]]:
    def factory(threshold: float = 0.5) -> Metric[Any]:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not 0.0 <= threshold <= 1.0:
            raise InvalidParameterError(
                f"Metric {cls.name!r}: threshold must be a number in [0, 1], received "
                f"{threshold!r}.", threshold)
        return cls(threshold)  # type: ignore[call-arg]

    factory.__doc__ = cls.__doc__
    return factory


BUILTIN_METRICS: dict[str, Callable[..., Metric[Any]]] = {
    "accuracy": _threshold(Accuracy),
    "binary_accuracy": _threshold(BinaryAccuracy),
    "precision": _threshold(Precision),
    "recall": _threshold(Recall),
    "f1": _threshold(F1),
    "auc": AUC,
    "mae": MAE,
    "mse": MSE,
    "rmse": RMSE,
    "r2": R2,
}


@hookimpl
def mlcore_metrics() -> dict[str, Callable[..., Metric[Any]]]:
    """mlcore's own metrics, registered like any plugin's."""
    return dict(BUILTIN_METRICS)
