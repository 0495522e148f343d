"""Mini-batches for ``fit``: :func:`batches` over arrays that are in memory (or memory-mapped).

``fit`` also takes any iterable of ``(X_batch, y_batch)`` pairs in place of ``X, y``: a
generator *function* (called again each epoch), a list, a ``torch.utils.data.DataLoader`` or
the :class:`Batches` below, each iterated once per epoch, so data that does not fit in memory
streams from disk. Each batch is converted at ``fit``'s boundary as ``X, y`` would be.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Protocol

from .arrays.checks import integer
from .errors import ShapeError

__all__ = ["Batches", "batches", "Rows"]


class Rows(Protocol):
    """What :class:`Batches` needs of ``X`` and ``y``: a length and rows taken by a list of
    indices or a slice (NumPy arrays and memmaps, PyTorch tensors, ...)."""

    def __len__(self) -> int: ...
    def __getitem__(self, rows: list[int] | slice, /) -> object: ...


class Batches:
    """Re-iterable ``(X[rows], y[rows])`` batches; each iteration is one epoch.

    With ``shuffle=True`` each epoch takes a new order from one ``random.Random(seed)``
    stream, so the order advances from epoch to epoch (and across ``fit`` calls) while a
    fixed ``seed`` repeats the whole sequence. Rows are taken with ``X[list_of_rows]``
    (NumPy arrays and memmaps, PyTorch tensors, ...): only one batch is in memory at a time.
    """

    def __init__(self, X: Rows, y: Rows, batch_size: int = 32, shuffle: bool = True,
                 seed: int | None = None) -> None:
        batch_size = integer("batch_size", batch_size, 1, example="batch_size=32")
        n, m = len(X), len(y)
        if n != m or n == 0:
            raise ShapeError(f"X and y must hold the same number (>= 1) of samples; received "
                             f"{n} and {m}.", (X, y))
        self.X, self.y, self.n = X, y, n
        self.batch_size, self.shuffle = batch_size, shuffle
        self._random = random.Random(seed)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[object, object]]:
        order = list(range(self.n))
        if self.shuffle:
            self._random.shuffle(order)
        for start in range(0, self.n, self.batch_size):
            if self.shuffle:
                rows: list[int] | slice = order[start:start + self.batch_size]
            else:
                rows = slice(start, start + self.batch_size)
            yield self.X[rows], self.y[rows]


def batches(X: Rows, y: Rows, batch_size: int = 32, shuffle: bool = True,
            seed: int | None = None) -> Batches:
    """``(X_batch, y_batch)`` pairs for ``fit``; see :class:`Batches`."""
    return Batches(X, y, batch_size=batch_size, shuffle=shuffle, seed=seed)
