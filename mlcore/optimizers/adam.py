"""Adam and AdamW as one update rule (the bias corrections folded into two scalars)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..parameter import Parameter
from ..plugins import kernel
from ..types import Array, Namespace
from .base import (
    Optimizer,
    State,
    _check_betas,
    _check_range,
    _decayed,
    _one_minus_power,
)

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as in ``torch.optim.Adam``.

    m ← β1 m + (1-β1) g; v ← β2 v + (1-β2) g²;
    p ← p - lr/(1-β1ᵗ) · m / (√v / √(1-β2ᵗ) + ε), with ``g = grad + weight_decay·p`` (L2).

    The moments are kept scaled, ``m = m/(1-β1)`` and ``v = v/(1-β2)`` (so ``m ← β1 m + g``),
    and the bias corrections fold into two scalars (:meth:`scalars`); equal to PyTorch's
    formula in exact arithmetic.
    """

    decoupled = False
    slots = ("m", "v")
    counted = True
    hyperparameters = ("betas", "eps", "weight_decay")

    def __init__(self, params: Iterable[Parameter], lr: float = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.betas = _check_betas(betas)
        self.eps = _check_range("eps", eps, 0.0, open_low=True)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self._scalar_cache: tuple[Any, ...] = (None, None, None, None)
        self._fused = kernel("adam_update", self.xp)  # the backend's in-place update, if any

    def scalars(self, num: Namespace, t: Array | int, lr: Array | float) -> tuple[Any, Any]:
        """``(eps_t, scale)`` at step ``t`` (1 for the first update): the update is
        ``p - m / ((√v + eps_t)·scale)`` on the scaled moments. ``num`` is ``math`` for
        Python numbers, the array namespace for 0-d arrays; ``lr = 0`` gives an infinite
        scale (no change to ``p``)."""
        b1, b2 = self.betas
        if num is math:  # Python numbers: cached for the step's count and rate
            cached = self._scalar_cache
            if cached[0] == t and cached[1] == lr and cached[2] == (b1, b2, self.eps):
                return cached[3]  # type: ignore[no-any-return]
        s = (1.0 - b2) / _one_minus_power(num, b2, t)
        s = math.sqrt(s) if isinstance(s, float) else num.sqrt(s)  # √(v/(1-β2ᵗ)) = s·√v
        top = _one_minus_power(num, b1, t) * s
        if num is math:
            found = (self.eps / s, (top / (lr * (1.0 - b1)) if lr else math.inf))
            self._scalar_cache = (t, lr, (b1, b2, self.eps), found)
            return found
        positive = lr > 0.0
        safe = num.where(positive, lr, num.ones_like(lr))
        return self.eps / s, num.where(positive, top / (safe * (1.0 - b1)),
                                       num.full_like(lr, math.inf))

    def decay(self, p: Array, g: Array, lr: Array | float) -> tuple[Any, Any]:
        """Weight decay: decoupled (AdamW: ``p (1 - lr·wd)``) or L2 (Adam: on ``g``)."""
        if self.decoupled and self.weight_decay:
            return p * (1.0 - lr * self.weight_decay), g
        return p, _decayed(p, g, self.weight_decay)

    def rule(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array], state: State,
             lr: Array | float) -> tuple[tuple[Array, ...], State]:
        b1, b2 = self.betas
        t = state["step"] + 1
        eps, scale = self.scalars(math if isinstance(t, int) else xp, t, lr)
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, state["m"], state["v"], strict=True):
            p, g = self.decay(p, g, lr)
            m, v = b1 * m + g, b2 * v + g * g
            new_p.append(p - m / ((xp.sqrt(v) + eps) * scale))
            new_m.append(m)
            new_v.append(v)
        return tuple(new_p), {"step": t, "m": tuple(new_m), "v": tuple(new_v)}

    def fast_update(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array],
                    state: State, lr: float) -> State | None:
        fused = self._fused
        if fused is None:
            return None
        t = state["step"] + 1
        eps, scale = self.scalars(math, t, lr)
        b1, b2 = self.betas
        decay = self.weight_decay
        for p, g, m, v in zip(params, grads, state["m"], state["v"], strict=True):
            if decay:
                q, g = self.decay(p, g, lr)
                if q is not p:
                    p[...] = q
            fused(p, g, m, v, b1, b2, eps, scale)
        return {"step": t}  # m and v updated where they are


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019) as in ``torch.optim.AdamW``: decoupled decay
    ``p ← p (1 - lr·weight_decay)`` before the Adam step; ``weight_decay`` defaults to 0.01."""

    decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, clip_norm=clip_norm,
                         clip_value=clip_value)
