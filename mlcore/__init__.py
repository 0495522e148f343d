"""mlcore: a deep-learning library written once against the Python Array API standard.

This module is the table of contents: one import per public name.
"""

from __future__ import annotations

from . import callbacks, data, plugin, schedules
from .activations import activation, activation_names
from .backend import Backend, BackendChoice, backend_choice, backend_names, get_backend, use_backend
from .errors import (
    BackendMismatchError,
    BackendNotFoundError,
    BackendUnavailableError,
    CompiledStepWarning,
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
from .layers.core import Activation, Dense, Layer, Parameter, PReLU
from .layers.dropout import Dropout
from .layers.normalization import BatchNorm, LayerNorm
from .losses import loss, loss_names
from .metrics import Metric, metric, metric_names
from .models import MLP, Sequential, load
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .plotting import plot_history
from .saving.checkpoint import load_checkpoint, save_checkpoint
from .training.fit import make_train_step

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
    "metric",
    "metric_names",
    "Metric",
    # layers, models, training
    "Layer",
    "Parameter",
    "Dense",
    "PReLU",
    "Activation",
    "Dropout",
    "LayerNorm",
    "BatchNorm",
    "Sequential",
    "MLP",
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "make_train_step",
    "plot_history",
    "load",
    "save_checkpoint",
    "load_checkpoint",
    "callbacks",
    "plugin",
    "schedules",
    "data",
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
    "CompiledStepWarning",
    "ShapeError",
    "UnknownNameError",
]
