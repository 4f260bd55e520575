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

__all__ = ["score_folder"]


def score_folder(ws: Workspace, model_dir: Path, input_csv: Path, output_csv: Path, *,
                 keep: list[str] | None = None, timeout: float = 3600, runner: str | None = None) -> dict:
    """Score ``input_csv`` (typed table) with the model in ``model_dir``; write ``output_csv`` and its
    schema sidecar. Returns the stage's result.json. Raises StageError naming the failure."""
    from .pipeline import write_context

    manifest = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    lang = (manifest.get("runtime") or {}).get("language")
    if lang not in ("python", "r"):
        raise ContractError(f"Model at {model_dir} has runtime language {lang!r}; expected 'python' or 'r'.",
                            code="contract.invalid_manifest", hint="Re-train it with an ambidex SDK.")
    run_id = uuid.uuid4().hex
    stage_dir = ws.state_dir / "scoring" / run_id
    out_dir = stage_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    input_csv = Path(input_csv).resolve()
    context = {
        "contract_version": 1, "run_id": run_id, "pipeline": "adhoc-score", "stage": "score",
        "lang": lang, "project_root": str(ws.root), "output_dir": str(out_dir),
        "params": {"keep": list(keep or [])},
        "inputs": {"data": {"kind": "table", "path": str(input_csv),
                            "schema": str(input_csv.with_name(input_csv.stem + ".schema.json"))},
                   "model": {"kind": "model", "path": str(Path(model_dir).resolve())}},
        "outputs": {"predictions": {"kind": "table", "path": str(out_dir / "predictions.csv")}},
        "window": None, "seed": 0,
    }
    write_context(stage_dir / "context.json", context)
    r_settings = getattr(ws.settings, "r", None)
    launch = StageLaunch(
        stage="score", lang=lang, runner=("subprocess" if lang == "python" else (runner or "rscript")),
        script=None, builtin="score", context_path=stage_dir / "context.json", stage_dir=stage_dir,
        project_root=ws.root, timeout=timeout,
        rscript=(r_settings.rscript if r_settings else "Rscript"),
    )
    outcome = run_stage(launch)
    if outcome.error:
        raise outcome.error
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_dir / "predictions.csv", output_csv)
    shutil.copyfile(out_dir / "predictions.schema.json", output_csv.with_name(output_csv.stem + ".schema.json"))
    return outcome.result
