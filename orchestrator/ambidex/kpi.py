"""kpi: model KPIs with analytic SEs, the retrain trigger, champion/challenger tests and label-free estimates (drift.md 8-9).

Pure functions: arrays in, dataclasses out. SEs are analytic (no bootstrap) so R and Python agree;
"SD" is the population SD (section 11) except in the paired loss test, which uses ddof = 1.

Example
-------
>>> from ambidex.kpi import decide_retrain, paired_loss_test
>>> d = decide_retrain("roc_auc", {"T": 0.78, "T-1": 0.82, "T-2": 0.83, "B": 0.84},
...                    {"T": 0.0144, "T-1": 0.0122, "T-2": 0.0125, "B": 0.008})
>>> d.retrain, d.reasons
(True, ('benchmark_breach', 'sustained_decline'))
>>> round(paired_loss_test([0.5, 0.6, 0.7, 0.4], [0.4, 0.55, 0.6, 0.38]).z, 3)
3.42
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import special

from .drift_stats import bin_edges
from .errors import DataError

__all__ = [
    "HIGHER_IS_BETTER", "Kpi", "RetrainDecision", "PairedLossTest", "PromotionDecision", "CalibrationTable",
    "CbpeEstimate", "DleTable", "DleEstimate",
    "se_hanley_mcneil", "se_proportion", "measure_kpi", "default_tolerance", "decide_retrain", "paired_loss_test",
    "decide_promotion", "fit_calibration", "calibrate", "estimate_cbpe", "fit_dle", "estimate_dle",
]

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "precision": True, "recall": True, "f1": True,
                    "log_loss": False, "rmse": False, "mae": False}
_ABSOLUTE_TOL = {"roc_auc", "accuracy", "precision", "recall", "f1"}
Z_BENCHMARK = 2.326   # one-sided alpha = 0.01
Z_DECLINE = 1.645     # one-sided alpha = 0.05
_LOGLOSS_CLIP = 1e-15


@dataclass(frozen=True)
class Kpi:
    """One KPI of one window: value, analytic SE, rows, and whether it is a label-free estimate."""

    metric: str
    value: float
    se: float
    n: int
    is_estimated: bool = False
    method: str = "analytic"


def se_hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley-McNeil SE of an AUC: sqrt([A(1-A) + (n+-1)(Q1-A^2) + (n--1)(Q2-A^2)]/(n+ n-))."""
    if n_pos < 1 or n_neg < 1:
        raise DataError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives.",
                        hint="Use a window with labels of both classes.")
    a = float(auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def se_proportion(p: float, n: int) -> float:
    """SE of a proportion: sqrt(p(1-p)/n)."""
    if n < 1:
        raise DataError("A proportion needs n >= 1 rows.", hint="Use a labelled window with rows.")
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def _arrays(metric: str, y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    try:
        y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{metric}: labels and predictions must be numbers ({exc}).",
                        hint="Encode labels as 0/1 and pass numeric predictions.", metric=metric) from None
    if y.ndim != 1 or y.shape != p.shape or y.size == 0:
        raise DataError(f"{metric}: need two non-empty 1-D arrays of equal length, got {y.shape} and {p.shape}.",
                        hint="Pass one label and one prediction per row.", metric=metric)
    bad = int(np.count_nonzero(~np.isfinite(y) | ~np.isfinite(p)))
    if bad:
        raise DataError(f"{metric}: {bad} row(s) have a missing or infinite label or prediction.",
                        hint="Drop unlabelled rows before measuring the KPI.", metric=metric)
    return y, p


def _binary(metric: str, y: np.ndarray) -> np.ndarray:
    if np.any((y != 0) & (y != 1)):
        raise DataError(f"{metric}: labels must be 0/1, got values {sorted(set(np.unique(y).tolist()))[:5]}.",
                        hint="Encode the positive class as 1.", metric=metric)
    return y.astype(bool)


def _sd_pop(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x - x.mean()) ** 2)))


def _auc(pos: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted 1/2 (average ranks)."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    start = np.concatenate(([True], s[1:] != s[:-1]))
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    size = np.diff(np.append(first, s.size))
    ranks = (first + (size + 1) / 2.0)[group]
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    return float((ranks[pos[order]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def measure_kpi(metric: str, y_true, y_pred, *, threshold: float = 0.5) -> Kpi:
    """KPI and analytic SE of one labelled window.

    roc_auc (scores; Hanley-McNeil), accuracy (labels, or probabilities cut at ``threshold``;
    sqrt(p(1-p)/n)), log_loss (probabilities; SE = SD_pop(per-row loss)/sqrt(n), the same
    mean-of-per-row-losses SE the spec uses for MAE), rmse (delta method SD_pop(e^2)/(2 RMSE sqrt n))
    and mae (SD_pop(|e|)/sqrt n).

    >>> measure_kpi("mae", [1.0, 2.0, 3.0], [1.5, 2.0, 2.0]).value
    0.5
    """
    if metric not in HIGHER_IS_BETTER or metric in ("precision", "recall", "f1"):
        raise DataError(f"Unknown KPI '{metric}'.", hint="Use roc_auc, accuracy, log_loss, rmse or mae.",
                        metric=metric)
    y, p = _arrays(metric, y_true, y_pred)
    n = y.size
    if metric == "roc_auc":
        pos = _binary(metric, y)
        n_pos = int(pos.sum())
        if n_pos in (0, n):
            raise DataError(f"roc_auc: the window has only one class ({n_pos} positives of {n}).",
                            hint="Use a window with labels of both classes, or report accuracy.", metric=metric)
        a = _auc(pos, p)
        return Kpi(metric, a, se_hanley_mcneil(a, n_pos, n - n_pos), n)
    if metric == "accuracy":
        yb = _binary(metric, y) if np.all((y == 0) | (y == 1)) else y
        pred = (p >= threshold) if np.any((p != 0) & (p != 1)) and np.all((p >= 0) & (p <= 1)) else p
        acc = float(np.mean(pred == yb))
        return Kpi(metric, acc, se_proportion(acc, n), n)
    if metric == "log_loss":
        yb = _binary(metric, y)
        if np.any((p < 0) | (p > 1)):
            raise DataError("log_loss: predictions must be probabilities in [0, 1].",
                            hint="Pass the positive-class probability.", metric=metric)
        q = np.clip(p, _LOGLOSS_CLIP, 1 - _LOGLOSS_CLIP)
        loss = -np.where(yb, np.log(q), np.log1p(-q))
        return Kpi(metric, float(loss.mean()), _sd_pop(loss) / math.sqrt(n), n)
    e = p - y
    if metric == "rmse":
        e2 = e * e
        rmse = math.sqrt(float(e2.mean()))
        return Kpi(metric, rmse, _sd_pop(e2) / (2 * rmse * math.sqrt(n)) if rmse > 0 else 0.0, n)
    ae = np.abs(e)
    return Kpi(metric, float(ae.mean()), _sd_pop(ae) / math.sqrt(n), n)


def default_tolerance(metric: str, benchmark: float | None) -> float:
    """0.02 absolute for AUC/accuracy-like metrics; 5% of the benchmark for losses (RMSE, MAE, log-loss)."""
    if metric in _ABSOLUTE_TOL:
        return 0.02
    if benchmark is None:
        raise DataError(f"{metric}: the default tolerance is 5% of the benchmark, and no benchmark was given.",
                        hint="Pass kpi['B'] or an explicit tol.", metric=metric)
    return 0.05 * abs(benchmark)


@dataclass(frozen=True)
class RetrainDecision:
    """Deltas (positive = T is worse), z-scores and the triggers of section 8."""

    metric: str
    tol: float
    delta: Mapping[str, float]
    z: Mapping[str, float | None]
    trigger_benchmark: bool
    trigger_sustained_decline: bool
    trigger_drift_escalation: bool
    retrain: bool
    reasons: tuple[str, ...]


def decide_retrain(metric: str, kpi: Mapping[str, float], se: Mapping[str, float], *, tol: float | None = None,
                   higher_is_better: bool | None = None, dataset_drift: bool = False,
                   estimated_delta: float | None = None) -> RetrainDecision:
    """Retrain trigger: (a) benchmark breach, (b) sustained decline vs T-1 and T-2, optional (c) drift escalation.

    ``kpi`` and ``se`` are keyed by "T", "T-1", "T-2" and "B" (any but "T" may be absent; SE of "B"
    defaults to 0, a business floor). (c) fires when ``dataset_drift`` and a label-free
    ``estimated_delta`` (oriented like delta) >= tol.
    """
    if "T" not in kpi:
        raise DataError(f"{metric}: no KPI for the current window 'T'.", hint="Pass kpi={'T': ..., 'T-1': ...}.")
    hib = HIGHER_IS_BETTER.get(metric) if higher_is_better is None else higher_is_better
    if hib is None:
        raise DataError(f"Unknown orientation of KPI '{metric}'.", hint="Pass higher_is_better=True/False.")
    s = 1.0 if hib else -1.0
    tol = default_tolerance(metric, kpi.get("B")) if tol is None else float(tol)
    se_t = float(se.get("T", 0.0))
    delta, z = {}, {}
    for x in ("T-1", "T-2", "B"):
        if kpi.get(x) is None:
            continue
        delta[x] = s * (kpi[x] - kpi["T"])
        den = math.sqrt(se_t ** 2 + float(se.get(x, 0.0)) ** 2)
        z[x] = delta[x] / den if den > 0 else None

    def fired(x, zmin):
        return x in delta and delta[x] >= tol and z[x] is not None and z[x] >= zmin

    a = fired("B", Z_BENCHMARK)
    b = fired("T-1", Z_DECLINE) and fired("T-2", Z_DECLINE)
    c = bool(dataset_drift and estimated_delta is not None and estimated_delta >= tol)
    reasons = tuple(r for r, on in (("benchmark_breach", a), ("sustained_decline", b), ("drift_escalation", c)) if on)
    return RetrainDecision(metric, tol, delta, z, a, b, c, a or b or c, reasons)


@dataclass(frozen=True)
class PairedLossTest:
    """d_i = loss_champion - loss_challenger: mean, SD (ddof=1), z, one-sided p and the relative gain."""

    n: int
    mean_diff: float
    sd: float
    z: float | None
    p_one_sided: float | None
    relative_gain: float | None


def paired_loss_test(loss_champion, loss_challenger) -> PairedLossTest:
    """Paired per-row loss test on the same hold-out rows: z = mean(d)/(sd(d, ddof=1)/sqrt(n)).

    z and p are None when every d_i is equal (sd = 0): there is no spread to test against.
    """
    a, b = _arrays("paired_loss_test", loss_champion, loss_challenger)
    if a.size < 2:
        raise DataError(f"paired_loss_test needs at least 2 rows, got {a.size}.",
                        hint="Score both models on the same hold-out rows.")
    d = a - b
    mean = float(d.mean())
    sd = float(np.std(d, ddof=1))
    z = mean / (sd / math.sqrt(d.size)) if sd > 0 else None
    base = float(a.mean())
    return PairedLossTest(int(d.size), mean, sd, z, float(special.ndtr(-z)) if z is not None else None,
                          mean / base if base > 0 else None)


@dataclass(frozen=True)
class PromotionDecision:
    """Champion/challenger decision: promote the best challenger only if z >= z_min and gain >= min_gain."""

    promote: bool
    winner: str | None
    best_challenger: str | None
    tests: Mapping[str, PairedLossTest]
    reason: str


def decide_promotion(loss_champion, challengers: Mapping[str, Sequence[float]], *, z_min: float = Z_DECLINE,
                     min_gain: float = 0.002) -> PromotionDecision:
    """Pick the challenger with the largest mean loss gain; promote it only past both gates (hysteresis)."""
    if not challengers:
        return PromotionDecision(False, None, None, {}, "no challenger")
    tests = {name: paired_loss_test(loss_champion, loss) for name, loss in challengers.items()}
    best = max(tests, key=lambda k: (tests[k].mean_diff, k))
    t = tests[best]
    if t.z is None or t.z < z_min:
        return PromotionDecision(False, None, best, tests, f"z < {z_min}")
    if t.relative_gain is None or t.relative_gain < min_gain:
        return PromotionDecision(False, None, best, tests, f"relative gain < {min_gain}")
    return PromotionDecision(True, best, best, tests, "significant gain")


# --------------------------------------------------------------------------- label-free estimates (section 9)

@dataclass(frozen=True)
class CalibrationTable:
    """Histogram-binning calibration: observed positive rate per reference score-quantile bin (right-closed)."""

    edges: tuple[float, ...]
    rates: tuple[float, ...]
    counts: tuple[int, ...]


def fit_calibration(scores_ref, y_ref, *, n_bins: int = 10) -> CalibrationTable:
    """Positive rate per type-7 score-quantile bin of the reference; an empty bin gets the overall rate."""
    y, s = _arrays("fit_calibration", y_ref, scores_ref)
    pos = _binary("fit_calibration", y)
    edges = bin_edges(np.sort(s), n_bins)
    idx = np.searchsorted(edges, s, "left")
    cnt = np.bincount(idx, minlength=edges.size + 1)
    hit = np.bincount(idx, weights=pos.astype(np.float64), minlength=edges.size + 1)
    overall = float(pos.mean())
    rates = tuple(float(h / c) if c else overall for h, c in zip(hit, cnt))
    return CalibrationTable(tuple(float(e) for e in edges), rates, tuple(int(c) for c in cnt))


def calibrate(table: CalibrationTable, scores) -> np.ndarray:
    """Calibrated probability of each score from the table."""
    _, s = _arrays("calibrate", np.zeros(np.size(scores)), scores)
    return np.asarray(table.rates)[np.searchsorted(np.asarray(table.edges), s, "left")]


@dataclass(frozen=True)
class CbpeEstimate:
    """Expected confusion matrix and metrics of a binary classifier without labels (is_estimated=True)."""

    n: int
    exp_tp: float
    exp_fp: float
    exp_fn: float
    exp_tn: float
    exp_accuracy: float
    exp_precision: float | None
    exp_recall: float | None
    exp_f1: float | None
    exp_roc_auc: float | None
    is_estimated: bool = True


def _expected_auc(p: np.ndarray, s: np.ndarray) -> float | None:
    """sum_ij p_i (1-p_j) K(s_i, s_j) / (sum p * sum(1-p)), K = 1 if >, 1/2 if = (incl. i = j)."""
    den = p.sum() * (1 - p).sum()
    if den <= 0:
        return None
    order = np.argsort(s, kind="stable")
    ss, ps = s[order], p[order]
    start = np.concatenate(([True], ss[1:] != ss[:-1]))
    first = np.flatnonzero(start)
    pos_g = np.add.reduceat(ps, first)
    neg_g = np.add.reduceat(1 - ps, first)
    neg_before = np.concatenate(([0.0], np.cumsum(neg_g)[:-1]))
    return float(np.sum(pos_g * (neg_before + 0.5 * neg_g)) / den)


def estimate_cbpe(proba, *, threshold: float = 0.5, scores=None) -> CbpeEstimate:
    """CBPE: expected TP/FP/FN/TN from calibrated probabilities, accuracy, precision, recall, F1 and AUC.

    ``scores`` are the raw scores used for ranking in the expected AUC (default: ``proba``).
    """
    _, p = _arrays("estimate_cbpe", np.zeros(np.size(proba)), proba)
    if np.any((p < 0) | (p > 1)):
        raise DataError("estimate_cbpe: calibrated probabilities must lie in [0, 1].",
                        hint="Calibrate the scores with fit_calibration/calibrate first.")
    s = p if scores is None else _arrays("estimate_cbpe", p, scores)[1]
    yhat = p >= threshold
    tp, fp = float(p[yhat].sum()), float((1 - p[yhat]).sum())
    fn, tn = float(p[~yhat].sum()), float((1 - p[~yhat]).sum())
    n = p.size
    prec = tp / (tp + fp) if tp + fp > 0 else None
    rec = tp / (tp + fn) if tp + fn > 0 else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else None
    return CbpeEstimate(n, tp, fp, fn, tn, (tp + tn) / n, prec, rec, f1, _expected_auc(p, s))


@dataclass(frozen=True)
class DleTable:
    """DLE-lite reference table: mean loss per reference-prediction quantile bin, and the overall reference loss."""

    edges: tuple[float, ...]
    mean_loss_ref_by_bin: tuple[float, ...]
    reference_loss: float


@dataclass(frozen=True)
class DleEstimate:
    """Estimated loss of a regressor from the current prediction distribution (is_estimated=True)."""

    n: int
    share_cur: tuple[float, ...]
    estimated_loss: float
    reference_loss: float
    is_estimated: bool = True


def fit_dle(pred_ref, loss_ref, *, n_bins: int = 10) -> DleTable:
    """Mean reference loss per type-7 prediction bin (an empty bin gets the overall mean)."""
    loss, pred = _arrays("fit_dle", loss_ref, pred_ref)
    edges = bin_edges(np.sort(pred), n_bins)
    idx = np.searchsorted(edges, pred, "left")
    cnt = np.bincount(idx, minlength=edges.size + 1)
    tot = np.bincount(idx, weights=loss, minlength=edges.size + 1)
    overall = float(loss.mean())
    means = tuple(float(t / c) if c else overall for t, c in zip(tot, cnt))
    return DleTable(tuple(float(e) for e in edges), means, overall)


def estimate_dle(table: DleTable, pred_cur) -> DleEstimate:
    """Estimated loss = sum_b share_cur(b) * loss_ref(b)."""
    _, pred = _arrays("estimate_dle", np.zeros(np.size(pred_cur)), pred_cur)
    cnt = np.bincount(np.searchsorted(np.asarray(table.edges), pred, "left"), minlength=len(table.edges) + 1)
    share = cnt / pred.size
    return DleEstimate(int(pred.size), tuple(float(v) for v in share),
                       float(np.dot(share, np.asarray(table.mean_loss_ref_by_bin))), table.reference_loss)
