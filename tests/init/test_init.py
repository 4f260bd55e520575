"""`ambidex init` writes a project that `ambidex run` accepts unchanged."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ambidex.errors import UsageError
from ambidex.scaffold import scaffold_project


def test_init_then_run_unchanged(tmp_path, monkeypatch):
    from tests.conftest import R_LIBRARY

    target = tmp_path / "newproj"
    env = {**os.environ, "AMBIDEX_R_LIBS": str(R_LIBRARY)}
    rc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "init", str(target)], env=env).returncode
    assert rc == 0
    for rel in ("ambidex.yaml", "config/example.yaml", "python/prepare.py", "r/describe.R", "sql/example.sql"):
        assert (target / rel).is_file(), rel
    out = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "run", "config/example.yaml", "--json"],
                         cwd=target, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "FINISHED"
    assert {m["name"] for m in summary["models"]} == {"example-py", "example-r"}


def test_init_refuses_to_overwrite(tmp_path):
    scaffold_project(tmp_path / "p")
    with pytest.raises(UsageError) as err:
        scaffold_project(tmp_path / "p")
    assert "ambidex.yaml" in err.value.message and "nothing was written" in err.value.message


def test_init_dry_run_writes_nothing(tmp_path):
    files = scaffold_project(tmp_path / "p", dry_run=True)
    assert "ambidex.yaml" in files and not (tmp_path / "p").exists()
