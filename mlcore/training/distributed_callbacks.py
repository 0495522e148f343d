"""Callbacks in a distributed fit: decided on rank 0, obeyed by every process.

Only rank 0 runs the callbacks, so a checkpoint or a CSV log is written once. After each
hook, rank 0's decisions travel to the others in one small broadcast: whether to stop
(``model.stop_training``), the optimiser's learning rate (a schedule, ReduceLROnPlateau)
and the epoch's logs as the callbacks left them (an ``lr`` entry), so every process keeps
the same history and takes the same steps. At the end of training rank 0's weights are
broadcast once more, in case a callback changed them (EarlyStopping's
``restore_best_weights``).
"""

from __future__ import annotations

from typing import Any

from ..layers.stack import LayerStack

__all__ = ["MainCallbacks"]

_BATCH_HOOKS = ("on_batch_begin", "on_batch_end")


class MainCallbacks:
    """Stands in for ``fit``'s callback list (``call(hook, *args)``, ``batch_hooks``) on
    every process of a distributed fit."""

    def __init__(self, hooks: Any, dp: Any, model: LayerStack, optimizer: Any) -> None:
        self.hooks, self.dp, self.model, self.optimizer = hooks, dp, model, optimizer
        # per-batch hooks (and their broadcasts) only if some process's callbacks use them
        self.batch_hooks = any(dp.comm.allgather_object(bool(getattr(hooks, "batch_hooks",
                                                                      False))))

    def __bool__(self) -> bool:
        return True

    def call(self, hook: str, *args: Any) -> None:
        if hook in _BATCH_HOOKS and not self.batch_hooks:
            return
        if self.dp.rank == 0 and self.hooks:
            self.hooks.call(hook, *args)
        logs = args[-1] if args and isinstance(args[-1], dict) else None
        state = {"stop": bool(getattr(self.model, "stop_training", False)),
                 "lr": self.optimizer.lr, "logs": None if logs is None else dict(logs)}
        state = self.dp.comm.broadcast_object(state if self.dp.rank == 0 else None, 0,
                                              **self.dp._named(f"the callbacks' {hook}"))
        self.model.stop_training = state["stop"]
        self.optimizer.lr = state["lr"]
        if logs is not None and state["logs"] is not None:
            logs.clear()
            logs.update(state["logs"])
        if hook == "on_train_end":
            self.dp.broadcast_parameters(self.model.parameters())
