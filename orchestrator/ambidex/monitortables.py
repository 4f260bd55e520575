"""monitortables: the SQL schema of drift monitoring (drift.md section 7): per-model grids, window profiles, results.

The tables join the registry's :data:`ambidex.tables.metadata`; migration ``0004_drift``
creates them and a test compares the two. ``model_version_id`` is ``model_versions.id``:
the fine grid belongs to the model version and is frozen from its training reference.

- ``monitor_features``: the model version's monitored features (kind, contract type,
  normalised importance) and the reference summary a :class:`~ambidex.drift_profile.NumericGrid`
  needs; ``feature_grid`` holds the fine edges and ``bin_map`` fine bin -> coarse bin for
  k = 10 (deciles) and k = 5 (quintiles), -1 = missing.
- ``monitor_windows``: one row per profiled window (the reference is ``kind='reference'``);
  ``window_num_bins``/``window_num_stats``/``window_cat_levels`` are its profile, written once.
- ``drift_checks`` (one per check and baseline, with the dataset verdict), ``drift_result``
  (one row per feature and statistic), ``impact_result`` (w, impact_psi, impact_median).
- ``kpi_result`` (labelled or ``is_estimated`` KPIs with SEs), ``kpi_benchmarks`` (a business
  floor or the champion's hold-out KPI frozen at promotion), ``kpi_decisions`` (retrain and
  promotion decisions with their deltas and z-scores), ``monitor_calibration`` (CBPE/DLE tables).
"""
from __future__ import annotations

import sqlalchemy as sa

from .tables import MYSQL_OPTS, BigId, LongText, UTCDateTime, metadata

__all__ = [
    "monitor_features", "feature_grid", "bin_map", "monitor_windows", "window_num_bins", "window_num_stats",
    "window_cat_levels", "drift_checks", "drift_result", "impact_result", "kpi_result", "kpi_benchmarks",
    "kpi_decisions", "monitor_calibration", "MONITOR_TABLES",
]

_MV = "model_versions.id"
_FEAT = sa.String(255)

monitor_features = sa.Table(
    "monitor_features", metadata,
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
    sa.Column("feature", _FEAT, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ctype", sa.String(16), nullable=False),
    sa.Column("grid_kind", sa.String(16)),
    sa.Column("percentiles_json", LongText),
    sa.Column("median", sa.Double()),
    sa.Column("q25", sa.Double()),
    sa.Column("q75", sa.Double()),
    sa.Column("sd_pop", sa.Double()),
    sa.Column("n_valid", sa.BigInteger),
    sa.Column("importance", sa.Double()),
    **MYSQL_OPTS,
)

feature_grid = sa.Table(
    "feature_grid", metadata,
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
    sa.Column("feature", _FEAT, primary_key=True),
    sa.Column("bin_idx", sa.Integer, primary_key=True),
    sa.Column("upper_edge", sa.Double(), nullable=False),
    **MYSQL_OPTS,
)

bin_map = sa.Table(
    "bin_map", metadata,
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
    sa.Column("feature", _FEAT, primary_key=True),
    sa.Column("k", sa.Integer, primary_key=True),
    sa.Column("fine_idx", sa.Integer, primary_key=True),
    sa.Column("dec_idx", sa.Integer, nullable=False),
    **MYSQL_OPTS,
)

monitor_windows = sa.Table(
    "monitor_windows", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("window_start", UTCDateTime()),
    sa.Column("window_end", UTCDateTime()),
    sa.Column("source", sa.String(512), nullable=False),
    sa.Column("n_rows", sa.BigInteger),
    sa.Column("profiled_at", UTCDateTime(), nullable=False),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
    sa.UniqueConstraint("model_version_id", "kind", "window_start", "window_end"),
    sa.CheckConstraint("kind IN ('reference', 'window')", name="kind"),
    **MYSQL_OPTS,
)

window_num_bins = sa.Table(
    "window_num_bins", metadata,
    sa.Column("window_id", sa.Integer, sa.ForeignKey("monitor_windows.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("feature", _FEAT, primary_key=True),
    sa.Column("bin_idx", sa.Integer, primary_key=True),
    sa.Column("model_version_id", sa.Integer, nullable=False),
    sa.Column("cnt", sa.BigInteger, nullable=False),
    sa.Index(None, "model_version_id", "feature"),
    **MYSQL_OPTS,
)

window_num_stats = sa.Table(
    "window_num_stats", metadata,
    sa.Column("window_id", sa.Integer, sa.ForeignKey("monitor_windows.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("feature", _FEAT, primary_key=True),
    sa.Column("model_version_id", sa.Integer, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("n_missing", sa.BigInteger, nullable=False),
    sa.Column("sum", sa.Double()),
    sa.Column("sumsq", sa.Double()),
    sa.Column("min", sa.Double()),
    sa.Column("max", sa.Double()),
    sa.Column("median_exact", sa.Double()),
    **MYSQL_OPTS,
)

window_cat_levels = sa.Table(
    "window_cat_levels", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("window_id", sa.Integer, sa.ForeignKey("monitor_windows.id", ondelete="CASCADE"), nullable=False),
    sa.Column("model_version_id", sa.Integer, nullable=False),
    sa.Column("feature", _FEAT, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("cnt", sa.BigInteger, nullable=False),
    sa.Index(None, "window_id", "feature"),
    **MYSQL_OPTS,
)

drift_checks = sa.Table(
    "drift_checks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), nullable=False),
    sa.Column("window_id", sa.Integer, sa.ForeignKey("monitor_windows.id"), nullable=False),
    sa.Column("baseline", sa.String(16), nullable=False),
    sa.Column("baseline_windows", sa.String(512), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("weighted_psi", sa.Double()),
    sa.Column("drifted_importance_share", sa.Double()),
    sa.Column("dataset_drift", sa.Boolean(), nullable=False),
    sa.Column("reasons", sa.Text),
    sa.Column("uniform_importance", sa.Boolean(), nullable=False),
    sa.Column("checked_at", UTCDateTime(), nullable=False),
    sa.Index(None, "model_version_id", "window_id"),
    **MYSQL_OPTS,
)

drift_result = sa.Table(
    "drift_result", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("check_id", sa.Integer, sa.ForeignKey("drift_checks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("run_id", sa.String(32)),
    sa.Column("model_version_id", sa.Integer, nullable=False),
    sa.Column("window_id", sa.Integer, nullable=False),
    sa.Column("baseline", sa.String(16), nullable=False),
    sa.Column("feature", _FEAT, nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("value", sa.Double()),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("reasons", sa.Text),
    sa.Index(None, "feature", "metric"),
    sa.Index(None, "check_id"),
    **MYSQL_OPTS,
)

impact_result = sa.Table(
    "impact_result", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("check_id", sa.Integer, sa.ForeignKey("drift_checks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("run_id", sa.String(32)),
    sa.Column("model_version_id", sa.Integer, nullable=False),
    sa.Column("window_id", sa.Integer, nullable=False),
    sa.Column("feature", _FEAT, nullable=False),
    sa.Column("w", sa.Double(), nullable=False),
    sa.Column("impact_psi", sa.Double()),
    sa.Column("impact_median", sa.Double()),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Index(None, "check_id"),
    **MYSQL_OPTS,
)

kpi_result = sa.Table(
    "kpi_result", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), nullable=False),
    sa.Column("window_id", sa.Integer, sa.ForeignKey("monitor_windows.id"), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("value", sa.Double()),
    sa.Column("se", sa.Double()),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("is_estimated", sa.Boolean(), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("computed_at", UTCDateTime(), nullable=False),
    sa.Index(None, "model_version_id", "metric"),
    **MYSQL_OPTS,
)

kpi_benchmarks = sa.Table(
    "kpi_benchmarks", metadata,
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("value", sa.Double(), nullable=False),
    sa.Column("se", sa.Double(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("frozen_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('floor', 'holdout')", name="kind"),
    **MYSQL_OPTS,
)

kpi_decisions = sa.Table(
    "kpi_decisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), nullable=False),
    sa.Column("window_id", sa.Integer, sa.ForeignKey("monitor_windows.id")),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("decision", sa.Boolean(), nullable=False),
    sa.Column("reasons", sa.Text),
    sa.Column("details", LongText, nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('retrain', 'promotion')", name="kind"),
    **MYSQL_OPTS,
)

monitor_calibration = sa.Table(
    "monitor_calibration", metadata,
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
    sa.Column("method", sa.String(16), primary_key=True),
    sa.Column("table_json", LongText, nullable=False),
    sa.Column("fitted_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint("method IN ('cbpe', 'dle')", name="method"),
    **MYSQL_OPTS,
)

MONITOR_TABLES = [monitor_features, feature_grid, bin_map, monitor_windows, window_num_bins, window_num_stats,
                  window_cat_levels, drift_checks, drift_result, impact_result, kpi_result, kpi_benchmarks,
                  kpi_decisions, monitor_calibration]
