"""The jax backend: devices and their reasons, conversions, 64-bit mode, immutable arrays."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from mlcore_jax import JaxBackend, parse_device

import mlcore
from mlcore.errors import BackendUnavailableError, InvalidParameterError


@pytest.mark.parametrize(("spec", "want"), [
    (None, None), ("", None), ("cpu", ("cpu", 0)), ("CUDA:1", ("gpu", 1)), ("gpu", ("gpu", 0)),
    ("tpu:2", ("tpu", 2)), (jax.devices("cpu")[0], ("cpu", 0)),
])
def test_parse_device(spec: object, want: object) -> None:
    assert parse_device(spec) == want


def test_bad_device_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"device='mps' is not a JAX device.*device=cpu"):
        parse_device("mps")
    with pytest.raises(InvalidParameterError, match="not a JAX device"):
        mlcore.get_backend("jax", device="cuda:x")


def test_absent_device_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "JAX sees only 1 cpu device(s)" in JaxBackend("cpu:1").unavailable_reason()
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(BackendUnavailableError, match="JAX has no gpu"):
            mlcore.get_backend("jax", device="gpu")
    monkeypatch.setenv("MLCORE_DEVICE", "mps")
    assert "MLCORE_DEVICE='mps' is not a JAX device" in JaxBackend().unavailable_reason()


def test_missing_jax_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jax", None)
    reason = JaxBackend().unavailable_reason()
    assert reason.startswith("JAX is not installed") and "mlcore-jax[jax]" in reason


def test_asarray_places_on_the_device_and_converts() -> None:
    b = JaxBackend("cpu")
    x = b.asarray(np.arange(6.0).reshape(2, 3), dtype=b.xp.float32)
    assert isinstance(x, jax.Array) and x.dtype == b.xp.float32
    assert b.device in x.devices() and b.asarray(x) is x
    assert b.to_numpy(x.T).flags.c_contiguous
    with pytest.raises(TypeError, match="dtype <U1"):
        b.asarray(["a"])


_X32 = """
import numpy as np, mlcore
b = mlcore.get_backend("jax")
print(b.asarray(np.ones(2)).dtype, b.asarray(np.arange(2)).dtype)
try:
    mlcore.get_backend("jax"); mlcore.use_backend("jax"); mlcore.Dense(2, 2, dtype="float64")
except TypeError as exc:
    print("error:", exc)
"""


def test_float64_needs_64_bit_mode_and_says_so() -> None:
    env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _X32], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.startswith("float32 int32")
    assert "asked for float64 but JAX's 64-bit mode is off" in out
    assert "Set JAX_ENABLE_X64=1" in out


def test_arrays_are_immutable_and_training_still_works() -> None:
    with mlcore.use_backend("jax"):
        model = mlcore.MLP([4, 8, 3], activation="relu", seed=0)
        X = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
        hist = model.fit(X, np.arange(32) % 3, loss="cross_entropy", epochs=5, lr=0.05,
                         verbose=False)
    with pytest.raises(TypeError):
        model.parameters()[0].value[0, 0] = 1.0
    assert hist["loss"][-1] < hist["loss"][0]


def test_same_seed_same_initial_weights_as_numpy() -> None:
    with mlcore.use_backend("numpy"):
        ref = mlcore.MLP([5, 7, 2], seed=3)
    with mlcore.use_backend("jax"):
        got = mlcore.MLP([5, 7, 2], seed=3)
    for a, b in zip(ref.parameters(), got.parameters(), strict=True):
        assert np.array_equal(np.asarray(a.value), got.backend.to_numpy(b.value))


def test_info_row() -> None:
    from mlcore.cli import info_report

    row = next(r for r in info_report()["backends"] if r["name"] == "jax")
    assert row["available"] and f"jax {jax.__version__}" in row["kernel"]
