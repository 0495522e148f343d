"""Run under MPI by tests/distributed/test_distributed_compiled.py: ``mpiexec -n 2 python
distributed_compiled_worker.py OUTDIR``. Each process trains the same fits eagerly and with
the step's two halves "compiled" (an identity compiler: the pure halves themselves) and saves
the weights."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

import mlcore
from mlcore import distributed
from mlcore.plugins import registry


class Identity:
    def __init__(self) -> None:
        self.calls = 0

    @pluggy.HookimplMarker("mlcore")
    def mlcore_compile_step(self, backend: Any, step: Any) -> Any:
        def counted(*args: Any) -> Any:
            self.calls += 1
            return step(*args)
        return counted


CASES = {
    "sgd-momentum": (lambda ps: mlcore.SGD(ps, lr=0.1, momentum=0.9, nesterov=True,
                                           weight_decay=0.01), {}),
    "adam-clip": (lambda ps: mlcore.Adam(ps, lr=0.01, clip_norm=0.05), {}),
    "rmsprop-dropout": (lambda ps: mlcore.RMSprop(ps, lr=0.01, centered=True), {"dropout": 0.3}),
    "adagrad-clipvalue": (lambda ps: mlcore.Adagrad(ps, lr=0.05, clip_value=0.01), {}),
}


def poisoned(jit_compile: bool) -> Any:
    """Process 1's third batch overflows the squared error: skipped under "warn"."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(48, 5))  # noqa: N806 - a batch of rows, as in the core
    y = X[:, :1] * 2.0
    if distributed.rank() == 1:
        X[9, :] = 1e200
    model = mlcore.MLP([5, 8, 1], activation="relu", seed=0, dtype="float64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, loss="mse", optimizer=mlcore.Adam(model.parameters(), lr=0.01),
                  epochs=2, batch_size=4, seed=3, verbose=False,
                  distributed=distributed.DataParallel(sharded=True),  # its own data each
                  jit_compile=jit_compile, on_nonfinite="warn")
    skipped = any("skipping" in str(w.message) for w in caught)
    assert skipped == (distributed.rank() == 1), (distributed.rank(), caught)
    return [model.backend.to_numpy(p.value) for p in model.parameters()]


def fit(backend: str, case: str, jit_compile: bool) -> Any:
    make, options = CASES[case]
    rng = np.random.default_rng(7)
    X = rng.normal(size=(48, 5))  # noqa: N806 - a batch of rows, as in the core
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1)
    with mlcore.use_backend(backend):
        model = mlcore.MLP([5, 8, 3], activation="tanh", output_activation="softmax",
                           seed=0, dtype="float64", **options)
        model.fit(X, y, loss="cross_entropy", optimizer=make(model.parameters()), epochs=2,
                  batch_size=4, seed=3, verbose=False, distributed=True,
                  jit_compile=jit_compile)
        return [model.backend.to_numpy(p.value) for p in model.parameters()]


def main(out: Path) -> None:
    registry().pm.register(identity := Identity(), name="worker-identity")
    r = distributed.rank()
    for backend in ("numpy", "strict"):
        for case in CASES:
            for jit in (False, True):
                before = identity.calls
                arrays = fit(backend, case, jit)
                # jit: two halves per step; 6 global batches of 2 x 4 rows per epoch
                assert identity.calls - before == (24 if jit else 0), (case, identity.calls)
                np.savez(out / f"{backend}-{case}-{int(jit)}-rank{r}.npz", *arrays)
    for jit in (False, True):
        np.savez(out / f"poison-{int(jit)}-rank{r}.npz", *poisoned(jit))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
