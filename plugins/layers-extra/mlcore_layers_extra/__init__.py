"""Extra layers for mlcore: Residual, GaussianNoise, Embedding, GatedDense (see README.md).

Each is an :class:`mlcore.plugin.LayerBase`: ``forward(X, xp, input_grad=...)`` returns the
output and the function that backpropagates through the call, written once against the
Array API namespace ``xp`` of the inputs; registered by type name through the
``mlcore_layers`` hook, so a model holding them saves, loads and checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from array_api_compat import array_namespace, device

from mlcore import InvalidParameterError, ShapeError
from mlcore.layers import chain
from mlcore.plugin import Backprop, Layer, LayerBase, hookimpl, layer_from_config, sigmoid

__all__ = ["Residual", "GaussianNoise", "Embedding", "GatedDense", "mlcore_layers"]


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(
            f"{owner} {name} must be a positive integer, received {value!r}.", value)
    return int(value)


def _namespace(X: Any, xp: Any) -> Any:
    return xp if xp is not None else array_namespace(X)


class Residual(LayerBase):
    """``Y = X + f(X)``, ``f`` the inner layers in a row; ``dX = dY + f'(X)ᵀ dY``.

    The inner layers must keep the width (their output has ``X``'s shape). A layer that
    draws noise per step (Dropout, GaussianNoise) is refused inside: place it before or
    after the block, where the training step hands it its noise.
    """

    name = "Residual"

    def __init__(self, layers: Sequence[Layer]) -> None:
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise InvalidParameterError(
                    f"Residual expects mlcore layers; item {i} is {type(layer).__name__}.",
                    layer)
            if callable(getattr(layer, "draw", None)):
                raise InvalidParameterError(
                    f"Residual cannot hold {type(layer).__name__} (item {i}): it draws noise "
                    f"every step, which the training step hands only to the model's own "
                    f"layers. Put it before or after the Residual block.", layer)
        if self.layers and hasattr(self.layers[0], "backend"):
            self.backend = self.layers[0].backend
        params = self.parameters()
        if params:
            self.param_dtype = params[0].value.dtype
        self.modal = any(getattr(layer, "modal", False) for layer in self.layers)

    def sublayers(self) -> list[tuple[str, Layer]]:
        return [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]

    def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> tuple[Any, Backprop]:
        xp = _namespace(X, xp)
        F, backprop_f = chain(self.layers, X, xp, True)
        if tuple(F.shape) != tuple(X.shape):
            raise ShapeError(
                f"Residual's inner layers map input of shape {tuple(X.shape)} to "
                f"{tuple(F.shape)}; they must keep the shape (Y = X + f(X)).", X)

        def backprop(dY: Any) -> Any:
            dX = backprop_f(dY)
            return dY + dX if input_grad else None

        return X + F, backprop

    def get_config(self) -> dict[str, Any]:
        return {"layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Residual:
        return cls([layer_from_config(c) for c in config["layers"]])


class GaussianNoise(LayerBase):
    """Training: ``Y = X + stddev · ε``, ``ε ~ N(0, 1)``; inference: ``Y = X``; ``dX = dY``.

    ``ε`` is drawn from the backend's random source (``seed``) outside the training step,
    which hands it in as ``noise`` (as Dropout's mask), so an eager and a compiled step with
    one seed add the same noise.
    """

    name = "GaussianNoise"
    modal = True

    def __init__(self, stddev: float = 0.1, seed: int | None = None) -> None:
        super().__init__()
        if isinstance(stddev, bool) or not isinstance(stddev, int | float) or \
                not 0.0 <= stddev < float("inf"):
            raise InvalidParameterError(
                f"GaussianNoise stddev must be a finite number >= 0, received {stddev!r}.",
                stddev)
        self.stddev, self.seed = float(stddev), seed
        self.rng = self.backend.rng(seed)
        self.noise: Any = None  # set by the training step for the next forward pass

    @property
    def active(self) -> bool:
        return self.training and self.stddev > 0.0

    def draw(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Standard normal noise for an input of ``shape`` (None when inactive)."""
        return self.rng.normal(0.0, 1.0, shape, dtype) if self.active else None

    def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> tuple[Any, Backprop]:
        if not self.active:
            return X, (lambda dY: dY if input_grad else None)
        eps = self.noise if self.noise is not None else self.draw(tuple(X.shape), X.dtype)
        return X + self.stddev * eps, (lambda dY: dY if input_grad else None)

    def get_config(self) -> dict[str, Any]:
        return {"stddev": self.stddev, "seed": self.seed}


def _standard_normal(shape: tuple[int, ...], dtype: Any, rng: Any, backend: Any) -> Any:
    return rng.normal(0.0, 1.0, shape, dtype)


class Embedding(LayerBase):
    """Integer indices (N,) or (N, input_length) to rows of ``weight``, flattened to
    (N, input_length · embedding_dim). Indices may come as integer-valued floats (``fit``
    hands a model its inputs in the parameters' dtype). ``dweight = onehot(i)ᵀ dY``; the
    indices have no gradient (``backprop`` returns zeros, or None for a first layer)."""

    name = "Embedding"
    differentiable_input = False

    def __init__(self, num_embeddings: int, embedding_dim: int, input_length: int = 1, *,
                 seed: int | None = None, dtype: Any = None) -> None:
        super().__init__(dtype=dtype)
        self.num_embeddings = _positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = _positive_int("Embedding", "embedding_dim", embedding_dim)
        self.input_length = _positive_int("Embedding", "input_length", input_length)
        self.out_features = self.input_length * self.embedding_dim
        self.weight = self.add_parameter(
            "weight", (self.num_embeddings, self.embedding_dim), _standard_normal, seed=seed)

    def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> tuple[Any, Backprop]:
        xp = _namespace(X, xp)
        W = self.weight.value
        n = int(X.shape[0])
        if X.ndim not in (1, 2) or (X.ndim == 2 and X.shape[1] != self.input_length) or \
                (X.ndim == 1 and self.input_length != 1):
            raise ShapeError(
                f"Embedding expected indices of shape (N, {self.input_length})"
                f"{' or (N,)' if self.input_length == 1 else ''}, received shape "
                f"{tuple(X.shape)}.", X)
        idx = xp.astype(xp.reshape(X, (-1,)), xp.int32)
        Y = xp.reshape(xp.take(W, idx, axis=0), (n, self.out_features))

        def backprop(dY: Any) -> Any:
            classes = xp.arange(self.num_embeddings, dtype=xp.int32, device=device(W))
            onehot = xp.astype(idx[:, None] == classes[None, :], W.dtype)
            rows = xp.reshape(dY, (n * self.input_length, self.embedding_dim))
            self.weight.accumulate(xp.matrix_transpose(onehot) @ rows)
            return xp.zeros_like(X) if input_grad else None

        return Y, backprop

    def get_config(self) -> dict[str, Any]:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "input_length": self.input_length, "dtype": self.dtype_name}


class GatedDense(LayerBase):
    """The gated linear unit: ``Y = A · σ(B)``, ``A = X Wᵀ + b``, ``B = X Vᵀ + c``.

    ``dA = dY σ(B)``, ``dB = dY A σ(B)(1 - σ(B))``; ``dX = dA W + dB V``.
    """

    name = "GatedDense"

    def __init__(self, in_features: int, out_features: int, *, seed: int | None = None,
                 dtype: Any = None) -> None:
        super().__init__(dtype=dtype)
        self.in_features = _positive_int("GatedDense", "in_features", in_features)
        self.out_features = _positive_int("GatedDense", "out_features", out_features)
        rng = self.backend.rng(seed)
        shape = (self.out_features, self.in_features)
        self.weight = self.add_parameter("weight", shape, "glorot_uniform", rng=rng)
        self.bias = self.add_parameter("bias", (self.out_features,))
        self.gate_weight = self.add_parameter("gate_weight", shape, "glorot_uniform", rng=rng)
        self.gate_bias = self.add_parameter("gate_bias", (self.out_features,))

    def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> tuple[Any, Backprop]:
        xp = _namespace(X, xp)
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ShapeError(
                f"GatedDense expected input with {self.in_features} features, received shape "
                f"{tuple(X.shape)}.", X)
        W, V = self.weight.value, self.gate_weight.value
        A = X @ xp.matrix_transpose(W) + self.bias.value
        S = sigmoid(xp, X @ xp.matrix_transpose(V) + self.gate_bias.value)

        def backprop(dY: Any) -> Any:
            dA = dY * S
            dB = dY * A * S * (1.0 - S)
            self.weight.accumulate(xp.matrix_transpose(dA) @ X)
            self.bias.accumulate(xp.sum(dA, axis=0))
            self.gate_weight.accumulate(xp.matrix_transpose(dB) @ X)
            self.gate_bias.accumulate(xp.sum(dB, axis=0))
            return dA @ W + dB @ V if input_grad else None

        return A * S, backprop

    def get_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "dtype": self.dtype_name}


@hookimpl
def mlcore_layers() -> dict[str, type[LayerBase]]:
    return {"Residual": Residual, "GaussianNoise": GaussianNoise, "Embedding": Embedding,
            "GatedDense": GatedDense}
