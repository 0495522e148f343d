"""The Numba loops behind :mod:`.fused` (imported only when Numba is there: ``[jit]``).

Each loop makes one pass per row (or over a flat array) in the input's float type, where
NumPy makes three to six passes with temporaries. LLVM vectorises them (AVX2/AVX-512)
because nothing in them calls libm per element: Numba has no vector ``exp`` without Intel's
SVML, so :func:`fexp` is a Cephes-style polynomial written in vectorisable operations
(``2^k`` built from its bits, :func:`_f32_bits`), and the row maximum is LLVM's
``maxnum``, whose reduction vectorises where a compare-and-select one does not.

Fast-math flags: reassociation (the row sums vectorise; a different summation order than
NumPy's pairwise sum), contraction into fused multiply-adds, approximate reciprocals and no
signed zeros; never ``nnan``/``ninf``, so NaN and infinity propagate as the formulas'
NumPy operations make them (the tests check it). ``maxnum`` ignores a NaN, but a NaN in a
row still makes the row's sum, and so the whole row, NaN, as the formula's ``max`` does.

One thread: on two shared cores a ``prange`` over 256 rows measured 3.5 ms against 0.5 ms
on one thread (the threads wait for each other and for NumPy's OpenBLAS spinning threads).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
"""The fast-math flags the loops may use: none that assumes no NaN or infinity."""

_ELEMENTWISE = FASTMATH - {"reassoc"}
"""The flags of everything but the row reductions: reassociation would fold the two-part
``k ln 2`` of :func:`fexp`'s range reduction into one (~100 ulp of ``e^x`` at large
``|x|``) and turn ``(x - max) - lse`` into ``x - (max + lse)`` (all of log_softmax's
precision for a row whose maximum dwarfs the rest)."""

_OPTS: dict[str, Any] = {"fastmath": set(_ELEMENTWISE), "cache": True, "nogil": True,
                         "error_model": "numpy"}
_OPTS_INLINE = {"fastmath": set(_ELEMENTWISE), "error_model": "numpy"}
_OPTS_REDUCE = {**_OPTS, "fastmath": set(FASTMATH)}
"""The row reductions' options: reassociation lets their sums and maxima vectorise."""
_OPTS_EXACT = {**_OPTS, "fastmath": False}
"""The ReLU loops' options: no fast-math at all (compares, selects and one multiply
vectorise without it), so that even the sign of a zero is the formula's (``nsz`` would let
LLVM swap ``+0`` and ``-0``)."""

# -- bits, maxnum --------------------------------------------------------------------------
@intrinsic
def _f32_bits(typingctx: Any, i: Any) -> Any:
    """The float32 whose bits are the int32 ``i``."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _f64_bits(typingctx: Any, i: Any) -> Any:
    """The float64 whose bits are the int64 ``i``."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _maxnum(typingctx: Any, a: Any, b: Any) -> Any:
    """LLVM's ``maxnum(a, b)``: the larger, ignoring a NaN (a vectorisable reduction)."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        lt = context.get_value_type(sig.return_type)
        name = "llvm.maxnum.f32" if sig.return_type == types.float32 else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lt, [lt, lt]), name)
        return builder.call(fn, args)
    return a(a, a), codegen


def fexp(x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
    """``e^x`` in ``x``'s float type, a few ulp from NumPy's; NaN and ±inf as NumPy's."""
    return np.exp(x)


def like(x, value):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
    """``value`` in the float type of ``x``."""
    return value


@overload(like, jit_options=_OPTS_INLINE)
def _like(x, value):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
    if x == types.float32:
        return lambda x, value: np.float32(value)
    return lambda x, value: np.float64(value)


def _expf(x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
    """Cephes ``expf``: ``x = k ln2 + r``, ``|r| <= ln2 / 2``, ``e^r`` by a degree-7
    polynomial, times ``2^k`` as two powers of two (so subnormal results stay right)."""
    c = min(max(x, np.float32(-104.0)), np.float32(89.0))
    k = np.rint(c * np.float32(1.44269504088896341))
    r = c - k * np.float32(0.693359375)
    r = r + k * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    ki = np.int32(k)
    k1 = ki >> np.int32(1)
    y = (p * _f32_bits((k1 + np.int32(127)) << np.int32(23))
         * _f32_bits((ki - k1 + np.int32(127)) << np.int32(23)))
    return y if x == x else x


_E = tuple(1.0 / math.factorial(n) for n in range(14))
"""1 / n!, the Taylor coefficients of e^r."""


def _expd(x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
    """``exp`` in float64: the same reduction (fdlibm's split ln 2), Taylor to degree 13."""
    c = min(max(x, -746.0), 710.0)
    k = np.rint(c * 1.4426950408889634)
    r = c - k * 6.93147180369123816490e-01
    r = r - k * 1.90821492927058770002e-10
    p = _E[13]
    p = p * r + _E[12]
    p = p * r + _E[11]
    p = p * r + _E[10]
    p = p * r + _E[9]
    p = p * r + _E[8]
    p = p * r + _E[7]
    p = p * r + _E[6]
    p = p * r + _E[5]
    p = p * r + _E[4]
    p = p * r + _E[3]
    p = p * r + _E[2]
    p = p * r + 1.0
    p = p * r + 1.0
    ki = np.int64(k)
    k1 = ki >> np.int64(1)
    y = (p * _f64_bits((k1 + np.int64(1023)) << np.int64(52))
         * _f64_bits((ki - k1 + np.int64(1023)) << np.int64(52)))
    return y if x == x else x


@overload(fexp, jit_options=_OPTS_INLINE)
def _fexp(x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
    return _expf if x == types.float32 else _expd


# -- row reductions (reassociated: vectorised) ---------------------------------------------
@numba.njit(**_OPTS_REDUCE)
def row_max(r: Any) -> Any:  # pragma: no cover - compiled
    """``max(r)``, ignoring NaN (a NaN row still ends NaN through its sum)."""
    mx = r[0]
    for j in range(1, r.shape[0]):
        mx = _maxnum(mx, r[j])
    return mx


@numba.njit(**_OPTS_REDUCE)
def row_exp_sum(r: Any, mx: Any, o: Any, store: bool) -> Any:  # pragma: no cover
    """``sum e^(r - mx)``, writing each ``e^(r - mx)`` to ``o`` when ``store``."""
    s = like(mx, 0.0)
    for j in range(r.shape[0]):
        e = fexp(r[j] - mx)
        if store:
            o[j] = e
        s += e
    return s


@numba.njit(**_OPTS_REDUCE)
def row_dot(a: Any, b: Any) -> Any:  # pragma: no cover - compiled
    """``sum a b``."""
    s = like(a[0], 0.0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@numba.njit(**_OPTS_REDUCE)
def row_sum(a: Any) -> Any:  # pragma: no cover - compiled
    """``sum a``."""
    s = like(a[0], 0.0)
    for j in range(a.shape[0]):
        s += a[j]
    return s


@numba.njit(**_OPTS_REDUCE)
def row_dot_shifted(w: Any, r: Any, mx: Any) -> Any:  # pragma: no cover - compiled
    """``sum w (r - mx)``."""
    s = like(mx, 0.0)
    for j in range(r.shape[0]):
        s += w[j] * (r[j] - mx)
    return s


@numba.njit(**_OPTS_REDUCE)
def row_sum_shifted(r: Any, mx: Any) -> Any:  # pragma: no cover - compiled
    """``sum (r - mx)``."""
    s = like(mx, 0.0)
    for j in range(r.shape[0]):
        s += r[j] - mx
    return s


# -- the loops: x and out are C-contiguous (rows, m) or flat arrays of one float type -------
@numba.njit(**_OPTS)
def softmax_rows(x: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out = e^(x - max) / sum e^(x - max)`` per row (eq. 1.12)."""
    n, m = x.shape
    for i in range(n):
        r, o = x[i], out[i]
        s = row_exp_sum(r, row_max(r), o, True)
        for j in range(m):
            o[j] = o[j] / s


@numba.njit(**_OPTS)
def softmax_backward_rows(y: Any, dy: Any, out: Any) -> None:  # pragma: no cover
    """``out = y (dy - sum(dy y))`` per row."""
    n, m = y.shape
    for i in range(n):
        a, d, o = y[i], dy[i], out[i]
        s = row_dot(d, a)
        for j in range(m):
            o[j] = a[j] * (d[j] - s)


@numba.njit(**_OPTS)
def log_softmax_rows(x: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out = (x - max) - log sum e^(x - max)`` per row."""
    n, m = x.shape
    for i in range(n):
        r, o = x[i], out[i]
        mx = row_max(r)
        ls = np.log(row_exp_sum(r, mx, o, False))
        for j in range(m):
            o[j] = (r[j] - mx) - ls


@numba.njit(**_OPTS)
def log_softmax_backward_rows(y: Any, dy: Any, out: Any) -> None:  # pragma: no cover
    """``out = dy - e^y sum(dy)`` per row."""
    n, m = y.shape
    for i in range(n):
        a, d, o = y[i], dy[i], out[i]
        s = row_sum(d)
        for j in range(m):
            o[j] = d[j] - fexp(a[j]) * s


@numba.njit(**_OPTS)
def sigmoid_flat(x: Any, floor: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out = 1 / (1 + e^(-max(x, floor)))`` (a NaN stays NaN, as NumPy's maximum)."""
    one = like(floor, 1.0)
    for k in range(x.shape[0]):
        v = x[k]
        v = floor if v < floor else v
        out[k] = one / (one + fexp(-v))


@numba.njit(**_OPTS)
def sigmoid_backward_flat(y: Any, dy: Any, out: Any) -> None:  # pragma: no cover
    """``out = dy (y (1 - y))``."""
    for k in range(y.shape[0]):
        a = y[k]
        out[k] = dy[k] * (a * (like(a, 1.0) - a))


@numba.njit(**_OPTS)
def tanh_backward_flat(y: Any, dy: Any, out: Any) -> None:  # pragma: no cover
    """``out = dy (1 - y^2)``."""
    for k in range(y.shape[0]):
        a = y[k]
        out[k] = dy[k] * (like(a, 1.0) - a * a)


@numba.njit(**_OPTS_EXACT)
def relu_flat(x: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out = maximum(x, 0)`` as NumPy's: ``x if x > 0 or x is NaN else +0`` (so -0 gives
    +0, as ``np.maximum(-0.0, 0.0)`` does)."""
    zero = like(x[0], 0.0)
    for k in range(x.shape[0]):
        v = x[k]
        out[k] = v if (v > zero or v != v) else zero


@numba.njit(**_OPTS_EXACT)
def step_flat(x: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out = 1 if x > 0 else +0`` (NaN gives 0, as ``astype(x > 0)`` does)."""
    zero, one = like(x[0], 0.0), like(x[0], 1.0)
    for k in range(x.shape[0]):
        out[k] = one if x[k] > zero else zero


@numba.njit(**_OPTS_EXACT)
def relu_backward_flat(x: Any, dy: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out = dy * (1 if x > 0 else 0)``: the product kept, so that ``inf * 0`` is NaN and
    ``-dy * 0`` is -0, as in the formula."""
    one, zero = like(x[0], 1.0), like(x[0], 0.0)
    for k in range(x.shape[0]):
        out[k] = dy[k] * (one if x[k] > zero else zero)


@numba.njit(**_OPTS_EXACT)
def leaky_relu_flat(x: Any, alpha: Any, most: bool, out: Any) -> None:  # pragma: no cover
    """``out = maximum(x, alpha x)`` when ``most``, else ``minimum``, as NumPy's: the first
    operand if it is larger (smaller) or NaN, else the second (NaN too, for ``0 * inf``)."""
    for k in range(x.shape[0]):
        a = x[k]
        b = alpha * a
        if most:
            out[k] = a if (a > b or a != a) else b
        else:
            out[k] = a if (a < b or a != a) else b


@numba.njit(**_OPTS_EXACT)
def leaky_relu_backward_flat(x: Any, dy: Any, pos: Any, neg: Any,
                             out: Any) -> None:  # pragma: no cover - compiled
    """``out = dy * (pos if x > 0 else neg)``, ``pos`` and ``neg`` the formula's two slopes
    as it rounds them in the input's type."""
    zero = like(pos, 0.0)
    for k in range(x.shape[0]):
        out[k] = dy[k] * (pos if x[k] > zero else neg)


@numba.njit(**_OPTS)
def softmax_xent_labels(z: Any, t: Any, s: Any, g: Any, grad: bool,
                        values: Any) -> bool:  # pragma: no cover - compiled
    """Per row: ``values = log sum e^(z - max) - [(1 - s)(z_t - max) + s mean(z - max)]``;
    when ``grad``, ``g = (e^(z - max) / sum - y) / N`` with ``y = (1 - s) onehot + s / M``.
    False, with nothing written, when a label is outside [0, M)."""
    n, m = z.shape
    for i in range(n):
        if t[i] < 0 or t[i] >= m:
            return False
    inv_n, inv_m = like(s, 1.0 / n), like(s, 1.0 / m)
    keep = like(s, 1.0) - s
    for i in range(n):
        r, o = z[i], g[i] if grad else g[0]
        mx = row_max(r)
        total = row_exp_sum(r, mx, o, grad)
        zsum = row_sum_shifted(r, mx)
        c = t[i]
        values[i] = np.log(total) - ((r[c] - mx) * keep + zsum * inv_m * s)
        if grad:
            for j in range(m):
                o[j] = (o[j] / total - s * inv_m) * inv_n
            o[c] = (fexp(r[c] - mx) / total - (keep + s * inv_m)) * inv_n
    return True


@numba.njit(**_OPTS)
def softmax_xent_rows(z: Any, y: Any, g: Any, grad: bool,
                      values: Any) -> None:  # pragma: no cover - compiled
    """Per row: ``values = log sum e^(z - max) - sum y (z - max)``; when ``grad``,
    ``g = (e^(z - max) / sum - y) / N``."""
    n, m = z.shape
    inv_n = like(z[0, 0], 1.0 / n)
    for i in range(n):
        r, w, o = z[i], y[i], g[i] if grad else g[0]
        mx = row_max(r)
        total = row_exp_sum(r, mx, o, grad)
        values[i] = np.log(total) - row_dot_shifted(w, r, mx)
        if grad:
            for j in range(m):
                o[j] = (o[j] / total - w[j]) * inv_n
