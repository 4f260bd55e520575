"""fstables: the feature store's bookkeeping tables (marts, data versions, lineage, per-window profiles).

The mart tables themselves are created per mart by ``featurestore`` (their columns come
from the data); this module holds only the fixed bookkeeping schema, in the registry's
``MetaData`` (``ambidex.tables``), so ``run_id`` columns are foreign keys to ``runs.id``.
Migration ``0002_featurestore`` creates them.

Profile tables follow ../shared/specs/drift.md section 7, keyed by data version instead
of by model: see ``profiling`` for why the grid is per mart.
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

__all__ = [
    "metadata", "MartTimestamp", "fs_marts", "data_versions", "run_data_versions",
    "fs_grid", "fs_grid_meta", "fs_col_stats", "fs_num_bins", "fs_cat_levels", "FS_TABLES", "HAS_RUNS",
]

from ambidex.tables import MYSQL_OPTS, LongText, UTCDateTime, metadata

HAS_RUNS = "runs" in metadata.tables


class MartTimestamp(sa.types.TypeDecorator):
    """A mart's timestamp column: ``timestamptz`` on PostgreSQL (aware binds), naive UTC elsewhere.

    The bulk loaders write the same text form SQLAlchemy uses (``YYYY-MM-DD HH:MM:SS.ffffff``
    on SQLite), so bound window limits compare correctly.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.timezone.utc)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def _run_fk() -> list:
    return [sa.ForeignKey("runs.id")] if HAS_RUNS else []


_NAME = sa.String(64)

fs_marts = sa.Table(
    "fs_marts", metadata,
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

data_versions = sa.Table(
    "data_versions", metadata,
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
    sa.Column("run_id", sa.String(32), *_run_fk(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("schema_changes_json", LongText, nullable=False),
    sa.Column("watermark_from", sa.Text, nullable=True),
    sa.Column("watermark_to", sa.Text, nullable=True),
    sa.Column("replaced_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("replaced_by", sa.Integer, nullable=True),
    sa.UniqueConstraint("mart", "version"),
    sa.Index(None, "run_id"),
    **MYSQL_OPTS,
)

run_data_versions = sa.Table(
    "run_data_versions", metadata,
    sa.Column("run_id", sa.String(32), *_run_fk(), primary_key=True),
    sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    **MYSQL_OPTS,
)

fs_grid = sa.Table(
    "fs_grid", metadata,
    sa.Column("mart", _NAME, sa.ForeignKey("fs_marts.name"), primary_key=True),
    sa.Column("column_name", _NAME, primary_key=True),
    sa.Column("bin_idx", sa.Integer, primary_key=True),
    sa.Column("upper_edge", sa.Double, nullable=False),
    sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), nullable=False),
    **MYSQL_OPTS,
)

fs_grid_meta = sa.Table(
    "fs_grid_meta", metadata,
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

fs_col_stats = sa.Table(
    "fs_col_stats", metadata,
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

fs_num_bins = sa.Table(
    "fs_num_bins", metadata,
    sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), primary_key=True),
    sa.Column("column_name", _NAME, primary_key=True),
    sa.Column("bin_idx", sa.Integer, primary_key=True),
    sa.Column("cnt", sa.BigInteger, nullable=False),
    **MYSQL_OPTS,
)

fs_cat_levels = sa.Table(
    "fs_cat_levels", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("data_version_id", sa.Integer, sa.ForeignKey("data_versions.id"), nullable=False, index=True),
    sa.Column("column_name", _NAME, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("cnt", sa.BigInteger, nullable=False),
    **MYSQL_OPTS,
)

FS_TABLES = [fs_marts, data_versions, run_data_versions, fs_grid, fs_grid_meta, fs_col_stats, fs_num_bins, fs_cat_levels]
