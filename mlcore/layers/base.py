"""The base of a plugin layer: the contract a layer keeps, and what the base gives for it.

A layer (built-in or plugin, :class:`~mlcore.layers.Layer`) keeps this contract:

``forward(X, xp=None, *, input_grad=True) -> (Y, backprop)``
    ``Y`` in the namespace, on the device and in the floating dtype of ``X`` (of the
    parameters, for a layer whose input is not floating: Embedding's indices); ``xp`` is
    the namespace the container resolved once per step (None when called directly: resolve
    it from ``X`` and the parameters). ``backprop(dY)`` *adds* each parameter's gradient
    (:meth:`~mlcore.layers.Parameter.accumulate`) and returns ``dX`` (None when
    ``input_grad`` is False). What backward needs lives in the closure. Pure apart from
    that: write into no input, read no value back to the host (``float(x)``, ``if x > 0``
    on an array), so the one training step can be traced (``jax.jit``).
``named_parameters()`` / ``named_buffers()``
    ``(name, Parameter)`` pairs: what the optimiser trains, and what is saved but not
    trained (running statistics). A buffer is replaced (``holder.value = new``) by the
    forward pass in training mode, never written in place.
``training`` / ``modal``
    the mode (set by the model's ``train()`` / ``eval()``); ``modal = True`` when the layer
    behaves differently in the two (noise, running statistics).
``config()`` / ``from_config(config)``
    the architecture as JSON data, ``{"type": <registered name>, **hyperparameters}``, and
    the layer rebuilt from it (weights are loaded after); the class registered under that
    name through the ``mlcore_layers`` hook. A model holding a layer of a class registered
    under no name is refused by ``save``, ``save_checkpoint`` and ``ModelCheckpoint``.
noise (optional: ``draw(shape, dtype)``, ``active``, ``noise``)
    a layer that needs fresh randomness every training step (Dropout, GaussianNoise) draws
    it outside the step: the step calls ``draw((N, width), dtype)`` with the shape of the
    layer's input (the width follows the ``out_features`` of the layers before it) and sets
    ``noise`` for the forward pass, so an eager and a compiled step with one seed agree.

:class:`LayerBase` gives the bookkeeping: ``self.backend`` and the parameter dtype
(``dtype=None``: float32), parameters and buffers by name (:meth:`add_parameter`,
:meth:`add_buffer`), sub-layers (:meth:`sublayers`: their parameters, buffers and modes are
the container's, named ``<name>.<inner name>``), ``config()`` from :meth:`get_config` and
``from_config`` calling the constructor with it. :func:`mlcore.testing.check_layer` proves a
layer keeps the contract.
"""

from __future__ import annotations

from typing import Any

from ..arrays.checks import seed as check_seed
from ..backend import Backend, RandomSource, get_backend
from ..init import Initializer, get_initializer
from ..types import DType
from .core import Layer, Parameter, dtype_name, on_device, resolve_dtype

__all__ = ["LayerBase", "all_layers"]


class LayerBase(Layer):
    """A layer written as a plugin (see the module for the contract).

    Set ``name`` (the registered type name, written as ``"type"`` in a model file), call
    ``super().__init__(dtype=dtype)``, create parameters with :meth:`add_parameter`, write
    :meth:`forward` and :meth:`get_config` (the constructor's keyword arguments as JSON
    data). ``differentiable_input = False`` declares an input that has no gradient (integer
    indices): ``backprop`` then returns None and the kit does not differentiate by ``X``.
    """

    name = ""
    differentiable_input = True

    def __init__(self, *, dtype: DType | str | None = None) -> None:
        backend = get_backend()
        self.backend: Backend = backend
        self.param_dtype = resolve_dtype(backend.xp, dtype)
        self._params: dict[str, Parameter] = {}
        self._buffers: dict[str, Parameter] = {}

    # -- parameters, buffers, sub-layers ------------------------------------------------------
    def add_parameter(self, name: str, shape: tuple[int, ...],
                      init: str | Initializer = "zeros", *,
                      rng: RandomSource | None = None, seed: int | None = None) -> Parameter:
        """A trainable parameter of ``shape`` on the layer's backend and device, in its
        dtype, initialised by ``init`` (a name of :mod:`mlcore.init` or a callable)."""
        self._params[name] = self._new(shape, init, rng, seed)
        return self._params[name]

    def add_buffer(self, name: str, shape: tuple[int, ...], init: str | Initializer = "zeros",
                   ) -> Parameter:
        """Saved, not trained state (a running statistic) of ``shape``."""
        self._buffers[name] = self._new(shape, init, None, None)
        return self._buffers[name]

    def _new(self, shape: tuple[int, ...], init: str | Initializer, rng: RandomSource | None,
             seed: int | None) -> Parameter:
        b = self.backend
        source = rng if rng is not None else b.rng(check_seed(seed))
        with on_device(b.device):
            return Parameter(get_initializer(init)(shape, self.param_dtype, source, b))

    def sublayers(self) -> list[tuple[str, Layer]]:
        """``(name, layer)`` of the layers this one runs (a residual block's inner stack)."""
        return []

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        own = list(self._params.items())
        return own + [(f"{n}.{k}", p) for n, sub in self.sublayers()
                      for k, p in sub.named_parameters()]

    def named_buffers(self) -> list[tuple[str, Parameter]]:
        own = list(self._buffers.items())
        return own + [(f"{n}.{k}", p) for n, sub in self.sublayers()
                      for k, p in sub.named_buffers()]

    # -- the architecture -----------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments as JSON data (default: none)."""
        return {}

    def config(self) -> dict[str, Any]:
        if not self.name:
            raise NotImplementedError(f"{type(self).__name__} sets no name (its registered "
                                      f"layer type)")
        return {"type": self.name, **self.get_config()}

    @property
    def dtype_name(self) -> str:
        """``"float32"`` or ``"float64"``: the parameters' dtype, for :meth:`get_config`."""
        return dtype_name(self.backend.xp, self.param_dtype)

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except Exception:  # noqa: BLE001 - a repr must not fail
            args = ""
        return f"{type(self).__name__}({args})"


def all_layers(layer: Layer) -> list[Layer]:
    """``layer`` and every layer it runs (sub-layers, a stack's layers), depth first."""
    found, todo = [], [layer]
    while todo:
        current = todo.pop()
        found.append(current)
        inner = getattr(current, "layers", None) if not hasattr(current, "sublayers") else [
            s for _, s in current.sublayers()]
        todo.extend(reversed(list(inner or [])))
    return found
