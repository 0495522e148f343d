"""The bases of activations and losses, and the stable helpers they use.

Plugin authors import them from :mod:`mlcore.plugin` (which adds the optimiser and layer
bases); mlcore's own activations and losses are written on them, so a plugin built on them
takes exactly the path a built-in takes, inside a model as well as called directly:

* :class:`ActivationBase`: write ``forward_unchecked(xp, x)`` and
  ``backward_unchecked(xp, x, y, dy)``, the bare formulas in the namespace ``xp``. The base
  gives the checked public ``forward(x)`` / ``backward(x, y, dy)`` (namespace, floating
  dtype, device scope) around them; an :class:`mlcore.Activation` layer inside a model calls
  the unchecked pair directly (protocol :class:`mlcore.hookspecs.ActivationKernels`).
* :class:`LossBase`: write ``values(xp, pred, target)`` (one value per sample, shape (N,))
  and ``gradient(xp, pred, target)`` (of their sum), and ``check`` when pred and target are
  not floating arrays of one shape, and ``check_values`` for the checks that read values
  (a label range): the base runs them only where values exist, never inside a compiled
  step (``fit`` runs them once, eagerly, on the first batch). The base gives ``reduction``
  (``"mean"``, ``"sum"``, ``"none"``), the checked ``forward`` / ``backward`` /
  ``value_and_grad`` and their unchecked twins (protocol :class:`mlcore.hookspecs.LossKernels`).
* :class:`ElementwiseLoss`: a loss that is the mean over each sample's values of one term
  per element: write ``terms`` and ``terms_gradient`` only.

The helpers keep the input's dtype and device and are finite for every finite input; they
take the namespace first (``xp = array_api_compat.array_namespace(x)``, or the ``xp`` handed
to an unchecked method).
"""

from __future__ import annotations

from .arrays.loss_checks import (
    NAMES,
    PROBABILITY_TOLERANCE,
    bool_param,
    check_class_indices,
    check_labels,
    check_pred,
    check_unit_interval,
    number_param,
    same_shape_float,
    training_target,
    values_checked,
)
from .arrays.namespace import check_floating, namespace
from .arrays.numerics import (
    log1mexp,
    log_softmax,
    logsumexp,
    on_input_device,
    one_hot,
    sigmoid,
    softmax,
    softplus,
)
from .errors import InvalidParameterError
from .hookspecs import hookimpl
from .types import Array, DType, Namespace

__all__ = [
    "ActivationBase",
    "LossBase",
    "ElementwiseLoss",
    "REDUCTIONS",
    "PROBABILITY_TOLERANCE",
    "hookimpl",
    "sigmoid",
    "softplus",
    "softmax",
    "log_softmax",
    "logsumexp",
    "log1mexp",
    "per_sample_mean",
    "feature_count",
    "number_param",
    "bool_param",
    "check_pred",
    "same_shape_float",
    "check_unit_interval",
    "check_labels",
    "check_class_indices",
    "one_hot",
    "values_checked",
]

REDUCTIONS = ("mean", "sum", "none")
"""The reductions every loss accepts: the mean over the N samples, their sum, or none."""

_on_x = on_input_device(("x",))
_on_pred = on_input_device(NAMES)


def per_sample_mean(xp: Namespace, x: Array) -> Array:
    """The mean over every axis but the first (identity for 1-d input)."""
    return x if x.ndim == 1 else xp.mean(x, axis=tuple(range(1, x.ndim)))


def feature_count(x: Array) -> int:
    """How many values each sample has (the product of the shape after axis 0)."""
    n = 1
    for d in x.shape[1:]:
        n *= int(d)
    return n


def _repr(kind: str, obj: ActivationBase | LossBase) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in vars(obj).items())
    return f"{kind}({obj.name!r}{', ' if params else ''}{params})"


class ActivationBase:
    """The checked public ``forward``/``backward`` around two unchecked kernels.

    Subclasses set ``name`` and define ``forward_unchecked(xp, x) -> y`` and
    ``backward_unchecked(xp, x, y, dy) -> dx`` (``dy · f'(x)``, reusing ``y`` where that is
    cheaper). The public methods resolve the namespace, check ``x`` is floating and run on
    its device, then call them; an :class:`mlcore.Activation` layer inside a model calls
    the kernels directly with the namespace its container resolved once per step.
    """

    name = ""

    @_on_x
    def forward(self, x: Array) -> Array:
        """y = f(x), in the namespace, device and floating dtype of ``x``."""
        xp = namespace(x, names=("x",))
        check_floating(xp, x, "x")
        return self.forward_unchecked(xp, x)

    @_on_x
    def backward(self, x: Array, y: Array, dy: Array) -> Array:
        """dx = dy · f'(x); ``y`` is ``forward(x)``."""
        return self.backward_unchecked(namespace(x, dy, names=("x", "dy")), x, y, dy)

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        raise NotImplementedError

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        return _repr("activation", self)


class LossBase:
    """Validation, reduction and the public methods of a loss.

    Subclasses set ``name`` and define ``values(xp, pred, target)`` (per-sample values,
    shape (N,)) and ``gradient(xp, pred, target)`` (the gradient of their sum), optionally
    ``values_and_gradient`` sharing the work, and ``check(xp, pred, target)`` (validate,
    return the target ready to use) when the default, floating arrays of one shape, does
    not fit, and ``check_values(xp, pred, target)`` for checks that read values back to the
    host (a label range, probabilities in [0, 1]): the base runs it after ``check`` only
    where values exist (:func:`values_checked`), so never inside a compiled training step;
    ``fit`` runs it once, eagerly, on the first batch before the compiled step. Pass
    ``reduction`` on to ``super().__init__``.
    """

    name = ""

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise InvalidParameterError(
                f"Loss {self.name!r}: reduction must be one of {', '.join(REDUCTIONS)}; "
                f"received {reduction!r}.", reduction)
        self.reduction = reduction

    def __repr__(self) -> str:
        return _repr("loss", self)

    # -- checked: what users call ---------------------------------------------------------
    @_on_pred
    def forward(self, pred: Array, target: Array) -> Array:
        """The loss value: a 0-d array, or per-sample values when ``reduction="none"``."""
        xp = namespace(pred, target, names=NAMES)
        return self.forward_unchecked(xp, pred, self._checked(xp, pred, target))

    @_on_pred
    def backward(self, pred: Array, target: Array) -> Array:
        """d forward(pred, target) / d pred, same shape and dtype as ``pred``."""
        xp = namespace(pred, target, names=NAMES)
        return self.backward_unchecked(xp, pred, self._checked(xp, pred, target))

    @_on_pred
    def value_and_grad(self, pred: Array, target: Array) -> tuple[Array, Array]:
        """``(forward(pred, target), backward(pred, target))``, validating once."""
        xp = namespace(pred, target, names=NAMES)
        return self.value_and_grad_unchecked(xp, pred, self._checked(xp, pred, target))

    # -- unchecked: the same numbers for inputs already validated ----------------------------
    def forward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return self._reduce(xp, self.values(xp, pred, target))

    def backward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return self._scale(pred, self.gradient(xp, pred, target))

    def value_and_grad_unchecked(self, xp: Namespace, pred: Array,
                                 target: Array) -> tuple[Array, Array]:
        values, grad = self.values_and_gradient(xp, pred, target)
        return self._reduce(xp, values), self._scale(pred, grad)

    def prepare_target(self, xp: Namespace, target: Array, n_out: int | None,
                       dtype: DType) -> Array:
        """A whole training target, checked once where ``fit`` receives it: numbers cast to
        the model's ``dtype``, finite, and (N,) made (N, 1) for a model with one output."""
        return training_target(xp, target, n_out, dtype)

    def _reduce(self, xp: Namespace, values: Array) -> Array:
        if self.reduction == "none":
            return values
        # sum * (1/N): NumPy's mean costs twice a sum on small arrays
        return self._reduce_total(xp.sum(values), values)

    def _reduce_total(self, total: Array, pred: Array) -> Array:
        """The sum of every per-sample value made the mean (or kept) by the reduction."""
        return total * (1.0 / pred.shape[0]) if self.reduction == "mean" else total

    def _scale(self, pred: Array, grad: Array) -> Array:
        return grad * (1.0 / pred.shape[0]) if self.reduction == "mean" else grad

    def _checked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        target = self.check(xp, pred, target)
        if values_checked():
            self.check_values(xp, pred, target)
        return target

    # -- what a subclass writes ----------------------------------------------------------
    def check_values(self, xp: Namespace, pred: Array, target: Array) -> None:
        """Checks that read values (``float()``, ``bool()`` of an array); raise
        :class:`mlcore.InvalidValueError`. Skipped inside a compiled step (see the class)."""

    def check(self, xp: Namespace, pred: Array, target: Array) -> Array:
        """Validate; return ``target`` ready to use. Default: floating, of pred's shape,
        N >= 1 samples; the target cast to pred's dtype."""
        return same_shape_float(xp, pred, target, self.name)

    def values(self, xp: Namespace, pred: Array, target: Array) -> Array:
        raise NotImplementedError

    def gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        raise NotImplementedError

    def values_and_gradient(self, xp: Namespace, pred: Array, target: Array) -> tuple[Array, Array]:
        return self.values(xp, pred, target), self.gradient(xp, pred, target)


class ElementwiseLoss(LossBase):
    """A loss made of one term per element, averaged over each sample's F values.

    Subclasses define ``terms(xp, pred, target)`` and ``terms_gradient(xp, pred, target)``
    (the derivative of each term by its own pred element), optionally
    ``terms_and_gradient``. The per-sample value is the mean of the terms, the gradient
    ``terms_gradient / F``; with ``reduction="mean"`` the value is one sum over every term.
    """

    def values(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return per_sample_mean(xp, self.terms(xp, pred, target))

    def gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        return self._terms_gradient_times(xp, pred, target, 1.0 / feature_count(pred))

    def backward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        """The gradient with 1/F and the mean's 1/N as one factor: one pass over it."""
        count = _size(pred) if self.reduction == "mean" else feature_count(pred)
        return self._terms_gradient_times(xp, pred, target, 1.0 / count)

    def _terms_gradient_times(self, xp: Namespace, pred: Array, target: Array,
                              scale: float) -> Array:
        """``terms_gradient * scale`` (no pass when ``scale`` is 1)."""
        grad = self.terms_gradient(xp, pred, target)
        return grad if scale == 1.0 else grad * scale

    def values_and_gradient(self, xp: Namespace, pred: Array, target: Array) -> tuple[Array, Array]:
        terms, grad = self.terms_and_gradient(xp, pred, target)
        return per_sample_mean(xp, terms), grad * (1.0 / feature_count(pred))

    def forward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        if self.reduction != "mean":
            return super().forward_unchecked(xp, pred, target)
        return xp.sum(self.terms(xp, pred, target)) * (1.0 / _size(pred))

    def value_and_grad_unchecked(self, xp: Namespace, pred: Array,
                                 target: Array) -> tuple[Array, Array]:
        if self.reduction != "mean":
            return super().value_and_grad_unchecked(xp, pred, target)
        terms, grad = self.terms_and_gradient(xp, pred, target)
        scale = 1.0 / _size(pred)
        return xp.sum(terms) * scale, grad * scale

    def terms(self, xp: Namespace, pred: Array, target: Array) -> Array:
        raise NotImplementedError

    def terms_gradient(self, xp: Namespace, pred: Array, target: Array) -> Array:
        raise NotImplementedError

    def terms_and_gradient(self, xp: Namespace, pred: Array, target: Array) -> tuple[Array, Array]:
        return self.terms(xp, pred, target), self.terms_gradient(xp, pred, target)


def _size(x: Array) -> int:
    return int(x.shape[0]) * feature_count(x)
