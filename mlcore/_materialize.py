"""The per-step hook of lazy backends: materialise the parameters and optimiser state.

A backend whose arrays are lazy (dask: every operation adds to a task graph) would see its
graph grow with every training step, and each step get slower, unless the results are
computed now and then. Such a backend declares the optional Backend member
``materialize(arrays: tuple) -> tuple``: after each eager training step the core hands it
the parameters' arrays followed by the optimiser's state arrays (the built-in optimisers':
Adam's moments ``m`` and ``v``, SGD's momentum ``buffers``) and stores what it returns in
their place (dask: ``dask.persist(*arrays)``). Eager backends do not declare it and pay
nothing; a compiled step (hook ``mlcore_compile_step``) has no graph to grow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["settler", "STATE_LISTS"]

STATE_LISTS = ("m", "v", "buffers")
"""The optimiser attributes holding per-parameter state arrays (None until first used)."""


def settler(backend: Any, params: Sequence[Any], opt: Any) -> Callable[[], None] | None:
    """A function materialising ``params`` and ``opt``'s state through ``backend``, or None
    when the backend does not declare ``materialize``."""
    materialize = getattr(backend, "materialize", None)
    if not callable(materialize):
        return None
    lists = [getattr(opt, name) for name in STATE_LISTS
             if isinstance(getattr(opt, name, None), list)]
    n = len(params)

    def settle() -> None:
        slots = [(state, i) for state in lists for i, a in enumerate(state) if a is not None]
        arrays = tuple(p.value for p in params) + tuple(state[i] for state, i in slots)
        done = tuple(materialize(arrays))
        if len(done) != len(arrays):
            raise ValueError(f"Backend {backend.name!r}: materialize returned {len(done)} "
                             f"arrays for {len(arrays)}; it must return one per array.")
        for p, value in zip(params, done[:n], strict=True):
            p.value = value
        for (state, i), value in zip(slots, done[n:], strict=True):
            state[i] = value

    return settle
