"""ambidex: MLOps on one server where R and Python models are equal citizens.

The public Python API is small; everything else is reached through the ``ambidex`` CLI.

    >>> import ambidex
    >>> with ambidex.start_run("churn-tuning") as run:     # doctest: +SKIP
    ...     run.log_metric("auc", 0.84)
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "start_run", "TrackedRun", "Workspace", "run_pipeline", "AmbidexError"]

# Imports are lazy so that `ambidex --help` stays fast: nothing heavy loads until used.
_LAZY = {
    "start_run": ("ambidex.tracking", "start_run"),
    "TrackedRun": ("ambidex.tracking", "TrackedRun"),
    "Workspace": ("ambidex.workspace", "Workspace"),
    "run_pipeline": ("ambidex.pipeline", "run_pipeline"),
    "AmbidexError": ("ambidex.errors", "AmbidexError"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ambidex' has no attribute {name!r}")
