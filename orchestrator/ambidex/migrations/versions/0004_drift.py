"""drift: per-model grids, window profiles, drift/impact/KPI results, benchmarks, decisions

Revision ID: 0004_drift
Revises: 0003_deploy
Create Date: 2024-06-04

Written out rather than taken from ``ambidex.monitortables`` so this revision keeps creating
the same schema when ``monitortables.py`` moves on.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ambidex.tables import MYSQL_OPTS, BigId, LongText, UTCDateTime

revision = "0004_drift"
down_revision = "0003_deploy"
branch_labels = None
depends_on = None

# Read by ambidex.db.check_schema to detect a half-applied migration (MariaDB cannot roll back DDL).
ambidex_tables = ("monitor_features", "feature_grid", "bin_map", "monitor_windows", "window_num_bins",
                  "window_num_stats", "window_cat_levels", "drift_checks", "drift_result", "impact_result",
                  "kpi_result", "kpi_benchmarks", "kpi_decisions", "monitor_calibration")

_MV = "model_versions.id"
_FEAT = sa.String(255)
_WIN = "monitor_windows.id"


def upgrade() -> None:
    op.create_table(
        "monitor_features",
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
    op.create_table(
        "feature_grid",
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
        sa.Column("feature", _FEAT, primary_key=True),
        sa.Column("bin_idx", sa.Integer, primary_key=True),
        sa.Column("upper_edge", sa.Double(), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_table(
        "bin_map",
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
        sa.Column("feature", _FEAT, primary_key=True),
        sa.Column("k", sa.Integer, primary_key=True),
        sa.Column("fine_idx", sa.Integer, primary_key=True),
        sa.Column("dec_idx", sa.Integer, nullable=False),
        **MYSQL_OPTS,
    )
    op.create_table(
        "monitor_windows",
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
    op.create_table(
        "window_num_bins",
        sa.Column("window_id", sa.Integer, sa.ForeignKey(_WIN, ondelete="CASCADE"), primary_key=True),
        sa.Column("feature", _FEAT, primary_key=True),
        sa.Column("bin_idx", sa.Integer, primary_key=True),
        sa.Column("model_version_id", sa.Integer, nullable=False),
        sa.Column("cnt", sa.BigInteger, nullable=False),
        **MYSQL_OPTS,
    )
    op.create_index("ix_window_num_bins_model_version_id_feature", "window_num_bins", ["model_version_id", "feature"])
    op.create_table(
        "window_num_stats",
        sa.Column("window_id", sa.Integer, sa.ForeignKey(_WIN, ondelete="CASCADE"), primary_key=True),
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
    op.create_table(
        "window_cat_levels",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("window_id", sa.Integer, sa.ForeignKey(_WIN, ondelete="CASCADE"), nullable=False),
        sa.Column("model_version_id", sa.Integer, nullable=False),
        sa.Column("feature", _FEAT, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("cnt", sa.BigInteger, nullable=False),
        **MYSQL_OPTS,
    )
    op.create_index("ix_window_cat_levels_window_id_feature", "window_cat_levels", ["window_id", "feature"])
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), nullable=False),
        sa.Column("window_id", sa.Integer, sa.ForeignKey(_WIN), nullable=False),
        sa.Column("baseline", sa.String(16), nullable=False),
        sa.Column("baseline_windows", sa.String(512), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("weighted_psi", sa.Double()),
        sa.Column("drifted_importance_share", sa.Double()),
        sa.Column("dataset_drift", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.Text),
        sa.Column("uniform_importance", sa.Boolean(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_index("ix_drift_checks_model_version_id_window_id", "drift_checks", ["model_version_id", "window_id"])
    op.create_table(
        "drift_result",
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
        **MYSQL_OPTS,
    )
    op.create_index("ix_drift_result_feature_metric", "drift_result", ["feature", "metric"])
    op.create_index("ix_drift_result_check_id", "drift_result", ["check_id"])
    op.create_table(
        "impact_result",
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
        **MYSQL_OPTS,
    )
    op.create_index("ix_impact_result_check_id", "impact_result", ["check_id"])
    op.create_table(
        "kpi_result",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), nullable=False),
        sa.Column("window_id", sa.Integer, sa.ForeignKey(_WIN), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Double()),
        sa.Column("se", sa.Double()),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("is_estimated", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_index("ix_kpi_result_model_version_id_metric", "kpi_result", ["model_version_id", "metric"])
    op.create_table(
        "kpi_benchmarks",
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("se", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("frozen_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('floor', 'holdout')", name="kind"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "kpi_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), nullable=False),
        sa.Column("window_id", sa.Integer, sa.ForeignKey(_WIN)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("decision", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.Text),
        sa.Column("details", LongText, nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('retrain', 'promotion')", name="kind"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "monitor_calibration",
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey(_MV), primary_key=True),
        sa.Column("method", sa.String(16), primary_key=True),
        sa.Column("table_json", LongText, nullable=False),
        sa.Column("fitted_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("method IN ('cbpe', 'dle')", name="method"),
        **MYSQL_OPTS,
    )


def downgrade() -> None:
    for name in reversed(ambidex_tables):
        op.drop_table(name)
