"""drift_stats: the exact formulas of specs/drift.md section 3 (type-7 quantile, bins, PSI, JS, chi2, KS, scale).

Explicit formulas instead of library defaults, so R and Python agree (section 11). Inputs are
counts or samples; non-finite values (NaN, None, +-inf) are missing. :mod:`ambidex.drift` builds
feature verdicts on top of these and re-exports them.

Example
-------
>>> from ambidex.drift_stats import psi, psi_null_threshold
>>> round(psi([50, 30, 20, 0], [40, 30, 20, 10]), 4), round(psi_null_threshold(4, 100, 100), 4)
(0.7124, 0.2269)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from .errors import DataError

__all__ = [
    "Chi2Test", "quantile7", "bin_edges", "bin_index", "count_bins", "psi", "psi_values_only",
    "psi_null_threshold", "js_distance", "chi2_homogeneity", "ks_limit_sf", "ks_test", "robust_scale",
    "sign_test_z", "wasserstein_norm",
]

_IQR_TO_SD = 1.349


def quantile7(sorted_x, p):
    """Hyndman-Fan type-7 quantile of an ascending, finite sample, written out as in section 3.

    >>> quantile7([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    x = np.asarray(sorted_x, dtype=np.float64)
    if x.size == 0:
        raise DataError("quantile7 got an empty sample.", hint="Drop empty windows before asking for quantiles.")
    pa = np.asarray(p, dtype=np.float64)
    if np.any(~(pa >= 0) | ~(pa <= 1)):
        raise DataError(f"quantile7 probabilities must lie in [0, 1], got {p!r}.", hint="Pass i/k for i in 0..k.")
    n = x.size
    h = (n - 1) * pa
    lo = np.floor(h).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    q = x[lo] + (h - lo) * (x[hi] - x[lo])
    return float(q) if q.ndim == 0 else q


def bin_edges(ref_sorted, k: int) -> np.ndarray:
    """Unique type-7 reference quantiles at i/k, i = 1..k-1: the edges of right-closed bins.

    >>> bin_edges([1.0, 2.0, 3.0, 4.0, 5.0], 2).tolist()
    [3.0]
    """
    if k < 2:
        raise DataError(f"bin_edges needs k >= 2 bins, got {k}.", hint="Use 10 (deciles) or 5 (quintiles).")
    return np.unique(quantile7(ref_sorted, np.arange(1, k) / k))


def bin_index(edges, x) -> np.ndarray:
    """Right-closed bin of each value: #{e in edges : e < x}, so a value on an edge goes to the lower bin."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(x, dtype=np.float64), "left")


def count_bins(edges, values) -> np.ndarray:
    """Counts over the len(edges)+1 value bins with the missing bin (NaN, None, +-inf) appended.

    >>> count_bins([0.0], [-1.0, 0.0, 2.0, None, float("inf")]).tolist()
    [2, 1, 2]
    """
    e = np.asarray(edges, dtype=np.float64)
    v = _as_float(values, "values")
    ok = np.isfinite(v)
    counts = np.bincount(np.searchsorted(e, v[ok], "left"), minlength=e.size + 1)
    return np.append(counts, v.size - int(ok.sum())).astype(np.int64)


def _counts_sorted(edges: np.ndarray, sorted_finite: np.ndarray) -> np.ndarray:
    """count_bins without the missing bin, for an already sorted finite sample (O(k log n))."""
    cum = np.searchsorted(sorted_finite, edges, "right")
    return np.diff(np.concatenate(([0], cum, [sorted_finite.size]))).astype(np.int64)


def psi(counts_ref, counts_cur, eps: float = 1e-4) -> float:
    """Population stability index over the given bins: sum (q-p) ln(q/p), p and q floored at eps, no renormalisation.

    >>> round(psi([10, 10], [10, 10]), 12)
    0.0
    """
    cr, cc = _two_counts(counts_ref, counts_cur)
    nr, nc = cr.sum(), cc.sum()
    if nr <= 0 or nc <= 0:
        raise DataError("PSI needs at least one row on each side.", hint="Check the window is not empty.")
    p = np.maximum(cr / nr, eps)
    q = np.maximum(cc / nc, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_values_only(counts_ref, counts_cur, eps: float = 1e-4) -> float | None:
    """PSI without the last (missing) bin, shares taken over the non-missing rows; None if a side has none."""
    cr, cc = _two_counts(counts_ref, counts_cur)
    if cr[:-1].sum() <= 0 or cc[:-1].sum() <= 0:
        return None
    return psi(cr[:-1], cc[:-1], eps)


def psi_null_threshold(k_eff: int, n_ref: float, n_cur: float, alpha: float = 0.01) -> float:
    """Noise floor of PSI: chi2_{1-alpha, k_eff-1} (1/n_ref + 1/n_cur); 0 when fewer than two bins are occupied."""
    if k_eff <= 1:
        return 0.0
    if n_ref <= 0 or n_cur <= 0:
        raise DataError("psi_null_threshold needs n_ref > 0 and n_cur > 0.", hint="Check the window is not empty.")
    q = 1.0 - alpha  # same arithmetic as scipy chi2.ppf(1-alpha, df) and R qchisq(1-alpha, df)
    return float(special.chdtri(k_eff - 1, 1.0 - q) * (1.0 / n_ref + 1.0 / n_cur))


def js_distance(counts_ref, counts_cur) -> float:
    """Jensen-Shannon distance, log base 2 (range [0, 1]), 0 log 0 = 0, no eps."""
    cr, cc = _two_counts(counts_ref, counts_cur)
    if cr.sum() <= 0 or cc.sum() <= 0:
        raise DataError("JS distance needs at least one row on each side.", hint="Check the window is not empty.")
    p, q = cr / cr.sum(), cc / cc.sum()
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0))


@dataclass(frozen=True)
class Chi2Test:
    """Chi-square homogeneity test on the 2 x k table of counts (zero columns dropped, no Yates)."""

    chi2: float
    dof: int
    p: float
    cramers_v: float


def chi2_homogeneity(counts_ref, counts_cur) -> Chi2Test:
    """Chi-square test of [counts_ref; counts_cur] with zero-total columns dropped; Cramer's V = sqrt(chi2/N)."""
    cr, cc = _two_counts(counts_ref, counts_cur)
    keep = (cr + cc) > 0
    obs = np.vstack((cr[keep], cc[keep]))
    rows = obs.sum(axis=1)
    if rows[0] <= 0 or rows[1] <= 0:
        raise DataError("chi2 needs at least one row on each side.", hint="Check the window is not empty.")
    dof = int(keep.sum()) - 1
    if dof == 0:
        return Chi2Test(0.0, 0, 1.0, 0.0)
    n = rows.sum()
    exp = np.outer(rows, obs.sum(axis=0)) / n
    stat = float(np.sum((obs - exp) ** 2 / exp))
    return Chi2Test(stat, dof, float(special.chdtrc(dof, stat)), math.sqrt(stat / n))


def ks_limit_sf(lam: float) -> float:
    """Kolmogorov limit survival function Q_KS(lambda) with the two series of section 3 (== kstwobign.sf)."""
    if not lam > 0.05:  # the first series term is below 1e-200 here, so Q_KS is 1 in double precision
        return 1.0
    if lam < 1.18:
        c = -(math.pi ** 2) / (8.0 * lam * lam)
        s = 0.0
        for k in range(1, 200):
            term = math.exp((2 * k - 1) ** 2 * c)
            s += term
            if term < 1e-17 * s:
                break
        p = 1.0 - math.sqrt(2.0 * math.pi) / lam * s
    else:
        s = 0.0
        for k in range(1, 200):
            term = math.exp(-2.0 * k * k * lam * lam)
            s += term if k % 2 else -term
            if term < 1e-17:
                break
        p = 2.0 * s
    return min(max(p, 0.0), 1.0)


def _ks_wasserstein_sorted(r: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """KS D at every pooled value (ties handled) and W1 = sum |F_r - F_c| dx, from two sorted finite samples."""
    nr, nc = r.size, c.size
    z = np.concatenate((r, c))
    order = np.argsort(z, kind="stable")  # two ascending runs: timsort merges them in linear time
    zs = z[order]
    cr = np.cumsum(order < nr)
    diff = np.abs(cr / nr - (np.arange(1, zs.size + 1) - cr) / nc)
    last = np.empty(zs.size, dtype=bool)
    np.not_equal(zs[1:], zs[:-1], out=last[:-1])
    last[-1] = True
    d = float(diff[last].max())
    w1 = float(np.dot(diff[:-1], np.diff(zs)))
    return d, w1


def ks_test(ref, cur) -> tuple[float, float]:
    """Two-sample KS (D, p) with the asymptotic Kolmogorov p-value of section 3 (not scipy's ks_2samp)."""
    r, c = _sorted_finite(_as_float(ref, "ref")), _sorted_finite(_as_float(cur, "cur"))
    if r.size == 0 or c.size == 0:
        raise DataError("KS needs at least one finite value on each side.", hint="Check the window is not empty.")
    d, _ = _ks_wasserstein_sorted(r, c)
    return d, ks_limit_sf(math.sqrt(r.size * c.size / (r.size + c.size)) * d)


def _sd_pop(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x - x.mean()) ** 2))) if x.size else 0.0


def robust_scale(ref_sorted) -> tuple[float, str]:
    """IQR/1.349 ('iqr'), else population SD ('std'), else 1.0 ('constant')."""
    r = np.asarray(ref_sorted, dtype=np.float64)
    q25, q75 = quantile7(r, [0.25, 0.75])
    return _scale_from(float(q75 - q25), r)


def _scale_from(iqr: float, r: np.ndarray, sd: float | None = None) -> tuple[float, str]:
    if iqr > 0:
        return iqr / _IQR_TO_SD, "iqr"
    sd = _sd_pop(r) if sd is None else sd
    if sd > 0:
        return sd, "std"
    return 1.0, "constant"


def sign_test_z(n_above_ref: int, n_ref: int, n_above_cur: int, n_cur: int) -> float:
    """Tie-safe two-proportion z of the shares above the reference median (0 when both shares are 0 or 1)."""
    pr, pc = n_above_ref / n_ref, n_above_cur / n_cur
    pbar = (pr * n_ref + pc * n_cur) / (n_ref + n_cur)
    var = pbar * (1 - pbar) * (1 / n_ref + 1 / n_cur)
    return float((pc - pr) / math.sqrt(var)) if var > 0 else 0.0


def wasserstein_norm(ref, cur) -> float:
    """W1(ref, cur) / max(SD_pop(ref), 1e-3), logged for Evidently parity."""
    r, c = _sorted_finite(_as_float(ref, "ref")), _sorted_finite(_as_float(cur, "cur"))
    if r.size == 0 or c.size == 0:
        raise DataError("Wasserstein needs at least one finite value on each side.", hint="Check the window.")
    return _ks_wasserstein_sorted(r, c)[1] / max(_sd_pop(r), 1e-3)


# --------------------------------------------------------------------------- helpers

def _as_float(values, feature: str) -> np.ndarray:
    """A 1-D float64 array; None and pd.NA become NaN. Non-numeric input is a DataError naming the feature."""
    try:
        if hasattr(values, "to_numpy"):
            if getattr(values.dtype, "kind", "") == "b":
                raise TypeError("boolean")
            arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"Feature '{feature}' is not numeric ({exc}).",
                        hint="Declare it categorical, or clean the column to numbers.", feature=feature) from None
    if arr.ndim != 1:
        raise DataError(f"Feature '{feature}' must be one-dimensional, got shape {arr.shape}.",
                        hint="Pass one column at a time.", feature=feature)
    return arr


def _sorted_finite(a: np.ndarray) -> np.ndarray:
    ok = np.isfinite(a)
    return np.sort(a if ok.all() else a[ok])


def _two_counts(a, b) -> tuple[np.ndarray, np.ndarray]:
    ca, cb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if ca.shape != cb.shape or ca.ndim != 1 or ca.size == 0:
        raise DataError(f"Count vectors must be 1-D and of equal length, got {ca.shape} and {cb.shape}.",
                        hint="Build both from the same bins.")
    if np.any(~np.isfinite(ca)) or np.any(ca < 0) or np.any(~np.isfinite(cb)) or np.any(cb < 0):
        raise DataError("Counts must be finite and non-negative.", hint="Check the profile rows.")
    return ca, cb
