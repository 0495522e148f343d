"""Data-parallel scaling of 784-512-512-10 on this machine, and a model of larger jobs.

``mlcore bench --distributed [-n 2] [--rounds 3]``, or ``python -m
mlcore_bench.distributed_scaling [-n 2,3] [--rounds 3] [--batches 32,128,512] [--rows 60000]
[--steps S] [--overlap both|on|off] [--torch/--no-torch] [--json F]`` (with ``mlcore[mpi]``
installed; runs from any folder); ``--report F`` prints the report again from a saved
``--json`` file, timing nothing.

Launches ``mlcore launch -n K --threads 1`` for K = 1 and each K given, interleaved (1 2 1 2
...), each timing one whole epoch of ``fit(..., distributed=...)`` over ``--rows`` rows
(Adam, float32, shuffled, per-process batch B, so the global batch is K·B: weak scaling;
``--steps S`` times S steps instead, which hides the per-epoch costs). With ``--overlap
both`` (the default) every K > 1 runs twice, with the gradients' allreduces overlapped with
backward (``DataParallel(overlap=True)``) and after it (``DataParallel()``, the default).
For K > 1 the job also times the allreduce alone over message sizes from 8 B to 8 MiB
(the ping test).
With PyTorch installed the same epoch runs under PyTorch DDP (gloo, one thread, its
processes started the same way), interleaved with mlcore's.

Prints per round and as medians with their spread: samples/s, efficiency
``E = samples/s(K) / (K · samples/s(1))`` (paired within a round), time in the gradient
allreduce per step; then the performance model of docs/distributed.md ("A model for larger
jobs") with every parameter measured in this run, its prediction beside the measurement for
every K and B with the relative error, and its extrapolation to 8 and 64 machines on 10 and
100 Gb/s networks with the batch per process that 90 % efficiency needs.

The model (seconds per epoch of N rows, K processes, per-process batch B)::

    T_K(B)    = S_K(B) · (c0 + t_comm(K) + t_wait(K, B)) + (N / K) · c1 + F_K
    S_K(B)    = ceil(N / (K·B))
    t_comm(K) = t_pack + n_b · 2 (K-1) · alpha + 2 (K-1)/K · S / beta     (0 for K = 1)
    t_wait(K, B) = E[max of K step times] - E[step time]                  (0 for K = 1)
    E(K, B)   = (N / T_K(B)) / (K · N / T_1(B))

``t_wait``, the straggler term, comes from the 1-process epochs' own step times (each step
ends in a collective, so it lasts as long as the slowest process's step); the check also
prints, for each K-process run, its measured compute per step beside the 1-process one and
its measured allreduce-and-wait, so an error of the model shows where it comes from.

``c0`` (seconds per step) and ``c1`` (seconds per row, the row gather included) come from a
non-negative least-squares fit of the 1-process epochs' time in their training steps (plus
their row gather) to ``S_1 · c0 + N · c1``; ``F_K`` is measured in each run: the fit's time
outside its training steps (set-up and the start-up checks, drawing the permutation, the
batch loop's bookkeeping, the epoch-end sums), less the row gather, which shrinks with K and
is counted in ``c1``. ``alpha`` and ``beta`` come from the ping test at K: the ring formula
``t(S) = 2 (K-1) alpha + 2 (K-1)/K · S / beta`` (reduce-scatter then allgather, ``2 (K-1)``
messages of ``S/K``) fitted to the measured allreduce times by non-negative least squares in
relative terms, so the model reproduces the measured allreduce. ``S`` is the
gradients' bytes, in ``n_b`` buckets; ``t_pack`` the packing and unpacking of a step,
measured for each variant on its own buckets (with overlap, the non-blocking path's; without,
the blocking path's one). The model is for the gradients reduced after backward: overlap can
only hide part of ``t_comm`` (on this machine little, see docs/distributed.md). The
equations are in :mod:`mlcore_bench.scaling_model`; whole epochs need at least two batch
sizes (``S_1 · c0 + N · c1`` has two unknowns).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .scaling_model import (
    batch_for,
    comm_seconds,
    efficiency,
    epoch_seconds,
    fit_compute,
    fit_network,
    fixed_seconds,
    step_batch_for,
    straggler_seconds,
)

SIZES = [784, 512, 512, 10]
MESSAGE_BYTES = [8, 1024, 65536, 2**20, 2_678_824, 8 * 2**20]
NETWORKS = [
    {"name": "10 Gb/s Ethernet (TCP)", "line_rate": 1.25e9, "fraction": 0.7,
     "latency": 30e-6},
    {"name": "100 Gb/s InfiniBand", "line_rate": 12.5e9, "fraction": 0.8, "latency": 3e-6},
]
"""The networks of the extrapolation. The allreduce bandwidth is an *achievable* fraction of
the line rate, not the line rate: 70 % over TCP on 10 GbE (0.875 GB/s), 80 % over RDMA on
100 Gb/s InfiniBand (10 GB/s); 30 us and 3 us a message. Assumptions from the vendors' and
NCCL/MPI benchmark figures, not measured here (one machine)."""
MACHINES = (8, 64)
TARGET = 0.9
"""The efficiency whose per-process batch the extrapolation reports."""


# -- one process of a K-process job --------------------------------------------------------
def _model_and_data(rows: int) -> tuple[Any, Any, Any]:
    import mlcore

    model = mlcore.MLP(SIZES, activation="relu", output_activation="softmax", seed=0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(rows, SIZES[0])).astype(np.float32)
    return model, X, rng.integers(0, SIZES[-1], size=rows)


def _rows_for(batch: int, steps: int | None, size: int, rows: int) -> int:
    return rows if steps is None else steps * size * batch


class _StepClock:
    """While entered, every training step ``fit`` builds is timed: ``calls`` and ``seconds``
    (the step's compute, and for K > 1 its gradient allreduce). The rest of a fit's time is
    its work outside the steps."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0
        self.each: list[float] = []  # every step's seconds, for the straggler term
        self._saved: Any = None

    def __enter__(self) -> _StepClock:
        import mlcore.training.fit as fit_module

        self._saved = original = fit_module._fit_step

        def timed_fit_step(*args: Any, **kwargs: Any) -> Callable[..., Any]:
            step = original(*args, **kwargs)

            def timed(*a: Any, **k: Any) -> Any:
                began = time.perf_counter()
                out = step(*a, **k)
                took = time.perf_counter() - began
                self.seconds += took
                self.each.append(took)
                self.calls += 1
                return out
            return timed

        fit_module._fit_step = timed_fit_step
        return self

    def __exit__(self, *exc: object) -> None:
        import mlcore.training.fit as fit_module

        fit_module._fit_step = self._saved


def _median_seconds(fn: Callable[[], Any], reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_fit(batch: int, steps: int | None, size: int, rows: int,
              overlap: bool) -> dict[str, Any]:
    from mlcore import distributed

    model, X, y = _model_and_data(_rows_for(batch, steps, size, rows))
    n = int(X.shape[0])
    kwargs = dict(loss="cross_entropy", optimizer="adam", batch_size=batch, shuffle=True,
                  seed=0, verbose=False)
    model.fit(X[: 2 * size * batch], y[: 2 * size * batch], **kwargs, distributed=True)
    dp = distributed.DataParallel(overlap=overlap)
    distributed.barrier()
    with _StepClock() as clock:
        began = time.perf_counter()
        model.fit(X, y, **kwargs, distributed=dp)
        seconds = time.perf_counter() - began
    order = np.random.default_rng(0).permutation(n)
    mine = order[: -(-n // size)]  # about this process's share of the epoch's rows
    gather = _median_seconds(lambda: (np.take(X, mine, axis=0), np.take(y, mine, axis=0)))
    permutation = _median_seconds(lambda: model.backend.rng(0).permutation(n))
    done = clock.calls or 1
    return {"batch": batch, "rows": n, "steps": clock.calls, "seconds": seconds,
            "bucket_bytes": _bucket_bytes(dp, model.parameters()) if size > 1 else [],
            "step_seconds": clock.seconds, "allreduce_seconds": dp.stats["allreduce_seconds"],
            "early_buckets": dp.stats["early_buckets"], "gather_seconds": gather,
            "permutation_seconds": permutation, "samples_per_s": n / seconds,
            "step_ms": 1e3 * seconds / done,
            "allreduce_ms": 1e3 * dp.stats["allreduce_seconds"] / done,
            "step_times": clock.each if size == 1 else []}


def _time_torch(batch: int, steps: int | None, size: int, rows: int,
                port: int) -> dict[str, Any]:
    """The same epoch under PyTorch DDP (gloo): each process takes its contiguous slice of
    every global batch of the epoch's shuffled order, gathering only its own rows."""
    import torch
    import torch.distributed as tdist

    from mlcore import distributed

    torch.set_num_threads(1)
    rank = distributed.rank()
    if size > 1 and not tdist.is_initialized():
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                 world_size=size)
    torch.manual_seed(0)
    layers: list[Any] = []
    for a, b in itertools.pairwise(SIZES):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net: Any = torch.nn.Sequential(*layers[:-1])
    if size > 1:
        net = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    _, Xn, yn = _model_and_data(_rows_for(batch, steps, size, rows))
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    gen = torch.Generator().manual_seed(0)

    def epoch(n: int) -> int:
        order = torch.randperm(n, generator=gen)
        taken = 0
        for s in range(0, n, size * batch):
            q, r = divmod(min(s + size * batch, n) - s, size)
            lo = s + rank * q + min(rank, r)
            idx = order[lo:lo + q + (rank < r)]
            opt.zero_grad()
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()
            taken += 1
        return taken

    epoch(2 * size * batch)
    if size > 1:
        tdist.barrier()
    began = time.perf_counter()
    done = epoch(X.shape[0])
    seconds = time.perf_counter() - began
    return {"batch": batch, "rows": int(X.shape[0]), "steps": done, "seconds": seconds,
            "step_ms": 1e3 * seconds / done, "samples_per_s": X.shape[0] / seconds}


class _Loopback:
    """A stand-in communicator whose collectives return their input: times the packing.
    ``nonblocking``: it offers the non-blocking allreduce too, so a DataParallel with
    overlap plans and packs the overlap's buckets."""

    rank, size = 0, 1

    def __init__(self, nonblocking: bool) -> None:
        self.nonblocking = nonblocking

    def allreduce(self, x: Any, op: str = "sum") -> Any:
        return x

    def start_allreduce(self, x: Any, op: str = "sum") -> Any:
        from mlcore.distributed.comm import Pending

        return Pending(None, x, lambda buf: buf)

    def progress(self, pending: Any) -> None:
        pass

    def wait(self, pending: Any) -> None:
        pass

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]


def _bucket_bytes(dp: Any, params: Sequence[Any]) -> list[int]:
    """The bytes of each gradient bucket of a started DataParallel (bucket 0 carries the
    count of rows)."""
    itemsize = params[0].value.dtype.itemsize
    return [itemsize * (sum(math.prod(params[i].shape) for i in bucket) + (b == 0))
            for b, bucket in enumerate(dp.buckets)]


def _packing(overlap: bool) -> float:
    """Seconds of gradient packing and unpacking per step (what reduce_gradients adds
    besides MPI), of the buckets of ``DataParallel(overlap=overlap)``: with overlap the
    non-blocking path's buckets (two for this model), without it the blocking path's one."""
    from mlcore.distributed import DataParallel

    model = _model_and_data(1)[0]
    dp = DataParallel(comm=_Loopback(overlap), overlap=overlap)  # type: ignore[arg-type]
    dp.start(model, {})
    params = model.parameters()
    times = []
    for _ in range(30):
        for p in params:
            p.grad = p.value * 0.001
        t0 = time.perf_counter()
        dp.reduce_gradients(params, 32)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _allreduce_sweep() -> list[dict[str, float]]:
    """The ping test: one allreduce (as the gradients' are made: every process arrives,
    then MPI reduces) of each size in MESSAGE_BYTES, median of several."""
    from mlcore import distributed

    comm = distributed.communicator("numpy")
    rows = []
    for nbytes in MESSAGE_BYTES:
        x = np.ones(max(1, nbytes // 4), dtype=np.float32)
        reps = 50 if nbytes < 2**20 else 15
        times = []
        for _ in range(reps):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce(x)
            times.append(time.perf_counter() - t0)
        rows.append({"bytes": x.nbytes, "seconds": statistics.median(times)})
    return rows


def worker(batches: list[int], steps: int | None, rows: int, torch_port: int | None,
           overlap: bool = True) -> None:
    from mlcore import distributed

    size = distributed.size()
    if torch_port is not None:
        result: dict[str, Any] = {"size": size, "fits": [
            _time_torch(b, steps, size, rows, torch_port) for b in batches]}
    else:
        result = {"size": size, "overlap": overlap,
                  "fits": [_time_fit(b, steps, size, rows, overlap) for b in batches]}
        if size > 1:
            result["sweep"] = _allreduce_sweep()
        else:
            result["pack_seconds"] = _packing(False)
            result["pack_seconds_overlap"] = _packing(True)
    if distributed.is_main():
        print("RESULT " + json.dumps(result), flush=True)


# -- the driver ----------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(k: int, batches: list[int], steps: int | None, rows: int,
            torch: bool = False, overlap: bool = True) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mlcore", "launch", "-n", str(k), "--threads", "1", "-m",
           "mlcore_bench.distributed_scaling", "--worker", "--batches",
           ",".join(map(str, batches)), "--rows", str(rows),
           "--overlap", "on" if overlap else "off"]
    cmd += [] if steps is None else ["--steps", str(steps)]
    cmd += ["--torch-port", str(_free_port())] if torch else []
    # PYTHONSAFEPATH: the current folder is not put on sys.path, so a folder holding the
    # checkout as mlcore/ cannot hide the installed package
    env = dict(os.environ, MLCORE_NUMPY_JIT="0", PYTHONSAFEPATH="1")
    job = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env,
                         check=False)
    line = next((x for x in job.stdout.splitlines() if x.startswith("RESULT ")), None)
    if job.returncode != 0 or line is None:
        raise SystemExit(
            f"distributed_scaling: {'PyTorch DDP' if torch else 'mlcore'} with {k} "
            f"process(es) failed (exit status {job.returncode}):\n$ {' '.join(cmd)}\n"
            f"{job.stdout[-3000:]}{job.stderr[-6000:]}")
    return dict(json.loads(line[len("RESULT "):]))


# -- the report ----------------------------------------------------------------------------
def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def _median_run(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each number over the rounds' runs of one (K, B)."""
    return {key: float(statistics.median(r[key] for r in runs)) for key in
            ("rows", "steps", "seconds", "step_seconds", "gather_seconds",
             "permutation_seconds", "allreduce_seconds")}


def variants(ks: Sequence[int], overlap: str, torch: bool) -> list[tuple[str, str, int]]:
    """``(label, key, K)`` of every run of a round, in order: mlcore with K = 1, then each K
    with overlap and/or without; PyTorch DDP likewise."""
    out = [("mlcore", "mlcore-1", 1)]
    for k in ks:
        if overlap in ("on", "both"):
            out.append(("mlcore", f"mlcore-{k}", k))
        if overlap in ("off", "both"):
            out.append(("mlcore/no-overlap", f"mlcore-{k}-no-overlap", k))
    if torch:
        out += [("torch", f"torch-{k}", k) for k in (1, *ks)]
    return out


def report(rounds: list[dict[str, dict[str, Any]]], batches: list[int], ks: list[int],
           overlap: str = "on", rows: int | None = None) -> dict[str, Any]:
    """Print the medians, the model's parameters, its check against every measured K and
    B, and its extrapolation; return them all (the ``--json`` file's ``result``)."""
    out: dict[str, Any] = {"loadavg_end": os.getloadavg(), "rows": []}
    first = rounds[0]
    torch = "torch-1" in first
    print(f"{'who':>18} {'K':>2} {'B':>5} {'samples/s K=1':>22} {'samples/s K':>22} "
          f"{'efficiency':>20} {'allreduce ms/step':>20}")
    for label, key, k in variants(ks, overlap, torch):
        if k == 1:
            continue
        one_key = "torch-1" if label == "torch" else "mlcore-1"
        for i, b in enumerate(batches):
            one = [r[one_key]["fits"][i]["samples_per_s"] for r in rounds]
            many = [r[key]["fits"][i]["samples_per_s"] for r in rounds]
            eff = [t / (k * o) for o, t in zip(one, many, strict=True)]
            ar = [r[key]["fits"][i].get("allreduce_ms", math.nan) for r in rounds]
            out["rows"].append({"who": label, "processes": k, "batch": b,
                                "samples_per_s_1": one, "samples_per_s_k": many,
                                "efficiency": eff, "allreduce_ms": ar})
            print(f"{label:>18} {k:>2} {b:>5} {_spread(one):>22} {_spread(many):>22} "
                  f"{_spread(eff):>20} {_spread(ar):>20}")
    out["model"] = model = fit_model(rounds, batches, ks, overlap)
    out["check"] = check_model(model, rounds, batches, ks, overlap)
    out["extrapolation"] = extrapolate(model, rows or int(model["rows"]))
    return out


def fit_model(rounds: list[dict[str, dict[str, Any]]], batches: list[int], ks: list[int],
              overlap: str = "on") -> dict[str, Any]:
    """Every parameter of the model, from this run: ``c0``, ``c1`` (1-process epochs),
    ``alpha`` and ``beta`` per K (ping test), and per variant (``"1"``, ``"2"``,
    ``"2-no-overlap"``, ...) its ``F`` per B, its buckets' bytes and ``t_pack`` (the packing
    and unpacking of its own buckets: the overlap's, or the one after backward)."""
    ones_runs = [r["mlcore-1"] for r in rounds]
    pack = {False: statistics.median(r["pack_seconds"] for r in ones_runs),
            True: statistics.median(r.get("pack_seconds_overlap", r["pack_seconds"])
                                    for r in ones_runs)}
    ones = [_median_run([r["mlcore-1"]["fits"][i] for r in rounds])
            for i in range(len(batches))]
    c0, c1 = fit_compute(ones)
    waits, fractions = _stragglers(rounds, len(batches), [*ks, *MACHINES])
    model: dict[str, Any] = {"c0": c0, "c1": c1, "wait": waits, "wait_fraction": fractions,
                             "pack_seconds": pack[False],
                             "pack_seconds_overlap": pack[True],
                             "rows": ones[-1]["rows"], "network": {}, "variants": {
                                 "1": {"fixed": [fixed_seconds(o) for o in ones],
                                       "bucket_bytes": []}}}
    print(f"compute (non-negative least squares over the 1-process epochs' steps and row "
          f"gather): c0 = {1e3 * c0:.3f} ms per step + c1 = {1e6 * c1:.2f} us per row; "
          f"packing and unpacking t_pack = {1e3 * pack[True]:.2f} ms per step with overlap "
          f"(its buckets), {1e3 * pack[False]:.2f} ms without (one bucket)")
    if waits:
        print("straggler wait (the expected slowest of K of the 1-process run's step times, "
              "less their mean) at B = " + "/".join(map(str, batches)) + ": " + "; ".join(
                  f"K={k} " + "/".join(f"{1e3 * w:.2f}" for w in waits[str(k)]) + " ms"
                  for k in ks))
    for k in ks:
        key = next(key for _, key, kk in variants([k], overlap, False) if kk == k)
        sweep = [{"bytes": row["bytes"],
                  "seconds": statistics.median(r[key]["sweep"][j]["seconds"] for r in rounds)}
                 for j, row in enumerate(rounds[0][key]["sweep"])]
        alpha, beta = fit_network(sweep, k)
        model["network"][str(k)] = {"alpha": alpha, "beta": beta, "sweep": sweep}
        print(f"ping test, {k} processes: " + ", ".join(
            f"{r['bytes']} B {1e6 * r['seconds']:.0f} us" for r in sweep)
            + f"; alpha = {1e6 * alpha:.1f} us, beta = {beta / 1e9:.2f} GB/s")
        for _, vkey, kk in variants([k], overlap, False):
            if kk != k:
                continue
            buckets = list(rounds[0][vkey]["fits"][0]["bucket_bytes"])
            model["variants"][vkey.removeprefix("mlcore-")] = {
                "bucket_bytes": buckets, "pack_seconds": pack[not vkey.endswith("no-overlap")],
                "fixed": [
                    fixed_seconds(_median_run([r[vkey]["fits"][i] for r in rounds]))
                    for i in range(len(batches))]}
    print("per-epoch costs outside the steps, less the row gather (F) at B = "
          + "/".join(map(str, batches)) + ": " + "; ".join(
              f"K={name} " + "/".join(f"{1e3 * f:.1f}" for f in v["fixed"]) + " ms"
              + (f" ({len(v['bucket_bytes'])} bucket(s): "
                 + " + ".join(map(str, v["bucket_bytes"])) + " B)" if v["bucket_bytes"]
                 else "")
              for name, v in model["variants"].items()))
    return model


def _stragglers(rounds: list[dict[str, dict[str, Any]]], count: int,
                processes: Sequence[int]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """``t_wait`` (:func:`~mlcore_bench.scaling_model.straggler_seconds`) for each K in
    ``processes`` at each of the ``count`` batch sizes, from the 1-process runs' step times
    (every round's, pooled), and as a fraction of the mean step (the median over the batch
    sizes: the extrapolation's ``wait_fraction``). Each epoch's first and last steps are
    left out: every process has them at once (the first step's warm-up, a short last
    batch), so they are not one process's jitter that the others wait for. Empty when the
    runs recorded no step times (a JSON file of an older run)."""
    pooled = [[t for r in rounds
               for t in r["mlcore-1"]["fits"][i].get("step_times", [])[1:-1]]
              for i in range(count)]
    if not all(pooled):
        return {}, {}
    waits = {str(k): [straggler_seconds(times, k) for times in pooled] for k in processes}
    fractions = {str(k): statistics.median(w / statistics.fmean(times) for w, times in
                                           zip(waits[str(k)], pooled, strict=True))
                 for k in processes}
    return waits, fractions


def check_model(model: dict[str, Any], rounds: list[dict[str, dict[str, Any]]],
                batches: list[int], ks: list[int], overlap: str = "on") -> list[dict[str, Any]]:
    """The model's epoch time and efficiency beside the measured ones (medians over the
    rounds), for K = 1 (the compute fit's residual) and every K and B measured."""
    c0, c1 = model["c0"], model["c1"]
    print("model check (T: seconds per epoch; E: efficiency; error = (model - measured) / "
          "measured):")
    out = []
    for label, key, k in variants(ks, overlap, False):
        variant, one_variant = model["variants"][key.removeprefix("mlcore-")], \
            model["variants"]["1"]
        net = model["network"].get(str(k), {"alpha": 0.0, "beta": math.inf})
        t_comm = comm_seconds(k, variant["bucket_bytes"], net["alpha"], net["beta"],
                              variant.get("pack_seconds", model["pack_seconds"]))
        for i, b in enumerate(batches):
            run = _median_run([r[key]["fits"][i] for r in rounds])
            n = int(run["rows"])
            fixed, fixed_1 = variant["fixed"][i], one_variant["fixed"][i]
            one = [r["mlcore-1"]["fits"][i] for r in rounds]
            wait = model.get("wait", {}).get(str(k), [0.0] * len(batches))[i] if k > 1 \
                else 0.0
            t_model = epoch_seconds(k, n, b, c0, c1, t_comm, fixed, wait)
            steps = max(1.0, run["steps"])
            compute_k = (run["step_seconds"] - run["allreduce_seconds"]) / steps
            compute_1 = statistics.median(o["step_seconds"] / max(1, o["steps"]) for o in one)
            n1 = int(statistics.median(o["rows"] for o in one))
            t1_model = epoch_seconds(1, n1, b, c0, c1, 0.0, fixed_1)
            e_model = (n / t_model) / (k * n1 / t1_model)
            e_meas = statistics.median(
                r[key]["fits"][i]["samples_per_s"] / (k * o["samples_per_s"])
                for r, o in zip(rounds, one, strict=True))
            row = {"who": label, "processes": k, "batch": b, "t_comm": t_comm,
                   "t_wait": wait, "compute_step_k": compute_k, "compute_step_1": compute_1,
                   "allreduce_step_k": run["allreduce_seconds"] / steps,
                   "fixed": fixed, "epoch_predicted": t_model,
                   "epoch_measured": run["seconds"],
                   "epoch_error": (t_model - run["seconds"]) / run["seconds"],
                   "efficiency_predicted": e_model, "efficiency_measured": e_meas,
                   "efficiency_error": (e_model - e_meas) / e_meas}
            out.append(row)
            print(f"model check {label} K={k} B={b}: T predicted {t_model:.3f} s, measured "
                  f"{run['seconds']:.3f} s ({row['epoch_error']:+.1%}); E predicted "
                  f"{e_model:.2f}, measured {e_meas:.2f} ({row['efficiency_error']:+.1%}); "
                  f"t_comm {1e3 * t_comm:.2f} + t_wait {1e3 * wait:.2f} ms/step, F "
                  f"{1e3 * fixed:.1f} ms"
                  + (f"; measured: a step's compute {1e3 * compute_k:.2f} ms (1 process: "
                     f"{1e3 * compute_1:.2f}), its allreduce and wait "
                     f"{1e3 * row['allreduce_step_k']:.2f} ms" if k > 1 else ""))
    return out


def extrapolate(model: dict[str, Any], rows: int) -> list[dict[str, Any]]:
    """The model on :data:`NETWORKS` at :data:`MACHINES` machines (one process each, this
    machine's compute, the fixed costs and buckets of the largest K measured here with a
    core per process (any K when none has), without overlap where measured, an epoch of
    ``rows`` rows): efficiency at B = 32/256/1024 and the batch per process for
    :data:`TARGET`."""
    c0, c1 = model["c0"], model["c1"]
    names = [name for name in model["variants"] if name != "1"]
    own_core = [n for n in names if int(n.split("-")[0]) <= (os.cpu_count() or 1)]
    name = max(own_core or names,  # oversubscribed processes' costs are not a machine's
               key=lambda n: (int(n.split("-")[0]), n.endswith("no-overlap")), default="1")
    variant = model["variants"][name]
    buckets = variant["bucket_bytes"] or [0]
    pack = variant.get("pack_seconds", model["pack_seconds"])
    fixed = statistics.median(variant["fixed"])
    fixed_1 = statistics.median(model["variants"]["1"]["fixed"])
    print(f"extrapolation: one process per machine, compute as fitted here, each machine's "
          f"step times varying as this one's (the straggler wait), F = "
          f"{1e3 * fixed:.1f} ms and {len(buckets)} bucket(s) of {sum(buckets)} B as K={name} "
          f"here (F = {1e3 * fixed_1:.1f} ms for 1 process), epochs of {rows} rows:")
    out = []
    for net in NETWORKS:
        beta = net["fraction"] * net["line_rate"]
        print(f"  {net['name']}: achievable {net['fraction']:.0%} of the line rate "
              f"{net['line_rate'] / 1e9:.2f} GB/s = {beta / 1e9:.3g} GB/s, "
              f"{1e6 * net['latency']:.0f} us a message")
        for p in MACHINES:
            t_comm = comm_seconds(p, buckets, net["latency"], beta, pack)
            w = model.get("wait_fraction", {}).get(str(p), 0.0)
            effs = {b: efficiency(p, rows, b, c0, c1, t_comm, fixed, fixed_1,
                                  w * (c0 + b * c1)) for b in (32, 256, 1024)}
            need = batch_for(TARGET, p, rows, c0, c1, t_comm, fixed, fixed_1, w)
            per_step = step_batch_for(TARGET, c0, c1, t_comm, w)
            out.append({"network": net["name"], "machines": p, "t_comm": t_comm,
                        "wait_fraction": w,
                        **{f"efficiency_at_{b}": e for b, e in effs.items()},
                        "batch_for_target": need, "step_batch_for_target": per_step})
            said = ("none (the per-epoch costs alone exceed the budget)" if need is None
                    else f"B >= {need} per process (global {p * need})")
            step = ("never" if per_step is None
                    else f"B >= {math.ceil(per_step)} (global {p * math.ceil(per_step)})")
            print(f"    P={p:>3}: t_comm {1e3 * t_comm:.2f} ms/step, straggler wait "
                  f"{w:.1%} of a step; E at B=32/256/1024 "
                  + "/".join(f"{e:.0%}" for e in effs.values())
                  + f"; {TARGET:.0%} needs {said}; per step (large data) {step}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--processes", default="2",
                    help="process counts besides 1, comma-separated (default 2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="32,128,512")
    ap.add_argument("--rows", type=int, default=60_000,
                    help="rows of the timed epoch (default 60000, MNIST's training set)")
    ap.add_argument("--steps", type=int, default=None,
                    help="time this many steps instead of a whole epoch")
    ap.add_argument("--overlap", choices=("both", "on", "off"), default="both",
                    help="K > 1 with the allreduces overlapped with backward, after it, or "
                         "both (default)")
    ap.add_argument("--torch", action=argparse.BooleanOptionalAction, default=None,
                    help="also PyTorch DDP (gloo); default: when torch is installed")
    ap.add_argument("--json", default=None)
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="print the report (medians, model, check, extrapolation) again from "
                         "the rounds of a --json file, timing nothing")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--torch-port", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        worker(batches, args.steps, args.rows, args.torch_port, args.overlap != "off")
        return
    if len(set(batches)) < 2 and args.steps is None:
        # whole epochs of one batch size: S_1 · c0 + N · c1 is one equation for two unknowns
        raise SystemExit("--batches needs at least two different sizes to fit c0 and c1 "
                         "(per step, per row); give e.g. --batches 32,512")
    if args.report:
        reprint(args.report)
        return
    ks = [int(k) for k in args.processes.split(",")]
    use_torch = args.torch
    if use_torch is None:
        import importlib.util

        use_torch = importlib.util.find_spec("torch") is not None
    timed = f"whole epochs of {args.rows} rows" if args.steps is None else \
        f"{args.steps} steps"
    print(f"load average at start: {os.getloadavg()}; {timed}; K = 1, "
          f"{', '.join(map(str, ks))}; overlap: {args.overlap}; PyTorch DDP: "
          f"{'yes' if use_torch else 'no'}")
    rounds: list[dict[str, dict[str, Any]]] = []
    for i in range(args.rounds):
        found: dict[str, dict[str, Any]] = {}
        for label, key, k in variants(ks, args.overlap, use_torch):
            found[key] = _launch(k, batches, args.steps, args.rows, torch=label == "torch",
                                 overlap=label != "mlcore/no-overlap")
        rounds.append(found)
        print(f"round {i + 1}: " + "; ".join(
            f"{key} " + " ".join(f"B{f['batch']}:{f['samples_per_s']:.0f}/s"
                                 for f in value["fits"]) for key, value in found.items()))
    result = report(rounds, batches, ks, args.overlap, args.rows)
    print(f"load average at end: {result['loadavg_end']}")
    if args.json:
        _write_json(args.json, {"rounds": rounds, **result})


def reprint(path: str) -> dict[str, Any]:
    """:func:`report` again from the rounds a ``--json`` file saved (its process counts,
    batch sizes, overlap variants and rows read from them): a later model on an earlier
    measurement, nothing timed."""
    with open(path) as f:
        rounds = json.load(f)["rounds"]
    first = rounds[0]
    ks = sorted({int(key.split("-")[1]) for key in first
                 if key.startswith("mlcore-") and key != "mlcore-1"})
    on = any(key == f"mlcore-{k}" for k in ks for key in first)
    off = any(key == f"mlcore-{k}-no-overlap" for k in ks for key in first)
    overlap = "both" if on and off else ("on" if on else "off")
    fits = first["mlcore-1"]["fits"]
    return report(rounds, [f["batch"] for f in fits], ks, overlap, int(fits[0]["rows"]))


def _write_json(path: str, value: dict[str, Any]) -> None:
    """``value`` as JSON at ``path``, atomically: written to a temporary file in the same
    folder, then moved over ``path`` (a failure leaves the earlier file, and no other)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".scaling-", suffix=".json.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=1)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


if __name__ == "__main__":
    main()
