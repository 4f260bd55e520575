"""fs_conform: cast a source table to contract types, check its key, and compute its canonical content hash."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ambidex.fs_spec import RESERVED, ColumnSpec, MartSpec, _err, _jsonable
from ambidex.sqlident import validate_identifiers


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


IN_ORDER = "in key order"  # _check_key's answer when the rows already stand in canonical order


def _in_key_order(table: pa.Table, key: list[str]) -> bool:
    """One integer or timestamp key, no missing value, strictly ascending: canonical order already, and unique.

    The common case of an exported table (ids ascending) then costs one pass instead of a sort.
    """
    if len(key) != 1 or table.num_rows < 2:
        return False
    col = table.column(key[0])
    if col.null_count or not (pa.types.is_integer(col.type) or pa.types.is_timestamp(col.type)):
        return False
    v = col.to_numpy()
    return bool(np.all(v[1:] > v[:-1]))


def _sort_indices(table: pa.Table, key: list[str]) -> pa.Array:
    cols = key or sorted(table.column_names)
    sortable = pa.table([pc.cast(table.column(c), pa.string()) if pa.types.is_dictionary(table.column(c).type)
                         else table.column(c) for c in cols], names=cols)
    return pc.sort_indices(sortable, sort_keys=[(c, "ascending") for c in cols])  # nulls last (default)


def content_hash(table: pa.Table, schema: dict, key: list[str], order: pa.Array | str | None = None) -> str:
    """sha256 over the canonical bytes of a conformed table; the same rows give the same hash everywhere.

    Canonical form (version 1): rows sorted by the key columns (all columns in name
    order when there is no key; text by UTF-8 bytes, missing last). Then the header
    ``ambidex-content-v1\\n`` and, for each column in name order, ``name\\ttype\\n``; then
    for each column in name order: one byte per row (1 present, 0 missing), then the
    values, missing written as zero: integer int64 little-endian; double IEEE-754
    binary64 little-endian (NaN is missing); boolean one byte; timestamp int64
    microseconds since 1970-01-01 UTC; string and category int64 byte lengths, then the
    UTF-8 bytes. Category levels and column order in the source do not change the hash.

    ``order`` is the canonical row order if known (from ``_check_key``: indices, or ``IN_ORDER``).
    """
    h = hashlib.sha256(b"ambidex-content-v1\n")
    names = sorted(table.column_names)
    for n in names:
        h.update(f"{n}\t{schema['columns'][n]['type']}\n".encode())
    if table.num_rows == 0:
        return "sha256:" + h.hexdigest()
    if order is None:
        order = IN_ORDER if _in_key_order(table, key) else _sort_indices(table, key)
    for n in names:
        arr = table.column(n) if order is IN_ORDER else pc.take(table.column(n), order)
        arr = arr.combine_chunks()
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


def _check_key(table: pa.Table, key: list[str], source: str) -> pa.Array | str | None:
    """Refuse missing or duplicate keys; returns the canonical sort order (reused by the hash), or
    ``IN_ORDER`` when the rows stand in it already."""
    if not key or table.num_rows == 0:
        return None
    for c in key:
        nulls = table.column(c).null_count
        if nulls:
            raise _err(f"Key column {c!r} has {nulls} missing values in {source}.", "data.missing_key",
                       "Every row needs a complete key; fix the source.", column=c)
    if _in_key_order(table, key):
        return IN_ORDER
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
