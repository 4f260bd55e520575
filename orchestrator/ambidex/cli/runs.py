"""cli.runs: `ambidex runs ...`: list and show runs, and the tracking verbs the R package calls."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .output import emit, emit_table, json_option

__all__ = ["runs"]


def _ws():
    from ..workspace import Workspace

    return Workspace.find(Path.cwd())


def _kv(pairs: tuple[str, ...], *, numeric: bool) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE.")
        k, v = pair.split("=", 1)
        if numeric:
            try:
                out[k] = None if v in ("", "NA", "null") else float(v)
            except ValueError:
                raise click.BadParameter(f"metric '{k}' has value '{v}', which is not a number.")
        else:
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
    return out


@click.group()
def runs() -> None:
    """Runs of pipelines and experiments."""


@runs.command("list")
@click.option("--experiment", help="Only runs of this experiment.")
@click.option("--pipeline", help="Only runs of this pipeline.")
@click.option("--limit", default=50, show_default=True)
@json_option
def runs_list(experiment, pipeline, limit, as_json):
    """List recent runs, newest first.

    \b
    Example:
      ambidex runs list --experiment churn-tuning
    """
    rows = _ws().registry().list_runs(experiment=experiment, pipeline=pipeline, limit=limit)
    emit_table(rows, ["id", "kind", "pipeline", "experiment", "status", "started_at", "git_commit"], as_json)


@runs.command("show")
@click.argument("run_id")
@json_option
def runs_show(run_id, as_json):
    """Show one run: params, metrics, stage runs with measured resources, models produced.

    \b
    Example:
      ambidex runs show 3f2a...
    """
    run = _ws().registry().get_run(run_id)
    if as_json:
        emit(run, True)
        return
    click.echo(f"Run {run['id']}  {run.get('kind')}  {run.get('pipeline') or run.get('experiment') or ''}  {run.get('status')}")
    if run.get("stage_runs"):
        emit_table(run["stage_runs"], ["stage", "lang", "runner", "status", "wall_seconds", "cpu_seconds", "peak_rss_bytes"], False)
    if run.get("metrics"):
        emit_table(run["metrics"], ["stage", "name", "step", "value"], False)
    if run.get("params"):
        emit_table([{"key": k, "value": v} for k, v in run["params"].items()], ["key", "value"], False)
    if run.get("model_versions"):
        emit_table(run["model_versions"], ["name", "version", "status"], False)


@runs.command("start")
@click.option("--experiment", required=True, help="Experiment name the run belongs to.")
@json_option
def runs_start(experiment, as_json):
    """Start an experiment run and print its id (for notebooks and R sessions).

    \b
    Example:
      ambidex runs start --experiment churn-tuning --json
    """
    from ..tracking import start_run

    run = start_run(experiment)
    emit({"run_id": run.run_id}, as_json, human=run.run_id)


@runs.command("log-params")
@click.argument("run_id")
@click.argument("pairs", nargs=-1, required=True)
@json_option
def runs_log_params(run_id, pairs, as_json):
    """Log KEY=VALUE parameters (VALUE parsed as JSON when it is JSON).

    \b
    Example:
      ambidex runs log-params RUN alpha=0.5 method=glm
    """
    params = _kv(pairs, numeric=False)
    _ws().registry().log_params(run_id, params)
    emit({"run_id": run_id, "logged": len(params)}, as_json, human=f"Logged {len(params)} params.")


@runs.command("log-metrics")
@click.argument("run_id")
@click.argument("pairs", nargs=-1, required=True)
@click.option("--step", default=0, show_default=True, type=click.IntRange(min=0))
@json_option
def runs_log_metrics(run_id, pairs, step, as_json):
    """Log NAME=VALUE metrics at a step, in one transaction.

    \b
    Example:
      ambidex runs log-metrics RUN auc=0.84 logloss=0.41 --step 3
    """
    metrics = _kv(pairs, numeric=True)
    _ws().registry().log_metrics(run_id, [{"name": k, "value": v, "step": step} for k, v in metrics.items()])
    emit({"run_id": run_id, "logged": len(metrics)}, as_json, human=f"Logged {len(metrics)} metrics.")


@runs.command("log-artifact")
@click.argument("run_id")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def runs_log_artifact(run_id, path, as_json):
    """Store a file (content-hashed) as an artifact of the run.

    \b
    Example:
      ambidex runs log-artifact RUN plots/roc.png
    """
    digest = _ws().registry().log_artifact(run_id, path)
    emit({"run_id": run_id, "path": str(path), "sha256": digest}, as_json, human=digest)


@runs.command("log-model")
@click.argument("run_id")
@click.argument("name")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
def runs_log_model(run_id, name, folder, as_json):
    """Register FOLDER (model.json + payload) as a new version of NAME, produced by the run.

    \b
    Example:
      ambidex runs log-model RUN churn_r out/model
    """
    from ..tracking import TrackedRun
    from ..workspace import Workspace

    mv = TrackedRun(Workspace.find(Path.cwd()), run_id).log_model(name, folder)
    emit({"name": mv.name, "version": mv.version, "status": mv.status}, as_json, human=f"{mv.name}:{mv.version} {mv.status}")


@runs.command("end")
@click.argument("run_id")
@click.option("--status", type=click.Choice(["FINISHED", "FAILED"]), default="FINISHED", show_default=True)
@json_option
def runs_end(run_id, status, as_json):
    """End a run with a status.

    \b
    Example:
      ambidex runs end RUN --status FINISHED
    """
    _ws().registry().end_run(run_id, status)
    emit({"run_id": run_id, "status": status}, as_json, human=f"{run_id} {status}")
