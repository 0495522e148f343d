"""The CUDA-graph training step against the fake CuPy of ``cupy_fakes``.

The fake records what runs on a capturing stream (recorded array operations, kernel
launches, copies) and replays the record on ``Graph.launch``, with NaN in every output
until then: a step that used a capture-time value, skipped a copy into a static buffer or
replayed on stale inputs gives different weights from the eager step here. What only a GPU
shows (``.ci/gpu-check.sh``): that CUDA accepts the capture of a real step (cuBLAS, CuPy's
reductions, the memory pool) and the time it saves.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
from cupy_fakes import FakeCupy, RecordingNamespace, compiler_available, fake
from mlcore_cupy import graph, kernels
from mlcore_cupy.graph import GraphFallbackWarning, GraphStep, compile_step

pytestmark = pytest.mark.filterwarnings("error::mlcore_cupy.graph.GraphFallbackWarning")


@pytest.fixture
def cupy(monkeypatch: pytest.MonkeyPatch) -> FakeCupy:
    mod = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", mod)
    monkeypatch.delenv("MLCORE_CUPY_GRAPH", raising=False)
    return mod


def adam_step(xp: Any, fused: Any = None, sync: bool = False) -> Any:
    """A pure step: linear least squares, Adam with the step count ``t`` in the state (a 0-d
    array, so the bias corrections are computed on the device on every replay)."""
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8

    def step(params: tuple[Any, ...], state: tuple[Any, ...], X: Any,
             y: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], Any]:
        w, b = params
        mw, mb, vw, vb, t = state
        err = xp.subtract(xp.add(xp.matmul(X, w.T), b), y)
        loss = xp.mean(xp.multiply(err, err))
        if sync:
            xp.sync(loss)  # a host read: CUDA refuses it during capture
        scale = 2.0 / X.shape[0]
        grads = (xp.multiply(xp.matmul(err.T, X), scale), xp.multiply(xp.sum(err, axis=0),
                                                                       scale))
        t1 = xp.add(t, 1.0)
        c1, c2 = xp.subtract(1.0, xp.power(b1, t1)), xp.subtract(1.0, xp.power(b2, t1))
        new_p, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, (mw, mb), (vw, vb), strict=True):
            m = xp.add(xp.multiply(m, b1), xp.multiply(g, 1.0 - b1))
            v = xp.add(xp.multiply(v, b2), xp.multiply(xp.multiply(g, g), 1.0 - b2))
            den = xp.add(xp.sqrt(xp.divide(v, c2)), eps)
            new_p.append(xp.subtract(p, xp.divide(xp.multiply(xp.divide(m, c1), lr), den)))
            new_m.append(m)
            new_v.append(v)
        if fused is not None:  # a fused kernel in the captured step: updates copies in place
            new_p = [xp.copy(p) for p in new_p]
            fused(new_p[0], grads[0], 0.001)
        state = (new_m[0], new_m[1], new_v[0], new_v[1], t1)
        return tuple(new_p), state, loss

    return step


def _start(rows: int = 16) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    rng = np.random.default_rng(0)
    w = fake(np.asfortranarray(rng.normal(0, 1, (3, 5)).astype(np.float32)))
    b = fake(np.zeros(3, np.float32))
    state = (fake(np.zeros_like(w)), fake(np.zeros_like(b)), fake(np.zeros_like(w)),
             fake(np.zeros_like(b)), fake(np.zeros((), np.float32)))
    return (w, b), state


def _batch(i: int, rows: int = 16) -> tuple[Any, Any]:
    rng = np.random.default_rng(10 + i)
    return (fake(rng.normal(0, 1, (rows, 5)).astype(np.float32)),
            fake(rng.normal(0, 1, (rows, 3)).astype(np.float32)))


def _train(step: Any, steps: int, rows: int = 16) -> tuple[Any, Any, list[float]]:
    params, state = _start()
    losses = []
    for i in range(steps):
        X, y = _batch(i, rows)
        params, state, loss = step(params, state, X, y)
        losses.append(float(loss))
    return params, state, losses


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_graph_step_gives_the_eager_weights_with_one_launch_per_step(cupy: FakeCupy) -> None:
    xp = RecordingNamespace(cupy)
    eager = _train(adam_step(xp), 6)
    compiled = GraphStep(adam_step(xp), cupy)
    got = _train(compiled, 6)
    _same(got[0], eager[0])
    _same(got[1], eager[1])
    assert got[2] == eager[2]
    assert (compiled.eager_calls, compiled.replays) == (1, 5)
    assert cupy.state["graph_launches"] == 5 and not compiled.reasons
    (g,) = compiled.graphs.values()
    nodes = g.nodes()  # what one replay stands for: the step's operations, then the copies
    assert nodes["MEMCPY"] == 7 and nodes["KERNEL"] > 30
    assert graph.latest() is compiled
    assert float(got[1][-1]) == 6.0  # the step count, advanced on the device each replay


def test_replays_reuse_the_static_buffers_and_copy_only_new_inputs(cupy: FakeCupy) -> None:
    xp = RecordingNamespace(cupy)
    compiled = GraphStep(adam_step(xp), cupy)
    params, state = _start()
    params, state, _ = compiled(params, state, *_batch(0))  # eager, then captured
    (g,) = compiled.graphs.values()
    p2, s2, loss2 = compiled(params, state, *_batch(1))  # copies the eager results in
    assert all(a is b for a, b in zip((*p2, *s2), g.static, strict=False))
    before = np.asarray(p2[0]).copy()
    p3, _, loss3 = compiled(p2, s2, *_batch(2))
    assert p3[0] is p2[0] and not np.array_equal(np.asarray(p3[0]), before)  # overwritten
    assert loss2 is not loss3  # the loss is a copy: earlier losses keep their values
    X, y = compiled.inputs(*_batch(3))
    assert X is g.static[-2] and y is g.static[-1]
    assert compiled.inputs(*_batch(3, rows=4)) is None


def test_capture_uses_a_private_pool_and_a_side_stream(cupy: FakeCupy,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    xp = RecordingNamespace(cupy)
    inner = adam_step(xp)

    def step(*args: Any) -> Any:
        seen.append((cupy.cuda.get_current_stream().ptr, list(cupy.state["allocators"])))
        return inner(*args)

    compiled = GraphStep(step, cupy)
    compiled(*_start(), *_batch(0))
    (g,) = compiled.graphs.values()
    assert seen[0] == (0, [])  # the eager call: the caller's stream and pool
    assert seen[1] == (7, [g.pool.malloc])  # the capture: its own stream and pool


def test_a_host_read_in_the_step_falls_back_to_eager_with_the_reason(cupy: FakeCupy) -> None:
    xp = RecordingNamespace(cupy)
    eager = _train(adam_step(xp, sync=True), 4)
    compiled = GraphStep(adam_step(xp, sync=True), cupy)
    with pytest.warns(GraphFallbackWarning, match="cudaErrorStreamCaptureUnsupported"):
        got = _train(compiled, 4)
    _same(got[0], eager[0])
    assert (compiled.eager_calls, compiled.replays) == (4, 0)
    assert cupy.state["capturing"] is None  # the capture was ended, the stream usable
    (reason,) = compiled.reasons.values()
    assert reason.startswith("capture failed with FakeCudaError: "
                             "cudaErrorStreamCaptureUnsupported")


@pytest.mark.skipif(not compiler_available(), reason="no C++ compiler for the fake kernels")
def test_fused_kernels_inside_the_graph_replay(cupy: FakeCupy) -> None:
    """Kernel launches are captured too: an ``sgd_update`` launch inside the step is
    replayed on the replay's arrays."""
    xp = RecordingNamespace(cupy)
    kernel = kernels.make_kernels(cupy)["sgd_update"]
    eager = _train(adam_step(xp, kernel), 5)
    compiled = GraphStep(adam_step(xp, kernel), cupy)
    got = _train(compiled, 5)
    _same(got[0], eager[0])
    _same(got[1], eager[1])
    assert compiled.replays == 4


def test_each_batch_shape_gets_a_graph_up_to_the_limit(cupy: FakeCupy) -> None:
    xp = RecordingNamespace(cupy)
    compiled = GraphStep(adam_step(xp), cupy)
    compiled.MAX_GRAPHS = 2
    params, state = _start()
    with pytest.warns(GraphFallbackWarning, match="2 graphs are already captured"):
        for rows in (16, 4, 16, 4, 8, 8):
            params, state, _ = compiled(params, state, *_batch(rows, rows))
    assert len(compiled.graphs) == 2 and compiled.replays == 2
    assert compiled.eager_calls == 4  # 16, 4 (captured after), 8 twice (refused)


def test_arguments_that_are_not_cupy_arrays_stay_eager(cupy: FakeCupy) -> None:
    compiled = GraphStep(lambda p, s, X, y: (p, s, X), cupy)
    with pytest.warns(GraphFallbackWarning, match="argument 1 is a ndarray, not a CuPy"):
        compiled((fake(np.zeros(2)),), (np.zeros(2),), fake(np.zeros(1)), fake(np.zeros(1)))


def test_a_step_returning_the_wrong_structure_is_refused(cupy: FakeCupy) -> None:
    compiled = GraphStep(lambda p, s, X, y: ((), s, X), cupy)
    with pytest.warns(GraphFallbackWarning, match="returned 0 parameters and 1 state"):
        compiled((fake(np.zeros(2)),), (fake(np.zeros(2)),), fake(np.zeros(1)),
                 fake(np.zeros(1)))


def test_compile_step_answers_for_cupy_unless_disabled(cupy: FakeCupy,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    backend = types.SimpleNamespace(name="cupy", lib=cupy)
    assert isinstance(compile_step(backend, adam_step(None)), GraphStep)
    assert compile_step(types.SimpleNamespace(name="numpy"), adam_step(None)) is None
    monkeypatch.setenv("MLCORE_CUPY_GRAPH", "0")
    assert compile_step(backend, adam_step(None)) is None
    assert graph.disabled_reason() == "disabled by MLCORE_CUPY_GRAPH=0"


def test_info_line_names_the_kernels_and_the_graph_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcore_cupy import CupyBackend

    monkeypatch.delenv("MLCORE_CUPY_GRAPH", raising=False)
    line = CupyBackend().kernel_info()
    assert line.startswith("adam_update, sgd_update, softmax_cross_entropy; ")
    assert line.endswith("training step as a CUDA graph: on (MLCORE_CUPY_GRAPH=0 turns it off)")
    monkeypatch.setenv("MLCORE_CUPY_GRAPH", "off")
    assert CupyBackend().kernel_info().endswith(
        "CUDA graph: off, disabled by MLCORE_CUPY_GRAPH=off")
