"""_files: the one way the SDK writes a file: complete-or-absent (temporary file, fsync, rename)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_open"]


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", *, durable: bool = True, **kw):
    """Open a temporary file beside ``path``; on a clean exit flush, fsync and rename it over ``path``.
    On an exception nothing is left behind and ``path`` keeps its old content (or stays absent).
    ``durable=False`` skips the fsync, for a file that only lives while another process reads it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
