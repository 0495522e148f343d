"""The real plugin distributions (plugins/activations-extra, plugins/losses-extra), installed
by pip and found only through their entry points: values and gradients against PyTorch,
the erf they need, their errors, and discovery, conflicts and isolation with them loaded."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import mlcore
from mlcore.cli import main
from mlcore.errors import (
    DTypeError,
    InvalidParameterError,
    InvalidValueError,
    PluginConflictError,
    PluginWarning,
    ShapeError,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

# -- against PyTorch --------------------------------------------------------------------------
# (name, params, torch function of a tensor); the formula ones are where torch has no function.
ACTIVATIONS: list[tuple[str, dict[str, Any], Callable[[Any], Any]]] = [
    ("gelu", {}, lambda t: F.gelu(t)),
    ("gelu", {"approximate": "tanh"}, lambda t: F.gelu(t, approximate="tanh")),
    ("silu", {}, F.silu),
    ("swish", {"beta": 1.7}, lambda t: t * torch.sigmoid(1.7 * t)),
    ("elu", {"alpha": 0.7}, lambda t: F.elu(t, alpha=0.7)),
    ("selu", {}, F.selu),
    ("softplus", {}, F.softplus),
    ("softplus", {"beta": 2.0, "threshold": 15.0}, lambda t: F.softplus(t, 2.0, 15.0)),
    ("mish", {}, F.mish),
    ("hard_sigmoid", {}, F.hardsigmoid),
]

# float32 and float64 tolerances: |ours - torch| <= tol * (1 + |torch|).
TOLERANCE = {"float32": 2e-6, "float64": 1e-13}


def _activation_inputs() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.concatenate([rng.normal(0.0, 3.0, 400), np.linspace(-40.0, 40.0, 161),
                           [-1e4, -1e3, 1e3, 1e4]])


def _agree(ours: np.ndarray, theirs: np.ndarray, dtype: str, what: str,
           atol: float = 0.0) -> None:
    """Where torch is finite, agree within TOLERANCE; everywhere, ours is finite (torch's
    autograd gives NaN for (1 - p_t)**gamma with gamma < 1 at saturated logits; ours 0)."""
    bad = np.flatnonzero(~np.isfinite(ours))
    assert bad.size == 0, f"{what} ({dtype}): not finite at indices {bad[:5]}"
    keep = np.isfinite(theirs)
    ours, theirs = ours[keep], theirs[keep]
    err = np.abs(ours - theirs)
    bound = TOLERANCE[dtype] * (1.0 + np.abs(theirs)) + atol
    worst = int(np.argmax(err - bound))
    assert np.all(err <= bound), (
        f"{what} ({dtype}): max abs error {err.max():.3g}; worst at index {worst}: "
        f"ours {ours[worst]!r}, torch {theirs[worst]!r}")


def _torch_grad(fn: Callable[[Any], Any], host: np.ndarray, dtype: str) -> tuple[Any, Any]:
    t = torch.tensor(host, dtype=getattr(torch, dtype), requires_grad=True)
    out = fn(t)
    out.sum().backward()
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "params", "fn"), ACTIVATIONS,
                         ids=[f"{n}{p or ''}" for n, p, _ in ACTIVATIONS])
def test_activation_matches_torch(backend: Any, dtype: str, name: str,
                                  params: dict[str, Any], fn: Callable[[Any], Any]) -> None:
    x = _activation_inputs().astype(dtype)
    act = mlcore.activation(name, **params)
    xb = backend.asarray(x)
    y = act.forward(xb)
    dx = act.backward(xb, y, backend.asarray(np.ones_like(x)))
    want_y, want_dx = _torch_grad(fn, x, dtype)
    # torch's hardsigmoid gradient uses 1/6 rounded to float32 (error 5e-9) even in float64
    atol = 1e-8 if name == "hard_sigmoid" else 0.0
    _agree(backend.to_numpy(y), want_y, dtype, f"{name} forward")
    _agree(backend.to_numpy(dx), want_dx, dtype, f"{name} gradient", atol=atol)


def _sigmoid_focal(z: Any, t: Any, gamma: float = 2.0, alpha: float | None = 0.25) -> Any:
    """torchvision.ops.sigmoid_focal_loss (reduction='none'), written out in torch."""
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    loss = ce * (1 - (p * t + (1 - p) * (1 - t))) ** gamma
    return loss if alpha is None else (alpha * t + (1 - alpha) * (1 - t)) * loss


def _softmax_focal(z: Any, t: Any, gamma: float = 2.0, alpha: Any = None) -> Any:
    logp = F.log_softmax(z, dim=1)
    y = F.one_hot(t, z.shape[1]).to(z.dtype)
    w = y if alpha is None else y * torch.tensor(alpha, dtype=z.dtype)
    return -(w * (1 - logp.exp()) ** gamma * logp).sum(1)


def _regression(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 2.0, (64, 5)), rng.normal(0.0, 1.0, (64, 5))


def _binary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z = np.concatenate([rng.normal(0.0, 3.0, (60, 5)), np.resize([-1e4, 1e4, -50, 50, 0], (4, 5))])
    return z, rng.integers(0, 2, (64, 5)).astype(float)


def _labels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 3.0, (64, 4)), rng.integers(0, 4, 64)


def _signs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 1.5, (64, 5)), rng.choice([-1.0, 1.0], (64, 5))


def _counts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 1.5, (64, 5)), rng.poisson(3.0, (64, 5)).astype(float)


def _rates(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0.05, 6.0, (64, 5)), rng.poisson(3.0, (64, 5)).astype(float)


# (name, params, data, torch per-element or per-sample function of (pred, target))
LOSSES: list[tuple[str, dict[str, Any], Any, Callable[[Any, Any], Any]]] = [
    ("huber", {}, _regression, lambda p, t: F.huber_loss(p, t, reduction="none")),
    ("huber", {"delta": 0.4}, _regression,
     lambda p, t: F.huber_loss(p, t, reduction="none", delta=0.4)),
    ("binary_focal", {}, _binary, _sigmoid_focal),
    ("binary_focal", {"gamma": 0.5, "alpha": None}, _binary,
     lambda z, t: _sigmoid_focal(z, t, 0.5, None)),
    ("focal", {}, _labels, _softmax_focal),
    ("focal", {"gamma": 0.0}, _labels, lambda z, t: F.cross_entropy(z, t, reduction="none")),
    ("focal", {"gamma": 1.5, "alpha": [0.1, 0.2, 0.3, 0.4]}, _labels,
     lambda z, t: _softmax_focal(z, t, 1.5, [0.1, 0.2, 0.3, 0.4])),
    ("hinge", {}, _signs, lambda p, t: torch.clamp(1 - t * p, min=0)),
    ("squared_hinge", {"margin": 2.0}, _signs, lambda p, t: torch.clamp(2 - t * p, min=0) ** 2),
    ("cosine_similarity", {}, _regression, lambda p, t: 1 - F.cosine_similarity(p, t, dim=1)),
    ("poisson_nll", {}, _counts, lambda p, t: F.poisson_nll_loss(p, t, reduction="none")),
    ("poisson_nll", {"log_input": False, "full": True}, _rates,
     lambda p, t: F.poisson_nll_loss(p, t, log_input=False, full=True, reduction="none")),
]


def _per_sample(values: Any) -> Any:
    return values if values.ndim == 1 else values.mean(dim=tuple(range(1, values.ndim)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "params", "data", "fn"), LOSSES,
                         ids=[f"{n}{p or ''}" for n, p, _, _ in LOSSES])
def test_loss_matches_torch(backend: Any, dtype: str, name: str, params: dict[str, Any],
                            data: Any, fn: Callable[[Any, Any], Any]) -> None:
    pred, target = data(np.random.default_rng(11))
    pred = pred.astype(dtype)
    target = target.astype(dtype) if target.dtype.kind == "f" else target
    tp = torch.tensor(pred, requires_grad=True)
    want = _per_sample(fn(tp, torch.tensor(target)))
    want.mean().backward()
    pb, tb = backend.asarray(pred), backend.asarray(target)
    values = mlcore.loss(name, reduction="none", **params).forward(pb, tb)
    grad = mlcore.loss(name, **params).backward(pb, tb)
    _agree(backend.to_numpy(values), want.detach().numpy(), dtype, f"{name} values")
    _agree(backend.to_numpy(grad).ravel(), tp.grad.numpy().ravel(), dtype, f"{name} gradient")


# -- erf, which the Array API lacks -----------------------------------------------------------
def test_erf_and_erfc_are_accurate(backend: Any) -> None:
    from mlcore_activations_extra import erf, erfc

    x = np.concatenate([np.linspace(-30.0, 30.0, 6001), [-1e4, 1e4, 0.0, 1e-300]])
    want = np.array([math.erf(v) for v in x])
    want_c = np.array([math.erfc(v) for v in x])
    xp = backend.xp
    got = backend.to_numpy(erf(xp, backend.asarray(x)))
    got_c = backend.to_numpy(erfc(xp, backend.asarray(x)))
    assert np.max(np.abs(got - want)) <= 1e-15
    normal = want_c > 1e-300  # erfc's relative error, down to float64's underflow
    assert np.max(np.abs(got_c - want_c)[normal] / want_c[normal]) <= 1e-14
    got32 = backend.to_numpy(erf(xp, backend.asarray(x.astype(np.float32))))
    assert got32.dtype == np.float32
    assert np.max(np.abs(got32 - np.array([math.erf(v) for v in x.astype(np.float32)]))) <= 1e-6


# -- parameters and errors ----------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "name", "params", "error", "match"), [
    ("activation", "elu", {"alhpa": 0.5}, InvalidParameterError,
     "Activation 'elu' got unknown parameter 'alhpa'. Accepted: alpha."),
    ("activation", "gelu", {"approximate": "erf"}, InvalidParameterError, "'none' or 'tanh'"),
    ("activation", "softplus", {"beta": 0.0}, InvalidParameterError, "beta must be a positive"),
    ("loss", "huber", {"delta": -1}, InvalidParameterError, "delta must be .* greater than 0"),
    ("loss", "focal", {"gamma": -2}, InvalidParameterError, "gamma must be >= 0"),
    ("loss", "poisson_nll", {"log_input": "yes"}, InvalidParameterError, "True or False"),
    ("loss", "hinge", {"reduction": "avg"}, InvalidParameterError, "mean, sum, none"),
])
def test_bad_parameters(kind: str, name: str, params: dict[str, Any], error: type,
                        match: str) -> None:
    build = mlcore.activation if kind == "activation" else mlcore.loss
    with pytest.raises(error, match=match):
        build(name, **params)


def test_parameters_are_keyword_only() -> None:
    from mlcore_activations_extra import ELU

    with pytest.raises(TypeError, match="positional"):
        ELU(0.5)  # type: ignore[misc]


def test_input_errors(xp: Any) -> None:
    pred, target = xp.zeros((4, 3)), xp.zeros((4, 2))
    with pytest.raises(ShapeError, match=r"pred \(4, 3\) and target \(4, 2\)"):
        mlcore.loss("huber").forward(pred, target)
    with pytest.raises(ShapeError, match=r"pred has 4 samples but target has 3 labels"):
        mlcore.loss("focal").backward(pred, xp.asarray([0, 1, 2]))
    with pytest.raises(InvalidValueError, match=r"class indices must lie in \[0, 2\]"):
        mlcore.loss("focal").forward(pred, xp.asarray([0, 1, 2, 3]))
    with pytest.raises(DTypeError, match="floating-point"):
        mlcore.activation("gelu").forward(xp.asarray([1, 2, 3]))


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
