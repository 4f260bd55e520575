"""fs_source: read a mart's source (CSV, Parquet, SQL query, or a table given in memory) into an Arrow table."""
from __future__ import annotations

import os
import re
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
