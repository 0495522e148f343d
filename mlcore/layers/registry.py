"""Layers by their registered type name: what a model file or checkpoint is rebuilt from.

Layer classes are plugins of the kind ``layers`` (hook ``mlcore_layers``: ``{type name:
class}``); mlcore's own (Dense, PReLU, Activation, Dropout, LayerNorm, BatchNorm) are
registered through that same hook, by this module, so a plugin cannot replace them. Each
layer's :meth:`~mlcore.layers.Layer.config` names its ``"type"``; :func:`layer_from_config`
builds it again with the class's ``from_config`` (weights as initialised: the file's
weights are loaded after). The models (:mod:`mlcore.models`) register ``Sequential`` and
``MLP`` with :func:`register_layer` when they are imported (``import mlcore`` does), so
saving never imports a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidParameterError, MlcoreError, ModelFileError
from ..hookspecs import hookimpl
from ..plugins import registry
from .base import all_layers
from .core import Activation, Dense, Layer, PReLU
from .dropout import Dropout
from .normalization import BatchNorm, LayerNorm

__all__ = ["layer_from_config", "layer_types", "register_layer", "layer_class",
           "check_registered", "mlcore_layers"]

BUILTIN_LAYERS: dict[str, type[Layer]] = {
    "Dense": Dense, "PReLU": PReLU, "Activation": Activation, "Dropout": Dropout,
    "LayerNorm": LayerNorm, "BatchNorm": BatchNorm}


@hookimpl
def mlcore_layers() -> dict[str, type[Layer]]:
    """mlcore's own layer types, registered as a plugin's are."""
    return dict(BUILTIN_LAYERS)


def register_layer(name: str, build: Callable[[dict[str, Any]], Layer]) -> None:
    """Make ``build(config)`` rebuild the containers whose config has ``"type": name``
    (mlcore's models; a plugin registers its layer classes through ``mlcore_layers``)."""
    _BUILDERS[name] = build


def layer_class(name: object) -> type[Layer] | None:
    """The class registered under the layer type ``name`` (hook ``mlcore_layers``), or None."""
    return registry().lookup("layers", name) if isinstance(name, str) else None


def layer_from_config(cfg: object) -> Layer:
    """Rebuild a layer from :meth:`Layer.config` data (weights as initialised).

    Only registered layer types are accepted (no code named by the file is run); anything
    else is a :class:`ModelFileError` listing the known types.
    """
    kind = cfg.get("type") if isinstance(cfg, dict) else type(cfg).__name__
    build = _BUILDERS.get(kind) if isinstance(kind, str) else None
    cls = None if build is not None else layer_class(kind)
    if not isinstance(cfg, dict) or (build is None and cls is None):
        raise ModelFileError(
            f"Unknown layer type {kind!r} in the model file; known: "
            f"{', '.join(layer_types())}. A plugin's layer loads when its distribution is "
            f"installed (mlcore plugins lists the layer types).", cfg)
    try:
        if build is not None:
            return build(cfg)
        return cls.from_config(cfg)  # type: ignore[union-attr]  # one of the two is set
    except (KeyError, TypeError, ValueError, MlcoreError) as exc:
        raise ModelFileError(f"Malformed {kind} entry in the model file: {exc}.",
                             cfg) from exc


def layer_types() -> list[str]:
    """The layer types a model file can hold (:func:`layer_from_config` builds them)."""
    return [*BUILTIN_LAYERS, *_BUILDERS,
            *(n for n in registry().names("layers") if n not in BUILTIN_LAYERS)]


def check_registered(model: Layer, what: str) -> None:
    """Refuse, in one message, a model holding a layer a file could not rebuild: a class
    registered under no layer type (or whose ``config()`` names another class's type).
    ``what`` starts the message ("Cannot save the model to 'm.safetensors'")."""
    for layer in all_layers(model)[1:]:
        kind = _declared_type(layer)
        if kind in _BUILDERS and type(layer).__name__ == kind:
            continue
        registered = layer_class(kind) if kind is not None else None
        if registered is type(layer):
            continue
        shown = f"type {kind!r}, which is registered to {registered.__name__}" \
            if registered is not None else (
                f"type {kind!r}, which no plugin registers" if kind is not None else "no type")
        raise InvalidParameterError(
            f"{what}: its layer {type(layer).__name__} is a custom layer with {shown}, so a "
            f"model file could not rebuild it. Registered layer types: "
            f"{', '.join(layer_types())}. Register the class through the mlcore_layers hook "
            f"(subclass mlcore.plugin.LayerBase, set name and get_config(); docs/plugins.md, "
            f"section 14), or keep its weights with model.state_dict() and rebuild it in "
            f"code.", layer)


def _declared_type(layer: Layer) -> str | None:
    try:
        kind = layer.config().get("type")
    except NotImplementedError:
        return None
    return kind if isinstance(kind, str) else None


_BUILDERS: dict[str, Callable[[dict[str, Any]], Layer]] = {}
