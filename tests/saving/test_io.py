"""Saving and loading: exact round trips on and across backends, atomic writes, and clear
errors (never code execution) for truncated, tampered and foreign files."""

from __future__ import annotations

import json
import pathlib
import pickle
import sys
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore.errors import ModelFileError
from mlcore.saving.format import seal

safetensors_numpy = pytest.importorskip("safetensors.numpy")
TARGETS = mlcore.backend_names(available_only=True)


def _models() -> list[mlcore.Sequential]:
    return [
        mlcore.MLP([4, 6, 3], activation="tanh", output_activation="softmax", seed=0),
        mlcore.MLP([4, 5, 3], activation="prelu", seed=1, dtype="float64"),
        mlcore.Sequential([mlcore.Dense(4, 5, seed=2), mlcore.Activation("leaky_relu", alpha=0.2),
                           mlcore.PReLU(), mlcore.Dense(5, 3, bias=False, seed=3)]),
    ]


def _weights(model: mlcore.Sequential) -> dict[str, np.ndarray]:
    return {k: model.backend.to_numpy(v) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("target", TARGETS)
def test_round_trip_is_exact_across_backends(backend: Any, tmp_path: pathlib.Path,
                                             index: int, target: str) -> None:
    model = _models()[index]
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = mlcore.load(path, backend=target)
    assert loaded.backend.name == target and type(loaded) is type(model)
    assert loaded.config() == model.config()
    want, got = _weights(model), _weights(loaded)
    assert want.keys() == got.keys()
    assert all(np.array_equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)
    X = np.random.default_rng(0).standard_normal((3, 4))
    assert np.allclose(model.backend.to_numpy(model.predict(X)),
                       loaded.backend.to_numpy(loaded.predict(X)), rtol=1e-6, atol=1e-7)


def test_a_trained_model_pickles_with_its_backend(backend: Any) -> None:
    """pickle (scikit-learn's check_estimators_pickle, joblib, multiprocessing): the backend
    travels as its class and device, never as the library's modules."""
    model = mlcore.MLP([4, 5, 3], output_activation="softmax", seed=0)
    X = np.random.default_rng(0).standard_normal((6, 4))
    model.fit(X, [0, 1, 2, 0, 1, 2], loss="cross_entropy", epochs=2, verbose=False)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.backend.name == backend.name and repr(copy.backend) == repr(model.backend)
    np.testing.assert_array_equal(copy.backend.to_numpy(copy.predict(X)),
                                  model.backend.to_numpy(model.predict(X)))


def test_load_defaults_to_the_selected_backend(backend: Any, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.safetensors"
    mlcore.MLP([2, 2], seed=0).save(path)
    assert mlcore.load(path).backend.name == backend.name


def test_save_is_atomic_and_overwrites(backend: Any, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.safetensors"
    mlcore.MLP([2, 3], seed=0).save(path)
    mlcore.MLP([2, 4], seed=0).save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert mlcore.load(path).config()["sizes"] == [2, 4]


def _saved(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "m.safetensors"
    mlcore.MLP([3, 4, 2], seed=0).save(path)
    return path


def test_truncated_file_is_a_model_file_error(tmp_path: pathlib.Path) -> None:
    path = _saved(tmp_path)
    data = path.read_bytes()
    for cut in (0, 5, 40, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="not a readable mlcore model|failed its checksum"):
            mlcore.load(path)


def test_changed_weights_fail_the_checksum(tmp_path: pathlib.Path) -> None:
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="failed its checksum"):
        mlcore.load(path)


def _rewrite(path: pathlib.Path, change: Any) -> None:
    tensors = safetensors_numpy.load_file(str(path))
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    meta = json.loads(path.read_bytes()[8:8 + header_len])["__metadata__"]
    change(tensors, meta)
    meta["sha256"] = "0" * 64  # resealed: a forger can recompute the checksum
    path.write_bytes(seal(safetensors_numpy.save(tensors, metadata=meta)))


def test_unknown_layer_types_are_refused(tmp_path: pathlib.Path) -> None:
    path = _saved(tmp_path)

    def evil(tensors: dict[str, Any], meta: dict[str, str]) -> None:
        meta["mlcore.config"] = json.dumps({"type": "os.system", "layers": []})

    _rewrite(path, evil)
    with pytest.raises(ModelFileError, match="Unknown layer type 'os.system'"):
        mlcore.load(path)


def test_weights_that_do_not_fit_and_foreign_files(tmp_path: pathlib.Path) -> None:
    path = _saved(tmp_path)
    _rewrite(path, lambda t, m: m.update({"mlcore.config": json.dumps(
        {"type": "MLP", "sizes": [3, 5, 2], "activation": "relu", "output_activation": None,
         "bias": True, "dtype": "float32"})}))
    with pytest.raises(ModelFileError, match="do not fit the architecture"):
        mlcore.load(path)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(safetensors_numpy.save({"w": np.zeros(2, dtype=np.float32)}))
    with pytest.raises(ModelFileError, match="not an mlcore model"):
        mlcore.load(foreign)
    with pytest.raises(ModelFileError, match="No model file"):
        mlcore.load(tmp_path / "missing.safetensors")


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(_Boom.marker),))

    marker = ""


def test_a_pickle_is_never_executed(tmp_path: pathlib.Path) -> None:
    _Boom.marker = str(tmp_path / "executed")
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ModelFileError):
        mlcore.load(path)
    assert not (tmp_path / "executed").exists()


def test_missing_safetensors_says_how_to_install(tmp_path: pathlib.Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ModuleNotFoundError,
                       match=r"dependency of mlcore .*pip install safetensors"):
        mlcore.MLP([2, 2], seed=0).save(tmp_path / "m.safetensors")


# -- round 3: checkpoints through mlcore.load, unknown options, leftovers of killed saves -------
def test_load_reads_the_model_of_a_checkpoint(tmp_path: pathlib.Path) -> None:
    from mlcore.saving.checkpoint import save_checkpoint

    model = mlcore.MLP([3, 5, 2], seed=1)
    save_checkpoint(tmp_path / "ck.safetensors", model, mlcore.Adam(model.parameters()), epoch=2)
    loaded = mlcore.load(tmp_path / "ck.safetensors")
    X = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(loaded.backend.to_numpy(loaded.predict(X)),
                                  model.backend.to_numpy(model.predict(X)))


def test_a_checkpoint_with_an_unknown_optimiser_option_is_named(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcore.saving import checkpoint

    model = mlcore.MLP([3, 5, 2], seed=1)
    real = checkpoint._options
    monkeypatch.setattr(checkpoint, "_options", lambda opt: {**real(opt), "warp": 9})
    checkpoint.save_checkpoint(tmp_path / "ck.safetensors", model,
                               mlcore.Adam(model.parameters()), epoch=1)
    with pytest.raises(ModelFileError, match=r"option 'warp', which Adam here does not take"):
        checkpoint.load_checkpoint(tmp_path / "ck.safetensors")


def test_saving_removes_what_killed_saves_left(tmp_path: pathlib.Path) -> None:
    import os
    import time

    from mlcore.saving import io

    path = tmp_path / "m.safetensors"
    old, fresh = tmp_path / ".m.safetensors.deadbeef.tmp", tmp_path / ".m.safetensors.0badf00d.tmp"
    other = tmp_path / ".n.safetensors.deadbeef.tmp"
    for f in (old, fresh, other):
        f.write_bytes(b"x" * 64)
    past = time.time() - io.STALE_SECONDS - 5
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    mlcore.MLP([2, 2], seed=0).save(path)
    assert not old.exists()  # left by a dead writer
    assert fresh.exists() and other.exists()  # maybe a live writer; another file's
