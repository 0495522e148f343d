"""The eager executor of the one training step (:mod:`.step`): the halves run on the
parameters' own arrays, the optimiser's update in place through the backend's kernel where
one is offered, the results written back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..arrays.namespace import namespace
from ..errors import NonFiniteError
from ..types import Array, Namespace
from .materialize import settler
from .step import BackwardHook, Batch, TrainStep

__all__ = ["EagerStep"]


class EagerStep:
    """The eager executor: ``step(X, y, xp=None, w=None) -> (loss, output)``.

    ``guard(loss) -> bool`` (fit's non-finite policy) runs between the halves: False skips
    the update, an error stops before it. ``sync(params, rows)`` (a distributed fit)
    replaces each parameter's ``grad`` by the mean over the processes, between the halves.
    A lazy backend's ``materialize`` runs after the update (:mod:`mlcore._materialize`).
    In a distributed fit a process whose loss is skipped under ``"warn"`` still takes part
    in the average, with no rows: every process takes the same update. ``hook`` (a
    distributed fit that overlaps its allreduces with backward) is passed to
    :meth:`TrainStep.backward`; ``sync`` then completes what it started.
    """

    def __init__(self, ts: TrainStep, *, guard: Any = None,
                 sync: Callable[[list[Any], int], None] | None = None,
                 hook: BackwardHook | None = None) -> None:
        self.ts, self.opt, self.guard, self.sync, self.hook = ts, ts.opt, guard, sync, hook
        self.backend = ts.model.backend  # fit's epoch loop reads its host_batches
        self.settle = settler(ts.model.backend, ts.params, ts.opt)
        self.names = ("X", "y", "model parameters")

    def __call__(self, X: Array, y: Array, xp: Namespace | None = None,
                 w: Array | None = None) -> tuple[Any, Any]:
        ts = self.ts
        params = ts.params
        if xp is None:
            xp = namespace(X, y, params[0].value, names=self.names)
        if self.sync is not None and X.shape[0] == 0:  # this process's share is empty
            for p in params:
                p.grad = xp.zeros_like(p.value)
            self._apply(0)
            return xp.zeros((), dtype=X.dtype), None
        batch = Batch(X, y, w, ts.draw(X) if ts.noisy else ())
        if self.guard is None and not ts.holders and self.sync is None:  # the plain path
            loss, out = ts.backward(xp, batch)
            self.opt.step()
            if self.settle is not None:
                self.settle()
            return loss, out
        buffers = [h.value for h in ts.holders]
        try:
            loss, out = ts.backward(xp, batch, hook=self.hook)
            applied = self.guard is None or self.guard(loss) is not False
        except NonFiniteError:
            self._restore(buffers)
            raise
        if applied:
            self._apply(X.shape[0])
            return loss, out
        self._restore(buffers)  # a non-finite loss under on_nonfinite="warn": skipped
        if self.sync is not None:  # left out of the processes' average: no rows, no gradient
            for p in params:
                p.grad = xp.zeros_like(p.value)
            self._apply(0)
        return loss, out

    def _restore(self, buffers: list[Array]) -> None:
        for h, v in zip(self.ts.holders, buffers, strict=True):
            h.value = v

    def _apply(self, rows: int) -> None:
        """The update from the gradients in ``grad`` (averaged over the processes with
        ``sync``): ``optimizer.step()``, the rule, in place through the backend's kernel
        where offered (a subclass's own ``step`` is honoured)."""
        if self.sync is not None:
            self.sync(self.ts.params, rows)
        self.opt.step()
        if self.settle is not None:
            self.settle()
