"""--dry-run changes nothing: no table of the registry gains or loses a row (smoke results and events included)."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from ambidex import deploytables as T
from ambidex.cli.main import main as run
from ambidex.deploy import Deployments, Member
from ambidex.governance import Governance, GovernanceSpec
from ambidex.scoring import score_model
from ambidex.smoke import SmokeTester
from ambidex.tables import metadata

from .conftest import churn_frame, events_of, register


def row_counts(engine) -> dict[str, int]:
    """Rows in every table the registry's metadata knows (every table must exist after migration)."""
    with engine.connect() as c:
        return {t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


def test_every_dry_run_command_changes_no_table(workspace, py_model_dir, capsys):
    reg = workspace.registry()
    engine = reg.engine
    register(engine, reg.store, py_model_dir, "churn", times=3)

    def same(args: list[str], rc: int = 0) -> dict | None:
        before = row_counts(engine)
        assert run(args) == rc, capsys.readouterr().err
        captured = capsys.readouterr()
        assert row_counts(engine) == before, args
        return json.loads(captured.out) if rc == 0 and "--json" in args else None

    # create: the smoke gate has no recorded result, so a dry run smoke-tests in a fresh process, records nothing
    rev = same(["deploy", "create", "d", "--champion", "churn:1", "--key", "customer_id", "--dry-run", "--json"])
    assert rev["revision"] == 1
    assert row_counts(engine)["smoke_results"] == 0 and events_of(engine, "smoke.passed") == []

    assert run(["deploy", "create", "d", "--champion", "churn:1", "--key", "customer_id"]) == 0
    counts = row_counts(engine)
    assert counts["smoke_results"] == 1 and counts["deployment_revisions"] == 1
    capsys.readouterr()

    rev = same(["deploy", "promote", "d", "--champion", "churn:2", "--shadow", "churn:1", "--dry-run", "--json"])
    assert rev["revision"] == 2 and [m["role"] for m in rev["members"]] == ["champion", "shadow"]
    assert run(["deploy", "promote", "d", "--champion", "churn:2", "--no-check-after"]) == 0
    capsys.readouterr()
    rev = same(["deploy", "rollback", "d", "--dry-run", "--json"])
    assert rev["revision"] == 3 and rev["members"][0]["version"] == 1

    rec = same(["approve", "churn:3", "--note", "fine", "--dry-run", "--json"])
    assert rec["decision"] == "approve" and len(rec["manifest_sha256"]) == 64
    rec = same(["reject", "churn:3", "--note", "no", "--dry-run", "--json"])
    assert rec["decision"] == "reject"
    same(["approve", "churn:3", "--note", "fine", "--as", "x", "--dry-run"], rc=1)  # refused: no audit row either

    from ambidex_stage.tables import write_table

    write_table(churn_frame(50).drop(columns=["churn"]), workspace.root / "in.csv")
    rep = same(["score", "d", "--window", "2024-06-01/2024-06-02", "--input", "in.csv", "--dry-run", "--json"])
    assert [m["status"] for m in rep["members"]] == ["would score"]
    assert run(["deploy", "history", "d", "--json"]) == 0
    assert [r["revision"] for r in json.loads(capsys.readouterr().out)] == [1, 2]


def test_library_dry_run_smoke_gate_runs_but_records_nothing(engine, store, py_model_dir, tmp_path):
    register(engine, store, py_model_dir, "churn", times=2)
    deps = Deployments(engine, store=store, actor="ops")
    calls = []

    def launch(model_dir, inp, out):
        calls.append(inp.name)
        return score_model(model_dir, inp, out, project_root=tmp_path, work_dir=tmp_path / "work")

    tester = SmokeTester(deps, launch, workdir=tmp_path / "smoke")
    deps.gate = Governance(deps, GovernanceSpec(gates=["smoke"]), smoke=tester).gate
    before = row_counts(engine)
    rev = deps.create("d", [Member("churn", 1)], entity_key="customer_id", dry_run=True)
    assert rev.revision == 1 and "pos.csv" in calls  # the smoke test did run
    assert row_counts(engine) == before
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(T.smoke_results)).scalar_one() == 1
    before = row_counts(engine)
    assert deps.promote("d", [Member("churn", 2)], dry_run=True).revision == 2
    assert row_counts(engine) == before


def test_dry_run_with_a_plain_smoke_callable_and_gate(engine, store, py_model_dir):
    """Injected callables that know nothing of dry runs still work (called as before)."""
    register(engine, store, py_model_dir, "churn")
    deps = Deployments(engine, store=store, actor="ops")
    seen = []
    deps.gate = lambda conn, refs, name: seen.append((conn, [r.label for r in refs], name))
    deps.create("d", [Member("churn", 1)], entity_key="customer_id", dry_run=True)
    assert seen == [(None, ["churn:1"], "d")]
    gov = Governance(deps, GovernanceSpec(gates=["smoke"]), smoke=lambda ref: type("R", (), {"passed": False})())
    deps.gate = gov.gate
    before = row_counts(engine)
    with pytest.raises(Exception) as e:
        deps.create("d", [Member("churn", 1)], entity_key="customer_id", dry_run=True)
    assert getattr(e.value, "code", None) == "check.smoke_failed"
    assert row_counts(engine) == before
