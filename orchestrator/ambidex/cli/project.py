"""cli.project: `ambidex init`, `validate`, `run` and `db`: thin commands over the library."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from .output import emit, emit_table, json_option

__all__ = ["init", "validate", "run", "db"]


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Project name (default: the directory's name).")
@click.option("--dry-run", is_flag=True, help="List the files that would be written; write nothing.")
@json_option
def init(directory: Path, name: str | None, dry_run: bool, as_json: bool) -> None:
    """Scaffold a new project in DIRECTORY.

    \b
    Example:
      ambidex init churn-project && cd churn-project && ambidex run config/example.yaml
    """
    from ..scaffold import scaffold_project

    written = scaffold_project(directory, name=name, dry_run=dry_run)
    emit({"directory": str(directory), "files": written, "dry_run": dry_run}, as_json,
         human="\n".join([f"{'Would write' if dry_run else 'Wrote'} {len(written)} files in {directory}:",
                          *(f"  {f}" for f in written),
                          f"Next: cd {directory} && ambidex run config/example.yaml"]))


@click.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def validate(pipeline: Path, as_json: bool) -> None:
    """Validate PIPELINE (a YAML file) without running anything; exit 2 on the first problem found.

    \b
    Example:
      ambidex validate config/churn.yaml
    """
    from ..config import load_pipeline
    from ..workspace import Workspace

    ws = Workspace.find(pipeline.parent if pipeline.parent != Path("") else Path.cwd())
    p = load_pipeline(pipeline, ws.root)
    stages = [{"stage": s.name, "lang": s.lang, "what": s.script or f"builtin:{s.builtin}"} for s in p.stages]
    if as_json:
        emit({"pipeline": p.name, "valid": True, "stages": stages}, True)
    else:
        click.echo(f"{pipeline}: valid pipeline '{p.name}' with {len(stages)} stages.")
        emit_table(stages, ["stage", "lang", "what"], False)


def _parse_window(text: str | None):
    if not text:
        return None
    try:
        start, end = text.split("/")
        def p(s: str) -> datetime:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None and len(s) <= 10 else dt
        s, e = p(start), p(end)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not START/END, e.g. 2024-01-01/2024-02-01 (UTC).", param_hint="--window")
    if s.tzinfo is None or e.tzinfo is None:
        raise click.BadParameter(f"'{text}' has a time without a zone; add Z or +00:00.", param_hint="--window")
    if not s < e:
        raise click.BadParameter(f"window start {start} is not before end {end}.", param_hint="--window")
    return s.astimezone(timezone.utc), e.astimezone(timezone.utc)


@click.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--window", help="Half-open UTC window START/END passed to every stage, e.g. 2024-01-01/2024-02-01. "
                               "With a cycle: section, the cycle window to process (default: every due one).")
@click.option("--require-clean", is_flag=True, help="Refuse to run from a git tree with uncommitted changes.")
@json_option
def run(pipeline: Path, window: str | None, require_clean: bool, as_json: bool) -> None:
    """Run PIPELINE: each stage as a process in order, then register the models it produced.

    A pipeline with a cycle: section runs the continuous-training cycle instead: for each due
    window not yet processed (oldest first; or only --window), ingest, score with the live
    revision, join labels, check drift, retrain on a trigger, let the new, previous and
    champion models compete on the same out-of-time rows, switch blue-green, smoke-test,
    notify and write a report. Re-running a finished window changes nothing; a killed run
    resumes at the step it was in.

    \b
    Example:
      ambidex run config/churn.yaml
      ambidex run config/churn.yaml --window 2024-03-01/2024-04-01 --require-clean
    """
    import contextlib

    from ..runners import stage_zygotes

    # a cycle's zygotes start loading now, while this process imports and reads the project (one core)
    ahead = _cycle_zygotes_ahead(pipeline)
    with stage_zygotes(*ahead) if ahead else contextlib.nullcontext():
        from ..config import load_pipeline
        from ..workspace import Workspace

        ws = Workspace.find(pipeline.parent if pipeline.parent != Path("") else Path.cwd())
        if load_pipeline(pipeline, ws.root).cycle is not None:
            return _run_cycle(ws, pipeline, window, require_clean, as_json)
    if require_clean:
        _refuse_dirty(ws)
    from ..pipeline import run_pipeline
    from ..progress import stage_reporter

    with stage_reporter(enabled=not as_json) as report:
        summary = run_pipeline(ws, pipeline, window=_parse_window(window), on_stage=report)
    if as_json:
        emit(summary.to_dict(), True)
        return
    click.echo(f"Run {summary.run_id} of '{summary.pipeline}': {summary.status}")
    emit_table(summary.stages, ["stage", "lang", "runner", "status", "wall_seconds", "cpu_seconds", "peak_rss_mb"], False)
    if summary.models:
        click.echo("Registered:")
        emit_table(summary.models, ["name", "version", "language", "task", "stage"], False)


def _cycle_zygotes_ahead(pipeline: Path) -> list:
    """For a pipeline with a cycle: section, the scoring stages of its built-in candidates' runtimes, whose
    zygotes (runners.stage_zygotes) the cycle forks from: every window scores with them (the live revision
    holds the candidates' models) and the cold start trains with them. A plain reading of the pipeline's
    and the project's YAML, before either is validated (loading them then says what is wrong); nothing for
    a plain pipeline, nor where the project sets its own Rscript, R library folders or Python (the stages'
    environment would differ: the cycle starts those zygotes itself, from the stages' own launches)."""
    import yaml

    from ..runners import scoring_launch
    from ..workspace import PROJECT_FILE, find_project_root

    try:
        if pipeline.stat().st_size > 1 << 20:  # a peek, not a parse of anything big (load_pipeline judges it)
            return []
        doc = yaml.safe_load(pipeline.read_text(encoding="utf-8"))  # aliases are shared, never expanded
        langs = {c.get("lang") for c in doc["cycle"]["candidates"] if c.get("builtin")}
        project = find_project_root(pipeline.resolve().parent) / PROJECT_FILE
        settings = yaml.safe_load(project.read_text(encoding="utf-8")) or {}
    except Exception:  # noqa: BLE001 - not a cycle, or not valid: no zygote ahead
        return []
    r, py = settings.get("r") or {}, settings.get("python") or {}
    if r.get("rscript", "Rscript") != "Rscript" or r.get("libs") or py.get("executable"):
        return []
    return [scoring_launch(lang) for lang in sorted(langs) if lang in ("python", "r")]


def _refuse_dirty(ws) -> None:
    from ..errors import UsageError
    from ..lineage import git_state

    git = git_state(ws.root)
    if git["commit"] is None or git["dirty"]:
        what = "is not a git work tree" if git["commit"] is None else "has uncommitted changes to tracked files"
        raise UsageError(f"--require-clean: the project at {ws.root} {what}; refusing to run.", code="usage.dirty_tree",
                         hint="Commit (or stash) the changes, then run again; 'git status' shows them.")


def _run_cycle(ws, pipeline: Path, window, require_clean: bool, as_json: bool) -> None:
    from ..cycle import run_cycle

    def progress(step, phase, state):
        if not as_json and phase in ("start", "skipped") and sys.stderr.isatty():
            click.echo(f"  {state.tag} {step}{' (done before)' if phase == 'skipped' else ''}", err=True)

    summary = run_cycle(ws, pipeline, window=window, require_clean=require_clean, on_step=progress)
    if as_json:
        emit(summary.to_dict(), True)
    elif summary.message:
        click.echo(summary.message)
    else:
        for w in summary.windows:
            state = "already finished; nothing changed" if w["already_finished"] else (
                "resumed and finished" if w["resumed"] else "finished")
            ran = sum(s["seconds"] for s in w["steps"])
            click.echo(f"{summary.pipeline} {w['window']}: {state} ({ran:.1f} s)")
            for d in w["decisions"]:
                click.echo(f"  {d['kind']:<11} {d['why']}")
            if w["report"]:
                click.echo(f"  report: {w['report']}")
    if summary.exit_code:
        raise click.exceptions.Exit(summary.exit_code)


@click.group()
def db() -> None:
    """The registry database (SQLite by default; PostgreSQL and MariaDB supported)."""


@db.command("upgrade")
@json_option
def db_upgrade(as_json: bool) -> None:
    """Apply pending migrations to the registry database.

    \b
    Example:
      ambidex db upgrade
    """
    from ..workspace import Workspace

    ws = Workspace.find(Path.cwd())
    ws.registry()
    emit({"upgraded": True}, as_json, human="Registry schema is up to date.")
