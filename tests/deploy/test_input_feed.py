"""Scoring a window while it is still read from the feature store: the table is handed on part by part
(scoring.InputFeed, ambidex_stage.tables.read_parts), a Python model predicts on the parts as they come, an
R model waits for the whole table; the results are those of scoring the finished table."""
from __future__ import annotations

import json
import threading

import pandas as pd
import pytest

from ambidex.scoring import InputFeed, parts_dir, score_model
from ambidex_stage.errors import ContractError
from ambidex_stage.signature import schema_from_frame
from ambidex_stage.tables import part_writer, read_parts, read_table, write_table, write_table_chunks

from .conftest import churn_frame, register


def _frame(n: int = 230):
    return churn_frame(n).drop(columns=["churn"])


def _writer(df, path, chunk: int = 50, hold=None):
    """``write(on_chunk)`` for InputFeed.start: ``df`` in chunks; with ``hold`` (chunk index, event), it waits
    for the event before that chunk (at most 60 s) and says whether it came."""
    came = {}

    def write(on_chunk):
        def frames():
            for i, lo in enumerate(range(0, len(df), chunk)):
                if hold is not None and i == hold[0]:
                    came["event"] = hold[1].wait(60)
                yield df.iloc[lo:lo + chunk]
        return write_table_chunks(frames(), path, schema_from_frame(df), on_chunk=on_chunk)
    return write, came


def test_read_parts_gives_the_table_as_it_is_written_in_chunks_of_the_size_asked(tmp_path):
    df = _frame(230)
    folder = tmp_path / "parts"
    write = part_writer(folder, schema_from_frame(df)["columns"])
    got = {}
    reader = threading.Thread(target=lambda: got.update(chunks=list(read_parts(folder, 100))))
    reader.start()
    write_table_chunks((df.iloc[lo:lo + 70] for lo in range(0, 230, 70)), tmp_path / "t.csv", schema_from_frame(df),
                       on_chunk=write)
    (folder / "END").write_text(json.dumps({"parts": 4, "rows": 230}))
    reader.join(60)
    assert [len(c) for c in got["chunks"]] == [100, 100, 30]
    pd.testing.assert_frame_equal(pd.concat(got["chunks"], ignore_index=True), read_table(tmp_path / "t.csv"))


def test_read_parts_stops_on_abort_and_on_an_end_that_does_not_add_up(tmp_path):
    df = _frame(60)
    for marker, doc, words in (("ABORT", {"error": "DataError"}, "failed after 1 part"),
                               ("END", {"parts": 2, "rows": 60}, r"1 part\(s\) of 60 rows arrived")):
        folder = tmp_path / marker
        write_table_chunks([df], tmp_path / f"{marker}.csv", schema_from_frame(df),
                           on_chunk=part_writer(folder, schema_from_frame(df)["columns"]))
        (folder / marker).write_text(json.dumps(doc))
        with pytest.raises(ContractError, match=words) as e:
            list(read_parts(folder, 100))
        assert e.value.code == "contract.invalid_table"


def test_read_parts_stops_when_told_or_when_its_folder_goes(tmp_path):
    import shutil

    df = _frame(30)
    folder = tmp_path / "parts"
    write_table_chunks([df], tmp_path / "t.csv", schema_from_frame(df),
                       on_chunk=part_writer(folder, schema_from_frame(df)["columns"]))
    stop = threading.Event()
    stop.set()
    with pytest.raises(ContractError, match="stopped by its reader"):
        list(read_parts(folder, 100, stop=stop))  # the part is read, then it waits for more: told to stop
    shutil.rmtree(folder)  # a writer that could not even mark ABORT removes the folder
    with pytest.raises(ContractError, match="has gone"):
        list(read_parts(folder, 100))


def test_a_python_model_scores_the_parts_while_the_table_is_written(py_model_dir, tmp_path):
    df = _frame(400)
    write_table(df, tmp_path / "whole.csv")
    want = score_model(py_model_dir, tmp_path / "whole.csv", tmp_path / "want.csv", project_root=tmp_path,
                       work_dir=tmp_path / "w", keep=["customer_id"])
    out = tmp_path / "got.csv"
    parts_dir(out).mkdir()
    first = threading.Event()
    # the writer holds its 3rd chunk back until the model has handed on predictions: only a model that
    # scores the parts as they come gets there
    watcher = threading.Thread(target=lambda: _wait_for(parts_dir(out) / "part-000000.csv", first), daemon=True)
    watcher.start()
    write, came = _writer(df, tmp_path / "in.csv", hold=(2, first))
    with InputFeed(tmp_path / "in.csv", schema_from_frame(df)) as feed:
        feed.start(write)
        got = score_model(py_model_dir, tmp_path / "in.csv", out, project_root=tmp_path, work_dir=tmp_path / "w",
                          keep=["customer_id"], chunk_size=100, feed=feed)
        assert feed.wait()["row_count"] == 400
    assert came["event"] is True
    assert got["status"] == want["status"] == "ok"
    pd.testing.assert_frame_equal(read_table(out), read_table(tmp_path / "want.csv"))
    assert not feed.folder.exists()


def test_an_r_model_waits_for_the_whole_table(r_model_dir, tmp_path):
    df = _frame(120)
    write_table(df, tmp_path / "whole.csv")
    score_model(r_model_dir, tmp_path / "whole.csv", tmp_path / "want.csv", project_root=tmp_path,
                work_dir=tmp_path / "w", keep=["customer_id"])
    write, _ = _writer(df, tmp_path / "in.csv")
    with InputFeed(tmp_path / "in.csv", schema_from_frame(df)) as feed:
        feed.start(write)
        score_model(r_model_dir, tmp_path / "in.csv", tmp_path / "got.csv", project_root=tmp_path,
                    work_dir=tmp_path / "w", keep=["customer_id"], feed=feed)
    pd.testing.assert_frame_equal(read_table(tmp_path / "got.csv"), read_table(tmp_path / "want.csv"))


def _wait_for(path, event):
    import time

    for _ in range(6000):
        if path.exists():
            event.set()
            return
        time.sleep(0.01)


def _mart_deployment(workspace, py_model_dir, rows: int = 300):
    from ambidex import featurestore as fs
    from ambidex.cli.main import main as run

    reg = workspace.registry()
    register(reg.engine, reg.store, py_model_dir, "churn")
    df = _frame(rows)
    df["ts"] = pd.Timestamp("2024-06-01", tz="UTC") + pd.to_timedelta(df["customer_id"] % 3600, unit="s")
    fs.ingest(reg.engine, fs.MartSpec(name="churn_fs", key=["customer_id"], time_column="ts", load="incremental"),
              table=df, window="2024-06-01/2024-06-02")
    assert run(["deploy", "create", "d", "--champion", "churn:1", "--key", "customer_id", "--source", "churn_fs"]) == 0
    return reg, run


def test_ambidex_score_streams_a_mart_window_into_the_model_and_captures_it_all(workspace, py_model_dir, capsys):
    reg, run = _mart_deployment(workspace, py_model_dir, 300)
    capsys.readouterr()
    assert run(["score", "d", "--window", "2024-06-01/2024-06-02", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["rows"] == 300 and rep["input_ref"].startswith("data_versions:")
    with reg.engine.connect() as c:
        assert c.exec_driver_sql("SELECT row_count, input_ref FROM capture_batches").all() == [(300, rep["input_ref"])]
        assert c.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 300
    assert len(read_table(rep["published_path"])) == 300
    assert not list((workspace.state_dir / "scoring" / "d").glob("*.parts"))  # the parts are gone


def test_a_window_that_fails_to_export_is_the_error_and_nothing_is_captured(workspace, py_model_dir, capsys,
                                                                            monkeypatch):
    from ambidex import fs_read
    from ambidex.errors import DataError

    import ambidex_stage.tables as tables

    reg, run = _mart_deployment(workspace, py_model_dir, 300)
    original = tables.write_table_chunks  # export_window_for_r imports it when it runs: broken there

    def broken(frames, path, schema, on_chunk=None):
        def some():
            for i, f in enumerate(frames):
                if i == 1:
                    raise DataError("Column 'age' of mart 'churn_fs' cannot be read as double.",
                                    code="data.type_mismatch", hint="Re-ingest the window.")
                yield f
        return original(some(), path, schema, on_chunk=on_chunk)

    monkeypatch.setattr(tables, "write_table_chunks", broken)
    monkeypatch.setattr(fs_read, "_EXPORT_CHUNK", 100)
    capsys.readouterr()
    assert run(["score", "d", "--window", "2024-06-01/2024-06-02", "--json"]) == 1
    err = json.loads(capsys.readouterr().err)
    assert err["code"] == "data.type_mismatch" and "'age'" in err["message"]
    with reg.engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM capture_batches").scalar() == 0
        assert c.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 0
    assert not list((workspace.state_dir / "published").rglob("*.csv"))
