"""mlcore-numpy's fused activation and cross-entropy kernels (:mod:`mlcore_numpy.fused`)
against the core's formulas, the one definition they are a fast path of.

The bound, stated in docs/backends.md: ``ULPS`` ulp of each row's scale, on float32 and
float64, forward and backward, random inputs and extremes (±large, 0, subnormal, one
dominating logit, NaN and ±inf, which must land where the formula puts them). A row's
scale is its largest output magnitude for a forward; for a backward, the largest ``|dy|``
plus ``|sum dy|`` of the row (each gradient is at most that large); elementwise kernels
use each element's own scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
import mlcore.activations as acts
import mlcore.losses as losses

ULPS = 8
"""The stated bound, in ulp of the row's scale (measured: at most 3 forward, 6 backward)."""

DTYPES = [np.float32, np.float64]
ROWS = ["softmax", "log_softmax"]


@pytest.fixture
def fused() -> Any:
    """The compiled loops, loaded (skips where Numba is not installed)."""
    from mlcore_numpy import fused as module

    if not module.fused().available:
        pytest.skip(f"no compiled loops here: {module.fused().reason}")
    return module


@pytest.fixture
def formula(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A switch: ``formula(True)`` makes the core ignore every kernel (its plain path)."""
    def use(plain: bool) -> None:
        if plain:
            monkeypatch.setattr(acts, "kernel_for", lambda xp, name: None)
            monkeypatch.setattr(losses, "_softmax_ce", lambda xp: None)
        else:
            monkeypatch.undo()
            acts.kernel_for.cache_clear()
            losses._softmax_ce.cache_clear()
    yield use
    monkeypatch.undo()
    acts.kernel_for.cache_clear()
    losses._softmax_ce.cache_clear()


def _inputs(dtype: Any, m: int = 300) -> np.ndarray:
    """Random rows, then rows of extremes."""
    rng = np.random.default_rng(7)
    big = float(np.finfo(dtype).max) / 4
    x = rng.normal(0, 3, (40, m))
    x[1] *= 100.0
    x[2] = 0.0
    x[3] = 1e-40 if dtype == np.float32 else 1e-310
    x[4, 5] = 1e4  # one dominating logit
    x[5] = rng.choice([-big, big, -90.0, 90.0, 0.0], m)
    x[6, 7] = np.nan
    x[7, 8] = np.inf
    x[8, 9] = -np.inf
    x[9] = -np.inf
    x[10] = np.linspace(-120, 120, m)
    x[11] = np.linspace(-800, 800, m)
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def _close(got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN where the formula has none"
    inf = np.isinf(want)
    assert np.array_equal(got[inf], want[inf]), "infinities differ"
    ok = ~np.isnan(want) & ~inf
    tol = ULPS * np.spacing(np.broadcast_to(scale, want.shape)[ok].astype(want.dtype))
    err = np.abs(got[ok].astype(np.float64) - want[ok])
    assert np.all(err <= tol), f"max {np.max(err / tol) * ULPS:.1f} ulp of the row's scale"


def _row_scale(a: np.ndarray) -> np.ndarray:
    finite = np.where(np.isfinite(a), np.abs(a), 0)
    return np.max(finite, axis=-1, keepdims=True)


def _both(name: str, x: np.ndarray, dy: np.ndarray, formula: Any) -> list[np.ndarray]:
    act = mlcore.activation(name)
    out = []
    for plain in (True, False):
        formula(plain)
        with np.errstate(all="ignore"):
            y = act.forward(x)
            out += [y, act.backward(x, y, dy)]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "sigmoid", "tanh"])
def test_fused_activation_matches_its_formula(fused: Any, formula: Any, name: str,
                                              dtype: Any) -> None:
    x = _inputs(dtype)
    dy = np.random.default_rng(3).normal(0, 1, x.shape).astype(dtype)
    y_plain, dx_plain, y_fast, dx_fast = _both(name, x, dy, formula)
    if name in ROWS:
        _close(y_fast, y_plain, _row_scale(y_plain))
        _close(dx_fast, dx_plain, np.max(np.abs(dy), axis=1, keepdims=True)
               + np.abs(np.sum(dy, axis=1, keepdims=True)))
    else:
        assert np.array_equal(y_fast, y_plain, equal_nan=True) or name == "sigmoid"
        _close(y_fast, y_plain, np.maximum(np.abs(y_plain), np.finfo(dtype).smallest_normal))
        _close(dx_fast, dx_plain, np.abs(dy))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "alpha"), [("relu", None), ("leaky_relu", 0.01),
                                             ("leaky_relu", 0.0), ("leaky_relu", 1.0),
                                             ("leaky_relu", 2.5), ("leaky_relu", -0.67),
                                             ("leaky_relu", 1e-30)])
def test_fused_relus_equal_their_formula_bit_for_bit(fused: Any, formula: Any, name: str,
                                                     alpha: float | None, dtype: Any) -> None:
    """ReLU and leaky ReLU, forward and backward, give the formula's bits: the sign of every
    zero, NaN where it has NaN (``inf * 0`` in the gradient, ``0 * inf`` in leaky ReLU with
    alpha 0), the slopes ``(1 - alpha) + alpha`` as the formula rounds them."""
    x = _inputs(dtype)
    rng = np.random.default_rng(4)
    dy = rng.normal(0, 1, x.shape).astype(dtype)
    big, tiny = np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, big, -big, tiny, -tiny, 1.0,
                         -1.0], dtype)
    x[12:23] = specials[:, None]  # every special x against every special dy below
    dy[12:23] = np.resize(specials, dy[12:23].shape)
    dy[23] = -0.0
    params = {} if alpha is None else {"alpha": alpha}
    act = mlcore.activation(name, **params)
    got = []
    for plain in (True, False):
        formula(plain)
        with np.errstate(all="ignore"):
            y = act.forward(x)
            got += [y, act.backward(x, y, dy)]
    with np.errstate(all="ignore"):  # the kernels take these inputs: the fast path ran
        assert fused.KERNELS[name](x, *params.values()) is not None
        assert fused.KERNELS[f"{name}_backward"](x, dy, *params.values()) is not None
    if alpha == -0.67:  # the slope for x > 0 is not 1 in either dtype: the test sees it
        assert (np.ones(1, dtype) * (1.0 - alpha) + alpha)[0] != 1.0
    for want, have in (got[0::2], got[1::2]):
        assert have.dtype == want.dtype and have.shape == want.shape
        nan = np.isnan(want)
        assert np.array_equal(np.isnan(have), nan), "NaN where the formula has none"
        bits = np.uint32 if dtype == np.float32 else np.uint64
        assert np.array_equal(have[~nan].view(bits), want[~nan].view(bits)), "not its bits"


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_step_equals_its_formula_bit_for_bit(fused: Any, formula: Any,
                                                   dtype: Any) -> None:
    """The threshold of eq. (1.7): 1 above 0, +0 at ±0, below 0 and at NaN, as
    ``astype(x > 0)``; its backward is the formula's zeros either way."""
    x = _inputs(dtype)
    big, tiny = np.finfo(dtype).max, np.finfo(dtype).smallest_subnormal
    x[12:23] = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, big, -big, tiny, -tiny, 1.0,
                         -1.0], dtype)[:, None]
    act = mlcore.activation("step")
    got = []
    for plain in (True, False):
        formula(plain)
        got.append(act.forward(x))
    assert fused.KERNELS["step"](x) is not None  # the fast path ran
    bits = np.uint32 if dtype == np.float32 else np.uint64
    assert got[1].dtype == got[0].dtype and np.array_equal(got[1].view(bits), got[0].view(bits))
    assert not np.any(act.backward(x, got[1], x))


@pytest.mark.parametrize("name", ["softmax", "softmax_backward", "log_softmax",
                                  "log_softmax_backward", "sigmoid", "sigmoid_backward",
                                  "tanh_backward", "relu", "relu_backward", "leaky_relu",
                                  "leaky_relu_backward", "step"])
def test_fused_kernels_run_and_decline(fused: Any, name: str) -> None:
    """Each kernel answers for plain C-contiguous float32/float64 inputs (what the core's
    path then returns), and None for the inputs it does not take."""
    x = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    fn = fused.KERNELS[name]
    args: list[Any] = [x] if "backward" not in name else [x, x]
    axis = [-1] if "softmax" in name else []
    more = [*axis, 0.01] if "leaky" in name else axis
    assert fn(*args, *more) is not None
    assert fn(*[a.astype(np.float16) for a in args], *more) is None
    assert fn(*[a[:, ::2] for a in args], *more) is None  # not contiguous
    assert fn(*[a[:4, :4].copy() for a in args], *more) is None  # too small to repay
    if "backward" in name:
        assert fn(x, x.astype(np.float64), *more) is None  # mixed dtypes
        assert fn(x, x[:1].copy(), *more) is None  # mixed shapes (the formula broadcasts)
    if axis:
        assert fn(*args, 0) is None  # not the last axis


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["labels", "rows"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_cross_entropy_matches_its_formula(fused: Any, formula: Any, dtype: Any,
                                                 target: str, smoothing: float) -> None:
    rng = np.random.default_rng(5)
    z = (rng.normal(0, 3, (512, 10))).astype(dtype)
    z[0, 3], z[1] = 1e4, 0.0
    z[2] = [-1e30, 1e30, 0, 1, -1, 5, 80, -80, 3, 2]
    labels = rng.integers(0, 10, 512)
    t = labels if target == "labels" else np.eye(10, dtype=dtype)[labels]
    loss = mlcore.loss("cross_entropy", from_logits=True, label_smoothing=smoothing)
    got = {}
    for plain in (True, False):
        formula(plain)
        got[plain] = (loss.forward(z, t), loss.backward(z, t), *loss.value_and_grad(z, t))
    want_v, want_g = got[True][:2]
    eps = np.finfo(dtype).eps
    for v, g in (got[False][:2], got[False][2:]):
        assert np.asarray(v).dtype == dtype and g.dtype == dtype
        np.testing.assert_allclose(v, want_v, rtol=ULPS * eps, atol=ULPS * eps * 30)
        _close(g, want_g, np.full((512, 1), 1.0 / 512, dtype))
    if target == "labels":  # the kernel answers: labels went through it
        import array_api_compat.numpy as xp

        assert fused.KERNELS["softmax_cross_entropy"](xp, z, labels, smoothing) is not None


def test_fused_cross_entropy_propagates_nan_and_declines_bad_labels(fused: Any) -> None:
    import array_api_compat.numpy as xp

    z = np.random.default_rng(1).normal(size=(300, 10)).astype(np.float32)
    z[4, 2] = np.nan
    value, g = fused.KERNELS["softmax_cross_entropy"](xp, z, np.zeros(300, np.int64))
    assert np.isnan(value) and np.isnan(g[4]).all() and not np.isnan(g[5]).any()
    bad = np.full(300, 10)
    assert fused.KERNELS["softmax_cross_entropy"](xp, z, bad) is None  # the formula raises


def test_without_numba_the_formula_runs(monkeypatch: pytest.MonkeyPatch, formula: Any) -> None:
    """Numba absent (forced: the availability flag off): every kernel answers None and the
    activations and losses give their formula's numbers exactly."""
    from mlcore_numpy import fused as module

    off = module.Fused.__new__(module.Fused)
    off.available, off.reason, off.loops = False, "Numba is not installed", None
    monkeypatch.setattr(module, "fused", lambda: off)
    monkeypatch.setenv("MLCORE_NUMPY_JIT", "1")
    x = np.random.default_rng(2).normal(size=(256, 512)).astype(np.float32)
    assert module.KERNELS["softmax"](x, -1) is None
    names = ("softmax", "log_softmax", "sigmoid", "relu", "leaky_relu", "step")
    got = [mlcore.activation(n).forward(x) for n in names]
    formula(True)
    want = [mlcore.activation(n).forward(x) for n in names]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_fused_loops_keep_nan_and_inf_semantics_under_fastmath(fused: Any) -> None:
    """The fast-math flags leave out nnan/ninf: exp(±inf), exp(NaN) stay exact."""
    from mlcore_numpy import _loops

    assert not {"nnan", "ninf", "fast"} & _loops.FASTMATH
    x = np.array([-np.inf, np.inf, np.nan, 0.0, 1e-40, -1e-40] + [0.5] * 4090, np.float32)
    y = fused.KERNELS["sigmoid"](x)
    assert 0.0 < y[0] < 1e-38 and y[1] == 1.0 and np.isnan(y[2])  # -inf: at the floor
    assert y[3] == y[4] == y[5] == 0.5
