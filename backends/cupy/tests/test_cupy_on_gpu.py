"""The fused kernels and the CUDA-graph step on a real GPU (skipped without one, with the
backend's reason): what the fake CuPy cannot show.

- Each kernel, compiled by NVRTC, against the plain path run by CuPy itself (the same
  statements as whole-array CuPy operations): bit for bit for the optimiser updates; to
  float32 rounding for the softmax row sums (exp, log).
- ``mlcore.Adam``, ``AdamW`` and ``SGD`` over CuPy parameters, with clipping and weight
  decay, their fused kernels against their pure rule: bit for bit.
- A pure training step written with CuPy operations and cuBLAS matrix products, captured
  and replayed by :class:`~mlcore_cupy.graph.GraphStep`: the eager weights, one graph
  launch per step, memory flat over the replays.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from mlcore_cupy import _source as src
from mlcore_cupy import graph, kernels
from mlcore_cupy.graph import GraphStep

import mlcore
from mlcore.plugins import registry
from mlcore.training.fit import make_train_step

pytestmark = pytest.mark.needs_backend("cupy")


@pytest.fixture
def cp() -> Any:
    b = registry().backends["cupy"]
    if not b.is_available():
        pytest.skip(f"cupy unavailable: {b.unavailable_reason()}")
    with b.device:
        yield b.lib


def _tensors(cp: Any, dtype: Any, names: str) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = []
    for shape in ((512, 784), (512,), (10, 512)):
        t = {a: cp.asarray(np.asfortranarray(rng.normal(0, 1, shape)).astype(dtype))
             for a in names}
        if "v" in t:
            t["v"] = cp.abs(t["v"])
        out.append(t)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", ["adam", "sgd"])
def test_gpu_update_kernels_equal_the_plain_cupy_path_bitwise(cp: Any, dtype: Any,
                                                              which: str) -> None:
    spec = {"adam": src.adam_kernel(), "sgd": src.sgd_kernel()}[which]
    scalars = {"b1": 0.9, "b2": 0.999, "eps": 3e-6, "scale": 71.5, "lr": 0.01}
    scalars = {k: v for k, v in scalars.items() if k in spec.scalars}
    fused, plain = _tensors(cp, dtype, spec.arrays), _tensors(cp, dtype, spec.arrays)
    run = kernels.launcher(cp)
    before = run.launches
    run.elementwise(spec, fused, scalars)
    assert run.launches == before + 1
    for t in plain:
        run._whole_arrays(spec, t, scalars)
    for f, p in zip(fused, plain, strict=True):
        for a in spec.written:
            np.testing.assert_array_equal(cp.asnumpy(f[a]), cp.asnumpy(p[a]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("cls", "kw"), [
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}), ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01})],
    ids=["adam-l2", "adamw", "sgd-nesterov-l2"])
def test_gpu_optimiser_kernels_equal_the_rule_bitwise(cp: Any, cls: str, kw: dict[str, Any],
                                                      dtype: Any) -> None:
    """The optimiser's eager step through its fused kernel (``Optimizer.fast_update``)
    against the same optimiser with the kernel off (``Optimizer.rule`` as CuPy operations),
    clipping on: the same weights and moments, bit for bit."""
    rng = np.random.default_rng(5)
    shapes = ((512, 784), (512,), (10, 512))
    start = [np.asfortranarray(rng.normal(0, 0.05, s)).astype(dtype) for s in shapes]
    grads = [[rng.normal(0, 1, s).astype(dtype) for s in shapes] for _ in range(3)]
    runs = []
    for fused in (True, False):
        ps = [mlcore.layers.Parameter(cp.asarray(a)) for a in start]
        opt = getattr(mlcore, cls)(ps, clip_norm=20.0, clip_value=2.0, **kw)
        assert opt._fused is not None
        if not fused:
            opt._fused = None
        for gs in grads:
            for p, g in zip(ps, gs, strict=True):
                p.grad = cp.asarray(g)
            opt.step()
        runs.append([cp.asnumpy(p.value) for p in ps]
                    + [cp.asnumpy(a) for slot in opt.slots for a in getattr(opt, slot)])
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_gpu_softmax_cross_entropy_kernel(cp: Any) -> None:
    import array_api_compat.cupy as xp
    from cupy_fakes import softmax_cross_entropy

    rng = np.random.default_rng(2)
    z = cp.asarray(rng.normal(0, 4, (4096, 10)).astype(np.float32))
    t = cp.asarray(rng.integers(0, 10, 4096))
    want_value, want_grad = softmax_cross_entropy(xp, z, t, 0.1)
    value, grad = kernels.make_kernels(cp)["softmax_cross_entropy"](xp, z, t, 0.1)
    np.testing.assert_allclose(float(value), float(want_value), rtol=2e-6)
    np.testing.assert_allclose(cp.asnumpy(grad), cp.asnumpy(want_grad), rtol=4e-6, atol=1e-9)


def _pure_step(cp: Any) -> Any:
    """784-512-10 ReLU, softmax cross-entropy, SGD: a pure step of CuPy operations."""
    def step(params: tuple[Any, ...], state: tuple[Any, ...], X: Any,
             y: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], Any]:
        w1, b1, w2, b2 = params
        h = cp.maximum(X @ w1.T + b1, 0)
        z = h @ w2.T + b2
        e = cp.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        loss = -cp.log(p[cp.arange(X.shape[0]), y]).mean()
        dz = p.copy()
        dz[cp.arange(X.shape[0]), y] -= 1
        dz /= X.shape[0]
        dh = (dz @ w2) * (h > 0)
        grads = (dh.T @ X, dh.sum(axis=0), dz.T @ h, dz.sum(axis=0))
        (count,) = state
        return tuple(q - 0.05 * g for q, g in zip(params, grads, strict=True)), (count + 1,), loss

    return step


def test_gpu_graph_step_gives_the_eager_weights(cp: Any) -> None:
    rng = np.random.default_rng(3)

    def start() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        shapes = ((512, 784), (512,), (10, 512), (10,))
        return (tuple(cp.asarray(rng.normal(0, 0.05, s).astype(np.float32)) for s in shapes),
                (cp.zeros((), dtype=cp.float32),))

    batches = [(cp.asarray(rng.normal(0, 1, (256, 784)).astype(np.float32)),
                cp.asarray(rng.integers(0, 10, 256))) for _ in range(6)]
    results = []
    for step in (_pure_step(cp), GraphStep(_pure_step(cp), cp)):
        rng = np.random.default_rng(3)
        params, state = start()
        for X, y in batches:
            params, state, loss = step(params, state, X, y)
        results.append((params, state, float(loss)))
    compiled = step
    assert not compiled.reasons and compiled.replays == 5
    (eager_p, _, eager_loss), (graph_p, graph_s, graph_loss) = results
    for a, b in zip(eager_p, graph_p, strict=True):
        np.testing.assert_array_equal(cp.asnumpy(a), cp.asnumpy(b))
    assert float(graph_s[0]) == 6.0 and graph_loss == eager_loss
    pool = cp.get_default_memory_pool()
    used = pool.used_bytes()
    for _ in range(200):
        params, state, loss = compiled(params, state, *batches[0])
    cp.cuda.get_current_stream().synchronize()
    assert pool.used_bytes() == used  # replays allocate nothing that stays


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.filterwarnings("error::mlcore_cupy.graph.GraphFallbackWarning")
def test_gpu_core_step_compiled_as_a_graph_gives_the_eager_weights(
        cp: Any, optimizer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The core's pure step (``jit_compile=True``), captured by mlcore-cupy: the eager step's
    weights over several steps, and every call after the first a graph replay."""
    if "jit_compile" not in inspect.signature(make_train_step).parameters:
        pytest.skip("this mlcore has no compiled training step (jit_compile)")
    rng = np.random.default_rng(4)
    X = cp.asarray(rng.normal(0, 1, (256, 784)).astype(np.float32))
    y = cp.asarray(rng.integers(0, 10, 256))
    compiled: list[GraphStep] = []
    monkeypatch.setattr(graph, "GraphStep", lambda *a: compiled.append(GraphStep(*a))
                        or compiled[-1])
    weights = []
    for jit in (False, True):
        with mlcore.use_backend("cupy"):
            model = mlcore.MLP([784, 512, 512, 10], seed=0)
            step = make_train_step(model, "cross_entropy", optimizer, jit_compile=jit)
        for _ in range(5):
            step(X, y)
        weights.append([cp.asnumpy(p.value) for p in model.parameters()])
    assert len(compiled) == 1 and compiled[0].replays == 4
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
