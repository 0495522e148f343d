"""The plugin manager: entry points one at a time, failures isolated, env controls."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import mlcore
from mlcore.errors import PluginConflictError, PluginLoadError, PluginWarning, UnknownNameError
from mlcore.hookspecs import hookimpl
from mlcore.plugins import kernel

GOOD = """
import pluggy
hookimpl = pluggy.HookimplMarker("mlcore")

class Double:
    def forward(self, x):
        return x * 2
    def backward(self, x, y, dy):
        return dy * 2

@hookimpl
def mlcore_activations():
    return {"double": Double}
"""


def _records(plugins: Any) -> dict[str, Any]:
    return {r.name: r for r in plugins.registry().records}


def test_builtins_registered_through_hooks(fresh_registry: Any) -> None:
    recs = _records(fresh_registry)
    assert recs["mlcore.activations"].builtin and recs["mlcore.losses"].builtin
    assert recs["numpy"].distribution == "mlcore-numpy"
    assert recs["numpy"].provides == {"backends": ["numpy"]}


def test_failing_plugin_is_reported_and_others_load(make_dist: Any) -> None:
    make_dist("mlcore-broken", "broken_plugin", "raise ImportError('boom: missing dep')")
    make_dist("mlcore-good", "good_plugin", GOOD)
    with pytest.warns(PluginWarning, match=r"'broken_plugin' \(mlcore-broken 1.0\) import failed"):
        recs = _records(mlcore.plugins)
    assert recs["broken_plugin"].status == "failed"
    assert "boom: missing dep" in recs["broken_plugin"].error
    assert recs["good_plugin"].status == "loaded"
    assert "double" in mlcore.activation_names()
    assert mlcore.get_backend("numpy").name == "numpy"


def test_strict_plugins_reraise(make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_STRICT_PLUGINS", "1")
    make_dist("mlcore-broken", "broken_plugin2", "raise RuntimeError('kaboom')")
    with pytest.raises(PluginLoadError, match="mlcore-broken 1.0.*kaboom"):
        mlcore.plugins.registry()


def test_plugin_raising_in_hook_is_isolated(make_dist: Any) -> None:
    make_dist("mlcore-hookfail", "hookfail_plugin", """
        import pluggy
        hookimpl = pluggy.HookimplMarker("mlcore")
        @hookimpl
        def mlcore_losses():
            raise ValueError("registration exploded")
    """)
    with pytest.warns(PluginWarning, match="hook mlcore_losses failed.*registration exploded"):
        recs = _records(mlcore.plugins)
    assert recs["hookfail_plugin"].status == "failed"


def test_malformed_result_is_isolated(make_dist: Any) -> None:
    make_dist("mlcore-malformed", "malformed_plugin", """
        import pluggy
        hookimpl = pluggy.HookimplMarker("mlcore")
        @hookimpl
        def mlcore_activations():
            return {"Bad Name": 3}
    """)
    with pytest.warns(PluginWarning, match="not a lower-case identifier"):
        mlcore.plugins.registry()
    assert "Bad Name" not in mlcore.activation_names()


def test_disable_autoload(make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    make_dist("mlcore-good", "good_plugin3", GOOD)
    recs = _records(mlcore.plugins)
    assert recs["good_plugin3"].status == "disabled"
    assert "double" not in mlcore.activation_names()
    assert mlcore.get_backend("numpy").name == "numpy"  # first-party backends still load


@pytest.mark.parametrize(("allow", "loaded"), [("", False), ("mlcore-good", True),
                                                ("good_plugin4", True), ("other", False)])
def test_allow_list(make_dist: Any, monkeypatch: pytest.MonkeyPatch, allow: str,
                    loaded: bool) -> None:
    monkeypatch.setenv("MLCORE_PLUGINS", allow)
    make_dist("mlcore-good", "good_plugin4", GOOD)
    assert ("double" in mlcore.activation_names()) is loaded


def test_name_claimed_twice_names_both(make_dist: Any) -> None:
    make_dist("mlcore-one", "one_plugin", GOOD)
    make_dist("mlcore-two", "two_plugin", GOOD)
    with pytest.warns(PluginWarning, match="clash: activation 'double'.*mlcore-one.*mlcore-two"):
        mlcore.plugins.registry()
    with pytest.raises(PluginConflictError, match="mlcore-one 1.0.*mlcore-two 1.0"):
        mlcore.activation("double")


def test_unknown_activation_lists_registered(fresh_registry: Any) -> None:
    with pytest.raises(UnknownNameError, match="Unknown activation 'nope'. Registered:"):
        mlcore.activation("nope")


def test_unknown_parameter(make_dist: Any) -> None:
    make_dist("mlcore-good", "good_plugin5", GOOD)
    with pytest.raises(mlcore.InvalidParameterError, match="unknown parameter 'alpha'"):
        mlcore.activation("double", alpha=3)


def test_named_backend_whose_plugin_failed_is_an_error(make_dist: Any) -> None:
    make_dist("mlcore-fancy", "fancy", "raise ImportError('no fancy lib')")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        with pytest.raises(mlcore.BackendNotFoundError,
                           match=r"plugin 'fancy' \(mlcore-fancy 1.0\).*no fancy"):
            mlcore.get_backend("fancy")


def test_registry_is_lazy() -> None:
    import subprocess
    import sys

    code = ("import mlcore, mlcore.plugins as p, sys; "
            "assert p._registry is None; assert 'numpy' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_plugin_calling_mlcore_at_import_fails_cleanly(make_dist: Any) -> None:
    make_dist("mlcore-reentrant", "reentrant_plugin", "import mlcore\nmlcore.activation('relu')\n")
    with pytest.warns(PluginWarning, match="reentrant_plugin.*called mlcore while"):
        recs = _records(mlcore.plugins)
    assert recs["reentrant_plugin"].status == "failed"
    assert "relu" in mlcore.activation_names()


# -- the kernel hook ------------------------------------------------------------------
def test_only_numpy_and_torch_offer_the_fused_updates(backend: Any) -> None:
    for name in ("adam_update", "sgd_update"):
        found = kernel(name, backend.xp)
        assert (found is not None) == (backend.name in ("numpy", "torch"))
    assert kernel("no_such_kernel", backend.xp) is None


class _BrokenKernels:
    @hookimpl
    def mlcore_kernel(self, name: str, xp: Any) -> Any:
        raise RuntimeError("kernel plugin bug")


def test_a_failing_kernel_hook_warns_and_falls_back(fresh_registry: Any) -> None:
    pm = fresh_registry.registry().pm
    pm.register(_BrokenKernels(), name="broken-kernels")
    with pytest.warns(PluginWarning, match="plain Array API"):
        assert kernel("adam_update", mlcore.get_backend("numpy").xp) is None
