"""The smallest complete mlcore plugin: one activation, ``hard_tanh``.

mlcore imports this module through the ``mlcore`` entry point declared in pyproject.toml and
calls the hook below the first time it needs an activation. Keep imports cheap and do
nothing else at import time.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

from mlcore import InvalidParameterError, hookimpl

__all__ = ["HardTanh", "mlcore_activations"]


class HardTanh:
    """``f(x) = clip(x, min_val, max_val)``; ``f'(x) = 1`` strictly inside, else 0.

    Parameters are keyword-only ``__init__`` arguments with defaults, so
    ``mlcore.activation("hard_tanh", min_val=-2.0)`` works and a misspelt name is rejected.
    """

    def __init__(self, *, min_val: float = -1.0, max_val: float = 1.0) -> None:
        if not min_val < max_val:
            raise InvalidParameterError(
                f"hard_tanh needs min_val < max_val, received min_val={min_val!r} and "
                f"max_val={max_val!r}.", (min_val, max_val))
        self.min_val, self.max_val = float(min_val), float(max_val)

    def forward(self, x: Any) -> Any:
        xp = array_namespace(x)  # the input's own library: numpy, array-api-strict, cupy...
        return xp.clip(x, self.min_val, self.max_val)  # Python scalars keep x's dtype

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        xp = array_namespace(x, dy)
        inside = (x > self.min_val) & (x < self.max_val)
        return dy * xp.astype(inside, dy.dtype)


@hookimpl
def mlcore_activations() -> dict[str, Any]:
    """{name: factory}; mlcore calls ``factory(**params)`` to build the activation."""
    return {"hard_tanh": HardTanh}
