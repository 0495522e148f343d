"""What each process of ``mlcore launch`` runs: ``python -m mlcore.distributed._run
SCRIPT [args]`` (or ``-m MODULE``).

Before the script: this process's GPUs (``MLCORE_GPUS_PER_PROCESS=N``, set by ``mlcore launch
--gpus-per-process N``: ``CUDA_VISIBLE_DEVICES`` becomes the N devices of its local rank).
Then mpi4py's runner, as ``python -m mpi4py`` (an uncaught exception ends the job with
``MPI_Abort``). At exit, rank 0 warns when the script never joined the job (no distributed
fit, no :func:`mlcore.distributed.init`): its processes then each ran alone, as copies.
"""

from __future__ import annotations

import atexit
import os
import sys

from ..errors import DistributedError
from . import _world

__all__ = ["main", "place_gpus"]

GPUS_VARIABLE = "MLCORE_GPUS_PER_PROCESS"
_LOCAL_RANK_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                    "PMI_RANK")


def place_gpus(env: dict[str, str] | os._Environ[str]) -> str | None:
    """Set ``CUDA_VISIBLE_DEVICES`` in ``env`` to the ``MLCORE_GPUS_PER_PROCESS`` devices of
    this process's local rank (taken from an existing ``CUDA_VISIBLE_DEVICES`` list, else
    numbered from 0); the value set, or None when not asked."""
    text = env.get(GPUS_VARIABLE, "").strip()
    if not text:
        return None
    per = int(text)
    local = next((int(env[v]) for v in _LOCAL_RANK_VARS if env.get(v, "").isdigit()), 0)
    listed = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if listed and (local + 1) * per > len(listed):
        raise DistributedError(
            f"--gpus-per-process {per}: process {local} on this machine needs devices "
            f"{local * per} to {(local + 1) * per - 1} of CUDA_VISIBLE_DEVICES="
            f"{','.join(listed)}, which lists {len(listed)}. Start fewer processes per "
            f"machine, or list more devices.", listed)
    chosen = listed[local * per:(local + 1) * per] if listed else \
        [str(d) for d in range(local * per, (local + 1) * per)]
    env["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    return env["CUDA_VISIBLE_DEVICES"]


def _warn_if_never_joined() -> None:
    size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
    first = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == "0"
    if _world._WORLD is None and first and size.isdigit() and int(size) > 1:
        sys.stderr.write(
            f"mlcore launch: warning: the script ran in {size} processes but never joined "
            f"the job (no fit(..., distributed=True), no mlcore.distributed.init()), so "
            f"each process ran it alone, as {size} copies. Pass distributed=True to fit, "
            f"or run the script with plain python.\n")
        sys.stderr.flush()


def main() -> None:
    place_gpus(os.environ)
    atexit.register(_warn_if_never_joined)
    from mpi4py.run import main as run

    run()


if __name__ == "__main__":
    main()
