"""monitor_kpi: model drift in SQL: KPIs per window with SEs, benchmarks, the retrain and promotion decisions (drift.md 8-9).

The numbers come from :mod:`ambidex.kpi` (pure); this module reads labelled predictions
(DataFrames/arrays, or the captured predictions of :mod:`ambidex.capture`) and stores:

* ``kpi_result``: labelled KPIs (``is_estimated = 0``) and label-free CBPE / DLE-lite estimates
  (``is_estimated = 1``), one row per (window, metric), tied to run and model version;
* ``kpi_benchmarks``: a business floor (SE 0) or the champion's hold-out KPI frozen at promotion;
* ``kpi_decisions``: every retrain decision (deltas and z against T-1, T-2 and the benchmark) and
  every champion/challenger decision (the paired per-row loss test on labelled rows only, so an
  estimate can never promote a model).

Example
-------
>>> record_kpis(engine, mv, "2024-06-01/2024-07-01", y, score)              # doctest: +SKIP
>>> evaluate_retrain(engine, mv, "2024-06-01/2024-07-01", "roc_auc").retrain  # doctest: +SKIP
False
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import Callable, Sequence

import numpy as np
import sqlalchemy as sa

from . import kpi as K
from . import monitortables as M
from .errors import DataError
from .monitor_store import ModelRef, _new_window, parse_window_arg

__all__ = ["default_metrics", "record_kpis", "freeze_benchmark", "evaluate_retrain", "fit_label_free",
           "estimate_window", "labelled_from_capture", "record_captured", "decide_promotion_from_capture",
           "kpi_history"]

_LOSS_CLIP = 1e-15


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def default_metrics(model: ModelRef) -> tuple[str, ...]:
    """roc_auc, accuracy, log_loss for binary classifiers; rmse, mae for regressors."""
    task = model.manifest.get("task")
    if task == "binary_classification":
        return ("roc_auc", "accuracy", "log_loss")
    if task == "regression":
        return ("rmse", "mae")
    raise DataError(f"Model {model.label} has task {task!r}; KPIs cover binary classification and regression.",
                    code="data.unsupported_task", hint="Monitor multiclass models with data drift only.")


def _window_id(conn, model: ModelRef, window, clock) -> tuple[int, dt.datetime]:
    start, end = parse_window_arg(window)
    w = M.monitor_windows
    wid = conn.execute(sa.select(w.c.id).where(w.c.model_version_id == model.id, w.c.kind == "window",
                                               w.c.window_start == start, w.c.window_end == end)).scalar()
    if wid is None:
        wid = _new_window(conn, model.id, "window", start, end, "kpi", None, None, clock())
    return wid, start


def _store_kpis(engine, model, window, kpis: Sequence[K.Kpi], run_id, clock) -> int:
    with engine.begin() as conn:
        wid, _ = _window_id(conn, model, window, clock)
        now = clock()
        for k in kpis:
            r = M.kpi_result
            conn.execute(sa.delete(r).where(r.c.window_id == wid, r.c.metric == k.metric,
                                            r.c.is_estimated == bool(k.is_estimated)))
        conn.execute(sa.insert(M.kpi_result), [
            {"run_id": run_id, "model_version_id": model.id, "window_id": wid, "metric": k.metric, "value": k.value,
             "se": k.se, "n": k.n, "is_estimated": bool(k.is_estimated), "method": k.method, "computed_at": now}
            for k in kpis])
    return wid


def record_kpis(engine: sa.Engine, model: ModelRef, window, y_true, y_pred, *, metrics: Sequence[str] | None = None,
                threshold: float = 0.5, run_id: str | None = None,
                clock: Callable[[], dt.datetime] = _utcnow) -> list[K.Kpi]:
    """Measure and store the labelled KPIs of one window (a window's KPI replaces an earlier one).

    ``y_true`` is 0/1 (binary) or numbers; ``y_pred`` the positive-class score or the prediction.
    A KPI that cannot be computed (AUC on a one-class window) is skipped, never stored as a number.
    """
    out = []
    for m in metrics or default_metrics(model):
        try:
            out.append(K.measure_kpi(m, y_true, y_pred, threshold=threshold))
        except DataError:
            if m != "roc_auc":
                raise
    if out:
        _store_kpis(engine, model, window, out, run_id, clock)
    return out


def freeze_benchmark(engine: sa.Engine, model: ModelRef, metric: str, value: float, *, se: float = 0.0,
                     kind: str = "floor", clock: Callable[[], dt.datetime] = _utcnow) -> None:
    """Store the benchmark B of a metric: a business ``floor`` (SE 0) or the champion's ``holdout`` KPI."""
    if kind not in ("floor", "holdout") or not math.isfinite(value) or not se >= 0:
        raise DataError(f"Invalid benchmark {metric}={value!r} (se={se!r}, kind={kind!r}).", code="usage.invalid",
                        hint="kind is 'floor' or 'holdout'; value finite; se >= 0 (0 for a floor).")
    b = M.kpi_benchmarks
    with engine.begin() as conn:
        conn.execute(sa.delete(b).where(b.c.model_version_id == model.id, b.c.metric == metric))
        conn.execute(sa.insert(b).values(model_version_id=model.id, metric=metric, value=float(value), se=float(se),
                                         kind=kind, frozen_at=clock()))


def _series(conn, model: ModelRef, metric: str, start: dt.datetime, estimated: bool, limit: int):
    """KPI rows of the model (any version) at or before ``start``, newest first."""
    from .tables import model_versions as mv

    r, w = M.kpi_result, M.monitor_windows
    same_model = sa.select(mv.c.model_id).where(mv.c.id == model.id).scalar_subquery()
    q = (sa.select(r.c.value, r.c.se, w.c.window_start, r.c.model_version_id)
         .select_from(r.join(w, w.c.id == r.c.window_id).join(mv, mv.c.id == r.c.model_version_id))
         .where(mv.c.model_id == same_model, r.c.metric == metric, r.c.is_estimated == estimated,
                w.c.window_start <= start)
         .order_by(w.c.window_start.desc(), r.c.id.desc()).limit(limit))
    return conn.execute(q).all()


def evaluate_retrain(engine: sa.Engine, model: ModelRef, window, metric: str, *, tol: float | None = None,
                     dataset_drift: bool = False, run_id: str | None = None,
                     clock: Callable[[], dt.datetime] = _utcnow) -> K.RetrainDecision:
    """The section 8 retrain trigger for the window's KPI against T-1, T-2 and the benchmark, stored in kpi_decisions.

    Only labelled KPIs feed (a) and (b). Without a labelled KPI at T, an estimate may trigger
    retraining only through (c), together with ``dataset_drift``.
    """
    start, _ = parse_window_arg(window)
    b = M.kpi_benchmarks
    with engine.connect() as conn:
        lab = _series(conn, model, metric, start, False, 3)
        est = _series(conn, model, metric, start, True, 1)
        bench = conn.execute(sa.select(b.c.value, b.c.se, b.c.kind).where(
            b.c.model_version_id == model.id, b.c.metric == metric)).first()
    lab = [row for row in lab]
    labelled_t = bool(lab) and lab[0].window_start == start
    kpi, se = {}, {}
    if labelled_t:
        for key, row in zip(("T", "T-1", "T-2"), lab):
            kpi[key], se[key] = row.value, row.se or 0.0
    elif est and est[0].window_start == start:
        kpi["T"], se["T"] = est[0].value, est[0].se or 0.0
    else:
        raise DataError(f"No {metric} for {model.label} in the window starting {start.isoformat()}.",
                        code="data.no_kpi", hint="Record labelled KPIs (record_kpis) or an estimate first.")
    if bench is not None and labelled_t:
        kpi["B"], se["B"] = bench.value, bench.se
    est_delta = None
    if est and est[0].window_start == start:
        anchor = bench.value if bench is not None else (lab[1].value if len(lab) > 1 else None)
        if anchor is not None:
            sign = 1.0 if K.HIGHER_IS_BETTER.get(metric, True) else -1.0
            est_delta = sign * (anchor - est[0].value)
    if tol is None and "B" not in kpi and bench is not None:
        tol = K.default_tolerance(metric, bench.value)
    dec = K.decide_retrain(metric, kpi, se, tol=tol, dataset_drift=dataset_drift, estimated_delta=est_delta)
    details = {"kpi": kpi, "se": se, "labelled_t": labelled_t, "estimated_delta": est_delta,
               "benchmark_kind": bench.kind if bench is not None else None, **_plain(dec)}
    _store_decision(engine, model, start, "retrain", metric, dec.retrain, dec.reasons, details, run_id, clock)
    return dec


def _plain(obj) -> dict:
    d = dataclasses.asdict(obj)
    return json.loads(json.dumps(d, default=str, allow_nan=True))


def _store_decision(engine, model, start, kind, metric, decision, reasons, details, run_id, clock) -> None:
    with engine.begin() as conn:
        wid = None
        if start is not None:
            w = M.monitor_windows
            wid = conn.execute(sa.select(w.c.id).where(w.c.model_version_id == model.id, w.c.kind == "window",
                                                       w.c.window_start == start)).scalar()
        conn.execute(sa.insert(M.kpi_decisions).values(
            run_id=run_id, model_version_id=model.id, window_id=wid, kind=kind, metric=metric, decision=bool(decision),
            reasons=",".join(reasons), details=json.dumps(details, default=str), decided_at=clock()))


def fit_label_free(engine: sa.Engine, model: ModelRef, scores_ref, y_ref, *, n_bins: int = 10,
                   clock: Callable[[], dt.datetime] = _utcnow) -> str:
    """Store the reference table of the label-free estimate: CBPE calibration (binary) or DLE-lite (regression)."""
    task = model.manifest.get("task")
    if task == "binary_classification":
        method, table = "cbpe", K.fit_calibration(scores_ref, y_ref, n_bins=n_bins)
    elif task == "regression":
        loss = np.abs(np.asarray(scores_ref, dtype=np.float64) - np.asarray(y_ref, dtype=np.float64))
        method, table = "dle", K.fit_dle(scores_ref, loss, n_bins=n_bins)
    else:
        default_metrics(model)  # raises the unsupported-task error
    c = M.monitor_calibration
    with engine.begin() as conn:
        conn.execute(sa.delete(c).where(c.c.model_version_id == model.id, c.c.method == method))
        conn.execute(sa.insert(c).values(model_version_id=model.id, method=method, fitted_at=clock(),
                                         table_json=json.dumps(dataclasses.asdict(table))))
    return method


def estimate_window(engine: sa.Engine, model: ModelRef, window, scores, *, threshold: float = 0.5,
                    run_id: str | None = None, clock: Callable[[], dt.datetime] = _utcnow) -> list[K.Kpi]:
    """Label-free KPIs of a scored window (CBPE or DLE-lite), stored with ``is_estimated = 1``."""
    c = M.monitor_calibration
    with engine.connect() as conn:
        row = conn.execute(sa.select(c.c.method, c.c.table_json).where(c.c.model_version_id == model.id)).first()
    if row is None:
        raise DataError(f"Model {model.label} has no label-free reference table.", code="data.no_reference",
                        hint="Call monitor_kpi.fit_label_free with the reference scores and labels first.")
    doc = json.loads(row.table_json)
    s = np.asarray(scores, dtype=np.float64)
    n = int(s.size)
    if row.method == "cbpe":
        table = K.CalibrationTable(tuple(doc["edges"]), tuple(doc["rates"]), tuple(doc["counts"]))
        e = K.estimate_cbpe(K.calibrate(table, s), threshold=threshold, scores=s)
        vals = {"accuracy": e.exp_accuracy, "precision": e.exp_precision, "recall": e.exp_recall, "f1": e.exp_f1,
                "roc_auc": e.exp_roc_auc}
    else:
        table = K.DleTable(tuple(doc["edges"]), tuple(doc["mean_loss_ref_by_bin"]), doc["reference_loss"])
        vals = {"mae": K.estimate_dle(table, s).estimated_loss}
    kpis = [K.Kpi(m, v, None, n, True, row.method) for m, v in vals.items() if v is not None]
    if kpis:
        _store_kpis(engine, model, window, kpis, run_id, clock)
    return kpis


def labelled_from_capture(engine: sa.Engine, deployment: str, window,
                          columns=("entity_key", "label", "score", "prediction")) -> dict[tuple[str, int], dict]:
    """Captured predictions of one window with their labels, per (model, version): ``{column: numpy array}``
    (entity_key, label, prediction as object arrays, score as float64 with NaN), fetched column-wise."""
    from .capture_columns import captured_columns

    start, _ = parse_window_arg(window)
    return captured_columns(engine, deployment, start, tuple(columns))


def _targets(model: ModelRef, labels: Sequence) -> np.ndarray:
    """Labels as numbers: 1/0 for the positive class of a binary classifier, floats for a regressor; NaN if missing."""
    lab = np.asarray(labels, dtype=object)
    missing = np.equal(lab, None)
    if model.manifest.get("task") == "binary_classification":
        pos = str((model.manifest.get("target") or {}).get("positive"))
        y = (lab.astype(str) == pos).astype(np.float64) if lab.size else np.zeros(0)
    else:
        y = np.where(missing, np.nan, lab).astype(np.float64) if lab.size else np.zeros(0)
    y[missing] = np.nan
    return y


def _scores(values) -> np.ndarray:
    """Scores as float64 (None -> NaN)."""
    return np.asarray(values, dtype=np.float64)


def record_captured(engine: sa.Engine, deployment: str, window, *, run_id: str | None = None,
                    clock: Callable[[], dt.datetime] = _utcnow, data: dict | None = None) -> dict[str, list[K.Kpi]]:
    """For every model version captured in the window: prediction-drift profile, and KPIs on the labelled rows.
    ``data`` is :func:`labelled_from_capture`'s result when the caller already has it."""
    from .monitor import resolve_model
    from .monitor_store import profile_scores

    out = {}
    if data is None:
        data = labelled_from_capture(engine, deployment, window, ("label", "score"))
    for (name, version), d in data.items():
        model = resolve_model(engine, f"{name}:{version}")
        pred = _scores(d["score"])
        profile_scores(engine, model, window, pred, run_id=run_id, clock=clock)
        y = _targets(model, d["label"])
        has = ~np.isnan(y) & np.isfinite(pred)
        out[model.label] = record_kpis(engine, model, window, y[has], pred[has], run_id=run_id, clock=clock) \
            if has.any() else []
    return out


def _row_loss(model: ModelRef, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    if model.manifest.get("task") == "binary_classification":
        q = np.clip(score, _LOSS_CLIP, 1 - _LOSS_CLIP)
        return -np.where(y == 1, np.log(q), np.log1p(-q))
    return (score - y) ** 2


def decide_promotion_from_capture(engine: sa.Engine, deployment: str, window, champion: str,
                                  challengers: Sequence[str], *, min_gain: float = 0.002, run_id: str | None = None,
                                  clock: Callable[[], dt.datetime] = _utcnow) -> K.PromotionDecision:
    """Champion vs challengers on the same labelled rows of a window (paired per-row loss test), stored.

    Labelled rows only: estimated KPIs in ``kpi_result`` are never read, so they cannot promote.
    """
    from .monitor import resolve_model

    data = labelled_from_capture(engine, deployment, window)
    champ = resolve_model(engine, champion)
    if (champ.name, champ.version) not in data:
        raise DataError(f"No captured predictions of {champ.label} in that window.", code="data.no_rows",
                        hint="Shadow-score the challengers and the champion on the same window first.")

    def losses(model: ModelRef) -> dict:
        d = data.get((model.name, model.version))
        if d is None:
            raise DataError(f"No captured predictions of {model.label} in that window.", code="data.no_rows",
                            hint="Deploy it as a shadow so it scores the same rows.")
        y = _targets(model, d["label"])
        s = _scores(d["score"])
        ok = ~np.isnan(y) & np.isfinite(s)
        return dict(zip(np.asarray(d["entity_key"])[ok].tolist(), _row_loss(model, y[ok], s[ok]).tolist()))

    base = losses(champ)
    chall = {c: losses(resolve_model(engine, c)) for c in challengers}
    keys = sorted(set(base).intersection(*[set(v) for v in chall.values()])) if chall else sorted(base)
    if len(keys) < 2:
        raise DataError(f"Only {len(keys)} labelled row(s) are shared by {champ.label} and the challengers; "
                        "estimated KPIs cannot promote a model.", code="data.no_labels",
                        hint="Wait for labels of the window, then decide again.")
    dec = K.decide_promotion([base[k] for k in keys], {c: [v[k] for k in keys] for c, v in chall.items()},
                             min_gain=min_gain)
    start, _ = parse_window_arg(window)
    details = {"n_rows": len(keys), "champion": champ.label, "winner": dec.winner, "reason": dec.reason,
               "tests": {c: _plain(t) for c, t in dec.tests.items()}}
    _store_decision(engine, champ, start, "promotion", "log_loss" if champ.manifest.get("task") != "regression"
                    else "squared_error", dec.promote, (dec.reason,), details, run_id, clock)
    return dec


def kpi_history(engine: sa.Engine, *, model: str | None = None, metric: str | None = None,
                last: int | None = 100) -> list[dict]:
    """Stored KPIs newest first: window, metric, value, SE, n, is_estimated, method."""
    from .tables import model_versions as mv, models

    r, w = M.kpi_result, M.monitor_windows
    q = (sa.select(models.c.name.label("model"), mv.c.version, w.c.window_start, w.c.window_end, r.c.metric,
                   r.c.value, r.c.se, r.c.n, r.c.is_estimated, r.c.method, r.c.run_id, r.c.computed_at)
         .select_from(r.join(w, w.c.id == r.c.window_id).join(mv, mv.c.id == r.c.model_version_id)
                      .join(models, models.c.id == mv.c.model_id))
         .order_by(w.c.window_start.desc(), models.c.name, mv.c.version.desc(), r.c.metric))
    if model:
        name, _, ver = model.partition(":")
        q = q.where(models.c.name == name)
        if ver:
            q = q.where(mv.c.version == int(ver))
    if metric:
        q = q.where(r.c.metric == metric)
    if last:
        q = q.limit(last)
    with engine.connect() as conn:
        return [dict(row._mapping) | {"is_estimated": bool(row.is_estimated)} for row in conn.execute(q)]
