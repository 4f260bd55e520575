"""cli.output: the one way commands print: human tables or --json on stdout, errors on stderr."""
from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import Any, Iterable

import click

__all__ = ["json_option", "emit", "emit_table", "to_jsonable", "echo_err"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout (for scripts and the R package).")


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: datetimes as RFC 3339 UTC, paths as strings, dataclasses as dicts."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, _dt.datetime):
        return obj.isoformat().replace("+00:00", "Z")
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if hasattr(obj, "__dataclass_fields__"):
        return to_jsonable({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def emit(obj: Any, as_json: bool, human: str | None = None) -> None:
    """Print ``obj`` as JSON, or ``human`` (defaulting to JSON pretty-printed) for people."""
    if as_json:
        click.echo(json.dumps(to_jsonable(obj), ensure_ascii=False))
    else:
        click.echo(human if human is not None else json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def emit_table(rows: Iterable[dict], columns: list[str], as_json: bool, *, empty: str = "(none)") -> None:
    """A list of dicts as JSON, or as an aligned text table with the given columns."""
    rows = list(rows)
    if as_json:
        emit(rows, True)
        return
    if not rows:
        click.echo(empty)
        return
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def wants_json(argv: list[str] | None = None) -> bool:
    return "--json" in (sys.argv if argv is None else argv)
