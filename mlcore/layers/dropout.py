"""Dropout (Srivastava et al., 2014): zero each input with probability ``rate`` in training.

Inverted dropout, as ``torch.nn.Dropout``: kept inputs are scaled by ``1 / (1 - rate)`` so
inference needs no rescaling and passes inputs through unchanged. The mask is drawn from the
backend's random source (``seed`` makes it repeatable) and reused by the backward pass:
``dX = dY · mask``. The training step draws the uniform noise before the step
(:meth:`Dropout.draw`) and hands it in (:attr:`Dropout.noise`), so an eager and a compiled
step with the same seed drop the same inputs (:mod:`mlcore.training.step`).
"""

from __future__ import annotations

from typing import Any, cast

from ..arrays.checks import seed as check_seed
from ..arrays.namespace import namespace
from ..backend import Backend, RandomSource, get_backend
from ..errors import InvalidParameterError
from ..types import Array, DType, Namespace
from .core import Backprop, Layer

__all__ = ["Dropout"]


def _unit_noise(rng: RandomSource, shape: tuple[int, ...], dtype: DType) -> Array:
    """Uniform noise in [0, 1) of ``dtype`` from ``rng``: its optional ``random`` (drawn at
    the dtype's precision: 24 random bits for float32, half a float64 draw's work) where it
    has one, else ``uniform(0, 1)``."""
    draw = getattr(rng, "random", None)
    return draw(shape, dtype) if callable(draw) else rng.uniform(0.0, 1.0, shape, dtype)


class Dropout(Layer):
    """Zero inputs with probability ``rate`` while training; identity in inference."""

    modal = True

    def __init__(self, rate: float = 0.5, seed: int | None = None, *,
                 dtype: DType | str | None = None) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise InvalidParameterError(
                f"Dropout rate must be a probability in [0, 1), received {rate!r}.", rate)
        self.rate, self.seed, self.dtype = float(rate), seed, dtype
        self.backend: Backend = get_backend()
        self.rng = self.backend.rng(check_seed(seed))
        self.noise: Array | None = None  # uniform noise for the next forward pass, set by the step

    @property
    def active(self) -> bool:
        """Whether the layer drops inputs now (training, with a rate above 0)."""
        return self.training and self.rate > 0.0

    def draw(self, shape: tuple[int, ...], dtype: DType) -> Array | None:
        """Uniform noise in [0, 1) for an input of ``shape`` (None when inactive)."""
        return _unit_noise(self.rng, shape, dtype) if self.active else None

    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        if not self.active:
            return X, (lambda dY: dY if input_grad else None)
        u = self.noise if self.noise is not None else cast(  # active: draw() gives noise
            "Array", self.draw(tuple(X.shape), X.dtype))
        if xp is None:
            xp = namespace(X, u, names=("X", "Dropout's random mask"))
        mask = xp.astype(u >= self.rate, X.dtype) * (1.0 / (1.0 - self.rate))

        def backprop(dY: Array) -> Array | None:
            return dY * mask if input_grad else None

        return X * mask, backprop

    def config(self) -> dict[str, Any]:
        return {"type": "Dropout", "rate": self.rate}

    def __repr__(self) -> str:
        return f"Dropout(rate={self.rate})"
