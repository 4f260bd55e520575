"""``ambidex verify`` through the real CLI: 0 on a clean store, exit 4 (check.verify_failed) naming a corrupted file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "contract" / "golden" / "python" / "model"


def run_cli(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def _register(project) -> dict:
    rc, out, err = run_cli("runs", "start", "--experiment", "verify", "--json", cwd=project)
    assert rc == 0, err
    run_id = json.loads(out)["run_id"]
    rc, out, err = run_cli("runs", "log-model", run_id, "churn", str(MODEL), "--json", cwd=project)
    assert rc == 0, err
    assert json.loads(out) == {"name": "churn", "version": 1, "status": "READY"}
    rc, out, err = run_cli("models", "show", "churn:1", "--json", cwd=project)
    return json.loads(out)


def test_verify_passes_then_fails_with_exit_4_after_corruption(project):
    mv = _register(project)
    rc, out, err = run_cli("verify", "--json", cwd=project)
    assert rc == 0, err
    assert json.loads(out) == {"ok": True, "problems": []}
    rc, out, _ = run_cli("verify", cwd=project)
    assert rc == 0 and "All READY model versions verified." in out

    payload_name = mv["manifest"]["runtime"]["payload"]
    payload = project / ".ambidex" / "artifacts" / mv["path"] / payload_name
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    payload.chmod(0o640)
    payload.write_bytes(bytes(data))

    rc, out, err = run_cli("verify", "--json", cwd=project)
    assert rc == 4
    report = json.loads(out)
    assert report["ok"] is False and len(report["problems"]) == 1
    problem = report["problems"][0]
    assert problem["name"] == "churn" and problem["version"] == 1
    assert problem["path"] == f"{mv['path']}/{payload_name}" and problem["problem"] == "sha256"
    assert problem["expected"] == mv["manifest"]["files"][payload_name]["sha256"] != problem["actual"]
    env = json.loads(err.strip().splitlines()[-1])
    assert env["code"] == "check.verify_failed" and env["exit_code"] == 4 and "1 problem" in env["message"]

    rc, out, err = run_cli("verify", cwd=project)  # the human form: a table naming model and file, same exit code
    assert rc == 4 and "[check.verify_failed]" in err
    header, row = out.strip().splitlines()
    assert header.split() == ["MODEL", "VERSION", "FILE", "PROBLEM"]
    assert row.split() == ["churn", "1", f"{mv['path']}/{payload_name}", "sha256"]


def test_verify_reports_a_missing_file(project):
    mv = _register(project)
    (project / ".ambidex" / "artifacts" / mv["path"] / mv["manifest"]["runtime"]["payload"]).unlink()
    rc, out, err = run_cli("verify", "--json", cwd=project)
    assert rc == 4
    assert json.loads(err.strip().splitlines()[-1])["code"] == "check.verify_failed"
    problems = json.loads(out)["problems"]
    assert [(p["name"], p["problem"]) for p in problems] == [("churn", "missing")]
