"""The fused optimiser kernels' maths, written once, and the CUDA source generated from it.

Every element-wise kernel is a list of statements ``(target, expression)`` in a small
language that is valid both as C and as Python: names, numbers, ``+ - * /``, parentheses
and the functions of :data:`FUNCTIONS`. The same text is

- turned into a CUDA kernel by :func:`elementwise_source` (one thread per element, a
  grid-stride loop, up to :data:`MAX_TENSORS` tensors of different sizes in one launch), and
- evaluated on whole arrays by :func:`evaluate`, with NumPy or with CuPy itself (the
  fallback for arrays a kernel does not take).

The statements are those of the core's update rules (:meth:`mlcore.optimizers.Adam.rule`, the
last line of :meth:`mlcore.optimizers.SGD.rule`), operation for operation; the tests run the
optimisers with these kernels as their fast path against the rule itself. Scalars (``b1``,
``eps``...) arrive already computed on the host in Python floats, exactly as the rule
computes them (:meth:`mlcore.optimizers.Adam.scalars`), and are passed in the arrays' dtype.

Kernels are compiled with ``--fmad=false``: NVRTC would otherwise contract ``m * b1 + g``
into one fused multiply-add (one rounding), where the rule, one CuPy kernel per operation,
rounds twice. Addition, subtraction, multiplication, division and square root are
correctly rounded IEEE operations on the GPU (NVRTC's defaults ``--prec-div=true``,
``--prec-sqrt=true``, no ``--use_fast_math``), so the updates match the rule bit for bit.
The softmax cross-entropy kernel (:func:`softmax_xent_source`) calls CUDA's libdevice
``exp`` and ``log``, the ones CuPy's own ``exp`` and ``log`` call.

Specs and sources are built once per argument set (``functools.cache``): a launch costs no
string formatting. This module imports neither CuPy nor NumPy at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Elementwise", "ELEMENTWISE", "FUNCTIONS", "MAX_TENSORS", "NVRTC_OPTIONS",
           "adam_kernel", "sgd_kernel", "elementwise_source", "evaluate",
           "softmax_xent_source", "row_reference", "arguments"]

MAX_TENSORS = 32
"""Tensors per launch: 4 pointers and a size each stay far below CUDA's 4 KiB of kernel
parameters (32 x 5 x 8 = 1280 bytes); more parameters take one launch per 32."""

NVRTC_OPTIONS = ("--fmad=false",)
"""No contraction into fused multiply-adds: each operation rounds as the rule's does."""

CTYPES = {"float32": "float", "float64": "double"}


def _np_functions(np: Any) -> dict[str, Callable[..., Any]]:
    """The functions of the language on whole arrays (``np`` is NumPy or CuPy)."""
    return {"sqrt": np.sqrt}


FUNCTIONS = ("sqrt",)
"""The functions of the expression language (CUDA's own ``sqrt`` overloads for float and
double, correctly rounded)."""


@dataclass(frozen=True)
class Elementwise:
    """One element-wise kernel: the arrays it reads and writes, its scalars, its statements.

    ``arrays`` are per-tensor arguments in launch order; ``written`` the ones stored back;
    ``scalars`` are shared by every tensor of a launch. ``body`` is evaluated in order; a
    target that is not an array is a local value.
    """

    name: str
    arrays: tuple[str, ...]
    written: tuple[str, ...]
    scalars: tuple[str, ...]
    body: tuple[tuple[str, str], ...]

    def kernel_name(self, dtype: str, tensors: int) -> str:
        return f"mlcore_{self.name}_{dtype}_x{tensors}"


@functools.cache
def adam_kernel() -> Elementwise:
    """Adam's update on the scaled moments, one element at a time: the loop body of
    :meth:`mlcore.optimizers.Adam.rule` (``m = b1 m + g``, ``v = b2 v + g g``,
    ``p - m / ((sqrt(v) + eps) scale)``). Weight decay (Adam's L2 term on ``g``, AdamW's
    ``p (1 - lr wd)``) and clipping are applied by the core before the kernel, as in the
    rule; ``eps`` and ``scale`` fold in the bias corrections
    (:meth:`mlcore.optimizers.Adam.scalars`).
    """
    body = (("m", "m * b1 + g"), ("v", "v * b2 + g * g"),
            ("p", "p - m / ((sqrt(v) + eps) * scale)"))
    return Elementwise("adam", ("p", "g", "m", "v"), ("p", "m", "v"),
                       ("b1", "b2", "eps", "scale"), body)


@functools.cache
def sgd_kernel() -> Elementwise:
    """``p = p - lr d``: the last line of :meth:`mlcore.optimizers.SGD.rule`; the direction ``d``
    (weight decay, momentum, Nesterov, clipping) is computed by the core first."""
    return Elementwise("sgd", ("p", "g"), ("p",), ("lr",), (("p", "p - lr * g"),))


ELEMENTWISE: dict[str, Callable[[], Elementwise]] = {"adam": adam_kernel, "sgd": sgd_kernel}


# -- CUDA source ---------------------------------------------------------------------------
def _parameters(spec: Elementwise, ctype: str, tensors: int) -> list[str]:
    params = []
    for k in range(tensors):
        for a in spec.arrays:
            const = "" if a in spec.written else "const "
            params.append(f"{const}{ctype}* __restrict__ {a}_{k}")
    params += [f"long long n_{k}" for k in range(tensors)]
    params += ["long long total"]
    params += [f"{ctype} {s}" for s in spec.scalars]
    return params


def _element_body(spec: Elementwise, ctype: str, k: int) -> list[str]:
    """The statements for element ``j`` of tensor ``k``."""
    lines = []
    declared = set()
    for a in spec.arrays:
        if _reads(spec, a):
            lines.append(f"{ctype} {a} = {a}_{k}[j];")
            declared.add(a)
    for target, expr in spec.body:
        prefix = "" if target in declared else f"{ctype} "
        declared.add(target)
        lines.append(f"{prefix}{target} = {_cast_literals(expr, ctype)};")
    lines += [f"{a}_{k}[j] = {a};" for a in spec.written]
    return lines


def _reads(spec: Elementwise, name: str) -> bool:
    """Whether a statement of ``spec`` reads ``name`` (as a whole word)."""
    import re

    return any(re.search(rf"\b{name}\b", expr) for _, expr in spec.body)


def _cast_literals(expr: str, ctype: str) -> str:
    """Integer literals as ``(T)1``: ``1 - y`` stays in float (``1.0`` would be double)."""
    import re

    return re.sub(r"(?<![\w.])(\d+)(?![\w.])", rf"({ctype})\1", expr)


@functools.cache
def elementwise_source(spec: Elementwise, dtype: str, tensors: int) -> tuple[str, str]:
    """``(kernel name, CUDA source)`` of ``spec`` over ``tensors`` tensors of ``dtype``.

    Arguments, in order: per tensor the arrays of ``spec.arrays``; the tensors' sizes
    ``n_0..``; ``total`` (their sum); the scalars.
    """
    if not 1 <= tensors <= MAX_TENSORS:
        raise ValueError(f"tensors must be in [1, {MAX_TENSORS}], received {tensors}")
    ctype = CTYPES[dtype]
    name = spec.kernel_name(dtype, tensors)
    lines = [f'extern "C" __global__ void {name}(',
             "    " + ",\n    ".join(_parameters(spec, ctype, tensors)) + ") {",
             "    long long stride = (long long)gridDim.x * blockDim.x;",
             "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;"
             " i < total; i += stride) {",
             "        long long j = i;"]
    for k in range(tensors):
        lines.append(f"        if (j < n_{k}) {{")
        lines += [f"            {s}" for s in _element_body(spec, ctype, k)]
        lines += ["            continue;", "        }", f"        j -= n_{k};"]
    lines += ["    }", "}"]
    return name, "\n".join(lines) + "\n"


def evaluate(spec: Elementwise, np: Any, arrays: dict[str, Any],
             scalars: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec``'s statements on whole arrays with ``np`` (NumPy or CuPy).

    ``arrays`` maps each of ``spec.arrays`` to an array; ``scalars`` to numbers of the
    arrays' dtype. Returns the new values of the written arrays (the caller stores them);
    nothing is modified.
    """
    env: dict[str, Any] = {"__builtins__": {}, **_np_functions(np), **scalars, **arrays}
    for target, expr in spec.body:
        env[target] = eval(expr, env)  # noqa: S307 - the module's own constant expressions
    return {a: env[a] for a in spec.written}


# -- softmax cross-entropy, one thread per row -------------------------------------------
@functools.cache
def softmax_xent_source(dtype: str, labels: bool) -> tuple[str, str]:
    """``(kernel name, CUDA source)``: per row ``i`` of the logits ``z`` (N, M),

    ``s = z - max(z)``, ``e = exp(s)``, ``total = sum(e)``,
    ``loss[i] = log(total) - sum(t s)`` and ``grad = (e / total - t) / n`` (when ``grad`` is
    not null): mlcore's softmax cross-entropy from logits (eq. 1.15/1.16), row by row, in
    column order. ``t`` is (N, M) target rows, or with ``labels`` (N,) class indices made
    into rows ``(1 - s) onehot + s / M`` on the fly (label smoothing ``s``).
    """
    ctype = CTYPES[dtype]
    name = f"mlcore_softmax_xent_{'labels' if labels else 'rows'}_{dtype}"
    target = ("const long long* __restrict__ t" if labels
              else f"const {ctype}* __restrict__ t")
    t_of = ("(((j == t[i]) ? ({T})1 : ({T})0) * keep + spread)" if labels
            else "t[i * m + j]").replace("{T}", ctype)
    src = f"""
extern "C" __global__ void {name}(
    const {ctype}* __restrict__ z, {target}, {ctype}* __restrict__ grad,
    {ctype}* __restrict__ loss, long long n, long long m, {ctype} keep, {ctype} spread,
    {ctype} count, int with_grad) {{
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {{
        const {ctype}* row = z + i * m;
        {ctype} top = row[0];
        for (long long j = 1; j < m; ++j) top = (row[j] > top || row[j] != row[j]) ? row[j] : top;
        {ctype} total = ({ctype})0;
        {ctype} ts = ({ctype})0;
        for (long long j = 0; j < m; ++j) {{
            {ctype} s = row[j] - top;
            total = total + exp(s);
            ts = ts + {t_of} * s;
        }}
        loss[i] = log(total) - ts;
        if (with_grad) {{
            for (long long j = 0; j < m; ++j) {{
                grad[i * m + j] = (exp(row[j] - top) / total - {t_of}) / count;
            }}
        }}
    }}
}}
"""
    return name, src


def row_reference(np: Any, z: Any, t: Any, keep: float, spread: float,
                  grad: bool) -> tuple[Any, Any]:
    """The softmax cross-entropy kernel's arithmetic on whole arrays, row by row in the
    kernel's column order (per-row losses, gradient or None): its NumPy transcription."""
    n, m = z.shape
    dt = z.dtype.type
    if t.ndim == 1:
        t = (t[:, None] == np.arange(m)).astype(z.dtype) * dt(keep) + dt(spread)
    top = z.max(axis=1)
    total = np.zeros(n, dtype=z.dtype)
    ts = np.zeros(n, dtype=z.dtype)
    for j in range(m):
        s = z[:, j] - top
        total = total + np.exp(s)
        ts = ts + t[:, j] * s
    loss = np.log(total) - ts
    if not grad:
        return loss, None
    return loss, (np.exp(z - top[:, None]) / total[:, None] - t) / dt(n)


def arguments(spec: Elementwise, tensors: Sequence[dict[str, Any]], scalars: dict[str, Any],
              integer: Callable[[int], Any] = int) -> list[Any]:
    """The launch arguments in the order of :func:`elementwise_source` (arrays, sizes,
    total, scalars); sizes are the element counts of each tensor's first array, made by
    ``integer`` (``numpy.int64`` for a launch: CUDA's ``long long``)."""
    args: list[Any] = [t[a] for t in tensors for a in spec.arrays]
    sizes = [int(t[spec.arrays[0]].size) for t in tensors]
    return args + [integer(c) for c in (*sizes, sum(sizes))] + [scalars[s] for s in spec.scalars]
