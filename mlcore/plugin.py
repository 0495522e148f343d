"""What plugin authors import: the base of each plugin kind, and stable helpers.

One module for all five kinds, each base the one mlcore's own objects are written on, so a
plugin takes exactly the path a built-in takes (docs/plugins.md):

* :class:`ActivationBase`: write ``forward_unchecked(xp, x)`` and
  ``backward_unchecked(xp, x, y, dy)``, the bare formulas in the namespace ``xp``; the base
  gives the checked public ``forward(x)`` / ``backward(x, y, dy)``.
* :class:`LossBase` / :class:`ElementwiseLoss`: write per-sample ``values`` and their
  ``gradient`` (or per-element ``terms``), ``check`` for the inputs' shapes and dtypes, and
  ``check_values`` for checks that read values (run only where values exist: never inside a
  compiled step; :func:`values_checked` says whether they run here). The base gives
  ``reduction`` (``"mean"``, ``"sum"``, ``"none"``) and the checked and unchecked methods.
* :class:`Metric`: ``update(state, y_pred, y_true) -> state`` on the device and
  ``result(state) -> float`` (the metric input contract is :class:`mlcore.metrics.Metric`'s).
* :class:`OptimizerBase` (:class:`mlcore.optimizers.Optimizer`): declare the state
  (``slots``, ``counted``, ``hyperparameters``) and write the update rule
  ``rule(xp, params, grads, state, lr) -> (new_params, new_state)``, pure (new arrays, the
  inputs untouched). The base gives clipping, ``step()``, the compiled training step,
  ``state_dict`` and checkpoints. ``State`` is the state's type; ``clip_gradients`` the
  clipping.
* :class:`LayerBase`: ``forward(X, xp=None, *, input_grad=True) -> (Y, backprop)``,
  parameters and buffers by name, ``get_config()``; registered by type name through the
  ``mlcore_layers`` hook, a model holding it saves, loads and checkpoints
  (:mod:`mlcore.layers.base` states the contract). :func:`layer_from_config` rebuilds an
  inner layer (a container's ``from_config``); :class:`Parameter` is the array holder.

:mod:`mlcore.testing` checks each kind: ``check_activation``, ``check_loss``,
``check_metric``, ``check_optimizer``, ``check_layer``.
"""

from __future__ import annotations

from .bases import (
    PROBABILITY_TOLERANCE,
    REDUCTIONS,
    ActivationBase,
    ElementwiseLoss,
    LossBase,
    bool_param,
    check_class_indices,
    check_labels,
    check_pred,
    check_unit_interval,
    feature_count,
    log1mexp,
    log_softmax,
    logsumexp,
    number_param,
    one_hot,
    per_sample_mean,
    same_shape_float,
    sigmoid,
    softmax,
    softplus,
    values_checked,
)
from .hookspecs import hookimpl
from .layers.base import LayerBase
from .layers.core import Backprop, Layer, Parameter
from .layers.registry import layer_from_config
from .metrics import Metric
from .optimizers.base import Optimizer as OptimizerBase
from .optimizers.base import State, clip_gradients

__all__ = [
    "ActivationBase",
    "LossBase",
    "ElementwiseLoss",
    "Metric",
    "OptimizerBase",
    "LayerBase",
    "Layer",
    "Parameter",
    "Backprop",
    "layer_from_config",
    "State",
    "clip_gradients",
    "REDUCTIONS",
    "PROBABILITY_TOLERANCE",
    "hookimpl",
    "sigmoid",
    "softplus",
    "softmax",
    "log_softmax",
    "logsumexp",
    "log1mexp",
    "per_sample_mean",
    "feature_count",
    "number_param",
    "bool_param",
    "check_pred",
    "same_shape_float",
    "check_unit_interval",
    "check_labels",
    "check_class_indices",
    "one_hot",
    "values_checked",
]
