"""featurestore: marts, data versions, run inputs and per-window profiles

Revision ID: 0002_featurestore
Revises: 0001_registry
Create Date: 2024-06-02

Written out rather than taken from ``ambidex.fstables`` so this revision keeps creating
the same schema when ``fstables.py`` moves on. The mart tables themselves are created by
``ambidex.featurestore`` at the first load of each mart.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ambidex.tables import MYSQL_OPTS, LongText, UTCDateTime

revision = "0002_featurestore"
down_revision = "0001_registry"
branch_labels = None
depends_on = None

# Read by ambidex.db.check_schema to detect a half-applied migration (MariaDB cannot roll back DDL).
ambidex_tables = ("fs_marts", "data_versions", "run_data_versions", "fs_grid", "fs_grid_meta",
                  "fs_col_stats", "fs_num_bins", "fs_cat_levels")

_NAME = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "fs_marts",
        sa.Column("name", _NAME, primary_key=True),
        sa.Column("table_name", _NAME, nullable=False),
        sa.Column("load", sa.String(16), nullable=False),
        sa.Column("spec_json", LongText, nullable=False),
        sa.Column("schema_json", LongText, nullable=True),
        sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("watermark", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_table(
        "data_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mart", _NAME, sa.ForeignKey("fs_marts.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("load", sa.String(16), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=True),
        sa.Column("window_end", UTCDateTime(), nullable=True),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("schema_json", LongText, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(80), nullable=False),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("schema_changes_json", LongText, nullable=False),
        sa.Column("watermark_from", sa.Text, nullable=True),
        sa.Column("watermark_to", sa.Text, nullable=True),
        sa.Column("replaced_rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("replaced_by", sa.Integer, nullable=True),
        sa.UniqueConstraint("mart", "version"),
        **MYSQL_OPTS,
    )
    op.create_index("ix_data_versions_run_id", "data_versions", ["run_id"])
    op.create_table(
        "run_data_versions",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), primary_key=True),
        sa.Column("role", sa.String(16), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_table(
        "fs_grid",
        sa.Column("mart", _NAME, sa.ForeignKey("fs_marts.name"), primary_key=True),
        sa.Column("column_name", _NAME, primary_key=True),
        sa.Column("bin_idx", sa.Integer, primary_key=True),
        sa.Column("upper_edge", sa.Double, nullable=False),
        sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_table(
        "fs_grid_meta",
        sa.Column("mart", _NAME, sa.ForeignKey("fs_marts.name"), primary_key=True),
        sa.Column("column_name", _NAME, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("percentiles_json", LongText, nullable=True),
        sa.Column("median", sa.Double, nullable=False),
        sa.Column("q25", sa.Double, nullable=False),
        sa.Column("q75", sa.Double, nullable=False),
        sa.Column("sd_pop", sa.Double, nullable=False),
        sa.Column("n_valid", sa.BigInteger, nullable=False),
        sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_table(
        "fs_col_stats",
        sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), primary_key=True),
        sa.Column("column_name", _NAME, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ctype", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("n_missing", sa.BigInteger, nullable=False),
        sa.Column("sum", sa.Double, nullable=True),
        sa.Column("sumsq", sa.Double, nullable=True),
        sa.Column("min", sa.Double, nullable=True),
        sa.Column("max", sa.Double, nullable=True),
        sa.Column("median_exact", sa.Double, nullable=True),
        sa.Column("n_levels", sa.Integer, nullable=True),
        **MYSQL_OPTS,
    )
    op.create_table(
        "fs_num_bins",
        sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), primary_key=True),
        sa.Column("column_name", _NAME, primary_key=True),
        sa.Column("bin_idx", sa.Integer, primary_key=True),
        sa.Column("cnt", sa.BigInteger, nullable=False),
        **MYSQL_OPTS,
    )
    op.create_table(
        "fs_cat_levels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), nullable=False),
        sa.Column("column_name", _NAME, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("cnt", sa.BigInteger, nullable=False),
        **MYSQL_OPTS,
    )
    op.create_index("ix_fs_cat_levels_data_version_id", "fs_cat_levels", ["data_version_id"])


def downgrade() -> None:
    for name in reversed(ambidex_tables):
        op.drop_table(name)
