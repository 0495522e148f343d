"""Built-in activations (eq. 1.7-1.12), each forward next to its gradient.

Registered through the ``mlcore_activations`` hook, exactly as a third-party plugin would
register its own, so they survive ``MLCORE_DISABLE_PLUGIN_AUTOLOAD``; written on
:class:`mlcore.plugin.ActivationBase`, as a plugin's are (each class gives the bare
``forward_unchecked`` / ``backward_unchecked`` formulas, the base checks around them).
Every ``forward`` resolves the namespace of its input once and returns an array of the
same namespace, device, shape and floating dtype; ``backward(x, y, dy)`` returns ``dy · f'(x)`` (the
vector-Jacobian product), reusing ``y = forward(x)`` where that is cheaper.

Each formula here is the one definition. Where the backend offers a fused kernel of the
same formula (:data:`mlcore.hookspecs.KERNELS`: NumPy's compiled one-pass-per-row softmax,
log_softmax, sigmoid and their gradients, tanh's gradient, ReLU and leaky ReLU both ways),
the unchecked method runs it first as a fast path, and the formula whenever it answers None;
the tests compare the two.
"""

from __future__ import annotations

from collections.abc import Callable

from .arrays import numerics as nm
from .arrays.loss_checks import number_param
from .arrays.namespace import check_floating, namespace
from .bases import ActivationBase
from .errors import InvalidParameterError, ShapeError
from .hookspecs import ActivationFn, hookimpl
from .plugins import kernel_for, make, registry
from .types import Array, Namespace

__all__ = [
    "activation",
    "activation_names",
    "Identity",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "LogSoftmax",
    "Step",
]


def activation(name: str, **params: object) -> ActivationFn:
    """Build the registered activation ``name`` with ``params``.

    Raises :class:`~mlcore.errors.UnknownNameError` listing the registered names, or
    :class:`~mlcore.errors.InvalidParameterError` for a parameter it does not accept.
    """
    return make("activations", name, params)  # type: ignore[no-any-return]


def activation_names() -> list[str]:
    """Names of every registered activation, built-in and from plugins."""
    return registry().names("activations")


class Identity(ActivationBase):
    """``f(z) = z``; ``f'(z) = 1``. A linear output layer (regression)."""

    name = "identity"

    def forward(self, x: Array) -> Array:
        check_floating(namespace(x, names=("x",)), x, "x")
        return x

    def backward(self, x: Array, y: Array, dy: Array) -> Array:
        return dy

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        return x

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        return dy


class Sigmoid(ActivationBase):
    """``f(z) = 1 / (1 + e^(-z))``, eq. (1.8), range (0, 1); ``f'(z) = y (1 - y)``.

    Stable for any finite input (see :func:`mlcore.plugin.sigmoid`).
    """

    name = "sigmoid"

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        fast = _fused(xp, "sigmoid", x)
        return nm.sigmoid(xp, x) if fast is None else fast

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        fast = _fused(xp, "sigmoid_backward", y, dy)
        return dy * (y * (1.0 - y)) if fast is None else fast


class Tanh(ActivationBase):
    """``f(z) = (e^z - e^(-z)) / (e^z + e^(-z))``, eq. (1.9), range (-1, 1);
    ``f'(z) = 1 - y^2``."""

    name = "tanh"

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        return xp.tanh(x)

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        fast = _fused(xp, "tanh_backward", y, dy)
        return dy * (1.0 - y * y) if fast is None else fast


class ReLU(ActivationBase):
    """``f(z) = z if z > 0 else 0``, eq. (1.10); ``f'(z) = 1 if z > 0 else 0``.

    Forward is ``maximum(x, 0)`` and backward ``dy * (x > 0)``: in NumPy both are 5-12x
    faster than ``where``. The gradient at exactly 0 is taken as 0 (as PyTorch does).
    """

    name = "relu"

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        fast = _fused(xp, "relu", x)
        return xp.maximum(x, 0.0) if fast is None else fast

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        fast = _fused(xp, "relu_backward", x, dy)
        return dy * xp.astype(x > 0.0, dy.dtype) if fast is None else fast


class LeakyReLU(ActivationBase):
    """``f(z) = z if z > 0 else alpha z``, eq. (1.11); ``f'(z) = 1 if z > 0 else alpha``.

    ``alpha`` (default 0.01) is the fixed slope for negative inputs, any finite real number;
    PReLU, where alpha is trained, is a layer. For ``alpha <= 1`` forward is
    ``maximum(z, alpha z)`` (``minimum`` above 1), without ``where``.
    """

    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = number_param("Activation 'leaky_relu'", "alpha", alpha)

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        fast = _fused(xp, "leaky_relu", x, self.alpha)
        if fast is not None:
            return fast
        pick = xp.maximum if self.alpha <= 1.0 else xp.minimum
        return pick(x, self.alpha * x)

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        fast = _fused(xp, "leaky_relu_backward", x, dy, self.alpha)
        if fast is not None:
            return fast
        positive = xp.astype(x > 0.0, dy.dtype)
        return dy * (positive * (1.0 - self.alpha) + self.alpha)


class Softmax(ActivationBase):
    """``f(z)_i = e^(z_i) / sum_k e^(z_k)`` over ``axis`` (default -1), eq. (1.12).

    Shifted by the row maximum, so finite for any finite input. Gradient (the
    vector-Jacobian product of the full Jacobian ``diag(y) - y y^T``):
    ``dx = y * (dy - sum(dy * y, axis))``.
    """

    name = "softmax"

    def __init__(self, axis: int = -1) -> None:
        self.axis = _axis_param("softmax", axis)

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        _check_axis("softmax", self.axis, x)
        fast = _fused(xp, "softmax", x, self.axis)
        return nm.softmax(xp, x, self.axis) if fast is None else fast

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        fast = _fused(xp, "softmax_backward", y, dy, self.axis)
        if fast is not None:
            return fast
        return y * (dy - xp.sum(dy * y, axis=self.axis, keepdims=True))


class LogSoftmax(ActivationBase):
    """``f(z)_i = z_i - log sum_k e^(z_k)`` over ``axis`` (default -1), the log of eq. (1.12).

    Computed by log-sum-exp, so finite for any finite input. Gradient:
    ``dx = dy - exp(y) * sum(dy, axis)`` (``exp(y)`` is the softmax).
    """

    name = "log_softmax"

    def __init__(self, axis: int = -1) -> None:
        self.axis = _axis_param("log_softmax", axis)

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        _check_axis("log_softmax", self.axis, x)
        fast = _fused(xp, "log_softmax", x, self.axis)
        return nm.log_softmax(xp, x, self.axis) if fast is None else fast

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        fast = _fused(xp, "log_softmax_backward", y, dy, self.axis)
        if fast is not None:
            return fast
        return dy - xp.exp(y) * xp.sum(dy, axis=self.axis, keepdims=True)


class Step(ActivationBase):
    """The perceptron's threshold, eq. (1.7): ``f(z) = 1 if z > 0 else 0``.

    Its derivative is zero wherever it exists (and undefined at 0), so ``backward`` returns
    zeros: a network of steps cannot learn by gradient descent. Use it for the logic-gate
    perceptrons of the chapter with hand-set weights, or swap in ``sigmoid`` to train.
    """

    name = "step"

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        fast = _fused(xp, "step", x)
        return xp.astype(x > 0.0, x.dtype) if fast is None else fast

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        return xp.zeros_like(dy)


def _fused(xp: Namespace, name: str, *args: object) -> Array | None:
    """The fused kernel's answer (None: no kernel, or not for these inputs)."""
    fast = kernel_for(xp, name)
    return None if fast is None else fast(*args)


def _axis_param(owner: str, value: object) -> int:
    """``value`` as an int axis, or an :class:`InvalidParameterError`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParameterError(
            f"Activation {owner!r}: axis must be an integer (e.g. -1), received {value!r}.",
            value,
        )
    return value


def _check_axis(owner: str, axis: int, x: Array) -> None:
    """The axis against the input's dimensions (known only when called)."""
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(
            f"Activation {owner!r}: axis={axis} is out of range for an input of "
            f"{x.ndim} dimensions, shape {tuple(x.shape)}; pass an axis in "
            f"[{-x.ndim}, {x.ndim - 1}] (axis=-1: over the features).", x)


_BUILTIN: dict[str, type[ActivationBase]] = {
    cls.name: cls for cls in (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, Softmax, LogSoftmax, Step)
}


@hookimpl
def mlcore_activations() -> dict[str, Callable[..., ActivationFn]]:
    """mlcore's own activations, registered like any plugin's."""
    return dict(_BUILTIN)
