"""cli.drift: the `ambidex drift` (compare, check, show) and `ambidex kpi` (show) commands, thin calls into ambidex.monitor."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .output import echo_err, emit, emit_table, json_option

__all__ = ["drift", "kpi"]

TABLE_COLUMNS = ["feature", "status", "w", "impact_psi", "psi", "median_shift", "impact_median", "missing_delta",
                 "reasons"]


def _registry_engine():
    from ..db import connect, migrate
    from ..workspace import Workspace

    engine = connect(Workspace.find(Path.cwd()).registry_url)
    migrate(engine)
    return engine


def _fs_engine(db_url: str | None, registry=None):
    if db_url:
        from ..db import connect

        return connect(db_url)
    return registry if registry is not None else _registry_engine()


db_option = click.option("--db", "db_url", envvar="AMBIDEX_DB_URL", default=None, metavar="URL",
                         help="Feature-store database for sql:TABLE and mart:NAME (default: the project's registry). "
                              "Read from $AMBIDEX_DB_URL.")


def _uses_db(*specs: str | None) -> bool:
    return any(s and s.startswith(("sql:", "mart:")) for s in specs)


def _load_importance(path: str | None) -> dict | None:
    from ..errors import UsageError

    if path is None:
        return None
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"Cannot read importance file {path!r}: {exc}.",
                         hint='Give JSON like {"age": 0.4, "plan": 0.6} or a model.json.') from None
    if isinstance(doc, dict) and isinstance(doc.get("feature_importance"), dict):
        doc = doc["feature_importance"]
    if isinstance(doc, dict) and isinstance(doc.get("values"), dict):
        doc = doc["values"]
    if not isinstance(doc, dict) or not doc:
        raise UsageError(f"Importance file {path!r} holds no feature -> weight mapping.",
                         hint='Give JSON like {"age": 0.4, "plan": 0.6} or a model.json.')
    return doc


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _print_dataset(title: str, status: str, summary: dict, rows: list[dict]) -> None:
    click.echo(f"{title}: {status.upper()}  weighted_psi={summary['weighted_psi']:.4g}  "
               f"drifted_importance_share={summary['drifted_importance_share']:.3g}"
               + (f"  reasons={','.join(summary['reasons'])}" if summary["reasons"] else "")
               + ("  (uniform importance)" if summary["uniform_importance"] else ""))
    if rows:
        emit_table(rows, TABLE_COLUMNS, False)


@click.group("drift")
def drift() -> None:
    """Data drift: ad-hoc comparisons, checks of a model's window, history.

    \b
    Example:
      ambidex drift compare train.csv june.csv --importance importance.json
      ambidex drift check churn_py --window 2024-11-01/2024-12-01 --data churn.csv --time-column signup_month
      ambidex drift show --model churn_py --feature tenure
    """


@drift.command("compare")
@click.argument("reference")
@click.argument("current")
@click.option("--importance", "importance_file", metavar="FILE.json", default=None,
              help="Feature importance: {feature: weight}, or a model.json. Without it features weigh the same.")
@click.option("--columns", default=None, metavar="A,B", help="Compare only these columns (default: all of REFERENCE).")
@db_option
@json_option
def compare_cmd(reference: str, current: str, importance_file: str | None, columns: str | None, db_url: str | None,
                as_json: bool) -> None:
    """Compare two data sets (CSV, typed CSV, Parquet, or sql:TABLE), sorted by impact.

    The statistics, statuses and dataset verdict are those of `drift check`; exits 0.

    \b
    Example:
      ambidex drift compare train.parquet june.parquet --importance model.json
      ambidex drift compare sql:churn_2023 sql:churn_2024 --columns tenure,plan --json
    """
    from ..drift import compare_frames
    from ..monitor import check_rows, dataset_summary
    from ..monitor_io import read_frame

    cols = _columns(columns)
    engine = _fs_engine(db_url) if _uses_db(reference, current) else None
    ref = read_frame(reference, engine=engine, columns=cols)
    cur = read_frame(current, engine=engine, columns=cols or list(ref.columns))
    imp = _load_importance(importance_file)
    res = compare_frames(ref, cur, importance=imp, columns=cols, uniform_importance=imp is None)
    summary, rows = dataset_summary(res), check_rows(res)
    status = "alert" if res.dataset_drift else ("warn" if any(r["status"] in ("warn", "alert") for r in rows) else "ok")
    if as_json:
        emit({"reference": reference, "current": current, "status": status, **summary, "features": rows,
              "details": [f.to_dict() for f in res.features]}, True)
    else:
        _print_dataset(f"{current} vs {reference}", status, summary, rows)


def _targets(engine, target: str):
    """A model version, or every model version registered by the latest run of a pipeline."""
    import sqlalchemy as sa

    from ..errors import RegistryError
    from ..monitor import resolve_model
    from ..tables import model_versions, models, runs

    try:
        return [resolve_model(engine, target)]
    except RegistryError:
        if ":" in target:
            raise
    with engine.connect() as conn:
        run_id = conn.execute(sa.select(runs.c.id).where(runs.c.pipeline == target, runs.c.status == "FINISHED")
                              .order_by(runs.c.started_at.desc()).limit(1)).scalar()
        names = conn.execute(sa.select(models.c.name, model_versions.c.version)
                             .join(models, models.c.id == model_versions.c.model_id)
                             .where(model_versions.c.run_id == run_id, model_versions.c.status == "READY")
                             .order_by(models.c.name)).all() if run_id else []
    if not names:
        raise RegistryError(f"No model or pipeline named {target!r} with a READY model version.",
                            code="registry.not_found", hint="Run 'ambidex models list' to see registered models.")
    return [resolve_model(engine, f"{n}:{v}") for n, v in names]


def _ensure_reference(engine, fs, model, reference: str | None, replace: bool) -> None:
    from ..errors import DataError
    from ..monitor_io import read_frame, training_reference
    from ..monitor_store import reference_window, set_reference

    if reference_window(engine, model.id, required=False) is not None and not replace:
        return
    if reference:
        set_reference(engine, model, read_frame(reference, engine=fs), source=reference[:500], replace=replace)
        return
    import sqlalchemy as sa

    from ..tables import model_versions

    with engine.connect() as conn:
        row = conn.execute(sa.select(model_versions.c.run_id, model_versions.c.stage)
                           .where(model_versions.c.id == model.id)).first()
    found = training_reference(engine, row.run_id, row.stage)
    if found is None:
        raise DataError(f"Model {model.label} has no stored training reference and its training input could not "
                        "be found.", code="data.no_reference",
                        hint="Pass --reference TRAIN.csv (the data it was trained on) once; it is profiled and kept.")
    set_reference(engine, model, found[0], source=found[1], replace=replace)


@drift.command("check")
@click.argument("target", metavar="PIPELINE|MODEL[:VERSION]")
@click.option("--window", "window", required=True, metavar="START/END", help="The window, half-open UTC.")
@click.option("--data", "data", default=None, metavar="FILE|sql:TABLE|mart:NAME",
              help="Rows of the window (profiled once; later checks reuse the stored profile).")
@click.option("--time-column", default=None, metavar="COL", help="Keep only rows of --data with COL in the window.")
@click.option("--reference", default=None, metavar="FILE|sql:TABLE",
              help="Training reference, if none is stored yet (default: the training stage's input table).")
@click.option("--replace", is_flag=True, help="Re-profile the window (and the reference, with --reference).")
@click.option("--k", "k", default=3, show_default=True, help="Windows in the rolling baseline.")
@click.option("--uniform-importance", is_flag=True, help="Weight features equally when the model has no importance.")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even on dataset drift (the verdict is in the output).")
@db_option
@json_option
def check_cmd(target, window, data, time_column, reference, replace, k, uniform_importance, exit_zero, db_url,
              as_json) -> None:
    """Check a model's window against its training reference, T-1 and rolling k; exit 4 on dataset drift.

    Prints the features sorted by impact (w x PSI). Every number is stored (see `drift show`).

    \b
    Example:
      ambidex drift check churn_py --window 2024-11-01/2024-12-01 \\
          --data churn.csv --time-column signup_month
      ambidex drift check churn --window 2024-11-01/2024-12-01 --data mart:churn --json
    """
    from ..errors import CheckFailed, DataError
    from ..monitor import check_rows, check_window, dataset_summary
    from ..monitor_io import filter_window, read_frame
    from ..monitor_store import parse_window_arg, profile_window

    engine = _registry_engine()
    fs = _fs_engine(db_url, engine)
    start, end = parse_window_arg(window)
    frame = None
    if data is not None:
        frame = read_frame(data, engine=fs, window=f"{start.isoformat()}/{end.isoformat()}")
        if time_column:
            frame = filter_window(frame, time_column, start, end)
    results = []
    for model in _targets(engine, target):
        _ensure_reference(engine, fs, model, reference, replace and reference is not None)
        try:
            profile_window(engine, model, (start, end), frame, source=(data or "")[:500], replace=replace)
        except DataError as exc:
            if exc.code != "data.no_rows":
                raise
            raise DataError(exc.message, code=exc.code, hint="Pass --data FILE|sql:TABLE|mart:NAME with the "
                            "window's rows (with --time-column to cut a window out of a longer table).") from None
        results.append(check_window(engine, model, (start, end), k=k, uniform_importance=uniform_importance))
    if as_json:
        emit([r.to_dict() for r in results] if len(results) > 1 else results[0].to_dict(), True)
    else:
        for r in results:
            for b, res in r.baselines.items():
                title = f"{r.model}:{r.version} {start.date()}/{end.date()} vs {b}"
                _print_dataset(title, r.statuses[b], dataset_summary(res), check_rows(res) if b == "reference" else [])
            if r.prediction_drift is not None:
                p = r.prediction_drift
                click.echo(f"prediction drift (score PSI): {p.psi:.4g} [{p.status}]")
            if r.status == "insufficient_data":
                echo_err(f"{r.model}:{r.version}: the window has too few rows for a verdict (insufficient_data).")
    alerts = [f"{r.model}:{r.version}" for r in results if r.alert]
    if alerts and not exit_zero:
        raise CheckFailed(f"Dataset drift in window {start.date()}/{end.date()} for {', '.join(alerts)}.",
                          code="check.drift", hint="Inspect the features at the top of the table; retrain or "
                          "fix the pipeline that feeds them.", models=alerts)


@drift.command("show")
@click.option("--model", default=None, metavar="MODEL[:VERSION]", help="Only this model (or version).")
@click.option("--feature", default=None, metavar="F", help="History of one feature (one row per check).")
@click.option("--metric", default="psi", show_default=True, help="Statistic shown with --feature.")
@click.option("--baseline", default="reference", show_default=True,
              type=click.Choice(["reference", "t-1", "rolling"]), help="Baseline shown with --feature.")
@click.option("--last", default=20, show_default=True, help="At most this many rows, newest first.")
@json_option
def show_cmd(model, feature, metric, baseline, last, as_json) -> None:
    """List stored drift checks, or one feature's history.

    \b
    Example:
      ambidex drift show --model churn_py --last 5
      ambidex drift show --model churn_py --feature tenure --metric median_shift --json
    """
    from ..monitor import check_history, drift_history

    engine = _registry_engine()
    if feature:
        rows = drift_history(engine, model=model, feature=feature, metric=metric, baseline=baseline, last=last)
        emit_table(rows, ["model", "version", "window_start", "window_end", "feature", "metric", "value", "status",
                          "reasons"], as_json, empty="(no drift results)")
    else:
        rows = check_history(engine, model=model, last=last)
        emit_table(rows, ["check_id", "model", "version", "window_start", "baseline", "status", "weighted_psi",
                          "drifted_importance_share", "dataset_drift"], as_json, empty="(no drift checks)")


@click.group("kpi")
def kpi() -> None:
    """Model KPIs per window (labelled and label-free estimates).

    \b
    Example:
      ambidex kpi show --model churn_py
    """


@kpi.command("show")
@click.option("--model", default=None, metavar="MODEL[:VERSION]", help="Only this model (or version).")
@click.option("--metric", default=None, help="Only this metric (roc_auc, accuracy, log_loss, rmse, mae, ...).")
@click.option("--last", default=50, show_default=True, help="At most this many rows, newest first.")
@json_option
def kpi_show_cmd(model, metric, last, as_json) -> None:
    """List stored KPIs with SEs; estimated ones (CBPE, DLE-lite) are flagged and never promote a model.

    \b
    Example:
      ambidex kpi show --model churn_py --metric roc_auc --json
    """
    from ..monitor_kpi import kpi_history

    rows = kpi_history(_registry_engine(), model=model, metric=metric, last=last)
    emit_table(rows, ["model", "version", "window_start", "metric", "value", "se", "n", "is_estimated", "method"],
               as_json, empty="(no KPIs)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(drift())
