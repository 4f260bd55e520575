"""lineage: what a run was made from (git commit and dirty flag, file hashes, interpreter versions)."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["git_state", "file_sha256", "python_packages", "collect_lineage"]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed (the artifact store's one hashing routine)."""
    from .artifacts import sha256_file

    return sha256_file(path)[0]


def git_state(root: Path) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` for the git work tree holding ``root``."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def python_packages(names: tuple[str, ...] = ("ambidex", "numpy", "pandas", "scikit-learn", "joblib", "SQLAlchemy")) -> dict:
    """Installed versions of the named distributions, read from metadata (never inferred)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def collect_lineage(root: Path, *, config_path: Path | None, scripts: dict[str, Path], r_version: str | None) -> dict:
    """Everything a run records about its origin: git, config and script hashes, versions."""
    git = git_state(root)
    return {
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "config_path": str(config_path.relative_to(root)) if config_path else None,
        "config_hash": file_sha256(config_path) if config_path else None,
        "scripts": {stage: {"path": str(p.relative_to(root)), "sha256": file_sha256(p)} for stage, p in scripts.items()},
        "python_version": platform.python_version(),
        "r_version": r_version,
        "packages": python_packages(),
    }
