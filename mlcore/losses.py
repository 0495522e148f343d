"""Built-in losses (eq. 1.13-1.16, plus mse and mae), value and gradient together.

Registered through the ``mlcore_losses`` hook, exactly as a third-party plugin would.
"""

from __future__ import annotations

from typing import Any

from .hookspecs import LossFn, hookimpl
from .plugins import make, registry

__all__ = ["loss", "loss_names"]


def loss(name: str, **params: Any) -> LossFn:
    """Build the registered loss ``name`` with ``params`` (e.g. ``reduction="sum"``).

    Raises :class:`~mlcore.errors.UnknownNameError` listing the registered names, or
    :class:`~mlcore.errors.InvalidParameterError` for a parameter it does not accept.
    """
    return make("losses", name, params)  # type: ignore[no-any-return]


def loss_names() -> list[str]:
    """Names of every registered loss, built-in and from plugins."""
    return registry().names("losses")


@hookimpl
def mlcore_losses() -> dict[str, Any]:
    return {}
