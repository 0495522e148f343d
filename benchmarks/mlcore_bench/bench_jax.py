"""The ``jax-hand`` competitor: a hand-written training step, jitted whole
(:mod:`mlcore_bench.reference_jax`). It times training steps only: the reference for what
mlcore's jax backend reaches with its compiled step. Imported only when JAX is installed."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .bench_reference import FnBench
from .cases import Case, StepCase
from .reference_jax import JaxMLP
from .timing import UnavailableError

__all__ = ["make"]


def make(case: Case, dtype: Any) -> FnBench:
    if not isinstance(case, StepCase):
        raise UnavailableError("jax-hand times whole training steps only")
    if np.dtype(dtype) == np.float64 and not jax.config.read("jax_enable_x64"):
        raise UnavailableError("float64 needs JAX's 64-bit mode (JAX_ENABLE_X64=1)")
    X64, y64, weights = case.data()
    model = JaxMLP(weights, dtype, case.hidden, case.loss, case.optimizer, case.lr)
    X = jax.device_put(X64.astype(dtype))
    y = jax.device_put(y64 if case.loss == "softmax_ce" else y64.astype(dtype))
    last: list[Any] = []

    def step() -> None:
        last[:] = [model.step(X, y)]

    def sync() -> None:
        if last:
            jax.block_until_ready(last[0])

    return FnBench(step, model.host_params, sync, "host", {"jax": jax.__version__})
