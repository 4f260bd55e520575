"""monitor_store: per-model grids and per-window profiles in SQL (drift.md section 7): write once, sum forever.

A model version's fine grid is frozen from its training reference (:func:`set_reference`).
Each window is profiled on that grid exactly once (:func:`profile_window`): from a DataFrame
handed in, or from the feature store's rows. Every comparison afterwards merges stored rows
with SQL ``SUM`` (:mod:`ambidex.monitor_sql`) and never rereads raw data. The
statistics themselves are :mod:`ambidex.drift_profile`'s; this module is storage only.

Example
-------
>>> ref = set_reference(engine, mv, train_df)                        # doctest: +SKIP
>>> w = profile_window(engine, mv, "2024-06-01/2024-07-01", june_df)  # doctest: +SKIP
>>> w.created, profile_window(engine, mv, "2024-06-01/2024-07-01").created  # doctest: +SKIP
(True, False)
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import sqlalchemy as sa

from . import monitortables as M
from .drift import DriftThresholds
from .drift_profile import (CategoricalProfile, NumericGrid, bin_map, build_grid, profile_categorical,
                            profile_numeric)
from .errors import ContractError, DataError

__all__ = ["SCORE", "NUMERIC_TYPES", "ModelRef", "Feature", "WindowRef", "parse_window_arg", "model_features",
           "set_reference", "reference_window", "profile_window", "profile_scores", "load_features"]

SCORE = "__score__"
NUMERIC_TYPES = frozenset({"integer", "double", "timestamp"})
CATEGORICAL_TYPES = frozenset({"string", "category", "boolean"})
_UTC = dt.timezone.utc
_DEFAULT = DriftThresholds()


@dataclass(frozen=True)
class ModelRef:
    """A READY model version: registry id (``model_versions.id``), name, version and manifest."""

    id: int
    name: str
    version: int
    manifest: dict

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Feature:
    """One monitored feature of a model version: kind, contract type, grid (numeric) and raw importance."""

    name: str
    kind: str
    ctype: str
    grid: NumericGrid | None
    importance: float | None


@dataclass(frozen=True)
class WindowRef:
    """A stored window profile: its id, bounds and whether this call profiled it (False: it already was)."""

    window_id: int
    kind: str
    start: dt.datetime | None
    end: dt.datetime | None
    n_rows: int | None
    created: bool


def _utcnow() -> dt.datetime:
    return dt.datetime.now(_UTC)


def parse_window_arg(window) -> tuple[dt.datetime, dt.datetime]:
    """``"START/END"``, a featurestore ``Window`` or a (start, end) pair of aware datetimes -> UTC bounds."""
    from .featurestore import Window, parse_window

    if isinstance(window, (tuple, list)) and len(window) == 2:
        window = Window(*window)
    w = parse_window(window)
    if w is None:
        raise DataError("A window is required.", code="data.window_invalid",
                        hint="Give START/END, e.g. 2024-06-01/2024-07-01 (half-open, UTC).")
    return w.start.astimezone(_UTC), w.end.astimezone(_UTC)


def model_features(model: ModelRef, columns: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(name, contract type) of the signature inputs to monitor; an undeclared type is an error naming the feature."""
    inputs = (model.manifest.get("signature") or {}).get("inputs") or []
    declared = {c.get("name"): c.get("type") for c in inputs if isinstance(c, dict)}
    if not declared:
        raise ContractError(f"Model {model.label} declares no signature inputs, so there is nothing to monitor.",
                            code="contract.invalid_manifest", hint="Register a model whose model.json has signature.inputs.")
    names = list(declared) if columns is None else list(columns)
    out = []
    for n in names:
        t = declared.get(n)
        if n not in declared:
            raise DataError(f"Feature '{n}' is not an input of {model.label}.", feature=n,
                            hint=f"Monitor the declared inputs: {sorted(declared)}.")
        if t not in NUMERIC_TYPES | CATEGORICAL_TYPES:
            raise ContractError(f"Feature '{n}' of {model.label} has type {t!r}, which drift does not handle.",
                                code="contract.type_mismatch", feature=n,
                                hint="Declare integer, double, timestamp, string, category or boolean.")
        out.append((n, t))
    return out


def _numeric_values(s, name: str, ctype: str) -> np.ndarray:
    import pandas as pd
    from pandas.api import types as pt

    if ctype == "timestamp" or pt.is_datetime64_any_dtype(s.dtype):
        if not pt.is_datetime64_any_dtype(s.dtype):
            s = pd.to_datetime(s, utc=True, errors="raise")
        ns = s.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        ns[s.isna().to_numpy()] = np.nan
        return ns / 1e9
    if pt.is_bool_dtype(s.dtype) or not (pt.is_numeric_dtype(s.dtype) or pt.is_object_dtype(s.dtype)):
        raise DataError(f"Feature '{name}' is declared {ctype} but the window holds {s.dtype} values.",
                        code="data.type_mismatch", feature=name,
                        hint="Fix the column's type in the source, or retrain the model with the new type.")
    try:
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        bad = next((v for v in s.dropna().tolist() if not isinstance(v, (int, float))), None)
        raise DataError(f"Feature '{name}' is declared {ctype} but the window holds non-numeric values "
                        f"(e.g. {bad!r}).", code="data.type_mismatch", feature=name,
                        hint="Fix the column's type in the source, or retrain the model with the new type.") from None


def _categorical_values(s, name: str):
    from pandas.api import types as pt

    if pt.is_bool_dtype(s.dtype):
        return s.map({True: "true", False: "false"})
    if pt.is_float_dtype(s.dtype):
        raise DataError(f"Feature '{name}' is declared categorical but the window holds floating-point numbers.",
                        code="data.type_mismatch", feature=name,
                        hint="Fix the column's type in the source, or retrain the model with the new type.")
    if pt.is_integer_dtype(s.dtype):
        return s.astype("string")
    return s


def _column(frame, name: str, where: str):
    if name not in frame.columns:
        raise DataError(f"Feature '{name}' is missing from the {where}.", code="data.missing_column", feature=name,
                        hint="Every monitored model input must be present; pass columns= to monitor fewer.")
    return frame[name]


def _grid_rows(mv_id: int, name: str, ctype: str, grid: NumericGrid | None, importance) -> tuple[dict, list, list]:
    meta = {"model_version_id": mv_id, "feature": name, "kind": "numeric" if grid else "categorical", "ctype": ctype,
            "grid_kind": None, "percentiles_json": None, "median": None, "q25": None, "q75": None, "sd_pop": None,
            "n_valid": None, "importance": importance}
    if grid is None:
        return meta, [], []
    meta.update(grid_kind=grid.kind, median=grid.median, q25=grid.q25, q75=grid.q75, sd_pop=grid.sd_pop,
                n_valid=grid.n_valid,
                percentiles_json=json.dumps(grid.percentiles) if grid.percentiles is not None else None)
    edges = [{"model_version_id": mv_id, "feature": name, "bin_idx": i, "upper_edge": e} for i, e in enumerate(grid.edges)]
    maps = [{"model_version_id": mv_id, "feature": name, "k": k, "fine_idx": f, "dec_idx": c}
            for k in (10, 5) for f, c in bin_map(grid, k).items()]
    return meta, edges, maps


def _profile_rows(mv_id: int, wid: int, name: str, prof) -> tuple[list, list, list]:
    if isinstance(prof, CategoricalProfile):
        return [], [], [{"window_id": wid, "model_version_id": mv_id, "feature": name, "level": lv, "cnt": int(c)}
                        for lv, c in prof.level_counts.items()]
    bins = [{"window_id": wid, "model_version_id": mv_id, "feature": name, "bin_idx": int(b), "cnt": int(c)}
            for b, c in prof.fine_counts.items() if c]
    stats = [{"window_id": wid, "model_version_id": mv_id, "feature": name, "n": prof.n, "n_missing": prof.n_missing,
              "sum": prof.sum, "sumsq": prof.sumsq, "min": prof.min, "max": prof.max,
              "median_exact": prof.median_exact}]
    return bins, stats, []


def _insert_profiles(conn, rows: tuple[list, list, list]) -> None:
    for table, r in zip((M.window_num_bins, M.window_num_stats, M.window_cat_levels), rows):
        if r:
            conn.execute(sa.insert(table), r)


def _new_window(conn, mv_id, kind, start, end, source, n_rows, run_id, now) -> int:
    return conn.execute(sa.insert(M.monitor_windows).values(
        model_version_id=mv_id, kind=kind, window_start=start, window_end=end, source=source[:512], n_rows=n_rows,
        profiled_at=now, run_id=run_id)).inserted_primary_key[0]


def set_reference(engine: sa.Engine, model: ModelRef, frame, *, scores=None, columns: Sequence[str] | None = None,
                  source: str = "dataframe", run_id: str | None = None, replace: bool = False,
                  clock: Callable[[], dt.datetime] = _utcnow, thresholds: DriftThresholds = _DEFAULT) -> WindowRef:
    """Freeze the model version's grids from its training reference and store the reference profile (once).

    Numeric features get 99-percentile fine grids (or per-value grids for <= 20 values), categorical
    ones level counts. ``scores`` (the model's scores on the reference) give prediction drift its grid.
    A second call is a no-op unless ``replace=True`` (which drops every window profiled on the old grid).
    """
    existing = reference_window(engine, model.id, required=False)
    if existing is not None and not replace:
        return existing
    feats = model_features(model, columns)
    imp = ((model.manifest.get("feature_importance") or {}).get("values")) or {}
    meta, edges, maps, profiles = [], [], [], []
    for name, ctype in feats:
        s = _column(frame, name, f"reference data of {model.label}")
        grid = None
        if ctype in NUMERIC_TYPES:
            x = _numeric_values(s, name, ctype)
            if not np.isfinite(x).any():
                raise DataError(f"Feature '{name}' has no finite value in the reference of {model.label}, so it "
                                "has no grid to drift against.", code="data.reference_all_missing", feature=name,
                                hint="Use a reference where the feature is populated, or leave it out with columns=.")
            grid = build_grid(x, feature=name, thresholds=thresholds)
            profiles.append((name, profile_numeric(grid, x, feature=name)))
        else:
            profiles.append((name, profile_categorical(_categorical_values(s, name), feature=name)))
        rows = _grid_rows(model.id, name, ctype, grid, imp.get(name))
        meta.append(rows[0]), edges.extend(rows[1]), maps.extend(rows[2])
    if scores is not None:
        x = _numeric_values(_series(scores), SCORE, "double")
        grid = build_grid(x, feature=SCORE, thresholds=thresholds)
        profiles.append((SCORE, profile_numeric(grid, x, feature=SCORE)))
        rows = _grid_rows(model.id, SCORE, "double", grid, None)
        meta.append(rows[0]), edges.extend(rows[1]), maps.extend(rows[2])
    with engine.begin() as conn:
        if existing is not None:
            _drop_model_profiles(conn, model.id)
        for table, r in ((M.monitor_features, meta), (M.feature_grid, edges), (M.bin_map, maps)):
            if r:
                conn.execute(sa.insert(table), r)
        wid = _new_window(conn, model.id, "reference", None, None, source, len(frame), run_id, clock())
        for name, prof in profiles:
            _insert_profiles(conn, _profile_rows(model.id, wid, name, prof))
    return WindowRef(wid, "reference", None, None, len(frame), True)


def _drop_model_profiles(conn, mv_id: int) -> None:
    wids = sa.select(M.monitor_windows.c.id).where(M.monitor_windows.c.model_version_id == mv_id).scalar_subquery()
    for t in (M.drift_result, M.impact_result, M.drift_checks, M.kpi_result, M.kpi_decisions):
        conn.execute(sa.delete(t).where(t.c.window_id.in_(wids)))
    for t in (M.window_num_bins, M.window_num_stats, M.window_cat_levels):
        conn.execute(sa.delete(t).where(t.c.model_version_id == mv_id))
    for t in (M.monitor_windows, M.bin_map, M.feature_grid, M.monitor_features):
        conn.execute(sa.delete(t).where(t.c.model_version_id == mv_id))


def _series(values):
    import pandas as pd

    return values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=np.float64))


def reference_window(engine_or_conn, mv_id: int, *, required: bool = True) -> WindowRef | None:
    """The model version's stored reference window, or None / a DataError that says how to set it."""
    w = M.monitor_windows
    q = sa.select(w.c.id, w.c.n_rows).where(w.c.model_version_id == mv_id, w.c.kind == "reference")
    row = _one(engine_or_conn, q)
    if row is None:
        if required:
            raise DataError(f"Model version id {mv_id} has no stored training reference.", code="data.no_reference",
                            hint="Run 'ambidex drift check MODEL --reference TRAIN.csv ...' once, or call "
                                 "monitor.set_reference().")
        return None
    return WindowRef(row.id, "reference", None, None, row.n_rows, False)


def _one(bind, q):
    if isinstance(bind, sa.Engine):
        with bind.connect() as conn:
            return conn.execute(q).first()
    return bind.execute(q).first()


def load_features(engine_or_conn, mv_id: int) -> dict[str, Feature]:
    """The monitored features of a model version with their frozen grids (score grid under ``__score__``)."""
    f, g = M.monitor_features, M.feature_grid

    def run(conn):
        # quantile grids' edges are the unique percentiles; only discrete grids need feature_grid's rows
        edges: dict[str, list[float]] = {}
        discrete = sa.select(f.c.feature).where(f.c.model_version_id == mv_id, f.c.grid_kind == "discrete")
        for r in conn.execute(sa.select(g.c.feature, g.c.upper_edge).where(g.c.model_version_id == mv_id,
                                                                           g.c.feature.in_(discrete))
                              .order_by(g.c.feature, g.c.bin_idx)):
            edges.setdefault(r.feature, []).append(r.upper_edge)
        out = {}
        for m in conn.execute(sa.select(f).where(f.c.model_version_id == mv_id).order_by(f.c.feature)).mappings():
            grid = None
            if m["kind"] == "numeric":
                pct = tuple(json.loads(m["percentiles_json"])) if m["percentiles_json"] else None
                e = tuple(float(v) for v in np.unique(pct)) if pct is not None else tuple(edges.get(m["feature"], ()))
                grid = NumericGrid(m["grid_kind"], e, pct, m["median"], m["q25"], m["q75"], m["sd_pop"],
                                   int(m["n_valid"]))
            out[m["feature"]] = Feature(m["feature"], m["kind"], m["ctype"], grid, m["importance"])
        return out

    if isinstance(engine_or_conn, sa.Engine):
        with engine_or_conn.connect() as conn:
            return run(conn)
    return run(engine_or_conn)


def _find_window(conn, mv_id: int, start, end):
    w = M.monitor_windows
    return conn.execute(sa.select(w.c.id, w.c.n_rows).where(
        w.c.model_version_id == mv_id, w.c.kind == "window", w.c.window_start == start, w.c.window_end == end)).first()


def _has_profile(conn, wid: int, feature_filter) -> bool:
    s, c = M.window_num_stats, M.window_cat_levels
    n = conn.execute(sa.select(sa.func.count()).select_from(s).where(s.c.window_id == wid, feature_filter(s.c.feature)))
    m = conn.execute(sa.select(sa.func.count()).select_from(c).where(c.c.window_id == wid, feature_filter(c.c.feature)))
    return bool(n.scalar_one() or m.scalar_one())


def _window_rows(engine, model, window, source, n_rows, run_id, clock, replace, feature_filter):
    """(window id, created) for ``window``: reuse an already-profiled window unless ``replace``."""
    start, end = parse_window_arg(window)
    with engine.begin() as conn:
        row = _find_window(conn, model.id, start, end)
        if row is not None and _has_profile(conn, row.id, feature_filter) and not replace:
            return row.id, start, end, False
        if row is None:
            return _new_window(conn, model.id, "window", start, end, source, n_rows, run_id, clock()), start, end, True
        for t in (M.window_num_bins, M.window_num_stats, M.window_cat_levels):
            conn.execute(sa.delete(t).where(t.c.window_id == row.id, feature_filter(t.c.feature)))
        if n_rows is not None:
            conn.execute(sa.update(M.monitor_windows).where(M.monitor_windows.c.id == row.id)
                         .values(n_rows=n_rows, source=source[:512], profiled_at=clock()))
        return row.id, start, end, True


def profile_window(engine: sa.Engine, model: ModelRef, window, frame=None, *, mart: str | None = None,
                   fs_engine: sa.Engine | None = None, source: str | None = None, run_id: str | None = None,
                   replace: bool = False, clock: Callable[[], dt.datetime] = _utcnow) -> WindowRef:
    """Profile one window on the model's frozen grid and store it; an already-profiled window is not reread.

    The rows come from ``frame`` or, without it, from the feature-store ``mart``
    (``featurestore.read_window`` on ``fs_engine``, default ``engine``).
    """
    feats = {k: v for k, v in load_features(engine, model.id).items() if k != SCORE}
    if not feats:
        reference_window(engine, model.id)  # raises with the hint
    not_score = (lambda col: col != SCORE)
    start, end = parse_window_arg(window)
    with engine.connect() as conn:
        row = _find_window(conn, model.id, start, end)
        if row is not None and not replace and _has_profile(conn, row.id, not_score):
            return WindowRef(row.id, "window", start, end, row.n_rows, False)
    if frame is None:
        if mart is None:
            raise DataError(f"No rows given for window {start.isoformat()}/{end.isoformat()} of {model.label}.",
                            code="data.no_rows", hint="Pass a DataFrame, --data FILE or --mart MART.")
        from .featurestore import Window, read_window

        frame = read_window(fs_engine or engine, mart, Window(start, end), columns=list(feats))
        source = source or f"mart:{mart}"
    profiles = []
    for name, f in feats.items():
        s = _column(frame, name, f"window {start.date()}/{end.date()}")
        if f.kind == "numeric":
            profiles.append((name, profile_numeric(f.grid, _numeric_values(s, name, f.ctype), feature=name)))
        else:
            profiles.append((name, profile_categorical(_categorical_values(s, name), feature=name)))
    wid, start, end, created = _window_rows(engine, model, window, source or "dataframe", len(frame), run_id, clock,
                                            replace, not_score)
    if created:
        with engine.begin() as conn:
            for name, prof in profiles:
                _insert_profiles(conn, _profile_rows(model.id, wid, name, prof))
    return WindowRef(wid, "window", start, end, len(frame), created)


def profile_scores(engine: sa.Engine, model: ModelRef, window, scores, *, run_id: str | None = None,
                   replace: bool = False, clock: Callable[[], dt.datetime] = _utcnow) -> WindowRef:
    """Profile the model's scores of one window (prediction drift). Without a reference score grid, the
    first scored window freezes it and becomes the score reference (``monitor_features`` row ``__score__``)."""
    x = _numeric_values(_series(scores), SCORE, "double")
    feats = load_features(engine, model.id)
    grid = feats[SCORE].grid if SCORE in feats else None
    if grid is None:
        if not np.isfinite(x).any():
            raise DataError(f"Window of {model.label} has no finite score to freeze a score grid from.",
                            code="data.no_rows", hint="Score a non-empty window first.")
        grid = build_grid(x, feature=SCORE)
        meta, edges, maps = _grid_rows(model.id, SCORE, "double", grid, None)
        with engine.begin() as conn:
            conn.execute(sa.insert(M.monitor_features), [meta])
            conn.execute(sa.insert(M.feature_grid), edges)
            conn.execute(sa.insert(M.bin_map), maps)
    is_score = (lambda col: col == SCORE)
    wid, start, end, created = _window_rows(engine, model, window, "scores", None, run_id, clock, replace, is_score)
    if created:
        with engine.begin() as conn:
            _insert_profiles(conn, _profile_rows(model.id, wid, SCORE, profile_numeric(grid, x, feature=SCORE)))
    return WindowRef(wid, "window", start, end, None, created)
