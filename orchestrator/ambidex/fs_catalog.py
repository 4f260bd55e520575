"""fs_catalog: list, show and diff data versions, record the data versions a run read, and trace lineage."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import sqlalchemy as sa

from ambidex.errors import DataError, RegistryError
from ambidex.fs_mart import _get_mart
from ambidex.fs_spec import UTC, _iso
from ambidex.fstables import data_versions, fs_cat_levels, fs_col_stats, fs_marts, fs_num_bins, run_data_versions


def record_inputs(engine: sa.Engine, run_id: str, data_version_ids: list[int], role: str = "input") -> None:
    """Record that run ``run_id`` read these data versions (idempotent)."""
    now = dt.datetime.now(UTC)
    with engine.begin() as conn:
        have = set(conn.execute(sa.select(run_data_versions.c.data_version_id).where(
            run_data_versions.c.run_id == run_id, run_data_versions.c.role == role)).scalars())
        rows = [{"run_id": run_id, "data_version_id": i, "role": role, "created_at": now}
                for i in sorted(set(data_version_ids)) if i not in have]
        if rows:
            conn.execute(sa.insert(run_data_versions), rows)


def _dv_dict(r) -> dict:
    return {"id": r["id"], "mart": r["mart"], "version": r["version"], "load": r["load"],
            "window_start": _iso(r["window_start"]), "window_end": _iso(r["window_end"]), "row_count": r["row_count"],
            "content_hash": r["content_hash"], "source": r["source"], "run_id": r["run_id"],
            "created_at": _iso(r["created_at"]), "replaced_by": r["replaced_by"],
            "schema_changes": json.loads(r["schema_changes_json"] or "[]")}


def run_inputs(engine: sa.Engine, run_id: str) -> list[dict]:
    """The data versions a run read, with their source and window."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(data_versions, run_data_versions.c.role)
                            .join(run_data_versions, run_data_versions.c.data_version_id == data_versions.c.id)
                            .where(run_data_versions.c.run_id == run_id).order_by(data_versions.c.id)).mappings().all()
    return [{**_dv_dict(r), "role": r["role"]} for r in rows]


def lineage(engine: sa.Engine, model_name: str, version: int | str) -> dict:
    """Model version -> training run -> data versions -> source and window, as plain data."""
    insp = sa.inspect(engine)
    if not insp.has_table("model_versions"):
        raise RegistryError("The registry has no model_versions table.", code="registry.schema_missing",
                            hint="Run 'ambidex db upgrade'.")
    md = sa.MetaData()
    mv = sa.Table("model_versions", md, autoload_with=engine)
    q = sa.select(mv)
    cols = set(mv.c.keys())
    if "model" in cols or "model_name" in cols or "name" in cols:
        q = q.where(mv.c[next(c for c in ("model_name", "model", "name") if c in cols)] == model_name)
    elif "model_id" in cols and insp.has_table("models"):
        models = sa.Table("models", md, autoload_with=engine)
        q = q.join(models, models.c.id == mv.c.model_id).where(models.c.name == model_name)
    vcol = "version" if "version" in cols else "version_number"
    try:
        vnum = int(version)
    except (TypeError, ValueError):
        raise RegistryError(f"Model version {version!r} is not a number.", code="registry.not_found",
                            hint="Write MODEL:VERSION, e.g. churn:3.") from None
    with engine.connect() as conn:
        row = conn.execute(q.where(mv.c[vcol] == vnum)).mappings().first()
    if row is None:
        raise RegistryError(f"No model version {model_name}:{version}.", code="registry.not_found",
                            hint="Run 'ambidex models list' to see registered models.")
    run_id = row.get("run_id")
    run = None
    if run_id and insp.has_table("runs"):
        runs = sa.Table("runs", md, autoload_with=engine)
        with engine.connect() as conn:
            r = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        run = {k: (_iso(v) if isinstance(v, dt.datetime) else v) for k, v in dict(r).items()} if r else None
    return {"model": model_name, "version": vnum, "run_id": run_id, "run": run,
            "data_versions": run_inputs(engine, run_id) if run_id else []}


def list_marts(engine: sa.Engine) -> list[dict]:
    """Every mart with its load mode, latest version, current row count and last window."""
    out = []
    with engine.connect() as conn:
        for m in conn.execute(sa.select(fs_marts).order_by(fs_marts.c.name)).mappings():
            last = conn.execute(sa.select(data_versions).where(data_versions.c.mart == m["name"])
                                .order_by(data_versions.c.version.desc()).limit(1)).mappings().first()
            out.append({"mart": m["name"], "load": m["load"], "versions": m["last_version"],
                        "last_window": f"{_iso(last['window_start'])}/{_iso(last['window_end'])}" if last and last["window_start"] else None,
                        "last_rows": last["row_count"] if last else 0, "updated_at": _iso(m["updated_at"])})
    return out


def list_data_versions(engine: sa.Engine, mart: str) -> list[dict]:
    """All data versions of a mart, oldest first."""
    _get_mart(engine, mart)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(data_versions).where(data_versions.c.mart == mart)
                            .order_by(data_versions.c.version)).mappings().all()
    return [_dv_dict(r) for r in rows]


def _dv_row(conn, mart: str, version: int | None):
    q = sa.select(data_versions).where(data_versions.c.mart == mart)
    q = q.where(data_versions.c.version == version) if version is not None else q.order_by(data_versions.c.version.desc()).limit(1)
    r = conn.execute(q).mappings().first()
    if r is None:
        raise DataError(f"No data version {mart}@{version}.", code="data.not_found",
                        hint=f"Run 'ambidex data show {mart}' to see its versions.")
    return r


def show_data_version(engine: sa.Engine, mart: str, version: int | None = None, top_levels: int = 10) -> dict:
    """One data version (the latest by default) with its schema and per-column profile."""
    _get_mart(engine, mart)
    with engine.connect() as conn:
        r = _dv_row(conn, mart, version)
        stats = conn.execute(sa.select(fs_col_stats).where(fs_col_stats.c.data_version_id == r["id"])
                             .order_by(fs_col_stats.c.column_name)).mappings().all()
        lv = conn.execute(sa.select(fs_cat_levels).where(fs_cat_levels.c.data_version_id == r["id"])).mappings().all()
    levels: dict[str, list] = {}
    for x in sorted(lv, key=lambda x: (-x["cnt"], x["level"])):
        levels.setdefault(x["column_name"], []).append({"level": x["level"], "count": x["cnt"]})
    cols = []
    for s in stats:
        d = {k: s[k] for k in ("column_name", "kind", "ctype", "n", "n_missing", "min", "max", "median_exact")}
        valid = s["n"] - s["n_missing"]
        d["mean"] = s["sum"] / valid if s["sum"] is not None and valid else None
        if s["kind"] == "categorical":
            d["top_levels"] = levels.get(s["column_name"], [])[:top_levels]
        cols.append(d)
    return {**_dv_dict(r), "schema": json.loads(r["schema_json"]), "profile": cols}


def _psi(p: dict, q: dict) -> float | None:
    np_, nq = sum(p.values()), sum(q.values())
    if not np_ or not nq:
        return None
    total = 0.0
    for b in set(p) | set(q):
        pp, qq = max(p.get(b, 0) / np_, 1e-4), max(q.get(b, 0) / nq, 1e-4)
        total += (qq - pp) * np.log(qq / pp)
    return float(total)


def diff_data_versions(engine: sa.Engine, mart: str, v1: int, v2: int) -> dict:
    """Row counts, schema changes and per-column profile changes between two data versions of a mart."""
    _get_mart(engine, mart)
    with engine.connect() as conn:
        a, b = _dv_row(conn, mart, v1), _dv_row(conn, mart, v2)

        def prof(dv_id):
            st = {s["column_name"]: dict(s) for s in conn.execute(sa.select(fs_col_stats).where(fs_col_stats.c.data_version_id == dv_id)).mappings()}
            bins: dict[str, dict] = {}
            for x in conn.execute(sa.select(fs_num_bins).where(fs_num_bins.c.data_version_id == dv_id)).mappings():
                bins.setdefault(x["column_name"], {})[x["bin_idx"]] = x["cnt"]
            for x in conn.execute(sa.select(fs_cat_levels).where(fs_cat_levels.c.data_version_id == dv_id)).mappings():
                bins.setdefault(x["column_name"], {})[x["level"]] = x["cnt"]
            return st, bins
        sa_, ba = prof(a["id"])
        sb, bb = prof(b["id"])
    ca, cb = json.loads(a["schema_json"])["columns"], json.loads(b["schema_json"])["columns"]
    schema = {"added": sorted(set(cb) - set(ca)), "removed": sorted(set(ca) - set(cb)),
              "retyped": sorted(c for c in set(ca) & set(cb) if ca[c]["type"] != cb[c]["type"]),
              "levels_added": {c: [x for x in cb[c].get("levels", []) if x not in ca[c].get("levels", [])]
                               for c in set(ca) & set(cb) if cb[c]["type"] == "category"
                               and set(cb[c].get("levels", [])) - set(ca[c].get("levels", []))}}
    cols = []
    for c in sorted(set(sa_) & set(sb)):
        x, y = sa_[c], sb[c]

        def mean(s):
            valid = s["n"] - s["n_missing"]
            return s["sum"] / valid if s["sum"] is not None and valid else None

        def rate(s):
            return s["n_missing"] / s["n"] if s["n"] else None
        d = {"column": c, "kind": y["kind"], "n": [x["n"], y["n"]], "missing_rate": [rate(x), rate(y)],
             "psi": _psi(ba.get(c, {}), bb.get(c, {}))}
        if y["kind"] == "numeric":
            d.update(mean=[mean(x), mean(y)], median=[x["median_exact"], y["median_exact"]],
                     min=[x["min"], y["min"]], max=[x["max"], y["max"]])
        cols.append(d)
    return {"mart": mart, "from": _dv_dict(a), "to": _dv_dict(b),
            "row_count": {"from": a["row_count"], "to": b["row_count"], "delta": b["row_count"] - a["row_count"]},
            "schema": schema, "columns": cols}
