"""Streaming typed tables: read_table_chunks gives read_table's values across chunk boundaries, and
write_table_chunks writes read_table's bytes, one chunk in memory at a time."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ambidex_stage.errors import ContractError
from ambidex_stage.tables import (prefetch, read_table, read_table_chunks, sidecar_path, write_table,
                                  write_table_chunks)


def mixed_frame(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    text = np.array(["plain", "", "NA", 'quote "q"', "comma, here", "new\nline", "crlf\r\nx", "é✓"], dtype=object)
    df = pd.DataFrame({
        "id": np.arange(n, dtype="int64"),
        "x": rng.normal(size=n),
        "k": pd.array(np.where(rng.uniform(size=n) < 0.2, None, rng.integers(-5, 5, n)), dtype="Int64"),
        "b": pd.array(np.where(rng.uniform(size=n) < 0.2, None, rng.uniform(size=n) < 0.5), dtype="boolean"),
        "s": pd.Series(np.where(rng.uniform(size=n) < 0.1, None, text[rng.integers(0, len(text), n)]), dtype=object),
        "c": pd.Categorical(rng.choice(["lo", "mid", "hi", None], n), categories=["lo", "mid", "hi", "unused"]),
        "t": pd.Series(pd.to_datetime(rng.integers(0, 2_000_000_000, n), unit="s", utc=True))
        .where(rng.uniform(size=n) > 0.1),
    })
    df.loc[3, "x"] = np.nan
    df.loc[4, "x"] = np.inf
    return df


@pytest.mark.parametrize("chunk_rows", [1, 7, 100, 999, 1000, 5000])
def test_chunks_equal_read_table_across_boundaries(tmp_path, chunk_rows):
    p = tmp_path / "t.csv"
    write_table(mixed_frame(), p)
    whole = read_table(p)
    chunks = list(read_table_chunks(p, chunk_rows))
    assert [len(c) for c in chunks[:-1]] == [chunk_rows] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= chunk_rows
    joined = pd.concat(chunks)
    pd.testing.assert_frame_equal(joined, whole)  # values, dtypes, category levels, missing values, index
    assert all(c["c"].cat.categories.tolist() == ["lo", "mid", "hi", "unused"] for c in chunks)


def test_quoted_newlines_on_a_block_boundary(tmp_path):
    # long multi-line text values, so the streaming reader's blocks end inside quoted fields
    n = 4000
    df = pd.DataFrame({"id": np.arange(n, dtype="int64"),
                       "s": [("line\n" * (i % 50)) + f'"{i}",\n' + "x" * (i % 1100) for i in range(n)]})
    p = tmp_path / "nl.csv"
    write_table(df, p)
    assert p.stat().st_size > 2 * (1 << 20)  # more than one 1 MiB block
    pd.testing.assert_frame_equal(pd.concat(read_table_chunks(p, 256)), read_table(p))


def test_empty_table_yields_one_empty_frame_with_dtypes(tmp_path):
    p = tmp_path / "e.csv"
    write_table(mixed_frame().iloc[:0], p)
    (only,) = list(read_table_chunks(p, 10))
    pd.testing.assert_frame_equal(only, read_table(p))


def test_errors_name_the_line_in_the_whole_file(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"id,x\n" + b"".join(b"%d,%d.5\n" % (i, i) for i in range(10)).replace(b"7,7.5", b"7,seven"))
    sidecar_path(p).write_text(json.dumps({"contract_version": 1, "row_count": 10, "columns": [
        {"name": "id", "type": "integer", "nullable": False}, {"name": "x", "type": "double", "nullable": True}]}))
    it = read_table_chunks(p, 3)
    with pytest.raises(ContractError) as e:
        list(it)
    assert e.value.code == "contract.invalid_table" and "line 9" in e.value.message and "'x'" in e.value.message


def test_missing_in_non_nullable_and_row_count_are_checked(tmp_path):
    p = tmp_path / "n.csv"
    p.write_bytes(b"id\n1\n2\n\n4\n")
    sidecar_path(p).write_text(json.dumps({"contract_version": 1, "row_count": 4, "columns": [
        {"name": "id", "type": "integer", "nullable": False}]}))
    with pytest.raises(ContractError) as e:
        list(read_table_chunks(p, 2))
    assert e.value.code == "contract.type_mismatch" and "line 4" in e.value.message
    sidecar_path(p).write_text(json.dumps({"contract_version": 1, "row_count": 5, "columns": [
        {"name": "id", "type": "integer", "nullable": True}]}))
    with pytest.raises(ContractError, match="row_count 5"):
        list(read_table_chunks(p, 2))


def test_wrong_field_count_and_header_are_refused(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(b"a,b\n1,2\n3\n")
    sidecar_path(p).write_text(json.dumps({"contract_version": 1, "row_count": 2, "columns": [
        {"name": "a", "type": "integer", "nullable": True}, {"name": "b", "type": "integer", "nullable": True}]}))
    with pytest.raises(ContractError) as e:
        list(read_table_chunks(p, 1))
    assert e.value.code == "contract.invalid_table"
    p.write_bytes(b"a,c\n1,2\n")
    with pytest.raises(ContractError, match="header"):
        next(read_table_chunks(p, 1))


def test_write_table_chunks_writes_write_tables_bytes(tmp_path):
    df = mixed_frame(500)
    write_table(df, tmp_path / "whole.csv")
    schema = json.loads(sidecar_path(tmp_path / "whole.csv").read_text())
    out = write_table_chunks((df.iloc[lo:lo + 64] for lo in range(0, len(df), 64)), tmp_path / "parts.csv", schema)
    assert out["row_count"] == 500
    assert (tmp_path / "parts.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert json.loads(sidecar_path(tmp_path / "parts.csv").read_text()) == schema


def test_write_table_chunks_hands_each_chunk_on_as_a_table_of_its_own(tmp_path):
    df = mixed_frame(300)
    write_table(df, tmp_path / "whole.csv")
    schema = json.loads(sidecar_path(tmp_path / "whole.csv").read_text())
    got = []
    write_table_chunks((df.iloc[lo:lo + 128] for lo in range(0, len(df), 128)), tmp_path / "o.csv", schema,
                       on_chunk=lambda data, rows: got.append((data, rows)))
    assert [rows for _, rows in got] == [128, 128, 44]
    header, *_ = (tmp_path / "o.csv").read_bytes().partition(b"\n")
    assert all(data.startswith(header + b"\n") for data, _ in got)
    assert header + b"\n" + b"".join(d[len(header) + 1:] for d, _ in got) == (tmp_path / "o.csv").read_bytes()
    for i, (data, rows) in enumerate(got):  # each chunk reads back as the rows it holds
        (tmp_path / f"c{i}.csv").write_bytes(data)
        part = read_table(tmp_path / f"c{i}.csv", {**schema, "row_count": rows})
        pd.testing.assert_frame_equal(part, read_table(tmp_path / "whole.csv").iloc[i * 128:i * 128 + rows]
                                      .reset_index(drop=True))


def test_write_table_chunks_publishes_nothing_when_the_stream_fails(tmp_path):
    schema = {"contract_version": 1, "row_count": 0, "columns": [{"name": "x", "type": "integer", "nullable": False}]}

    def frames():
        yield pd.DataFrame({"x": [1, 2]})
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        write_table_chunks(frames(), tmp_path / "o.csv", schema)
    assert list(tmp_path.iterdir()) == []


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("late")
    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="late"):
        next(it)


def test_prefetch_closed_early_closes_its_generator_source():
    closed = []

    def source():
        try:
            yield from range(100)
        finally:
            closed.append(True)  # e.g. a database connection going back to its pool
    it = prefetch(source())
    assert next(it) == 0
    it.close()
    assert closed == [True]
