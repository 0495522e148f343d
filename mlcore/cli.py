"""The ``mlcore`` command line (click).

Errors print one line and exit non-zero; ``mlcore --debug ...`` shows the traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .errors import MlcoreError

__all__ = ["main", "info_report"]


class _Group(click.Group):
    """Turn mlcore's errors into one-line messages unless ``--debug`` is given."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (MlcoreError, OSError, ValueError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"mlcore: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="mlcore")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """mlcore: one Array API core, many backends, everything pluggable."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _backend_rows() -> list[dict[str, Any]]:
    from .plugins import registry

    rows = []
    for name, b in sorted(registry().backends.items()):
        ok = bool(b.is_available())
        row: dict[str, Any] = {"name": name, "available": ok,
                               "reason": "" if ok else b.unavailable_reason()}
        if ok:
            row["device"] = str(b.device)
            memory = getattr(b, "memory_info", None)
            if callable(memory):
                row["memory"] = memory()
        rows.append(row)
    return rows


def info_report() -> dict[str, Any]:
    """Everything ``mlcore info`` shows, as a JSON-ready dict."""
    from . import __version__
    from .backend import backend_choice, get_backend
    from .plugins import registry

    choice = backend_choice()
    report: dict[str, Any] = {
        "version": __version__,
        "python": sys.version.split()[0],
        "backend": {"name": choice.name, "source": choice.source},
        "backends": _backend_rows(),
        "plugins": [vars(r) | {} for r in registry().records],
    }
    try:
        report["backend"]["device"] = str(get_backend().device)
        report["backend"]["error"] = ""
    except MlcoreError as exc:
        report["backend"]["error"] = str(exc)
    return report


def _print_plugins(plugins: list[dict[str, Any]]) -> None:
    for p in plugins:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in p["provides"].items())
        line = f"  {p['name']:<22} {p['distribution']} {p['version']:<8} {p['status']}"
        click.echo(line + (f" - {provides}" if provides else ""))
        if p["error"]:
            click.echo(f"      {p['error']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json: bool) -> None:
    """Version, selected backend, every backend and plugin with its status."""
    report = info_report()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_info(report)
    if report["backend"]["error"]:
        raise click.ClickException(report["backend"]["error"])


def _print_info(report: dict[str, Any]) -> None:
    b = report["backend"]
    click.echo(f"mlcore {report['version']} (Python {report['python']})")
    click.echo(f"selected backend: {b['name']} (from {b['source']})"
               + (f", device {b['device']}" if not b["error"] else ""))
    click.echo("backends:")
    for row in report["backends"]:
        state = f"available, device {row['device']}" if row["available"] else (
            f"unavailable: {row['reason']}")
        click.echo(f"  {row['name']:<8} {state}")
        if row.get("memory"):
            click.echo(f"           memory: {row['memory']}")
    click.echo("plugins:")
    _print_plugins(report["plugins"])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins(as_json: bool) -> None:
    """Every plugin with distribution, version, status and what it provides."""
    from .plugins import registry

    rows = [vars(r) for r in registry().records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _print_plugins(rows)
