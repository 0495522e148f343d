"""``fit``'s options in one object, each checked in one place: :class:`FitOptions`.

:func:`mlcore.training.fit.fit` gathers its keyword arguments into a :class:`FitOptions`
first, so every option that can be judged on its own is refused before any data is
converted, any optimiser built or any process of a distributed fit contacted. What needs the
model or the data is checked where ``fit`` meets them: ``loss`` (against the model's
output), ``optimizer`` and ``lr`` (when the optimiser is built), ``sample_weight``,
``class_weight`` and ``validation_data`` (at the conversion boundary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..arrays.checks import is_real
from ..arrays.checks import seed as check_seed
from ..callbacks import Callback, check_callbacks
from ..distributed.parallel import DataParallel
from ..errors import InvalidParameterError
from ..hookspecs import LossFn
from ..layers.core import positive_int
from ..metrics import Metric
from ..optimizers import Optimizer
from ..types import ArrayLike
from .compiled import check_jit_compile
from .guards import check_on_nonfinite
from .loop import resolve_metrics
from .progress import check_verbose

__all__ = ["FitOptions"]


@dataclass(frozen=True)
class FitOptions:
    """Every option of :func:`~mlcore.training.fit.fit` (same names, same defaults), checked.

    Building one checks each option and stores it normalised (``epochs``, ``batch_size``,
    ``initial_epoch`` and ``steps_per_epoch`` as ``int``; ``callbacks`` as a list; a NumPy
    ``validation_split`` as a ``float``); a bad option raises
    :class:`~mlcore.errors.InvalidParameterError` with the message ``fit`` gives for it.
    ``metrics`` keeps what was passed (the names a distributed fit compares);
    ``found_metrics`` holds the metric objects it names.

    >>> FitOptions(loss="mse", epochs=3).epochs
    3
    """

    loss: str | LossFn
    optimizer: str | Optimizer = "adam"
    lr: float | None = None
    epochs: int = 1
    batch_size: int = 32
    shuffle: bool = True
    seed: int | None = None
    validation_data: tuple[ArrayLike, ArrayLike] | None = None
    validation_split: float = 0.0
    callbacks: Sequence[Callback] | None = None
    metrics: Sequence[str | Metric[Any]] | None = None
    sample_weight: ArrayLike = None
    class_weight: dict[int, float] | None = None
    initial_epoch: int = 0
    steps_per_epoch: int | None = None
    verbose: bool | int | str = "auto"
    distributed: bool | DataParallel = False
    on_nonfinite: str = "raise"
    jit_compile: bool | None = None
    found_metrics: list[Metric[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check every option, in the order ``fit`` always has, and store it normalised."""
        epochs = positive_int(self.epochs, "epochs")
        self._set(epochs=epochs, batch_size=positive_int(self.batch_size, "batch_size"),
                  initial_epoch=_initial_epoch(self.initial_epoch, epochs))
        self._set(callbacks=check_callbacks(self.callbacks), seed=check_seed(self.seed),
                  validation_split=_validation_split(self.validation_split,
                                                     self.validation_data))
        if self.steps_per_epoch is not None:
            self._set(steps_per_epoch=positive_int(self.steps_per_epoch, "steps_per_epoch"))
        check_on_nonfinite(self.on_nonfinite)
        _check_distributed(self.distributed)
        check_jit_compile(self.jit_compile)
        self._set(found_metrics=resolve_metrics(self.metrics))
        check_verbose(self.verbose)

    def _set(self, **values: object) -> None:
        """Store normalised values (the dataclass is frozen to everyone else)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)


def _initial_epoch(value: object, epochs: int) -> int:
    """``initial_epoch`` as an int >= 0 below ``epochs`` (epochs count from 0, as Keras)."""
    initial = 0 if value == 0 and not isinstance(value, bool) else positive_int(value,
                                                                                "initial_epoch")
    if initial >= epochs:
        raise InvalidParameterError(
            f"initial_epoch={initial} is not below epochs={epochs}, so fit would train "
            f"no epoch. epochs is the index of the last epoch plus one (as in Keras), not a "
            f"count: to train k more epochs from epoch {initial}, pass "
            f"epochs={initial} + k.", initial)
    return initial


def _validation_split(value: object, validation_data: object) -> object:
    """``validation_split`` (a NumPy float as a Python one): 0 or a fraction in [0, 1), and
    not together with ``validation_data``."""
    if is_real(value):
        value = float(value)
    if not value:
        return value
    if validation_data is not None:
        raise InvalidParameterError(
            "Pass validation_data or validation_split, not both.", value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 <= value < 1.0:
        raise InvalidParameterError(
            f"validation_split must be a fraction in [0, 1), received {value!r}.", value)
    return value


def _check_distributed(value: object) -> None:
    """``distributed`` is True, False (None: False) or a DataParallel."""
    if value is not None and not isinstance(value, bool | DataParallel):
        raise InvalidParameterError(
            f"distributed must be True, False or an mlcore.distributed.DataParallel, "
            f"received {value!r}.", value)
