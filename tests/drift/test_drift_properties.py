"""Invariants of the drift statistics (hypothesis): PSI(x, x) = 0, right-closed bins, mergeable profiles, no false 'ok'."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from ambidex import drift as D
from ambidex import drift_profile as P
from ambidex import drift_stats as S
from ambidex import kpi as K

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
value = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf]), st.none())
small_int = st.integers(min_value=-5, max_value=5).map(float)


@given(st.lists(value, min_size=1, max_size=300))
def test_psi_of_a_sample_with_itself_is_zero(xs):
    res = D.compare_numeric(xs, xs)
    if res.psi is not None:
        assert res.psi == 0.0
        assert res.js == 0.0
        assert res.chi2 == 0.0
    assert res.status in ("ok", "insufficient_data") or res.reasons == ("insufficient_data",)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=20))
def test_psi_of_equal_counts_is_zero(counts):
    if sum(counts):
        assert D.psi(counts, counts) == 0.0


@given(st.lists(finite, min_size=1, max_size=12, unique=True), st.lists(finite, max_size=50))
def test_bins_are_right_closed(edges, xs):
    e = np.sort(np.asarray(edges))
    x = np.asarray(xs + list(e))
    assert D.bin_index(e, x).tolist() == [int(np.sum(e < v)) for v in x]
    assert D.bin_index(e, e).tolist() == list(range(e.size))  # a value on an edge goes to the lower bin


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(finite, small_int), min_size=1, max_size=400),
       st.lists(st.lists(st.one_of(value, small_int), max_size=150), min_size=1, max_size=4))
def test_merged_profile_counts_equal_counts_of_the_concatenation(ref, windows):
    grid = P.build_grid(ref)
    merged = P.merge_profiles([P.profile_numeric(grid, w) for w in windows])
    cat = [v for w in windows for v in w]
    assert merged.n == len(cat)
    whole = P.profile_numeric(grid, cat)
    assert {b: n for b, n in merged.fine_counts.items() if n} == dict(whole.fine_counts)
    from_profiles = P.compare_profiles(P.profile_numeric(grid, ref), merged, grid=grid)
    raw = D.compare_numeric(ref, cat)
    assert from_profiles.binning == raw.binning
    assert from_profiles.counts_ref == raw.counts_ref
    assert from_profiles.counts_cur == raw.counts_cur
    for key in ("psi", "psi_values_only", "psi_null_thr", "js", "chi2", "missing_delta"):
        assert getattr(from_profiles, key) == getattr(raw, key), key


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", None]), max_size=200),
       st.lists(st.lists(st.sampled_from(["a", "b", "e", None]), max_size=80), min_size=1, max_size=4))
def test_merged_categorical_profiles_equal_the_concatenation(ref, windows):
    merged = P.merge_profiles([P.profile_categorical(w) for w in windows])
    cat = [v for w in windows for v in w]
    assert merged == P.profile_categorical(cat) or sorted(merged.level_counts.items()) == sorted(
        P.profile_categorical(cat).level_counts.items())
    a = P.compare_profiles(P.profile_categorical(ref), merged)
    b = D.compare_categorical(ref, cat)
    assert (a.counts_ref, a.counts_cur, a.psi, a.new_share, a.status) == (b.counts_ref, b.counts_cur, b.psi,
                                                                         b.new_share, b.status)


@given(st.lists(finite, min_size=30, max_size=200),
       st.one_of(st.just([]), st.lists(st.just(math.nan), min_size=1, max_size=100),
                 st.lists(finite, min_size=1, max_size=29)))
def test_status_is_never_ok_for_empty_all_missing_or_tiny_windows(ref, cur):
    for a, b in ((ref, cur), (cur, ref)):
        res = D.compare_numeric(a, b)
        assert res.status != "ok"
        assert res.data_status == "insufficient_data"
        assert "insufficient_data" in res.reasons
        cat = D.compare_categorical([None if isinstance(v, float) and math.isnan(v) else str(v) for v in a],
                                    [None if isinstance(v, float) and math.isnan(v) else str(v) for v in b])
        assert cat.status != "ok"


@given(st.floats(min_value=0.0, max_value=5.0))
def test_ks_limit_series_equals_kstwobign(lam):
    assert D.ks_limit_sf(lam) == pytest.approx(float(special.kolmogorov(lam)), abs=1e-10)


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=60))
def test_expected_auc_matches_the_double_sum(p):
    p = np.asarray(p)
    est = K.estimate_cbpe(p)
    den = p.sum() * (1 - p).sum()
    if den > 1e-9:
        k = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
        assert est.exp_roc_auc == pytest.approx(float((p[:, None] * (1 - p[None, :]) * k).sum() / den), rel=1e-9)


@pytest.mark.parametrize("module", [D, S, P, K])
def test_docstring_examples_run(module):
    failed, attempted = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0
