"""Labels and captured predictions set-based: record_label_columns, captured_columns, record_labels by window."""
from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from ambidex import deploytables as T
from ambidex.capture import predictions_with_labels, record_labels
from ambidex.capture_columns import captured_columns, record_label_columns
from ambidex.deploy import Member
from ambidex.errors import DataError

from .conftest import register
from .test_capture import W1, W2, make_scorer, write_input


def labels_of(engine):
    with engine.connect() as c:
        return sorted(tuple(r) for r in c.execute(sa.select(T.labels.c.entity_key, T.labels.c.label,
                                                            T.labels.c.window_start)))


@pytest.fixture
def scored(any_engine, store, py_model_dir, tmp_path, clock):
    register(any_engine, store, py_model_dir, "churn", times=2)
    deps, scorer = make_scorer(any_engine, store, tmp_path, clock)
    deps.create("d", [Member("churn", 1), Member("churn", 2, "shadow")], entity_key="customer_id")
    scorer.score("d", W1, write_input(tmp_path / "in.csv", n=1200))
    return any_engine


def test_label_columns_replace_count_matches_and_fetch_column_wise(scored):
    engine = scored
    keys = list(range(1, 1101)) + [999_001, 999_002]  # 1100 captured keys (more than one IN chunk) + 2 unknown
    labels = ["yes" if k % 3 else "no" for k in keys]
    labels[5] = None
    assert record_label_columns(engine, "d", W1, keys, labels, deployment="d") == (1102, 1100)
    # given again: replaced, not duplicated; other windows untouched
    record_labels(engine, "d", [{"entity_key": 1, "window_start": W2[0], "window_end": W2[1], "label": "w2"}])
    assert record_label_columns(engine, "d", W1, [1, 2], ["no", "no"], deployment="d") == (2, 1100)
    got = dict((k, lab) for k, lab, w in labels_of(engine) if w == W1[0])
    assert len(got) == 1102 and got["1"] == "no" and got["2"] == "no" and got["6"] is None and got["4"] == "yes"
    assert ("1", "w2", W2[0]) in labels_of(engine)

    cols = captured_columns(engine, "d", W1[0], ("entity_key", "score", "label", "prediction"))
    rows = predictions_with_labels(engine, "d", W1[0])
    assert sorted(cols) == [("churn", 1), ("churn", 2)]
    for (name, version), c in cols.items():
        mine = [r for r in rows if (r["model"], r["version"]) == (name, version)]
        assert c["score"].dtype == np.float64 and len(c["score"]) == 1200
        assert c["entity_key"].tolist() == [r["entity_key"] for r in mine]
        assert c["label"].tolist() == [r["label"] for r in mine]
        assert c["prediction"].tolist() == [r["prediction"] for r in mine]
        assert np.allclose(c["score"], [r["score"] for r in mine])
    assert captured_columns(engine, "d", W2[0]) == {}


def test_a_check_that_raises_stores_no_label(scored):
    engine = scored

    def check(n, matched):
        if n and not matched:
            raise DataError(f"{n} labels match nothing", code="data.labels_unmatched")

    with pytest.raises(DataError):
        record_label_columns(engine, "d", W1, ["x1", "x2"], ["yes", "no"], deployment="d", check=check)
    assert labels_of(engine) == []
    assert record_label_columns(engine, "d", W1, [], [], deployment="d", check=check) == (0, 0)
