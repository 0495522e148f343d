"""The torch backend: devices and their reasons, conversions, no autograd, threads, kernels."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from mlcore_torch import TorchBackend, mlcore_kernel, parse_device

import mlcore
from mlcore.errors import BackendUnavailableError, InvalidParameterError


@pytest.mark.parametrize(("spec", "want"), [
    (None, "cpu"), ("", "cpu"), ("CPU", "cpu"), ("cuda", "cuda:0"), ("cuda:3", "cuda:3"),
    (2, "cuda:2"), ("mps", "mps"), (torch.device("cuda", 1), "cuda:1"),
])
def test_parse_device(spec: object, want: str) -> None:
    assert parse_device(spec) == want


def test_bad_device_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"device='tpu' is not a torch device.*cuda:0"):
        parse_device("tpu")
    with pytest.raises(InvalidParameterError, match="not a torch device"):
        mlcore.get_backend("torch", device="cuda:x")


def test_mlcore_device_is_read_when_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    b = TorchBackend()
    monkeypatch.setenv("MLCORE_DEVICE", "cuda:1")
    assert b.wanted_device() == ("cuda:1", "MLCORE_DEVICE")
    monkeypatch.setenv("MLCORE_DEVICE", "nonsense")
    assert "MLCORE_DEVICE='nonsense' is not a torch device" in b.unavailable_reason()
    monkeypatch.delenv("MLCORE_DEVICE")
    assert b.device == torch.device("cpu") and b.is_available()


def test_missing_torch_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    reason = TorchBackend().unavailable_reason()
    assert reason.startswith("PyTorch is not installed") and "mlcore-torch[torch]" in reason


def test_absent_cuda_device_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = TorchBackend("cuda:0").unavailable_reason()
    assert "device asks for cuda:0 but torch" in reason and "sees no CUDA device" in reason
    with pytest.raises(BackendUnavailableError, match="sees no CUDA device"):
        mlcore.get_backend("torch", device="cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "only 2 CUDA device(s) exist (cuda:0 to cuda:1)" in TorchBackend(
        "cuda:2").unavailable_reason()
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert "Metal backend is not available" in TorchBackend("mps").unavailable_reason()


def test_asarray_shares_writeable_host_memory_and_copies_the_rest() -> None:
    b = TorchBackend()
    host = np.arange(6.0).reshape(2, 3)
    shared = b.asarray(host)
    host[0, 0] = 7.0
    assert shared[0, 0] == 7.0 and shared.dtype == torch.float64
    frozen = np.arange(3.0)
    frozen.flags.writeable = False
    copied = b.asarray(frozen, dtype=torch.float32)
    assert copied.dtype == torch.float32 and copied.is_contiguous()
    assert b.asarray([1, 2]).dtype == torch.int64
    with pytest.raises(TypeError, match="dtype <U1"):
        b.asarray(["a"])


def test_asarray_detaches_and_to_numpy_copies() -> None:
    b = TorchBackend()
    t = torch.ones(3, requires_grad=True)
    assert not b.asarray(t).requires_grad
    out = b.to_numpy(b.asarray(np.ones((2, 3))).T)
    assert out.flags.c_contiguous and out.shape == (3, 2)


def test_training_keeps_no_autograd_graph_and_torch_threads() -> None:
    threads = torch.get_num_threads()
    with mlcore.use_backend("torch"):
        model = mlcore.MLP([4, 8, 3], activation="tanh", seed=0)
        X = np.random.default_rng(0).normal(size=(16, 4))
        model.fit(X, np.arange(16) % 3, loss="cross_entropy", epochs=2, verbose=False)
    for p in model.parameters():
        assert not p.value.requires_grad and p.value.grad_fn is None
    assert torch.get_num_threads() == threads


def test_same_seed_same_initial_weights_as_numpy() -> None:
    with mlcore.use_backend("numpy"):
        ref = mlcore.MLP([5, 7, 2], seed=3)
    with mlcore.use_backend("torch"):
        got = mlcore.MLP([5, 7, 2], seed=3)
    for a, b in zip(ref.parameters(), got.parameters(), strict=True):
        assert np.array_equal(np.asarray(a.value), got.backend.to_numpy(b.value))


def test_fused_updates_equal_the_plain_passes() -> None:
    import array_api_compat.torch as xp

    adam, sgd = mlcore_kernel("adam_update", xp), mlcore_kernel("sgd_update", xp)
    assert mlcore_kernel("adam_update", np) is None and mlcore_kernel("nope", xp) is None
    gen = torch.Generator().manual_seed(0)
    p, g = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    m, v = torch.randn(50, generator=gen), torch.rand(50, generator=gen)
    p2, m2, v2 = p.clone(), m * 0.9 + g, v * 0.999 + g * g
    adam(p, g, m, v, 0.9, 0.999, 1e-8, 3.0)
    p2 -= m2 / ((torch.sqrt(v2) + 1e-8) * 3.0)
    torch.testing.assert_close(p, p2, rtol=2e-7, atol=0.0)
    torch.testing.assert_close(m, m2, rtol=0.0, atol=0.0)
    q = p.clone()
    sgd(p, g, 0.1)
    torch.testing.assert_close(p, q - 0.1 * g, rtol=2e-7, atol=1e-7)


def test_info_row() -> None:
    from mlcore.cli import info_report

    row = next(r for r in info_report()["backends"] if r["name"] == "torch")
    assert row["available"] and row["device"] == "cpu"
    assert f"torch {torch.__version__}" in row["kernel"] and "thread" in row["kernel"]
