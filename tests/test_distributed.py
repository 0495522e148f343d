"""mlcore.distributed: a single process (no MPI), the batch split and buckets, and real
2- and 3-process jobs over loopback (mpiexec, each bounded by a subprocess timeout)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mlcore
from mlcore import distributed
from mlcore.distributed.parallel import DataParallel, _plan_buckets
from mlcore.errors import InvalidParameterError

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import distributed_worker as worker  # noqa: E402

TIMEOUT = 120  # seconds for one MPI job; the jobs take a few seconds each


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'mlcore[mpi]')")
    from mlcore.distributed.launch import find_mpiexec

    try:
        return find_mpiexec()
    except Exception as exc:  # click.ClickException: no launcher installed
        pytest.skip(str(exc))


def _job(k: int, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = {key: v for key, v in os.environ.items() if not key.startswith(("PMI", "MLCORE_DIST"))}
    env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MLCORE_NUMPY_JIT": "0"}
    cmd = [_mpiexec(), "-n", str(k), sys.executable, str(HERE / "distributed_worker.py"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


# -- a single process ----------------------------------------------------------------------
def test_single_process_is_rank_0_of_1_without_importing_mpi4py() -> None:
    code = ("import sys, mlcore.distributed as d; c = d.init(); "
            "print(d.rank(), d.size(), d.is_main(), c.size, 'mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "MLCORE_DIST"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == ["0", "1", "True", "1", "False"]


def test_single_process_collectives_return_their_input(backend: mlcore.Backend) -> None:
    comm = distributed.communicator(backend)
    x = backend.asarray([1.0, 2.0])
    assert comm.allreduce(x) is x and comm.broadcast(x) is x
    assert comm.allgather_object({"a": 1}) == [{"a": 1}]


def test_fit_distributed_in_one_process_changes_nothing(backend: mlcore.Backend) -> None:
    a, ha = worker.run(backend.name, "adam", 8, dp=False)
    b, hb = worker.run(backend.name, "adam", 8, dp=True)
    assert ha == hb
    for k, v in worker.weights(a).items():
        np.testing.assert_array_equal(v, worker.weights(b)[k])


def test_a_distributed_stream_needs_steps_per_epoch() -> None:
    model = mlcore.MLP([2, 1])
    with pytest.raises(InvalidParameterError, match="needs steps_per_epoch"):
        model.fit([([[0.0, 1.0]], [[1.0]])], loss="mse", distributed=True, verbose=False)


def test_fit_rejects_a_bad_distributed_value() -> None:
    model = mlcore.MLP([2, 1])
    with pytest.raises(InvalidParameterError, match="distributed must be True, False"):
        model.fit([[0.0, 1.0]], [[1.0]], loss="mse", distributed="yes", verbose=False)


def test_environment_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcore.distributed._world import launched

    monkeypatch.setenv("MLCORE_DISTRIBUTED", "maybe")
    with pytest.raises(mlcore.DistributedError, match="must be 'mpi' or 'off'"):
        launched()
    monkeypatch.setenv("MLCORE_DISTRIBUTED", "off")
    monkeypatch.setenv("PMI_RANK", "0")
    assert not launched()


# -- the pieces, with a stand-in communicator ----------------------------------------------
class _Fake:
    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size


@pytest.mark.parametrize(("n", "batch", "k"), [(50, 4, 3), (10, 1, 3), (7, 5, 2), (1, 2, 3)])
def test_each_global_batch_is_split_into_contiguous_near_equal_slices(
        n: int, batch: int, k: int) -> None:
    slices = [DataParallel(comm=_Fake(r, k)).batches(n, batch) for r in range(k)]  # type: ignore[arg-type]
    for j, (start, stop) in enumerate(zip(range(0, n, k * batch),
                                          [min(s + k * batch, n) for s in range(0, n, k * batch)],
                                          strict=True)):
        parts = [slices[r][j] for r in range(k)]
        assert parts[0][0] == start and parts[-1][1] == stop
        assert all(parts[r][1] == parts[r + 1][0] for r in range(k - 1))
        sizes = [b - a for a, b in parts]
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= batch


def test_buckets_bound_the_message_and_keep_the_order() -> None:
    params = mlcore.MLP([784, 512, 512, 10]).parameters()
    assert _plan_buckets(params, 25 * 2**20 // 4) == [list(range(6))]  # one message
    buckets = _plan_buckets(params, 300_000)
    assert [i for b in buckets for i in b] == list(range(6)) and len(buckets) > 1
    assert all(sum(math.prod(params[i].shape) for i in b) <= 300_000 or len(b) == 1
               for b in buckets)


def test_bucket_bytes_is_checked() -> None:
    with pytest.raises(mlcore.DistributedError, match="bucket_bytes must be a positive"):
        DataParallel(bucket_bytes=0)


def test_launch_builds_the_mpiexec_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlcore.cli import main

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    result = CliRunner().invoke(main, ["launch", "-n", "3", "--mpiexec", str(fake), "--dry-run",
                                       str(script), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(fake), "-n", "3", sys.executable, "-m", "mpi4py",
                                     str(script), "--epochs", "2"]
    missing = CliRunner().invoke(main, ["launch", "-n", "2", str(tmp_path / "nope.py")])
    assert missing.exit_code != 0 and "no such file" in missing.output


# -- real jobs over loopback ---------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3])
def test_k_processes_match_one_process_with_k_times_the_batch(k: int, tmp_path: Path) -> None:
    batch = 4
    job = _job(k, "equivalence", str(tmp_path), str(batch))
    assert job.returncode == 0, job.stderr[-3000:]
    for backend in ("numpy", "strict"):
        for optimizer in ("sgd", "adam"):
            name = f"{backend}-{optimizer}"
            ranks = [dict(np.load(tmp_path / f"{name}-rank{r}.npz")) for r in range(k)]
            for other in ranks[1:]:  # identical weights on every process, bit for bit
                for key, value in ranks[0].items():
                    np.testing.assert_array_equal(other[key], value, err_msg=name)
            model, history = worker.run(backend, optimizer, k * batch, dp=False,
                                        metrics=["f1"])
            for key, value in worker.weights(model).items():
                np.testing.assert_allclose(ranks[0][key], value, rtol=1e-9, atol=1e-12,
                                           err_msg=f"{name} {key}")
            distributed_history = json.loads((tmp_path / f"{name}.json").read_text())
            for key, values in history.items():
                np.testing.assert_allclose(distributed_history[key], values, rtol=1e-9,
                                           err_msg=f"{name} {key}")


def test_callbacks_are_decided_on_rank_0_and_metrics_see_every_batch(tmp_path: Path) -> None:
    job = _job(2, "toolkit", str(tmp_path), "4")
    assert job.returncode == 0, job.stderr[-3000:]
    assert (tmp_path / "calls-rank0.txt").read_text().split() == ["0", "1", "2"]
    assert not (tmp_path / "calls-rank1.txt").exists()  # callbacks ran once, on rank 0
    assert (tmp_path / "best.safetensors").is_file()
    h0, h1 = (json.loads((tmp_path / f"toolkit-rank{r}.json").read_text()) for r in (0, 1))
    assert h0 == h1 and len(h0["loss"]) == 3 and h0["lr"] == [0.005, 0.0025, 0.00125]
    w0, w1 = (dict(np.load(tmp_path / f"toolkit-rank{r}.npz")) for r in (0, 1))
    for key, value in w0.items():
        np.testing.assert_array_equal(w1[key], value)
    single = tmp_path / "single"
    single.mkdir()
    model, history = worker.run("numpy", "adam", 8, dp=False, epochs=6,
                                metrics=worker.TOOLKIT_METRICS,
                                callbacks=worker.toolkit_callbacks(single))
    assert set(history) == set(h0)
    for key, values in history.items():
        np.testing.assert_allclose(h0[key], values, rtol=1e-9, err_msg=key)
    for key, value in worker.weights(model).items():
        np.testing.assert_allclose(w0[key], value, rtol=1e-9, atol=1e-12, err_msg=key)


def test_streams_of_k_processes_match_one_stream_of_k_times_the_batch(tmp_path: Path) -> None:
    job = _job(2, "stream", str(tmp_path), "4")
    assert job.returncode == 0, job.stderr[-3000:]
    w0, w1 = (dict(np.load(tmp_path / f"stream-rank{r}.npz")) for r in (0, 1))
    model, history = worker.stream_fit(8, 0, 1, dp=False)
    for key, value in worker.weights(model).items():
        np.testing.assert_array_equal(w1[key], w0[key])
        np.testing.assert_allclose(w0[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    h0 = json.loads((tmp_path / "stream-rank0.json").read_text())
    for key, values in history.items():
        np.testing.assert_allclose(h0[key], values, rtol=1e-9, err_msg=key)


def test_a_stream_that_ends_early_stops_every_process(tmp_path: Path) -> None:
    job = _job(2, "short-stream", str(tmp_path), "4", timeout=60)
    assert job.returncode != 0
    assert "stream of process 1 of 2 ended after 5 of steps_per_epoch=6" in job.stderr


def test_a_failing_process_stops_every_process_with_its_error(tmp_path: Path) -> None:
    began = time.monotonic()
    job = _job(2, "fault", str(tmp_path), timeout=60)
    assert job.returncode != 0
    assert time.monotonic() - began < 30
    assert "process 1 of 2 failed in distributed fit" in job.stderr
    assert "injected failure on rank 1" in job.stderr
    assert not list(tmp_path.glob("finished-*"))


def test_an_uncaught_exception_after_init_ends_the_job(tmp_path: Path) -> None:
    began = time.monotonic()
    job = _job(2, "uncaught", str(tmp_path), timeout=60)
    assert job.returncode != 0 and time.monotonic() - began < 30
    assert "process 1 of 2 failed in an uncaught exception: ValueError: uncaught on rank 1" \
        in job.stderr
    assert not list(tmp_path.glob("finished-*"))


@pytest.mark.parametrize("missing", [1, 0])
@pytest.mark.slow
def test_a_process_that_never_reaches_fit_ends_the_job_naming_it(missing: int,
                                                                 tmp_path: Path) -> None:
    began = time.monotonic()
    job = _job(2, "absent", str(tmp_path), "3", str(missing), timeout=60)
    assert job.returncode != 0
    assert time.monotonic() - began < 40
    if missing == 1:
        assert "process 1 of 2 never reached fit(..., distributed=True) within 3 s" in job.stderr
    else:
        assert "process 1 of 2 waited 3 s for process 0 to reach fit" in job.stderr
    assert "MLCORE_DISTRIBUTED_TIMEOUT" in job.stderr


def test_the_distributed_timeout_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcore.distributed._world import DEFAULT_TIMEOUT, timeout_seconds

    monkeypatch.delenv("MLCORE_DISTRIBUTED_TIMEOUT", raising=False)
    assert timeout_seconds() == DEFAULT_TIMEOUT
    monkeypatch.setenv("MLCORE_DISTRIBUTED_TIMEOUT", "off")
    assert timeout_seconds() is None
    monkeypatch.setenv("MLCORE_DISTRIBUTED_TIMEOUT", "2.5")
    assert timeout_seconds() == 2.5
    monkeypatch.setenv("MLCORE_DISTRIBUTED_TIMEOUT", "soon")
    with pytest.raises(mlcore.DistributedError, match="MLCORE_DISTRIBUTED_TIMEOUT='soon'"):
        timeout_seconds()
    with pytest.raises(mlcore.DistributedError, match="timeout=-1"):
        DataParallel(timeout=-1)


def test_processes_that_disagree_are_stopped_before_the_first_step(tmp_path: Path) -> None:
    job = _job(2, "mismatch", str(tmp_path))
    assert job.returncode == 0, job.stderr[-3000:]
    for r in range(2):
        got = json.loads((tmp_path / f"mismatch-rank{r}.json").read_text())
        assert "number of training samples is 50 on rank 0 but 49 on rank 1" in got["data size"]
        assert "model architecture is" in got["architecture"]
        assert "Dense(5, 9" in got["architecture"]
        assert "parameter dtype is 'float32' on rank 0 but 'float64' on rank 1" in got["dtype"]


@pytest.mark.slow
def test_launch_trains_the_digits_example_with_identical_weights() -> None:
    pytest.importorskip("sklearn")
    mpiexec = _mpiexec()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "MLCORE_DIST"))}
    env["MLCORE_NUMPY_JIT"] = "0"
    mlcore_cli = [sys.executable, "-m", "mlcore"]
    job = subprocess.run([*mlcore_cli, "launch", "-n", "2", "--threads", "1", "--mpiexec",
                          mpiexec, "-m", "mlcore.distributed.digits"], env=env,
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "weights identical on all 2 processes: True" in job.stdout
    accuracy = float(job.stdout.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 97.0, job.stdout
    assert shutil.which(mpiexec)


def test_cupy_offers_nccl_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    mlcore_cupy = pytest.importorskip("mlcore_cupy")
    monkeypatch.delenv("MLCORE_CUPY_NCCL", raising=False)
    assert mlcore_cupy.CupyBackend().communicator(None) is None  # MPI over host memory
