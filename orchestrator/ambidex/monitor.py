"""monitor: data drift of registered models over time: baselines from stored profiles, verdicts and results in SQL.

The orchestration around the pure statistics of :mod:`ambidex.drift` (drift.md sections 5-7):

* :func:`resolve_model` finds a READY model version (``NAME:VERSION``; bare ``NAME`` is the live
  champion of a deployment, else the latest version).
* :func:`check_window` compares one profiled window with three baselines built from stored
  profiles by SQL SUMs (drift.md section 6): the training ``reference``, ``t-1`` and a ``rolling``
  merge of the k previous windows. It stores every number (``drift_checks``, ``drift_result``,
  ``impact_result``), plus prediction drift when the window's scores were profiled. The alert
  (dataset drift) is raised on the reference and T-1 baselines; rolling is logged.
* :func:`drift_history` / :func:`check_history`: "how did feature X drift over the last year" is
  one query.

Profiles are written by :mod:`ambidex.monitor_store` and merged by :mod:`ambidex.monitor_sql`; KPIs live in :mod:`ambidex.monitor_kpi`.

Example
-------
>>> mv = resolve_model(engine, "churn_py")                                   # doctest: +SKIP
>>> set_reference(engine, mv, train_df)                                      # doctest: +SKIP
>>> profile_window(engine, mv, "2024-11-01/2024-12-01", nov_df)              # doctest: +SKIP
>>> res = check_window(engine, mv, "2024-11-01/2024-12-01")                  # doctest: +SKIP
>>> res.alert, [f.feature for f in res.baselines["reference"].features][:3]  # doctest: +SKIP
(True, ['tenure', 'monthly_charges', 'contract'])
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import sqlalchemy as sa

from . import monitortables as M
from .drift import DatasetDrift, DriftThresholds, FeatureDrift, ImpactScores, score_impact
from .drift_profile import compare_profiles
from .errors import ContractError, DataError, RegistryError
from .monitor_sql import load_profiles, psi_sql, window_ids_before
from .monitor_store import (SCORE, ModelRef, WindowRef, load_features, parse_window_arg, profile_scores,
                            profile_window, reference_window, set_reference)

__all__ = [
    "ModelRef", "WindowRef", "DriftCheck", "BASELINES", "resolve_model", "set_reference", "profile_window",
    "profile_scores", "psi_sql", "check_window", "check_rows", "drift_history", "check_history",
]

BASELINES = ("reference", "t-1", "rolling")
ALERT_BASELINES = ("reference", "t-1")
_DEFAULT = DriftThresholds()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- model versions

def resolve_model(engine: sa.Engine, spec: str) -> ModelRef:
    """``NAME:VERSION`` or ``NAME`` (the live champion of a deployment, else the latest READY version)."""
    from .tables import model_versions as mv, models

    name, sep, ver = str(spec).partition(":")
    q = (sa.select(mv.c.id, models.c.name, mv.c.version, mv.c.manifest)
         .join(models, models.c.id == mv.c.model_id).where(models.c.name == name, mv.c.status == "READY"))
    with engine.connect() as conn:
        if sep:
            try:
                row = conn.execute(q.where(mv.c.version == int(ver))).first()
            except ValueError:
                raise DataError(f"Model version {spec!r}: the version after ':' must be a number.",
                                code="usage.invalid", hint="Write it as churn:3.") from None
        else:
            row = _champion(conn, q) or conn.execute(q.order_by(mv.c.version.desc()).limit(1)).first()
    if row is None:
        raise RegistryError(f"No READY model version {spec!r}.", code="registry.not_found",
                            hint="Run 'ambidex models list' to see registered models.")
    return ModelRef(row.id, row.name, row.version, json.loads(row.manifest))


def _champion(conn, q):
    from .deploytables import deployment_live as live, deployment_revisions as rev, revision_members as mem
    from .tables import model_versions as mv

    champ = (sa.select(mem.c.model_version_id)
             .select_from(mem.join(rev, rev.c.id == mem.c.revision_id)
                          .join(live, sa.and_(live.c.deployment_id == rev.c.deployment_id,
                                              live.c.live_revision == rev.c.revision)))
             .where(mem.c.role == "champion"))
    return conn.execute(q.where(mv.c.id.in_(champ)).order_by(mv.c.version.desc()).limit(1)).first()


# --------------------------------------------------------------------------- checks

@dataclass(frozen=True)
class DriftCheck:
    """One window of one model version against each baseline, with the stored check ids."""

    model: str
    version: int
    window_start: dt.datetime
    window_end: dt.datetime
    baselines: Mapping[str, DatasetDrift]
    baseline_windows: Mapping[str, tuple[int, ...]]
    statuses: Mapping[str, str]
    prediction_drift: FeatureDrift | None = None
    check_ids: Mapping[str, int] = field(default_factory=dict)

    @property
    def alert(self) -> bool:
        """Dataset drift against the training reference or T-1 (drift.md section 6)."""
        return any(self.baselines[b].dataset_drift for b in ALERT_BASELINES if b in self.baselines)

    @property
    def status(self) -> str:
        """'alert', 'warn', 'ok' or 'insufficient_data' over the alerting baselines."""
        got = [self.statuses[b] for b in ALERT_BASELINES if b in self.statuses] or list(self.statuses.values())
        for s in ("alert", "warn", "ok"):
            if s in got:
                return s
        return "insufficient_data"

    def to_dict(self) -> dict:
        out = {"model": self.model, "version": self.version, "window_start": self.window_start,
               "window_end": self.window_end, "alert": self.alert, "status": self.status, "baselines": {}}
        for b, res in self.baselines.items():
            out["baselines"][b] = {"status": self.statuses[b], "windows": list(self.baseline_windows[b]),
                                   "check_id": self.check_ids.get(b), **dataset_summary(res),
                                   "features": check_rows(res)}
        out["prediction_drift"] = self.prediction_drift.to_dict() if self.prediction_drift else None
        return out


def dataset_summary(res: DatasetDrift) -> dict:
    """Weighted PSI, drifted importance share, the verdict and its reasons."""
    s = res.scores
    return {"dataset_drift": s.dataset_drift, "weighted_psi": s.weighted_psi,
            "drifted_importance_share": s.drifted_importance_share, "reasons": list(s.reasons),
            "uniform_importance": s.uniform_importance}


def check_rows(res: DatasetDrift) -> list[dict]:
    """One row per feature, sorted by impact_psi: the table ``drift check`` and ``drift compare`` print."""
    rows = []
    for f in res.features:
        imp = res.scores.impact[f.feature]
        rows.append({"feature": f.feature, "kind": f.kind, "status": f.status, "w": imp.w, "impact_psi": imp.impact_psi,
                     "psi": f.psi, "median_shift": f.median_shift, "impact_median": imp.impact_median,
                     "missing_delta": f.missing_delta, "new_share": f.new_share, "n_ref": f.n_ref, "n_cur": f.n_cur,
                     "reasons": ",".join(f.reasons)})
    return rows


def _dataset_status(res: DatasetDrift) -> str:
    st = [f.status for f in res.features]
    if res.dataset_drift:
        return "alert"
    if st and all(s == "insufficient_data" for s in st):
        return "insufficient_data"
    return "warn" if any(s in ("warn", "alert") for s in st) else "ok"


def _importance(model: ModelRef, feats, uniform: bool) -> Mapping[str, float] | None:
    values = {n: f.importance for n, f in feats.items() if f.importance is not None}
    if not values:
        if uniform:
            return None
        raise ContractError(f"Model {model.label} has no feature_importance in its manifest, so drift impact "
                            "cannot be weighted.", code="contract.no_importance",
                            hint="Store permutation or SHAP importance with the model, or pass --uniform-importance "
                                 "(uniform_importance=True) to weight features equally.")
    missing = sorted(set(feats) - set(values))
    if missing:
        raise ContractError(f"Model {model.label} has no importance for feature(s) {missing}.",
                            code="contract.no_importance", features=missing,
                            hint="Store importance for every signature input (0 is allowed).")
    return values


def _compare(ref: Mapping, cur: Mapping, feats, importance, uniform: bool, t: DriftThresholds) -> DatasetDrift:
    results = {n: compare_profiles(ref[n], cur[n], grid=f.grid, feature=n, thresholds=t) for n, f in feats.items()}
    sc = score_impact(results, importance, uniform_importance=uniform, thresholds=t)
    if importance is None:
        sc = ImpactScores(sc.impact, sc.weighted_psi, sc.drifted_importance_share, sc.dataset_drift, sc.reasons, True)

    def key(f: FeatureDrift):
        ip = sc.impact[f.feature].impact_psi
        return (ip is None, -(ip or 0.0), f.feature)

    return DatasetDrift(tuple(sorted(results.values(), key=key)), sc)


def check_window(engine: sa.Engine, model: ModelRef, window, *, baselines: Sequence[str] = BASELINES, k: int = 3,
                 thresholds: DriftThresholds = _DEFAULT, uniform_importance: bool = False, run_id: str | None = None,
                 store: bool = True, clock: Callable[[], dt.datetime] = _utcnow) -> DriftCheck:
    """Drift of a profiled window against each baseline, from stored profiles only; results stored unless ``store=False``.

    A baseline with no earlier window (T-1 or rolling for the first window) is skipped, not faked.
    """
    start, end = parse_window_arg(window)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise DataError(f"Unknown baseline(s) {unknown}.", code="usage.invalid", hint=f"Use {list(BASELINES)}.")
    with engine.connect() as conn:
        feats = load_features(conn, model.id)
        score_feat = feats.pop(SCORE, None)
        ref = reference_window(conn, model.id)
        w = M.monitor_windows
        cur_id = conn.execute(sa.select(w.c.id).where(w.c.model_version_id == model.id, w.c.kind == "window",
                                                      w.c.window_start == start, w.c.window_end == end)).scalar()
        if cur_id is None:
            raise DataError(f"Window {start.isoformat()}/{end.isoformat()} of {model.label} has not been profiled.",
                            code="data.window_not_profiled", hint="Profile it first (monitor.profile_window, or "
                            "'ambidex drift check' with --data/--mart).")
        importance = _importance(model, feats, uniform_importance)
        prev = window_ids_before(conn, model.id, start, max(k, 1))
        sets = {"reference": (ref.window_id,), "t-1": tuple(prev[:1]), "rolling": tuple(prev[:k])}
        cur = load_profiles(conn, model.id, [cur_id], feats)
        out, statuses = {}, {}
        for b in baselines:
            if not sets[b]:
                continue
            base = load_profiles(conn, model.id, sets[b], feats)
            out[b] = _compare(base, cur, feats, importance, uniform_importance, thresholds)
            statuses[b] = _dataset_status(out[b])
        pred = _prediction_drift(conn, model, score_feat, ref.window_id, cur_id, start, thresholds)
    check = DriftCheck(model.name, model.version, start, end, out, {b: sets[b] for b in out}, statuses, pred)
    if store:
        ids = _store(engine, model, cur_id, check, run_id, clock())
        check = DriftCheck(check.model, check.version, start, end, out, check.baseline_windows, statuses, pred, ids)
    return check


def _prediction_drift(conn, model, score_feat, ref_id, cur_id, start, t) -> FeatureDrift | None:
    if score_feat is None:
        return None
    feats = {SCORE: score_feat}
    cur = load_profiles(conn, model.id, [cur_id], feats)[SCORE]
    if cur.n == 0:
        return None
    ref = load_profiles(conn, model.id, [ref_id], feats)[SCORE]
    if ref.n == 0:  # no reference scores: the first scored window is the score reference
        first = window_ids_before(conn, model.id, start, 10**6, feature=SCORE)
        if not first:
            return None
        ref = load_profiles(conn, model.id, [first[-1]], feats)[SCORE]
    return compare_profiles(ref, cur, grid=score_feat.grid, feature=SCORE, thresholds=t)


def _jsonable_reasons(reasons) -> str:
    return ",".join(reasons)


def _store(engine, model: ModelRef, wid: int, check: DriftCheck, run_id, now) -> dict[str, int]:
    ids = {}
    with engine.begin() as conn:
        for b, res in check.baselines.items():
            s = res.scores
            cid = conn.execute(sa.insert(M.drift_checks).values(
                run_id=run_id, model_version_id=model.id, window_id=wid, baseline=b,
                baseline_windows=",".join(map(str, check.baseline_windows[b])), status=check.statuses[b],
                weighted_psi=s.weighted_psi, drifted_importance_share=s.drifted_importance_share,
                dataset_drift=s.dataset_drift, reasons=_jsonable_reasons(s.reasons),
                uniform_importance=s.uniform_importance, checked_at=now)).inserted_primary_key[0]
            ids[b] = cid
            feats = list(res.features)
            if b == "reference" and check.prediction_drift is not None:
                feats.append(check.prediction_drift)
            rows = [{"check_id": cid, "run_id": run_id, "model_version_id": model.id, "window_id": wid, "baseline": b,
                     "feature": f.feature, "metric": m, "value": v, "status": f.status,
                     "reasons": _jsonable_reasons(f.reasons)}
                    for f in feats for m, v in f.metrics().items()]
            conn.execute(sa.insert(M.drift_result), rows)
            conn.execute(sa.insert(M.impact_result), [
                {"check_id": cid, "run_id": run_id, "model_version_id": model.id, "window_id": wid, "feature": n,
                 "w": i.w, "impact_psi": i.impact_psi, "impact_median": i.impact_median, "status": i.status}
                for n, i in s.impact.items()])
    return ids


# --------------------------------------------------------------------------- history

def drift_history(engine: sa.Engine, *, model: str | None = None, feature: str | None = None, metric: str = "psi",
                  baseline: str = "reference", since: dt.datetime | None = None, last: int | None = None) -> list[dict]:
    """One row per (check, feature): the window, the metric's value and the status: a single SQL query.

    >>> drift_history(engine, model="churn_py", feature="tenure", since=one_year_ago)  # doctest: +SKIP
    """
    from .tables import model_versions as mv, models

    d, w = M.drift_result, M.monitor_windows
    q = (sa.select(models.c.name.label("model"), mv.c.version, w.c.window_start, w.c.window_end, d.c.baseline,
                   d.c.feature, d.c.metric, d.c.value, d.c.status, d.c.reasons, d.c.check_id, d.c.run_id)
         .select_from(d.join(w, w.c.id == d.c.window_id).join(mv, mv.c.id == d.c.model_version_id)
                      .join(models, models.c.id == mv.c.model_id))
         .where(d.c.metric == metric, d.c.baseline == baseline)
         .order_by(w.c.window_start.desc(), d.c.check_id.desc(), d.c.feature))
    if model:
        name, _, ver = model.partition(":")
        q = q.where(models.c.name == name)
        if ver:
            q = q.where(mv.c.version == int(ver))
    if feature:
        q = q.where(d.c.feature == feature)
    if since is not None:
        q = q.where(w.c.window_start >= since)
    if last:
        q = q.limit(last)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def check_history(engine: sa.Engine, *, model: str | None = None, last: int | None = 50) -> list[dict]:
    """Stored drift checks, newest first: window, baseline, status, weighted PSI, drifted share, verdict."""
    from .tables import model_versions as mv, models

    c, w = M.drift_checks, M.monitor_windows
    q = (sa.select(c.c.id.label("check_id"), models.c.name.label("model"), mv.c.version, w.c.window_start,
                   w.c.window_end, c.c.baseline, c.c.status, c.c.weighted_psi, c.c.drifted_importance_share,
                   c.c.dataset_drift, c.c.reasons, c.c.checked_at, c.c.run_id)
         .select_from(c.join(w, w.c.id == c.c.window_id).join(mv, mv.c.id == c.c.model_version_id)
                      .join(models, models.c.id == mv.c.model_id))
         .order_by(c.c.checked_at.desc(), c.c.id.desc()))
    if model:
        name, _, ver = model.partition(":")
        q = q.where(models.c.name == name)
        if ver:
            q = q.where(mv.c.version == int(ver))
    if last:
        q = q.limit(last)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
