"""The per-step hook of lazy backends: materialise the parameters and optimiser state.

A backend whose arrays are lazy (dask: every operation adds to a task graph) would see its
graph grow with every training step, and each step get slower, unless the results are
computed now and then. Such a backend declares the optional Backend member
``materialize(arrays: tuple) -> tuple``: after each eager training step the core hands it
the parameters' arrays followed by the optimiser's state arrays (every slot the optimiser
declares, :meth:`mlcore.optimizers.Optimizer.state_arrays`: Adam's moments, SGD's momentum
buffers, RMSprop's averages, Adagrad's sums, a plugin's own) and stores what it returns in
their place (dask: ``dask.persist(*arrays)``). Eager backends do not declare it and pay
nothing; a compiled step (hook ``mlcore_compile_step``) has no graph to grow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..backend import Backend, optional_members

__all__ = ["settler"]


def settler(backend: Backend, params: Sequence[Any], opt: Any) -> Callable[[], None] | None:
    """A function materialising ``params`` and ``opt``'s state through ``backend``, or None
    when the backend does not declare ``materialize``."""
    materialize = optional_members(backend).materialize
    if materialize is None:
        return None
    n = len(params)
    rule_based = getattr(opt, "has_rule", False)

    def settle() -> None:
        state = opt.state_arrays() if rule_based else []
        arrays = tuple(p.value for p in params) + tuple(state)
        done = tuple(materialize(arrays))
        if len(done) != len(arrays):
            raise ValueError(f"Backend {backend.name!r}: materialize returned {len(done)} "
                             f"arrays for {len(arrays)}; it must return one per array.")
        for p, value in zip(params, done[:n], strict=True):
            p.value = value
        if state:
            opt.replace_state_arrays(done[n:])

    return settle
