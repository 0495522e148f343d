"""The ``keras-jax`` competitor: Keras 3 on its JAX backend, as a practitioner uses it.

Training steps (:class:`~mlcore_bench.cases.StepCase`): a ``keras.Sequential`` of ``Dense``
layers holding the shared initial weights, compiled with Keras's Adam (β₁ 0.9, β₂ 0.999) or
SGD, the same loss from logits, and timed through ``model.train_on_batch`` (one jitted step
per call, Keras's own loop around it). Keras's Adam adds its ε to √v̂·√(1-β₂^t) where the
other competitors (torch.optim's form) add ε to √v̂: Keras's ε is set to 1e-8·√(1-β₂), so
the first step, the one the equality check compares, is the others' step exactly; later
steps differ in the ε term only, which changes no timing.

The tutorial fit (:class:`~mlcore_bench.cases.TutorialCase`): the same model built from
Keras layers (``Dense``, ``BatchNormalization``, ``ReLU``, ``Dropout``) and trained by
``model.fit(..., validation_split=0.2, callbacks=[EarlyStopping(...)])``.

Install with ``pip install 'mlcore-bench[keras]'``. Keras reads its backend once, at import:
this module sets ``KERAS_BACKEND=jax`` unless something imported Keras before, and refuses
to run when Keras was imported with another backend.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from .bench_reference import FnBench
from .cases import Case, StepCase, TutorialCase
from .timing import UnavailableError

__all__ = ["make", "status"]


def status() -> str:
    """Why ``keras-jax`` cannot run here, or "" when it can."""
    loaded = sys.modules.get("keras")
    if loaded is not None:
        name = loaded.backend.backend()
        return "" if name == "jax" else (
            f"Keras was imported with KERAS_BACKEND={name!r} before the benchmark; run it "
            f"with KERAS_BACKEND=jax")
    wanted = os.environ.get("KERAS_BACKEND", "jax")
    if wanted != "jax":
        return f"KERAS_BACKEND={wanted!r}; the keras-jax reference needs KERAS_BACKEND=jax"
    return ""


def _keras() -> Any:
    reason = status()
    if reason:
        raise UnavailableError(reason)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    return keras


def _check_dtype(dtype: Any) -> str:
    import jax

    kind = np.dtype(dtype).name
    if kind == "float64" and not jax.config.read("jax_enable_x64"):
        raise UnavailableError("float64 needs JAX's 64-bit mode (JAX_ENABLE_X64=1)")
    return kind


def make(case: Case, dtype: Any) -> FnBench:
    """The Keras competitor for ``case`` (training steps and the tutorial fit)."""
    if isinstance(case, StepCase):
        return _step(case, _check_dtype(dtype))
    if isinstance(case, TutorialCase):
        return _tutorial(case, _check_dtype(dtype))
    raise UnavailableError("keras-jax times training steps and the tutorial fit only")


def _step(case: StepCase, kind: str) -> FnBench:
    keras = _keras()
    X64, y64, weights = case.data()
    layers: list[Any] = [keras.Input((case.sizes[0],), dtype=kind)]
    n = len(case.sizes) - 1
    for i, width in enumerate(case.sizes[1:]):
        act = None if i == n - 1 else case.hidden
        layers.append(keras.layers.Dense(width, activation=act, dtype=kind))
    model = keras.Sequential(layers)
    # mlcore's and torch's W is (out, in); a Keras kernel is (in, out)
    model.set_weights([w.T.astype(kind) if w.ndim == 2 else w.astype(kind) for w in weights])
    if case.optimizer == "adam":
        eps = 1e-8 * (1.0 - 0.999) ** 0.5  # torch.optim's ε at step 1, in Keras's form
        opt = keras.optimizers.Adam(case.lr, beta_1=0.9, beta_2=0.999, epsilon=eps)
    else:
        opt = keras.optimizers.SGD(case.lr)
    if case.loss == "softmax_ce":
        loss, y = keras.losses.SparseCategoricalCrossentropy(from_logits=True), y64
    else:
        loss, y = keras.losses.BinaryCrossentropy(from_logits=True), y64[:, None].astype(kind)
    model.compile(optimizer=opt, loss=loss, jit_compile=True)
    X = X64.astype(kind)

    def result() -> list[np.ndarray]:
        return [np.asarray(w).T if w.ndim == 2 else np.asarray(w) for w in model.get_weights()]

    return FnBench(lambda: model.train_on_batch(X, y), result, lambda: None, "host",
                   {"keras": keras.__version__})


def _tutorial(case: TutorialCase, kind: str) -> FnBench:
    keras = _keras()
    X64, y64 = case.data()
    X = X64.astype(kind)
    out: list[Any] = []

    def build() -> Any:
        layers: list[Any] = [keras.Input((case.features,), dtype=kind)]
        for h in case.hidden:
            layers += [keras.layers.Dense(h, dtype=kind),
                       keras.layers.BatchNormalization(dtype=kind),
                       keras.layers.ReLU(dtype=kind), keras.layers.Dropout(case.dropout)]
        model = keras.Sequential([*layers, keras.layers.Dense(2, dtype=kind)])
        model.compile(optimizer=keras.optimizers.Adam(case.lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def step() -> None:
        model = build()
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=case.patience)
        history = model.fit(X, y64, batch_size=case.batch, epochs=case.epochs,
                            validation_split=case.validation_split, callbacks=[stop],
                            shuffle=True, verbose=0)
        out[:] = [model, len(history.history["loss"])]

    def result() -> list[Any]:
        model, epochs = out
        scores = model.predict(X[-case.validation_rows:], batch_size=4096, verbose=0)
        return [epochs, case.accuracy(np.argmax(scores, axis=1), y64)]

    return FnBench(step, result, lambda: None, "host", {"keras": keras.__version__})
