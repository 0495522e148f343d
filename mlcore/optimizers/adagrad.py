"""Adagrad (Duchi et al., 2011) as in ``torch.optim.Adagrad``, as one update rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..parameter import Parameter
from ..types import Array, Namespace
from .base import Optimizer, State, _check_range, _decayed

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011) as in ``torch.optim.Adagrad``.

    At step t: lr_t = lr / (1 + (t-1)·lr_decay); s ← s + g²; p ← p - lr_t·g / (√s + ε);
    ``s`` starts at ``initial_accumulator_value``; ``g = grad + weight_decay·p``.
    """

    slots = ("sums",)
    counted = True
    hyperparameters = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.lr_decay = _check_range("lr_decay", lr_decay, 0.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self.initial_accumulator_value = _check_range(
            "initial_accumulator_value", initial_accumulator_value, 0.0)
        self.eps = _check_range("eps", eps, 0.0, open_low=True)

    def init_slot(self, xp: Namespace, name: str, p: Array) -> Array:
        return xp.full_like(p, self.initial_accumulator_value)

    def rule(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array], state: State,
             lr: Array | float) -> tuple[tuple[Array, ...], State]:
        t = state["step"] + 1
        lr_t = lr / (1.0 + (t - 1) * self.lr_decay)
        new_p, new_s = [], []
        for p, g, s in zip(params, grads, state["sums"], strict=True):
            g = _decayed(p, g, self.weight_decay)
            s = s + g * g
            new_s.append(s)
            new_p.append(p - lr_t * (g / (xp.sqrt(s) + self.eps)))
        return tuple(new_p), {"step": t, "sums": tuple(new_s)}
