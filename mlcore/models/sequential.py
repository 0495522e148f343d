"""Models: :class:`Sequential` (layers in a row) and :class:`MLP` (the chapter's network).

A model is a :class:`~mlcore.layers.LayerStack` that also trains, predicts, evaluates,
summarises and saves itself; those methods call :mod:`mlcore.training` and
:mod:`mlcore.saving`, which sit below the models and never import them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..arrays.checks import seed as check_seed
from ..backend import get_backend
from ..errors import InvalidParameterError
from ..hookspecs import LossFn
from ..init import default_init
from ..layers.core import Activation, Dense, Layer, PReLU, dtype_name, positive_int
from ..layers.dropout import Dropout
from ..layers.normalization import BatchNorm, LayerNorm
from ..layers.registry import layer_from_config, register_layer
from ..layers.stack import LayerStack
from ..metrics import Metric
from ..plugins import canonical_name
from ..saving.io import save
from ..training.fit import evaluate, fit, make_train_step, predict
from ..types import ArrayLike, DType
from .summary import summary

__all__ = ["Sequential", "MLP"]


class Sequential(LayerStack):
    """Layers applied one after the other; parameters named ``layers.<i>.<name>``.

    Training: :meth:`fit`, :meth:`train_step`; inference: :meth:`predict`, ``model(X)``;
    :meth:`evaluate`; :meth:`save` (load with :func:`mlcore.load`).
    """

    def fit(self, X: ArrayLike, y: ArrayLike = None, *, loss: str | LossFn,
            **options: Any) -> dict[str, list[float]]:
        """Train on mini-batches; every option (``epochs``, ``batch_size``, ``optimizer``,
        ``metrics``, ``callbacks``, ``validation_split`` ...) is
        :func:`mlcore.training.fit.fit`'s."""
        _check_foreign(options)
        return fit(self, X, y, loss=loss, **options)

    def train_step(self, X: ArrayLike, y: ArrayLike, loss: str | LossFn, optimizer: Any) -> Any:
        """One optimisation step on a batch; returns the loss as a 0-d array (no sync).

        See :func:`mlcore.training.fit.make_train_step` (the prepared step is cached for the
        same ``loss`` and ``optimizer``).
        """
        cache = self._step_cache
        if cache is None or not (_same(cache[0], loss) and _same(cache[1], optimizer)):
            cache = (loss, optimizer, make_train_step(self, loss, optimizer))
            self._step_cache = cache
        return cache[2](X, y)

    def predict(self, X: ArrayLike, *, batch_size: int | None = None) -> Any:
        """The model's output for ``X`` (converted at this boundary); see
        :mod:`mlcore.training.fit`."""
        return predict(self, X, batch_size=batch_size)

    def evaluate(self, X: ArrayLike, y: ArrayLike, *, loss: str | LossFn | None = None,
                 batch_size: int | None = None,
                 metrics: Sequence[str | Metric[Any]] | None = None) -> dict[str, float]:
        """Loss (and accuracy for classification, and ``metrics``) on ``X, y``; see
        :func:`mlcore.training.fit.evaluate`."""
        return evaluate(self, X, y, loss=loss, batch_size=batch_size, metrics=metrics)

    def summary(self, print_fn: Any = print) -> str | None:
        """Print a table of the layers, their output shapes and parameter counts, with
        totals (as Keras' ``model.summary()``); ``print_fn`` receives the text instead
        (``summary(print_fn=None)`` returns it, for a caller that wants the string)."""
        text = summary(self)
        if print_fn is None:
            return text
        print_fn(text)
        return None

    def save(self, path: Any) -> None:
        """Write weights and architecture to ``path``; see :func:`mlcore.saving.io.save`."""
        save(self, path)



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


def _act_layer(name: str, width: int, dtype: DType) -> Layer:
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
                 init: str | None = None, bias: bool = True, dtype: DType | None = None,
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


register_layer("Sequential", lambda c: Sequential([layer_from_config(x) for x in c["layers"]]))
register_layer("MLP", lambda c: MLP(
    [int(s) for s in c["sizes"]], activation=str(c["activation"]),
    output_activation=c["output_activation"], init="zeros", bias=bool(c["bias"]),
    dtype=str(c["dtype"]), dropout=float(c.get("dropout", 0.0)), norm=c.get("norm")))
