"""Every contract vector (contract/vectors/*.json) through validate_document: same verdict and code as recorded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ambidex_stage.errors import ContractError
from ambidex_stage.validate import KINDS, validate_document

VECTORS = Path(__file__).resolve().parents[2] / "contract" / "vectors"


def _cases():
    for kind in KINDS:
        data = json.loads((VECTORS / f"{kind}.json").read_text(encoding="utf-8"))
        assert data["schema"] == kind
        for case in data["cases"]:
            yield pytest.param(kind, case, id=f"{kind}: {case['name']}")


@pytest.mark.parametrize("kind,case", list(_cases()))
def test_vector(kind, case):
    if case["valid"]:
        assert case["error"] is None
        validate_document(kind, case["document"])
    else:
        with pytest.raises(ContractError) as ei:
            validate_document(kind, case["document"])
        assert ei.value.code == case["error"], ei.value.message


@pytest.mark.parametrize("kind", KINDS)
def test_each_file_covers_the_basics(kind):
    cases = json.loads((VECTORS / f"{kind}.json").read_text(encoding="utf-8"))["cases"]
    codes = {c["error"] for c in cases}
    assert any(c["valid"] for c in cases)
    assert "contract.version_unsupported" in codes
    assert ("contract.invalid_manifest" if kind == "model" else "contract.invalid_document") in codes
    assert len({c["name"] for c in cases}) == len(cases)


def test_version_is_checked_before_the_schema():
    doc = {"contract_version": 2}  # would also fail the schema
    with pytest.raises(ContractError) as ei:
        validate_document("result", doc)
    assert ei.value.code == "contract.version_unsupported"
    assert "pip install -U ambidex" in ei.value.hint


def test_invalid_document_names_the_path():
    with pytest.raises(ContractError, match="seed"):
        validate_document("context", {"contract_version": 1, "run_id": "0" * 32, "pipeline": "p", "stage": "s",
                                      "lang": "python", "project_root": "/p", "output_dir": "/p/o", "params": {},
                                      "inputs": {}, "outputs": {}, "window": None, "seed": "x"})
