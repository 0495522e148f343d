"""What decides whether a plugin loads, and what a plugin's hook may return.

The environment controls (read when the registry is built; ``mlcore.plugins.reset``
rebuilds it), in the order they apply:

``MLCORE_DISABLE_PLUGINS=a,b``
    deny-list of entry-point or distribution names (like pytest's ``-p no:name``); it also
    switches off a first-party backend (``MLCORE_DISABLE_PLUGINS=cupy``).
``MLCORE_DISABLE_PLUGIN_AUTOLOAD=1``
    load no third-party entry points.
``MLCORE_PLUGINS=a,b``
    allow-list of entry-point or distribution names (set but empty: none).
``MLCORE_STRICT_PLUGINS=1``
    any failure or name clash makes every mlcore call raise
    :class:`~mlcore.errors.PluginLoadError`; ``mlcore plugins`` still lists everything.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["FIRST_PARTY", "SINGULAR", "truthy", "norm", "canonical_name", "disabled_reason",
           "validated", "unmatched_controls"]

FIRST_PARTY = frozenset({"mlcore-numpy", "mlcore-strict", "mlcore-cupy", "mlcore-torch",
                         "mlcore-jax"})
SINGULAR = {"backends": "backend", "activations": "activation", "losses": "loss",
            "metrics": "metric", "optimizers": "optimizer", "layers": "layer type"}
"""How each kind of plugin object is named in messages."""


_CE = ("cross_entropy (integer class labels or one-hot rows; with a softmax output, or "
       "cross_entropy(from_logits=True) on raw scores)")
MEANINGS = {
    "losses": {
        "sparse_categorical_crossentropy": _CE, "categorical_crossentropy": _CE,
        "crossentropyloss": _CE, "crossentropy": _CE, "nllloss": _CE, "log_loss": _CE,
        "binary_crossentropy": "binary_cross_entropy",
        "bceloss": "binary_cross_entropy",
        "bcewithlogitsloss": "binary_cross_entropy(from_logits=True), built with "
                             "mlcore.loss('binary_cross_entropy', from_logits=True)",
        "mseloss": "mse", "mean_squared_error": "mse", "squared_error": "mse",
        "l1loss": "mae", "mean_absolute_error": "mae",
        "kldivloss": "kl_divergence", "kld": "kl_divergence", "kullback_leibler_divergence":
            "kl_divergence",
        "huberloss": "huber", "smoothl1loss": "huber",
    },
    "metrics": {
        "sparse_categorical_accuracy": "accuracy", "categorical_accuracy": "accuracy",
        "acc": "accuracy", "roc_auc": "auc", "mean_squared_error": "mse",
        "mean_absolute_error": "mae", "root_mean_squared_error": "rmse",
    },
    "activations": {"logistic": "sigmoid", "linear": "identity", "leakyrelu": "leaky_relu"},
    "optimizers": {"adamw_torch": "adamw"},
}
"""Names other libraries use (Keras, PyTorch, scikit-learn), with what mlcore calls the same
thing: an unknown name suggests by meaning before spelling."""


def meaning_of(kind: str, name: Any) -> str | None:
    """What mlcore calls the thing ``name`` means elsewhere, or None."""
    if not isinstance(name, str):
        return None
    key = canonical_name(name).replace("-", "_").replace(" ", "_")
    table = MEANINGS.get(kind, {})
    return table.get(key) or table.get(key.replace("_", ""))


def truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}


def norm(name: str) -> str:
    """A plugin or distribution name as the controls compare it (``Foo_Bar`` = ``foo-bar``)."""
    return name.strip().lower().replace("_", "-")


def canonical_name(name: Any) -> Any:
    """How every user-facing name is compared (backends, optimisers, initialisers,
    activations, losses): surrounding spaces dropped, lower case. Non-strings pass."""
    return name.strip().lower() if isinstance(name, str) else name


def _listed(var: str) -> set[str] | None:
    value = os.environ.get(var)
    return None if value is None else {norm(a) for a in value.split(",") if a.strip()}


def disabled_reason(ep_name: str, dist: str) -> str:
    """Why the entry point ``ep_name`` of ``dist`` is switched off, or ``""``."""
    names = {norm(ep_name), norm(dist)}
    denied = _listed("MLCORE_DISABLE_PLUGINS")
    if denied and names & denied:
        value = os.environ["MLCORE_DISABLE_PLUGINS"]
        return f"not loaded: listed in MLCORE_DISABLE_PLUGINS={value!r}"
    if norm(dist) in FIRST_PARTY:
        return ""
    if truthy("MLCORE_DISABLE_PLUGIN_AUTOLOAD"):
        return "not loaded: MLCORE_DISABLE_PLUGIN_AUTOLOAD is set"
    allowed = _listed("MLCORE_PLUGINS")
    if allowed is not None and not names & allowed:
        return f"not loaded: not in MLCORE_PLUGINS={os.environ['MLCORE_PLUGINS']!r}"
    return ""


def unmatched_controls(installed: set[str]) -> list[str]:
    """A message for each name in ``MLCORE_DISABLE_PLUGINS`` that no installed plugin or
    distribution has: a typo would otherwise leave the plugin loaded without a word. (A
    name missing from ``MLCORE_PLUGINS`` already shows: looking the plugin's names up says
    it is "not in MLCORE_PLUGINS".)"""
    import difflib

    known = sorted({norm(n) for n in installed})
    out = []
    for var in ("MLCORE_DISABLE_PLUGINS",):
        for name in sorted(_listed(var) or ()):
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            out.append(f"{var} names {name!r}, which is no installed plugin or distribution, "
                       f"so it changes nothing.{hint} Installed: {', '.join(known)}.")
    return out


_BACKEND_ATTRS = ("name", "xp", "device", "asarray", "to_numpy", "synchronize", "rng",
                  "is_available", "unavailable_reason", "owns")


def validated(kind: str, result: Any) -> list[tuple[str, Any]]:
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
        if kind == "layers":
            out.append(_layer_item(name, factory))
            continue
        if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
            raise TypeError(f"{SINGULAR[kind]} name {name!r} is not a lower-case identifier")
        if not callable(factory):
            raise TypeError(f"{SINGULAR[kind]} {name!r}: factory {factory!r} is not callable")
        out.append((name, factory))
    return out


def _layer_item(name: Any, cls: Any) -> tuple[str, Any]:
    """A layer type: an identifier (the class name, any case) and a class with
    ``from_config`` (:class:`mlcore.plugin.LayerBase`)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"layer type name {name!r} is not an identifier")
    if not isinstance(cls, type) or not callable(getattr(cls, "from_config", None)):
        raise TypeError(f"layer type {name!r}: {cls!r} is not a layer class with from_config "
                        f"(subclass mlcore.plugin.LayerBase)")
    return name, cls
