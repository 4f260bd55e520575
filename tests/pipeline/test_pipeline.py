"""End-to-end: stages in both languages run as processes, are measured, and register models."""
from __future__ import annotations

import json

import pytest

from ambidex.errors import ConfigError, StageError
from ambidex.pipeline import run_pipeline
from tests.helpers import write

TABLE_STAGE = """\
    import numpy as np
    import pandas as pd

    def main(ctx):
        rng = np.random.default_rng(ctx.seed)
        n = 400
        x1 = rng.normal(size=n)
        plan = rng.choice(["a", "b", "c"], n)
        y = np.where(x1 + (plan == "a") + rng.normal(scale=0.5, size=n) > 0.5, "yes", "no")
        ctx.write_table("customers", pd.DataFrame({
            "customer_id": np.arange(n, dtype="int64"),
            "x1": x1,
            "tenure": rng.integers(0, 60, n).astype("int64"),
            "plan": pd.Categorical(plan, categories=["a", "b", "c"]),
            "churned": pd.Categorical(y, categories=["no", "yes"]),
        }))
        ctx.log_metric("n_rows", n)
    """


def _pipeline(project, stages_yaml: str, name="p"):
    return write(project / "config" / f"{name}.yaml", "version: 1\nname: " + name + "\nstages:\n" + stages_yaml)


def _base(project):
    write(project / "python" / "make.py", TABLE_STAGE)
    return """\
  - name: make
    lang: python
    script: python/make.py
    outputs:
      customers: {kind: table}
"""


def test_python_and_r_models_train_register_and_score(workspace, project):
    write(project / "r" / "describe.R", """\
        main <- function(ctx) {
          d <- ambidex::ctx_input_table(ctx, "customers")
          stopifnot(is.factor(d$plan), identical(levels(d$plan), c("a", "b", "c")), is.integer(d$tenure))
          ambidex::ctx_log_metric(ctx, "mean_x1", mean(d$x1))
          ambidex::ctx_write_table(ctx, "summary", data.frame(n = nrow(d)))
        }
        """)
    path = _pipeline(project, _base(project) + """\
  - name: describe
    lang: r
    script: r/describe.R
    inputs: {customers: make.customers}
    outputs: {summary: {kind: table}}
  - name: train_py
    lang: python
    builtin: train
    params: {target: churned, exclude: [customer_id], estimator: logistic_regression, positive: "yes"}
    inputs: {train: make.customers}
    outputs: {model: {kind: model, register: m-py}}
  - name: train_r
    lang: r
    builtin: train
    params: {target: churned, exclude: [customer_id], method: glm, positive: "yes"}
    inputs: {train: make.customers}
    outputs: {model: {kind: model, register: m-r}}
  - name: score_r
    lang: r
    builtin: score
    params: {keep: [customer_id]}
    inputs: {data: make.customers, model: train_r.model}
    outputs: {predictions: {kind: table}}
  - name: score_py
    lang: python
    builtin: score
    params: {keep: [customer_id]}
    inputs: {data: make.customers, model: train_py.model}
    outputs: {predictions: {kind: table}}
""")
    summary = run_pipeline(workspace, path)
    assert summary.status == "FINISHED"
    assert {(m["name"], m["version"], m["language"]) for m in summary.models} == {("m-py", 1, "python"), ("m-r", 1, "r")}
    for st in summary.stages:
        assert st["status"] == "FINISHED" and st["wall_seconds"] > 0 and st["peak_rss_mb"] > 1
    reg = workspace.registry()
    run = reg.get_run(summary.run_id)
    assert run["status"] == "FINISHED"
    assert {sr["stage"] for sr in run["stage_runs"]} == {"make", "describe", "train_py", "train_r", "score_r", "score_py"}
    assert all(sr["cpu_seconds"] > 0 for sr in run["stage_runs"])
    metric_names = {(m["stage"], m["name"]) for m in run["metrics"]}
    assert ("make", "n_rows") in metric_names and ("describe", "mean_x1") in metric_names
    assert ("train_r", "auc") in metric_names and ("train_py", "auc") in metric_names
    # lineage recorded on the run and in both manifests
    for name in ("m-py", "m-r"):
        mv = reg.get_model_version(name)
        lin = mv.manifest["lineage"]
        assert lin["run_id"] == summary.run_id and lin["config_hash"]
        assert mv.manifest["resources"]["train_wall_seconds"] > 0
        assert abs(sum(mv.manifest["feature_importance"]["values"].values()) - 1) < 1e-9
    # both score stages: one prediction per input row, in order, keys carried
    from ambidex_stage.tables import read_table
    for stage in ("score_r", "score_py"):
        pred = read_table(summary.outputs[f"{stage}.predictions"]["path"])
        assert len(pred) == 400 and list(pred["customer_id"]) == list(range(400))
        assert pred["score"].between(0, 1).all()


@pytest.mark.parametrize("lang,body,code", [
    ("r", 'main <- function(ctx) stop("boom from R")\n', "stage.failed"),
    ("python", "def main(ctx):\n    raise RuntimeError('boom from Python')\n", "stage.failed"),
    ("python", "import os\n\ndef main(ctx):\n    os._exit(0)\n", "stage.no_result"),
    ("r", 'main <- function(ctx) { cat("partial\\n"); quit(status = 0) }\n', "stage.no_result"),
    ("python", "import os\n\ndef main(ctx):\n    os._exit(7)\n", "stage.crashed"),
])
def test_crashing_stage_fails_run_and_registers_nothing(workspace, project, lang, body, code):
    ext = "R" if lang == "r" else "py"
    write(project / "s" / f"bad.{ext}", body)
    path = _pipeline(project, _base(project) + f"""\
  - name: train_py
    lang: python
    builtin: train
    params: {{target: churned, exclude: [customer_id], estimator: logistic_regression}}
    inputs: {{train: make.customers}}
    outputs: {{model: {{kind: model, register: m-py}}}}
  - name: bad
    lang: {lang}
    script: s/bad.{ext}
""")
    with pytest.raises(StageError) as err:
        run_pipeline(workspace, path)
    e = err.value
    assert e.code == code
    assert "Stage 'bad'" in e.message
    if "boom" in body:
        assert "boom" in e.message  # the tail of stderr / the stage's own error
    reg = workspace.registry()
    assert reg.list_models() == []
    runs = reg.list_runs()
    assert runs[0]["status"] == "FAILED"


def test_timeout_kills_stage(workspace, project):
    write(project / "s" / "slow.py", "import time\n\ndef main(ctx):\n    time.sleep(60)\n")
    path = _pipeline(project, """\
  - name: slow
    lang: python
    script: s/slow.py
    timeout: 1
""")
    with pytest.raises(StageError) as err:
        run_pipeline(workspace, path)
    assert err.value.code == "stage.timeout"
    assert "timeout of 1 s" in err.value.message


def test_invalid_config_creates_nothing(project):
    from ambidex.workspace import Workspace

    path = _pipeline(project, """\
  - name: a
    lang: julia
    script: nope.jl
""")
    ws = Workspace.find(project)
    with pytest.raises(ConfigError) as err:
        run_pipeline(ws, path)
    assert "p.yaml" in str(err.value) and "julia" in str(err.value)
    assert not (project / ".ambidex").exists()


def test_rpy2_runner_gives_identical_results_to_rscript(workspace, project):
    write(project / "r" / "stats.R", """\
        main <- function(ctx) {
          d <- ambidex::ctx_input_table(ctx, "customers")
          by_plan <- aggregate(x1 ~ plan, data = d, FUN = mean)
          ambidex::ctx_write_table(ctx, "by_plan", by_plan)
          ambidex::ctx_log_metric(ctx, "sum_tenure", sum(d$tenure))
        }
        """)
    stages = _base(project)
    for runner in ("rscript", "rpy2"):
        stages += f"""\
  - name: stats_{runner}
    lang: r
    runner: {runner}
    script: r/stats.R
    inputs: {{customers: make.customers}}
    outputs: {{by_plan: {{kind: table}}}}
"""
    summary = run_pipeline(workspace, _pipeline(project, stages))
    a = summary.outputs["stats_rscript.by_plan"]["path"]
    b = summary.outputs["stats_rpy2.by_plan"]["path"]
    assert open(a, "rb").read() == open(b, "rb").read()
    run = workspace.registry().get_run(summary.run_id)
    vals = {m["stage"]: m["value"] for m in run["metrics"] if m["name"] == "sum_tenure"}
    assert vals["stats_rscript"] == vals["stats_rpy2"]
    runners = {sr["stage"]: sr["runner"] for sr in run["stage_runs"]}
    assert runners["stats_rpy2"] == "rpy2" and runners["stats_rscript"] == "rscript"


def test_rpy2_stop_is_reported_not_fatal(workspace, project):
    write(project / "r" / "bad.R", 'main <- function(ctx) stop("rpy2 boom")\n')
    path = _pipeline(project, """\
  - name: bad
    lang: r
    runner: rpy2
    script: r/bad.R
""")
    with pytest.raises(StageError) as err:
        run_pipeline(workspace, path)
    assert "rpy2 boom" in err.value.message


def test_missing_rscript_says_what_to_install(workspace, project):
    (project / "ambidex.yaml").write_text((project / "ambidex.yaml").read_text() + "r:\n  rscript: /nonexistent/Rscript\n")
    from ambidex.workspace import Workspace

    ws = Workspace.find(project)
    write(project / "r" / "x.R", "main <- function(ctx) NULL\n")
    path = _pipeline(project, "  - name: x\n    lang: r\n    script: r/x.R\n")
    with pytest.raises(StageError) as err:
        run_pipeline(ws, path)
    assert err.value.code == "stage.runtime_missing"
    assert "apt-get install r-base-core" in str(err.value)
    ws.close()


def test_model_input_from_registry(workspace, project):
    path = _pipeline(project, _base(project) + """\
  - name: train_py
    lang: python
    builtin: train
    params: {target: churned, exclude: [customer_id], estimator: logistic_regression}
    inputs: {train: make.customers}
    outputs: {model: {kind: model, register: m-py}}
""")
    run_pipeline(workspace, path)
    path2 = _pipeline(project, _base(project) + """\
  - name: rescore
    lang: python
    builtin: score
    inputs: {data: make.customers, model: "model:m-py:1"}
    outputs: {predictions: {kind: table}}
""", name="q")
    summary = run_pipeline(workspace, path2)
    ctx = json.loads((workspace.runs_dir / summary.run_id / "rescore" / "context.json").read_text())
    assert ".ambidex/artifacts" in ctx["inputs"]["model"]["path"]


def test_python_stage_after_rpy2_stage_still_starts(workspace, project):
    """rpy2 changes LD_LIBRARY_PATH when it starts R; later child processes must not inherit it."""
    import os
    import subprocess
    import sys

    write(project / "r" / "noop.R", 'main <- function(ctx) ambidex::ctx_log_metric(ctx, "one", 1)\n')
    path = _pipeline(project, """\
  - name: r_inproc
    lang: r
    runner: rpy2
    script: r/noop.R
""" + _base(project).replace("  - name: make", "  - name: make", 1))
    summary = run_pipeline(workspace, path)
    assert [s["status"] for s in summary.stages] == ["FINISHED", "FINISHED"]
    assert "/usr/lib/R/lib" not in os.environ.get("LD_LIBRARY_PATH", "")
    assert subprocess.run([sys.executable, "-c", "import ssl"]).returncode == 0


def test_second_invocation_exits_75_naming_the_holder(workspace, project):
    import subprocess
    import sys

    from ambidex.errors import LockedError
    from ambidex.locks import pipeline_lock

    write(project / "s" / "ok.py", "def main(ctx):\n    pass\n")
    path = _pipeline(project, "  - name: ok\n    lang: python\n    script: s/ok.py\n")
    with pipeline_lock(workspace.state_dir, "p", run_id="holder-run"):
        with pytest.raises(LockedError) as err:
            run_pipeline(workspace, path)
        assert "holder-run" in err.value.message and err.value.exit_code == 75
        proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "run", str(path)], cwd=project,
                              capture_output=True, text=True)
        assert proc.returncode == 75 and "already running" in proc.stderr
    assert run_pipeline(workspace, path).status == "FINISHED"  # released: the next run goes ahead


def test_run_in_cron_like_environment(project):
    """env -i PATH=/usr/bin:/bin, no LANG: the run works (stages get C.UTF-8 from the runner)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import R_LIBRARY

    write(project / "s" / "ok.py", "def main(ctx):\n    ctx.log_metric('x', 1)\n")
    write(project / "r" / "ok.R", 'main <- function(ctx) ambidex::ctx_log_metric(ctx, "y", 2)\n')
    path = _pipeline(project, "  - name: ok\n    lang: python\n    script: s/ok.py\n"
                              "  - name: okr\n    lang: r\n    script: r/ok.R\n")
    ambidex = Path(sys.executable).with_name("ambidex")
    env = {"PATH": "/usr/bin:/bin", "AMBIDEX_R_LIBS": str(R_LIBRARY), "HOME": os.environ.get("HOME", "/root")}
    proc = subprocess.run([str(ambidex), "run", str(path), "--json"], cwd=project, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_orchestrator_validates_result_json_even_when_stages_trust_it(workspace, project):
    """Stages skip jsonschema (AMBIDEX_VALIDATED=1); the orchestrator still refuses a bad result.json."""
    from ambidex.errors import ContractError

    write(project / "s" / "bad_result.py", """\
        import json, os

        def main(ctx):
            (ctx.output_dir / "result.json").write_text(json.dumps(
                {"contract_version": 1, "status": "ok", "metrics": "not a list"}))
            os._exit(0)
        """)
    path = _pipeline(project, "  - name: bad\n    lang: python\n    script: s/bad_result.py\n")
    with pytest.raises(ContractError) as err:
        run_pipeline(workspace, path)
    assert err.value.code == "contract.invalid_document" and "Invalid result document" in err.value.message
    assert workspace.registry().list_runs()[0]["status"] == "FAILED"
