"""cli.cycle: `ambidex cycle show`: the windows a continuous-training pipeline processed and its decisions."""
from __future__ import annotations

from pathlib import Path

import click

from .output import emit, emit_table, json_option

__all__ = ["cycle"]


@click.group()
def cycle():
    """Continuous training (the cycle of a pipeline with a cycle: section).

    \b
    Example:
      ambidex run config/churn.yaml
      ambidex cycle show config/churn.yaml
    """


@cycle.command("show")
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--steps", is_flag=True, help="Also list every completed step with its wall time.")
@click.option("--drift", is_flag=True, help="Also show the latest window's data drift against the champion's "
                                            "training reference, features sorted by impact.")
@json_option
def show_cmd(pipeline: Path, steps: bool, drift: bool, as_json: bool):
    """The windows PIPELINE processed and every decision with its reasons, oldest first.

    \b
    Example:
      ambidex cycle show config/churn.yaml --steps --drift
    """
    from ..config import load_pipeline
    from ..cycle import decisions, steps_of, windows
    from ..workspace import Workspace

    ws = Workspace.find(pipeline.parent if pipeline.parent != Path("") else Path.cwd())
    p = load_pipeline(pipeline, ws.root)
    engine = ws.registry().engine
    wins = [{"window": f"{w['window_start']:%Y-%m-%d}", "status": w["status"], "attempts": w["attempts"],
             "config": (w["config_hash"] or "")[:12], "git": (w["git_commit"] or "")[:10],
             "error": w["error"]} for w in windows(engine, p.name)]
    decs = [{"window": f"{d['window_start']:%Y-%m-%d}", "decision": d["kind"], "champion": d["champion"],
             "winner": d["winner"], "gain": None if d["gain"] is None else round(d["gain"], 4),
             "z": None if d["z"] is None else round(d["z"], 2), "revision": d["revision"],
             "why": d["reasons"].get("summary")} for d in decisions(engine, p.name)]
    step_rows = []
    if steps:
        for w in windows(engine, p.name):
            for name, s in steps_of(engine, p.name, w["window_start"]).items():
                step_rows.append({"window": f"{w['window_start']:%Y-%m-%d}", "step": name,
                                  "seconds": round(s["wall_seconds"], 3)})
    drift_rows, drift_head = [], None
    done = [w for w in windows(engine, p.name) if w["status"] == "finished"]
    if drift and done:
        d = steps_of(engine, p.name, done[-1]["window_start"]).get("drift", {}).get("detail") or {}
        drift_head = (f"Data drift of {d.get('model')} in {done[-1]['window_start']:%Y-%m-%d}: {d.get('status')}"
                      f"{' (ALERT)' if d.get('alert') else ''}, against its training reference, by impact:")
        drift_rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                      for r in d.get("top") or []]
    if as_json:
        emit({"pipeline": p.name, "windows": wins, "decisions": decs, "steps": step_rows, "drift": drift_rows}, True)
        return
    click.echo(f"Windows of '{p.name}':")
    emit_table(wins, ["window", "status", "attempts", "config", "git", "error"], False, empty="(none yet)")
    click.echo("Decisions:")
    emit_table(decs, ["window", "decision", "champion", "winner", "gain", "z", "revision", "why"], False,
               empty="(none yet)")
    if steps:
        click.echo("Steps:")
        emit_table(step_rows, ["window", "step", "seconds"], False)
    if drift_head:
        click.echo(drift_head)
        emit_table(drift_rows, ["feature", "impact_psi", "psi", "median_shift", "status"], False)
