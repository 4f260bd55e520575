"""scoring: score a typed table with a model folder in the runtime that produced it (one process per batch).

The model's language decides the runtime: a Python model is scored by ``ambidex_stage``, an R
model by ``Rscript`` and the R package, so an R model and a Python model are served alike.

    >>> out = score_folder(ws, Path("contract/golden/r/model"), Path("contract/golden/r/input.csv"),
    ...                    Path("/tmp/pred.csv"))                      # doctest: +SKIP
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from .errors import ContractError
from .runners import StageLaunch, run_stage
from .workspace import Workspace

__all__ = ["score_folder", "score_model", "parts_dir"]


def score_folder(ws: Workspace, model_dir: Path, input_csv: Path, output_csv: Path, *,
                 keep: list[str] | None = None, timeout: float = 3600, runner: str | None = None) -> dict:
    """Score ``input_csv`` (typed table) with the model in ``model_dir`` within a project; write
    ``output_csv`` and its schema sidecar. Returns the stage's result.json. Raises StageError."""
    r_settings = getattr(ws.settings, "r", None)
    return score_model(model_dir, input_csv, output_csv, project_root=ws.root,
                       work_dir=ws.state_dir / "scoring", keep=keep, timeout=timeout,
                       rscript=(r_settings.rscript if r_settings else "Rscript"), runner=runner)


def parts_dir(output_csv: Path) -> Path:
    """Where a streaming score stage hands on its predictions chunk by chunk: ``<output>.parts/``.

    A caller that wants the predictions while the model is still scoring (capture overlapping the
    scoring process) creates this folder before it calls :func:`score_model`; a stage that streams
    (the Python built-in) then writes ``part-000000.csv``, ``part-000001.csv``, ... there, each
    appearing by rename when complete; a stage that does not (R) leaves it empty, and only the
    output file counts. The caller removes the folder when done."""
    output_csv = Path(output_csv)
    return output_csv.with_name(output_csv.stem + ".parts")


def score_model(model_dir: Path, input_csv: Path, output_csv: Path, *, project_root: Path, work_dir: Path,
                keep: list[str] | None = None, chunk_size: int | None = None, timeout: float = 3600,
                rscript: str = "Rscript", runner: str | None = None) -> dict:
    """Like :func:`score_folder` without a Workspace: one fresh process of the model's own runtime scores
    ``input_csv`` (its schema sidecar is passed inline, as context.v1 requires), streaming in ``chunk_size``
    rows; writes ``output_csv`` and its sidecar; returns result.json. Raises StageError / ContractError."""
    from .pipeline import write_context

    manifest = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    lang = (manifest.get("runtime") or {}).get("language")
    if lang not in ("python", "r"):
        raise ContractError(f"Model at {model_dir} has runtime language {lang!r}; expected 'python' or 'r'.",
                            code="contract.invalid_manifest", hint="Re-train it with an ambidex SDK.")
    run_id = uuid.uuid4().hex
    stage_dir = Path(work_dir) / run_id
    out_dir = stage_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    input_csv = Path(input_csv).resolve()
    schema = json.loads(input_csv.with_name(input_csv.stem + ".schema.json").read_text(encoding="utf-8"))
    params: dict = {"keep": list(keep or [])}
    if chunk_size:
        params["chunk_size"] = int(chunk_size)
    if parts_dir(output_csv).is_dir():
        params["parts_dir"] = str(parts_dir(output_csv).resolve())
    context = {
        "contract_version": 1, "run_id": run_id, "pipeline": "deploy-score", "stage": "score",
        "lang": lang, "project_root": str(project_root), "output_dir": str(out_dir), "params": params,
        "inputs": {"data": {"kind": "table", "path": str(input_csv), "schema": schema},
                   "model": {"kind": "model", "path": str(Path(model_dir).resolve())}},
        "outputs": {"predictions": {"kind": "table", "path": str(out_dir / "predictions.csv")}},
        "window": None, "seed": 0,
    }
    write_context(stage_dir / "context.json", context)
    launch = StageLaunch(
        stage="score", lang=lang, runner=("subprocess" if lang == "python" else (runner or "rscript")),
        script=None, builtin="score", context_path=stage_dir / "context.json", stage_dir=stage_dir,
        project_root=Path(project_root), timeout=timeout, rscript=rscript)
    outcome = run_stage(launch)
    if outcome.error:
        raise outcome.error  # the stage dir stays, with its logs
    from .pipeline import check_outputs

    check_outputs("score", outcome, context["outputs"])  # result.json and the table honour the contract
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out_dir / "predictions.csv", output_csv)
    shutil.move(out_dir / "predictions.schema.json", output_csv.with_name(output_csv.stem + ".schema.json"))
    shutil.rmtree(stage_dir, ignore_errors=True)
    return outcome.result
