"""The CuPy backend: availability and its reasons, devices, host random numbers, memory.

Two halves. Without a GPU (CI, most machines) a fake ``cupy`` module is put in
``sys.modules`` to drive each path: CuPy missing, broken, no driver, no device, a device
number out of range, and a working fake with two devices. With a GPU the ``gpu`` fixture
gives the real backend and the second half runs; elsewhere it is skipped with the backend's
own reason.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from mlcore_cupy import CupyBackend, parse_device

import mlcore
from mlcore.arrays.namespace import check_same_device, device_scope
from mlcore.backend import XP_CALLS
from mlcore.cli import info_report, main
from mlcore.errors import BackendUnavailableError, DeviceMismatchError, InvalidParameterError
from mlcore.plugins import registry

ROOT = Path(__file__).resolve().parents[3]


# -- a fake cupy: just enough of its API, recording where arrays are made ----------------
class FakeCudaError(RuntimeError):
    """Stands for cupy.cuda.runtime.CUDARuntimeError."""


def _fake_cupy(count: int = 2, driver: int = 13000, error: Exception | None = None) -> Any:
    state: dict[str, Any] = {"current": 0, "synced": []}

    class Device:
        def __init__(self, id: int | None = None) -> None:  # noqa: A002 - CuPy's name
            self.id = state["current"] if id is None else id

        def __enter__(self) -> Device:
            self._prev, state["current"] = state["current"], self.id
            return self

        def __exit__(self, *exc: object) -> None:
            state["current"] = self._prev

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Device) and other.id == self.id

        __hash__ = object.__hash__

        def synchronize(self) -> None:
            state["synced"].append(self.id)

    class ndarray:  # noqa: N801 - CuPy's name
        def __init__(self, data: np.ndarray) -> None:
            self.data, self.device = data, Device(state["current"])

        def copy(self) -> ndarray:
            return ndarray(self.data.copy())

    def asarray(obj: Any, dtype: Any = None) -> ndarray:
        if isinstance(obj, ndarray):
            return obj if dtype is None else ndarray(obj.data.astype(dtype))
        return ndarray(np.asarray(obj, dtype=dtype))

    def get_device_count() -> int:
        if error is not None:
            raise error
        return count

    pool = types.SimpleNamespace(used_bytes=lambda: 3 * 2**20, total_bytes=lambda: 8 * 2**20)
    runtime = types.SimpleNamespace(
        driverGetVersion=lambda: driver, getDeviceCount=get_device_count,
        memGetInfo=lambda: (60 * 2**30, 80 * 2**30),
        getDeviceProperties=lambda i: {"name": b"Fake GPU"})
    mod = types.ModuleType("cupy")
    mod.__dict__.update(__version__="14.2.0", ndarray=ndarray, asarray=asarray,
                        asnumpy=lambda x: x.data.copy(), state=state,
                        get_default_memory_pool=lambda: pool,
                        cuda=types.SimpleNamespace(runtime=runtime, Device=Device))
    return mod


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a fake ``cupy`` (``fake_cupy(count=0)``...) for this test; MLCORE_DEVICE unset."""
    monkeypatch.delenv("MLCORE_DEVICE", raising=False)

    def install(**kw: Any) -> Any:
        mod = _fake_cupy(**kw)
        monkeypatch.setitem(sys.modules, "cupy", mod)
        # its Array API namespace, as far as get_backend looks (the functions it creates with)
        xp = types.ModuleType("array_api_compat.cupy")
        xp.__dict__.update(dict.fromkeys(XP_CALLS, None))
        monkeypatch.setitem(sys.modules, "array_api_compat.cupy", xp)
        return mod

    return install


# -- availability, each reason -----------------------------------------------------------
def test_reason_cupy_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ModuleNotFoundError
    b = CupyBackend()
    assert not b.is_available()
    assert b.unavailable_reason().startswith("CuPy is not installed. Install it with pip")
    assert "mlcore-cupy[cuda12]" in b.unavailable_reason()


def test_reason_cupy_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(
        "raise ImportError('libcudart.so.13: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    reason = CupyBackend().unavailable_reason()
    assert reason.startswith("CuPy is installed but failed to import: libcudart.so.13")


@pytest.mark.parametrize(("kw", "expected"), [
    ({"driver": 0}, "no NVIDIA CUDA driver was found"),
    ({"error": FakeCudaError("cudaErrorInsufficientDriver: CUDA driver version is "
                             "insufficient")}, "the CUDA driver is not usable"),
    ({"error": FakeCudaError("cudaErrorNoDevice: no CUDA-capable device is detected")},
     "no CUDA device was found (FakeCudaError: cudaErrorNoDevice"),
    ({"count": 0}, "no CUDA device was found (device count 0)"),
], ids=["no-driver", "old-driver", "no-device-error", "no-device-count"])
def test_reason_driver_and_device(fake_cupy: Any, kw: dict[str, Any], expected: str) -> None:
    fake_cupy(**kw)
    b = CupyBackend()
    assert not b.is_available()
    assert expected in b.unavailable_reason()


def test_reason_device_out_of_range(fake_cupy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cupy(count=2)
    monkeypatch.setenv("MLCORE_DEVICE", "cuda:3")
    assert CupyBackend().unavailable_reason() == (
        "MLCORE_DEVICE asks for cuda:3 but only 2 CUDA device(s) exist (cuda:0 to cuda:1).")


def test_reason_bad_mlcore_device(fake_cupy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cupy()
    monkeypatch.setenv("MLCORE_DEVICE", "gpu-one")
    assert "MLCORE_DEVICE='gpu-one' is not a CUDA device: expected 'cuda:N'" in (
        CupyBackend().unavailable_reason())


def test_available_with_a_device(fake_cupy: Any) -> None:
    fake_cupy(count=1)
    b = CupyBackend()
    assert b.is_available() and b.unavailable_reason() == ""
    assert b.device.id == 0


@pytest.fixture
def no_gpu_registry(monkeypatch: pytest.MonkeyPatch, fresh_registry: Any) -> Any:
    """The registry rebuilt while ``cupy`` sees no device."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=0))
    return fresh_registry


def test_selecting_cupy_without_gpu_fails_with_reason(
        no_gpu_registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_BACKEND", "cupy")
    with pytest.raises(BackendUnavailableError) as err:
        mlcore.get_backend()
    assert str(err.value) == (
        "Backend 'cupy' (chosen by environment (MLCORE_BACKEND)) is installed but not usable "
        "here: CuPy is installed but no CUDA device was found (device count 0).")
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        mlcore.use_backend("cupy")


def test_info_shows_the_reason_and_fails_when_cupy_chosen(
        no_gpu_registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLCORE_BACKEND", raising=False)
    out = CliRunner().invoke(main, ["info"])
    assert out.exit_code == 0
    assert "cupy     unavailable: CuPy is installed but no CUDA device was found" in out.output
    monkeypatch.setenv("MLCORE_BACKEND", "cupy")
    out = CliRunner().invoke(main, ["info"])
    assert out.exit_code == 1 and "no CUDA device was found" in out.output


# -- devices -----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "expected"), [
    (None, 0), ("", 0), ("cuda", 0), ("cuda:0", 0), ("CUDA:2", 2), (" 1 ", 1), (3, 3),
    (types.SimpleNamespace(id=1), 1),
])
def test_parse_device(spec: Any, expected: int) -> None:
    assert parse_device(spec) == expected


@pytest.mark.parametrize("spec", ["cpu", "cuda:-1", "cuda:x", -1, "1.5", True])
def test_parse_device_errors_say_the_form(spec: Any) -> None:
    with pytest.raises(ValueError, match=r"is not a CUDA device: expected 'cuda:N'"):
        parse_device(spec)


def test_device_argument_env_and_default(fake_cupy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cupy(count=2)
    assert CupyBackend().device_id == 0
    monkeypatch.setenv("MLCORE_DEVICE", "cuda:1")
    assert CupyBackend().device_id == 1
    assert CupyBackend("cuda:0").device_id == 0  # the argument wins over the environment
    assert CupyBackend().on_device(0).device_id == 0
    with pytest.raises(ValueError, match="device='tpu:0' is not a CUDA device"):
        CupyBackend("tpu:0")


def test_get_backend_and_use_backend_take_a_device(
        fake_cupy: Any, fresh_registry: Any) -> None:
    fake_cupy(count=2)
    assert mlcore.get_backend("cupy", device="cuda:1").device.id == 1
    with mlcore.use_backend("cupy", device="cuda:1"):
        assert mlcore.get_backend().device.id == 1
        assert mlcore.get_backend("numpy").device == "cpu"  # the context device is cupy's
    with pytest.raises(InvalidParameterError, match="'cupy': device='cuda:x' is not a CUDA"):
        mlcore.get_backend("cupy", device="cuda:x")
    with pytest.raises(BackendUnavailableError, match="asks for cuda:5 but only 2"):
        mlcore.get_backend("cupy", device="cuda:5")


def test_arrays_are_made_on_the_selected_device(fake_cupy: Any) -> None:
    cupy = fake_cupy(count=2)
    b = CupyBackend("cuda:1")
    x = b.asarray([1.0, 2.0], dtype=np.float32)
    w = b.rng(0).normal(0.0, 1.0, (2, 3), np.float32)
    assert x.device.id == 1 and w.device.id == 1 and b.owns(x)
    assert cupy.state["current"] == 0  # the device context was left again
    y = CupyBackend("cuda:0").asarray(x)  # asarray is the explicit transfer
    assert y.device.id == 0 and y is not x
    with pytest.raises(DeviceMismatchError, match="x is on .* w is on"):
        check_same_device(y, w, names=("x", "w"))


def test_device_scope_enters_the_inputs_device(fake_cupy: Any) -> None:
    cupy = fake_cupy(count=2)
    x = CupyBackend("cuda:1").asarray([1.0])
    with device_scope(x, x, names=("x", "w")) as dev:
        assert dev.id == 1 and cupy.state["current"] == 1
        assert cupy.asarray([0.0]).device.id == 1  # what CuPy creates lands on x's device
    assert cupy.state["current"] == 0


def test_synchronize_waits_on_the_backend_device(fake_cupy: Any) -> None:
    cupy = fake_cupy(count=2)
    CupyBackend("cuda:1").synchronize()
    assert cupy.state["synced"] == [1]


def test_rng_and_to_numpy_match_numpy(fake_cupy: Any) -> None:
    fake_cupy(count=1)
    b, ref = CupyBackend(), mlcore.get_backend("numpy")
    for draw in (lambda r: r.normal(0.0, 0.1, (4, 3), np.float32),
                 lambda r: r.uniform(-1.0, 1.0, (5,), np.float64),
                 lambda r: r.permutation(9)):
        got = b.to_numpy(draw(b.rng(42)))
        want = ref.to_numpy(draw(ref.rng(42)))
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_memory_info_line(fake_cupy: Any) -> None:
    fake_cupy(count=1)
    b = CupyBackend()
    assert b.memory_stats()["pool_used_bytes"] == 3 * 2**20
    assert b.memory_info() == ("cuda:0 (Fake GPU): memory pool used 3.0 MiB, held 8.0 MiB; "
                               "card 60.0 GiB free of 80.0 GiB")


def test_distribution_builds_with_cuda_extras_and_entry_point(tmp_path: Path) -> None:
    """``mlcore-cupy`` builds into a wheel that pip can install with ``[cuda12]``/``[cuda13]``."""
    setuptools = pytest.importorskip("setuptools")
    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.importorskip("wheel")  # older setuptools builds wheels through it
    src = tmp_path / "cupy"
    shutil.copytree(ROOT / "backends" / "cupy", src,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
           "--no-index", "-w", str(tmp_path / "dist"), str(src)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("mlcore_cupy-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read("mlcore_cupy-0.1.0.dist-info/METADATA").decode()
        entry_points = z.read("mlcore_cupy-0.1.0.dist-info/entry_points.txt").decode()
        assert "mlcore_cupy/py.typed" in z.namelist()
    assert 'Requires-Dist: cupy-cuda12x>=13; extra == "cuda12"' in meta
    assert 'Requires-Dist: cupy-cuda13x>=14; extra == "cuda13"' in meta
    assert "[mlcore]\ncupy = mlcore_cupy" in entry_points
    assert "cupy" in {ep.name for ep in md.entry_points(group="mlcore")}  # installed here too


@pytest.mark.slow
def test_backend_tests_skip_with_the_reason_here() -> None:
    """On a machine without a GPU, the cupy-parametrised tests skip and say why."""
    b = registry().backends["cupy"]
    if b.is_available():
        pytest.skip("a GPU is usable here")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p",
           "no:xdist", "tests/backend/test_backend.py::test_backend_contract"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env=env | {"MLCORE_BACKEND": "cupy", "COLUMNS": "300"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout
    assert f"cupy unavailable: {b.unavailable_reason()}" in out.stdout.replace("\n", "")


# -- on a real GPU -----------------------------------------------------------------------
on_gpu = pytest.mark.needs_backend("cupy")  # without one: reported with cupy's other tests


@pytest.fixture
def gpu() -> Any:
    """The installed cupy backend when a GPU is usable; else skip with its reason."""
    b = registry().backends["cupy"]
    if not b.is_available():
        pytest.skip(f"cupy unavailable: {b.unavailable_reason()}")
    return b


def _device_count(gpu: Any) -> int:
    return int(gpu.lib.cuda.runtime.getDeviceCount())


@pytest.fixture
def two_gpus(gpu: Any) -> Any:
    if _device_count(gpu) < 2:
        pytest.skip(f"needs two CUDA devices; this machine has {_device_count(gpu)}")
    return gpu


@on_gpu
def test_gpu_arrays_live_on_the_backend_device(gpu: Any) -> None:
    xp = gpu.xp
    x = gpu.asarray([[1.0, 2.0]], dtype=xp.float32)
    w = gpu.rng(0).normal(0.0, 1.0, (3, 2), xp.float32)
    assert gpu.owns(x) and gpu.owns(w) and not gpu.owns(np.zeros(1))
    assert x.device == gpu.device and w.device == gpu.device
    with device_scope(x, w) as dev:
        assert dev == gpu.device and gpu.lib.cuda.Device().id == gpu.device_id
        z = xp.zeros((2,), dtype=xp.float32, device=dev)
        assert z.device == gpu.device and (x @ w.T).device == gpu.device


@on_gpu
def test_gpu_core_activation_stays_on_device(gpu: Any) -> None:
    x = gpu.asarray([[-1.0, 0.5]], dtype=gpu.xp.float32)
    fn = mlcore.activation("relu")
    y = fn.forward(x)
    dx = fn.backward(x, y, gpu.xp.ones_like(y))
    assert gpu.owns(y) and y.device == x.device and dx.device == x.device
    np.testing.assert_array_equal(gpu.to_numpy(y), [[0.0, 0.5]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@on_gpu
def test_gpu_rng_equals_numpy(gpu: Any, dtype: str) -> None:
    ref = mlcore.get_backend("numpy")
    for draw in (lambda r, d: r.normal(0.0, 0.05, (64, 33), d),
                 lambda r, d: r.uniform(-0.3, 0.3, (17,), d),
                 lambda r, d: r.permutation(100)):
        got = gpu.to_numpy(draw(gpu.rng(123), getattr(gpu.xp, dtype)))
        np.testing.assert_array_equal(got, ref.to_numpy(draw(ref.rng(123), np.dtype(dtype))))


@on_gpu
def test_gpu_to_numpy_is_a_host_copy(gpu: Any) -> None:
    x = gpu.asarray([1.0, 2.0, 3.0])
    host = gpu.to_numpy(x)
    assert type(host) is np.ndarray
    host[0] = 99.0
    np.testing.assert_array_equal(gpu.to_numpy(x), [1.0, 2.0, 3.0])


@on_gpu
def test_gpu_synchronize_waits_for_queued_work(gpu: Any) -> None:
    with gpu.device:
        a = gpu.rng(0).normal(0.0, 1.0, (2048, 2048), gpu.xp.float32)
        for _ in range(4):
            a = a @ a / 2048.0
        gpu.synchronize()
        assert gpu.lib.cuda.get_current_stream().done


@on_gpu
def test_gpu_memory_pool_is_reported(gpu: Any) -> None:
    before = gpu.memory_stats()["pool_used_bytes"]
    x = gpu.asarray(np.zeros((1024, 1024), dtype=np.float32))  # 4 MiB
    assert gpu.memory_stats()["pool_used_bytes"] >= before + x.nbytes
    peak = gpu.memory_stats()["pool_used_bytes"]
    del x
    assert gpu.memory_stats()["pool_used_bytes"] <= peak - 4 * 2**20
    assert "memory pool used" in gpu.memory_info()
    rows = {r["name"]: r for r in info_report()["backends"]}
    assert "memory pool used" in rows["cupy"]["memory"]


@on_gpu
def test_gpu_get_backend_with_device(gpu: Any) -> None:
    b = mlcore.get_backend("cupy", device=f"cuda:{gpu.device_id}")
    assert b.device == gpu.device and b.asarray([1.0]).device == gpu.device


@on_gpu
def test_gpu_mixed_devices_raise(two_gpus: Any) -> None:
    x0 = two_gpus.on_device(0).asarray([1.0])
    x1 = two_gpus.on_device(1).asarray([1.0])
    with pytest.raises(DeviceMismatchError, match="pred is on .*Device 0.* target is on"):
        check_same_device(x0, x1, names=("pred", "target"))
    with pytest.raises(DeviceMismatchError), device_scope(x0, x1):
        pass


@on_gpu
def test_gpu_second_device_keeps_results_there(two_gpus: Any) -> None:
    b1 = two_gpus.on_device(1)
    x = b1.asarray([[-1.0, 2.0]], dtype=b1.xp.float32)
    with device_scope(x) as dev:
        y = mlcore.activation("relu").forward(x)
        z = b1.xp.zeros_like(x)
    assert dev.id == 1 and y.device == x.device and z.device == x.device
    moved = two_gpus.on_device(0).asarray(x)  # explicit transfer
    assert moved.device.id == 0
