"""Types that say something: few ``Any`` parameters, and arrays that fit :class:`Array`.

Every module of ``mlcore`` is parsed; a parameter counts as ``Any`` when its annotation
mentions ``Any`` anywhere (``dict[str, Any]`` included); ``self`` and ``cls`` are not
counted. Arrays, namespaces, devices and dtypes are typed with :mod:`mlcore.types`.
"""

from __future__ import annotations

import ast
import collections
import pathlib

import pytest

import mlcore
from mlcore.types import Array

CORE = pathlib.Path(mlcore.__file__).parent
LIMIT = 0.15
"""The largest share of ``mlcore``'s parameters that may be annotated with ``Any``."""


def any_parameters(root: pathlib.Path = CORE) -> tuple[int, int, collections.Counter[str],
                                                       collections.Counter[str]]:
    """``(with Any, all, per file with Any, per file all)`` over the parameters of every
    function and method under ``root``."""
    found, total = 0, 0
    per_file: collections.Counter[str] = collections.Counter()
    per_file_total: collections.Counter[str] = collections.Counter()
    for path in sorted(root.rglob("*.py")):
        name = str(path.relative_to(root.parent))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs,
                        *([a.vararg] if a.vararg else []), *([a.kwarg] if a.kwarg else [])]:
                if arg.arg in ("self", "cls"):
                    continue
                total += 1
                per_file_total[name] += 1
                if arg.annotation is not None and "Any" in ast.unparse(arg.annotation):
                    found += 1
                    per_file[name] += 1
    return found, total, per_file, per_file_total


def test_under_15_percent_of_the_parameters_are_any() -> None:
    found, total, per_file, per_file_total = any_parameters()
    worst = "\n".join(f"  {n:4d}/{per_file_total[f]:4d} {f}" for f, n in per_file.most_common(10))
    assert found / total < LIMIT, (
        f"{found} of mlcore's {total} parameters ({found / total:.1%}) are annotated with Any "
        f"(the limit is {LIMIT:.0%}). Use mlcore.types (Array, Namespace, Device, DType, "
        f"ArrayLike) or a concrete type. The files with the most:\n{worst}")


def test_the_count_sees_any_inside_an_annotation(tmp_path: pathlib.Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "from typing import Any\n\n\nclass C:\n    def f(self, a: dict[str, Any], b: int, *c: Any,"
        " **d: object) -> Any: ...\n")
    found, total, _, _ = any_parameters(tmp_path / "pkg")
    assert (found, total) == (2, 4)


def _protocol_members() -> list[str]:
    skip = {"__module__", "__doc__", "__dict__", "__weakref__", "__parameters__",
            "__protocol_attrs__", "__subclasshook__", "__init__", "__abstractmethods__",
            "__annotations__", "__orig_bases__", "__non_callable_proto_members__", "__hash__",
            "__type_params__", "__static_attributes__", "__firstlineno__"}
    return [n for n in vars(Array) if n not in skip and not n.startswith(("_abc", "_is_"))]


def test_every_backend_s_arrays_have_what_the_array_protocol_lists(backend) -> None:  # type: ignore[no-untyped-def]
    """The Protocol lists only what the standard gives: each backend's array type has every
    member (``len(x)``, ``.astype()``, ``.item()`` are not in it, nor used by the core)."""
    x = backend.asarray([[1.0, 2.0], [3.0, 4.0]])
    missing = [m for m in _protocol_members() if not hasattr(type(x), m)]
    assert missing == [], f"{backend.name} arrays lack {missing}"


@pytest.mark.parametrize("name", ["Array", "ArrayLike", "Namespace", "Device", "DType",
                                  "Backprop", "Step"])
def test_the_types_are_public(name: str) -> None:
    import mlcore.types

    assert name in mlcore.types.__all__
