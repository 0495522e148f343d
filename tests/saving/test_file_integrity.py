"""Model files as a careless or hostile user meets them: flipped bits, forged headers, deep
nesting, symlinks, permissions, read-only files, missing folders, custom layers."""

from __future__ import annotations

import json
import os
import pathlib
import stat
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlcore
from mlcore.errors import InvalidParameterError, ModelFileError
from mlcore.layers import layer_types
from mlcore.saving import format as _modelfile

safetensors_numpy = pytest.importorskip("safetensors.numpy")


@pytest.fixture(scope="module")
def saved_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("saved") / "m.safetensors"
    mlcore.MLP([3, 4, 2], activation="relu", seed=0).save(path)
    return path.read_bytes()


def _forge(meta: dict[str, str], tensors: dict[str, Any]) -> bytes:
    """A file with a correct checksum: what a forger who read mlcore's source can write."""
    meta = {"format": "mlcore", "format_version": "2", **meta, "sha256": "0" * 64}
    return _modelfile.seal(safetensors_numpy.save(tensors, metadata=meta))


def test_architecture_bit_flip_is_caught(tmp_path: pathlib.Path, saved_bytes: bytes) -> None:
    data = bytearray(saved_bytes)
    at = data.index(b"relu")
    data[at] ^= ord("r") ^ ord("s")  # relu -> selu, one bit
    assert bytes(data[at:at + 4]) == b"selu"
    path = tmp_path / "m.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="failed its checksum"):
        mlcore.load(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 7)), min_size=1,
                      max_size=3))
def test_random_bit_flips_never_load(tmp_path_factory: pytest.TempPathFactory,
                                     saved_bytes: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(saved_bytes)
    for at, bit in flips:
        data[at % len(data)] ^= 1 << bit
    if bytes(data) == saved_bytes:  # two flips of one bit undo each other
        return
    path = tmp_path_factory.mktemp("flip") / "m.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        mlcore.load(path)


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 10**9), extra=st.binary(max_size=8))
def test_truncations_and_appends_never_load(tmp_path_factory: pytest.TempPathFactory,
                                            saved_bytes: bytes, cut: int, extra: bytes) -> None:
    data = saved_bytes[: cut % len(saved_bytes)] + extra
    path = tmp_path_factory.mktemp("cut") / "m.safetensors"
    path.write_bytes(data)
    with pytest.raises(ModelFileError):
        mlcore.load(path)


def test_huge_declared_sizes_are_refused_before_building(tmp_path: pathlib.Path) -> None:
    config = {"type": "MLP", "sizes": [30000, 30000], "activation": "relu",
              "output_activation": None, "bias": True, "dtype": "float32"}
    blob = _forge({"mlcore.config": json.dumps(config)},
                  {"layers.0.weight": np.zeros((1, 1), np.float32)})
    assert len(blob) < 600
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob)
    with pytest.raises(ModelFileError, match=r"do not fit the architecture.*\(30000, 30000\)"):
        mlcore.load(path)


@pytest.mark.parametrize("bad", [{"type": "Dense", "in_features": True, "out_features": 2,
                                  "bias": False, "dtype": "float32"},
                                 {"type": "Dense", "in_features": 2.5, "out_features": 2,
                                  "bias": False, "dtype": "float32"},
                                 {"type": "Dense", "in_features": -2, "out_features": 2,
                                  "bias": False, "dtype": "float32"},
                                 {"type": "Dense", "in_features": 2, "out_features": 2,
                                  "bias": False, "dtype": "int8"},
                                 {"type": "Sequential", "layers": "abc"},
                                 ["not", "a", "layer"]])
def test_malformed_architectures_are_refused(tmp_path: pathlib.Path, bad: Any) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(_forge({"mlcore.config": json.dumps(bad)},
                            {"w": np.zeros(2, np.float32)}))
    with pytest.raises(ModelFileError):
        mlcore.load(path)


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deep_nesting_is_refused(tmp_path: pathlib.Path, depth: int) -> None:
    text = '{"type": "Sequential", "layers": [' * depth + "]}" * depth
    path = tmp_path / "m.safetensors"
    path.write_bytes(_forge({"mlcore.config": text}, {"w": np.zeros(2, np.float32)}))
    with pytest.raises(ModelFileError, match="levels deep|architecture JSON"):
        mlcore.load(path)


def test_version_1_files_still_load(tmp_path: pathlib.Path) -> None:
    model = mlcore.MLP([3, 2], seed=0)
    tensors = {k: np.ascontiguousarray(model.backend.to_numpy(v))
               for k, v in model.state_dict().items()}
    meta = {"format": "mlcore", "format_version": "1", "mlcore.config": json.dumps(model.config()),
            "sha256": _modelfile.tensor_digest(tensors)}
    path = tmp_path / "old.safetensors"
    path.write_bytes(safetensors_numpy.save(tensors, metadata=meta))
    assert mlcore.load(path).config() == model.config()
    tensors["layers.0.bias"] = tensors["layers.0.bias"] + 1
    path.write_bytes(safetensors_numpy.save(tensors, metadata=meta))
    with pytest.raises(ModelFileError, match="failed its checksum"):
        mlcore.load(path)


def test_unknown_version_is_named(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(_forge({"format_version": "9", "mlcore.config": "{}"}, {}))
    with pytest.raises(ModelFileError, match="format version '9'.*reads versions 1, 2"):
        mlcore.load(path)


def test_layer_types_agree() -> None:
    # mlcore's own types; installed plugins (mlcore-layers-extra) add theirs
    assert set(_modelfile.LAYER_TYPES) <= set(layer_types())
    assert set(layer_types()) - set(_modelfile.LAYER_TYPES) == set(
        mlcore.plugins.registry().names("layers")) - set(_modelfile.LAYER_TYPES)


# -- saving ---------------------------------------------------------------------------------
def test_save_writes_through_a_symlink(tmp_path: pathlib.Path) -> None:
    real = tmp_path / "real.safetensors"
    mlcore.MLP([2, 2], seed=0).save(real)
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    mlcore.MLP([2, 5], seed=0).save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert mlcore.load(real).config()["sizes"] == [2, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.safetensors", "real.safetensors"]


def test_save_keeps_permissions_and_uses_the_umask(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.safetensors"
    mlcore.MLP([2, 2], seed=0).save(path)
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.safetensors"
        mlcore.MLP([2, 2], seed=0).save(fresh)
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    finally:
        os.umask(old)
    path.chmod(0o640)
    mlcore.MLP([2, 3], seed=0).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_refuses_a_read_only_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.safetensors"
    mlcore.MLP([2, 2], seed=0).save(path)
    path.chmod(0o444)
    with pytest.raises(ModelFileError, match=r"m.safetensors': the file is read-only.*chmod u\+w"):
        mlcore.MLP([2, 3], seed=0).save(path)
    path.chmod(0o644)
    assert mlcore.load(path).config()["sizes"] == [2, 2]


def test_save_errors_name_the_users_path(tmp_path: pathlib.Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError, match=r"'missing/dir/m.safetensors'.*'missing/dir' "
                                             r"does not exist"):
        mlcore.MLP([2, 2], seed=0).save("missing/dir/m.safetensors")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelFileError, match="'folder': it is a folder"):
        mlcore.MLP([2, 2], seed=0).save("folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


class _Custom(mlcore.Layer):
    def forward(self, x: Any, xp: Any = None, *, input_grad: bool = True) -> Any:
        return x, lambda dy: dy


class _Described(_Custom):
    def config(self) -> dict[str, Any]:
        return {"type": "Custom"}


@pytest.mark.parametrize("layer", [_Custom(), _Described()])
def test_saving_a_custom_layer_says_why(tmp_path: pathlib.Path, layer: mlcore.Layer) -> None:
    model = mlcore.Sequential([mlcore.Dense(2, 2, seed=0), layer])
    with pytest.raises(InvalidParameterError, match=r"custom layer.*Dense, PReLU.*state_dict"):
        model.save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_and_load_check_the_path_type() -> None:
    with pytest.raises(InvalidParameterError, match="file path"):
        mlcore.load(3)  # type: ignore[arg-type]
