"""Install mlcore from this checkout on a machine with no network (the GPU check's setup).

1. Wheels carried along (``.whl/*.whl``: array-api-compat, array-api-strict) are installed
   into the running interpreter with ``pip --no-index --no-deps``; if pip fails, pure-Python
   wheels are unpacked into site-packages, which is all pip does for them.
2. The local distributions (``.`` and every ``-e`` line of ``requirements/base.txt``) are
   installed editable with ``pip --no-deps --no-index --no-build-isolation``. If that fails
   (an old setuptools there cannot read the pyproject, say), each one is *registered* instead:
   a ``.pth`` line puts its source folder on ``sys.path`` and a ``.dist-info`` holds its
   METADATA and entry points, which is exactly what ``importlib.metadata`` reads of an
   installed distribution; console scripts get a small launcher.

Either way the result lives in the interpreter's own site-packages, so subprocesses started
with a bare environment (some tests do) still find mlcore. Then it checks that mlcore and
the ``mlcore`` entry points are visible from a fresh interpreter.

    python3 benchmarks/gpu/offline_install.py [--wheels .whl] [--method auto|pip|register]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _pip(*args: str) -> bool:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode == 0


def install_wheels(folder: Path) -> None:
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        print(f"no wheels in {folder}")
        return
    if _pip("--no-compile", *map(str, wheels)):
        return
    purelib = Path(sysconfig.get_paths()["purelib"])
    for whl in wheels:
        print(f"pip failed: unpacking {whl.name} into {purelib}", flush=True)
        with zipfile.ZipFile(whl) as z:
            z.extractall(purelib)


def local_distributions(root: Path) -> list[Path]:
    """The checkout's own distributions: ``requirements/base.txt``'s ``-e`` lines, then root.

    Paths there are relative to the checkout's root, where the README runs pip.
    """
    dists = []
    for line in (root / "requirements" / "base.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-e "):
            dists.append((root / line[3:].strip().split("[")[0]).resolve())
    return [*dists, root]


def _source_root(dist: Path, data: dict[str, Any]) -> Path:
    """Where the packages of ``dist`` live: ``[tool.setuptools.packages.find] where``, or it."""
    packages = data.get("tool", {}).get("setuptools", {}).get("packages", {})
    where = packages.get("find", {}).get("where", ["."]) if isinstance(packages, dict) else ["."]
    return (dist / where[0]).resolve()


def register(dist: Path, site: Path, bindir: Path) -> str:
    """Make ``dist`` importable and visible to importlib.metadata without building it."""
    data = tomllib.loads((dist / "pyproject.toml").read_text())
    proj = data["project"]
    name, version = proj["name"], proj.get("version", "0")
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("mlcore-offline-install\n")
    groups = dict(proj.get("entry-points", {}))
    if proj.get("scripts"):
        groups["console_scripts"] = proj["scripts"]
    lines = [f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
             for g, eps in groups.items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
    for script, target in proj.get("scripts", {}).items():
        module, func = target.split(":")
        launcher = bindir / script
        launcher.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\n"
                            f"sys.exit({func}())\n")
        launcher.chmod(0o755)
    return str(_source_root(dist, data))


def install_local(root: Path, method: str) -> None:
    dists = local_distributions(root)
    if method in ("auto", "pip"):
        args = [a for d in dists for a in ("-e", str(d))]
        if _pip("--no-build-isolation", *args):
            return
        if method == "pip":
            raise SystemExit("pip could not install the local distributions")
        print("pip failed: registering the local distributions instead", flush=True)
    paths = sysconfig.get_paths()
    site, bindir = Path(paths["purelib"]), Path(paths["scripts"])
    roots = [register(d, site, bindir) for d in dists]
    (site / "mlcore_offline_install.pth").write_text("\n".join(roots) + "\n")
    print(f"registered {len(dists)} distributions in {site}")


CHECK = """
import importlib.metadata as md, array_api_compat, array_api_strict, mlcore
eps = sorted(e.name for e in md.entry_points(group="mlcore"))
print("mlcore", mlcore.__version__, "from", mlcore.__file__)
print("array-api-compat", array_api_compat.__version__, "array-api-strict",
      array_api_strict.__version__)
print("mlcore entry points:", ", ".join(eps))
assert {"numpy", "strict", "cupy"} <= set(eps), eps
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    parser.add_argument("--method", choices=["auto", "pip", "register"], default="auto")
    args = parser.parse_args()
    install_wheels(args.wheels)
    install_local(ROOT, args.method)
    subprocess.run([sys.executable, "-c", CHECK], check=True, cwd="/")


if __name__ == "__main__":
    main()
