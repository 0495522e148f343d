"""The Numba loops behind :mod:`.norm`: BatchNorm's training forward and backward over a
C-contiguous (N, F) array (imported only when Numba is there: ``[jit]``).

The statistics are column reductions: each loop runs over the rows outside and the features
inside, with one accumulator per feature, so the inner loop is elementwise over a row and
vectorises without reassociation. That is also the order in which NumPy reduces axis 0 of a
C-contiguous array (row by row, in the input's float type, from the first row), and every
other step is the formula's operation in the formula's float type and order, with no
fast-math flags (no fused multiply-adds, no reciprocal for a division), so the loops give the
formula's numbers: bitwise with NumPy 2.x (the tests state a bound of a few ulp of each
feature's scale, in case a NumPy changes its reduction order).

Forward: three passes over X (its sum, the sum of the squared deviations from the mean,
then ``x̂`` and ``Y`` written together) where the formula makes seven; the deviation is
taken from the mean first, as in the formula, so a column of large mean and small spread
keeps its precision. Backward: two passes (both sums, then ``dX``) where it makes seven.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ._loops import like

_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}
"""No fast-math: the formula's operations, rounding for rounding."""


@numba.njit(**_OPTS)
def batch_norm_forward(x: Any, gamma: Any, beta: Any, eps: Any, y: Any, xhat: Any,
                       mean: Any, var: Any, inv: Any) -> None:  # pragma: no cover - compiled
    """Per feature j of the (n, f) ``x``: ``mean = sum x / n``, ``var = sum (x - mean)^2 / n``,
    ``inv = 1 / sqrt(var + eps)``, ``xhat = (x - mean) inv``, ``y = xhat gamma + beta``."""
    n, f = x.shape
    nf = like(eps, n)
    one = like(eps, 1.0)
    r = x[0]
    for j in range(f):
        mean[j] = r[j]
    for i in range(1, n):
        r = x[i]
        for j in range(f):
            mean[j] += r[j]
    for j in range(f):
        mean[j] = mean[j] / nf
    r = x[0]
    for j in range(f):
        d = r[j] - mean[j]
        var[j] = d * d
    for i in range(1, n):
        r = x[i]
        for j in range(f):
            d = r[j] - mean[j]
            var[j] += d * d
    for j in range(f):
        var[j] = var[j] / nf
        inv[j] = one / np.sqrt(var[j] + eps)
    for i in range(n):
        r, h, o = x[i], xhat[i], y[i]
        for j in range(f):
            v = (r[j] - mean[j]) * inv[j]
            h[j] = v
            o[j] = v * gamma[j] + beta[j]


@numba.njit(**_OPTS)
def batch_norm_backward(dy: Any, xhat: Any, gamma: Any, inv: Any, dx: Any, sum_dy_xhat: Any,
                        sum_dy: Any) -> None:  # pragma: no cover - compiled
    """Per feature j: ``sum_dy_xhat = sum dy xhat``, ``sum_dy = sum dy`` over the n rows,
    and ``dx = (dy - sum_dy / n - xhat (sum_dy_xhat / n)) (gamma inv)``."""
    n, f = dy.shape
    nf = like(gamma[0], n)
    d, h = dy[0], xhat[0]
    for j in range(f):
        sum_dy_xhat[j] = d[j] * h[j]
        sum_dy[j] = d[j]
    for i in range(1, n):
        d, h = dy[i], xhat[i]
        for j in range(f):
            sum_dy_xhat[j] += d[j] * h[j]
            sum_dy[j] += d[j]
    a = np.empty(f, dy.dtype)
    b = np.empty(f, dy.dtype)
    c = np.empty(f, dy.dtype)
    for j in range(f):
        a[j] = sum_dy[j] / nf
        b[j] = sum_dy_xhat[j] / nf
        c[j] = gamma[j] * inv[j]
    for i in range(n):
        d, h, o = dy[i], xhat[i], dx[i]
        for j in range(f):
            o[j] = ((d[j] - a[j]) - h[j] * b[j]) * c[j]
