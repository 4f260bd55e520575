"""Built-in train and score stages through a real Context in temporary directories."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ambidex_stage import builtins
from ambidex_stage.errors import ArtifactError, ContractError
from ambidex_stage.manifest import fill_files, read_manifest, write_manifest
from ambidex_stage.run import run_stage
from ambidex_stage.tables import read_table

from .conftest import churn_frame, regression_frame


def train_model(make_ctx, df, **params):
    ctx = make_ctx("train", params=params, inputs={"data": df}, outputs={"model": "model"})
    assert run_stage(ctx, builtin="train") == 0, (ctx.output_dir / "result.json").read_text()
    return ctx.output_path("model")


def score_ctx(make_ctx, folder, df, **params):
    return make_ctx("score", params=params, inputs={"data": df, "model": folder}, outputs={"predictions": "table"})


@pytest.fixture
def classifier(make_ctx):
    return train_model(make_ctx, churn_frame(), target="churn", exclude=["id"])


def test_train_classifier_writes_a_valid_manifest(classifier):
    m = read_manifest(classifier)
    assert m["task"] == "binary_classification"
    assert m["target"] == {"name": "churn", "type": "category", "levels": ["No", "Yes"], "positive": "Yes"}
    assert [c["name"] for c in m["signature"]["inputs"]] == ["x1", "x2", "plan"]
    assert m["signature"]["inputs"][2]["levels"] == ["basic", "plus", "pro"]
    assert set(m["metrics"]) >= {"auc", "accuracy", "log_loss", "n_train", "n_valid"} and m["metrics"]["auc"] > 0.6
    w = m["feature_importance"]["values"]
    assert set(w) == {"x1", "x2", "plan"} and abs(sum(w.values()) - 1) < 1e-12 and min(w.values()) >= 0
    assert max(w, key=w.get) == "x1"
    import sklearn
    assert m["runtime"]["packages"]["scikit-learn"] == sklearn.__version__
    assert m["version"] is None and m["golden"]["tolerance"] == 1e-9 and len(m["golden"]["positive"]) == 5
    assert [n["error"] for n in m["golden"]["negative"]] == [
        "contract.missing_column", "contract.type_mismatch", "contract.unseen_level"]
    assert builtins.check_golden(classifier) == []


def test_score_classifier_keeps_rows_order_and_key(make_ctx, classifier):
    data = churn_frame(57, seed=3).drop(columns=["churn"])
    ctx = score_ctx(make_ctx, classifier, data, keep=["id"], chunk_size=10)
    assert run_stage(ctx, builtin="score") == 0, (ctx.output_dir / "result.json").read_text()
    out = read_table(ctx.output_path("predictions"))
    assert list(out.columns) == ["id", "prediction", "score"] and len(out) == 57
    assert out["id"].tolist() == data["id"].tolist()
    assert list(out["prediction"].cat.categories) == ["No", "Yes"]
    res = json.loads((ctx.output_dir / "result.json").read_text())
    metrics = {m["name"]: m["value"] for m in res["metrics"]}
    assert metrics == {"n_rows": 57, "extra_columns": 1}  # id is an extra column (kept, but not a feature)
    direct = builtins.predict(classifier, data)
    np.testing.assert_array_equal(out["score"].to_numpy(), direct["score"].to_numpy())


def test_reordered_columns_score_identically(classifier):
    data = churn_frame(30, seed=4).drop(columns=["churn"])
    a = builtins.predict(classifier, data)
    b = builtins.predict(classifier, data[["plan", "id", "x2", "x1"]])
    pd.testing.assert_frame_equal(a, b)


def test_missing_values_are_scored_not_dropped(classifier):
    data = churn_frame(10, seed=5).drop(columns=["churn"])
    data.loc[2, "x1"] = np.nan
    data["plan"] = data["plan"].astype(object)
    data.loc[3, "plan"] = None
    out = builtins.predict(classifier, data)
    assert len(out) == 10 and out["score"].notna().all()


def test_missing_column_is_named_and_nothing_is_written(make_ctx, classifier):
    ctx = score_ctx(make_ctx, classifier, churn_frame(20).drop(columns=["churn", "x2"]))
    assert run_stage(ctx, builtin="score") == 1
    res = json.loads((ctx.output_dir / "result.json").read_text())
    assert res["error"]["code"] == "contract.missing_column" and "'x2'" in res["error"]["message"]
    assert not ctx.output_path("predictions").exists()


def test_unseen_level_is_named(make_ctx, classifier):
    data = churn_frame(20).drop(columns=["churn"])
    data["plan"] = data["plan"].astype(str)
    data.loc[4, "plan"] = "enterprise"
    with pytest.raises(ContractError) as ei:
        builtins.predict(classifier, data)
    assert ei.value.code == "contract.unseen_level" and "'enterprise'" in ei.value.message


def test_hash_tampering_is_refused_before_joblib_load(classifier, monkeypatch):
    m = read_manifest(classifier)
    write_manifest(classifier, fill_files(classifier, m))
    builtins.predict(classifier, churn_frame(5))  # verified copy loads
    with open(classifier / "model.joblib", "ab") as f:
        f.write(b"\0")
    import joblib

    def boom(*a, **k):
        raise AssertionError("joblib.load called on a tampered payload")
    monkeypatch.setattr(joblib, "load", boom)
    with pytest.raises(ArtifactError) as ei:
        builtins.predict(classifier, churn_frame(5))
    assert ei.value.code == "artifact.hash_mismatch"


def test_train_and_score_regressor(make_ctx):
    folder = train_model(make_ctx, regression_frame(), target="y", exclude=["id"], estimator="linear_regression")
    m = read_manifest(folder)
    assert m["task"] == "regression" and set(m["metrics"]) >= {"rmse", "mae", "r2"} and m["metrics"]["r2"] > 0.9
    assert m["signature"]["outputs"][0] == {"name": "prediction", "type": "double", "nullable": True}
    assert [c["type"] for c in m["signature"]["inputs"]] == ["double", "double", "boolean"]
    assert abs(sum(m["feature_importance"]["values"].values()) - 1) < 1e-12
    assert builtins.check_golden(folder) == []
    data = regression_frame(40, seed=9).drop(columns=["y"])
    ctx = score_ctx(make_ctx, folder, data)
    assert run_stage(ctx, builtin="score") == 0
    out = read_table(ctx.output_path("predictions"))
    assert len(out) == 40 and (out["prediction"] == out["score"]).all()


@pytest.mark.parametrize("estimator", ["random_forest", "hist_gradient_boosting",
                                       "sklearn.ensemble.ExtraTreesClassifier"])
def test_other_estimators_and_multiclass(make_ctx, estimator):
    df = churn_frame(150)
    df["target"] = df["plan"].astype(str)  # 3 levels, as text
    folder = train_model(make_ctx, df.drop(columns=["plan", "churn"]), target="target", exclude=["id"],
                         estimator=estimator, estimator_params={"random_state": 0} if "Extra" in estimator else None)
    m = read_manifest(folder)
    assert m["task"] == "multiclass_classification" and m["target"]["levels"] == ["basic", "plus", "pro"]
    assert builtins.check_golden(folder) == []


def test_string_feature_becomes_category_and_positive_param(make_ctx):
    df = churn_frame(120)
    df["plan"] = df["plan"].astype(str)
    folder = train_model(make_ctx, df, target="churn", exclude=["id"], positive="No")
    m = read_manifest(folder)
    assert m["target"]["positive"] == "No"
    assert m["signature"]["inputs"][2] == {"name": "plan", "type": "category", "levels": ["basic", "plus", "pro"],
                                           "nullable": True}
