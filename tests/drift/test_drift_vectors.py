"""Reference vectors of specs/drift.md: statistics within 1e-9 relative, p-values within 1e-6 absolute."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ambidex import drift as D
from ambidex import drift_profile as P
from ambidex import kpi as K

VECTORS = json.loads((Path(__file__).parent / "drift-vectors.json").read_text())
_NONFINITE = {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf}


def cases(group: str) -> list:
    v = VECTORS[group]
    return v if isinstance(v, list) else [v]


def ids(group: str) -> list[str]:
    return [c.get("name", f"{group}-{i}") if isinstance(c, dict) else str(i) for i, c in enumerate(cases(group))]


def num(v):
    """JSON value -> Python: "NaN"/"Inf"/"-Inf" strings become floats, recursively for lists."""
    if isinstance(v, list):
        return [num(x) for x in v]
    return _NONFINITE.get(v, v) if isinstance(v, str) else v


def stat(expected, rel=1e-9):
    return pytest.approx(expected, rel=rel, abs=1e-12)


def pval(expected):
    return pytest.approx(expected, abs=1e-6)


def assert_field(key: str, got, expected):
    """Compare one logged field with its expected value (p-values by absolute, statistics by relative error)."""
    if expected == "NaN":  # not computable: logged as None (NULL)
        assert got is None, key
    elif isinstance(expected, bool) or isinstance(expected, str) or expected is None:
        assert (list(got) if isinstance(got, tuple) else got) == expected, key
    elif isinstance(expected, list) and all(isinstance(v, str) for v in expected):
        assert list(got) == expected, key
    elif isinstance(expected, list):
        assert list(got) == stat(expected), key
    elif key.endswith("_p") or key.startswith("p_"):
        assert got == pval(expected), key
    else:
        assert got == stat(expected), key


@pytest.mark.parametrize("case", cases("quantile7"), ids=ids("quantile7"))
def test_quantile7(case):
    x = np.sort(np.asarray(case["x"], dtype=float))
    assert D.quantile7(x, case["probs"]).tolist() == stat(case["expected"])
    k = round(1 / case["probs"][0])
    assert D.bin_edges(x, k).tolist() == stat(case.get("edges_dedup", case["expected"]))


@pytest.mark.parametrize("case", cases("bin_counts"), ids=ids("bin_counts"))
def test_bin_counts(case):
    edges = D.bin_edges(np.sort(case["ref"]), case["n_bins"])
    assert edges.tolist() == stat(case["edges"])
    counts = D.count_bins(edges, case["x"])
    assert counts[:-1].tolist() == case["expected_counts"]
    assert counts[-1] == 0
    assert D.bin_index(edges, [3.0, 3.0000001]).tolist() == [0, 1]


@pytest.mark.parametrize("case", cases("counts_metrics"), ids=ids("counts_metrics"))
def test_counts_metrics(case):
    cr, cc = case["counts_ref"], case["counts_cur"]
    assert D.psi(cr, cc, case["eps"]) == stat(case["psi"])
    js = D.js_distance(cr, cc)
    assert js == stat(case["js_base2"])
    if "js_natural_log_evidently_convention" in case:
        assert js * math.sqrt(math.log(2)) == stat(case["js_natural_log_evidently_convention"])
    chi = D.chi2_homogeneity(cr, cc)
    assert chi.chi2 == stat(case["chi2"])
    assert chi.dof == case["chi2_dof"]
    assert chi.p == pval(case["chi2_p"])
    assert chi.cramers_v == stat(case["cramers_v"])


@pytest.mark.parametrize("case", cases("ks"), ids=ids("ks"))
def test_ks(case):
    d, p = D.ks_test(case["a"], case["b"])
    assert d == stat(case["D"])
    assert p == pval(case["p_asymptotic_limit"])
    assert abs(p - case["scipy_ks_2samp_default_p_for_info"]) > 1e-3  # not scipy's default convention


@pytest.mark.parametrize("case", cases("psi_null_threshold"), ids=ids("psi_null_threshold"))
def test_psi_null_threshold(case):
    got = D.psi_null_threshold(case["k"], case["n_ref"], case["n_cur"], case["alpha"])
    assert got == stat(case["expected"])


@pytest.mark.parametrize("case", cases("numeric_drift"), ids=ids("numeric_drift"))
def test_numeric_drift(case):
    res = D.compare_numeric(num(case["ref"]), num(case["cur"]), feature="x")
    for key, expected in case["expected"].items():
        got = res.data_status if key == "status" else getattr(res, key)
        assert_field(key, got, expected)
    final = case.get("expected_status", {"status": case["expected"]["status"], "reasons": None})
    assert res.status == final["status"]
    if final["reasons"] is not None:
        assert list(res.reasons) == final["reasons"]


@pytest.mark.parametrize("case", cases("categorical_drift"), ids=ids("categorical_drift"))
def test_categorical_drift(case):
    res = D.compare_categorical(case["ref"], case["cur"], feature="c")
    for key, expected in case["expected"].items():
        got = res.data_status if key == "status" else getattr(res, key)
        assert_field(key, got, expected)
    assert res.status == case["expected_status"]["status"]
    assert list(res.reasons) == case["expected_status"]["reasons"]


@pytest.mark.parametrize("case", cases("impact"), ids=ids("impact"))
def test_impact(case):
    features = {name: {**stats, **case["statuses"][name]} for name, stats in case["per_feature"].items()}
    scores = D.score_impact(features, case["importance"])
    exp = case["expected"]
    for name, e in exp["features"].items():
        got = scores.impact[name]
        for key, val in e.items():
            assert_field(key, getattr(got, key), val)
    assert scores.weighted_psi == stat(exp["weighted_psi"])
    assert scores.drifted_importance_share == stat(exp["drifted_importance_share"])
    assert scores.dataset_drift is exp["dataset_drift"]


@pytest.mark.parametrize("case", cases("kpi_decision"), ids=ids("kpi_decision"))
def test_kpi_decision(case):
    if "se_hanley_mcneil" in case:
        se = dict(case["se_hanley_mcneil"])
        for window, (n_pos, n_neg) in case["n_pos_neg"].items():
            assert K.se_hanley_mcneil(case["kpi"][window], n_pos, n_neg) == stat(se[window])
    else:
        se = case["se"]
    tol = case["tol"] if isinstance(case["tol"], (int, float)) else None  # "0.05*B": the default
    dec = K.decide_retrain(case["metric"], case["kpi"], se, tol=tol, higher_is_better=case["higher_is_better"])
    exp = case["expected"]
    for window in ("T-1", "T-2", "B"):
        assert dec.delta[window] == stat(exp[f"delta_{window}"])
        assert dec.z[window] == stat(exp[f"z_{window}"])
    assert dec.trigger_benchmark is exp["trigger_benchmark"]
    assert dec.trigger_sustained_decline is exp["trigger_sustained_decline"]
    assert dec.retrain is exp["retrain"]


@pytest.mark.parametrize("case", cases("paired_loss_test"), ids=ids("paired_loss_test"))
def test_paired_loss_test(case):
    t = K.paired_loss_test(case["loss_champion"], case["loss_challenger"])
    assert t.mean_diff == stat(case["expected"]["mean_diff"])
    assert t.z == stat(case["expected"]["z"])
    assert t.p_one_sided == pval(case["expected"]["p_one_sided"])


@pytest.mark.parametrize("case", cases("cbpe_binary"), ids=ids("cbpe_binary"))
def test_cbpe_binary(case):
    est = K.estimate_cbpe(case["proba_calibrated"], threshold=case["threshold"])
    for key, val in case["expected"].items():
        assert getattr(est, key) == stat(val), key
    assert est.is_estimated is True


@pytest.mark.parametrize("case", cases("dle_lite"), ids=ids("dle_lite"))
def test_dle_lite(case):
    table = K.fit_dle(case["pred_ref"], case["loss_ref"], n_bins=case["n_bins"])
    est = K.estimate_dle(table, case["pred_cur"])
    exp = case["expected"]
    assert list(table.edges) == stat(exp["edges"])
    assert list(table.mean_loss_ref_by_bin) == stat(exp["mean_loss_ref_by_bin"])
    assert list(est.share_cur) == stat(exp["share_cur"])
    assert est.estimated_loss == stat(exp["estimated_loss"])
    assert est.reference_loss == stat(exp["reference_loss"])
    assert est.is_estimated is True


@pytest.mark.parametrize("case", cases("profile_merge"), ids=ids("profile_merge"))
def test_profile_merge(case):
    grid = P.build_grid(case["ref"])
    assert len(grid.percentiles) == case["fine_grid_size"]
    assert P.coarse_edges(grid, 10).tolist() == stat(case["decile_edges"])
    ref = P.profile_numeric(grid, case["ref"])
    merged = P.merge_profiles([P.profile_numeric(grid, case["window_a"]), P.profile_numeric(grid, case["window_b"])])
    res = P.compare_profiles(ref, merged, grid=grid, feature="x")
    assert list(res.counts_ref[:-1]) == case["decile_counts_ref"]
    assert list(res.counts_cur[:-1]) == case["decile_counts_merged_from_fine_grid"]
    assert res.psi == stat(case["psi_merged_vs_ref"])
    raw = D.compare_numeric(case["ref"], case["window_a"] + case["window_b"], feature="x")
    for key in ("counts_cur", "psi", "psi_null_thr", "js", "chi2", "chi2_p", "share_above_ref_median_cur",
                "median_sign_z", "missing_delta", "status"):
        assert getattr(res, key) == getattr(raw, key), key
