"""fs_insert: bulk-insert a conformed Arrow table into a mart table, the fastest way each backend allows."""
from __future__ import annotations

import itertools
import sqlite3

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ambidex.fs_spec import _err
from ambidex.sqlident import quote_identifier
from ambidex_stage.tables import timestamp_text

_CHUNK = 100_000
_ROWS_PER_STATEMENT = 50  # rows per INSERT statement on SQLite (bounded by its variable limit)


def _py_values(arr: pa.Array, ctype: str | None, nan_is_null: bool):
    """One column of a batch as Python values for a DB-API driver (a list or an object ndarray), with as
    few conversions as possible."""
    if ctype == "timestamp":
        return timestamp_text(arr).to_pylist()  # 'YYYY-MM-DD HH:MM:SS.ffffff' for us units
    if pa.types.is_dictionary(arr.type):
        # one str object per level, shared by every row: cheaper than casting and building a str per row
        levels = np.array(arr.dictionary.to_pylist() + [None], dtype=object)
        codes = pc.fill_null(arr.indices, len(levels) - 1).to_numpy(zero_copy_only=False)
        return levels[codes]
    if nan_is_null and ctype == "double" and arr.null_count:
        arr = pc.fill_null(arr, np.nan)  # sqlite stores a bound NaN as NULL, and conformed doubles hold no NaN
    if arr.null_count == 0 and (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type)):
        return arr.to_numpy(zero_copy_only=False).tolist()
    return arr.to_pylist()


def _row_batches(table: pa.Table, schema: dict, version: int, step: int, nan_is_null: bool):
    """Yield (n, rows) per batch; rows is an iterator of tuples (plus the version), built lazily by zip."""
    types = [schema["columns"].get(n, {}).get("type") for n in table.column_names]
    for batch in table.to_batches(max_chunksize=step):
        cols = [_py_values(batch.column(i), t, nan_is_null) for i, t in enumerate(types)]
        yield batch.num_rows, zip(*cols, itertools.repeat(version, batch.num_rows))


def _matrix_column(arr: pa.Array, ctype: str | None):
    """One column as a numpy array to assign into an object matrix (numpy makes Python floats, ints, bools
    and strs of it there); missing values become None, doubles' NaN as well (sqlite stores a NaN as NULL)."""
    if ctype == "timestamp":
        arr = timestamp_text(arr)  # 'YYYY-MM-DD HH:MM:SS.ffffff' for us units
    if pa.types.is_dictionary(arr.type):
        # one str object per level, shared by every row: cheaper than casting and building a str per row
        levels = np.array(arr.dictionary.to_pylist() + [None], dtype=object)
        return levels[pc.fill_null(arr.indices, len(levels) - 1).to_numpy(zero_copy_only=False)]
    if arr.null_count and (pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type)):
        out = pc.fill_null(arr, pa.scalar(0, arr.type) if pa.types.is_integer(arr.type) else False)
        out = out.to_numpy(zero_copy_only=False).astype(object)
        out[pc.is_null(arr).to_numpy(zero_copy_only=False)] = None
        return out
    return arr.to_numpy(zero_copy_only=False)  # floats keep NaN for missing; text comes as str or None


def _multirow_batches(table: pa.Table, schema: dict, step: int, per: int):
    """Yield (n, params, tail) per batch for an ``INSERT .. VALUES (..), (..), ..`` of ``per`` rows.

    ``params`` holds one flat list of ``per`` rows' values per statement, ``tail`` the rows that
    do not fill a last statement (one tuple each). One statement per ``per`` rows spares SQLite a
    reset and the driver a loop turn per row: the insert takes about half as long as
    ``executemany`` of one row per statement. The values are filled into one object matrix and cut
    into statements by a reshape, so no tuple is built per row. The version is not among them: the
    statement holds it as a literal, one bound value fewer per row.
    """
    types = [schema["columns"].get(n, {}).get("type") for n in table.column_names]
    width = table.num_columns
    for batch in table.to_batches(max_chunksize=step):
        n = batch.num_rows
        m = np.empty((n, width), dtype=object)
        for i, t in enumerate(types):
            m[:, i] = _matrix_column(batch.column(i), t)
        full = n - n % per
        yield n, m[:full].reshape(-1, per * width).tolist(), m[full:].tolist()


def _insert_rows(conn, main: sa.Table, table: pa.Table, schema: dict, version: int, progress) -> None:
    """Insert ``table`` with ``_dv = version`` into ``main`` on the transaction of ``conn``."""
    dialect = conn.dialect.name
    names = table.column_names + ["_dv"]
    total, done = table.num_rows, 0
    q = [quote_identifier(conn.dialect, n) for n in names]
    tname = quote_identifier(conn.dialect, main.name)
    raw = conn.connection.driver_connection
    if dialect == "postgresql":
        import pyarrow.csv as pcsv

        table = table.append_column("_dv", pa.array(np.full(table.num_rows, version, dtype=np.int64)))
        with raw.cursor() as cur, cur.copy(f"COPY {tname} ({', '.join(q)}) FROM STDIN (FORMAT csv)") as cp:
            for batch in table.to_batches(max_chunksize=_CHUNK):
                cols = [pc.cast(c, pa.string()) if pa.types.is_dictionary(c.type) else c for c in batch.columns]
                buf = pa.BufferOutputStream()
                pcsv.write_csv(pa.RecordBatch.from_arrays(cols, names=names), buf,
                               pcsv.WriteOptions(include_header=False, quoting_style="needed"))
                cp.write(memoryview(buf.getvalue()))
                done += batch.num_rows
                progress and progress(done, total)
        return
    if dialect in ("mysql", "mariadb"):
        for c, e in schema["columns"].items():
            if e["type"] == "double" and pc.any(pc.is_inf(table.column(c))).as_py():
                raise _err(f"Column {c!r} holds infinite values, which MariaDB/MySQL cannot store.", "data.unsupported_value",
                           "Replace them in the source or use another database.", column=c)
        sql = f"INSERT INTO {tname} ({', '.join(q)}) VALUES ({', '.join(['%s'] * len(q))})"
        step, nan_is_null = 10_000, False
    elif dialect == "sqlite":
        one = f"({', '.join(['?'] * (len(q) - 1))}, {int(version)})"  # the version is ours, an int: a literal
        limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(raw, "getlimit") else 999
        per = max(1, min(_ROWS_PER_STATEMENT, limit // len(q)))
        head = f"INSERT INTO {tname} ({', '.join(q)}) VALUES "
        cur = raw.cursor()
        try:
            for n, params, tail in _multirow_batches(table, schema, _CHUNK, per):
                cur.executemany(head + ", ".join([one] * per), params)
                if tail:
                    cur.executemany(head + one, tail)
                done += n
                progress and progress(done, total)
        finally:
            cur.close()
        return
    else:
        table = table.append_column("_dv", pa.array(np.full(table.num_rows, version, dtype=np.int64)))
        for batch in table.to_batches(max_chunksize=10_000):
            rows = pa.Table.from_batches([batch]).to_pylist()
            conn.execute(sa.insert(main), rows)
            done += batch.num_rows
            progress and progress(done, total)
        return
    cur = raw.cursor()
    try:
        for n, rows in _row_batches(table, schema, version, step, nan_is_null):
            cur.executemany(sql, rows)
            done += n
            progress and progress(done, total)
    finally:
        cur.close()
