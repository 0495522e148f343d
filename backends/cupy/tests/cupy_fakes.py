"""A fake ``cupy`` that runs the generated CUDA source on the CPU, and records CUDA graphs.

- Arrays are NumPy arrays of a subclass (:class:`FakeArray`) with CuPy's ``data.ptr`` and
  ``device``.
- ``RawKernel(code, name, options)`` compiles ``code`` **as C++** with the host compiler
  (a small header maps ``__global__``, ``blockIdx`` and friends to plain C++), and a launch
  runs every block and thread of the grid one after another. The kernels' arguments are
  checked against the parameter types read from the source's own signature (pointer to the
  array's dtype, ``long long`` for ``numpy.int64``, ``float``/``double``/``int``), as CuPy
  would pass them, then handed over as raw pointers. Element-wise kernels without shared
  memory or barriers (all of mlcore-cupy's) run exactly as on a GPU, one thread at a time;
  only the floating-point library differs (glibc's ``expf`` is not libdevice's).
- Stream capture: while a stream captures, kernel launches and ``copyto`` are recorded, not
  run, and the outputs of :class:`RecordingNamespace` operations are NaN until a replay;
  ``Graph.launch()`` replays the record in order. ``sync()`` during a capture raises as CUDA
  does (``cudaErrorStreamCaptureUnsupported``) and invalidates the capture.

Also the plain path a kernel is compared with where the core has no function of that name
(:func:`softmax_cross_entropy`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SHIM = """
#include <cmath>
using namespace std;
struct mlcore_dim3 { unsigned int x, y, z; };
static mlcore_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
"""

CTYPE_OF = {"float": np.float32, "double": np.float64, "long long": np.int64, "int": np.int32}


class FakeCudaError(RuntimeError):
    """Stands for cupy.cuda.runtime.CUDARuntimeError."""


def compiler_available() -> bool:
    try:
        return subprocess.run(["g++", "--version"], capture_output=True).returncode == 0
    except OSError:
        return False


def _cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"mlcore-fake-cuda-{os.getuid()}"
    path.mkdir(exist_ok=True)
    return path


def parse_signature(code: str, name: str) -> list[tuple[str, bool]]:
    """``[(C type, is_pointer)]`` of kernel ``name``'s parameters, read from ``code``."""
    m = re.search(rf'extern "C" __global__ void {name}\((.*?)\)\s*{{', code, re.S)
    if m is None:
        raise FakeCudaError(f"kernel {name} not found in the source (CUDA_ERROR_NOT_FOUND)")
    params = []
    for raw in m.group(1).split(","):
        text = raw.replace("__restrict__", "").replace("const", "").strip()
        pointer = "*" in text
        ctype = " ".join(text.replace("*", " ").split()[:-1])
        params.append((ctype, pointer))
    return params


def _build(code: str, name: str, params: list[tuple[str, bool]]) -> Any:
    """Compile ``code`` with a driver ``mlcore_run(grid, block, args)`` into a library."""
    unpack = []
    for k, (ctype, pointer) in enumerate(params):
        unpack.append(f"({ctype}*)(*(void**)a[{k}])" if pointer else f"*({ctype}*)a[{k}]")
    driver = (f'extern "C" void mlcore_run(unsigned gx, unsigned bx, void** a) {{\n'
              f"  gridDim.x = gx; blockDim.x = bx; gridDim.y = gridDim.z = 1;\n"
              f"  blockDim.y = blockDim.z = 1;\n"
              f"  for (unsigned b = 0; b < gx; ++b) for (unsigned t = 0; t < bx; ++t) {{\n"
              f"    blockIdx.x = b; threadIdx.x = t;\n"
              f"    {name}({', '.join(unpack)});\n  }}\n}}\n")
    text = SHIM + code + driver
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    lib = _cache_dir() / f"{name}-{digest}.so"
    if not lib.exists():
        source = lib.with_suffix(f".{os.getpid()}.cpp")
        source.write_text(text)
        tmp = lib.with_suffix(f".{os.getpid()}.so")
        out = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-ffp-contract=off",
                              "-fno-fast-math", "-o", str(tmp), str(source)],
                             capture_output=True, text=True)
        source.unlink()
        if out.returncode != 0:
            raise FakeCudaError(f"NVRTC_ERROR_COMPILATION (as C++): {out.stderr[-2000:]}")
        os.replace(tmp, lib)
    run = ctypes.CDLL(str(lib)).mlcore_run
    run.restype = None
    run.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
    return run


class FakeArray(np.ndarray):
    """A NumPy array that answers CuPy's ``data.ptr`` and ``device``."""

    @property
    def data(self) -> Any:  # type: ignore[override]
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    @property
    def device(self) -> Any:
        return types.SimpleNamespace(id=0)

    def copy(self, order: str = "K") -> FakeArray:  # type: ignore[override]
        return _record_or_run(lambda: np.ndarray.copy(self, order), self)


def fake(a: Any) -> FakeArray:
    return np.asarray(a).view(FakeArray)


class FakeCupy(types.ModuleType):
    """The fake module; ``state`` holds the capture record and launch counts."""

    def __init__(self) -> None:
        super().__init__("cupy")
        self.ndarray = FakeArray
        self.int64, self.float32, self.float64 = np.int64, np.float32, np.float64
        self.state: dict[str, Any] = {"capturing": None, "tape": None, "launches": 0,
                                      "compiled": [], "allocators": [], "graph_launches": 0}
        self.cuda = types.SimpleNamespace(
            Stream=lambda non_blocking=False: FakeStream(self, non_blocking),
            get_current_stream=lambda: self._current,
            MemoryPool=lambda: types.SimpleNamespace(malloc=object()),
            using_allocator=lambda alloc: _Using(self, alloc))
        self._null = FakeStream(self, False, ptr=0)
        self._current = self._null

    # -- arrays ----------------------------------------------------------------------------
    def asarray(self, a: Any, dtype: Any = None, order: str = "K") -> FakeArray:
        if isinstance(a, FakeArray) and dtype is None and (
                order == "K" or (a.flags.c_contiguous if order == "C" else a.flags.f_contiguous)):
            return a
        return _record_or_run(lambda: np.array(a, dtype=dtype, order=order), a)

    def asnumpy(self, a: Any) -> np.ndarray:
        return np.array(a)

    def ascontiguousarray(self, a: Any) -> FakeArray:
        return a if a.flags.c_contiguous else _record_or_run(lambda: np.ascontiguousarray(a))

    def empty(self, shape: Any, dtype: Any = np.float32) -> FakeArray:
        return fake(np.full(shape, np.nan, dtype=dtype))

    def empty_like(self, a: Any) -> FakeArray:
        return fake(np.full_like(a, np.nan))

    def zeros(self, shape: Any, dtype: Any = np.float32) -> FakeArray:
        return fake(np.zeros(shape, dtype=dtype))

    def copyto(self, dst: Any, src: Any) -> None:
        if self.state["capturing"] is not None:
            self.state["tape"].append(("MEMCPY", lambda: np.copyto(dst, src)))
        else:
            np.copyto(dst, src)

    def __getattr__(self, name: str) -> Any:  # sqrt, exp, ... for the whole-array fallback
        fn = getattr(np, name)
        return lambda *args, **kw: _record_or_run(lambda: fn(*args, **kw), *args)

    def RawKernel(self, code: str, name: str, options: tuple[str, ...] = ()) -> FakeKernel:  # noqa: N802
        return FakeKernel(self, code, name, options)


def _current_fake() -> FakeCupy | None:
    import sys

    mod = sys.modules.get("cupy")
    return mod if isinstance(mod, FakeCupy) else None


def _record_or_run(fn: Callable[[], Any], *inputs: Any) -> Any:
    """Run ``fn`` now, or during a capture return a NaN array and record ``fn`` into it."""
    cupy = _current_fake()
    out = fn()
    if cupy is None or cupy.state["capturing"] is None or not isinstance(out, np.ndarray):
        return fake(out) if isinstance(out, np.ndarray) else out
    target = fake(np.full_like(out, np.nan))
    cupy.state["tape"].append(("KERNEL", lambda: np.copyto(target, fn())))
    return target


class FakeKernel:
    def __init__(self, cupy: FakeCupy, code: str, name: str, options: tuple[str, ...]) -> None:
        self.cupy, self.code, self.name, self.options = cupy, code, name, options
        self.params = parse_signature(code, name)
        self._run: Any = None

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...],
                 args: tuple[Any, ...]) -> None:
        if len(args) != len(self.params):
            raise FakeCudaError(f"{self.name} takes {len(self.params)} arguments, "
                                f"received {len(args)}")
        for k, ((ctype, pointer), a) in enumerate(zip(self.params, args, strict=True)):
            want = CTYPE_OF[ctype]
            ok = (isinstance(a, FakeArray) and a.dtype == want) if pointer else (
                type(a) is want)
            if not ok:
                raise FakeCudaError(f"{self.name} argument {k} should be "
                                    f"{ctype}{'*' if pointer else ''}, received "
                                    f"{type(a).__name__} {getattr(a, 'dtype', '')}")
        state = self.cupy.state
        if state["capturing"] is not None:
            state["tape"].append(("KERNEL", lambda: self._launch(grid, block, args)))
        else:
            self._launch(grid, block, args)

    def _launch(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        if self._run is None:
            self._run = _build(self.code, self.name, self.params)
            self.cupy.state["compiled"].append(self.name)
        holders: list[Any] = []
        slots = (ctypes.c_void_p * len(args))()
        for k, a in enumerate(args):
            if isinstance(a, FakeArray):
                holder: Any = ctypes.c_void_p(a.data.ptr)
                slots[k] = ctypes.addressof(holder)
            else:
                holder = np.array([a], dtype=type(a))
                slots[k] = holder.ctypes.data
            holders.append(holder)
        self._run(grid[0], block[0], slots)
        self.cupy.state["launches"] += 1


class FakeGraph:
    def __init__(self, cupy: FakeCupy, tape: list[tuple[str, Callable[[], Any]]]) -> None:
        self.cupy, self.tape = cupy, tape

    def launch(self, stream: Any = None) -> None:
        for _, op in self.tape:
            op()
        self.cupy.state["graph_launches"] += 1

    def debug_dot_str(self) -> str:
        """CUDA's DOT dump, as cudaGraphDebugDotPrint writes its nodes."""
        return "digraph dot {\n" + "".join(
            f'"graph_0_node_{i}"[style="solid" shape="rectangle" label="{i}\\n{kind}\\n"];\n'
            for i, (kind, _) in enumerate(self.tape)) + "}\n"


class FakeStream:
    def __init__(self, cupy: FakeCupy, non_blocking: bool, ptr: int = 7) -> None:
        self.cupy, self.ptr, self.non_blocking = cupy, ptr, non_blocking
        self.invalid = False

    def __enter__(self) -> FakeStream:
        self._prev, self.cupy._current = self.cupy._current, self
        return self

    def __exit__(self, *exc: object) -> None:
        self.cupy._current = self._prev

    def begin_capture(self) -> None:
        state = self.cupy.state
        if self.ptr in (0, 1):
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if state["capturing"] is not None:
            raise FakeCudaError("cudaErrorIllegalState: already capturing")
        state["capturing"], state["tape"], self.invalid = self, [], False

    def end_capture(self) -> FakeGraph:
        state = self.cupy.state
        if state["capturing"] is not self:
            raise FakeCudaError("cudaErrorIllegalState: not capturing")
        tape, state["capturing"], state["tape"] = state["tape"], None, None
        if self.invalid:
            raise FakeCudaError("cudaErrorStreamCaptureInvalidated: operation failed due "
                                "to a previous error during capture")
        return FakeGraph(self.cupy, tape)

    def is_capturing(self) -> bool:
        return self.cupy.state["capturing"] is self


class _Using:
    def __init__(self, cupy: FakeCupy, alloc: Any) -> None:
        self.cupy, self.alloc = cupy, alloc

    def __enter__(self) -> None:
        self.cupy.state["allocators"].append(self.alloc)

    def __exit__(self, *exc: object) -> None:
        self.cupy.state["allocators"].pop()


class RecordingNamespace:
    """The few array functions a test's pure step uses, recorded during a capture."""

    def __init__(self, cupy: FakeCupy) -> None:
        self.cupy = cupy

    def __getattr__(self, name: str) -> Any:
        fn = getattr(np, name)
        return lambda *args, **kw: _record_or_run(lambda: fn(*args, **kw), *args)

    def sync(self, x: Any) -> float:
        """``float(x)``: a device-to-host read, refused during capture as CUDA refuses it."""
        capturing = self.cupy.state["capturing"]
        if capturing is not None:
            capturing.invalid = True
            raise FakeCudaError("cudaErrorStreamCaptureUnsupported: operation not permitted "
                                "when stream is capturing")
        return float(x)


def softmax_cross_entropy(xp: Any, z: Any, t: Any, s: float = 0.0,
                          grad: bool = True) -> tuple[Any, Any]:
    """The plain path the kernel must equal: mlcore's cross-entropy from logits."""
    import mlcore

    loss = mlcore.loss("cross_entropy", from_logits=True, label_smoothing=s)
    value, g = loss.value_and_grad_unchecked(xp, z, t)
    return value, (g if grad else None)
