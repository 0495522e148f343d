"""The user-facing models: :class:`Sequential`, :class:`MLP` and their :func:`summary`.

They sit above training and saving: a model's ``fit``, ``predict``, ``evaluate`` and
``save`` call :mod:`mlcore.training` and :mod:`mlcore.saving`, which work on the layer stack
(:class:`mlcore.layers.LayerStack`) and never import a model."""

from __future__ import annotations

import os

from ..saving.io import load as load_layers
from .sequential import MLP, Sequential
from .summary import summary

__all__ = ["Sequential", "MLP", "summary", "load"]


def load(path: str | os.PathLike[str], backend: str | None = None) -> Sequential:
    """The model saved at ``path`` (a model file, or the model inside a checkpoint), on
    ``backend`` (default: the selected one); see :func:`mlcore.saving.io.load`."""
    model = load_layers(path, backend)
    if not isinstance(model, Sequential):  # saving rebuilds what models registered
        raise TypeError(f"{path!r} rebuilt a {type(model).__name__}, not a model")
    return model
