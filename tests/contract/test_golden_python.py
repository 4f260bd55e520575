"""The checked-in golden folder contract/golden/python validates, verifies its hashes and reproduces expected.csv."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ambidex_stage.builtins import check_golden, predict
from ambidex_stage.manifest import file_digest, read_manifest
from ambidex_stage.tables import read_table

GOLDEN = Path(__file__).resolve().parents[2] / "contract" / "golden" / "python"


def test_golden_manifest_validates_and_is_self_verifying():
    m = read_manifest(GOLDEN / "model")
    assert m["runtime"]["format"] == "joblib" and m["files"]
    for rel, rec in m["files"].items():
        assert file_digest(GOLDEN / "model" / rel) == rec


def test_golden_predictions_equal_expected_within_tolerance():
    m = read_manifest(GOLDEN / "model")
    inp = read_table(GOLDEN / "input.csv")
    assert inp["x1"].isna().any()  # a missing value crosses the boundary
    got = predict(GOLDEN / "model", inp)
    exp = read_table(GOLDEN / "expected.csv")
    assert got["prediction"].astype(str).tolist() == exp["prediction"].astype(str).tolist()
    np.testing.assert_allclose(got["score"], exp["score"], rtol=0, atol=m["golden"]["tolerance"])


def test_golden_examples_in_the_manifest_pass():
    assert check_golden(GOLDEN / "model") == []
