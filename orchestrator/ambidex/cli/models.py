"""cli.models: `ambidex models list|show`, `ambidex score` and `ambidex verify`."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import CheckFailed, UsageError
from .output import emit, emit_table, json_option

__all__ = ["models", "verify"]


def _ws():
    from ..workspace import Workspace

    return Workspace.find(Path.cwd())


def _split_ref(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition(":")
    if version and not version.isdigit():
        raise UsageError(f"'{ref}' is not NAME or NAME:VERSION (VERSION a positive integer).",
                         hint="Run 'ambidex models list' to see registered models.")
    return name, int(version) if version else None


@click.group()
def models() -> None:
    """Registered models and their versions."""


@models.command("list")
@json_option
def models_list(as_json):
    """List registered models with their latest READY version.

    \b
    Example:
      ambidex models list --json
    """
    rows = _ws().registry().list_models()
    emit_table(rows, ["name", "latest_version", "n_versions", "language", "task", "created_at"], as_json)


@models.command("show")
@click.argument("ref")
@json_option
def models_show(ref, as_json):
    """Show NAME (all versions) or NAME:VERSION (its manifest: signature, importance, lineage, resources).

    \b
    Example:
      ambidex models show churn_r:1
    """
    name, version = _split_ref(ref)
    reg = _ws().registry()
    if version is None:
        emit_table(reg.list_versions(name), ["version", "status", "language", "task", "created_at", "run_id"], as_json)
        return
    mv = reg.get_model_version(name, version)
    m = mv.manifest
    if as_json:
        emit({"name": mv.name, "version": mv.version, "status": mv.status, "path": mv.path,
              "created_at": mv.created_at, "run_id": mv.run_id, "manifest": m}, True)
        return
    click.echo(f"{mv.name}:{mv.version}  {mv.status}  {m.get('task')}  {m['runtime']['language']} ({m['producer'].get('library')})")
    click.echo(f"target: {m['target']['name']}  metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in (m.get('metrics') or {}).items() if isinstance(v, (int, float))))
    imp = (m.get("feature_importance") or {}).get("values") or {}
    emit_table([{"feature": k, "importance": v} for k, v in sorted(imp.items(), key=lambda kv: -kv[1])], ["feature", "importance"], False)
    res = m.get("resources") or {}
    click.echo("resources: " + ", ".join(f"{k}={v}" for k, v in res.items()))
    lin = m.get("lineage") or {}
    click.echo("lineage: " + ", ".join(f"{k}={v}" for k, v in lin.items()))


@models.command("score")
@click.argument("ref")
@click.option("--input", "input_csv", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Typed table (CSV with its .schema.json sidecar).")
@click.option("--output", "output_csv", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keep", multiple=True, help="Input columns to copy to the output (e.g. a key).")
@json_option
def score(ref, input_csv, output_csv, keep, as_json):
    """Score a typed table with NAME[:VERSION] in the model's own runtime (R or Python).

    \b
    Example:
      ambidex models score churn_r --input window.csv --output predictions.csv --keep customer_id
    """
    from ..scoring import score_folder

    ws = _ws()
    name, version = _split_ref(ref)
    reg = ws.registry()
    mv = reg.get_model_version(name, version)
    result = score_folder(ws, reg.model_path(mv), input_csv, output_csv, keep=list(keep))
    metrics = {m["name"]: m["value"] for m in result.get("metrics", [])}
    emit({"model": name, "version": mv.version, "output": str(output_csv), "metrics": metrics}, as_json,
         human=f"Scored with {name}:{mv.version} -> {output_csv} ({metrics.get('n_rows', '?')} rows)")


@click.command()
@json_option
def verify(as_json):
    """Check every READY model version: files present, sizes and sha256 as recorded. Exit 4 on a problem.

    \b
    Example:
      ambidex verify
    """
    problems = _ws().registry().verify()
    if as_json:
        emit({"ok": not problems, "problems": problems}, True)
    elif not problems:
        click.echo("All READY model versions verified.")
    else:
        emit_table([{"model": p.get("name"), "version": p.get("version"), "file": p.get("path"),
                     "problem": p.get("problem")} for p in problems], ["model", "version", "file", "problem"], False)
    if problems:
        raise CheckFailed(f"{len(problems)} problem(s) found in the artifact store.", code="check.verify_failed",
                          hint="Restore the files from backup, or re-register the affected versions.")
