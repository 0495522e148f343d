"""mlcore: a deep-learning library written once against the Python Array API standard.

This module is the table of contents: one import per public name.
"""

from __future__ import annotations

from .activations import activation, activation_names
from .backend import Backend, BackendChoice, backend_choice, backend_names, get_backend, use_backend
from .errors import (
    BackendMismatchError,
    BackendNotFoundError,
    BackendUnavailableError,
    DeviceMismatchError,
    DistributedError,
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    MlcoreError,
    ModelFileError,
    NonFiniteError,
    PluginConflictError,
    PluginLoadError,
    PluginWarning,
    ShapeError,
    UnknownNameError,
)
from .hookspecs import ActivationFn, LossFn, hookimpl
from .io import load
from .layers import Activation, Dense, Layer, Parameter, PReLU
from .losses import loss, loss_names
from .model import MLP, Sequential
from .optim import SGD, Adam, AdamW, Optimizer
from .train import make_train_step

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # backends
    "Backend",
    "BackendChoice",
    "backend_choice",
    "backend_names",
    "get_backend",
    "use_backend",
    # plugins
    "hookimpl",
    "ActivationFn",
    "LossFn",
    # functions
    "activation",
    "activation_names",
    "loss",
    "loss_names",
    # layers, models, training
    "Layer",
    "Parameter",
    "Dense",
    "PReLU",
    "Activation",
    "Sequential",
    "MLP",
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "make_train_step",
    "load",
    # errors
    "MlcoreError",
    "BackendMismatchError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "DeviceMismatchError",
    "DistributedError",
    "DTypeError",
    "InvalidParameterError",
    "InvalidValueError",
    "ModelFileError",
    "NonFiniteError",
    "PluginConflictError",
    "PluginLoadError",
    "PluginWarning",
    "ShapeError",
    "UnknownNameError",
]
