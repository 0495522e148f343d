"""mlcore-cupy's fused kernels without a GPU: their maths and their launches.

Two levels, both against the plain Array API path of the core:

1. The statements each kernel is generated from, evaluated with NumPy
   (:func:`mlcore_cupy._source.evaluate`), give the plain path's numbers bit for bit
   (optimisers, ReLU, leaky ReLU) or to float32 rounding (exp, log, tanh).
2. The generated CUDA source itself, compiled as C++ and run thread by thread by the fake
   CuPy of ``cupy_fakes`` through the real launch code (argument order and types checked
   against the source's signature): the same numbers, in one launch for many tensors.

What only a GPU shows (``.ci/gpu-check.sh``): that NVRTC compiles the source, and the
results of libdevice's exp/log/tanh and of cuBLAS around the kernels.
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


# -- 1. the statements against the plain path (NumPy only) -------------------------------
def _plain_adam(dtype: Any, steps: int, decoupled: bool, wd: float) -> tuple[list[Any], Any]:
    """mlcore.optim.Adam/AdamW on the strict backend (the plain Array API path)."""
    with mlcore.use_backend("strict") as b:
        ps = [mlcore.layers.Parameter(b.asarray(p)) for p in _params(dtype)]
        opt = (mlcore.optim.AdamW if decoupled else mlcore.optim.Adam)(ps, lr=0.01,
                                                                        weight_decay=wd)
        for t in range(steps):
            for i, p in enumerate(ps):
                p.grad = b.asarray(_grad(p.shape, dtype, t, i))
            opt.step()
        return [b.to_numpy(p.value) for p in ps], opt


def _grad(shape: tuple[int, ...], dtype: Any, t: int, i: int) -> np.ndarray:
    return _rng(100 * t + i).normal(0, 1, shape).astype(dtype)


def _spec_adam(dtype: Any, steps: int, decoupled: bool, wd: float,
               run: Any) -> list[np.ndarray]:
    """The same steps through ``run(spec, tensors, scalars)`` with the optimiser's scalars."""
    ps = _params(dtype)
    ms, vs = [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]
    ref = mlcore.optim.Adam([mlcore.layers.Parameter(np.zeros(1))], lr=0.01)
    for t in range(steps):
        eps, scale = ref._scalars(t + 1)
        scalars = {"b1": 0.9, "b2": 0.999, "eps": eps, "scale": scale}
        if decoupled:
            scalars["decay"] = 1.0 - 0.01 * wd
        spec = src.adam_kernel(decoupled=decoupled, l2=bool(wd) and not decoupled)
        if wd and not decoupled:
            scalars["wd"] = wd
        tensors = [{"p": p, "g": _grad(p.shape, dtype, t, i), "m": m, "v": v}
                   for i, (p, m, v) in enumerate(zip(ps, ms, vs, strict=True))]
        run(spec, tensors, scalars)
    return ps


def _numpy_run(spec: src.Elementwise, tensors: list[dict[str, Any]],
               scalars: dict[str, float]) -> None:
    for t in tensors:
        typed = {k: t["p"].dtype.type(v) for k, v in scalars.items()}
        for a, value in src.evaluate(spec, np, t, typed).items():
            t[a][...] = value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("decoupled", "wd"), [(False, 0.0), (False, 0.1), (True, 0.01)],
                         ids=["adam", "adam-l2", "adamw"])
def test_adam_statements_equal_the_plain_optimiser_bitwise(dtype: Any, decoupled: bool,
                                                           wd: float) -> None:
    want, _ = _plain_adam(dtype, 3, decoupled, wd)
    got = _spec_adam(dtype, 3, decoupled, wd, _numpy_run)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def _step_adam(dtype: Any, steps: int, decoupled: bool, launch: Any) -> list[np.ndarray]:
    """Adam with the step count as a 0-d array (the bias corrections from it)."""
    ps = _params(dtype)
    ms, vs = [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]
    for t in range(steps):
        gs = [_grad(p.shape, dtype, t, i) for i, p in enumerate(ps)]
        launch(ps, gs, ms, vs, np.array(t + 1, dtype=dtype), 0.01, 0.9, 0.999, 1e-8,
               1.0 - 0.01 * 0.01 if decoupled else 1.0)
    return ps


def _numpy_step_many(ps: Any, gs: Any, ms: Any, vs: Any, t: Any, lr: float, b1: float,
                     b2: float, eps: float, decay: float) -> None:
    spec = src.adam_step_kernel(decoupled=decay != 1.0)
    for p, g, m, v in zip(ps, gs, ms, vs, strict=True):
        typed = {"t": t, "b1_": b1, "b2_": b2, "eps_": eps, "lr_": lr,
                 "decay": p.dtype.type(decay)}
        arrays = {"p": p, "g": g, "m": m, "v": v}
        for a, value in src.evaluate(spec, np, arrays, typed).items():
            arrays[a][...] = value


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_device_step_adam_statements_equal_the_plain_optimiser(dtype: Any,
                                                               decoupled: bool) -> None:
    want, _ = _plain_adam(dtype, 3, decoupled, 0.01 if decoupled else 0.0)
    got = _step_adam(dtype, 3, decoupled, _numpy_step_many)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def _plain_sgd(dtype: Any, steps: int, **kw: Any) -> list[np.ndarray]:
    with mlcore.use_backend("strict") as b:
        ps = [mlcore.layers.Parameter(b.asarray(p)) for p in _params(dtype)]
        opt = mlcore.optim.SGD(ps, lr=0.05, **kw)
        for t in range(steps):
            for i, p in enumerate(ps):
                p.grad = b.asarray(_grad(p.shape, dtype, t, i))
            opt.step()
        return [b.to_numpy(p.value) for p in ps]


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1}, {"momentum": 0.9},
                                {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}],
                         ids=["plain", "l2", "momentum", "nesterov-l2"])
def test_sgd_statements_equal_the_plain_optimiser_bitwise(kw: dict[str, Any]) -> None:
    dtype = np.float32
    want = _plain_sgd(dtype, 3, **kw)
    ps = _params(dtype)
    bufs = [np.zeros_like(p) for p in ps]
    mu, wd = kw.get("momentum", 0.0), kw.get("weight_decay", 0.0)
    for t in range(3):
        spec = src.sgd_kernel(momentum=bool(mu), nesterov=kw.get("nesterov", False),
                              l2=bool(wd), first=t == 0)
        tensors = [{"p": p, "g": _grad(p.shape, dtype, t, i), "b": b}
                   for i, (p, b) in enumerate(zip(ps, bufs, strict=True))]
        _numpy_run(spec, tensors, {"lr": 0.05, "wd": wd, "mu": mu})
    for g, w in zip(ps, want, strict=True):
        np.testing.assert_array_equal(g, w)


def _plain_activation(name: str, params: dict[str, Any], x: np.ndarray,
                      dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fn = mlcore.activation(name, **params)
    y = fn.forward(x)
    return np.asarray(y), np.asarray(fn.backward(x, y, dy))


ACTS = [("identity", {}), ("relu", {}), ("leaky_relu", {"alpha": 0.2}),
        ("leaky_relu", {"alpha": 3.0}), ("leaky_relu", {"alpha": -0.5}), ("sigmoid", {}),
        ("tanh", {})]
EXACT = {"identity", "relu", "leaky_relu"}  # no transcendental function: bit for bit


def _act_data(dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = _rng(3)
    z = rng.normal(0, 3, (6, 5)).astype(dtype)
    z[0, :3] = [0.0, -0.0, 100.0]
    z[1, :2] = [-100.0, np.nan]
    return z, rng.normal(0, 1, 5).astype(dtype), rng.normal(0, 1, (6, 5)).astype(dtype)


def _close(got: np.ndarray, want: np.ndarray, exact: bool) -> None:
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=4e-7, atol=2e-7)  # 1 - y*y cancels


@pytest.mark.parametrize(("name", "params"), ACTS, ids=[f"{n}{p}" for n, p in ACTS])
def test_activation_statements_equal_the_plain_activation(name: str,
                                                          params: dict[str, Any]) -> None:
    z, b, dy = _act_data()
    want_y, want_dx = _plain_activation(name, params, z + b, dy)
    fwd = src.bias_activation_kernel(name, params.get("alpha", 0.01))
    scalars = {k: np.float32(v) for k, v in
               kernels._activation_scalars(name, params, np.float32).items()}
    out = src.evaluate(fwd, np, {"z": z, "b": b, "y": None}, scalars)
    _close(out["z"], z + b, True)
    _close(out["y"], want_y, name in EXACT)
    bwd = src.activation_backward_kernel(name)
    dx = src.evaluate(bwd, np, {"x": out["z"], "y": out["y"], "dy": dy, "dx": None},
                      scalars)["dx"]
    _close(dx, want_dx, name in EXACT)


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
    spec = src.adam_kernel(decoupled=True)
    name, code = src.elementwise_source(spec, "float32", 3)
    params = parse_signature(code, name)
    assert len(params) == 3 * 4 + 3 + 2 + len(spec.scalars)
    assert params[:4] == [("float", True)] * 4 and params[12] == ("long long", False)
    assert params[-5:] == [("float", False)] * 5
    assert "sqrt(v)" in code and "m * b1 + g" in code and "p * decay" in code
    with pytest.raises(ValueError, match="tensors must be in"):
        src.elementwise_source(spec, "float32", src.MAX_TENSORS + 1)


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_many_is_one_launch_and_the_plain_numbers(cupy: FakeCupy, k: dict[str, Any],
                                                       dtype: Any) -> None:
    want, _ = _plain_adam(dtype, 3, False, 0.0)

    def launched(spec: src.Elementwise, tensors: list[dict[str, Any]],
                 scalars: dict[str, float]) -> None:
        before = cupy.state["launches"]
        ps, gs, ms, vs = ([fake(t[a]) for t in tensors] for a in "pgmv")
        k["adam_update_many"](ps, gs, ms, vs, scalars["b1"], scalars["b2"], scalars["eps"],
                              scalars["scale"])
        assert cupy.state["launches"] == before + 1  # three parameters, one launch

    got = _spec_adam(dtype, 3, False, 0.0, launched)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@needs_compiler
@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_device_step_adam_is_one_launch_and_the_plain_numbers(cupy: FakeCupy,
                                                              k: dict[str, Any],
                                                              decoupled: bool) -> None:
    want, _ = _plain_adam(np.float32, 3, decoupled, 0.01 if decoupled else 0.0)

    def launch(ps: Any, gs: Any, ms: Any, vs: Any, t: Any, *rest: Any) -> None:
        k["adam_step_many"](*([fake(a) for a in arrays] for arrays in (ps, gs, ms, vs)),
                            fake(t), *rest)

    got = _step_adam(np.float32, 3, decoupled, launch)
    assert cupy.state["launches"] == 3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@needs_compiler
def test_adamw_many_and_single_adam(cupy: FakeCupy, k: dict[str, Any]) -> None:
    want, _ = _plain_adam(np.float32, 2, True, 0.01)

    def launched(spec: src.Elementwise, tensors: list[dict[str, Any]],
                 scalars: dict[str, float]) -> None:
        ps, gs, ms, vs = ([fake(t[a]) for t in tensors] for a in "pgmv")
        k["adam_update_many"](ps, gs, ms, vs, scalars["b1"], scalars["b2"], scalars["eps"],
                              scalars["scale"], decay=scalars["decay"])

    got = _spec_adam(np.float32, 2, True, 0.01, launched)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    p, g, m, v = (fake(np.ones((4, 3), np.float32)) for _ in range(4))
    k["adam_update"](p, g, m, v, 0.9, 0.999, 1e-8, 2.0)
    np.testing.assert_array_equal(m, np.ones((4, 3)) * np.float32(0.9) + 1)
    assert cupy.state["launches"] == 3


@needs_compiler
def test_many_tensors_take_one_launch_per_32(cupy: FakeCupy, k: dict[str, Any]) -> None:
    ps = [fake(np.full((i + 1,), float(i), np.float32)) for i in range(40)]
    gs = [fake(np.ones((i + 1,), np.float32)) for i in range(40)]
    k["sgd_update_many"](ps, gs, 0.5)
    assert cupy.state["launches"] == 2
    for i, p in enumerate(ps):
        np.testing.assert_array_equal(p, np.full((i + 1,), i - np.float32(0.5) * 1))


@needs_compiler
def test_arrays_the_kernel_cannot_take_run_the_same_statements(cupy: FakeCupy,
                                                               k: dict[str, Any]) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    p_strided = fake(base.copy())[:, ::2]  # not contiguous: whole-array CuPy operations
    g = fake(np.ones((4, 3), np.float32))
    p_ok = fake(np.zeros((4, 3), np.float32))
    g_c = fake(np.asfortranarray(np.ones((4, 3), np.float32)))  # another layout: copied
    k["sgd_update_many"]([p_strided, p_ok], [g, g_c], 0.25)
    assert cupy.state["launches"] == 1
    np.testing.assert_array_equal(p_strided, base[:, ::2] - np.float32(0.25))
    np.testing.assert_array_equal(p_ok, np.full((4, 3), -0.25, np.float32))
    whole = fake(np.zeros(8, np.float32))
    k["sgd_update"](whole[1:5], whole[0:4], 1.0)  # partial overlap: never in the kernel
    assert cupy.state["launches"] == 1


@needs_compiler
@pytest.mark.parametrize(("name", "params"), ACTS, ids=[f"{n}{p}" for n, p in ACTS])
def test_bias_activation_kernels_launch_once_each(cupy: FakeCupy, k: dict[str, Any],
                                                  name: str, params: dict[str, Any]) -> None:
    z, b, dy = _act_data()
    want_y, want_dx = _plain_activation(name, params, z + b, dy)
    zf = fake(z.copy())
    y = k["bias_activation"](zf, fake(b), name, params)
    _close(np.asarray(zf), z + b, True)  # z += b in place, as Dense's forward does
    _close(np.asarray(y), want_y, name in EXACT)
    dx = k["activation_backward"](name, params, zf, y, fake(dy))
    _close(np.asarray(dx), want_dx, name in EXACT)
    assert cupy.state["launches"] == 2
    assert k["bias_activation"](zf, fake(b), "softmax", {}) is None


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
    with pytest.raises(FakeCudaError, match="argument 5 should be float, received float"):
        cupy.RawKernel(code, name)((1,), (32,), (p, p, np.int64(3), np.int64(3), np.int64(1),
                                                 0.5))


def test_flat_buffer_views_keep_each_layout(cupy: FakeCupy) -> None:
    like = _params(np.float32)
    flat = kernels.FlatBuffer(cupy, like)
    assert flat.buffer.shape == (64 * 3,)  # 35, 7, 21 elements, each rounded up to 64
    for view, a in zip(flat.views, like, strict=True):
        assert view.shape == a.shape and view.strides == a.strides
        assert np.all(view == 0) and view.data.ptr % 256 == flat.buffer.data.ptr % 256
    flat.views[0][...] = 1.0
    assert float(flat.buffer.sum()) == 35.0


def test_cupy_kernels_are_those_of_the_hookspecs_table(cupy: FakeCupy) -> None:
    import inspect

    from mlcore.hookspecs import KERNELS

    made = kernels.make_kernels(cupy)
    assert set(made) == set(kernels.KERNEL_NAMES) and set(made) <= set(KERNELS)
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
