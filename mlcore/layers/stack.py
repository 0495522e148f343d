"""The layer stack: layers applied in a row, and the chain rule through them.

:class:`LayerStack` is what training, saving and distribution need of a model: its layers,
parameters and buffers, backend, dtype, train/eval modes, forward pass and state. The
user-facing models (:class:`mlcore.Sequential`, :class:`mlcore.MLP`, in :mod:`mlcore.models`)
add ``fit``, ``predict``, ``evaluate``, ``save`` and ``summary`` on top of it, so the
training and saving layers below them never import a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..arrays.namespace import device_scope, namespace
from ..backend import Backend, get_backend
from ..errors import InvalidParameterError, ShapeError
from ..types import Array, ArrayLike, DType, Namespace
from .base import all_layers
from .core import Backprop, Dense, Layer, Parameter

__all__ = ["LayerStack", "chain", "completed_by"]


def chain(layers: Sequence[Layer], X: Array, xp: Namespace, input_grad: bool,
          after: Callable[[int], None] | None = None) -> tuple[Array, Backprop]:
    """Run ``layers`` in order; the backprop runs them in reverse (the chain rule), calling
    ``after(i)`` (when given) once layer ``i``'s backprop has returned."""
    backprops = []
    for i, layer in enumerate(layers):
        X, bp = layer.forward(X, xp, input_grad=input_grad or i > 0)
        backprops.append(bp)

    def backprop(dY: Array) -> Array | None:
        for bp in reversed(backprops):
            dY = bp(dY)  # type: ignore[assignment]  # None only from the first layer, last
        return dY

    if after is None:
        return X, backprop

    def backprop_telling(dY: Array) -> Array | None:
        for i in reversed(range(len(backprops))):
            dY = backprops[i](dY)  # type: ignore[assignment]  # None only from the first layer
            after(i)
        return dY

    return X, backprop_telling


def completed_by(layers: Sequence[Layer], params: Sequence[Parameter]) -> list[list[int]]:
    """For each of ``layers``, the indices of ``params`` whose gradient is complete once its
    backprop has run (backward runs the layers last to first): the parameters of the layer
    that are in no earlier layer (a parameter shared by two layers is complete after the
    earlier one's). A parameter of no layer is in no list (complete when backward ends)."""
    first: dict[int, int] = {}
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            first.setdefault(id(p), i)
    complete: list[list[int]] = [[] for _ in layers]
    for j, p in enumerate(params):
        if id(p) in first:
            complete[first[id(p)]].append(j)
    return complete


def _one_backend(layers: list[Layer]) -> None:
    """Refuse layers built under two backends (their weights could never meet in one step)."""
    seen: dict[str, int] = {}
    for i, layer in enumerate(layers):
        params = layer.parameters()
        if not params:
            continue
        b = getattr(layer, "backend", None)
        name = str(getattr(b, "name", None) or type(params[0].value).__module__.split(".")[0])
        seen.setdefault(name, i)
        if len(seen) > 1:
            (a, ia), (c, ic) = sorted(seen.items(), key=lambda kv: kv[1])[:2]
            raise InvalidParameterError(
                f"Sequential: layer {ia} was built on the {a!r} backend and layer {ic} on "
                f"{c!r}; a model's layers must share one backend. Build them all inside one "
                f"mlcore.use_backend({a!r}) block (or with MLCORE_BACKEND set once).", layers)


class LayerStack(Layer):
    """Layers applied one after the other; parameters named ``layers.<i>.<name>``.

    Holds what training keeps on the model between calls (``last_loss``, ``stop_training``,
    the shuffling stream's position, the cached training step).
    """

    def __init__(self, layers: Iterable[Layer]) -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise InvalidParameterError(
                    f"Sequential expects mlcore layers; item {i} is {type(layer).__name__}. "
                    f"Wrap activations as mlcore.Activation(name).", layer)
        _one_backend(self.layers)
        self.last_loss: Any = None  # the loss of the last fit, used by evaluate()
        self.stop_training = False  # a callback sets it to end fit after this epoch
        self._epochs_seen = 0  # epochs fit has run (the shuffling stream's position)
        self._shuffle_state: tuple[Any, Any, Any] | None = None
        self._step_cache: tuple[Any, Any, Callable[..., Any]] | None = None

    # -- structure -------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend holding the parameters (the selected backend if there are none)."""
        for layer in self.layers:
            if hasattr(layer, "backend"):
                return layer.backend  # type: ignore[no-any-return]
        return get_backend()

    @property
    def out_features(self) -> int | None:
        """Width of the last Dense layer (activations keep the width)."""
        for layer in reversed(self.layers):
            if isinstance(layer, Dense | LayerStack):
                return layer.out_features
            width = getattr(layer, "out_features", None)  # a plugin layer's declared width
            if isinstance(width, int):
                return width
        return None

    @property
    def dtype(self) -> DType:
        """The floating dtype of the parameters (float32 if there are none)."""
        params = self.parameters()
        return params[0].value.dtype if params else self.backend.xp.float32

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        return [(f"layers.{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.named_parameters()]

    def named_buffers(self) -> list[tuple[str, Parameter]]:
        return [(f"layers.{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.named_buffers()]

    # -- modes -----------------------------------------------------------------------------
    def _all_layers(self) -> list[Layer]:
        """This stack and every layer in it, sub-layers of containers included."""
        return all_layers(self)

    def train(self, mode: bool = True) -> LayerStack:
        """Put every layer in training mode (``mode=False``: inference); returns the model.

        ``fit`` and ``train_step`` train; ``predict``, ``evaluate`` and ``model(X)`` always
        infer (Dropout passes inputs through, BatchNorm uses its running statistics).
        """
        for layer in self._all_layers():
            layer.training = bool(mode)
        return self

    def eval(self) -> LayerStack:
        """Inference mode for every layer, as PyTorch's ``model.eval()``; returns the model."""
        return self.train(False)

    def has_modes(self) -> bool:
        """Whether any layer behaves differently in training and inference."""
        return any(layer.modal for layer in self._all_layers())

    def modes(self) -> list[bool]:
        return [layer.training for layer in self._all_layers()]

    def set_modes(self, modes: list[bool]) -> None:
        for layer, mode in zip(self._all_layers(), modes, strict=True):
            layer.training = mode

    def namespace(self, X: Array, y: Array | None = None) -> Namespace:
        """The namespace of ``X`` (and ``y``) and the parameters; an error if backends differ."""
        arrays = (X,) if y is None else (X, y)
        first = [p.value for p in self.parameters()[:1]]
        return namespace(*arrays, *first, names=(*("X", "y")[: len(arrays)], "model parameters"))

    # -- computation -----------------------------------------------------------------------
    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        if xp is None:
            xp = self.namespace(X)
        return chain(self.layers, X, xp, input_grad)

    def __call__(self, X: ArrayLike) -> Array:
        """The output alone, in inference mode, on the device of ``X``."""
        if not self.has_modes():
            return super().__call__(X)
        before = self.modes()
        self.train(False)
        try:
            return super().__call__(X)
        finally:
            self.set_modes(before)

    # -- persistence -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"type": "Sequential", "layers": [layer.config() for layer in self.layers]}

    def state_dict(self) -> dict[str, Any]:
        """``{name: array}`` of every parameter and buffer (the arrays themselves)."""
        return {name: p.value for name, p in self.named_parameters() + self.named_buffers()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy ``state`` (arrays of this model's backend) into the parameters, in place
        (:meth:`~mlcore.layers.Parameter.set`, as PyTorch's ``load_state_dict`` copies)."""
        named = dict(self.named_parameters() + self.named_buffers())
        missing, extra = sorted(set(named) - set(state)), sorted(set(state) - set(named))
        if missing or extra:
            raise ShapeError(f"State does not fit the model: missing {missing}, "
                             f"unexpected {extra}.", state)
        for name, p in named.items():
            value = state[name]
            namespace(value, p.value, names=(name, "model parameter"))
            if tuple(value.shape) != p.shape or value.dtype != p.value.dtype:
                raise ShapeError(
                    f"Parameter {name} is {p.shape} {p.value.dtype}; received "
                    f"{tuple(value.shape)} {value.dtype}.", value)
            with device_scope(value, p.value, names=(name, "model parameter")):
                p.set(value)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}([\n  {inner}\n])"


