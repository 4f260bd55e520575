"""Permutation importance of the built-in train stage: the block-permutation fast path equals shuffling inputs."""
from __future__ import annotations

import numpy as np
import pytest

from ambidex_stage import _train
from ambidex_stage.builtins import _estimator, _model_frame, _pipeline
from ambidex_stage.signature import coerce_to_signature

from .conftest import churn_frame, regression_frame


def _fitted(df, target, estimator, task):
    features = [c for c in df.columns if c not in (target, "id")]
    inputs = _train._signature_inputs(df, features)
    X, _ = coerce_to_signature(df, inputs)
    Z = _model_frame(X, inputs)
    est, linear = _estimator(estimator, task, 7, None)
    pipe = _pipeline(inputs, est, linear)
    if task == "regression":
        y = df[target].to_numpy(dtype=np.float64)
    else:
        y = (df[target].astype(str) == "Yes").to_numpy(dtype=np.int64)
    pipe.fit(Z, y)
    return pipe, Z, y


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_block_permutation_equals_shuffling_each_input(estimator):
    df = churn_frame(600, seed=3)
    df.loc[df.index[:40], "x2"] = np.nan  # imputed values move with their rows too
    pipe, Z, y = _fitted(df, "churn", estimator, "binary_classification")
    assert _train._output_blocks(pipe, list(Z.columns)) is not None
    fast = _train._permutation_importance(pipe, Z, y, "binary_classification", 2, 11, False)
    slow_blocks = _train._output_blocks
    try:
        _train._output_blocks = lambda *a: None  # the generic path: transform every shuffled frame
        slow = _train._permutation_importance(pipe, Z, y, "binary_classification", 2, 11, False)
    finally:
        _train._output_blocks = slow_blocks
    assert fast.keys() == slow.keys()
    assert all(abs(fast[k] - slow[k]) < 1e-12 for k in fast)


def test_block_permutation_regression():
    pipe, Z, y = _fitted(regression_frame(), "y", "ridge", "regression")
    fast = _train._permutation_importance(pipe, Z, y, "regression", 0, 5, True)
    blocks = _train._output_blocks
    try:
        _train._output_blocks = lambda *a: None
        slow = _train._permutation_importance(pipe, Z, y, "regression", 0, 5, True)
    finally:
        _train._output_blocks = blocks
    assert fast.keys() == slow.keys() and all(abs(fast[k] - slow[k]) < 1e-12 for k in fast)
    assert abs(sum(fast.values()) - 1) < 1e-12 and max(fast, key=fast.get) == "x1"
