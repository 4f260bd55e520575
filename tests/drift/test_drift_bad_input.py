"""Bad input never yields a numpy trace or a silent 'no drift': an explicit status, or an error naming the feature."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ambidex import drift as D
from ambidex import drift_profile as P
from ambidex import kpi as K
from ambidex.errors import ConfigError, ContractError, DataError

RNG = np.random.default_rng(7)
REF = RNG.normal(size=500)


def test_empty_current_window_is_insufficient_data():
    res = D.compare_numeric(REF, [], feature="age")
    assert res.status == "insufficient_data"
    assert res.reasons == ("insufficient_data",)
    assert res.psi is None and res.missing_cur is None and res.median_cur is None


def test_both_windows_empty():
    res = D.compare_numeric([], [], feature="age")
    assert res.status == "insufficient_data"
    cat = D.compare_categorical([], [], feature="city")
    assert cat.status == "insufficient_data"


def test_all_missing_current_column_warns_with_missing_rate():
    res = D.compare_numeric(REF, [None] * 200 + [math.nan] * 100, feature="age")
    assert res.status == "warn"
    assert res.reasons == ("missing_delta>=0.05", "insufficient_data")
    assert res.missing_delta == 1.0


def test_all_missing_reference_column():
    res = D.compare_numeric([math.inf, -math.inf, None] * 20, REF, feature="age")
    assert res.status == "warn" and "insufficient_data" in res.reasons
    assert res.median_ref is None and res.ks_D is None


def test_constant_column_unchanged_is_ok_and_logged():
    res = D.compare_numeric([3.0] * 100, [3.0] * 100, feature="flag")
    assert (res.status, res.constant_ref, res.constant_broken, res.scale_kind) == ("ok", True, False, "constant")


def test_constant_column_broken_warns_even_without_psi():
    res = D.compare_numeric([3.0] * 1000, [3.0] * 999 + [4.0], feature="flag")
    assert res.status == "warn"
    assert res.reasons == ("constant_reference_changed",)


def test_non_numeric_values_raise_data_error_naming_the_feature():
    with pytest.raises(DataError, match="'age'") as exc:
        D.compare_numeric(REF, ["12", "old"], feature="age")
    assert exc.value.hint and exc.value.details["feature"] == "age"


def test_reserved_level_name_is_refused():
    with pytest.raises(DataError, match="__OTHER__"):
        D.compare_categorical(["a", "__OTHER__"], ["a"], feature="city")


def test_undeclared_dtype_in_frames_names_the_feature():
    ref = pd.DataFrame({"x": REF, "when": pd.date_range("2024-01-01", periods=500, freq="h")})
    with pytest.raises(DataError, match="'when'") as exc:
        D.compare_frames(ref, ref, importance={"x": 1, "when": 1})
    assert exc.value.details["feature"] == "when"


def test_type_mismatch_between_windows():
    ref = pd.DataFrame({"x": REF})
    cur = pd.DataFrame({"x": REF.astype(str)})
    with pytest.raises(DataError, match="numeric in the reference but categorical"):
        D.compare_frames(ref, cur, importance={"x": 1})


def test_missing_column_in_current_frame():
    with pytest.raises(DataError, match="not in the current frame"):
        D.compare_frames(pd.DataFrame({"x": REF}), pd.DataFrame({"y": REF}), importance={"x": 1})


def test_model_without_importance_is_a_contract_error_unless_uniform_is_asked():
    frame = pd.DataFrame({"x": REF, "c": RNG.choice(["a", "b"], 500)})
    with pytest.raises(ContractError, match="no feature importance") as exc:
        D.compare_frames(frame, frame)
    assert "uniform_importance=True" in exc.value.hint
    out = D.compare_frames(frame, frame, uniform_importance=True)
    assert out.scores.uniform_importance and {i.w for i in out.scores.impact.values()} == {0.5}
    assert not out.dataset_drift


def test_non_finite_importance_names_the_feature():
    with pytest.raises(DataError, match="'x2'"):
        D.normalise_importance({"x1": 1.0, "x2": math.nan})


def test_all_non_positive_importance_is_uniform():
    w, uniform = D.normalise_importance({"a": 0.0, "b": -1.0})
    assert uniform and w == {"a": 0.5, "b": 0.5}


def test_feature_without_importance_is_refused():
    with pytest.raises(DataError, match="No importance"):
        D.score_impact({"a": {"psi": 0.1, "status": "ok"}}, {"b": 1.0})


def test_frames_mixed_kinds_sorted_by_impact():
    ref = pd.DataFrame({"x": REF, "n": RNG.integers(0, 3, 500), "c": pd.Categorical(RNG.choice(["a", "b"], 500)),
                        "b": RNG.random(500) > 0.5, "s": pd.array(RNG.choice(["u", "v"], 500), dtype="string")})
    cur = ref.copy()
    cur["x"] = cur["x"] + 2.0
    cur.loc[:99, "s"] = pd.NA
    out = D.compare_frames(ref, cur, importance={"x": 1, "n": 1, "c": 1, "b": 1, "s": 1})
    assert out.features[0].feature == "x" and out.features[0].status == "alert"
    assert out.feature("n").binning == "discrete"
    assert {out.feature(c).kind for c in "cbs"} == {"categorical"}
    assert out.feature("s").missing_delta == pytest.approx(0.2)
    assert out.dataset_drift


def test_primitive_misuse_raises_data_error():
    with pytest.raises(DataError):
        D.quantile7([], 0.5)
    with pytest.raises(DataError):
        D.quantile7([1.0], 1.5)
    with pytest.raises(DataError):
        D.psi([1, 2], [1, 2, 3])
    with pytest.raises(DataError):
        D.psi([0, 0], [1, 2])
    with pytest.raises(DataError):
        D.ks_test([math.nan], [1.0])
    with pytest.raises(DataError):
        D.bin_edges([1.0, 2.0], 1)


def test_invalid_thresholds_are_a_config_error():
    with pytest.raises(ConfigError):
        D.DriftThresholds(psi_warn=0.3, psi_alert=0.2)


def test_grid_needs_a_populated_reference():
    with pytest.raises(DataError, match="'age'"):
        P.build_grid([None, math.nan], feature="age")


def test_profile_from_another_grid_is_refused():
    g1, g2 = P.build_grid(REF), P.build_grid([1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="not on the grid"):
        P.compare_profiles(P.profile_numeric(g1, REF), P.profile_numeric(g1, REF * 3), grid=g2, feature="x")


def test_kpi_bad_labels():
    with pytest.raises(DataError, match="only one class"):
        K.measure_kpi("roc_auc", [1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(DataError, match="missing or infinite"):
        K.measure_kpi("rmse", [1.0, None], [1.0, 2.0])
    with pytest.raises(DataError, match="Unknown KPI"):
        K.measure_kpi("r2", [1.0], [1.0])
    with pytest.raises(DataError, match="benchmark"):
        K.decide_retrain("rmse", {"T": 0.3, "T-1": 0.2}, {"T": 0.01, "T-1": 0.01})


def test_kpi_values_and_promotion():
    y = np.array([0, 0, 1, 1, 1, 0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.4])
    auc = K.measure_kpi("roc_auc", y, s)
    assert auc.value == pytest.approx(7.0 / 9.0)
    acc = K.measure_kpi("accuracy", y, s)
    assert acc.value == pytest.approx(5 / 6) and acc.se == pytest.approx(math.sqrt(5 / 6 * 1 / 6 / 6))
    ll = K.measure_kpi("log_loss", y, s)
    loss = -(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert ll.value == pytest.approx(loss.mean()) and ll.se == pytest.approx(loss.std() / math.sqrt(6))
    champion = RNG.random(200) + 0.5
    better = champion * 0.9 + RNG.normal(0, 0.01, 200)
    dec = K.decide_promotion(champion, {"T-1": champion * 1.01, "T-2": better})
    assert dec.promote and dec.winner == "T-2"
    keep = K.decide_promotion(champion, {"T-1": champion * 0.9995})  # significant but below min_gain
    assert not keep.promote and "gain" in keep.reason
    same = K.decide_promotion(champion, {"T-1": champion})
    assert not same.promote and same.tests["T-1"].z is None


def test_cbpe_from_a_calibration_table():
    scores = RNG.random(2000)
    y = (RNG.random(2000) < scores).astype(int)
    table = K.fit_calibration(scores, y)
    p = K.calibrate(table, RNG.random(500))
    est = K.estimate_cbpe(p)
    assert 0.6 < est.exp_roc_auc < 0.9 and est.is_estimated
    assert est.exp_tp + est.exp_fp + est.exp_fn + est.exp_tn == pytest.approx(500)
