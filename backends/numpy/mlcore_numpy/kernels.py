"""Fused NumPy kernels offered to mlcore through the ``mlcore_kernel`` hook.

Names and signatures are those of ``mlcore.hookspecs.KERNELS`` (tested against it). Each
has a plain Array API twin in the core, which every other backend runs; these give the same
numbers (the tests compare them bitwise; ``sgd_update`` through BLAS to a few ulp; the
activation and cross-entropy kernels of :mod:`.fused` to a few ulp of each row's scale).
The package: :mod:`.passes` (the NumPy passes, whole or in L2-sized blocks), :mod:`.jit`
(the Numba loop), :mod:`.blas` (NumPy's own BLAS), :mod:`.fused` (Numba's one pass per row
for activations and cross-entropy), :mod:`.norm` (a few compiled passes for BatchNorm), and
this module, which picks a route.

Measured on the 784-512-512-10 Adam step at batch 32 (2 cores): the blocked passes took
the update of 670k parameters from 1.46 to 1.0 ms, the compiled loop the step from 2.5 to
1.75 ms; BLAS ``axpy`` runs SGD's update on BLAS's threads in one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import fused, norm
from .blas import cblas
from .jit import eager, jit, loaded
from .passes import BLOCK, adam_blocked, adam_passes, flat_views, sgd_blocked

__all__ = ["adam_update", "sgd_update", "kernel", "adam_route", "BLOCK", "JIT_MIN",
           "JIT_LOAD_MIN", "cblas"]

JIT_LOAD_MIN = 131072
"""The first update of a parameter this large loads the compiled loop (:mod:`.jit`: ~0.5 s
once per process, repaid within a few hundred steps of a 784-512 layer, never by a small
model)."""

JIT_MIN = 1024
"""Smallest parameter the compiled Adam loop takes: below it the checks before the call cost
more than the ten NumPy operations (4 elements: 4.9 vs 3.6 µs; 5120: 6.9 vs 10 µs)."""

_flats = flat_views  # the former private name
_FLOAT = {float}


def adam_route(p: np.ndarray, scalars: tuple[float, ...]) -> str:
    """How :func:`adam_update` updates ``p``, by its size:

    ``"compiled"``: the Numba loop, one pass over memory, for ``JIT_MIN`` elements or more
    once it is loaded (the first parameter of ``JIT_LOAD_MIN`` elements loads it, or the
    first of ``JIT_MIN`` once the fused loops have loaded Numba: :func:`_numba_in`), with
    Python-float scalars (NumPy float64 ones promote NumPy's passes, which the loop must
    match); ``"blocked"``: the NumPy passes one L2-sized block at a time, above one block;
    ``"passes"``: the NumPy passes over the whole array.
    """
    n = p.size
    if n >= JIT_MIN and set(map(type, scalars)) == _FLOAT:  # no Python frame per scalar
        compiled = jit() if n >= JIT_LOAD_MIN or _numba_in() else loaded()
        if compiled is not None and compiled.adam is not None:
            return "compiled"
    return "blocked" if n > BLOCK else "passes"


def _numba_in() -> bool:
    """Whether this process has loaded Numba already (the fused activation loops of
    :mod:`.fused` took an input of ``fused.LOAD_MIN`` elements): loading the Adam loop too
    then costs only its cached machine code, so a model of small parameters (the Keras
    tutorial's 64-256-128-2) gets it as well."""
    return bool(fused.fused.cache_info().currsize) and fused.fused().available


def adam_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, b1: float,
                b2: float, eps: float, scale: float) -> None:
    """In place: ``m = b1 m + g; v = b2 v + g*g; p -= m / ((sqrt(v) + eps) * scale)``, by
    the route :func:`adam_route` picks; every route gives the same bits. Arrays that have
    no flat views (read-only, overlapping, mixed layouts: see :func:`.passes.flat_views`)
    take the whole-array passes, which NumPy itself checks."""
    route = adam_route(p, (b1, b2, eps, scale))
    flat = flat_views(p, g, m, v) if route != "passes" else None
    if flat is None:
        adam_passes(p, g, m, v, b1, b2, eps, scale)
        return
    if route == "compiled":
        t = p.dtype.type
        try:
            jit().adam(*flat, t(b1), t(b2), t(eps), t(scale))  # type: ignore[misc]
            return
        except TypeError:  # no compiled signature fits (a read-only g): nothing was written
            pass
    adam_blocked(*flat, b1, b2, eps, scale)


def sgd_update(p: np.ndarray, g: np.ndarray, lr: float) -> None:
    """In place: ``p -= lr * g``.

    Large parameters go through NumPy's BLAS ``axpy`` (:func:`cblas`): one pass on BLAS's
    threads, which may round ``p - lr g`` once (a fused multiply-add) where NumPy rounds the
    product and the difference separately: a few ulp of the operands from the plain update.
    ``lr == 0`` runs the plain update (BLAS skips the pass when ``a == 0``, which would turn
    ``p - 0 * inf`` into ``p`` instead of NaN). Without BLAS the product is formed one
    L2-sized block at a time.
    """
    flat = flat_views(p, g) if p.size > BLOCK else None
    if flat is None:
        p -= lr * g
        return
    if lr != 0.0 and (blas := cblas()).available:
        blas.axpy(-lr, flat[1], flat[0])
        return
    sgd_blocked(flat[0], flat[1], lr)


_KERNELS: dict[str, Callable[..., Any]] = {"adam_update": adam_update, "sgd_update": sgd_update,
                                           **fused.KERNELS}
_KERNELS.update(norm.KERNELS)  # BatchNorm's training forward and backward


def kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """The kernel ``name`` when ``xp`` is this backend's namespace, else None."""
    from . import NumpyBackend

    if xp is not NumpyBackend.xp:
        return None
    if name == "adam_update" and eager():
        jit()  # MLCORE_NUMPY_JIT=1: compile (or load the cached loop) with the optimiser
    return _KERNELS.get(name)
