"""cycle: the continuous-training journal: windows, completed steps, decisions

Revision ID: 0005_cycle
Revises: 0004_drift
Create Date: 2024-06-05

Written out rather than taken from ``ambidex.cycletables`` so this revision keeps creating
the same schema when ``cycletables.py`` moves on.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ambidex.tables import MYSQL_OPTS, LongText, UTCDateTime

revision = "0005_cycle"
down_revision = "0004_drift"
branch_labels = None
depends_on = None

# Read by ambidex.db.check_schema to detect a half-applied migration (MariaDB cannot roll back DDL).
ambidex_tables = ("cycle_windows", "cycle_steps", "cycle_decisions")


def upgrade() -> None:
    op.create_table(
        "cycle_windows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(63), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("window_end", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("config_hash", sa.String(64)),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("git_dirty", sa.Boolean()),
        sa.Column("lineage", LongText),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("pipeline", "window_start"),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name="status"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "cycle_steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(63), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("step", sa.String(63), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=False),
        sa.Column("wall_seconds", sa.Double(), nullable=False),
        sa.Column("detail", LongText),
        sa.UniqueConstraint("pipeline", "window_start", "step"),
        **MYSQL_OPTS,
    )
    op.create_table(
        "cycle_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(63), nullable=False),
        sa.Column("window_start", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reasons", LongText, nullable=False),
        sa.Column("champion", sa.String(140)),
        sa.Column("winner", sa.String(140)),
        sa.Column("gain", sa.Double()),
        sa.Column("z", sa.Double()),
        sa.Column("revision", sa.Integer),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id")),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("pipeline", "window_start", "kind"),
        sa.CheckConstraint("kind IN ('retrain', 'no_retrain', 'promote', 'keep', 'rollback', 'cold_start')",
                           name="kind"),
        **MYSQL_OPTS,
    )


def downgrade() -> None:
    for name in reversed(ambidex_tables):
        op.drop_table(name)
