"""Layers by their registered type name: what a model file or checkpoint is rebuilt from.

Each layer's :meth:`~mlcore.layers.Layer.config` names its ``"type"``; :func:`layer_from_config`
builds it again (weights zero: the file's weights are loaded after). mlcore's layers are
registered here; the models (:mod:`mlcore.models`) register ``Sequential`` and ``MLP`` when
they are imported (``import mlcore`` does), so saving never imports a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import MlcoreError, ModelFileError
from .core import Activation, Dense, Layer, PReLU
from .dropout import Dropout
from .normalization import BatchNorm, LayerNorm

__all__ = ["layer_from_config", "layer_types", "register_layer"]


def register_layer(name: str, build: Callable[[dict[str, Any]], Layer]) -> None:
    """Make ``build(config)`` rebuild layers whose config has ``"type": name``."""
    _BUILDERS[name] = build


def layer_from_config(cfg: Any) -> Layer:
    """Rebuild a layer from :meth:`Layer.config` data (weights zero; no code is run).

    Only mlcore's own layer types are accepted; anything else is a :class:`ModelFileError`.
    """
    if not isinstance(cfg, dict) or cfg.get("type") not in _BUILDERS:
        kind = cfg.get("type") if isinstance(cfg, dict) else type(cfg).__name__
        raise ModelFileError(
            f"Unknown layer type {kind!r} in the model file; known: {', '.join(_BUILDERS)}.",
            cfg)
    try:
        return _BUILDERS[cfg["type"]](cfg)
    except (KeyError, TypeError, ValueError, MlcoreError) as exc:
        raise ModelFileError(f"Malformed {cfg['type']} entry in the model file: {exc}.",
                             cfg) from exc


def layer_types() -> list[str]:
    """The layer types a model file can hold (:func:`layer_from_config` builds them)."""
    return list(_BUILDERS)


_BUILDERS: dict[str, Callable[[dict[str, Any]], Layer]] = {
    "Dense": lambda c: Dense(int(c["in_features"]), int(c["out_features"]), bias=bool(c["bias"]),
                             init="zeros", dtype=str(c["dtype"])),
    "PReLU": lambda c: PReLU(int(c["num_parameters"]), dtype=str(c["dtype"])),
    "Activation": lambda c: Activation(str(c["name"]), **dict(c["params"])),
    "Dropout": lambda c: Dropout(float(c["rate"])),
    "LayerNorm": lambda c: LayerNorm(int(c["num_features"]), float(c["eps"]),
                                     dtype=str(c["dtype"])),
    "BatchNorm": lambda c: BatchNorm(int(c["num_features"]), float(c["momentum"]),
                                     float(c["eps"]), dtype=str(c["dtype"])),
}
