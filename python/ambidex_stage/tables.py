"""tables: read and write typed tables, a CSV plus its ``.schema.json`` sidecar, exactly as contract/SPEC.md section 3.

Bytes written (one canonical form; readers also accept any RFC 4180 quoting):

- UTF-8, no BOM, ``,`` separator, ``\\n`` line ends, header row with the names in schema order
  (a name is quoted only when it holds ``,``, ``"``, ``\\r`` or ``\\n``).
- missing (any type): an empty unquoted field. string and category text: always quoted, ``"``
  doubled, so the empty string is ``""`` and the text ``NA`` is ``"NA"``.
- integer: decimal digits with optional ``-``. boolean: ``true`` / ``false``.
- double: the shortest decimal that round-trips bit-exactly (Arrow's shortest formatting, e.g.
  ``0.1``, ``1e+300``, ``5e-324``, ``-0``); ``Inf`` / ``-Inf``; NaN is missing in pandas, so it is
  written as an empty field.
- timestamp: ``YYYY-MM-DDTHH:MM:SSZ``, with ``.ffffff`` (6 digits) only when the microseconds are
  not zero; sub-microsecond values are refused.

Reading: unquoted empty -> missing; quoted ``""`` -> empty string. Header != schema names, a value
that does not parse as its type, a wrong field count or a row_count mismatch ->
``contract.invalid_table`` naming file, line (record number, header = line 1) and column. A
category label outside the levels is also ``contract.invalid_table`` (``contract.unseen_level`` is
reserved for scoring against a signature). Missing in a ``nullable: false`` column ->
``contract.type_mismatch``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from ._files import atomic_open
from .errors import ContractError
from .signature import coerce_to_signature, schema_from_frame
from .validate import validate_document

__all__ = ["read_table", "read_table_chunks", "write_table", "write_table_chunks", "read_schema", "sidecar_path", "schema_from_frame", "coerce_to_signature"]

_CHUNK_ROWS = 50_000
_TS_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$"
_HINT = "Rewrite the table with an ambidex SDK, or fix the CSV or its .schema.json (contract/SPEC.md section 3)."


def sidecar_path(csv_path) -> Path:
    """``data.csv`` -> ``data.schema.json`` (a path without ``.csv`` gets ``.schema.json`` appended)."""
    p = Path(csv_path)
    return p.with_name(p.name[:-4] + ".schema.json") if p.name.endswith(".csv") else p.with_name(p.name + ".schema.json")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def _check_schema(schema: dict, source) -> None:
    validate_document("table", schema, source=str(source))
    names = [c["name"] for c in schema["columns"]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ContractError(f"Table schema {source} names column(s) {dup} more than once.",
                            code="contract.invalid_document", hint=_HINT)
    for c in schema["columns"]:
        lv = c.get("levels") or []
        if c["type"] == "category" and len(set(lv)) != len(lv):
            raise ContractError(f"Table schema {source}: column {c['name']!r} repeats a level in {lv}.",
                                code="contract.invalid_document", hint=_HINT)


def read_schema(csv_path) -> dict:
    """Read and validate the sidecar schema of ``csv_path``."""
    sp = sidecar_path(csv_path)
    try:
        with open(sp, encoding="utf-8") as f:
            schema = json.load(f)
    except FileNotFoundError:
        raise ContractError(f"Table {csv_path} has no schema sidecar {sp}.", code="contract.invalid_table",
                            hint="Write tables with write_table(), which writes the sidecar beside the CSV.") from None
    except json.JSONDecodeError as e:
        raise ContractError(f"Schema sidecar {sp} is not JSON: {e}.", code="contract.invalid_document",
                            hint=_HINT) from None
    _check_schema(schema, sp)
    return schema


# ---------------------------------------------------------------- writing

def _quote_name(n: str) -> str:
    return '"' + n.replace('"', '""') + '"' if re.search(r'[,"\r\n]', n) or n == "" else n


def _quote_text(arr):
    import pyarrow as pa
    import pyarrow.compute as pc

    q = pa.scalar('"')
    return pc.binary_join_element_wise(q, pc.replace_substring(arr, '"', '""'), q, "")


def timestamp_text(arr, sep: str = " "):
    """``YYYY-MM-DD<sep>HH:MM:SS`` (plus ``.ffffff`` / ``.fffffffff`` for us / ns units) of a pyarrow
    timestamp array, naive or zoned (the UTC wall time); nulls stay null. Arrow's cast to string writes
    the same text as ``pc.strftime`` six times faster (strftime goes value by value through a time-zone
    library: 0.9 s per million timestamps here)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if arr.type.tz is not None:
        arr = arr.cast(pa.timestamp(arr.type.unit))
    out = pc.cast(arr, pa.string())
    return out if sep == " " else pc.utf8_replace_slice(out, 10, 11, sep)


def _field_text(s, col):
    """Field text of one canonical Series: a pyarrow string array, missing already ''."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col["type"]
    if t == "category":
        codes = s.cat.codes.to_numpy()
        levels = _quote_text(pa.array(list(col["levels"]), type=pa.string())) if col["levels"] else pa.array([], pa.string())
        out = levels.take(pa.array(codes, mask=codes < 0, type=pa.int32())) if len(levels) else pa.nulls(len(s), pa.string())
    elif t == "string":
        out = _quote_text(pa.array(s.to_numpy(dtype=object, na_value=None), type=pa.string(), from_pandas=True))
    elif t == "double":
        v = s.to_numpy(dtype=np.float64)
        a = pa.array(v, from_pandas=True)
        out = pc.cast(a, pa.string())
        inf = np.isinf(v)
        if inf.any():
            out = pc.if_else(pa.array(inf), pa.array(np.where(v > 0, "Inf", "-Inf")), out)
    elif t in ("integer", "boolean"):
        out = pc.cast(pa.array(s.to_numpy() if isinstance(s.dtype, np.dtype) else s.array, from_pandas=True), pa.string())
    elif t == "timestamp":
        ns = s.array.asi8 if hasattr(s.array, "asi8") else s.to_numpy().view(np.int64)
        miss = s.isna().to_numpy()
        if (ns[~miss] % 1000).any():
            raise ContractError(f"Column {col['name']!r} has sub-microsecond timestamps; the contract carries "
                                "microseconds.", code="contract.type_mismatch", column=col["name"],
                                hint=f"Round it: df[{col['name']!r}].dt.floor('us').")
        us = ns // 1000
        secs, frac = np.divmod(us, 1_000_000)
        base = timestamp_text(pa.array(secs.astype("datetime64[s]"), mask=miss), "T")
        fr = pc.utf8_lpad(pc.cast(pa.array(frac), pa.string()), 6, "0")
        fr = pc.if_else(pa.array(frac == 0), pa.scalar(""), pc.binary_join_element_wise(".", fr, ""))
        out = pc.binary_join_element_wise(base, fr, pa.scalar("Z"), "")
    else:  # pragma: no cover - schemas are validated first
        raise ContractError(f"Unknown type {t!r}.", code="contract.invalid_document")
    return pc.fill_null(out, "")


def _body_bytes(lines):
    import numpy as np

    offs = np.frombuffer(lines.buffers()[1], dtype=np.int64 if str(lines.type) == "large_string" else np.int32)
    start, end = int(offs[lines.offset]), int(offs[lines.offset + len(lines)])
    return lines.buffers()[2][start:end] if end > start else b""


def write_table(df, csv_path, schema: dict | None = None) -> dict:
    """Write ``df`` as ``csv_path`` plus its sidecar; returns the schema written.

    ``schema`` defaults to :func:`schema_from_frame`; when given, the frame is matched to it by
    column name and converted losslessly (``contract.type_mismatch`` otherwise). Both files are
    written to a temporary name and moved into place (CSV first, then the sidecar).

    >>> import pandas as pd, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> write_table(pd.DataFrame({"s": ["", None]}), os.path.join(d, "t.csv"))["row_count"]
    2
    >>> open(os.path.join(d, "t.csv"), "rb").read()
    b's\\n""\\n\\n'
    """
    path = Path(csv_path)
    df = df.set_axis([str(c) for c in df.columns], axis=1)
    if schema is None:
        schema = schema_from_frame(df)
    else:
        schema = {**schema, "contract_version": 1, "row_count": int(len(df))}
        _check_schema(schema, "(schema given to write_table)")
    cols = schema["columns"]
    df, extras = coerce_to_signature(df, cols)
    if extras:
        raise ContractError(f"write_table: the frame has columns {extras} that the schema does not declare.",
                            code="contract.invalid_table", hint="Drop them or add them to the schema.")
    canon = {c["name"]: df[c["name"]] for c in cols}
    n = len(df)
    with atomic_open(path) as f:
        f.write(_header_bytes(cols))
        _write_rows(f, canon, cols, n)
    _atomic_write_bytes(sidecar_path(path), (json.dumps(schema, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return schema


def _header_bytes(cols) -> bytes:
    return (",".join(_quote_name(c["name"]) for c in cols) + "\n").encode("utf-8")


def _write_rows(f, canon: dict, cols, n: int) -> None:
    """Append the records of canonical Series ``canon`` (``n`` rows) to binary file ``f``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for lo in range(0, n, _CHUNK_ROWS) if cols else ():
        fields = [_field_text(canon[c["name"]].iloc[lo:lo + _CHUNK_ROWS], c) for c in cols]
        line = pc.binary_join_element_wise(*fields, ",") if len(fields) > 1 else fields[0]
        lines = pc.binary_join_element_wise(line, pa.scalar(""), "\n")
        f.write(_body_bytes(lines))


def write_table_chunks(frames, csv_path, schema: dict, on_chunk=None) -> dict:
    """Write an iterable of DataFrames as one typed table ``csv_path`` plus sidecar; returns the schema.

    The streaming counterpart of :func:`write_table`: every frame is matched to ``schema`` by column
    name and converted as ``write_table`` does, and appended as it arrives, so memory holds one
    frame. The CSV goes to a temporary name and is moved into place (then the sidecar, with the
    final ``row_count``) only after the last frame: if the iterable raises, nothing is published.
    ``on_chunk(csv_bytes, rows)``, if given, receives each frame as a complete CSV of its own (the
    header, then exactly the records appended to ``csv_path``), e.g. to hand it on before the end.

    >>> import pandas as pd, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> s = {"contract_version": 1, "row_count": 0, "columns": [{"name": "x", "type": "integer", "nullable": False}]}
    >>> write_table_chunks((pd.DataFrame({"x": [i, i + 1]}) for i in (0, 2)), p, s)["row_count"]
    4
    """
    path = Path(csv_path)
    schema = {**schema, "contract_version": 1, "row_count": 0}
    _check_schema(schema, "(schema given to write_table_chunks)")
    cols = schema["columns"]
    n = 0
    header = _header_bytes(cols)
    with atomic_open(path) as f:
        f.write(header)
        for df in frames:
            df = df.set_axis([str(c) for c in df.columns], axis=1)
            df, extras = coerce_to_signature(df, cols)
            if extras:
                raise ContractError(f"write_table_chunks: a frame has columns {extras} that the schema does "
                                    "not declare.", code="contract.invalid_table",
                                    hint="Drop them or add them to the schema.")
            if on_chunk is None:
                _write_rows(f, {c["name"]: df[c["name"]] for c in cols}, cols, len(df))
            else:
                buf = io.BytesIO()
                buf.write(header)
                _write_rows(buf, {c["name"]: df[c["name"]] for c in cols}, cols, len(df))
                data = buf.getvalue()
                f.write(memoryview(data)[len(header):])
                on_chunk(data, len(df))
            n += len(df)
    schema["row_count"] = n
    _atomic_write_bytes(sidecar_path(path), (json.dumps(schema, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return schema


# ---------------------------------------------------------------- reading

def _fail(path, line, column, what):
    loc = ", ".join(x for x in (f"line {line}" if line is not None else "",
                                f"column {column!r}" if column is not None else "") if x)
    loc = f", {loc}" if loc else ""
    return ContractError(f"Table {path}{loc}: {what}.", code="contract.invalid_table", hint=_HINT,
                         file=str(path), line=line, column=column)


def _read_header(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        try:
            return next(csv.reader(f, strict=True))
        except StopIteration:
            return None
        except (csv.Error, UnicodeDecodeError) as e:
            raise _fail(path, 1, None, f"the header does not parse ({e})") from None


def _first_bad_index(values, ok):
    for i, v in enumerate(values):
        if v is not None and not ok(v):
            return i, v
    return None, None


def _convert(path, arr, col, first_record=0):
    """A pandas Series in the canonical dtype from one column of CSV text (pyarrow string array).

    ``first_record``: the 0-based record number of ``arr[0]`` in the file (for error lines)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    t, name = col["type"], col["name"]
    miss = arr.is_null().to_numpy(zero_copy_only=False)

    def bad(i, v, expect):
        return _fail(path, first_record + i + 2, name, f"value {v!r} is not a valid {t} ({expect})")

    if t in ("integer", "double"):
        target = pa.int64() if t == "integer" else pa.float64()
        try:
            typed = pc.cast(arr, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            def ok(v):
                try:
                    pc.cast(pa.array([v]), target)
                    return True
                except pa.ArrowInvalid:
                    return False
            i, v = _first_bad_index(arr.to_pylist(), ok)
            raise bad(i, v, "decimal digits" if t == "integer" else "a decimal number, NaN, Inf or -Inf") from None
        if t == "integer":
            vals = typed.to_numpy(zero_copy_only=False) if not miss.any() else None
            return pd.Series(vals if vals is not None else pd.arrays.IntegerArray(
                pc.fill_null(typed, 0).to_numpy(), miss), dtype="int64" if vals is not None else "Int64")
        return pd.Series(typed.to_numpy(zero_copy_only=False), dtype="float64")
    if t == "boolean":
        ok = pc.or_kleene(pc.equal(arr, "true"), pc.equal(arr, "false"))
        if pc.all(pc.fill_null(ok, True)).as_py() is False:
            i = int(np.argmin(pc.fill_null(ok, True).to_numpy(zero_copy_only=False)))
            raise bad(i, arr[i].as_py(), "true or false")
        b = pc.equal(arr, "true")
        if miss.any():
            return pd.Series(pd.arrays.BooleanArray(pc.fill_null(b, False).to_numpy(zero_copy_only=False), miss))
        return pd.Series(b.to_numpy(zero_copy_only=False), dtype=bool)
    if t == "string":
        return pd.Series(arr.to_pandas() if len(arr) else pd.Series([], dtype="str"), dtype="str")
    if t == "category":
        levels = list(col["levels"])
        codes = pc.index_in(arr, value_set=pa.array(levels, type=pa.string()))
        unknown = pc.and_(pc.is_null(codes), pc.invert(arr.is_null()))
        if pc.any(unknown).as_py():
            i = int(np.argmax(unknown.to_numpy(zero_copy_only=False)))
            raise bad(i, arr[i].as_py(), f"one of the levels {levels[:20]}")
        c = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int32)
        return pd.Series(pd.Categorical.from_codes(c, categories=pd.Index(levels, dtype="str")))
    if t == "timestamp":
        ok = pc.match_substring_regex(arr, _TS_RE)
        if pc.all(pc.fill_null(ok, True)).as_py() is False:
            i = int(np.argmin(pc.fill_null(ok, True).to_numpy(zero_copy_only=False)))
            raise bad(i, arr[i].as_py(), "YYYY-MM-DDTHH:MM:SS[.ffffff]Z")
        try:
            s = pd.to_datetime(pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object), format="ISO8601", utc=True)
            return s.astype("datetime64[ns, UTC]")
        except (ValueError, OverflowError) as e:
            raise _fail(path, None, name, f"a timestamp does not parse ({e})") from None
    raise ContractError(f"Unknown type {t!r}.", code="contract.invalid_document")  # pragma: no cover


def _row_error(path, names, e, newlines):
    """Re-read single-threaded to find the line of a CSV parse error."""
    import pyarrow.csv as pcsv

    rows = []

    def handler(row):
        rows.append(row)
        return "error"
    try:
        pcsv.read_csv(path, **_options(names, use_threads=False, handler=handler, newlines=newlines))
    except Exception:  # noqa: BLE001 - we only want the recorded row
        pass
    if rows:
        r = rows[0]
        line = r.number if r.number is not None else None
        return _fail(path, line, None, f"expected {r.expected_columns} fields, found {r.actual_columns} "
                                       f"({r.text[:80]!r})")
    return _fail(path, None, None, f"the CSV does not parse ({e})")


def _options(names, use_threads=True, handler=None, newlines=True):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    # newlines_in_values forces serial chunking (3-4x slower); only text columns can hold newlines.
    return dict(
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=1, use_threads=use_threads,
                                      block_size=1 << 24),
        parse_options=pcsv.ParseOptions(newlines_in_values=newlines, ignore_empty_lines=False,
                                        invalid_row_handler=handler),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, null_values=[""],
                                            strings_can_be_null=True, quoted_strings_can_be_null=False))


def read_table(csv_path, schema: dict | None = None):
    """Read a typed table into a DataFrame in the canonical dtypes of its schema.

    ``schema`` defaults to the sidecar beside ``csv_path``.

    >>> import pandas as pd, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = write_table(pd.DataFrame({"s": ["", None, "NA"]}), p)
    >>> read_table(p)["s"].tolist()
    ['', nan, 'NA']
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path, schema, names = _open_checked(csv_path, schema)
    if not names:
        return pd.DataFrame(index=pd.RangeIndex(schema.get("row_count", 0)))
    newlines = any(c["type"] in ("string", "category") for c in schema["columns"])
    try:
        table = pcsv.read_csv(path, **_options(names, newlines=newlines))
    except pa.ArrowInvalid as e:
        raise _row_error(path, names, e, newlines) from None
    out = {c["name"]: _convert(path, table.column(c["name"]).combine_chunks(), c) for c in schema["columns"]}
    df = pd.DataFrame(out)
    if "row_count" in schema and schema["row_count"] != len(df):
        raise _fail(path, None, None, f"the schema says row_count {schema['row_count']} but the CSV has {len(df)} rows")
    _check_nullable(path, schema, df, 0)
    return df


def _open_checked(csv_path, schema):
    """(path, schema, names) after checking the schema, that the file exists and its header."""
    path = Path(csv_path)
    if schema is None:
        schema = read_schema(path)
    else:
        _check_schema(schema, f"(schema of {path})")
    names = [c["name"] for c in schema["columns"]]
    if not path.is_file():
        raise ContractError(f"Table {path} does not exist.", code="contract.invalid_table",
                            hint="Check the path, or the stage that should have written it.")
    header = _read_header(path)
    if header != names and not (header is None and not names):
        raise _fail(path, 1, None, f"the header {header} does not equal the schema's column names {names}"
                    + (" (the file starts with a BOM; write UTF-8 without BOM)" if header and header[0].startswith("\ufeff") else ""))
    return path, schema, names


def _check_nullable(path, schema, df, first_record):
    for c in schema["columns"]:
        if c.get("nullable") is False and df[c["name"]].isna().any():
            line = first_record + int(df[c["name"]].isna().to_numpy().argmax()) + 2
            raise ContractError(f"Table {path}, line {line}, column {c['name']!r}: missing value in a column "
                                "declared nullable: false.", code="contract.type_mismatch", column=c["name"],
                                hint="Fill the missing values upstream, or declare the column nullable.")


def read_table_chunks(csv_path, chunk_rows: int = 100_000, schema: dict | None = None):
    """Read a typed table as a stream of DataFrames of ``chunk_rows`` rows (the last may be shorter).

    Same checks and conversions as :func:`read_table` (errors name the record's line in the whole
    file), but memory holds about one chunk: the CSV is parsed by pyarrow's streaming reader.
    Chunk ``i`` carries the index ``range(i * chunk_rows, ...)``, so ``pd.concat(chunks)`` equals
    ``read_table``. A table without rows yields one empty frame in the canonical dtypes. The
    ``row_count`` check runs when the stream ends, after the chunks before it were yielded, so a
    consumer must treat what it wrote as incomplete until the generator finishes.

    >>> import pandas as pd, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = write_table(pd.DataFrame({"x": range(5)}), p)
    >>> [len(c) for c in read_table_chunks(p, 2)]
    [2, 2, 1]
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pcsv

    chunk_rows = int(chunk_rows)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    path, schema, names = _open_checked(csv_path, schema)
    if not names:
        n = schema.get("row_count", 0)
        for lo in range(0, n, chunk_rows) if n else (0,):
            yield pd.DataFrame(index=pd.RangeIndex(lo, min(n, lo + chunk_rows)))
        return
    newlines = any(c["type"] in ("string", "category") for c in schema["columns"])
    opts = _options(names, newlines=newlines)
    # ~chunk-sized blocks keep memory flat; never below 1 MiB (per-block overhead) nor above 16 MiB
    opts["read_options"].block_size = max(1 << 20, min(1 << 24, chunk_rows * 64 * len(names)))

    def convert(batches, lo):
        table = pa.Table.from_batches(batches).combine_chunks() if batches else None
        cols = {c["name"]: _convert(path, table.column(c["name"]).combine_chunks() if table is not None
                                    else pa.array([], pa.string()), c, lo) for c in schema["columns"]}
        df = pd.DataFrame(cols)
        df.index = pd.RangeIndex(lo, lo + len(df))
        _check_nullable(path, schema, df, lo)
        return df

    try:
        reader = pcsv.open_csv(path, **opts)
    except pa.ArrowInvalid as e:
        raise _row_error(path, names, e, newlines) from None
    pending: list = []  # record batches not yet yielded, pending_rows rows in all
    pending_rows = done = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as e:
            raise _row_error(path, names, e, newlines) from None
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield convert(table.slice(0, chunk_rows).to_batches(), done)
            done += chunk_rows
            rest = table.slice(chunk_rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows or not done:
        yield convert([b for b in pending if b.num_rows], done)
        done += pending_rows
    if "row_count" in schema and schema["row_count"] != done:
        raise _fail(path, None, None, f"the schema says row_count {schema['row_count']} but the CSV has {done} rows")


def part_writer(folder, columns: list | None = None):
    """``on_chunk`` for :func:`write_table_chunks`: chunk i -> ``folder/part-<i:06d>.csv``, renamed into place
    when complete (no fsync: a part only lives while its reader reads it). With ``columns`` (the table's
    schema columns) each part's own schema sidecar is written first, so :func:`read_parts` checks every
    part as a typed table of its own."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = [0]

    def put(path: Path, data: bytes) -> None:
        with atomic_open(path, durable=False) as f:
            f.write(data)

    def write(data: bytes, rows: int) -> None:
        name = f"part-{count[0]:06d}"
        if columns is not None:
            sidecar = {"contract_version": 1, "row_count": int(rows), "columns": columns}
            put(folder / f"{name}.schema.json", json.dumps(sidecar).encode("utf-8"))
        put(folder / f"{name}.csv", data)
        count[0] += 1
    return write


def read_parts(folder, chunk_rows: int = 100_000, poll: float = 0.005, stop=None):
    """A typed table read while it is written, as DataFrames of ``chunk_rows`` rows (the last may be
    shorter; an empty table is one empty frame).

    The writer hands it on in ``folder`` as :func:`part_writer` parts with sidecars, then writes ``END``
    (``{"parts": n, "rows": m}``), or ``ABORT`` if it failed. Each part is read and checked (header,
    types, its row count) as soon as it appears; the parts and rows counted must equal ``END``'s. A
    reader whose parent process has gone (the writer's orchestrator died), or whose folder has gone,
    stops with an error instead of waiting for parts that will never come; so does one whose ``stop``
    (a ``threading.Event``) is set while it waits.
    """
    import time

    import pandas as pd

    folder = Path(folder)
    parent = os.getppid()
    i = rows = have = 0
    held: list = []

    def cut():
        nonlocal held, have
        whole = pd.concat(held, ignore_index=True) if len(held) > 1 else held[0].reset_index(drop=True)
        out, rest = whole.iloc[:chunk_rows], whole.iloc[chunk_rows:]
        held, have = ([rest] if len(rest) else []), len(rest)
        return out

    while True:
        part = folder / f"part-{i:06d}.csv"
        if part.is_file():
            for df in read_table_chunks(part, chunk_rows):
                held.append(df)
                have += len(df)
                rows += len(df)
                while have >= chunk_rows:
                    yield cut()
            i += 1
            continue
        if (folder / "END").is_file():
            if part.is_file():
                continue  # written just before END
            end = json.loads((folder / "END").read_text(encoding="utf-8"))
            if end != {"parts": i, "rows": rows}:
                raise ContractError(f"The table handed on in {folder} ended with {end}, but {i} part(s) of {rows} "
                                    "rows arrived.", code="contract.invalid_table",
                                    hint="Its writer must hand on every part before END (part_writer).")
            break
        if (folder / "ABORT").is_file():
            raise ContractError(f"The writer of the table handed on in {folder} failed after {i} part(s); "
                                "nothing more will come.", code="contract.invalid_table",
                                hint="The orchestrator reports why the table could not be written.")
        if os.getppid() != parent or not folder.is_dir():
            raise ContractError(f"The process writing the table handed on in {folder} has gone.",
                                code="contract.invalid_table", hint="Run the scoring again.")
        if stop is None:
            time.sleep(poll)
        elif stop.wait(poll):
            raise ContractError(f"Reading the table handed on in {folder} was stopped by its reader.",
                                code="contract.invalid_table", hint="The reader reports why it stopped.")
    if held:
        yield cut() if have else held[0]


def prefetch(chunks, depth: int = 1):
    """Iterate ``chunks`` with a background thread producing up to ``depth`` items ahead (pyarrow's CSV
    parsing releases the GIL, so reading overlaps the consumer's work). The producer's exception is
    re-raised to the consumer in order; closing the iterator early stops the producer and closes
    ``chunks`` if it is a generator.

    >>> list(prefetch(iter(range(3))))
    [0, 1, 2]
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for c in chunks:
                if not put((c, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put((end, e))
        finally:  # stopped early: end a generator source here, so what it holds open (a file, a cursor) closes
            getattr(chunks, "close", lambda: None)()

    t = threading.Thread(target=run, name="ambidex-read", daemon=True)
    t.start()
    try:
        while True:
            item, err = q.get()
            if item is end:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
