"""Numerically stable building blocks shared by activations and losses.

Every function takes the namespace ``xp`` already resolved by its caller (one lookup per
public call) and keeps the input's dtype and device: Python scalars never upcast float32.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["sigmoid", "softmax", "log_softmax", "softplus_neg_abs", "exp_floor"]


def exp_floor(xp: Any, dtype: Any) -> float:
    """The most negative ``t`` whose ``exp(-t)`` still fits ``dtype`` (about -87.7 in float32)."""
    return 1.0 - math.log(xp.finfo(dtype).max)


def sigmoid(xp: Any, x: Any) -> Any:
    """``1 / (1 + exp(-x))``, eq. (1.8), without overflow.

    ``x`` is floored at :func:`exp_floor` so ``exp(-x)`` stays finite; below the floor the
    exact value is under the dtype's smallest normal number anyway. Cheaper than a ``where``
    over two branches and, unlike ``0.5 + 0.5 tanh(x/2)``, keeps full relative precision in
    the negative tail (sigmoid(-20) = 2.06e-9, not a rounding residue).
    """
    return 1.0 / (1.0 + xp.exp(-xp.maximum(x, exp_floor(xp, x.dtype))))


def softmax(xp: Any, x: Any, axis: int) -> Any:
    """``e^(z_i) / sum_k e^(z_k)``, eq. (1.12), shifted by the maximum so it never overflows."""
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(xp: Any, x: Any, axis: int) -> Any:
    """``z_i - log sum_k e^(z_k)`` by the log-sum-exp trick (finite for any finite input)."""
    z = x - xp.max(x, axis=axis, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def softplus_neg_abs(xp: Any, x: Any) -> Any:
    """``log(1 + exp(-|x|))``, in (0, log 2]; never overflows."""
    return xp.log1p(xp.exp(-xp.abs(x)))
