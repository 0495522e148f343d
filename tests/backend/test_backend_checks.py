"""The backend conformance check (mlcore.testing.check_backend): every installed backend
passes it, a third party's (the template, installed through an entry point) passes it the
same way, and a faulty backend is told which check fails and why."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import mlcore
from mlcore.testing import BACKEND_CHECKS, check_backend

TEMPLATE = Path(__file__).resolve().parents[2] / "backends" / "template"


@pytest.mark.parametrize("check", BACKEND_CHECKS)
def test_installed_backend_passes(backend: Any, check: str) -> None:
    check_backend(backend, checks=[check])


def test_unknown_check_is_named() -> None:
    with pytest.raises(ValueError, match="Unknown backend check.*'nope'|nope"):
        check_backend("numpy", checks=["nope"])


@pytest.fixture
def with_template(make_dist: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The template backend's package on sys.path, plus a distribution that declares the
    entry points given (``make_dist`` builds the dist-info, as pip would)."""
    monkeypatch.syspath_prepend(str(TEMPLATE))
    return make_dist


def test_third_party_template_passes(with_template: Any) -> None:
    with_template("mlcore-backend-template", "template_entry",
                  "from mlcore_backend_template import *  # noqa: F403\n"
                  "from mlcore_backend_template import mlcore_backends  # noqa: F401\n",
                  ep_name="template")
    assert "template" in mlcore.backend_names()
    check_backend("template")


_BROKEN = """
import numpy as np
from mlcore_backend_template import TemplateBackend, hookimpl

class Broken(TemplateBackend):
    name = "{name}"

    def {method}

@hookimpl
def mlcore_backends():
    return [Broken()]
"""

FAULTS = [
    ("to_numpy(self, x):\n        return np.asarray(x)", "conversions",
     "to_numpy of a transposed array must be a C-ordered copy of its values"),
    ("rng(self, seed=None):\n        return super().rng(None)", "random",
     "rng(7) twice gave different numbers"),
    ("owns(self, x):\n        return False", "protocol", "owns() is False for its own array"),
]


@pytest.mark.parametrize(("method", "check", "message"), FAULTS, ids=[f[1] for f in FAULTS])
def test_faulty_backend_is_told_what_is_wrong(with_template: Any, method: str, check: str,
                                              message: str) -> None:
    with_template("mlcore-broken", "broken_backend",
                  _BROKEN.format(name="broken", method=method), ep_name="broken")
    with pytest.raises(AssertionError, match=rf"\[backend broken\] {check}: .*"
                       + message.replace("(", r"\(").replace(")", r"\)")):
        check_backend("broken", checks=[check])


_LAZY = """
from mlcore_backend_template import TemplateBackend, hookimpl

CALLS = []

class Lazy(TemplateBackend):
    name = "lazy"

    def materialize(self, arrays):
        CALLS.append(len(arrays))
        return tuple(a.copy() for a in arrays)

@hookimpl
def mlcore_backends():
    return [Lazy()]
"""


def test_a_lazy_backend_materialises_parameters_and_state_each_step(with_template: Any) -> None:
    """The per-step hook: after each eager update, the parameters and optimiser state go
    through the backend's ``materialize`` and its results are stored (dask's persist)."""
    import sys

    import numpy as np

    with_template("mlcore-lazy", "lazy_backend", _LAZY, ep_name="lazy")
    with mlcore.use_backend("lazy"):
        model = mlcore.MLP([3, 4, 2], seed=0)
        rng = np.random.default_rng(0)
        model.fit(rng.normal(size=(12, 3)), rng.integers(0, 2, size=12), loss="cross_entropy",
                  optimizer="adam", epochs=2, batch_size=4, verbose=False)
    n = len(model.parameters())
    calls = sys.modules["lazy_backend"].CALLS
    assert calls == [3 * n] * 6  # params, m, v; 6 steps
    for optimizer, arrays in ((mlcore.RMSprop(model.parameters(), momentum=0.9, centered=True),
                               4 * n), (mlcore.Adagrad(model.parameters()), 2 * n)):
        calls.clear()  # every declared slot goes through materialize (was: Adam's and SGD's)
        with mlcore.use_backend("lazy"):
            model.fit(rng.normal(size=(12, 3)), rng.integers(0, 2, size=12),
                      loss="cross_entropy", optimizer=optimizer, epochs=1, batch_size=4,
                      verbose=False)
        assert calls == [arrays] * 3, type(optimizer).__name__


# -- what the ndonnx author got wrong: each fault planted in a copy of the template ----------
_PLANTED = """
import types

import array_api_compat.numpy as _full
import numpy as np
from mlcore_backend_template import TemplateBackend, hookimpl


class Own(np.ndarray):
    '''Arrays of a library that is not NumPy, as far as the backend is concerned.'''


class Rebinding(Own):
    def __isub__(self, other):
        return np.subtract(self, other).view(Rebinding)  # a new array: p -= u rebinds


class Unreadable(np.ndarray):
    '''Targets that refuse to be read, as a tracer refuses float() and bool().'''

    def __new__(cls, y):
        return np.asarray(y).view(cls)

    def __array_ufunc__(self, *args, **kwargs):
        raise RuntimeError("a traced value cannot be read")


def trimmed(*names):
    '''array-api-compat's NumPy namespace without ``names``.'''
    ns = types.ModuleType("trimmed_numpy")
    ns.__dict__.update({k: v for k, v in vars(_full).items() if k not in names
                        and (not k.startswith("__") or k == "__array_namespace_info__")})
    return ns


class Broken(TemplateBackend):
    name = "broken"

{body}


mlcore_backends = Broken.backends_hook()
mlcore_compile_step = Broken.compile_step_hook()
"""

NDONNX_FAULTS = {
    "asarray ignores dtype": ("""
    def asarray(self, obj, dtype=None):
        wide = dtype is not None and np.dtype(dtype).kind == "f"
        return np.asarray(obj, dtype=np.float64 if wide else dtype)
""", "conversions", r"asarray\(ndarray int64, dtype=float32\) gave dtype float64: asarray must "
                    r"give exactly the dtype asked for"),
    "asarray of its own arrays": ("""
    def owns(self, x):
        return isinstance(x, Own)

    def asarray(self, obj, dtype=None):
        if isinstance(obj, Own):  # as np.asarray(an ndonnx array) fails
            raise TypeError("an Own array cannot be converted through NumPy")
        return self.xp.asarray(np.asarray(obj), dtype=dtype).view(Own)
""", "conversions", r"asarray\(its own Own float32, dtype=None\) raised TypeError: an Own array "
                    r"cannot be converted through NumPy\. asarray receives the library's own "
                    r"arrays too"),
    "unpicklable after use": ("""
    __reduce__ = object.__reduce__  # the instance dict, with the cached xp module, is pickled
""", "pickle", r"pickling the backend after use failed \(TypeError: cannot pickle 'module' "
               r"object\); its attribute 'xp' \(module\) does not pickle"),
    "compile hook raises": ("""
    def compile_step(self, step):
        raise RuntimeError("cannot trace this backend")
""", "training", r"mlcore_compile_step of plugin 'broken' raised RuntimeError: cannot trace this "
                 r"backend when asked whether it compiles training steps for backend 'broken'"),
    "compiled step raises": ("""
    def compile_step(self, step):
        def run(params, state, X, y):
            raise RuntimeError("the graph has no such operator")
        return run
""", "training", r"compiled step: plugin 'broken' offers a compiled training step for this "
                 r"backend .* but that step did not run \(RuntimeError: the graph has no such "
                 r"operator\)"),
    "xp without zeros": ("""
    xp = trimmed("zeros")
""", "namespace", r"xp has no zeros, which the core calls on backend\.xp to create arrays\. The "
                  r"core creates arrays and names dtypes with backend\.xp \(trimmed_numpy\) and "
                  r"computes with the namespace of the arrays at hand, array_namespace\(x\) "
                  r"\(array_api_compat\.numpy\)"),
    "xp without exp, log1p, sum": ("""
    xp = trimmed("exp", "log1p", "sum")
""", "namespace", r"xp has no sum, exp, log1p\. The core creates arrays"),
    "is_available raises": ("""
    def is_available(self):
        raise RuntimeError("no ONNX runtime")
""", "protocol", r"not usable here \(failed\): is_available\(\) raised RuntimeError: no "
                 r"ONNX runtime"),
    "xp import raises": ("""
    @property
    def xp(self):
        raise ModuleNotFoundError("No module named 'array_api_compat.ndonnx'")
""", "protocol", r"not usable here \(failed\): xp raised ModuleNotFoundError: No module named "
                 r"'array_api_compat\.ndonnx'\. A backend's xp must not raise"),
    "inplace but -= rebinds": ("""
    def owns(self, x):
        return isinstance(x, Own)

    def asarray(self, obj, dtype=None):
        return self.xp.asarray(np.asarray(obj), dtype=dtype).view(Rebinding)
""", "protocol", r"inplace=True, but x -= u gave a new array instead of writing into x"),
}


def _plant(with_template: Any, fault: str) -> None:
    with_template("mlcore-broken", "broken_backend",
                  _PLANTED.replace("{body}", NDONNX_FAULTS[fault][0].strip("\n")), ep_name="broken")


@pytest.mark.parametrize("fault", list(NDONNX_FAULTS))
def test_each_planted_backend_fault_fails_its_check(with_template: Any, fault: str) -> None:
    """Each fault the ndonnx author made, planted in a copy of the template: the check that
    covers it fails naming the member at fault (it passed before, or failed elsewhere
    blaming the user), and every other fault-free check still passes."""
    _plant(with_template, fault)
    _, check, message = NDONNX_FAULTS[fault]
    with pytest.raises(AssertionError, match=rf"\[backend broken\] {check}: .*{message}"):
        check_backend("broken", checks=[check])


def test_missing_zeros_fails_the_protocol_and_get_backend(with_template: Any) -> None:
    """Removing ``zeros`` from ``xp`` is not a raw AttributeError in a layer: the backend is
    listed as failed, ``get_backend`` raises mlcore's error naming it and the function, and
    the command line prints one ``mlcore: error:`` line."""
    from click.testing import CliRunner

    from mlcore.cli import main
    from mlcore.errors import BackendUnavailableError

    _plant(with_template, "xp without zeros")
    with pytest.raises(AssertionError, match=r"protocol: not usable here \(failed\): its namespace "
                       r"xp \(trimmed_numpy\) has no zeros"):
        check_backend("broken", checks=["protocol"])
    with pytest.raises(BackendUnavailableError, match=r"Backend 'broken' .* has no zeros, which "
                       r"mlcore calls on backend\.xp"):
        mlcore.get_backend("broken")
    result = CliRunner().invoke(main, ["demo", "xor", "--seeds", "1", "--backend", "broken"])
    assert result.exit_code == 1
    assert result.output.startswith("mlcore: error: Backend 'broken'"), result.output
    assert "has no zeros" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("fault", "line"), [
    ("is_available raises", "is_available() raised RuntimeError: no ONNX runtime."),
    ("xp import raises", "xp raised ModuleNotFoundError: No module named "
                         "'array_api_compat.ndonnx'.")])
def test_info_lists_a_raising_backend_as_failed(with_template: Any,
                                                monkeypatch: pytest.MonkeyPatch, fault: str,
                                                line: str) -> None:
    """A backend whose ``is_available()`` or ``xp`` (its import) raises: ``mlcore info``
    lists it as failed with the reason in one line (no traceback), the others as before;
    selecting it is mlcore's error, naming the member."""
    import json

    from click.testing import CliRunner

    from mlcore.cli import main
    from mlcore.errors import BackendUnavailableError

    _plant(with_template, fault)
    monkeypatch.delenv("MLCORE_BACKEND", raising=False)
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    assert any(row.startswith(f"  broken   failed: {line}")
               for row in result.output.splitlines()), result.output
    assert "numpy    available, device cpu" in result.output
    assert "Traceback" not in result.output
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["info", "--json"]).output)
            ["backends"]}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["available"] is False
    assert "broken" not in mlcore.backend_names(available_only=True)
    with pytest.raises(BackendUnavailableError, match=re.escape(line.split(":")[0])):
        mlcore.get_backend("broken")


def test_a_failing_compiled_step_warning_names_the_backends_hook(with_template: Any) -> None:
    """fit falls back to the eager step; the warning blames the compile hook of the plugin
    whose code raised, not the model's losses and activations."""
    import numpy as np

    _plant(with_template, "compiled step raises")
    rng = np.random.default_rng(0)
    with mlcore.use_backend("broken"):
        model = mlcore.MLP([3, 4, 2], seed=0)
        with pytest.warns(mlcore.CompiledStepWarning) as seen:
            model.fit(rng.normal(size=(8, 3)), rng.integers(0, 2, size=8), epochs=1,
                      loss="cross_entropy", verbose=False)
    text = str(seen[0].message)
    assert "plugin 'broken''s mlcore_compile_step returned for backend 'broken' failed " \
           "outside mlcore's step (RuntimeError: the graph has no such operator" in text
    assert "not the model's" in text and "reads a value back" not in text


def test_a_host_read_in_the_step_still_blames_the_loss(with_template: Any) -> None:
    """An error raised inside mlcore's step (a loss reading a value back, as a tracer
    refuses) keeps the message about losses, activations and layers."""
    import numpy as np

    with_template("mlcore-broken", "broken_backend", _PLANTED.replace("{body}", """
    def compile_step(self, step):
        def run(params, state, X, y):
            return step(params, state, X, Unreadable(y))
        return run
""".strip("\n")), ep_name="broken")
    rng = np.random.default_rng(0)
    with mlcore.use_backend("broken"):
        model = mlcore.MLP([3, 4, 2], seed=0)
        with pytest.warns(mlcore.CompiledStepWarning) as seen:
            model.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 2)), epochs=1, loss="mse",
                      verbose=False)
    text = str(seen[0].message)
    assert "RuntimeError: a traced value cannot be read" in text, text
    assert "reads a value back to the host" in text and "mlcore_compile_step" not in text


_HOSTED = """
import numpy as np
from mlcore_backend_template import TemplateBackend, hookimpl

CALLS = {"sliced": [], "hosted": []}


class Sliced(TemplateBackend):
    name = "sliced"

    def asarray(self, obj, dtype=None):
        CALLS[self.name].append(tuple(np.shape(obj)))
        return super().asarray(obj, dtype)

    def compile_step(self, step):
        return step  # an identity compiler: fit runs its compiled executor


class Hosted(Sliced):
    name = "hosted"
    host_batches = True  # a graph library: slice on the host, convert each batch once


@hookimpl
def mlcore_backends():
    return [Sliced(), Hosted()]


mlcore_compile_step = Sliced.compile_step_hook()
"""


@pytest.mark.parametrize("jit", [False, None], ids=["eager", "compiled"])
@pytest.mark.parametrize("task", ["mse-weighted", "cross_entropy"])
def test_host_batches_convert_each_batch_once_and_train_the_same(with_template: Any, jit: Any,
                                                                 task: str) -> None:
    """``host_batches = True``: fit slices the training data on the host and calls the
    backend's ``asarray`` once per array per batch (X, the targets, the weights; labels that
    are the targets once), never on its arrays; the history and weights are the default
    path's, bit for bit, eager and compiled."""
    import sys

    import numpy as np

    with_template("mlcore-hosted", "hosted_backend", _HOSTED, ep_name="hosted")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    if task == "mse-weighted":
        y, kw, arrays = rng.normal(size=(20, 2)), {"sample_weight": rng.random(20),
                                                   "metrics": ["mae"]}, 3
    else:
        y, kw, arrays = rng.integers(0, 2, size=20), {"metrics": ["accuracy"]}, 2
    results = {}
    for name in ("sliced", "hosted"):
        with mlcore.use_backend(name):
            model = mlcore.MLP([3, 5, 2], seed=0)
            history = model.fit(x, y, loss=task.split("-")[0], epochs=2, batch_size=8, seed=1,
                                jit_compile=jit, verbose=False, **kw)
        results[name] = history, {k: np.asarray(v) for k, v in model.state_dict().items()}
    calls = sys.modules["hosted_backend"].CALLS
    batch_rows = {8, 4}  # 20 rows in batches of 8, 8, 4
    assert [s for s in calls["sliced"] if s and s[0] in batch_rows] == []
    per_batch = [s[0] for s in calls["hosted"] if s and s[0] in batch_rows]
    assert per_batch == [r for _ in range(2) for r in (8, 8, 4) for _ in range(arrays)]
    (h0, w0), (h1, w1) = results["sliced"], results["hosted"]
    assert h1 == h0
    for key in w0:
        np.testing.assert_array_equal(w1[key], w0[key])


def test_every_spot_of_the_template_to_change_is_marked() -> None:
    """Every statement of the template's class that names NumPy or its devices carries
    ``# your library`` (the docs promise no count: "every line marked"), ``asarray`` twice
    (host data, and the library's own arrays), ``to_numpy`` included."""
    import ast

    source = (TEMPLATE / "mlcore_backend_template" / "__init__.py").read_text()
    lines = source.splitlines()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef))
    marks: dict[str, int] = {}
    for node in cls.body:
        if isinstance(node, ast.Expr):  # the docstring
            continue
        name = node.name if isinstance(node, ast.FunctionDef) else ast.unparse(node).split(" =")[0]
        span = lines[node.lineno - 1: node.end_lineno]
        marks[name] = sum("# your library" in line for line in span)
    del marks["name"]  # the backend's name: renamed with the distribution (pyproject.toml)
    assert {k for k, v in marks.items() if not v} == set(), marks
    assert marks["asarray"] == 2 and marks["to_numpy"] == 1
    assert {"parse_device", "make_device", "asarray", "to_numpy"} <= set(marks)


@pytest.mark.slow
@pytest.mark.parametrize("x64", ["0", "1"], ids=["jax-32-bit", "jax-x64"])
def test_the_template_passes_its_own_tests_outside_the_checkout(tmp_path: Path,
                                                                x64: str) -> None:
    """backends/template copied outside the checkout (no conftest of ours), "installed" by a
    dist-info folder as pip leaves it, runs its own tests: every backend check, with JAX's
    64-bit mode off and on."""
    import os
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "template"
    shutil.copytree(TEMPLATE, copy, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    info = copy / "mlcore_backend_template-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mlcore-backend-template\n"
                                   "Version: 0.1.0\n")
    (info / "entry_points.txt").write_text("[mlcore]\ntemplate = mlcore_backend_template\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLCORE_", "PYTEST_", "JAX_ENABLE"))}
    env.update(JAX_ENABLE_X64=x64, JAX_PLATFORMS="cpu", PYTHONPATH=str(copy))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                          "no:xdist", "tests"], cwd=copy, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    assert f"{len(BACKEND_CHECKS)} passed" in out.stdout, out.stdout[-2000:]


_DEVICES = """
from mlcore_backend_template import TemplateBackend, hookimpl


class Device:
    '''A library's device object whose str() is an object address.'''


DEVICE = Device()


class Addressed(TemplateBackend):
    name = "addressed"

    def make_device(self, wanted):
        return DEVICE


class Labelled(Addressed):
    name = "labelled"

    def device_label(self):
        return "onnx:cpu"


@hookimpl
def mlcore_backends():
    return [Addressed(), Labelled()]
"""


def test_info_shows_a_readable_device_never_an_address(with_template: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlcore info`` shows the backend's optional ``device_label()``; without one, a device
    whose str() is an object address is shown by its type and library."""
    from click.testing import CliRunner

    from mlcore.cli import main

    with_template("mlcore-devices", "devices_backend", _DEVICES, ep_name="devices")
    monkeypatch.setenv("MLCORE_BACKEND", "addressed")
    out = CliRunner().invoke(main, ["info"]).output
    assert " at 0x" not in out, out
    assert "selected backend: addressed (from environment (MLCORE_BACKEND)), device Device " \
           "(devices_backend)" in out
    assert "  addressed available, device Device (devices_backend)" in out
    assert "  labelled available, device onnx:cpu" in out


def _docs_compile_example() -> str:
    """docs/backends.md's third-party ``mlcore_compile_step`` (its first Python block after
    "Compiling steps for your own backend")."""
    text = (TEMPLATE.parents[1] / "docs" / "backends.md").read_text()
    start = text.index("### Compiling steps for your own backend")
    return str(re.findall(r"```python\n(.*?)```", text[start:], re.S)[0])


def test_the_docs_compile_hook_example_runs(with_template: Any) -> None:
    """The docs' compile hook, as the plugin module of a template backend named mybackend:
    it answers None for every other backend, its step passes check_backend's training check
    (compiled and run), and a fit traces one graph per batch shape (8 rows, then 4)."""
    import sys

    import numpy as np

    from mlcore.plugins import registry

    with_template("mlcore-mybackend", "mybackend_plugin", _docs_compile_example() + """

from mlcore_backend_template import TemplateBackend

TRACED = []
_trace = trace


def trace(step, params, state, X, y):
    TRACED.append(tuple(X.shape))
    return _trace(step, params, state, X, y)


class MyBackend(TemplateBackend):
    name = "mybackend"


mlcore_backends = MyBackend.backends_hook()
""", ep_name="mybackend")
    check_backend("mybackend", checks=["training"])
    plugin = sys.modules["mybackend_plugin"]
    for name, b in registry().backends.items():
        answer = plugin.mlcore_compile_step(backend=b, step=None)
        assert (answer is None) == (name != "mybackend"), name
    plugin.TRACED.clear()
    rng = np.random.default_rng(0)
    with mlcore.use_backend("mybackend"):
        model = mlcore.MLP([3, 5, 2], seed=0)
        model.fit(rng.normal(size=(20, 3)), rng.integers(0, 2, size=20), loss="cross_entropy",
                  epochs=2, batch_size=8, verbose=False)
    assert plugin.TRACED == [(8, 3), (4, 3)]


def test_the_docs_list_the_functions_the_checks_require() -> None:
    """docs/backends.md's two lists are the namespace check's: ``XP_CALLS`` for
    ``backend.xp``, ``MATH_CALLS`` for the arrays' namespace."""
    from mlcore.backend import XP_CALLS
    from mlcore.testing.backend_checks import MATH_CALLS

    text = " ".join((TEMPLATE.parents[1] / "docs" / "backends.md").read_text().split())
    xp_part = text.split("The core calls ", 1)[1].split(" on it (`mlcore.backend.XP_CALLS`)")[0]
    math_part = text.split("compute with `backend.xp`): ", 1)[1].split(
        " (`mlcore.testing.backend_checks.MATH_CALLS`)")[0]
    assert re.findall(r"`(\w+)`", xp_part) == list(XP_CALLS)
    assert re.findall(r"`(\w+)`", math_part) == list(MATH_CALLS)
