"""The conversion boundary of ``fit``, ``predict`` and ``evaluate``.

Data from anywhere (lists, NumPy arrays while another backend is selected, arrays of the
model's backend) is converted once with the model backend's ``asarray``, inputs to the
parameters' floating dtype, targets checked once (:func:`mlcore.training.lossplan.prepare_targets`).
"""

from __future__ import annotations

from typing import Any

from ..arrays.namespace import check_finite, check_same_device, convert, describe
from ..errors import (
    InvalidParameterError,
    InvalidValueError,
    ShapeError,
)
from ..layers.stack import LayerStack
from ..types import Array, ArrayLike, DType, Namespace
from .loop import Data
from .lossplan import LossPlan, prepare_targets

__all__ = ["to_model_input", "prepare", "prepare_validation"]


def to_model_input(model: LayerStack, data: ArrayLike, name: str = "X") -> Array:
    """``data`` as a finite array of the model's backend and dtype (the conversion
    boundary)."""
    X = convert(model.backend, data, name)
    params = model.parameters()
    if params:  # before any value is read: a tensor on another device fails in the read
        check_same_device(X, params[0].value, names=(name, "model parameters"))
    xp = model.namespace(X)
    source = X
    if X.dtype != model.dtype:
        X = xp.astype(X, model.dtype)
    try:
        check_finite(xp, X, name)
    except InvalidValueError:
        if source is not X:
            _check_overflow(xp, source, model.dtype, name)
        raise
    return X


def _check_overflow(xp: Namespace, source: Any, dtype: DType, name: str) -> None:
    """Finite data that became infinite in the conversion to the model's dtype: say so (the
    user's data had no NaN or inf)."""
    if not xp.isdtype(source.dtype, "real floating") or not bool(xp.all(xp.isfinite(source))):
        return
    biggest, limit = float(xp.max(xp.abs(source))), float(xp.finfo(dtype).max)
    raise InvalidValueError(
        f"{name} holds values up to |{name}| = {biggest:.3g}, beyond the range of the model's "
        f"dtype {dtype} (largest {limit:.3g}): they overflow to infinity in the conversion. "
        f"Scale {name} (standardise it), or build the model with dtype='float64'.", source)


def prepare(model: LayerStack, plan: LossPlan, X: ArrayLike, y: ArrayLike,
             names: tuple[str, str] = ("X", "y")) -> Data:
    Xa = to_model_input(model, X, names[0])
    ya = convert(model.backend, y, names[1])
    xp = model.namespace(Xa, ya)
    n = Xa.shape[0] if Xa.ndim else 0
    if n == 0 or ya.ndim == 0 or ya.shape[0] != n:
        raise ShapeError(
            f"{names[0]} and {names[1]} must hold the same number (>= 1) of samples; "
            f"received {names[0]} of shape {tuple(Xa.shape)} and {names[1]} of shape "
            f"{tuple(ya.shape)}.", (X, y))
    targets, labels = prepare_targets(xp, plan, ya, model.out_features, model.dtype)
    return Data(Xa, targets, labels)


def prepare_validation(model: LayerStack, plan: LossPlan, validation_data: Any) -> Data:
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise InvalidParameterError(
            f"validation_data must be a pair (X_val, y_val), received "
            f"{_kind(validation_data)}. Pass validation_data=(X_val, y_val).", validation_data)
    return prepare(model, plan, validation_data[0], validation_data[1],
                    names=("validation_data[0] (X_val)", "validation_data[1] (y_val)"))


def _kind(obj: Any) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return describe(obj) if hasattr(obj, "shape") else type(obj).__name__
