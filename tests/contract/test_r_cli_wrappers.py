"""The R package's CLI wrappers against the REAL ``ambidex`` CLI (not a fake): the JSON shapes they parse."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import R_LIBRARY, REPO

pytestmark = pytest.mark.r

R_CODE = r"""
options(ambidex.cli = c(Sys.getenv("AMB_PY"), "-m", "ambidex.cli.main"))
suppressPackageStartupMessages(library(ambidex))
models <- amb_models_list()
runs <- amb_runs_list("tuning")
run <- amb_run_show(Sys.getenv("AMB_RUN"))
model <- amb_model_show("churn", 1)
missing <- tryCatch(amb_model_show("nope", 1), error = function(e) e)
out <- list(
  models = list(names = names(models), class = class(models), n = nrow(models), name = models$name,
                latest_version = models$latest_version, latest_version_type = typeof(models$latest_version),
                n_versions = models$n_versions, language = models$language, task = models$task),
  runs = list(names = names(runs), id = runs$id, kind = runs$kind, status = runs$status),
  run = list(id = run$id, status = run$status, kind = run$kind, experiment = run$experiment,
             params = run$params, metric_names = vapply(run$metrics, function(m) m$name, ""),
             metric_values = vapply(run$metrics, function(m) m$value, 0),
             model_versions = lapply(run$model_versions, function(m) list(name = m$name, version = m$version))),
  model = list(name = model$name, version = model$version, status = model$status),
  missing = list(class = class(missing), code = missing$code, exit_code = missing$exit_code)
)
cat(jsonlite::toJSON(out, auto_unbox = TRUE, null = "null"))
"""


def cli(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", *args, "--json"], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_r_wrappers_parse_the_real_cli(project):
    run_id = cli("runs", "start", "--experiment", "tuning", cwd=project)["run_id"]
    cli("runs", "log-params", run_id, "alpha=0.5", cwd=project)
    cli("runs", "log-metrics", run_id, "auc=0.81", cwd=project)
    mv = cli("runs", "log-model", run_id, "churn", str(REPO / "contract" / "golden" / "python" / "model"), cwd=project)
    assert mv == {"name": "churn", "version": 1, "status": "READY"}
    cli("runs", "end", run_id, cwd=project)

    env = {**os.environ, "R_LIBS": str(R_LIBRARY), "AMB_PY": sys.executable, "AMB_RUN": run_id}
    proc = subprocess.run(["Rscript", "--vanilla", "-e", R_CODE], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])

    m = got["models"]
    assert m["class"] == "data.frame" and m["n"] == 1
    assert {"name", "latest_version", "language", "task", "created_at"} <= set(m["names"])
    assert m["name"] == "churn" and m["latest_version"] == 1 and m["latest_version_type"] == "integer"
    assert m["language"] == "python" and m["task"] == "binary_classification"

    r = got["runs"]
    assert {"id", "kind", "status", "experiment"} <= set(r["names"])
    assert r["id"] == run_id and r["kind"] == "experiment" and r["status"] == "FINISHED"

    run = got["run"]
    assert run["id"] == run_id and run["status"] == "FINISHED" and run["experiment"] == "tuning"
    assert run["params"] == {"alpha": 0.5}
    assert run["metric_names"] == "auc" and run["metric_values"] == 0.81
    assert run["model_versions"] == [{"name": "churn", "version": 1}]

    assert got["model"] == {"name": "churn", "version": 1, "status": "READY"}
    assert "ambidex_registry_not_found" in got["missing"]["class"]
    assert got["missing"]["code"] == "registry.not_found" and got["missing"]["exit_code"] == 1
