"""Input validation and parameter checks for the built-in losses (:mod:`mlcore.losses`).

Each check raises a typed error saying what, expected, received and the fix. Checks that
need a value from the arrays cost one host round trip each, noted where they are; they are
skipped inside :func:`values_unchecked` (a compiled training step: a tracer or a CUDA graph
capture has no values to read; :mod:`mlcore.training.step` checks the first batch eagerly).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..errors import DTypeError, InvalidParameterError, InvalidValueError, ShapeError
from ..types import Array, DType, Namespace
from .checks import is_real
from .namespace import check_finite, check_floating, check_same_shape

__all__ = [
    "NAMES",
    "PROBABILITY_TOLERANCE",
    "check_pred",
    "float_target",
    "same_shape_float",
    "check_unit_interval",
    "class_targets",
    "check_distribution",
    "check_distributions",
    "check_unit_intervals",
    "check_probability_rows",
    "logits_flag",
    "two_classes",
    "CE_FIX",
    "MULTI_HOT_FIX",
    "PROBABILITIES_FIX",
    "DISTRIBUTION_FIX",
    "probability_tolerance",
    "check_labels",
    "check_class_indices",
    "training_target",
    "number_param",
    "eps_value",
    "eps_param",
    "bool_param",
    "smoothing_param",
    "values_unchecked",
    "values_checked",
]

_CHECK_VALUES: ContextVar[bool] = ContextVar("mlcore_check_values", default=True)


@contextmanager
def values_unchecked() -> Iterator[None]:
    """Skip the checks that read values (label range, [0, 1], probability rows) inside."""
    token = _CHECK_VALUES.set(False)
    try:
        yield
    finally:
        _CHECK_VALUES.reset(token)


def values_checked() -> bool:
    """Whether checks that read array values back to the host run here: False inside
    :func:`values_unchecked` (a compiled training step, whose arrays have no values)."""
    return _CHECK_VALUES.get()


NAMES = ("pred", "target")
PROBABILITY_TOLERANCE = 1e-3
"""How far a probability target's row sum may be from 1 (float32 rounding leaves ~1e-6)."""


def check_pred(xp: Namespace, pred: Array, owner: str, ndim: int | None = None) -> None:
    """``pred`` must be floating with N >= 1 samples (and ``ndim`` axes when given)."""
    check_floating(xp, pred, "pred")
    if (ndim is not None and pred.ndim != ndim) or pred.ndim < 1 or pred.shape[0] == 0:
        want = "(N, M)" if ndim == 2 else "(N, ...)"
        raise ShapeError(
            f"Loss {owner!r} expected pred of shape {want} with N >= 1 samples, received "
            f"shape {tuple(pred.shape)}.",
            pred,
        )


def float_target(xp: Namespace, pred: Array, target: Array) -> Array:
    """``target`` checked to be floating, cast to ``pred``'s dtype (no copy when equal)."""
    check_floating(xp, target, "target")
    return target if target.dtype == pred.dtype else xp.astype(target, pred.dtype)


def same_shape_float(xp: Namespace, pred: Array, target: Array, owner: str,
                     ndim: int | None = None) -> Array:
    """The checks of an element-wise loss: floating, one shape (of ``ndim`` axes when
    given), N >= 1 samples; returns ``target`` in ``pred``'s dtype."""
    check_pred(xp, pred, owner, ndim)
    check_same_shape(pred, target, NAMES)
    return float_target(xp, pred, target)


def _seen(lo: Array, hi: Array) -> str:
    """``"values from a to b"``, or ``"NaN"`` (a NaN makes every comparison false)."""
    a, b = float(lo), float(hi)
    return "NaN" if math.isnan(a) or math.isnan(b) else f"values from {a:g} to {b:g}"


PROBABILITIES_FIX = ("Pass logits with from_logits=True, or end the model with "
                     "output_activation='sigmoid'.")
DISTRIBUTION_FIX = "Normalise each row, or pass integer class indices."


def check_unit_interval(xp: Namespace, x: Array, label: str, owner: str,
                        fix: str = PROBABILITIES_FIX) -> None:
    """Raise :class:`InvalidValueError` unless every value of ``x`` lies in [0, 1] (NaN
    never does: the test is written so that a NaN fails it)."""
    if not _CHECK_VALUES.get():
        return
    # One reduction: min(x, 1 - x) >= 0 exactly when 0 <= x <= 1 (1 - x is exact near 1
    # and never rounds a value above 1 to 0; NaN and infinities fail). lo and hi for the
    # message only.
    if not bool(xp.min(xp.minimum(x, 1.0 - x)) >= 0.0):
        lo, hi = xp.min(x), xp.max(x)
        raise InvalidValueError(
            f"Loss {owner!r} expected {label} in [0, 1], received {_seen(lo, hi)}. {fix}", x)


def check_unit_intervals(xp: Namespace, owner: str,
                         checks: tuple[tuple[Array, str, str], ...]) -> None:
    """:func:`check_unit_interval` of each ``(x, label, fix)`` in order, for arrays of one
    shape: one reduction and one host round trip while they all pass; the first that fails
    raises its own message."""
    if not _CHECK_VALUES.get():
        return
    low = None
    for x, _, _ in checks:
        inside = xp.minimum(x, 1.0 - x)
        low = inside if low is None else xp.minimum(low, inside)
    if low is not None and not bool(xp.min(low) >= 0.0):
        for x, label, fix in checks:
            check_unit_interval(xp, x, label, owner, fix)


def eps_value(xp: Namespace, pred: Array, eps: float | None) -> float:
    """The clipping epsilon: ``eps`` or, by default, the machine epsilon of pred's dtype."""
    return machine_eps(xp, pred.dtype) if eps is None else eps


@functools.lru_cache(maxsize=64)
def machine_eps(xp: Namespace, dtype: DType) -> float:
    """``finfo(dtype).eps`` as a float, cached per namespace and dtype (``finfo`` costs three
    Python calls, and every loss call asked for it)."""
    return float(xp.finfo(dtype).eps)


@functools.lru_cache(maxsize=64)
def smallest_normal(xp: Namespace, dtype: DType) -> float:
    """``finfo(dtype).smallest_normal`` as a float, cached as :func:`machine_eps` is."""
    return float(xp.finfo(dtype).smallest_normal)


def eps_param(owner: str, eps: object) -> float | None:
    """``eps`` is None or a number in (0, 0.5)."""
    if eps is None:
        return None
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0.0 < eps < 0.5:
        return float(eps)
    raise InvalidParameterError(
        f"Loss {owner!r}: eps must be None (the dtype's machine epsilon) or a number in "
        f"(0, 0.5); received {eps!r}.",
        eps,
    )


def number_param(owner: str, name: str, value: object, above: float | None = None) -> float:
    """``value`` as a finite float (greater than ``above`` when given), else
    :class:`InvalidParameterError`. ``owner`` starts the message: ``"Loss 'huber'"``,
    ``"Activation 'elu'"``."""
    if is_real(value) and math.isfinite(value) and (above is None or float(value) > above):
        return float(value)
    bound = f" greater than {above:g}" if above is not None else ""
    raise InvalidParameterError(
        f"{owner}: {name} must be a finite real number{bound}, received {value!r}.", value)


def bool_param(owner: str, name: str, value: object) -> bool:
    """Flags such as ``from_logits`` must be real booleans (a string "no" is truthy)."""
    if not isinstance(value, bool):
        raise InvalidParameterError(
            f"Loss {owner!r}: {name} must be True or False, received {value!r}.", value
        )
    return value


def class_targets(xp: Namespace, pred: Array, target: Array, owner: str) -> Array:
    """Check ``target`` is (N,) class indices in [0, M) or (N, M) probability rows."""
    if target.ndim == 1 and _integral(xp, target.dtype):
        check_class_indices(xp, pred, target, owner)
        return target
    if target.ndim == 1:
        raise DTypeError(
            f"Loss {owner!r}: a target of shape {tuple(target.shape)} holds class indices and "
            f"must be an integer array, received dtype {target.dtype}. Convert it with "
            f"astype(int64), or pass one-hot rows of shape {tuple(pred.shape)}.",
            target,
        )
    check_same_shape(pred, target, NAMES)
    target = float_target(xp, pred, target)
    check_distribution(xp, target, owner)
    return target


def _integral(xp: Namespace, dtype: DType) -> bool:
    """Whether ``dtype`` is an integer dtype: int64 (the labels most backends make) by an
    equality test before the general ``isdtype`` (1 us on NumPy)."""
    return dtype == xp.int64 or bool(xp.isdtype(dtype, "integral"))


def check_class_indices(xp: Namespace, pred: Array, target: Array, owner: str) -> None:
    """(N,) integer ``target`` for (N, M) ``pred``: N labels, each in [0, M)."""
    n, m = pred.shape
    if target.shape[0] != n:
        raise ShapeError(
            f"Loss {owner!r}: pred has {n} samples but target has {target.shape[0]} labels; "
            f"received pred {tuple(pred.shape)} and target {tuple(target.shape)}.",
            (pred, target),
        )
    if _CHECK_VALUES.get() and not _labels_in_range(xp, target, m):  # the message: only now
        check_labels(xp, target, m, f"pred with {m} classes", f"Loss {owner!r}: ")


def check_labels(xp: Namespace, labels: Array, m: int, where: str, prefix: str = "") -> None:
    """Integer ``labels`` must be class indices in [0, m): one reduction over the N labels
    (not the N x M scores) for int64, a min and a max for other dtypes
    (:func:`_labels_in_range`), one host round trip. ``where`` names what has the m classes
    ("pred with 4 classes", "a model with 3 outputs"); ``prefix`` starts the message."""
    if not _CHECK_VALUES.get() or _labels_in_range(xp, labels, m):
        return
    lo, hi = xp.min(labels), xp.max(labels)
    if bool((lo < 0) | (hi >= m)):
        raise InvalidValueError(
            f"{prefix}Labels must be class indices in [0, {m - 1}] for {where}; received "
            f"labels from {int(lo)} to {int(hi)}. Labels start at 0 (the chapter's "
            f"class c is index c - 1): remap them to 0..{m - 1}, or use {int(hi) + 1} classes.",
            labels,
        )


def _labels_in_range(xp: Namespace, labels: Array, m: int) -> bool:
    """Whether every label lies in [0, m).

    int64 labels (the common case) by one reduction: ``labels | (m - 1 - labels)`` is
    negative exactly where a label is out of range (a negative label sets the sign bit
    itself, whatever its difference, which may wrap; for a label >= 0 the difference cannot
    overflow and is negative exactly above m - 1). Other dtypes by a minimum and a maximum."""
    if labels.dtype == xp.int64:
        return bool(xp.min(labels | ((m - 1) - labels)) >= 0)
    return bool((xp.min(labels) >= 0) & (xp.max(labels) < m))


def training_target(xp: Namespace, y: Array, n_out: int | None, dtype: DType) -> Array:
    """A training target checked once at the ``fit`` boundary: numbers cast to ``dtype``,
    finite, and an (N,) target made (N, 1) for a model with one output."""
    if y.dtype != dtype:
        y = xp.astype(y, dtype)
    check_finite(xp, y, "y")
    if y.ndim == 1 and n_out == 1:
        y = xp.reshape(y, (y.shape[0], 1))
    return y


def check_distribution(xp: Namespace, target: Array, owner: str, label: str = "target",
                       tolerance: float = PROBABILITY_TOLERANCE,
                       fix: str = DISTRIBUTION_FIX) -> None:
    """Rows must be non-negative and sum to 1 within ``tolerance`` (NaN fails)."""
    if not _CHECK_VALUES.get():
        return
    err, lo = xp.max(xp.abs(xp.sum(target, axis=1) - 1.0)), xp.min(target)
    if not bool((err <= tolerance) & (lo >= 0.0)):
        found = "NaN" if math.isnan(float(err)) else (
            f"a row sum off by {float(err):.3g} and a smallest value of {float(lo):.3g}")
        raise InvalidValueError(
            f"Loss {owner!r}: {label} rows must be probability distributions (non-negative, "
            f"summing to 1 within {tolerance:.3g}); received {found}. {fix}", target)


def check_distributions(xp: Namespace, owner: str,
                        checks: tuple[tuple[Array, str, float, str], ...]) -> None:
    """:func:`check_distribution` of each ``(x, label, tolerance, fix)`` in order, for arrays
    of one shape: the smallest value of them all and the worst row sum (less its tolerance)
    through one reduction each, one host round trip while they all pass; the first that
    fails raises its own message."""
    if not _CHECK_VALUES.get():
        return
    low = worst = None
    for x, _, tolerance, _ in checks:
        off = xp.abs(xp.sum(x, axis=1) - 1.0) - tolerance  # <= 0 exactly when within it
        low = x if low is None else xp.minimum(low, x)
        worst = off if worst is None else xp.maximum(worst, off)
    if low is not None and not bool((xp.max(worst) <= 0.0) & (xp.min(low) >= 0.0)):
        for x, label, tolerance, fix in checks:
            check_distribution(xp, x, owner, label, tolerance, fix)


def probability_tolerance(xp: Namespace, dtype: DType) -> float:
    """How far rows of computed probabilities (a softmax output) may sum from 1: the square
    root of the dtype's machine epsilon, at least 1e-5 (3.5e-4 in float32, 1e-5 in
    float64, which leaves room for finite differences)."""
    return max(1e-5, math.sqrt(machine_eps(xp, dtype)))


def check_probability_rows(xp: Namespace, pred: Array, owner: str, fix: str) -> None:
    """(N, M) ``pred`` must hold probability rows (within :func:`probability_tolerance`)."""
    check_distribution(xp, pred, owner, "pred", probability_tolerance(xp, pred.dtype), fix)


def smoothing_param(value: object) -> float:
    """``label_smoothing`` is a number in [0, 1)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0:
        return float(value)
    raise InvalidParameterError(
        f"Loss 'cross_entropy': label_smoothing must be a number in [0, 1), received "
        f"{value!r}.",
        value,
    )


CE_FIX = ("These look like logits, not probabilities: pass from_logits=True, or end the model "
          "with output_activation='softmax'.")
MULTI_HOT_FIX = ("Several classes per sample (multi-hot rows) need loss='binary_cross_entropy' "
                 "with a sigmoid output, one independent probability per class; one-hot or "
                 "soft rows must sum to 1.")


def logits_flag(owner: str, value: object) -> bool | None:
    """``from_logits``: True, False, or None (the default: the model decides in ``fit``)."""
    return None if value is None else bool_param(owner, "from_logits", value)


def two_classes(m: int, who: str) -> None:
    """Cross-entropy over one class is always 0: refuse it, naming the loss that fits."""
    if m == 1:
        raise ShapeError(
            f"Loss 'cross_entropy' needs 2 or more classes, one output each; {who} 1 output. "
            f"For two classes with one output use loss='binary_cross_entropy' (with "
            f"output_activation='sigmoid', or on logits), or give the model 2 outputs.", m)
