"""monitor_sql: merged window profiles and PSI computed in the database (drift.md section 7), on SQLite, PostgreSQL, MariaDB.

Everything here reads the rows :mod:`ambidex.monitor_store` wrote: merging windows (T-1,
rolling k, several days) is a ``SUM ... GROUP BY`` over ``window_num_bins``,
``window_num_stats`` and ``window_cat_levels``, and :func:`psi_sql` is the section 7 query
itself, joined with ``bin_map``. Bound parameters only; no raw row is read.

Example
-------
>>> psi_sql(engine, mv.id, "age", [ref_window_id], [w1, w2, w3])  # doctest: +SKIP
0.0123
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

import sqlalchemy as sa

from . import monitortables as M
from .drift import DriftThresholds
from .drift_profile import CategoricalProfile, NumericProfile
from .monitor_store import SCORE, Feature

__all__ = ["window_ids_before", "load_profiles", "psi_sql"]

_DEFAULT = DriftThresholds()


def window_ids_before(engine_or_conn, mv_id: int, start: dt.datetime, k: int, *, feature: str | None = None) -> list[int]:
    """Ids of the ``k`` profiled windows that start before ``start``, newest first (T-1, T-2, ...)."""
    w, s, c = M.monitor_windows, M.window_num_stats, M.window_cat_levels
    has = sa.or_(sa.exists().where(s.c.window_id == w.c.id, s.c.feature != SCORE if feature is None else s.c.feature == feature),
                 sa.exists().where(c.c.window_id == w.c.id, c.c.feature != SCORE if feature is None else c.c.feature == feature))
    q = (sa.select(w.c.id).where(w.c.model_version_id == mv_id, w.c.kind == "window", w.c.window_start < start, has)
         .order_by(w.c.window_start.desc()).limit(k))
    if isinstance(engine_or_conn, sa.Engine):
        with engine_or_conn.connect() as conn:
            return list(conn.execute(q).scalars())
    return list(engine_or_conn.execute(q).scalars())


def load_profiles(conn, mv_id: int, window_ids: Sequence[int], features: Mapping[str, Feature]) -> dict:
    """Merged profiles of several windows, by feature: SQL SUMs over the stored rows (no raw data)."""
    b, s, c = M.window_num_bins, M.window_num_stats, M.window_cat_levels
    ids = list(window_ids)
    fine: dict[str, dict[int, int]] = {}
    for r in conn.execute(sa.select(b.c.feature, b.c.bin_idx, sa.func.sum(b.c.cnt))
                          .where(b.c.model_version_id == mv_id, b.c.window_id.in_(ids))
                          .group_by(b.c.feature, b.c.bin_idx)):
        fine.setdefault(r[0], {})[int(r[1])] = int(r[2])
    out = {}
    for r in conn.execute(sa.select(s.c.feature, sa.func.sum(s.c.n), sa.func.sum(s.c.n_missing), sa.func.sum(s.c.sum),
                                    sa.func.sum(s.c.sumsq), sa.func.min(s.c.min), sa.func.max(s.c.max),
                                    sa.func.max(s.c.median_exact), sa.func.count())
                          .where(s.c.model_version_id == mv_id, s.c.window_id.in_(ids)).group_by(s.c.feature)):
        f = r[0]
        out[f] = NumericProfile(fine.get(f, {}), int(r[1]), int(r[2]), float(r[3] or 0.0), float(r[4] or 0.0),
                                _f(r[5]), _f(r[6]), _f(r[7]) if int(r[8]) == 1 else None)
    levels: dict[str, dict[str, int]] = {}
    for r in conn.execute(sa.select(c.c.feature, c.c.level, sa.func.sum(c.c.cnt))
                          .where(c.c.model_version_id == mv_id, c.c.window_id.in_(ids)).group_by(c.c.feature, c.c.level)):
        levels.setdefault(r[0], {})[r[1]] = int(r[2])
    for name, feat in features.items():
        if feat.kind == "categorical":
            out[name] = CategoricalProfile(levels.get(name, {}))
        elif name not in out:
            out[name] = NumericProfile({}, 0, 0, 0.0, 0.0, None, None, None)
    return out


def _f(v):
    return None if v is None else float(v)


def psi_sql(engine_or_conn, mv_id: int, feature: str, ref_window_ids: Sequence[int], cur_window_ids: Sequence[int],
            *, k: int | None = None, eps: float = 1e-4) -> float | None:
    """PSI between two sets of windows computed in the database (the drift.md section 7 query).

    Fine counts are summed per coarse bin through ``bin_map`` (k = 10, or 5 when the current side
    has < 100 non-missing rows), then PSI = sum (q-p) ln(q/p) with p, q floored at ``eps``. Works on
    SQLite (``max``/``ln``), PostgreSQL and MariaDB (``GREATEST``/``LN``). None if a side is empty.
    """
    if isinstance(engine_or_conn, sa.Engine):
        with engine_or_conn.connect() as conn:
            return psi_sql(conn, mv_id, feature, ref_window_ids, cur_window_ids, k=k, eps=eps)
    conn = engine_or_conn
    w, m, s = M.window_num_bins, M.bin_map, M.window_num_stats
    if k is None:
        n_cur = conn.execute(sa.select(sa.func.sum(s.c.n - s.c.n_missing)).where(
            s.c.model_version_id == mv_id, s.c.feature == feature, s.c.window_id.in_(list(cur_window_ids)))).scalar()
        k = 10 if int(n_cur or 0) >= _DEFAULT.quintiles_below else 5
    dbl = sa.Double()

    def side(ids, name):
        return (sa.select(m.c.dec_idx.label("b"), sa.cast(sa.func.sum(w.c.cnt), dbl).label("c"))
                .select_from(w.join(m, sa.and_(m.c.model_version_id == w.c.model_version_id, m.c.feature == w.c.feature,
                                               m.c.fine_idx == w.c.bin_idx)))
                .where(w.c.model_version_id == mv_id, w.c.feature == feature, m.c.k == k, w.c.window_id.in_(list(ids)))
                .group_by(m.c.dec_idx).cte(name))

    ref, cur = side(ref_window_ids, "ref"), side(cur_window_ids, "cur")
    bins = sa.union(sa.select(ref.c.b), sa.select(cur.c.b)).cte("bins")
    nr = sa.select(sa.func.sum(ref.c.c)).scalar_subquery()
    nc = sa.select(sa.func.sum(cur.c.c)).scalar_subquery()
    greatest = sa.func.max if conn.dialect.name == "sqlite" else sa.func.greatest
    e = sa.cast(sa.literal(eps), dbl)
    pq = (sa.select(greatest(sa.func.coalesce(ref.c.c, 0.0) / nr, e).label("p"),
                    greatest(sa.func.coalesce(cur.c.c, 0.0) / nc, e).label("q"), nr.label("nr"), nc.label("nc"))
          .select_from(bins.outerjoin(ref, ref.c.b == bins.c.b).outerjoin(cur, cur.c.b == bins.c.b))).cte("pq")
    _ensure_ln(conn)
    val, n_r, n_c = conn.execute(sa.select(sa.func.sum((pq.c.q - pq.c.p) * sa.func.ln(pq.c.q / pq.c.p)),
                                           sa.func.max(pq.c.nr), sa.func.max(pq.c.nc))).one()
    return None if val is None or not n_r or not n_c else float(val)


def _ensure_ln(conn) -> None:
    """SQLite builds without the math functions lack ``ln``: register Python's on this connection."""
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.driver_connection
    if getattr(raw, "_ambidex_ln", False):
        return
    import math
    import sqlite3

    try:
        raw.execute("SELECT ln(1.0)")
    except sqlite3.OperationalError:
        raw.create_function("ln", 1, math.log, deterministic=True)
    try:
        raw._ambidex_ln = True
    except AttributeError:  # sqlite3.Connection may refuse new attributes
        pass
