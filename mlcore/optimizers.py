"""RMSprop and Adagrad, and the registration of every built-in optimiser.

Both follow ``torch.optim`` exactly (the tests compare several steps in float64). The
built-ins (``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad``) are registered through the
``mlcore_optimizers`` hook, as a plugin's optimiser would be; ``fit(optimizer="rmsprop")``
and :func:`mlcore.optim.get_optimizer` look them up by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .hookspecs import hookimpl
from .layers import Parameter
from .optim import SGD, Adam, AdamW, Optimizer, _check_range

__all__ = ["RMSprop", "Adagrad"]


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012) as in ``torch.optim.RMSprop``.

    v ← α v + (1-α) g²; with ``centered=True`` also ḡ ← α ḡ + (1-α) g and v̂ = v - ḡ², else
    v̂ = v; with momentum μ: b ← μ b + g / (√v̂ + ε), p ← p - lr·b; else
    p ← p - lr·g / (√v̂ + ε); ``g = grad + weight_decay·p``.
    """

    slots = ("square_avg", "grad_avg", "buffers")

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.alpha = _check_range("alpha", alpha, 0.0, 1.0)
        self.eps = _check_range("eps", eps, 0.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.centered = bool(centered)
        n = len(self.params)
        self.square_avg: list[Any] = [None] * n
        self.grad_avg: list[Any] = [None] * n
        self.buffers: list[Any] = [None] * n

    def _step(self) -> None:
        xp, a = self.xp, self.alpha
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.value
            if self.square_avg[i] is None:
                self.square_avg[i] = xp.zeros_like(p.value)
            v = self.square_avg[i]
            v *= a
            v += (1.0 - a) * (g * g)
            self.square_avg[i] = v  # in place on NumPy; a new array on immutable ones (JAX)
            if self.centered:
                if self.grad_avg[i] is None:
                    self.grad_avg[i] = xp.zeros_like(p.value)
                avg = self.grad_avg[i]
                avg *= a
                avg += (1.0 - a) * g
                self.grad_avg[i] = avg
                denom = xp.sqrt(v - avg * avg) + self.eps
            else:
                denom = xp.sqrt(v) + self.eps
            if self.momentum:
                if self.buffers[i] is None:
                    self.buffers[i] = xp.zeros_like(p.value)
                b = self.buffers[i]
                b *= self.momentum
                b += g / denom
                self.buffers[i] = b
                p.value -= self.lr * b
            else:
                p.value -= self.lr * (g / denom)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011) as in ``torch.optim.Adagrad``.

    At step t: lr_t = lr / (1 + (t-1)·lr_decay); s ← s + g²; p ← p - lr_t·g / (√s + ε);
    ``s`` starts at ``initial_accumulator_value``; ``g = grad + weight_decay·p``.
    """

    slots = ("sums",)
    counters = ("steps",)

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, clip_norm: float | None = None,
                 clip_value: float | None = None) -> None:
        super().__init__(params, lr, clip_norm=clip_norm, clip_value=clip_value)
        self.lr_decay = _check_range("lr_decay", lr_decay, 0.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self.initial_accumulator_value = _check_range(
            "initial_accumulator_value", initial_accumulator_value, 0.0)
        self.eps = _check_range("eps", eps, 0.0)
        n = len(self.params)
        self.sums: list[Any] = [None] * n
        self.steps = [0] * n

    def _step(self) -> None:
        xp = self.xp
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.value
            if self.sums[i] is None:
                self.sums[i] = xp.full_like(p.value, self.initial_accumulator_value)
            self.steps[i] += 1
            lr = self.lr / (1.0 + (self.steps[i] - 1) * self.lr_decay)
            s = self.sums[i]
            s += g * g
            self.sums[i] = s  # in place on NumPy; a new array on immutable ones (JAX)
            p.value -= lr * (g / (xp.sqrt(s) + self.eps))


BUILTIN_OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


@hookimpl
def mlcore_optimizers() -> dict[str, Callable[..., Optimizer]]:
    """mlcore's own optimisers, registered like any plugin's."""
    return dict(BUILTIN_OPTIMIZERS)
