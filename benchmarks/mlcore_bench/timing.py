"""Honest timing on a shared, noisy machine: interleaved rounds, medians, spread, memory.

Every competitor of a case is set up first, warmed up (not timed), then timed in rounds:
each round runs every competitor once, in a rotated order (A B C, B C A, ...), with a pause
before each (NumPy's OpenBLAS threads spin ~0.1 s after a call and slow whatever runs next)
and a ``gc.collect()``. A sample is the mean time of a block of ``k`` calls, with the
competitor's ``sync()`` (the backend's ``synchronize()``) before every clock read; ``k`` is
calibrated so that a block lasts ``block_s``. GPU competitors (CuPy, PyTorch CUDA) are timed
with CUDA events recorded on the current stream around the block (:func:`clock_name`), the
others with ``time.perf_counter``. Ratios are taken per round, between samples
of the same round, so a stall that slows one round does not bias them.

``Settings.max_s`` caps the seconds one competitor may spend on one case (its set-up and
first call included): once over, it is *cut* (:attr:`Stats.cut` says why) and timed no
further, so one slow competitor cannot hold the whole run; a cut row has no ratios.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Bench", "UnavailableError", "Settings", "Stats", "measure", "ratio", "peak_memory",
           "clock_name"]


class UnavailableError(Exception):
    """A competitor that cannot run here; the message is the reason shown as ``n/a``."""


class Bench(Protocol):
    """One competitor, set up for one case: ``step()`` is what gets timed."""

    memory: str
    """How to measure its memory: ``"host"`` (tracemalloc), ``"torch-cuda"``, ``"cupy"``,
    or ``""`` when it cannot be measured."""

    def step(self) -> None: ...

    def sync(self) -> None: ...

    def result(self) -> list[Any]:
        """Host NumPy copies of what the step computes, for the equality check."""
        ...


@dataclass(frozen=True)
class Settings:
    rounds: int = 5
    samples: int = 7
    block_s: float = 0.005
    warmup: int = 3
    pause_s: float = 0.15
    max_s: float | None = None
    """Seconds one competitor may spend on one case before it is cut (None: no cap)."""


@dataclass
class Stats:
    """Seconds per call of one competitor: every sample, grouped by round."""

    rounds: list[list[float]] = field(default_factory=list)
    cut: str = ""
    """Why this competitor was cut (its time cap spent), or "" when it ran every round."""

    @property
    def samples(self) -> list[float]:
        return [s for r in self.rounds for s in r]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quartiles(self) -> tuple[float, float]:
        xs = self.samples
        if len(xs) < 2:
            return xs[0], xs[0]
        q = statistics.quantiles(xs, n=4, method="inclusive")
        return q[0], q[2]

    def round_medians(self) -> list[float]:
        return [statistics.median(r) for r in self.rounds]


def ratio(a: Stats, b: Stats) -> tuple[float, float, float]:
    """``a / b`` paired by round: (median, min, max) over the rounds."""
    per_round = [x / y for x, y in zip(a.round_medians(), b.round_medians(), strict=True)]
    return statistics.median(per_round), min(per_round), max(per_round)


def clock_name(bench: Bench) -> str:
    """How ``bench`` is timed: ``"cuda-events"`` on a GPU, else ``"perf_counter"``."""
    return "cuda-events" if getattr(bench, "memory", "") in ("cupy", "torch-cuda") else \
        "perf_counter"


def _cuda_events(kind: str) -> tuple[Any, Any, Callable[[Any, Any], float]]:
    """(start, stop, elapsed seconds) for CuPy's or PyTorch's CUDA events."""
    if kind == "cupy":
        import cupy

        return (cupy.cuda.Event(), cupy.cuda.Event(),
                lambda a, b: float(cupy.cuda.get_elapsed_time(a, b)) / 1e3)
    import torch

    return (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
            lambda a, b: float(a.elapsed_time(b)) / 1e3)


def _block(bench: Bench, k: int) -> float:
    """Seconds per call over a block of ``k`` calls (after ``sync()``; see clock_name)."""
    bench.sync()
    if clock_name(bench) == "cuda-events":
        with getattr(bench, "device_ctx", None) or nullcontext():  # the bench's GPU
            start, stop, elapsed = _cuda_events(bench.memory)
            start.record()
            for _ in range(k):
                bench.step()
            stop.record()
            stop.synchronize()
        bench.sync()
        return elapsed(start, stop) / k
    t0 = time.perf_counter()
    for _ in range(k):
        bench.step()
    bench.sync()
    return (time.perf_counter() - t0) / k


def _calibrate(bench: Bench, settings: Settings) -> int:
    """Warm up (untimed) and return the block length ``k`` for about ``block_s``."""
    one = min(_block(bench, 1) for _ in range(max(1, settings.warmup)))
    return max(1, min(100_000, round(settings.block_s / max(one, 1e-9))))


def _pause(settings: Settings) -> None:
    gc.collect()
    time.sleep(settings.pause_s)


def measure(benches: dict[str, Bench], settings: Settings,
            progress: Callable[[], None] | None = None,
            spent: dict[str, float] | None = None) -> dict[str, Stats]:
    """Time every bench, interleaved; returns seconds per call by competitor label.

    ``spent``: seconds each competitor already took on this case (set-up, first call),
    counted against ``settings.max_s``; a competitor over it is cut before its next block."""
    labels = list(benches)
    used = {label: (spent or {}).get(label, 0.0) for label in labels}
    stats = {label: Stats() for label in labels}
    blocks = {}
    for label in labels:
        _pause(settings)
        if not _cut(stats[label], used[label], settings):
            t0 = time.perf_counter()
            blocks[label] = _calibrate(benches[label], settings)
            used[label] += time.perf_counter() - t0
    for r in range(settings.rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            if stats[label].cut or _cut(stats[label], used[label], settings):
                continue
            _pause(settings)
            bench, k = benches[label], blocks[label]
            t0 = time.perf_counter()
            stats[label].rounds.append([_block(bench, k) for _ in range(settings.samples)])
            used[label] += time.perf_counter() - t0
            if progress is not None:
                progress()
    return stats


def _cut(stats: Stats, used: float, settings: Settings) -> bool:
    """Mark ``stats`` cut when ``used`` seconds passed the cap; whether it is."""
    if settings.max_s is not None and used > settings.max_s:
        stats.cut = (f"{used:.1f} s spent, over --max-seconds {settings.max_s:g} "
                     f"(after {len(stats.rounds)} of {settings.rounds} rounds)")
    return bool(stats.cut)


def peak_memory(bench: Bench) -> int | None:
    """Peak bytes allocated by one ``step()`` above what was held before it, or None."""
    if bench.memory == "host":
        return _traced_peak(bench)
    if bench.memory == "torch-cuda":
        return _torch_cuda_peak(bench)
    if bench.memory == "cupy":
        return _cupy_peak(bench)
    return None


def _traced_peak(bench: Bench) -> int:
    """tracemalloc sees NumPy's data buffers (and Python objects), not PyTorch's."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        bench.step()
        bench.sync()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _torch_cuda_peak(bench: Bench) -> int:
    import torch

    bench.sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    bench.step()
    bench.sync()
    return int(torch.cuda.max_memory_allocated() - base)


def _cupy_peak(bench: Bench) -> int:
    """Peak of the CuPy pool's used bytes during one step, tracked by a memory hook."""
    import cupy
    from cupy.cuda.memory_hook import MemoryHook

    pool = cupy.get_default_memory_pool()

    class Peak(MemoryHook):  # type: ignore[misc]
        name = "mlcore-bench-peak"

        def __init__(self) -> None:
            self.peak = pool.used_bytes()

        def malloc_postprocess(self, **kwargs: Any) -> None:
            self.peak = max(self.peak, pool.used_bytes())

    bench.sync()
    base = pool.used_bytes()
    hook = Peak()
    with hook:
        bench.step()
        bench.sync()
    return int(hook.peak - base)
