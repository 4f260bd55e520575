"""fs_source: reading sources; CSV values spanning lines survive the fast parallel read."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from ambidex import featurestore as fs
from ambidex.errors import DataError
from ambidex import fs_source
from ambidex.fs_source import _read_csv, table_from_memory


def test_quoted_newlines_across_blocks(tmp_path):
    # ~3 MB, so Arrow's 1 MB blocks split inside quoted values: the fast read fails and the careful one runs
    n = 60_000
    lines = ["id,note"] + [f'{i},"line one\nline {i}, two"' for i in range(n)]
    p = tmp_path / "nl.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t = _read_csv(str(p), fs.MartSpec(name="nl", key=["id"]))
    assert t.num_rows == n and t.column("note")[n - 1].as_py() == f"line one\nline {n - 1}, two"


@pytest.mark.parametrize("in_parts", [False, True])
def test_malformed_row_in_big_file_still_names_its_line(tmp_path, monkeypatch, in_parts):
    if in_parts:  # read even this small file in parts, as a large one is
        monkeypatch.setattr(fs_source, "_PARALLEL_MIN_BYTES", 0)
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


# the convert options _read_csv builds for a mart keyed by an integer id
CONV = pcsv.ConvertOptions(column_types={"id": pa.int64()}, strings_can_be_null=True, quoted_strings_can_be_null=False)


def _serial(p):
    return pcsv.read_csv(p, read_options=pcsv.ReadOptions(use_threads=False),
                         parse_options=pcsv.ParseOptions(newlines_in_values=True), convert_options=CONV)


@pytest.fixture
def parts_always(monkeypatch):
    """Read even a small CSV in parts, as a large one is."""
    monkeypatch.setattr(fs_source, "_PARALLEL_MIN_BYTES", 0)
    return fs_source


@pytest.mark.parametrize("parts", [2, 3])
def test_csv_read_in_parts_equals_one_serial_read(tmp_path, parts_always, parts):
    rows = ['"id","x","note","cat"'] + [
        f'{i},{"" if i % 7 == 0 else i / 4},"{"say ""hi""" if i % 5 == 0 else ""}",{"" if i % 3 else "b"}'
        for i in range(30_000)]
    p = tmp_path / "q.csv"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    t = parts_always._read_csv_parts(p, CONV, parts=parts)
    assert t is not None and t.num_columns == 4 and len(t.column("id").chunks) >= parts
    assert t.equals(_serial(p))
    assert _read_csv(str(p), fs.MartSpec(name="q", key=["id"])).equals(_serial(p))


@pytest.mark.parametrize("where", ["last", "middle"])
def test_csv_cut_inside_a_quoted_value_falls_back_to_one_serial_read(tmp_path, parts_always, where):
    # one value of many lines spans the middle of the file, so the cut falls inside its quotes
    big = "\n".join(f"line {j}" for j in range(20_000))
    head = [f'{i},"short"' + (",z" if where == "middle" else "") for i in range(2_000)]
    tail = [f'{i},"short"' + (",z" if where == "middle" else "") for i in range(2_001, 4_000)]
    mid = f'2000,"{big}\n"' + (",z" if where == "middle" else "")
    p = tmp_path / "span.csv"
    p.write_text("\n".join(["id,note" + (",z" if where == "middle" else "")] + head + [mid] + tail) + "\n", encoding="utf-8")
    assert parts_always._read_csv_parts(p, CONV, parts=2) is None
    t = _read_csv(str(p), fs.MartSpec(name="span", key=["id"]))
    assert t.equals(_serial(p)) and t.num_rows == 4_000
    assert t.column("note")[2000].as_py() == big + "\n"


def test_csv_parts_that_infer_different_types_fall_back(tmp_path, parts_always):
    p = tmp_path / "types.csv"
    p.write_text("id,b\n" + "".join(f"{i},{i}\n" for i in range(30_000)) + "".join(f"{i},{i}.5\n" for i in range(30_000, 40_000)))
    assert parts_always._read_csv_parts(p, CONV, parts=2) is None
    t = _read_csv(str(p), fs.MartSpec(name="types", key=["id"]))
    assert t.schema.field("b").type == pa.float64() and t.equals(_serial(p))

