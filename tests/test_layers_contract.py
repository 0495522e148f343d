"""The package's layers: imports only go down, and no function imports an mlcore module.

Each module of ``mlcore`` belongs to one layer (:data:`LAYERS`, lowest first); a module may
import from its own layer and the layers below, at module level only (an import inside a
function hides an import going the wrong way, or a circle). Imports under
``if TYPE_CHECKING:`` are type annotations, not dependencies, and are allowed upwards.
Every violation is reported with its file and line.
"""

from __future__ import annotations

import ast
import pathlib

import mlcore

CORE = pathlib.Path(mlcore.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    ("errors", "hookspecs", "types"),
    ("plugins",),
    ("backend",),
    ("arrays",),
    ("parameter",),
    ("optimizers",),
    ("activations", "losses", "metrics", "init", "bases", "data", "schedules"),
    ("layers",),
    ("distributed",),
    ("saving",),
    ("callbacks",),
    ("training",),
    ("models",),
    ("plotting", "_sklearn_solver", "sklearn", "demo", "cli", "testing", "plugin", "__init__",
     "__main__", "distributed.digits"),
]
"""The layers, lowest first: a module is in the layer of its longest matching prefix."""


def module_name(path: pathlib.Path, root: pathlib.Path = CORE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, level = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, level = len(name), i
    if level < 0:
        raise AssertionError(f"mlcore.{module} is in no layer: add it to LAYERS")
    return level


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The mlcore modules an import names (relative or absolute), without the prefix."""
    if node.level == 0:
        if node.module is None or not (node.module == "mlcore" or
                                       node.module.startswith("mlcore.")):
            return []
        base = node.module.split(".")[1:]
    else:
        here = module.split(".") if module != "__init__" else []
        package = here if is_package else here[:-1]
        base = package[: len(package) - (node.level - 1)] + (node.module.split(".")
                                                             if node.module else [])
    if node.module is None or (node.level == 0 and node.module == "mlcore"):
        # from . import x: a submodule, or a name of the package itself
        return [".".join([*base, a.name]) if _is_module([*base, a.name])
                else (".".join(base) or "__init__") for a in node.names]
    return [".".join(base)] if base else ["__init__"]


def _is_module(parts: list[str]) -> bool:
    path = CORE.joinpath(*parts)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                if hasattr(inner, "lineno"):
                    lines.add(inner.lineno)
    return lines


def edges(root: pathlib.Path = CORE) -> dict[str, set[str]]:
    """Module -> the mlcore modules it imports (outside ``TYPE_CHECKING``)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        typing_only = _type_checking_lines(tree)
        found = graph.setdefault(module, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.lineno not in typing_only:
                found |= {t for t in _resolve(module, path.name == "__init__.py", node)
                          if t != module}
    return graph


def violations(root: pathlib.Path = CORE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        typing_only = _type_checking_lines(tree)
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom | ast.Import):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name[len("mlcore."):] for a in node.names
                           if a.name.startswith("mlcore.")]
            else:
                targets = _resolve(module, path.name == "__init__.py", node)
            if not targets or node.lineno in typing_only:
                continue
            where = f"mlcore/{path.relative_to(root)}:{node.lineno}"
            if id(node) not in top:
                found.append(f"{where}: a function-level import of mlcore.{targets[0]}")
                continue
            for target in targets:
                if layer_of(target) > layer_of(module):
                    found.append(f"{where}: mlcore.{module} (layer {layer_of(module)}) imports "
                                 f"mlcore.{target} (layer {layer_of(target)}), a layer above")
    return found


def test_imports_only_go_down_and_none_hides_in_a_function() -> None:
    assert violations() == []


def test_no_circle_of_imports_remains() -> None:
    """Within a layer too: the import graph of the modules is a DAG (a package's
    ``__init__`` re-exporting its own modules is the one edge allowed back)."""
    import graphlib

    graph = {m: {t for t in ts if not m.startswith(t + ".") and t != "__init__"}
             for m, ts in edges().items()}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the circle


def test_the_contract_catches_an_upward_import(tmp_path: pathlib.Path) -> None:
    """A planted import of the training layer from the layers' layer is reported."""
    fake = tmp_path / "layers" / "bad.py"
    fake.parent.mkdir()
    (fake.parent / "__init__.py").write_text("")
    fake.write_text("from ..training.fit import fit\n\n\ndef f():\n    from .. import models\n")
    found = violations(tmp_path)
    assert any("layers.bad (layer 7) imports mlcore.training.fit (layer 11)" in f for f in found)
    assert any("a function-level import of mlcore.models" in f for f in found)
