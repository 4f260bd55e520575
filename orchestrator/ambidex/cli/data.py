"""cli.data: the `ambidex data` commands (ingest, list, show, diff, lineage), thin calls into ambidex.featurestore."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from .output import emit, emit_table, json_option

__all__ = ["data"]


def _engine(db_url: str | None):
    from ..db import connect, migrate

    if db_url:
        engine = connect(db_url)
    else:
        from ..workspace import Workspace

        engine = connect(Workspace.find(Path.cwd()).registry_url)
    migrate(engine)
    return engine


db_option = click.option("--db", "db_url", envvar="AMBIDEX_DB_URL", default=None, metavar="URL",
                         help="Feature-store database (default: the project's registry). Read from $AMBIDEX_DB_URL; "
                              "prefer the variable so no password lands in shell history.")


def _split_at(text: str, sep: str, what: str) -> tuple[str, int | None]:
    from ..errors import UsageError

    if sep not in text:
        return text, None
    name, _, v = text.rpartition(sep)
    try:
        return name, int(v)
    except ValueError:
        raise UsageError(f"{what} {text!r}: the version after {sep!r} must be a number.",
                         hint=f"Write it as NAME{sep}3.") from None


@contextlib.contextmanager
def _progress(enabled: bool):
    """A rich progress bar on a terminal; a no-op callback under cron or with --json."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("loading"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = {}

        def report(done: int, total: int) -> None:
            if total < 200_000:  # short loads stay quiet
                return
            if "id" not in task:
                task["id"] = bar.add_task("load", total=total)
            bar.update(task["id"], completed=done)
        yield report


@click.group("data")
def data() -> None:
    """Feature store: versioned SQL marts, data versions, lineage.

    \b
    Example:
      ambidex data ingest churn.csv --mart churn --key customer_id \\
          --time-column signup_month --window 2024-01-01/2024-02-01
      ambidex data show churn@1
    """


@data.command("ingest")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--mart", required=True, help="Mart name (letters, digits, underscore).")
@click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file with the mart definition (MartSpec fields); options below override it.")
@click.option("--key", multiple=True, help="Key column (repeat for a composite key).")
@click.option("--time-column", help="UTC timestamp column that windows select on.")
@click.option("--load", type=click.Choice(["full", "incremental"]), help="Replace the mart, or load a window/watermark.")
@click.option("--by", "incremental_by", type=click.Choice(["window", "watermark"]), help="How incremental loads select rows.")
@click.option("--watermark-column", help="Column whose values only grow (for --by watermark).")
@click.option("--schema", "schema_policy", type=click.Choice(["strict", "evolve"]), help="Refuse or accept new columns.")
@click.option("--naive-timestamps", help="How to read times without a zone: 'utc' or an IANA zone (default: refuse).")
@click.option("--window", help="Half-open UTC window START/END, e.g. 2024-01-01/2024-02-01.")
@click.option("--run-id", help="Record this run as the load's producer.")
@click.option("--dry-run", is_flag=True, help="Read, validate, hash and profile; write nothing.")
@db_option
@json_option
def ingest_cmd(source, mart, spec_file, key, time_column, load, incremental_by, watermark_column, schema_policy,
               naive_timestamps, window, run_id, dry_run, db_url, as_json):
    """Load SOURCE (a .csv or .parquet file) into a mart as one transaction and record a data version.

    \b
    Example:
      ambidex data ingest churn.csv --mart churn --key customer_id --time-column signup_month \\
          --load incremental --window 2024-01-01/2024-02-01
    """
    from .. import featurestore as fs

    fields: dict = {}
    if spec_file:
        from ..errors import ConfigError
        from ..yamlload import load_yaml  # the project's strict YAML loader

        doc = load_yaml(Path(spec_file).read_bytes())
        if doc.problems or not isinstance(doc.data, dict):
            raise ConfigError(f"{spec_file}: " + ("; ".join(p.message for p in doc.problems) or "not a mapping"),
                              hint="Fix the mart definition file.")
        fields = dict(doc.data)
    fields["name"] = mart
    for k, v in (("time_column", time_column), ("load", load), ("incremental_by", incremental_by),
                 ("watermark_column", watermark_column), ("schema_policy", schema_policy),
                 ("naive_timestamps", naive_timestamps)):
        if v is not None:
            fields[k] = v
    if key:
        fields["key"] = list(key)
    kind = "parquet" if source.lower().endswith((".parquet", ".pq")) else "csv"
    fields["source"] = {"kind": kind, "path": source}
    spec = fs.MartSpec.model_validate(fields)
    engine = _engine(db_url)
    try:
        with _progress(not as_json) as report:
            result = fs.ingest(engine, spec, window=window, run_id=run_id, dry_run=dry_run, progress=report)
    finally:
        engine.dispose()
    d = result.to_dict()
    d.pop("schema")
    human = (f"{'[dry run] ' if dry_run else ''}{result.mart}@{result.version if result.version else '-'}: "
             f"{result.row_count:,} rows ({result.mode}"
             f"{', window ' + result.window if result.window else ''}), {result.replaced_rows:,} replaced, "
             f"{result.skipped_rows:,} outside the window/watermark, {result.content_hash}")
    if result.schema_changes:
        human += "\nschema changes: " + "; ".join(str(c) for c in result.schema_changes)
    emit(d, as_json, human)


@data.command("list")
@db_option
@json_option
def list_cmd(db_url, as_json):
    """List the marts with their latest version and window.

    \b
    Example:
      ambidex data list --json
    """
    from .. import featurestore as fs

    engine = _engine(db_url)
    try:
        rows = fs.list_marts(engine)
    finally:
        engine.dispose()
    emit_table(rows, ["mart", "load", "versions", "last_rows", "last_window", "updated_at"], as_json, empty="(no marts)")


@data.command("show")
@click.argument("target", metavar="MART[@VERSION]")
@db_option
@json_option
def show_cmd(target, db_url, as_json):
    """Show a mart's versions, or one data version with its schema and profile.

    \b
    Example:
      ambidex data show churn        # every version
      ambidex data show churn@3      # one version and its column profile
    """
    from .. import featurestore as fs

    name, version = _split_at(target, "@", "Data version")
    engine = _engine(db_url)
    try:
        if version is None:
            rows = fs.list_data_versions(engine, name)
            for r in rows:
                r["window"] = f"{r['window_start']}/{r['window_end']}" if r["window_start"] else None
            emit_table(rows, ["version", "load", "window", "row_count", "content_hash", "run_id", "created_at", "replaced_by"],
                       as_json, empty=f"(no versions of {name})")
            return
        d = fs.show_data_version(engine, name, version)
    finally:
        engine.dispose()
    if as_json:
        emit(d, True)
        return
    click.echo(f"{name}@{version}  {d['load']}  rows={d['row_count']:,}  window={d['window_start']}/{d['window_end']}")
    click.echo(f"hash={d['content_hash']}  run={d['run_id'] or '-'}  created={d['created_at']}")
    click.echo(f"source={d['source']}")
    emit_table(d["profile"], ["column_name", "ctype", "n", "n_missing", "mean", "median_exact", "min", "max"], False)


@data.command("diff")
@click.argument("a", metavar="MART@V1")
@click.argument("b", metavar="MART@V2")
@db_option
@json_option
def diff_cmd(a, b, db_url, as_json):
    """Compare two data versions of a mart: row counts, schema, per-column summaries and PSI.

    \b
    Example:
      ambidex data diff churn@1 churn@2
    """
    from .. import featurestore as fs
    from ..errors import UsageError

    (ma, va), (mb, vb) = _split_at(a, "@", "Data version"), _split_at(b, "@", "Data version")
    if ma != mb or va is None or vb is None:
        raise UsageError(f"diff compares two versions of one mart, got {a!r} and {b!r}.", hint="Example: churn@1 churn@2")
    engine = _engine(db_url)
    try:
        d = fs.diff_data_versions(engine, ma, va, vb)
    finally:
        engine.dispose()
    if as_json:
        emit(d, True)
        return
    rc = d["row_count"]
    click.echo(f"{ma}: rows {rc['from']:,} -> {rc['to']:,} ({rc['delta']:+,})")
    s = d["schema"]
    click.echo(f"schema: added {s['added'] or '-'}, removed {s['removed'] or '-'}, retyped {s['retyped'] or '-'}, "
               f"new levels {s['levels_added'] or '-'}")
    rows = [{"column": c["column"], "missing_rate": f"{_f(c['missing_rate'][0])} -> {_f(c['missing_rate'][1])}",
             "mean": f"{_f(c.get('mean', [None])[0])} -> {_f(c.get('mean', [None, None])[1])}",
             "median": f"{_f(c.get('median', [None])[0])} -> {_f(c.get('median', [None, None])[1])}", "psi": c["psi"]}
            for c in d["columns"]]
    emit_table(rows, ["column", "missing_rate", "mean", "median", "psi"], False)


def _f(v) -> str:
    return "-" if v is None else f"{v:.4g}"


@data.command("lineage")
@click.argument("target", metavar="MODEL:VERSION")
@db_option
@json_option
def lineage_cmd(target, db_url, as_json):
    """Trace a model version to its training run, the data versions it read, their sources and windows.

    \b
    Example:
      ambidex data lineage churn:3
    """
    from .. import featurestore as fs
    from ..errors import UsageError

    name, version = _split_at(target, ":", "Model version")
    if version is None:
        raise UsageError(f"Expected MODEL:VERSION, got {target!r}.", hint="Example: ambidex data lineage churn:3")
    engine = _engine(db_url)
    try:
        d = fs.lineage(engine, name, version)
    finally:
        engine.dispose()
    if as_json:
        emit(d, True)
        return
    click.echo(f"{name}:{version} <- run {d['run_id'] or '-'}")
    emit_table(d["data_versions"], ["mart", "version", "window_start", "window_end", "row_count", "content_hash", "source"],
               False, empty="(no data versions recorded for this run)")


@data.command("prepare-churn")
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--as-of", default="2024-12-01", show_default=True, help="Month that tenure counts back from.")
@json_option
def prepare_churn_cmd(src, dest, as_of, as_json):
    """Add customer_id and signup_month to modeldata's wa_churn CSV (exported from R) for the churn example.

    \b
    Example:
      Rscript -e 'data(wa_churn, package="modeldata"); write.csv(wa_churn, "wa_churn.csv", row.names=FALSE)'
      ambidex data prepare-churn wa_churn.csv churn.csv
    """
    import pandas as pd

    from .. import featurestore as fs

    df = fs.prepare_churn(pd.read_csv(src), as_of=as_of)
    df["signup_month"] = df["signup_month"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    df.to_csv(dest, index=False)
    emit({"rows": len(df), "path": os.path.abspath(dest)}, as_json, f"wrote {len(df):,} rows to {dest}")
