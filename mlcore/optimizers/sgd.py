"""SGD with PyTorch's momentum, Nesterov and weight decay, as one update rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import InvalidParameterError
from ..parameter import Parameter
from ..plugins import kernel
from ..types import Array, Namespace
from .base import (
    Optimizer,
    State,
    _check_bool,
    _check_range,
    _decayed,
)

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent: p ← p - lr·g, with PyTorch's momentum and Nesterov.

    ``g = grad + weight_decay·p``; with momentum μ: ``b ← μ b + g`` (``b`` starts at zeros,
    so the first step gives PyTorch's ``b = g`` exactly), then ``g = b``, or ``g = g + μ b``
    with ``nesterov=True``.
    """

    hyperparameters = ("momentum", "nesterov", "weight_decay")

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *,
                 clip_norm: float | None = None, clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self.nesterov = _check_bool("nesterov", nesterov)
        if nesterov and self.momentum == 0.0:
            raise InvalidParameterError("nesterov=True needs momentum > 0 (such as "
                                        "momentum=0.9).", nesterov)
        self._fused = kernel("sgd_update", self.xp)  # the backend's p -= lr·d, if any

    _all_slots = ("buffers",)

    @property
    def slots(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("buffers",) if self.momentum else ()

    def directions(self, params: Sequence[Array], grads: Sequence[Array],
                   state: State) -> tuple[list[Array], State]:
        """The step directions ``d`` (``p ← p - lr·d``) and the new momentum buffers."""
        mu, nesterov, wd = self.momentum, self.nesterov, self.weight_decay
        if not mu:
            if not wd:
                return list(grads), {}  # plain SGD: the direction is the gradient
            return [_decayed(p, g, wd) for p, g in zip(params, grads, strict=True)], {}
        out, bufs = [], []
        for p, g, b in zip(params, grads, state["buffers"], strict=True):
            g = _decayed(p, g, wd)
            b = mu * b + g
            bufs.append(b)
            out.append(g + mu * b if nesterov else b)
        return out, {"buffers": tuple(bufs)}

    def rule(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array], state: State,
             lr: Array | float) -> tuple[tuple[Array, ...], State]:
        d, new_state = self.directions(params, grads, state)
        return tuple(p - lr * u for p, u in zip(params, d, strict=True)), new_state

    def fast_update(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array],
                    state: State, lr: float) -> State | None:
        fused = self._fused
        if fused is None:
            return None
        d, new_state = self.directions(params, grads, state)
        for p, u in zip(params, d, strict=True):
            fused(p, u, lr)
        return new_state
