"""cli.schedule: `ambidex schedule ...`: install, show and remove the crontab lines of pipelines."""
from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import click

from .output import emit, emit_table, json_option

__all__ = ["schedule"]

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")


def _ws(pipeline: Path | None = None):
    """The project holding ``pipeline`` (a file), else the one holding the current folder."""
    from ..workspace import Workspace

    if pipeline is not None and pipeline.parent != Path(""):
        return Workspace.find(pipeline.parent)
    return Workspace.find(Path.cwd())


def _runner(ctx: click.Context):
    """The crontab runner: injected through ``obj={"crontab_runner": ...}`` by tests, else the real one."""
    return (ctx.obj or {}).get("crontab_runner")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _local(at: dt.datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _show_change(change, as_json: bool, payload: dict, unchanged: str) -> None:
    payload = {**payload, "changed": change.changed, "dry_run": change.dry_run, "diff": change.diff}
    if as_json:
        emit(payload, True)
    elif not change.changed:
        click.echo(unchanged)
    else:
        click.echo(("Would change the crontab (dry run, nothing written):\n" if change.dry_run
                    else "Changed the crontab:\n") + change.diff.rstrip("\n"))


@click.group()
def schedule() -> None:
    """Run pipelines from cron: one tagged crontab line per pipeline."""


@schedule.command("install")
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cron", "expr", required=True,
              help="When to run: five cron fields in this machine's local time, or @hourly/@daily/@weekly/@monthly.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file (mode 600) of 'export NAME=value' lines sourced before the run: where the "
                   "registry URL goes when it is a secret.")
@click.option("--dry-run", is_flag=True, help="Print the change to the crontab; write nothing.")
@json_option
@click.pass_context
def schedule_install(ctx, pipeline: Path, expr: str, env_file: Path | None, dry_run: bool, as_json: bool):
    """Install (or replace) the crontab line that runs PIPELINE on a schedule.

    The line cds to the project root, sets PATH and LANG, runs this ambidex by absolute path and
    appends its output to <state>/logs/<pipeline>.log. Two runs of a pipeline never overlap: the
    second exits 75 naming the first. Secrets are never written into the crontab.

    \b
    Example:
      ambidex schedule install config/churn.yaml --cron "0 2 * * *" --dry-run
      ambidex schedule install config/churn.yaml --cron @daily --env-file ~/.ambidex.env
    """
    from ..schedule import cron_line, install, next_runs, spec_for, update_crontab

    spec = spec_for(_ws(pipeline), pipeline, expr, environ=os.environ, env_file=env_file)
    line = cron_line(spec)
    if not dry_run:
        spec.log_file.parent.mkdir(mode=0o750, parents=True, exist_ok=True)  # the shell cannot append otherwise
    change = update_crontab(lambda text: install(text, line, spec.tag), dry_run=dry_run, runner=_runner(ctx))
    runs = next_runs(spec.expr, _now(), 3)
    payload = {"project": spec.project, "pipeline": spec.pipeline, "tag": spec.tag, "cron": spec.expr,
               "line": line, "log_file": str(spec.log_file), "next_runs": runs}
    _show_change(change, as_json, payload, f"The crontab already has this line for '{spec.pipeline}'; no change.")
    if not as_json:
        click.echo("Next runs: " + ", ".join(_local(r) for r in runs))
        click.echo(f"Log: {spec.log_file}")


@schedule.command("show")
@json_option
@click.pass_context
def schedule_show(ctx, as_json: bool):
    """List ambidex's crontab lines (every project of this user) with their next 3 run times.

    \b
    Example:
      ambidex schedule show
    """
    from ..errors import UsageError
    from ..schedule import list_lines, next_runs, read_crontab

    now, rows = _now(), []
    for found in list_lines(read_crontab(_runner(ctx))):
        row = {"project": found.project, "pipeline": found.pipeline, "cron": found.expr,
               "line_no": found.line_no, "line": found.text, "next_runs": [], "error": None}
        try:
            row["next_runs"] = next_runs(found.expr, now, 3)
        except UsageError as e:  # a hand-edited line: show it, say what is wrong
            row["error"] = e.message
        rows.append(row)
    if as_json:
        emit(rows, True)
        return
    emit_table([{**r, "next_runs": ", ".join(_local(t) for t in r["next_runs"]) or r["error"]} for r in rows],
               ["project", "pipeline", "cron", "next_runs"], False,
               empty="No ambidex lines in this user's crontab. Add one with 'ambidex schedule install'.")


@schedule.command("remove")
@click.argument("pipeline")
@click.option("--dry-run", is_flag=True, help="Print the change to the crontab; write nothing.")
@json_option
@click.pass_context
def schedule_remove(ctx, pipeline: str, dry_run: bool, as_json: bool):
    """Remove the crontab line of PIPELINE (a pipeline file or a pipeline name) of this project.

    Only lines tagged '# ambidex:<project>:<pipeline>' are removed; every other line stays as it is.

    \b
    Example:
      ambidex schedule remove churn --dry-run
      ambidex schedule remove config/churn.yaml
    """
    from ..errors import UsageError
    from ..schedule import make_tag, remove, update_crontab

    is_file = Path(pipeline).suffix in (".yaml", ".yml") or Path(pipeline).is_file()
    ws = _ws(Path(pipeline) if is_file else None)
    if is_file:
        from ..config import load_pipeline

        name = load_pipeline(Path(pipeline), ws.root).name
    elif _NAME.fullmatch(pipeline):
        name = pipeline
    else:
        raise UsageError(f"{pipeline!r} is neither a pipeline file nor a pipeline name.", code="usage.invalid_name",
                         hint="Give config/<name>.yaml or the pipeline's name; 'ambidex schedule show' lists them.")
    tag = make_tag(ws.settings.name, name)
    change = update_crontab(lambda text: remove(text, tag), dry_run=dry_run, runner=_runner(ctx))
    _show_change(change, as_json, {"project": ws.settings.name, "pipeline": name, "tag": tag},
                 f"No crontab line tagged '{tag}'; nothing to remove.")
