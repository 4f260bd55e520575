"""drift: data-drift statistics, the per-feature decision rule and the dataset verdict of specs/drift.md (pure: no I/O).

Everything here takes data and returns data. The formulas are the explicit ones of
``specs/drift.md`` section 3 (type-7 quantiles, right-closed bins, PSI with eps 1e-4,
the Kolmogorov limit p-value), so R reaches the same numbers bit for bit where possible.
The section 3 formulas live in :mod:`ambidex.drift_stats` (re-exported here); mergeable
per-window profiles (section 7) in :mod:`ambidex.drift_profile`; model
KPIs and label-free estimates (sections 8 and 9) in :mod:`ambidex.kpi`.

Example
-------
>>> import numpy as np, pandas as pd
>>> from ambidex.drift import compare_numeric, compare_frames
>>> rng = np.random.default_rng(0)
>>> res = compare_numeric(rng.normal(size=2000), rng.normal(0.6, size=2000), feature="age")
>>> res.status, res.reasons
('alert', ('psi>=0.25', 'median_shift>=0.50'))
>>> ref = pd.DataFrame({"age": rng.normal(size=500), "city": rng.choice(["a", "b"], 500)})
>>> cur = pd.DataFrame({"age": rng.normal(size=500), "city": rng.choice(["a", "b", "c"], 500)})
>>> out = compare_frames(ref, cur, importance={"age": 1.0, "city": 3.0})
>>> [(f.feature, f.status) for f in out.features], out.dataset_drift
([('city', 'alert'), ('age', 'ok')], True)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .drift_stats import (Chi2Test, _as_float, _counts_sorted, _ks_wasserstein_sorted, _scale_from, _sd_pop,
                          _sorted_finite, bin_edges, bin_index, chi2_homogeneity, count_bins, js_distance,
                          ks_limit_sf, ks_test, psi, psi_null_threshold, psi_values_only, quantile7, robust_scale,
                          sign_test_z, wasserstein_norm)
from .errors import ConfigError, ContractError, DataError

__all__ = [
    "OTHER", "MISSING", "STATUSES", "DriftThresholds", "Chi2Test", "FeatureDrift", "FeatureImpact",
    "ImpactScores", "DatasetDrift",
    "quantile7", "bin_edges", "bin_index", "count_bins", "psi", "psi_values_only", "psi_null_threshold",
    "js_distance", "chi2_homogeneity", "ks_limit_sf", "ks_test", "robust_scale", "sign_test_z",
    "wasserstein_norm", "count_levels", "compare_numeric", "compare_categorical", "decide_status",
    "normalise_importance", "score_impact", "compare_frames",
]

OTHER = "__OTHER__"
MISSING = "__MISSING__"
STATUSES = ("ok", "warn", "alert", "insufficient_data")
_LEVEL_STATUS = ("ok", "warn", "alert")


@dataclass(frozen=True)
class DriftThresholds:
    """Every knob of the decision rule (section 4) and column handling (section 2), with the spec defaults."""

    psi_warn: float = 0.10
    psi_alert: float = 0.25
    alpha: float = 0.01
    median_shift_warn: float = 0.25
    median_shift_alert: float = 0.50
    sign_z: float = 2.576
    iqr_ratio_low: float = 0.8
    iqr_ratio_high: float = 1.25
    missing_delta_warn: float = 0.05
    new_share_warn: float = 0.005
    new_z: float = 3.0
    min_rows: int = 30
    quintiles_below: int = 100
    max_discrete_values: int = 20
    vocab_min_share: float = 0.005
    vocab_min_count: int = 5
    vocab_max_levels: int = 50
    eps: float = 1e-4
    dataset_share: float = 0.25
    dataset_alert_weight: float = 0.10

    def __post_init__(self):
        bad = [(n, v) for n, v in (("psi_warn", self.psi_warn), ("median_shift_warn", self.median_shift_warn))
               if not (isinstance(v, (int, float)) and v >= 0)]
        if self.psi_warn > self.psi_alert:
            bad.append(("psi_warn > psi_alert", self.psi_warn))
        if self.median_shift_warn > self.median_shift_alert:
            bad.append(("median_shift_warn > median_shift_alert", self.median_shift_warn))
        if not 0 < self.alpha < 1:
            bad.append(("alpha", self.alpha))
        if not 0 < self.eps < 1:
            bad.append(("eps", self.eps))
        if self.min_rows < 1 or self.vocab_max_levels < 1:
            bad.append(("min_rows/vocab_max_levels", (self.min_rows, self.vocab_max_levels)))
        if bad:
            raise ConfigError(f"Invalid drift thresholds: {bad}.",
                              hint="Use non-negative values with warn <= alert and 0 < alpha, eps < 1.")


_DEFAULT = DriftThresholds()


# --------------------------------------------------------------------------- feature results

@dataclass(frozen=True)
class FeatureDrift:
    """Every logged statistic of one feature, its status ('ok'|'warn'|'alert'|'insufficient_data') and reasons.

    ``n_ref``/``n_cur`` count rows including missing ones; ``*_valid`` the non-missing rows.
    ``data_status`` is 'insufficient_data' when a side has fewer than ``min_rows`` non-missing rows.
    Statistics that cannot be computed are None. ``approximate`` names statistics that were
    estimated from a profile grid rather than computed from raw rows.
    """

    feature: str
    kind: str
    binning: str
    status: str
    reasons: tuple[str, ...]
    data_status: str
    n_ref: int
    n_cur: int
    n_ref_valid: int
    n_cur_valid: int
    missing_ref: float | None
    missing_cur: float | None
    missing_delta: float | None
    bins: tuple[str, ...]
    counts_ref: tuple[int, ...]
    counts_cur: tuple[int, ...]
    edges: tuple[float, ...] | None = None
    psi: float | None = None
    psi_values_only: float | None = None
    psi_null_thr: float | None = None
    js: float | None = None
    chi2: float | None = None
    chi2_dof: int | None = None
    chi2_p: float | None = None
    cramers_v: float | None = None
    ks_D: float | None = None
    ks_p: float | None = None
    wasserstein_norm: float | None = None
    median_ref: float | None = None
    median_cur: float | None = None
    scale_ref: float | None = None
    scale_kind: str | None = None
    median_shift: float | None = None
    share_above_ref_median_ref: float | None = None
    share_above_ref_median_cur: float | None = None
    median_sign_z: float | None = None
    iqr_ratio: float | None = None
    constant_ref: bool = False
    constant_broken: bool = False
    vocab: tuple[str, ...] | None = None
    new_levels: tuple[str, ...] | None = None
    new_share: float | None = None
    good_turing_unseen: float | None = None
    new_z: float | None = None
    approximate: tuple[str, ...] = ()

    def metrics(self) -> dict[str, float]:
        """The numeric statistics that were computed, as metric -> value (rows of ``drift_result``)."""
        out = {}
        for k, v in asdict(self).items():
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, (int, float)) and k not in ("n_ref_valid", "n_cur_valid"):
                out[k] = float(v)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def decide_status(stats, thresholds: DriftThresholds = _DEFAULT) -> tuple[str, tuple[str, ...]]:
    """Section 4: status = max over the signals that pass both gates, with the reasons that fired.

    ``stats`` is a FeatureDrift or a mapping with the same keys. With fewer than ``min_rows``
    non-missing rows the distribution signals are not used; the data-quality signals (missing
    rate with >= min_rows rows on both sides, a broken constant) still raise a warn, so an
    all-missing column never reads as 'insufficient_data' alone.
    """
    g = stats.get if isinstance(stats, Mapping) else (lambda k, d=None: getattr(stats, k, d))
    t = thresholds
    dist, quality = [], []
    level = 0
    p, thr = g("psi"), g("psi_null_thr")
    psi_sig = p is not None and thr is not None and p > thr
    if psi_sig and p >= t.psi_alert:
        dist.append(f"psi>={t.psi_alert:.2f}")
        level = 2
    elif psi_sig and p >= t.psi_warn:
        dist.append(f"psi>={t.psi_warn:.2f}")
        level = 1
    ms, z = g("median_shift"), g("median_sign_z")
    if ms is not None and z is not None and abs(z) > t.sign_z:
        if abs(ms) >= t.median_shift_alert:
            dist.append(f"median_shift>={t.median_shift_alert:.2f}")
            level = 2
        elif abs(ms) >= t.median_shift_warn:
            dist.append(f"median_shift>={t.median_shift_warn:.2f}")
            level = max(level, 1)
    iqr = g("iqr_ratio")
    if iqr is not None and psi_sig and not t.iqr_ratio_low <= iqr <= t.iqr_ratio_high:
        dist.append("iqr_ratio")
        level = max(level, 1)
    md = g("missing_delta")
    enough_rows = min(g("n_ref", 0) or 0, g("n_cur", 0) or 0) >= t.min_rows
    if md is not None and abs(md) >= t.missing_delta_warn and enough_rows:
        quality.append(f"missing_delta>={t.missing_delta_warn:.2f}")
    ns, nz = g("new_share"), g("new_z")
    if ns is not None and nz is not None and ns >= t.new_share_warn and nz > t.new_z:
        dist.append("new_levels")
        level = max(level, 1)
    if g("constant_broken"):
        quality.append("constant_reference_changed")
    if g("data_status") == "insufficient_data":
        if quality:
            return "warn", tuple(quality) + ("insufficient_data",)
        return "insufficient_data", ("insufficient_data",)
    if quality:
        level = max(level, 1)
    return _LEVEL_STATUS[level], tuple(dist + quality)


def _finish(fields: dict, t: DriftThresholds) -> FeatureDrift:
    status, reasons = decide_status(fields, t)
    return FeatureDrift(status=status, reasons=reasons, **fields)


def _distribution_fields(counts_ref: np.ndarray, counts_cur: np.ndarray, t: DriftThresholds) -> dict:
    nr, nc = int(counts_ref.sum()), int(counts_cur.sum())
    out = {"counts_ref": tuple(int(v) for v in counts_ref), "counts_cur": tuple(int(v) for v in counts_cur)}
    if nr == 0 or nc == 0:
        return out
    k_eff = int(np.count_nonzero(counts_ref + counts_cur))
    chi = chi2_homogeneity(counts_ref, counts_cur)
    out.update(psi=psi(counts_ref, counts_cur, t.eps), psi_values_only=psi_values_only(counts_ref, counts_cur, t.eps),
               psi_null_thr=psi_null_threshold(k_eff, nr, nc, t.alpha), js=js_distance(counts_ref, counts_cur),
               chi2=chi.chi2, chi2_dof=chi.dof, chi2_p=chi.p, cramers_v=chi.cramers_v)
    return out


def _base_fields(feature, kind, n_ref, n_cur, nr_valid, nc_valid, t) -> dict:
    mr = (n_ref - nr_valid) / n_ref if n_ref else None
    mc = (n_cur - nc_valid) / n_cur if n_cur else None
    small = min(nr_valid, nc_valid) < t.min_rows
    return dict(feature=feature, kind=kind, data_status="insufficient_data" if small else "ok",
                n_ref=int(n_ref), n_cur=int(n_cur), n_ref_valid=int(nr_valid), n_cur_valid=int(nc_valid),
                missing_ref=mr, missing_cur=mc, missing_delta=(mc - mr) if mr is not None and mc is not None else None)


def _numeric_from_sorted(feature: str, r: np.ndarray, c: np.ndarray, n_ref: int, n_cur: int,
                         t: DriftThresholds) -> FeatureDrift:
    """All numeric statistics from sorted finite samples r, c (each sorted once) and the row totals."""
    nr, nc = r.size, c.size
    f = _base_fields(feature, "numeric", n_ref, n_cur, nr, nc, t)
    n_distinct = int(np.count_nonzero(r[1:] != r[:-1])) + 1 if nr else 0
    if 0 < n_distinct <= t.max_discrete_values:
        values = r[np.concatenate(([True], r[1:] != r[:-1]))]
        cnt_r = np.searchsorted(r, values, "right") - np.searchsorted(r, values, "left")
        cnt_c = np.searchsorted(c, values, "right") - np.searchsorted(c, values, "left")
        counts_ref = np.concatenate((cnt_r, [0, n_ref - nr]))
        counts_cur = np.concatenate((cnt_c, [nc - int(cnt_c.sum()), n_cur - nc]))
        f.update(binning="discrete", edges=None, bins=tuple(repr(float(v)) for v in values) + (OTHER, MISSING))
    else:
        k = 10 if nc >= t.quintiles_below else 5
        edges = bin_edges(r, k) if nr else np.empty(0)
        counts_ref = np.append(_counts_sorted(edges, r), n_ref - nr)
        counts_cur = np.append(_counts_sorted(edges, c), n_cur - nc)
        f.update(binning=f"quantile{k}", edges=tuple(float(e) for e in edges),
                 bins=tuple(f"bin{i}" for i in range(edges.size + 1)) + (MISSING,))
    f.update(_distribution_fields(counts_ref, counts_cur, t))
    if nr:
        med_r, q25, q75 = (float(v) for v in quantile7(r, [0.5, 0.25, 0.75]))
        sd_r = _sd_pop(r)
        scale, kind = _scale_from(q75 - q25, r, sd_r)
        f.update(median_ref=med_r, scale_ref=scale, scale_kind=kind, constant_ref=n_distinct == 1,
                 share_above_ref_median_ref=(nr - int(np.searchsorted(r, med_r, "right"))) / nr)
        if nc:
            med_c, c25, c75 = (float(v) for v in quantile7(c, [0.5, 0.25, 0.75]))
            above_c = nc - int(np.searchsorted(c, med_r, "right"))
            above_r = nr - int(np.searchsorted(r, med_r, "right"))
            d, w1 = _ks_wasserstein_sorted(r, c)
            f.update(median_cur=med_c, median_shift=(med_c - med_r) / scale, share_above_ref_median_cur=above_c / nc,
                     median_sign_z=sign_test_z(above_r, nr, above_c, nc),
                     iqr_ratio=(c75 - c25) / (q75 - q25) if q75 > q25 else None,
                     constant_broken=bool(n_distinct == 1 and (c[0] != r[0] or c[-1] != r[0])),
                     ks_D=d, ks_p=ks_limit_sf(math.sqrt(nr * nc / (nr + nc)) * d),
                     wasserstein_norm=w1 / max(sd_r, 1e-3))
    return _finish(f, t)


def compare_numeric(ref, cur, *, feature: str = "value", thresholds: DriftThresholds = _DEFAULT) -> FeatureDrift:
    """Drift of one numeric feature between a reference and a current window (raw values; NaN/None/inf missing).

    >>> compare_numeric(list(range(40)), list(range(40)), feature="x").status
    'ok'
    """
    r, c = _as_float(ref, feature), _as_float(cur, feature)
    return _numeric_from_sorted(feature, _sorted_finite(r), _sorted_finite(c), r.size, c.size, thresholds)


def count_levels(values, feature: str = "value") -> tuple[dict[str, int], int]:
    """Level counts (labels as str) and the number of missing values (None, NaN, pd.NA) of a categorical column."""
    import pandas as pd

    s = values if isinstance(values, pd.Series) else pd.Series(list(values) if not hasattr(values, "__array__")
                                                                else values, dtype=object)
    miss = s.isna()
    n_missing = int(miss.sum())
    vc = (s[~miss] if n_missing else s).value_counts(sort=False)
    counts: dict[str, int] = {}
    for lv, n in zip(vc.index.tolist(), vc.to_numpy().tolist()):
        key = lv if isinstance(lv, str) else str(lv)
        counts[key] = counts.get(key, 0) + int(n)
    for reserved in (OTHER, MISSING):
        if reserved in counts:
            raise DataError(f"Feature '{feature}' has a level named '{reserved}', which is reserved.",
                            hint="Rename that level before drift is computed.", feature=feature)
    return counts, n_missing


def _categorical_from_counts(feature: str, ref_counts: Mapping[str, int], m_ref: int, cur_counts: Mapping[str, int],
                             m_cur: int, t: DriftThresholds, *, ref_other: int = 0, cur_other: int = 0,
                             approximate: tuple[str, ...] = ()) -> FeatureDrift:
    """Categorical statistics from level counts; ``*_other`` are rows whose level was lost to a profile cap."""
    nr_valid = sum(ref_counts.values()) + ref_other
    nc_valid = sum(cur_counts.values()) + cur_other
    n_ref, n_cur = nr_valid + m_ref, nc_valid + m_cur
    f = _base_fields(feature, "categorical", n_ref, n_cur, nr_valid, nc_valid, t)
    min_share = max(t.vocab_min_share, t.vocab_min_count / n_cur) if n_cur else 1.0
    ranked = sorted(ref_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    vocab = [lv for lv, n in ranked if n_ref and n / n_ref >= min_share][: t.vocab_max_levels]
    cr = [ref_counts[lv] for lv in vocab]
    cc = [cur_counts.get(lv, 0) for lv in vocab]
    counts_ref = np.array(cr + [nr_valid - sum(cr), m_ref], dtype=np.int64)
    counts_cur = np.array(cc + [nc_valid - sum(cc), m_cur], dtype=np.int64)
    new = sorted(((lv, n) for lv, n in cur_counts.items() if lv not in ref_counts), key=lambda kv: (-kv[1], kv[0]))
    f.update(binning="categorical", bins=tuple(vocab) + (OTHER, MISSING), vocab=tuple(vocab),
             new_levels=tuple(lv for lv, _ in new), approximate=approximate)
    f.update(_distribution_fields(counts_ref, counts_cur, t))
    if n_ref and n_cur:
        f1 = sum(1 for n in ref_counts.values() if n == 1)
        gt = max(f1 / n_ref, 1 / n_ref)
        share = sum(n for _, n in new) / n_cur
        var = gt * (1 - gt) * (1 / n_cur + 1 / n_ref)
        f.update(new_share=share, good_turing_unseen=gt, new_z=(share - gt) / math.sqrt(var) if var > 0 else None)
    return _finish(f, t)


def compare_categorical(ref, cur, *, feature: str = "value", thresholds: DriftThresholds = _DEFAULT) -> FeatureDrift:
    """Drift of one categorical feature (vocabulary, __OTHER__, __MISSING__, Good-Turing new-level gate).

    >>> compare_categorical(["a"] * 40 + ["b"] * 40, ["a"] * 40 + ["b"] * 40).psi
    0.0
    """
    rc, rm = count_levels(ref, feature)
    cc, cm = count_levels(cur, feature)
    return _categorical_from_counts(feature, rc, rm, cc, cm, thresholds)


# --------------------------------------------------------------------------- impact and dataset verdict (section 5)

@dataclass(frozen=True)
class FeatureImpact:
    """Normalised importance w and the two impacts of one feature (None when the statistic is missing)."""

    feature: str
    w: float
    impact_psi: float | None
    impact_median: float | None
    status: str


@dataclass(frozen=True)
class ImpactScores:
    """Section 5 dataset scores: per-feature impact, weighted PSI, drifted importance share and the verdict."""

    impact: Mapping[str, FeatureImpact]
    weighted_psi: float
    drifted_importance_share: float
    dataset_drift: bool
    reasons: tuple[str, ...]
    uniform_importance: bool


def normalise_importance(importance: Mapping[str, float] | None, features: Sequence[str] | None = None, *,
                         uniform: bool = False) -> tuple[dict[str, float], bool]:
    """w_j = max(imp_j, 0)/sum max(imp_k, 0), uniform 1/p when all are <= 0; returns (w, used_uniform).

    Without importance this raises ContractError unless ``uniform=True`` is asked for explicitly.
    """
    if importance is None:
        if not uniform or not features:
            raise ContractError("The model version has no feature importance, so drift impact cannot be weighted.",
                                hint="Store permutation or SHAP importance with the model, or pass "
                                     "uniform_importance=True to weight features equally.")
        return {f: 1.0 / len(features) for f in features}, True
    imp = {}
    for name, v in importance.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            fv = math.nan
        if not math.isfinite(fv):
            raise DataError(f"Importance of feature '{name}' is {v!r}, not a finite number.",
                            hint="Recompute the importance or set it to 0.", feature=name)
        imp[str(name)] = max(fv, 0.0)
    if not imp:
        raise ContractError("The feature importance is empty.", hint="Store importance for every model feature.")
    total = sum(imp.values())
    if total <= 0:
        return {k: 1.0 / len(imp) for k in imp}, True
    return {k: v / total for k, v in imp.items()}, False


def score_impact(features: Mapping[str, Any], importance: Mapping[str, float] | None, *,
                 uniform_importance: bool = False, thresholds: DriftThresholds = _DEFAULT) -> ImpactScores:
    """Impact (w*|median shift|, w*PSI), weighted PSI, drifted importance share and the dataset verdict.

    ``features`` maps a name to a FeatureDrift or a mapping with ``psi``, ``median_shift`` and ``status``.
    Dataset drift = drifted_importance_share >= 0.25 or any feature with w >= 0.10 in 'alert'.

    >>> s = score_impact({"a": {"psi": 0.3, "status": "alert"}, "b": {"psi": 0.0, "status": "ok"}},
    ...                  {"a": 1.0, "b": 1.0})
    >>> s.weighted_psi, s.dataset_drift
    (0.15, True)
    """
    w, uniform = normalise_importance(importance, list(features), uniform=uniform_importance)
    unknown = [f for f in features if f not in w]
    if unknown:
        raise DataError(f"No importance for feature(s) {unknown}.",
                        hint="Store importance for every compared feature or restrict the columns.", features=unknown)
    impact, weighted, share, reasons = {}, 0.0, 0.0, []
    for name, res in features.items():
        g = res.get if isinstance(res, Mapping) else (lambda k, d=None, r=res: getattr(r, k, d))
        p, ms, status = g("psi"), g("median_shift"), g("status")
        if status not in STATUSES:
            raise DataError(f"Feature '{name}' has status {status!r}.", hint=f"Use one of {STATUSES}.", feature=name)
        wj = w[name]
        ip = wj * p if p is not None else None
        impact[name] = FeatureImpact(name, wj, ip, wj * abs(ms) if ms is not None else None, status)
        weighted += ip or 0.0
        if status in ("warn", "alert"):
            share += wj
        if status == "alert" and wj >= thresholds.dataset_alert_weight:
            reasons.append(f"alert:{name}")
    if share >= thresholds.dataset_share:
        reasons.insert(0, f"drifted_importance_share>={thresholds.dataset_share:.2f}")
    return ImpactScores(impact, weighted, share, bool(reasons), tuple(reasons), uniform)


@dataclass(frozen=True)
class DatasetDrift:
    """compare_frames' result: per-feature drift sorted by impact_psi (descending) and the dataset scores."""

    features: tuple[FeatureDrift, ...]
    scores: ImpactScores

    @property
    def dataset_drift(self) -> bool:
        return self.scores.dataset_drift

    @property
    def weighted_psi(self) -> float:
        return self.scores.weighted_psi

    @property
    def drifted_importance_share(self) -> float:
        return self.scores.drifted_importance_share

    def feature(self, name: str) -> FeatureDrift:
        """The result of one feature by name."""
        for f in self.features:
            if f.feature == name:
                return f
        raise DataError(f"No drift result for feature '{name}'.", hint=f"Known: {[f.feature for f in self.features]}.")


def _column_kind(dtype, feature: str) -> str:
    import pandas as pd
    from pandas.api import types as pt

    if pt.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype) or pt.is_object_dtype(dtype) \
            or pt.is_string_dtype(dtype):
        return "categorical"
    if pt.is_numeric_dtype(dtype) and not pt.is_complex_dtype(dtype):
        return "numeric"
    raise DataError(f"Feature '{feature}' has dtype {dtype}, which drift does not handle.",
                    hint="Cast it to a number or a string (category) before comparing, or leave it out of columns.",
                    feature=feature)


def compare_frames(reference, current, *, importance: Mapping[str, float] | None = None,
                   columns: Sequence[str] | None = None, thresholds: DriftThresholds = _DEFAULT,
                   uniform_importance: bool = False) -> DatasetDrift:
    """Drift of every column of two DataFrames, the impacts and the dataset verdict (section 2-5).

    Numeric dtypes are compared as numeric; bool, category, object and string as categorical.
    Each numeric column is sorted once; quantiles, bins, KS and Wasserstein come from the sorted arrays.
    """
    cols = list(reference.columns) if columns is None else list(columns)
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise DataError(f"Column(s) {missing} not in the {name} frame.",
                            hint="Pass columns= with features present in both frames.", features=missing)
    w, uniform = normalise_importance(importance, cols, uniform=uniform_importance)
    results = {}
    for col in cols:
        kind_r, kind_c = _column_kind(reference[col].dtype, col), _column_kind(current[col].dtype, col)
        if kind_r != kind_c:
            raise DataError(f"Feature '{col}' is {kind_r} in the reference but {kind_c} in the current window.",
                            hint="Fix the feature-store schema so both windows share a type.", feature=col)
        if kind_r == "numeric":
            r, c = _as_float(reference[col], col), _as_float(current[col], col)
            results[col] = _numeric_from_sorted(col, _sorted_finite(r), _sorted_finite(c), r.size, c.size, thresholds)
        else:
            results[col] = compare_categorical(reference[col], current[col], feature=col, thresholds=thresholds)
    scores = score_impact(results, w, thresholds=thresholds)
    scores = ImpactScores(scores.impact, scores.weighted_psi, scores.drifted_importance_share, scores.dataset_drift,
                          scores.reasons, uniform)

    def key(f: FeatureDrift):
        ip = scores.impact[f.feature].impact_psi
        return (ip is None, -(ip or 0.0), f.feature)

    return DatasetDrift(tuple(sorted(results.values(), key=key)), scores)
