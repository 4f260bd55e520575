"""deploy: deployments, revisions, live pointer, capture, labels, smoke results, approvals, outbox

Revision ID: 0003_deploy
Revises: 0002_featurestore
Create Date: 2024-06-03

Written out rather than taken from ``ambidex.deploytables`` so this revision keeps creating
the same schema when ``deploytables.py`` moves on.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ambidex.tables import MYSQL_OPTS, BigId, LongText, UTCDateTime

revision = "0003_deploy"
down_revision = "0002_featurestore"
branch_labels = None
depends_on = None

# Read by ambidex.db.check_schema to detect a half-applied migration (MariaDB cannot roll back DDL).
ambidex_tables = (
    "deployments", "deployment_revisions", "revision_members", "deployment_live",
    "capture_batches", "predictions", "labels", "smoke_results", "approvals", "outbox",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("entity_key", sa.String(63), nullable=False),
        sa.Column("source", sa.String(255)),
        sa.Column("spec", LongText),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255)),
        **MYSQL_OPTS,
    )

    op.create_table(
        "deployment_revisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_revision", sa.Integer),
        sa.Column("live_from", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255)),
        sa.Column("reason", sa.Text),
        sa.UniqueConstraint("deployment_id", "revision"),
        sa.CheckConstraint(_in("kind", ("create", "promote", "rollback", "auto_rollback")), name="kind"),
        sa.CheckConstraint("revision > 0", name="revision_positive"),
        **MYSQL_OPTS,
    )

    op.create_table(
        "revision_members",
        sa.Column("revision_id", sa.Integer, sa.ForeignKey("deployment_revisions.id"), primary_key=True),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("share", sa.Double()),
        sa.Column("position", sa.Integer, nullable=False),
        sa.CheckConstraint(_in("role", ("champion", "shadow", "canary")), name="role"),
        **MYSQL_OPTS,
    )

    op.create_table(
        "deployment_live",
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), primary_key=True),
        sa.Column("live_revision", sa.Integer, nullable=False),
        sa.Column("switched_at", UTCDateTime(), nullable=False),
        sa.Column("switched_by", sa.String(255)),
        **MYSQL_OPTS,
    )

    op.create_table(
        "capture_batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("share", sa.Double()),
        sa.Column("row_count", sa.BigInteger, nullable=False),
        sa.Column("published_rows", sa.BigInteger, nullable=False),
        sa.Column("input_ref", sa.String(255), nullable=False),
        sa.Column("features_mode", sa.String(16), nullable=False),
        sa.Column("scored_at", UTCDateTime(), nullable=False),
        sa.Column("scored_by", sa.String(255)),
        sa.UniqueConstraint("deployment_id", "window_start", "window_end", "model_version_id"),
        **MYSQL_OPTS,
    )

    op.create_table(
        "predictions",
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("capture_batches.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("row_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("entity_key", sa.String(255), nullable=False),
        sa.Column("prediction", sa.String(255)),
        sa.Column("score", sa.Double()),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("features", LongText),
            **MYSQL_OPTS,
    )

    op.create_table(
        "labels",
        sa.Column("source", sa.String(255), primary_key=True),
        sa.Column("entity_key", sa.String(255), primary_key=True),
        sa.Column("window_start", UTCDateTime(), primary_key=True),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("label", sa.String(255)),
        sa.Column("arrived_at", UTCDateTime(), nullable=False),
        **MYSQL_OPTS,
    )

    op.create_table(
        "smoke_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("load_seconds", sa.Double()),
        sa.Column("latency_seconds", sa.Double()),
        sa.Column("details", LongText),
            **MYSQL_OPTS,
    )

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("approver", sa.String(255), nullable=False),
        sa.Column("os_user", sa.String(255), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("metrics_snapshot", LongText),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime()),
        sa.CheckConstraint(_in("decision", ("approve", "reject")), name="decision"),
            **MYSQL_OPTS,
    )

    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_kind", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(63), nullable=False),
        sa.Column("payload", LongText, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
        sa.CheckConstraint(_in("status", ("pending", "sent", "failed")), name="status"),
            **MYSQL_OPTS,
    )

    op.create_index("ix_predictions_entity_key", "predictions", ["entity_key"])
    op.create_index("ix_smoke_results_model_version_id", "smoke_results", ["model_version_id"])
    op.create_index("ix_approvals_model_version_id", "approvals", ["model_version_id"])
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    for name in reversed(ambidex_tables):
        op.drop_table(name)
