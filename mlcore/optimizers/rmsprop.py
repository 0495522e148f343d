"""RMSprop (Hinton, 2012) as in ``torch.optim.RMSprop``, as one update rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..parameter import Parameter
from ..types import Array, Namespace
from .base import Optimizer, State, _check_bool, _check_range, _decayed

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012) as in ``torch.optim.RMSprop``.

    v ← α v + (1-α) g²; with ``centered=True`` also ḡ ← α ḡ + (1-α) g and v̂ = v - ḡ², else
    v̂ = v; with momentum μ: b ← μ b + g / (√v̂ + ε), p ← p - lr·b; else
    p ← p - lr·g / (√v̂ + ε); ``g = grad + weight_decay·p``.
    """

    hyperparameters = ("alpha", "eps", "weight_decay", "momentum", "centered")
    _all_slots = ("square_avg", "grad_avg", "buffers")

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.alpha = _check_range("alpha", alpha, 0.0, 1.0)
        self.eps = _check_range("eps", eps, 0.0, open_low=True)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.centered = _check_bool("centered", centered)

    @property
    def slots(self) -> tuple[str, ...]:  # type: ignore[override]
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("buffers",) if self.momentum else ()))

    def rule(self, xp: Namespace, params: Sequence[Array], grads: Sequence[Array], state: State,
             lr: Array | float) -> tuple[tuple[Array, ...], State]:
        a, mu, eps = self.alpha, self.momentum, self.eps
        new_p: list[Array] = []
        new: dict[str, list[Array]] = {name: [] for name in self.slots}
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            g = _decayed(p, g, self.weight_decay)
            v = a * state["square_avg"][i] + (1.0 - a) * (g * g)
            new["square_avg"].append(v)
            if self.centered:
                avg = a * state["grad_avg"][i] + (1.0 - a) * g
                new["grad_avg"].append(avg)
                denom = xp.sqrt(v - avg * avg) + eps
            else:
                denom = xp.sqrt(v) + eps
            if mu:
                b = mu * state["buffers"][i] + g / denom
                new["buffers"].append(b)
                new_p.append(p - lr * b)
            else:
                new_p.append(p - lr * (g / denom))
        return tuple(new_p), {name: tuple(arrays) for name, arrays in new.items()}
