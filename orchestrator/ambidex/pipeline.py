"""pipeline: execute a validated pipeline's stages in order and record the run in the registry.

The orchestrator owns all state: stages only read their ``context.json`` and write into their
own output folder. Models are registered after *every* stage succeeded, so a crash anywhere
registers nothing.

    >>> ws = Workspace.find(Path("."))                                    # doctest: +SKIP
    >>> summary = run_pipeline(ws, Path("config/churn.yaml"))             # doctest: +SKIP
    >>> [(m["name"], m["version"]) for m in summary.models]               # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .errors import AmbidexError, ContractError
from .lineage import collect_lineage
from .runners import StageLaunch, StageOutcome, r_version, run_stage
from .workspace import Workspace

__all__ = ["RunSummary", "run_pipeline", "run_stages", "write_context", "check_outputs", "feature_store_engine"]

log = logging.getLogger(__name__)
CONTRACT_VERSION = 1


@dataclass
class RunSummary:
    """The outcome of one pipeline run: stage measurements, metrics and registered model versions."""

    run_id: str
    pipeline: str
    status: str
    stages: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "pipeline": self.pipeline, "status": self.status,
                "stages": self.stages, "models": self.models}


def _stage_params(stage, pipeline) -> dict:
    return dict(stage.params or {})


def _resolve_inputs(stage, produced: dict[str, dict], ws: Workspace, *, fs=None, run_id: str | None = None,
                    window=None, in_dir: Path | None = None, read_versions: list | None = None) -> dict:
    """Map each input reference to a concrete path: STAGE.OUTPUT, file:PATH, model:NAME[:VERSION], or a
    feature-store read (mart:NAME[:history], sql:PATH) exported as a typed table for the stage."""
    inputs = {}
    for name, ref in (stage.inputs or {}).items():
        if ref.startswith(("mart:", "sql:")):
            inputs[name] = _export_fs_input(ref, fs, ws, run_id, window, in_dir / f"{name}.csv", read_versions)
        elif ref.startswith("file:"):
            path = (ws.root / ref[len("file:"):]).resolve()
            inputs[name] = {"kind": "table", "path": str(path)}
        elif ref.startswith("model:"):
            parts = ref[len("model:"):].split(":")
            reg = ws.registry()
            mv = reg.get_model_version(parts[0], int(parts[1]) if len(parts) > 1 else None)
            inputs[name] = {"kind": "model", "path": str(reg.model_path(mv))}
        else:
            inputs[name] = produced[ref]
    return inputs


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _export_fs_input(ref: str, fs, ws: Workspace, run_id, window, csv_path: Path, read_versions) -> dict:
    """Point-in-time read for one stage input, written as a typed CSV (the same file for R and Python).
    ``mart:NAME`` is the run's window ``[start, end)`` (every current row without a window);
    ``mart:NAME:history`` is every row before the window's end; ``sql:PATH`` runs the transform."""
    from .config import parse_input_ref
    from .featurestore import Window, export_window_for_r

    parsed = parse_input_ref(ref)
    if parsed.kind == "sql":
        target, win = str(ws.root / parsed.path), (Window(*window) if window else None)
    else:
        target = parsed.mart
        win = None if window is None else Window(window[0] if parsed.scope == "window" else _EPOCH, window[1])
    written = export_window_for_r(fs, target, win, csv_path, run_id=run_id)
    if read_versions is not None:
        read_versions.extend(written.get("data_versions") or [])
    return {"kind": "table", "path": str(csv_path)}


def _run_ingest(fs, pipeline, stage, inputs: dict, run_id: str, window, stage_dir: Path) -> StageOutcome:
    """An ``ingest:`` stage, done by the orchestrator itself (it owns the feature store): load the typed
    table of input ``data`` into the mart, one transaction per load. With a run window, that window
    is loaded; without one, a window mart is back-filled month by month (one data version each)."""
    import resource
    import time

    from ambidex_stage.tables import read_table

    from .featurestore import Window, ingest

    spec = pipeline.data.mart(stage.ingest)
    started, t0, r0 = datetime.now(timezone.utc), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    df = read_table(inputs["data"]["path"])
    loads = []
    if spec.mode == "window" and window is None:
        months = df[spec.time_column].dt.tz_convert("UTC").dt.to_period("M").dropna().unique()
        for month in sorted(months):
            start = month.start_time.tz_localize("UTC").to_pydatetime()
            end = (month + 1).start_time.tz_localize("UTC").to_pydatetime()
            part = df[(df[spec.time_column] >= start) & (df[spec.time_column] < end)]
            loads.append(ingest(fs, spec, table=part, window=Window(start, end), run_id=run_id))
    else:
        win = Window(*window) if (window is not None and spec.mode == "window") else None
        if win is not None:
            df = df[(df[spec.time_column] >= win.start) & (df[spec.time_column] < win.end)]
        loads.append(ingest(fs, spec, table=df, window=win, run_id=run_id))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    metrics = [{"name": "loads", "value": len(loads), "step": 0},
               {"name": "rows", "value": sum(x.row_count for x in loads), "step": 0}]
    out = stage_dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    (stage_dir / "stdout.log").write_text("".join(
        f"{x.mart} v{x.version} {x.window or 'full'}: {x.row_count} rows {x.content_hash}\n" for x in loads))
    (stage_dir / "stderr.log").write_text("")
    result = {"contract_version": 1, "status": "ok", "metrics": metrics, "params": {}, "outputs": {},
              "artifacts": [], "error": None,
              "data_versions": [{"mart": x.mart, "version": x.version, "id": x.data_version_id,
                                 "window": x.window, "rows": x.row_count} for x in loads]}
    return StageOutcome(stage=stage.name, lang="sql", runner="orchestrator", status="ok", exit_code=0,
                        started_at=started, ended_at=datetime.now(timezone.utc),
                        wall_seconds=time.perf_counter() - t0,
                        cpu_seconds=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                        peak_rss_bytes=int(r1.ru_maxrss) * 1024, stdout_path=stage_dir / "stdout.log",
                        stderr_path=stage_dir / "stderr.log", result=result)


def feature_store_engine(ws: Workspace, pipeline):
    """The database of the pipeline's marts: ``data.url_env`` when set, else the registry's."""
    data = getattr(pipeline, "data", None)
    if data is None or data.url_env is None:
        return ws.registry().engine
    url = os.environ.get(data.url_env)
    if not url:
        from .errors import ConfigError

        raise ConfigError(f"data.url_env names ${data.url_env}, which is not set.", code="config.env_missing",
                          hint=f"Export {data.url_env}=<SQLAlchemy URL of the feature-store database>.")
    from .db import connect
    from .featurestore import init_featurestore

    engine = connect(url)
    init_featurestore(engine)
    return engine


def _sidecar(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".schema.json")


def _declared_outputs(stage, out_dir: Path) -> dict:
    outputs = {}
    for name, spec in (stage.outputs or {}).items():
        if spec.kind == "table":
            outputs[name] = {"kind": "table", "path": str(out_dir / f"{name}.csv")}
        else:
            outputs[name] = {"kind": "model", "path": str(out_dir / name)}
            if spec.register:
                outputs[name]["name"] = spec.register
    return outputs


def write_context(path: Path, context: dict) -> None:
    """Validate and write ``context.json`` (contract section 2.1) atomically."""
    from ambidex_stage.validate import validate_document

    validate_document("context", context)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(context, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def check_outputs(stage_name: str, outcome: StageOutcome, outputs: dict) -> None:
    """Every declared output exists and honours the contract; result.json validates."""
    from ambidex_stage.errors import StageSDKError
    from ambidex_stage.manifest import read_manifest
    from ambidex_stage.validate import validate_document

    try:
        validate_document("result", outcome.result)
        for name, out in outputs.items():
            p = Path(out["path"])
            if out["kind"] == "table":
                if not p.is_file() or not _sidecar(p).is_file():
                    raise ContractError(
                        f"Stage '{stage_name}' declared output table '{name}' but did not write "
                        f"{p.name} with its schema sidecar {_sidecar(p).name}.",
                        code="contract.invalid_table",
                        hint="Write it with ctx.write_table (Python) or ctx_write_table (R).")
                validate_document("table", json.loads(_sidecar(p).read_text(encoding="utf-8")))
            else:
                read_manifest(p)
    except StageSDKError as exc:
        raise ContractError(f"Stage '{stage_name}': {exc.message}", code=exc.code, hint=exc.hint) from exc


def _launch_for(stage, pipeline, ws: Workspace, stage_dir: Path) -> StageLaunch:
    defaults = pipeline.defaults
    runner = "subprocess" if stage.lang == "python" else (stage.runner or defaults.runner)
    py_settings = getattr(ws.settings, "python", None)
    return StageLaunch(
        stage=stage.name, lang=stage.lang, runner=runner,
        script=(ws.root / stage.script) if stage.script else None, builtin=stage.builtin,
        context_path=stage_dir / "context.json", stage_dir=stage_dir, project_root=ws.root,
        timeout=float(stage.timeout or defaults.timeout),
        python=(py_settings.executable if py_settings and py_settings.executable else os.sys.executable),
        rscript=ws.rscript, r_libs=ws.r_libs,
    )


def run_pipeline(ws: Workspace, pipeline_path: Path, *, window: tuple[datetime, datetime] | None = None,
                 on_stage: Callable[[str, str], None] | None = None) -> RunSummary:
    """Run every stage of the pipeline at ``pipeline_path``; register its models when all succeed.

    Raises StageError (the failing stage, its exit code and the tail of stderr) or ContractError;
    the run is then recorded as FAILED and no model version is registered.
    """
    from .config import load_pipeline

    pipeline = load_pipeline(pipeline_path, ws.root)
    from .locks import pipeline_lock

    # One run per pipeline on this host: a second invocation gets LockedError (exit 75) naming
    # the holder; the kernel releases the lock if this process dies.
    with pipeline_lock(ws.state_dir, pipeline.name) as lock:
        return _run_locked(ws, pipeline, pipeline_path, window, on_stage, lock)


def _run_locked(ws: Workspace, pipeline, pipeline_path: Path, window, on_stage, lock) -> RunSummary:
    return run_stages(ws, pipeline, pipeline_path, pipeline.stages, window=window, on_stage=on_stage, lock=lock)


def run_stages(ws: Workspace, pipeline, pipeline_path: Path, stages, *, window=None, on_stage=None, lock=None,
               report_missed: bool = True, lineage: dict | None = None) -> RunSummary:
    """Run ``stages`` (of the loaded ``pipeline``) in order as ONE recorded run; register their models when all
    succeed. The caller holds the pipeline lock (``run_pipeline`` does; so does the cycle, which runs the
    window's stages and each training candidate through here)."""
    reg = ws.registry()
    scripts = {s.name: ws.root / s.script for s in stages if s.script}
    has_r = any(s.lang == "r" for s in stages)
    lineage = lineage or collect_lineage(ws.root, config_path=pipeline_path.resolve(), scripts=scripts,
                                         r_version=r_version() if has_r else None)
    run_id = reg.start_run("pipeline", pipeline=pipeline.name, window=window, lineage=lineage)
    if lock is not None:
        lock.set_run_id(run_id)
    if report_missed:
        _report_missed_schedule(ws, pipeline.name, run_id)
    summary = RunSummary(run_id=run_id, pipeline=pipeline.name, status="RUNNING")
    produced: dict[str, dict] = {}
    to_register: list[tuple] = []
    fs = feature_store_engine(ws, pipeline) if (pipeline.data or _reads_fs(stages)) else None
    read_by_stage: dict[str, list] = {}
    notify = on_stage or (lambda stage, state: None)
    try:
        reg.log_params(run_id, {f"{s.name}.{k}": v for s in stages for k, v in (s.params or {}).items()})
        for stage in stages:
            notify(stage.name, "start")
            stage_dir = ws.runs_dir / run_id / stage.name
            out_dir = stage_dir / "out"
            out_dir.mkdir(parents=True, exist_ok=True)
            if stage.ingest:
                outcome = _run_ingest(fs, pipeline, stage, _resolve_inputs(stage, produced, ws), run_id, window,
                                      stage_dir)
                _record_stage(reg, run_id, outcome, None, stage_dir, None)
                summary.stages.append(_stage_summary(outcome, None))
                _log_result(reg, run_id, stage.name, outcome.result, window)
                summary.outputs[f"{stage.name}.data_versions"] = outcome.result["data_versions"]
                notify(stage.name, "done")
                continue
            outputs = _declared_outputs(stage, out_dir)
            read_by_stage[stage.name] = []
            context = {
                "contract_version": CONTRACT_VERSION, "run_id": run_id, "pipeline": pipeline.name,
                "stage": stage.name, "lang": stage.lang, "project_root": str(ws.root),
                "output_dir": str(out_dir), "params": _stage_params(stage, pipeline),
                "inputs": _resolve_inputs(stage, produced, ws, fs=fs, run_id=run_id, window=window,
                                          in_dir=stage_dir / "in", read_versions=read_by_stage[stage.name]),
                "outputs": outputs,
                "window": ({"start": _iso(window[0]), "end": _iso(window[1])} if window else None),
                "seed": int(pipeline.defaults.seed),
            }
            launch = _launch_for(stage, pipeline, ws, stage_dir)
            write_context(launch.context_path, context)
            outcome = run_stage(launch)
            script_hash = (lineage.get("scripts") or {}).get(stage.name, {}).get("sha256")
            error = outcome.error
            if error is None:
                try:
                    check_outputs(stage.name, outcome, outputs)
                except AmbidexError as exc:
                    error = exc
            _record_stage(reg, run_id, outcome, script_hash, stage_dir, error)
            summary.stages.append(_stage_summary(outcome, error))
            if error is not None:
                notify(stage.name, "failed")
                raise error
            _log_result(reg, run_id, stage.name, outcome.result, window)
            notify(stage.name, "done")
            for name, out in outputs.items():
                produced[f"{stage.name}.{name}"] = _as_input(out)
                summary.outputs[f"{stage.name}.{name}"] = out
                spec = stage.outputs[name]
                if spec.kind == "model" and spec.register:
                    to_register.append((spec.register, Path(out["path"]), stage.name, outcome))
        for model_name, folder, stage_name, outcome in to_register:
            mv = reg.register_model_version(
                model_name, folder, run_id=run_id, stage=stage_name,
                lineage={"run_id": run_id, "stage": stage_name,
                         "data_version": _data_version_label(fs, read_by_stage.get(stage_name)),
                         "window": ({"start": _iso(window[0]), "end": _iso(window[1])} if window else None),
                         "git_commit": lineage["git_commit"], "git_dirty": lineage["git_dirty"],
                         "config_hash": lineage["config_hash"]},
                # forked from a zygote (runner "zygote"), CPU leaves out the packages loaded once and peak
                # RSS is the stage's own above the loaded runtime, for R and Python alike (runners._Zygotes)
                resources={"train_wall_seconds": round(outcome.wall_seconds, 6),
                           "train_cpu_seconds": round(outcome.cpu_seconds, 6),
                           "peak_rss_bytes": outcome.peak_rss_bytes, "runner": outcome.runner,
                           "payload_bytes": _payload_bytes(folder)},
            )
            summary.models.append({"name": mv.name, "version": mv.version, "language": mv.language,
                                   "task": mv.task, "stage": stage_name})
    except BaseException:
        reg.end_run(run_id, "FAILED")
        summary.status = "FAILED"
        raise
    reg.end_run(run_id, "FINISHED")
    summary.status = "FINISHED"
    return summary


def _report_missed_schedule(ws: Workspace, pipeline: str, run_id: str) -> list:
    """Under cron (AMBIDEX_SCHEDULE set by the crontab line), log scheduled times that had no run; return them."""
    from .schedule import SCHEDULE_ENV, check_missed

    expr = os.environ.get(SCHEDULE_ENV)
    if not expr:
        return []
    from datetime import timezone

    missed = check_missed(ws, pipeline, expr, datetime.now(timezone.utc), exclude_run_id=run_id)
    if missed:
        log.warning("pipeline %s missed %d scheduled run(s), first at %s", pipeline, len(missed), missed[0])
    return list(missed or [])


def _reads_fs(stages) -> bool:
    return any(ref.startswith(("mart:", "sql:")) for s in stages for ref in (s.inputs or {}).values())


def _data_version_label(fs, ids: list | None) -> str | None:
    """``churn@3,churn@4``: the data versions a training stage read (lineage in the manifest)."""
    if not ids:
        return None
    import sqlalchemy as sa

    from .fstables import data_versions as dv

    with fs.connect() as conn:
        rows = conn.execute(sa.select(dv.c.mart, dv.c.version).where(dv.c.id.in_(list(ids)))
                            .order_by(dv.c.mart, dv.c.version)).all()
    return ",".join(f"{m}@{v}" for m, v in rows)


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _as_input(out: dict) -> dict:
    if out["kind"] == "table":
        p = Path(out["path"])
        return {"kind": "table", "path": str(p)}
    return {"kind": "model", "path": out["path"]}


def _payload_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _record_stage(reg, run_id: str, o: StageOutcome, script_hash, stage_dir: Path, error) -> None:
    reg.record_stage_run(
        run_id, o.stage, lang=o.lang, runner=o.runner, status="FAILED" if error else "FINISHED",
        exit_code=o.exit_code, started_at=o.started_at, ended_at=o.ended_at,
        wall_seconds=o.wall_seconds, cpu_seconds=o.cpu_seconds, peak_rss_bytes=o.peak_rss_bytes,
        script_hash=script_hash, log_dir=str(stage_dir),
        error_code=getattr(error, "code", None), error_message=(error.message[:2000] if error else None),
    )


def _stage_summary(o: StageOutcome, error) -> dict:
    return {"stage": o.stage, "lang": o.lang, "runner": o.runner,
            "status": "FAILED" if error else "FINISHED", "exit_code": o.exit_code,
            "wall_seconds": round(o.wall_seconds, 3), "cpu_seconds": round(o.cpu_seconds, 3),
            "peak_rss_mb": round(o.peak_rss_bytes / 2**20, 1) if o.peak_rss_bytes else None}


def _log_result(reg, run_id: str, stage: str, result: dict, window) -> None:
    metrics = [{"name": m["name"], "value": m.get("value"), "step": m.get("step", 0)}
               for m in result.get("metrics") or []]
    if metrics or result.get("params"):
        reg.log_batch(run_id, params=result.get("params") or {}, metrics=metrics, stage=stage,
                      window=window, prefix=stage)
