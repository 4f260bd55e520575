"""fs_profiles: store a data version's per-column profiles and load a mart's frozen grids (see ``profiling``)."""
from __future__ import annotations

import json

import sqlalchemy as sa

from ambidex.drift_profile import NumericGrid
from ambidex.fs_mart import _connect
from ambidex.fstables import fs_cat_levels, fs_col_stats, fs_grid, fs_grid_meta, fs_num_bins


def _write_profiles(conn, mart: str, dv_id: int, profiles, new_grids: dict[str, NumericGrid]) -> None:
    stats, bins, levels, grid, meta = [], [], [], [], []
    for p in profiles:
        n_levels = None
        if p.kind == "numeric":
            bins += [{"data_version_id": dv_id, "column_name": p.column, "bin_idx": i, "cnt": c}
                     for i, c in p.profile.fine_counts.items()]
        else:
            levels += [{"data_version_id": dv_id, "column_name": p.column, "level": lv, "cnt": c}
                       for lv, c in p.profile.level_counts.items()]
            n_levels = len(p.profile.level_counts)
        stats.append({"data_version_id": dv_id, "column_name": p.column, "kind": p.kind, "ctype": p.ctype,
                      "n_levels": n_levels, **p.stats()})
    for col, g in new_grids.items():
        meta.append({"mart": mart, "column_name": col, "kind": g.kind, "median": g.median, "q25": g.q25, "q75": g.q75,
                     "percentiles_json": json.dumps(g.percentiles) if g.percentiles is not None else None,
                     "sd_pop": g.sd_pop, "n_valid": g.n_valid, "data_version_id": dv_id})
        grid += [{"mart": mart, "column_name": col, "bin_idx": i, "upper_edge": e, "data_version_id": dv_id}
                 for i, e in enumerate(g.edges)]
    for t, rows in ((fs_col_stats, stats), (fs_num_bins, bins), (fs_cat_levels, levels), (fs_grid_meta, meta),
                    (fs_grid, grid)):
        if rows:
            conn.execute(sa.insert(t), rows)


def load_grids(engine: sa.Engine, mart: str) -> dict[str, NumericGrid]:
    """The frozen per-column grids of a mart (see ``profiling``), as ``drift_profile.NumericGrid``."""
    out: dict[str, NumericGrid] = {}
    with _connect(engine) as conn:
        edges: dict[str, list[float]] = {}
        for r in conn.execute(sa.select(fs_grid.c.column_name, fs_grid.c.upper_edge)
                              .where(fs_grid.c.mart == mart).order_by(fs_grid.c.column_name, fs_grid.c.bin_idx)):
            edges.setdefault(r.column_name, []).append(r.upper_edge)
        for m in conn.execute(sa.select(fs_grid_meta).where(fs_grid_meta.c.mart == mart)).mappings():
            pct = json.loads(m["percentiles_json"]) if m["percentiles_json"] else None
            out[m["column_name"]] = NumericGrid(m["kind"], tuple(edges.get(m["column_name"], ())),
                                               tuple(pct) if pct is not None else None, m["median"], m["q25"],
                                               m["q75"], m["sd_pop"], m["n_valid"])
    return out
