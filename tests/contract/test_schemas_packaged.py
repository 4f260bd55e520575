"""The schemas shipped inside the wheel (python/ambidex_stage/schemas) are byte-identical to contract/schemas."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "contract" / "schemas"
PACKAGED = ROOT / "python" / "ambidex_stage" / "schemas"


def test_packaged_schemas_are_current():
    src = sorted(p.name for p in SOURCE.glob("*.json"))
    assert src == ["context.v1.json", "model.v1.json", "result.v1.json", "table.v1.json"]
    assert sorted(p.name for p in PACKAGED.glob("*.json")) == src, \
        "Run: cp contract/schemas/*.json python/ambidex_stage/schemas/"
    for name in src:
        assert (PACKAGED / name).read_bytes() == (SOURCE / name).read_bytes(), \
            f"{name} is stale. Run: cp contract/schemas/*.json python/ambidex_stage/schemas/"


_ALLOWED = {"$schema", "$id", "$comment", "$defs", "$ref", "title", "description", "type", "required", "properties",
            "additionalProperties", "items", "enum", "const", "minimum", "pattern", "minLength", "oneOf"}


def _keywords(node, path="#"):
    if isinstance(node, dict):
        for k, v in node.items():
            if path.endswith("/properties") or path.endswith("/$defs"):
                yield from _keywords(v, f"{path}/{k}")
                continue
            yield k, path
            if k == "$ref":
                assert v.startswith("#/$defs/"), f"{path}: $ref {v} must point into #/$defs"
            yield from _keywords(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _keywords(v, f"{path}/{i}")


@pytest.mark.parametrize("name", ["context", "result", "model", "table"])
def test_schemas_use_only_the_subset_the_r_validator_knows(name):
    schema = json.loads((SOURCE / f"{name}.v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    used = {k for k, _ in _keywords(schema) if not k.startswith("x_")}
    assert used <= _ALLOWED, used - _ALLOWED
