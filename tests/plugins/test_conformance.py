"""The conformance kit (mlcore.testing) run over mlcore's built-ins and the extra plugins,
through its own pytest integration: one test per (activation or loss, backend, check).

Built-ins and plugins pass the same bar. The cases below only declare input domains
(probabilities, class labels, counts) and float64 references written here.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np
import pytest
from plugins_bad import dtype_changer, misc_bad, wrong_gradient

import mlcore
from mlcore.testing import CHECKS, Case, check_activation, check_loss


# -- input domains ----------------------------------------------------------------------------
def _probs(rng: np.random.Generator, shape: tuple[int, int] = (4, 3)) -> np.ndarray:
    return rng.dirichlet(np.ones(shape[1]), shape[0])


def _prob_pred(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0.05, 0.95, (4, 3)), rng.uniform(0.0, 1.0, (4, 3))


def _prob_edges(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pred = np.resize([0.0, 1e-30, 1e-12, 0.5, 1 - 1e-12, 1.0], (4, 3))
    return pred, np.resize([0.0, 1.0, 1.0, 0.0, 0.5], (4, 3))


def _dist_pred(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _probs(rng), _probs(rng)


def _dist_edges(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pred = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1e-30, 0.5, 0.5], [0.2, 0.3, 0.5]])
    return pred, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0, 0, 1.0]])


def _labels(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 2.0, (4, 3)), rng.integers(0, 3, 4)


def _binary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 2.0, (4, 3)), rng.integers(0, 2, (4, 3)).astype(float)


def _signs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 1.5, (4, 3)), rng.choice([-1.0, 1.0], (4, 3))


def _counts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.normal(0.0, 1.0, (4, 3)), rng.poisson(2.0, (4, 3)).astype(float)


def _rates(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0.1, 5.0, (4, 3)), rng.poisson(2.0, (4, 3)).astype(float)


def _log_rate_edges(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # e^pred must fit float32 (pred < 88.7): beyond it the true loss is not representable.
    return np.resize([-1e4, -80.0, -1.0, 0.0, 1.0, 80.0], (4, 3)), _counts(rng)[1]


def _rate_edges(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return np.resize([0.0, 1e-30, 1e-3, 1.0, 1e3, 1e4], (4, 3)), _counts(rng)[1]


BUILTIN_CASES = [
    Case("binary_cross_entropy", inputs=_prob_pred, extremes=_prob_edges),
    Case("binary_cross_entropy", {"from_logits": True}),
    Case("cross_entropy", inputs=_dist_pred, extremes=_dist_edges),
    Case("cross_entropy", {"from_logits": True}, inputs=_labels),
    Case("cross_entropy", {"from_logits": True, "label_smoothing": 0.1}, inputs=_dist_pred),
    Case("kl_divergence", inputs=_dist_pred, extremes=_dist_edges),
]


@pytest.mark.mlcore_conformance("mlcore", cases=BUILTIN_CASES)
def test_builtin_conformance(mlcore_case: Any) -> None:
    mlcore_case.run()


# -- float64 references for the extras, written independently of the plugins ------------------
_erf = np.vectorize(math.erf)


def _sig(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _softplus(x: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    return np.where(beta * x > threshold, x, np.logaddexp(0.0, beta * x) / beta)


def _focal(z: np.ndarray, t: np.ndarray, gamma: float = 2.0, alpha: Any = None) -> np.ndarray:
    y = np.eye(z.shape[1])[t] if t.ndim == 1 else t
    logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(
        1, keepdims=True)
    w = y if alpha is None else y * np.asarray(alpha)
    return -(w * (1 - np.exp(logp)) ** gamma * logp).sum(1)


def _binary_focal(z: np.ndarray, t: np.ndarray, gamma: float = 2.0,
                  alpha: float | None = 0.25) -> np.ndarray:
    p = _sig(z)
    ce = np.logaddexp(0.0, z) - z * t
    loss = ce * (1 - (p * t + (1 - p) * (1 - t))) ** gamma
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss.mean(1)


def _huber(p: np.ndarray, t: np.ndarray, delta: float = 1.0) -> np.ndarray:
    d = np.abs(p - t)
    return np.where(d <= delta, 0.5 * d**2, delta * (d - 0.5 * delta)).mean(1)


def _hinge(p: np.ndarray, t: np.ndarray, margin: float = 1.0, power: int = 1) -> np.ndarray:
    return (np.maximum(0.0, margin - t * p) ** power).mean(1)


def _cosine(p: np.ndarray, t: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    norms = np.maximum(np.linalg.norm(p, axis=1), eps) * np.maximum(np.linalg.norm(t, axis=1), eps)
    return 1 - (p * t).sum(1) / norms


def _poisson(p: np.ndarray, t: np.ndarray, log_input: bool = True, full: bool = False,
             eps: float = 1e-8) -> np.ndarray:
    loss = np.exp(p) - t * p if log_input else p - t * np.log(p + eps)
    if full:
        safe = np.maximum(t, 1.0)
        loss = loss + np.where(t > 1, safe * np.log(safe) - safe + 0.5 * np.log(2 * np.pi * safe),
                               0.0)
    return loss.mean(1)


EXTRA_CASES = [
    Case("gelu", reference=_gelu),
    Case("gelu", {"approximate": "tanh"}, reference=_gelu),
    Case("silu", reference=lambda x: x * _sig(x)),
    Case("swish", {"beta": 1.7}, reference=lambda x, beta: x * _sig(beta * x)),
    Case("elu", {"alpha": 0.7}, reference=_elu),
    Case("selu", reference=lambda x: 1.0507009873554805 * _elu(x, 1.6732632423543772)),
    Case("softplus", reference=_softplus),
    Case("softplus", {"beta": 2.0, "threshold": 5.0}, reference=_softplus),
    Case("mish", reference=lambda x: x * np.tanh(np.logaddexp(0.0, x))),
    Case("hard_sigmoid", reference=lambda x: np.clip(x / 6 + 0.5, 0, 1)),
    Case("huber", inputs=lambda rng: (rng.normal(0, 2, (4, 3)), rng.normal(0, 1, (4, 3))),
         reference=_huber),
    Case("huber", {"delta": 0.3}, reference=_huber),
    Case("binary_focal", inputs=_binary, reference=_binary_focal),
    Case("binary_focal", {"gamma": 0.5, "alpha": None}, reference=_binary_focal),
    Case("focal", inputs=_labels, reference=_focal),
    Case("focal", {"gamma": 1.5, "alpha": [0.2, 0.3, 0.5]}, inputs=_dist_pred,
         extremes=_dist_edges, reference=_focal),
    Case("focal", {"gamma": 0.0}, inputs=_labels, reference=_focal),
    Case("hinge", inputs=_signs, reference=_hinge),
    Case("squared_hinge", {"margin": 2.0}, inputs=_signs,
         reference=lambda p, t, margin: _hinge(p, t, margin, power=2)),
    Case("cosine_similarity", reference=_cosine),
    Case("poisson_nll", inputs=_counts, extremes=_log_rate_edges, reference=_poisson),
    Case("poisson_nll", {"log_input": False, "full": True}, inputs=_rates,
         extremes=_rate_edges, reference=_poisson),
]


@pytest.mark.mlcore_conformance("mlcore-activations-extra", "mlcore-losses-extra",
                                cases=EXTRA_CASES)
def test_extra_conformance(mlcore_case: Any) -> None:
    mlcore_case.run()


# -- the kit catches what it should, and pinpoints it ------------------------------------------
pytest_plugins = ["pytester"]


def _bad(kind: str, factory: Any, failing: str, message: str, also: tuple[str, ...] = (),
         id: str = "") -> Any:
    return pytest.param(kind, factory, failing, message, also, id=id)


BAD = [
    _bad("activation", wrong_gradient.SoftsignWrongGradient, "gradient",
         "backward vs central finite differences", id="wrong-gradient"),
    _bad("activation", dtype_changer.UpcastingTanh, "dtypes",
         "has dtype float64 for float32 input", id="dtype-changing-forward"),
    _bad("activation", misc_bad.NaiveSoftplus, "extremes", "(NaN or infinity)",
         id="overflow"),
    _bad("activation", misc_bad.LooseParams, "contract",
         "unknown keyword parameter was accepted silently", id="accepts-any-parameter"),
    _bad("loss", misc_bad.BroadcastingMSE, "shapes",
         "accepted pred (4, 3) and target (1, 3) silently", id="broadcasts-shapes"),
    _bad("loss", misc_bad.ForgetfulMeanMSE, "reductions",
         "'mean' gradient vs the 'none' gradient / N", also=("gradient",),
         id="mean-gradient-without-1/N"),
]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(("kind", "factory", "failing", "message", "also"), BAD)
def test_kit_pinpoints_the_fault(backend: Any, kind: str, factory: Any, failing: str,
                                 message: str, also: tuple[str, ...]) -> None:
    check = check_activation if kind == "activation" else check_loss
    with pytest.raises(AssertionError, match=rf"on {backend.name}\] {failing}: .*"
                       + re.escape(message)):
        check(factory, backend, checks=[failing])
    check(factory, backend, checks=[c for c in CHECKS if c not in (failing, *also)])


def test_kit_catches_a_fixed_array_library() -> None:
    check_activation(misc_bad.NumpyTanh, "numpy")  # right on NumPy ...
    with pytest.raises(AssertionError, match=r"dtypes: forward\(float32\) is numpy.ndarray, "
                       r"expected a strict array"):
        check_activation(misc_bad.NumpyTanh, "strict")  # ... but not the Array API


def test_kit_checks_a_built_object_and_a_reference(backend: Any) -> None:
    gelu = mlcore.activation("gelu")
    check_activation(gelu, backend, reference=lambda x: x * 0.5 * (1 + _erf(x / math.sqrt(2))))
    with pytest.raises(AssertionError, match=r"reference: forward\(float32\) vs reference"):
        check_activation(gelu, backend, reference=lambda x: x, checks=["reference"])


def test_kit_reports_each_fault_as_its_own_test(make_dist: Any, pytester: Any) -> None:
    make_dist("mlcore-wrong-gradient", "wrong_gradient_plugin",
              "from plugins_bad.wrong_gradient import *\n")
    make_dist("mlcore-dtype-changer", "dtype_changer_plugin",
              "from plugins_bad.dtype_changer import *\n")
    pytester.makepyfile(test_third_party="""
        import pytest

        @pytest.mark.mlcore_conformance("mlcore-wrong-gradient", "mlcore-dtype-changer")
        def test_conformance(mlcore_case):
            mlcore_case.run()
    """)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                                "-p", "no:hypothesispytest")
    backends = [b for b in mlcore.backend_names(available_only=True)
                if b == os.environ.get("MLCORE_BACKEND", b)]
    failed = sorted(line.split("::")[1].split(" ")[0] for line in result.outlines
                    if line.startswith("FAILED"))
    assert failed == sorted(
        [f"test_conformance[activation:softsign_wrong_gradient-{b}-gradient]" for b in backends]
        + [f"test_conformance[activation:upcasting_tanh-{b}-dtypes]" for b in backends])
    assert result.parseoutcomes()["passed"] == 6 * len(backends)


@pytest.mark.parametrize(("marker", "message"), [
    ('"mlcore-no-such-plugin"', "*no installed plugin named mlcore-no-such-plugin. Installed: "
     "*mlcore-activations-extra*"),
    ('"mlcore-activations-extra", cases=[Case("gelux")]', "*cases for 'gelux', which "
     "mlcore-activations-extra do not provide. They provide: elu, gelu, *"),
])
def test_marker_usage_errors(fresh_registry: Any, pytester: Any, marker: str,
                             message: str) -> None:
    pytester.makepyfile(test_x=f"""
        import pytest
        from mlcore.testing import Case

        @pytest.mark.mlcore_conformance({marker})
        def test_conformance(mlcore_case):
            mlcore_case.run()
    """)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                                "-p", "no:hypothesispytest")
    result.stdout.fnmatch_lines([message])
    assert result.ret != 0


def test_unknown_check_name() -> None:
    with pytest.raises(ValueError, match="Unknown check.*gradients.*the checks are contract"):
        check_activation("gelu", "numpy", checks=["gradients"])
