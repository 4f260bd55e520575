"""Deployments: revisions, the compare-and-swap promotion, rollback, history, canary split (SQLite, PostgreSQL, MariaDB)."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from ambidex import deploytables as T
from ambidex.deploy import (ConflictError, Deployments, Member, assign_rows, canary_bucket, live_at, parse_member,
                            validate_members)
from ambidex.errors import ArtifactError, RegistryError, UsageError

from .conftest import events_of, register


@pytest.fixture
def versions(any_engine, store, py_model_dir):
    register(any_engine, store, py_model_dir, "churn", times=4)
    return any_engine


def test_migration_matches_deploytables(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ambidex.tables import metadata

    def include(obj, name, type_, reflected, compare_to):
        return type_ != "table" or name in T.DEPLOY_TABLES

    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True, "include_object": include})
        assert compare_metadata(ctx, metadata) == []


def test_create_promote_rollback_history(versions, store, clock):
    deps = Deployments(versions, store=store, clock=clock, actor="ops")
    r1 = deps.create("churn-nightly", [Member("churn", 1)], entity_key="customer_id")
    t1 = clock.advance()
    r2 = deps.promote("churn-nightly", [Member("churn", 2), Member("churn", 1, "shadow")], reason="better auc")
    t2 = clock.advance()
    r3 = deps.rollback("churn-nightly", reason="bad numbers")
    clock.advance()
    assert (r1.revision, r2.revision, r3.revision) == (1, 2, 3)
    assert r3.kind == "rollback" and r3.members == r1.members and r3.parent_revision == 2
    assert deps.live("churn-nightly").revision == 3
    hist = deps.history("churn-nightly")
    assert [h.revision for h in hist] == [1, 2, 3]
    assert [m.label for m in hist[1].members] == ["churn:2", "churn:1"]
    # which version was live when
    assert deps.history("churn-nightly", at=t1)[0].champion.label == "churn:2"
    assert deps.history("churn-nightly", at=t1 - dt.timedelta(seconds=1))[0].champion.label == "churn:1"
    assert deps.history("churn-nightly", at=t2)[0].revision == 3
    assert deps.history("churn-nightly", at=r1.live_from - dt.timedelta(days=1)) == []
    kinds = [e["kind"] for e in events_of(versions) if e["entity_type"] == "deployment"]
    assert kinds == ["deploy.created", "deploy.promoted", "deploy.rolled_back"]
    # immutability of old revisions: revision 2 still names what it named
    assert deps.history("churn-nightly")[1].champion.label == "churn:2"


def test_stale_expected_revision_is_a_conflict_naming_the_winner(versions, store, clock):
    deps = Deployments(versions, store=store, clock=clock, actor="ann")
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    deps.promote("d", [Member("churn", 2)], expected_revision=1)
    with pytest.raises(ConflictError) as e:
        Deployments(versions, store=store, clock=clock, actor="bob").promote("d", [Member("churn", 3)],
                                                                             expected_revision=1)
    assert "revision 2" in e.value.message and "ann" in e.value.message and "churn:2" in e.value.message
    assert deps.live("d").champion.label == "churn:2"
    assert [h.revision for h in deps.history("d")] == [1, 2]


def test_concurrent_promotions_exactly_one_wins_and_one_live_row(versions, store):
    deps0 = Deployments(versions, store=store, actor="setup")
    deps0.create("d", [Member("churn", 1)], entity_key="customer_id")
    n = 6
    barrier = threading.Barrier(n)
    results, errors = [], []
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            with versions.connect() as c:
                rows = c.execute(sa.select(T.deployment_live.c.live_revision)).all()
            seen.append(len(rows))

    def promote(i):
        d = Deployments(versions, store=store, actor=f"user{i}")
        barrier.wait()
        try:
            results.append(d.promote("d", [Member("churn", 2 + i % 3)], expected_revision=1).revision)
        except ConflictError as e:
            errors.append(e)

    rt = threading.Thread(target=reader)
    rt.start()
    threads = [threading.Thread(target=promote, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    rt.join()
    assert results == [2] and len(errors) == n - 1
    assert set(seen) == {1}
    assert [h.revision for h in deps0.history("d")] == [1, 2]
    with versions.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(T.deployment_revisions)).scalar() == 2


def test_concurrent_promotions_with_retry_lose_nothing(versions, store):
    Deployments(versions, store=store, actor="setup").create("d", [Member("churn", 1)], entity_key="customer_id")
    n = 5
    barrier = threading.Barrier(n)
    conflicts = []

    def promote(i):
        d = Deployments(versions, store=store, actor=f"user{i}")
        barrier.wait()
        while True:
            try:
                d.promote("d", [Member("churn", 1 + (i % 4))], reason=f"user{i}")
                return
            except ConflictError:
                conflicts.append(i)

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hist = Deployments(versions, store=store).history("d")
    assert [h.revision for h in hist] == list(range(1, n + 2))
    assert sorted(h.reason for h in hist[1:]) == sorted(f"user{i}" for i in range(n))


def test_bad_input_changes_nothing(versions, store, py_model_dir, clock):
    deps = Deployments(versions, store=store, clock=clock)
    with pytest.raises(RegistryError) as e:
        deps.promote("nope", [Member("churn", 1)])
    assert e.value.code == "deploy.not_found"
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    with pytest.raises(RegistryError) as e:
        deps.promote("d", [Member("churn", 99)])
    assert e.value.code == "registry.not_found"
    with versions.begin() as c:  # a version that is not READY
        c.execute(sa.update(T.metadata.tables["model_versions"]).where(
            T.metadata.tables["model_versions"].c.version == 4).values(status="FAILED"))
    with pytest.raises(RegistryError) as e:
        deps.promote("d", [Member("churn", 4)])
    assert e.value.code == "deploy.version_not_ready"
    # tampered bytes: refused and audited
    payload = store.root / "models" / "churn" / "3" / "model.joblib"
    payload.chmod(0o640)
    payload.write_bytes(payload.read_bytes() + b"x")
    with pytest.raises(ArtifactError):
        deps.promote("d", [Member("churn", 3)])
    assert events_of(versions, "deploy.promote_refused")
    with pytest.raises(UsageError):
        deps.rollback("d")
    assert [h.revision for h in deps.history("d")] == [1]


def test_dry_run_writes_nothing(versions, store):
    deps = Deployments(versions, store=store)
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    rev = deps.promote("d", [Member("churn", 2)], dry_run=True)
    assert rev.revision == 2 and deps.live("d").revision == 1


# -- pure logic ----------------------------------------------------------------------------------

def test_parse_and_validate_members():
    assert parse_member("churn:7=0.1", "canary") == Member("churn", 7, "canary", 0.1)
    with pytest.raises(UsageError):
        parse_member("churn", "champion")
    with pytest.raises(UsageError):
        validate_members([Member("a", 1, "shadow")])
    with pytest.raises(UsageError):
        validate_members([Member("a", 1), Member("b", 1, "canary", 0.7), Member("c", 1, "canary", 0.6)])
    with pytest.raises(UsageError):
        validate_members([Member("a", 1), Member("a", 1, "shadow")])


def test_canary_bucket_is_a_documented_function_of_key():
    import hashlib

    want = int.from_bytes(hashlib.sha256(b"churn-nightly:12345").digest()[:8], "big") % 10000
    assert canary_bucket("churn-nightly", 12345) == want == canary_bucket("churn-nightly", "12345")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=200),
       st.floats(min_value=0.01, max_value=0.5))
def test_canary_assignment_is_deterministic(keys, share):
    canaries = [Member("b", 2, "canary", share)]
    first = assign_rows("dep", keys, canaries)
    assert first == assign_rows("dep", list(keys), canaries)  # same key -> same model, every run
    assert first == [0 if canary_bucket("dep", k) < round(share * 10000) else -1 for k in keys]


def test_canary_share_is_roughly_respected():
    got = assign_rows("dep", range(20000), [Member("b", 2, "canary", 0.1), Member("c", 3, "canary", 0.2)])
    assert abs(got.count(0) / 20000 - 0.1) < 0.01 and abs(got.count(1) / 20000 - 0.2) < 0.015


def test_live_at_uses_revision_order():
    from ambidex.deploy import Revision

    t = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    revs = [Revision("d", i, "promote", t + dt.timedelta(hours=i), None, None, None, (Member("m", i),))
            for i in (1, 2, 3)]
    assert live_at(revs, t + dt.timedelta(hours=2, minutes=30)).revision == 2
    assert live_at(revs, t) is None


def test_cli_round_trip(workspace, py_model_dir, capsys):
    import json

    from ambidex.cli.main import COMMANDS, cli
    from ambidex.cli.main import main as run

    from .conftest import churn_frame

    reg = workspace.registry()
    register(reg.engine, reg.store, py_model_dir, "churn", times=2)
    for name, attr in (("deploy", "deploy"), ("score", "score"), ("approve", "approve"), ("reject", "reject"),
                       ("notifications", "notifications")):
        COMMANDS.setdefault(name, ("ambidex.cli.deploy", attr, name))
    assert cli is not None
    assert run(["deploy", "create", "d", "--champion", "churn:1", "--key", "customer_id", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["revision"] == 1
    assert run(["deploy", "promote", "d", "--champion", "churn:2", "--shadow", "churn:1", "--dry-run"]) == 0
    assert run(["deploy", "promote", "d", "--champion", "churn:2", "--shadow", "churn:1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["revision"] == 2
    assert run(["deploy", "promote", "d", "--champion", "churn:1", "--expect-revision", "1", "--json"]) == 1
    assert json.loads(capsys.readouterr().err)["code"] == "deploy.conflict"
    from ambidex_stage.tables import write_table

    write_table(churn_frame(200).drop(columns=["churn"]), workspace.root / "in.csv")
    assert run(["score", "d", "--window", "2024-06-01/2024-06-02", "--input", "in.csv", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["rows"] == 200 and [m["status"] for m in rep["members"]] == ["captured", "captured"]
    assert run(["deploy", "rollback", "d", "--reason", "test"]) == 0
    assert run(["deploy", "history", "d", "--json"]) == 0
    capsys.readouterr()
    assert run(["deploy", "history", "d", "--at", "2000-01-01T00:00:00Z", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(["deploy", "show", "d"]) == 0
    assert run(["deploy", "smoke", "churn:1", "--json"]) == 0
    assert run(["approve", "churn:2", "--note", "fine", "--as", "x", "--json"]) == 1
    assert json.loads(capsys.readouterr().err)["code"] == "governance.as_not_allowed"
    assert run(["notifications", "list", "--json"]) == 0
