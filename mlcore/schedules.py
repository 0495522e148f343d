"""Learning-rate schedules: ``schedule(epoch) -> lr`` for ``LearningRateScheduler``.

Epochs count from 0. Each schedule is a small callable object with a readable ``repr``:

* :func:`step`: ``lr · gamma^(epoch // every)`` (``torch.optim.lr_scheduler.StepLR``);
* :func:`exponential`: ``lr · gamma^epoch`` (``ExponentialLR``);
* :func:`cosine`: a linear warm-up from ``lr / warmup`` to ``lr`` over ``warmup`` epochs, then
  ``min_lr + (lr - min_lr)(1 + cos(π e / E)) / 2`` with ``e`` the epochs since the warm-up and
  ``E = epochs - warmup`` (``CosineAnnealingLR``'s closed form); ``min_lr`` after ``epochs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arrays.checks import integer, real
from .errors import InvalidParameterError

__all__ = ["Schedule", "step", "exponential", "cosine"]


def _positive(name: str, value: float, *, whole: bool = False, zero: bool = False) -> float:
    """``value`` (a Python or NumPy number) checked: finite, > 0 (>= 0 with ``zero``)."""
    if whole:
        return integer(name, value, 0 if zero else 1)
    return real(name, value, 0.0, open_low=not zero)


class Schedule:
    """Base of the schedules: ``schedule(epoch) -> lr``."""

    def __call__(self, epoch: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class _Step(Schedule):
    lr: float
    gamma: float
    every: int

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.every)


@dataclass(frozen=True)
class _Exponential(Schedule):
    lr: float
    gamma: float

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma**epoch


@dataclass(frozen=True)
class _Cosine(Schedule):
    lr: float
    epochs: int
    warmup: int
    min_lr: float

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.lr * (epoch + 1) / self.warmup
        span = self.epochs - self.warmup
        e = min(epoch - self.warmup, span)
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * e / span)) / 2


def step(lr: float, gamma: float = 0.1, every: int = 10) -> Schedule:
    """``lr`` multiplied by ``gamma`` every ``every`` epochs."""
    return _Step(_positive("lr", lr), _positive("gamma", gamma),
                 int(_positive("every", every, whole=True)))


def exponential(lr: float, gamma: float = 0.95) -> Schedule:
    """``lr`` multiplied by ``gamma`` every epoch."""
    return _Exponential(_positive("lr", lr), _positive("gamma", gamma))


def cosine(lr: float, epochs: int, *, warmup: int = 0, min_lr: float = 0.0) -> Schedule:
    """Linear warm-up over ``warmup`` epochs, then cosine decay to ``min_lr`` at ``epochs``."""
    total = int(_positive("epochs", epochs, whole=True))
    warm = int(_positive("warmup", warmup, whole=True, zero=True))
    if warm >= total:
        raise InvalidParameterError(
            f"warmup ({warm}) must be smaller than epochs ({total}): the cosine part needs at "
            f"least one epoch.", warmup)
    return _Cosine(_positive("lr", lr), total, warm, _positive("min_lr", min_lr, zero=True))
