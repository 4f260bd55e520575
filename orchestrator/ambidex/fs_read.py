"""fs_read: point-in-time reads of marts and transforms as typed DataFrames, and typed CSV exports for R."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from ambidex.errors import DataError
from ambidex.fs_bind import _bind_values, _typed_text, check_transform_sql
from ambidex.fs_catalog import record_inputs
from ambidex.fs_mart import _connect, _dv_ids, _get_mart, _mart_tables
from ambidex.fs_spec import UTC, MartSpec, Window, _iso, parse_window
from ambidex.fstables import data_versions, fs_marts
from ambidex.sqlident import reflect_table, require_columns, validate_identifiers
from ambidex.tables import UTCDateTime


def _resolve_rows(conn, spec: MartSpec, schema: dict, mart_row: dict, window: Window | None, version: int | None,
                  as_of: dt.datetime | None, columns: list[str]) -> sa.Select:
    main, hist = _mart_tables(spec, schema)
    reflected = reflect_table(conn, spec.name)
    if reflected is None:
        raise DataError(f"Mart table {spec.name!r} is missing.", code="data.not_found", hint="Re-ingest the mart.")
    require_columns(reflected, columns)
    out_cols = columns + ["_dv"]
    stamps = {c for c in columns if schema["columns"][c]["type"] == "timestamp"}

    def out(t: sa.Table) -> list:
        # timestamps come back as the driver gives them, parsed column-wise by _frame, not one by one
        return [sa.type_coerce(t.c[c], sa.types.NullType()).label(c) if c in stamps else t.c[c] for c in out_cols]

    def both(cond_main, cond_hist):
        a = sa.select(*out(main)).where(cond_main)
        b = sa.select(*out(hist)).where(cond_hist)
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
        return sa.select(*out(main)).where(sa.and_(sa.true(), *conds_m))
    x = conn.execute(sa.select(sa.func.max(data_versions.c.version)).where(
        data_versions.c.mart == spec.name, data_versions.c.created_at <= as_of)).scalar() or 0
    return both(sa.and_(main.c._dv <= x, *conds_m),
                sa.and_(hist.c._dv <= x, hist.c._replaced_by > x, *conds_h))


_NONE = type(None)


def _first_not(vals, kinds: tuple) -> object:
    return next(v for v in vals if v is not None and not isinstance(v, kinds))


def _frame(columns: list[str], values: list, schema: dict, source: str):
    """Build a DataFrame with the contract's pandas dtypes; fail naming the column if a value does not fit.

    Each column is converted whole (numpy, pandas), never value by value in Python: a window of a
    million rows reads in a second, not ten.
    """
    import pandas as pd

    data = {}
    for name, vals in zip(columns, values):
        e = schema["columns"][name]
        t = e["type"]
        try:
            if t == "integer":
                kinds = set(map(type, vals))
                if kinds - {int, _NONE}:
                    raise ValueError(f"non-integer value {next(v for v in vals if type(v) not in (int, _NONE))!r}")
                data[name] = (pd.array(list(vals), dtype="Int64") if _NONE in kinds
                              else np.array(vals, dtype=np.int64))
            elif t == "double":
                data[name] = np.array(vals, dtype=np.float64)  # None -> NaN
            elif t == "boolean":
                has_none = None in vals
                if set(map(type, vals)) - {bool, int, _NONE}:
                    raise ValueError(f"non-boolean value {_first_not(vals, (bool, int))!r}")
                data[name] = (pd.array([None if v is None else bool(v) for v in vals], dtype="boolean") if has_none
                              else np.array(vals, dtype=bool))
            elif t == "timestamp":
                # text (SQLite), naive UTC (MariaDB) or aware (PostgreSQL) values, parsed in one call
                s = pd.to_datetime(pd.Series(vals, dtype=object), utc=True, format="ISO8601")
                data[name] = s.astype("datetime64[ns, UTC]")
            elif t == "category":
                levels = e.get("levels") or []
                # -1: missing or not a level (checked here, before pandas would warn about it)
                codes = pd.Index(levels, dtype=object).get_indexer(pd.Index(vals, dtype=object))
                if int((codes == -1).sum()) > vals.count(None):
                    lost = next(v for v, code in zip(vals, codes) if v is not None and code == -1)
                    raise ValueError(f"value {lost!r} is not one of its levels")
                data[name] = pd.Categorical.from_codes(codes, categories=levels)
            else:
                if set(map(type, vals)) - {str, _NONE}:
                    raise ValueError("non-text value")
                data[name] = pd.array(list(vals), dtype="str")
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
    import pandas as pd

    cols, frames, dvs = _mart_frames(engine, name, window, version, as_of, columns, chunk=None)
    frames = list(frames)
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return _finish(engine, name, df, cols, _get_mart(engine, name)[2], dvs, run_id)


def _finish(engine, name: str, df, cols: list[str], schema: dict, dvs: set, run_id: str | None):
    ids = _dv_ids(engine, name, sorted(dvs))
    df.attrs["data_versions"] = ids
    df.attrs["schema"] = {"columns": {c: schema["columns"][c] for c in cols}}
    if run_id is not None and ids:
        record_inputs(engine, run_id, ids)
    return df


def _mart_frames(engine: sa.Engine, name: str, window: Window | None, version: int | None, as_of: dt.datetime | None,
                 columns: list[str] | None, *, chunk: int | None):
    """``(columns, frames, data_version_numbers)``: the mart's rows valid at ``window`` in canonical order, as
    DataFrames of ``chunk`` rows (one frame if None), made as they are iterated; the set of ``_dv`` values
    read fills up meanwhile."""
    mart_row, spec, schema = _get_mart(engine, name)
    cols = columns or list(schema["columns"])
    dvs: set = set()

    def frames():
        with _connect(engine) as conn:
            stmt = _resolve_rows(conn, spec, schema, mart_row, window, version, as_of, cols)
            order = [k for k in spec.key if k in cols] or ([spec.time_column] if spec.time_column in cols else [])
            if order:  # a stable, canonical row order on every backend
                stmt = stmt.order_by(*[sa.column(sa.sql.quoted_name(k, True)) for k in order])
            result = conn.execute(stmt)
            # the driver's tuples as they are: the selected types need no result processing (timestamps are
            # parsed by _frame, booleans may come as 0/1), so SQLAlchemy's Row objects would only cost time
            cur = result.cursor
            fetch = (cur.fetchall if chunk is None else lambda: cur.fetchmany(chunk)) if cur is not None \
                else (result.all if chunk is None else lambda: result.fetchmany(chunk))
            first = True
            while True:
                rows = fetch()
                if not rows and not first:
                    return
                values = list(zip(*rows)) if rows else [() for _ in range(len(cols) + 1)]
                dvs.update(values[-1])
                yield _frame(cols, values[:-1], schema, f"mart {name!r}")
                first = False
                if chunk is None:
                    return
    return cols, frames(), dvs


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
    with _connect(engine) as conn:
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
        with _connect(engine) as conn:
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


def window_schema(engine: sa.Engine, name: str, columns: list[str] | None = None) -> dict:
    """The schema sidecar (without its row count) that ``export_window_for_r`` writes for mart ``name``: known
    before any row is read, for readers that start on the rows while they are exported."""
    _, spec, schema = _get_mart(engine, name)
    return _schema_sidecar(columns or list(schema["columns"]), schema, spec.key)


def _schema_sidecar(columns, schema: dict, key: list[str] = (), rows: int = 0) -> dict:
    cols = []
    for c in columns:
        e = schema["columns"][c]
        entry = {"name": c, "type": e["type"], "nullable": c not in key}
        if e["type"] == "category":
            entry["levels"] = list(e.get("levels") or [])
        cols.append(entry)
    return {"contract_version": 1, "row_count": int(rows), "columns": cols}


_EXPORT_CHUNK = 25_000


def export_window_for_r(engine: sa.Engine, name: str, window: Window | str | None, csv_path: str | Path, *,
                        on_chunk=None, **kw) -> dict:
    """Write the rows of ``read_window(engine, name, window, **kw)`` as a typed CSV plus ``<name>.schema.json``.

    Returns the schema sidecar (contract/SPEC.md section 3) with ``data_versions`` added. A mart's
    rows stream from the database to the file in chunks (memory holds one chunk, and reading the
    next chunk overlaps formatting this one); a transform's result is written whole. ``on_chunk``
    receives each chunk as a CSV of its own while the file is written (``write_table_chunks``), for a
    reader that starts before the end (``scoring.InputFeed``).
    """
    from ambidex_stage.tables import prefetch, write_table, write_table_chunks  # the contract's one Python writer

    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    window = parse_window(window)
    if str(name).endswith(".sql"):
        df = read_window(engine, name, window, **kw)
        written = write_table(df, csv_path, schema=_schema_sidecar(df.columns, df.attrs["schema"], (), len(df)))
        if on_chunk is not None:
            on_chunk(csv_path.read_bytes(), len(df))
        return {**written, "data_versions": df.attrs["data_versions"]}
    run_id = kw.pop("run_id", None)
    kw.pop("params", None)
    _, spec, schema = _get_mart(engine, name)
    cols, frames, dvs = _mart_frames(engine, name, window, kw.get("version"), kw.get("as_of"), kw.get("columns"),
                                     chunk=_EXPORT_CHUNK)
    chunks = prefetch(frames)
    try:
        written = write_table_chunks(chunks, csv_path, _schema_sidecar(cols, schema, spec.key), on_chunk=on_chunk)
    finally:
        chunks.close()  # on a failure too: its thread and the cursor's connection end now, not at collection
    ids = _dv_ids(engine, name, sorted(dvs))
    if run_id is not None and ids:
        record_inputs(engine, run_id, ids)
    return {**written, "data_versions": ids}

