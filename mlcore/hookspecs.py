"""Every hook mlcore calls, in one module (pluggy project name ``mlcore``).

A plugin is any module or object with functions marked by ``HookimplMarker("mlcore")``; it
need not import mlcore (pluggy matches the marker by project name). Third-party plugins are
found through the ``mlcore`` entry-point group; mlcore's own activations and losses are
registered through these same hooks, so they follow the path a stranger's plugin follows.

Each hook is called once per plugin, one plugin at a time, when mlcore first needs the kind
of object it provides (never at import). A plugin whose hook raises, or returns something
malformed, is recorded as failed and reported by ``mlcore info``; the others still load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import pluggy

from .types import Array, DType, Namespace, Step

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["hookspec", "hookimpl", "PROJECT", "ENTRY_POINT_GROUP", "ActivationFn", "LossFn",
           "ActivationKernels", "LossKernels", "LogitsLoss", "KernelSpec", "KERNELS"]

PROJECT = "mlcore"
"""The pluggy project name; hook markers of plugins must use it."""

ENTRY_POINT_GROUP = "mlcore"
"""The entry-point group third-party distributions declare their plugin modules in."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@runtime_checkable
class ActivationFn(Protocol):
    """What an activation factory returns (element-wise unless documented otherwise)."""

    def forward(self, x: Array) -> Array:
        """y = f(x), in the namespace, device and floating dtype of ``x``."""

    def backward(self, x: Array, y: Array, dy: Array) -> Array:
        """dx = dy · f'(x), the vector-Jacobian product; ``y`` is ``forward(x)``."""


@runtime_checkable
class LossFn(Protocol):
    """What a loss factory returns."""

    def forward(self, pred: Array, target: Array) -> Array:
        """The loss: a 0-d array (per-sample values when ``reduction="none"``)."""

    def backward(self, pred: Array, target: Array) -> Array:
        """d forward(pred, target) / d pred, same shape and dtype as ``pred``.

        With ``reduction="none"`` it is the gradient of the *sum* of the per-sample values.
        """


@runtime_checkable
class ActivationKernels(Protocol):
    """Optional, beside :class:`ActivationFn`: the bare formulas a model calls every step.

    An :class:`mlcore.Activation` layer inside a model (the model resolved the namespace
    ``xp`` once and checked its input at the boundary) calls these instead of the public,
    checked ``forward``/``backward``, for built-ins and plugins alike.
    :class:`mlcore.plugin.ActivationBase` derives the checked pair from them, so a plugin
    written on it has both. They do no validation: ``x`` is a floating array of ``xp``.
    """

    def forward_unchecked(self, xp: Namespace, x: Array) -> Array:
        """``forward(x)`` without checks."""

    def backward_unchecked(self, xp: Namespace, x: Array, y: Array, dy: Array) -> Array:
        """``backward(x, y, dy)`` without checks."""


@runtime_checkable
class LossKernels(Protocol):
    """Optional, beside :class:`LossFn`: what training calls without re-checking.

    :class:`mlcore.plugin.LossBase` provides all three around a loss's bare formulas.
    ``fit`` calls ``prepare_target`` once on the whole target (with the model's output
    width and dtype); when the loss is computed from logits (:class:`LogitsLoss`) it then
    calls ``value_and_grad_unchecked`` on every batch, and ``forward_unchecked`` to evaluate.
    """

    def prepare_target(self, xp: Namespace, target: Array, n_out: int | None,
                       dtype: DType) -> Array:
        """Validate a whole training target once; return it as the unchecked methods take it."""

    def forward_unchecked(self, xp: Namespace, pred: Array, target: Array) -> Array:
        """``forward(pred, target)`` for inputs already checked."""

    def value_and_grad_unchecked(self, xp: Namespace, pred: Array,
                                 target: Array) -> tuple[Array, Array]:
        """``(forward(pred, target), backward(pred, target))`` for inputs already checked."""


@runtime_checkable
class LogitsLoss(Protocol):
    """Optional: a loss that can be computed from the logits of an output activation.

    When a model ends in the activation ``logits_activation`` names, training skips that
    layer and runs ``logits_form()``, the same loss taking the logits z (a
    :class:`LossKernels` object): cross-entropy with ``softmax``, gradient
    ``softmax(z) - y``; binary cross-entropy with ``sigmoid``, gradient ``sigmoid(z) - y``.
    ``logits_form()`` returns the loss itself when it already takes logits. Only losses
    with ``reduction="mean"`` are fused.
    """

    logits_activation: str
    reduction: str

    def logits_form(self) -> LossKernels:
        """This loss, taking the logits of ``logits_activation`` as its ``pred``."""


class KernelSpec(NamedTuple):
    """One fused kernel the core may ask a backend for (:func:`mlcore_kernel`)."""

    signature: str
    """The call, with the parameter names a backend's function must use."""
    does: str
    """What it computes and which arguments it updates in place."""


KERNELS: Mapping[str, KernelSpec] = {
    "adam_update": KernelSpec(
        "kernel(p, g, m, v, b1, b2, eps, scale) -> None",
        "Updates the parameter p and the scaled moments m, v (arrays of one shape and "
        "dtype) in place, exactly as mlcore.optimizers.Adam does in plain Array API: "
        "m = b1 m + g; v = b2 v + g*g; p -= m / ((sqrt(v) + eps) * scale). eps and scale "
        "are Python floats already folding in the bias corrections; g is read only."),
    "sgd_update": KernelSpec(
        "kernel(p, g, lr) -> None",
        "p -= lr * g in place (mlcore.optimizers.SGD's last line; g already holds momentum and "
        "weight decay). May round p - lr g once (a fused multiply-add): a few ulp."),
    "batch_norm_forward": KernelSpec(
        "kernel(x, gamma, beta, eps) -> (y, xhat, mean, var, inv) or None",
        "BatchNorm's training forward over the N rows of x (N, F) (mlcore.BatchNorm, not "
        "synced), per feature: mean = mean(x), var = mean((x - mean)^2) (biased), inv = "
        "1 / sqrt(var + eps), xhat = (x - mean) inv, y = xhat gamma + beta; gamma, beta, "
        "mean, var and inv of shape (F,). New arrays, or None where the kernel does not take "
        "the inputs (dtype, layout, size): the core then runs its formula."),
    "batch_norm_backward": KernelSpec(
        "kernel(dy, xhat, gamma, inv) -> (dx, sum_dy_xhat, sum_dy) or None",
        "BatchNorm's training backward over the N rows of dy (N, F), from its forward's xhat "
        "and inv: sum_dy_xhat = sum(dy xhat), sum_dy = sum(dy) over the rows (the gradients "
        "of gamma and beta) and dx = (dy - sum_dy / N - xhat (sum_dy_xhat / N)) (gamma inv). "
        "New arrays, or None where the kernel does not take the inputs."),
    "softmax_cross_entropy": KernelSpec(
        "kernel(xp, z, t, smoothing=0.0, grad=True) -> (value, gradient or None) or None",
        "The mean cross-entropy of softmax(z) over the N rows of the logits z and its "
        "gradient (softmax(z) - y) / N, as mlcore.losses.CrossEntropy(from_logits=True) "
        "computes them; t is (N,) class indices (smoothed to (1 - s) one-hot + s / M) or "
        "(N, M) rows taken as they are. Asked for by that loss (mean reduction) in "
        "training, and with grad=False for its value. None: inputs it does not take."),
    **{name: KernelSpec(f"kernel({args}) -> array or None",
                        f"{does} (mlcore.activations.{cls}); a new array of the input's "
                        "shape and dtype, or None where the kernel does not take the inputs "
                        "(dtype, layout, size, axis): the core then runs its formula.")
       for name, args, cls, does in [
           ("softmax", "x, axis", "Softmax",
            "softmax(x) over axis: e^(x - max) / sum e^(x - max)"),
           ("softmax_backward", "y, dy, axis", "Softmax",
            "the softmax's vector-Jacobian product y (dy - sum(dy y, axis))"),
           ("log_softmax", "x, axis", "LogSoftmax",
            "log_softmax(x) over axis: (x - max) - log sum e^(x - max)"),
           ("log_softmax_backward", "y, dy, axis", "LogSoftmax",
            "log_softmax's vector-Jacobian product dy - e^y sum(dy, axis)"),
           ("sigmoid", "x", "Sigmoid", "1 / (1 + e^(-x)), x floored as mlcore.plugin.sigmoid"),
           ("sigmoid_backward", "y, dy", "Sigmoid", "dy (y (1 - y)) for y = sigmoid(x)"),
           ("tanh_backward", "y, dy", "Tanh", "dy (1 - y^2) for y = tanh(x)"),
           ("relu", "x", "ReLU", "maximum(x, 0)"),
           ("relu_backward", "x, dy", "ReLU", "dy (x > 0), the product kept (inf 0 is NaN)"),
           ("leaky_relu", "x, alpha", "LeakyReLU",
            "maximum(x, alpha x) for alpha <= 1, else minimum(x, alpha x)"),
           ("leaky_relu_backward", "x, dy, alpha", "LeakyReLU",
            "dy ((x > 0)(1 - alpha) + alpha), the slopes rounded in x's dtype"),
           ("step", "x", "Step", "1 where x > 0, else 0 (NaN gives 0), in x's dtype"),
       ]},
}
"""Every kernel name the core asks for or a backend offers, with its signature: the one
table the core (which asks for kernels only by these names) and the backends (tested
against it) share."""


@hookspec
def mlcore_backends() -> Sequence[Backend]:
    """Return the array backends this plugin provides.

    Called once, the first time a backend is needed. Each item must satisfy the
    :class:`mlcore.backend.Backend` protocol (``name``, ``xp``, ``device``, ``asarray``,
    ``to_numpy``, ``synchronize``, ``rng``, ``is_available``, ``unavailable_reason``,
    ``owns``). Building the objects must be cheap and must not fail when the array library
    is missing: report that through ``is_available()`` instead.
    """
    raise NotImplementedError


@hookspec
def mlcore_activations() -> Mapping[str, Callable[..., ActivationFn]]:
    """Return ``{name: factory}`` for the activations this plugin provides.

    ``factory(**params)`` returns an object with ``forward(x) -> y`` and
    ``backward(x, y, dy) -> dx``, both written against the Array API namespace of their
    inputs (``array_api_compat.array_namespace(x)``). Names are lower-case identifiers;
    a name provided by two plugins is an error at lookup, naming both distributions.
    """
    raise NotImplementedError


@hookspec
def mlcore_losses() -> Mapping[str, Callable[..., LossFn]]:
    """Return ``{name: factory}`` for the losses this plugin provides.

    ``factory(**params)`` returns an object with ``forward(pred, target) -> 0-d array``
    (an array of per-sample values when ``reduction="none"``) and
    ``backward(pred, target) -> d loss / d pred``, the gradient of exactly what forward
    returns. Factories should accept ``reduction`` in ``"mean"``, ``"sum"``, ``"none"``.
    """
    raise NotImplementedError


@hookspec
def mlcore_metrics() -> Mapping[str, Callable[..., Any]]:
    """Return ``{name: factory}`` for the metrics this plugin provides.

    ``factory(**params)`` returns an object (see :class:`mlcore.metrics.Metric`) with
    ``update(state, y_pred, y_true) -> state`` (``state`` is None before the first batch;
    the new state stays on the device, nothing is read back) and ``result(state) -> float``
    (the one read-back, once per epoch in ``fit``). The name is the history key.
    """
    raise NotImplementedError


@hookspec
def mlcore_optimizers() -> Mapping[str, Callable[..., Any]]:
    """Return ``{name: factory}`` for the optimisers this plugin provides.

    ``factory(params, lr=..., **options)`` returns a :class:`mlcore.optimizers.Optimizer` over the
    list of :class:`~mlcore.layers.Parameter` ``params``; ``fit(optimizer=name)`` and
    :func:`mlcore.optimizers.get_optimizer` build it by name (``lr`` is passed only when given).
    """
    raise NotImplementedError


@hookspec
def mlcore_layers() -> Mapping[str, type[Any]]:
    """Return ``{type name: layer class}`` for the layer types this plugin provides.

    Called once, the first time a layer type is looked up (saving, loading, a checkpoint,
    ``mlcore plugins``). The name is what the layer's ``config()`` writes as ``"type"`` (an
    identifier, compared exactly: ``"GaussianNoise"``); the class is usually a
    :class:`mlcore.plugin.LayerBase`, with ``config()`` and a classmethod
    ``from_config(config)`` rebuilding it (weights as initialised; a file's are loaded
    after), and optionally ``tensor_specs(config) -> {name: (shape, "float32" | "float64")}``
    so that a file is checked before the layer is built. mlcore's own layers (``Dense``,
    ``PReLU``, ``Activation``, ``Dropout``, ``LayerNorm``, ``BatchNorm``) are registered
    through this hook and cannot be replaced. A model holding a layer whose class is
    registered under no name cannot be saved (``save``, ``save_checkpoint`` and
    ``ModelCheckpoint`` refuse it, saying how to register it). The layer contract is in
    :mod:`mlcore.layers.base`; :func:`mlcore.testing.check_layer` checks it.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def mlcore_kernel(name: str, xp: Namespace) -> Callable[..., Any] | None:
    """Return a fused kernel ``name`` for arrays of the namespace ``xp``, or None.

    An optional speed-up, asked once when the object that would use it is built (never per
    call): the core always has a plain Array API version of the same computation and runs
    it when every plugin returns None (array-api-strict, for one, never provides kernels).
    A kernel must give the plain version's results (the tests compare them: bitwise, or to
    a few ulp of the operands where a kernel documents a fused multiply-add) and must not
    change the inputs it does not document as updated. The first non-None answer wins.
    The names and signatures are those of :data:`KERNELS` (``adam_update``,
    ``sgd_update``, ``batch_norm_forward``, ``batch_norm_backward``,
    ``softmax_cross_entropy`` and the activations' ``softmax``, ``softmax_backward``,
    ``log_softmax``, ``log_softmax_backward``, ``sigmoid``, ``sigmoid_backward``,
    ``tanh_backward``, ``relu``, ``relu_backward``, ``leaky_relu``,
    ``leaky_relu_backward``, ``step``); NumPy's backend provides the two updates,
    working through large arrays in cache-sized blocks or one compiled loop, so the passes
    read memory once, and, with Numba, the others as one compiled pass per row or over the
    array (BatchNorm's as three passes forward and two backward over the batch); torch's
    updates; CuPy's the updates and the cross-entropy,
    each in one launch. A built-in activation or loss asks for its kernel by
    name inside its own unchecked formula, which stays the one definition: the kernel is a
    fast path tested against it, and answering None (an input it does not take) runs the
    formula. A plugin's activations and losses are their own formulas
    (:class:`ActivationKernels`, :class:`LossKernels`).
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def mlcore_compile_step(backend: Backend, step: Step) -> Step | None:
    """Return a compiled version of the training step ``step`` for ``backend``, or None.

    ``step(params: tuple, state: tuple, X, y) -> (new_params: tuple, new_state: tuple,
    loss)`` is a pure function the core builds from the model, the loss and the optimiser
    (:mod:`mlcore.training.step`, where the layout of ``state`` is described): ``params`` are
    the parameters' arrays, ``state`` the learning rate, the optimiser's state (its step
    count included, as a 0-d array), the model's buffers and what the batch brings beyond
    ``X`` and ``y`` (sample weights, Dropout noise); ``loss`` is a 0-d array. The new state
    has the structure of the old. A distributed fit hands over its two halves (the
    gradients, then the update) as two such functions. The callable returned has the same
    signature and gives the same results to float tolerance (JAX: ``jax.jit`` with buffer
    donation; CuPy: one CUDA graph per input shape). It may specialise to the shapes and
    dtypes it sees. Asked once per backend with a step that is never run (whether the
    plugin compiles at all), then once per training step built; None (every plugin's
    answer by default) keeps the eager step.
    """
    raise NotImplementedError
