"""NCCL collectives between GPUs for ``mlcore.distributed`` (one GPU per process).

MPI only hands NCCL's id from rank 0 to the others; the gradients then move GPU to GPU
(NVLink, PCIe or InfiniBand, as NCCL finds them) without touching host memory. Opt in with
``MLCORE_CUPY_NCCL=1``: this path has not yet been run on a multi-GPU machine, so the default
for CuPy arrays stays MPI over host memory (staged through ``to_numpy``). Give each process
its own device, e.g. ``MLCORE_DEVICE=cuda:$MPI_LOCALRANKID`` (NCCL refuses two ranks on one
GPU).
"""

from __future__ import annotations

from typing import Any

from mlcore.distributed.comm import Communicator

__all__ = ["NcclCommunicator"]


class NcclCommunicator(Communicator):
    """:class:`mlcore.distributed.Communicator` over ``cupy.cuda.nccl``, on the stream
    current on the backend's device."""

    def __init__(self, backend: Any, world: Any) -> None:
        super().__init__(backend, world)
        from cupy.cuda import nccl

        self._nccl = nccl
        uid = nccl.get_unique_id() if world.rank == 0 else None
        uid = world.comm.bcast(uid, root=0)
        with backend.device:
            self._comm = nccl.NcclCommunicator(world.size, uid, world.rank)
        self._ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    def _dtype(self, x: Any) -> int:
        nccl, name = self._nccl, str(x.dtype)
        codes = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                 "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64}
        if name not in codes:
            raise TypeError(f"NCCL collectives take {', '.join(codes)} arrays, received {name}.")
        return int(codes[name])

    def allreduce(self, x: Any, op: str = "sum", *, what: str = "an allreduce") -> Any:
        self._op(op)  # checks the name
        if self.size == 1:
            return x
        import cupy

        self.arrive(what)  # every process there, within the timeout, before NCCL waits
        with self.backend.device:
            x = cupy.ascontiguousarray(x)
            stream = cupy.cuda.get_current_stream().ptr
            self._comm.allReduce(x.data.ptr, x.data.ptr, x.size, self._dtype(x),
                                 self._ops[op], stream)
        return x

    def broadcast(self, x: Any, root: int = 0, *, what: str = "a broadcast") -> Any:
        if self.size == 1:
            return x
        import cupy

        self.arrive(what)
        with self.backend.device:
            x = cupy.ascontiguousarray(x)
            stream = cupy.cuda.get_current_stream().ptr
            self._comm.bcast(x.data.ptr, x.size, self._dtype(x), root, stream)
        return x
