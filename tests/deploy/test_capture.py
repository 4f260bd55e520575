"""Scoring a window: every live model in its own runtime, exactly-once capture, published output, labels."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from ambidex import deploytables as T
from ambidex.capture import Scorer, parse_window, predictions_with_labels, record_labels
from ambidex.deploy import Deployments, Member, assign_rows
from ambidex.errors import DataError, UsageError
from ambidex.scoring import parts_dir, score_model

from .conftest import churn_frame, events_of, register

W1 = parse_window("2024-06-01T00:00:00Z/2024-06-02T00:00:00Z")
W2 = parse_window("2024-06-02/2024-06-03")


def write_input(path, n=3000, seed=5, start_id=1, drop=()):
    from ambidex_stage.tables import write_table

    df = churn_frame(n, seed=seed, start_id=start_id).drop(columns=["churn", *drop])
    write_table(df, path)
    return path


def make_scorer(engine, store, tmp_path, clock, *, launcher=None, chunk_size=1000, **kw):
    deps = Deployments(engine, store=store, clock=clock, actor="cron")

    def launch(model_dir, inp, out, keep):
        return score_model(model_dir, inp, out, project_root=tmp_path, work_dir=tmp_path / "work", keep=keep,
                           chunk_size=chunk_size)
    return deps, Scorer(deps, launcher or launch, workdir=tmp_path / "sw", publish_dir=tmp_path / "pub",
                        chunk_size=chunk_size, **kw)


def counts(engine):
    with engine.connect() as c:
        return c.execute(sa.select(T.capture_batches.c.role, sa.func.count(T.predictions.c.row_index),
                                   sa.func.sum(sa.case((T.predictions.c.published, 1), else_=0)))
                         .join(T.predictions).group_by(T.capture_batches.c.role).order_by(T.capture_batches.c.role)
                         ).all()


def test_score_twice_gives_one_set_and_publishes_champion_only(engine, store, py_model_dir, tmp_path, clock):
    register(engine, store, py_model_dir, "churn", times=2)
    deps, scorer = make_scorer(engine, store, tmp_path, clock)
    deps.create("d", [Member("churn", 1), Member("churn", 2, "shadow")], entity_key="customer_id")
    inp = write_input(tmp_path / "in.csv")
    rep = scorer.score("d", W1, inp)
    assert [m["status"] for m in rep.members] == ["captured", "captured"]
    again = scorer.score("d", W1, inp)
    assert [m["status"] for m in again.members] == ["skipped", "skipped"]
    assert counts(engine) == [("champion", 3000, 3000), ("shadow", 3000, 0)]
    published = (tmp_path / "pub" / "20240601T000000Z_20240602T000000Z.csv").read_text().splitlines()
    assert len(published) == 3001 and all(line.endswith(',"churn",1,"champion"') for line in published[1:])
    with engine.connect() as c:
        b = c.execute(sa.select(T.capture_batches)).mappings().first()
    assert b["input_ref"].startswith("sha256:") and b["features_mode"] == "reference" and b["revision"] == 1
    assert b["scored_at"] == clock.now
    replaced = scorer.score("d", W1, inp, replace=True)
    assert [m["status"] for m in replaced.members] == ["captured", "captured"]
    assert counts(engine) == [("champion", 3000, 3000), ("shadow", 3000, 0)]
    assert len(events_of(engine, "capture.completed")) == 4


def test_crash_mid_capture_then_resume_gives_exactly_one_set(engine, store, py_model_dir, tmp_path, clock):
    register(engine, store, py_model_dir, "churn")
    inp = write_input(tmp_path / "in.csv")

    def broken(model_dir, i, out, keep):  # a corrupt predictions file: the capture dies in chunk 3
        parts_dir(out).rmdir()  # as a runtime that does not stream: the file is what counts
        res = score_model(model_dir, i, out, project_root=tmp_path, work_dir=tmp_path / "work", keep=keep)
        lines = out.read_text().splitlines()
        lines[2500] = lines[2500].rsplit(",", 1)[0] + ",not-a-number"
        out.write_text("\n".join(lines) + "\n")
        return res

    deps, crashing = make_scorer(engine, store, tmp_path, clock, launcher=broken)
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    with pytest.raises(DataError) as e:
        crashing.score("d", W1, inp)
    assert e.value.code == "contract.invalid_table" and "not-a-number" in e.value.message
    assert counts(engine) == [] and not (tmp_path / "pub" / "20240601T000000Z_20240602T000000Z.csv").exists()
    _, scorer = make_scorer(engine, store, tmp_path, clock)
    scorer.score("d", W1, inp)
    scorer.score("d", W1, inp)
    assert counts(engine) == [("champion", 3000, 3000)]
    with engine.connect() as c:
        idx = c.execute(sa.select(T.predictions.c.row_index).order_by(T.predictions.c.row_index)).scalars().all()
    assert idx == list(range(3000))


def test_streamed_chunks_are_captured_only_when_the_stage_succeeds(engine, store, py_model_dir, tmp_path, clock):
    """The capture reads the chunks the stage hands on while it scores; a stage that then fails, or an output
    file that is not what was streamed, leaves nothing captured and nothing published."""
    register(engine, store, py_model_dir, "churn")
    inp = write_input(tmp_path / "in.csv")
    seen = []

    def streaming(fail):
        def launch(model_dir, i, out, keep):
            res = score_model(model_dir, i, out, project_root=tmp_path, work_dir=tmp_path / "work", keep=keep,
                              chunk_size=1000)
            seen.append(sorted(p.name for p in parts_dir(out).iterdir()))
            if fail == "crash":
                raise RuntimeError("the stage died after its last chunk")
            if fail == "truncate":
                out.write_text("".join(out.read_text().splitlines(keepends=True)[:-1]))
            return res
        return launch

    deps, _ = make_scorer(engine, store, tmp_path, clock)
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    pub = tmp_path / "pub" / "20240601T000000Z_20240602T000000Z.csv"
    with pytest.raises(RuntimeError):
        make_scorer(engine, store, tmp_path, clock, launcher=streaming("crash"))[1].score("d", W1, inp)
    assert seen[-1] == ["part-000000.csv", "part-000001.csv", "part-000002.csv"]
    assert counts(engine) == [] and not pub.exists() and not list(pub.parent.glob(".*tmp*"))
    with pytest.raises(DataError) as e:
        make_scorer(engine, store, tmp_path, clock, launcher=streaming("truncate"))[1].score("d", W1, inp)
    assert e.value.code == "contract.invalid_table" and "handed on while scoring" in e.value.message
    assert counts(engine) == [] and not pub.exists()
    rep = make_scorer(engine, store, tmp_path, clock, launcher=streaming(None))[1].score("d", W1, inp)
    assert [m["status"] for m in rep.members] == ["captured"] and rep.rows == 3000
    assert counts(engine) == [("champion", 3000, 3000)]
    assert len(pub.read_text().splitlines()) == 3001


def test_canary_rows_are_stable_across_windows(engine, store, py_model_dir, tmp_path, clock):
    register(engine, store, py_model_dir, "churn", times=2)
    deps, scorer = make_scorer(engine, store, tmp_path, clock)
    deps.create("d", [Member("churn", 1), Member("churn", 2, "canary", 0.25)], entity_key="customer_id")
    scorer.score("d", W1, write_input(tmp_path / "a.csv", n=2000, start_id=1))
    scorer.score("d", W2, write_input(tmp_path / "b.csv", n=2000, seed=9, start_id=1001))
    with engine.connect() as c:
        rows = c.execute(sa.select(T.capture_batches.c.window_start, T.predictions.c.entity_key, T.capture_batches.c.role)
                         .join(T.predictions).where(T.predictions.c.published)).all()
    by_window: dict = {}
    for w, key, role in rows:
        by_window.setdefault(w, {})[key] = role
    a, b = by_window.values()
    assert len(a) == len(b) == 2000  # every row published exactly once
    overlap = set(a) & set(b)
    assert len(overlap) == 1000 and all(a[k] == b[k] for k in overlap)
    expected = assign_rows("d", sorted(a, key=int), [Member("churn", 2, "canary", 0.25)])
    assert [a[k] for k in sorted(a, key=int)] == ["canary" if x == 0 else "champion" for x in expected]
    assert 0.2 < sum(r == "canary" for r in a.values()) / 2000 < 0.3


def test_missing_input_column_scores_and_captures_nothing(engine, store, py_model_dir, tmp_path, clock):
    register(engine, store, py_model_dir, "churn")
    deps, scorer = make_scorer(engine, store, tmp_path, clock)
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    with pytest.raises(DataError) as e:
        scorer.score("d", W1, write_input(tmp_path / "in.csv", drop=("age",)))
    assert e.value.code == "contract.missing_column" and "age" in e.value.message
    assert counts(engine) == [] and not (tmp_path / "pub").exists()
    with pytest.raises(UsageError):
        parse_window("2024-06-02/2024-06-01")


def test_features_as_json_and_labels_join(engine, store, py_model_dir, tmp_path, clock):
    register(engine, store, py_model_dir, "churn")
    deps, scorer = make_scorer(engine, store, tmp_path, clock, capture_features=True)
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    scorer.score("d", W1, write_input(tmp_path / "in.csv", n=50))
    record_labels(engine, "d", [{"entity_key": 3, "window_start": W1[0], "window_end": W1[1], "label": "yes"},
                                {"entity_key": 4, "window_start": W1[0], "window_end": W1[1], "label": "no"}])
    rows = predictions_with_labels(engine, "d", W1[0])
    assert len(rows) == 50
    labelled = {r["entity_key"]: r["label"] for r in rows if r["label"] is not None}
    assert labelled == {"3": "yes", "4": "no"}
    assert rows[0]["model"] == "churn" and rows[0]["version"] == 1 and rows[0]["revision"] == 1
    with engine.connect() as c:
        f = c.execute(sa.select(T.predictions.c.features).where(T.predictions.c.row_index == 2)).scalar()
    import json
    assert json.loads(f)["customer_id"] == 3


@pytest.mark.r
def test_r_champion_python_shadow_in_one_revision(engine, store, py_model_dir, r_model_dir, tmp_path, clock):
    register(engine, store, r_model_dir, "churn-r")
    register(engine, store, py_model_dir, "churn-py")
    deps, scorer = make_scorer(engine, store, tmp_path, clock)
    deps.create("d", [Member("churn-r", 1), Member("churn-py", 1, "shadow")], entity_key="customer_id")
    rep = scorer.score("d", W1, write_input(tmp_path / "in.csv", n=500))
    assert rep.rows == 500
    assert counts(engine) == [("champion", 500, 500), ("shadow", 500, 0)]
    rows = predictions_with_labels(engine, "d", W1[0])
    r_scores = [r["score"] for r in rows if r["model"] == "churn-r"]
    assert all(0 <= s <= 1 for s in r_scores) and len(set(r_scores)) > 10
    assert dt.timezone.utc == rows[0]["scored_at"].tzinfo


def test_capture_is_exact_and_idempotent_on_every_backend(any_engine, store, py_model_dir, tmp_path, clock):
    """The fast writers (COPY on PostgreSQL, DBAPI executemany elsewhere) store exactly the model's output,
    once per (deployment, window, model version), across chunk boundaries, re-runs, replace and a crash."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    engine = any_engine
    register(engine, store, py_model_dir, "churn", times=2)
    inp = write_input(tmp_path / "in.csv", n=2500)
    calls = {"n": 0}

    def flaky(model_dir, i, out, keep):  # the 2nd model's file loses its last row on the first run only
        parts_dir(out).rmdir()  # as a runtime that does not stream
        res = score_model(model_dir, i, out, project_root=tmp_path, work_dir=tmp_path / "work", keep=keep)
        calls["n"] += 1
        if calls["n"] == 2:
            out.write_text("".join(out.read_text().splitlines(keepends=True)[:-1]))
        return res

    deps, crashing = make_scorer(engine, store, tmp_path, clock, launcher=flaky, chunk_size=700, parallel=1)
    deps.create("d", [Member("churn", 1), Member("churn", 2, "canary", 0.3)], entity_key="customer_id")
    with pytest.raises(DataError) as e:
        crashing.score("d", W1, inp)
    assert "2499 prediction rows for 2500 input rows" in e.value.message
    assert not (tmp_path / "pub" / "20240601T000000Z_20240602T000000Z.csv").exists()
    # the champion's batch committed before the canary's failed; the resume captures the canary only
    assert [r[0] for r in counts(engine)] == ["champion"]
    _, scorer = make_scorer(engine, store, tmp_path, clock, chunk_size=700)
    rep = scorer.score("d", W1, inp)
    assert [m["status"] for m in rep.members] == ["skipped", "captured"]
    assert [m["status"] for m in scorer.score("d", W1, inp).members] == ["skipped", "skipped"]
    scorer.score("d", W1, inp, replace=True)
    got = counts(engine)
    assert [(r, int(n)) for r, n, _ in got] == [("canary", 2500), ("champion", 2500)]
    assert sum(int(p) for _, _, p in got) == 2500  # every row published exactly once

    ref = tmp_path / "ref.csv"
    score_model(py_model_dir, inp, ref, project_root=tmp_path, work_dir=tmp_path / "work", keep=["customer_id"])
    t = pcsv.read_csv(ref, convert_options=pcsv.ConvertOptions(
        column_types={"customer_id": pa.string(), "prediction": pa.string(), "score": pa.float64()}))
    with engine.connect() as c:
        rows = c.execute(sa.select(T.predictions.c.row_index, T.predictions.c.entity_key, T.predictions.c.prediction,
                                   T.predictions.c.score, T.predictions.c.features)
                         .join(T.capture_batches).where(T.capture_batches.c.role == "champion")
                         .order_by(T.predictions.c.row_index)).all()
        batches = c.execute(sa.select(T.capture_batches.c.row_count, T.capture_batches.c.published_rows)).all()
    assert [r[0] for r in rows] == list(range(2500))
    assert [r[1] for r in rows] == t.column("customer_id").to_pylist()
    assert [r[2] for r in rows] == t.column("prediction").to_pylist()
    assert [r[3] for r in rows] == t.column("score").to_pylist()  # bit-exact doubles
    assert all(r[4] is None for r in rows)
    assert sorted(b[0] for b in batches) == [2500, 2500] and sum(b[1] for b in batches) == 2500
    assert len(events_of(engine, "capture.completed")) == 4  # champion, canary on resume, both on replace


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_features_json_capture_streams_and_aligns(backend, store, py_model_dir, tmp_path, clock, server_dbs):
    import json

    from .conftest import make_engine

    engine = make_engine(backend, tmp_path, server_dbs)
    try:
        register(engine, store, py_model_dir, "churn")
        deps, scorer = make_scorer(engine, store, tmp_path, clock, chunk_size=300, capture_features=True)
        deps.create("d", [Member("churn", 1)], entity_key="customer_id")
        scorer.score("d", W1, write_input(tmp_path / "in.csv", n=1000))
        with engine.connect() as c:
            rows = c.execute(sa.select(T.predictions.c.entity_key, T.predictions.c.features)
                             .order_by(T.predictions.c.row_index)).all()
        assert len(rows) == 1000
        assert all(json.loads(f)["customer_id"] == int(k) for k, f in rows)
        assert {json.loads(f)["plan"] for _, f in rows} <= {"basic", "pro", None}
    finally:
        engine.dispose()
