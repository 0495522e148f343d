"""Layers: Dense (eq. 1.5), PReLU, Activation; the parameter holder and the layer base.

Backpropagation follows thinc: ``Y, backprop = layer.forward(X)``; ``backprop(dY)`` adds
the parameter gradients into each :class:`Parameter`'s ``grad`` and returns ``dX``. What the
backward pass needs lives in the closure, not on the layer. Gradients accumulate until
:meth:`Layer.zero_grad` clears them (PyTorch's ``set_to_none``).

``forward(X, xp=None, *, input_grad=True)``: containers resolve the namespace once and pass
``xp`` down; called directly, a layer resolves it from ``X`` and its parameters (a clear
error when they come from different backends). ``input_grad=False`` lets the first layer of
a model skip computing ``dX`` (its ``backprop`` then returns None).

Layer sequences (:class:`~mlcore.Sequential`, :class:`~mlcore.MLP`) live in
:mod:`mlcore.models`.
"""

from __future__ import annotations

import operator
from typing import Any, SupportsIndex, cast

from ..activations import activation
from ..arrays.checks import real
from ..arrays.checks import seed as check_seed
from ..arrays.namespace import (
    convert,
    device_of,
    device_scope,
    namespace,
    writes_in_place,
)
from ..backend import Backend, RandomSource, get_backend
from ..errors import DTypeError, InvalidParameterError, ShapeError
from ..init import Initializer, get_initializer
from ..parameter import Parameter, on_device
from ..types import Array, ArrayLike, Backprop, DType, Namespace

__all__ = ["Parameter", "Layer", "Dense", "PReLU", "Activation", "Backprop", "resolve_dtype",
           "on_device", "transposed_storage"]



def resolve_dtype(xp: Namespace, dtype: DType | str | None) -> DType:
    """``None`` -> float32; ``"float32"``/``"float64"`` or a floating dtype of ``xp``."""
    if dtype is None:
        return xp.float32
    if isinstance(dtype, str) and dtype in ("float32", "float64"):
        return getattr(xp, dtype)
    if dtype in (xp.float32, xp.float64):
        return dtype
    raise DTypeError(
        f"Layer parameters must be float32 or float64, received dtype {dtype!r}. "
        f"Pass dtype='float32' (the default) or dtype='float64'.", dtype)


def dtype_name(xp: Namespace, dtype: DType) -> str:
    """``"float32"`` or ``"float64"`` for a floating dtype of ``xp``."""
    return "float64" if dtype == xp.float64 else "float32"


def positive_int(value: object, name: str, hint: str = "") -> int:
    """``value`` as a positive int (a NumPy integer too); floats, strings and bools are
    refused with :class:`InvalidParameterError` naming ``name``."""
    try:
        n = operator.index(value) if isinstance(value, SupportsIndex) \
            and not isinstance(value, bool) else 0
    except TypeError:
        n = 0
    if n < 1:
        raise InvalidParameterError(
            f"{name} must be a positive integer, received {value!r}.{hint}", value)
    return n


class Layer:
    """The base of every layer: ``forward`` returns ``(Y, backprop)``.

    ``training`` is the layer's mode (True, as in PyTorch, until a model's ``eval()``); only
    layers that set ``modal = True`` (Dropout, BatchNorm) behave differently in it.
    """

    training = True
    modal = False

    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        """Return the output and the function that backpropagates through this call."""
        raise NotImplementedError

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs, as PyTorch names them (``weight``, ``bias``)."""
        return []

    def parameters(self) -> list[Parameter]:
        """The trainable parameters."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, Parameter]]:
        """State that is saved with the model but not trained (BatchNorm's running
        statistics), as ``(name, holder)`` pairs."""
        return []

    def zero_grad(self) -> None:
        """Clear every parameter's accumulated gradient."""
        for p in self.parameters():
            p.grad = None

    def config(self) -> dict[str, Any]:
        """The architecture as JSON-ready data (no weights): ``{"type": <registered name>,
        **constructor arguments}``; see :mod:`mlcore.saving.io`."""
        raise NotImplementedError(
            f"{type(self).__name__} is a custom layer, which a model file cannot describe")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """The layer :meth:`config` describes (weights as initialised: a file's weights are
        loaded after): the constructor called with every entry but ``"type"``."""
        return cls(**{k: v for k, v in config.items() if k != "type"})

    def __call__(self, X: ArrayLike) -> Array:
        """The output alone (inference), computed on the device of ``X``; a list (or any
        non-array) is converted as :meth:`Sequential.predict` converts it."""
        array = cast("Array", X) if hasattr(X, "shape") else to_layer_input(self, X)
        with device_scope(array, names=("X",)):
            return self.forward(array, input_grad=False)[0]


def transposed_storage(xp: Namespace, w: Array) -> Array:
    """``w`` (out, in), stored as the transpose of a row-major (in, out) array.

    The values and shape are ``w``'s; only the memory order changes (``Wᵀ`` is then a
    contiguous array). OpenBLAS runs the weight gradient ``(Xᵀ dY)ᵀ`` faster this way at
    small batches (784→512 at batch 32: 188 → 128 µs alone; the backward pass of a
    784-512-512-10 training step 680 → 620 µs). Backends that cannot write in place keep
    ``w`` as it is.
    """
    if not writes_in_place(w):
        return w
    t = xp.empty((w.shape[1], w.shape[0]), dtype=w.dtype, device=device_of(w))
    try:
        t[...] = xp.matrix_transpose(w)
    except (TypeError, ValueError, NotImplementedError):
        return w
    return xp.matrix_transpose(t)


class Dense(Layer):
    """Fully-connected layer, eq. (1.5): z = W x + b, W of shape (out, in).

    A batch ``X`` of shape (N, in) gives ``X Wᵀ + b`` of shape (N, out). The weight is
    stored as the transpose of a row-major (in, out) array (:func:`transposed_storage`) and
    its gradient is formed as ``(Xᵀ dY)ᵀ``, in the same layout, so the optimiser runs over
    contiguous memory; :meth:`Parameter.set` and ``load_state_dict`` keep that layout.
    Parameters are
    created on the backend selected at construction (:func:`mlcore.get_backend`), float32
    unless ``dtype="float64"``. ``init`` is an initialiser name from :mod:`mlcore.init` or a
    callable (default ``glorot_uniform``); the bias starts at zero. ``seed`` seeds the
    backend's random source; ``rng`` shares one random source between several layers.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 init: str | Initializer = "glorot_uniform", seed: int | None = None,
                 dtype: DType | str | None = None, rng: RandomSource | None = None) -> None:
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        backend = get_backend()
        self.backend: Backend = backend
        dt = resolve_dtype(backend.xp, dtype)
        source = rng if rng is not None else backend.rng(check_seed(seed))
        shape = (self.out_features, self.in_features)
        with on_device(backend.device):
            w = get_initializer(init)(shape, dt, source, backend)
            self.weight = Parameter(transposed_storage(backend.xp, w))
            self.bias = Parameter(backend.xp.zeros((self.out_features,), dtype=dt,
                                                   device=backend.device)) if bias else None

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        if self.bias is None:
            return [("weight", self.weight)]
        return [("weight", self.weight), ("bias", self.bias)]

    def _check(self, X: Array) -> None:
        shape = tuple(X.shape)
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ShapeError(
                f"Dense expected input with {self.in_features} features, received shape "
                f"{shape}. Pass an array of shape (N, {self.in_features}).", X)
        if X.dtype != self.weight.value.dtype:
            raise DTypeError(
                f"Dense has {self.weight.value.dtype} weights but received {X.dtype} input. "
                f"Convert the input with astype, or build the layer with that dtype.", X)

    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        W, b = self.weight.value, self.bias
        if xp is None:
            xp = namespace(X, W, names=("X", "Dense.weight"))
        self._check(X)
        Y = X @ W.T
        if b is not None:
            Y += b.value  # Y is ours: add in place (rebinds on immutable array types)

        def backprop(dY: Array) -> Array | None:
            self.weight.accumulate((X.T @ dY).T)  # W's layout: see transposed_storage
            if b is not None:
                b.accumulate(xp.sum(dY, axis=0))
            return dY @ W if input_grad else None

        return Y, backprop

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        c = config
        return cls(int(c["in_features"]), int(c["out_features"]), bias=bool(c["bias"]),
                   init="zeros", dtype=str(c["dtype"]))

    def config(self) -> dict[str, Any]:
        xp = self.backend.xp
        return {"type": "Dense", "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias is not None,
                "dtype": dtype_name(xp, self.weight.value.dtype)}

    def __repr__(self) -> str:
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"bias={self.bias is not None})")


class PReLU(Layer):
    """PReLU: f(z) = z if z > 0 else alpha z, with alpha trainable (the chapter's PReLU).

    ``num_parameters=1`` shares one alpha; ``num_parameters=F`` learns one per feature of an
    (N, F) input. alpha starts at ``init`` (0.25, as in He et al. 2015 and PyTorch).
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *,
                 dtype: DType | str | None = None) -> None:
        self.num_parameters = positive_int(num_parameters, "num_parameters")
        init = real("init", init, owner="PReLU", example="init=0.25")
        backend = get_backend()
        self.backend: Backend = backend
        dt = resolve_dtype(backend.xp, dtype)
        with on_device(backend.device):
            self.alpha = Parameter(backend.xp.full((self.num_parameters,), float(init),
                                                   dtype=dt, device=backend.device))

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        return [("alpha", self.alpha)]

    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        a = self.alpha.value
        if xp is None:
            xp = namespace(X, a, names=("X", "PReLU.alpha"))
        if self.num_parameters > 1 and (X.ndim < 2 or X.shape[-1] != self.num_parameters):
            raise ShapeError(
                f"PReLU has {self.num_parameters} parameters (one per feature) but received "
                f"shape {tuple(X.shape)}. Pass (N, {self.num_parameters}) or use one alpha.", X)
        neg = xp.minimum(X, 0.0)
        Y = X + (a - 1.0) * neg  # max(X, 0) + alpha min(X, 0)

        def backprop(dY: Array) -> Array | None:
            self.alpha.accumulate(self._alpha_grad(xp, dY * neg))
            if not input_grad:
                return None
            return dY + (a - 1.0) * (dY * xp.astype(X <= 0.0, X.dtype))

        return Y, backprop

    def _alpha_grad(self, xp: Namespace, g: Array) -> Array:
        if self.num_parameters == 1:
            return xp.reshape(xp.sum(g), (1,))
        return xp.sum(xp.reshape(g, (-1, self.num_parameters)), axis=0)

    def config(self) -> dict[str, Any]:
        return {"type": "PReLU", "num_parameters": self.num_parameters,
                "dtype": dtype_name(self.backend.xp, self.alpha.value.dtype)}

    def __repr__(self) -> str:
        return f"PReLU(num_parameters={self.num_parameters})"


class Activation(Layer):
    """A registered activation (:func:`mlcore.activation`) as a layer without parameters.

    Its backward reuses the forward output: ``backward(X, Y, dY)``. Inside a model (``xp``
    given by the container, which resolved it once and runs on the inputs' device) an
    activation that has the unchecked kernel pair (:class:`mlcore.hookspecs.ActivationKernels`,
    given by :class:`mlcore.plugin.ActivationBase` to built-ins and plugins alike) runs it
    directly, after an O(1) dtype check: the per-call namespace lookup, dtype scan and
    device scope of the public ``forward`` cost more than ``tanh`` itself on small layers.
    """

    def __init__(self, name: str, **params: object) -> None:
        self.name = name
        self.params = params
        self.fn = activation(name, **params)
        fwd = getattr(self.fn, "forward_unchecked", None)
        bwd = getattr(self.fn, "backward_unchecked", None)
        self._kernels = (fwd, bwd) if callable(fwd) and callable(bwd) else None

    def forward(self, X: Array, xp: Namespace | None = None, *,
                input_grad: bool = True) -> tuple[Array, Backprop]:
        kernels = self._kernels
        if xp is None or kernels is None or X.dtype not in (xp.float32, xp.float64):
            return self._forward_checked(X, input_grad)
        fwd, bwd = kernels
        Y = fwd(xp, X)

        def backprop(dY: Array) -> Array | None:
            return bwd(xp, X, Y, dY) if input_grad else None

        return Y, backprop

    def _forward_checked(self, X: Array, input_grad: bool) -> tuple[Array, Backprop]:
        fn = self.fn
        Y = fn.forward(X)

        def backprop(dY: Array) -> Array | None:
            return fn.backward(X, Y, dY) if input_grad else None

        return Y, backprop

    def config(self) -> dict[str, Any]:
        return {"type": "Activation", "name": self.name, "params": dict(self.params)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        return cls(str(config["name"]), **dict(config["params"]))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Activation({self.name!r}{extra})"


def to_layer_input(layer: Layer, X: object) -> Array:
    """A list (or other non-array) ``X`` given to ``layer(X)``, as an array of the layer's
    backend and parameter dtype (float32 for a layer without parameters)."""
    params = layer.parameters()
    backend = getattr(layer, "backend", None) or get_backend()
    array = convert(backend, X, "X")
    xp = namespace(array, names=("X",))
    dtype = params[0].value.dtype if params else xp.float32
    return array if array.dtype == dtype else xp.astype(array, dtype)
