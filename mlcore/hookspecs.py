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
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["hookspec", "hookimpl", "PROJECT", "ENTRY_POINT_GROUP", "ActivationFn", "LossFn"]

PROJECT = "mlcore"
"""The pluggy project name; hook markers of plugins must use it."""

ENTRY_POINT_GROUP = "mlcore"
"""The entry-point group third-party distributions declare their plugin modules in."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@runtime_checkable
class ActivationFn(Protocol):
    """What an activation factory returns (element-wise unless documented otherwise)."""

    def forward(self, x: Any) -> Any:
        """y = f(x), in the namespace, device and floating dtype of ``x``."""

    def backward(self, x: Any, y: Any, dy: Any) -> Any:
        """dx = dy · f'(x), the vector-Jacobian product; ``y`` is ``forward(x)``."""


@runtime_checkable
class LossFn(Protocol):
    """What a loss factory returns."""

    def forward(self, pred: Any, target: Any) -> Any:
        """The loss: a 0-d array (per-sample values when ``reduction="none"``)."""

    def backward(self, pred: Any, target: Any) -> Any:
        """d forward(pred, target) / d pred, same shape and dtype as ``pred``.

        With ``reduction="none"`` it is the gradient of the *sum* of the per-sample values.
        """


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
def mlcore_activations() -> Mapping[str, Callable[..., Any]]:
    """Return ``{name: factory}`` for the activations this plugin provides.

    ``factory(**params)`` returns an object with ``forward(x) -> y`` and
    ``backward(x, y, dy) -> dx``, both written against the Array API namespace of their
    inputs (``array_api_compat.array_namespace(x)``). Names are lower-case identifiers;
    a name provided by two plugins is an error at lookup, naming both distributions.
    """
    raise NotImplementedError


@hookspec
def mlcore_losses() -> Mapping[str, Callable[..., Any]]:
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

    ``factory(params, lr=..., **options)`` returns a :class:`mlcore.optim.Optimizer` over the
    list of :class:`~mlcore.layers.Parameter` ``params``; ``fit(optimizer=name)`` and
    :func:`mlcore.optim.get_optimizer` build it by name (``lr`` is passed only when given).
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def mlcore_kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """Return a fused kernel ``name`` for arrays of the namespace ``xp``, or None.

    An optional speed-up, asked once when the object that would use it is built (never per
    call): the core always has a plain Array API version of the same computation and runs
    it when every plugin returns None (array-api-strict, for one, never provides kernels).
    A kernel must give the plain version's results (the tests compare them: bitwise, or to
    a few ulp of the operands where a kernel documents a fused multiply-add) and must not
    change the inputs it does not document as updated. The
    first non-None answer wins. Kernel names and signatures the core asks for:

    ``"adam_update"``: ``kernel(p, g, m, v, b1, b2, eps, scale) -> None`` updates the
    parameter ``p`` and the scaled moments ``m``, ``v`` (arrays of one shape and dtype) in
    place, exactly as :class:`mlcore.optim.Adam` does in plain Array API:
    ``m = b1 m + g; v = b2 v + g*g; p -= m / ((sqrt(v) + eps) * scale)`` (``eps`` and
    ``scale`` are Python floats already folding in the bias corrections). ``g`` is read
    only. NumPy's version works through the arrays in cache-sized blocks, so the ten passes
    read memory once instead of ten times.

    ``"sgd_update"``: ``kernel(p, g, lr) -> None`` does ``p -= lr * g`` in place
    (:class:`mlcore.optim.SGD`'s last line; ``g`` already holds momentum and weight decay).
    NumPy's runs large parameters through BLAS ``axpy`` (one rounding instead of two).

    ``"sigmoid_binary_cross_entropy"``, ``"softmax_cross_entropy"``: the fused
    loss-from-logits kernels of :mod:`mlcore._lossplan`, same signature
    ``kernel(xp, z, t, smoothing=0.0, grad=True) -> (mean loss, gradient or None)``, used
    when training fuses a sigmoid / softmax output with its cross-entropy. NumPy provides
    the sigmoid one (NumPy's ``sum`` wrapper costs more than the rest on a tiny batch).
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def mlcore_compile_step(backend: Backend, step: Callable[..., Any]) -> Callable[..., Any] | None:
    """Return a compiled version of the training step ``step`` for ``backend``, or None.

    ``step(params: tuple, state: tuple, X, y) -> (new_params: tuple, new_state: tuple,
    loss)`` is a pure function the core builds from the model, the loss and the optimiser:
    ``params`` are the parameters' arrays, ``state`` the optimiser's (its step count
    included, as a 0-d array, so a compiled step computes the bias corrections from it on
    every call), ``X`` and ``y`` one batch; ``loss`` is a 0-d array. The callable returned
    has the same signature and gives the same results to float tolerance (JAX: ``jax.jit``
    with buffer donation; CuPy: one CUDA graph per input shape). It may specialise to the
    shapes and dtypes it sees. Asked once, when the training step is built; None (every
    plugin's answer by default) keeps the eager step.
    """
    raise NotImplementedError
