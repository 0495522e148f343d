"""The real plugin distributions (plugins/activations-extra, plugins/losses-extra), installed
by pip and found only through their entry points: discovery, conflicts and isolation with
them loaded. Their own numerics are tested in plugins/*/tests."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from click.testing import CliRunner

import mlcore
from mlcore.cli import main
from mlcore.errors import PluginConflictError, PluginWarning


# -- discovery, conflicts and isolation with the real distributions loaded ----------------------
def _plugins_json() -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_cli_lists_the_extras_with_version_and_provides(fresh_registry: Any) -> None:
    rows = {r["distribution"]: r for r in _plugins_json()}
    acts, losses = rows["mlcore-activations-extra"], rows["mlcore-losses-extra"]
    assert (acts["version"], acts["status"], losses["version"]) == ("0.1.0", "loaded", "0.1.0")
    assert acts["provides"]["activations"] == ["gelu", "silu", "swish", "elu", "selu",
                                               "softplus", "mish", "hard_sigmoid"]
    assert "poisson_nll" in losses["provides"]["losses"]
    text = CliRunner().invoke(main, ["info"]).output
    assert "mlcore-activations-extra 0.1.0    loaded - activations: gelu, silu" in text


def test_name_claimed_by_a_second_distribution(make_dist: Any) -> None:
    make_dist("mlcore-gelu-clash", "gelu_clash", """
        import pluggy
        hookimpl = pluggy.HookimplMarker("mlcore")

        class Gelu:
            def forward(self, x):
                return x
            def backward(self, x, y, dy):
                return dy

        @hookimpl
        def mlcore_activations():
            return {"gelu": Gelu}
    """)
    with pytest.warns(PluginWarning, match="clash: activation 'gelu'"):  # found at load
        mlcore.plugins.registry()
    with pytest.raises(PluginConflictError, match=r"'gelu' is provided by 'activations_extra' "
                       r"\(mlcore-activations-extra 0.1.0\) and 'gelu_clash' "
                       r"\(mlcore-gelu-clash 1.0\)"):
        mlcore.activation("gelu")
    assert mlcore.activation("mish") is not None  # the other names are unaffected
    owners = [r.distribution for _, r in mlcore.plugins.registry().providers("activations",
                                                                            "gelu")]
    assert owners == ["mlcore-activations-extra", "mlcore-gelu-clash"]  # the kit checks each


@pytest.mark.parametrize(("source", "error"), [
    ("raise RuntimeError('registration exploded')", "import failed: RuntimeError"),
    ("import pluggy\n@pluggy.HookimplMarker('mlcore')\ndef mlcore_losses():\n"
     "    return ['not', 'a', 'mapping']\n", "hook mlcore_losses failed: TypeError: expected a "
     "mapping"),
])
def test_broken_plugin_is_isolated_and_reported(make_dist: Any, source: str, error: str) -> None:
    make_dist("mlcore-broken", "broken_extra", source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        rows = {r["distribution"]: r for r in _plugins_json()}
    assert any(error in str(w.message) for w in caught)
    assert rows["mlcore-broken"]["status"] == "failed"
    assert error in rows["mlcore-broken"]["error"]
    assert rows["mlcore-losses-extra"]["status"] == "loaded"
    assert "huber" in mlcore.loss_names() and "gelu" in mlcore.activation_names()
