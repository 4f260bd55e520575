"""tables: the registry's SQLAlchemy Core schema.

One :data:`metadata` with naming conventions, so constraint names are the same on
SQLite, PostgreSQL and MariaDB and migrations can refer to them. The migrations
in ``ambidex/migrations/versions`` create these tables; a test compares the two.

Portability choices, each for one backend's trap:

- times are :class:`UTCDateTime`: aware datetimes only, stored as naive UTC
  (``DATETIME(6)`` on MariaDB, whose plain ``DATETIME`` drops microseconds);
- JSON travels as text (:data:`LongText`: ``LONGTEXT`` on MariaDB, whose ``TEXT``
  stops at 64 KiB);
- indexed strings are at most ``VARCHAR(512)`` so composite keys fit InnoDB's
  3072-byte limit in utf8mb4, and tables use ``utf8mb4_bin`` so keys compare
  case-sensitively everywhere;
- metric values are ``Double`` (MariaDB's ``FLOAT`` is single precision).
"""
from __future__ import annotations

import datetime as _dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

__all__ = [
    "metadata", "UTCDateTime", "LongText", "runs", "stage_runs", "params", "metrics",
    "artifacts", "models", "model_versions", "artifact_files", "events",
    "RUN_KINDS", "RUN_STATUSES", "VERSION_STATUSES",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

RUN_KINDS = ("pipeline", "experiment")
RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED")
VERSION_STATUSES = ("PENDING", "READY", "FAILED")

#: table options for MariaDB/MySQL; ignored by the other dialects
MYSQL_OPTS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp column that accepts only timezone-aware datetimes.

    Values are converted to UTC and stored naive; they come back aware in UTC.
    A naive datetime is refused (``ValueError``) rather than guessed at.

    >>> UTCDateTime().process_bind_param(_dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc), None)
    datetime.datetime(2024, 1, 1, 0, 0)
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, _dt.datetime):
            raise TypeError(f"expected a timezone-aware datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} refused: pass a timezone-aware datetime "
                "(e.g. datetime.now(timezone.utc))"
            )
        return value.astimezone(_dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # SQLite rows written by other tools
            value = _dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=_dt.timezone.utc)
        return value.astimezone(_dt.timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("experiment", sa.String(255)),
    sa.Column("pipeline", sa.String(255)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("window_start", UTCDateTime()),
    sa.Column("window_end", UTCDateTime()),
    sa.Column("actor", sa.String(255)),
    sa.Column("host", sa.String(255)),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("git_dirty", sa.Boolean()),
    sa.Column("config_hash", sa.String(64)),
    sa.Column("lineage", LongText),
    sa.CheckConstraint(_in("kind", RUN_KINDS), name="kind"),
    sa.CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    sa.Index(None, "experiment"),
    sa.Index(None, "pipeline"),
    sa.Index(None, "started_at"),
    **MYSQL_OPTS,
)

stage_runs = sa.Table(
    "stage_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("stage", sa.String(255), nullable=False),
    sa.Column("lang", sa.String(16)),
    sa.Column("runner", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("wall_seconds", sa.Double()),
    sa.Column("cpu_seconds", sa.Double()),
    sa.Column("peak_rss_bytes", sa.BigInteger),
    sa.Column("script_hash", sa.String(64)),
    sa.Column("log_dir", sa.String(1024)),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.UniqueConstraint("run_id", "stage"),
    **MYSQL_OPTS,
)

params = sa.Table(
    "params", metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", LongText, nullable=False),
    **MYSQL_OPTS,
)

metrics = sa.Table(
    "metrics", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("stage", sa.String(255)),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("value", sa.Double()),
    sa.Column("step", sa.Integer, nullable=False, server_default="0"),
    sa.Column("window", sa.String(64)),
    sa.Column("logged_at", UTCDateTime(), nullable=False),
    sa.Index(None, "run_id", "key", "step"),
    **MYSQL_OPTS,
)

artifacts = sa.Table(
    "artifacts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("stage", sa.String(255)),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("relpath", sa.String(512), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("logged_at", UTCDateTime(), nullable=False),
    sa.Index(None, "run_id"),
    sa.Index(None, "sha256"),
    **MYSQL_OPTS,
)

models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("description", sa.Text),
    **MYSQL_OPTS,
)

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
    sa.Column("stage", sa.String(255)),
    sa.Column("path", sa.String(255), nullable=False),
    sa.Column("language", sa.String(16)),
    sa.Column("task", sa.String(64)),
    sa.Column("manifest", LongText, nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(255)),
    sa.UniqueConstraint("model_id", "version"),
    sa.CheckConstraint(_in("status", VERSION_STATUSES), name="status"),
    sa.CheckConstraint("version > 0", name="version_positive"),
    sa.Index(None, "run_id"),
    **MYSQL_OPTS,
)

artifact_files = sa.Table(
    "artifact_files", metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("relpath", sa.String(512), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    **MYSQL_OPTS,
)

#: Append-only: triggers created by the migration abort every UPDATE and DELETE.
events = sa.Table(
    "events", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(255)),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("entity_type", sa.String(64), nullable=False),
    sa.Column("entity_id", sa.String(255), nullable=False),
    sa.Column("payload", LongText),
    sa.Column("reason", sa.Text),
    sa.Index(None, "kind"),
    sa.Index(None, "entity_type", "entity_id"),
    **MYSQL_OPTS,
)
