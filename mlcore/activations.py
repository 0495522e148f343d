"""Built-in activations (eq. 1.7-1.12), each forward next to its gradient.

Registered through the ``mlcore_activations`` hook, exactly as a third-party plugin would
register its own, so they survive ``MLCORE_DISABLE_PLUGIN_AUTOLOAD``.
"""

from __future__ import annotations

from typing import Any

from .hookspecs import ActivationFn, hookimpl
from .plugins import make, registry

__all__ = ["activation", "activation_names"]


def activation(name: str, **params: Any) -> ActivationFn:
    """Build the registered activation ``name`` with ``params``.

    Raises :class:`~mlcore.errors.UnknownNameError` listing the registered names, or
    :class:`~mlcore.errors.InvalidParameterError` for a parameter it does not accept.
    """
    return make("activations", name, params)  # type: ignore[no-any-return]


def activation_names() -> list[str]:
    """Names of every registered activation, built-in and from plugins."""
    return registry().names("activations")


@hookimpl
def mlcore_activations() -> dict[str, Any]:
    return {}
