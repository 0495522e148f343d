"""A distributed fit compiles the training step's two halves: the same weights as eager."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
pytest.importorskip("mpi4py")


def test_compiled_halves_give_the_eager_weights_on_every_process(tmp_path: Path) -> None:
    """Two processes, four optimisers (clipping, weight decay, Nesterov, Dropout), numpy and
    strict: the compiled halves (an identity compiler) equal the eager step, and every
    process holds the same weights. A non-finite batch on one process under "warn" is left
    out of the average on both executors alike, and nobody hangs."""
    from mlcore.distributed.launch import find_mpiexec

    try:
        mpiexec = find_mpiexec()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no mpiexec: {exc}")
    job = subprocess.run([mpiexec, "-n", "2", sys.executable,
                          str(HERE / "distributed_compiled_worker.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=240)
    assert job.returncode == 0, job.stderr[-3000:]
    sys.path.insert(0, str(HERE))
    try:
        import distributed_compiled_worker as worker
    finally:
        sys.path.remove(str(HERE))
    names = [f"{b}-{c}" for b in ("numpy", "strict") for c in worker.CASES] + ["poison"]
    for name in names:
        runs = {(jit, r): np.load(tmp_path / f"{name}-{jit}-rank{r}.npz")
                for jit in (0, 1) for r in (0, 1)}
        eager = [runs[0, 0][k] for k in runs[0, 0].files]
        for (jit, r), arrays in runs.items():
            for want, key in zip(eager, arrays.files, strict=True):
                np.testing.assert_allclose(arrays[key], want, rtol=1e-10, atol=1e-12,
                                           err_msg=f"{name} jit={jit} rank={r}")
        assert all(np.isfinite(a).all() for a in eager), name
