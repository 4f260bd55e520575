"""The CLI: exit codes, the --json error envelope, documentation that cannot go stale."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ambidex.cli.docs import render_markdown, walk_commands
from ambidex.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", *args], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def test_every_command_has_help_with_an_example():
    missing = [full for full, cmd in walk_commands()
               if not isinstance(cmd, click.Group) and "Example:" not in (cmd.help or "")]
    assert missing == []


def test_cli_reference_is_up_to_date():
    ref = REPO / "docs" / "reference" / "cli.md"
    assert ref.read_text() == render_markdown(), "Regenerate: python -m ambidex.cli.docs > docs/reference/cli.md"


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from ambidex.cli.main import main; "
            "rc = main(['--help']); "
            "heavy = [m for m in ('pandas', 'sqlalchemy', 'numpy', 'sklearn', 'pydantic') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_config_error_exits_2_naming_file_and_line(project):
    (project / "config").mkdir()
    (project / "config" / "bad.yaml").write_text("version: 1\nname: bad\nstages:\n  - name: a\n    lang: julia\n    script: x.jl\n")
    rc, out, err = run_cli("validate", "config/bad.yaml", cwd=project)
    assert rc == 2
    assert "bad.yaml:5" in err and "julia" in err
    assert not (project / ".ambidex").exists()


def test_json_error_envelope_on_stderr(project):
    rc, out, err = run_cli("models", "show", "nope:1", "--json", cwd=project)
    assert rc == 1
    env = json.loads(err.strip().splitlines()[-1])
    assert env["code"] == "registry.not_found" and env["exit_code"] == 1 and "nope" in env["message"]
    assert out == ""


def test_usage_error_exits_2(project):
    rc, out, err = run_cli("models", "show", "m:notanumber", cwd=project)
    assert rc == 2


def test_outside_a_project_says_to_init(tmp_path):
    rc, out, err = run_cli("models", "list", cwd=tmp_path)
    assert rc == 2 and "ambidex init" in err


def test_tracking_round_trip_through_cli(project):
    rc, out, _ = run_cli("runs", "start", "--experiment", "tuning", "--json", cwd=project)
    assert rc == 0
    run_id = json.loads(out)["run_id"]
    assert run_cli("runs", "log-params", run_id, "alpha=0.5", "method=glm", "--json", cwd=project)[0] == 0
    for step, loss in enumerate([0.9, 0.7, 0.6]):
        assert run_cli("runs", "log-metrics", run_id, f"loss={loss}", "--step", str(step), cwd=project)[0] == 0
    assert run_cli("runs", "end", run_id, cwd=project)[0] == 0
    rc, out, _ = run_cli("runs", "show", run_id, "--json", cwd=project)
    run = json.loads(out)
    assert run["status"] == "FINISHED" and run["experiment"] == "tuning"
    assert [m["value"] for m in sorted(run["metrics"], key=lambda m: m["step"])] == [0.9, 0.7, 0.6]
    assert run["params"]["alpha"] in (0.5, "0.5")
    rc, out, _ = run_cli("runs", "list", "--experiment", "tuning", "--json", cwd=project)
    assert [r["id"] for r in json.loads(out)] == [run_id]


def test_metric_value_must_be_numeric(project):
    rc, out, _ = run_cli("runs", "start", "--experiment", "t", "--json", cwd=project)
    run_id = json.loads(out)["run_id"]
    rc, out, err = run_cli("runs", "log-metrics", run_id, "auc=high", cwd=project)
    assert rc == 2 and "auc" in err and "high" in err


def test_python_tracking_api(project):
    import ambidex

    with ambidex.start_run("notebook", project=project) as run:
        run.log_params({"C": 1.0})
        run.log_metric("auc", 0.8, step=1)
    rc, out, _ = run_cli("runs", "list", "--experiment", "notebook", "--json", cwd=project)
    assert json.loads(out)[0]["status"] == "FINISHED"


def test_main_returns_exit_code_without_exiting(project):
    assert main(["models", "list", "--json"]) == 0
