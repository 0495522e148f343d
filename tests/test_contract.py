"""The architecture's rules: no array library imported by the core, every hook documented."""

from __future__ import annotations

import ast
import inspect
import pathlib
import subprocess
import sys

import mlcore
from mlcore import hookspecs

CORE = pathlib.Path(mlcore.__file__).parent
FORBIDDEN = {"numpy", "cupy", "torch", "array_api_strict", "jax"}


def _imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_never_imports_an_array_library() -> None:
    offenders = {
        str(p.relative_to(CORE)): sorted(_imported_roots(p) & FORBIDDEN)
        for p in CORE.rglob("*.py")
        if "testing" not in p.relative_to(CORE).parts  # the kit may use NumPy as host oracle
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_ast_check_catches_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nfrom torch import nn\n")
    assert _imported_roots(bad) & FORBIDDEN == {"numpy", "torch"}


def test_importing_mlcore_imports_no_array_library() -> None:
    code = ("import sys, mlcore, mlcore.cli; print(sorted(m for m in "
            "('numpy', 'cupy', 'torch', 'array_api_strict') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_hook_is_documented_and_typed() -> None:
    hooks = [f for n, f in vars(hookspecs).items() if n.startswith("mlcore_") and callable(f)]
    assert {h.__name__ for h in hooks} == {"mlcore_backends", "mlcore_activations", "mlcore_losses",
                                          "mlcore_metrics", "mlcore_optimizers", "mlcore_kernel",
                                          "mlcore_compile_step", "mlcore_layers"}
    for h in hooks:
        assert hasattr(h, "mlcore_spec")
        assert len(inspect.getdoc(h) or "") > 100
        assert inspect.signature(h).return_annotation is not inspect.Signature.empty


def test_importing_the_conformance_kit_does_not_import_pytest() -> None:
    code = ("import sys, mlcore.testing; from mlcore.testing import Case, check_loss; "
            "print('pytest' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_public_names_exported() -> None:
    for name in mlcore.__all__:
        assert hasattr(mlcore, name), name
