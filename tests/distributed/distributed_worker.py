"""Run under MPI by tests/distributed/test_distributed.py: ``mpiexec -n K python
distributed_worker.py MODE OUTDIR``. Each mode trains or fails on purpose and leaves what the
test checks in OUTDIR."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import mlcore
import mlcore.callbacks
from mlcore import distributed
from mlcore.backend import get_backend
from mlcore.distributed._world import world
from mlcore.errors import DistributedError

N, FEATURES, CLASSES, HIDDEN = 50, 5, 3, 8


def data(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, FEATURES))
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def run(backend: str, optimizer: str, batch_size: int, dp: object = True,
        epochs: int = 2, dtype: str = "float64",
        **extra: object) -> tuple[mlcore.MLP, dict[str, list[float]]]:
    """The training every process (or the single reference process) runs."""
    with mlcore.use_backend(backend):
        model = mlcore.MLP([FEATURES, HIDDEN, CLASSES], activation="tanh",
                           output_activation="softmax", seed=distributed.rank(), dtype=dtype)
        X, y = data()
        lr = 0.1 if optimizer == "sgd" else 0.01
        history = model.fit(X, y, loss="cross_entropy", optimizer=optimizer, lr=lr,
                            epochs=epochs, batch_size=batch_size, seed=3, verbose=False,
                            validation_data=(X[:10], y[:10]), distributed=dp, **extra)
    return model, history


class Recorder(mlcore.callbacks.Callback):
    """Notes each epoch end in a file of its process; stops after epoch ``stop_at``;
    halves the learning rate at each epoch end."""

    def __init__(self, out: Path, stop_at: int) -> None:
        self.out, self.stop_at = out, stop_at

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        with open(self.out / f"calls-rank{distributed.rank()}.txt", "a") as f:
            f.write(f"{epoch}\n")
        self.optimizer.lr *= 0.5
        if logs is not None:
            logs["lr"] = self.optimizer.lr
        if epoch == self.stop_at:
            self.model.stop_training = True


def toolkit_callbacks(out: Path) -> list[mlcore.callbacks.Callback]:
    return [Recorder(out, stop_at=2),
            mlcore.callbacks.ModelCheckpoint(out / "best.safetensors", monitor="val_loss")]


def toolkit(out: Path, batch_size: int) -> None:
    """Callbacks (stop, lr, checkpoint) and metrics in a distributed fit."""
    r = distributed.rank()
    model, history = run("numpy", "adam", batch_size, epochs=6, metrics=TOOLKIT_METRICS,
                         callbacks=toolkit_callbacks(out))
    np.savez(out / f"toolkit-rank{r}.npz", **weights(model))
    (out / f"toolkit-rank{r}.json").write_text(json.dumps(history))


TOOLKIT_METRICS = ["f1", "precision", "recall"]


def stream_fit(batch: int, rank: int, size: int, dp: object,
               short: bool = False) -> tuple[mlcore.MLP, dict[str, list[float]]]:
    """Each process streams its slice of every global batch of ``size · batch`` rows."""
    X, y = data()
    steps = N // (size * batch)

    def batches() -> object:
        for j in range(steps - (1 if short and rank == 1 else 0)):
            lo = j * size * batch + rank * batch
            yield X[lo:lo + batch], y[lo:lo + batch]

    model = mlcore.MLP([FEATURES, HIDDEN, CLASSES], activation="tanh",
                       output_activation="softmax", seed=rank, dtype="float64")
    history = model.fit(batches, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2,
                        steps_per_epoch=steps, verbose=False, metrics=["f1"], distributed=dp)
    return model, history


def stream(out: Path, batch_size: int, short: bool = False) -> None:
    r = distributed.rank()
    model, history = stream_fit(batch_size, r, distributed.size(), True, short)
    np.savez(out / f"stream-rank{r}.npz", **weights(model))
    (out / f"stream-rank{r}.json").write_text(json.dumps(history))


def weights(model: mlcore.MLP) -> dict[str, np.ndarray]:
    return {k: model.backend.to_numpy(v) for k, v in model.state_dict().items()}


def equivalence(out: Path, batch_size: int) -> None:
    r = distributed.rank()
    for backend in ("numpy", "strict"):
        for optimizer in ("sgd", "adam"):
            # numpy-adam with tiny buckets: several allreduces per step
            dp = distributed.DataParallel(bucket_bytes=200) if (
                backend, optimizer) == ("numpy", "adam") else True
            model, history = run(backend, optimizer, batch_size, dp, metrics=["f1"])
            np.savez(out / f"{backend}-{optimizer}-rank{r}.npz", **weights(model))
            if r == 0:
                (out / f"{backend}-{optimizer}.json").write_text(json.dumps(history))


def fault(out: Path) -> None:
    """Rank 1 fails in its third optimiser step; every process must stop."""

    class Failing(mlcore.SGD):
        steps = 0

        def step(self) -> None:
            self.steps += 1
            if distributed.rank() == 1 and self.steps == 3:
                raise RuntimeError("injected failure on rank 1")
            super().step()

    model = mlcore.MLP([FEATURES, HIDDEN, CLASSES], output_activation="softmax", seed=0)
    X, y = data()
    model.fit(X, y, loss="cross_entropy", optimizer=Failing(model.parameters()), epochs=50,
              batch_size=4, verbose=False, distributed=True)
    (out / f"finished-rank{distributed.rank()}").write_text("should not get here")


def uncaught(out: Path) -> None:
    """Rank 1 raises outside fit while rank 0 waits in a collective (plain python, no
    ``-m mpi4py``): init()'s excepthook must end the job."""
    distributed.init()
    if distributed.rank() == 1:
        raise ValueError("uncaught on rank 1")
    distributed.barrier()
    (out / "finished-rank0").write_text("should not get here")


class _OwnAllreduce(distributed.Communicator):
    """A communicator with its own (blocking) allreduce, as a backend's may be."""

    def allreduce(self, x: object, op: str = "sum", *, what: str = "an allreduce") -> object:
        return super().allreduce(x, op, what=what)


def mismatch(out: Path) -> None:
    """Each process differs in one way per case; every process gets the same error."""
    r = distributed.rank()
    cases = {
        "data size": dict(n=N - r),
        "architecture": dict(hidden=HIDDEN + r),
        "dtype": dict(dtype="float64" if r else "float32"),
        "overlap": dict(overlap=r == 0),
        # different bucket plans: allreduces of different sizes, refused before the first
        "buckets": dict(bucket_bytes=64 if r else distributed.DEFAULT_BUCKET_BYTES),
        # rank 1's communicator replaces allreduce only: its gradients go blocking
        "transport": dict(comm=_OwnAllreduce(get_backend(), world()) if r else None),
    }
    messages = {}
    for name, case in cases.items():
        model = mlcore.MLP([FEATURES, case.get("hidden", HIDDEN), CLASSES],
                           output_activation="softmax", seed=0, dtype=case.get("dtype"))
        X, y = data(case.get("n", N))
        try:
            model.fit(X, y, loss="cross_entropy", epochs=1, verbose=False,
                      distributed=distributed.DataParallel(
                          case.get("bucket_bytes", distributed.DEFAULT_BUCKET_BYTES),
                          case.get("comm"), overlap=case.get("overlap", True)))
            messages[name] = "no error"
        except DistributedError as exc:
            messages[name] = str(exc)
    (out / f"mismatch-rank{r}.json").write_text(json.dumps(messages))


def absent(out: Path, timeout: str, missing: int) -> None:
    """Every process but ``missing`` calls a distributed fit (the ``if is_main(): fit``
    slip); the job must end with an error naming it, after ``timeout`` seconds."""
    import os

    os.environ["MLCORE_DISTRIBUTED_TIMEOUT"] = timeout
    r = distributed.rank()
    if r != missing:
        run("numpy", "sgd", 8)
    (out / f"finished-rank{r}").write_text("done")


def shard_of(a: np.ndarray, rank: int, size: int) -> np.ndarray:
    return a[rank::size]


def shards_fit(rank: int, size: int, batch: int, dp: object,
               poison: int | None = None) -> tuple[mlcore.MLP, dict[str, list[float]]]:
    """Each process passes its own shard ``X[rank::size]`` (unshuffled); ``poison``: that
    row of the shard is NaN."""
    X, y = data()
    Xs, ys = shard_of(X, rank, size).copy(), shard_of(y, rank, size)
    if poison is not None:
        Xs[poison] = 1e3
    model = mlcore.MLP([FEATURES, HIDDEN, CLASSES], activation="tanh",
                       output_activation="softmax", seed=rank, dtype="float64")
    history = model.fit(Xs, ys, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2,
                        batch_size=batch, shuffle=False, verbose=False, metrics=["f1"],
                        validation_data=(shard_of(X[:10], rank, size),
                                         shard_of(y[:10], rank, size)), distributed=dp)
    return model, history


def shards_reference(size: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows in the order one process with batch ``size · batch`` must take them: global
    batch j is rows j·batch to (j+1)·batch of every shard, in rank order."""
    X, y = data()
    order = np.arange(N)
    parts = [shard_of(order, r, size) for r in range(size)]
    steps = max(-(-len(p) // batch) for p in parts)
    picked = np.concatenate([p[j * batch:(j + 1) * batch] for j in range(steps)
                             for p in parts])
    return X[picked], y[picked]


def shards(out: Path, batch_size: int) -> None:
    """Shards that train on every row; the same with a poisoned row (1e3 everywhere) that
    full-data slicing of the shard would never read: the weights must change."""
    r, k = distributed.rank(), distributed.size()
    model, history = shards_fit(r, k, batch_size, distributed.DataParallel(sharded=True))
    np.savez(out / f"shards-rank{r}.npz", **weights(model))
    (out / f"shards-rank{r}.json").write_text(json.dumps(history))
    try:  # the old habit: shards given as full data are refused
        shards_fit(r, k, batch_size, True)
        refused = "no error"
    except DistributedError as exc:
        refused = str(exc)
    (out / f"shards-full-rank{r}.txt").write_text(refused)
    # under full-data slicing rank r reads rows r·batch to (r+1)·batch of each window of
    # k·batch rows of its shard: poison the first row it would skip
    poisoned, _ = shards_fit(r, k, batch_size, distributed.DataParallel(sharded=True),
                             poison=(batch_size * (r + 1)) % (k * batch_size))
    np.savez(out / f"shards-poisoned-rank{r}.npz", **weights(poisoned))


def batchnorm_model(rank: int) -> mlcore.Sequential:
    """No bias before BatchNorm: its gradient is rounding noise, which Adam scales up."""
    return mlcore.Sequential([mlcore.Dense(FEATURES, HIDDEN, bias=False, dtype="float64",
                                           seed=rank),
                              mlcore.BatchNorm(HIDDEN, dtype="float64"),
                              mlcore.Activation("tanh"),
                              mlcore.Dense(HIDDEN, CLASSES, dtype="float64", seed=rank + 7),
                              mlcore.Activation("softmax")])


def batchnorm_fit(rank: int, batch: int, dp: object,
                  n: int = N) -> tuple[mlcore.Sequential, dict[str, list[float]]]:
    X, y = data(n)
    model = batchnorm_model(rank)
    history = model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2,
                        batch_size=batch, seed=3, verbose=False,
                        validation_data=(X[:10], y[:10]), distributed=dp)
    return model, history


def batchnorm(out: Path, batch_size: int) -> None:
    """SyncBatchNorm: K processes equal one with the global batch; a plan that leaves a
    process without rows is refused."""
    r = distributed.rank()
    model, history = batchnorm_fit(r, batch_size, True)
    np.savez(out / f"bn-rank{r}.npz", **weights(model))
    (out / f"bn-rank{r}.json").write_text(json.dumps(history))
    try:
        batchnorm_fit(r, batch_size, True, n=2 * batch_size * 3 + 1)
        refused = "no error"
    except DistributedError as exc:
        refused = str(exc)
    (out / f"bn-refused-rank{r}.txt").write_text(refused)


def stall(out: Path) -> None:
    """Rank 1 sleeps in its third update: 2 s under a 30 s timeout (rank 0 must wait without
    burning a core), then 60 s under a 2 s timeout (the job must stop, naming rank 1)."""
    import time

    r = distributed.rank()

    def sleepy(seconds: float) -> type[mlcore.SGD]:
        class Sleepy(mlcore.SGD):
            steps = 0

            def step(self) -> None:
                self.steps += 1
                if r == 1 and self.steps == 3:
                    time.sleep(seconds)
                super().step()
        return Sleepy

    X, y = data()
    for seconds, timeout in ((2.0, 30.0), (60.0, 2.0)):
        model = mlcore.MLP([FEATURES, HIDDEN, CLASSES], output_activation="softmax", seed=0)
        began, cpu = time.monotonic(), time.process_time()
        model.fit(X, y, loss="cross_entropy", optimizer=sleepy(seconds)(model.parameters()),
                  epochs=1, batch_size=4, verbose=False,
                  distributed=distributed.DataParallel(timeout=timeout))
        (out / f"stall-{seconds:g}-rank{r}.json").write_text(json.dumps(
            {"wall": time.monotonic() - began, "cpu": time.process_time() - cpu}))


def mismatch_uncaught(out: Path) -> None:
    """Processes that disagree, uncaught: every one raises; the traceback shows once."""
    X, y = data(N - distributed.rank())
    model = mlcore.MLP([FEATURES, HIDDEN, CLASSES], output_activation="softmax", seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=1, verbose=False, distributed=True)


def overlap_fit(case: str, on: bool) -> tuple[mlcore.Sequential, dict[str, list[float]],
                                              dict[str, float]]:
    """One of :data:`OVERLAP_CASES` with the gradients' allreduces overlapped with backward
    (``on``) or after it; small buckets, so several start while backward goes on."""
    backend, dtype, n, layers = OVERLAP_CASES[case]
    with mlcore.use_backend(backend):
        model = mlcore.Sequential([layer(dtype) for layer in layers])
        X, y = data(n)
        dp = distributed.DataParallel(overlap=on, **({} if case == "default-buckets"
                                                      else {"bucket_bytes": 96}))
        history = model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2,
                            batch_size=4, seed=3, verbose=False,
                            validation_data=(X[:10], y[:10]), distributed=dp)
    return model, history, dp.stats


def _dense(a: int, b: int, seed: int) -> object:
    return lambda dtype: mlcore.Dense(a, b, dtype=dtype, seed=seed)


_TANH = lambda dtype: mlcore.Activation("tanh")  # noqa: E731
_PLAIN = [_dense(FEATURES, HIDDEN, 0), _TANH, _dense(HIDDEN, HIDDEN, 1), _TANH,
          _dense(HIDDEN, CLASSES, 2), lambda dtype: mlcore.Activation("softmax")]
OVERLAP_CASES = {
    "float32": ("numpy", "float32", N, _PLAIN),
    "float64": ("numpy", "float64", N, _PLAIN),
    # the default buckets of a 1.2 MB model: two with overlap (the first of 1 MiB at
    # most, as DDP's), one without
    "default-buckets": ("numpy", "float32", N, [
        _dense(FEATURES, 300, 0), _TANH, _dense(300, 1000, 1), _TANH, _dense(1000, CLASSES, 2),
        lambda dtype: mlcore.Activation("softmax")]),
    "strict": ("strict", "float32", N, _PLAIN),
    # 49 rows, batches of 2 x 4: process 1's share of the last batch is empty
    "empty-share": ("numpy", "float32", 49, _PLAIN),
    "dropout": ("numpy", "float32", N, [*_PLAIN[:2], lambda dtype: mlcore.Dropout(0.3, seed=5),
                                        *_PLAIN[2:]]),
    # SyncBatchNorm's allreduces run inside backward, between the buckets' starts
    "batchnorm": ("numpy", "float64", N, [
        lambda dtype: mlcore.Dense(FEATURES, HIDDEN, bias=False, dtype=dtype, seed=0),
        lambda dtype: mlcore.BatchNorm(HIDDEN, dtype=dtype), *_PLAIN[1:]]),
}


def overlap(out: Path) -> None:
    r = distributed.rank()
    for case in OVERLAP_CASES:
        for on in (True, False):
            model, history, stats = overlap_fit(case, on)
            np.savez(out / f"overlap-{case}-{int(on)}-rank{r}.npz", **weights(model))
            (out / f"overlap-{case}-{int(on)}-rank{r}.json").write_text(
                json.dumps({"history": history, "stats": stats}))


if __name__ == "__main__":
    mode, outdir = sys.argv[1], Path(sys.argv[2])
    if mode == "equivalence":
        equivalence(outdir, int(sys.argv[3]))
    elif mode == "fault":
        fault(outdir)
    elif mode == "uncaught":
        uncaught(outdir)
    elif mode == "mismatch":
        mismatch(outdir)
    elif mode in ("stream", "short-stream"):
        stream(outdir, int(sys.argv[3]), mode == "short-stream")
    elif mode == "absent":
        absent(outdir, sys.argv[3], int(sys.argv[4]))
    elif mode == "toolkit":
        toolkit(outdir, int(sys.argv[3]))
    elif mode == "shards":
        shards(outdir, int(sys.argv[3]))
    elif mode == "batchnorm":
        batchnorm(outdir, int(sys.argv[3]))
    elif mode == "stall":
        stall(outdir)
    elif mode == "mismatch-uncaught":
        mismatch_uncaught(outdir)
    elif mode == "overlap":
        overlap(outdir)
