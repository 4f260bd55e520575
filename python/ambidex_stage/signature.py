"""signature: map pandas columns to contract types (SPEC 3.1) and coerce inputs to a model signature (SPEC 4.1).

Canonical pandas dtypes per contract type (what readers return and writers accept without loss):

    integer   int64, or Int64 when it has missing values
    double    float64 (NaN is missing)
    string    str
    boolean   bool, or boolean when it has missing values
    timestamp datetime64[ns, UTC]
    category  category with categories == levels, in order

Lossless coercions applied by :func:`coerce_series` (anything else is ``contract.type_mismatch``
naming column, type and a sample value):

    integer   <- any integer dtype; floats whose values are all integral; text of decimal digits
    double    <- floats; integers with |x| <= 2**53; text parsing as a number ("1,5" is refused)
    boolean   <- bool/boolean; text "true"/"false"
    string    <- str/object of str; category (its labels)
    category  <- category or text; a label outside the levels is ``contract.unseen_level``
    timestamp <- time-zone-aware datetimes (converted to UTC); RFC 3339 ``...Z`` text.
                 Naive datetimes are refused naming the column (reliability promise 9).
"""
from __future__ import annotations

import re

from .errors import ContractError

__all__ = ["schema_from_frame", "column_from_series", "coerce_series", "coerce_to_signature", "CONTRACT_TYPES"]

CONTRACT_TYPES = ("integer", "double", "string", "boolean", "timestamp", "category")
_INT_RE = re.compile(r"^-?[0-9]+$")
_TS_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$"
_HINT = "Fix the input (or the stage that wrote it); only lossless conversions are applied (contract/SPEC.md 3.1, 4.1)."


def _mismatch(name, ctype, value, why=""):
    return ContractError(
        f"Column {name!r} ({ctype}): value {value!r} does not convert losslessly to {ctype}{why}.",
        code="contract.type_mismatch", hint=_HINT, column=name)


def _is_text_series(s) -> bool:
    import pandas as pd

    if pd.api.types.is_string_dtype(s.dtype) and not isinstance(s.dtype, pd.CategoricalDtype):
        return all(isinstance(v, str) for v in s.dropna().head(1000)) if s.dtype == object else True
    return False


def column_from_series(name: str, s) -> dict:
    """The table-schema column (``{name, type, nullable[, levels]}``) describing one pandas Series.

    ``nullable`` follows the dtype: false for ``int64`` and ``bool`` (they cannot hold missing),
    true otherwise.
    """
    import pandas as pd
    import numpy as np

    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        cats = dt.categories
        if len(cats) and not all(isinstance(c, str) for c in cats):
            raise ContractError(f"Column {name!r} is a category whose categories are not text ({cats.dtype}).",
                                code="contract.type_mismatch", hint="Convert the categories to strings first: "
                                "s.cat.rename_categories(str).", column=name)
        return {"name": name, "type": "category", "levels": [str(c) for c in cats], "nullable": True}
    if pd.api.types.is_bool_dtype(dt):
        return {"name": name, "type": "boolean", "nullable": not isinstance(dt, np.dtype)}
    if pd.api.types.is_integer_dtype(dt):
        if dt == np.uint64 and len(s) and int(s.max()) >= 2**63:
            raise _mismatch(name, "integer", int(s.max()), " (beyond 64-bit signed)")
        return {"name": name, "type": "integer", "nullable": not isinstance(dt, np.dtype)}
    if pd.api.types.is_float_dtype(dt):
        return {"name": name, "type": "double", "nullable": True}
    if isinstance(dt, pd.DatetimeTZDtype):
        return {"name": name, "type": "timestamp", "nullable": True}
    if pd.api.types.is_datetime64_dtype(dt):
        raise ContractError(
            f"Column {name!r} holds naive datetimes ({dt}); the contract only carries UTC timestamps.",
            code="contract.type_mismatch", column=name,
            hint=f"Localise it first: df[{name!r}] = df[{name!r}].dt.tz_localize('UTC') (or the right zone, then tz_convert('UTC')).")
    if _is_text_series(s):
        return {"name": name, "type": "string", "nullable": True}
    if dt == object:
        bad = next((v for v in s.dropna() if not isinstance(v, str)), None)
        raise ContractError(
            f"Column {name!r} is an object column holding {type(bad).__name__} values such as {bad!r}; "
            "the contract carries integer, double, string, boolean, timestamp and category.",
            code="contract.type_mismatch", hint="Convert it to one of those dtypes first.", column=name)
    raise ContractError(f"Column {name!r} has dtype {dt}, which has no contract type.",
                        code="contract.type_mismatch", column=name,
                        hint="Convert it to int64, float64, str, bool, datetime64[ns, UTC] or category first.")


def schema_from_frame(df) -> dict:
    """The table schema (``table.v1``) inferred from a DataFrame's dtypes.

    >>> import pandas as pd
    >>> schema_from_frame(pd.DataFrame({"id": [1, 2]}))["columns"]
    [{'name': 'id', 'type': 'integer', 'nullable': False}]
    """
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ContractError(f"Duplicate column names {dup}.", code="contract.invalid_table",
                            hint="Rename the columns so each name appears once.")
    return {"contract_version": 1, "row_count": int(len(df)),
            "columns": [column_from_series(str(c), df[c]) for c in df.columns]}


def _first_bad(values, ok):
    for i, v in enumerate(values):
        if v is not None and not (isinstance(v, float) and v != v) and not ok(v):
            return i, v
    return None, None


def _parse_float_text(s, name):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(s.astype(object).where(s.notna(), None).tolist(), type=pa.string())
    try:
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except pa.ArrowInvalid:
        i, v = _first_bad(arr.to_pylist(), lambda x: _float_ok(x))
        raise _mismatch(name, "double", v, f" (row {i + 1})") from None


def _float_ok(x):
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.cast(pa.array([x]), pa.float64())
        return True
    except pa.ArrowInvalid:
        return False


def _recode_categorical(s, levels: list):
    """A categorical Series whose used labels are all text among ``levels``, re-coded to exactly ``levels``
    by label (a table read or a window fetched is usually this already): no label is looked at row by row.
    ``None`` when some used label is not text or not a level: the general path then says which."""
    import numpy as np

    cats, codes = s.cat.categories, s.cat.codes.to_numpy()
    used = cats[np.unique(codes[codes >= 0])] if len(cats) else cats
    if not all(isinstance(x, str) for x in used) or not set(used) <= set(levels):
        return None
    if s.cat.ordered:
        s = s.cat.as_unordered()  # as pd.Categorical(labels, categories=levels) makes it
    return s if list(cats) == levels else s.cat.set_categories(levels)


def coerce_series(s, col: dict):
    """Convert one Series to the canonical dtype of contract column ``col`` losslessly, or raise.

    Raises ``contract.type_mismatch`` (lossy value, missing in a non-nullable column, naive
    datetime) or ``contract.unseen_level`` (a category label outside ``col['levels']``).
    """
    import numpy as np
    import pandas as pd

    name, ctype = col["name"], col["type"]
    dt = s.dtype
    is_cat = isinstance(dt, pd.CategoricalDtype)
    if is_cat and ctype not in ("category", "string"):
        s = s.astype(object).where(s.notna(), None)
        dt = s.dtype
    missing = s.isna()
    text = dt == object or (pd.api.types.is_string_dtype(dt) and not is_cat)

    if ctype == "integer":
        if pd.api.types.is_bool_dtype(dt):
            raise _mismatch(name, ctype, bool(s.iloc[0]) if len(s) else True, " (booleans are not integers)")
        if pd.api.types.is_integer_dtype(dt):
            if dt == np.uint64 and len(s) and int(s.max()) >= 2**63:
                raise _mismatch(name, ctype, int(s.max()), " (beyond 64-bit signed)")
            out = s.astype("Int64") if missing.any() else s.astype("int64")
        elif pd.api.types.is_float_dtype(dt):
            v = s.to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isnan(v) & ((v != np.floor(v)) | (np.abs(v) >= 2.0**63))
            if bad.any():
                raise _mismatch(name, ctype, float(v[bad][0]))
            nan = np.isnan(v)
            ints = np.where(nan, 0, v).astype(np.int64)
            out = pd.Series(pd.arrays.IntegerArray(ints, nan) if nan.any() else ints, index=s.index)
        elif text:
            vals = s.tolist()
            i, v = _first_bad(vals, lambda x: isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                              or isinstance(x, str) and _INT_RE.match(x) and -2**63 <= int(x) < 2**63)
            if i is not None:
                raise _mismatch(name, ctype, v, f" (row {i + 1})")
            out = pd.Series(pd.array([None if m else int(x) for x, m in zip(vals, missing)], dtype="Int64"),
                            index=s.index)
            out = out if missing.any() else out.astype("int64")
        else:
            raise _mismatch(name, ctype, s.iloc[0] if len(s) else None, f" (dtype {dt})")
    elif ctype == "double":
        if pd.api.types.is_bool_dtype(dt):
            raise _mismatch(name, ctype, bool(s.iloc[0]) if len(s) else True, " (booleans are not numbers)")
        if pd.api.types.is_integer_dtype(dt):
            v = s.to_numpy(dtype=np.float64, na_value=np.nan)
            big = np.abs(s.dropna().to_numpy()) > 2**53 if len(s.dropna()) else np.array([], bool)
            if big.any():
                raise _mismatch(name, ctype, int(s.dropna().to_numpy()[big][0]), " (|x| > 2**53 loses precision)")
            out = pd.Series(v, index=s.index)
        elif pd.api.types.is_float_dtype(dt):
            out = pd.Series(s.to_numpy(dtype=np.float64, na_value=np.nan), index=s.index)
        elif text:
            if dt == object and any(isinstance(x, bool) for x in s.dropna()):
                raise _mismatch(name, ctype, next(x for x in s.dropna() if isinstance(x, bool)))
            if dt == object and not all(isinstance(x, str) for x in s.dropna()):
                vals = [None if m else (x if isinstance(x, str) else repr(float(x)) if isinstance(
                    x, (int, float, np.number)) else x) for x, m in zip(s.tolist(), missing)]
                i, v = _first_bad(vals, lambda x: isinstance(x, str))
                if i is not None:
                    raise _mismatch(name, ctype, v, f" (row {i + 1})")
                s = pd.Series(vals, index=s.index, dtype=object)
            out = pd.Series(_parse_float_text(s, name), index=s.index)
        else:
            raise _mismatch(name, ctype, s.iloc[0] if len(s) else None, f" (dtype {dt})")
    elif ctype == "boolean":
        if pd.api.types.is_bool_dtype(dt):
            out = s.astype("boolean") if missing.any() else s.astype(bool)
        elif text:
            vals = s.tolist()
            i, v = _first_bad(vals, lambda x: isinstance(x, bool) or x in ("true", "false"))
            if i is not None:
                raise _mismatch(name, ctype, v, f" (row {i + 1}; text must be 'true' or 'false')")
            out = pd.Series(pd.array([None if m else (x if isinstance(x, bool) else x == "true")
                                      for x, m in zip(vals, missing)], dtype="boolean"), index=s.index)
            out = out if missing.any() else out.astype(bool)
        else:
            raise _mismatch(name, ctype, s.iloc[0] if len(s) else None, f" (dtype {dt})")
    elif ctype == "string":
        if is_cat or text:
            bad = next((x for x in s.dropna() if not isinstance(x, str)), None) if dt == object else None
            if bad is not None:
                raise _mismatch(name, ctype, bad, f" ({type(bad).__name__} is not text)")
            out = s.astype(object).where(~missing, None).astype("str")
        else:
            raise _mismatch(name, ctype, s.iloc[0] if len(s) else None, f" (dtype {dt})")
    elif ctype == "category":
        levels = list(col.get("levels") or [])
        out = _recode_categorical(s, levels) if is_cat else None
        if out is None:
            if is_cat:
                labels = s.astype(object).where(~missing, None)
            elif text:
                labels = s
            else:
                raise _mismatch(name, ctype, s.iloc[0] if len(s) else None, f" (dtype {dt})")
            nonnull = labels[~missing]
            bad = next((x for x in nonnull if not isinstance(x, str)), None)
            if bad is not None:
                raise _mismatch(name, ctype, bad, f" ({type(bad).__name__} is not a level label)")
            unseen = ~nonnull.isin(levels)
            if unseen.any():
                lv = nonnull[unseen].iloc[0]
                raise ContractError(
                    f"Column {name!r}: level {lv!r} is not one of the model's levels {levels[:20]}"
                    f"{' ...' if len(levels) > 20 else ''} ({int(unseen.sum())} row(s)).",
                    code="contract.unseen_level", column=name, level=lv,
                    hint="unseen_level is 'error' in contract version 1: map the value to a known level "
                         "upstream, or retrain the model on data that has it.")
            out = pd.Series(pd.Categorical(labels.astype(object).where(~missing, None), categories=levels),
                            index=s.index)
    elif ctype == "timestamp":
        if isinstance(dt, pd.DatetimeTZDtype):
            out = s.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        elif pd.api.types.is_datetime64_dtype(dt):
            raise ContractError(
                f"Column {name!r} holds naive datetimes ({dt}); timestamps must be UTC.",
                code="contract.type_mismatch", column=name,
                hint=f"Localise it: df[{name!r}].dt.tz_localize('UTC') (or its zone, then tz_convert('UTC')).")
        elif text:
            vals = s.tolist()
            i, v = _first_bad(vals, lambda x: isinstance(x, str) and re.match(_TS_RE, x))
            if i is not None:
                raise _mismatch(name, ctype, v, f" (row {i + 1}; expected YYYY-MM-DDTHH:MM:SS[.ffffff]Z)")
            out = pd.to_datetime(s.astype(object), format="ISO8601", utc=True).astype("datetime64[ns, UTC]")
        else:
            raise _mismatch(name, ctype, s.iloc[0] if len(s) else None, f" (dtype {dt})")
    else:
        raise ContractError(f"Column {name!r} has unknown contract type {ctype!r}.", code="contract.invalid_document",
                            hint=f"Use one of {', '.join(CONTRACT_TYPES)}.")
    if col.get("nullable") is False and missing.any():
        row = int(missing.to_numpy().argmax()) + 1
        raise ContractError(f"Column {name!r} is declared nullable: false but has {int(missing.sum())} missing "
                            f"value(s), the first at row {row}.", code="contract.type_mismatch", column=name,
                            hint="Fill or drop the missing values upstream, or declare the column nullable.")
    out.name = s.name
    return out


def coerce_to_signature(df, signature_inputs: list[dict]):
    """Match ``df`` to a model signature by column name (SPEC 4.1); returns ``(frame, extra_columns)``.

    The frame has exactly the signature's columns, in signature order, in canonical dtypes and
    with the input's row order. Extra columns are dropped and returned by name.

    >>> import pandas as pd
    >>> f, extra = coerce_to_signature(pd.DataFrame({"b": [1], "a": ["2.5"]}),
    ...                                [{"name": "a", "type": "double", "nullable": True}])
    >>> (f["a"].tolist(), extra)
    ([2.5], ['b'])
    """
    import pandas as pd

    names = [c["name"] for c in signature_inputs]
    have = [str(c) for c in df.columns]
    missing = [n for n in names if n not in have]
    if missing:
        raise ContractError(
            f"Input is missing column {missing[0]!r} required by the model signature"
            f"{f' (also missing: {missing[1:]})' if len(missing) > 1 else ''}.",
            code="contract.missing_column", column=missing[0], missing=missing,
            hint=f"The model expects columns {names}; add the missing column(s) upstream. Nothing was written.")
    extras = [c for c in have if c not in names]
    cols = {c["name"]: coerce_series(df[c["name"]], c) for c in signature_inputs}
    out = pd.DataFrame(cols, index=df.index)
    return out, extras
