"""Golden fixtures across languages: each SDK's model folder is validated by the other language and
scored through the orchestrator in its own runtime; a Python model is scored from R and vice versa."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ambidex.scoring import score_model
from ambidex_stage.manifest import read_manifest
from ambidex_stage.tables import read_table

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "contract" / "golden"


@pytest.mark.parametrize("lang", ["python", "r"])
def test_golden_scored_through_orchestrator_matches_expected(lang, tmp_path, monkeypatch):
    from tests.conftest import R_LIBRARY

    monkeypatch.setenv("AMBIDEX_R_LIBS", str(R_LIBRARY))
    folder = GOLDEN / lang
    manifest = read_manifest(folder / "model")  # the Python SDK validates both languages' manifests
    assert manifest["runtime"]["language"] == lang
    out = tmp_path / "pred.csv"
    result = score_model(folder / "model", folder / "input.csv", out, project_root=tmp_path, work_dir=tmp_path / "w")
    assert result["status"] == "ok"
    got, expected = read_table(out), read_table(folder / "expected.csv")
    assert list(got["prediction"].astype(str)) == list(expected["prediction"].astype(str))
    tol = manifest["golden"]["tolerance"]
    np.testing.assert_allclose(got["score"].to_numpy(float), expected["score"].to_numpy(float), rtol=0, atol=tol)


def test_r_manifest_read_by_python_keeps_unknown_fields(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN / "r" / "model", folder)
    doc = json.loads((folder / "model.json").read_text())
    doc["x_future_field"] = {"kept": True}
    (folder / "model.json").write_text(json.dumps(doc))
    assert read_manifest(folder)["x_future_field"] == {"kept": True}


def _register(project, name, lang):
    """Register the golden model of ``lang`` under ``name`` through the CLI (an experiment run)."""
    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", *args, "--json"], cwd=project,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    run_id = cli("runs", "start", "--experiment", "golden")["run_id"]
    cli("runs", "log-model", run_id, name, str(GOLDEN / lang / "model"))
    cli("runs", "end", run_id)


def test_python_model_scored_from_r_and_r_model_scored_from_python(project):
    _register(project, "churn", "python")
    _register(project, "churn-r", "r")
    # From R: the R package calls the CLI, which scores the Python model in Python.
    cli = json.dumps([sys.executable, "-m", "ambidex.cli.main"])
    script = f"""
        options(ambidex.cli = jsonlite::fromJSON('{cli}'))
        p <- ambidex::amb_model_score("churn", "{GOLDEN / 'python' / 'input.csv'}", "from_r.csv")
        e <- ambidex::read_typed_table("{GOLDEN / 'python' / 'expected.csv'}")
        stopifnot(identical(as.character(p$prediction), as.character(e$prediction)),
                  max(abs(p$score - e$score)) <= 1e-9)
        cat("R scored the Python model:", nrow(p), "rows\\n")
    """
    from tests.conftest import R_LIBRARY

    env = {**os.environ, "R_LIBS": str(R_LIBRARY)}
    proc = subprocess.run(["Rscript", "--vanilla", "-e", script], cwd=project, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "R scored the Python model: 20 rows" in proc.stdout
    # From Python: the R model, scored in R.
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "models", "score", "churn-r",
                           "--input", str(GOLDEN / "r" / "input.csv"), "--output", "from_py.csv", "--json"],
                          cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got, expected = read_table(project / "from_py.csv"), read_table(GOLDEN / "r" / "expected.csv")
    np.testing.assert_allclose(got["score"].to_numpy(float), expected["score"].to_numpy(float), atol=1e-9, rtol=0)
