"""scaffold: write a new project from the packaged template (ambidex.yaml, config/, python/, r/, sql/)."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from .errors import UsageError

__all__ = ["scaffold_project"]

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def _template_files():
    root = resources.files("ambidex") / "templates" / "project"

    def walk(node, prefix=""):
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                yield from walk(child, rel + "/")
            elif child.name != "__pycache__":
                yield rel, child.read_text(encoding="utf-8")
    yield from walk(root)


def scaffold_project(directory: Path, *, name: str | None = None, dry_run: bool = False) -> list[str]:
    """Create ``directory`` with a runnable example project; refuse to overwrite any file.

    >>> scaffold_project(Path("/tmp/demo-project"), dry_run=True)[:1]   # doctest: +SKIP
    ['README.md']
    """
    directory = Path(directory)
    name = name or re.sub(r"[^a-z0-9_-]", "-", directory.resolve().name.lower()).strip("-") or "project"
    if not _NAME.match(name):
        raise UsageError(f"Project name '{name}' is not allowed.",
                         hint="Use lower-case letters, digits, '-' and '_', starting with a letter (--name).")
    files = list(_template_files())
    clashes = [rel for rel, _ in files if (directory / rel).exists()]
    if clashes:
        raise UsageError(f"{directory} already has {', '.join(clashes[:5])}; nothing was written.",
                         hint="Choose an empty or new directory.")
    if not dry_run:
        for rel, text in files:
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.replace("{project}", name), encoding="utf-8")
    return [rel for rel, _ in files]
