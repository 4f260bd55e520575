"""cycle: the continuous-training loop (DESIGN section 5) for one pipeline, one window at a time, journaled per step.

``ambidex run PIPELINE.yaml`` on a pipeline with a ``cycle:`` section calls :func:`run_cycle`:
without a window it processes every due window (end <= now) not yet finished, oldest first
(a missed night is caught up, not lost); with one it processes that window. The whole
invocation holds the pipeline's ``flock`` (a second one exits 75 naming the holder).

Each window runs the steps of :data:`ambidex.cycle_steps.STEPS` in order. A step that
completes writes its row in ``cycle_steps`` (with the JSON detail later steps read back), so:

* re-running a finished window changes nothing (every step is skipped);
* a run killed at any step resumes, on the next invocation, at the first step without a row;
* every decision (retrain, promote, keep, rollback) is a ``cycle_decisions`` row AND an event.

Before anything changes, the live revision's model files are verified against their recorded
hashes, so a tampered champion stops the run with nothing written.

    >>> summary = run_cycle(ws, Path("config/churn.yaml"))                     # doctest: +SKIP
    >>> [(w["window"], w["decisions"]) for w in summary.windows]              # doctest: +SKIP
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from . import cycletables as C
from .errors import AmbidexError, UsageError

__all__ = ["CycleSummary", "WindowState", "run_cycle", "cycle_windows_of", "window_at", "window_index",
           "add_periods", "decisions", "windows", "steps_of", "parse_cycle_window"]

log = logging.getLogger(__name__)
UTC = dt.timezone.utc


def _utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


# --------------------------------------------------------------------------- calendar windows (pure)

def add_periods(t: dt.datetime, cadence: str, n: int) -> dt.datetime:
    """``t`` moved by ``n`` calendar periods in UTC (months keep the day of month; days are 24 h in UTC)."""
    if cadence == "monthly":
        m = t.month - 1 + n
        return t.replace(year=t.year + m // 12, month=m % 12 + 1)
    return t + dt.timedelta(days=(7 if cadence == "weekly" else 1) * n)


def _start_of(cycle) -> dt.datetime:
    return dt.datetime.fromisoformat(cycle.start).replace(tzinfo=UTC)


def window_at(cycle, k: int) -> tuple[dt.datetime, dt.datetime]:
    """The k-th window ``[start, end)`` of the cycle (k may be negative: windows before ``cycle.start``)."""
    s = add_periods(_start_of(cycle), cycle.cadence, k)
    return s, add_periods(_start_of(cycle), cycle.cadence, k + 1)


def window_index(cycle, start: dt.datetime) -> int | None:
    """k such that ``window_at(cycle, k)[0] == start``, or None when ``start`` is off the grid."""
    s0 = _start_of(cycle)
    if cycle.cadence == "monthly":
        k = (start.year - s0.year) * 12 + start.month - s0.month
    else:
        k = (start - s0).days // (7 if cycle.cadence == "weekly" else 1)
    return k if window_at(cycle, k)[0] == start else None


def cycle_windows_of(cycle, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """Every window from ``cycle.start`` whose end is at or before ``now`` (due), oldest first."""
    out, k = [], 0
    last = dt.datetime.fromisoformat(cycle.end).replace(tzinfo=UTC) if cycle.end else None
    while True:
        w = window_at(cycle, k)
        if w[1] > now or (last is not None and w[0] >= last):
            return out
        out.append(w)
        k += 1


def parse_cycle_window(cycle, text: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """``--window START/END`` (or just START) checked against the cycle's calendar; UsageError (exit 2) otherwise."""
    from .capture import _parse_ts

    start_s, sep, end_s = (text or "").partition("/")
    try:
        start = _parse_ts(start_s)
        end = _parse_ts(end_s) if sep else None
    except ValueError:
        raise UsageError(f"Invalid --window {text!r}: expected START/END in UTC, e.g. 2024-03-01/2024-04-01.",
                         code="usage.invalid_window") from None
    k = window_index(cycle, start)
    first = window_at(cycle, 0)
    if start < first[0]:
        raise UsageError(f"Window {text!r} starts before the cycle's first window {first[0]:%Y-%m-%d} (cycle.start); "
                         "nothing was changed.", code="usage.window_before_start",
                         hint=f"Use a window from {first[0]:%Y-%m-%d}, or move cycle.start earlier.")
    if k is None or (end is not None and window_at(cycle, k)[1] != end):
        near = window_at(cycle, max(0, window_index(cycle, start) or _floor_index(cycle, start)))
        raise UsageError(f"Window {text!r} is not a {cycle.cadence} window of this cycle; nothing was changed.",
                         code="usage.window_off_calendar",
                         hint=f"The nearest one is {near[0]:%Y-%m-%d}/{near[1]:%Y-%m-%d}.")
    w = window_at(cycle, k)
    if cycle.end and w[0] >= dt.datetime.fromisoformat(cycle.end).replace(tzinfo=UTC):
        raise UsageError(f"Window {w[0]:%Y-%m-%d}/{w[1]:%Y-%m-%d} starts at or after the cycle's end {cycle.end}; "
                         "nothing was changed.", code="usage.window_after_end", hint="Move cycle.end to go on.")
    if w[1] > now:
        raise UsageError(f"Window {w[0]:%Y-%m-%d}/{w[1]:%Y-%m-%d} is in the future (it ends after "
                         f"{now:%Y-%m-%dT%H:%M:%SZ}); nothing was changed.", code="usage.window_in_future",
                         hint="A window is processed once it has ended; run without --window to process what is due.")
    return w


def _floor_index(cycle, t: dt.datetime) -> int:
    k = 0
    while window_at(cycle, k + 1)[0] <= t:
        k += 1
    return k


# --------------------------------------------------------------------------- journal

@dataclass
class WindowState:
    """One window being processed: its bounds and index, and the details of the steps completed so far."""

    start: dt.datetime
    end: dt.datetime
    index: int
    details: dict = field(default_factory=dict)
    ran: list = field(default_factory=list)  # [{step, status: ran|skipped, seconds}]
    run_id: str | None = None

    @property
    def tag(self) -> str:
        return f"{self.start:%Y-%m-%d}"


@dataclass
class CycleSummary:
    """What one invocation did: the windows it processed (or why none), and the exit code it asks for."""

    pipeline: str
    windows: list[dict] = field(default_factory=list)
    message: str | None = None
    exit_code: int = 0

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "windows": self.windows, "message": self.message,
                "exit_code": self.exit_code}


def steps_of(engine, pipeline: str, start: dt.datetime) -> dict[str, dict]:
    """Completed steps of a window: ``{step: {detail, wall_seconds, started_at, ended_at}}``."""
    s = C.cycle_steps
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s).where(s.c.pipeline == pipeline, s.c.window_start == start)
                            .order_by(s.c.id)).mappings().all()
    return {r["step"]: {"detail": json.loads(r["detail"]) if r["detail"] else {}, "wall_seconds": r["wall_seconds"],
                        "started_at": r["started_at"], "ended_at": r["ended_at"]} for r in rows}


def record_step(conn, pipeline: str, start: dt.datetime, step: str, started: dt.datetime, seconds: float,
                detail: dict, now: dt.datetime) -> None:
    """Mark ``step`` of the window completed, on the caller's transaction (so it commits with the step's writes)."""
    conn.execute(C.cycle_steps.insert().values(
        pipeline=pipeline, window_start=start, step=step, status="done", started_at=started, ended_at=now,
        wall_seconds=seconds, detail=json.dumps(detail, default=str, sort_keys=True)))


def windows(engine, pipeline: str) -> list[dict]:
    """Every journaled window of ``pipeline``, oldest first."""
    w = C.cycle_windows
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(w).where(w.c.pipeline == pipeline)
                                              .order_by(w.c.window_start)).mappings()]


def decisions(engine, pipeline: str) -> list[dict]:
    """Every recorded decision of ``pipeline``, in order, with its reasons parsed."""
    d = C.cycle_decisions
    with engine.connect() as conn:
        rows = conn.execute(sa.select(d).where(d.c.pipeline == pipeline).order_by(d.c.window_start, d.c.id)).mappings()
        return [dict(r) | {"reasons": json.loads(r["reasons"])} for r in rows]


def _begin_window(engine, pipeline: str, ws: WindowState, lineage: dict, now: dt.datetime) -> str:
    """Insert (or re-open) the window's journal row; returns its status before this call."""
    w = C.cycle_windows
    values = {"config_hash": lineage.get("config_hash"), "git_commit": lineage.get("git_commit"),
              "git_dirty": lineage.get("git_dirty"),
              "lineage": json.dumps({k: lineage.get(k) for k in ("config_path", "config_hash", "scripts",
                                                                  "git_commit", "git_dirty", "r_version")},
                                    default=str)}
    with engine.begin() as conn:
        row = conn.execute(sa.select(w.c.status, w.c.attempts, w.c.run_id).where(
            w.c.pipeline == pipeline, w.c.window_start == ws.start)).first()
        if row is None:
            conn.execute(w.insert().values(pipeline=pipeline, window_start=ws.start, window_end=ws.end,
                                           status="running", attempts=1, started_at=now, **values))
            return "new"
        ws.run_id = row.run_id
        if row.status != "finished":
            conn.execute(w.update().where(w.c.pipeline == pipeline, w.c.window_start == ws.start)
                         .values(status="running", attempts=row.attempts + 1, error=None, **values))
        return row.status


def _end_window(engine, pipeline: str, ws: WindowState, status: str, now: dt.datetime, error: str | None = None):
    w = C.cycle_windows
    with engine.begin() as conn:
        conn.execute(w.update().where(w.c.pipeline == pipeline, w.c.window_start == ws.start)
                     .values(status=status, ended_at=now, error=error, run_id=ws.run_id))


# --------------------------------------------------------------------------- the loop

def run_cycle(ws, pipeline_path: Path, *, window: str | None = None, require_clean: bool = False,
              clock: Callable[[], dt.datetime] = _utcnow, on_step: Callable[[str, str, WindowState], None] | None = None,
              ) -> CycleSummary:
    """Process window ``window`` (``START/END``) or every due window not finished yet, in order.

    ``on_step(step, phase, state)`` is called with phase "start" / "done" / "skipped" (progress on a
    terminal; tests inject a failure there to simulate a crash at a step). Raises UsageError (exit 2)
    for a window in the future, before ``cycle.start`` or off the calendar, and for a dirty git tree
    with ``require_clean``; in those cases nothing was changed.
    """
    from .config import load_pipeline
    from .cycle_steps import Services, run_window
    from .lineage import git_state
    from .locks import pipeline_lock

    pipeline = load_pipeline(pipeline_path, ws.root)
    if pipeline.cycle is None:
        raise UsageError(f"Pipeline '{pipeline.name}' has no cycle: section.", code="usage.no_cycle",
                         hint="Run it with run_pipeline, or add a cycle: section (see README, 'The loop').")
    if require_clean:
        git = git_state(ws.root)
        if git["commit"] is None or git["dirty"]:
            what = "is not a git work tree" if git["commit"] is None else "has uncommitted changes to tracked files"
            raise UsageError(f"--require-clean: the project at {ws.root} {what}; refusing to run so every "
                             "window is traceable to a commit. Nothing was changed.", code="usage.dirty_tree",
                             hint="Commit (or stash) the changes, then run again; 'git status' shows them.")
    now = clock()
    if window:
        todo = [parse_cycle_window(pipeline.cycle, window, now)]
    else:
        todo = cycle_windows_of(pipeline.cycle, now)
    summary = CycleSummary(pipeline.name)
    from .runners import stage_zygotes

    # one set of stage zygotes for every window of this invocation (runners.stage_zygotes)
    with pipeline_lock(ws.state_dir, pipeline.name) as lock, stage_zygotes():
        svc = Services.build(ws, pipeline, pipeline_path, clock=clock, lock=lock)
        svc.report_missed()
        finished = {w["window_start"] for w in windows(svc.engine, pipeline.name) if w["status"] == "finished"}
        if window:
            k = window_index(pipeline.cycle, todo[0][0])
            gap = [window_at(pipeline.cycle, i) for i in range(k) if window_at(pipeline.cycle, i)[0] not in finished]
            if gap and todo[0][0] not in finished:
                raise UsageError(f"Window {todo[0][0]:%Y-%m-%d} comes after unprocessed window {gap[0][0]:%Y-%m-%d}; "
                                 "windows are processed in order. Nothing was changed.", code="usage.window_out_of_order",
                                 hint="Run without --window to catch up in order.")
        else:
            todo = [w for w in todo if w[0] not in finished]
            if not todo:
                nxt = window_at(pipeline.cycle, len(cycle_windows_of(pipeline.cycle, now)))
                if pipeline.cycle.end and nxt[0] >= dt.datetime.fromisoformat(pipeline.cycle.end).replace(tzinfo=UTC):
                    summary.message = (f"Nothing due for '{pipeline.name}': every window before its end "
                                       f"{pipeline.cycle.end} is processed.")
                else:
                    summary.message = (f"Nothing due for '{pipeline.name}': every window before {nxt[0]:%Y-%m-%d} "
                                       f"is processed; the next one ({nxt[0]:%Y-%m-%d}/{nxt[1]:%Y-%m-%d}) is due "
                                       "once it has ended.")
                return summary
        for start, end in todo:
            state = WindowState(start, end, window_index(pipeline.cycle, start))
            out = run_window(svc, state, on_step=on_step)
            summary.windows.append(out)
            summary.exit_code = max(summary.exit_code, out.get("exit_code", 0))
    return summary


def step_timer():
    """(started_at, perf counter) for a step's journal row."""
    return _utcnow(), time.perf_counter()


class CycleError(AmbidexError):
    """A window of the cycle stopped (every candidate failed, labels match nothing): the champion keeps serving."""

    code = "cycle.stopped"
    exit_code = 1
