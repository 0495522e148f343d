"""The training guard: ``fit`` stops at the first non-finite loss, before it does harm.

Each batch's loss is a 0-d array the step computes anyway; the guard reads it back as a
Python float (about 0.1 µs on NumPy; one small device-to-host read on a GPU) *before* the
backward pass and the update, so a NaN or infinite loss never reaches the weights. The
weights it stops at may still be useless (finite but huge, so that they gave this NaN), so
the model is put back to the last weights *known* to give finite losses: a copy taken at
the start of an epoch, once it has served one batch with a finite loss (else the copy
before it). Two preallocated copies serve, alternately, refreshed at the start of an epoch
once at least :data:`SNAPSHOT_BATCHES` batches ran since the last refresh (every epoch, or
every few epochs of a tiny data set): the guard costs one float per batch and at most one
in-place copy of the parameters per eight batches.

The error (:class:`~mlcore.errors.NonFiniteError`) names the epoch, the batch and the likely
cause: inputs of a large magnitude, a learning rate too large for them, or (before any
update) data outside the loss's domain. ``fit(..., on_nonfinite="warn")`` warns once and
skips every update whose loss is not finite; ``"ignore"`` turns the guard off (the updates
are applied). The eager and the compiled step follow the same policy
(:mod:`mlcore.training.step`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ..errors import InvalidParameterError, NonFiniteError
from ..layers.stack import LayerStack
from ..optimizers import Optimizer
from ..types import Array

__all__ = ["NonFiniteGuard", "make_guard", "check_on_nonfinite", "MODES"]

MODES = ("raise", "warn", "ignore")
SNAPSHOT_BATCHES = 8
_LARGE_INPUT = 1e4  # |X| beyond this, the input scale is named as a likely cause
_MODERATE_WEIGHT = 1e3  # finite weights below this did not diverge


class NonFiniteGuard:
    """Called with each batch's loss inside the training step (see the module)."""

    def __init__(self, model: LayerStack, X: Array | None, lr: float | None, mode: str) -> None:
        self.model, self.X, self.lr, self.mode = model, X, lr, mode
        self.optimizer: Any = None  # when set, its lr and eps are read for the message
        self.weighted = False  # sample or class weights scale the loss
        self.epoch, self.batch, self.updates = 0, 0, 0
        self.first_loss = self.last_loss = math.nan  # the first and last finite losses
        self._saved: list[list[Any]] = []  # the newest copy first, then the one before
        self._saved_at: list[int] = []  # the epoch each copy was taken at
        self._since = 0  # batches since the newest copy
        self._warned = False

    def start_epoch(self, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based): count batches from 1, refresh a copy when due."""
        self.epoch, self.batch = epoch, 0
        if self._saved and self._since < SNAPSHOT_BATCHES:
            return
        self._since = 0
        self._saved_at = [epoch, *self._saved_at[:1]]
        params = [p.value for p in self.model.parameters()]
        if len(self._saved) < 2:
            self._saved.insert(0, [self.model.namespace(v).asarray(v, copy=True)
                                   for v in params])
            return
        older = self._saved.pop()
        for i, (buf, v) in enumerate(zip(older, params, strict=True)):
            try:
                buf[...] = v
            except (TypeError, ValueError):  # an immutable array type
                older[i] = self.model.namespace(v).asarray(v, copy=True)
        self._saved.insert(0, older)

    def __call__(self, value: Any) -> bool:
        """Check one batch's loss: True to apply its update; False to skip it (a non-finite
        loss under ``"warn"``, which warns once per fit); raises under ``"raise"``."""
        self.batch += 1
        self._since += 1
        loss = float(value)
        if math.isfinite(loss):
            if not self.updates:
                self.first_loss = loss
            self.updates += 1
            self.last_loss = loss
            return True
        if self.mode == "warn":
            if not self._warned:
                self._warned = True
                warnings.warn(self._message(loss) + " Training goes on, skipping every update "
                              "whose loss is not finite (on_nonfinite='warn').",
                              RuntimeWarning, stacklevel=2)
            return False
        raise NonFiniteError(self._message(loss), loss)

    def check_validation(self, val_loss: float) -> None:
        """After an epoch: a non-finite validation loss stops training too."""
        if self.mode == "raise" and not math.isfinite(val_loss):
            raise NonFiniteError(
                f"The validation loss became {val_loss} after epoch {self.epoch + 1} while "
                f"the training loss stayed finite: the weights give non-finite outputs on "
                f"validation_data. {self._cause()}", val_loss)

    # -- the message ------------------------------------------------------------------------
    def _message(self, loss: float) -> str:
        where = f"epoch {self.epoch + 1}, batch {self.batch}"
        if self.updates == 0:
            weights = (" and the sample or class weights are moderate" if self.weighted
                       else "")
            return (f"The loss is {loss} at {where}, before any update: the data give a "
                    f"non-finite loss with the initial weights. {self._input_hint()}Check "
                    f"that the targets suit the loss, the inputs are finite and scaled"
                    f"{weights}. The model is unchanged.")
        return f"The loss became {loss} at {where}. {self._cause(loss)} {self._restore()}"

    def _input_hint(self) -> str:
        if self.X is None:  # streamed batches: no whole X to look at
            return ""
        xp = self.model.namespace(self.X)
        big = float(xp.max(xp.abs(self.X))) if self.X.shape[0] else 0.0
        if big > _LARGE_INPUT:
            return (f"The inputs reach |X| = {big:.3g}: standardise them (subtract the mean, "
                    f"divide by the standard deviation). ")
        return ""

    def _current_lr(self) -> float | None:
        """The rate in use now (a schedule or ReduceLROnPlateau may have changed it)."""
        lr = getattr(self.optimizer, "lr", self.lr)
        return None if lr is None else float(lr)

    def _cause(self, loss: float = math.inf) -> str:
        eps = getattr(self.optimizer, "eps", None)
        if eps is not None and float(eps) == 0.0:
            return ("Likely cause: the optimiser's eps=0: its update divides by a running "
                    "gradient magnitude that is 0 wherever a gradient has been 0 (0/0 = "
                    "NaN), whatever the learning rate. Pass eps=1e-8 (the default).")
        if math.isnan(loss) and self.last_loss <= 10.0 * abs(self.first_loss) \
                and self._nan_in_moderate_weights():
            return (f"Likely cause: a 0/0 or inf - inf in the step. The loss turned NaN "
                    f"without growing first (last finite loss {self.last_loss:.4g}, first "
                    f"{self.first_loss:.4g}), which a too-large learning rate does not do: "
                    f"check divisions in a custom loss, layer or optimiser (an eps of 0).")
        lr = self._current_lr()
        rate = f"lr={lr:g}" if lr is not None else "the learning rate"
        return (f"Likely cause: {self._input_hint()}{rate} is too large for this model and "
                f"data; try a learning rate 10 times smaller (this is the rate in use at "
                f"the failing batch, after any schedule).")

    def _nan_in_moderate_weights(self) -> bool:
        """Some weight is NaN while every finite one stays moderate: a NaN made from finite
        values (0/0), not weights that a too-large step blew up."""
        nan, biggest = False, 0.0
        for p in self.model.parameters():
            xp = self.model.namespace(p.value)
            finite = xp.isfinite(p.value)
            nan = nan or bool(xp.any(xp.isnan(p.value)))
            biggest = max(biggest, float(xp.max(xp.where(finite, xp.abs(p.value), 0.0))))
        return nan and biggest < _MODERATE_WEIGHT

    def _restore(self) -> str:
        """Put back the last weights known to give finite losses; say which."""
        back = 0 if self._since > 1 else 1  # the newest copy gave a batch a finite loss
        if back >= len(self._saved):
            return "The weights could not be restored."
        params = self.model.parameters()
        xp = self.model.namespace(params[0].value)
        for p, v in zip(params, self._saved[back], strict=True):
            p.set(xp.asarray(v, copy=True))
        return (f"The model is back at its weights from the start of epoch "
                f"{self._saved_at[back] + 1}, the last known to give finite losses.")


def make_guard(model: LayerStack, X: Array | None, opt: Optimizer, mode: Any,
               weighted: bool = False) -> NonFiniteGuard | None:
    """The guard for ``fit(on_nonfinite=mode)``, or None when it is off; its messages read
    ``opt``'s learning rate and eps when they are written."""
    check_on_nonfinite(mode)
    if mode == "ignore":
        return None
    guard = NonFiniteGuard(model, X, getattr(opt, "lr", None), mode)
    guard.optimizer, guard.weighted = opt, weighted
    return guard


def check_on_nonfinite(mode: object) -> None:
    """``fit``'s ``on_nonfinite`` must be one of :data:`MODES`."""
    if mode not in MODES:
        raise InvalidParameterError(
            f"on_nonfinite must be one of {', '.join(map(repr, MODES))}, received {mode!r}.",
            mode)
