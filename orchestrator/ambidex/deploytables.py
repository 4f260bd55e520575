"""deploytables: the SQL schema of deployments, revisions, capture, smoke results, approvals and the outbox.

The tables join the registry's :data:`ambidex.tables.metadata`, so ``metadata.create_all``
in tests creates them and migration ``0003_deploy`` is compared against them.

- ``deployments`` names a deployment and where its rows come from (mart, entity key).
- ``deployment_revisions`` + ``revision_members``: numbered, immutable revisions; each
  member is a model version with a role (champion, shadow, canary with a share).
- ``deployment_live``: ONE row per deployment holding the live revision number. Promotion
  is a compare-and-swap on this row, so "exactly one live revision" holds by construction.
- ``capture_batches`` + ``predictions``: one batch per (deployment, window, model version),
  unique, so a window is captured at most once per model; rows keyed by (batch, row).
- ``labels``: outcomes that arrive later, joined to predictions by entity key and window.
- ``smoke_results``, ``approvals``: gate evidence, bound to the manifest's sha256.
- ``outbox``: notifications written in the same transaction as the change they announce.
"""
from __future__ import annotations

import sqlalchemy as sa

from .tables import MYSQL_OPTS, BigId, LongText, UTCDateTime, metadata

__all__ = [
    "deployments", "deployment_revisions", "revision_members", "deployment_live",
    "capture_batches", "predictions", "labels", "smoke_results", "approvals", "outbox",
    "ROLES", "DEPLOY_TABLES",
]

ROLES = ("champion", "shadow", "canary")
REVISION_KINDS = ("create", "promote", "rollback", "auto_rollback")
DECISIONS = ("approve", "reject")
OUTBOX_STATUSES = ("pending", "sent", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


deployments = sa.Table(
    "deployments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(63), nullable=False, unique=True),
    sa.Column("entity_key", sa.String(63), nullable=False),
    sa.Column("source", sa.String(255)),
    sa.Column("spec", LongText),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(255)),
    **MYSQL_OPTS,
)

deployment_revisions = sa.Table(
    "deployment_revisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("parent_revision", sa.Integer),
    sa.Column("live_from", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.String(255)),
    sa.Column("reason", sa.Text),
    sa.UniqueConstraint("deployment_id", "revision"),
    sa.CheckConstraint(_in("kind", REVISION_KINDS), name="kind"),
    sa.CheckConstraint("revision > 0", name="revision_positive"),
    **MYSQL_OPTS,
)

revision_members = sa.Table(
    "revision_members", metadata,
    sa.Column("revision_id", sa.Integer, sa.ForeignKey("deployment_revisions.id"), primary_key=True),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("share", sa.Double()),
    sa.Column("position", sa.Integer, nullable=False),
    sa.CheckConstraint(_in("role", ROLES), name="role"),
    **MYSQL_OPTS,
)

#: The compare-and-swap target: no FK to the revision row because the swap runs before the
#: new revision is inserted (so the row lock orders concurrent promotions).
deployment_live = sa.Table(
    "deployment_live", metadata,
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), primary_key=True),
    sa.Column("live_revision", sa.Integer, nullable=False),
    sa.Column("switched_at", UTCDateTime(), nullable=False),
    sa.Column("switched_by", sa.String(255)),
    **MYSQL_OPTS,
)

capture_batches = sa.Table(
    "capture_batches", metadata,
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

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("batch_id", sa.Integer, sa.ForeignKey("capture_batches.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("row_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("entity_key", sa.String(255), nullable=False),
    sa.Column("prediction", sa.String(255)),
    sa.Column("score", sa.Double()),
    sa.Column("published", sa.Boolean(), nullable=False),
    sa.Column("features", LongText),
    # no index on entity_key: labels are joined to a batch's rows through the labels' primary key (0006)
    **MYSQL_OPTS,
)

labels = sa.Table(
    "labels", metadata,
    sa.Column("source", sa.String(255), primary_key=True),
    sa.Column("entity_key", sa.String(255), primary_key=True),
    sa.Column("window_start", UTCDateTime(), primary_key=True),
    sa.Column("window_end", UTCDateTime(), nullable=False),
    sa.Column("label", sa.String(255)),
    sa.Column("arrived_at", UTCDateTime(), nullable=False),
    **MYSQL_OPTS,
)

smoke_results = sa.Table(
    "smoke_results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("passed", sa.Boolean(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(255)),
    sa.Column("load_seconds", sa.Double()),
    sa.Column("latency_seconds", sa.Double()),
    sa.Column("details", LongText),
    sa.Index(None, "model_version_id"),
    **MYSQL_OPTS,
)

approvals = sa.Table(
    "approvals", metadata,
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
    sa.CheckConstraint(_in("decision", DECISIONS), name="decision"),
    sa.Index(None, "model_version_id"),
    **MYSQL_OPTS,
)

outbox = sa.Table(
    "outbox", metadata,
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
    sa.CheckConstraint(_in("status", OUTBOX_STATUSES), name="status"),
    sa.Index(None, "status", "next_attempt_at"),
    **MYSQL_OPTS,
)

DEPLOY_TABLES = (
    "deployments", "deployment_revisions", "revision_members", "deployment_live",
    "capture_batches", "predictions", "labels", "smoke_results", "approvals", "outbox",
)
