"""Layers: the base class, the plugin layer's base (:class:`LayerBase`), Dense (eq. 1.5),
PReLU, Activation, Dropout, LayerNorm, BatchNorm, the layer stack that runs them in a row
(the chain rule), and the registry of layer types a model file is rebuilt from. The
trainable array holder :class:`Parameter` lives a layer below (:mod:`mlcore.parameter`,
shared with the optimisers)."""

from __future__ import annotations

from ..parameter import Parameter, on_device
from .base import LayerBase, all_layers
from .core import Activation, Backprop, Dense, Layer, PReLU, resolve_dtype, transposed_storage
from .dropout import Dropout
from .normalization import BatchNorm, LayerNorm
from .registry import (
    check_registered,
    layer_class,
    layer_from_config,
    layer_types,
    register_layer,
)
from .stack import LayerStack, chain

__all__ = ["Parameter", "Layer", "Dense", "PReLU", "Activation", "Backprop", "resolve_dtype",
           "on_device", "transposed_storage", "Dropout", "LayerNorm", "BatchNorm",
           "LayerStack", "chain", "layer_from_config", "layer_types", "register_layer",
           "LayerBase", "all_layers", "layer_class", "check_registered"]
