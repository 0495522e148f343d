"""Training metrics in a distributed fit: every process's batches, in the global order.

A metric's state need not be a sum (AUC keeps every score, R² merges means), so instead of
reducing states, each process keeps a host copy of its slice of every batch (the model's
output and the labels), and at the end of the epoch all slices are gathered to every
process and fed to the real metrics in the order one process would have seen them (batch by
batch, rank by rank within a batch). Every process then reads the same values, equal to a
single process's up to float rounding. The cost is the epoch's outputs moving to the host
and between processes once per epoch: fine for millions of rows of a few outputs; leave
``metrics`` out for larger (the loss and accuracy are reduced as sums regardless).
"""

from __future__ import annotations

from typing import Any

from ..backend import Backend
from ..types import Array, Namespace

__all__ = ["GatheredTracker"]


class GatheredTracker:
    """Stands in for ``fit``'s metric tracker (``reset``, ``update``, ``results``)."""

    def __init__(self, tracker: Any, dp: Any, backend: Backend) -> None:
        self.tracker, self.dp, self.backend = tracker, dp, backend
        self.batches: list[tuple[Any, Any] | None] = []

    def reset(self) -> None:
        self.tracker.reset()
        self.batches = []

    def update(self, xp: Namespace, out: Array | None, y_true: Any) -> None:
        """Keep this process's slice (None when it had no rows of the batch)."""
        if out is None or out.shape[0] == 0:
            self.batches.append(None)
            return
        to_host = self.backend.to_numpy
        self.batches.append((to_host(out), to_host(y_true)))

    def results(self, prefix: str = "") -> dict[str, float]:
        every = self.dp.comm.allgather_object(self.batches,
                                              **self.dp._named("the metrics' gather"))
        xp = self.dp.xp
        self.tracker.reset()
        for j in range(len(every[0])):
            for rank_batches in every:
                part = rank_batches[j]
                if part is not None:
                    out, y = (self.backend.asarray(a) for a in part)
                    self.tracker.update(xp, out, y)
        self.batches = []
        return dict(self.tracker.results(prefix))
