"""featurestore: loads, data versions, validity, point-in-time reads and bad input on sqlite, postgresql, mariadb."""
from __future__ import annotations

import datetime as dt
import pandas as pd
import pytest
import sqlalchemy as sa

from ambidex import featurestore as fs
from ambidex import fs_load
from ambidex.fs_conform import _conform
from ambidex.errors import DataError
from ambidex.fstables import data_versions, fs_cat_levels, fs_col_stats, fs_grid, fs_num_bins

UTC = dt.timezone.utc
JAN = "2024-01-01/2024-02-01"
FEB = "2024-02-01/2024-03-01"

ROWS = """id,ts,x,plan,flag,big,note
1,2024-01-01T00:00:00Z,1.5,basic,true,9007199254740993,hi
2,2024-01-15T10:00:00.5Z,,pro,false,-9223372036854775808,""
3,2024-01-31T23:59:59.999999Z,3,basic,,,
4,2024-02-01T00:00:00Z,4,pro,true,5,"a,b"
5,2024-02-10T00:00:00Z,5.25,,false,6,x
"""


def spec(path, **kw):
    base = dict(name="sales", source={"kind": "csv", "path": path}, key=["id"], time_column="ts", load="incremental",
                columns={"plan": {"type": "category", "levels": ["basic", "pro", "enterprise"]}})
    base.update(kw)
    return fs.MartSpec(**base)


def count(engine, table):
    with engine.connect() as c:
        return c.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()


def test_window_load_types_survive_exactly(engine, csv):
    s = spec(csv("a.csv", ROWS))
    r = fs.ingest(engine, s, window=JAN)
    assert (r.version, r.row_count, r.skipped_rows) == (1, 3, 2)
    df = fs.read_window(engine, "sales", JAN)
    assert list(df["id"]) == [1, 2, 3] and str(df["id"].dtype) == "int64"
    assert df["big"].dtype == "Int64" and df["big"][0] == 9007199254740993 and df["big"][1] == -2**63
    assert pd.isna(df["big"][2])
    assert list(df["plan"].cat.categories) == ["basic", "pro", "enterprise"]
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]"
    assert df["ts"][2] == pd.Timestamp("2024-01-31T23:59:59.999999Z")
    assert df["note"][1] == "" and pd.isna(df["note"][2])
    assert df["flag"].dtype == "boolean" and pd.isna(df["flag"][2])
    assert pd.isna(df["x"][1])
    # rehashing what the database gives back reproduces the stored hash, on every backend
    assert r.content_hash == fs.content_hash(_arrow(df, r.schema), r.schema, ["id"])


def _arrow(df, schema):
    import pyarrow as pa

    t = pa.Table.from_pandas(df, preserve_index=False)
    return _conform(t, fs.MartSpec(name="tmp", columns={c: e for c, e in schema["columns"].items()}), None)[0]


def test_a_read_does_not_wait_for_a_writer(engine, csv, tmp_path):
    # reads open deferred transactions: on SQLite they take no write lock, so a window is read (and
    # exported) while a capture's transaction is open on another connection
    fs.ingest(engine, spec(csv("a.csv", ROWS)), window=JAN)
    with engine.begin() as writer:
        writer.exec_driver_sql("CREATE TABLE held (x INTEGER)")  # the write lock is held from here
        assert list(fs.read_window(engine, "sales", JAN)["id"]) == [1, 2, 3]
        assert fs.export_window_for_r(engine, "sales", JAN, tmp_path / "w.csv")["row_count"] == 3


def test_same_rows_same_hash_whatever_order(engine, csv):
    lines = ROWS.strip().split("\n")
    shuffled = "\n".join([lines[0]] + lines[1:][::-1]) + "\n"
    a = fs.ingest(engine, spec(csv("a.csv", ROWS)), window=JAN, dry_run=True)
    b = fs.ingest(engine, spec(csv("b.csv", shuffled)), window=JAN, dry_run=True)
    assert a.content_hash == b.content_hash
    assert a.content_hash == PINNED


# The hash is a pure function of the rows; pinned here, so every backend must store exactly this.
PINNED = "sha256:5e7f7d83e0b8971f94142064f18652bc15b60ccbc3929d8d1f2d99d4c5bf47c9"


def test_hash_is_the_same_on_every_backend(engine, csv):
    r = fs.ingest(engine, spec(csv("a.csv", ROWS)), window=JAN)
    with engine.connect() as c:
        stored = c.execute(sa.select(data_versions.c.content_hash)).scalar_one()
    assert stored == r.content_hash == PINNED


def test_reload_window_replaces_never_duplicates(engine, csv):
    s = spec(csv("a.csv", ROWS))
    fs.ingest(engine, s, window=JAN)
    fs.ingest(engine, s, window=FEB)
    changed = ROWS.replace("1,2024-01-01T00:00:00Z,1.5", "1,2024-01-01T00:00:00Z,7.5").replace(
        "3,2024-01-31T23:59:59.999999Z,3,basic,,,\n", "")
    r = fs.ingest(engine, spec(csv("b.csv", changed)), window=JAN)
    assert (r.version, r.row_count, r.replaced_rows) == (3, 2, 3)
    jan = fs.read_window(engine, "sales", JAN)
    assert list(jan["id"]) == [1, 2] and jan["x"][0] == 7.5
    assert list(fs.read_window(engine, "sales", FEB)["id"]) == [4, 5]
    assert count(engine, "sales") == 4 and count(engine, "sales__hist") == 3
    # history: version 1 is still readable exactly, and the state as of before v3 too
    v1 = fs.read_window(engine, "sales", version=1)
    assert list(v1["id"]) == [1, 2, 3] and v1["x"][0] == 1.5
    with engine.connect() as c:
        t2 = c.execute(sa.select(data_versions.c.created_at).where(data_versions.c.version == 2)).scalar_one()
    old = fs.read_window(engine, "sales", JAN, as_of=t2)
    assert sorted(old["id"]) == [1, 2, 3]
    versions = fs.list_data_versions(engine, "sales")
    assert [v["replaced_by"] for v in versions] == [3, None, None]


def test_failure_mid_load_leaves_mart_unchanged(engine, csv, monkeypatch):
    s = spec(csv("a.csv", ROWS))
    fs.ingest(engine, s, window=JAN)
    before = fs.read_window(engine, "sales", JAN)

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(fs_load, "_write_profiles", boom)  # after the rows were moved and inserted
    with pytest.raises(RuntimeError):
        fs.ingest(engine, spec(csv("b.csv", ROWS.replace("1.5", "9.5"))), window=JAN)
    pd.testing.assert_frame_equal(fs.read_window(engine, "sales", JAN), before)
    assert count(engine, "sales__hist") == 0
    assert [v["version"] for v in fs.list_data_versions(engine, "sales")] == [1]
    monkeypatch.undo()
    assert fs.ingest(engine, s, window=JAN).version == 2  # version numbers stay dense


def test_failed_first_load_leaves_nothing(engine, csv, monkeypatch):
    monkeypatch.setattr(fs_load, "_write_profiles", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        fs.ingest(engine, spec(csv("a.csv", ROWS)), window=JAN)
    assert fs.list_marts(engine) == []
    assert not sa.inspect(engine).has_table("sales")


def test_full_load_keeps_history_and_reads_version_current_at_window(engine, csv):
    s = spec(csv("a.csv", ROWS), load="full", time_column=None)
    fs.ingest(engine, s, window="2024-01-01/2024-02-01")
    fs.ingest(engine, spec(csv("b.csv", ROWS.replace("1.5", "2.5")), load="full", time_column=None),
              window="2024-02-01/2024-03-01")
    assert count(engine, "sales") == 5
    assert fs.read_window(engine, "sales", "2024-01-01/2024-02-01")["x"][0] == 1.5
    assert fs.read_window(engine, "sales", "2024-02-01/2024-03-01")["x"][0] == 2.5
    assert fs.read_window(engine, "sales", "2024-05-01/2024-06-01")["x"][0] == 2.5
    with pytest.raises(DataError) as e:
        fs.read_window(engine, "sales", "2023-01-01/2023-02-01")
    assert e.value.code == "data.window_invalid"


def test_watermark_appends_only_newer_rows(engine, csv):
    s = spec(csv("a.csv", ROWS), incremental_by="watermark", watermark_column="ts", time_column=None)
    assert fs.ingest(engine, s).row_count == 5
    more = ROWS + "6,2024-03-01T00:00:00Z,6,pro,true,7,y\n"
    r = fs.ingest(engine, spec(csv("b.csv", more), incremental_by="watermark", watermark_column="ts", time_column=None))
    assert (r.row_count, r.skipped_rows, r.watermark) == (1, 5, "2024-03-01T00:00:00Z")
    assert count(engine, "sales") == 6


def test_profiles_stored_per_version(engine, csv):
    r = fs.ingest(engine, spec(csv("a.csv", ROWS)), window=JAN)
    with engine.connect() as c:
        st = {x.column_name: x for x in c.execute(sa.select(fs_col_stats).where(
            fs_col_stats.c.data_version_id == r.data_version_id))}
        levels = dict(c.execute(sa.select(fs_cat_levels.c.level, fs_cat_levels.c.cnt).where(
            fs_cat_levels.c.column_name == "plan")).all())
        bins = c.execute(sa.select(sa.func.sum(fs_num_bins.c.cnt)).where(fs_num_bins.c.column_name == "x")).scalar()
        grid = c.execute(sa.select(sa.func.count()).select_from(fs_grid).where(fs_grid.c.column_name == "x")).scalar()
    assert (st["x"].n, st["x"].n_missing, st["x"].sum, st["x"].min, st["x"].max, st["x"].median_exact) == (3, 1, 4.5, 1.5, 3, 2.25)
    assert levels == {"basic": 2, "pro": 1}
    assert bins == 3 and grid == 2  # discrete grid (<= 20 values) frozen from the first version
    assert fs.load_grids(engine, "sales")["x"].kind == "discrete"


def test_schema_change_refused_unless_evolve(engine, csv):
    fs.ingest(engine, spec(csv("a.csv", ROWS)), window=JAN)
    extra = ROWS.replace("note\n", "note,score\n", 1)
    extra = "\n".join(line + (",1" if i else "") for i, line in enumerate(extra.strip().split("\n"))) + "\n"
    extra = extra.replace("note,score,1", "note,score")
    with pytest.raises(DataError) as e:
        fs.ingest(engine, spec(csv("b.csv", extra)), window=FEB)
    assert e.value.code == "data.schema_mismatch" and "score" in str(e.value)
    r = fs.ingest(engine, spec(csv("b.csv", extra), schema_policy="evolve"), window=FEB)
    assert r.schema_changes == [{"change": "add_column", "column": "score", "type": "integer"}]
    df = fs.read_window(engine, "sales", "2024-01-01/2024-03-01")
    assert list(df["score"].isna()) == [True, True, True, False, False]
    assert fs.list_data_versions(engine, "sales")[1]["schema_changes"][0]["column"] == "score"
    dropped = "\n".join(",".join(line.split(",")[:6]) for line in ROWS.strip().split("\n")) + "\n"
    with pytest.raises(DataError, match="missing columns note"):
        fs.ingest(engine, spec(csv("c.csv", dropped), schema_policy="evolve"), window=FEB)
    retyped = ROWS.replace("1,2024-01-01T00:00:00Z,1.5", "1,2024-01-01T00:00:00Z,abc")
    with pytest.raises(DataError, match="x"):
        fs.ingest(engine, spec(csv("d.csv", retyped)), window=JAN)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_malformed_csv_names_line(engine, csv):
    bad = ROWS.replace("3,2024-01-31T23:59:59.999999Z,3,basic,,,", "3,2024-01-31T23:59:59Z,3")
    with pytest.raises(DataError) as e:
        fs.ingest(engine, spec(csv("a.csv", bad)), window=JAN)
    assert e.value.code == "data.invalid_csv" and "line 4" in str(e.value)
    bad = ROWS.replace("5.25", "five")
    declared = {"plan": {"type": "category"}, "x": {"type": "double"}}
    with pytest.raises(DataError, match="line 6, column 'x'"):
        fs.ingest(engine, spec(csv("b.csv", bad), columns=declared), window=JAN)


def test_duplicate_key_refused_with_sample(engine, csv, statements):
    dup = ROWS + "2,2024-01-20T00:00:00Z,1,pro,true,1,z\n"
    with pytest.raises(DataError) as e:
        fs.ingest(engine, spec(csv("a.csv", dup)), window=JAN)
    assert e.value.code == "data.duplicate_key" and "{'id': 2}" in str(e.value)
    assert not any("INSERT" in s.upper() for s in statements)


def test_naive_timestamps_refused_unless_configured(engine, csv):
    naive = ROWS.replace("Z,", ",")
    with pytest.raises(DataError) as e:
        fs.ingest(engine, spec(csv("a.csv", naive)), window=JAN)
    assert e.value.code == "data.naive_timestamp" and "'ts'" in str(e.value)
    berlin_jan = "2023-12-31T23:00:00Z/2024-01-31T23:00:00Z"
    r = fs.ingest(engine, spec(csv("a.csv", naive), naive_timestamps="Europe/Berlin"), window=berlin_jan)
    df = fs.read_window(engine, "sales", berlin_jan)
    assert r.row_count == 3 and list(df["id"]) == [1, 2, 3] and df["ts"][0] == pd.Timestamp("2023-12-31T23:00:00Z")


@pytest.mark.parametrize("bad", ['x"; DROP TABLE runs;--', "1abc", "a" * 64, "na-me"])
def test_malicious_identifier_refused_before_any_sql(engine, csv, statements, bad):
    with pytest.raises(DataError) as e:
        fs.MartSpec(name=bad)
    assert e.value.code == "data.invalid_identifier"
    header = ROWS.replace("note", bad.replace('"', '""').join('""') if '"' in bad else bad, 1)
    with pytest.raises(DataError) as e:
        fs.ingest(engine, spec(csv("a.csv", header)), window=JAN)
    assert e.value.code == "data.invalid_identifier"
    assert statements == []
    assert sa.inspect(engine).has_table("runs")


def test_reserved_words_and_mixed_case_columns(engine, csv):
    text = 'id,"Select",Order,ts\n1,a,2,2024-01-01T00:00:00Z\n'
    fs.ingest(engine, fs.MartSpec(name="Mixed_Case", source={"kind": "csv", "path": csv("m.csv", text)}, key=["id"]))
    df = fs.read_window(engine, "Mixed_Case")
    assert list(df.columns) == ["id", "Select", "Order", "ts"] and df["Order"][0] == 2


def test_export_window_for_r(engine, csv, tmp_path):
    from ambidex_stage.tables import read_table

    fs.ingest(engine, spec(csv("a.csv", ROWS)), window=JAN)
    out = fs.export_window_for_r(engine, "sales", JAN, tmp_path / "w" / "sales.csv")
    assert out["row_count"] == 3 and out["data_versions"] == [1]
    cols = {c["name"]: c for c in out["columns"]}
    assert cols["plan"]["levels"] == ["basic", "pro", "enterprise"] and cols["id"]["nullable"] is False
    back = read_table(tmp_path / "w" / "sales.csv")
    assert back["big"][0] == 9007199254740993 and back["note"][1] == "" and pd.isna(back["note"][2])
    assert list(back["plan"].cat.categories) == ["basic", "pro", "enterprise"]


def test_parquet_source(engine, tmp_path):
    df = pd.DataFrame({"id": [1, 2], "ts": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
                       "plan": pd.Categorical(["b", "a"], categories=["b", "a"])})
    p = tmp_path / "a.parquet"
    df.to_parquet(p)
    r = fs.ingest(engine, fs.MartSpec(name="pq", source={"kind": "parquet", "path": str(p)}, key=["id"]))
    assert r.schema["columns"]["plan"] == {"type": "category", "levels": ["b", "a"]}
    assert list(fs.read_window(engine, "pq")["plan"].cat.categories) == ["b", "a"]


def test_sql_source_from_env_url(engine, tmp_path, monkeypatch):
    src = sa.create_engine(f"sqlite:///{tmp_path / 'src.db'}")
    with src.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (id INTEGER, amount REAL, day TEXT)")
        c.exec_driver_sql("INSERT INTO t VALUES (1, 2.5, '2024-01-05T00:00:00Z'), (2, 3.5, '2024-02-05T00:00:00Z')")
    src.dispose()
    monkeypatch.setenv("SRC_DB_URL", f"sqlite:///{tmp_path / 'src.db'}")
    s = fs.MartSpec(name="remote", key=["id"], time_column="day", load="incremental",
                    source={"kind": "sql", "url_env": "SRC_DB_URL",
                            "query": "SELECT id, amount, day FROM t WHERE day >= :lo"}, )
    with pytest.raises(DataError, match=":lo"):
        fs.ingest(engine, s, window=JAN)
    s = s.model_copy(update={"source": fs.SourceSpec(kind="sql", url_env="SRC_DB_URL", params={"lo": "2024"},
                                                     query="SELECT id, amount, day FROM t WHERE day >= :lo")})
    r = fs.ingest(engine, s, window=JAN)
    assert r.row_count == 1 and "SRC_DB_URL" in fs.list_data_versions(engine, "remote")[0]["source"]
    with pytest.raises(Exception, match="url_env"):
        fs.SourceSpec(kind="sql", url_env="postgresql://u:p@h/db", query="SELECT 1")


def test_category_value_outside_levels_refused(engine, csv):
    with pytest.raises(DataError) as e:
        fs.ingest(engine, spec(csv("a.csv", ROWS.replace("pro,false", "gold,false"))), window=JAN)
    assert e.value.code == "data.unknown_level" and "gold" in str(e.value)


def test_window_validation():
    with pytest.raises(DataError) as e:
        fs.parse_window("2024-02-01/2024-01-01")
    assert e.value.code == "data.window_invalid"
    with pytest.raises(DataError) as e:
        fs.parse_window("2024-01-01T00:00:00/2024-02-01")
    assert e.value.code == "data.naive_timestamp"
    w = fs.parse_window("2024-03-31T00:00:00+02:00/2024-04-01")
    assert w.start == dt.datetime(2024, 3, 30, 22, tzinfo=UTC)


def test_many_rows_of_every_type_survive_exactly_and_hash_in_any_order(engine):
    """More rows than one multi-row INSERT statement holds (and a remainder), every type with gaps; rows
    given in key order (the one-pass path) and shuffled (the sort path) hash alike."""
    import numpy as np

    n = 1_237
    rng = np.random.default_rng(5)
    x = rng.normal(size=n)
    x[::17] = np.nan
    df = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64) * 3,
        "ts": pd.to_datetime(rng.integers(1_700_000_000_000_000, 1_710_000_000_000_000, n), unit="us", utc=True).as_unit("ns"),
        "x": x,
        "big": pd.array([None if i % 11 == 0 else (2**62 + i) * (-1) ** i for i in range(n)], dtype="Int64"),
        "plan": pd.Categorical(rng.choice(["basic", "pro", None], n), categories=["pro", "basic", "enterprise"]),
        "flag": pd.array([None if i % 7 == 0 else bool(i % 2) for i in range(n)], dtype="boolean"),
        "note": [None if i % 5 == 0 else f"n\u00e9{i}'\"," for i in range(n)],
    })
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    dry = fs.ingest(engine, fs.MartSpec(name="big", key=["id"]), table=shuffled, dry_run=True)
    r = fs.ingest(engine, fs.MartSpec(name="big", key=["id"]), table=df)
    assert r.content_hash == dry.content_hash
    back = fs.read_window(engine, "big")
    pd.testing.assert_frame_equal(back, df, check_categorical=True)
    assert r.content_hash == fs.content_hash(_arrow(back, r.schema), r.schema, ["id"])


def test_stored_value_outside_schema_fails_the_read_naming_the_column_and_export_publishes_nothing(
        engine, tmp_path, monkeypatch):
    """A row altered in the database behind the feature store's back (a level its schema does not know):
    read_window names the column; the streamed export fails in a later chunk and leaves no file."""
    df = pd.DataFrame({"id": range(10), "plan": pd.Categorical(["basic", "pro"] * 5)})
    fs.ingest(engine, fs.MartSpec(name="plans", key=["id"]), table=df)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE plans SET plan = 'gold' WHERE id = 8"))
    with pytest.raises(DataError) as e:
        fs.read_window(engine, "plans")
    assert e.value.code == "data.type_mismatch" and "'plan'" in e.value.message and "gold" in e.value.message
    monkeypatch.setattr("ambidex.fs_read._EXPORT_CHUNK", 3)  # the bad row is in the third chunk
    out = tmp_path / "export" / "plans.csv"
    with pytest.raises(DataError) as e:
        fs.export_window_for_r(engine, "plans", None, out)
    assert e.value.code == "data.type_mismatch" and "'plan'" in e.value.message
    assert list(out.parent.iterdir()) == []
