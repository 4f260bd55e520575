"""workspace: a project's folders and databases on disk, and opening its registry.

    >>> ws = Workspace.find(Path.cwd())        # doctest: +SKIP
    >>> reg = ws.registry()                    # migrated, ready to write   # doctest: +SKIP
"""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import ConfigError

__all__ = ["Workspace", "current_actor", "find_project_root", "PROJECT_FILE"]

PROJECT_FILE = "ambidex.yaml"


def current_actor() -> str:
    """The operating-system user: the identity recorded for every change."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds ambidex.yaml.

    >>> find_project_root(Path("/srv/churn/config"))                 # doctest: +SKIP
    PosixPath('/srv/churn')
    """
    here = Path(start).resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ConfigError(f"No {PROJECT_FILE} in {here} or any folder above it.", code="config.not_found",
                      hint="Run 'ambidex init' to create a project, or cd into one.")


@dataclass
class Workspace:
    """A project root with its validated ``ambidex.yaml``."""

    root: Path
    settings: object  # ambidex.config.Project
    _registry: object = field(default=None, repr=False)

    @classmethod
    def find(cls, start: Path) -> "Workspace":
        """The project holding ``start`` (walking up to ``ambidex.yaml``)."""
        from .config import load_project

        root = find_project_root(Path(start).resolve())
        return cls(root=root, settings=load_project(root))

    def _path(self, value: str | os.PathLike) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.root / p

    @property
    def state_dir(self) -> Path:
        return self._path(self.settings.state)

    @property
    def rscript(self) -> str:
        """The Rscript the project's R stages run with (``r.rscript``; ``Rscript`` on PATH by default)."""
        return getattr(getattr(self.settings, "r", None), "rscript", None) or "Rscript"

    @property
    def r_libs(self) -> tuple[str, ...]:
        """The project's own R library folders (``r.libs``), absolute, put before ambidex's in R_LIBS."""
        return tuple(str(self._path(p)) for p in (getattr(getattr(self.settings, "r", None), "libs", None) or []))

    @property
    def artifacts_dir(self) -> Path:
        return self._path(self.settings.artifacts)

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @cached_property
    def registry_url(self) -> str:
        """The registry URL: ``$AMBIDEX_REGISTRY_URL``, the env var named in config, or the config value;
        a relative SQLite path is resolved against the project root."""
        url = os.environ.get("AMBIDEX_REGISTRY_URL")
        env_name = getattr(self.settings, "registry_url_env", None)
        if not url and env_name:
            url = os.environ.get(env_name)
            if not url:
                from .errors import ConfigError

                raise ConfigError(
                    f"{self.root / 'ambidex.yaml'}: registry_url_env names ${env_name}, which is not set.",
                    code="config.env_missing",
                    hint=f"Export {env_name}=<SQLAlchemy URL> (for example in the crontab line), "
                         "or remove registry_url_env to use the default SQLite registry.")
        url = url or self.settings.registry
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
            url = prefix + str(self.root / url[len(prefix):])
        return url

    def registry(self, *, actor: str | None = None):
        """The migrated registry of this project (opened once per Workspace)."""
        if self._registry is None:
            from .artifacts import ArtifactStore
            from .db import connect, migrate
            from .registry import Registry

            engine = connect(self.registry_url)
            migrate(engine)
            self._registry = Registry(engine, ArtifactStore(self.artifacts_dir), actor=actor or current_actor())
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.engine.dispose()
            self._registry = None
