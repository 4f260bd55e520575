"""A Python interpreter started ahead of a built-in stage, so the stage does not wait for its imports.

``python -m ambidex_stage.warm`` imports what the built-in stages (``--builtin train|score``) use
(numpy, pandas, pyarrow, the scikit-learn parts of the default pipeline), then waits for one JSON
line on stdin::

    {"argv": ["--builtin", "score"], "cwd": "/project", "env": {"AMBIDEX_CONTEXT": "..."},
     "stdout": ".../stdout.log", "stderr": ".../stderr.log"}

and becomes that stage: its stdout and stderr go to the two files, it changes to ``cwd`` (which
is also ``sys.path[0]``, as ``python -m`` started there has it), adds ``env`` to its environment
and runs ``ambidex_stage.run`` with ``argv``; its exit status is the stage's. End of input
without a line (the orchestrator did not need it) exits 0 at once.

Only built-in stages run here: a project's own script may set environment variables (thread
counts, say) before its first import of numpy, which an interpreter that imported numpy already
would ignore, so scripts always get a fresh interpreter (``ambidex.runners``).
"""
from __future__ import annotations

import importlib
import json
import os
import sys


# what the built-in stages import (the scikit-learn parts of the default pipeline included)
_PRELOAD = ("numpy", "pandas", "pyarrow.csv", "ambidex_stage.builtins", "ambidex_stage.tables", "ambidex_stage.run",
            "sklearn.compose", "sklearn.impute", "sklearn.pipeline", "sklearn.preprocessing")


def _preload() -> None:
    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the stage imports what it needs itself and reports what is missing
            continue


def main() -> int:
    _preload()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(job["cwd"])
    sys.path[0] = os.getcwd()
    os.environ.update(job["env"])
    from .run import main as run_main

    return run_main(job["argv"])


if __name__ == "__main__":
    from ._process import leave, tune_gc

    tune_gc()  # only built-in stages run here (ambidex_stage._process)
    leave(main())
