"""The wheel test: every distribution of this checkout built as a wheel, installed into a
fresh virtual environment, and used from a folder outside the checkout, as a user would.

    python .ci/wheels.py [--keep DIR] [--index]

1. Each distribution (the root, backends/*, plugins/*, benchmarks) is copied to a temporary
   folder and built there (``pip wheel --no-deps --no-build-isolation``): nothing is written
   into the checkout and no network is needed. No wheel may hold a top-level ``benchmarks``
   or ``tests`` package.
2. A fresh virtual environment gets ``mlcore`` alone, as ``pip install mlcore`` would. By
   default the third-party libraries come from this environment, offline: exactly the
   distributions the installed wheels declare (and what those need) are linked into a folder
   that a ``.pth`` file puts on the new environment's path, so an undeclared dependency still
   fails here as it would from PyPI. ``--index`` lets pip fetch them from the package index.
   From an empty folder: ``mlcore info``, ``mlcore demo xor``, a fit with a progress bar,
   save, load; and ``mlcore bench`` must say ``pip install mlcore-bench``.
3. Then ``mlcore-bench`` and the other distributions: ``mlcore info`` lists them and
   ``mlcore bench --quick`` on one small case writes its JSON report.

Exit status 0 when every step passed; each step prints one line.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist", "tests", ".*")

FIT_SAVE_LOAD = """
import numpy as np, mlcore
X = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
y = (X[:, 0] * X[:, 1] > 0).astype("int64")
model = mlcore.MLP([4, 16, 2], output_activation="softmax", seed=0)
history = model.fit(X, y, loss="cross_entropy", epochs=3, seed=0, verbose=True)
model.save("model.safetensors")
again = mlcore.load("model.safetensors")
assert np.array_equal(np.asarray(model.predict(X)), np.asarray(again.predict(X)))
print(mlcore.__file__, len(history["loss"]), "epochs, saved and loaded")
"""


def distributions() -> list[Path]:
    """Every folder with a pyproject.toml: the root, then backends, plugins, benchmarks."""
    found = [p.parent for pattern in ("backends/*/pyproject.toml", "plugins/*/pyproject.toml",
                                      "benchmarks/pyproject.toml")
             for p in sorted(ROOT.glob(pattern))]
    return [ROOT, *found]


def copy_sources(dest: Path) -> list[Path]:
    out = []
    for i, src in enumerate(distributions()):
        target = dest / f"{i:02d}-{src.name}"
        if src == ROOT:  # only what the root's wheel is built from
            target.mkdir(parents=True)
            for f in ROOT.iterdir():
                if f.is_file() and not f.name.startswith("."):
                    shutil.copy2(f, target / f.name)
            shutil.copytree(ROOT / "mlcore", target / "mlcore", ignore=IGNORE)
        else:
            shutil.copytree(src, target, ignore=IGNORE)
        out.append(target)
    return out


def build_wheels(sources: list[Path], wheels: Path) -> dict[str, Path]:
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(wheels), *map(str, sources)], cwd=wheels.parent)
    built = {}
    for whl in sorted(wheels.glob("*.whl")):
        tops = {name.split("/")[0] for name in zipfile.ZipFile(whl).namelist()}
        bad = tops & {"benchmarks", "tests"}
        if bad:
            fail(f"{whl.name} installs a top-level {', '.join(sorted(bad))} package")
        built[canonicalize_name(whl.name.split("-")[0])] = whl
    return built


def requirements(whl: Path, extras: tuple[str, ...] = ()) -> list[Requirement]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1]) for line in lines
            if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or any(
        r.marker.evaluate({"extra": e}) for e in ("", *extras))]


def closure(names: set[str], local: dict[str, Path]) -> list[md.Distribution]:
    """The installed third-party distributions that ``names`` need, through every local
    wheel's declared requirements and each third-party one's own (no extras)."""
    seen: dict[str, md.Distribution | None] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        if name in local:
            seen[name] = None
            todo += [r.name for r in requirements(local[name])]
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            fail(f"{name} is needed but not installed in {sys.prefix}; use --index")
        seen[name] = dist
        todo += [r.name for r in map(Requirement, dist.requires or [])
                 if r.marker is None or r.marker.evaluate({"extra": ""})]
    return [d for d in seen.values() if d is not None]


class Venv:
    """A fresh environment, its pip (this interpreter's, with --python) and its commands."""

    def __init__(self, tmp: Path, wheels: Path, index: bool) -> None:
        self.path, self.wheels, self.index = tmp / "venv", wheels, index
        self.deps, self.work = tmp / "deps", tmp / "work"
        self.work.mkdir()
        self.deps.mkdir()
        run([sys.executable, "-m", "venv", "--without-pip", str(self.path)])
        self.bin = self.path / "bin"
        site = next((self.path / "lib").glob("python*/site-packages"))
        if not index:
            (site / "third_party.pth").write_text(f"{self.deps}\n")
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("MLCORE_", "PYTHON", "PIP_", "VIRTUAL_ENV"))}
        self.env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                     "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def link(self, dists: list[md.Distribution]) -> None:
        for dist in dists:
            for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
                src = Path(str(dist.locate_file(top)))
                if src.exists() and not (self.deps / top).exists():
                    (self.deps / top).symlink_to(src)

    def install(self, *names: str, local: dict[str, Path]) -> None:
        if not self.index:  # link the third-party libraries these wheels declare
            self.link(closure(set(names), local))
        source = [] if self.index else ["--no-index"]
        self.run(sys.executable, "-m", "pip", "--python", str(self.bin / "python"), "install",
                 "-q", *source, "--find-links", str(self.wheels), *names)

    def run(self, *cmd: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        return run(list(cmd), cwd=self.work, env=self.env, expect=expect)


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        expect: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    if out.returncode != expect:
        fail(f"{' '.join(cmd)} exited {out.returncode}, expected {expect}:\n{out.stdout}\n"
             f"{out.stderr}")
    return out


def fail(message: str) -> None:
    print(f"wheels: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def step(name: str, started: float) -> None:
    print(f"wheels: ok  {name} ({time.perf_counter() - started:.1f} s)", flush=True)


def base_install(venv: Venv, wheels: dict[str, Path]) -> None:
    """``pip install mlcore``: the command, progress, saving; no benchmark suite."""
    t = time.perf_counter()
    venv.install("mlcore", local=wheels)
    step("pip install mlcore", t)
    t = time.perf_counter()
    info = venv.run("mlcore", "info").stdout
    if "numpy    available" not in info:
        fail(f"mlcore info does not show numpy available:\n{info}")
    xor = venv.run("mlcore", "demo", "xor", "--seeds", "3").stdout
    if "XOR: 100% accuracy from" not in xor:
        fail(f"mlcore demo xor:\n{xor}")
    fitted = venv.run(str(venv.bin / "python"), "-c", FIT_SAVE_LOAD)
    if not fitted.stdout.startswith(str(venv.path)) or "saved and loaded" not in fitted.stdout:
        fail(f"fit, save, load did not run from the wheel:\n{fitted.stdout}")
    if "batch/s" not in fitted.stderr:  # tqdm's bar (unit "batch") on stderr
        fail(f"fit(verbose=True) showed no progress bar:\n{fitted.stderr}")
    bench = venv.run("mlcore", "bench", "--quick", expect=1).stderr
    if bench.strip().splitlines() != [bench.strip()] or "pip install mlcore-bench" not in bench:
        fail(f"mlcore bench without mlcore-bench should say how to install it:\n{bench}")
    step("mlcore info, demo xor, fit + save + load, bench says pip install mlcore-bench", t)


def full_install(venv: Venv, wheels: dict[str, Path]) -> None:
    """``pip install mlcore-bench`` and the other distributions; one small benchmark."""
    t = time.perf_counter()
    venv.install(*(n for n in wheels if n != "mlcore"), local=wheels)
    step(f"pip install {' '.join(n for n in wheels if n != 'mlcore')}", t)
    t = time.perf_counter()
    info = venv.run("mlcore", "info").stdout
    for name in wheels:
        if name not in ("mlcore", "mlcore-bench", "mlcore-numpy") and name not in info:
            fail(f"mlcore info does not list {name}:\n{info}")
    report = venv.work / "bench.json"
    venv.run("mlcore", "bench", "--quick", "--cases", "mlp_step/2-4-1/sgd", "--rounds", "1",
             "--json", str(report))
    data = json.loads(report.read_text())
    rows = data["results"][0]["rows"]
    if not (data["results"][0]["check"]["passed"] and rows["numpy"]["status"] == "ok"):
        fail(f"mlcore bench from the wheels: {data['results'][0]}")
    step("mlcore info lists the plugins; mlcore bench --quick --cases mlp_step/2-4-1/sgd", t)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python .ci/wheels.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="Work in DIR and keep it (default: a temporary "
                                              "folder, removed).")
    ap.add_argument("--index", action="store_true",
                    help="Fetch third-party dependencies from the package index.")
    args = ap.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlcore-wheels-") as scratch:
        tmp = args.keep or Path(scratch)
        if args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        (tmp / "wheels").mkdir()
        t = time.perf_counter()
        wheels = build_wheels(copy_sources(tmp / "src"), tmp / "wheels")
        step(f"built {len(wheels)} wheels: {', '.join(sorted(wheels))}", t)
        venv = Venv(tmp, tmp / "wheels", args.index)
        base_install(venv, wheels)
        full_install(venv, wheels)
    print(f"wheels: passed in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
