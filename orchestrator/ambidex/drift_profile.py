"""drift_profile: mergeable per-window profiles on a frozen reference grid (specs/drift.md section 7), as plain data.

A profile is what one window leaves in SQL; comparisons afterwards only sum profiles.

* :class:`NumericGrid` is frozen per model version. A ``'quantile'`` grid holds the 99 reference
  percentiles q_r(i/100) (``percentiles``) and their unique values (``edges``); fine bin f is
  (edges[f-1], edges[f]] (right-closed, ``searchsorted(edges, x, 'left')``), so there are
  ``len(edges)+1`` value bins. Decile and quintile edges are subsets of it (i/10 == 10i/100 as
  doubles), so coarse counts are sums of fine counts (:func:`bin_map`). A ``'discrete'`` grid
  (<= 20 distinct reference values) holds the values: fine bin 2i+1 is exactly ``values[i]`` and
  even bins 2i are the open gaps between them (unseen values, mapped to OTHER).
* :class:`NumericProfile` ``fine_counts`` maps fine bin -> count (only non-zero bins; -1 = missing).
  ``n`` counts rows including missing ones; ``sum``/``sumsq``/``min``/``max`` are over finite values;
  ``median_exact`` is the window's type-7 median (None after a merge of several windows).
* :class:`CategoricalProfile` ``level_counts`` maps level -> count, with at most ``cap`` levels
  plus ``__OTHER__`` (levels beyond the cap) and ``__MISSING__``.

Example
-------
>>> import numpy as np
>>> from ambidex.drift_profile import build_grid, profile_numeric, merge_profiles, compare_profiles
>>> rng = np.random.default_rng(1)
>>> grid = build_grid(rng.normal(size=1000), feature="x")
>>> ref = profile_numeric(grid, rng.normal(size=1000))
>>> days = [profile_numeric(grid, rng.normal(0.8, size=300)) for _ in range(3)]
>>> res = compare_profiles(ref, merge_profiles(days), grid=grid, feature="x")
>>> res.status, res.binning, res.n_cur
('alert', 'quantile10', 900)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .drift import (MISSING, OTHER, DriftThresholds, FeatureDrift, _base_fields, _categorical_from_counts,
                    _distribution_fields, _finish, count_levels)
from .drift_stats import _as_float, _scale_from, ks_limit_sf, quantile7, sign_test_z
from .errors import DataError

__all__ = ["NumericGrid", "NumericProfile", "CategoricalProfile", "build_grid", "fine_index", "coarse_edges",
           "bin_map", "profile_numeric", "profile_categorical", "merge_profiles", "compare_profiles",
           "quantile_from_profile"]

_DEFAULT = DriftThresholds()
_FINE = 100


@dataclass(frozen=True)
class NumericGrid:
    """The frozen reference grid of one numeric feature and the reference summary that drift needs."""

    kind: str
    edges: tuple[float, ...]
    percentiles: tuple[float, ...] | None
    median: float
    q25: float
    q75: float
    sd_pop: float
    n_valid: int


@dataclass(frozen=True)
class NumericProfile:
    """One window of a numeric feature on a grid (see the module docstring for each field)."""

    fine_counts: Mapping[int, int]
    n: int
    n_missing: int
    sum: float
    sumsq: float
    min: float | None
    max: float | None
    median_exact: float | None


@dataclass(frozen=True)
class CategoricalProfile:
    """One window of a categorical feature: level -> count, incl. ``__OTHER__`` and ``__MISSING__``."""

    level_counts: Mapping[str, int]


def build_grid(ref_values, *, feature: str = "value", thresholds: DriftThresholds = _DEFAULT,
               finite_sorted: bool = False) -> NumericGrid:
    """The fine grid of a reference sample: 99 type-7 percentiles, or the values if there are <= 20 of them.

    ``finite_sorted=True`` says the values are finite and ascending already (no copy, no sort).
    """
    r = _as_float(ref_values, feature)
    if not finite_sorted:
        r = np.sort(r[np.isfinite(r)])
    if r.size == 0:
        raise DataError(f"Feature '{feature}' has no finite reference value, so no grid can be built.",
                        hint="Choose a reference window where the feature is populated.", feature=feature)
    values = r[np.concatenate(([True], r[1:] != r[:-1]))]
    med, q25, q75 = (float(v) for v in quantile7(r, [0.5, 0.25, 0.75]))
    sd = float(np.sqrt(np.mean((r - r.mean()) ** 2)))
    if values.size <= thresholds.max_discrete_values:
        return NumericGrid("discrete", tuple(float(v) for v in values), None, med, q25, q75, sd, int(r.size))
    pct = quantile7(r, np.arange(1, _FINE) / _FINE)
    return NumericGrid("quantile", tuple(float(v) for v in np.unique(pct)), tuple(float(v) for v in pct),
                       med, q25, q75, sd, int(r.size))


def fine_index(grid: NumericGrid, values) -> np.ndarray:
    """Fine bin of each value (-1 for NaN, None, +-inf)."""
    x = _as_float(values, "values")
    ok = np.isfinite(x)
    out = np.full(x.size, -1, dtype=np.int64)
    e = np.asarray(grid.edges, dtype=np.float64)
    idx = np.searchsorted(e, x[ok], "left")
    if grid.kind == "discrete":
        exact = (idx < e.size) & (e[np.minimum(idx, e.size - 1)] == x[ok])
        idx = np.where(exact, 2 * idx + 1, 2 * idx)
    out[ok] = idx
    return out


def fine_counts_sorted(grid: NumericGrid, finite_sorted: np.ndarray) -> np.ndarray:
    """Count per fine bin (0 .. 2 * len(edges) for discrete grids, 0 .. len(edges) otherwise) of finite,
    ascending values: the same counts as ``bincount(fine_index(grid, x))``, with a binary search per edge
    instead of one per value."""
    r = finite_sorted
    e = np.asarray(grid.edges, dtype=np.float64)
    right = np.searchsorted(r, e, "right")
    if grid.kind != "discrete":  # bin i holds e[i-1] < x <= e[i]
        return np.diff(np.concatenate(([0], right, [r.size])))
    left = np.searchsorted(r, e, "left")
    out = np.empty(2 * e.size + 1, dtype=np.int64)
    out[1::2] = right - left  # x == e[i]
    out[0:-1:2] = left - np.concatenate(([0], right[:-1]))  # e[i-1] < x < e[i]
    out[-1] = r.size - right[-1]
    return out


def coarse_edges(grid: NumericGrid, k: int) -> np.ndarray:
    """Decile (k=10) or quintile (k=5) edges unique(q_r(i/k)), taken from the stored percentiles."""
    if grid.kind != "quantile":
        raise DataError("A discrete grid has no quantile edges.", hint="Use bin_map, which maps values to bins.")
    if k < 2 or _FINE % k:
        raise DataError(f"k={k} does not divide {_FINE}; coarse edges must be grid points.", hint="Use 5 or 10.")
    pct = np.asarray(grid.percentiles)
    return np.unique(pct[[_FINE * i // k - 1 for i in range(1, k)]])


def bin_map(grid: NumericGrid, k: int = 10) -> dict[int, int]:
    """Fine bin -> coarse bin (decile/quintile, or value/OTHER for discrete grids); -1 (missing) -> -1."""
    e = np.asarray(grid.edges, dtype=np.float64)
    if grid.kind == "discrete":
        m = e.size
        out = {2 * i + 1: i for i in range(m)}
        out.update({2 * i: m for i in range(m + 1)})
    else:
        ce = coarse_edges(grid, k)
        out = {f: int(np.searchsorted(ce, e[f], "left")) for f in range(e.size)}
        out[e.size] = int(ce.size)
    out[-1] = -1
    return out


def profile_numeric(grid: NumericGrid, values, *, feature: str = "value") -> NumericProfile:
    """Profile one window of a numeric feature on the grid."""
    x = _as_float(values, feature)
    fine = fine_index(grid, x)
    uniq, cnt = np.unique(fine, return_counts=True)
    v = x[fine >= 0]
    vs = np.sort(v)
    return NumericProfile({int(u): int(c) for u, c in zip(uniq, cnt)}, int(x.size), int(x.size - v.size),
                          float(v.sum()), float(np.dot(v, v)), float(vs[0]) if v.size else None,
                          float(vs[-1]) if v.size else None, quantile7(vs, 0.5) if v.size else None)


def profile_categorical(values, *, feature: str = "value", cap: int = 1000) -> CategoricalProfile:
    """Profile one window of a categorical feature: the ``cap`` most frequent levels, ``__OTHER__``, ``__MISSING__``."""
    counts, n_missing = count_levels(values, feature)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:cap])
    rest = sum(n for _, n in ranked[cap:])
    if rest:
        out[OTHER] = rest
    if n_missing:
        out[MISSING] = n_missing
    return CategoricalProfile(out)


def merge_profiles(profiles: Sequence[NumericProfile] | Sequence[CategoricalProfile]):
    """Sum the counts of several windows (T-k..T-1, or several days) into one profile."""
    profiles = list(profiles)
    if not profiles:
        raise DataError("merge_profiles got no profile.", hint="Pass at least one window's profile.")
    if all(isinstance(p, CategoricalProfile) for p in profiles):
        out: dict[str, int] = {}
        for p in profiles:
            for lv, n in p.level_counts.items():
                out[lv] = out.get(lv, 0) + int(n)
        return CategoricalProfile(out)
    if not all(isinstance(p, NumericProfile) for p in profiles):
        raise DataError("merge_profiles got a mix of numeric and categorical profiles.",
                        hint="Merge the profiles of one feature at a time.")
    fine: dict[int, int] = {}
    for p in profiles:
        for b, n in p.fine_counts.items():
            fine[int(b)] = fine.get(int(b), 0) + int(n)
    mins = [p.min for p in profiles if p.min is not None]
    maxs = [p.max for p in profiles if p.max is not None]
    return NumericProfile(fine, sum(p.n for p in profiles), sum(p.n_missing for p in profiles),
                          math.fsum(p.sum for p in profiles), math.fsum(p.sumsq for p in profiles),
                          min(mins) if mins else None, max(maxs) if maxs else None,
                          profiles[0].median_exact if len(profiles) == 1 else None)


def _bin_bounds(grid: NumericGrid, prof: NumericProfile, f: int) -> tuple[float, float]:
    e = grid.edges
    if grid.kind == "discrete":
        if f % 2:
            return e[f // 2], e[f // 2]
        i = f // 2
        lo, hi = (e[i - 1] if i > 0 else prof.min), (e[i] if i < len(e) else prof.max)
    else:
        lo, hi = (e[f - 1] if f > 0 else prof.min), (e[f] if f < len(e) else prof.max)
    lo, hi = max(lo, prof.min), min(hi, prof.max)
    return lo, max(lo, hi)


def quantile_from_profile(grid: NumericGrid, prof: NumericProfile, p: float) -> float | None:
    """Approximate type-7 quantile of a (merged) window by linear interpolation inside its fine bin."""
    bins = sorted((b, n) for b, n in prof.fine_counts.items() if b >= 0 and n > 0)
    n = sum(c for _, c in bins)
    if n == 0:
        return None
    h = (n - 1) * p
    before = 0
    for b, c in bins:
        if h < before + c:
            lo, hi = _bin_bounds(grid, prof, b)
            return float(lo + (h - before + 0.5) / c * (hi - lo))
        before += c
    return float(prof.max)


def _count_above(grid: NumericGrid, fine_counts: Mapping[int, int], x: float) -> tuple[int, bool]:
    """Rows above x (a reference grid point), and whether a gap bin made the count approximate."""
    e = grid.edges
    above, approx = 0, False
    for b, n in fine_counts.items():
        if b < 0 or not n:
            continue
        if grid.kind == "quantile":
            if b > 0 and e[b - 1] >= x:
                above += n
        elif b % 2:
            above += n if e[b // 2] > x else 0
        else:
            i = b // 2
            lo = e[i - 1] if i > 0 else -math.inf
            hi = e[i] if i < len(e) else math.inf
            above += n if lo >= x else 0
            approx |= lo < x < hi
    return above, approx


def compare_profiles(ref: NumericProfile | CategoricalProfile, cur: NumericProfile | CategoricalProfile, *,
                     grid: NumericGrid | None = None, feature: str = "value",
                     thresholds: DriftThresholds = _DEFAULT) -> FeatureDrift:
    """Feature drift from the reference profile and a (merged) current profile.

    PSI, JS, chi2, the noise floor, missing rates and the sign test equal the raw-data values.
    Medians of merged windows, the IQR ratio and KS (a lower bound on the fine grid) are
    approximate and listed in ``approximate``; Wasserstein needs raw rows and is None.
    """
    t = thresholds
    if isinstance(ref, CategoricalProfile) and isinstance(cur, CategoricalProfile):
        rc = {k: int(v) for k, v in ref.level_counts.items() if k not in (OTHER, MISSING)}
        cc = {k: int(v) for k, v in cur.level_counts.items() if k not in (OTHER, MISSING)}
        return _categorical_from_counts(feature, rc, int(ref.level_counts.get(MISSING, 0)), cc,
                                        int(cur.level_counts.get(MISSING, 0)), t,
                                        ref_other=int(ref.level_counts.get(OTHER, 0)),
                                        cur_other=int(cur.level_counts.get(OTHER, 0)))
    if not (isinstance(ref, NumericProfile) and isinstance(cur, NumericProfile)) or grid is None:
        raise DataError(f"Feature '{feature}': compare_profiles needs two numeric profiles and their grid, "
                        "or two categorical profiles.", hint="Build both profiles with the same grid.",
                        feature=feature)
    nr, nc = ref.n - ref.n_missing, cur.n - cur.n_missing
    f = _base_fields(feature, "numeric", ref.n, cur.n, nr, nc, t)
    if grid.kind == "discrete":
        mapping, n_coarse = bin_map(grid), len(grid.edges) + 1
        f.update(binning="discrete", edges=None, bins=tuple(repr(v) for v in grid.edges) + (OTHER, MISSING))
    else:
        k = 10 if nc >= t.quintiles_below else 5
        ce = coarse_edges(grid, k)
        mapping, n_coarse = bin_map(grid, k), ce.size + 1
        f.update(binning=f"quantile{k}", edges=tuple(float(v) for v in ce),
                 bins=tuple(f"bin{i}" for i in range(n_coarse)) + (MISSING,))
    counts = []
    for prof in (ref, cur):
        c = np.zeros(n_coarse + 1, dtype=np.int64)
        for b, n in prof.fine_counts.items():
            m = mapping.get(int(b))
            if m is None:
                raise DataError(f"Feature '{feature}': fine bin {b} is not on the grid.",
                                hint="Profile every window with the model version's own grid.", feature=feature)
            c[m if m >= 0 else n_coarse] += int(n)
        counts.append(c)
    f.update(_distribution_fields(counts[0], counts[1], t))
    scale, kind = _scale_from(grid.q75 - grid.q25, np.empty(0), grid.sd_pop)
    constant = grid.kind == "discrete" and len(grid.edges) == 1
    above_r, _ = _count_above(grid, ref.fine_counts, grid.median)
    f.update(median_ref=grid.median, scale_ref=scale, scale_kind=kind, constant_ref=constant,
             share_above_ref_median_ref=above_r / nr if nr else None)
    approx = ["median_shift", "iqr_ratio", "ks_D", "ks_p"]
    if nr and nc:
        med_c = cur.median_exact
        if med_c is None:
            med_c = quantile_from_profile(grid, cur, 0.5)
            approx.insert(0, "median_cur")
        above_c, gap = _count_above(grid, cur.fine_counts, grid.median)
        if gap:
            approx += ["share_above_ref_median_cur", "median_sign_z"]
        c25, c75 = quantile_from_profile(grid, cur, 0.25), quantile_from_profile(grid, cur, 0.75)
        keys = sorted(set(ref.fine_counts) | set(cur.fine_counts) - {-1})
        fr = np.cumsum([ref.fine_counts.get(b, 0) for b in keys if b >= 0]) / nr
        fc = np.cumsum([cur.fine_counts.get(b, 0) for b in keys if b >= 0]) / nc
        d = float(np.max(np.abs(fr - fc)))
        f.update(median_cur=med_c, median_shift=(med_c - grid.median) / scale, share_above_ref_median_cur=above_c / nc,
                 median_sign_z=sign_test_z(above_r, nr, above_c, nc),
                 iqr_ratio=(c75 - c25) / (grid.q75 - grid.q25) if grid.q75 > grid.q25 else None,
                 constant_broken=bool(constant and any(n for b, n in cur.fine_counts.items() if b not in (-1, 1))),
                 ks_D=d, ks_p=ks_limit_sf(math.sqrt(nr * nc / (nr + nc)) * d))
    f["approximate"] = tuple(approx)
    return _finish(f, t)
