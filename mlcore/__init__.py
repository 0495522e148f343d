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
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    MlcoreError,
    ModelFileError,
    PluginConflictError,
    PluginLoadError,
    PluginWarning,
    ShapeError,
    UnknownNameError,
)
from .hookspecs import ActivationFn, LossFn, hookimpl
from .losses import loss, loss_names

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
    # errors
    "MlcoreError",
    "BackendMismatchError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "DeviceMismatchError",
    "DTypeError",
    "InvalidParameterError",
    "InvalidValueError",
    "ModelFileError",
    "PluginConflictError",
    "PluginLoadError",
    "PluginWarning",
    "ShapeError",
    "UnknownNameError",
]
