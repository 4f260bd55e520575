"""manifest: read, validate and write a model folder's model.json (SPEC 4), and verify its payload before loading it.

``load_payload`` is the single code path that deserialises a Python model: resolve the payload
inside the folder, check the format allowlist, check its sha256 against ``files`` (when the folder
is registered), and only then ``joblib.load`` (reliability promise 3).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .errors import ArtifactError, ContractError
from .validate import validate_document

__all__ = ["read_manifest", "write_manifest", "normalize_importance", "file_digest", "fill_files",
           "load_payload", "ALLOWED_FORMATS"]

ALLOWED_FORMATS = ("joblib", "rds")
_HINT = "Rewrite the model folder with an ambidex SDK, or fix model.json (contract/schemas/model.v1.json)."


def read_manifest(folder) -> dict:
    """Read ``<folder>/model.json``: version check, schema validation, semantic checks.

    Unknown fields are kept. Refuses (``contract.invalid_manifest``) a manifest whose ``files``
    names a file that is not there, whose payload is missing, or whose importance does not sum to 1.
    """
    folder = Path(folder)
    path = folder / "model.json"
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ContractError(f"{folder} has no model.json.", code="contract.invalid_manifest",
                            hint="A model folder is written by a training stage; check the path.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ContractError(f"{path} is not valid JSON: {e}.", code="contract.invalid_manifest", hint=_HINT) from None
    validate_document("model", doc, source=str(path))
    _check_semantics(folder, doc)
    return doc


def _check_semantics(folder: Path, doc: dict) -> None:
    def bad(msg):
        return ContractError(f"{folder / 'model.json'}: {msg}.", code="contract.invalid_manifest", hint=_HINT)

    for rel in (doc.get("files") or {}):
        if not _inside(folder, rel).is_file():
            raise bad(f"files names {rel!r}, which is not in the folder")
    if not _inside(folder, doc["runtime"]["payload"]).is_file():
        raise bad(f"the payload {doc['runtime']['payload']!r} is not in the folder")
    values = (doc.get("feature_importance") or {}).get("values") or {}
    if values and abs(sum(values.values()) - 1.0) > 1e-6:
        raise bad(f"feature_importance values sum to {sum(values.values())!r}, not 1")
    names = [c["name"] for c in doc["signature"]["inputs"]]
    if len(set(names)) != len(names):
        raise bad("signature.inputs names a column more than once")


def _inside(folder: Path, rel: str) -> Path:
    p = (folder / rel).resolve()
    root = folder.resolve()
    if p != root and root not in p.parents:
        raise ArtifactError(f"{rel!r} points outside the model folder {folder}.", code="artifact.path_escape",
                            hint="Model files must live inside the folder; refusing to read it.")
    return p


def write_manifest(folder, manifest: dict) -> Path:
    """Validate ``manifest`` and write it as ``<folder>/model.json`` atomically."""
    from .result import dump_json_atomic

    validate_document("model", manifest, source="(manifest being written)")
    return dump_json_atomic(Path(folder) / "model.json", manifest)


def normalize_importance(values: dict) -> dict:
    """drift.md section 5: ``w = max(imp, 0) / sum``, or uniform ``1/p`` when every value is <= 0.

    >>> normalize_importance({"a": 3.0, "b": -1.0, "c": 1.0})
    {'a': 0.75, 'b': 0.0, 'c': 0.25}
    >>> normalize_importance({"a": -1.0, "b": 0.0})
    {'a': 0.5, 'b': 0.5}
    """
    clipped = {k: max(float(v), 0.0) if v is not None and math.isfinite(float(v)) else 0.0 for k, v in values.items()}
    total = sum(clipped.values())
    if not clipped:
        return {}
    if total <= 0:
        return {k: 1.0 / len(clipped) for k in clipped}
    return {k: v / total for k, v in clipped.items()}


def file_digest(path) -> dict:
    """``{"sha256", "size"}`` of one file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"sha256": h.hexdigest(), "size": size}


def fill_files(folder, manifest: dict) -> dict:
    """Set ``manifest["files"]`` to the digest of every file in ``folder`` except model.json."""
    folder = Path(folder)
    manifest["files"] = {p.relative_to(folder).as_posix(): file_digest(p)
                         for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "model.json"
                         and not p.name.startswith(".")}
    return manifest


def load_payload(folder, manifest: dict | None = None):
    """Verify and deserialise the payload of a Python model folder.

    Order: manifest validated -> format allowlist -> payload inside the folder -> sha256 against
    ``files`` (when present; a registered folder that does not list its payload is refused) ->
    ``joblib.load``. Nothing is unpickled before every check passed.
    """
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    rt = manifest["runtime"]
    if rt["format"] not in ALLOWED_FORMATS:
        raise ArtifactError(f"Payload format {rt['format']!r} is not allowed.", code="artifact.format_not_allowed",
                            hint=f"Allowed formats: {', '.join(ALLOWED_FORMATS)}.")
    if rt["format"] != "joblib" or rt["language"] != "python":
        raise ArtifactError(f"{folder} holds a {rt['language']} model ({rt['format']}); the Python runtime loads "
                            "joblib payloads only.", code="artifact.format_not_allowed",
                            hint="Score it with the runtime that produced it (SPEC 4.1): the R package.")
    path = _inside(folder, rt["payload"])
    files = manifest.get("files")
    if files:
        rec = files.get(rt["payload"])
        if rec is None:
            raise ArtifactError(f"{folder}: files does not record the payload {rt['payload']!r}; refusing to load it.",
                                code="artifact.hash_mismatch", hint="Re-register the model version.")
        got = file_digest(path)
        if got["sha256"] != rec["sha256"] or got["size"] != rec["size"]:
            raise ArtifactError(
                f"{path} has sha256 {got['sha256']} ({got['size']} bytes) but model.json records "
                f"{rec['sha256']} ({rec['size']} bytes); the file was changed after registration.",
                code="artifact.hash_mismatch",
                hint="Do not edit registered model folders; restore it from the registry or retrain. It was not loaded.")
    import joblib

    return joblib.load(path)
