"""mlcore-numpy's fused BatchNorm kernels (:mod:`mlcore_numpy.norm`) against BatchNorm's
formula (``mlcore.layers.normalization``), the one definition they are a fast path of.

The bound: ``ULPS`` ulp of each feature's scale, on float32 and float64, forward and
backward, random columns and extremes (values near 0 and subnormal, a large mean with a
small spread, constant columns, NaN and ±inf, which must land where the formula puts them).
A feature's scale is the largest magnitude among the terms the formula adds for it
(:func:`_scales`). Measured: 0 ulp (the loops make the formula's operations in its order;
bitwise with NumPy 2.x).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradcheck import Box, numeric_grads, rel_err

import mlcore
import mlcore.layers.normalization as normalization
from mlcore import plugins

ULPS = 4
"""The stated bound, in ulp of each feature's scale."""

DTYPES = [np.float32, np.float64]
NAMES = ("batch_norm_forward", "batch_norm_backward")


@pytest.fixture
def norm() -> Any:
    """The kernels' module, with the compiled loops loaded (skips without Numba)."""
    from mlcore_numpy import fused
    from mlcore_numpy import norm as module

    if not fused.fused().available or not module.norm_loops().available:
        reason = fused.fused().reason or module.norm_loops().reason
        pytest.skip(f"no compiled loops here: {reason}")
    return module


@pytest.fixture
def formula(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A switch: ``formula(True)`` makes BatchNorm ignore its kernels (the formula runs);
    ``formula(False)`` counts, in the returned dict, the calls each kernel answered."""
    answered: dict[str, int] = dict.fromkeys(NAMES, 0)

    def counting(xp: Any, name: str) -> Any:
        fn = plugins.kernel(name, xp)
        if fn is None:
            return None

        def spy(*args: Any) -> Any:
            got = fn(*args)
            answered[name] += got is not None
            return got
        return spy

    def use(plain: bool) -> dict[str, int]:
        answered.update(dict.fromkeys(NAMES, 0))
        monkeypatch.setattr(normalization, "kernel_for",
                            (lambda xp, name: None) if plain else counting)
        return answered
    yield use
    monkeypatch.undo()
    normalization.kernel_for.cache_clear()


def _inputs(dtype: Any, n: int = 256, f: int = 24) -> np.ndarray:
    """Random columns of various means and spreads, then columns of extremes."""
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, (n, f)) * rng.uniform(0.1, 10, f) + rng.normal(0, 5, f)
    x[:, 1] = 1e4 + rng.normal(0, 1e-2, n)  # large mean, small spread: cancellation
    x[:, 2] = 7.0  # constant: var = 0
    x[:, 3] = 0.0
    x[:, 4] = rng.normal(0, 1e-30 if dtype == np.float32 else 1e-300, n)  # near 0
    x[:, 5] = rng.choice([1e-40, -1e-40, 0.0], n) if dtype == np.float32 else 1e-310
    x[7, 6] = np.nan
    x[8, 7] = np.inf
    x[9, 8], x[10, 8] = np.inf, -np.inf
    x[:, 9] = -np.inf
    x[:, 10] = rng.normal(0, 1e18 if dtype == np.float32 else 1e150, n)  # d*d overflows
    x[:, 11] = 1e-3 * rng.normal(0, 1, n) - 3e6
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def _scales(*terms: np.ndarray) -> np.ndarray:
    """Per feature (column), the sum of the largest finite magnitude of each term."""
    total = 0.0
    for t in terms:
        t = np.atleast_2d(np.asarray(t, np.float64))
        total = total + np.max(np.where(np.isfinite(t), np.abs(t), 0.0), axis=0)
    return np.asarray(total)


def _close(got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN where the formula has none"
    inf = np.isinf(want)
    assert np.array_equal(got[inf], want[inf]), "infinities differ"
    ok = ~np.isnan(want) & ~inf
    spacing = np.spacing(np.broadcast_to(scale, want.shape).astype(want.dtype))
    tol = ULPS * np.maximum(spacing, np.finfo(want.dtype).smallest_subnormal)[ok]
    err = np.abs(got[ok].astype(np.float64) - want[ok])
    assert np.all(err <= tol), f"max {np.max(err / tol) * ULPS:.1f} ulp of the feature's scale"


def _layer(dtype: Any, f: int, momentum: float = 0.1) -> mlcore.BatchNorm:
    layer = mlcore.BatchNorm(f, momentum=momentum, dtype=np.dtype(dtype).name)
    rng = np.random.default_rng(4)
    layer.weight.value = rng.uniform(0.5, 1.5, f).astype(dtype)
    layer.bias.value = rng.normal(0, 1, f).astype(dtype)
    return layer


def _run(layer: mlcore.BatchNorm, x: np.ndarray, dy: np.ndarray) -> list[np.ndarray]:
    """What a training step takes from BatchNorm: Y, dX, both parameter gradients and the
    running statistics."""
    layer.zero_grad()
    with np.errstate(all="ignore"):
        y, backprop = layer.forward(x, input_grad=True)
        dx = backprop(dy)
    return [y, dx, layer.weight.grad, layer.bias.grad, layer.running_mean.value,
            layer.running_var.value]


def _both(x: np.ndarray, dy: np.ndarray, formula: Any) -> tuple[list[np.ndarray], ...]:
    """The layer's outputs by the formula, then with the kernels (each asserted to answer)."""
    out = []
    for plain in (True, False):
        answered = formula(plain)
        out.append(_run(_layer(x.dtype.type, x.shape[1]), x, dy))
    assert answered == dict.fromkeys(NAMES, 1), answered
    return out[0], out[1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inputs", ["random", "extremes"])
def test_fused_batch_norm_matches_its_formula(norm: Any, formula: Any, dtype: Any,
                                              inputs: str) -> None:
    rng = np.random.default_rng(3)
    if inputs == "random":
        x = (rng.normal(0, 2, (256, 256)) + rng.normal(0, 3, 256)).astype(dtype)
    else:
        x = _inputs(dtype)
    dy = rng.normal(0, 1, x.shape).astype(dtype)
    dy[:, 0] *= 1e-3
    dy[20, 1] = np.nan  # NaN in the gradient: its column of dX and its sums go NaN
    want, got = _both(x, dy, formula)
    layer = _layer(dtype, x.shape[1])
    gamma, beta, n = layer.weight.value, layer.bias.value, x.shape[0]
    with np.errstate(all="ignore"):  # the formula's terms in float64, only for the scales
        x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
        inv = 1.0 / np.sqrt(np.var(x64, axis=0) + layer.eps)
        xhat = (x64 - np.mean(x64, axis=0)) * inv
        sum_dy, sum_dy_xhat = np.sum(np.abs(dy64), axis=0), np.sum(np.abs(dy64 * xhat), axis=0)
        scales = [
            _scales(xhat * gamma, beta),  # Y
            np.abs(gamma) * np.where(np.isfinite(inv), inv, 0.0)
            * _scales(dy64, sum_dy / n, np.abs(xhat) * sum_dy_xhat / n),  # dX
            _scales(sum_dy_xhat),  # the gradient of gamma
            _scales(sum_dy),  # of beta
            _scales(x64),  # the running mean
            _scales(want[5], np.ones(x.shape[1])),  # the running variance
        ]
    for g, w, s in zip(got, want, scales, strict=True):
        _close(g, w, s)


def test_fused_batch_norm_is_bitwise_here(norm: Any, formula: Any) -> None:
    """What was measured (the docstring's 0 ulp): the same bits as the formula with this
    NumPy, which reduces axis 0 row by row as the loops do."""
    for dtype in DTYPES:
        x = _inputs(dtype)
        dy = np.random.default_rng(5).normal(0, 1, x.shape).astype(dtype)
        want, got = _both(x, dy, formula)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w, equal_nan=True)


@pytest.mark.parametrize(("dtype", "offset", "spread"),
                         [(np.float32, 1e4, 1.0), (np.float64, 1e8, 1e-3)])
def test_fused_batch_norm_keeps_the_precision_of_a_large_mean(norm: Any, dtype: Any,
                                                              offset: float,
                                                              spread: float) -> None:
    """A mean 1e4 (float32) or 1e8 (float64) times the spread: the deviation is taken from
    the mean first, as the formula does, so xhat stays within the mean's rounding of the
    exact one (a one-pass E[x^2] - E[x]^2 loses every digit of the variance here)."""
    rng = np.random.default_rng(8)
    x = (offset + rng.normal(0, spread, (256, 16))).astype(dtype)
    got = norm.batch_norm_forward(x, np.ones(16, dtype), np.zeros(16, dtype), 1e-12)
    assert got is not None
    exact = x.astype(np.longdouble)
    exact = (exact - exact.mean(0)) / exact.std(0)
    np.testing.assert_allclose(got[1], exact.astype(np.float64), atol=1e-2)  # 4e-3, 1e-4
    np.testing.assert_allclose(np.std(got[1].astype(np.float64), axis=0), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_fused_batch_norm_kernels_run_and_decline(norm: Any, name: str) -> None:
    """Each kernel answers for a plain C-contiguous float32/float64 (N, F) input with (F,)
    parameters of its dtype, and None for the inputs it does not take."""
    fn = norm.KERNELS[name]
    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        x = rng.normal(size=(64, 64)).astype(dtype)
        v = rng.uniform(0.5, 1.5, 64).astype(dtype)
        second, third = (v, 1e-5) if name == "batch_norm_forward" else (v, v)
        first = [x, v] if name == "batch_norm_forward" else [x, x]
        got = fn(*first, second, third)
        assert got is not None and all(a.dtype == dtype for a in got)
        assert [a.shape for a in got][:1] == [(64, 64)]
    x, v = x.astype(np.float32), v.astype(np.float32)

    def call(a: np.ndarray, b: np.ndarray, c: Any = None, d: Any = None) -> Any:
        if name == "batch_norm_forward":
            return fn(a, v if c is None else c, v, 1e-5 if d is None else d)
        return fn(a, b, v if c is None else c, v if d is None else d)

    assert call(x, x) is not None
    assert call(x.astype(np.float16), x.astype(np.float16)) is None
    assert call(x.astype(np.int32), x.astype(np.int32)) is None
    wide = np.zeros((64, 128), np.float32)[:, ::2]  # not contiguous
    assert call(wide, wide) is None
    assert call(np.asfortranarray(x), np.asfortranarray(x)) is None
    assert call(x[:4, :4].copy(), x[:4, :4].copy(), v[:4].copy(), v[:4].copy()) is None  # small
    assert call(x.reshape(-1), x.reshape(-1)) is None  # not 2-D
    assert call(x.reshape(16, 4, 64), x.reshape(16, 4, 64)) is None
    assert call(x, x, v.astype(np.float64)) is None  # a parameter of another dtype
    assert call(x, x, v[:32].copy()) is None  # of another shape
    assert call(x, x, np.zeros(128, np.float32)[::2]) is None  # not contiguous
    if name == "batch_norm_forward":
        assert call(x, x, None, np.float32(1e-5)) is None  # eps not a Python float
    else:
        assert call(x, x.astype(np.float64)) is None  # mixed dtypes


def test_without_numba_batch_norm_runs_its_formula(monkeypatch: pytest.MonkeyPatch,
                                                   formula: Any) -> None:
    """Numba absent (forced: the availability flag off): both kernels answer None and the
    layer gives its formula's numbers exactly."""
    from mlcore_numpy import fused

    off = fused.Fused.__new__(fused.Fused)
    off.available, off.reason, off.loops = False, "Numba is not installed", None
    monkeypatch.setattr(fused, "fused", lambda: off)
    monkeypatch.setenv("MLCORE_NUMPY_JIT", "1")
    from mlcore_numpy import norm as module

    x = np.random.default_rng(2).normal(size=(256, 256)).astype(np.float32)  # LOAD_MIN
    v = np.ones(256, np.float32)
    assert module.batch_norm_forward(x, v, v, 1e-5) is None
    assert module.batch_norm_backward(x, x, v, v) is None
    answered = formula(False)
    got = _run(_layer(np.float32, 256), x, x)
    assert answered == dict.fromkeys(NAMES, 0)
    formula(True)
    want = _run(_layer(np.float32, 256), x, x)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_fused_batch_norm_gradients_by_finite_differences(norm: Any, formula: Any) -> None:
    """The kernels' backward against central differences of their own forward (float64,
    256 x 8: large enough for the kernels), for gamma, beta and the input."""
    answered = formula(False)
    rng = np.random.default_rng(9)
    layer = _layer(np.float64, 8)
    X = rng.normal(1.0, 2.0, (256, 8))
    R = rng.normal(0, 1, (256, 8))
    box = Box(X)
    backend = mlcore.get_backend()

    def value() -> Any:
        return np.sum(layer.forward(box.value)[0] * R)

    layer.zero_grad()
    dX = layer.forward(X)[1](R)
    expected = numeric_grads(backend, value, layer.parameters())
    for (name, p), want in zip(layer.named_parameters(), expected, strict=True):
        np.testing.assert_allclose(p.grad, want, rtol=1e-6, atol=1e-7, err_msg=name)
    assert rel_err(dX, numeric_grads(backend, value, [box])[0]) < 1e-6
    assert answered["batch_norm_backward"] == 1 and answered["batch_norm_forward"] > 4096


def test_fused_batch_norm_matches_torch(norm: Any, formula: Any) -> None:
    """The kernels' layer against ``torch.nn.BatchNorm1d`` in float64 (an independent
    oracle), forward, backward and running statistics over a few batches."""
    torch = pytest.importorskip("torch")
    answered = formula(False)
    rng = np.random.default_rng(12)
    layer = _layer(np.float64, 32, momentum=0.3)
    ref = torch.nn.BatchNorm1d(32, eps=layer.eps, momentum=0.3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.value))
        ref.bias.copy_(torch.from_numpy(layer.bias.value))
    for _ in range(3):
        x = 2.0 + 3.0 * rng.normal(size=(128, 32))
        dy = rng.normal(size=(128, 32))
        y, dx, dgamma, dbeta, mean, var = _run(layer, x, dy)
        xt = torch.from_numpy(x).requires_grad_(True)
        ref.zero_grad()
        yt = ref(xt)
        (yt * torch.from_numpy(dy)).sum().backward()
        assert rel_err(y, yt.detach().numpy()) <= 1e-12
        assert rel_err(dx, xt.grad.numpy()) <= 1e-10
        assert rel_err(dgamma, ref.weight.grad.numpy()) <= 1e-10
        assert rel_err(dbeta, ref.bias.grad.numpy()) <= 1e-12
        assert rel_err(mean, ref.running_mean.numpy()) < 1e-12
        assert rel_err(var, ref.running_var.numpy()) < 1e-12
    assert answered == dict.fromkeys(NAMES, 3)


def test_fit_with_batch_norm_kernels_is_the_formulas_fit(norm: Any, formula: Any) -> None:
    """A few Adam steps of Dense -> BatchNorm -> ReLU -> Dense -> BatchNorm -> Dense: the same
    parameters and running statistics with the kernels on and off."""
    rng = np.random.default_rng(13)
    X = rng.normal(0, 1, (1024, 32)).astype(np.float32)
    y = rng.integers(0, 2, 1024)
    results = []
    for plain in (True, False):
        answered = formula(plain)
        model = mlcore.Sequential([
            mlcore.Dense(32, 64, dtype="float32", seed=1), mlcore.BatchNorm(64, dtype="float32"),
            mlcore.Activation("relu"), mlcore.Dense(64, 32, dtype="float32", seed=2),
            mlcore.BatchNorm(32, dtype="float32"), mlcore.Dense(32, 2, dtype="float32", seed=3)])
        model.fit(X, y, loss=mlcore.loss("cross_entropy", from_logits=True), optimizer="adam",
                  lr=1e-2, epochs=2, batch_size=256, shuffle=False, verbose=False)
        results.append([np.asarray(b.value) for _, b in model.named_parameters()]
                       + [np.asarray(b.value) for _, b in model.named_buffers()])
    assert answered["batch_norm_forward"] == answered["batch_norm_backward"] == 16
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
