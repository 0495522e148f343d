"""Gradient clipping against torch.nn.utils, optimiser state round trips, the registry hook."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gradcheck import host, rel_err

import mlcore
from mlcore.errors import InvalidParameterError
from mlcore.layers import Parameter
from mlcore.optimizers import get_optimizer, optimizer_names

SHAPES = [(3, 4), (4,)]


def _run(backend: Any, name: str, steps: int, opt: Any = None, **kw: Any) -> tuple[Any, Any]:
    rng = np.random.default_rng(3)
    start = [rng.standard_normal(s) for s in SHAPES]
    grads = [[3.0 * rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    params = [Parameter(backend.asarray(v)) for v in start]
    opt = opt or getattr(mlcore, name)(params, **kw)
    return params, opt, grads  # type: ignore[return-value]


@pytest.mark.parametrize("clip", [{"clip_norm": 1.5}, {"clip_value": 0.7},
                                  {"clip_norm": 2.0, "clip_value": 1.0}])
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_clipping_matches_torch(backend: Any, name: str, clip: dict[str, float]) -> None:
    torch = pytest.importorskip("torch")
    params, opt, grads = _run(backend, name, 4, lr=0.05, **clip)
    theirs = [torch.tensor(host(backend, p.value), requires_grad=True) for p in params]
    ref = getattr(torch.optim, name)(theirs, lr=0.05)
    for step in grads:
        for p, t, g in zip(params, theirs, step, strict=True):
            p.grad, t.grad = backend.asarray(g), torch.from_numpy(g.copy())
        if "clip_value" in clip:
            torch.nn.utils.clip_grad_value_(theirs, clip["clip_value"])
        if "clip_norm" in clip:
            torch.nn.utils.clip_grad_norm_(theirs, clip["clip_norm"])
        opt.step()
        ref.step()
    for p, t in zip(params, theirs, strict=True):
        assert rel_err(host(backend, p.value), t.detach().numpy()) <= 1e-10


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_state_dict_round_trip_continues_exactly(backend: Any, name: str) -> None:
    rng = np.random.default_rng(5)
    start = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(6)]
    extra = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {}

    def make() -> tuple[list[Parameter], Any]:
        ps = [Parameter(backend.asarray(v.copy())) for v in start]
        return ps, get_optimizer(name, ps).__class__(ps, lr=0.05, **extra)

    a, opt_a = make()
    for step in grads:
        for p, g in zip(a, step, strict=True):
            p.grad = backend.asarray(g)
        opt_a.step()
    b, opt_b = make()
    for step in grads[:3]:
        for p, g in zip(b, step, strict=True):
            p.grad = backend.asarray(g)
        opt_b.step()
    state = opt_b.state_dict()
    c = [Parameter(backend.asarray(host(backend, p.value))) for p in b]
    opt_c = type(opt_b)(c, lr=0.05, **extra)
    opt_c.load_state_dict(state)
    for step in grads[3:]:
        for p, g in zip(c, step, strict=True):
            p.grad = backend.asarray(g)
        opt_c.step()
    for p, q in zip(a, c, strict=True):
        np.testing.assert_array_equal(host(backend, p.value), host(backend, q.value))


def test_state_and_clip_errors(backend: Any) -> None:
    params = [Parameter(backend.asarray(np.ones(2)))]
    with pytest.raises(InvalidParameterError, match="clip_norm must be a positive number"):
        mlcore.SGD(params, clip_norm=0)
    with pytest.raises(InvalidParameterError, match="from a 'SGD' optimiser"):
        mlcore.Adam(params).load_state_dict(mlcore.SGD(params).state_dict())


def test_a_plugin_registers_an_optimiser(make_dist: Any) -> None:
    make_dist("mlcore-signsgd", "signsgd_plugin", """
        from mlcore import hookimpl
        from mlcore.optimizers import Optimizer

        class SignSGD(Optimizer):
            def __init__(self, params, lr=0.01):
                super().__init__(params, lr)

            def _step(self):
                for p in self.params:
                    if p.grad is not None:
                        p.value -= self.lr * self.xp.sign(p.grad)

        @hookimpl
        def mlcore_optimizers():
            return {"signsgd": SignSGD}
    """)
    assert "signsgd" in optimizer_names()
    model = mlcore.MLP([2, 3, 1], seed=0)
    before = host(mlcore.get_backend(), model.parameters()[0].value)
    model.fit([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0], loss="mse", optimizer="signsgd",
              epochs=2, verbose=False)
    after = host(mlcore.get_backend(), model.parameters()[0].value)
    assert np.all(np.isclose(np.abs(after - before) % 0.01, 0.0, atol=1e-6)
                  | np.isclose(np.abs(after - before) % 0.01, 0.01, atol=1e-6))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
@pytest.mark.slow
def test_builtin_optimisers_pass_the_kit(name: str) -> None:
    from mlcore.testing import check_optimizer

    check_optimizer(name, lr=0.05)


def test_the_kit_catches_an_optimiser_going_uphill(backend: Any) -> None:
    from mlcore.testing import check_optimizer

    class Uphill(mlcore.SGD):
        def _step(self) -> None:
            for p in self.params:
                if p.grad is not None:
                    p.value += self.lr * p.grad

    with pytest.raises(AssertionError, match="did not lower"):
        check_optimizer(Uphill, backend)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_trains_on_through_a_zero_learning_rate(backend: Any, name: str) -> None:
    """A warm-up from 0 or a cosine schedule past its end: lr = 0 changes no weight (the
    moments still advance), as torch; was a ZeroDivisionError."""
    params, opt, grads = _run(backend, name, 3, lr=0.01)
    opt.lr = 0.0
    before = [host(backend, p.value).copy() for p in params]
    for p, g in zip(params, grads[0], strict=True):
        p.grad = backend.asarray(g)
    opt.step()
    for b, p in zip(before, params, strict=True):
        np.testing.assert_array_equal(host(backend, p.value), b)
    assert opt.state["step"] == 1 and all(m is not None for m in opt.m)
    opt.lr = 0.01
    opt.step()
    assert not np.array_equal(host(backend, params[0].value), before[0])


@pytest.mark.parametrize(("cls", "kw", "match"), [
    ("RMSprop", {"alpha": 1.5}, "alpha must be a finite number in [0, 1)"),
    ("RMSprop", {"alpha": "x"}, "alpha must be a number"),
    ("RMSprop", {"centered": "False"}, "centered must be True or False"),
    ("RMSprop", {"eps": 0.0}, "eps must be a finite number in (0, inf)"),
    ("Adagrad", {"lr_decay": -1.0}, "lr_decay must be a finite number in [0, inf)"),
    ("Adagrad", {"initial_accumulator_value": -0.1}, "initial_accumulator_value must be"),
    ("Adagrad", {"eps": 0.0}, "eps must be a finite number in (0, inf)"),
    ("SGD", {"nesterov": 1}, "nesterov must be True or False"),
    ("SGD", {"clip_norm": float("nan")}, "clip_norm must be a positive number"),
])
def test_optimiser_arguments_are_named_when_wrong(cls: str, kw: dict[str, Any],
                                                  match: str) -> None:
    with pytest.raises(InvalidParameterError, match=re_escape(match)):
        getattr(mlcore, cls)([Parameter(np.ones(2))], **kw)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_numpy_scalars_are_taken_for_clipping() -> None:
    opt = mlcore.SGD([Parameter(np.ones(2))], clip_norm=np.float32(1.5),
                     clip_value=np.int64(2))
    assert (opt.clip_norm, opt.clip_value) == (1.5, 2.0)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam"])
def test_state_of_a_longer_model_is_refused(name: str) -> None:
    big = [Parameter(np.ones(2)) for _ in range(3)]
    kw = {"momentum": 0.9} if name == "SGD" else {}
    opt = getattr(mlcore, name)(big, **kw)
    for p in big:
        p.grad = np.ones(2)
    opt.step()
    small = getattr(mlcore, name)(big[:2], **kw)
    with pytest.raises(InvalidParameterError, match="does not fit this|covers 3 parameters|"
                       r"'steps' is \[1, 1, 1\]"):
        small.load_state_dict(opt.state_dict())


def test_state_declaration_drives_materialize_and_state_dict(backend: Any) -> None:
    """Every slot (RMSprop's and Adagrad's too) is listed once, for a lazy backend's
    materialize, state_dict and the compiled step alike."""
    for opt in (mlcore.RMSprop([Parameter(backend.asarray(np.ones(3)))], momentum=0.9,
                               centered=True),
                mlcore.Adagrad([Parameter(backend.asarray(np.ones(3)))])):
        opt.params[0].grad = backend.asarray(np.full(3, 0.5))
        opt.step()
        arrays = opt.state_arrays()
        assert len(arrays) == len(opt.slots) >= 1
        saved = opt.state_dict()
        assert sorted(k for k in saved if "." in k) == sorted(f"{s}.0" for s in opt.slots)
        opt.replace_state_arrays([a * 0 for a in arrays])
        assert all(float(host(backend, a).sum()) == 0.0 for a in opt.state_arrays())
