"""Typed tables (SPEC section 3): exact bytes, round trips, refusals naming file, line and column."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambidex_stage.errors import ContractError
from ambidex_stage.tables import coerce_to_signature, read_table, schema_from_frame, sidecar_path, write_table


def roundtrip(df, tmp_path, name="t.csv"):
    p = tmp_path / name
    write_table(df, p)
    return read_table(p), p


def test_missing_vs_empty_string_vs_na_text_bytes(tmp_path):
    df = pd.DataFrame({"s": ["", None, "NA", "a"]})
    back, p = roundtrip(df, tmp_path)
    assert p.read_bytes() == b's\n""\n\n"NA"\n"a"\n'
    assert back["s"].tolist()[0] == "" and pd.isna(back["s"].iloc[1]) and back["s"].tolist()[2:] == ["NA", "a"]
    assert str(back["s"].dtype) == "str"


def test_reader_accepts_unquoted_text_and_keeps_unquoted_na_as_text(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b's,x\nNA,1.5\n"",NaN\n,Inf\nplain,-Inf\n')
    sidecar_path(p).write_text(json.dumps({"contract_version": 1, "row_count": 4, "columns": [
        {"name": "s", "type": "string", "nullable": True}, {"name": "x", "type": "double", "nullable": True}]}))
    df = read_table(p)
    assert df["s"].iloc[0] == "NA" and df["s"].iloc[1] == "" and pd.isna(df["s"].iloc[2])
    assert np.isnan(df["x"].iloc[1]) and df["x"].iloc[2] == np.inf and df["x"].iloc[3] == -np.inf


def test_doubles_roundtrip_bit_exactly(tmp_path):
    vals = [0.1, 1 / 3, 1e300, -1e-300, 5e-324, -0.0, 2.0**53 + 2, np.pi, np.inf, -np.inf, np.nan, 123456789.125]
    back, p = roundtrip(pd.DataFrame({"x": vals}), tmp_path)
    got = back["x"].to_numpy()
    want = np.array(vals)
    assert np.array_equal(got.view(np.int64)[~np.isnan(want)], want.view(np.int64)[~np.isnan(want)])
    assert np.isnan(got[10])
    lines = p.read_text().splitlines()
    assert lines[9:12] == ["Inf", "-Inf", ""]  # NaN is missing in pandas, written as an empty field


def test_int64_extremes_and_nullable_ints(tmp_path):
    df = pd.DataFrame({"i": np.array([2**62, -2**63 + 1, 2**63 - 1, 0], dtype=np.int64),
                       "j": pd.array([1, None, -5, 2**62], dtype="Int64")})
    back, p = roundtrip(df, tmp_path)
    pd.testing.assert_frame_equal(back, df)
    assert p.read_text().splitlines()[1] == "4611686018427387904,1"
    assert schema_from_frame(df)["columns"][0]["nullable"] is False


def test_utf8_text_with_commas_quotes_newlines(tmp_path):
    df = pd.DataFrame({"s": ['a,b', 'say "hi"', "two\nlines", "crlf\r\nend", "ünïcödé ✓ 日本", " pad "]})
    back, p = roundtrip(df, tmp_path)
    pd.testing.assert_frame_equal(back, df.astype({"s": "str"}))
    assert p.read_bytes().startswith(b's\n"a,b"\n"say ""hi"""\n"two\nlines"\n')


def test_booleans(tmp_path):
    df = pd.DataFrame({"b": [True, False], "n": pd.array([True, None], dtype="boolean")})
    back, p = roundtrip(df, tmp_path)
    pd.testing.assert_frame_equal(back, df)
    assert p.read_text() == "b,n\ntrue,true\nfalse,\n"


def test_categories_keep_level_order_and_unused_levels(tmp_path):
    df = pd.DataFrame({"c": pd.Categorical(["pro", None, "basic"], categories=["pro", "basic", "zzz"])})
    back, p = roundtrip(df, tmp_path)
    assert list(back["c"].cat.categories) == ["pro", "basic", "zzz"]
    assert back["c"].tolist()[0] == "pro" and pd.isna(back["c"].iloc[1])
    assert json.loads(sidecar_path(p).read_text())["columns"][0]["levels"] == ["pro", "basic", "zzz"]


def test_utc_timestamps_with_microseconds(tmp_path):
    t = pd.to_datetime(["2024-03-31T01:59:59.000001Z", None, "1969-12-31T23:59:59.5Z", "2024-01-01T00:00:00Z"], format="ISO8601",
                       utc=True).astype("datetime64[ns, UTC]")
    back, p = roundtrip(pd.DataFrame({"t": t}), tmp_path)
    pd.testing.assert_series_equal(back["t"], pd.Series(t, name="t"))
    assert p.read_text().splitlines()[1:] == ["2024-03-31T01:59:59.000001Z", "", "1969-12-31T23:59:59.500000Z",
                                              "2024-01-01T00:00:00Z"]


@pytest.mark.parametrize("unit", ["s", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Paris"])
def test_timestamp_text_is_what_strftime_writes(unit, tz):
    import pyarrow as pa
    import pyarrow.compute as pc

    from ambidex_stage.tables import timestamp_text

    rng = np.random.default_rng(3)
    lo, hi = (np.datetime64(d, "s").astype(np.int64) for d in ("1677-09-22", "2262-04-10"))
    secs = np.concatenate([rng.integers(lo, hi, 5000), [lo, hi, -1, 0, 1]])
    per = {"s": 1, "us": 10**6, "ns": 10**9}[unit]
    arr = pa.array(secs * per + (rng.integers(0, per, len(secs)) if per > 1 else 0), pa.timestamp(unit, tz=tz),
                   mask=np.arange(len(secs)) % 7 == 0)
    utc = arr.cast(pa.timestamp(unit, tz="UTC")) if tz else arr
    assert timestamp_text(arr).equals(pc.strftime(utc, format="%Y-%m-%d %H:%M:%S"))
    assert timestamp_text(arr, "T").equals(pc.strftime(utc, format="%Y-%m-%dT%H:%M:%S"))


def test_other_time_zones_are_converted_to_utc(tmp_path):
    t = pd.Series(pd.to_datetime(["2024-06-01 12:00"]).tz_localize("Europe/Paris"))
    back, _ = roundtrip(pd.DataFrame({"t": t}), tmp_path)
    assert back["t"].iloc[0] == pd.Timestamp("2024-06-01T10:00:00Z")


def test_naive_timestamp_refused_naming_the_column(tmp_path):
    with pytest.raises(ContractError) as ei:
        write_table(pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])}), tmp_path / "t.csv")
    assert ei.value.code == "contract.type_mismatch" and "'when'" in ei.value.message
    assert not (tmp_path / "t.csv").exists()


def _table(tmp_path, body: bytes, columns, row_count=None):
    p = tmp_path / "in.csv"
    p.write_bytes(body)
    sidecar_path(p).write_text(json.dumps({"contract_version": 1, "row_count": row_count if row_count is not None
                                           else body.count(b"\n") - 1, "columns": columns}))
    return p


def test_header_mismatch_is_invalid_table(tmp_path):
    p = _table(tmp_path, b"b,a\n1,2\n", [{"name": "a", "type": "integer", "nullable": True},
                                         {"name": "b", "type": "integer", "nullable": True}])
    with pytest.raises(ContractError) as ei:
        read_table(p)
    assert ei.value.code == "contract.invalid_table"
    assert str(p) in ei.value.message and "line 1" in ei.value.message


@pytest.mark.parametrize("ctype,bad", [("double", "1,5"), ("integer", "1.0"), ("boolean", "TRUE"),
                                       ("timestamp", "2024-01-01 00:00:00"), ("integer", "9223372036854775808")])
def test_malformed_value_names_file_line_and_column(tmp_path, ctype, bad):
    body = f'id,v\n1,\n2,"{bad}"\n'.encode() if "," in bad else f"id,v\n1,\n2,{bad}\n".encode()
    p = _table(tmp_path, body, [{"name": "id", "type": "integer", "nullable": False},
                                {"name": "v", "type": ctype, "nullable": True}])
    with pytest.raises(ContractError) as ei:
        read_table(p)
    assert ei.value.code == "contract.invalid_table"
    assert str(p) in ei.value.message and "line 3" in ei.value.message and "'v'" in ei.value.message


def test_level_outside_the_schema_is_invalid_table(tmp_path):
    p = _table(tmp_path, b'c\n"a"\n"z"\n', [{"name": "c", "type": "category", "levels": ["a"], "nullable": True}])
    with pytest.raises(ContractError, match="line 3") as ei:
        read_table(p)
    assert ei.value.code == "contract.invalid_table"


def test_wrong_field_count_is_invalid_table(tmp_path):
    p = _table(tmp_path, b"a,b\n1,2\n3,4,5\n", [{"name": "a", "type": "integer", "nullable": True},
                                               {"name": "b", "type": "integer", "nullable": True}])
    with pytest.raises(ContractError, match="line 3") as ei:
        read_table(p)
    assert ei.value.code == "contract.invalid_table"


def test_missing_in_non_nullable_column_is_type_mismatch(tmp_path):
    p = _table(tmp_path, b"a\n1\n\n", [{"name": "a", "type": "integer", "nullable": False}])
    with pytest.raises(ContractError, match="'a'") as ei:
        read_table(p)
    assert ei.value.code == "contract.type_mismatch"


def test_row_count_mismatch_is_invalid_table(tmp_path):
    p = _table(tmp_path, b"a\n1\n2\n", [{"name": "a", "type": "integer", "nullable": True}], row_count=3)
    with pytest.raises(ContractError, match="row_count") as ei:
        read_table(p)
    assert ei.value.code == "contract.invalid_table"


def test_empty_table_roundtrips(tmp_path):
    df = pd.DataFrame({"a": pd.Series([], dtype="int64"), "s": pd.Series([], dtype="str")})
    back, p = roundtrip(df, tmp_path)
    assert p.read_text() == "a,s\n" and len(back) == 0 and list(back.columns) == ["a", "s"]


def test_write_with_schema_converts_losslessly_and_refuses_lossy(tmp_path):
    schema = {"contract_version": 1, "row_count": 0, "columns": [{"name": "x", "type": "integer", "nullable": False}]}
    write_table(pd.DataFrame({"x": [1.0, 2.0]}), tmp_path / "a.csv", schema)
    assert (tmp_path / "a.csv").read_text() == "x\n1\n2\n"
    with pytest.raises(ContractError) as ei:
        write_table(pd.DataFrame({"x": [1.5]}), tmp_path / "b.csv", schema)
    assert ei.value.code == "contract.type_mismatch" and "1.5" in ei.value.message


# ------------------------------------------------------------------ coerce_to_signature (SPEC 4.1)

SIG = [{"name": "x", "type": "double", "nullable": True}, {"name": "n", "type": "integer", "nullable": True},
       {"name": "plan", "type": "category", "levels": ["basic", "pro"], "nullable": True}]


def test_coerce_matches_by_name_and_reports_extras():
    df = pd.DataFrame({"plan": ["pro", None], "key": [1, 2], "n": [1.0, np.nan], "x": ["2.5", "1e3"]})
    out, extras = coerce_to_signature(df, SIG)
    assert list(out.columns) == ["x", "n", "plan"] and extras == ["key"]
    assert out["x"].tolist() == [2.5, 1000.0] and str(out["n"].dtype) == "Int64"
    assert list(out["plan"].cat.categories) == ["basic", "pro"]


def test_coerce_missing_column_named():
    with pytest.raises(ContractError) as ei:
        coerce_to_signature(pd.DataFrame({"x": [1.0], "plan": ["pro"]}), SIG)
    assert ei.value.code == "contract.missing_column" and "'n'" in ei.value.message


def test_coerce_lossy_text_refused_naming_column_type_value():
    with pytest.raises(ContractError) as ei:
        coerce_to_signature(pd.DataFrame({"x": ["1,5"], "n": [1], "plan": ["pro"]}), SIG)
    e = ei.value
    assert e.code == "contract.type_mismatch" and "'x'" in e.message and "double" in e.message and "1,5" in e.message


def test_coerce_big_int_into_double_refused():
    with pytest.raises(ContractError, match="2\\*\\*53"):
        coerce_to_signature(pd.DataFrame({"x": [2**53 + 1], "n": [1], "plan": ["pro"]}), SIG)


def test_coerce_unseen_level_named():
    with pytest.raises(ContractError) as ei:
        coerce_to_signature(pd.DataFrame({"x": [1.0], "n": [1], "plan": ["enterprise"]}), SIG)
    assert ei.value.code == "contract.unseen_level"
    assert "'plan'" in ei.value.message and "'enterprise'" in ei.value.message


@pytest.mark.parametrize("cats,ordered", [(["b", "a"], False), (["a", "b", "c"], False), (["a", "b", "c", "d"], True),
                                          ([], False)])
def test_a_categorical_is_recoded_by_label_as_its_labels_would_be(cats, ordered):
    from ambidex_stage.signature import coerce_series

    col = {"name": "c", "type": "category", "levels": ["a", "b", "c"], "nullable": True}
    values = [v for v in ["b", "a", None, "b"] if v is None or v in cats]
    s = pd.Series(pd.Categorical(values, categories=cats, ordered=ordered), index=range(10, 10 + len(values)))
    got = coerce_series(s, col)
    want = coerce_series(s.astype(object).where(s.notna(), None), col)  # the same labels as text
    pd.testing.assert_series_equal(got, want)
    assert list(got.cat.categories) == ["a", "b", "c"] and not got.cat.ordered


def test_a_categorical_with_a_label_outside_the_levels_is_named():
    s = pd.Series(pd.Categorical(["pro", "enterprise"]))
    with pytest.raises(ContractError) as ei:
        coerce_to_signature(pd.DataFrame({"x": [1.0, 2.0], "n": [1, 2], "plan": s}), SIG)
    assert ei.value.code == "contract.unseen_level" and "'enterprise'" in ei.value.message


# ------------------------------------------------------------------ property: random frames round-trip exactly

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@st.composite
def frames(draw):
    n = draw(st.integers(0, 12))
    def opt(strat):
        return st.one_of(st.none(), strat)
    ints = draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n))
    nints = draw(st.lists(opt(st.integers(-2**63, 2**63 - 1)), min_size=n, max_size=n))
    dbl = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n))
    txt = draw(st.lists(opt(_text), min_size=n, max_size=n))
    bools = draw(st.lists(opt(st.booleans()), min_size=n, max_size=n))
    levels = draw(st.lists(_text, min_size=1, max_size=4, unique=True))
    cats = draw(st.lists(opt(st.sampled_from(levels)), min_size=n, max_size=n))
    micros = draw(st.lists(opt(st.integers(-2**52, 2**52)), min_size=n, max_size=n))
    ts = pd.to_datetime(pd.Series([None if m is None else m * 1000 for m in micros], dtype="Int64")
                        .astype("float64"), utc=True, unit="ns") if n else pd.Series([], dtype="datetime64[ns, UTC]")
    return pd.DataFrame({
        "i": pd.Series(ints, dtype="int64"), "ni": pd.Series(nints, dtype="Int64"),
        "d": pd.Series(dbl, dtype="float64"), "s": pd.Series(txt, dtype="str"),
        "b": pd.Series(bools, dtype="boolean"), "c": pd.Series(pd.Categorical(cats, categories=levels)),
        "t": pd.Series([None if m is None else pd.Timestamp(m, unit="us", tz="UTC") for m in micros],
                       dtype="datetime64[ns, UTC]") if n else ts,
    })


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(df=frames())
def test_random_frames_roundtrip_exactly(tmp_path, df):
    p = tmp_path / "prop.csv"
    write_table(df, p)
    back = read_table(p)
    expect = df.copy()
    if not df["ni"].isna().any():
        expect["ni"] = expect["ni"].astype("int64")
    if not df["b"].isna().any():
        expect["b"] = expect["b"].astype(bool)
    assert list(back.columns) == list(expect.columns) and len(back) == len(expect)
    for c in expect.columns:
        if c == "d":
            a, b = back[c].to_numpy(), expect[c].to_numpy()
            assert np.array_equal(np.isnan(a), np.isnan(b))
            assert np.array_equal(a[~np.isnan(a)].view(np.int64), b[~np.isnan(b)].view(np.int64))
        else:
            pd.testing.assert_series_equal(back[c], expect[c], check_categorical=True)
