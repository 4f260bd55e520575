"""validate: check a contract document (context, result, model, table) against contract/schemas.

The version check comes first: a document whose ``contract_version`` is a number greater than
``CONTRACT_VERSION`` is refused with ``contract.version_unsupported`` before any schema check.
Then the document is validated against ``<kind>.v1.json``; a failure is
``contract.invalid_manifest`` for ``model`` and ``contract.invalid_document`` otherwise.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from .errors import ContractError

__all__ = ["CONTRACT_VERSION", "KINDS", "schema_dir", "load_schema", "validate_document", "check_version"]

CONTRACT_VERSION = 1
KINDS = ("context", "result", "model", "table")
_UPGRADE_HINT = ("Upgrade the reader: 'pip install -U ambidex', or reinstall the R package from r/.")


def schema_dir() -> Path:
    """The directory holding ``<kind>.v1.json``.

    In a repository checkout this is ``contract/schemas`` (the single source); from an installed
    wheel it is the copy shipped in ``ambidex_stage/schemas`` (kept identical by a test).
    ``AMBIDEX_SCHEMA_DIR`` overrides both.
    """
    env = os.environ.get("AMBIDEX_SCHEMA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    repo = here.parent.parent / "contract" / "schemas"
    if (repo / "model.v1.json").is_file():
        return repo
    return here / "schemas"


@lru_cache(maxsize=None)
def load_schema(kind: str) -> dict:
    """The parsed JSON Schema of one document kind (``context``, ``result``, ``model``, ``table``)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown document kind {kind!r}; expected one of {', '.join(KINDS)}.")
    with open(schema_dir() / f"{kind}.v1.json", encoding="utf-8") as f:
        return json.load(f)


def _failure_code(kind: str) -> str:
    return "contract.invalid_manifest" if kind == "model" else "contract.invalid_document"


def check_version(kind: str, doc, source: str | None = None) -> None:
    """Refuse a document written by a newer contract (``contract.version_unsupported``)."""
    if not isinstance(doc, dict):
        return
    v = doc.get("contract_version")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > CONTRACT_VERSION:
        where = f" in {source}" if source else ""
        raise ContractError(
            f"The {kind} document{where} has contract_version {v!r}; this SDK implements version "
            f"{CONTRACT_VERSION}.", code="contract.version_unsupported", hint=_UPGRADE_HINT)


@lru_cache(maxsize=None)
def _validator(kind: str):
    import jsonschema

    cls = jsonschema.Draft202012Validator
    return cls(load_schema(kind))


def orchestrator_validated() -> bool:
    """True inside a stage started by the orchestrator, which validates context.json before writing
    it and every result.json after reading it (AMBIDEX_VALIDATED=1): the stage then checks only the
    contract version, and skips loading jsonschema (~45 ms of a ~110 ms stage start)."""
    return os.environ.get("AMBIDEX_VALIDATED") == "1"


def validate_document(kind: str, doc, source: str | None = None) -> None:
    """Raise :class:`ContractError` unless ``doc`` is a valid ``kind`` document of this contract.

    >>> validate_document("table", {"contract_version": 1, "row_count": 0, "columns": []})
    """
    check_version(kind, doc, source)
    v = _validator(kind)
    errors = sorted(v.iter_errors(doc), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        e = errors[0]
        path = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        where = f" {source}" if source else ""
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ContractError(
            f"Invalid {kind} document{where} at {path}: {_short(e)}{more}.",
            code=_failure_code(kind),
            hint=f"Fix the document to match contract/schemas/{kind}.v1.json (contract/SPEC.md).")


def _short(err) -> str:
    msg = err.message
    return msg if len(msg) <= 300 else msg[:297] + "..."
