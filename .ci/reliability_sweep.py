"""The reliability sweep: bad inputs, faults and abuse, tried as a careless or hostile user.

Run from a checkout with mlcore installed: ``python .ci/reliability_sweep.py`` (``-v`` prints
every case). Each case is one call or a small scenario, run on numpy and on strict where the
backend matters, and is classified:

clean    a mlcore error (``MlcoreError``, or the documented ``ModuleNotFoundError`` /
         ``RuntimeWarning`` where stated) whose message says what and how, or a correct result
unclear  another exception (a raw ``TypeError``/``AttributeError`` from NumPy, pluggy, ...)
silent   a result, but a wrong one (the check that makes it right failed)
crash    the process died or hung (cases that could are run in a subprocess)

The last line is the count: ``clean N/M``. Exit status 1 if any case is not clean.
"""

# ruff: noqa: N803, N806 - X is a batch, as in mlcore's own training code

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import mlcore
from mlcore import MlcoreError

CASES: list[tuple[str, Callable[[], tuple[str, str]]]] = []
BACKENDS = ("numpy", "strict")


def case(name: str, per_backend: bool = False) -> Callable[[Callable[..., tuple[str, str]]], Any]:
    def register(fn: Callable[..., tuple[str, str]]) -> Any:
        if per_backend:
            for b in BACKENDS:
                CASES.append((f"{name} [{b}]", _on(b, fn)))
        else:
            CASES.append((name, fn))
        return fn
    return register


def _on(backend: str, fn: Callable[[], tuple[str, str]]) -> Callable[[], tuple[str, str]]:
    def run() -> tuple[str, str]:
        with mlcore.use_backend(backend):
            return fn()
    return run


def error(fn: Callable[[], Any], match: str = "", kinds: tuple[type, ...] = (MlcoreError,)
          ) -> tuple[str, str]:
    """Clean when ``fn`` raises one of ``kinds`` whose message contains ``match``."""
    try:
        fn()
    except kinds as exc:
        text = str(exc)
        if match and match not in text:
            return "unclear", f"{type(exc).__name__} without {match!r}: {text[:160]}"
        if not text.strip():
            return "unclear", f"{type(exc).__name__} with no message"
        return "clean", f"{type(exc).__name__}: {text[:120]}"
    except Exception as exc:  # noqa: BLE001
        return "unclear", f"{type(exc).__name__}: {str(exc)[:160]}"
    return "silent", "no error"


def ok(fn: Callable[[], Any], check: Callable[[Any], bool] = lambda r: True) -> tuple[str, str]:
    """Clean when ``fn`` returns and ``check(result)`` holds."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001
        return "unclear", f"{type(exc).__name__}: {str(exc)[:160]}"
    return ("clean", "correct result") if check(result) else ("silent", f"wrong: {result!r:.160}")


def data(n: int = 200, f: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def finite(model: mlcore.Sequential, X: Any) -> bool:
    b = model.backend
    return bool(np.isfinite(b.to_numpy(model.predict(X))).all()) and all(
        np.isfinite(b.to_numpy(p.value)).all() for p in model.parameters())


TMP = pathlib.Path(tempfile.mkdtemp(prefix="mlcore-sweep-"))


def tmpfile(name: str) -> pathlib.Path:
    d = pathlib.Path(tempfile.mkdtemp(dir=TMP))
    return d / name


# == numerics =================================================================================
@case("fit sgd lr=1e4 stops with finite weights", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    m = mlcore.MLP([4, 16, 2], seed=0)
    verdict = error(lambda: m.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=1e4,
                                  epochs=20, verbose=False), "epoch")
    return verdict if finite(m, X) else ("silent", "weights or predictions not finite")


@case("fit adam lr=1e3 stops with finite weights", per_backend=True)
def _() -> tuple[str, str]:
    X, _ = data()
    m = mlcore.MLP([4, 16, 1], seed=0)
    try:
        m.fit(X, X[:, :1] * 100, loss="mse", lr=1e3, epochs=30, verbose=False)
    except MlcoreError:
        pass
    return ("clean", "finite") if finite(m, X) else ("silent", "NaN weights or predictions")


@case("inputs scaled by 1e30 (mse)", per_backend=True)
def _() -> tuple[str, str]:
    X, _ = data()
    return error(lambda: mlcore.MLP([4, 8, 1], seed=0).fit(X * 1e30, X[:, :1], loss="mse",
                                                             verbose=False), "standardise")


@case("inputs scaled by 1e30 (cross_entropy) stay finite or stop", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    m = mlcore.MLP([4, 8, 2], seed=0)
    try:
        h = m.fit(X * 1e30, y, loss="cross_entropy", epochs=2, verbose=False)
    except MlcoreError as exc:
        return "clean", f"{type(exc).__name__}: {str(exc)[:100]}"
    return ("clean", "finite") if np.isfinite(h["loss"]).all() else ("silent", str(h))


@case("on_nonfinite='warn' skips non-finite updates with a warning", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mlcore.MLP([4, 16, 2], seed=0).fit(X, y, loss="cross_entropy", optimizer="sgd",
                                           lr=1e4, epochs=3, verbose=False,
                                           on_nonfinite="warn")
    said = any("skipping every update" in str(x.message) for x in w)
    return ("clean", "warned") if said else ("silent", "no warning")


@case("Adam(eps=0.0)")
def _() -> tuple[str, str]:
    return error(lambda: mlcore.Adam(mlcore.MLP([2, 2], seed=0).parameters(), eps=0.0), "eps")


@case("complex input to predict", per_backend=True)
def _() -> tuple[str, str]:
    return error(lambda: mlcore.MLP([2, 1], seed=0).predict(np.ones((2, 2), np.complex64) + 1j),
                 "real")


@case("complex input to fit", per_backend=True)
def _() -> tuple[str, str]:
    return error(lambda: mlcore.MLP([2, 1], seed=0).fit(
        np.ones((2, 2), np.complex64) + 1j, [0.0, 1.0], loss="mse", verbose=False), "real")


@case("MLP([2.7, 3.9, 1])")
def _() -> tuple[str, str]:
    return error(lambda: mlcore.MLP([2.7, 3.9, 1]), "positive integer")


# == losses ===================================================================================
def _logit_task() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 4)).astype(np.float32)
    return X, (X[:, 0] > X[:, 1]).astype(np.int64) + (X[:, 2] > 0.5)


@case("loss name and loss object train alike (logits model)", per_backend=True)
def _() -> tuple[str, str]:
    X, y = _logit_task()
    accs = []
    for loss in ("cross_entropy", mlcore.loss("cross_entropy")):
        m = mlcore.MLP([4, 16, 3], seed=0)
        h = m.fit(X, y, loss=loss, epochs=20, seed=0, lr=0.01, verbose=False)
        accs.append(h["accuracy"][-1])
    same = abs(accs[0] - accs[1]) < 1e-6
    return ("clean", f"accuracy {accs[0]:.3f} both") if same else ("silent", f"{accs}")


@case("cross_entropy object on logits (forward)", per_backend=True)
def _() -> tuple[str, str]:
    b = mlcore.get_backend()
    z = b.asarray([[2.0, -1.0, 0.5], [0.1, 3.0, -2.0]], dtype=b.xp.float32)
    t = b.asarray([0, 1])
    return error(lambda: mlcore.loss("cross_entropy").forward(z, t), "from_logits")


@case("one-output sigmoid model trained with cross_entropy", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    m = mlcore.MLP([4, 8, 1], output_activation="sigmoid", seed=0)
    return error(lambda: m.fit(X, y, loss="cross_entropy", verbose=False),
                 "binary_cross_entropy")


@case("kl_divergence with an unnormalised P", per_backend=True)
def _() -> tuple[str, str]:
    b = mlcore.get_backend()
    p = b.asarray([[0.2, 0.1, 0.1]], dtype=b.xp.float32)
    q = b.asarray([[0.5, 0.25, 0.25]], dtype=b.xp.float32)
    return error(lambda: mlcore.loss("kl_divergence").forward(p, q), "summing to 1")


@case("kl_divergence with a negative Q", per_backend=True)
def _() -> tuple[str, str]:
    b = mlcore.get_backend()
    p = b.asarray([[0.5, 0.5]], dtype=b.xp.float32)
    q = b.asarray([[1.5, -0.5]], dtype=b.xp.float32)
    return error(lambda: mlcore.loss("kl_divergence").forward(p, q), "")


@case("NaN in binary_cross_entropy prediction", per_backend=True)
def _() -> tuple[str, str]:
    b = mlcore.get_backend()
    p = b.asarray([[float("nan")], [0.5]], dtype=b.xp.float32)
    t = b.asarray([[1.0], [0.0]], dtype=b.xp.float32)
    return error(lambda: mlcore.loss("binary_cross_entropy").forward(p, t), "NaN")


@case("NaN in binary_cross_entropy target", per_backend=True)
def _() -> tuple[str, str]:
    b = mlcore.get_backend()
    p = b.asarray([[0.3], [0.5]], dtype=b.xp.float32)
    t = b.asarray([[float("nan")], [0.0]], dtype=b.xp.float32)
    return error(lambda: mlcore.loss("binary_cross_entropy").forward(p, t), "NaN")


@case("multi-hot targets with cross_entropy in fit", per_backend=True)
def _() -> tuple[str, str]:
    X, _ = data()
    Y = np.zeros((200, 3), np.float32)
    Y[:, 0] = 1
    Y[::2, 1] = 1
    return error(lambda: mlcore.MLP([4, 8, 3], seed=0).fit(X, Y, loss="cross_entropy",
                                                           verbose=False), "sum to 1")


@case("probabilities out of [0, 1] to cross_entropy object", per_backend=True)
def _() -> tuple[str, str]:
    b = mlcore.get_backend()
    p = b.asarray([[1.5, -0.5]], dtype=b.xp.float32)
    return error(lambda: mlcore.loss("cross_entropy").forward(p, b.asarray([0])), "")


@case("cross_entropy object, from_logits=True, on a logits model: fit works", per_backend=True)
def _() -> tuple[str, str]:
    X, y = _logit_task()
    m = mlcore.MLP([4, 16, 3], seed=0)
    h = m.fit(X, y, loss=mlcore.loss("cross_entropy", from_logits=True), epochs=20, seed=0,
              lr=0.01, verbose=False)
    return ("clean", f"{h['accuracy'][-1]:.3f}") if h["accuracy"][-1] > 0.8 else (
        "silent", str(h["accuracy"][-1]))


@case("softmax model with cross_entropy: correct result", per_backend=True)
def _() -> tuple[str, str]:
    X, y = _logit_task()
    m = mlcore.MLP([4, 16, 3], output_activation="softmax", seed=0)
    return ok(lambda: m.fit(X, y, loss="cross_entropy", epochs=20, seed=0, lr=0.01,
                            verbose=False), lambda h: h["accuracy"][-1] > 0.8)


# == files ====================================================================================
def _saved() -> pathlib.Path:
    path = tmpfile("m.safetensors")
    mlcore.MLP([3, 4, 2], activation="relu", seed=0).save(path)
    return path


@case("architecture bit flip relu -> selu")
def _() -> tuple[str, str]:
    path = _saved()
    data_ = bytearray(path.read_bytes())
    at = data_.index(b"relu")
    data_[at] ^= ord("r") ^ ord("s")
    path.write_bytes(bytes(data_))
    return error(lambda: mlcore.load(path), "checksum")


@case("200 random single-bit flips never load")
def _() -> tuple[str, str]:
    path = _saved()
    original = path.read_bytes()
    rng = np.random.default_rng(1)
    for at in rng.integers(0, len(original), 200):
        data_ = bytearray(original)
        data_[at] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data_))
        try:
            mlcore.load(path)
        except mlcore.ModelFileError:
            continue
        except Exception as exc:  # noqa: BLE001
            return "unclear", f"flip at {at}: {type(exc).__name__}: {exc}"
        return "silent", f"flip at byte {at} loaded"
    return "clean", "200/200 refused"


@case("every truncation never loads")
def _() -> tuple[str, str]:
    path = _saved()
    original = path.read_bytes()
    for cut in range(len(original)):
        path.write_bytes(original[:cut])
        try:
            mlcore.load(path)
        except mlcore.ModelFileError:
            continue
        except Exception as exc:  # noqa: BLE001
            return "unclear", f"cut at {cut}: {type(exc).__name__}: {exc}"
        return "silent", f"cut at {cut} loaded"
    return "clean", f"{len(original)}/{len(original)} refused"


def _forged(config: Any, tensors: dict[str, Any]) -> pathlib.Path:
    import safetensors.numpy as st

    from mlcore.saving.format import seal

    meta = {"format": "mlcore", "format_version": "2", "sha256": "0" * 64,
            "mlcore.config": config if isinstance(config, str) else json.dumps(config)}
    path = tmpfile("forged.safetensors")
    path.write_bytes(seal(st.save(tensors, metadata=meta)))
    return path


@case("small forged file declaring MLP [30000, 30000]")
def _() -> tuple[str, str]:
    path = _forged({"type": "MLP", "sizes": [30000, 30000], "activation": "relu",
                    "output_activation": None, "bias": True, "dtype": "float32"},
                   {"layers.0.weight": np.zeros((1, 1), np.float32)})
    return error(lambda: mlcore.load(path), "do not fit")


@case("forged file nested 100000 deep")
def _() -> tuple[str, str]:
    text = '{"type": "Sequential", "layers": [' * 100_000 + "]}" * 100_000
    return error(lambda: mlcore.load(_forged(text, {"w": np.zeros(1, np.float32)})), "")


@case("forged file with float and negative sizes")
def _() -> tuple[str, str]:
    path = _forged({"type": "Dense", "in_features": -2.5, "out_features": 2, "bias": False,
                    "dtype": "float32"}, {"weight": np.zeros((2, 2), np.float32)})
    return error(lambda: mlcore.load(path), "")


@case("save through a symlink keeps the link")
def _() -> tuple[str, str]:
    real = tmpfile("real.safetensors")
    mlcore.MLP([2, 2], seed=0).save(real)
    link = real.parent / "link.safetensors"
    link.symlink_to(real)
    mlcore.MLP([2, 5], seed=0).save(link)
    good = link.is_symlink() and mlcore.load(real).config()["sizes"] == [2, 5]
    return ("clean", "written through") if good else ("silent", "link replaced")


@case("save keeps 0644 and a new file gets the umask")
def _() -> tuple[str, str]:
    path = tmpfile("m.safetensors")
    old = os.umask(0o022)
    try:
        mlcore.MLP([2, 2], seed=0).save(path)
        first = path.stat().st_mode & 0o777
        path.chmod(0o644)
        mlcore.MLP([2, 2], seed=0).save(path)
        second = path.stat().st_mode & 0o777
    finally:
        os.umask(old)
    good = first == 0o644 and second == 0o644
    return ("clean", "0644 both") if good else ("silent", f"{first:o} {second:o}")


@case("save refuses a read-only file")
def _() -> tuple[str, str]:
    path = tmpfile("m.safetensors")
    mlcore.MLP([2, 2], seed=0).save(path)
    path.chmod(0o444)
    return error(lambda: mlcore.MLP([2, 3], seed=0).save(path), "read-only")


@case("save to a missing folder names the user's path")
def _() -> tuple[str, str]:
    cwd = os.getcwd()
    os.chdir(tmpfile("x").parent)
    try:
        return error(lambda: mlcore.MLP([2, 2], seed=0).save("missing/dir/m.safetensors"),
                     "'missing/dir/m.safetensors'")
    finally:
        os.chdir(cwd)


@case("saving a model with a custom layer")
def _() -> tuple[str, str]:
    class Custom(mlcore.Layer):
        def forward(self, x: Any, xp: Any = None, *, input_grad: bool = True) -> Any:
            return x, lambda dy: dy

    model = mlcore.Sequential([mlcore.Dense(2, 2, seed=0), Custom()])
    return error(lambda: model.save(tmpfile("m.safetensors")), "custom layer")


@case("loading a file of the earlier format (version 1)")
def _() -> tuple[str, str]:
    import safetensors.numpy as st

    from mlcore.saving.format import tensor_digest

    m = mlcore.MLP([3, 2], seed=0)
    t = {k: np.ascontiguousarray(m.backend.to_numpy(v)) for k, v in m.state_dict().items()}
    meta = {"format": "mlcore", "format_version": "1", "mlcore.config": json.dumps(m.config()),
            "sha256": tensor_digest(t)}
    path = tmpfile("v1.safetensors")
    path.write_bytes(st.save(t, metadata=meta))
    return ok(lambda: mlcore.load(path), lambda r: r.config() == m.config())


@case("save/load round trip across backends")
def _() -> tuple[str, str]:
    path = tmpfile("m.safetensors")
    m = mlcore.MLP([3, 4, 2], activation="prelu", seed=0)
    m.save(path)
    return ok(lambda: mlcore.load(path, backend="strict"), lambda r: r.config() == m.config())


# == arguments ================================================================================
@case("use_backend(get_backend('strict'))")
def _() -> tuple[str, str]:
    def run() -> str:
        with mlcore.use_backend(mlcore.get_backend("strict")):
            return mlcore.get_backend().name
    return ok(run, lambda name: name == "strict")


@case("validation_data=X (not a pair)", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    return error(lambda: mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy",
                                                        validation_data=X, verbose=False),
                 "validation_data")


@case("NaN in validation data is named", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    bad = X.copy()
    bad[3, 1] = np.nan
    return error(lambda: mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy",
                                                        validation_data=(bad, y),
                                                        verbose=False), "validation_data")


@case("model(list)", per_backend=True)
def _() -> tuple[str, str]:
    m = mlcore.MLP([4, 3, 2], seed=0)
    rows = [[0.1, 0.2, 0.3, 0.4]]
    return ok(lambda: m(rows), lambda out: np.allclose(m.backend.to_numpy(out),
                                                        m.backend.to_numpy(m.predict(rows))))


@case("float16 NumPy input on strict")
def _() -> tuple[str, str]:
    with mlcore.use_backend("strict"):
        m = mlcore.MLP([2, 1], seed=0)
        return error(lambda: m.predict(np.ones((2, 2), np.float16)), "astype('float32')")


@case("Adam(betas=0.9)")
def _() -> tuple[str, str]:
    return error(lambda: mlcore.Adam(mlcore.MLP([2, 2], seed=0).parameters(), betas=0.9),
                 "betas must be a pair")


@case("fit(lr='0.01')")
def _() -> tuple[str, str]:
    X, y = data()
    return error(lambda: mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy", lr="0.01",
                                                        verbose=False), "lr")


@case("fit(lr=nan), fit(lr=-1), fit(lr=0)")
def _() -> tuple[str, str]:
    X, y = data()
    for lr in (float("nan"), -1.0, 0.0):
        verdict = error(lambda lr=lr: mlcore.MLP([4, 2], seed=0).fit(
            X, y, loss="cross_entropy", optimizer="sgd", lr=lr, verbose=False), "lr")
        if verdict[0] != "clean":
            return verdict
    return "clean", "three refused"


@case("SGD(momentum=1.0), SGD(momentum='0.9')")
def _() -> tuple[str, str]:
    p = mlcore.MLP([2, 2], seed=0).parameters()
    first = error(lambda: mlcore.SGD(p, momentum=1.0), "momentum")
    return first if first[0] != "clean" else error(lambda: mlcore.SGD(p, momentum="0.9"),
                                                   "momentum")


@case("fit(batch_size=np.int64(16))", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    return ok(lambda: mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy",
                                                     batch_size=np.int64(16), verbose=False),
              lambda h: len(h["loss"]) == 1)


@case("fit(batch_size=2.5), fit(epochs=0)")
def _() -> tuple[str, str]:
    X, y = data()
    first = error(lambda: mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy",
                                                         batch_size=2.5, verbose=False),
                  "batch_size")
    return first if first[0] != "clean" else error(
        lambda: mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy", epochs=0,
                                               verbose=False), "epochs")


@case("MLP sizes 0, -3, True, '2', [4], 5")
def _() -> tuple[str, str]:
    for sizes in ([2, 0, 1], [2, -3, 1], [2, True, 1], ["2", 3], [4], 5):
        verdict = error(lambda s=sizes: mlcore.MLP(s), "MLP")
        if verdict[0] != "clean":
            return verdict
    return "clean", "six refused"


@case("names ignore case and spaces everywhere")
def _() -> tuple[str, str]:
    def run() -> bool:
        mlcore.activation(" ReLU ")
        mlcore.loss("MSE")
        mlcore.loss(" Cross_Entropy ")
        mlcore.get_backend(" NumPy ")
        mlcore.MLP([2, 3, 2], activation="TanH", output_activation=" Softmax", seed=0)
        X, y = data(f=2)
        mlcore.MLP([2, 2], seed=0).fit(X, y, loss="Cross_Entropy", optimizer=" SGD ",
                                       verbose=False)
        return True
    return ok(run)


@case("optimizer=mlcore.Adam (the class)")
def _() -> tuple[str, str]:
    X, y = data()
    return error(lambda: mlcore.MLP([4, 2], seed=0).fit(X, y, loss="cross_entropy",
                                                        optimizer=mlcore.Adam, verbose=False),
                 "instance")


@case("load(3)")
def _() -> tuple[str, str]:
    return error(lambda: mlcore.load(3), "path")  # type: ignore[arg-type]


# == plugins (each in a fresh process, with throwaway installed distributions) ================
def plugin_run(plugins: dict[str, str], code: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str] | None:
    site = pathlib.Path(tempfile.mkdtemp(dir=TMP))
    for module, source in plugins.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        dist = f"mlcore-{module.replace('_', '-')}"
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[mlcore]\n{module} = {module}\n")
    full = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            **(env or {})}
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def outcome(proc: subprocess.CompletedProcess[str] | None, want: str) -> tuple[str, str]:
    if proc is None:
        return "crash", "hung (timeout)"
    if proc.returncode != 0 and want not in proc.stdout:
        return "crash" if "Traceback" not in proc.stderr else "unclear", (
            f"rc={proc.returncode}: {proc.stderr.strip()[-200:]}")
    if want in proc.stdout:
        return "clean", want
    return "silent", proc.stdout.strip()[-200:]


ACT = """
import pluggy
hookimpl = pluggy.HookimplMarker("mlcore")
class Act:
    def forward(self, x):
        return x * 0
    def backward(self, x, y, dy):
        return dy * 0
@hookimpl
def mlcore_activations():
    return {{"{name}": Act}}
"""


@case("plugin registering 'relu': built-ins keep working")
def _() -> tuple[str, str]:
    proc = plugin_run({"evil_relu": ACT.format(name="relu")}, """
        import warnings, mlcore, numpy as np
        warnings.simplefilter("ignore")
        m = mlcore.MLP([2, 4, 1], seed=0)
        out = mlcore.activation("relu").forward(np.array([[-1.0, 2.0]], np.float32))
        rec = {r.name: r for r in mlcore.plugins.registry().records}["evil_relu"]
        if out.tolist() == [[0.0, 2.0]] and rec.status == "failed" and "built-in" in rec.error:
            print("BUILTIN-OK")
    """)
    return outcome(proc, "BUILTIN-OK")


@case("mlcore demo digits with a plugin claiming 'relu'")
def _() -> tuple[str, str]:
    proc = plugin_run({"evil_relu": ACT.format(name="relu")}, """
        import warnings, mlcore
        warnings.simplefilter("ignore")
        from click.testing import CliRunner
        from mlcore.cli import main
        r = CliRunner().invoke(main, ["demo", "digits", "--epochs", "1"])
        print("DEMO-OK" if r.exit_code == 0 else r.output[-300:])
    """, timeout=300)
    return outcome(proc, "DEMO-OK")


@case("plugin clash shown by `mlcore plugins` with both providers")
def _() -> tuple[str, str]:
    proc = plugin_run({"one_p": ACT.format(name="twice"), "two_p": ACT.format(name="twice")}, """
        import warnings
        warnings.simplefilter("ignore")
        from click.testing import CliRunner
        from mlcore.cli import main
        out = CliRunner().invoke(main, ["plugins"]).output
        both = "'one_p' (mlcore-one-p 1.0) and 'two_p' (mlcore-two-p 1.0)"
        info = CliRunner().invoke(main, ["info"]).output
        print("CLASH-SHOWN" if both in out and both in info else out)
    """)
    return outcome(proc, "CLASH-SHOWN")


@case("plugin clash fails under MLCORE_STRICT_PLUGINS=1")
def _() -> tuple[str, str]:
    proc = plugin_run({"one_p": ACT.format(name="twice"), "two_p": ACT.format(name="twice")}, """
        import mlcore
        try:
            mlcore.activation("relu")
        except mlcore.PluginLoadError as exc:
            print("STRICT-FAIL" if "clash" in str(exc) else exc)
    """, env={"MLCORE_STRICT_PLUGINS": "1"})
    return outcome(proc, "STRICT-FAIL")


@case("MLCORE_STRICT_PLUGINS=1: `mlcore plugins` lists everything, failures marked")
def _() -> tuple[str, str]:
    proc = plugin_run({"broken_p": "raise ImportError('missing dep')",
                       "good_p": ACT.format(name="twice")}, """
        from click.testing import CliRunner
        from mlcore.cli import main
        r = CliRunner().invoke(main, ["plugins"])
        want = ["mlcore.activations", "numpy", "good_p", "broken_p", "failed", "missing dep"]
        print("LISTED" if all(w in r.output for w in want) else r.output)
    """, env={"MLCORE_STRICT_PLUGINS": "1"})
    return outcome(proc, "LISTED")


@case("MLCORE_DISABLE_PLUGINS=<one plugin> switches only it off")
def _() -> tuple[str, str]:
    proc = plugin_run({"exit_p": "import sys\nsys.exit(3)\n", "good_p": ACT.format(name="twice")},
                      """
        import mlcore
        recs = {r.name: r.status for r in mlcore.plugins.registry().records}
        ok = recs["exit_p"] == "disabled" and "twice" in mlcore.activation_names()
        print("DENIED" if ok else recs)
    """, env={"MLCORE_DISABLE_PLUGINS": "mlcore-exit-p"})
    return outcome(proc, "DENIED")


@case("plugin calling sys.exit(3) at import")
def _() -> tuple[str, str]:
    proc = plugin_run({"exit_p": "import sys\nsys.exit(3)\n"}, """
        import warnings, mlcore
        warnings.simplefilter("ignore")
        names = mlcore.loss_names()
        rec = {r.name: r for r in mlcore.plugins.registry().records}["exit_p"]
        print("CONTAINED" if "mse" in names and "SystemExit" in rec.error else rec)
    """)
    return outcome(proc, "CONTAINED")


@case("plugin calling os._exit-free sys.exit in a hook")
def _() -> tuple[str, str]:
    proc = plugin_run({"hook_exit": """
        import sys, pluggy
        hookimpl = pluggy.HookimplMarker("mlcore")
        @hookimpl
        def mlcore_losses():
            sys.exit(5)
    """}, """
        import warnings, mlcore
        warnings.simplefilter("ignore")
        print("CONTAINED" if "mse" in mlcore.loss_names() else "no")
    """)
    return outcome(proc, "CONTAINED")


@case("loss_names() from a worker thread while plugins load (plugin waits on it)")
def _() -> tuple[str, str]:
    proc = plugin_run({"threaded_p": """
        import threading, mlcore
        result = {}
        def work():
            try:
                result["names"] = mlcore.loss_names()
            except Exception as exc:
                result["error"] = exc
        t = threading.Thread(target=work)
        t.start()
        t.join()
    """}, """
        import warnings, mlcore
        warnings.simplefilter("ignore")
        print("NO-DEADLOCK" if "mse" in mlcore.loss_names() else "no")
    """, timeout=30)
    return outcome(proc, "NO-DEADLOCK")


@case("loss_names() from another thread while a slow plugin loads")
def _() -> tuple[str, str]:
    proc = plugin_run({"slow_p": "import time\ntime.sleep(0.5)\n" + ACT.format(name="slowly")}, """
        import threading, mlcore
        seen = {}
        t = threading.Thread(target=lambda: seen.update(n=mlcore.activation_names()))
        main = threading.Thread(target=mlcore.activation_names)
        main.start(); t.start(); t.join(20); main.join(20)
        print("WAITED" if "slowly" in seen.get("n", []) else seen)
    """, timeout=30)
    return outcome(proc, "WAITED")


@case("plugin calling mlcore at import (same thread)")
def _() -> tuple[str, str]:
    proc = plugin_run({"reentrant_p": "import mlcore\nmlcore.activation('relu')\n"}, """
        import warnings, mlcore
        warnings.simplefilter("ignore")
        rec = {r.name: r for r in mlcore.plugins.registry().records}["reentrant_p"]
        print("REPORTED" if rec.status == "failed" else rec)
    """, timeout=30)
    return outcome(proc, "REPORTED")


@case("unknown name whose plugin MLCORE_PLUGINS switched off")
def _() -> tuple[str, str]:
    proc = plugin_run({"good_p": ACT.format(name="twice")}, """
        import mlcore
        try:
            mlcore.activation("twice")
        except mlcore.UnknownNameError as exc:
            print("HINTED" if "MLCORE_PLUGINS" in str(exc) and "good_p" in str(exc) else exc)
    """, env={"MLCORE_PLUGINS": ""})
    return outcome(proc, "HINTED")


# == the conformance kit ======================================================================
def kit_run(test_source: str) -> subprocess.CompletedProcess[str] | None:
    folder = pathlib.Path(tempfile.mkdtemp(dir=TMP))
    (folder / "test_kit.py").write_text(textwrap.dedent(test_source))
    try:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-W", "ignore::mlcore.PluginWarning", str(folder)],
                              capture_output=True, text=True, timeout=300, cwd=folder)
    except subprocess.TimeoutExpired:
        return None


@case("conformance kit: marker on mlcore.losses without cases passes")
def _() -> tuple[str, str]:
    proc = kit_run("""
        import pytest

        @pytest.mark.mlcore_conformance("mlcore.losses")
        def test_conformance(mlcore_case):
            mlcore_case.run()
    """)
    if proc is None:
        return "crash", "hung"
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
    return ("clean", tail) if proc.returncode == 0 else ("silent", tail)


class _CancellingLogCosh:
    """log(cosh(d)) as |d| + log1p(exp(-2|d|)) - log 2: finite everywhere, but the last
    subtraction cancels near d = 0 (1.1e-16 instead of 5e-17 at d = 1e-8)."""

    name = "log_cosh_cancelling"

    def forward(self, pred: Any, target: Any) -> Any:
        from array_api_compat import array_namespace

        xp = array_namespace(pred, target)
        a = xp.abs(pred - target)
        return xp.mean(a + xp.log1p(xp.exp(-2.0 * a)) - float(np.log(2.0)))

    def backward(self, pred: Any, target: Any) -> Any:
        from array_api_compat import array_namespace

        xp = array_namespace(pred, target)
        return xp.tanh(pred - target) / float(np.prod(pred.shape))


def _log_cosh(pred: Any, target: Any) -> Any:
    """The reference: the series d²/2 - d⁴/12 near 0, exact elsewhere; the mean, as the
    loss (which takes no ``reduction``) returns it."""
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    a = np.abs(d)
    big = a + np.log1p(np.exp(-2 * a)) - np.log(2.0)
    return np.mean(np.where(a < 1e-3, d * d / 2 - d**4 / 12, big))


@case("conformance kit catches a log-cosh that loses relative precision near zero")
def _() -> tuple[str, str]:
    from mlcore.testing import check_loss

    return error(lambda: check_loss(_CancellingLogCosh, "numpy", reference=_log_cosh,
                                    checks=("reference",)),
                 "relative", kinds=(AssertionError,))


# == round 3 (issue 27): surfaces added since the last round ==================================
def _cb() -> Any:
    from mlcore import callbacks

    return callbacks


def _fit(m: Any, X: Any, y: Any, **kw: Any) -> Any:
    return m.fit(X, y, loss="cross_entropy", verbose=False, **kw)


@case("EarlyStopping(min_delta=nan)")
def _() -> tuple[str, str]:
    return error(lambda: _cb().EarlyStopping(min_delta=float("nan")), "min_delta")


@case("ReduceLROnPlateau(patience='2') refused when built")
def _() -> tuple[str, str]:
    return error(lambda: _cb().ReduceLROnPlateau(patience="2"), "patience")


@case("CSVLogger(separator=';;') refused when built")
def _() -> tuple[str, str]:
    return error(lambda: _cb().CSVLogger(tmpfile("l.csv"), separator=";;"), "separator")


@case("callbacks=<one object>")
def _() -> tuple[str, str]:
    X, y = data()
    return error(lambda: _fit(mlcore.MLP([4, 2], seed=0), X, y,
                              callbacks=_cb().EarlyStopping()), "callbacks=[")


@case("ModelCheckpoint path field fit does not report")
def _() -> tuple[str, str]:
    X, y = data()
    ck = _cb().ModelCheckpoint(str(tmpfile("c-{val_auc}.st")), monitor="loss")
    return error(lambda: _fit(mlcore.MLP([4, 2], seed=0), X, y, callbacks=[ck]), "val_auc")


@case("CSVLogger(append=True) with other columns keeps every column")
def _() -> tuple[str, str]:
    import csv

    X, y = data()
    path, m = tmpfile("log.csv"), mlcore.MLP([4, 2], seed=0)
    _fit(m, X, y, epochs=1, callbacks=[_cb().CSVLogger(path)])
    _fit(m, X, y, epochs=2, initial_epoch=1, validation_data=(X, y),
         callbacks=[_cb().CSVLogger(path, append=True)])
    rows = list(csv.DictReader(open(path, newline="")))
    return ok(lambda: rows, lambda r: len(r) == 2 and r[1]["val_loss"] != "" and
              r[0]["val_loss"] == "")


@case("metrics on all-NaN predictions")
def _() -> tuple[str, str]:
    p, y = np.full((6, 1), np.nan, np.float32), np.array([0, 1, 0, 1, 1, 0])
    for name in ("auc", "accuracy"):
        verdict = error(lambda n=name: mlcore.metric(n)(p, y), "NaN")
        if verdict[0] != "clean":
            return verdict
    return verdict


@case("classification metrics on a continuous target")
def _() -> tuple[str, str]:
    p = np.random.default_rng(0).random((6, 1)).astype(np.float32)
    return error(lambda: mlcore.metric("precision")(p, p[:, 0] * 3), "not class labels")


@case("guard names the scheduled lr at the failing batch", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    sched = _cb().LearningRateScheduler(lambda e: 0.01 if e < 2 else 1e4)
    return error(lambda: _fit(mlcore.MLP([4, 16, 2], seed=0), X, y, optimizer="sgd",
                              lr=0.01, epochs=10, callbacks=[sched]), "lr=10000")


@case("class_weight={0: inf} refused, not blamed on the data", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    return error(lambda: _fit(mlcore.MLP([4, 2], seed=0), X, y, class_weight={0: np.inf}),
                 "class_weight")


@case("one-shot generator that runs out warns and stops")
def _() -> tuple[str, str]:
    X, y = data()
    gen = ((X[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        h = _fit(mlcore.MLP([4, 2], seed=0), gen, None, steps_per_epoch=2, epochs=4)
    said = any("ran out" in str(w.message) for w in seen)
    return ok(lambda: h, lambda r: said and len(r["loss"]) == 2)


@case("all-zero sample_weight", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    return error(lambda: _fit(mlcore.MLP([4, 2], seed=0), X, y, sample_weight=np.zeros(200)),
                 "0 for every training sample")


@case("initial_epoch >= epochs")
def _() -> tuple[str, str]:
    X, y = data()
    return error(lambda: _fit(mlcore.MLP([4, 2], seed=0), X, y, epochs=3, initial_epoch=3),
                 "initial_epoch")


@case("MLCORE_DISABLE_PLUGINS typo")
def _() -> tuple[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", "import warnings, mlcore; warnings.simplefilter('error', "
         "mlcore.PluginWarning); mlcore.backend_names()"], capture_output=True, text=True,
        timeout=120, env=dict(os.environ, MLCORE_DISABLE_PLUGINS="strictt"))
    return _said(proc, "Did you mean 'strict'")


@case("mlcore bench --cases ','")
def _() -> tuple[str, str]:
    from click.testing import CliRunner

    from mlcore.cli import main as cli

    r = CliRunner().invoke(cli, ["bench", "--cases", ","])
    return ("clean", r.output.strip()[-80:]) if r.exit_code == 2 and "--cases" in r.output \
        else ("unclear", r.output[-160:])


@case("mlcore.load() of a ModelCheckpoint file")
def _() -> tuple[str, str]:
    from mlcore.saving.checkpoint import save_checkpoint

    m, path = mlcore.MLP([4, 2], seed=0), tmpfile("ck.safetensors")
    save_checkpoint(path, m, mlcore.Adam(m.parameters()), epoch=1)
    X, _ = data()
    return ok(lambda: mlcore.load(path), lambda r: np.array_equal(
        np.asarray(r.predict(X)), np.asarray(m.predict(X))))


@case("checkpoint with an optimiser option it does not know")
def _() -> tuple[str, str]:
    from mlcore.saving import checkpoint

    m, path = mlcore.MLP([4, 2], seed=0), tmpfile("ck.safetensors")
    real = checkpoint._options
    checkpoint._options = lambda o: {**real(o), "warp": 9}  # type: ignore[assignment]
    try:
        checkpoint.save_checkpoint(path, m, mlcore.Adam(m.parameters()), epoch=1)
    finally:
        checkpoint._options = real  # type: ignore[assignment]
    return error(lambda: checkpoint.load_checkpoint(path), "'warp'")


@case("temp files of killed saves are cleaned up")
def _() -> tuple[str, str]:
    from mlcore.saving import io

    path = tmpfile("m.safetensors")
    stale = path.parent / ".m.safetensors.deadbeef.tmp"
    stale.write_bytes(b"0" * 4096)
    past = os.path.getmtime(stale) - io.STALE_SECONDS - 5
    os.utime(stale, (past, past))
    mlcore.MLP([4, 2], seed=0).save(path)
    return ok(lambda: stale.exists(), lambda r: r is False)


@case("NumPy scalars: class_weight keys, schedule values, validation_split, batches()")
def _() -> tuple[str, str]:
    X, y = data()
    m = mlcore.MLP([4, 2], seed=0)
    cw = dict(zip(np.unique(y), np.array([1.0, 2.0], np.float32), strict=True))
    sched = _cb().LearningRateScheduler(lambda e: np.float32(0.01))
    h = _fit(m, X, y, class_weight=cw, validation_split=np.float32(0.2), epochs=1,
             callbacks=[sched])
    b = mlcore.data.batches(X, y, batch_size=np.int64(50))
    return ok(lambda: (h, len(b)), lambda r: "val_loss" in r[0] and r[1] == 4)


@case("mlcore launch -m missing.module, a malformed host file")
def _() -> tuple[str, str]:
    from click.testing import CliRunner

    from mlcore.cli import main as cli

    hosts = tmpfile("hosts")
    hosts.write_text("node1:x\n")
    a = CliRunner().invoke(cli, ["launch", "-n", "2", "--dry-run", "-m", "missing.module"])
    b = CliRunner().invoke(cli, ["launch", "-n", "2", "--dry-run", "--hostfile", str(hosts),
                                 "-m", "mlcore"])
    good = a.exit_code == 2 and "no module named" in a.output and b.exit_code == 2 \
        and "line 1" in b.output
    return ("clean", "both named") if good else ("unclear", (a.output + b.output)[-160:])


@case("PReLU(init=nan), PReLU(init='abc')")
def _() -> tuple[str, str]:
    v = error(lambda: mlcore.PReLU(init=float("nan")), "init")
    return v if v[0] != "clean" else error(lambda: mlcore.PReLU(init="abc"), "init")


@case("softmax(axis=5)", per_backend=True)
def _() -> tuple[str, str]:
    x = mlcore.get_backend().asarray(np.ones((2, 3), np.float32))
    return error(lambda: mlcore.activation("softmax", axis=5).forward(x), "axis=5")


@case("negative seed (MLP, fit, demo digits --seed -1)")
def _() -> tuple[str, str]:
    from click.testing import CliRunner

    from mlcore.cli import main as cli

    X, y = data()
    v = error(lambda: mlcore.MLP([4, 2], seed=-1), "seed")
    if v[0] == "clean":
        v = error(lambda: _fit(mlcore.MLP([4, 2], seed=0), X, y, seed=-1), "seed")
    r = CliRunner().invoke(cli, ["demo", "digits", "--seed", "-1"])
    return v if r.exit_code == 2 and "--seed" in r.output else ("unclear", r.output[-160:])


@case("values beyond float32's range named as overflow", per_backend=True)
def _() -> tuple[str, str]:
    return error(lambda: mlcore.MLP([4, 2], seed=0).predict(np.full((2, 4), 1e39)),
                 "beyond the range")


@case("binary cross-entropy, 3 outputs, 1-D labels", per_backend=True)
def _() -> tuple[str, str]:
    X, y = data()
    m = mlcore.MLP([4, 3], output_activation="sigmoid", seed=0)
    return error(lambda: m.fit(X, y, loss="binary_cross_entropy", verbose=False), "3 outputs")


@case("layers of two backends in one Sequential")
def _() -> tuple[str, str]:
    a = mlcore.Dense(4, 3)
    with mlcore.use_backend("strict"):
        b = mlcore.Dense(3, 2)
    return error(lambda: mlcore.Sequential([a, b]), "share one backend")


@case("a torch tensor on another device")
def _() -> tuple[str, str]:
    try:
        import torch
    except ImportError:
        return "clean", "torch not installed: nothing to check"
    with mlcore.use_backend("torch"):
        m = mlcore.MLP([4, 2], seed=0)
    return error(lambda: m.predict(torch.zeros((2, 4), device="meta")), "device")


@case("a Python list given to a loss or Parameter.set")
def _() -> tuple[str, str]:
    v = error(lambda: mlcore.loss("mse").forward([1.0], [2.0]), "not an array")
    if v[0] != "clean":
        return v
    return error(lambda: mlcore.Dense(2, 1).weight.set([[1.0, 2.0]]), "not an array")


@case("one use_backend object entered twice and in another thread")
def _() -> tuple[str, str]:
    import threading

    ctx, seen = mlcore.use_backend("strict"), []
    with ctx:
        pass
    with ctx:
        seen.append(mlcore.get_backend().name)
    t = threading.Thread(target=lambda: seen.append(_entered(ctx)))
    t.start()
    t.join()
    return ok(lambda: seen, lambda r: r == ["strict", "strict"])


def _entered(ctx: Any) -> str:
    with ctx:
        return str(mlcore.get_backend().name)


@case("distributed fit that process 1 never reaches ends naming it")
def _() -> tuple[str, str]:
    try:
        import mpi4py  # noqa: F401

        from mlcore.distributed.launch import find_mpiexec

        mpiexec = find_mpiexec()
    except Exception:  # noqa: BLE001 - no MPI here: nothing to check
        return "clean", "MPI not installed: nothing to check"
    code = textwrap.dedent("""
        import numpy as np, mlcore
        from mlcore import distributed
        if distributed.is_main():
            X = np.ones((8, 2), np.float32); y = np.zeros(8, np.int64)
            mlcore.MLP([2, 2], seed=0).fit(X, y, loss="cross_entropy", distributed=True,
                                           verbose=False)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMI")}
    env |= {"MLCORE_DISTRIBUTED_TIMEOUT": "3", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", code], env=env,
                              capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return "crash", "hung"
    return _said(proc, "process 1 of 2 never reached")


def _said(proc: subprocess.CompletedProcess[str], want: str) -> tuple[str, str]:
    """Clean when the process failed and its stderr says ``want``."""
    if proc.returncode == 0:
        return "silent", "exit status 0"
    return ("clean", want) if want in proc.stderr else ("unclear", proc.stderr[-200:])



# -- round 3, the optimiser items (issue 21's rules) -----------------------------------------

@case("Adam/AdamW at lr=0 (warm-up, cosine past its end) train on", per_backend=True)
def _() -> tuple[str, str]:
    for name in ("adam", "adamw"):
        m = mlcore.MLP([2, 3, 1], seed=0)
        sched = mlcore.callbacks.LearningRateScheduler(lambda epoch: 0.01 * epoch)
        got = ok(lambda m=m, name=name, sched=sched: m.fit(
            [[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0], loss="mse", optimizer=name, epochs=2,
            callbacks=[sched], verbose=False), lambda h: len(h["loss"]) == 2)
        if got[0] != "clean":
            return got
    return got


@case("RMSprop/Adagrad argument errors name the argument")
def _() -> tuple[str, str]:
    p = [mlcore.layers.Parameter(np.ones(2))]
    for cls, kw, match in ((mlcore.RMSprop, {"alpha": 2.0}, "alpha must be"),
                           (mlcore.Adagrad, {"lr_decay": -1.0}, "lr_decay must be"),
                           (mlcore.Adagrad, {"initial_accumulator_value": "x"},
                            "initial_accumulator_value must be")):
        got = error(lambda cls=cls, kw=kw: cls(p, **kw), match)
        if got[0] != "clean":
            return got
    return got


@case("RMSprop(centered='False') refused")
def _() -> tuple[str, str]:
    p = [mlcore.layers.Parameter(np.ones(2))]
    return error(lambda: mlcore.RMSprop(p, centered="False"), "centered must be True or False")


@case("RMSprop/Adagrad eps=0 refused (was NaN)")
def _() -> tuple[str, str]:
    p = [mlcore.layers.Parameter(np.ones(2))]
    got = error(lambda: mlcore.RMSprop(p, eps=0.0), "eps must be")
    return got if got[0] != "clean" else error(lambda: mlcore.Adagrad(p, eps=0.0), "eps must be")


@case("SGD/RMSprop load_state_dict of a longer model refused")
def _() -> tuple[str, str]:
    big = [mlcore.layers.Parameter(np.ones(2)) for _ in range(3)]
    for cls, kw in ((mlcore.SGD, {"momentum": 0.9}), (mlcore.RMSprop, {})):
        opt = cls(big, **kw)
        for q in big:
            q.grad = np.ones(2)
        opt.step()
        got = error(lambda cls=cls, kw=kw, opt=opt: cls(big[:2], **kw).load_state_dict(
            opt.state_dict()), "does not fit")
        if got[0] != "clean":
            return got
    return got


@case("clip_norm/clip_value take NumPy scalars")
def _() -> tuple[str, str]:
    p = [mlcore.layers.Parameter(np.ones(2))]
    return ok(lambda: mlcore.SGD(p, clip_norm=np.float32(1.0), clip_value=np.int64(2)),
              lambda o: (o.clip_norm, o.clip_value) == (1.0, 2.0))


@case("fit(jit_compile=True) clips on the compiled step as eagerly", per_backend=True)
def _() -> tuple[str, str]:
    from mlcore.plugins import registry

    class Identity:
        @mlcore.hookimpl
        def mlcore_compile_step(self, backend: Any, step: Any) -> Any:
            return step

    weights = []
    registry().pm.register(plugin := Identity(), name="sweep-identity")
    try:
        for jit in (False, True):
            m = mlcore.MLP([2, 3, 1], seed=0, dtype="float64")
            m.fit([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0], loss="mse", verbose=False,
                  optimizer=mlcore.SGD(m.parameters(), lr=0.5, clip_norm=0.01),
                  epochs=3, jit_compile=jit)
            weights.append(m.backend.to_numpy(m.parameters()[0].value))
    finally:
        registry().pm.unregister(plugin)
    if np.allclose(weights[0], weights[1], rtol=1e-12, atol=1e-14):
        return "clean", "eager and compiled clip alike"
    return "silent", f"differ by {np.max(np.abs(weights[0] - weights[1]))}"


def main() -> int:
    verbose = "-v" in sys.argv
    counts: dict[str, int] = {}
    for name, fn in CASES:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                verdict, detail = fn()
        except Exception as exc:  # noqa: BLE001
            verdict, detail = "unclear", "".join(traceback.format_exception_only(exc)).strip()
        counts[verdict] = counts.get(verdict, 0) + 1
        if verbose or verdict != "clean":
            print(f"{verdict:<8} {name}: {detail}")
    total = sum(counts.values())
    print("  ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"clean {counts.get('clean', 0)}/{total}")
    return 0 if counts.get("clean", 0) == total else 1


if __name__ == "__main__":
    sys.exit(main())
