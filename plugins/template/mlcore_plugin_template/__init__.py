"""The smallest complete mlcore plugin: one activation, ``hard_tanh``.

mlcore imports this module through the ``mlcore`` entry point declared in pyproject.toml and
calls the hook below the first time it needs an activation. Keep imports cheap and do
nothing else at import time.
"""

from __future__ import annotations

from typing import Any

from mlcore import InvalidParameterError
from mlcore.plugin import ActivationBase, hookimpl

__all__ = ["HardTanh", "mlcore_activations"]


class HardTanh(ActivationBase):
    """``f(x) = clip(x, min_val, max_val)``; ``f'(x) = 1`` strictly inside, else 0.

    Parameters are keyword-only ``__init__`` arguments with defaults, so
    ``mlcore.activation("hard_tanh", min_val=-2.0)`` works and a misspelt name is rejected.
    :class:`~mlcore.plugin.ActivationBase` gives the checked ``forward(x)`` and
    ``backward(x, y, dy)`` around the two formulas below; ``xp`` is the namespace of the
    input (numpy, array-api-strict, cupy...), and a model calls the formulas directly.
    """

    name = "hard_tanh"

    def __init__(self, *, min_val: float = -1.0, max_val: float = 1.0) -> None:
        if not min_val < max_val:
            raise InvalidParameterError(
                f"hard_tanh needs min_val < max_val, received min_val={min_val!r} and "
                f"max_val={max_val!r}.", (min_val, max_val))
        self.min_val, self.max_val = float(min_val), float(max_val)

    def forward_unchecked(self, xp: Any, x: Any) -> Any:
        return xp.clip(x, self.min_val, self.max_val)  # Python scalars keep x's dtype

    def backward_unchecked(self, xp: Any, x: Any, y: Any, dy: Any) -> Any:
        inside = (x > self.min_val) & (x < self.max_val)
        return dy * xp.astype(inside, dy.dtype)


@hookimpl
def mlcore_activations() -> dict[str, Any]:
    """{name: factory}; mlcore calls ``factory(**params)`` to build the activation."""
    return {"hard_tanh": HardTanh}
