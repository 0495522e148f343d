"""Data-parallel training across processes and machines, over MPI (``pip install
'mlcore[mpi]'``); see docs/distributed.md.

A process that no MPI launcher started is rank 0 of 1: these calls then cost nothing and
mpi4py is never imported. Start several with ``mlcore launch -n 4 script.py`` (or
``mpiexec``, or SLURM's ``srun``); ``model.fit(..., distributed=True)`` then trains one
model on all of them.
"""

from __future__ import annotations

from ._world import abort, launched, world
from .comm import Communicator, communicator
from .parallel import DEFAULT_BUCKET_BYTES, DataParallel

__all__ = ["init", "rank", "size", "is_main", "barrier", "abort", "launched", "Communicator",
           "communicator", "DataParallel", "DEFAULT_BUCKET_BYTES"]


def init() -> Communicator:
    """Join the job (MPI when a launcher started this process) and return the communicator
    of the selected backend. Safe to call more than once; the other functions call it."""
    return communicator()


def rank() -> int:
    """This process's number, 0 to ``size() - 1``."""

    return world().rank


def size() -> int:
    """How many processes the job has (1 without a launcher)."""

    return world().size


def is_main() -> bool:
    """Whether this is rank 0, the process that prints, logs and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process has reached this call."""
    communicator().barrier()
