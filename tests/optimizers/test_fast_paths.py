"""The backends' in-place optimiser kernels are fast paths of the optimisers' rule: the eager
step with the kernel (``opt._fused``) against the same step with the rule alone, with
clipping and weight decay on, in float32 and float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.layers import Parameter

CASES = [
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
]
CLIPS = [{}, {"clip_norm": 0.5}, {"clip_value": 0.2}, {"clip_norm": 0.5, "clip_value": 0.2}]
SHAPES = [(300, 257), (257,), (7, 3), (1,)]  # past NumPy's block size, and tiny ones


def _one_step(backend: Any, name: str, kw: dict[str, Any], dtype: str) -> list[Any]:
    """Three steps by the rule build a state; then one step from that same state with the
    kernel and one with the rule: the parameters and state arrays of each."""
    rng = np.random.default_rng(11)
    start = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    grads = [[rng.normal(size=s).astype(dtype) * (k + 1) for s in SHAPES] for k in range(4)]
    params = [Parameter(backend.asarray(v.copy())) for v in start]
    warm = getattr(mlcore, name)(params, **kw)
    warm._fused = None
    for k in range(3):
        for p, g in zip(params, grads[k], strict=True):
            p.grad = backend.asarray(g)
        warm.step()
    out = []
    for fused in (True, False):
        ps = [Parameter(backend.asarray(backend.to_numpy(p.value).copy())) for p in params]
        opt = getattr(mlcore, name)(ps, **kw)
        opt.load_state_dict(warm.state_dict())
        if not fused:
            opt._fused = None
        for p, g in zip(ps, grads[3], strict=True):
            p.grad = backend.asarray(g)
        opt.step()
        out.append([backend.to_numpy(p.value) for p in ps]
                   + [backend.to_numpy(a) for a in opt.state_arrays()])
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: ",".join(c) or "noclip")
@pytest.mark.parametrize(("name", "kw"), CASES, ids=lambda v: v if isinstance(v, str)
                         else ",".join(f"{k}={x}" for k, x in v.items()))
def test_the_kernel_equals_the_rule(backend: Any, name: str, kw: dict[str, Any],
                                    clip: dict[str, float], dtype: str) -> None:
    """One step from the same state: NumPy's Adam kernels (the passes, the blocks, the Numba
    loop) give the rule's bits; SGD's BLAS axpy rounds ``p - lr d`` once (a fused
    multiply-add) and torch's in-place ops round in their own order: within 4 ulp of each
    array's largest value."""
    probe = getattr(mlcore, name)([Parameter(backend.asarray(np.ones(2, dtype)))], **kw)
    if probe._fused is None:
        pytest.skip(f"{backend.name} offers no {name} kernel")
    got, want = _one_step(backend, name, kw | clip, dtype)
    exact = name.startswith("Adam") and backend.name == "numpy"
    for a, b in zip(got, want, strict=True):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            bound = 4 * np.finfo(dtype).eps * float(np.max(np.abs(b)))
            assert float(np.max(np.abs(a - b))) <= bound, \
                f"{float(np.max(np.abs(a - b))) / bound * 4:.1f} ulp of the largest value"
