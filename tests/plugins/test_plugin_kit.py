"""Issue 25's blind spots, each a planted bug the kit now fails with a clear message; layers
as a plugin kind (registration, refusal of unregistered layers by every saving path); a
loss's value checks outside the compiled step; the kit on JAX with 64-bit mode off."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import warnings
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.callbacks import ModelCheckpoint
from mlcore.errors import CompiledStepWarning, InvalidParameterError, InvalidValueError
from mlcore.plugin import LayerBase, LossBase, Metric, hookimpl, values_checked
from mlcore.plugins import PluginRecord, registry
from mlcore.testing import check_layer, check_loss, check_metric

# -- losses: the reduction contract -------------------------------------------------------------


class _SumNoReduction:
    """A "mean" that is a sum, and no reduction parameter."""

    name = "sum_no_reduction"

    def forward(self, pred: Any, target: Any) -> Any:
        return ((pred - target) ** 2).sum()

    def backward(self, pred: Any, target: Any) -> Any:
        return 2.0 * (pred - target)


class _IgnoresReduction(LossBase):
    name = "ignores_reduction"

    def values(self, xp: Any, pred: Any, target: Any) -> Any:
        return xp.sum((pred - target) ** 2, axis=1)

    def gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        return 2.0 * (pred - target)

    def forward_unchecked(self, xp: Any, pred: Any, target: Any) -> Any:
        return xp.sum(self.values(xp, pred, target))  # the reduction ignored

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)


def test_a_loss_without_reduction_is_refused() -> None:
    with pytest.raises(AssertionError, match="takes no reduction parameter"):
        check_loss(_SumNoReduction, "numpy")


def test_a_loss_ignoring_reduction_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"reduction='none' gives shape \(\)"):
        check_loss(_IgnoresReduction, "numpy", checks=["reductions"])


# -- metrics: fed what fit feeds ------------------------------------------------------------------


class _ComparesLabels(Metric):
    """Counts y_true > 0.5: fine on float labels, a TypeError on strict's bool labels."""

    name = "compares_labels"

    def update(self, state: Any, y_pred: Any, y_true: Any) -> Any:
        from array_api_compat import array_namespace

        xp = array_namespace(y_pred)
        hits = xp.sum(xp.astype((y_pred > 0.5) == (y_true > 0.5), y_pred.dtype))
        return hits if state is None else state + hits

    def result(self, state: Any) -> float:
        return float(state)


def test_a_metric_that_fails_on_fits_labels_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"fed what fit feeds with binary_cross_entropy.*"
                                             r"y_true \(N, 1\) bool"):
        check_metric(_ComparesLabels, "strict")


def test_multiclass_metrics_get_integer_labels() -> None:
    check_metric("accuracy", "strict", task="multiclass")
    with pytest.raises(ValueError, match="Unknown task"):
        check_metric("accuracy", "numpy", task="ranking")


# -- a loss's value checks run once, outside the compiled step --------------------------------


class _Counts(LossBase):
    """Squared error on counts: targets must be >= 0 (a value check)."""

    name = "counts_se"
    seen = 0

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def check_values(self, xp: Any, pred: Any, target: Any) -> None:
        type(self).seen += 1
        if float(xp.min(target)) < 0.0:  # reads a value: never inside a compiled step
            raise InvalidValueError("Loss 'counts_se' expected targets >= 0.", target)

    def values(self, xp: Any, pred: Any, target: Any) -> Any:
        return xp.mean((pred - target) ** 2, axis=1)

    def gradient(self, xp: Any, pred: Any, target: Any) -> Any:
        return 2.0 * (pred - target) / pred.shape[1]


def test_value_checks_run_once_outside_the_compiled_step(backend: Any) -> None:
    from mlcore.testing.training import _Identity, identity_compiler

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 3)), rng.uniform(0.0, 3.0, size=(32, 1))
    with identity_compiler(None if backend.name == "jax" else _Identity()):
        model = mlcore.MLP([3, 4, 1], seed=0)
        _Counts.seen = 0
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompiledStepWarning)
            model.fit(X, y, loss=_Counts(), epochs=2, batch_size=8, verbose=False,
                      jit_compile=True)
        assert _Counts.seen == 1  # the first batch, eagerly; 8 compiled steps skip it
        with pytest.raises(InvalidValueError, match="targets >= 0"):
            mlcore.MLP([3, 4, 1], seed=0).fit(X, -y, loss=_Counts(), epochs=1,
                                              verbose=False, jit_compile=True)
    assert values_checked()


# -- layers: planted bugs the layer kit fails ---------------------------------------------------


class _Scale(LayerBase):
    """Y = X · w (one weight per feature), with a switchable planted bug."""

    name = "KitScale"
    bug = ""

    def __init__(self, features: int = 3, scale: float = 1.0, *, seed: int | None = 0,
                 dtype: Any = None) -> None:
        super().__init__(dtype=dtype)
        self.in_features = self.features = features
        self.seed, self.scale = seed, scale
        self.weight = self.add_parameter("weight", (features,))
        rng = np.random.default_rng(seed)
        self.weight.value = self.backend.asarray(
            rng.normal(size=features).astype(self.dtype_name))

    def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> Any:
        from array_api_compat import array_namespace

        xp = xp or array_namespace(X)
        w = self.weight.value
        bug = self.bug
        if bug == "upcast":
            X = xp.astype(X, xp.float64)
        if bug == "host_read" and float(xp.max(X)) > 1e9:
            X = X * 0.0
        Y = (X * w) * self.scale
        if bug == "eval_noise" and not self.training:
            Y = Y + self.backend.asarray(np.random.default_rng().normal(size=Y.shape)
                                         .astype(str(Y.dtype).split(".")[-1]))

        def backprop(dY: Any) -> Any:
            g = xp.sum(dY * X, axis=0) * self.scale
            if bug == "double_grad":
                g = 2.0 * g
            if bug == "assigns_grad":
                self.weight.grad = g
            else:
                self.weight.accumulate(g)
            if bug == "writes_dy":
                dY *= 2.0
            return dY * w * self.scale if input_grad else None

        return Y, backprop

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"features": self.features, "seed": self.seed,
                               "dtype": self.dtype_name}
        if self.bug != "forgets_config":
            cfg["scale"] = self.scale
        return cfg


def _planted(bug: str) -> type[_Scale]:
    return type(f"Scale_{bug}", (_Scale,), {"bug": bug, "name": "KitScale"})


class _ScalePlugin:
    @staticmethod
    @hookimpl
    def mlcore_layers() -> dict[str, Any]:
        return {"KitScale": _Scale}


@pytest.fixture
def scale_registered() -> Any:
    """_Scale registered as a plugin's layer type for the test (the registry's own path)."""
    reg = registry()
    rec = PluginRecord("kit-scale", "kit-scale-test", "0")
    reg._add(_ScalePlugin, rec, protect=False)
    assert rec.status == "loaded", rec.error
    yield _ScalePlugin
    reg.pm.unregister(_ScalePlugin)
    del reg._entries["layers"]["KitScale"]
    reg.records.remove(rec)


def test_a_correct_layer_passes(scale_registered: Any) -> None:
    check_layer(_Scale, "numpy")


@pytest.mark.parametrize(("bug", "check", "message"), [
    ("double_grad", "gradient", r"gradient of 'weight' vs central finite differences"),
    ("assigns_grad", "gradient", r"gradients must accumulate"),
    ("writes_dy", "purity", r"dY after backprop"),
    ("upcast", "dtypes", r"forward\(float32\) has dtype float64"),
    ("eval_noise", "modes", r"two forward passes in inference mode differ"),
    ("forgets_config", "state", r"get_config must hold every constructor argument"),
    ("unregistered", "state", r"register the class under that name"),
])
def test_planted_layer_bugs_fail_the_kit(scale_registered: Any, bug: str, check: str,
                                         message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if bug == "unregistered":  # a subclass, its config naming its base's registered type
        cls = _planted(bug)
    else:
        monkeypatch.setattr(_Scale, "bug", bug)
        cls = _Scale
    with pytest.raises(AssertionError, match=message):
        check_layer(cls, "numpy", params={"scale": 2.0}, checks=[check])


def test_a_layer_reading_values_fails_compiled_on_jax(scale_registered: Any) -> None:
    b = registry().backends.get("jax")
    if b is None or not b.is_available():
        pytest.skip("jax is not usable here")
    with pytest.raises(AssertionError, match="compiled training step failed"):
        check_layer(_planted("host_read"), "jax", checks=["compiled"])


def test_an_unseeded_layer_fails_seeds(scale_registered: Any) -> None:
    with pytest.raises(AssertionError, match="built with the same seed"):
        check_layer(_Scale, "numpy", params={"seed": None}, checks=["seeds"])


# -- layers: saving refuses what it could not rebuild ---------------------------------------------


class _Unregistered(LayerBase):
    name = "NobodyRegistersThis"

    def forward(self, X: Any, xp: Any = None, *, input_grad: bool = True) -> Any:
        return X, (lambda dY: dY if input_grad else None)


def test_every_saving_path_refuses_an_unregistered_layer(tmp_path: pathlib.Path) -> None:
    model = mlcore.Sequential([mlcore.Dense(2, 2, seed=0), _Unregistered()])
    said = r"_Unregistered is a custom layer with type 'NobodyRegistersThis'.*mlcore_layers hook"
    with pytest.raises(InvalidParameterError, match="Cannot save the model.*" + said):
        model.save(tmp_path / "m.safetensors")
    with pytest.raises(InvalidParameterError, match="Cannot save a checkpoint.*" + said):
        mlcore.save_checkpoint(tmp_path / "c.safetensors", model,
                               mlcore.SGD(model.parameters()), epoch=0)
    ck = ModelCheckpoint(str(tmp_path / "ck.safetensors"), monitor="loss")
    with pytest.raises(InvalidParameterError, match="ModelCheckpoint cannot save.*" + said):
        model.fit(np.zeros((4, 2)), np.zeros((4, 2)), loss="mse", epochs=1, verbose=False,
                  callbacks=[ck])
    assert list(tmp_path.iterdir()) == []


def test_a_subclass_of_a_builtin_is_not_saved_as_the_builtin(tmp_path: pathlib.Path) -> None:
    class MyDense(mlcore.Dense):
        pass

    with pytest.raises(InvalidParameterError, match="registered to Dense"):
        mlcore.Sequential([MyDense(2, 2, seed=0)]).save(tmp_path / "m.safetensors")


def test_builtin_layer_types_come_through_the_hook() -> None:
    rec = next(r for r in registry().records if r.name == "mlcore.layers.registry")
    assert rec.builtin and rec.provides["layers"] == ["Dense", "PReLU", "Activation",
                                                      "Dropout", "LayerNorm", "BatchNorm"]


# -- the kit on JAX with 64-bit mode off ------------------------------------------------------


def test_the_kit_stands_alone_on_jax_without_x64(tmp_path: pathlib.Path) -> None:
    b = registry().backends.get("jax")
    if b is None or not b.is_available():
        pytest.skip("jax is not usable here")
    script = textwrap.dedent("""
        import warnings
        import mlcore
        from mlcore.testing import (check_activation, check_layer, check_loss,
                                    check_metric, check_optimizer)
        from mlcore_layers_extra import GatedDense
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            check_activation("tanh", "jax")
            check_loss("mse", "jax")
            check_metric("accuracy", "jax")
            check_optimizer("adam", "jax", lr=0.05)
            check_layer(GatedDense, "jax", params={"in_features": 3, "out_features": 2,
                                                   "seed": 0})
        print([str(w.message)[:60] for w in seen if "needs float64" in str(w.message)])
    """)
    env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[activation tanh on jax] needs float64" in out.stdout
    assert "[layer GatedDense on jax] gradient: needs float64" in out.stdout
