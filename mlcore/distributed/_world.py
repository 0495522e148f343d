"""The job's processes: whether MPI launched this one, and MPI itself (imported lazily).

A process that no MPI launcher started (``python script.py``) is rank 0 of 1 and never
imports mpi4py. One started by ``mpiexec``, ``mlcore launch`` or SLURM's ``srun`` (found by
the variables those launchers set, read when :func:`init` first runs, never at import)
initialises MPI through mpi4py and works on a duplicate of ``COMM_WORLD``, so a user's own
MPI traffic never mixes with mlcore's.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from ..errors import DistributedError

__all__ = ["World", "world", "launched", "abort"]

# Set for every process by MPICH/Intel MPI (hydra), Open MPI, PMIx (Open MPI 5, srun --mpi=pmix)
# and PMI-2 (srun --mpi=pmi2).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size``; ``comm`` the MPI communicator
    (None for a single process) and ``mpi`` the ``mpi4py.MPI`` module (None likewise)."""

    rank: int
    size: int
    comm: Any = None
    mpi: Any = None


_WORLD: World | None = None


def launched() -> bool:
    """Whether an MPI launcher started this process (or ``MLCORE_DISTRIBUTED=mpi`` asks for
    MPI); ``MLCORE_DISTRIBUTED=off`` forces a single process."""
    choice = os.environ.get("MLCORE_DISTRIBUTED", "").strip().lower()
    if choice in ("off", "0", "none", "local"):
        return False
    if choice in ("mpi", "1", "on"):
        return True
    if choice:
        raise DistributedError(
            f"MLCORE_DISTRIBUTED must be 'mpi' or 'off' (or unset: MPI when a launcher "
            f"started the process), received {choice!r}.", choice)
    return any(v in os.environ for v in _LAUNCHER_VARS)


def world() -> World:
    """The job, initialised on first use (see :func:`mlcore.distributed.init`)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = _start() if launched() else World(0, 1)
    return _WORLD


def _start() -> World:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(
            "This process was started by an MPI launcher (or MLCORE_DISTRIBUTED=mpi), but "
            "mpi4py is not installed. Install it with: pip install 'mlcore[mpi]' (brings "
            "mpi4py and the MPICH wheel), or unset MLCORE_DISTRIBUTED.", None) from exc
    comm = MPI.COMM_WORLD.Dup()
    found = World(comm.Get_rank(), comm.Get_size(), comm, MPI)
    if found.size > 1:
        _install_excepthook(found)
    return found


def abort(exc: BaseException | None = None, where: str = "") -> None:
    """Print why on stderr, then end every process of the job (``MPI_Abort``).

    Called when one process fails on its own (the others would wait for it forever in the
    next collective): they all stop within the launcher's kill time, with a non-zero status.
    """
    w = world()
    if exc is not None:
        text = "".join(traceback.format_exception(exc)).rstrip()
        sys.stderr.write(f"{text}\nmlcore.distributed: process {w.rank} of {w.size} failed"
                         f"{' in ' + where if where else ''}: {type(exc).__name__}: {exc}\n"
                         f"mlcore.distributed: stopping all {w.size} processes (MPI_Abort).\n")
        sys.stderr.flush()
    if w.comm is not None:
        w.comm.Abort(1)


def _install_excepthook(w: World) -> None:
    """An uncaught exception on any process ends the job instead of leaving the others
    waiting in a collective (what ``python -m mpi4py`` does, for plain ``python`` too)."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            previous(kind, exc, tb)
            return
        abort(exc.with_traceback(tb), "an uncaught exception")

    sys.excepthook = hook
