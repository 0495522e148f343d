"""The plugins as a stranger gets them: built into wheels, pip-installed into a fresh virtual
environment, found only through their entry points, controlled, and uninstalled.

No network: the wheels of mlcore, mlcore-numpy, mlcore-strict and the three plugins are built
here from copies of their folders; the third-party libraries they need (numpy, pluggy,
array-api-compat, array-api-strict, click, tqdm, safetensors, pytest) are made visible to the
new environment through a ``.pth`` file pointing at a folder of links to exactly those
distributions, so the editable installs of this checkout stay invisible to it.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any

import pytest
from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROJECTS = {  # copied folder -> source folder
    "mlcore": ROOT, "mlcore-numpy": ROOT / "backends/numpy",
    "mlcore-strict": ROOT / "backends/strict",
    "activations-extra": ROOT / "plugins/activations-extra",
    "losses-extra": ROOT / "plugins/losses-extra", "template": ROOT / "plugins/template",
}
PLUGINS = ("mlcore-activations-extra", "mlcore-losses-extra", "mlcore-plugin-template")
THIRD_PARTY = ("numpy", "pluggy", "array-api-compat", "array-api-strict", "click", "tqdm",
               "safetensors", "pytest")
EXTRA_ACTIVATIONS = {"gelu", "silu", "swish", "elu", "selu", "softplus", "mish", "hard_sigmoid"}
EXTRA_LOSSES = {"huber", "binary_focal", "focal", "hinge", "squared_hinge", "cosine_similarity",
                "poisson_nll"}

PROBED_LOSSES = {"huber", "hinge", "squared_hinge", "cosine_similarity", "poisson_nll",
                 "binary_focal"}

# Run inside the new environment: what is registered, and forward and backward of each
# plugin activation (and of the same-shape losses) on the selected backend, as JSON.
PROBE = """
import json, sys, mlcore
b = mlcore.get_backend()
acts, losses = mlcore.activation_names(), mlcore.loss_names()
x = b.asarray([[-1e4, -2.0, 0.5], [1.0, 3.0, 1e4]], dtype=b.xp.float32)
t = b.asarray([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=b.xp.float32)
builtin = {"identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax", "log_softmax", "step"}

def report(out, grad):
    return {"dtypes": [str(out.dtype).split(".")[-1], str(grad.dtype).split(".")[-1]],
            "finite": bool(b.xp.all(b.xp.isfinite(out)) and b.xp.all(b.xp.isfinite(grad))),
            "module": type(grad).__module__.split(".")[0]}

ran = {}
for name in sorted(set(acts) - builtin):
    f = mlcore.activation(name)
    y = f.forward(x)
    ran[name] = report(y, f.backward(x, y, b.xp.ones_like(x)))
for name in sorted(set(losses) & set(sys.argv[1:])):
    f = mlcore.loss(name)
    ran[name] = report(f.forward(x * 1e-3, t), f.backward(x * 1e-3, t))
print(json.dumps({"backend": b.name, "activations": acts, "losses": losses, "ran": ran}))
"""


def _copy_sources(dest: pathlib.Path) -> dict[str, pathlib.Path]:
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist", "tests")
    out = {}
    for name, src in PROJECTS.items():
        target = dest / name
        if name == "mlcore":  # the root project: only what its wheel needs
            target.mkdir(parents=True)
            for f in ("pyproject.toml", "README.md"):
                shutil.copy2(src / f, target / f)
            shutil.copytree(src / "mlcore", target / "mlcore", ignore=ignore)
        else:
            shutil.copytree(src, target, ignore=ignore)
        out[name] = target
    return out


def _closure(names: tuple[str, ...]) -> list[md.Distribution]:
    """The installed distributions ``names`` need, with their own requirements."""
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        dist = md.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _link_dependencies(dest: pathlib.Path) -> pathlib.Path:
    """A folder of links to the third-party distributions only (code and metadata)."""
    dest.mkdir()
    for dist in _closure(THIRD_PARTY):
        tops = {pathlib.PurePath(str(f)).parts[0] for f in dist.files or []}
        for top in tops - {".."}:
            src = pathlib.Path(str(dist.locate_file(top)))
            if src.exists() and not (dest / top).exists():
                (dest / top).symlink_to(src)
    return dest


class Env:
    """A fresh virtual environment and the commands the test runs in it."""

    def __init__(self, path: pathlib.Path, cwd: pathlib.Path) -> None:
        self.path, self.cwd = path, cwd
        self.python = str(path / "bin" / "python")

    def run(self, *args: str, **env: str) -> str:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("MLCORE_", "PYTHON", "PYTEST_", "PIP_"))}
        out = subprocess.run(args, cwd=self.cwd, env={**clean, **env}, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def pip(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "pip", "--python", self.python,
                        "--disable-pip-version-check", *args)

    def probe(self, **env: str) -> dict[str, Any]:
        out = self.run(self.python, "-c", PROBE, *sorted(PROBED_LOSSES), **env)
        return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def _build(tmp: pathlib.Path) -> tuple[Env, pathlib.Path]:
    """Wheels from copies of the six folders; a fresh venv seeing only the third-party
    libraries; mlcore-strict and the three plugins pip-installed from the wheels."""
    src = _copy_sources(tmp / "src")
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                    "-w", str(wheels), *map(str, src.values())],
                   check=True, capture_output=True, cwd=tmp)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")],
                   check=True, capture_output=True)
    deps = _link_dependencies(tmp / "deps")
    site = next((tmp / "venv" / "lib").glob("python*/site-packages"))
    (site / "third_party.pth").write_text(f"{deps}\n")
    env = Env(tmp / "venv", tmp)
    env.pip("install", "-q", "--no-index", "--find-links", str(wheels), "mlcore-strict",
            *PLUGINS)
    return env, src["template"]


@pytest.mark.slow
def test_plugin_wheels_in_a_fresh_venv(tmp_path: pathlib.Path) -> None:
    """One test, run in order: built and installed, listed, working on numpy and strict,
    taken away by the controls, their own tests passing with the kit, then uninstalled."""
    env, template = _build(tmp_path)
    _listed_with_version_and_provides(env)
    for backend in ("numpy", "strict"):
        _working_on(env, backend)
    _taken_away_by_the_controls(env)
    _template_tests_pass(env, template)
    _removed_by_uninstall(env)


def _plugin_rows(env: Env) -> dict[str, Any]:
    out = env.run(str(env.path / "bin" / "mlcore"), "plugins", "--json")
    return {r["distribution"]: r for r in json.loads(out)}


def _listed_with_version_and_provides(env: Env) -> None:
    rows = _plugin_rows(env)
    assert {d: (rows[d]["version"], rows[d]["status"]) for d in PLUGINS} == {
        d: ("0.1.0", "loaded") for d in PLUGINS}
    assert set(rows["mlcore-activations-extra"]["provides"]["activations"]) == EXTRA_ACTIVATIONS
    assert set(rows["mlcore-losses-extra"]["provides"]["losses"]) == EXTRA_LOSSES
    assert rows["mlcore-plugin-template"]["provides"] == {"activations": ["hard_tanh"]}


def _working_on(env: Env, backend: str) -> None:
    report = env.probe(MLCORE_BACKEND=backend)
    assert report["backend"] == backend
    assert set(report["ran"]) == EXTRA_ACTIVATIONS | {"hard_tanh"} | PROBED_LOSSES
    module = "numpy" if backend == "numpy" else "array_api_strict"
    for name, ran in report["ran"].items():
        assert ran["dtypes"] == ["float32", "float32"], (backend, name, ran)
        assert ran["finite"] and ran["module"] == module, (backend, name, ran)


def _taken_away_by_the_controls(env: Env) -> None:
    only_template = env.probe(MLCORE_PLUGINS="mlcore-plugin-template")
    assert "hard_tanh" in only_template["activations"]
    assert not EXTRA_ACTIVATIONS & set(only_template["activations"])
    assert not EXTRA_LOSSES & set(only_template["losses"])
    off = env.probe(MLCORE_DISABLE_PLUGIN_AUTOLOAD="1")
    assert not (EXTRA_ACTIVATIONS | {"hard_tanh"}) & set(off["activations"])
    assert not EXTRA_LOSSES & set(off["losses"])
    assert "relu" in off["activations"] and off["backend"] == "numpy"  # built-ins stay


def _template_tests_pass(env: Env, template: pathlib.Path) -> None:
    """The template's own test file, run by the venv's pytest: the kit arrives with mlcore."""
    tests = template / "tests"
    shutil.copytree(ROOT / "plugins/template/tests", tests)
    out = env.run(env.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests))
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("21 passed"), out  # 2 cases x 2 backends x 5 checks, + 1


def _removed_by_uninstall(env: Env) -> None:
    env.pip("uninstall", "-y", "-q", *PLUGINS)
    report = env.probe()
    assert not (EXTRA_ACTIVATIONS | {"hard_tanh"}) & set(report["activations"])
    assert not EXTRA_LOSSES & set(report["losses"])
    assert not set(_plugin_rows(env)) & set(PLUGINS)
