"""Shared fixtures: each test gets its own project folder, registry and environment."""
from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
R_LIBRARY = Path(os.environ.get("AMBIDEX_R_LIBS") or Path(sys.prefix) / "R-library")


def r_available() -> bool:
    return shutil.which("Rscript") is not None and (R_LIBRARY / "ambidex").is_dir()


# R is part of this project's setup (make setup installs it); a missing R is a broken setup,
# so R tests fail loudly instead of skipping.
requires_r = pytest.mark.r


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty ambidex project with its own SQLite registry; cwd is its root."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "ambidex.yaml").write_text(textwrap.dedent("""\
        version: 1
        project: testproj
        registry: sqlite:///.ambidex/registry.db
        artifacts: .ambidex/artifacts
        state: .ambidex
        """))
    monkeypatch.chdir(root)
    monkeypatch.setenv("AMBIDEX_R_LIBS", str(R_LIBRARY))
    monkeypatch.delenv("AMBIDEX_REGISTRY_URL", raising=False)
    return root


@pytest.fixture
def workspace(project):
    from ambidex.workspace import Workspace

    ws = Workspace.find(project)
    yield ws
    ws.close()
