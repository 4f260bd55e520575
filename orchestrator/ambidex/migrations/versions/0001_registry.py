"""registry: runs, stage runs, params, metrics, artifacts, models, versions and the event log

Revision ID: 0001_registry
Revises:
Create Date: 2024-06-01

The tables are written out here rather than taken from ``ambidex.tables`` so this
revision keeps creating the same schema when ``tables.py`` moves on. The events
table is made append-only by triggers that abort UPDATE and DELETE.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ambidex.tables import MYSQL_OPTS, BigId, LongText, UTCDateTime

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None

# Read by ambidex.db.check_schema to detect a half-applied migration (MariaDB cannot roll back DDL).
ambidex_tables = (
    "runs", "stage_runs", "params", "metrics", "artifacts",
    "models", "model_versions", "artifact_files", "events",
)
ambidex_triggers = ("events_no_update", "events_no_delete")

_MESSAGE = "events is append-only: UPDATE and DELETE are refused"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "runs",
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
        sa.CheckConstraint(_in("kind", ("pipeline", "experiment")), name="kind"),
        sa.CheckConstraint(_in("status", ("RUNNING", "FINISHED", "FAILED")), name="status"),
        **MYSQL_OPTS,
    )
    op.create_index("ix_runs_experiment", "runs", ["experiment"])
    op.create_index("ix_runs_pipeline", "runs", ["pipeline"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])

    op.create_table(
        "stage_runs",
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

    op.create_table(
        "params",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", LongText, nullable=False),
        **MYSQL_OPTS,
    )

    op.create_table(
        "metrics",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stage", sa.String(255)),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Double()),
        sa.Column("step", sa.Integer, nullable=False, server_default="0"),
        sa.Column("window", sa.String(64)),
        sa.Column("logged_at", UTCDateTime(), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_index("ix_metrics_run_id_key_step", "metrics", ["run_id", "key", "step"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stage", sa.String(255)),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("relpath", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("logged_at", UTCDateTime(), nullable=False),
        **MYSQL_OPTS,
    )
    op.create_index("ix_artifacts_run_id", "artifacts", ["run_id"])
    op.create_index("ix_artifacts_sha256", "artifacts", ["sha256"])

    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("description", sa.Text),
        **MYSQL_OPTS,
    )

    op.create_table(
        "model_versions",
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
        sa.CheckConstraint(_in("status", ("PENDING", "READY", "FAILED")), name="status"),
        sa.CheckConstraint("version > 0", name="version_positive"),
        **MYSQL_OPTS,
    )
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])

    op.create_table(
        "artifact_files",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("relpath", sa.String(512), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        **MYSQL_OPTS,
    )

    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("entity_type", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=False),
        sa.Column("payload", LongText),
        sa.Column("reason", sa.Text),
        **MYSQL_OPTS,
    )
    op.create_index("ix_events_kind", "events", ["kind"])
    op.create_index("ix_events_entity_type_entity_id", "events", ["entity_type", "entity_id"])

    _create_append_only_triggers()


def _create_append_only_triggers() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for trig, action in (("events_no_update", "UPDATE"), ("events_no_delete", "DELETE")):
            op.execute(
                f"CREATE TRIGGER {trig} BEFORE {action} ON events "
                f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION ambidex_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        for trig, action in (("events_no_update", "UPDATE"), ("events_no_delete", "DELETE")):
            op.execute(
                f"CREATE TRIGGER {trig} BEFORE {action} ON events "
                "FOR EACH ROW EXECUTE FUNCTION ambidex_events_append_only()"
            )
        op.execute(
            "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
            "FOR EACH STATEMENT EXECUTE FUNCTION ambidex_events_append_only()"
        )
    elif dialect in ("mysql", "mariadb"):
        for trig, action in (("events_no_update", "UPDATE"), ("events_no_delete", "DELETE")):
            op.execute(
                f"CREATE TRIGGER {trig} BEFORE {action} ON events FOR EACH ROW "
                f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{_MESSAGE}'"
            )
    else:  # pragma: no cover - other SQLAlchemy dialects get no database-side guard
        raise NotImplementedError(
            f"ambidex cannot make the events table append-only on {dialect!r}; "
            "use SQLite, PostgreSQL or MariaDB/MySQL"
        )


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect in ("sqlite", "mysql", "mariadb"):
        op.execute("DROP TRIGGER IF EXISTS events_no_update")
        op.execute("DROP TRIGGER IF EXISTS events_no_delete")
    for name in ("events", "artifact_files", "model_versions", "models", "artifacts",
                 "metrics", "params", "stage_runs", "runs"):
        op.drop_table(name)
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ambidex_events_append_only()")
