"""Optimisers: one update rule each (:mod:`.base` has the protocol and the eager executor),
one module per optimiser with its rule (:mod:`.sgd`, :mod:`.adam`, :mod:`.rmsprop`,
:mod:`.adagrad`), and their registration by name through the ``mlcore_optimizers`` hook, as a
plugin's optimiser would be; ``fit(optimizer="rmsprop")`` and :func:`get_optimizer` look them
up by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import InvalidParameterError, UnknownNameError
from ..hookspecs import hookimpl
from ..parameter import Parameter
from ..plugins import canonical_name, registry
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .base import Optimizer, State, clip_gradients
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "State",
           "clip_gradients", "get_optimizer", "optimizer_names", "mlcore_optimizers"]

BUILTIN_OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


@hookimpl
def mlcore_optimizers() -> dict[str, Callable[..., Optimizer]]:
    """mlcore's own optimisers, registered like any plugin's."""
    return dict(BUILTIN_OPTIMIZERS)


def optimizer_names() -> list[str]:
    """The names :func:`get_optimizer` accepts: the built-ins and every plugin's."""
    return registry().names("optimizers")


def get_optimizer(optimizer: str | Optimizer, params: Iterable[Parameter],
                  lr: float | None = None) -> Optimizer:
    """An optimiser by name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, ``"adagrad"``
    or a plugin's, hook ``mlcore_optimizers``) over ``params``.

    ``lr=None`` keeps the optimiser's default (SGD 0.01, Adam/AdamW 0.001). An
    :class:`Optimizer` instance is returned as it is (then ``lr`` must be None).
    """
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise InvalidParameterError(
                "lr applies when optimizer is a name; this optimiser instance already has "
                f"lr={optimizer.lr}. Set it when building the optimiser.", lr)
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        raise InvalidParameterError(
            f"optimizer is the class {optimizer.__name__}; pass its name "
            f"(optimizer={optimizer.__name__.lower()!r}) or an instance "
            f"(optimizer=mlcore.{optimizer.__name__}(model.parameters())).", optimizer)
    cls = (registry().lookup("optimizers", canonical_name(optimizer))
           if isinstance(optimizer, str) else None)
    if cls is None:
        raise UnknownNameError(
            f"Unknown optimiser {optimizer!r}. Known: {', '.join(optimizer_names())}, or pass "
            f"an mlcore.optimizers.Optimizer instance.", optimizer)
    return cls(list(params)) if lr is None else cls(list(params), lr=lr)  # type: ignore[no-any-return]
