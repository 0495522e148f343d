"""The performance model of data-parallel training (docs/distributed.md, "A model for larger
jobs"): its equations as pure functions, which :mod:`mlcore_bench.distributed_scaling` fits
to its measurements and extrapolates with (tested on made-up timings generated from known
parameters in benchmarks/tests/test_distributed_scaling.py).

Seconds per epoch of N rows on K processes, per-process batch B::

    T_K(B)    = S_K(B) · (c0 + t_comm(K)) + (N / K) · c1 + F_K      S_K(B) = ceil(N / (K·B))
    t_comm(K) = t_pack + n_b · 2 (K-1) · alpha + 2 (K-1)/K · S / beta     (0 for K = 1)
    E(K, B)   = (N / T_K(B)) / (K · N / T_1(B))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["nnls", "steps_of", "fit_compute", "fixed_seconds", "fit_network",
           "ring_allreduce", "comm_seconds", "epoch_seconds", "efficiency", "batch_for",
           "step_batch_for"]


def nnls(columns: Sequence[Sequence[float]], y: Sequence[float]) -> list[float]:
    """Non-negative least squares for a few unknowns: the coefficients ``x >= 0``
    minimising ``|sum_j x_j columns[j] - y|``, found exactly by trying every set of
    unknowns left free (the others 0) and keeping the best solution with no negative
    coefficient (a negative cost cannot come out)."""
    A = np.array(columns, dtype=float).T
    b = np.array(y, dtype=float)
    best, best_residual = [0.0] * A.shape[1], float(b @ b)
    for count in range(1, A.shape[1] + 1):
        for free in itertools.combinations(range(A.shape[1]), count):
            x = np.linalg.lstsq(A[:, free], b, rcond=None)[0]
            if (x < 0).any():
                continue
            residual = float(np.sum((A[:, free] @ x - b) ** 2))
            if residual < best_residual * (1 - 1e-12):
                best, best_residual = [0.0] * A.shape[1], residual
                for j, v in zip(free, x, strict=True):
                    best[j] = float(v)
    return best


def steps_of(rows: int, processes: int, batch: int) -> int:
    """``S_K(B) = ceil(N / (K·B))``: the steps of an epoch of ``rows`` rows."""
    return -(-rows // (processes * batch))


def fit_compute(runs: Sequence[dict[str, float]]) -> tuple[float, float]:
    """``(c0, c1)``: seconds per step and per row, both >= 0, fitted (:func:`nnls`) to the
    1-process epochs' ``step_seconds + gather_seconds = S_1 · c0 + N · c1``; ``runs``
    hold ``steps``, ``rows``, ``step_seconds`` and ``gather_seconds`` (medians)."""
    c0, c1 = nnls([[r["steps"] for r in runs], [r["rows"] for r in runs]],
                  [r["step_seconds"] + r["gather_seconds"] for r in runs])
    return c0, c1


def fixed_seconds(run: dict[str, float]) -> float:
    """``F_K``: a fit's time outside its training steps, less the row gather (counted in
    ``c1``), never below 0."""
    return max(0.0, run["seconds"] - run["step_seconds"] - run["gather_seconds"])


def fit_network(sweep: Sequence[dict[str, float]], processes: int) -> tuple[float, float]:
    """``(alpha, beta)``: the per-message latency (seconds) and the achievable bandwidth
    (bytes/s) with which :func:`ring_allreduce` fits the ping test at ``processes``: the
    non-negative least squares of ``t(S) = 2 (K-1) alpha + 2 (K-1)/K · S / beta`` (unknowns
    ``alpha`` and ``1/beta``) over every message, each weighted by ``1/t(S)`` so that the
    small messages set the latency and the large ones the bandwidth (relative errors);
    ``beta`` is infinite when the times do not grow with the size."""
    k = processes
    weights = [1.0 / r["seconds"] for r in sweep]
    alpha, inverse = nnls(
        [[2 * (k - 1) * w for w in weights],
         [2 * (k - 1) / k * r["bytes"] * w for r, w in zip(sweep, weights, strict=True)]],
        [1.0] * len(sweep))
    return alpha, (1.0 / inverse if inverse > 0 else math.inf)


def ring_allreduce(p: int, nbytes: float, latency: float, bandwidth: float,
                   messages: int = 1) -> float:
    """Seconds for ``messages`` ring allreduces of ``nbytes`` in all over ``p`` processes
    (reduce-scatter then allgather: ``2 (p-1)`` steps of ``nbytes/p`` each):
    ``messages · 2 (p-1) · latency + 2 (p-1)/p · nbytes / bandwidth``."""
    if p <= 1:
        return 0.0
    return messages * 2 * (p - 1) * latency + 2 * (p - 1) / p * nbytes / bandwidth


def comm_seconds(p: int, bucket_bytes: Sequence[int], latency: float, bandwidth: float,
                 pack: float) -> float:
    """``t_comm(p)``: a step's gradient allreduce, one message per bucket, and the packing
    (0 for one process)."""
    if p <= 1:
        return 0.0
    return pack + ring_allreduce(p, sum(bucket_bytes), latency, bandwidth, len(bucket_bytes))


def epoch_seconds(p: int, rows: int, batch: int, c0: float, c1: float, t_comm: float,
                  fixed: float) -> float:
    """``T_p(B) = S_p(B) · (c0 + t_comm) + (N / p) · c1 + F``."""
    return steps_of(rows, p, batch) * (c0 + t_comm) + rows / p * c1 + fixed


def efficiency(p: int, rows: int, batch: int, c0: float, c1: float, t_comm: float,
               fixed: float, fixed_1: float) -> float:
    """``E = T_1(B) / (p · T_p(B))`` for an epoch of the same ``rows`` rows."""
    one = epoch_seconds(1, rows, batch, c0, c1, 0.0, fixed_1)
    return one / (p * epoch_seconds(p, rows, batch, c0, c1, t_comm, fixed))


def batch_for(target: float, p: int, rows: int, c0: float, c1: float, t_comm: float,
              fixed: float, fixed_1: float) -> int | None:
    """The smallest per-process batch whose epoch of ``rows`` rows reaches ``target``
    efficiency on ``p`` processes (None: none does, the fixed costs being too large)."""
    for b in range(1, -(-rows // p) + 1):
        if efficiency(p, rows, b, c0, c1, t_comm, fixed, fixed_1) >= target:
            return b
    return None


def step_batch_for(target: float, c0: float, c1: float, t_comm: float) -> float | None:
    """The per-process batch whose *step* reaches ``target`` efficiency,
    ``(c0 + B c1) / (c0 + B c1 + t_comm) = target`` (a data set large enough for the
    per-epoch costs to vanish); None when compute does not grow with B and never suffices."""
    need = target / (1 - target) * t_comm - c0
    if need <= 0:
        return 1.0
    return need / c1 if c1 > 0 else None
