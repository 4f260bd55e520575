"""monitor_io: where drift's rows come from: CSV/Parquet files, SQL tables, the feature store, a model's training input.

Each reader returns a pandas DataFrame; the drift statistics never see a path or a URL.

- ``read_frame("train.csv")``: a typed table (CSV + ``.schema.json`` sidecar, contract section 3)
  is read with its declared types; a plain CSV with pyarrow's type inference; ``.parquet`` as is.
- ``read_frame("sql:churn_2024", engine=fs)``: a whole table of the feature-store database; the
  name is validated and quoted (``sqlident``), never pasted into SQL.
- ``read_frame("mart:churn", engine=fs, window=...)``: a window of a feature-store mart.
- :func:`training_reference`: the table a registered model version was trained on, found
  through its run's training stage ``context.json``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import sqlalchemy as sa

from .errors import ContractError, DataError

__all__ = ["read_frame", "filter_window", "training_reference"]

log = logging.getLogger(__name__)


def read_frame(spec: str, *, engine: sa.Engine | None = None, window=None, columns=None):
    """Rows of a file (CSV, typed CSV, Parquet), ``sql:TABLE`` or ``mart:NAME`` (windowed) as a DataFrame."""
    if spec.startswith(("sql:", "mart:")):
        kind, _, name = spec.partition(":")
        if engine is None:
            raise DataError(f"{spec!r} needs a database.", code="data.no_database",
                            hint="Run inside an ambidex project or pass --db URL.")
        if kind == "mart":
            from .featurestore import read_window

            return read_window(engine, name, window, columns=list(columns) if columns else None)
        return _read_sql_table(engine, name, columns)
    return _read_file(Path(spec), columns)


def _read_sql_table(engine: sa.Engine, name: str, columns=None):
    import pandas as pd

    from .sqlident import reflect_table, require_columns, validate_identifier

    validate_identifier(name, "table name")
    table = reflect_table(engine, name)
    if table is None:
        raise DataError(f"No table {name!r} in the feature-store database.", code="data.not_found",
                        hint="Check the name with 'ambidex data list', or give a file path instead.", table=name)
    cols = require_columns(table, columns) if columns else [c.name for c in table.c]
    with engine.connect() as conn:
        result = conn.execute(sa.select(*[table.c[c] for c in cols]))
        return pd.DataFrame(result.fetchall(), columns=cols)


def _read_file(path: Path, columns=None):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"No file {str(path)!r}.", code="data.not_found", hint="Check the path.", path=str(path))
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path, columns=list(columns) if columns else None)
    elif suffix in (".csv", ".gz") or path.name.endswith(".csv.gz"):
        sidecar = path.with_name(path.name[: -len(".csv")] + ".schema.json") if path.name.endswith(".csv") else None
        if sidecar is not None and sidecar.is_file():
            from ambidex_stage.errors import StageSDKError
            from ambidex_stage.tables import read_table

            try:
                df = read_table(path)
            except StageSDKError as exc:
                raise ContractError(exc.message, code=exc.code, hint=exc.hint) from None
        else:
            df = pd.read_csv(path, engine="pyarrow")
    else:
        raise DataError(f"Cannot read {path.name!r}: expected .csv (with or without a schema sidecar) or .parquet.",
                        code="data.unsupported_format", hint="Convert the file to CSV or Parquet.", path=str(path))
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DataError(f"Column(s) {missing} not in {path.name}.", code="data.missing_column",
                            hint=f"Columns present: {list(df.columns)}.", features=missing)
        df = df[list(columns)]
    return df


def filter_window(frame, time_column: str, start, end):
    """Rows with ``time_column`` in ``[start, end)`` (UTC); naive timestamps are refused."""
    import pandas as pd

    if time_column not in frame.columns:
        raise DataError(f"Time column {time_column!r} is not in the data.", code="data.missing_column",
                        hint=f"Columns present: {list(frame.columns)}.")
    t = frame[time_column]
    if not pd.api.types.is_datetime64_any_dtype(t.dtype):
        try:
            t = pd.to_datetime(t, utc=True, format="ISO8601")
        except (ValueError, TypeError):
            raise DataError(f"Time column {time_column!r} does not hold timestamps.", code="data.type_mismatch",
                            hint="Use RFC 3339 times, e.g. 2024-06-01T00:00:00Z.") from None
    if t.dt.tz is None:
        raise DataError(f"Time column {time_column!r} has no time zone.", code="data.naive_timestamp",
                        hint="Store times in UTC with a zone (2024-06-01T00:00:00Z).")
    mask = (t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))
    return frame.loc[mask.to_numpy()].reset_index(drop=True)


def training_reference(engine: sa.Engine, run_id: str | None, stage: str | None):
    """(DataFrame, description) of the first table input of the stage that trained a model version, or None."""
    if not run_id or not stage:
        return None
    from .tables import stage_runs

    with engine.connect() as conn:
        log_dir = conn.execute(sa.select(stage_runs.c.log_dir).where(
            stage_runs.c.run_id == run_id, stage_runs.c.stage == stage)).scalar()
    ctx_path = Path(log_dir) / "context.json" if log_dir else None
    if ctx_path is None or not ctx_path.is_file():
        return None
    ctx = json.loads(ctx_path.read_text(encoding="utf-8"))
    for name, inp in (ctx.get("inputs") or {}).items():
        if inp.get("kind") == "table" and Path(inp.get("path", "")).is_file():
            log.info("training reference of run %s stage %s: input %s (%s)", run_id, stage, name, inp["path"])
            return _read_file(Path(inp["path"])), f"run:{run_id}/{stage}/{name}"
    return None
