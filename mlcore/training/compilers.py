"""Who compiles the training step, and whose fault a failing compiled step is.

``compiles(backend)`` asks the ``mlcore_compile_step`` plugins once per backend, with
:func:`probe_step`, a step that is never run (an offer is a callable; anything else, or
an error, declines it). :func:`failure_text` says why a compiled step failed, blaming where
the error came from: mlcore's step, a compile plugin's own code, or neither.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ..backend import Backend
from ..errors import PluginWarning
from ..plugins import registry
from ..types import Array
from .step import Pure, flat_step

__all__ = ["probe_step", "compiles", "ask", "impls", "failure_text"]


def probe_step(params: tuple[Array, ...], state: tuple[Array, ...], X: Array,
               y: Array) -> tuple[Any, Any, Any]:
    """The step shown to ``mlcore_compile_step`` to ask whether a plugin compiles for a
    backend: never run (a plugin answers with a callable, or None)."""
    return params, state, X


COMPILES: dict[tuple[Any, ...], tuple[bool, tuple[Any, ...]]] = {}


def compiles(backend: Backend, compile_hook: Callable[..., object] | None = None) -> bool:
    """Whether a plugin compiles training steps for ``backend`` (asked once per backend and
    set of compiling plugins, with a step that is never run)."""
    hook = registry().pm.hook.mlcore_compile_step if compile_hook is None else compile_hook
    plugins = tuple(i.plugin for i in impls(hook))
    key = (backend.name, repr(backend), *map(id, plugins))
    found = COMPILES.get(key)
    if found is None:  # the plugins are kept with the answer: their ids stay theirs
        found = COMPILES[key] = (ask(hook, backend, probe_step) is not None, plugins)
    return found[0]


def impls(compile_hook: Callable[..., object] | None) -> list[Any]:
    """The hook implementations behind ``compile_hook`` (none for a plain callable)."""
    get = getattr(compile_hook, "get_hookimpls", None)
    return list(get()) if get is not None else []


def ask(compile_hook: Callable[..., Any], backend: Backend, step: Pure) -> Pure | None:
    """The backend's compiled ``step``, or None; a failing plugin warns and is skipped."""
    try:
        compiled = compile_hook(backend=backend, step=step)
    except Exception as exc:  # noqa: BLE001 - a broken compile plugin must not stop training
        warnings.warn(f"mlcore_compile_step failed for backend {backend.name!r} ({exc!r}); "
                      f"using the eager training step.", PluginWarning, stacklevel=4)
        return None
    return compiled if callable(compiled) else None


_STEP_FILE = flat_step.__code__.co_filename


def failure_text(exc: BaseException, backend: Backend) -> str:
    """Why the compiled step failed, blaming where the error came from: mlcore's step (a
    loss, activation or layer that reads a value back to the host), a compile plugin's own
    code around it (the hook's fault), or neither (the compiled program failed while running:
    memory, a device)."""
    frames, modules, tb = [], [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    at = f", raised in {frames[-1].co_name} ({frames[-1].co_filename})" if frames else ""
    if any(code.co_filename == _STEP_FILE for code in frames):
        return (f"The compiled training step failed ({text}{at}). A loss, activation or layer "
                f"that reads a value back to the host (float(), bool(), int() of an array) "
                f"cannot be compiled")
    plugin = compiler_of(modules)
    if plugin:
        return (f"The compiled training step that {plugin} returned for backend "
                f"{backend.name!r} failed outside mlcore's step ({text}{at}): the error is "
                f"that hook's, not the model's (its losses and activations were not reached). "
                f"The callable mlcore_compile_step returns must run the step it was given, "
                f"with the same arguments and results; a hook returns None for steps it "
                f"cannot compile")
    return (f"The compiled training step for backend {backend.name!r} failed while running "
            f"({text}{at}); if it ran out of memory, lower batch_size")


def compiler_of(modules: list[str]) -> str:
    """The plugin whose ``mlcore_compile_step`` the error passed through (its module is in
    the traceback), or ""."""
    for impl in impls(registry().pm.hook.mlcore_compile_step):
        plugin = impl.plugin
        home = str(getattr(plugin, "__name__", None) or type(plugin).__module__)
        if any(m == home or m.startswith(home + ".") for m in modules):
            return f"plugin {impl.plugin_name!r}'s mlcore_compile_step"
    return ""
