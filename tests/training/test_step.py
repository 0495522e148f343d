"""The training step as a pure function (hook mlcore_compile_step): same weights as eager.

A test plugin "compiles" a step by returning it unchanged, so the pure step runs on every
backend of the matrix and is compared with the eager, in-place step: weights, optimiser
state (step counts, moments, momentum buffers). The jax backend's real
``jax.jit`` step is compared the same way where JAX is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pluggy
import pytest

import mlcore
from mlcore.errors import InvalidParameterError, PluginWarning
from mlcore.plugins import registry
from mlcore.training.compiled import CompiledStep, _probe

hookimpl = pluggy.HookimplMarker("mlcore")

OPTIMIZERS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.1}),
]


class Identity:
    """Compiles nothing: returns the pure step itself, and counts the requests."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def mlcore_compile_step(self, backend: Any, step: Any) -> Any:
        if step is not _probe:  # the core's "do you compile?" question, asked once
            self.asked.append(backend.name)
        return step


@pytest.fixture
def identity() -> Any:
    plugin = Identity()
    registry().pm.register(plugin, name="test-identity-compile")
    yield plugin
    registry().pm.unregister(plugin)


def _model(dtype: str = "float64") -> mlcore.Sequential:
    return mlcore.MLP([3, 5, 4], activation="tanh", output_activation="softmax", seed=1,
                      dtype=dtype)


def _batch(backend: Any, dtype: Any) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    return (backend.asarray(rng.normal(size=(8, 3)), dtype=dtype),
            backend.asarray(rng.integers(0, 4, size=8)))


def _optimizer(model: mlcore.Sequential, name: str, kw: dict[str, Any]) -> Any:
    classes = {"sgd": mlcore.SGD, "adam": mlcore.Adam, "adamw": mlcore.AdamW}
    return classes[name](model.parameters(), **kw)


def _host(model: mlcore.Sequential) -> list[np.ndarray]:
    return [model.backend.to_numpy(p.value) for p in model.parameters()]


def _state(opt: Any) -> list[np.ndarray]:
    return [np.asarray(mlcore.get_backend().to_numpy(a)) for a in opt.state_arrays()]


@pytest.mark.parametrize(("name", "kw"), OPTIMIZERS, ids=lambda v: str(v))
def test_pure_step_gives_the_eager_weights_and_state(backend: Any, identity: Any, name: str,
                                                     kw: dict[str, Any]) -> None:
    eager_model, pure_model = _model(), _model()
    eager_opt, pure_opt = _optimizer(eager_model, name, kw), _optimizer(pure_model, name, kw)
    eager = mlcore.make_train_step(eager_model, "cross_entropy", eager_opt, jit_compile=False)
    pure = mlcore.make_train_step(pure_model, "cross_entropy", pure_opt, jit_compile=True)
    assert isinstance(pure, CompiledStep) and identity.asked == [backend.name]
    X, y = _batch(backend, backend.xp.float64)
    for _ in range(3):
        a, b = eager(X, y), pure(X, y)
        assert np.isclose(float(a), float(b), rtol=1e-12)
    for want, got in zip(_host(eager_model), _host(pure_model), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for want, got in zip(_state(eager_opt), _state(pure_opt), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert getattr(pure_opt, "steps", None) == getattr(eager_opt, "steps", None)


def test_eager_and_compiled_steps_follow_one_another(backend: Any, identity: Any) -> None:
    ref_model, mixed_model = _model(), _model()
    ref = mlcore.make_train_step(ref_model, "cross_entropy", "adam", jit_compile=False)
    mixed_opt = mlcore.Adam(mixed_model.parameters())
    pure = mlcore.make_train_step(mixed_model, "cross_entropy", mixed_opt)
    eager = mlcore.make_train_step(mixed_model, "cross_entropy", mixed_opt, jit_compile=False)
    X, y = _batch(backend, backend.xp.float64)
    for step in (pure, eager, pure, pure, eager):
        ref(X, y)
        step(X, y)
    assert mixed_opt.steps == [5] * len(mixed_model.parameters())
    for want, got in zip(_host(ref_model), _host(mixed_model), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_jit_compile_true_says_why_it_cannot(backend: Any) -> None:
    if backend.name == "jax":
        pytest.skip("jax compiles")
    with pytest.raises(InvalidParameterError, match=rf"backend {backend.name!r} does not "
                       r"compile training steps.*Leave jit_compile unset"):
        mlcore.make_train_step(_model(), "cross_entropy", "sgd", jit_compile=True)

    class OldSGD(mlcore.SGD):  # the old protocol: an in-place _step, no rule
        def _step(self) -> None:
            for p in self.params:
                p.value -= self.lr * p.grad

    registry().pm.register(plugin := Identity(), name="test-identity-old")
    try:
        model = _model()
        with pytest.raises(InvalidParameterError, match="OldSGD optimiser has no update rule"):
            mlcore.make_train_step(model, "cross_entropy", OldSGD(model.parameters()),
                                   jit_compile=True)
    finally:
        registry().pm.unregister(plugin)


def test_a_failing_compile_plugin_warns_and_trains_eagerly(backend: Any) -> None:
    class Broken:
        @hookimpl
        def mlcore_compile_step(self, backend: Any, step: Any) -> Any:
            raise RuntimeError("no compiler here")

    plugin = Broken()
    registry().pm.register(plugin, name="test-broken-compile")
    try:
        with pytest.warns(PluginWarning, match="no compiler here.*eager training step"):
            step = mlcore.make_train_step(_model(), "cross_entropy", "sgd")
    finally:
        registry().pm.unregister(plugin)
    assert not isinstance(step, CompiledStep)
    step(*_batch(backend, backend.xp.float64))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "kw"), OPTIMIZERS[1:3], ids=lambda v: str(v))
@pytest.mark.slow
def test_jax_jit_step_equals_eager(dtype: str, name: str, kw: dict[str, Any]) -> None:
    pytest.importorskip("jax")
    b = mlcore.get_backend("jax")
    if dtype == "float64" and not b.x64:
        pytest.skip("JAX's 64-bit mode is off")
    tol = {"float32": 2e-5, "float64": 1e-10}[dtype]
    with mlcore.use_backend("jax"):
        eager_model, jit_model = _model(dtype), _model(dtype)
        eager = mlcore.make_train_step(eager_model, "cross_entropy",
                                       _optimizer(eager_model, name, kw), jit_compile=False)
        jitted = mlcore.make_train_step(jit_model, "cross_entropy",
                                        _optimizer(jit_model, name, kw))
        assert isinstance(jitted, CompiledStep)
        X, y = _batch(b, getattr(b.xp, dtype))
        for _ in range(5):  # the bias corrections change every step
            np.testing.assert_allclose(float(jitted(X, y)), float(eager(X, y)), rtol=tol)
    for want, got in zip(_host(eager_model), _host(jit_model), strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _fit(backend: Any, jit_compile: bool | None, optimizer: str = "adam",
         **options: Any) -> tuple[dict[str, list[float]], list[np.ndarray]]:
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 4, size=50)
    model = _model()
    history = model.fit(X, y, loss="cross_entropy", optimizer=optimizer, lr=0.05, epochs=3,
                        batch_size=16, seed=2, jit_compile=jit_compile, **options)
    return history, _host(model)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_with_a_compiled_step_gives_the_eager_history_and_weights(
        backend: Any, identity: Any, optimizer: str) -> None:
    """History (loss, accuracy, a metric, validation) and weights as the eager fit, with a
    learning-rate schedule that changes lr every epoch: the compiled step follows it."""
    schedule = mlcore.callbacks.LearningRateScheduler(lambda epoch: 0.05 / (1 + epoch))
    options = {"metrics": ["f1"], "validation_split": 0.2}
    eager = _fit(backend, False, optimizer, callbacks=[schedule], **options)
    asked = len(identity.asked)
    compiled = _fit(backend, True, optimizer, callbacks=[schedule], **options)
    assert len(identity.asked) - asked == 1  # lr is an argument: a new lr, no new trace
    assert eager[0].keys() == compiled[0].keys() >= {"loss", "accuracy", "f1", "val_loss"}
    for key, values in eager[0].items():
        np.testing.assert_allclose(compiled[0][key], values, rtol=1e-10, err_msg=key)
    for want, got in zip(eager[1], compiled[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_fit_compiles_by_default_where_the_backend_does(backend: Any, identity: Any) -> None:
    first = _fit(backend, None)
    assert identity.asked == [backend.name]
    _fit(backend, False)
    assert identity.asked == [backend.name]  # jit_compile=False never asks
    again = _fit(backend, None)  # a new model of the same structure, the same settings:
    assert identity.asked == [backend.name]  # the compiled step is reused, not rebuilt
    assert again[0] == first[0]
    _fit(backend, None, "sgd")  # another optimiser: compiled anew
    assert identity.asked == [backend.name] * 2


def test_jit_compile_is_checked_and_only_a_backend_without_a_compiler_refuses(
        backend: Any) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 4, size=20)
    with pytest.raises(InvalidParameterError, match="jit_compile must be None.*'yes'"):
        _model().fit(X, y, loss="cross_entropy", jit_compile="yes")
    with pytest.raises(InvalidParameterError, match="jit_compile must be None.*received 1"):
        mlcore.make_train_step(_model(), "cross_entropy", jit_compile=1)  # type: ignore[arg-type]
    if backend.name == "jax":
        return
    dropout = mlcore.MLP([3, 5, 4], output_activation="softmax", dropout=0.5, seed=0,
                         dtype="float64")
    for fit in (lambda: dropout.fit(X, y, loss="cross_entropy", jit_compile=True),
                lambda: mlcore.make_train_step(dropout, "cross_entropy", jit_compile=True),
                lambda: dropout.fit(X, y, loss="cross_entropy", sample_weight=np.ones(20),
                                    jit_compile=True)):
        with pytest.raises(InvalidParameterError,
                           match=f"backend {backend.name!r} does not compile training steps"):
            fit()


def test_no_compiled_step_is_built_where_the_backend_does_not_compile(
        backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend.name == "jax":
        pytest.skip("jax compiles")
    from mlcore.training import compiled as _trainstep

    built: list[Any] = []
    real = _trainstep.flat_step
    monkeypatch.setattr(_trainstep, "flat_step", lambda *a, **k: built.append(a) or real(*a, **k))
    _fit(backend, None)
    mlcore.make_train_step(_model(), "cross_entropy")
    assert built == []


def test_a_compiled_step_follows_changed_hyperparameters(backend: Any, identity: Any) -> None:
    """A new lr is a new argument (no new trace); a new momentum recompiles the step."""
    ref_model, model = _model(), _model()
    ref_opt, opt = mlcore.SGD(ref_model.parameters()), mlcore.SGD(model.parameters())
    ref = mlcore.make_train_step(ref_model, "cross_entropy", ref_opt, jit_compile=False)
    step = mlcore.make_train_step(model, "cross_entropy", opt, jit_compile=True)
    X, y = _batch(backend, backend.xp.float64)
    for lr, momentum in [(0.01, 0.0), (0.1, 0.0), (0.1, 0.0), (0.05, 0.9), (0.2, 0.9)]:
        ref_opt.lr, ref_opt.momentum = opt.lr, opt.momentum = lr, momentum
        ref(X, y)
        step(X, y)
    assert len(identity.asked) == 2  # built, then again for momentum 0.9
    for want, got in zip(_host(ref_model), _host(model), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_jax_fit_compiled_equals_eager() -> None:
    """The real jax.jit step in fit: the same history and weights as JAX's eager fit."""
    pytest.importorskip("jax")
    b = mlcore.get_backend("jax")
    dtype, tol = ("float64", 1e-9) if b.x64 else ("float32", 2e-5)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 4, size=50)
    results = []
    for jit_compile in (False, True):
        with mlcore.use_backend("jax"):
            model = _model(dtype)
            history = model.fit(X, y, loss="cross_entropy", lr=0.05, epochs=2, batch_size=16,
                                seed=2, jit_compile=jit_compile)
        results.append((history, _host(model)))
    (h0, w0), (h1, w1) = results
    np.testing.assert_allclose(h1["loss"], h0["loss"], rtol=tol)
    assert h1["accuracy"] == h0["accuracy"]
    for want, got in zip(w0, w1, strict=True):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


class Untraceable:
    """A "compiler" whose step fails the way a tracer does on ``float(array)``."""

    @hookimpl
    def mlcore_compile_step(self, backend: Any, step: Any) -> Any:
        def run(*args: Any) -> Any:
            raise RuntimeError("cannot read a traced value")
        return run


def test_a_step_that_cannot_be_compiled_trains_eagerly_with_a_warning(backend: Any) -> None:
    plugin = Untraceable()
    registry().pm.register(plugin, name="test-untraceable-compile")
    try:
        with pytest.warns(mlcore.CompiledStepWarning, match=r"RuntimeError: cannot read a "
                          r"traced value.*training goes on with the eager step"):
            got = _fit(backend, None)
        with pytest.raises(RuntimeError, match="cannot read a traced value"):
            _fit(backend, True)  # jit_compile=True: no fallback
    finally:
        registry().pm.unregister(plugin)
    want = _fit(backend, False)
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_compiled_fit_checks_the_loss_inputs_on_the_first_batch(backend: Any,
                                                                 identity: Any) -> None:
    """The compiled step cannot read values; the first batch is checked eagerly, so
    probabilities asked of a logits model are refused as in the eager fit."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 4, size=20)
    model = mlcore.MLP([3, 5, 4], seed=0)  # logits out
    with pytest.raises(mlcore.InvalidValueError, match="pred rows must be probability"):
        model.fit(X, y, loss=mlcore.loss("cross_entropy", from_logits=False),
                  jit_compile=True, verbose=False)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_compiled_fit_stops_at_a_non_finite_loss_before_the_update(backend: Any,
                                                                    identity: Any) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)) * 1e200  # squared errors overflow float64
    model = mlcore.MLP([3, 5, 1], seed=0, dtype="float64")
    opt = mlcore.Adam(model.parameters())
    before = _host(model)
    with pytest.raises(mlcore.NonFiniteError, match="epoch 1, batch 1, before any update"):
        model.fit(X, X[:, :1], loss="mse", optimizer=opt, jit_compile=True, verbose=False)
    assert identity.asked and opt.steps == [0] * len(model.parameters())
    for a, b in zip(before, _host(model), strict=True):
        np.testing.assert_array_equal(a, b)


# -- the equality matrix: eager == compiled, for every optimiser and model form -------------

MATRIX_OPTIMIZERS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.05}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.05}),
    ("rmsprop", {"lr": 0.01, "weight_decay": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9, "centered": True}),
    ("adagrad", {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.01,
                 "initial_accumulator_value": 0.1}),
]
CLIPS = [{}, {"clip_norm": 0.05}, {"clip_value": 0.01}]
FORMS = ["plain", "dropout", "batchnorm", "weighted"]
_CLASSES = {"sgd": mlcore.SGD, "adam": mlcore.Adam, "adamw": mlcore.AdamW,
            "rmsprop": mlcore.RMSprop, "adagrad": mlcore.Adagrad}


def _form_fit(form: str, dtype: str, name: str, kw: dict[str, Any],
              jit_compile: bool) -> tuple[dict[str, list[float]], list[np.ndarray], Any]:
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    if form == "batchnorm":  # no bias before BatchNorm: its gradient is zero (rounding noise
        # in practice, which Adam and RMSprop scale up to steps of lr that XLA rounds otherwise)
        model = mlcore.Sequential([
            mlcore.Dense(4, 6, bias=False, seed=1, dtype=dtype), mlcore.BatchNorm(6, dtype=dtype),
            mlcore.Activation("tanh"), mlcore.Dense(6, 3, seed=2, dtype=dtype),
            mlcore.Activation("softmax")])
    else:
        model = mlcore.MLP([4, 6, 3], activation="tanh", output_activation="softmax", seed=1,
                           dtype=dtype, dropout=0.3 if form == "dropout" else 0.0)
    opt = _CLASSES[name](model.parameters(), **kw)
    options = {"sample_weight": rng.uniform(0.2, 2.0, size=40)} if form == "weighted" else {}
    history = model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=2, batch_size=16,
                        seed=2, jit_compile=jit_compile, verbose=False, **options)
    arrays = [*_host(model), *_state(opt)]
    arrays += [model.backend.to_numpy(v) for v in model.state_dict().values()]
    return history, arrays, opt


def _compare(backend: Any, form: str, dtype: str, name: str, kw: dict[str, Any]) -> None:
    rtol, atol = (1e-9, 1e-11) if dtype == "float64" else (2e-4, 2e-5)
    eager = _form_fit(form, dtype, name, kw, False)
    compiled = _form_fit(form, dtype, name, kw, True)
    assert compiled[0].keys() == eager[0].keys()
    for key, values in eager[0].items():
        np.testing.assert_allclose(compiled[0][key], values, rtol=rtol, err_msg=key)
    assert len(compiled[1]) == len(eager[1])
    for want, got in zip(eager[1], compiled[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    assert compiled[2].state.get("step") == eager[2].state.get("step")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: ",".join(c) or "noclip")
@pytest.mark.parametrize(("name", "kw"), MATRIX_OPTIMIZERS,
                         ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_eager_and_compiled_fits_agree(backend: Any, identity: Any, name: str,
                                       kw: dict[str, Any], clip: dict[str, float], form: str,
                                       dtype: str) -> None:
    """Weights, optimiser state, buffers and history after two epochs of fit (several
    steps, a partial last batch) agree between the eager step and the compiled one (the
    identity compiler: the pure step itself; on jax, jax.jit)."""
    if backend.name == "torch" and (dtype == "float64" or clip):
        pytest.skip("torch runs a slice of the matrix (numpy and strict run all of it)")
    if backend.name == "jax":
        pytest.skip("on jax the matrix runs with jax.jit (test_eager_and_jax_jit_fits_agree)")
    _compare(backend, form, dtype, name, kw | clip)


JAX_CASES = [  # every optimiser and form, each clipping kind twice (jax.jit traces each)
    (MATRIX_OPTIMIZERS[i], CLIPS[j % 3], FORMS[k % 4])
    for j, (i, k) in enumerate([(1, 0), (2, 1), (3, 2), (4, 3), (5, 0), (6, 1), (7, 2),
                                (8, 3), (0, 2), (5, 3), (7, 0), (3, 1)])]


@pytest.mark.parametrize(("opt", "clip", "form"), JAX_CASES,
                         ids=lambda v: v if isinstance(v, str) else
                         (",".join(v) or "noclip") if isinstance(v, dict) else
                         ",".join([v[0], *v[1]]))
def test_eager_and_jax_jit_fits_agree(opt: tuple[str, dict[str, Any]],
                                      clip: dict[str, float], form: str) -> None:
    """The same with the real ``jax.jit`` step (MLCORE_BACKEND=jax runs it): every optimiser
    (with momentum, Nesterov, centring, weight decay), each clipping kind and each form
    (plain, Dropout, BatchNorm, sample weights) in twelve cases."""
    name, kw = opt
    pytest.importorskip("jax")
    if mlcore.get_backend().name != "jax":
        pytest.skip("runs in the jax suite (MLCORE_BACKEND=jax)")
    b = mlcore.get_backend("jax")
    _compare(b, form, "float64" if b.x64 else "float32", name, kw | clip)


def test_clipping_reaches_the_compiled_step(backend: Any, identity: Any) -> None:
    """The bug this design removes: clip_norm was dropped by the compiled step."""
    free = _form_fit("plain", "float64", "sgd", {"lr": 0.1}, True)[1]
    clipped = _form_fit("plain", "float64", "sgd", {"lr": 0.1, "clip_norm": 1e-3}, True)[1]
    eager = _form_fit("plain", "float64", "sgd", {"lr": 0.1, "clip_norm": 1e-3}, False)[1]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(free, clipped, strict=True)) > 1e-3
    for want, got in zip(eager, clipped, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_dropout_masks_are_the_same_eager_and_compiled(backend: Any, identity: Any) -> None:
    """Same seed, same masks: the noise is drawn outside the step from the layer's source."""
    w1 = _form_fit("dropout", "float64", "sgd", {"lr": 0.1}, False)[1]
    w2 = _form_fit("dropout", "float64", "sgd", {"lr": 0.1}, True)[1]
    w3 = _form_fit("plain", "float64", "sgd", {"lr": 0.1}, True)[1]
    np.testing.assert_allclose(w2[0], w1[0], rtol=1e-12)
    assert not np.allclose(w3[0], w2[0])  # the masks did drop inputs


# -- one non-finite policy for both executors ------------------------------------------------

@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_nonfinite_policy_is_the_same_in_both_executors(backend: Any, identity: Any,
                                                           jit_compile: bool) -> None:
    """A batch in the middle gives a non-finite loss: "warn" warns once and skips it (the
    weights equal a fit without that batch's update), "ignore" applies it (non-finite
    weights), "raise" stops and restores."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 3))
    y = X[:, :1].copy()
    X[20, 0] = 1e200  # batch 2 of 3 (batch_size 16): its squared error overflows

    def run(mode: str) -> tuple[Any, list[np.ndarray]]:
        model = mlcore.MLP([3, 4, 1], seed=0, dtype="float64")
        opt = mlcore.Adam(model.parameters(), lr=0.01)
        h = model.fit(X, y, loss="mse", optimizer=opt, epochs=2, batch_size=16, shuffle=False,
                      on_nonfinite=mode, jit_compile=jit_compile, verbose=False)
        return (h, opt.state["step"]), _host(model)

    with pytest.warns(RuntimeWarning, match="skipping every update") as caught:
        (_, steps), warned = run("warn")
    assert len([w for w in caught if "skipping" in str(w.message)]) == 1  # once per fit
    assert steps == 4  # two of six batches skipped
    assert all(np.isfinite(a).all() for a in warned)
    (_, steps), ignored = run("ignore")
    assert steps == 6 and not all(np.isfinite(a).all() for a in ignored)
    with pytest.raises(mlcore.NonFiniteError, match="epoch 1, batch 2"):
        run("raise")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_warn_skips_give_the_same_weights_eager_and_compiled(backend: Any,
                                                            identity: Any) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(48, 3))
    y = X[:, :1].copy()
    X[5, 1] = -1e200
    out = []
    for jit_compile in (False, True):
        model = mlcore.MLP([3, 4, 1], seed=0, dtype="float64")
        with pytest.warns(RuntimeWarning, match="skipping"):
            model.fit(X, y, loss="mse", optimizer="sgd", lr=0.1, epochs=2, batch_size=16,
                      shuffle=False, on_nonfinite="warn", jit_compile=jit_compile,
                      verbose=False)
        out.append(_host(model))
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12)


# -- a plugin optimiser written as a rule gets every executor ------------------------------

class Lion(mlcore.plugin.OptimizerBase):
    """Lion (Chen et al., 2023), written as a rule only (the docs' example)."""

    slots = ("exp_avg",)
    hyperparameters = ("betas", "weight_decay")

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, **kw: Any) -> None:
        super().__init__(params, lr, **kw)
        self.betas, self.weight_decay = tuple(betas), float(weight_decay)

    def rule(self, xp: Any, params: Any, grads: Any, state: Any, lr: Any) -> Any:
        b1, b2 = self.betas
        new_p, new_m = [], []
        for p, g, m in zip(params, grads, state["exp_avg"], strict=True):
            c = b1 * m + (1.0 - b1) * g
            new_p.append(p * (1.0 - lr * self.weight_decay) - lr * xp.sign(c))
            new_m.append(b2 * m + (1.0 - b2) * g)
        return tuple(new_p), {"exp_avg": tuple(new_m)}


def test_a_plugin_rule_trains_eagerly_and_compiled_alike(backend: Any, identity: Any) -> None:
    out = []
    for jit_compile in (False, True):
        model = _model()
        opt = Lion(model.parameters(), lr=0.01, weight_decay=0.1, clip_norm=1.0)
        rng = np.random.default_rng(3)
        model.fit(rng.normal(size=(40, 3)), rng.integers(0, 4, size=40), loss="cross_entropy",
                  optimizer=opt, epochs=2, batch_size=16, seed=2, jit_compile=jit_compile,
                  verbose=False)
        out.append([*_host(model), *_state(opt)])
    assert identity.asked == [backend.name]
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_the_kit_checks_a_plugin_rule() -> None:
    from mlcore.testing import check_optimizer

    check_optimizer(lambda params, **kw: Lion(params, **kw), lr=0.01)


class _Impure(Lion):
    def rule(self, xp: Any, params: Any, grads: Any, state: Any, lr: Any) -> Any:
        for m, g in zip(state["exp_avg"], grads, strict=True):
            m *= 0.5  # writes into its input: a traced JAX step cannot
            m += g
        return super().rule(xp, params, grads, state, lr)


class _NoDecay(Lion):
    def rule(self, xp: Any, params: Any, grads: Any, state: Any, lr: Any) -> Any:
        self.weight_decay, wd = 0.0, self.weight_decay
        try:
            return super().rule(xp, params, grads, state, lr)
        finally:
            self.weight_decay = wd


class _ScalesGrad(mlcore.SGD):
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad *= 0.5  # the caller's array, in place
        super().step()


@pytest.mark.parametrize(("cls", "match"), [
    (_Impure, "the rule wrote into its input 'exp_avg'"),
    (_NoDecay, "is weight_decay ignored"),
    (_ScalesGrad, "changed the caller's gradient array in place"),
])
def test_the_kit_catches_a_broken_rule(cls: Any, match: str) -> None:
    from mlcore.testing import check_optimizer

    with pytest.raises(AssertionError, match=match):
        check_optimizer(lambda params, **kw: cls(params, **kw), "numpy", lr=0.01)
