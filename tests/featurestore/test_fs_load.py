"""fs_load: ingest from an in-memory table (table=), and keys that collide with rows already in the mart."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from ambidex import featurestore as fs
from ambidex.errors import DataError
from ambidex.fstables import data_versions

JAN = "2024-01-01/2024-02-01"
FEB = "2024-02-01/2024-03-01"


def typed_frame() -> pd.DataFrame:
    """A frame as ambidex_stage.tables.read_table returns it: categoricals, nullable Int64, UTC timestamps."""
    return pd.DataFrame({
        "id": pd.array([1, 2, 3], dtype="Int64"),
        "ts": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-15T10:00:00.5Z", "2024-01-31T23:59:59.999999Z"], utc=True,
                             format="ISO8601"),
        "plan": pd.Categorical(["pro", None, "basic"], categories=["pro", "basic", "enterprise"]),
        "big": pd.array([9007199254740993, None, -2**63], dtype="Int64"),
        "x": [1.5, None, 3.0],
    })


def test_ingest_table_keeps_types(engine):
    s = fs.MartSpec(name="mem", key=["id"], time_column="ts", load="incremental")
    r = fs.ingest(engine, s, table=typed_frame(), window=JAN)
    assert r.row_count == 3
    assert r.schema["columns"]["plan"] == {"type": "category", "levels": ["pro", "basic", "enterprise"]}
    assert r.schema["columns"]["big"]["type"] == "integer" and r.schema["columns"]["ts"]["type"] == "timestamp"
    df = fs.read_window(engine, "mem", JAN)
    assert list(df["plan"].cat.categories) == ["pro", "basic", "enterprise"] and pd.isna(df["plan"][1])
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]"
    assert df["ts"][2] == pd.Timestamp("2024-01-31T23:59:59.999999Z")
    assert df["big"].dtype == "Int64" and df["big"][0] == 9007199254740993 and pd.isna(df["big"][1])
    assert df["big"][2] == -2**63
    versions = fs.list_data_versions(engine, "mem")
    assert versions[0]["source"].startswith("table:pandas.DataFrame (3 rows x 5 columns")
    # the same rows give the same hash whether they come as a DataFrame, an Arrow table or a CSV
    again = fs.ingest(engine, s, table=pa.Table.from_pandas(typed_frame().iloc[::-1], preserve_index=False),
                      window=JAN, dry_run=True)
    assert again.content_hash == r.content_hash


def test_ingest_table_same_hash_as_csv(engine, csv):
    text = ('id,ts,plan,big,x\n1,2024-01-01T00:00:00Z,pro,9007199254740993,1.5\n2,2024-01-15T10:00:00.5Z,,,\n'
            '3,2024-01-31T23:59:59.999999Z,basic,-9223372036854775808,3\n')
    cols = {"plan": {"type": "category", "levels": ["pro", "basic", "enterprise"]}, "x": {"type": "double"}}
    s = fs.MartSpec(name="mem", key=["id"], time_column="ts", load="incremental", columns=cols)
    from_csv = fs.ingest(engine, s, source=fs.SourceSpec(kind="csv", path=csv("a.csv", text)), window=JAN, dry_run=True)
    from_table = fs.ingest(engine, s, table=typed_frame(), window=JAN, dry_run=True)
    assert from_table.content_hash == from_csv.content_hash


@pytest.mark.parametrize("backend", ["sqlite"])
def test_ingest_table_refuses_bad_input(engine):
    s = fs.MartSpec(name="mem", key=["id"])
    with pytest.raises(DataError) as e:
        fs.ingest(engine, s, table=[{"id": 1}])
    assert e.value.code == "data.source_invalid"
    with pytest.raises(DataError) as e:
        fs.ingest(engine, s, table=typed_frame(), source=fs.SourceSpec(kind="csv", path="x.csv"))
    assert e.value.code == "data.source_invalid"
    naive = typed_frame().assign(ts=lambda d: d["ts"].dt.tz_localize(None))
    with pytest.raises(DataError) as e:
        fs.ingest(engine, fs.MartSpec(name="mem", key=["id"], time_column="ts", load="incremental"), table=naive, window=JAN)
    assert e.value.code == "data.naive_timestamp"
    dup = pd.concat([typed_frame(), typed_frame().iloc[:1]])
    with pytest.raises(DataError) as e:
        fs.ingest(engine, s, table=dup)
    assert e.value.code == "data.duplicate_key" and "{'id': 1}" in str(e.value)
    assert fs.list_marts(engine) == []


def _rows(ids_ts):
    return pd.DataFrame({"id": [i for i, _ in ids_ts], "ts": pd.to_datetime([t for _, t in ids_ts], utc=True),
                         "v": [float(i) for i, _ in ids_ts]})


def test_watermark_load_repeating_a_key_is_refused_naming_it(engine):
    s = fs.MartSpec(name="clicks", key=["id"], load="incremental", incremental_by="watermark", watermark_column="ts")
    fs.ingest(engine, s, table=_rows([(1, "2024-01-01"), (2, "2024-01-02")]))
    with pytest.raises(DataError) as e:
        fs.ingest(engine, s, table=_rows([(3, "2024-01-03"), (2, "2024-01-04")]))
    assert e.value.code == "data.duplicate_key"
    assert "{'id': 2}" in str(e.value) and "version 1" in str(e.value) and "appends" in str(e.value)
    assert e.value.details["key"] == {"id": 2}
    # nothing changed: no row, no version, the watermark is where it was
    assert sorted(fs.read_window(engine, "clicks")["id"]) == [1, 2]
    assert [v["version"] for v in fs.list_data_versions(engine, "clicks")] == [1]
    r = fs.ingest(engine, s, table=_rows([(3, "2024-01-03")]))
    assert (r.version, r.row_count, r.watermark) == (2, 1, "2024-01-03T00:00:00Z")


def test_window_load_repeating_a_key_outside_its_window_is_refused(engine):
    s = fs.MartSpec(name="sales", key=["id"], time_column="ts", load="incremental")
    fs.ingest(engine, s, table=_rows([(1, "2024-01-05"), (2, "2024-01-06")]), window=JAN)
    with pytest.raises(DataError) as e:
        fs.ingest(engine, s, table=_rows([(2, "2024-02-03"), (5, "2024-02-04")]), window=FEB)
    assert e.value.code == "data.duplicate_key" and "{'id': 2}" in str(e.value)
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(data_versions)).scalar() == 1
    # re-loading the window that holds the key replaces it, as before
    assert fs.ingest(engine, s, table=_rows([(2, "2024-01-07")]), window=JAN).replaced_rows == 2


def test_new_mart_indexes_exist_after_load(engine):
    s = fs.MartSpec(name="sales", key=["id"], time_column="ts", load="incremental")
    fs.ingest(engine, s, table=_rows([(1, "2024-01-05"), (2, "2024-01-06")]), window=JAN)
    indexes = {ix["name"]: ix for ix in sa.inspect(engine).get_indexes("sales")}
    assert indexes["ux_sales_key"]["unique"] and indexes["ux_sales_key"]["column_names"] == ["id"]
    assert indexes["ix_sales_time"]["column_names"] == ["ts"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_mart_named_like_a_registry_table_is_refused(engine):
    with pytest.raises(DataError) as e:
        fs.ingest(engine, fs.MartSpec(name="runs", key=["id"]), table=_rows([(1, "2024-01-05")]))
    assert e.value.code == "data.name_taken" and "'runs'" in str(e.value)
    assert fs.list_marts(engine) == []
