"""result: write a stage's result.json (SPEC 2.2) atomically, validated against result.v1.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ._files import atomic_open
from .validate import CONTRACT_VERSION, orchestrator_validated, validate_document

__all__ = ["write_result", "dump_json_atomic"]


def dump_json_atomic(path, doc) -> Path:
    """Write ``doc`` as UTF-8 JSON (2-space indent, no NaN) to a temporary file, fsync, then os.replace."""
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")
    return path


def _finite(v):
    if v is None or isinstance(v, bool):
        return v if v is None else float(v)
    v = float(v)
    return v if math.isfinite(v) else None


def write_result(output_dir, status: str, metrics=(), params=None, outputs=None, artifacts=(), error=None,
                 warnings=None) -> Path:
    """Write ``<output_dir>/result.json``; returns its path.

    ``metrics`` is a list of ``{"name", "value", "step"}`` (a non-finite value is written as null);
    ``error`` an ``{"code", "message", "hint"}`` dict, required when ``status`` is ``"error"``;
    ``warnings`` (optional) the messages of the warnings the stage raised.

    >>> import tempfile
    >>> write_result(tempfile.mkdtemp(), "ok").name
    'result.json'
    """
    doc = {
        "contract_version": CONTRACT_VERSION,
        "status": status,
        "metrics": [{"name": str(m["name"]), "value": _finite(m.get("value")), "step": int(m.get("step", 0))}
                    for m in metrics],
        "params": dict(params or {}),
        "outputs": dict(outputs or {}),
        "artifacts": [dict(a) for a in artifacts],
        "error": error,
    }
    if warnings is not None:
        doc["warnings"] = [str(w) for w in warnings]
    if not orchestrator_validated():  # else the orchestrator validates it when it reads it
        validate_document("result", doc, source="result.json")
    return dump_json_atomic(Path(output_dir) / "result.json", doc)
