"""Building blocks shared by activations and losses: stable formulas and the device scope.

Every function takes the namespace ``xp`` already resolved by its caller (one lookup per
public call) and keeps the input's dtype and device: Python scalars never upcast float32.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from ..types import Array, DType, Namespace
from .namespace import check_same_device, device_of, enters_device, namespace

__all__ = ["on_input_device", "sigmoid", "softmax", "log_softmax", "softplus_neg_abs",
           "softplus", "logsumexp", "log1mexp", "exp_floor", "one_hot"]

_LN2 = math.log(2.0)

F = TypeVar("F", bound=Callable[..., Any])


def on_input_device(names: Sequence[str]) -> Callable[[F], F]:
    """Decorate ``method(self, *arrays)`` to run on the one device of its first arrays.

    The leading ``len(names)`` arrays must share a device (else
    :class:`~mlcore.errors.BackendMismatchError` or
    :class:`~mlcore.errors.DeviceMismatchError` naming them). A device its backend asks to
    enter (:func:`mlcore.arrays.namespace.enters_device`: CuPy's, which allocates results on its
    *current* device) is entered; for every other device it is a check only. It reads the standard's
    ``.device`` attribute (0.05 us; ``array_api_compat.device`` costs 0.5 us) because it runs
    on every activation and loss call.
    """
    count, labels = len(names), tuple(names)

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            arrays = _positional(method, self, args, kwargs) if kwargs else args
            dev: Any = getattr(arrays[0], "device", None) if arrays else None
            for other in arrays[1:count]:
                if getattr(other, "device", None) != dev:
                    namespace(*arrays[:count], names=labels)  # two backends: say that first
                    check_same_device(*arrays[:count], names=labels)
            if enters_device(dev):
                with dev:
                    return method(self, *args, **kwargs)
            return method(self, *args, **kwargs)

        return cast(F, run)

    return decorate


def _positional(method: Any, obj: Any, args: Any, kwargs: Any) -> tuple[Any, ...]:
    """The arguments of a keyword call in signature order (the rare, slower path)."""
    bound = inspect.signature(method).bind(obj, *args, **kwargs)
    return tuple(bound.arguments.values())[1:]


@functools.lru_cache(maxsize=64)
def exp_floor(xp: Namespace, dtype: DType) -> float:
    """The most negative ``t`` whose ``exp(-t)`` still fits ``dtype`` (about -87.7 in float32).

    Cached per namespace and dtype: ``finfo`` costs three Python calls, on every sigmoid."""
    return 1.0 - math.log(xp.finfo(dtype).max)


def sigmoid(xp: Namespace, x: Array) -> Array:
    """``1 / (1 + exp(-x))``, eq. (1.8), without overflow.

    ``x`` is floored at :func:`exp_floor` so ``exp(-x)`` stays finite; below the floor the
    exact value is under the dtype's smallest normal number anyway. Cheaper than a ``where``
    over two branches and, unlike ``0.5 + 0.5 tanh(x/2)``, keeps full relative precision in
    the negative tail (sigmoid(-20) = 2.06e-9, not a rounding residue).
    """
    return 1.0 / (1.0 + xp.exp(-xp.maximum(x, exp_floor(xp, x.dtype))))


def softmax(xp: Namespace, x: Array, axis: int) -> Array:
    """``e^(z_i) / sum_k e^(z_k)``, eq. (1.12), shifted by the maximum so it never overflows."""
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(xp: Namespace, x: Array, axis: int) -> Array:
    """``z_i - log sum_k e^(z_k)`` by the log-sum-exp trick (finite for any finite input)."""
    z = x - xp.max(x, axis=axis, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def softplus_neg_abs(xp: Namespace, x: Array) -> Array:
    """``log(1 + exp(-|x|))``, in (0, log 2]; never overflows."""
    return xp.log1p(xp.exp(-xp.abs(x)))


def softplus(xp: Namespace, x: Array) -> Array:
    """``log(1 + e^x)`` as ``max(x, 0) + log(1 + e^(-|x|))``: finite, no cancellation."""
    return xp.maximum(x, 0.0) + softplus_neg_abs(xp, x)


def logsumexp(xp: Namespace, x: Array, axis: int, keepdims: bool = False) -> Array:
    """``log sum_k e^(x_k)`` over ``axis``, shifted by the maximum (finite for finite x)."""
    m = xp.max(x, axis=axis, keepdims=True)
    out = m + xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else xp.squeeze(out, axis=axis)


def log1mexp(xp: Namespace, x: Array) -> Array:
    """``log(1 - e^x)`` for ``x <= 0`` (Maechler, 2012): ``log(-expm1(x))`` above ``-log 2``,
    ``log1p(-e^x)`` below, each on inputs clipped to its side and blended by a 0/1 mask
    (no ``where``). ``-inf`` at 0; NaN above 0, where the log is undefined."""
    near = xp.astype(x > -_LN2, x.dtype)
    a = xp.log(-xp.expm1(xp.maximum(x, -_LN2)))
    b = xp.log1p(-xp.exp(xp.minimum(x, -_LN2)))
    return near * a + (1.0 - near) * b


def one_hot(xp: Namespace, labels: Array, m: int, dtype: DType) -> Array:
    """(N, M) one-hot rows of integer ``labels`` by a broadcast comparison (no scatter)."""
    classes = xp.arange(m, device=device_of(labels))
    return xp.astype(labels[:, None] == classes, dtype)
