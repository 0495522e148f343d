"""mlcore-cupy's fused kernels without a GPU: each against the core's own code.

1. ``adam_update`` and ``sgd_update`` are fast paths of the optimisers' update rules
   (``Optimizer.fast_update``): ``mlcore.Adam``, ``AdamW`` (decoupled decay) and ``SGD``
   (L2 weight decay, momentum, Nesterov), with ``clip_norm`` and ``clip_value``, float32 and
   float64, run several steps with the kernel as their fast path and with the pure rule
   (``Optimizer.rule``): the same weights and state bit for bit. First with the statements
   each kernel is generated from, evaluated with NumPy (:func:`mlcore_cupy._source.evaluate`;
   no compiler needed), then with the generated CUDA source itself, compiled as C++ and run
   thread by thread by the fake CuPy of ``cupy_fakes`` through the real launch code
   (argument order and types checked against the source's signature).
2. ``softmax_cross_entropy``: its row-by-row transcription and its launch against the loss
   (to float32 rounding: exp and log).

What only a GPU shows (``test_cupy_on_gpu.py``, ``.ci/gpu-check.sh``): that NVRTC compiles
the source, and the results of libdevice's exp/log and of cuBLAS around the kernels.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
from cupy_fakes import (
    FakeCudaError,
    FakeCupy,
    compiler_available,
    fake,
    parse_signature,
    softmax_cross_entropy,
)
from mlcore_cupy import _source as src
from mlcore_cupy import kernels

import mlcore

needs_compiler = pytest.mark.skipif(not compiler_available(),
                                    reason="no C++ compiler (g++) to run the CUDA source")


@pytest.fixture
def cupy(monkeypatch: pytest.MonkeyPatch) -> FakeCupy:
    mod = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", mod)
    return mod


@pytest.fixture
def k(cupy: FakeCupy) -> dict[str, Any]:
    return kernels.make_kernels(cupy)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _params(dtype: Any, shapes: tuple[tuple[int, ...], ...] = ((7, 5), (7,), (3, 7))) -> list[
        np.ndarray]:
    """Parameters like a model's: the 2-D ones stored in Fortran order, as Dense weights."""
    rng = _rng(1)
    return [np.asfortranarray(rng.normal(0, 1, s).astype(dtype)) for s in shapes]


# -- 1. the optimisers' fast path against their own rule -----------------------------------
OPTIMISERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "adam": (mlcore.Adam, {"lr": 0.01}),
    "adam-l2": (mlcore.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    "adamw": (mlcore.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "sgd": (mlcore.SGD, {"lr": 0.05}),
    "sgd-l2": (mlcore.SGD, {"lr": 0.05, "weight_decay": 0.1}),
    "sgd-momentum": (mlcore.SGD, {"lr": 0.05, "momentum": 0.9}),
    "sgd-nesterov-l2": (mlcore.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True,
                                     "weight_decay": 0.01}),
}
"""Every optimiser that asks for a CuPy kernel, with weight decay (L2 and decoupled),
momentum and Nesterov."""

CLIPS: dict[str, dict[str, float]] = {
    "no-clip": {}, "clip_norm": {"clip_norm": 0.5}, "clip_value": {"clip_value": 0.3},
    "clip_norm+clip_value": {"clip_norm": 0.5, "clip_value": 0.3}}
"""Gradient clipping as the optimisers take it; the gradients below (63 standard normal
numbers) have a global norm near 8 and elements beyond 0.3: both clips change them."""

STEPS = 3
SHAPES = ((7, 5), (7,), (3, 7))


def _grad(shape: tuple[int, ...], dtype: Any, t: int, i: int) -> np.ndarray:
    return _rng(100 * t + i).normal(0, 1, shape).astype(dtype)


def _spec(opt: Any) -> src.Elementwise:
    return src.adam_kernel() if isinstance(opt, mlcore.Adam) else src.sgd_kernel()


def _run_optimiser(name: str, clip: str, dtype: Any,
                   fused: Any) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], Any]:
    """``STEPS`` eager steps of optimiser ``name`` over NumPy Parameters, its in-place fast
    path (``Optimizer.fast_update``) running ``fused(opt)`` as the backend kernel, or the
    pure rule (``Optimizer.rule``) when ``fused`` is None. The weights, the state arrays
    and the optimiser."""
    cls, kw = OPTIMISERS[name]
    ps = [mlcore.layers.Parameter(p) for p in _params(dtype, SHAPES)]
    opt = cls(ps, **kw, **CLIPS[clip])
    opt._fused = None if fused is None else fused(opt)
    for t in range(STEPS):
        for i, p in enumerate(ps):
            p.grad = _grad(p.shape, dtype, t, i)
        opt.step()
    state = {slot: [np.array(a) for a in getattr(opt, slot)] for slot in opt.slots}
    return [np.array(p.value) for p in ps], state, opt


def _assert_same(got: Any, want: Any) -> None:
    """Bit for bit: weights and every state array (moments, momentum buffers), and the
    step count. No fused multiply-add anywhere (``--fmad=false``, ``-ffp-contract=off``),
    so no ulp bound is needed, for SGD either."""
    (gp, gs, gopt), (wp, ws, wopt) = got, want
    for g, w in zip(gp, wp, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    assert gs.keys() == ws.keys()
    for slot in ws:
        for g, w in zip(gs[slot], ws[slot], strict=True):
            np.testing.assert_array_equal(g, w)
    assert gopt.state.get("step") == wopt.state.get("step")


def _statements(calls: list[str]) -> Any:
    """A kernel made of the statements themselves, evaluated with NumPy (no compiler)."""
    def make(opt: Any) -> Any:
        spec = _spec(opt)

        def run(*args: Any) -> None:
            calls.append(spec.name)
            arrays = dict(zip(spec.arrays, args[:len(spec.arrays)], strict=True))
            typ = arrays["p"].dtype.type
            scalars = {k: typ(v) for k, v in
                       zip(spec.scalars, args[len(spec.arrays):], strict=True)}
            for a, value in src.evaluate(spec, np, arrays, scalars).items():
                arrays[a][...] = value

        return run

    return make


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_kernel_statements_as_the_fast_path_equal_the_rule_bitwise(name: str, clip: str,
                                                                   dtype: Any) -> None:
    """The statements each kernel is generated from, run by the optimiser as its in-place
    fast path, give the pure rule's weights and state bit for bit."""
    calls: list[str] = []
    got = _run_optimiser(name, clip, dtype, _statements(calls))
    want = _run_optimiser(name, clip, dtype, None)
    assert len(calls) == STEPS * len(SHAPES)  # the fast path ran, every step
    _assert_same(got, want)


@pytest.mark.parametrize("target", ["rows", "labels", "labels-smoothed"])
def test_softmax_rows_reference_equals_the_plain_loss(target: str) -> None:
    xp = mlcore.get_backend("numpy").xp
    rng = _rng(4)
    z = rng.normal(0, 4, (9, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 9)
    s = 0.1 if target == "labels-smoothed" else 0.0
    t = np.eye(6, dtype=np.float32)[labels] if target == "rows" else labels
    want_value, want_grad = softmax_cross_entropy(xp, z, t, s)
    keep, spread = (1.0 - s, s / 6) if t.ndim == 1 else (1.0, 0.0)
    rows, grad = src.row_reference(np, z, t, keep, spread, True)
    np.testing.assert_allclose(rows.sum() / 9, want_value, rtol=2e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-6, atol=1e-8)


# -- 2. the generated source, launched through the fake ----------------------------------
def test_source_signature_matches_the_argument_layout() -> None:
    spec = src.adam_kernel()
    name, code = src.elementwise_source(spec, "float32", 3)
    params = parse_signature(code, name)
    assert len(params) == 3 * 4 + 3 + 1 + len(spec.scalars)
    assert params[:4] == [("float", True)] * 4 and params[12] == ("long long", False)
    assert params[-4:] == [("float", False)] * 4
    assert "sqrt(v)" in code and "m * b1 + g" in code and "v * b2 + g * g" in code
    with pytest.raises(ValueError, match="tensors must be in"):
        src.elementwise_source(spec, "float32", src.MAX_TENSORS + 1)


def _launched(cupy: FakeCupy) -> Any:
    """The kernel the optimiser asks for, from ``make_kernels`` on the fake CuPy: its
    arrays handed over as fake CuPy arrays sharing their memory, so the generated CUDA
    source, compiled as C++, updates them in place through the real launch code."""
    def make(opt: Any) -> Any:
        fn = kernels.make_kernels(cupy)["adam_update" if isinstance(opt, mlcore.Adam)
                                        else "sgd_update"]

        def run(*args: Any) -> None:
            fn(*(fake(a) if isinstance(a, np.ndarray) else a for a in args))

        return run

    return make


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_fused_kernel_as_the_fast_path_equals_the_rule_bitwise(cupy: FakeCupy, name: str,
                                                               clip: str, dtype: Any) -> None:
    """``adam_update`` and ``sgd_update`` as ``mlcore.Adam``/``AdamW``/``SGD`` call them
    (after clipping and weight decay, with the rule's own scalars), one launch per
    parameter per step: the pure rule's weights and state bit for bit."""
    got = _run_optimiser(name, clip, dtype, _launched(cupy))
    assert cupy.state["launches"] == STEPS * len(SHAPES)  # none fell back to whole arrays
    want = _run_optimiser(name, clip, dtype, None)
    _assert_same(got, want)


@needs_compiler
def test_many_tensors_take_one_launch_per_32(cupy: FakeCupy) -> None:
    ps = [fake(np.full((i + 1,), float(i), np.float32)) for i in range(40)]
    gs = [fake(np.ones((i + 1,), np.float32)) for i in range(40)]
    kernels.launcher(cupy).elementwise(src.sgd_kernel(), [
        {"p": p, "g": g} for p, g in zip(ps, gs, strict=True)], {"lr": 0.5})
    assert cupy.state["launches"] == 2
    for i, p in enumerate(ps):
        np.testing.assert_array_equal(p, np.full((i + 1,), i - np.float32(0.5) * 1))


@needs_compiler
def test_arrays_the_kernel_cannot_take_run_the_same_statements(cupy: FakeCupy,
                                                               k: dict[str, Any]) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    p_strided = fake(base.copy())[:, ::2]  # not contiguous: whole-array CuPy operations
    k["sgd_update"](p_strided, fake(np.ones((4, 3), np.float32)), 0.25)
    assert cupy.state["launches"] == 0
    np.testing.assert_array_equal(p_strided, base[:, ::2] - np.float32(0.25))
    p_ok = fake(np.zeros((4, 3), np.float32))
    g_f = fake(np.asfortranarray(np.ones((4, 3), np.float32)))  # another layout: copied
    k["sgd_update"](p_ok, g_f, 0.25)
    assert cupy.state["launches"] == 1
    np.testing.assert_array_equal(p_ok, np.full((4, 3), -0.25, np.float32))
    whole = fake(np.zeros(8, np.float32))
    k["sgd_update"](whole[1:5], whole[0:4], 1.0)  # partial overlap: never in the kernel
    assert cupy.state["launches"] == 1


@needs_compiler
@pytest.mark.parametrize("target", ["rows", "labels", "labels-smoothed", "no-grad"])
def test_softmax_cross_entropy_kernel(cupy: FakeCupy, k: dict[str, Any], target: str) -> None:
    xp = mlcore.get_backend("numpy").xp
    rng = _rng(5)
    z = rng.normal(0, 4, (300, 10)).astype(np.float32)
    z[0] = 500.0  # a row far from zero stays finite (the max is subtracted)
    labels = rng.integers(0, 10, 300)
    s = 0.2 if target == "labels-smoothed" else 0.0
    t = np.eye(10, dtype=np.float32)[labels] if target == "rows" else labels
    grad = target != "no-grad"
    want_value, want_grad = softmax_cross_entropy(xp, z, t, s, grad=grad)
    value, g = k["softmax_cross_entropy"](np, fake(z), fake(t), s, grad)
    assert cupy.state["launches"] == 1
    np.testing.assert_allclose(value, want_value, rtol=2e-6)
    if grad:
        np.testing.assert_allclose(g, want_grad, rtol=2e-6, atol=1e-9)
    else:
        assert g is None


@needs_compiler
def test_the_fake_refuses_a_python_float_argument(cupy: FakeCupy) -> None:
    name, code = src.elementwise_source(src.sgd_kernel(), "float32", 1)
    p = fake(np.zeros(3, np.float32))
    with pytest.raises(FakeCudaError, match="argument 4 should be float, received float"):
        cupy.RawKernel(code, name)((1,), (32,), (p, p, np.int64(3), np.int64(3), 0.5))


def test_cupy_kernels_are_those_of_the_hookspecs_table(cupy: FakeCupy) -> None:
    import inspect

    from mlcore.hookspecs import KERNELS

    made = kernels.make_kernels(cupy)
    # only kernels the core asks for (none offered that no code path calls); another
    # backend may offer a kernel CuPy does not
    assert set(made) == set(kernels.KERNEL_NAMES) <= set(KERNELS)
    assert {"adam_update", "sgd_update", "softmax_cross_entropy"} <= set(made)
    for name, fn in made.items():
        params = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                           for p in inspect.signature(fn).parameters.values())
        assert KERNELS[name].signature.startswith(f"kernel({params})"), (name, params)


def test_kernel_lookup_answers_only_for_cupy() -> None:
    numpy_xp = mlcore.get_backend("numpy").xp
    assert kernels.kernel("adam_update", numpy_xp) is None
    assert kernels.kernel("no_such_kernel", numpy_xp) is None


@needs_compiler
def test_the_hook_self_tests_the_kernels_once(cupy: FakeCupy,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import mlcore_cupy

    monkeypatch.setattr(kernels, "_TESTED", {})
    xp = types.SimpleNamespace(__name__="array_api_compat.cupy")
    for name in kernels.KERNEL_NAMES:
        assert callable(mlcore_cupy.mlcore_kernel(name, xp))
    assert cupy.state["launches"] == 2  # the self-test: one Adam, one softmax launch
    assert kernels._TESTED == {id(cupy): ""}


def test_a_failing_self_test_turns_the_kernels_off(cupy: FakeCupy,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "_TESTED", {})

    def broken(*args: Any, **kw: Any) -> Any:
        raise FakeCudaError("nvrtc: error: invalid value for --gpu-architecture")

    monkeypatch.setattr(cupy, "RawKernel", broken)
    xp = types.SimpleNamespace(__name__="array_api_compat.cupy")
    with pytest.warns(RuntimeWarning, match="fused kernels off.*gpu-architecture"):
        assert kernels.kernel("adam_update", xp) is None
    assert kernels.kernel("sgd_update", xp) is None  # asked once per process
