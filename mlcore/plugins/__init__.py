"""The plugin manager: built lazily, built-ins first and protected, failures contained.

Nothing happens at import. The first call to :func:`registry` builds one pluggy
``PluginManager`` (project ``mlcore``) and, in this order:

1. registers mlcore's built-in activations, losses, metrics, optimisers and layer types;
   their names are protected;
2. loads the first-party backends (``mlcore-numpy``, ``mlcore-strict``, ``mlcore-cupy``,
   ``mlcore-torch``, ``mlcore-jax``: part of mlcore, shipped apart only so the core cannot
   import an array library); their backend names are protected too;
3. loads every other entry point of the ``mlcore`` group, one at a time.

Each plugin is imported and its hooks called one plugin at a time, so a plugin that fails to
import, raises (any exception, ``SystemExit`` included; only ``KeyboardInterrupt`` passes),
returns something malformed or claims a protected name is recorded as failed, with the
reason, and takes no part; the others still load. Two plugins providing one name is a
*clash*: it is recorded on both plugins (``mlcore plugins`` and ``mlcore info`` show it with
both providers) and using that name raises :class:`PluginConflictError`. Failures and
clashes warn (:class:`PluginWarning`); with ``MLCORE_STRICT_PLUGINS=1`` every mlcore call
raises :class:`PluginLoadError` instead, while :func:`inspect` still returns everything. The
environment controls are described in :mod:`mlcore._plugincontrols`.

The registry is built once. A plugin that calls mlcore while it is being loaded (at import
or in a hook) gets :class:`PluginLoadError` instead of a deadlock, and so does a thread that
the loading plugin is waiting for; any other thread waits until loading is done.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from .. import hookspecs
from ..errors import (
    InvalidParameterError,
    PluginConflictError,
    PluginLoadError,
    PluginWarning,
    UnknownNameError,
)
from .controls import (
    FIRST_PARTY,
    SINGULAR,
    canonical_name,
    disabled_reason,
    meaning_of,
    norm,
    truthy,
    unmatched_controls,
    validated,
)
from .loadonce import LoadOnce

__all__ = ["PluginRecord", "Registry", "registry", "inspect", "reset", "plugin_manager",
           "kernel", "kernel_for", "make", "canonical_name", "FIRST_PARTY"]

_BUILTIN_MODULES = ("mlcore.activations", "mlcore.losses", "mlcore.metrics",
                    "mlcore.optimizers", "mlcore.layers.registry")
_KINDS = ("backends", "activations", "losses", "metrics", "optimizers", "layers")


@dataclass
class PluginRecord:
    """One plugin as ``mlcore info`` reports it (``conflicts``: its name clashes)."""

    name: str
    distribution: str
    version: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str = ""
    builtin: bool = False
    provides: dict[str, list[str]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.name!r} ({self.distribution} {self.version})"


@dataclass
class _Entry:
    factory: Any
    record: PluginRecord


class Registry:
    """What the loaded plugins provide, by kind and name, with the record of each plugin."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.problems: list[str] = []  # every failure and clash, as reported
        self._entries: dict[str, dict[str, list[_Entry]]] = {k: {} for k in _KINDS}
        self._protected: dict[tuple[str, str], PluginRecord] = {}
        self.strict = truthy("MLCORE_STRICT_PLUGINS")

    # -- loading ------------------------------------------------------------------------
    def load(self) -> None:
        import importlib

        version = _dist_version("mlcore")
        for modname in _BUILTIN_MODULES:
            rec = PluginRecord(modname, "mlcore", version, builtin=True)
            self._add(importlib.import_module(modname), rec)
        eps = list(_entry_points())
        first = [ep for ep in eps if norm(_dist_name(ep)) in FIRST_PARTY]
        for ep in first + [ep for ep in eps if ep not in first]:
            self._load_entry_point(ep, protect=ep in first)
        for problem in unmatched_controls({name for ep in eps
                                           for name in (ep.name, _dist_name(ep))}):
            self._problem(problem)
        self._find_clashes()

    def _add(self, plugin: object, rec: PluginRecord, protect: bool = True) -> None:
        """Register ``plugin`` and collect what its hooks provide; on any fault, undo."""
        self.records.append(rec)
        stage, items = "registration", []
        try:
            with _running(rec):
                self.pm.register(plugin, name=rec.name)
                for kind in _KINDS:
                    hook = getattr(plugin, f"mlcore_{kind}", None)
                    if hook is not None and hasattr(hook, "mlcore_impl"):
                        stage = f"hook mlcore_{kind}"
                        items += [(kind, n, obj) for n, obj in validated(kind, hook())]
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit included: contained
            self._unregister(plugin)
            self._fail(rec, stage, exc)
            return
        claimed = [(k, n) for k, n, _ in items if (k, n) in self._protected]
        if claimed:
            self._unregister(plugin)
            what = ", ".join(f"{k[:-1]} {n!r}" for k, n in claimed)
            owner = self._protected[claimed[0]].describe()
            self._fail(rec, "registration", None, f"it claims the built-in {what} of {owner}; "
                       f"built-in names cannot be replaced. Rename it in the plugin.")
            return
        for kind, name, obj in items:
            self._entries[kind].setdefault(name, []).append(_Entry(obj, rec))
            rec.provides.setdefault(kind, []).append(name)
            if protect:
                self._protected[(kind, name)] = rec

    def _unregister(self, plugin: object) -> None:
        if self.pm.is_registered(plugin):
            self.pm.unregister(plugin)

    def _load_entry_point(self, ep: md.EntryPoint, protect: bool) -> None:
        dist = _dist_name(ep)
        rec = PluginRecord(ep.name, dist, ep.dist.version if ep.dist else "?")
        if self.pm.has_plugin(ep.name) or any(r.name == ep.name for r in self.records):
            return
        why_off = disabled_reason(ep.name, dist)
        if why_off:
            rec.status, rec.error = "disabled", why_off
            self.records.append(rec)
            return
        try:
            with _running(rec):
                plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit included: contained
            self.records.append(rec)
            self._fail(rec, "import", exc)
            return
        self._add(plugin, rec, protect)

    def _fail(self, rec: PluginRecord, stage: str, exc: BaseException | None,
              reason: str = "") -> None:
        rec.status = "failed"
        detail = reason or "".join(traceback.format_exception_only(type(exc), exc)).strip()
        rec.error = f"{stage} failed: {detail}"
        self._problem(f"mlcore plugin {rec.describe()} {rec.error}")

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        if not self.strict:
            warnings.warn(message, PluginWarning, stacklevel=5)

    def _find_clashes(self) -> None:
        for kind in _KINDS:
            for name, entries in sorted(self._entries[kind].items()):
                if len(entries) < 2:
                    continue
                who = " and ".join(e.record.describe() for e in entries)
                text = f"{SINGULAR[kind]} {name!r} is provided by {who}"
                for e in entries:
                    e.record.conflicts.append(text)
                self._problem(f"mlcore plugins clash: {text}. Uninstall one, or switch one off "
                              f"with MLCORE_DISABLE_PLUGINS=<name>.")

    # -- lookup -------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def providers(self, kind: str, name: str) -> list[tuple[Any, PluginRecord]]:
        """Every ``(factory, record)`` registered under ``name``, even when they conflict
        (the conformance kit checks each plugin's own object)."""
        return [(e.factory, e.record) for e in self._entries[kind].get(name, [])]

    def lookup(self, kind: str, name: str) -> Any:
        # layer types are class names, compared exactly ("Dense"); every other name in
        # lower case
        entries = self._entries[kind].get(name if kind == "layers" else canonical_name(name))
        if not entries:
            return None
        if len(entries) > 1:
            who = " and ".join(e.record.describe() for e in entries)
            raise PluginConflictError(
                f"The {SINGULAR[kind]} name {name!r} is provided by {who}. Uninstall one of "
                f"them, or switch one off with MLCORE_DISABLE_PLUGINS=<plugin name>.",
                [e.record for e in entries],
            )
        return entries[0].factory

    def get(self, kind: str, name: str) -> Any:
        """Look ``name`` up, with an error listing the registered names when unknown."""
        found = self.lookup(kind, name) if isinstance(name, str) else None
        if found is None:
            import difflib

            known = self.names(kind)
            msg = f"Unknown {SINGULAR[kind]} {name!r}. Registered: {', '.join(known)}."
            close = difflib.get_close_matches(str(canonical_name(name)), known, n=1)
            meant = meaning_of(kind, name)
            if meant is not None:
                msg += f" {name!r} is another library's name: mlcore calls it {meant}."
            elif close:
                msg += f" Did you mean {close[0]!r}?"
            raise UnknownNameError(msg + self.switched_off_hint(), name)
        return found

    def switched_off_hint(self) -> str:
        """A sentence naming the plugins that a control switched off or that failed (one
        of them may provide the name the user asked for), or ``""``."""
        off = [f"{r.describe()}, {r.error}" for r in self.records
               if r.status in ("disabled", "failed") and not r.builtin]
        if not off:
            return ""
        return (" Installed plugins not in use, which may provide it: " + "; ".join(off) + ".")

    @property
    def backends(self) -> dict[str, Any]:
        return {name: self.lookup("backends", name) for name in self._entries["backends"]}

    def failure_for_backend(self, name: str) -> str:
        """Why the plugin that would provide backend ``name`` is not in use, or ``""``."""
        for rec in self.records:
            ours = norm(rec.name) == norm(name) or norm(rec.distribution) == f"mlcore-{norm(name)}"
            if rec.status in ("failed", "disabled") and ours:
                return f"{rec.describe()}: {rec.error}"
        return ""


def _dist_name(ep: md.EntryPoint) -> str:
    return ep.dist.name if ep.dist else "?"


def _dist_version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "unknown"


def _entry_points() -> Iterable[md.EntryPoint]:
    seen: set[str] = set()
    for ep in sorted(md.entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name not in seen:
            seen.add(ep.name)
            yield ep


# -- building once, without deadlock (see mlcore._loadonce) -------------------------------
_once = LoadOnce()
_registry: Registry | None = None
_running = _once.running


def inspect() -> Registry:
    """The process-wide registry, built on first use, without raising for strict mode (what
    ``mlcore plugins`` lists)."""
    reg = _registry or _once.wait_or_claim(lambda: _registry)
    if reg is not None:
        return reg  # type: ignore[no-any-return]
    built: Registry | None = None
    try:
        built = Registry()
        built.load()
    except BaseException:
        built = None
        raise
    finally:
        _once.release(lambda: _publish(built))
    return built


def _publish(reg: Registry | None) -> None:
    global _registry
    _registry = reg


def registry() -> Registry:
    """The process-wide registry, built on first use.

    Under ``MLCORE_STRICT_PLUGINS=1`` any failure or clash raises :class:`PluginLoadError`
    listing them all (use :func:`inspect` to see the records anyway).
    """
    reg = _registry or inspect()
    if reg.strict and reg.problems:
        raise PluginLoadError("MLCORE_STRICT_PLUGINS is set and plugins failed: "
                              + " | ".join(reg.problems), reg.problems)
    return reg


def reset() -> None:
    """Forget the registry so the next use rebuilds it (after changing env controls)."""
    with _once.cond:
        _publish(None)
    kernel_for.cache_clear()


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy ``PluginManager`` (for tools that want to inspect hooks)."""
    return registry().pm


def make(kind: str, name: str, params: dict[str, Any]) -> Any:
    """Build a registered activation or loss; unknown parameters give a clear error."""

    factory: Callable[..., Any] = registry().get(kind, name)
    try:
        return factory(**params)
    except TypeError as exc:
        import inspect as _inspect

        try:
            accepted = [p for p in _inspect.signature(factory).parameters if p != "self"]
        except (TypeError, ValueError):
            accepted = []
        if any(p not in accepted for p in params):
            bad = ", ".join(repr(p) for p in params if p not in accepted)
            raise InvalidParameterError(
                f"{SINGULAR[kind].capitalize()} {name!r} got unknown parameter {bad}. "
                f"Accepted: {', '.join(accepted) or 'none'}.",
                name,
            ) from exc
        raise


@functools.cache
def kernel_for(xp: Any, name: str) -> Callable[..., Any] | None:
    """:func:`kernel`, asked once per namespace and name (for a formula that looks its fast
    path up on every call: the activations', BatchNorm's); forgotten by :func:`reset`."""
    return kernel(name, xp)


def kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """The fused kernel ``name`` a plugin provides for namespace ``xp``, or None (use the
    plain Array API version); see :func:`mlcore.hookspecs.mlcore_kernel`. Ask once, when
    the object that uses it is built. Only the names of :data:`mlcore.hookspecs.KERNELS`
    are asked for; any other has no kernel (None)."""
    if name not in hookspecs.KERNELS:
        return None
    try:
        result = registry().pm.hook.mlcore_kernel(name=name, xp=xp)
    except KeyboardInterrupt:
        raise
    except PluginLoadError:
        raise
    except BaseException as exc:  # noqa: BLE001 - a broken kernel plugin must not stop training
        warnings.warn(f"mlcore kernel {name!r} failed to load ({exc!r}); using the plain Array "
                      f"API version.", PluginWarning, stacklevel=3)
        return None
    return result if callable(result) else None
