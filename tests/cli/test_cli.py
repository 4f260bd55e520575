"""The CLI: exit codes, the --json error envelope, documentation that cannot go stale."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ambidex.cli.docs import REFERENCE, walk_commands
from ambidex.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", *args], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def test_every_command_has_help_with_an_example():
    missing = [full for full, cmd in walk_commands()
               if not isinstance(cmd, click.Group) and "Example:" not in (cmd.help or "")]
    assert missing == []


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_is_up_to_date(name):
    ref = REPO / "docs" / "reference" / name
    assert ref.read_text() == REFERENCE[name](), "Regenerate: python -m ambidex.cli.docs --write docs/reference"


def test_error_reference_lists_codes_raised_by_the_cli():
    from ambidex.cli.docs import collect_error_codes

    codes = collect_error_codes()  # codes given at raise sites (class defaults such as lock.held are not)
    for code in ("registry.not_found", "contract.missing_column", "check.verify_failed", "stage.runtime_missing"):
        assert code in codes, code
    text = (REPO / "docs" / "reference" / "errors.md").read_text()
    assert "| `registry.not_found` | 1 |" in text and "| `stage.runtime_missing` | 2 |" in text


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from ambidex.cli.main import main; "
            "rc = main(['--help']); "
            "heavy = [m for m in ('pandas', 'sqlalchemy', 'numpy', 'sklearn', 'pydantic') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _leave(code: str, tmp_path, **kw):
    script = tmp_path / "leave.py"
    script.write_text("import atexit, os, sys, threading, time\nfrom ambidex.cli.main import leave\n" + code)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, **kw)


def test_leave_runs_atexit_flushes_and_keeps_the_exit_code(tmp_path):
    # the console script ends with os._exit; what a normal exit would do first still happens
    out = _leave("atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
                 "sys.stdout.write('x' * 200_000)\nleave(3)\n", tmp_path)
    assert out.returncode == 3
    assert out.stdout == "x" * 200_000
    assert out.stderr == "atexit ran\n"


def test_leave_closes_sqlite_so_its_wal_is_checkpointed(tmp_path):
    db = tmp_path / "r.db"
    out = _leave(f"from ambidex.db import connect\ne = connect('sqlite:///{db}')\n"
                 "with e.begin() as c:\n    c.exec_driver_sql('CREATE TABLE t (x INTEGER)')\n"
                 "    c.exec_driver_sql('INSERT INTO t VALUES (7)')\n"
                 "assert os.path.exists(e.url.database + '-wal')\nleave(0)\n", tmp_path)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "r.db-wal").exists()  # the last connection closed: WAL folded into the file
    import sqlite3

    with sqlite3.connect(db) as con:
        assert con.execute("SELECT x FROM t").fetchall() == [(7,)]


def test_leave_waits_for_a_running_thread_the_usual_way(tmp_path):
    out = _leave("def late():\n    time.sleep(0.3)\n    print('thread done', flush=True)\n"
                 "threading.Thread(target=late).start()\nleave(5)\n", tmp_path)
    assert out.returncode == 5
    assert out.stdout == "thread done\n"


def test_leave_reports_an_unwritable_stdout_as_python_does(tmp_path):
    out = _leave("import io\nclass Closed(io.StringIO):\n    def flush(self):\n        raise BrokenPipeError(32, 'EPIPE')\n"
                 "sys.stdout = Closed()\nleave(0)\n", tmp_path)
    assert out.returncode == 120


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


def test_database_unreachable_is_an_envelope_without_secrets(project, monkeypatch):
    import os

    env = {**os.environ, "AMBIDEX_REGISTRY_URL": "postgresql+psycopg://ml:s3cr3tpw@127.0.0.1:1/none?connect_timeout=2"}
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "models", "list", "--json"],
                          capture_output=True, text=True, cwd=project, env=env)
    assert proc.returncode == 1
    envelope = json.loads(proc.stderr.strip().splitlines()[-1])
    assert envelope["code"] == "registry.unavailable" and "Traceback" not in proc.stderr
    assert "s3cr3tpw" not in proc.stderr


def test_disk_full_is_reported_and_rolls_back(project):
    """SQLite's 'database or disk is full' (simulated with max_page_count) is a clear error."""
    import sqlalchemy as sa

    from ambidex.cli.main import database_error

    eng = sa.create_engine("sqlite://")
    with eng.connect() as c:
        c.exec_driver_sql("CREATE TABLE t (x TEXT)")
        c.exec_driver_sql("PRAGMA max_page_count = 2")
        with pytest.raises(sa.exc.OperationalError) as raw:
            c.exec_driver_sql("INSERT INTO t VALUES (?)", (("x" * 100_000),))
    err = database_error(raw.value)
    assert err.code == "registry.disk_full" and "nothing changed" in err.message


def test_models_list_shows_version_counts(project):
    rc, out, _ = run_cli("runs", "start", "--experiment", "g", "--json", cwd=project)
    run_id = json.loads(out)["run_id"]
    assert run_cli("runs", "log-model", run_id, "churn", str(REPO / "contract/golden/python/model"), cwd=project)[0] == 0
    rc, out, _ = run_cli("models", "list", cwd=project)
    header, row = out.strip().splitlines()[:2]
    assert header.split()[:3] == ["NAME", "LATEST_VERSION", "N_VERSIONS"] and row.split()[:3] == ["churn", "1", "1"]


@pytest.mark.parametrize("lang,name", [("python", "churn"), ("r", "churn-r")])
def test_contract_violation_exits_3_with_its_code(project, lang, name):
    from ambidex_stage.tables import read_table, write_table

    from tests.conftest import R_LIBRARY

    rc, out, _ = run_cli("runs", "start", "--experiment", "g", "--json", cwd=project)
    run_id = json.loads(out)["run_id"]
    assert run_cli("runs", "log-model", run_id, name, str(REPO / f"contract/golden/{lang}/model"), cwd=project)[0] == 0
    df = read_table(REPO / f"contract/golden/{lang}/input.csv")
    write_table(df.drop(columns=[df.columns[0]]), project / "bad.csv")
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "models", "score", name, "--input", "bad.csv",
                           "--output", "out.csv", "--json"], capture_output=True, text=True, cwd=project,
                          env={**__import__("os").environ, "AMBIDEX_R_LIBS": str(R_LIBRARY)})
    assert proc.returncode == 3, proc.stderr
    envelope = json.loads(proc.stderr.strip().splitlines()[-1])
    assert envelope["code"] == "contract.missing_column" and df.columns[0] in envelope["message"]
    assert "Traceback" not in envelope["message"]
    assert not (project / "out.csv").exists()


def test_reference_does_not_depend_on_what_ran_before(capsys):
    # click keeps a command's help option from the first context that asks; the reference renders each
    # command under its groups' contexts, as a run does, so running commands first changes nothing
    from ambidex.cli.docs import render_markdown

    before = render_markdown()
    assert main(["deploy", "history", "-h"]) == 0
    assert "-h, --help" in capsys.readouterr().out
    assert render_markdown() == before and "-h, --help" in before
