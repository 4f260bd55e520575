"""fs_source: reading sources; CSV values spanning lines survive the fast parallel read."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from ambidex import featurestore as fs
from ambidex.errors import DataError
from ambidex.fs_source import _read_csv, table_from_memory


def test_quoted_newlines_across_blocks(tmp_path):
    # ~3 MB, so Arrow's 1 MB blocks split inside quoted values: the fast read fails and the careful one runs
    n = 60_000
    lines = ["id,note"] + [f'{i},"line one\nline {i}, two"' for i in range(n)]
    p = tmp_path / "nl.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t = _read_csv(str(p), fs.MartSpec(name="nl", key=["id"]))
    assert t.num_rows == n and t.column("note")[n - 1].as_py() == f"line one\nline {n - 1}, two"


def test_malformed_row_in_big_file_still_names_its_line(tmp_path):
    lines = ["id,x"] + [f"{i},{i}.5" for i in range(200_000)]
    lines[150_001] = "150000,1,2"
    p = tmp_path / "bad.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 150002"):
        _read_csv(str(p), fs.MartSpec(name="bad", key=["id"]))


def test_table_from_memory_keeps_types():
    df = pd.DataFrame({"c": pd.Categorical(["b", "a"], categories=["b", "a"]), "i": pd.array([1, None], dtype="Int64"),
                       "t": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True)})
    t = table_from_memory(df)
    assert pa.types.is_dictionary(t.schema.field("c").type) and t.column("c").chunk(0).dictionary.to_pylist() == ["b", "a"]
    assert t.schema.field("i").type == pa.int64() and t.column("i").null_count == 1
    assert t.schema.field("t").type.tz == "UTC"
    assert table_from_memory(t) is t
    with pytest.raises(DataError) as e:
        table_from_memory(pd.DataFrame({0: [1]}))
    assert e.value.code == "data.invalid_identifier"
