"""profiling: per-window column profiles computed at load time (drift.md section 7), pure functions on Arrow columns.

The profiles are the ones of :mod:`ambidex.drift_profile` (``NumericGrid``,
``NumericProfile``, ``CategoricalProfile``), so drift can merge and compare stored
windows without the raw rows. This module only computes them fast from Arrow columns
(one ``searchsorted`` + ``bincount`` per numeric column, a ``partition`` for the median,
Arrow ``value_counts`` for levels) with the same semantics as ``profile_numeric`` and
``profile_categorical``.

Numeric columns are contract ``integer``, ``double`` and ``timestamp`` (as epoch
seconds); categorical ones are ``string``, ``category`` and ``boolean`` (levels
``true``/``false``).

**Grid choice.** drift.md freezes a fine grid per *model* from its reference. At load
time no model is known, so the feature store freezes one grid per *mart and column*:
``drift_profile.build_grid`` of the first data version that holds a finite value of the
column (99 type-7 percentiles, or the values when there are 20 or fewer). Every later
window is counted on that grid, so the counts of any set of windows can be summed. A
model whose reference grid differs uses the exact statistics and level counts as they
are and re-bins raw rows once if it needs its own grid (drift.md: "retained raw data can
be re-profiled once").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ambidex.drift_profile import (CategoricalProfile, NumericGrid, NumericProfile, build_grid, fine_counts_sorted,
                                   fine_index)
from ambidex.errors import DataError

__all__ = ["LEVEL_CAP", "OTHER", "MISSING", "NUMERIC_TYPES", "ColumnProfile", "numeric_values",
           "profile_column", "profile_table"]

LEVEL_CAP = 1000
OTHER = "__OTHER__"
MISSING = "__MISSING__"
NUMERIC_TYPES = frozenset({"integer", "double", "timestamp"})


@dataclass
class ColumnProfile:
    """One column of one data version: its kind and the drift profile (numeric or categorical)."""

    column: str
    ctype: str
    kind: str  # "numeric" | "categorical"
    n: int  # rows, missing included (as NumericProfile.n)
    n_missing: int
    profile: NumericProfile | CategoricalProfile

    def stats(self) -> dict:
        p = self.profile
        out = {"n": self.n, "n_missing": self.n_missing, "sum": None, "sumsq": None, "min": None, "max": None,
               "median_exact": None}
        if isinstance(p, NumericProfile):
            out.update(sum=p.sum, sumsq=p.sumsq, min=p.min, max=p.max, median_exact=p.median_exact)
        return out


def numeric_values(arr: pa.ChunkedArray | pa.Array, ctype: str) -> np.ndarray:
    """All values as float64 (timestamps as epoch seconds), missing as NaN."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if ctype == "timestamp":
        arr = pc.divide(pc.cast(pc.cast(arr, pa.timestamp("us", "UTC")), pa.int64()).cast(pa.float64()), 1e6)
    if arr.null_count:
        arr = pc.fill_null(pc.cast(arr, pa.float64(), safe=False), np.nan)  # stats are doubles, as drift.md
    if not pa.types.is_floating(arr.type):
        arr = pc.cast(arr, pa.float64(), safe=False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _median(v: np.ndarray) -> float | None:
    n = v.size
    if n == 0:
        return None
    h = (n - 1) * 0.5
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    part = np.partition(v, [lo, hi]) if hi != lo else np.partition(v, lo)
    return float(part[lo] + (h - lo) * (part[hi] - part[lo]))


def _numeric(x: np.ndarray, grid: NumericGrid) -> NumericProfile:
    fine = fine_index(grid, x)
    ok = fine >= 0
    v = x[ok] if not ok.all() else x
    cnt = np.bincount(fine + 1)  # slot 0 = missing (-1)
    counts = {int(i) - 1: int(c) for i, c in enumerate(cnt) if c}
    return NumericProfile(counts, int(x.size), int(x.size - v.size), float(v.sum()), float(np.dot(v, v)),
                          float(v.min()) if v.size else None, float(v.max()) if v.size else None, _median(v))


def _numeric_first(x: np.ndarray, name: str) -> tuple[NumericProfile, NumericGrid]:
    """A column's first finite values: one sort gives the grid frozen from them, the counts on it,
    the median, min and max (the sums stay in source order, as ``_numeric``)."""
    ok = np.isfinite(x)
    v = x[ok] if not ok.all() else x
    r = v if v.size < 2 or bool((v[1:] >= v[:-1]).all()) else np.sort(v)  # keys and times often come sorted
    grid = build_grid(r, feature=name, finite_sorted=True)
    counts = {i: int(c) for i, c in enumerate(fine_counts_sorted(grid, r).tolist()) if c}
    n_missing = int(x.size - v.size)
    if n_missing:
        counts = {-1: n_missing, **counts}
    n = r.size
    h = (n - 1) * 0.5
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    med = float(r[lo] + (h - lo) * (r[hi] - r[lo]))
    prof = NumericProfile(counts, int(x.size), n_missing, float(v.sum()), float(np.dot(v, v)),
                          float(r[0]), float(r[-1]), med)
    return prof, grid


def _categorical(arr: pa.ChunkedArray, ctype: str, column: str) -> tuple[CategoricalProfile, int]:
    if ctype == "boolean":
        arr = pc.if_else(arr, "true", "false")
    vc = pc.value_counts(arr)
    n_missing, pairs = 0, []
    for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
        if v is None:
            n_missing += int(c)
        else:
            pairs.append((str(v), int(c)))
    for label, _ in pairs:
        if label in (OTHER, MISSING):
            raise DataError(f"Column {column!r} has a level named {label!r}, which is reserved for profiles.",
                            code="data.reserved_level", hint="Rename that level in the source.", column=column)
    pairs.sort(key=lambda t: (-t[1], t[0]))  # count descending, then code point (drift.md section 2)
    out = dict(pairs[:LEVEL_CAP])
    rest = sum(c for _, c in pairs[LEVEL_CAP:])
    if rest:
        out[OTHER] = rest
    if n_missing:
        out[MISSING] = n_missing
    return CategoricalProfile(out), n_missing


def profile_column(name: str, arr: pa.ChunkedArray, ctype: str, grid: NumericGrid | None) -> tuple[ColumnProfile, NumericGrid | None]:
    """Profile one column. A numeric column without a grid gets one frozen from these values (returned)."""
    if ctype not in NUMERIC_TYPES:
        prof, n_missing = _categorical(arr, ctype, name)
        return ColumnProfile(name, ctype, "categorical", len(arr), n_missing, prof), None
    x = numeric_values(arr, ctype)
    if grid is None and np.isfinite(x).any():
        prof, new = _numeric_first(x, name)
        return ColumnProfile(name, ctype, "numeric", prof.n, prof.n_missing, prof), new
    new = None
    if grid is None:  # no finite value yet: only missing counts until a later version freezes the grid
        n_missing = int(x.size - np.isfinite(x).sum())
        prof = NumericProfile({-1: n_missing} if n_missing else {}, int(x.size), n_missing, 0.0, 0.0, None, None, None)
    else:
        prof = _numeric(x, grid)
    return ColumnProfile(name, ctype, "numeric", prof.n, prof.n_missing, prof), new


def profile_table(table: pa.Table, types: dict[str, str], grids: dict[str, NumericGrid]) -> tuple[list[ColumnProfile], dict[str, NumericGrid]]:
    """Profile every column of ``table``; returns the profiles and the grids frozen by this call."""
    profiles, new_grids = [], {}
    for name in table.column_names:
        prof, grid = profile_column(name, table.column(name), types[name], grids.get(name))
        profiles.append(prof)
        if grid is not None:
            new_grids[name] = grid
    return profiles, new_grids
