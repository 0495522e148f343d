"""Weight initialisers: Glorot (Xavier), He (Kaiming), uniform and normal, and zeros.

An initialiser is ``init(shape, dtype, rng, backend) -> array``. ``shape`` is the parameter's
shape; for a weight of eq. (1.5) it is ``(out, in)``, so ``fan_in = shape[1]`` and
``fan_out = shape[0]`` (a 1-D shape counts its length as both). Random numbers come from the
backend's seeded :class:`~mlcore.backend.RandomSource`, so the same seed gives the same
weights on every first-party backend.

Defaults: :class:`~mlcore.Dense` uses ``glorot_uniform`` (Keras' default, suited to tanh,
sigmoid and linear outputs); :class:`~mlcore.MLP` picks ``he_uniform`` for the ReLU family
(relu, leaky_relu, prelu) and ``glorot_uniform`` otherwise. Biases start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .backend import Backend, RandomSource
from .errors import UnknownNameError
from .types import Array, DType

__all__ = ["Initializer", "get_initializer", "initializer_names", "default_init", "RELU_FAMILY"]

Initializer = Callable[[tuple[int, ...], DType, RandomSource, Backend], Array]
"""``init(shape, dtype, rng, backend) -> array`` on ``backend.device``."""

RELU_FAMILY = frozenset({"relu", "leaky_relu", "prelu"})


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    fan_out, fan_in = shape[0], math.prod(shape[1:])
    return fan_in, fan_out


def glorot_uniform(shape: tuple[int, ...], dtype: DType, rng: RandomSource,
                   backend: Backend) -> Array:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    fan_in, fan_out = _fans(shape)
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, shape, dtype)


def glorot_normal(shape: tuple[int, ...], dtype: DType, rng: RandomSource,
                  backend: Backend) -> Array:
    """N(0, s²) with s = sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape, dtype)


def he_uniform(shape: tuple[int, ...], dtype: DType, rng: RandomSource, backend: Backend) -> Array:
    """U(-a, a) with a = sqrt(6 / fan_in) (He et al., 2015), for the ReLU family."""
    a = math.sqrt(6.0 / _fans(shape)[0])
    return rng.uniform(-a, a, shape, dtype)


def he_normal(shape: tuple[int, ...], dtype: DType, rng: RandomSource, backend: Backend) -> Array:
    """N(0, s²) with s = sqrt(2 / fan_in)."""
    return rng.normal(0.0, math.sqrt(2.0 / _fans(shape)[0]), shape, dtype)


def zeros(shape: tuple[int, ...], dtype: DType, rng: RandomSource, backend: Backend) -> Array:
    """All zeros (biases; the perceptron's starting point)."""
    return backend.xp.zeros(shape, dtype=dtype, device=backend.device)


_INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "kaiming_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "zeros": zeros,
}


def initializer_names() -> list[str]:
    """The names :func:`get_initializer` accepts."""
    return sorted(_INITIALIZERS)


def get_initializer(init: str | Initializer) -> Initializer:
    """The initialiser called ``init`` (or ``init`` itself when it is callable)."""
    if callable(init):
        return init
    found = _INITIALIZERS.get(str(init).strip().lower())  # as plugins.canonical_name
    if found is None:
        raise UnknownNameError(
            f"Unknown initialiser {init!r}. Known: {', '.join(initializer_names())}.", init)
    return found


def default_init(activation: str | None) -> str:
    """The default weight initialiser for a layer followed by ``activation``."""
    return "he_uniform" if activation in RELU_FAMILY else "glorot_uniform"
