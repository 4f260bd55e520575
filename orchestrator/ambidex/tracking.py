"""tracking: experiment runs outside a pipeline (a notebook, an R session) into the same registry.

    >>> import ambidex
    >>> with ambidex.start_run("churn-tuning") as run:              # doctest: +SKIP
    ...     run.log_params({"C": 0.5})
    ...     for epoch, loss in enumerate(losses):
    ...         run.log_metric("loss", loss, step=epoch)
    ...     run.log_model("churn_py", "out/model")                  # a folder with model.json

The R package offers the same verbs (amb_start_run, amb_log_params, ...) through the CLI.
"""
from __future__ import annotations

from pathlib import Path

from .lineage import collect_lineage
from .workspace import Workspace

__all__ = ["TrackedRun", "start_run"]


class TrackedRun:
    """One experiment run; ends FINISHED on normal exit of ``with``, FAILED on an exception."""

    def __init__(self, ws: Workspace, run_id: str):
        self.ws = ws
        self.run_id = run_id
        self._reg = ws.registry()

    def log_params(self, params: dict) -> None:
        self._reg.log_params(self.run_id, params)

    def log_param(self, key: str, value) -> None:
        self.log_params({key: value})

    def log_metric(self, name: str, value: float | None, step: int = 0) -> None:
        self._reg.log_metrics(self.run_id, [{"name": name, "value": value, "step": step}])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        self._reg.log_metrics(self.run_id, [{"name": k, "value": v, "step": step} for k, v in metrics.items()])

    def log_batch(self, params: dict | None = None, metrics: dict | None = None, step: int = 0) -> None:
        """Params and metrics in one transaction."""
        self._reg.log_batch(self.run_id, params=params or {},
                            metrics=[{"name": k, "value": v, "step": step} for k, v in (metrics or {}).items()])

    def log_artifact(self, path: str | Path, kind: str = "file") -> str:
        return self._reg.log_artifact(self.run_id, Path(path), kind=kind)

    def log_model(self, name: str, folder: str | Path):
        """Register the model folder (model.json + payload) as a new version, produced by this run."""
        lineage = self._reg.get_run(self.run_id).get("lineage") or {}
        return self._reg.register_model_version(
            name, Path(folder), run_id=self.run_id,
            lineage={"run_id": self.run_id, "stage": None, "data_version": None, "window": None,
                     "git_commit": lineage.get("git_commit"), "git_dirty": lineage.get("git_dirty"),
                     "config_hash": None})

    def end(self, status: str = "FINISHED") -> None:
        self._reg.end_run(self.run_id, status)

    def __enter__(self) -> "TrackedRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type else "FINISHED")


def start_run(experiment: str, *, project: str | Path | None = None) -> TrackedRun:
    """Start an experiment run in the project holding ``project`` (default: the current directory)."""
    ws = Workspace.find(Path(project) if project else Path.cwd())
    lineage = collect_lineage(ws.root, config_path=None, scripts={}, r_version=None)
    run_id = ws.registry().start_run("experiment", experiment=experiment, lineage=lineage)
    return TrackedRun(ws, run_id)
