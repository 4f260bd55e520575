"""Load-time profiles: the one-sort path for a column's first values equals the general path exactly,
and the bulk insert stores every value as the database gives it back."""
import numpy as np
import pyarrow as pa
import pytest

from ambidex import profiling
from ambidex.drift_profile import build_grid, fine_counts_sorted, fine_index

rng = np.random.default_rng(11)
CASES = {
    "continuous": rng.normal(size=10_001),
    "few values (discrete grid)": rng.integers(0, 5, 999).astype(float),
    "many ties": np.round(rng.normal(size=7_777), 1),
    "21 distinct values": rng.integers(0, 21, 500).astype(float),
    "missing and infinite": np.r_[rng.normal(size=300), [np.nan] * 7, [np.inf, -np.inf]],
    "one value": np.array([3.0]),
    "repeated with a gap": np.array([1.0, np.nan, 1.0]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_first_profile_equals_general_path(name):
    x = CASES[name]
    first, grid = profiling._numeric_first(x, "f")
    assert grid == build_grid(x, feature="f")
    assert first == profiling._numeric(x, grid)  # counts, sums, min, max, median: bit for bit


@pytest.mark.parametrize("name", list(CASES))
def test_counts_from_sorted_values_equal_bincount(name):
    x = CASES[name]
    grid = build_grid(x, feature="f")
    fine = fine_index(grid, x)
    expected = np.bincount(fine[fine >= 0], minlength=(2 * len(grid.edges) + 1) if grid.kind == "discrete"
                           else len(grid.edges) + 1)
    got = fine_counts_sorted(grid, np.sort(x[np.isfinite(x)]))
    assert got.tolist() == expected.tolist()


def test_profile_column_freezes_grid_once_then_reuses_it():
    x = rng.normal(size=2_000)
    p1, g = profiling.profile_column("f", pa.chunked_array([x]), "double", None)
    assert g is not None
    p2, g2 = profiling.profile_column("f", pa.chunked_array([x]), "double", g)
    assert g2 is None and p1.profile == p2.profile
