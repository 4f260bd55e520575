"""registry: runs, params, metrics, model versions and events on SQLite, PostgreSQL and MariaDB."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import threading
import textwrap

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ambidex import tables as T
from ambidex.errors import ArtifactError, ContractError, RegistryError
from ambidex.registry import Registry

UTC = dt.timezone.utc
W = (dt.datetime(2024, 3, 1, tzinfo=UTC), dt.datetime(2024, 4, 1, tzinfo=UTC))


def test_run_round_trip(registry, tmp_path):
    run_id = registry.start_run("pipeline", pipeline="churn", window=W,
                                lineage={"git_commit": "abc123", "git_dirty": True, "config_hash": "f" * 64})
    registry.log_params(run_id, {"C": 0.5, "features": ["a", "b"], "when": W[0]})
    registry.log_params(run_id, {"depth": 3}, prefix="train")
    registry.log_metrics(run_id, [{"name": "loss", "value": 0.9, "step": 0}, ("loss", 0.7, 1), ("auc", 0.8)],
                         stage="train", window=W)
    t0 = dt.datetime(2024, 3, 10, 12, tzinfo=UTC)
    registry.record_stage_run(run_id, "train", lang="r", runner="rscript", status="FINISHED", exit_code=0,
                              started_at=t0, ended_at=t0 + dt.timedelta(seconds=2), wall_seconds=2.0,
                              cpu_seconds=1.5, peak_rss_bytes=2**33, script_hash="s" * 64, log_dir=tmp_path)
    report = tmp_path / "report.html"
    report.write_text("<h1>ok</h1>")
    digest = registry.log_artifact(run_id, report, stage="report", kind="report")
    registry.end_run(run_id, "FINISHED")
    registry.end_run(run_id, "FINISHED")  # idempotent

    run = registry.get_run(run_id)
    assert run["status"] == "FINISHED" and run["pipeline"] == "churn" and run["kind"] == "pipeline"
    assert (run["window_start"], run["window_end"]) == W and run["started_at"].tzinfo == UTC
    assert run["git_commit"] == "abc123" and run["git_dirty"] is True and run["lineage"]["config_hash"] == "f" * 64
    assert run["params"] == {"C": 0.5, "features": ["a", "b"], "when": "2024-03-01T00:00:00Z", "train.depth": 3}
    assert [(m["name"], m["value"], m["step"], m["stage"]) for m in run["metrics"]] == [
        ("auc", 0.8, 0, "train"), ("loss", 0.9, 0, "train"), ("loss", 0.7, 1, "train")]
    assert run["metrics"][0]["window"] == "2024-03-01T00:00:00Z/2024-04-01T00:00:00Z"
    (sr,) = run["stage_runs"]
    assert sr["lang"] == "r" and sr["peak_rss_bytes"] == 2**33 and sr["started_at"] == t0
    assert run["artifacts"][0]["sha256"] == digest == hashlib.sha256(b"<h1>ok</h1>").hexdigest()
    assert [r["id"] for r in registry.list_runs(pipeline="churn")] == [run_id]
    assert registry.list_runs(experiment="nope") == []
    assert [e["kind"] for e in registry.list_events()] == ["run.finished", "run.started"]
    with pytest.raises(RegistryError) as e:
        registry.end_run(run_id, "FAILED")
    assert e.value.code == "registry.conflict"


def test_unknown_run_is_not_found(registry):
    for call in (lambda: registry.get_run("0" * 32), lambda: registry.log_metrics("0" * 32, [("a", 1)]),
                 lambda: registry.log_params("0" * 32, {"a": 1}), lambda: registry.end_run("0" * 32)):
        with pytest.raises(RegistryError) as e:
            call()
        assert e.value.code == "registry.not_found" and "ambidex runs list" in str(e.value)


def test_record_stage_run_again_replaces_it(registry):
    run_id = registry.start_run("pipeline", pipeline="p")
    t = dt.datetime(2024, 1, 1, tzinfo=UTC)
    kw = dict(lang="python", runner="subprocess", exit_code=1, started_at=t, ended_at=t, wall_seconds=1,
              cpu_seconds=1, peak_rss_bytes=1, script_hash=None, log_dir=None)
    registry.record_stage_run(run_id, "train", status="FAILED", error_code="stage.crashed", **kw)
    registry.record_stage_run(run_id, "train", status="FINISHED", **{**kw, "exit_code": 0})
    (sr,) = registry.get_run(run_id)["stage_runs"]
    assert (sr["status"], sr["exit_code"], sr["error_code"]) == ("FINISHED", 0, None)


def test_params_conflict_and_same_value_no_op(registry):
    run_id = registry.start_run("experiment", experiment="e")
    registry.log_params(run_id, {"C": 1.0, "flag": True, "name": "x"})
    registry.log_params(run_id, {"C": 1, "name": "x"})  # same value (1 == 1.0): no-op
    with pytest.raises(RegistryError) as e:
        registry.log_params(run_id, {"new": 1, "C": 2.0})
    assert e.value.code == "registry.conflict" and "C: logged 1.0, now 2.0" in e.value.message
    with pytest.raises(RegistryError, match="registry.conflict|different"):
        registry.log_params(run_id, {"flag": 1})  # True is not 1
    assert registry.get_run(run_id)["params"] == {"C": 1.0, "flag": True, "name": "x"}  # 'new' rolled back


def test_metrics_values_steps_and_non_finite(registry):
    run_id = registry.start_run("experiment", experiment="e")
    registry.log_metrics(run_id, [("loss", float("nan"), 0), ("loss", None, 1), ("loss", 1e-300, 2)])
    assert [(m["step"], m["value"]) for m in registry.get_run(run_id)["metrics"]] == [(0, None), (1, None), (2, 1e-300)]
    with pytest.raises(RegistryError) as e:
        registry.log_metrics(run_id, [("ok", 1.0), ("bad", float("inf"))])
    assert e.value.code == "registry.invalid_value" and "bad" in e.value.message
    with pytest.raises(RegistryError):
        registry.log_metrics(run_id, [("bad", "high")])
    assert len(registry.get_run(run_id)["metrics"]) == 3


def test_ten_thousand_metric_points_in_one_executemany_transaction(registry, engine):
    run_id = registry.start_run("experiment", experiment="e")
    points = [{"name": f"m{i % 10}", "value": i / 7, "step": i // 10} for i in range(10_000)]
    statements, commits = [], []

    def on_execute(conn, cursor, statement, params, context, executemany):
        statements.append((statement, executemany))

    def on_commit(conn):
        commits.append(1)

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    sa.event.listen(engine, "commit", on_commit)
    try:
        registry.log_metrics(run_id, points, stage="train")
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)
        sa.event.remove(engine, "commit", on_commit)
    inserts = [(s, many) for s, many in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(commits) == 1 and len(inserts) == 1 and inserts[0][1] is True
    metrics = registry.get_run(run_id)["metrics"]
    assert len(metrics) == 10_000 and metrics[-1] == {"name": "m9", "value": 9999 / 7, "step": 999,
                                                      "stage": "train", "window": None}


def test_register_round_trip(registry, make_model, store):
    run_id = registry.start_run("pipeline", pipeline="churn")
    src = make_model("churn", extra={"extra/notes.txt": b"n"})
    mv = registry.register_model_version("churn", src, run_id=run_id, stage="train",
                                         lineage={"run_id": run_id, "stage": "train", "config_hash": "c"},
                                         resources={"train_wall_seconds": 1.5})
    assert (mv.name, mv.version, mv.status, mv.path) == ("churn", 1, "READY", "models/churn/1")
    assert (mv.language, mv.task, mv.run_id, mv.stage, mv.created_by) == (
        "python", "binary_classification", run_id, "train", "tester")
    assert mv.created_at.tzinfo == UTC
    m = mv.manifest
    assert m["version"] == 1 and m["lineage"]["config_hash"] == "c" and m["resources"]["train_wall_seconds"] == 1.5
    assert set(m["files"]) == {"model.joblib", "extra/notes.txt"}
    assert m["resources"]["payload_bytes"] == m["files"]["model.joblib"]["size"]
    on_disk = (store.root / mv.path / "model.json").read_bytes()
    assert json.loads(on_disk) == m and hashlib.sha256(on_disk).hexdigest() == mv.manifest_sha256
    assert json.loads((src / "model.json").read_text())["version"] is None  # the source is untouched
    assert registry.model_path(mv) == (store.root / mv.path).resolve()
    assert registry.get_model_version("churn") == mv == registry.get_model_version("churn", 1)
    (listed,) = registry.list_models()
    assert (listed["name"], listed["latest_version"], listed["n_versions"], listed["language"]) == (
        "churn", 1, 1, "python")
    assert [v.version for v in registry.list_versions("churn")] == [1]
    assert registry.get_run(run_id)["model_versions"] == [
        {"name": "churn", "version": 1, "status": "READY", "stage": "train"}]
    (ev,) = registry.list_events(kind="model_version.registered")
    assert ev["entity_id"] == "churn/1" and ev["payload"]["manifest_sha256"] == mv.manifest_sha256
    assert registry.verify() == []
    assert list((store.root / ".staging").iterdir()) == []


def test_invalid_manifests_are_refused_and_leave_nothing(registry, make_model, store):
    cases = [({"contract_version": 2}, "contract.version_unsupported"),
             ({"contract_version": "1"}, "contract.invalid_manifest"),
             ({"runtime": {"format": "joblib"}}, "contract.invalid_manifest"),
             ({"runtime": {"payload": "missing.joblib", "format": "joblib"}}, "contract.invalid_manifest"),
             ({"runtime": {"payload": "../../etc/passwd", "format": "joblib"}}, "contract.invalid_manifest")]
    for overrides, code in cases:
        with pytest.raises(ContractError) as e:
            registry.register_model_version("churn", make_model("churn", **overrides))
        assert e.value.code == code, overrides
    with pytest.raises(ContractError, match="registered as 'churn'"):
        registry.register_model_version("churn", make_model("other"))
    bad = make_model("churn")
    (bad / "model.json").write_text("{not json")
    with pytest.raises(ContractError, match="not valid JSON"):
        registry.register_model_version("churn", bad)
    assert list((store.root / ".staging").iterdir()) == [] and registry.list_models() == []


def test_failure_mid_publish_leaves_no_ready_version(registry, make_model, store, engine, monkeypatch):
    real_publish = store.publish

    def publish_then_fail(staging, name, version):
        real_publish(staging, name, version)  # the folder is in place ...
        raise OSError(28, "No space left on device")  # ... and then the disk fills up

    monkeypatch.setattr(store, "publish", publish_then_fail)
    with pytest.raises(OSError, match="No space"):
        registry.register_model_version("churn", make_model())
    monkeypatch.undo()
    with pytest.raises(RegistryError) as e:
        registry.get_model_version("churn")
    assert e.value.code == "registry.not_found" and "ambidex models list" in e.value.hint
    assert registry.list_models() == []
    with engine.connect() as c:
        assert c.execute(sa.select(T.model_versions.c.version, T.model_versions.c.status)).all() == [(1, "FAILED")]
    assert not (store.root / "models" / "churn" / "1").exists()
    assert list((store.root / ".staging").iterdir()) == []
    assert [e["kind"] for e in registry.list_events(kind="model_version.failed")] == ["model_version.failed"]

    mv = registry.register_model_version("churn", make_model())  # the next one is fine
    assert mv.version == 2 and [v.version for v in registry.list_versions("churn")] == [2]
    for bad in (1, 3):
        with pytest.raises(RegistryError, match="no READY version"):
            registry.get_model_version("churn", bad)


def test_process_killed_mid_publish_leaves_no_ready_version(engine, store, make_model, registry):
    """A real crash (os._exit between rename and READY) leaves a PENDING row that is never served."""
    src = make_model()
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from ambidex.artifacts import ArtifactStore
        from ambidex.db import connect
        from ambidex.registry import Registry

        class Crashing(ArtifactStore):
            def publish(self, staging, name, version):
                super().publish(staging, name, version)
                os._exit(9)

        Registry(connect({engine.url.render_as_string(hide_password=False)!r}), Crashing(Path({str(store.root)!r}))).register_model_version(
            "churn", Path({str(src)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    with engine.connect() as c:
        assert c.execute(sa.select(T.model_versions.c.status)).scalars().all() == ["PENDING"]
    with pytest.raises(RegistryError, match="no READY version"):
        registry.get_model_version("churn")
    assert registry.list_models() == [] and registry.verify() == []
    assert registry.register_model_version("churn", make_model()).version == 2


def test_concurrent_registrations_get_distinct_consecutive_versions(engine, store, make_model, clock):
    n = 8
    sources = [make_model() for _ in range(n)]
    results, errors = [], []
    barrier = threading.Barrier(n)

    def register(src):
        reg = Registry(engine, store, clock=clock, actor="thread")
        barrier.wait()
        try:
            results.append(reg.register_model_version("churn", src).version)
        except Exception as exc:  # pragma: no cover - reported by the assert
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == list(range(1, n + 1))
    reg = Registry(engine, store, clock=clock)
    assert [v.version for v in reg.list_versions("churn")] == list(range(1, n + 1))
    assert reg.verify() == []


def test_clock_stepped_back_still_gives_increasing_versions(engine, store, make_model):
    t = dt.datetime(2024, 10, 27, 2, 30, tzinfo=UTC)
    times = iter([t, t, t, t - dt.timedelta(hours=1)] * 10)
    reg = Registry(engine, store, clock=lambda: next(times), actor="a")
    v1 = reg.register_model_version("churn", make_model())
    v2 = reg.register_model_version("churn", make_model())
    assert (v1.version, v2.version) == (1, 2) and reg.get_model_version("churn").version == 2
    assert v2.created_at <= v1.created_at  # times are recorded as given, order comes from versions


def test_hash_mismatch_is_refused_by_model_path(registry, make_model, store):
    mv = registry.register_model_version("churn", make_model())
    payload = store.root / mv.path / "model.joblib"
    payload.write_bytes(payload.read_bytes() + b"x")
    with pytest.raises(ArtifactError) as e:
        registry.model_path(mv)
    assert e.value.code == "artifact.hash_mismatch" and "models/churn/1/model.joblib" in e.value.message
    assert [(p["name"], p["version"], p["problem"]) for p in registry.verify()] == [("churn", 1, "size")]


def test_verify_catches_a_rewritten_manifest(registry, make_model, store):
    mv = registry.register_model_version("churn", make_model())
    manifest = store.root / mv.path / "model.json"
    manifest.write_text(manifest.read_text().replace('"auc": 0.81', '"auc": 0.99'))
    assert [p["problem"] for p in registry.verify()] == ["sha256"]
    with pytest.raises(ArtifactError, match="model.json"):
        registry.model_path(mv)


def test_delete_run_refused_while_a_model_references_it(registry, make_model):
    keep = registry.start_run("pipeline", pipeline="p")
    registry.register_model_version("churn", make_model(), run_id=keep)
    with pytest.raises(RegistryError) as e:
        registry.delete_run(keep)
    assert e.value.code == "registry.conflict" and "churn v1" in e.value.message
    gone = registry.start_run("experiment", experiment="x")
    registry.log_params(gone, {"a": 1})
    registry.log_metrics(gone, [("m", 1.0)])
    registry.delete_run(gone)
    with pytest.raises(RegistryError, match="No run"):
        registry.get_run(gone)
    assert registry.get_run(keep)["model_versions"][0]["version"] == 1
    assert registry.list_events(kind="run.deleted")[0]["entity_id"] == gone


def test_naive_datetimes_are_refused(registry):
    naive = dt.datetime(2024, 3, 1)
    with pytest.raises(RegistryError) as e:
        registry.start_run("pipeline", pipeline="p", window=(naive, naive + dt.timedelta(days=1)))
    assert e.value.code == "registry.naive_datetime"
    run_id = registry.start_run("pipeline", pipeline="p")
    with pytest.raises(RegistryError, match="timezone-aware"):
        registry.record_stage_run(run_id, "s", lang="python", runner="r", status="FINISHED", exit_code=0,
                                  started_at=naive, ended_at=None, wall_seconds=0, cpu_seconds=0,
                                  peak_rss_bytes=0, script_hash=None, log_dir=None)
    with pytest.raises(RegistryError, match="timezone-aware"):
        Registry(registry.engine, registry.store, clock=lambda: naive).start_run("experiment", experiment="e")
    with pytest.raises(RegistryError, match="not before"):
        registry.start_run("pipeline", window=(W[1], W[0]))


def test_record_event_joins_the_callers_transaction(registry, engine):
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            registry.record_event("deployment.promoted", entity_type="deployment", entity_id="d1",
                                  payload={"to": 2}, reason="better auc", conn=conn)
            raise RuntimeError("the caller's change failed")
    assert registry.list_events(kind="deployment.promoted") == []
    registry.record_event("deployment.promoted", entity_type="deployment", entity_id="d1", payload={"to": 2},
                          reason="better auc")
    (ev,) = registry.list_events(kind="deployment.promoted")
    assert ev["payload"] == {"to": 2} and ev["reason"] == "better auc" and ev["actor"] == "tester"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=5))
def test_property_versions_are_exactly_the_successful_registrations(registry, make_model, store, outcomes):
    """Registering N versions leaves READY versions 1..N; a failed one burns its number, never reuses it."""
    name = f"m{hashlib.sha256(repr(outcomes).encode()).hexdigest()[:8]}{len(registry.list_models())}"
    real_publish = type(store).publish
    expected = []
    for number, ok in enumerate(outcomes, start=1):
        if ok:
            store.publish = real_publish.__get__(store)
            expected.append(registry.register_model_version(name, make_model(name)).version)
        else:
            def failing(*a, **kw):
                raise OSError("injected")
            store.publish = failing
            with pytest.raises(OSError):
                registry.register_model_version(name, make_model(name))
        assert number == (expected[-1] if ok else number)
    store.publish = real_publish.__get__(store)
    if expected:
        assert [v.version for v in registry.list_versions(name)] == expected
    if all(outcomes):
        assert expected == list(range(1, len(outcomes) + 1))
