"""fs_load: one load (full, window or watermark) of a mart as one transaction, recording its data version."""
from __future__ import annotations

import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ambidex import profiling
from ambidex.errors import DataError, RegistryError
from ambidex.fs_conform import _check_key, _conform, content_hash
from ambidex.fs_insert import _insert_rows
from ambidex.fs_mart import _connect, _load_mart_row, _mart_tables
from ambidex.fs_profiles import _write_profiles, load_grids
from ambidex.fs_source import _read_source, describe_table, table_from_memory
from ambidex.fs_spec import RESERVED, UTC, LoadResult, MartSpec, SourceSpec, Window, _err, _jsonable, parse_window
from ambidex.fstables import data_versions, fs_marts
from ambidex.sqlident import quote_identifier, reflect_table, validate_identifiers

log = logging.getLogger(__name__)


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


def ingest(engine: sa.Engine, spec: MartSpec, *, source: SourceSpec | None = None, table=None,
           window: Window | str | None = None, run_id: str | None = None, dry_run: bool = False,
           progress: Callable[[int, int], None] | None = None, clock: Callable[[], dt.datetime] | None = None) -> LoadResult:
    """Load one source into mart ``spec.name`` as one transaction and record a data version.

    The rows come from ``source`` (else ``spec.source``), or from ``table``: a ``pyarrow.Table`` or
    ``pandas.DataFrame`` already in memory (e.g. read with ``ambidex_stage.tables.read_table``), whose
    types are kept (categoricals and their level order, nullable ``Int64``, UTC timestamps) and which
    goes through the same validation, hashing, profiling and versioning as a file.

    >>> ingest(engine, MartSpec(name="sales", source={"kind": "csv", "path": "sales.csv"}, key=["id"],
    ...        time_column="ts", load="incremental"), window="2024-01-01/2024-02-01")  # doctest: +SKIP
    >>> ingest(engine, MartSpec(name="churn", key=["customer_id"]), table=df)  # doctest: +SKIP
    """
    now = (clock or (lambda: dt.datetime.now(UTC)))()
    window = parse_window(window)
    if table is not None and source is not None:
        raise DataError("Both source= and table= were given to ingest.", code="data.source_invalid",
                        hint="Pass one of them: a SourceSpec to read, or a table already in memory.")
    src = source or spec.source
    if table is None and src is None:
        raise DataError(f"Mart {spec.name!r} has no source.", code="data.source_missing",
                        hint="Give a source in the mart's config or on the command line (--source FILE).")
    mode = spec.mode
    if mode == "window" and window is None:
        raise DataError(f"Mart {spec.name!r} loads by window, but no window was given.", code="data.window_invalid",
                        hint="Pass --window START/END, e.g. 2024-01-01/2024-02-01.")
    if table is not None:
        raw = table_from_memory(table)
        described = describe_table(raw, table)
    else:
        raw = _read_source(spec, src, window)
        described = src.describe()
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
    order = _check_key(table, spec.key, described.split(" (")[0])
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
        _write(engine, spec, mode, mart_row, main, hist, table, schema, changes, window, described, summary, run_id,
               now, wm_from, wm_to, result, progress)
    return result


def _ddl(conn, spec: MartSpec, mart_row, main: sa.Table, hist: sa.Table, changes: list[dict],
         defer_indexes: bool = False) -> tuple[Callable[[], None], list[sa.Index]]:
    """Create the mart's tables or add evolved columns.

    Returns an undo (for backends without transactional DDL) and the indexes of a new mart
    table left to create after the bulk insert (``defer_indexes``): building an index once
    over the loaded rows is faster than maintaining it row by row, and a new table has no
    rows that a new key could collide with (keys are unique within a load).
    """
    undo: list[Callable] = []
    deferred: list[sa.Index] = []
    insp = sa.inspect(conn)
    if mart_row is None:
        taken = [t.name for t in (main, hist) if insp.has_table(t.name)]
        if taken:
            raise _err(f"Mart {spec.name!r} would use table {taken[0]!r}, which already exists and is not a mart.",
                       "data.name_taken", "Choose another mart name; the feature store never writes into foreign tables.",
                       table=taken[0])
    if mart_row is None or not insp.has_table(main.name):
        if defer_indexes:
            conn.execute(sa.schema.CreateTable(main))
            hist.create(conn)
            deferred = list(main.indexes)
        else:
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
    return run_undo, deferred


class _KeyConflict(Exception):
    """The insert hit the mart's unique key: a row of this load repeats a key the mart already holds."""


def _write(engine, spec, mode, mart_row, main, hist, table, schema, changes, window, described, summary, run_id, now,
           wm_from, wm_to, result, progress) -> None:
    nontx_ddl = engine.dialect.name in ("mysql", "mariadb")  # DDL commits implicitly there
    undo = None
    if nontx_ddl:
        with engine.connect() as c:
            undo, _ = _ddl(c, spec, mart_row, main, hist, changes)
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
            deferred: list[sa.Index] = []
            if not nontx_ddl:
                _, deferred = _ddl(conn, spec, mart_row, main, hist, changes, defer_indexes=True)
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
            try:
                _insert_rows(conn, main, table, schema, version, progress)
            except (sa.exc.IntegrityError, conn.dialect.loaded_dbapi.IntegrityError) as e:
                if not spec.key:
                    raise
                raise _KeyConflict(str(e)) from e
            for ix in deferred:
                ix.create(conn)
            digest, profiles, new_grids = summary.result()
            result.content_hash = digest
            dv_id = conn.execute(sa.insert(data_versions).values(
                mart=spec.name, version=version, load=mode,
                window_start=window.start if window else None, window_end=window.end if window else None,
                row_count=table.num_rows, schema_json=json.dumps(schema), source=described, content_hash=digest,
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
    except Exception as e:
        # look the colliding key up before undoing DDL, which may drop the table on MariaDB/MySQL
        error = _existing_key_error(engine, spec, main, table, mode, e) if isinstance(e, _KeyConflict) else None
        if undo is not None:
            try:
                undo()
            except Exception:  # pragma: no cover - reported with the original error
                log.exception("could not undo DDL for mart %s", spec.name)
        if error is not None:
            raise error from None
        raise
    result.version, result.data_version_id, result.replaced_rows = version, dv_id, max(replaced, 0)


def _existing_key_error(engine, spec: MartSpec, main: sa.Table, table: pa.Table, mode: str, e: Exception) -> DataError:
    """After a rolled-back insert hit the unique key: find a sample key of this load that the mart already holds.

    Loads append (watermark) or replace exactly their window (window), so a key that is
    current outside what this load replaces is refused rather than silently overwritten.
    """
    key_cols = [main.c[k] for k in spec.key]
    sample = None
    with engine.connect() as conn:
        for batch in table.select(spec.key).to_batches(max_chunksize=500):
            vals = [(pc.cast(c, pa.string()) if pa.types.is_dictionary(c.type) else c).to_pylist() for c in batch.columns]
            cond = key_cols[0].in_(vals[0]) if len(key_cols) == 1 else sa.tuple_(*key_cols).in_(list(zip(*vals)))
            row = conn.execute(sa.select(*key_cols, main.c._dv).where(cond).limit(1)).first()
            if row is not None:
                sample = ({k: _jsonable(v) for k, v in zip(spec.key, row[:-1])}, row[-1])
                break
    if sample is None:  # not a key collision after all (another constraint): show the database's words
        return DataError(f"The database refused the rows of this load into mart {spec.name!r}: {str(e).splitlines()[0]}",
                        code="data.integrity", hint="Nothing was loaded; check the mart's table for foreign changes.")
    key, dv = sample
    what = {"watermark": "A watermark load only appends new keys",
            "window": "A window load replaces only the rows inside its window"}.get(mode, "Keys must be unique in a mart")
    return DataError(f"Key {key} of this load already exists in mart {spec.name!r} (loaded by version {dv}).",
                     code="data.duplicate_key",
                     hint=f"{what}; nothing was loaded. Drop the rows whose keys the mart already holds from the "
                          "source, or load the mart with load: full (or by a window that covers the old rows) to replace them.",
                     key=key, mart=spec.name, existing_version=dv)
