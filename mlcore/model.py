"""Models: :class:`Sequential` (layers in a row) and :class:`MLP` (the chapter's network).

A model is a layer (``forward`` returns ``(Y, backprop)``) that also trains, predicts,
evaluates and saves itself; those methods live in :mod:`mlcore.train` and :mod:`mlcore.io`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._array import device_scope, namespace
from ._checks import seed as check_seed
from .backend import Backend, get_backend
from .dropout import Dropout
from .errors import InvalidParameterError, MlcoreError, ModelFileError, ShapeError
from .init import default_init
from .layers import Activation, Backprop, Dense, Layer, Parameter, PReLU, dtype_name, positive_int
from .normalization import BatchNorm, LayerNorm
from .plugins import canonical_name

__all__ = ["Sequential", "MLP", "layer_from_config", "layer_types"]


def chain(layers: Sequence[Layer], X: Any, xp: Any, input_grad: bool) -> tuple[Any, Backprop]:
    """Run ``layers`` in order; the backprop runs them in reverse (the chain rule)."""
    backprops = []
    for i, layer in enumerate(layers):
        X, bp = layer.forward(X, xp, input_grad=input_grad or i > 0)
        backprops.append(bp)

    def backprop(dY: Any) -> Any:
        for bp in reversed(backprops):
            dY = bp(dY)
        return dY

    return X, backprop


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


class Sequential(Layer):
    """Layers applied one after the other; parameters named ``layers.<i>.<name>``.

    Training: :meth:`fit`, :meth:`train_step`; inference: :meth:`predict`, ``model(X)``;
    :meth:`evaluate`; :meth:`save` (load with :func:`mlcore.load`).
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
            if isinstance(layer, Dense):
                return layer.out_features
            if isinstance(layer, Sequential):
                return layer.out_features
        return None

    @property
    def dtype(self) -> Any:
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
        found: list[Layer] = [self]
        for layer in self.layers:
            found += layer._all_layers() if isinstance(layer, Sequential) else [layer]
        return found

    def train(self, mode: bool = True) -> Sequential:
        """Put every layer in training mode (``mode=False``: inference); returns the model.

        ``fit`` and ``train_step`` train; ``predict``, ``evaluate`` and ``model(X)`` always
        infer (Dropout passes inputs through, BatchNorm uses its running statistics).
        """
        for layer in self._all_layers():
            layer.training = bool(mode)
        return self

    def eval(self) -> Sequential:
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

    def namespace(self, X: Any, y: Any = None) -> Any:
        """The namespace of ``X`` (and ``y``) and the parameters; an error if backends differ."""
        arrays = (X,) if y is None else (X, y)
        first = [p.value for p in self.parameters()[:1]]
        return namespace(*arrays, *first, names=(*("X", "y")[: len(arrays)], "model parameters"))

    # -- computation -----------------------------------------------------------------------
    def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> tuple[Any, Backprop]:
        if xp is None:
            xp = self.namespace(X)
        return chain(self.layers, X, xp, input_grad)

    def fit(self, X: Any, y: Any = None, *, loss: Any, **options: Any) -> dict[str, list[float]]:
        """Train on mini-batches; every option (``epochs``, ``batch_size``, ``optimizer``,
        ``metrics``, ``callbacks``, ``validation_split`` ...) is :func:`mlcore.train.fit`'s."""
        from .train import fit

        _check_foreign(options)
        return fit(self, X, y, loss=loss, **options)

    def train_step(self, X: Any, y: Any, loss: Any, optimizer: Any) -> Any:
        """One optimisation step on a batch; returns the loss as a 0-d array (no sync).

        See :func:`mlcore.train.make_train_step` (the prepared step is cached for the
        same ``loss`` and ``optimizer``).
        """
        cache = self._step_cache
        if cache is None or not (_same(cache[0], loss) and _same(cache[1], optimizer)):
            from .train import make_train_step

            cache = (loss, optimizer, make_train_step(self, loss, optimizer))
            self._step_cache = cache
        return cache[2](X, y)

    def predict(self, X: Any, *, batch_size: int | None = None) -> Any:
        """The model's output for ``X`` (converted at this boundary); see :mod:`mlcore.train`."""
        from .train import predict

        return predict(self, X, batch_size=batch_size)

    def evaluate(self, X: Any, y: Any, *, loss: Any = None, batch_size: int | None = None,
                 metrics: Sequence[Any] | None = None) -> dict[str, float]:
        """Loss (and accuracy for classification, and ``metrics``) on ``X, y``; see
        :func:`mlcore.train.evaluate`."""
        from .train import evaluate

        return evaluate(self, X, y, loss=loss, batch_size=batch_size, metrics=metrics)

    def __call__(self, X: Any) -> Any:
        """The output alone, in inference mode, on the device of ``X``."""
        if not self.has_modes():
            return super().__call__(X)
        before = self.modes()
        self.train(False)
        try:
            return super().__call__(X)
        finally:
            self.set_modes(before)

    def summary(self, print_fn: Any = print) -> str | None:
        """Print a table of the layers, their output shapes and parameter counts, with
        totals (as Keras' ``model.summary()``); ``print_fn`` receives the text instead
        (``summary(print_fn=None)`` returns it, for a caller that wants the string)."""
        from .summary import summary

        text = summary(self)
        if print_fn is None:
            return text
        print_fn(text)
        return None

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

    def save(self, path: Any) -> None:
        """Write weights and architecture to ``path``; see :func:`mlcore.io.save`."""
        from .io import save

        save(self, path)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"{type(self).__name__}([\n  {inner}\n])"


_FOREIGN = {"learning_rate": "lr", "learning_rate_init": "lr", "max_iter": "epochs",
            "nb_epoch": "epochs", "random_state": "seed"}
"""fit's arguments under the names Keras, PyTorch and scikit-learn give them."""


def _check_foreign(options: dict[str, Any]) -> None:
    """An error naming mlcore's spelling for another library's argument name."""
    for name, ours in _FOREIGN.items():
        if name in options:
            raise InvalidParameterError(
                f"fit() takes {ours}=, not {name}= (another library's name for it): write "
                f"fit(..., {ours}={options[name]!r}).", name)


def _same(a: Any, b: Any) -> bool:
    """The same loss or optimiser: the same object, or an equal name."""
    return a is b or (isinstance(a, str) and a == b)


def _act_layer(name: str, width: int, dtype: Any) -> Layer:
    return PReLU(width, dtype=dtype) if name == "prelu" else Activation(name)


class MLP(Sequential):
    """A multi-layer perceptron: Dense layers of ``sizes`` with ``activation`` between them.

    ``MLP([2, 4, 1], activation="tanh", output_activation="sigmoid")`` is Dense(2, 4), tanh,
    Dense(4, 1), sigmoid. ``activation`` is any registered activation name, or ``"prelu"``
    (a per-feature :class:`PReLU` layer). Weights are initialised for the activation that
    follows them (``he_uniform`` for the ReLU family, ``glorot_uniform`` otherwise; see
    :mod:`mlcore.init`) from one random source seeded by ``seed``; ``init`` overrides.
    Each hidden layer is Dense, then ``norm`` (``"layer"``: :class:`LayerNorm`, ``"batch"``:
    :class:`BatchNorm`), the activation, then :class:`Dropout` when ``dropout > 0`` (its
    masks seeded from ``seed``).
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu",
                 output_activation: str | None = None, seed: int | None = None, *,
                 init: str | None = None, bias: bool = True, dtype: Any = None,
                 dropout: float = 0.0, norm: str | None = None) -> None:
        self.sizes = _sizes(sizes)
        activation = canonical_name(activation)
        output_activation = canonical_name(output_activation)
        self.activation, self.output_activation = activation, output_activation
        self.init, self.bias, self.dropout, self.norm = init, bias, dropout, norm
        if norm not in (None, "layer", "batch"):
            raise InvalidParameterError(
                f"norm must be None, 'layer' or 'batch', received {norm!r}.", norm)
        rng = get_backend().rng(check_seed(seed))
        layers: list[Layer] = []
        pairs = list(zip(self.sizes[:-1], self.sizes[1:], strict=True))
        for i, (n_in, n_out) in enumerate(pairs):
            act = activation if i < len(pairs) - 1 else output_activation
            layers.append(Dense(n_in, n_out, bias=bias, init=init or default_init(act),
                                rng=rng, dtype=dtype))
            hidden = i < len(pairs) - 1
            if hidden and norm is not None:
                layers.append((LayerNorm if norm == "layer" else BatchNorm)(n_out, dtype=dtype))
            if act is not None:
                layers.append(_act_layer(act, n_out, dtype))
            if hidden and dropout:
                layers.append(Dropout(dropout, seed=None if seed is None else seed + 1 + i))
        super().__init__(layers)

    def config(self) -> dict[str, Any]:
        return {"type": "MLP", "sizes": self.sizes, "activation": self.activation,
                "output_activation": self.output_activation, "bias": self.bias,
                "dtype": dtype_name(self.backend.xp, self.dtype), "dropout": self.dropout,
                "norm": self.norm}


def _sizes(sizes: Any) -> list[int]:
    """``sizes`` as a list of positive ints (NumPy integers accepted; floats refused)."""
    try:
        items = list(sizes)
    except TypeError:
        items = None
    if items is None or len(items) < 2:
        raise InvalidParameterError(
            f"MLP needs a list of at least an input and an output size, such as [784, 128, "
            f"10]; received sizes={sizes!r}.", sizes)
    hint = " Pass whole numbers, such as sizes=[2, 4, 1]."
    return [positive_int(s, f"MLP sizes[{i}]", hint) for i, s in enumerate(items)]


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
    "Sequential": lambda c: Sequential([layer_from_config(x) for x in c["layers"]]),
    "MLP": lambda c: MLP([int(s) for s in c["sizes"]], activation=str(c["activation"]),
                         output_activation=c["output_activation"], init="zeros",
                         bias=bool(c["bias"]), dtype=str(c["dtype"]),
                         dropout=float(c.get("dropout", 0.0)), norm=c.get("norm")),
}
