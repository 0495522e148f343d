"""The fused kernels' maths, written once, and the CUDA source generated from it.

Every element-wise kernel is a list of statements ``(target, expression)`` in a small
language that is valid both as C and as Python: names, numbers, ``+ - * /``, parentheses
and the functions of :data:`FUNCTIONS`. The same text is

- turned into a CUDA kernel by :func:`elementwise_source` (one thread per element, a
  grid-stride loop, up to :data:`MAX_TENSORS` tensors of different sizes in one launch), and
- evaluated on whole arrays by :func:`evaluate`, with NumPy (the tests' transcription of the
  kernel) or with CuPy itself (the fallback for arrays a kernel does not take).

So the arithmetic the GPU runs is the arithmetic the tests check against the plain Array API
path, op for op. Scalars (``b1``, ``eps``...) arrive already computed on the host in Python
floats, exactly as the plain path computes them, and are passed in the arrays' dtype.

Kernels are compiled with ``--fmad=false``: NVRTC would otherwise contract ``m * b1 + g``
into one fused multiply-add (one rounding), where the plain path, one CuPy kernel per
operation, rounds twice. Addition, subtraction, multiplication, division and square root
are correctly rounded IEEE operations on the GPU (NVRTC's defaults ``--prec-div=true``,
``--prec-sqrt=true``, no ``--use_fast_math``), so the optimiser updates can match the plain
path bit for bit; ``exp``, ``log`` and ``tanh`` are CUDA's libdevice functions, the ones
CuPy's own ``exp``, ``log`` and ``tanh`` call.

Specs and sources are built once per argument set (``functools.cache``): a launch costs no
string formatting. This module imports neither CuPy nor NumPy at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Elementwise", "ELEMENTWISE", "FUNCTIONS", "MAX_TENSORS", "NVRTC_OPTIONS",
           "adam_kernel", "adam_step_kernel", "sgd_kernel", "bias_activation_kernel",
           "activation_backward_kernel", "elementwise_source", "evaluate",
           "softmax_xent_source", "row_reference", "arguments", "ACTIVATIONS"]

MAX_TENSORS = 32
"""Tensors per launch: 4 pointers and a size each stay far below CUDA's 4 KiB of kernel
parameters (32 x 5 x 8 = 1280 bytes); more parameters take one launch per 32."""

NVRTC_OPTIONS = ("--fmad=false",)
"""No contraction into fused multiply-adds: each operation rounds as the plain path's does."""

CTYPES = {"float32": "float", "float64": "double"}

PRELUDE = """
template <typename T> __device__ __forceinline__ T maximum(T a, T b) {
    return (a >= b || a != a) ? a : b;  /* NumPy's maximum: NaN in either gives NaN */
}
template <typename T> __device__ __forceinline__ T minimum(T a, T b) {
    return (a <= b || a != a) ? a : b;
}
template <typename T> __device__ __forceinline__ T positive(T a) {
    return a > (T)0 ? (T)1 : (T)0;  /* (a > 0) as a number */
}
"""
"""The functions of the expression language, in CUDA C++ (``sqrt``, ``exp``, ``log``,
``tanh`` are CUDA's own overloads for float and double)."""


def _np_functions(np: Any) -> dict[str, Callable[..., Any]]:
    """The same functions on whole arrays (``np`` is NumPy or CuPy)."""
    return {"sqrt": np.sqrt, "exp": np.exp, "log": np.log, "tanh": np.tanh, "pow": np.power,
            "maximum": np.maximum, "minimum": np.minimum,
            "positive": lambda a: (a > 0).astype(a.dtype)}


FUNCTIONS = ("sqrt", "exp", "log", "tanh", "pow", "maximum", "minimum", "positive")


@dataclass(frozen=True)
class Elementwise:
    """One element-wise kernel: the arrays it reads and writes, its scalars, its statements.

    ``arrays`` are per-tensor arguments in launch order; ``written`` the ones stored back;
    ``scalars`` are shared by every tensor of a launch. ``body`` is evaluated in order; a
    target that is not an array is a local value. ``bias`` names an array read at the
    element's column (``j % columns``: a bias of shape (F,) beside an (N, F) array).

    A ``counter`` is a 0-d device array read once per thread (an optimiser's step count,
    so a captured CUDA graph computes with its current value); ``prologue`` statements run
    once per thread, in double precision, from the counter and the double ``host64``
    scalars: a target ending in ``_`` stays a double, any other becomes a scalar of the
    arrays' dtype for the body.
    """

    name: str
    arrays: tuple[str, ...]
    written: tuple[str, ...]
    scalars: tuple[str, ...]
    body: tuple[tuple[str, str], ...]
    bias: str | None = None
    counter: str | None = None
    host64: tuple[str, ...] = ()
    prologue: tuple[tuple[str, str], ...] = ()

    def kernel_name(self, dtype: str, tensors: int) -> str:
        return f"mlcore_{self.name}_{dtype}_x{tensors}"


@functools.cache
def adam_kernel(decoupled: bool = False, l2: bool = False) -> Elementwise:
    """Adam's update on the scaled moments (mlcore.optim.Adam), one element at a time.

    ``decay`` is AdamW's ``1 - lr weight_decay`` (``decoupled``); ``wd`` is Adam's L2 term
    added to the gradient (``l2``); ``eps`` and ``scale`` fold in the bias corrections.
    """
    body: list[tuple[str, str]] = []
    scalars = ["b1", "b2", "eps", "scale"]
    if decoupled:
        body.append(("p", "p * decay"))
        scalars.insert(0, "decay")
    grad = "g"
    if l2:
        body.append(("d", "g + wd * p"))
        scalars.insert(0, "wd")
        grad = "d"
    body += [("m", f"m * b1 + {grad}"), ("v", f"v * b2 + {grad} * {grad}"),
             ("p", "p - m / ((sqrt(v) + eps) * scale)")]
    name = "adamw" if decoupled else ("adam_l2" if l2 else "adam")
    return Elementwise(name, ("p", "g", "m", "v"), ("p", "m", "v"), tuple(scalars),
                       tuple(body))


@functools.cache
def adam_step_kernel(decoupled: bool = False) -> Elementwise:
    """:func:`adam_kernel` with the bias corrections computed on the device from the step
    count ``t`` (a 0-d array, already advanced), as :meth:`mlcore.optim.Adam._scalars`
    computes them in Python floats: for a training step captured as a CUDA graph."""
    base = adam_kernel(decoupled)
    prologue = (("s_", "sqrt((1 - b2_) / (1 - pow(b2_, t)))"), ("b1", "b1_"), ("b2", "b2_"),
                ("eps", "eps_ / s_"), ("scale", "(1 - pow(b1_, t)) * s_ / (lr_ * (1 - b1_))"))
    return Elementwise(f"{base.name}_t", base.arrays, base.written,
                       ("decay",) if decoupled else (), base.body, counter="t",
                       host64=("b1_", "b2_", "eps_", "lr_"), prologue=prologue)


@functools.cache
def sgd_kernel(momentum: bool = False, nesterov: bool = False, l2: bool = False,
               first: bool = False) -> Elementwise:
    """SGD (mlcore.optim.SGD): ``p -= lr g``, with weight decay and PyTorch's momentum.

    With momentum the buffer ``b`` is ``g`` at the ``first`` step, else ``mu b + g``; the
    step uses ``g + mu b`` with ``nesterov``, else ``b``.
    """
    body: list[tuple[str, str]] = []
    scalars = ["lr"]
    grad = "g"
    if l2:
        body.append(("d", "g + wd * p"))
        scalars.append("wd")
        grad = "d"
    arrays: tuple[str, ...] = ("p", "g")
    written: tuple[str, ...] = ("p",)
    if momentum:
        arrays, written = ("p", "g", "b"), ("p", "b")
        body.append(("b", grad if first else f"b * mu + {grad}"))
        scalars.append("mu")
        if nesterov:
            body.append(("n", f"{grad} + mu * b"))
            grad = "n"
        else:
            grad = "b"
    body.append(("p", f"p - lr * {grad}"))
    flags = "".join(f for f, on in (("_l2", l2), ("_mom", momentum), ("_nesterov", nesterov),
                                    ("_first", first)) if on)
    return Elementwise(f"sgd{flags}", arrays, written, tuple(scalars), tuple(body))


ACTIVATIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (forward y from x, backward dx from x, y, dy, scalars); mlcore.activations' maths
    "identity": ("x", "dy", ()),
    "relu": ("maximum(x, 0)", "dy * positive(x)", ()),
    "leaky_relu": ("pick(x, alpha * x)", "dy * (positive(x) * one_minus_alpha + alpha)",
                   ("alpha", "one_minus_alpha")),
    "sigmoid": ("1 / (1 + exp(-maximum(x, floor)))", "dy * (y * (1 - y))", ("floor",)),
    "tanh": ("tanh(x)", "dy * (1 - y * y)", ()),
}
"""Activations with fused kernels: forward and backward as expressions. ``pick`` is
``maximum`` for ``alpha <= 1`` and ``minimum`` above, as LeakyReLU chooses."""


@functools.cache
def bias_activation_kernel(activation: str, alpha: float = 0.01) -> Elementwise:
    """``x = z + b`` (Dense's bias, eq. 1.5) and ``y = f(x)`` in one pass over (N, F)."""
    forward, _, scalars = ACTIVATIONS[activation]
    if activation == "leaky_relu":
        forward = forward.replace("pick", "maximum" if alpha <= 1.0 else "minimum")
    name = f"bias_{activation}" + ("_min" if activation == "leaky_relu" and alpha > 1 else "")
    import re

    forward = re.sub(r"\bx\b", "z", forward)
    return Elementwise(name, ("z", "b", "y"), ("z", "y"), scalars,
                       (("z", "z + b"), ("y", forward)), bias="b")


@functools.cache
def activation_backward_kernel(activation: str) -> Elementwise:
    """``dx = dy f'(x)`` from the activation's input ``x`` and output ``y``."""
    _, backward, scalars = ACTIVATIONS[activation]
    return Elementwise(f"{activation}_backward", ("x", "y", "dy", "dx"), ("dx",),
                       tuple(s for s in scalars if s != "floor"), (("dx", backward),))


ELEMENTWISE: dict[str, Callable[..., Elementwise]] = {
    "adam": adam_kernel, "adam_step": adam_step_kernel, "sgd": sgd_kernel,
    "bias_activation": bias_activation_kernel, "activation_backward": activation_backward_kernel}


# -- CUDA source ---------------------------------------------------------------------------
def _parameters(spec: Elementwise, ctype: str, tensors: int) -> list[str]:
    params = []
    for k in range(tensors):
        for a in spec.arrays:
            const = "" if a in spec.written else "const "
            params.append(f"{const}{ctype}* __restrict__ {a}_{k}")
    params += [f"long long n_{k}" for k in range(tensors)]
    params += ["long long total", "long long columns"]
    if spec.counter:
        params.append(f"const {ctype}* __restrict__ {spec.counter}_ptr")
    params += [f"double {s}" for s in spec.host64]
    params += [f"{ctype} {s}" for s in spec.scalars]
    return params


def _prologue(spec: Elementwise, ctype: str) -> list[str]:
    """The once-per-thread statements: the counter and the double-precision scalars."""
    lines = [f"double {spec.counter} = (double){spec.counter}_ptr[0];"] if spec.counter else []
    for target, expr in spec.prologue:
        expr = _cast_literals(expr, "double")
        lines.append(f"double {target} = {expr};" if target.endswith("_")
                     else f"const {ctype} {target} = ({ctype})({expr});")
    return lines


def _element_body(spec: Elementwise, ctype: str, k: int) -> list[str]:
    """The statements for element ``j`` of tensor ``k``."""
    lines = []
    declared = set()
    for a in spec.arrays:
        if _reads(spec, a):
            index = "j % columns" if a == spec.bias else "j"
            lines.append(f"{ctype} {a} = {a}_{k}[{index}];")
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
    ``n_0..``; ``total`` (their sum); ``columns`` (for a bias, else 1); the counter array,
    the double scalars and the scalars.
    """
    if not 1 <= tensors <= MAX_TENSORS:
        raise ValueError(f"tensors must be in [1, {MAX_TENSORS}], received {tensors}")
    ctype = CTYPES[dtype]
    name = spec.kernel_name(dtype, tensors)
    lines = [PRELUDE, f'extern "C" __global__ void {name}(',
             "    " + ",\n    ".join(_parameters(spec, ctype, tensors)) + ") {",
             *(f"    {line}" for line in _prologue(spec, ctype)),
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

    ``arrays`` maps each of ``spec.arrays`` to an array (the bias already broadcastable);
    ``scalars`` to numbers of the arrays' dtype (the counter: its 0-d array, read on the
    host here; the ``host64`` ones: floats). Returns the new values of the written
    arrays (the caller stores them); nothing is modified.
    """
    env: dict[str, Any] = {"__builtins__": {}, **_np_functions(np), **scalars, **arrays}
    if spec.counter:
        import numpy

        dtype = arrays[spec.arrays[0]].dtype
        env[spec.counter] = numpy.float64(float(scalars[spec.counter]))  # a host read
        for name in spec.host64:
            env[name] = numpy.float64(scalars[name])
        for target, expr in spec.prologue:
            value = eval(expr, env)  # noqa: S307 - the module's own constant expressions
            env[target] = value if target.endswith("_") else numpy.dtype(dtype).type(value)
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
              columns: int = 1, integer: Callable[[int], Any] = int) -> list[Any]:
    """The launch arguments in the order of :func:`elementwise_source` (arrays, sizes,
    total, columns, scalars); sizes are the element counts of each tensor's first array,
    made by ``integer`` (``numpy.int64`` for a launch: CUDA's ``long long``)."""
    args: list[Any] = [t[a] for t in tensors for a in spec.arrays]
    sizes = [int(t[spec.arrays[0]].size) for t in tensors]
    counts = [*sizes, sum(sizes), columns]
    device = [scalars[spec.counter]] if spec.counter else []
    return (args + [integer(c) for c in counts] + device + [scalars[s] for s in spec.host64]
            + [scalars[s] for s in spec.scalars])
