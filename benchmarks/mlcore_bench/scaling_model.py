"""The performance model of data-parallel training (docs/distributed.md, "A model for larger
jobs"): its equations as pure functions, which :mod:`mlcore_bench.distributed_scaling` fits
to its measurements and extrapolates with (tested on made-up timings generated from known
parameters in benchmarks/tests/test_distributed_scaling.py).

Seconds per epoch of N rows on K processes, per-process batch B::

    T_K(B)    = S_K(B) · (c0 + t_comm(K) + t_wait(K, B)) + (N / K) · c1 + F_K
    S_K(B)    = ceil(N / (K·B))
    t_comm(K) = t_pack + n_b · 2 (K-1) · alpha + 2 (K-1)/K · S / beta     (0 for K = 1)
    t_wait(K, B) = E[max of K step times] - E[step time]                  (0 for K = 1)
    E(K, B)   = (N / T_K(B)) / (K · N / T_1(B))

``t_wait`` is the straggler term: every step ends in a collective, so each step lasts as long
as the slowest of the K processes' steps; with step times that vary (other work on the
machine, the allocator, the garbage collector), the expected maximum of K of them exceeds
their mean. It is computed from the 1-process run's own step times
(:func:`straggler_seconds`), assuming the K processes' steps vary independently as that one
process's did.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["nnls", "steps_of", "fit_compute", "fixed_seconds", "fit_network", "straggler_seconds",
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


def straggler_seconds(step_times: Sequence[float], processes: int) -> float:
    """``t_wait``: the expected maximum of ``processes`` step times drawn independently from
    ``step_times`` (one process's measured steps), less their mean. Exact for the empirical
    distribution, no random draws: with the times sorted, ``x_(1) <= ... <= x_(n)``, the
    maximum of K draws is ``x_(i)`` with probability ``(i/n)^K - ((i-1)/n)^K``. 0 for one
    process or no times."""
    n = len(step_times)
    if processes <= 1 or n == 0:
        return 0.0
    x = np.sort(np.asarray(step_times, dtype=float))
    i = np.arange(1, n + 1, dtype=float)
    weights = (i / n) ** processes - ((i - 1) / n) ** processes
    return max(0.0, float(weights @ x) - float(x.mean()))


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
                  fixed: float, t_wait: float = 0.0) -> float:
    """``T_p(B) = S_p(B) · (c0 + t_comm + t_wait) + (N / p) · c1 + F``."""
    return steps_of(rows, p, batch) * (c0 + t_comm + t_wait) + rows / p * c1 + fixed


def efficiency(p: int, rows: int, batch: int, c0: float, c1: float, t_comm: float,
               fixed: float, fixed_1: float, t_wait: float = 0.0) -> float:
    """``E = T_1(B) / (p · T_p(B))`` for an epoch of the same ``rows`` rows."""
    one = epoch_seconds(1, rows, batch, c0, c1, 0.0, fixed_1)
    return one / (p * epoch_seconds(p, rows, batch, c0, c1, t_comm, fixed, t_wait))


def batch_for(target: float, p: int, rows: int, c0: float, c1: float, t_comm: float,
              fixed: float, fixed_1: float, wait_fraction: float = 0.0) -> int | None:
    """The smallest per-process batch whose epoch of ``rows`` rows reaches ``target``
    efficiency on ``p`` processes (None: none does, the fixed costs being too large);
    ``wait_fraction``: the straggler wait as a fraction of a step's compute,
    ``t_wait = wait_fraction · (c0 + B c1)``."""
    for b in range(1, -(-rows // p) + 1):
        wait = wait_fraction * (c0 + b * c1)
        if efficiency(p, rows, b, c0, c1, t_comm, fixed, fixed_1, wait) >= target:
            return b
    return None


def step_batch_for(target: float, c0: float, c1: float, t_comm: float,
                   wait_fraction: float = 0.0) -> float | None:
    """The per-process batch whose *step* reaches ``target`` efficiency,
    ``(c0 + B c1) / ((1 + w)(c0 + B c1) + t_comm) = target`` with ``w`` the straggler
    ``wait_fraction`` (a data set large enough for the per-epoch costs to vanish); None when
    no batch suffices (compute does not grow with B, or the straggler wait alone costs more
    than the target allows)."""
    slack = 1 - target * (1 + wait_fraction)
    if slack <= 0:
        return None
    need = target / slack * t_comm - c0
    if need <= 0:
        return 1.0
    return need / c1 if c1 > 0 else None
