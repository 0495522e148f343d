"""mlcore-numpy's fused kernels (hook ``mlcore_kernel``): the same numbers as the core's
plain Array API path, whichever route (compiled loop, blocked passes, BLAS) runs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.layers import Parameter


def _adam_run(values: list[np.ndarray], grads: list[np.ndarray], fused: bool,
              **kw: Any) -> list[Any]:
    params = [Parameter(v.copy()) for v in values]
    opt = mlcore.Adam(params, lr=0.01, **kw)
    if not fused:
        opt._fused = None
    assert (opt._fused is not None) == fused
    for step in range(3):
        for p, g in zip(params, grads, strict=True):
            p.grad = g * (step + 1)
        opt.step()
    return [p.value for p in params] + opt.m + opt.v


@pytest.fixture(params=["numba-loop", "numpy-passes"])
def adam_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the Adam kernel as the compiled loop, or with the JIT switched off."""
    from mlcore_numpy import jit, kernels

    if request.param == "numpy-passes":
        monkeypatch.setenv("MLCORE_NUMPY_JIT", "0")
        off = jit.Jit()
        monkeypatch.setattr(kernels, "jit", lambda: off)
        monkeypatch.setattr(kernels, "loaded", lambda: off)
        assert not off.available and "MLCORE_NUMPY_JIT" in off.reason
    elif not jit.jit().available:
        pytest.skip(f"no compiled loop here: {jit.jit().reason}")
    return str(request.param)


def test_the_jit_is_there_when_numba_is() -> None:
    import importlib.util

    from mlcore_numpy.jit import jit

    disabled = os.environ.get("MLCORE_NUMPY_JIT", "1").strip().lower() in ("0", "false",
                                                                          "no", "off")
    has_numba = importlib.util.find_spec("numba") is not None
    assert jit().available == (has_numba and not disabled), jit().reason


def test_jit_reports_a_missing_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mlcore_numpy import jit

    monkeypatch.delenv("MLCORE_NUMPY_JIT", raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    broken = jit.Jit()
    assert not broken.available and "pip install 'mlcore-numpy[jit]'" in broken.reason


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_numpy_adam_kernel_equals_plain_path_bitwise(dtype: Any, weight_decay: float,
                                                     adam_path: str) -> None:
    rng = np.random.default_rng(0)
    shapes = [(300, 257), (5,), (70000,), (3, 4)]  # blocked (> 32768), one block, tiny
    values = [rng.normal(size=s).astype(dtype) for s in shapes]
    values.append(rng.normal(size=(40, 30)).astype(dtype).T)  # not contiguous: unblocked
    grads = [rng.normal(size=v.shape).astype(dtype) for v in values]
    with mlcore.use_backend("numpy"):
        fused = _adam_run(values, grads, True, weight_decay=weight_decay)
        plain = _adam_run(values, grads, False, weight_decay=weight_decay)
    for a, b in zip(fused, plain, strict=True):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


def test_adamw_uses_the_kernel_and_matches(adam_path: str) -> None:
    rng = np.random.default_rng(1)
    values = [rng.normal(size=(200, 300)).astype(np.float32)]
    grads = [rng.normal(size=(200, 300)).astype(np.float32)]
    with mlcore.use_backend("numpy"):
        params = [Parameter(values[0].copy())]
        opt = mlcore.AdamW(params, lr=0.01)
        assert opt._fused is not None
        params[0].grad = grads[0]
        opt.step()
        ref = [Parameter(values[0].copy())]
        plain = mlcore.AdamW(ref, lr=0.01)
        plain._fused = None
        ref[0].grad = grads[0]
        plain.step()
    np.testing.assert_array_equal(params[0].value, ref[0].value)


@pytest.fixture(params=["blas", "numpy-passes"])
def sgd_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the SGD kernel through NumPy's BLAS axpy, or with it switched off."""
    from mlcore_numpy import blas, kernels

    if request.param == "numpy-passes":
        monkeypatch.setenv("MLCORE_NUMPY_BLAS", "0")
        off = blas.Cblas()
        monkeypatch.setattr(kernels, "cblas", lambda: off)
        assert not kernels.cblas().available
        assert "MLCORE_NUMPY_BLAS" in kernels.cblas().reason
    elif not kernels.cblas().available:
        pytest.skip(f"NumPy's BLAS is not reachable here: {kernels.cblas().reason}")
    return str(request.param)


def _numpy_openblas64_present() -> bool:
    import glob

    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    return bool(glob.glob(os.path.join(libs, "libscipy_openblas64_*")))


def test_numpy_blas_is_found_where_numpy_ships_openblas() -> None:
    from mlcore_numpy.kernels import cblas

    blas = cblas()
    if os.environ.get("MLCORE_NUMPY_BLAS", "1").strip().lower() in ("0", "false", "no", "off"):
        assert not blas.available and "MLCORE_NUMPY_BLAS" in blas.reason
        return
    assert blas.available == _numpy_openblas64_present(), blas.reason
    if blas.available:
        x = np.arange(70000, dtype=np.float32)
        y = np.ones(70000, dtype=np.float32)
        blas.axpy(-2.0, x, y)
        np.testing.assert_array_equal(y, 1.0 - 2.0 * x)


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True},
                                {"weight_decay": 0.1}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_sgd_kernel_equals_plain_path(kw: dict[str, Any], dtype: Any,
                                            sgd_path: str) -> None:
    """Bitwise with the NumPy passes; BLAS's axpy may fuse the multiply-add (a single
    rounding), so within a few ulp of the operands there."""
    rng = np.random.default_rng(2)
    shapes = [(300, 257), (7,), (70000,)]
    values = [rng.normal(size=s).astype(dtype) for s in shapes]
    values.append(rng.normal(size=(40, 30)).astype(dtype).T)  # not contiguous
    values.append(np.asfortranarray(rng.normal(size=(257, 300)).astype(dtype)))  # Dense-like
    grads = [rng.normal(size=v.shape).astype(dtype) for v in values]
    grads.append(np.ascontiguousarray(grads[-1]))  # a C-ordered grad for a Fortran weight
    values.append(values[-1])
    out = []
    with mlcore.use_backend("numpy"):
        for fused in (True, False):
            params = [Parameter(v.copy(order="K")) for v in values]
            opt = mlcore.SGD(params, lr=0.05, **kw)
            assert opt._fused is not None
            if not fused:
                opt._fused = None
            for step in range(3):
                for p, g in zip(params, grads, strict=True):
                    p.grad = g * (step + 1)
                opt.step()
            out.append([p.value for p in params])
    for a, b in zip(*out, strict=True):
        assert a.dtype == dtype
        if sgd_path == "numpy-passes":
            np.testing.assert_array_equal(a, b)
        else:
            # one rounding fewer per step: a few ulp of the operands (not of a difference
            # that cancels towards 0)
            tol = 8 * np.finfo(dtype).eps * float(np.max(np.abs(b)))
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)


def test_sgd_kernel_sends_large_contiguous_parameters_to_blas(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcore_numpy import kernels

    calls: list[tuple[float, int]] = []

    class Spy:
        available = True

        def axpy(self, a: float, x: np.ndarray, y: np.ndarray) -> None:
            calls.append((a, y.size))
            y += a * x

    spy = Spy()
    monkeypatch.setattr(kernels, "cblas", lambda: spy)
    big_c = np.ones((300, 257), np.float32)
    big_f = np.asfortranarray(np.ones((257, 300), np.float32))
    small = np.ones(100, np.float32)
    strided = np.ones((600, 257), np.float32)[::2]
    for p in (big_c, big_f, small, strided):
        kernels.sgd_update(p, np.full_like(p, 2.0), 0.25)
        np.testing.assert_array_equal(p, 0.5)
    assert calls == [(-0.25, 77100), (-0.25, 77100)]  # small and strided: NumPy ops


def test_dense_weights_keep_their_layout_through_a_training_step() -> None:
    """The weight, its gradient and Adam's moments share one (Fortran) layout, so the
    blocked kernel runs on flat views and updates the weight in place."""
    from mlcore_numpy import kernels

    rng = np.random.default_rng(4)
    with mlcore.use_backend("numpy"):
        model = mlcore.MLP([300, 200, 3], activation="relu", seed=0)
        assert model.layers[0].weight.value.size > kernels.BLOCK  # the blocked path
        opt = mlcore.Adam(model.parameters(), lr=0.01)
        w = model.layers[0].weight
        storage = w.value
        assert storage.flags.f_contiguous and not storage.flags.c_contiguous
        x = rng.normal(size=(16, 300)).astype(np.float32)
        y = rng.integers(0, 3, 16)
        model.train_step(x, y, mlcore.loss("cross_entropy", from_logits=True), opt)
        assert w.value is storage
        assert opt.m[0].strides == storage.strides == opt.v[0].strides


def test_numpy_kernels_are_those_of_the_hookspecs_table() -> None:
    import inspect

    from mlcore_numpy import kernels

    from mlcore.hookspecs import KERNELS

    assert set(kernels._KERNELS) <= set(KERNELS)
    for name, fn in kernels._KERNELS.items():
        params = ", ".join(str(p.replace(annotation=inspect.Parameter.empty))
                           for p in inspect.signature(fn).parameters.values())
        assert KERNELS[name].signature.startswith(f"kernel({params})"), name


def test_fused_updates_leave_unusual_arrays_to_numpy() -> None:
    """Read-only, overlapping or oddly typed arrays never reach BLAS or the flat views:
    NumPy's own operations handle them (or refuse, as NumPy does)."""
    from mlcore_numpy import kernels

    n = 3 * kernels.BLOCK
    frozen = np.ones(n, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        kernels.sgd_update(frozen, np.ones(n, np.float32), 0.5)
    assert float(frozen.min()) == 1.0  # untouched
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    with pytest.raises(ValueError, match="read-only"):
        kernels.adam_update(frozen, np.ones(n, np.float32), m, v, 0.9, 0.999, 1e-8, 1.0)
    assert float(frozen.min()) == 1.0

    buf = np.arange(n + 1, dtype=np.float64)
    p, g = buf[1:], buf[:-1]  # overlapping views
    want = p - 0.5 * g
    kernels.sgd_update(p, g, 0.5)
    np.testing.assert_array_equal(p, want)

    same = np.full(n, 2.0)
    kernels.sgd_update(same, same, 0.25)  # g is p: still one well-defined update
    np.testing.assert_allclose(same, 1.5)

    inf = np.full(n, np.inf, np.float32)
    zero_lr = np.ones(n, np.float32)
    with np.errstate(invalid="ignore"):
        kernels.sgd_update(zero_lr, inf, 0.0)  # as p -= 0 * inf: NaN, not skipped
    assert np.isnan(zero_lr).all()


def test_adam_kernel_takes_the_blocked_path_for_single_row_weights() -> None:
    from mlcore_numpy import kernels

    rng = np.random.default_rng(5)
    with mlcore.use_backend("numpy"):
        layer = mlcore.Dense(70000, 1)  # weight (1, 70000): C and Fortran contiguous
    p = layer.weight.value
    g = rng.normal(size=p.shape).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    assert kernels._flats(p, g, m, v) is not None


def test_adam_kernel_sends_large_parameters_to_the_compiled_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcore_numpy import kernels

    calls: list[int] = []

    class Spy:
        available = True

        @staticmethod
        def adam(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *s: Any) -> None:
            assert p.ndim == 1 and p.flags.c_contiguous and all(type(x) is p.dtype.type
                                                                for x in s)
            calls.append(p.size)

    spy = Spy()
    monkeypatch.setattr(kernels, "jit", lambda: spy)
    monkeypatch.setattr(kernels, "loaded", lambda: spy)
    big = np.asfortranarray(np.ones((300, 200), np.float32))
    small = np.ones(kernels.JIT_MIN - 1, np.float32)
    for p in (big, small):
        kernels.adam_update(p, np.ones_like(p), np.zeros_like(p), np.zeros_like(p), 0.9, 0.999,
                            1e-8, 1.0)
    assert calls == [60000]  # the small one ran NumPy's operations
    assert float(small[0]) != 1.0


def test_the_jit_loads_only_for_a_large_parameter_unless_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing Numba costs ~0.5 s a process: a small model (the digits demo) never pays
    it; the first update of a parameter of JIT_LOAD_MIN elements does, or of JIT_MIN once
    the fused activation loops have loaded Numba; MLCORE_NUMPY_JIT=1 pays it when the first
    Adam optimiser is built."""
    from mlcore_numpy import fused, jit, kernels

    monkeypatch.delenv("MLCORE_NUMPY_JIT", raising=False)
    jit.jit.cache_clear()
    fused.fused.cache_clear()
    for n in (kernels.JIT_MIN, kernels.JIT_LOAD_MIN - 1):
        p = np.ones(n, np.float32)
        kernels.adam_update(p, p.copy(), np.zeros_like(p), np.zeros_like(p), 0.9, 0.999,
                            1e-8, 1.0)
    assert kernels.kernel("adam_update", mlcore.get_backend("numpy").xp) is not None
    assert jit.loaded() is None
    p = np.ones(kernels.JIT_LOAD_MIN, np.float32)
    kernels.adam_update(p, p.copy(), np.zeros_like(p), np.zeros_like(p), 0.9, 0.999, 1e-8, 1.0)
    assert jit.loaded() is not None

    jit.jit.cache_clear()
    x = np.ones(fused.LOAD_MIN, np.float32)
    assert fused.KERNELS["relu"](x) is not None  # the fused loops load Numba
    p = np.ones(kernels.JIT_MIN, np.float32)
    kernels.adam_update(p, p.copy(), np.zeros_like(p), np.zeros_like(p), 0.9, 0.999, 1e-8, 1.0)
    assert jit.loaded() is not None  # then a small parameter loads the Adam loop as well

    jit.jit.cache_clear()
    monkeypatch.setenv("MLCORE_NUMPY_JIT", "1")
    kernels.kernel("adam_update", mlcore.get_backend("numpy").xp)
    assert jit.loaded() is not None


def test_adam_kernel_matches_the_plain_path_on_awkward_inputs(adam_path: str) -> None:
    """A read-only gradient and NumPy float64 scalars (which promote NumPy's passes) give
    exactly what the optimiser's plain Array API path gives."""
    from mlcore_numpy import kernels

    rng = np.random.default_rng(6)
    value = rng.normal(size=(kernels.JIT_LOAD_MIN // 256, 256)).astype(np.float32)
    frozen = rng.normal(size=value.shape).astype(np.float32)
    frozen.flags.writeable = False
    for grad, lr in ((frozen, 0.01), (frozen.copy(), np.float64(0.01))):
        out = []
        with mlcore.use_backend("numpy"):
            for fused in (True, False):
                p = Parameter(value.copy())
                opt = mlcore.Adam([p], lr=0.01)
                opt.lr = lr  # a NumPy scalar set after construction
                if not fused:
                    opt._fused = None
                for _ in range(3):
                    p.grad = grad
                    opt.step()
                out.append([p.value, opt.m[0], opt.v[0]])
        for a, b in zip(*out, strict=True):
            np.testing.assert_array_equal(a, b)


def test_flat_views_refuse_aliased_state() -> None:
    from mlcore_numpy import kernels

    p, g, m = (np.zeros(100, np.float32) for _ in range(3))
    assert kernels._flats(p, g, m, m) is None  # m is v
    assert kernels._flats(p, g, p, m) is None  # state is p
    assert kernels._flats(p, g, m, np.zeros(100, np.float32)) is not None


def test_flat_views_remember_the_state_checks_only_while_they_hold() -> None:
    """The checks of p, m and v are remembered per parameter; anything that would have
    failed them since (another state array, read-only, reshaped in place, aliased) is
    checked again, and g, new each step, is checked every time."""
    from mlcore_numpy import passes

    p, g, m, v = (np.zeros((10, 10), np.float32) for _ in range(4))
    first = passes.flat_views(p, g, m, v)
    assert first is not None and passes._CHECKED[id(p)].holds(p, (m, v))
    again = passes.flat_views(p, np.ones((10, 10), np.float32), m, v)
    assert again is not None and np.shares_memory(again[0], p) and np.shares_memory(again[2], m)
    assert float(again[1][0]) == 1.0  # the new gradient's view
    assert passes.flat_views(p, g, m, p) is None  # v is now p: checked again, refused
    assert passes.flat_views(p, m, m, v) is None  # g is m: refused every time
    assert passes.flat_views(p, g.astype(np.float64), m, v) is None
    v.flags.writeable = False
    assert passes.flat_views(p, g, m, v) is None
    v.flags.writeable = True
    p.shape = (100,)  # reshaped in place: its shape no longer matches the state's
    assert passes.flat_views(p, g.reshape(100), m, v) is None
    p.shape = (10, 10)
    fortran = np.asfortranarray(g)  # g in another layout is copied into p's
    got = passes.flat_views(p, fortran, m, v)
    assert got is not None and not np.may_share_memory(got[1], fortran)


def test_flat_views_forget_a_parameter_that_is_gone() -> None:
    import gc
    import weakref

    from mlcore_numpy import passes

    p, g, m, v = (np.zeros(50, np.float64) for _ in range(4))
    assert passes.flat_views(p, g, m, v) is not None
    ref, key = weakref.ref(p), id(p)
    del p
    gc.collect()
    assert ref() is None and passes._CHECKED[key].refs[0]() is None  # held weakly
    q = np.zeros(50, np.float64)  # may reuse the id: the weak reference says it is new
    assert passes.flat_views(q, g, m, v) is not None
    assert passes._CHECKED[id(q)].holds(q, (m, v))
