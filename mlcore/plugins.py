"""The plugin manager: built lazily, entry points loaded one at a time, failures recorded.

Nothing happens at import. The first call to :func:`registry` builds one pluggy
``PluginManager`` (project ``mlcore``), registers mlcore's built-in activations and losses,
then loads every entry point of the ``mlcore`` group one by one, so a plugin that fails to
import is reported (distribution, version, error) while the rest still load. Each plugin's
hooks are then called one plugin at a time, so a plugin that raises or returns something
malformed is isolated too.

Environment controls (read when the registry is built; :func:`reset` rebuilds it):

``MLCORE_DISABLE_PLUGIN_AUTOLOAD=1``
    load no third-party entry points.
``MLCORE_PLUGINS=a,b``
    allow-list of entry-point or distribution names (set but empty: none).
``MLCORE_STRICT_PLUGINS=1``
    re-raise load and registration failures as :class:`PluginLoadError`.

The first-party backend distributions (``mlcore-numpy``, ``mlcore-strict``, ``mlcore-cupy``)
are always loaded: they are part of mlcore, shipped as separate distributions only so that
the core cannot import an array library.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginConflictError, PluginLoadError, PluginWarning, UnknownNameError

__all__ = ["PluginRecord", "Registry", "registry", "reset", "plugin_manager", "kernel",
           "FIRST_PARTY"]

FIRST_PARTY = frozenset({"mlcore-numpy", "mlcore-strict", "mlcore-cupy"})
_BUILTIN_MODULES = ("mlcore.activations", "mlcore.losses", "mlcore.metrics",
                    "mlcore.optimizers")
_KINDS = ("backends", "activations", "losses", "metrics", "optimizers")


def _truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@dataclass
class PluginRecord:
    """One plugin as ``mlcore info`` reports it."""

    name: str
    distribution: str
    version: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str = ""
    builtin: bool = False
    provides: dict[str, list[str]] = field(default_factory=dict)

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
        self._entries: dict[str, dict[str, list[_Entry]]] = {k: {} for k in _KINDS}
        self.strict = _truthy("MLCORE_STRICT_PLUGINS")

    # -- loading ------------------------------------------------------------------------
    def load(self) -> None:
        import importlib

        version = _dist_version("mlcore")
        for modname in _BUILTIN_MODULES:
            module = importlib.import_module(modname)
            rec = PluginRecord(modname, "mlcore", version, builtin=True)
            self._register(module, rec)
        for ep in _entry_points():
            self._load_entry_point(ep)
        for rec in self.records:
            if rec.status == "loaded":
                self._collect(rec)

    def _register(self, plugin: object, rec: PluginRecord) -> None:
        self.pm.register(plugin, name=rec.name)
        self.records.append(rec)

    def _load_entry_point(self, ep: md.EntryPoint) -> None:
        dist = ep.dist.name if ep.dist else "?"
        rec = PluginRecord(ep.name, dist, ep.dist.version if ep.dist else "?")
        if self.pm.has_plugin(ep.name) or any(r.name == ep.name for r in self.records):
            return
        why_off = _disabled_reason(ep.name, dist)
        if why_off:
            rec.status, rec.error = "disabled", why_off
            self.records.append(rec)
            return
        try:
            plugin = ep.load()
            self._register(plugin, rec)
        except Exception as exc:  # noqa: BLE001 - any plugin error is isolated
            self._fail(rec, "import", exc)
            self.records.append(rec)

    def _fail(self, rec: PluginRecord, stage: str, exc: BaseException) -> None:
        rec.status = "failed"
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        rec.error = f"{stage} failed: {detail}"
        message = f"mlcore plugin {rec.describe()} {rec.error}"
        if self.strict:
            raise PluginLoadError(message, rec) from exc
        warnings.warn(message, PluginWarning, stacklevel=4)

    def _collect(self, rec: PluginRecord) -> None:
        plugin = self.pm.get_plugin(rec.name)
        for kind in _KINDS:
            hook = getattr(plugin, f"mlcore_{kind}", None)
            if hook is None or not hasattr(hook, "mlcore_impl"):
                continue
            try:
                items = _validated(kind, hook())
            except Exception as exc:  # noqa: BLE001
                self._fail(rec, f"hook mlcore_{kind}", exc)
                continue
            for name, obj in items:
                self._entries[kind].setdefault(name, []).append(_Entry(obj, rec))
                rec.provides.setdefault(kind, []).append(name)

    # -- lookup -------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def providers(self, kind: str, name: str) -> list[tuple[Any, PluginRecord]]:
        """Every ``(factory, record)`` registered under ``name``, even when they conflict
        (the conformance kit checks each plugin's own object)."""
        return [(e.factory, e.record) for e in self._entries[kind].get(name, [])]

    def lookup(self, kind: str, name: str) -> Any:
        entries = self._entries[kind].get(name)
        if not entries:
            return None
        if len(entries) > 1:
            who = " and ".join(e.record.describe() for e in entries)
            raise PluginConflictError(
                f"The {kind[:-1]} name {name!r} is provided by {who}. Uninstall one of them, "
                f"or limit plugins with MLCORE_PLUGINS.",
                [e.record for e in entries],
            )
        return entries[0].factory

    def get(self, kind: str, name: str) -> Any:
        """Look ``name`` up, with an error listing the registered names when unknown."""
        found = self.lookup(kind, name) if isinstance(name, str) else None
        if found is None:
            import difflib

            known = self.names(kind)
            msg = f"Unknown {kind[:-1]} {name!r}. Registered: {', '.join(known)}."
            close = difflib.get_close_matches(str(name), known, n=1)
            if close:
                msg += f" Did you mean {close[0]!r}?"
            raise UnknownNameError(msg, name)
        return found

    @property
    def backends(self) -> dict[str, Any]:
        return {name: self.lookup("backends", name) for name in self._entries["backends"]}

    def failure_for_backend(self, name: str) -> str:
        for rec in self.records:
            ours = rec.name == name or rec.distribution == f"mlcore-{name}"
            if rec.status == "failed" and ours:
                return f"{rec.describe()}: {rec.error}"
        return ""


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


def _disabled_reason(ep_name: str, dist: str) -> str:
    if _norm(dist) in FIRST_PARTY:
        return ""
    if _truthy("MLCORE_DISABLE_PLUGIN_AUTOLOAD"):
        return "not loaded: MLCORE_DISABLE_PLUGIN_AUTOLOAD is set"
    allow = os.environ.get("MLCORE_PLUGINS")
    if allow is not None:
        allowed = {_norm(a) for a in allow.split(",") if a.strip()}
        if _norm(ep_name) not in allowed and _norm(dist) not in allowed:
            return f"not loaded: not in MLCORE_PLUGINS={allow!r}"
    return ""


_BACKEND_ATTRS = ("name", "xp", "device", "asarray", "to_numpy", "synchronize", "rng",
                  "is_available", "unavailable_reason", "owns")


def _validated(kind: str, result: Any) -> list[tuple[str, Any]]:
    """Check a hook's result; raise TypeError describing what is malformed."""
    if kind == "backends":
        items = list(result or [])
        for b in items:
            missing = [a for a in _BACKEND_ATTRS if not hasattr(type(b), a) and not hasattr(b, a)]
            if missing:
                raise TypeError(f"backend {b!r} lacks {', '.join(missing)}")
        return [(str(b.name).lower(), b) for b in items]
    if not hasattr(result, "items"):
        raise TypeError(f"expected a mapping of name to factory, got {type(result).__name__}")
    out = []
    for name, factory in result.items():
        if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
            raise TypeError(f"{kind[:-1]} name {name!r} is not a lower-case identifier")
        if not callable(factory):
            raise TypeError(f"{kind[:-1]} {name!r}: factory {factory!r} is not callable")
        out.append((name, factory))
    return out


_lock = threading.Lock()
_registry: Registry | None = None
_building = threading.local()


def registry() -> Registry:
    """The process-wide registry, built on first use.

    A plugin that calls back into mlcore while the registry is being built (at import or in
    a hook) gets :class:`PluginLoadError` instead of a deadlock, and is reported as failed.
    """
    global _registry
    if _registry is None:
        if getattr(_building, "active", False):
            raise PluginLoadError(
                "A plugin called mlcore while mlcore's plugins were being loaded. Plugins "
                "must do nothing at import time or in their hooks but return what they provide.")
        with _lock:
            if _registry is None:
                _building.active = True
                try:
                    reg = Registry()
                    reg.load()
                finally:
                    _building.active = False
                _registry = reg
    return _registry


def reset() -> None:
    """Forget the registry so the next use rebuilds it (after changing env controls)."""
    global _registry
    with _lock:
        _registry = None


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy ``PluginManager`` (for tools that want to inspect hooks)."""
    return registry().pm


def make(kind: str, name: str, params: dict[str, Any]) -> Any:
    """Build a registered activation or loss; unknown parameters give a clear error."""
    from .errors import InvalidParameterError

    factory: Callable[..., Any] = registry().get(kind, name)
    try:
        return factory(**params)
    except TypeError as exc:
        import inspect

        try:
            accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
        except (TypeError, ValueError):
            accepted = []
        if any(p not in accepted for p in params):
            bad = ", ".join(repr(p) for p in params if p not in accepted)
            raise InvalidParameterError(
                f"{kind[:-1].capitalize()} {name!r} got unknown parameter {bad}. "
                f"Accepted: {', '.join(accepted) or 'none'}.",
                name,
            ) from exc
        raise


def kernel(name: str, xp: Any) -> Callable[..., Any] | None:
    """The fused kernel ``name`` a plugin provides for namespace ``xp``, or None (use the
    plain Array API version); see :func:`mlcore.hookspecs.mlcore_kernel`. Ask once, when
    the object that uses it is built."""
    try:
        result = registry().pm.hook.mlcore_kernel(name=name, xp=xp)
    except Exception as exc:  # noqa: BLE001 - a broken kernel plugin must not stop training
        warnings.warn(f"mlcore kernel {name!r} failed to load ({exc!r}); using the plain Array "
                      f"API version.", PluginWarning, stacklevel=3)
        return None
    return result if callable(result) else None
