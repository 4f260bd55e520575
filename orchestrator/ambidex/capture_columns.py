"""capture_columns: labels in and captured predictions out, set-based and column-wise (no per-row dicts).

:func:`record_label_columns` stores one window's labels with one executemany insert (replacing labels
given before for the same keys with one executemany delete) and counts, in SQL and in the same
transaction, how many match a captured prediction. :func:`captured_columns` reads a window's captured
predictions per model as numpy arrays straight from a DBAPI cursor, in chunks. They serve the cycle's
labels and score steps and the KPI monitor, which need columns, not rows
(:func:`ambidex.capture.predictions_with_labels` returns rows).

    >>> record_label_columns(engine, "churn", window, ["1", "2"], ["Yes", "No"], deployment="churn-live")  # doctest: +SKIP
    (2, 2)
    >>> captured_columns(engine, "churn-live", window[0], ("score",))[("churn_r", 1)]["score"]   # doctest: +SKIP
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

import sqlalchemy as sa

from . import deploytables as T
from .errors import UsageError

__all__ = ["record_label_columns", "captured_columns", "replace_labels"]


def _delete_keys(conn, lab: sa.Table, source: str, start: dt.datetime, keys: list[str]) -> None:
    """DELETE the labels of (source, window, key) for every key: ONE statement run by a DBAPI executemany
    (a primary-key lookup per key), bind processors applied once, as :func:`ambidex.db.insert_columns` does."""
    stmt = lab.delete().where(lab.c.source == sa.bindparam("s"), lab.c.window_start == sa.bindparam("w"),
                              lab.c.entity_key == sa.bindparam("k"))
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    w = lab.c.window_start.type._cached_bind_processor(dialect)
    const = {"s": source, "w": w(start) if w else start}
    if compiled.positional:
        from itertools import repeat

        params = list(zip(*[keys if n == "k" else repeat(const[n], len(keys)) for n in compiled.positiontup]))
    else:
        params = [{**const, "k": k} for k in keys]
    conn.exec_driver_sql(str(compiled), params)


def replace_labels(conn, source: str, window, keys, labels, clock=None) -> None:
    """Delete the labels of ``keys`` in ``window`` (only when the window already has some: the first delivery
    deletes nothing), then insert the new ones column-wise in one executemany, on the caller's transaction."""
    from .db import insert_columns

    lab = T.labels
    start, end = window
    now = (clock or (lambda: dt.datetime.now(dt.timezone.utc)))()
    keys = [str(k) for k in keys]
    if not keys:
        return
    if conn.execute(sa.select(lab.c.entity_key).where(lab.c.source == source, lab.c.window_start == start)
                    .limit(1)).first() is not None:
        _delete_keys(conn, lab, source, start, keys)
    insert_columns(conn, lab, {"source": source, "window_start": start, "window_end": end, "arrived_at": now},
                   {"entity_key": keys, "label": [None if v is None else str(v) for v in labels]})


def _window_batches(conn, deployment: str, window_start: dt.datetime) -> list:
    """The capture batches of one window: (id, model, version, role, row_count, label source), by role and model."""
    from .tables import model_versions, models

    d, b = T.deployments, T.capture_batches
    return conn.execute(
        sa.select(b.c.id, models.c.name, model_versions.c.version, b.c.role, b.c.row_count,
                  sa.func.coalesce(d.c.source, d.c.name).label("source"))
        .select_from(b.join(d, d.c.id == b.c.deployment_id)
                     .join(model_versions, model_versions.c.id == b.c.model_version_id)
                     .join(models, models.c.id == model_versions.c.model_id))
        .where(d.c.name == deployment, b.c.window_start == window_start)
        .order_by(b.c.role, models.c.name, model_versions.c.version)).all()


def record_label_columns(engine: sa.Engine, source: str, window, keys, labels, *, deployment: str | None = None,
                         check: Callable[[int, int], None] | None = None, clock=None) -> tuple[int, int]:
    """Store the labels of one window given column-wise (``keys[i]`` has ``labels[i]``; None = missing), replacing
    labels given before for the same keys; returns (labels stored, labels of the window, these and any stored
    before, that match a captured prediction of ``deployment`` in the window; 0 without a deployment).
    Set-based: chunked ``IN`` deletes (only when the window already holds labels), one executemany insert,
    and the match counted in SQL.

    ``check(stored, matched)`` runs inside the transaction: raising there stores nothing.
    """
    start = window[0]
    with engine.begin() as conn:
        replace_labels(conn, source, window, keys, labels, clock)
        matched = 0
        if deployment is not None:
            p, lab = T.predictions, T.labels
            # every batch of a window scored the same rows: the fullest batch has every captured key
            for bid, *_ in sorted(_window_batches(conn, deployment, start), key=lambda r: -r.row_count)[:1]:
                matched = conn.execute(
                    sa.select(sa.func.count()).select_from(p.join(lab, sa.and_(
                        lab.c.source == source, lab.c.entity_key == p.c.entity_key, lab.c.window_start == start)))
                    .where(p.c.batch_id == bid)).scalar_one()
        if check is not None:
            check(len(keys), matched)
    return len(keys), matched


def captured_columns(engine: sa.Engine, deployment: str, window_start: dt.datetime,
                     columns=("entity_key", "score", "label"), *, chunk_rows: int = 100_000) -> dict:
    """Captured predictions of one window column-wise, per model: ``{(model, version): {column: numpy array}}``
    in row order. Columns: ``entity_key``, ``prediction``, ``label`` (object arrays, None when missing; the
    label joined by entity key and window) and ``score`` (float64, NaN when missing). Streams each batch
    from the cursor in ``chunk_rows`` parts: no per-row dicts (use :func:`ambidex.capture.predictions_with_labels` for rows)."""
    import numpy as np

    p, lab = T.predictions, T.labels
    unknown = [c for c in columns if c not in ("entity_key", "prediction", "score", "label")]
    if unknown:
        raise UsageError(f"captured_columns: unknown column(s) {unknown}.", code="usage.invalid",
                         hint="Use entity_key, prediction, score, label.")
    out: dict = {}
    with engine.connect() as conn:
        for bid, name, version, _role, _n, source in _window_batches(conn, deployment, window_start):
            sel = [lab.c.label if c == "label" else p.c[c] for c in columns]
            frm = p
            if "label" in columns:
                frm = p.outerjoin(lab, sa.and_(lab.c.source == sa.bindparam("src"), lab.c.entity_key == p.c.entity_key,
                                               lab.c.window_start == sa.bindparam("ws")))
            q = sa.select(*sel).select_from(frm).where(p.c.batch_id == sa.bindparam("bid")).order_by(p.c.row_index)
            parts: dict[str, list] = {c: [] for c in columns}
            # plain tuples from a DBAPI cursor (text and doubles need no result processing): no Row objects
            for chunk in _raw_chunks(conn, q, {"bid": bid, "src": source, "ws": window_start},
                                     {"ws": lab.c.window_start.type}, chunk_rows):
                for c, values in zip(columns, zip(*chunk)):
                    parts[c].append(np.array(values, dtype=np.float64 if c == "score" else object))
            out[(name, version)] = {c: (np.concatenate(v) if v else np.zeros(0, np.float64 if c == "score" else object))
                                    for c, v in parts.items()}
    return out


def _raw_chunks(conn, stmt, values: dict, types: dict, chunk_rows: int):
    """Rows of ``stmt`` (bound parameters ``values``; ``types`` names those needing a bind processor) as lists of
    plain DBAPI tuples, ``chunk_rows`` at a time, from an unbuffered cursor where the driver has one (MySQL)."""
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    vals = {}
    for k, v in values.items():
        proc = types[k]._cached_bind_processor(dialect) if k in types else None
        vals[k] = proc(v) if proc else v
    names = [n for n in compiled.bind_names.values()] if not compiled.positional else None
    params = tuple(vals[n] for n in compiled.positiontup) if compiled.positional else {n: vals[n] for n in names}
    dbapi = conn.connection.dbapi_connection
    cur = None
    if dialect.name in ("mysql", "mariadb"):
        try:
            from pymysql.cursors import SSCursor

            cur = dbapi.cursor(SSCursor)
        except ImportError:
            cur = None
    cur = cur or dbapi.cursor()
    try:
        cur.execute(str(compiled), params)
        while True:
            chunk = cur.fetchmany(chunk_rows)
            if not chunk:
                return
            yield chunk
    finally:
        cur.close()
