"""mlcore competitors: the public API on one backend, exactly as a user calls it.

Activations: ``mlcore.activation(name)``, ``forward`` then ``backward(x, y, dy)``. Losses:
``mlcore.loss(name, **params)``, ``forward`` then ``backward``. Dense: ``mlcore.Dense``,
``Y, backprop = layer.forward(X)``, ``backprop(dY)``. Training step: ``mlcore.MLP`` with
the shared initial weights loaded, ``model.train_step(X, y, loss, optimizer)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import mlcore

from .bench_reference import FnBench, train_epochs
from .cases import (
    XOR_SIZES,
    ActivationCase,
    Case,
    DenseCase,
    FitCase,
    LossCase,
    StepCase,
    TrainCase,
    TutorialCase,
)
from .timing import UnavailableError

__all__ = ["make", "make_steps", "make_metrics", "status", "is_gpu", "is_conformance"]


def status(name: str) -> str:
    """Why backend ``name`` cannot run here (a member that raised included), or "" when it
    can."""
    from mlcore.backend import backend_status
    from mlcore.plugins import registry

    backend = registry().backends.get(name)
    if backend is None:
        return f"backend {name!r} is not installed"
    return backend_status(backend).reason


def is_gpu(name: str) -> bool:
    """Whether available backend ``name`` computes on a GPU (its device is not a CPU)."""
    return "cpu" not in str(mlcore.get_backend(name).device).lower()


def is_conformance(name: str) -> bool:
    """Whether backend ``name`` declares itself a conformance backend (``strict``): correct
    by construction and slow by design, never recommended for production."""
    from mlcore.backend import optional_members
    from mlcore.plugins import registry

    return optional_members(registry().backends.get(name)).conformance


def _need(*names: str) -> None:
    missing = [n for n in names if not hasattr(mlcore, n)]
    if missing:
        raise UnavailableError(f"mlcore has no {', '.join(missing)} yet")


def make_steps(case: Case, dtype: Any) -> FnBench:
    """The ``mlcore-steps`` row: fit cases only, as a loop of prepared NumPy train steps."""
    if not isinstance(case, FitCase):
        raise UnavailableError("mlcore-steps runs the fit cases only")
    return make(case, dtype, "numpy", steps=True)


def make_metrics(case: Case, dtype: Any) -> FnBench:
    """The ``mlcore-metrics`` row: the 784-512-512-10 fit cases on NumPy with metrics and
    EarlyStopping, timed interleaved with the plain fit of the same case."""
    if not isinstance(case, FitCase) or case.sizes == XOR_SIZES:
        raise UnavailableError("mlcore-metrics runs the 784-512-512-10 fit cases only")
    return make(dataclasses.replace(case, mode="fit+metrics"), dtype, "numpy")


def make(case: Case, dtype: Any, name: str, steps: bool = False) -> FnBench:
    """The mlcore competitor for ``case`` on backend ``name``."""
    reason = status(name)
    if reason:
        raise UnavailableError(reason)
    backend = mlcore.get_backend(name)
    with mlcore.use_backend(name):
        if steps:
            return _fit(case, dtype, backend, steps=True)  # type: ignore[arg-type]
        return _BUILDERS[case.group](case, dtype, backend)  # type: ignore[no-any-return]


def _bench(backend: Any, step: Callable[[], Any], result: Callable[[], list[Any]]) -> FnBench:
    memory = "cupy" if backend.name == "cupy" else "host"
    from mlcore.arrays.namespace import enters_device  # the backend declares it (CuPy; not torch)

    ctx = backend.device if enters_device(backend.device) else None
    return FnBench(step, result, backend.synchronize, memory, {"device": str(backend.device)},
                   ctx)


def _put(backend: Any, a: np.ndarray, dtype: Any) -> Any:
    """Host array -> backend array: integers stay int64, floats become ``dtype``."""
    return backend.asarray(a if a.dtype.kind == "i" else a.astype(dtype))


def _activation(case: ActivationCase, dtype: Any, backend: Any) -> FnBench:
    act = mlcore.activation(case.activation)
    x, dy = (_put(backend, a, dtype) for a in case.data())
    out: list[Any] = []

    def step() -> None:
        y = act.forward(x)
        out[:] = [y, act.backward(x, y, dy)]

    return _bench(backend, step, lambda: [backend.to_numpy(a) for a in out])


def _loss(case: LossCase, dtype: Any, backend: Any) -> FnBench:
    spec = case.spec
    fn = mlcore.loss(spec.loss, **spec.params)
    pred, target = (_put(backend, a, dtype) for a in case.data())
    out: list[Any] = []

    def step() -> None:
        out[:] = [fn.forward(pred, target), fn.backward(pred, target)]

    return _bench(backend, step, lambda: [backend.to_numpy(a) for a in out])


def _load(backend: Any, params: list[Any], weights: list[np.ndarray], dtype: Any) -> None:
    """Overwrite mlcore parameters, in order, with the shared initial weights (in place, as
    ``load_state_dict`` does: the parameters keep their storage layout)."""
    for p, w in zip(params, weights, strict=True):
        p.set(backend.asarray(np.asarray(w, dtype=dtype)))


def _dense(case: DenseCase, dtype: Any, backend: Any) -> FnBench:
    _need("Dense")
    x64, dy64, weights = case.data()
    layer = mlcore.Dense(case.in_features, case.out_features, dtype=np.dtype(dtype).name)
    _load(backend, layer.parameters(), weights, dtype)
    x, dy = _put(backend, x64, dtype), _put(backend, dy64, dtype)
    out: list[Any] = []

    def step() -> None:
        layer.zero_grad()
        y, backprop = layer.forward(x)
        out[:] = [y, backprop(dy)] + [p.grad for p in layer.parameters()]

    return _bench(backend, step, lambda: [backend.to_numpy(a) for a in out])


def _model(sizes: tuple[int, ...], hidden: str, weights: list[np.ndarray], dtype: Any,
           backend: Any) -> Any:
    _need("MLP")
    model = mlcore.MLP(list(sizes), activation=hidden, dtype=np.dtype(dtype).name)
    _load(backend, model.parameters(), weights, dtype)
    return model


def _optimizer(name: str, params: list[Any], lr: float) -> Any:
    cls_name = "Adam" if name == "adam" else "SGD"
    _need(cls_name)
    return getattr(mlcore, cls_name)(params, lr=lr)


def _step(case: StepCase, dtype: Any, backend: Any) -> FnBench:
    X64, y64, weights = case.data()
    model = _model(case.sizes, case.hidden, weights, dtype, backend)
    if not hasattr(model, "train_step"):
        raise UnavailableError("mlcore models have no train_step(X, y, loss, optimizer) yet")
    if case.loss == "softmax_ce":
        loss, y = mlcore.loss("cross_entropy", from_logits=True), _put(backend, y64, dtype)
    else:  # one logit per sample: the target takes the logits' (N, 1) shape
        loss = mlcore.loss("binary_cross_entropy", from_logits=True)
        y = _put(backend, y64[:, None], dtype)
    opt = _optimizer(case.optimizer, model.parameters(), case.lr)
    X = _put(backend, X64, dtype)
    return _bench(backend, lambda: model.train_step(X, y, loss, opt),
                  lambda: [backend.to_numpy(p.value) for p in model.parameters()])


def _train(case: TrainCase, dtype: Any, backend: Any) -> FnBench:
    X_tr, y_tr, X_te, y_te, weights = case.data()
    xp = backend.xp
    X, y = _put(backend, X_tr, dtype), _put(backend, y_tr, dtype)
    Xt, yt = _put(backend, X_te, dtype), _put(backend, y_te, dtype)
    loss = mlcore.loss("cross_entropy", from_logits=True)
    out: list[Any] = []

    def step() -> None:  # timed later, outside make()'s use_backend: select it again
        with mlcore.use_backend(backend.name):
            model = _model(case.sizes, "relu", weights, dtype, backend)
        opt = _optimizer("adam", model.parameters(), case.lr)

        def train(idx: np.ndarray) -> None:
            i = backend.asarray(idx)
            model.train_step(xp.take(X, i, axis=0), xp.take(y, i, axis=0), loss, opt)

        def accuracy() -> float:
            hits = xp.argmax(model(Xt), axis=1) == yt
            return float(xp.mean(xp.astype(hits, xp.float64)))

        out[:] = train_epochs(case, train, accuracy, len(X_tr))

    return _bench(backend, step, lambda: list(out))


def _fit(case: FitCase, dtype: Any, backend: Any, steps: bool = False) -> FnBench:
    X64, y64, weights = case.data()
    _need("MLP")
    model = _model(case.sizes, case.hidden, weights, dtype, backend)
    if case.loss == "softmax_ce":
        loss, y = mlcore.loss("cross_entropy", from_logits=True), _put(backend, y64, dtype)
    else:
        loss = mlcore.loss("binary_cross_entropy", from_logits=True)
        y = _put(backend, y64[:, None], dtype)
    X = _put(backend, X64, dtype)
    extras: dict[str, Any] = {}
    if case.mode == "fit+metrics":
        stop = mlcore.callbacks.EarlyStopping(monitor="loss", patience=10**6)
        extras = {"metrics": ["accuracy", "f1"], "callbacks": [stop]}
    batches = case.batches()

    def run() -> None:
        _load(backend, model.parameters(), weights, dtype)
        if steps:
            step = mlcore.make_train_step(model, loss, case.optimizer, case.lr)
            for _ in range(case.epochs):
                for a, b in batches:
                    step(X[a:b, ...], y[a:b, ...])
        else:
            model.fit(X, y, loss=loss, optimizer=case.optimizer, lr=case.lr,
                      epochs=case.epochs, batch_size=case.batch, shuffle=False,
                      verbose=False, **extras)

    return _bench(backend, run, lambda: [backend.to_numpy(p.value) for p in model.parameters()])


def _tutorial(case: TutorialCase, dtype: Any, backend: Any) -> FnBench:
    """The Keras-tutorial model through ``model.fit`` as a user writes it (see the case)."""
    X64, y64 = case.data()
    X, y = _put(backend, X64, dtype), _put(backend, y64, dtype)
    kind = np.dtype(dtype).name
    loss = mlcore.loss("cross_entropy", from_logits=True)
    out: list[Any] = []

    def build() -> Any:
        layers: list[Any] = []
        width = case.features
        for h in case.hidden:
            layers += [mlcore.Dense(width, h, dtype=kind), mlcore.BatchNorm(h, dtype=kind),
                       mlcore.Activation("relu"), mlcore.Dropout(case.dropout)]
            width = h
        return mlcore.Sequential([*layers, mlcore.Dense(width, 2, dtype=kind)])

    def run() -> None:  # timed later, outside make()'s use_backend: select it again
        with mlcore.use_backend(backend.name):
            model = build()
            stop = mlcore.callbacks.EarlyStopping(monitor="val_loss", patience=case.patience)
            history = model.fit(X, y, loss=loss, optimizer="adam", lr=case.lr,
                                epochs=case.epochs, batch_size=case.batch,
                                validation_split=case.validation_split, callbacks=[stop],
                                verbose=False)
        out[:] = [model, len(history["loss"])]

    def result() -> list[Any]:
        model, epochs = out
        with mlcore.use_backend(backend.name):
            scores = model.predict(X[-case.validation_rows:, ...])
        predicted = np.argmax(backend.to_numpy(scores), axis=1)
        return [epochs, case.accuracy(predicted, y64)]

    return _bench(backend, run, result)


_BUILDERS: dict[str, Callable[..., FnBench]] = {
    "activation": _activation, "loss": _loss, "dense": _dense, "mlp_step": _step,
    "train": _train, "fit": _fit, "tutorial": _tutorial}
