"""cycletables: the SQL schema of the continuous-training cycle's journal: windows, steps and decisions.

The tables join the registry's :data:`ambidex.tables.metadata` (migration ``0005_cycle``).

- ``cycle_windows``: one row per (pipeline, window): its status (``running``, ``finished``,
  ``failed``), the run that holds its stage runs, and what it was made from (config hash, git
  commit, script hashes), so "which YAML produced the March decision" is one query.
- ``cycle_steps``: one row per (pipeline, window, step) once the step COMPLETED, with its
  timing and a JSON detail the later steps read back. A step without a row runs (again) on
  the next invocation: that is how a killed run resumes and a finished window changes nothing.
- ``cycle_decisions``: every retrain / promote / keep / rollback decision with its reasons
  (trigger fired, winner, gain, z), written in the same transaction as its journal row.
"""
from __future__ import annotations

import sqlalchemy as sa

from .tables import MYSQL_OPTS, LongText, UTCDateTime, metadata

__all__ = ["cycle_windows", "cycle_steps", "cycle_decisions", "CYCLE_TABLES", "DECISION_KINDS", "WINDOW_STATUSES"]

WINDOW_STATUSES = ("running", "finished", "failed")
DECISION_KINDS = ("retrain", "no_retrain", "promote", "keep", "rollback", "cold_start")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


cycle_windows = sa.Table(
    "cycle_windows", metadata,
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
    sa.CheckConstraint(_in("status", WINDOW_STATUSES), name="status"),
    **MYSQL_OPTS,
)

cycle_steps = sa.Table(
    "cycle_steps", metadata,
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

cycle_decisions = sa.Table(
    "cycle_decisions", metadata,
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
    sa.CheckConstraint(_in("kind", DECISION_KINDS), name="kind"),
    **MYSQL_OPTS,
)

CYCLE_TABLES = [cycle_windows, cycle_steps, cycle_decisions]
