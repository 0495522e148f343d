"""mlcore.distributed: a single process (no MPI), the batch split and buckets, and real
2- and 3-process jobs over loopback (mpiexec, each bounded by a subprocess timeout)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlcore
from mlcore import distributed
from mlcore.distributed._buckets import backward_groups, plan_buckets
from mlcore.distributed.parallel import DataParallel
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


def test_buckets_bound_the_message_and_follow_backward_order() -> None:
    model = mlcore.MLP([784, 512, 512, 10])
    params = model.parameters()
    backward = list(range(5, -1, -1))  # the last layer's gradients come first
    assert plan_buckets(params, 25 * 2**20 // 4) == [backward]  # one message
    # DDP's small first bucket, cut at parameters: the last layer's and the middle one's
    # bias (22.5 kB), complete only after the middle layer's backprop
    assert plan_buckets(params, 25 * 2**20 // 4, 2**20 // 4) == [[5, 4, 3], [2, 1, 0]]
    # ended at a layer boundary: the last layer's own 20.5 kB, complete after its backprop
    groups = backward_groups(model.layers, params)
    assert groups == [[5, 4], [3, 2], [1, 0]]
    assert plan_buckets(params, 25 * 2**20 // 4, 2**20 // 4, groups) == [[5, 4], [3, 2, 1, 0]]
    # a last layer larger than the first cap: cut at parameters, within both caps
    assert plan_buckets(params, 300_000, 2_000, groups) == [[5], [4, 3, 2, 1], [0]]
    buckets = plan_buckets(params, 300_000)
    assert [i for b in buckets for i in b] == backward and len(buckets) > 1
    assert all(sum(math.prod(params[i].shape) for i in b) <= 300_000 or len(b) == 1
               for b in buckets)


def test_bucket_bytes_is_checked() -> None:
    with pytest.raises(mlcore.DistributedError, match="bucket_bytes must be a positive"):
        DataParallel(bucket_bytes=0)
    with pytest.raises(mlcore.DistributedError, match="overlap must be True or False"):
        DataParallel(overlap=1)  # type: ignore[arg-type]


def test_launch_dry_run_prints_the_exact_command_and_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from click.testing import CliRunner

    from mlcore.cli import main

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)

    script = tmp_path / "my train.py"
    script.write_text("print('hi')\n")
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    result = CliRunner().invoke(main, ["launch", "-n", "2", "--mpiexec", str(fake), "--dry-run",
                                       "--threads", "1", "--timeout", "30", str(script),
                                       "--name", "a b"])
    assert result.exit_code == 0, result.output
    line = [x for x in result.output.splitlines() if not x.startswith("mlcore launch:")]
    assert shlex.split(line[-1]) == [
        "env", "MLCORE_DISTRIBUTED=mpi", "MALLOC_MMAP_THRESHOLD_=33554432",
        "MALLOC_TRIM_THRESHOLD_=1073741824", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1",
        "MKL_NUM_THREADS=1", "MLCORE_DISTRIBUTED_TIMEOUT=30", str(fake), "-n", "2",
        sys.executable, "-m", "mlcore.distributed._run", str(script), "--name", "a b"]
    missing = CliRunner().invoke(main, ["launch", "-n", "2", str(tmp_path / "nope.py")])
    assert missing.exit_code != 0 and "no such file" in missing.output
    # the allocator's variables: a value the user set is kept, and --no-keep-memory omits them
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    kept = CliRunner().invoke(main, ["launch", "-n", "2", "--mpiexec", str(fake), "--dry-run",
                                     str(script)])
    words = shlex.split(kept.output.splitlines()[-1])
    assert "MALLOC_MMAP_THRESHOLD_=33554432" in words
    assert not any(w.startswith("MALLOC_TRIM_THRESHOLD_=") for w in words)
    off = CliRunner().invoke(main, ["launch", "-n", "2", "--mpiexec", str(fake), "--dry-run",
                                    "--no-keep-memory", str(script)])
    assert "MALLOC_" not in off.output.splitlines()[-1]


def test_launch_warns_once_when_processes_outnumber_the_cores(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlcore.cli import main
    from mlcore.distributed.launch import _cores

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    base = ["launch", "--mpiexec", str(fake), "--dry-run", "--threads", "1"]
    over = CliRunner().invoke(main, [*base, "-n", str(_cores() + 1), str(script)])
    assert over.output.count("oversubscribed") == 1, over.output
    fits = CliRunner().invoke(main, [*base, "-n", str(_cores()), str(script)])
    assert "oversubscribed" not in fits.output


def test_launch_names_the_other_mpis_host_file_form(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mlcore.cli import main

    hydra = tmp_path / "mpiexec"
    hydra.write_text("#!/bin/sh\necho 'HYDRA build details:'\n")
    hydra.chmod(0o755)
    openmpi = tmp_path / "mpirun"
    openmpi.write_text("#!/bin/sh\necho 'mpirun (Open MPI) 4.1.5'\n")
    openmpi.chmod(0o755)
    hosts = tmp_path / "hosts"
    hosts.write_text("node1 slots=4\n")
    base = ["launch", "-n", "2", "--dry-run", "--hostfile", str(hosts)]
    result = CliRunner().invoke(main, [*base, "--mpiexec", str(hydra), "-m", "mlcore"])
    assert result.exit_code == 2 and "Open MPI's form" in result.output
    assert "Write 'node1:4'" in result.output
    hosts.write_text("node1:4\n")
    result = CliRunner().invoke(main, [*base, "--mpiexec", str(openmpi), "-m", "mlcore"])
    assert result.exit_code == 2 and "'node1 slots=4'" in result.output


@pytest.mark.parametrize(("listed", "expected"), [(None, ["0,1", "2,3"]),
                                                  ("4,5,6,7", ["4,5", "6,7"])])
def test_each_process_gets_its_own_gpus(listed: str | None, expected: list[str]) -> None:
    from mlcore.distributed._run import place_gpus

    seen = []
    for local in (0, 1):
        env = {"MLCORE_GPUS_PER_PROCESS": "2", "MPI_LOCALRANKID": str(local)}
        if listed:
            env["CUDA_VISIBLE_DEVICES"] = listed
        place_gpus(env)
        seen.append(env["CUDA_VISIBLE_DEVICES"])
    assert seen == expected
    with pytest.raises(mlcore.DistributedError, match="lists 2"):
        place_gpus({"MLCORE_GPUS_PER_PROCESS": "2", "MPI_LOCALRANKID": "1",
                    "CUDA_VISIBLE_DEVICES": "0,1"})


def _launch(*args: str, timeout: float = TIMEOUT, **popen: Any) -> Any:
    mpiexec = _mpiexec()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "MLCORE_DIST"))}
    env["MLCORE_NUMPY_JIT"] = "0"
    cmd = [sys.executable, "-m", "mlcore", "launch", "--mpiexec", mpiexec, *args]
    if popen:
        return subprocess.Popen(cmd, env=env, text=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_launched_processes_see_their_gpus_and_a_script_that_never_joins_warns(
        tmp_path: Path) -> None:
    script = tmp_path / "alone.py"
    script.write_text("import os, pathlib\n"
                      f"pathlib.Path({str(tmp_path)!r}, 'gpu-' + os.environ['PMI_RANK'])"
                      ".write_text(os.environ['CUDA_VISIBLE_DEVICES'])\n")
    job = _launch("-n", "2", "--gpus-per-process", "1", str(script))
    assert job.returncode == 0, job.stderr
    assert [(tmp_path / f"gpu-{r}").read_text() for r in (0, 1)] == ["0", "1"]
    assert job.stderr.count("never joined the job") == 1, job.stderr


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_launch_ends_the_job_within_seconds(sig: int, tmp_path: Path) -> None:
    script = tmp_path / "long.py"
    script.write_text("import os, pathlib, time\nimport mlcore.distributed as d\n"
                      f"pathlib.Path({str(tmp_path)!r}, f'pid-{{d.rank()}}')"
                      ".write_text(str(os.getpid()))\ntime.sleep(120)\n")
    proc = _launch("-n", "2", str(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("pid-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in tmp_path.glob("pid-*")]
        assert len(pids) == 2
        began = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert proc.returncode == 128 + sig
        while _alive(pids) and time.monotonic() - began < 10:
            time.sleep(0.1)
        assert not _alive(pids)  # every process of the job is gone within seconds
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


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
        assert "DataParallel overlap is True on rank 0 but False on rank 1" in got["overlap"]
        # other bucket plans (bucket_bytes) or transports would start allreduces of other
        # sizes, or blocking against non-blocking ones: refused at the start, named
        assert "gradient buckets is [" in got["buckets"], got["buckets"]
        assert "DataParallel(bucket_bytes=" in got["buckets"]
        assert "gradient transport is 'mlcore.distributed.comm.Communicator: non-blocking" \
            in got["transport"], got["transport"]
        assert "_OwnAllreduce: blocking" in got["transport"]


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


# -- data placement: full data or shards ---------------------------------------------------
def test_shards_train_on_every_row_and_full_data_mode_refuses_them(tmp_path: Path) -> None:
    batch = 4
    job = _job(2, "shards", str(tmp_path), str(batch))
    assert job.returncode == 0, job.stderr[-3000:]
    w0, w1 = (dict(np.load(tmp_path / f"shards-rank{r}.npz")) for r in (0, 1))
    X, y = worker.shards_reference(2, batch)
    model = mlcore.MLP([worker.FEATURES, worker.HIDDEN, worker.CLASSES], activation="tanh",
                       output_activation="softmax", seed=0, dtype="float64")
    X_val, y_val = worker.data()
    history = model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2,
                        batch_size=2 * batch, shuffle=False, verbose=False, metrics=["f1"],
                        validation_data=(X_val[:10], y_val[:10]))
    for key, value in worker.weights(model).items():  # every row of every shard, in order
        np.testing.assert_array_equal(w1[key], w0[key])
        np.testing.assert_allclose(w0[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    h0 = json.loads((tmp_path / "shards-rank0.json").read_text())
    for key, values in history.items():
        np.testing.assert_allclose(h0[key], values, rtol=1e-9, err_msg=key)
    for r in (0, 1):  # shards passed as full data: refused, with the fix
        refused = (tmp_path / f"shards-full-rank{r}.txt").read_text()
        assert "training data is" in refused and "DataParallel(sharded=True)" in refused
    # a row that full-data slicing of each shard would skip, poisoned, changes the weights
    p0, p1 = (dict(np.load(tmp_path / f"shards-poisoned-rank{r}.npz")) for r in (0, 1))
    for key, value in p0.items():
        np.testing.assert_array_equal(p1[key], value)
    assert max(float(np.abs(p0[k] - w0[k]).max()) for k in w0) > 1e-3


def test_sharded_batches_run_every_shard_to_its_end() -> None:
    dp = DataParallel(comm=_Fake(1, 2), sharded=True)  # type: ignore[arg-type]
    dp._rows = [10, 7]
    assert dp.batches(7, 4) == [(0, 4), (4, 7), (7, 7)]
    assert DataParallel(comm=_Fake(0, 2), sharded=True).agree_seed(5) == 5  # type: ignore[arg-type]
    assert DataParallel(comm=_Fake(1, 2), sharded=True).agree_seed(5) == 6  # type: ignore[arg-type]
    with pytest.raises(mlcore.DistributedError, match="sharded must be True or False"):
        DataParallel(sharded="yes")  # type: ignore[arg-type]


def test_full_data_mode_gathers_only_this_processs_rows_of_the_epoch() -> None:
    from mlcore.training.loop import Data

    xp = mlcore.get_backend("numpy").xp
    data = Data(xp.arange(10.0)[:, None], xp.arange(10), None)
    dp = DataParallel(comm=_Fake(1, 2))  # type: ignore[arg-type]
    ranges = dp.batches(10, 2)
    order = xp.asarray([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    local, local_ranges = dp.epoch(xp, data, order, ranges)
    assert local.X.shape[0] == 5 and local_ranges == [(0, 2), (2, 4), (4, 5)]
    assert [int(v) for v in local.targets] == [7, 6, 3, 2, 0]
    part = dp.validation_part(data)
    assert [int(v) for v in part.targets] == [5, 6, 7, 8, 9]


# -- SyncBatchNorm -------------------------------------------------------------------------
def test_batchnorm_in_a_distributed_fit_equals_one_process_with_the_global_batch(
        tmp_path: Path) -> None:
    batch = 4
    job = _job(2, "batchnorm", str(tmp_path), str(batch))
    assert job.returncode == 0, job.stderr[-3000:]
    w0, w1 = (dict(np.load(tmp_path / f"bn-rank{r}.npz")) for r in (0, 1))
    model, history = worker.batchnorm_fit(0, 2 * batch, False)
    for key, value in worker.weights(model).items():  # running statistics included
        np.testing.assert_array_equal(w1[key], w0[key])
        np.testing.assert_allclose(w0[key], value, rtol=1e-9, atol=1e-12, err_msg=key)
    h0 = json.loads((tmp_path / "bn-rank0.json").read_text())
    for key, values in history.items():
        np.testing.assert_allclose(h0[key], values, rtol=1e-9, err_msg=key)
    for r in (0, 1):
        refused = (tmp_path / f"bn-refused-rank{r}.txt").read_text()
        assert "every process needs rows in every batch" in refused


# -- collectives: a timeout naming the late process, no core burnt while waiting -----------
def test_a_stalled_process_is_waited_for_without_spinning_then_named(tmp_path: Path) -> None:
    began = time.monotonic()
    job = _job(2, "stall", str(tmp_path), timeout=90)
    assert job.returncode != 0
    assert time.monotonic() - began < 45
    waited = json.loads((tmp_path / "stall-2-rank0.json").read_text())
    assert waited["wall"] > 1.8 and waited["cpu"] < 0.5 * waited["wall"], waited
    assert "process 0 of 2 waited 2 s in the gradient allreduce of step 4" in job.stderr
    assert "for process 1, which did not arrive" in job.stderr
    assert "MLCORE_COLLECTIVE_TIMEOUT" in job.stderr
    assert not (tmp_path / "stall-60-rank0.json").exists()


def test_the_timeout_has_one_value_under_both_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlcore.distributed._world import timeout_seconds

    monkeypatch.delenv("MLCORE_DISTRIBUTED_TIMEOUT", raising=False)
    monkeypatch.setenv("MLCORE_COLLECTIVE_TIMEOUT", "7")
    assert timeout_seconds() == 7.0
    monkeypatch.setenv("MLCORE_DISTRIBUTED_TIMEOUT", "8")
    with pytest.raises(mlcore.DistributedError, match="one setting under two names"):
        timeout_seconds()


def test_an_error_every_process_raises_is_printed_once(tmp_path: Path) -> None:
    job = _job(2, "mismatch-uncaught", str(tmp_path), timeout=60)
    assert job.returncode != 0
    assert job.stderr.count("Traceback (most recent call last)") == 1, job.stderr
    assert "number of training samples is 50 on rank 0 but 49 on rank 1" in job.stderr


@pytest.mark.parametrize(("variables", "advice"), [
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "mlcore launch -n 2 script.py"),
    ({"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_NTASKS": "4"},
     "srun --mpi=pmix"),
])
def test_torchrun_or_srun_without_mpi_is_refused(variables: dict[str, str],
                                                 advice: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "MLCORE_DIST"))}
    code = "import mlcore.distributed as d; print(d.size())"
    job = subprocess.run([sys.executable, "-c", code], env=env | variables,
                         capture_output=True, text=True, timeout=60, check=False)
    assert job.returncode != 0 and "DistributedError" in job.stderr
    assert advice in job.stderr and "MLCORE_DISTRIBUTED=off" in job.stderr
    job = subprocess.run([sys.executable, "-c", code],
                         env=env | variables | {"MLCORE_DISTRIBUTED": "off"},
                         capture_output=True, text=True, timeout=60, check=False)
    assert job.stdout.split() == ["1"]


# -- the scaling benchmark -----------------------------------------------------------------
def test_the_scaling_script_runs_whole_epochs_from_any_folder_and_shows_child_errors(
        tmp_path: Path) -> None:
    pytest.importorskip("mlcore_bench")
    _mpiexec()
    (tmp_path / "mlcore").mkdir()  # a folder holding a checkout as mlcore/ must not shadow it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "MLCORE_DIST"))}
    cmd = [sys.executable, "-m", "mlcore", "bench", "--distributed", "-n", "2", "--rounds",
           "1"]
    script = [sys.executable, "-m", "mlcore_bench.distributed_scaling", "--rounds", "1",
              "--no-torch"]
    job = subprocess.run([*script, "--batches", "8,16", "--rows", "96"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-3000:]
    assert "whole epochs of 96 rows" in job.stdout
    for label in ("mlcore", "mlcore/no-overlap"):  # overlap on and off, by default
        assert f"model check {label} K=2 B=16: T predicted" in job.stdout
    assert "P= 64: t_comm" in job.stdout  # the extrapolation
    bad = subprocess.run([*script, "--batches", "0,8", "--rows", "96"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert bad.returncode != 0 and "batch_size" in bad.stderr  # the child's own error
    assert "process(es) failed" in bad.stderr
    helped = subprocess.run([*cmd, "--help"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert "--distributed" in helped.stdout


def test_a_started_allreduce_that_never_completes_sleeps_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """complete(): every process has arrived, yet the non-blocking allreduce does not
    finish (the processes started different collectives, or one died). The wait sleeps
    between polls instead of spinning a core for the whole timeout, and the error says what
    to check."""
    from types import SimpleNamespace

    from mlcore.distributed import _world

    slept: list[float] = []
    sleep = time.sleep
    monkeypatch.setattr(_world.time, "sleep", lambda s: (slept.append(s), sleep(s)))
    arrived = SimpleNamespace(Test=lambda: True)
    comm = SimpleNamespace(Ibarrier=lambda: arrived, iprobe=lambda **kw: False)
    mpi = SimpleNamespace(Request=SimpleNamespace(Testall=lambda requests: False),
                          ANY_SOURCE=-1)
    with pytest.raises(mlcore.DistributedError) as info:
        _world.complete(_world.World(0, 2, comm, mpi), [object()], 0.3,
                        "the gradient allreduce of step 1")
    message = str(info.value)
    assert "started different collectives" in message and "died" in message, message
    assert "check every process passes the same DataParallel settings and backend, or " \
        "raise MLCORE_DISTRIBUTED_TIMEOUT" in message, message
    assert sum(slept) > 0.15, slept  # asleep most of the 0.3 s, not spinning


def test_the_namespace_is_known_once_a_fit_has_started_the_data_parallel_object() -> None:
    with pytest.raises(mlcore.DistributedError, match="once a fit has started it"):
        DataParallel().xp  # noqa: B018


# -- gradients' allreduces overlapped with backward ----------------------------------------
def test_overlapped_allreduces_give_the_weights_of_reduce_after_backward_bitwise(
        tmp_path: Path) -> None:
    """Two processes, every case of the worker's OVERLAP_CASES (float32 and float64, strict
    arrays staged through the host, an empty share on one process, Dropout, SyncBatchNorm's
    allreduces inside backward), buckets of 96 bytes: overlap on and off give the same
    weights and history bit for bit, on every process, and with overlap on some buckets'
    allreduces started before backward had ended."""
    job = _job(2, "overlap", str(tmp_path))
    assert job.returncode == 0, job.stderr[-3000:]

    def load(case: str, on: int, r: int) -> tuple[dict[str, Any], dict[str, Any]]:
        stem = tmp_path / f"overlap-{case}-{on}-rank{r}"
        return dict(np.load(f"{stem}.npz")), json.loads(Path(f"{stem}.json").read_text())

    for case in worker.OVERLAP_CASES:
        (w_on, j_on), j_off = load(case, 1, 0), load(case, 0, 0)[1]
        assert j_on["history"] == j_off["history"], case
        for r in (0, 1):
            for key, value in w_on.items():
                for other in (load(case, 1, r)[0], load(case, 0, r)[0]):
                    np.testing.assert_array_equal(other[key], value, err_msg=f"{case} {key}")
        steps = j_on["stats"]["steps"]
        assert steps == j_off["stats"]["steps"] > 0, case
        assert j_on["stats"]["early_buckets"] >= steps - 1, case  # started in backward
        assert j_off["stats"]["early_buckets"] == 0, case


class _Recording:
    """A stand-in communicator of 2 processes (each collective returns its input) that logs
    the non-blocking allreduces: when each starts, progress calls and the final wait."""

    rank, size, nonblocking = 0, 2, True

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def allreduce(self, x: Any, op: str = "sum") -> Any:
        self.log.append("allreduce")
        return x

    def start_allreduce(self, x: Any, op: str = "sum") -> Any:
        from mlcore.distributed.comm import Pending

        self.log.append(f"start {x.shape[0]}")
        return Pending(None, x, lambda buf: buf)

    def progress(self, pending: Any) -> None:
        self.log.append("progress")

    def wait(self, pending: Any) -> None:
        self.log.append(f"wait {len(pending)}")

    def broadcast(self, x: Any, root: int = 0) -> Any:
        return x

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj, obj]


def _logged(model: mlcore.Sequential, log: list[str]) -> None:
    """Each Dense layer's backprop notes itself in ``log``."""
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, mlcore.Dense):
            continue

        def forward(X: Any, xp: Any = None, *, input_grad: bool = True, _i: int = i,
                    _f: Any = layer.forward) -> Any:
            Y, backprop = _f(X, xp, input_grad=input_grad)

            def noted(dY: Any) -> Any:
                log.append(f"backward {_i}")
                return backprop(dY)
            return Y, noted
        layer.forward = forward  # type: ignore[method-assign]


@pytest.mark.parametrize("on", [True, False])
def test_buckets_start_while_backward_goes_on(on: bool) -> None:
    """784-512-512-10's buckets with overlap (DDP's first bucket of at most 1 MiB, ended at
    a layer boundary: the last layer's weights and bias, 20.5 kB, then the rest): the first
    starts right after the last layer's own backprop (layer 4), before the middle layer's,
    and the second after backward; the update waits for both. Without, one bucket is reduced
    after backward with a blocking allreduce."""
    log: list[str] = []
    model = mlcore.Sequential([mlcore.Dense(784, 512, seed=0), mlcore.Activation("relu"),
                               mlcore.Dense(512, 512, seed=1), mlcore.Activation("relu"),
                               mlcore.Dense(512, 10, seed=2), mlcore.Activation("softmax")])
    _logged(model, log)
    X = np.random.default_rng(0).normal(size=(8, 784))
    y = np.arange(8) % 10
    dp = DataParallel(comm=_Recording(log), overlap=on)  # type: ignore[arg-type]
    model.fit(X, y, loss="cross_entropy", batch_size=4, epochs=1, shuffle=False,
              verbose=False, distributed=dp)
    steps = [i for i, entry in enumerate(log) if entry == "backward 4"]
    assert len(steps) == 1 and dp.stats["steps"] == 1  # one global batch of 2 x 4 rows
    first = log[steps[0]:]
    if on:
        assert [e for e in first if e != "progress"] == [
            "backward 4", f"start {10 + 5120 + 1}", "backward 2", "backward 0",
            f"start {512 + 262144 + 512 + 401408}", "wait 2"]
        started = first.index(f"start {10 + 5120 + 1}")
        assert "progress" in first[started:first.index("backward 2")]  # MPI moved it on
        assert dp.stats["early_buckets"] == 1
    else:  # one bucket, as before overlap
        assert first == ["backward 4", "backward 2", "backward 0", "allreduce"]
        assert dp.stats["early_buckets"] == 0
