"""RMSprop and Adagrad, and the registration of every built-in optimiser.

Both follow ``torch.optim`` exactly (the tests compare several steps in float64), written
as update rules (:class:`mlcore.optim.Optimizer`). The built-ins (``sgd``, ``adam``,
``adamw``, ``rmsprop``, ``adagrad``) are registered through the ``mlcore_optimizers`` hook,
as a plugin's optimiser would be; ``fit(optimizer="rmsprop")`` and
:func:`mlcore.optim.get_optimizer` look them up by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .hookspecs import hookimpl
from .optim import SGD, Adam, AdamW, Optimizer, State, _check_bool, _check_range, _decayed
from .parameter import Parameter

__all__ = ["RMSprop", "Adagrad"]


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

    def rule(self, xp: Any, params: Sequence[Any], grads: Sequence[Any], state: State,
             lr: Any) -> tuple[tuple[Any, ...], State]:
        a, mu, eps = self.alpha, self.momentum, self.eps
        new_p: list[Any] = []
        new: dict[str, list[Any]] = {name: [] for name in self.slots}
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

    def init_slot(self, xp: Any, name: str, p: Any) -> Any:
        return xp.full_like(p, self.initial_accumulator_value)

    def rule(self, xp: Any, params: Sequence[Any], grads: Sequence[Any], state: State,
             lr: Any) -> tuple[tuple[Any, ...], State]:
        t = state["step"] + 1
        lr_t = lr / (1.0 + (t - 1) * self.lr_decay)
        new_p, new_s = [], []
        for p, g, s in zip(params, grads, state["sums"], strict=True):
            g = _decayed(p, g, self.weight_decay)
            s = s + g * g
            new_s.append(s)
            new_p.append(p - lr_t * (g / (xp.sqrt(s) + self.eps)))
        return tuple(new_p), {"step": t, "sums": tuple(new_s)}


BUILTIN_OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


@hookimpl
def mlcore_optimizers() -> dict[str, Callable[..., Optimizer]]:
    """mlcore's own optimisers, registered like any plugin's."""
    return dict(BUILTIN_OPTIMIZERS)
