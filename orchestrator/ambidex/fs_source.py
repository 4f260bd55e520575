"""fs_source: read a mart's source (CSV, Parquet, SQL query, or a table given in memory) into an Arrow table."""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ambidex.errors import DataError
from ambidex.fs_bind import _bind_values, _typed_text, check_transform_sql
from ambidex.fs_spec import MartSpec, SourceSpec, Window


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
    table = _read_csv_parts(p, conv)
    if table is not None:
        return table
    try:
        # One thread on purpose: with newlines_in_values (required, or a quoted value spanning lines at an
        # Arrow block boundary is silently split into two rows) the threaded reader lexes the file serially
        # and then parses it again, which measured 1.5-2.5x slower than one thread here. One thread also
        # numbers the rows, so a malformed one is reported without a re-read.
        return pcsv.read_csv(p, read_options=pcsv.ReadOptions(use_threads=False),
                             parse_options=pcsv.ParseOptions(invalid_row_handler=on_bad, newlines_in_values=True),
                             convert_options=conv)
    except pa.ArrowInvalid as e:
        if bad:
            row = bad[0]
            line = row.number if row.number is not None else "?"
            raise DataError(f"Malformed CSV row in {path} at line {line}: expected {row.expected_columns} columns, "
                            f"got {row.actual_columns}.", code="data.invalid_csv",
                            hint="Fix or remove that row; nothing was loaded.", file=str(path), line=line) from None
        raise _locate_conversion_error(p, str(e)) from None


_PARALLEL_MIN_BYTES = 32 << 20  # below this, one thread reads a CSV about as fast as two


def _read_csv_parts(p: Path, conv, parts: int | None = None) -> pa.Table | None:
    """Read a large CSV as one part per core, each by one thread; None when the parts cannot be proven to
    give exactly the rows of one serial read (the caller then reads it serially, which also numbers a bad row).

    Arrow's own threaded reader cannot split a file whose quoted values may hold newlines without lexing
    all of it serially first, so the file is cut here at newlines after equal shares of its bytes. Part k
    is read with the header's names and the same options. A cut is a row boundary exactly when the serial
    reader is outside a quoted value there; part k-1, read from the same state as the serial reader, shows
    which: had the cut fallen inside a quoted value, that value runs to the part's end, so the part either
    fails (a short row, or text in a typed column) or ends with a text value ending in the cut's newline.
    Either way, as on any parse error or when the parts infer different types, None is returned.
    """
    import numpy as np
    import pyarrow.csv as pcsv

    if parts is None:
        try:
            parts = min(len(os.sched_getaffinity(0)), 4)
        except AttributeError:  # pragma: no cover - not on Linux
            parts = min(os.cpu_count() or 1, 4)
    size = p.stat().st_size
    if parts < 2 or size < _PARALLEL_MIN_BYTES:
        return None
    popts = pcsv.ParseOptions(newlines_in_values=True)
    with pa.memory_map(str(p)) as mm:
        buf = mm.read_buffer()
        data = np.frombuffer(buf, dtype=np.uint8)
        cuts = [0]
        for k in range(1, parts):
            at = k * size // parts
            nl = np.flatnonzero(data[at:at + (1 << 20)] == 10)
            if not len(nl) or at + nl[0] + 1 >= size or at + nl[0] + 1 <= cuts[-1]:
                return None
            cuts.append(at + int(nl[0]) + 1)
        cuts.append(size)
        try:
            head = pcsv.open_csv(pa.BufferReader(buf), read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 16),
                                 parse_options=popts, convert_options=conv)
            names = head.schema.names
            head.close()

            def read(k: int) -> pa.Table:
                ro = pcsv.ReadOptions(use_threads=False, column_names=names if k else None)
                return pcsv.read_csv(pa.BufferReader(buf.slice(cuts[k], cuts[k + 1] - cuts[k])), read_options=ro,
                                     parse_options=popts, convert_options=conv)

            with ThreadPoolExecutor(parts - 1) as pool:
                rest = [pool.submit(read, k) for k in range(1, parts)]
                tables = [read(0)] + [f.result() for f in rest]
        except pa.ArrowException:
            return None
    for k, t in enumerate(tables):
        if not t.schema.equals(tables[0].schema) or t.num_columns != len(names):
            return None
        if k < parts - 1:
            last = t.column(t.num_columns - 1)
            if not t.num_rows or (pa.types.is_string(last.type) or pa.types.is_large_string(last.type)) and (
                    (v := last[t.num_rows - 1].as_py()) is not None and v.endswith(("\n", "\r"))):
                return None
    return pa.concat_tables(tables)


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


def table_from_memory(table) -> pa.Table:
    """An in-memory source as an Arrow table with its types kept (pandas categoricals become dictionaries,
    nullable ``Int64`` stays int64 with nulls, ``datetime64[ns, UTC]`` stays a UTC timestamp)."""
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        if not all(isinstance(c, str) for c in table.columns):
            bad = next(c for c in table.columns if not isinstance(c, str))
            raise DataError(f"Table column name {bad!r} is not a string.", code="data.invalid_identifier",
                            hint="Name every column with a string (e.g. df.columns = [...]).", column=str(bad))
        try:
            return pa.Table.from_pandas(table, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"Cannot convert the DataFrame to Arrow: {e}", code="data.schema_mismatch",
                            hint="Give each column one type (object columns must hold only text or only numbers).") from None
    raise DataError(f"table= must be a pyarrow.Table or a pandas.DataFrame, got {type(table).__name__}.",
                    code="data.source_invalid", hint="Read the data first, e.g. with ambidex_stage.tables.read_table.")


def describe_table(table: pa.Table, given) -> str:
    """The data version's source text for an in-memory table."""
    kind = "pandas.DataFrame" if type(given).__name__ == "DataFrame" else "pyarrow.Table"
    return f"table:{kind} ({table.num_rows} rows x {table.num_columns} columns, given in memory)"


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
