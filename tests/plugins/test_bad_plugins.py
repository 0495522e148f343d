"""Plugins written from docs/plugins.md that misbehave: claiming built-in names, clashing,
exiting the process, calling mlcore from threads while loading; and the controls."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import pytest
from click.testing import CliRunner

import mlcore
from mlcore.cli import main
from mlcore.errors import PluginConflictError, PluginLoadError, PluginWarning, UnknownNameError

ACTIVATION = """
import pluggy
hookimpl = pluggy.HookimplMarker("mlcore")

class Act:
    def forward(self, x):
        return x * 2
    def backward(self, x, y, dy):
        return dy * 2

@hookimpl
def mlcore_activations():
    return {{"{name}": Act}}
"""


def _records(plugins: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return {r.name: r for r in plugins.inspect().records}


def test_a_plugin_cannot_replace_a_builtin(make_dist: Any) -> None:
    make_dist("mlcore-evil", "evil_relu", ACTIVATION.format(name="relu"))
    with pytest.warns(PluginWarning, match=r"'evil_relu'.*claims the built-in activation 'relu'"):
        rec = {r.name: r for r in mlcore.plugins.registry().records}["evil_relu"]
    assert rec.status == "failed" and "built-in" in rec.error
    assert type(mlcore.activation("relu")).__module__ == "mlcore.activations"
    mlcore.MLP([2, 4, 1], seed=0).predict([[1.0, 2.0]])


def test_a_plugin_cannot_replace_a_first_party_backend(make_dist: Any) -> None:
    make_dist("mlcore-fake-numpy", "aaa_fake", """
        import pluggy
        from mlcore_numpy import NumpyBackend
        hookimpl = pluggy.HookimplMarker("mlcore")
        @hookimpl
        def mlcore_backends():
            return [NumpyBackend()]
    """)
    recs = _records(mlcore.plugins)
    fake = recs["aaa_fake"]
    assert fake.status == "failed" and "built-in backend 'numpy'" in fake.error
    assert mlcore.get_backend("numpy").name == "numpy"


def test_a_clash_is_found_at_load_and_shown(make_dist: Any) -> None:
    make_dist("mlcore-one", "one_plugin", ACTIVATION.format(name="twice"))
    make_dist("mlcore-two", "two_plugin", ACTIVATION.format(name="twice"))
    with pytest.warns(PluginWarning, match="clash: activation 'twice'"):
        recs = {r.name: r for r in mlcore.plugins.registry().records}
    both = "activation 'twice' is provided by 'one_plugin' (mlcore-one 1.0) and 'two_plugin'"
    assert both in recs["one_plugin"].conflicts[0] and both in recs["two_plugin"].conflicts[0]
    with pytest.raises(PluginConflictError, match="MLCORE_DISABLE_PLUGINS"):
        mlcore.activation("twice")
    out = CliRunner().invoke(main, ["plugins"]).output
    assert both in out


def test_strict_mode_fails_on_a_clash_but_still_lists(make_dist: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_STRICT_PLUGINS", "1")
    make_dist("mlcore-one", "one_plugin", ACTIVATION.format(name="twice"))
    make_dist("mlcore-two", "two_plugin", ACTIVATION.format(name="twice"))
    make_dist("mlcore-broken", "broken_plugin", "raise ImportError('no dep')")
    with pytest.raises(PluginLoadError, match="clash: activation 'twice'"):
        mlcore.activation("relu")
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 1
    for text in ("mlcore.activations", "numpy", "one_plugin", "two_plugin",
                 "broken_plugin", "failed", "ImportError: no dep", "STRICT"):
        assert text in result.output
    info = CliRunner().invoke(main, ["info"])
    assert "two_plugin" in info.output and info.exit_code == 1


@pytest.mark.parametrize("deny", ["evil_exit", "mlcore-evil-exit", " Mlcore_Evil_Exit ",
                                  "other,evil_exit"])
def test_deny_list(make_dist: Any, monkeypatch: pytest.MonkeyPatch, deny: str) -> None:
    monkeypatch.setenv("MLCORE_DISABLE_PLUGINS", deny)
    make_dist("mlcore-evil-exit", "evil_exit", "import sys\nsys.exit(3)\n")
    make_dist("mlcore-good", "good_one", ACTIVATION.format(name="twice"))
    recs = _records(mlcore.plugins)
    assert recs["evil_exit"].status == "disabled"
    assert "MLCORE_DISABLE_PLUGINS" in recs["evil_exit"].error
    assert recs["good_one"].status == "loaded"


@pytest.mark.parametrize("body", ["import sys\nsys.exit(3)\n", "raise SystemExit('bye')\n",
                                  "raise GeneratorExit()\n", """
import sys, pluggy
hookimpl = pluggy.HookimplMarker("mlcore")
@hookimpl
def mlcore_losses():
    sys.exit(4)
"""])
def test_system_exit_in_a_plugin_is_contained(make_dist: Any, body: str) -> None:
    make_dist("mlcore-exit", "exit_plugin", body)
    with pytest.warns(PluginWarning, match="'exit_plugin'.*failed: (SystemExit|GeneratorExit)"):
        names = mlcore.loss_names()
    assert "mse" in names and _records(mlcore.plugins)["exit_plugin"].status == "failed"


def test_keyboard_interrupt_is_not_swallowed(make_dist: Any) -> None:
    make_dist("mlcore-ctrlc", "ctrlc_plugin", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        mlcore.loss_names()
    mlcore.plugins.reset()


def test_a_plugin_waiting_on_a_thread_that_calls_mlcore_does_not_deadlock(
        make_dist: Any) -> None:
    make_dist("mlcore-threaded", "threaded_plugin", """
        import threading
        import mlcore
        result = {}
        def work():
            try:
                result["names"] = mlcore.loss_names()
            except Exception as exc:
                result["error"] = exc
        t = threading.Thread(target=work)
        t.start()
        t.join(20)
        STUCK = t.is_alive()
    """)
    import sys

    _records(mlcore.plugins)
    module = sys.modules["threaded_plugin"]
    assert module.STUCK is False
    assert isinstance(module.result["error"], PluginLoadError)
    assert "mse" in mlcore.loss_names()


def test_another_thread_waits_for_loading_and_sees_everything(make_dist: Any) -> None:
    make_dist("mlcore-slow", "slow_plugin", "import time\ntime.sleep(0.4)\n"
              + ACTIVATION.format(name="slowly"))
    seen: dict[str, Any] = {}
    started = threading.Event()

    def worker() -> None:
        started.wait(5)
        seen["names"] = mlcore.activation_names()

    t = threading.Thread(target=worker)
    t.start()
    loader = threading.Thread(target=lambda: (started.set(), mlcore.activation_names()))
    loader.start()
    loader.join(10)
    t.join(10)
    assert "slowly" in seen["names"]


def test_unknown_name_says_a_control_switched_its_plugin_off(
        make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_PLUGINS", "")
    make_dist("mlcore-good", "good_two", ACTIVATION.format(name="twice"))
    with pytest.raises(UnknownNameError, match=r"Unknown activation 'twice'.*not in use.*"
                                               r"'good_two' \(mlcore-good 1.0\), not loaded: "
                                               r"not in MLCORE_PLUGINS"):
        mlcore.activation("twice")


def test_unknown_backend_says_it_was_switched_off(fresh_registry: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_DISABLE_PLUGINS", "strict")
    fresh_registry.reset()
    with pytest.raises(mlcore.BackendNotFoundError, match="MLCORE_DISABLE_PLUGINS"):
        mlcore.get_backend("strict")


@pytest.mark.parametrize(("kind", "name"), [("activation", " ReLU "), ("loss", "MSE"),
                                            ("loss", " Cross_Entropy"), ("backend", " NumPy ")])
def test_names_are_normalised_everywhere(kind: str, name: str) -> None:
    if kind == "backend":
        assert mlcore.get_backend(name).name == "numpy"
        with mlcore.use_backend(name):
            pass
    else:
        getattr(mlcore, kind)(name)
    assert mlcore.MLP([2, 3, 2], activation=" TanH ", output_activation="Softmax",
                      seed=0).config()["activation"] == "tanh"


def test_a_typo_in_the_plugin_controls_is_reported(fresh_registry: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_DISABLE_PLUGINS", "strictt")
    fresh_registry.reset()
    with pytest.warns(PluginWarning, match=r"MLCORE_DISABLE_PLUGINS names 'strictt'.*"
                                           r"Did you mean 'strict'\?"):
        mlcore.backend_names()
