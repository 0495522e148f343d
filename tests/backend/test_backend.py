"""Backend selection: precedence, context isolation, errors, the contract of each backend."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore import backend_choice, get_backend, use_backend
from mlcore.arrays.namespace import check_same_device, device_scope, namespace
from mlcore.errors import (
    BackendMismatchError,
    BackendNotFoundError,
    BackendUnavailableError,
    InvalidParameterError,
)


def test_default_is_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLCORE_BACKEND", raising=False)
    assert backend_choice() == ("numpy", "default")
    assert get_backend().name == "numpy"


def test_env_read_when_needed_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_BACKEND", "strict")
    assert backend_choice() == ("strict", "environment (MLCORE_BACKEND)")
    assert get_backend().name == "strict"


def test_precedence_argument_context_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_BACKEND", "numpy")
    with use_backend("strict"):
        assert backend_choice().source == "context (use_backend)"
        assert get_backend().name == "strict"
        assert get_backend("numpy").name == "numpy"
        assert backend_choice("numpy").source == "argument"
    assert get_backend().name == "numpy"


def test_use_backend_plain_call_stays_in_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLCORE_BACKEND", raising=False)

    def worker(out: list[str]) -> None:
        use_backend("strict")
        out.append(get_backend().name)

    out: list[str] = []
    t = threading.Thread(target=worker, args=(out,))
    t.start()
    t.join()
    assert out == ["strict"]
    assert get_backend().name == "numpy"  # the thread's plain call did not leak here


def test_context_isolated_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLCORE_BACKEND", raising=False)
    barrier = threading.Barrier(2)
    seen: dict[str, str] = {}

    def worker(name: str) -> None:
        with use_backend(name):
            barrier.wait()
            seen[name] = get_backend().name

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("numpy", "strict")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"numpy": "numpy", "strict": "strict"}


def test_context_isolated_across_asyncio_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLCORE_BACKEND", raising=False)

    async def task(name: str) -> str:
        with use_backend(name):
            await asyncio.sleep(0.01)
            return get_backend().name

    async def run() -> list[str]:
        return list(await asyncio.gather(task("strict"), task("numpy")))

    assert asyncio.run(run()) == ["strict", "numpy"]


def test_unknown_backend_lists_installed_and_install_hint() -> None:
    with pytest.raises(BackendNotFoundError) as err:
        get_backend("cupyy")
    msg = str(err.value)
    assert "Unknown backend 'cupyy'" in msg
    assert "numpy" in msg and "strict" in msg
    assert "Did you mean 'cupy'?" in msg


def test_unknown_backend_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLCORE_BACKEND", "nope")
    with pytest.raises(BackendNotFoundError, match="Installed: .*numpy"):
        get_backend()


def test_unavailable_backend_gives_its_reason() -> None:
    cupy = mlcore.plugins.registry().backends["cupy"]
    if cupy.is_available():
        pytest.skip("a GPU is present here")
    with pytest.raises(BackendUnavailableError, match="not usable here: CuPy"):
        get_backend("cupy")


def test_backend_names() -> None:
    assert {"numpy", "strict"} <= set(mlcore.backend_names(available_only=True))
    assert "cupy" in mlcore.backend_names()


def test_mixed_backends_error_names_arguments() -> None:
    a = get_backend("numpy").asarray([1.0, 2.0])
    b = get_backend("strict").asarray([1.0, 2.0])
    with pytest.raises(BackendMismatchError) as err:
        namespace(a, b, names=("pred", "target"))
    msg = str(err.value)
    assert "pred is a numpy array" in msg and "target is a strict array" in msg


def test_namespace_remembered_by_type_still_rejects_mixed_backends() -> None:
    a = get_backend("numpy").asarray([1.0, 2.0])
    b = get_backend("strict").asarray([1.0, 2.0])
    from array_api_compat import array_namespace

    from mlcore.arrays import namespace as _array

    _array._NAMESPACES.clear()
    assert namespace(a, a) is array_namespace(a)
    assert (type(a), type(a)) in _array._NAMESPACES  # remembered by the argument types
    assert namespace(b, b) is array_namespace(b) and namespace(b, b) is not namespace(a, a)
    with pytest.raises(BackendMismatchError):
        namespace(a, b)
    with pytest.raises(BackendMismatchError):
        namespace(a, b)  # a failure is never remembered


def test_mixed_devices_error_names_arguments() -> None:
    import array_api_strict as s

    a = s.asarray([1.0], device=s.Device("CPU_DEVICE"))
    b = s.asarray([1.0], device=s.Device("device1"))
    with pytest.raises(mlcore.DeviceMismatchError, match="x is on .*CPU_DEVICE.*w is on"):
        check_same_device(a, b, names=("x", "w"))


def test_device_scope_checks_and_yields_the_common_device() -> None:
    import array_api_strict as s

    a, b = s.asarray([1.0]), s.asarray([1.0], device=s.Device("device1"))
    with device_scope(a, a) as dev:
        assert dev == s.Device("CPU_DEVICE")  # a plain value: nothing entered
    with pytest.raises(mlcore.DeviceMismatchError, match="x is on"), device_scope(a, b, names="xw"):
        pass


def test_one_device_backends_accept_only_their_device() -> None:
    assert get_backend("numpy", device="cpu").name == "numpy"
    with use_backend("strict", device=get_backend("strict").device):
        assert get_backend().name == "strict"
    with pytest.raises(InvalidParameterError, match="'numpy' has one device, 'cpu'; received"):
        get_backend("numpy", device="cuda:0")


def test_backend_contract(backend: Any) -> None:
    xp = backend.xp
    x = backend.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=xp.float32)
    assert backend.owns(x) and x.dtype == xp.float32
    assert namespace(x) is not None
    host = backend.to_numpy(x)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, [[1, 2], [3, 4]])
    backend.synchronize()
    assert backend.is_available() and backend.unavailable_reason() == ""


def test_rng_same_seed_same_numbers_across_backends(backend: Any) -> None:
    xp = backend.xp
    a = backend.to_numpy(backend.rng(7).normal(0.0, 1.0, (3, 4), xp.float64))
    b = backend.to_numpy(backend.rng(7).normal(0.0, 1.0, (3, 4), xp.float64))
    ref = get_backend("numpy").to_numpy(
        get_backend("numpy").rng(7).normal(0.0, 1.0, (3, 4), np.float64))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, ref)
    perm = backend.to_numpy(backend.rng(1).permutation(10))
    assert sorted(perm.tolist()) == list(range(10))


def test_one_use_backend_object_entered_twice_and_in_a_thread() -> None:
    before = get_backend().name
    ctx = use_backend("strict")
    with ctx:
        assert get_backend().name == "strict"
    assert get_backend().name == before
    with ctx:  # a second entry selects it again
        assert get_backend().name == "strict"
    assert get_backend().name == before
    seen: list[str] = []

    def worker() -> None:
        with ctx:
            seen.append(get_backend().name)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == ["strict"]
    assert get_backend().name == before
