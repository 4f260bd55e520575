"""featurestore: versioned SQL marts: loads (full, window, watermark), data versions, point-in-time reads, transforms, lineage.

Row validity model
------------------
Every mart ``m`` is two tables in the feature-store database:

* ``m``: the rows that are current now, each tagged with ``_dv``, the per-mart version
  number of the load that wrote it;
* ``m__hist``: rows that a later load replaced, still tagged with their ``_dv`` and with
  ``_replaced_by``, the version that replaced them.

A full load moves all current rows to history and inserts the new rows; a window load
moves exactly the rows with ``time_column`` in ``[start, end)`` (UTC, half-open) and
inserts the window's new rows; a watermark load appends the rows whose watermark is
greater than the last loaded one. All of it is one transaction, together with the data
version row and the profile rows, so a failure leaves the mart as it was.

Hence a row is *valid as of version X* iff ``_dv <= X`` and (``_replaced_by`` is null or
``_replaced_by > X``), which makes every historical state readable exactly:

* ``read_window(engine, mart, window)`` on a window or watermark mart returns the current
  rows with time in ``[start, end)``; with ``as_of`` it returns the rows valid at that time.
* On a full-load mart it returns the rows of the data version current at the window's
  end: the highest version whose effective time (the load's ``--window`` start if given,
  else its ``created_at``) is before ``window.end``.
* ``version=N`` returns exactly the rows that load N wrote.

Each data version records the mart, version, window, row count, schema (column ->
contract type, category levels), the redacted source, a content hash (see
:func:`content_hash`), the run that made it, ``created_at`` (UTC) and the schema changes
it applied. History is kept until pruned (pruning is not implemented yet).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator

from ambidex import profiling
from ambidex.errors import DataError, RegistryError
from ambidex.drift_profile import NumericGrid
from ambidex.fstables import (
    FS_TABLES, MartTimestamp, data_versions, fs_cat_levels, fs_col_stats, fs_grid, fs_grid_meta, fs_marts,
    fs_num_bins, metadata, run_data_versions,
)
from ambidex.tables import MYSQL_OPTS, UTCDateTime
from ambidex.sqlident import quote_identifier, reflect_table, require_columns, validate_identifier, validate_identifiers

__all__ = [
    "ColumnSpec", "SourceSpec", "MartSpec", "Window", "LoadResult", "init_featurestore", "parse_window",
    "ingest", "read_window", "export_window_for_r", "check_transform_sql", "read_transform",
    "record_inputs", "lineage", "list_marts", "list_data_versions", "show_data_version",
    "diff_data_versions", "content_hash", "prepare_churn", "load_grids", "run_inputs",
]

log = logging.getLogger(__name__)

UTC = dt.timezone.utc
CONTRACT_TYPES = ("integer", "double", "string", "boolean", "timestamp", "category")
RESERVED = {"_dv", "_replaced_by"}
_CHUNK = 100_000


# --------------------------------------------------------------------------- specs

class ColumnSpec(BaseModel):
    """A declared contract type for one column (``levels`` only for ``category``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["integer", "double", "string", "boolean", "timestamp", "category"]
    levels: list[str] | None = None


class SourceSpec(BaseModel):
    """Where a mart's rows come from: a CSV or Parquet file, or a SQL query on ``$url_env``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["csv", "parquet", "sql"]
    path: str | None = None
    query: str | None = None
    url_env: str | None = None
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self):
        if self.kind in ("csv", "parquet") and not self.path:
            raise ValueError(f"a {self.kind} source needs 'path'")
        if self.kind == "sql":
            if not self.query or not self.url_env:
                raise ValueError("a sql source needs 'query' and 'url_env' (the NAME of an environment variable holding the URL)")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.url_env):
                raise ValueError(f"url_env must be an environment variable name, got {self.url_env!r}; never put a URL in config")
        return self

    def describe(self) -> str:
        """A redacted one-line description stored with the data version."""
        if self.kind == "sql":
            url = os.environ.get(self.url_env or "")
            shown = sa.engine.make_url(url).render_as_string(hide_password=True) if url else "unset"
            return f"sql via ${self.url_env} ({shown}): {' '.join((self.query or '').split())[:500]}"
        p = Path(self.path or "")
        try:
            st = p.stat()
            return f"{self.kind}:{p.resolve()} ({st.st_size} bytes, mtime {dt.datetime.fromtimestamp(st.st_mtime, UTC).isoformat()})"
        except OSError:
            return f"{self.kind}:{p}"


class MartSpec(BaseModel):
    """One feature mart: its source, key, time column, load mode and schema policy.

    >>> MartSpec(name="churn", source={"kind": "csv", "path": "churn.csv"}, key=["customer_id"],
    ...          time_column="signup_month", load="incremental").incremental_by
    'window'
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    source: SourceSpec | None = None
    key: list[str] = []
    time_column: str | None = None
    load: Literal["full", "incremental"] = "full"
    incremental_by: Literal["window", "watermark"] = "window"
    watermark_column: str | None = None
    schema_policy: Literal["strict", "evolve"] = "strict"
    naive_timestamps: str | None = None  # None refuses; "utc" or an IANA zone says how to read them
    columns: dict[str, ColumnSpec] = {}

    @model_validator(mode="after")
    def _check(self):
        # DataError (not ValueError) so that pydantic lets it through unchanged: code data.invalid_identifier
        validate_identifier(self.name, "mart name")
        if len(self.name) > 56:
            raise ValueError(f"mart name {self.name!r} is longer than 56 characters (the history table adds '__hist')")
        named = list(self.key) + [c for c in (self.time_column, self.watermark_column) if c] + list(self.columns)
        for c in validate_identifiers(named):
            if c in RESERVED:
                raise ValueError(f"column name {c!r} is reserved by the feature store")
        if self.load == "incremental" and self.incremental_by == "window" and not self.time_column:
            raise ValueError("an incremental load by window needs 'time_column'")
        if self.load == "incremental" and self.incremental_by == "watermark" and not self.watermark_column:
            raise ValueError("an incremental load by watermark needs 'watermark_column'")
        if self.naive_timestamps not in (None, "utc", "UTC"):
            try:
                zoneinfo.ZoneInfo(self.naive_timestamps)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"naive_timestamps must be 'utc' or an IANA time zone, got {self.naive_timestamps!r}")
        for c, cs in self.columns.items():
            if cs.levels is not None and cs.type != "category":
                raise ValueError(f"column {c!r}: 'levels' is only allowed for type category")
        return self

    @property
    def mode(self) -> str:
        """``full``, ``window`` or ``watermark``."""
        return "full" if self.load == "full" else self.incremental_by


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval ``[start, end)``."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self):
        for t in (self.start, self.end):
            if t.tzinfo is None:
                raise DataError(f"Window bound {t.isoformat()} has no time zone.", code="data.naive_timestamp",
                                hint="Give window bounds in UTC, e.g. 2024-01-01T00:00:00Z or a plain date.")
        if not self.start < self.end:
            raise DataError(f"Window start {self.start.isoformat()} is not before its end {self.end.isoformat()}.",
                            code="data.window_invalid", hint="Windows are half-open [start, end) with start < end.")

    def __str__(self) -> str:
        return f"{_iso(self.start)}/{_iso(self.end)}"


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_instant(text: str) -> dt.datetime:
    s = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"Cannot read {text!r} as a time.", code="data.window_invalid",
                        hint="Use ISO 8601: 2024-01-01 or 2024-01-01T00:00:00Z.") from None
    if t.tzinfo is None:
        raise DataError(f"Time {text!r} has no zone offset.", code="data.naive_timestamp",
                        hint="Append Z (UTC) or an offset like +01:00, or give a plain date (read as UTC midnight).")
    return t.astimezone(UTC)


def parse_window(text: str | Window | None) -> Window | None:
    """Parse ``START/END`` (ISO dates or times with zone) into a :class:`Window`.

    >>> str(parse_window("2024-01-01/2024-02-01"))
    '2024-01-01T00:00:00Z/2024-02-01T00:00:00Z'
    """
    if text is None or isinstance(text, Window):
        return text
    parts = text.split("/")
    if len(parts) != 2:
        raise DataError(f"Window {text!r} is not START/END.", code="data.window_invalid",
                        hint="Write it as 2024-01-01/2024-02-01 (half-open, UTC).")
    return Window(_parse_instant(parts[0]), _parse_instant(parts[1]))


@dataclass
class LoadResult:
    """What one load did (``data_version_id``/``version`` are None for a dry run)."""

    mart: str
    mode: str
    version: int | None
    data_version_id: int | None
    row_count: int
    content_hash: str
    window: str | None
    schema: dict
    schema_changes: list[dict]
    replaced_rows: int = 0
    skipped_rows: int = 0
    dry_run: bool = False
    watermark: Any = None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- setup

def init_featurestore(engine: sa.Engine) -> None:
    """Create the bookkeeping tables if missing (tests and standalone use; the registry uses Alembic)."""
    metadata.create_all(engine, tables=FS_TABLES)


# --------------------------------------------------------------------------- reading sources

def _read_csv(path: str, spec: MartSpec) -> pa.Table:
    import pyarrow.csv as pcsv

    p = Path(path)
    if not p.is_file():
        raise DataError(f"CSV source {path!r} does not exist.", code="data.source_missing", hint="Check the path.")
    forced = {}
    for c, cs in spec.columns.items():
        forced[c] = {"integer": pa.int64(), "double": pa.float64(), "boolean": pa.bool_()}.get(cs.type, pa.string())
    for c in (spec.time_column, spec.watermark_column):
        if c and (c not in spec.columns or spec.columns[c].type == "timestamp"):
            forced.setdefault(c, pa.string())  # parsed below, so naive values are seen and refused
    bad: list = []

    def on_bad(row):
        bad.append(row)
        return "error"

    conv = pcsv.ConvertOptions(column_types=forced, strings_can_be_null=True, quoted_strings_can_be_null=False)

    def read(threads: bool):
        return pcsv.read_csv(p, read_options=pcsv.ReadOptions(use_threads=threads),
                             parse_options=pcsv.ParseOptions(invalid_row_handler=on_bad, newlines_in_values=True),
                             convert_options=conv)
    try:
        return read(True)
    except pa.ArrowInvalid as e:
        if bad:  # structural error: re-read on one thread, which numbers the lines
            bad.clear()
            try:
                read(False)
            except pa.ArrowInvalid:
                pass
            row = bad[0] if bad else None
            line = row.number if row is not None and row.number is not None else "?"
            exp, act = (row.expected_columns, row.actual_columns) if row is not None else ("?", "?")
            raise DataError(f"Malformed CSV row in {path} at line {line}: expected {exp} columns, got {act}.",
                            code="data.invalid_csv", hint="Fix or remove that row; nothing was loaded.",
                            file=str(path), line=line) from None
        raise _locate_conversion_error(p, str(e)) from None


def _locate_conversion_error(p: Path, msg: str) -> DataError:
    import pyarrow.csv as pcsv

    m = re.search(r"In CSV column #(\d+): .*?conversion error to (\w+): invalid value '(.*)'", msg)
    if not m:
        return DataError(f"Cannot read CSV {p}: {msg}", code="data.invalid_csv", hint="Check the file's format.", file=str(p))
    idx, typ, value = int(m.group(1)), m.group(2), m.group(3)
    t = pcsv.read_csv(p, read_options=pcsv.ReadOptions(use_threads=True),
                      convert_options=pcsv.ConvertOptions(column_types={}, strings_can_be_null=False, auto_dict_encode=False,
                                                          check_utf8=False), parse_options=pcsv.ParseOptions(newlines_in_values=True))
    name = t.column_names[idx]
    col = pc.cast(t.column(idx), pa.string())
    hits = pc.indices_nonzero(pc.equal(col, value))
    line = int(hits[0].as_py()) + 2 if len(hits) else "?"
    return DataError(f"CSV {p} line {line}, column {name!r}: value {value!r} is not a valid {typ}.",
                     code="data.invalid_csv", hint="Fix the value or declare the column's type in the mart's columns.",
                     file=str(p), line=line, column=name)


def _read_source(spec: MartSpec, source: SourceSpec, window: Window | None) -> pa.Table:
    if source.kind == "csv":
        return _read_csv(source.path, spec)
    if source.kind == "parquet":
        import pyarrow.parquet as pq

        if not Path(source.path).is_file():
            raise DataError(f"Parquet source {source.path!r} does not exist.", code="data.source_missing", hint="Check the path.")
        return pq.read_table(source.path)
    import pandas as pd

    url = os.environ.get(source.url_env)
    if not url:
        raise DataError(f"Environment variable {source.url_env} is not set.", code="data.source_missing",
                        hint=f"Export {source.url_env}=<SQLAlchemy URL> in the environment that runs ambidex.")
    names = check_transform_sql(source.query, declared=source.params)
    params = _bind_values(names, window, source.params)
    src = sa.create_engine(url)
    try:
        with src.connect() as conn:
            stmt = _typed_text(source.query, names, src.dialect, params)
            df = pd.read_sql(stmt, conn, params=params)
    finally:
        src.dispose()
    return pa.Table.from_pandas(df, preserve_index=False)


# --------------------------------------------------------------------------- conforming types

def _err(msg: str, code: str, hint: str, **details) -> DataError:
    return DataError(msg, code=code, hint=hint, **details)


def _to_utc(arr: pa.ChunkedArray, name: str, spec: MartSpec) -> pa.ChunkedArray:
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return pc.cast(arr, pa.timestamp("us", "UTC"))
        except pa.ArrowInvalid as e:
            if "expected a zone offset" not in str(e):
                raise _err(f"Column {name!r}: {e}", "data.invalid_timestamp",
                           "Write times as ISO 8601, e.g. 2024-01-01T00:00:00Z.", column=name) from None
        try:
            arr = pc.cast(arr, pa.timestamp("us"))
        except pa.ArrowInvalid:
            raise _err(f"Column {name!r} mixes times with and without a zone offset.", "data.naive_timestamp",
                       "Write every value with a zone offset (e.g. Z).", column=name) from None
        t = arr.type
    if pa.types.is_date(t):
        return pc.cast(pc.cast(arr, pa.timestamp("s")), pa.timestamp("us")).cast(pa.timestamp("us", "UTC"))
    if not pa.types.is_timestamp(t):
        raise _err(f"Column {name!r} has type {t}, not a timestamp.", "data.schema_mismatch",
                   "Declare it with its real type or fix the source.", column=name)
    if t.tz is None:
        policy = spec.naive_timestamps
        if policy is None:
            sample = next((v for v in arr.to_pylist()[:50] if v is not None), None)
            raise _err(f"Column {name!r} holds naive timestamps (no zone), e.g. {sample}.", "data.naive_timestamp",
                       "Add a zone offset in the source, or set naive_timestamps: utc (or an IANA zone) on the mart.",
                       column=name)
        if policy.lower() != "utc":
            try:
                arr = pc.assume_timezone(arr, policy, ambiguous="raise", nonexistent="raise")
            except pa.ArrowInvalid as e:
                raise _err(f"Column {name!r}: {str(e).splitlines()[0]}", "data.naive_timestamp",
                           "Such local times are ambiguous or skipped by a DST change; store UTC in the source.",
                           column=name) from None
        else:
            arr = pc.cast(arr, pa.timestamp(t.unit, "UTC"))
    try:
        return pc.cast(arr, pa.timestamp("us", "UTC"), safe=True)
    except pa.ArrowInvalid:
        raise _err(f"Column {name!r} has sub-microsecond times, which the feature store cannot keep exactly.",
                   "data.invalid_timestamp", "Round the source to microseconds.", column=name) from None


def _infer_type(t: pa.DataType) -> str | None:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_dictionary(t):
        return "category"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_null(t):
        return None
    return "unsupported"


def _cast(arr: pa.ChunkedArray, name: str, ctype: str, spec: MartSpec) -> pa.ChunkedArray:
    t = arr.type
    try:
        if ctype == "integer":
            if pa.types.is_floating(t):
                raise pa.ArrowInvalid("float to integer")
            out = pc.cast(arr, pa.int64(), safe=True)
        elif ctype == "double":
            out = pc.cast(arr, pa.float64(), safe=not pa.types.is_decimal(t))
            nan = pc.is_nan(out)
            if pc.any(nan).as_py():
                out = pc.if_else(nan, pa.scalar(None, pa.float64()), out)  # pandas semantics: NaN is missing
        elif ctype == "boolean":
            out = pc.cast(arr, pa.bool_())
        elif ctype == "timestamp":
            out = _to_utc(arr, name, spec) if not pa.types.is_null(t) else pc.cast(arr, pa.timestamp("us", "UTC"))
        else:  # string, category (levels are applied later)
            if pa.types.is_dictionary(t):
                arr = pc.cast(arr, pa.string())
            if not (pa.types.is_string(arr.type) or pa.types.is_null(arr.type) or pa.types.is_large_string(arr.type)):
                raise pa.ArrowInvalid("not text")
            out = pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise _err(f"Column {name!r} has type {t}, which cannot be read losslessly as contract type {ctype}.",
                   "data.schema_mismatch",
                   "Fix the source, or declare the column's type; a changed type needs a new mart.", column=name) from None
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out])


def _conform(table: pa.Table, spec: MartSpec, prev: dict | None) -> tuple[pa.Table, dict, list[dict]]:
    """Cast the source to contract types; return (table, schema, schema changes) or refuse."""
    names = validate_identifiers(table.column_names)
    for c in names:
        if c in RESERVED:
            raise _err(f"Source column {c!r} uses a name reserved by the feature store.", "data.invalid_identifier",
                       "Rename the column in the source.", column=c)
    for c in list(spec.key) + [x for x in (spec.time_column, spec.watermark_column) if x]:
        if c not in names:
            raise _err(f"Source has no column {c!r} named in the mart {spec.name!r}; it has {', '.join(names)}.",
                       "data.schema_mismatch", "Fix the mart's key/time_column/watermark_column or the source.", column=c)
    prev_cols = (prev or {}).get("columns", {})
    schema: dict[str, dict] = {}
    cols = []
    for name in names:
        arr = table.column(name)
        declared = spec.columns.get(name)
        if declared is not None:
            ctype = declared.type
        elif name in prev_cols:
            ctype = prev_cols[name]["type"]
        elif name in (spec.time_column,):
            ctype = "timestamp"
        else:
            ctype = _infer_type(arr.type) or "string"
        if ctype == "unsupported":
            raise _err(f"Column {name!r} has type {arr.type}, which has no contract type.", "data.schema_mismatch",
                       "Cast it to integer, double, string, boolean or timestamp in the source.", column=name)
        source_levels = None
        if ctype == "category" and pa.types.is_dictionary(arr.type):  # e.g. a pandas categorical in Parquet
            source_levels = []
            for ch in arr.chunks:
                source_levels += [v for v in ch.dictionary.to_pylist() if v not in source_levels]
        arr = _cast(arr, name, ctype, spec)
        entry = {"type": ctype}
        if ctype == "category":
            prev_entry = prev_cols.get(name) or ({"levels": source_levels} if source_levels else None)
            arr, entry["levels"] = _apply_levels(arr, name, declared, prev_entry)
        schema[name] = entry
        cols.append(arr)
    out = pa.table(cols, names=names)
    changes = _schema_changes(spec, prev_cols, schema)
    return out, {"columns": schema}, changes


def _apply_levels(arr: pa.ChunkedArray, name: str, declared: ColumnSpec | None, prev: dict | None):
    present = [v for v in pc.unique(arr).to_pylist() if v is not None]
    if declared is not None and declared.levels is not None:
        levels = list(declared.levels)
        unknown = sorted(set(present) - set(levels))
        if unknown:
            raise _err(f"Column {name!r} has values outside its declared levels: {unknown[:5]}.", "data.unknown_level",
                       "Add them to the column's levels in the mart, or fix the source.", column=name, levels=unknown[:20])
    else:
        levels = list((prev or {}).get("levels") or [])
        known = set(levels)
        levels += sorted(v for v in present if v not in known)
    idx = pc.index_in(arr, value_set=pa.array(levels, pa.string()))
    dict_arr = pa.chunked_array([pa.DictionaryArray.from_arrays(ch, pa.array(levels, pa.string()))
                                 for ch in idx.cast(pa.int32()).chunks], type=pa.dictionary(pa.int32(), pa.string()))
    return dict_arr, levels


def _schema_changes(spec: MartSpec, prev_cols: dict, schema: dict) -> list[dict]:
    if not prev_cols:
        return []
    added = [c for c in schema if c not in prev_cols]
    missing = [c for c in prev_cols if c not in schema]
    retyped = [c for c in schema if c in prev_cols and prev_cols[c]["type"] != schema[c]["type"]]
    if missing or retyped or (added and spec.schema_policy != "evolve"):
        parts = []
        if added:
            parts.append("new columns " + ", ".join(f"{c} ({schema[c]['type']})" for c in added))
        if missing:
            parts.append("missing columns " + ", ".join(missing))
        if retyped:
            parts.append("retyped columns " + ", ".join(f"{c} ({prev_cols[c]['type']} -> {schema[c]['type']})" for c in retyped))
        hint = ("Only additions are allowed under schema_policy: evolve; create a new mart for removed or retyped columns."
                if spec.schema_policy == "evolve" or not added or missing or retyped
                else "Set schema_policy: evolve on the mart to accept new columns, or fix the source.")
        raise _err(f"Schema of this load differs from mart {spec.name!r}: {'; '.join(parts)}.", "data.schema_mismatch", hint,
                   added=added, missing=missing, retyped=retyped)
    changes = [{"change": "add_column", "column": c, "type": schema[c]["type"]} for c in added]
    for c, e in schema.items():
        if e["type"] == "category" and c in prev_cols:
            new = [lv for lv in e["levels"] if lv not in (prev_cols[c].get("levels") or [])]
            if new:
                changes.append({"change": "add_levels", "column": c, "levels": new})
    return changes


# --------------------------------------------------------------------------- canonical hash

def _sort_indices(table: pa.Table, key: list[str]) -> pa.Array:
    cols = key or sorted(table.column_names)
    sortable = pa.table([pc.cast(table.column(c), pa.string()) if pa.types.is_dictionary(table.column(c).type)
                         else table.column(c) for c in cols], names=cols)
    return pc.sort_indices(sortable, sort_keys=[(c, "ascending") for c in cols])  # nulls last (default)


def content_hash(table: pa.Table, schema: dict, key: list[str], order: pa.Array | None = None) -> str:
    """sha256 over the canonical bytes of a conformed table; the same rows give the same hash everywhere.

    Canonical form (version 1): rows sorted by the key columns (all columns in name
    order when there is no key; text by UTF-8 bytes, missing last). Then the header
    ``ambidex-content-v1\\n`` and, for each column in name order, ``name\\ttype\\n``; then
    for each column in name order: one byte per row (1 present, 0 missing), then the
    values, missing written as zero: integer int64 little-endian; double IEEE-754
    binary64 little-endian (NaN is missing); boolean one byte; timestamp int64
    microseconds since 1970-01-01 UTC; string and category int64 byte lengths, then the
    UTF-8 bytes. Category levels and column order in the source do not change the hash.
    """
    h = hashlib.sha256(b"ambidex-content-v1\n")
    names = sorted(table.column_names)
    for n in names:
        h.update(f"{n}\t{schema['columns'][n]['type']}\n".encode())
    if table.num_rows == 0:
        return "sha256:" + h.hexdigest()
    order = _sort_indices(table, key) if order is None else order
    for n in names:
        arr = pc.take(table.column(n), order).combine_chunks()
        ctype = schema["columns"][n]["type"]
        if pa.types.is_dictionary(arr.type):
            arr = pc.cast(arr, pa.string())
        valid = pc.is_valid(arr).to_numpy(zero_copy_only=False).astype(np.uint8)
        h.update(valid.tobytes())
        if ctype in ("string", "category"):
            filled = pc.fill_null(arr, "")
            lengths = pc.binary_length(filled).to_numpy(zero_copy_only=False).astype("<i8")
            h.update(lengths.tobytes())
            offs = np.frombuffer(filled.buffers()[1], dtype=np.int32)[filled.offset: filled.offset + len(filled) + 1]
            h.update(memoryview(filled.buffers()[2])[offs[0]:offs[-1]])
            continue
        if ctype == "timestamp":
            arr = pc.cast(arr, pa.int64())
        elif ctype == "boolean":
            arr = pc.cast(arr, pa.uint8())
        zero = pa.scalar(0, arr.type)
        vals = pc.fill_null(arr, zero).to_numpy(zero_copy_only=False)
        dtype = {"integer": "<i8", "timestamp": "<i8", "double": "<f8", "boolean": "u1"}[ctype]
        h.update(np.ascontiguousarray(vals.astype(dtype, copy=False)).tobytes())
    return "sha256:" + h.hexdigest()


def _check_key(table: pa.Table, key: list[str], source: str) -> pa.Array | None:
    """Refuse missing or duplicate keys; returns the canonical sort order (reused by the hash)."""
    if not key or table.num_rows == 0:
        return None
    for c in key:
        nulls = table.column(c).null_count
        if nulls:
            raise _err(f"Key column {c!r} has {nulls} missing values in {source}.", "data.missing_key",
                       "Every row needs a complete key; fix the source.", column=c)
    order = _sort_indices(table, key)
    same = None
    for c in key:
        col = pc.take(table.column(c), order).combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, pa.string())
        eq = pc.equal(col.slice(1), col.slice(0, len(col) - 1))
        same = eq if same is None else pc.and_(same, eq)
    dup = pc.indices_nonzero(same)
    if len(dup):
        i = order[dup[0].as_py()].as_py()
        sample = {c: _jsonable(table.column(c)[i].as_py()) for c in key}
        raise _err(f"Key {key} has {len(dup)} duplicate rows in {source}, e.g. {sample}.", "data.duplicate_key",
                   "Keys must be unique within a load; deduplicate the source.", key=sample, duplicates=len(dup))
    return order


def _jsonable(v):
    if isinstance(v, dt.datetime):
        return _iso(v)
    return v


# --------------------------------------------------------------------------- SQL tables for a mart

def _sa_type(entry: dict, is_key: bool):
    t = entry["type"]
    if t == "integer":
        return sa.BigInteger()
    if t == "double":
        return sa.Double()
    if t == "boolean":
        return sa.Boolean()
    if t == "timestamp":
        return MartTimestamp()
    return sa.String(255) if is_key else sa.Text()


def _mart_tables(spec: MartSpec, schema: dict) -> tuple[sa.Table, sa.Table]:
    md = sa.MetaData()
    qn = sa.sql.quoted_name

    def cols(hist: bool):
        out = [sa.Column(qn(c, True), _sa_type(e, c in spec.key)) for c, e in schema["columns"].items()]
        out.append(sa.Column("_dv", sa.Integer, nullable=False))
        if hist:
            out.append(sa.Column("_replaced_by", sa.Integer, nullable=False))
        return out
    main = sa.Table(qn(spec.name, True), md, *cols(False), **MYSQL_OPTS)
    hist = sa.Table(qn(spec.name + "__hist", True), md, *cols(True), **MYSQL_OPTS)
    idx_time = [spec.time_column] if spec.time_column else []
    if spec.key:
        sa.Index(f"ux_{spec.name}_key"[:60], *[main.c[k] for k in spec.key], unique=True)
    if idx_time:
        sa.Index(f"ix_{spec.name}_time"[:60], main.c[spec.time_column])
    sa.Index(f"ix_{spec.name}_hist_dv"[:60], hist.c["_dv"])
    return main, hist


def _load_mart_row(conn, name: str) -> dict | None:
    row = conn.execute(sa.select(fs_marts).where(fs_marts.c.name == name)).mappings().first()
    return dict(row) if row else None


def _get_mart(bind, name: str) -> tuple[dict, MartSpec, dict]:
    validate_identifier(name, "mart name")
    with _connect(bind) as conn:
        row = _load_mart_row(conn, name)
    if row is None:
        raise DataError(f"No mart {name!r}.", code="data.not_found",
                        hint="Run 'ambidex data list' to see the marts, or ingest it first.", mart=name)
    return row, MartSpec.model_validate_json(row["spec_json"]), json.loads(row["schema_json"] or '{"columns": {}}')


class _connect:
    """Use a given Connection as is, or open one from an Engine."""

    def __init__(self, bind):
        self.bind, self.conn = bind, None

    def __enter__(self):
        if isinstance(bind := self.bind, sa.Connection):
            return bind
        self.conn = bind.connect()
        return self.conn

    def __exit__(self, *exc):
        if self.conn is not None:
            self.conn.close()


# --------------------------------------------------------------------------- bulk insert

def _py_columns(batch: pa.Table, schema: dict, dialect: str) -> list[list]:
    out = []
    for name in batch.column_names:
        arr = batch.column(name)
        t = schema["columns"].get(name, {}).get("type")
        if t == "timestamp":
            arr = pc.strftime(arr, format="%Y-%m-%d %H:%M:%S")  # with %S, arrow appends .ffffff for us units
        elif pa.types.is_dictionary(arr.type):
            arr = pc.cast(arr, pa.string())
        out.append(arr.to_pylist())
    return out


def _insert_rows(conn, main: sa.Table, table: pa.Table, schema: dict, version: int, progress) -> None:
    dialect = conn.dialect.name
    names = table.column_names + ["_dv"]
    table = table.append_column("_dv", pa.array(np.full(table.num_rows, version, dtype=np.int64)))
    total, done = table.num_rows, 0
    q = [quote_identifier(conn.dialect, n) for n in names]
    tname = quote_identifier(conn.dialect, main.name)
    raw = conn.connection.driver_connection
    if dialect == "postgresql":
        import pyarrow.csv as pcsv

        with raw.cursor() as cur, cur.copy(f"COPY {tname} ({', '.join(q)}) FROM STDIN (FORMAT csv)") as cp:
            for batch in table.to_batches(max_chunksize=_CHUNK):
                cols = [pc.cast(c, pa.string()) if pa.types.is_dictionary(c.type) else c for c in batch.columns]
                buf = pa.BufferOutputStream()
                pcsv.write_csv(pa.RecordBatch.from_arrays(cols, names=names), buf,
                               pcsv.WriteOptions(include_header=False, quoting_style="needed"))
                cp.write(buf.getvalue().to_pybytes())
                done += batch.num_rows
                progress and progress(done, total)
        return
    if dialect in ("mysql", "mariadb"):
        for c, e in schema["columns"].items():
            if e["type"] == "double" and pc.any(pc.is_inf(table.column(c))).as_py():
                raise _err(f"Column {c!r} holds infinite values, which MariaDB/MySQL cannot store.", "data.unsupported_value",
                           "Replace them in the source or use another database.", column=c)
        sql = f"INSERT INTO {tname} ({', '.join(q)}) VALUES ({', '.join(['%s'] * len(q))})"
        step = 10_000
    elif dialect == "sqlite":
        sql = f"INSERT INTO {tname} ({', '.join(q)}) VALUES ({', '.join(['?'] * len(q))})"
        step = _CHUNK
    else:
        for batch in table.to_batches(max_chunksize=10_000):
            rows = pa.Table.from_batches([batch]).to_pylist()
            conn.execute(sa.insert(main), rows)
            done += batch.num_rows
            progress and progress(done, total)
        return
    cur = raw.cursor()
    try:
        for batch in table.to_batches(max_chunksize=step):
            cur.executemany(sql, list(zip(*_py_columns(pa.Table.from_batches([batch]), schema, dialect))))
            done += batch.num_rows
            progress and progress(done, total)
    finally:
        cur.close()


# --------------------------------------------------------------------------- the load

def _window_filter(table: pa.Table, col: str, window: Window) -> tuple[pa.Table, int]:
    ts = table.column(col)
    lo = pa.scalar(window.start, pa.timestamp("us", "UTC"))
    hi = pa.scalar(window.end, pa.timestamp("us", "UTC"))
    mask = pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))
    mask = pc.fill_null(mask, False)
    kept = table.filter(mask)
    return kept, table.num_rows - kept.num_rows


def _wm_scalar(text: str | None, entry: dict):
    if text is None:
        return None
    v = json.loads(text)
    if entry["type"] == "timestamp":
        return pa.scalar(dt.datetime.fromisoformat(v.replace("Z", "+00:00")), pa.timestamp("us", "UTC"))
    return pa.scalar(v)


def ingest(engine: sa.Engine, spec: MartSpec, *, source: SourceSpec | None = None, window: Window | str | None = None,
           run_id: str | None = None, dry_run: bool = False, progress: Callable[[int, int], None] | None = None,
           clock: Callable[[], dt.datetime] | None = None) -> LoadResult:
    """Load one source into mart ``spec.name`` as one transaction and record a data version.

    >>> ingest(engine, MartSpec(name="sales", source={"kind": "csv", "path": "sales.csv"}, key=["id"],
    ...        time_column="ts", load="incremental"), window="2024-01-01/2024-02-01")  # doctest: +SKIP
    """
    now = (clock or (lambda: dt.datetime.now(UTC)))()
    window = parse_window(window)
    src = source or spec.source
    if src is None:
        raise DataError(f"Mart {spec.name!r} has no source.", code="data.source_missing",
                        hint="Give a source in the mart's config or on the command line (--source FILE).")
    mode = spec.mode
    if mode == "window" and window is None:
        raise DataError(f"Mart {spec.name!r} loads by window, but no window was given.", code="data.window_invalid",
                        hint="Pass --window START/END, e.g. 2024-01-01/2024-02-01.")
    raw = _read_source(spec, src, window)
    validate_identifiers(raw.column_names)  # before any SQL reaches the feature store
    with _connect(engine) as conn:
        mart_row = _load_mart_row(conn, spec.name) if sa.inspect(conn).has_table("fs_marts") else None
    if mart_row is None and not dry_run and not sa.inspect(engine).has_table("fs_marts"):
        raise RegistryError("The feature-store tables are missing in this database.", code="registry.schema_missing",
                            hint="Run 'ambidex db upgrade' (or init_featurestore(engine) in tests).")
    prev = json.loads(mart_row["schema_json"]) if mart_row and mart_row["schema_json"] else None
    if mart_row is not None and mart_row["load"] != mode:
        raise DataError(f"Mart {spec.name!r} was created with {mart_row['load']} loads, not {mode}.", code="data.schema_mismatch",
                        hint="Keep the mart's load mode, or create a new mart.")

    table, schema, changes = _conform(raw, spec, prev)
    skipped = 0
    if mode == "window":
        table, skipped = _window_filter(table, spec.time_column, window)
    wm_from = mart_row["watermark"] if mart_row else None
    wm_to = wm_from
    if mode == "watermark":
        entry = schema["columns"][spec.watermark_column]
        last = _wm_scalar(wm_from, entry)
        if last is not None:
            keep = pc.fill_null(pc.greater(table.column(spec.watermark_column), last), False)
            skipped = table.num_rows - pc.sum(keep).as_py() if table.num_rows else 0
            table = table.filter(keep)
        if table.num_rows:
            mx = pc.max(table.column(spec.watermark_column)).as_py()
            wm_to = json.dumps(_jsonable(mx))
    order = _check_key(table, spec.key, src.describe().split(" (")[0])
    grids = load_grids(engine, spec.name) if mart_row is not None else {}
    types = {c: e["type"] for c, e in schema["columns"].items()}

    def summarise():  # hash and profile; overlapped with the insert (numpy/Arrow release the GIL)
        digest = content_hash(table, schema, spec.key, order)
        return digest, *profiling.profile_table(table, types, grids)

    result = LoadResult(spec.name, mode, None, None, table.num_rows, "", str(window) if window else None,
                        schema, changes, 0, skipped, dry_run, json.loads(wm_to) if wm_to else None)
    if dry_run:
        result.content_hash = summarise()[0]
        return result
    main, hist = _mart_tables(spec, schema)
    with ThreadPoolExecutor(max_workers=1) as pool:
        summary = pool.submit(summarise)
        _write(engine, spec, mode, mart_row, main, hist, table, schema, changes, window, src, summary, run_id, now,
               wm_from, wm_to, result, progress)
    return result


def _ddl(conn, spec: MartSpec, mart_row, main: sa.Table, hist: sa.Table, changes: list[dict]) -> Callable[[], None]:
    """Create the mart's tables or add evolved columns; returns an undo for backends without transactional DDL."""
    undo: list[Callable] = []
    if mart_row is None or not sa.inspect(conn).has_table(main.name):
        main.metadata.create_all(conn, tables=[main, hist])
        undo.append(lambda c: main.metadata.drop_all(c, tables=[hist, main]))
    else:
        for t in (main, hist):
            reflected = reflect_table(conn, t.name)
            have = {c.name for c in reflected.columns}
            expected = set(json.loads(mart_row["schema_json"])["columns"]) | {c["column"] for c in changes if c["change"] == "add_column"}
            unknown = have - expected - RESERVED
            if unknown:
                raise _err(f"Mart table {t.name!r} has columns the feature store did not create: {sorted(unknown)}.",
                           "data.schema_mismatch", "Someone altered the table; restore it or create a new mart.")
            for ch in changes:
                if ch["change"] == "add_column" and ch["column"] not in have:
                    col = t.c[ch["column"]]
                    ctype = col.type.compile(dialect=conn.dialect)
                    qt, qc = quote_identifier(conn.dialect, t.name), quote_identifier(conn.dialect, col.name)
                    conn.exec_driver_sql(f"ALTER TABLE {qt} ADD COLUMN {qc} {ctype}")
                    undo.append(lambda c, qt=qt, qc=qc: c.exec_driver_sql(f"ALTER TABLE {qt} DROP COLUMN {qc}"))

    def run_undo():
        with conn.engine.connect() as c:
            for u in reversed(undo):
                u(c)
            c.commit()
    return run_undo


def _write(engine, spec, mode, mart_row, main, hist, table, schema, changes, window, src, summary, run_id, now,
           wm_from, wm_to, result, progress) -> None:
    nontx_ddl = engine.dialect.name in ("mysql", "mariadb")  # DDL commits implicitly there
    undo = None
    if nontx_ddl:
        with engine.connect() as c:
            undo = _ddl(c, spec, mart_row, main, hist, changes)
            c.commit()
    try:
        with engine.begin() as conn:
            # first statement is DML, so pysqlite opens the transaction before any DDL below
            if mart_row is None:
                conn.execute(sa.insert(fs_marts).values(
                    name=spec.name, table_name=spec.name, load=mode, spec_json=spec.model_dump_json(),
                    schema_json=None, last_version=1, watermark=None, created_at=now, updated_at=now))
            else:
                conn.execute(sa.update(fs_marts).where(fs_marts.c.name == spec.name)
                             .values(last_version=fs_marts.c.last_version + 1))
            version = conn.execute(sa.select(fs_marts.c.last_version).where(fs_marts.c.name == spec.name)).scalar_one()
            if not nontx_ddl:
                _ddl(conn, spec, mart_row, main, hist, changes)
            replaced = 0
            if mart_row is not None and mode in ("full", "window"):
                cond = sa.true()
                if mode == "window":
                    tc = main.c[spec.time_column]
                    cond = sa.and_(tc >= window.start, tc < window.end)
                cols = [c for c in main.c if c.name in json.loads(mart_row["schema_json"])["columns"]] + [main.c["_dv"]]
                replaced = conn.execute(sa.select(sa.func.count()).select_from(main).where(cond)).scalar_one()
                conn.execute(sa.insert(hist).from_select(
                    [c.name for c in cols] + ["_replaced_by"],
                    sa.select(*cols, sa.literal(version, sa.Integer)).where(cond)))
                conn.execute(sa.delete(main).where(cond))
            _insert_rows(conn, main, table, schema, version, progress)
            digest, profiles, new_grids = summary.result()
            result.content_hash = digest
            dv_id = conn.execute(sa.insert(data_versions).values(
                mart=spec.name, version=version, load=mode,
                window_start=window.start if window else None, window_end=window.end if window else None,
                row_count=table.num_rows, schema_json=json.dumps(schema), source=src.describe(), content_hash=digest,
                run_id=run_id, created_at=now, schema_changes_json=json.dumps(changes),
                watermark_from=wm_from, watermark_to=wm_to, replaced_rows=max(replaced, 0))).inserted_primary_key[0]
            if mode == "full":
                conn.execute(sa.update(data_versions).where(data_versions.c.mart == spec.name,
                             data_versions.c.version < version, data_versions.c.replaced_by.is_(None)).values(replaced_by=version))
            elif mode == "window":
                conn.execute(sa.update(data_versions).where(
                    data_versions.c.mart == spec.name, data_versions.c.version < version,
                    data_versions.c.replaced_by.is_(None), data_versions.c.window_start >= window.start,
                    data_versions.c.window_end <= window.end).values(replaced_by=version))
            _write_profiles(conn, spec.name, dv_id, profiles, new_grids)
            conn.execute(sa.update(fs_marts).where(fs_marts.c.name == spec.name).values(
                schema_json=json.dumps(schema), watermark=wm_to, updated_at=now))
    except Exception:
        if undo is not None:
            try:
                undo()
            except Exception:  # pragma: no cover - reported with the original error
                log.exception("could not undo DDL for mart %s", spec.name)
        raise
    result.version, result.data_version_id, result.replaced_rows = version, dv_id, max(replaced, 0)


def _write_profiles(conn, mart: str, dv_id: int, profiles, new_grids: dict[str, NumericGrid]) -> None:
    stats, bins, levels, grid, meta = [], [], [], [], []
    for p in profiles:
        n_levels = None
        if p.kind == "numeric":
            bins += [{"data_version_id": dv_id, "column_name": p.column, "bin_idx": i, "cnt": c}
                     for i, c in p.profile.fine_counts.items()]
        else:
            levels += [{"data_version_id": dv_id, "column_name": p.column, "level": lv, "cnt": c}
                       for lv, c in p.profile.level_counts.items()]
            n_levels = len(p.profile.level_counts)
        stats.append({"data_version_id": dv_id, "column_name": p.column, "kind": p.kind, "ctype": p.ctype,
                      "n_levels": n_levels, **p.stats()})
    for col, g in new_grids.items():
        meta.append({"mart": mart, "column_name": col, "kind": g.kind, "median": g.median, "q25": g.q25, "q75": g.q75,
                     "percentiles_json": json.dumps(g.percentiles) if g.percentiles is not None else None,
                     "sd_pop": g.sd_pop, "n_valid": g.n_valid, "data_version_id": dv_id})
        grid += [{"mart": mart, "column_name": col, "bin_idx": i, "upper_edge": e, "data_version_id": dv_id}
                 for i, e in enumerate(g.edges)]
    for t, rows in ((fs_col_stats, stats), (fs_num_bins, bins), (fs_cat_levels, levels), (fs_grid_meta, meta),
                    (fs_grid, grid)):
        if rows:
            conn.execute(sa.insert(t), rows)


def load_grids(engine: sa.Engine, mart: str) -> dict[str, NumericGrid]:
    """The frozen per-column grids of a mart (see ``profiling``), as ``drift_profile.NumericGrid``."""
    out: dict[str, NumericGrid] = {}
    with _connect(engine) as conn:
        edges: dict[str, list[float]] = {}
        for r in conn.execute(sa.select(fs_grid.c.column_name, fs_grid.c.upper_edge)
                              .where(fs_grid.c.mart == mart).order_by(fs_grid.c.column_name, fs_grid.c.bin_idx)):
            edges.setdefault(r.column_name, []).append(r.upper_edge)
        for m in conn.execute(sa.select(fs_grid_meta).where(fs_grid_meta.c.mart == mart)).mappings():
            pct = json.loads(m["percentiles_json"]) if m["percentiles_json"] else None
            out[m["column_name"]] = NumericGrid(m["kind"], tuple(edges.get(m["column_name"], ())),
                                               tuple(pct) if pct is not None else None, m["median"], m["q25"],
                                               m["q75"], m["sd_pop"], m["n_valid"])
    return out


# --------------------------------------------------------------------------- transforms and bound parameters

KNOWN_PARAMS = ("window_start", "window_end")


def check_transform_sql(sql: str, declared: dict | list | tuple = (), *, what: str = "Transform") -> list[str]:
    """Parse the ``:name`` parameters of a transform and refuse any that is neither a window bound nor declared.

    >>> check_transform_sql("SELECT * FROM churn WHERE signup_month >= :window_start AND tenure > :min_tenure",
    ...                     declared={"min_tenure": 3})
    ['window_start', 'min_tenure']
    """
    from ambidex.sqlident import bind_names

    names = bind_names(sql, what)
    unknown = [n for n in names if n not in KNOWN_PARAMS and n not in declared]
    if unknown:
        raise DataError(f"{what} uses undeclared parameters {', '.join(':' + n for n in unknown)}.",
                        code="data.invalid_transform",
                        hint="Declare them under the transform's params, or use :window_start/:window_end.",
                        parameters=unknown)
    return names


def _bind_values(names: list[str], window: Window | None, params: dict | None) -> dict:
    params = dict(params or {})
    out = {}
    for n in names:
        if n in KNOWN_PARAMS:
            if window is None:
                raise DataError(f"The query uses :{n} but no window was given.", code="data.window_invalid",
                                hint="Pass a window (START/END).")
            out[n] = window.start if n == "window_start" else window.end
        else:
            out[n] = params[n]
    return out


def _typed_text(sql: str, names: list[str], dialect, values: dict) -> sa.TextClause:
    from ambidex.sqlident import prepare_bound_sql

    sql, names = prepare_bound_sql(sql)
    binds = []
    for n in names:
        v = values[n]
        binds.append(sa.bindparam(n, type_=MartTimestamp()) if isinstance(v, dt.datetime) else sa.bindparam(n))
    return sa.text(sql).bindparams(*binds)


# --------------------------------------------------------------------------- point-in-time reads

def _resolve_rows(conn, spec: MartSpec, schema: dict, mart_row: dict, window: Window | None, version: int | None,
                  as_of: dt.datetime | None, columns: list[str]) -> sa.Select:
    main, hist = _mart_tables(spec, schema)
    reflected = reflect_table(conn, spec.name)
    if reflected is None:
        raise DataError(f"Mart table {spec.name!r} is missing.", code="data.not_found", hint="Re-ingest the mart.")
    require_columns(reflected, columns)
    out_cols = columns + ["_dv"]

    def both(cond_main, cond_hist):
        a = sa.select(*[main.c[c] for c in out_cols]).where(cond_main)
        b = sa.select(*[hist.c[c] for c in out_cols]).where(cond_hist)
        return sa.union_all(a, b)

    if version is not None:
        return both(main.c._dv == version, hist.c._dv == version)
    if spec.mode == "full":
        limit = window.end if window else (as_of or dt.datetime.now(UTC))
        eff = sa.func.coalesce(data_versions.c.window_start, data_versions.c.created_at)
        q = sa.select(sa.func.max(data_versions.c.version)).where(data_versions.c.mart == spec.name)
        q = q.where(eff < sa.literal(limit, UTCDateTime()))
        if as_of is not None:
            q = q.where(data_versions.c.created_at <= as_of)
        v = conn.execute(q).scalar()
        if v is None:
            raise DataError(f"Mart {spec.name!r} has no data version before {_iso(limit)}.", code="data.window_invalid",
                            hint="Ingest a version first, or read a later window.")
        return both(main.c._dv == v, hist.c._dv == v)
    conds_m, conds_h = [], []
    if window is not None:
        col = spec.time_column or spec.watermark_column
        if col is None or schema["columns"][col]["type"] != "timestamp":
            raise DataError(f"Mart {spec.name!r} has no timestamp column to select a window by.", code="data.window_invalid",
                            hint="Read it without a window, or give the mart a time_column.")
        conds_m += [main.c[col] >= window.start, main.c[col] < window.end]
        conds_h += [hist.c[col] >= window.start, hist.c[col] < window.end]
    if as_of is None:
        return sa.select(*[main.c[c] for c in out_cols]).where(sa.and_(sa.true(), *conds_m))
    x = conn.execute(sa.select(sa.func.max(data_versions.c.version)).where(
        data_versions.c.mart == spec.name, data_versions.c.created_at <= as_of)).scalar() or 0
    return both(sa.and_(main.c._dv <= x, *conds_m),
                sa.and_(hist.c._dv <= x, hist.c._replaced_by > x, *conds_h))


def _frame(columns: list[str], values: list[list], schema: dict, source: str):
    """Build a DataFrame with the contract's pandas dtypes; fail naming the column if a value does not fit."""
    import pandas as pd

    data = {}
    for name, vals in zip(columns, values):
        e = schema["columns"][name]
        t = e["type"]
        try:
            if t == "integer":
                if any(v is not None and (type(v) is not int) for v in vals):
                    bad = next(v for v in vals if v is not None and type(v) is not int)
                    raise ValueError(f"non-integer value {bad!r}")
                s = pd.array(vals, dtype="Int64")
                data[name] = s.astype("int64") if not s.isna().any() else s
            elif t == "double":
                data[name] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
            elif t == "boolean":
                s = pd.array([None if v is None else bool(v) for v in vals], dtype="boolean")
                data[name] = s.astype(bool) if not s.isna().any() else s
            elif t == "timestamp":
                s = pd.to_datetime(pd.Series(vals, dtype=object), utc=True)
                data[name] = s.astype("datetime64[ns, UTC]")
            elif t == "category":
                levels = e.get("levels") or []
                cat = pd.Categorical(vals, categories=levels)
                lost = [v for v, code in zip(vals, cat.codes) if v is not None and code == -1]
                if lost:
                    raise ValueError(f"value {lost[0]!r} is not one of its levels")
                data[name] = cat
            else:
                if any(v is not None and not isinstance(v, str) for v in vals):
                    raise ValueError("non-text value")
                data[name] = pd.array(vals, dtype="str")
        except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime) as ex:
            raise DataError(f"Column {name!r} of {source} cannot be read as {t}: {ex}.", code="data.type_mismatch",
                            hint="The stored data no longer matches its schema; re-ingest the window.", column=name) from None
    return pd.DataFrame(data, columns=columns)


def read_window(engine: sa.Engine, name: str, window: Window | str | None = None, *, version: int | None = None,
                as_of: dt.datetime | None = None, columns: list[str] | None = None, run_id: str | None = None,
                params: dict | None = None):
    """Rows valid at ``window`` (see the module docstring) as a DataFrame with contract dtypes.

    ``name`` is a mart, or a path to a transform ``.sql`` file (then ``params`` are its
    declared parameters). With ``run_id`` the data versions read are recorded as the
    run's inputs. ``df.attrs["data_versions"]`` lists their ids.

    >>> df = read_window(engine, "churn", "2024-01-01/2024-02-01")  # doctest: +SKIP
    """
    window = parse_window(window)
    if str(name).endswith(".sql"):
        return read_transform(engine, name, window, params, run_id=run_id)
    mart_row, spec, schema = _get_mart(engine, name)
    cols = columns or list(schema["columns"])
    with engine.connect() as conn:
        stmt = _resolve_rows(conn, spec, schema, mart_row, window, version, as_of, cols)
        order = [k for k in spec.key if k in cols] or ([spec.time_column] if spec.time_column in cols else [])
        if order:  # a stable, canonical row order on every backend
            stmt = stmt.order_by(*[sa.column(sa.sql.quoted_name(k, True)) for k in order])
        rows = conn.execute(stmt).all()
    values = [list(c) for c in zip(*rows)] if rows else [[] for _ in range(len(cols) + 1)]
    df = _frame(cols, values[:-1], schema, f"mart {name!r}")
    dvs = sorted(set(values[-1]))
    ids = _dv_ids(engine, name, dvs)
    df.attrs["data_versions"] = ids
    df.attrs["schema"] = {"columns": {c: schema["columns"][c] for c in cols}}
    if run_id is not None and ids:
        record_inputs(engine, run_id, ids)
    return df


def _dv_ids(engine, mart: str, versions: list[int]) -> list[int]:
    if not versions:
        return []
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(data_versions.c.id).where(
            data_versions.c.mart == mart, data_versions.c.version.in_(versions))).scalars())


def read_transform(engine: sa.Engine, path: str | Path, window: Window | str | None, params: dict | None = None, *,
                   run_id: str | None = None):
    """Run a transform from ``sql/`` with bound parameters only and return its rows as a DataFrame.

    Output columns named like a column of a referenced mart take that column's contract
    type (including category levels); the others are inferred from the values. The
    data versions recorded as inputs are those whose rows are current in the window
    for every mart the text references.
    """
    window = parse_window(window)
    text = Path(path).read_text(encoding="utf-8")
    names = check_transform_sql(text, declared=params or {}, what=f"Transform {Path(path).name}")
    values = _bind_values(names, window, params)
    with engine.connect() as conn:
        marts = [dict(r) for r in conn.execute(sa.select(fs_marts)).mappings()]
        used = [m for m in marts if re.search(rf"(?<![A-Za-z0-9_]){re.escape(m['name'])}(?![A-Za-z0-9_])", text)]
        result = conn.execute(_typed_text(text, names, conn.dialect, values), values)
        cols = list(result.keys())
        rows = result.all()
    validate_identifiers(cols, "output column")
    types: dict[str, dict] = {}
    for m in used:
        for c, e in json.loads(m["schema_json"] or '{"columns": {}}')["columns"].items():
            types.setdefault(c, e)
    values_by_col = [list(c) for c in zip(*rows)] if rows else [[] for _ in cols]
    schema = {"columns": {}}
    for c, vals in zip(cols, values_by_col):
        schema["columns"][c] = types.get(c) or {"type": _infer_py(vals)}
        if schema["columns"][c]["type"] == "timestamp":
            values_by_col[cols.index(c)] = [_as_utc(v) for v in vals]
    df = _frame(cols, values_by_col, schema, f"transform {Path(path).name}")
    ids = _live_dv_ids(engine, used, window)
    df.attrs["data_versions"], df.attrs["schema"] = ids, schema
    if run_id is not None and ids:
        record_inputs(engine, run_id, ids)
    return df


def _infer_py(vals: list) -> str:
    kinds = {type(v) for v in vals if v is not None}
    if kinds <= {bool} and kinds:
        return "boolean"
    if kinds <= {int}:
        return "integer" if kinds else "string"
    if kinds <= {int, float}:
        return "double"
    if kinds and all(issubclass(k, dt.datetime) for k in kinds):
        return "timestamp"
    return "string"


def _as_utc(v):
    if v is None or isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


def _live_dv_ids(engine, marts: list[dict], window: Window | None) -> list[int]:
    ids: list[int] = []
    for m in marts:
        spec = MartSpec.model_validate_json(m["spec_json"])
        schema = json.loads(m["schema_json"] or '{"columns": {}}')
        with engine.connect() as conn:
            main, _ = _mart_tables(spec, schema)
            if spec.mode == "full":
                q = sa.select(sa.func.max(main.c._dv))
            else:
                q = sa.select(main.c._dv).distinct()
                col = spec.time_column
                if window is not None and col:
                    q = q.where(main.c[col] >= window.start, main.c[col] < window.end)
            versions = [v for v in conn.execute(q).scalars() if v is not None]
        ids += _dv_ids(engine, m["name"], versions)
    return sorted(ids)


def _schema_sidecar(df, schema: dict, key: list[str] = ()) -> dict:
    cols = []
    for c in df.columns:
        e = schema["columns"][c]
        entry = {"name": c, "type": e["type"], "nullable": c not in key}
        if e["type"] == "category":
            entry["levels"] = list(e.get("levels") or [])
        cols.append(entry)
    return {"contract_version": 1, "row_count": int(len(df)), "columns": cols}


def export_window_for_r(engine: sa.Engine, name: str, window: Window | str | None, csv_path: str | Path, **kw) -> dict:
    """Write the rows of ``read_window(engine, name, window, **kw)`` as a typed CSV plus ``<name>.schema.json``.

    Returns the schema sidecar (contract/SPEC.md section 3) with ``data_versions`` added.
    """
    csv_path = Path(csv_path)
    df = read_window(engine, name, window, **kw)
    key = [] if str(name).endswith(".sql") else _get_mart(engine, name)[1].key
    sidecar = _schema_sidecar(df, df.attrs["schema"], key)
    from ambidex_stage.tables import write_table  # the contract's one Python writer

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    written = write_table(df, csv_path, schema=sidecar)
    return {**written, "data_versions": df.attrs["data_versions"]}


# --------------------------------------------------------------------------- lineage

def record_inputs(engine: sa.Engine, run_id: str, data_version_ids: list[int], role: str = "input") -> None:
    """Record that run ``run_id`` read these data versions (idempotent)."""
    now = dt.datetime.now(UTC)
    with engine.begin() as conn:
        have = set(conn.execute(sa.select(run_data_versions.c.data_version_id).where(
            run_data_versions.c.run_id == run_id, run_data_versions.c.role == role)).scalars())
        rows = [{"run_id": run_id, "data_version_id": i, "role": role, "created_at": now}
                for i in sorted(set(data_version_ids)) if i not in have]
        if rows:
            conn.execute(sa.insert(run_data_versions), rows)


def _dv_dict(r) -> dict:
    return {"id": r["id"], "mart": r["mart"], "version": r["version"], "load": r["load"],
            "window_start": _iso(r["window_start"]), "window_end": _iso(r["window_end"]), "row_count": r["row_count"],
            "content_hash": r["content_hash"], "source": r["source"], "run_id": r["run_id"],
            "created_at": _iso(r["created_at"]), "replaced_by": r["replaced_by"],
            "schema_changes": json.loads(r["schema_changes_json"] or "[]")}


def run_inputs(engine: sa.Engine, run_id: str) -> list[dict]:
    """The data versions a run read, with their source and window."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(data_versions, run_data_versions.c.role)
                            .join(run_data_versions, run_data_versions.c.data_version_id == data_versions.c.id)
                            .where(run_data_versions.c.run_id == run_id).order_by(data_versions.c.id)).mappings().all()
    return [{**_dv_dict(r), "role": r["role"]} for r in rows]


def lineage(engine: sa.Engine, model_name: str, version: int | str) -> dict:
    """Model version -> training run -> data versions -> source and window, as plain data."""
    insp = sa.inspect(engine)
    if not insp.has_table("model_versions"):
        raise RegistryError("The registry has no model_versions table.", code="registry.schema_missing",
                            hint="Run 'ambidex db upgrade'.")
    md = sa.MetaData()
    mv = sa.Table("model_versions", md, autoload_with=engine)
    q = sa.select(mv)
    cols = set(mv.c.keys())
    if "model" in cols or "model_name" in cols or "name" in cols:
        q = q.where(mv.c[next(c for c in ("model_name", "model", "name") if c in cols)] == model_name)
    elif "model_id" in cols and insp.has_table("models"):
        models = sa.Table("models", md, autoload_with=engine)
        q = q.join(models, models.c.id == mv.c.model_id).where(models.c.name == model_name)
    vcol = "version" if "version" in cols else "version_number"
    try:
        vnum = int(version)
    except (TypeError, ValueError):
        raise RegistryError(f"Model version {version!r} is not a number.", code="registry.not_found",
                            hint="Write MODEL:VERSION, e.g. churn:3.") from None
    with engine.connect() as conn:
        row = conn.execute(q.where(mv.c[vcol] == vnum)).mappings().first()
    if row is None:
        raise RegistryError(f"No model version {model_name}:{version}.", code="registry.not_found",
                            hint="Run 'ambidex models list' to see registered models.")
    run_id = row.get("run_id")
    run = None
    if run_id and insp.has_table("runs"):
        runs = sa.Table("runs", md, autoload_with=engine)
        with engine.connect() as conn:
            r = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        run = {k: (_iso(v) if isinstance(v, dt.datetime) else v) for k, v in dict(r).items()} if r else None
    return {"model": model_name, "version": vnum, "run_id": run_id, "run": run,
            "data_versions": run_inputs(engine, run_id) if run_id else []}


# --------------------------------------------------------------------------- list, show, diff

def list_marts(engine: sa.Engine) -> list[dict]:
    """Every mart with its load mode, latest version, current row count and last window."""
    out = []
    with engine.connect() as conn:
        for m in conn.execute(sa.select(fs_marts).order_by(fs_marts.c.name)).mappings():
            last = conn.execute(sa.select(data_versions).where(data_versions.c.mart == m["name"])
                                .order_by(data_versions.c.version.desc()).limit(1)).mappings().first()
            out.append({"mart": m["name"], "load": m["load"], "versions": m["last_version"],
                        "last_window": f"{_iso(last['window_start'])}/{_iso(last['window_end'])}" if last and last["window_start"] else None,
                        "last_rows": last["row_count"] if last else 0, "updated_at": _iso(m["updated_at"])})
    return out


def list_data_versions(engine: sa.Engine, mart: str) -> list[dict]:
    """All data versions of a mart, oldest first."""
    _get_mart(engine, mart)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(data_versions).where(data_versions.c.mart == mart)
                            .order_by(data_versions.c.version)).mappings().all()
    return [_dv_dict(r) for r in rows]


def _dv_row(conn, mart: str, version: int | None):
    q = sa.select(data_versions).where(data_versions.c.mart == mart)
    q = q.where(data_versions.c.version == version) if version is not None else q.order_by(data_versions.c.version.desc()).limit(1)
    r = conn.execute(q).mappings().first()
    if r is None:
        raise DataError(f"No data version {mart}@{version}.", code="data.not_found",
                        hint=f"Run 'ambidex data show {mart}' to see its versions.")
    return r


def show_data_version(engine: sa.Engine, mart: str, version: int | None = None, top_levels: int = 10) -> dict:
    """One data version (the latest by default) with its schema and per-column profile."""
    _get_mart(engine, mart)
    with engine.connect() as conn:
        r = _dv_row(conn, mart, version)
        stats = conn.execute(sa.select(fs_col_stats).where(fs_col_stats.c.data_version_id == r["id"])
                             .order_by(fs_col_stats.c.column_name)).mappings().all()
        lv = conn.execute(sa.select(fs_cat_levels).where(fs_cat_levels.c.data_version_id == r["id"])).mappings().all()
    levels: dict[str, list] = {}
    for x in sorted(lv, key=lambda x: (-x["cnt"], x["level"])):
        levels.setdefault(x["column_name"], []).append({"level": x["level"], "count": x["cnt"]})
    cols = []
    for s in stats:
        d = {k: s[k] for k in ("column_name", "kind", "ctype", "n", "n_missing", "min", "max", "median_exact")}
        valid = s["n"] - s["n_missing"]
        d["mean"] = s["sum"] / valid if s["sum"] is not None and valid else None
        if s["kind"] == "categorical":
            d["top_levels"] = levels.get(s["column_name"], [])[:top_levels]
        cols.append(d)
    return {**_dv_dict(r), "schema": json.loads(r["schema_json"]), "profile": cols}


def _psi(p: dict, q: dict) -> float | None:
    np_, nq = sum(p.values()), sum(q.values())
    if not np_ or not nq:
        return None
    total = 0.0
    for b in set(p) | set(q):
        pp, qq = max(p.get(b, 0) / np_, 1e-4), max(q.get(b, 0) / nq, 1e-4)
        total += (qq - pp) * np.log(qq / pp)
    return float(total)


def diff_data_versions(engine: sa.Engine, mart: str, v1: int, v2: int) -> dict:
    """Row counts, schema changes and per-column profile changes between two data versions of a mart."""
    _get_mart(engine, mart)
    with engine.connect() as conn:
        a, b = _dv_row(conn, mart, v1), _dv_row(conn, mart, v2)

        def prof(dv_id):
            st = {s["column_name"]: dict(s) for s in conn.execute(sa.select(fs_col_stats).where(fs_col_stats.c.data_version_id == dv_id)).mappings()}
            bins: dict[str, dict] = {}
            for x in conn.execute(sa.select(fs_num_bins).where(fs_num_bins.c.data_version_id == dv_id)).mappings():
                bins.setdefault(x["column_name"], {})[x["bin_idx"]] = x["cnt"]
            for x in conn.execute(sa.select(fs_cat_levels).where(fs_cat_levels.c.data_version_id == dv_id)).mappings():
                bins.setdefault(x["column_name"], {})[x["level"]] = x["cnt"]
            return st, bins
        sa_, ba = prof(a["id"])
        sb, bb = prof(b["id"])
    ca, cb = json.loads(a["schema_json"])["columns"], json.loads(b["schema_json"])["columns"]
    schema = {"added": sorted(set(cb) - set(ca)), "removed": sorted(set(ca) - set(cb)),
              "retyped": sorted(c for c in set(ca) & set(cb) if ca[c]["type"] != cb[c]["type"]),
              "levels_added": {c: [x for x in cb[c].get("levels", []) if x not in ca[c].get("levels", [])]
                               for c in set(ca) & set(cb) if cb[c]["type"] == "category"
                               and set(cb[c].get("levels", [])) - set(ca[c].get("levels", []))}}
    cols = []
    for c in sorted(set(sa_) & set(sb)):
        x, y = sa_[c], sb[c]

        def mean(s):
            valid = s["n"] - s["n_missing"]
            return s["sum"] / valid if s["sum"] is not None and valid else None

        def rate(s):
            return s["n_missing"] / s["n"] if s["n"] else None
        d = {"column": c, "kind": y["kind"], "n": [x["n"], y["n"]], "missing_rate": [rate(x), rate(y)],
             "psi": _psi(ba.get(c, {}), bb.get(c, {}))}
        if y["kind"] == "numeric":
            d.update(mean=[mean(x), mean(y)], median=[x["median_exact"], y["median_exact"]],
                     min=[x["min"], y["min"]], max=[x["max"], y["max"]])
        cols.append(d)
    return {"mart": mart, "from": _dv_dict(a), "to": _dv_dict(b),
            "row_count": {"from": a["row_count"], "to": b["row_count"], "delta": b["row_count"] - a["row_count"]},
            "schema": schema, "columns": cols}


# --------------------------------------------------------------------------- the churn example

def prepare_churn(df, as_of: str = "2024-12-01"):
    """Turn modeldata's ``wa_churn`` (no id, no date) into a mart frame with ``customer_id`` and ``signup_month``.

    ``customer_id`` is the 1-based row number; ``signup_month`` is the first of the month
    ``tenure`` months before ``as_of`` (UTC), so monthly windows are signup cohorts.

    >>> import pandas as pd
    >>> prepare_churn(pd.DataFrame({"tenure": [0, 13]}))["signup_month"].dt.strftime("%Y-%m").tolist()
    ['2024-12', '2023-11']
    """
    import pandas as pd

    out = df.copy()
    out.insert(0, "customer_id", np.arange(1, len(out) + 1, dtype=np.int64))
    base = pd.Period(as_of[:7], freq="M")
    tenure = pd.to_numeric(out["tenure"]).astype("Int64")
    months = [(base - int(t)).to_timestamp().tz_localize("UTC") if t is not pd.NA else pd.NaT for t in tenure]
    out.insert(1, "signup_month", pd.to_datetime(pd.Series(months, dtype=object), utc=True).astype("datetime64[ns, UTC]"))
    return out
