"""The whole training step as one CUDA graph: capture once per input shape, then replay.

mlcore hands a backend the training step as a pure function (hook ``mlcore_compile_step``)::

    step(params: tuple, state: tuple, X, y) -> (new_params: tuple, new_state: tuple, loss)

:class:`GraphStep` returns the same results with one graph launch per call instead of
dozens of kernel launches from Python:

1. The first call with a new signature (shapes, dtypes and device of every argument) runs
   ``step`` eagerly: that call's answer, and the warm-up that compiles and loads every
   kernel the step uses.
2. Then it captures ``step`` once on its own non-blocking stream, into a memory pool of its
   own, reading *static buffers* (one per argument) and ending with copies of the new
   parameters and state back into the static parameter and state buffers.
3. Each later call copies an argument into its static buffer unless it *is* that buffer
   (the previous call's results are: so a training loop copies only the batch), launches
   the graph on the current stream, and returns the static parameter and state buffers
   and a copy of the loss. The returned parameters and state are overwritten by the next
   call, as in-place eager updates would be.

The captured step must not read values back to the host (``float(loss)``, ``bool(...)``,
a shape taken from data): CUDA refuses that during capture, the capture is abandoned and
that signature runs eagerly from then on, with the reason in :attr:`GraphStep.reasons`
and one :class:`GraphFallbackWarning`. So are signatures beyond :attr:`GraphStep.MAX_GRAPHS`
(each graph holds its own intermediate buffers). ``MLCORE_CUPY_GRAPH=0`` turns capture off
(:func:`compile_step` then returns None and mlcore keeps its eager step).

Its memory pool is private, as PyTorch's graph pools are: the graph writes its
intermediates to fixed addresses on every replay, so no other allocation may be given that
memory while the graph lives.
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["GraphStep", "GraphFallbackWarning", "compile_step", "disabled_reason", "latest"]

Step = Callable[[tuple[Any, ...], tuple[Any, ...], Any, Any], tuple[Any, Any, Any]]


class GraphFallbackWarning(RuntimeWarning):
    """A training step could not be captured as a CUDA graph and runs eagerly (the message
    says why)."""


def disabled_reason() -> str:
    """Why graph capture is off (``MLCORE_CUPY_GRAPH=0``), or ``""``."""
    value = os.environ.get("MLCORE_CUPY_GRAPH", "").strip().lower()
    if value in ("0", "off", "false", "no"):
        return f"disabled by MLCORE_CUPY_GRAPH={value}"
    return ""


def _signature(arrays: Sequence[Any], cupy: Any) -> tuple[Any, ...] | str:
    """What a graph is specialised to, or the reason an argument cannot be captured."""
    sig = []
    for i, a in enumerate(arrays):
        if type(a) is not cupy.ndarray:
            return f"argument {i} is a {type(a).__name__}, not a CuPy array"
        sig.append((tuple(a.shape), str(a.dtype), a.device.id))  # any layout: copied in
    return tuple(sig)


class _Graph:
    """One captured step: its static buffers, its outputs and the executable graph."""

    def __init__(self, owner: GraphStep, n_params: int, arrays: Sequence[Any]) -> None:
        cupy = owner.cupy
        self.cupy = cupy
        self.n_params, self.n_state = n_params, len(arrays) - 2 - n_params
        self.pool = cupy.cuda.MemoryPool()  # the graph's own: see the module docstring
        self.static = [cupy.empty_like(a) for a in arrays]
        for buffer, a in zip(self.static, arrays, strict=True):
            cupy.copyto(buffer, a)  # valid values, in case the step reads them on capture
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.loss: Any = None
        self.graph = self._capture(owner.step)

    def _split(self, arrays: Sequence[Any]) -> tuple[tuple[Any, ...], tuple[Any, ...], Any, Any]:
        p, s = self.n_params, self.n_state
        return tuple(arrays[:p]), tuple(arrays[p: p + s]), arrays[p + s], arrays[p + s + 1]

    def _capture(self, step: Step) -> Any:
        cupy, stream = self.cupy, self.stream
        params, state, X, y = self._split(self.static)
        with cupy.cuda.using_allocator(self.pool.malloc), stream:
            stream.begin_capture()
            try:
                new_params, new_state, loss = step(params, state, X, y)
                self._check(new_params, new_state)
                for buffer, new in zip((*params, *state), (*new_params, *new_state),
                                       strict=True):
                    if new is not buffer:
                        cupy.copyto(buffer, new)  # the next replay reads them here
                self.loss = loss
            except BaseException:
                try:
                    stream.end_capture()  # leave the stream usable; the first error counts
                except Exception:  # noqa: BLE001, S110 - an invalidated capture says so too
                    pass
                raise
            return stream.end_capture()

    def _check(self, new_params: Sequence[Any], new_state: Sequence[Any]) -> None:
        p, s = self.n_params, self.n_state
        if len(new_params) != p or len(new_state) != s:
            raise ValueError(f"the step returned {len(new_params)} parameters and "
                             f"{len(new_state)} state arrays for {p} and {s}")
        for buffer, new in zip(self.static[: p + s], (*new_params, *new_state), strict=True):
            if new.shape != buffer.shape or new.dtype != buffer.dtype:
                raise ValueError(f"the step returned an array of shape {new.shape} and "
                                 f"dtype {new.dtype} for one of {buffer.shape} {buffer.dtype}")

    def run(self, arrays: Sequence[Any]) -> tuple[tuple[Any, ...], tuple[Any, ...], Any]:
        cupy = self.cupy
        for buffer, a in zip(self.static, arrays, strict=True):
            if a is not buffer:
                cupy.copyto(buffer, a)
        self.graph.launch(stream=cupy.cuda.get_current_stream())
        params, state, _, _ = self._split(self.static)
        return params, state, self.loss.copy()

    def inputs(self) -> tuple[Any, Any]:
        """The static ``X`` and ``y`` buffers (passing them skips the copies)."""
        return self.static[-2], self.static[-1]

    def nodes(self) -> dict[str, int]:
        """The graph's nodes by type (``KERNEL``, ``MEMCPY``, ``MEMSET``...): the launches one
        replay stands for, read from CUDA's DOT dump (CuPy's ``Graph.debug_dot_str``)."""
        dump = getattr(self.graph, "debug_dot_str", None)
        if dump is None:
            return {}
        counts: dict[str, int] = {}
        for kind in re.findall(r'label="[^"]*?(?<![A-Z_])(KERNEL|MEMCPY|MEMSET|HOST|EMPTY|'
                               r'EVENT_RECORD|WAIT_EVENT|MEM_ALLOC|MEM_FREE)(?![A-Z_])', dump()):
            counts[kind] = counts.get(kind, 0) + 1
        return counts


class GraphStep:
    """``step`` replayed as one CUDA graph per argument signature; eager where it cannot be.

    Counters for tests and the GPU check: :attr:`replays`, :attr:`eager_calls`;
    :attr:`reasons` maps each signature that runs eagerly to why.
    """

    MAX_GRAPHS = 4

    def __init__(self, step: Step, cupy: Any) -> None:
        global _LATEST
        _LATEST = weakref.ref(self)
        self.step = step
        self.cupy = cupy
        self.graphs: dict[tuple[Any, ...], _Graph] = {}
        self.reasons: dict[Any, str] = {}
        self.replays = 0
        self.eager_calls = 0

    def __call__(self, params: tuple[Any, ...], state: tuple[Any, ...], X: Any,
                 y: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], Any]:
        arrays = (*params, *state, X, y)
        sig = _signature(arrays, self.cupy)
        graph = self.graphs.get(sig) if isinstance(sig, tuple) else None
        if graph is not None:
            self.replays += 1
            return graph.run(arrays)
        self.eager_calls += 1
        result = self.step(tuple(params), tuple(state), X, y)
        if sig not in self.reasons:
            reason = sig if isinstance(sig, str) else self._try_capture(sig, len(params),
                                                                        arrays)
            if reason:
                self.reasons[sig] = reason
                warnings.warn(f"mlcore-cupy: the training step runs eagerly, not as a CUDA "
                              f"graph: {reason}.", GraphFallbackWarning, stacklevel=2)
        return result

    def _try_capture(self, sig: tuple[Any, ...], n_params: int, arrays: Sequence[Any]) -> str:
        if len(self.graphs) >= self.MAX_GRAPHS:
            return (f"{self.MAX_GRAPHS} graphs are already captured (one per input shape); "
                    f"a batch of shape {sig[-2][0]} runs eagerly")
        try:
            self.graphs[sig] = _Graph(self, n_params, arrays)
        except Exception as exc:  # noqa: BLE001 - any failure means: stay eager
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return f"capture failed with {type(exc).__name__}: {text}"
        return ""

    def inputs(self, X: Any, y: Any) -> tuple[Any, Any] | None:
        """The static ``X`` and ``y`` buffers of the graph for batches shaped like these,
        or None: write a batch into them to save the two copies per replay."""
        for sig, graph in self.graphs.items():
            if sig[-2][0] == tuple(X.shape) and sig[-1][0] == tuple(y.shape):
                return graph.inputs()
        return None


_LATEST: weakref.ref[GraphStep] | None = None


def latest() -> GraphStep | None:
    """The last :class:`GraphStep` built in this process, while it lives (for measurements:
    the GPU check reads its counters and :meth:`_Graph.nodes`)."""
    return None if _LATEST is None else _LATEST()


def compile_step(backend: Any, step: Step) -> GraphStep | None:
    """The hook's answer for the cupy backend: a :class:`GraphStep`, or None when capture is
    disabled (``MLCORE_CUPY_GRAPH=0``) or ``backend`` is not this one."""
    if getattr(backend, "name", None) != "cupy" or disabled_reason():
        return None
    return GraphStep(step, backend.lib)
