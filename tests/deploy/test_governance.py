"""Governance: approvals bound to bytes, four-eyes, approvers list, --as, gates; every change audited."""
from __future__ import annotations

import pytest

from ambidex.deploy import Deployments, Member
from ambidex.errors import ArtifactError, CheckFailed
from ambidex.governance import (ApprovalRequest, GateFacts, Governance, GovernanceError, GovernanceSpec,
                                check_approval, evaluate_gates)

from .conftest import events_of, register

MANUAL = GovernanceSpec(approval="manual", approvers=["ann", "bob", "trainer"], four_eyes=True, gates=[])


def setup(engine, store, clock, spec=MANUAL, actor="ann"):
    deps = Deployments(engine, store=store, clock=clock, actor=actor)
    gov = Governance(deps, spec)
    deps.gate = gov.gate
    return deps, gov


def test_manual_approval_gates_promotion(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn", times=2, actor="trainer")
    deps, gov = setup(engine, store, clock)
    with pytest.raises(GovernanceError) as e:
        deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    assert e.value.code == "governance.not_approved"
    gov.approve("churn", 1, note="looks good")
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    gov.reject("churn", 2, note="auc too low")
    with pytest.raises(GovernanceError) as e:
        deps.promote("d", [Member("churn", 2)])
    assert "rejected" in e.value.message
    kinds = [ev["kind"] for ev in events_of(engine)]
    assert "approval.approved" in kinds and "approval.rejected" in kinds and "deploy.promote_refused" in kinds


def test_tampered_payload_after_approval_is_refused_and_audited(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn", times=2, actor="trainer")
    deps, gov = setup(engine, store, clock)
    gov.approve("churn", 1, note="ok")
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    gov.approve("churn", 2, note="ok")
    payload = store.root / "models" / "churn" / "2" / "model.joblib"
    payload.write_bytes(payload.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArtifactError) as e:
        deps.promote("d", [Member("churn", 2)])
    assert e.value.code == "artifact.hash_mismatch"
    refused = events_of(engine, "deploy.promote_refused")
    assert refused and "hash" in refused[-1]["payload"]
    assert deps.live("d").revision == 1


def test_approval_of_other_bytes_is_refused(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn", times=2, actor="trainer")
    deps, gov = setup(engine, store, clock)
    with engine.connect() as c:
        sha1 = deps.resolve(c, "churn", 1).manifest_sha256
    with pytest.raises(GovernanceError) as e:  # reviewed v1's bytes, approving v2
        gov.approve("churn", 2, note="ok", reviewed_sha256=sha1)
    assert e.value.code == "governance.bytes_changed"
    # an approval recorded for old bytes does not cover new ones
    gov.approve("churn", 1, note="ok")
    from ambidex import deploytables as T

    with engine.begin() as c:
        c.execute(T.approvals.update().values(manifest_sha256="0" * 64))
    with pytest.raises(GovernanceError) as e:
        deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    assert "bytes changed" in e.value.message


def test_four_eyes_approvers_and_as(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn", actor="trainer")
    _, gov_trainer = setup(engine, store, clock, actor="trainer")
    with pytest.raises(GovernanceError) as e:
        gov_trainer.approve("churn", 1, note="mine")
    assert e.value.code == "governance.self_approval"
    _, gov_eve = setup(engine, store, clock, actor="eve")
    with pytest.raises(GovernanceError) as e:
        gov_eve.approve("churn", 1, note="hi")
    assert e.value.code == "governance.not_an_approver"
    with pytest.raises(GovernanceError) as e:
        gov_eve.approve("churn", 1, note="hi", as_name="ann")
    assert e.value.code == "governance.as_not_allowed"
    _, gov_svc = setup(engine, store, clock, spec=MANUAL.model_copy(update={"allow_as": True}), actor="svc")
    rec = gov_svc.approve("churn", 1, note="via portal", as_name="bob")
    assert rec["approver"] == "bob" and rec["os_user"] == "svc"
    assert len(events_of(engine, "approval.approve_refused")) == 3


def test_check_approval_is_pure():
    req = ApprovalRequest("m:1", "ann", "ann", None, frozenset({"bob"}), "a" * 64, None)
    assert check_approval(GovernanceSpec(four_eyes=True), req) == []
    assert check_approval(GovernanceSpec(four_eyes=True), req, decision="reject") == []
    codes = [c for c, _ in check_approval(GovernanceSpec(approvers=["x"], four_eyes=True),
                                          ApprovalRequest("m:1", "bob", "bob", "bob", frozenset({"bob"}), "a", "b"))]
    assert codes == ["governance.as_not_allowed", "governance.not_an_approver", "governance.self_approval",
                     "governance.bytes_changed"]


def test_gates_fail_closed():
    spec = GovernanceSpec(gates=["smoke", "kpi_not_worse", "no_drift_alert"], kpi="auc")
    res = {g.gate: g.passed for g in evaluate_gates(spec, GateFacts("m:1"))}
    assert res == {"smoke": False, "kpi_not_worse": True, "no_drift_alert": False}
    ok = GateFacts("m:1", smoke_passed=True, kpi_candidate=0.80, kpi_champion=0.81, has_champion=True,
                   drift_alert=False)
    assert [g.passed for g in evaluate_gates(spec, ok)] == [True, False, True]
    better = GateFacts("m:1", smoke_passed=True, kpi_candidate=0.82, kpi_champion=0.81, has_champion=True,
                       drift_alert=False)
    assert all(g.passed for g in evaluate_gates(spec, better))


def test_kpi_gate_against_live_champion(engine, store, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn", times=2, actor="trainer")
    deps, gov = setup(engine, store, clock, spec=GovernanceSpec(gates=["kpi_not_worse"], kpi="auc"))
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    deps.promote("d", [Member("churn", 2)])  # same model bytes: same auc, not worse
    gov.spec = GovernanceSpec(gates=["kpi_not_worse"], kpi="no_such_metric")
    with pytest.raises(CheckFailed):
        deps.promote("d", [Member("churn", 1)])


def test_expired_approval_is_refused_at_promotion_and_audited(engine, store, py_model_dir, clock):
    import datetime as dt
    import json

    spec = MANUAL.model_copy(update={"approval_valid_days": 7})
    register(engine, store, py_model_dir, "churn", times=2, actor="trainer")
    deps, gov = setup(engine, store, clock, spec=spec)
    t0 = clock()
    rec = gov.approve("churn", 1, note="ok")
    assert rec["expires_at"] == t0 + dt.timedelta(days=7)
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    gov.approve("churn", 2, note="ok")
    clock.advance(6 * 86400)  # still valid: a dry run passes every check
    assert deps.promote("d", [Member("churn", 2)], dry_run=True).revision == 2
    clock.advance(86400)  # exactly 7 days: expired (expires_at <= now)
    with pytest.raises(GovernanceError) as e:
        deps.promote("d", [Member("churn", 2)])
    assert e.value.code == "governance.not_approved"
    assert "expired at 2024-06-08T12:00:00+00:00" in e.value.message
    refused = events_of(engine, "deploy.promote_refused")
    assert len(refused) == 1 and refused[0]["entity_id"] == "d" and refused[0]["at"] == clock()
    payload = json.loads(refused[0]["payload"])
    assert payload["code"] == "governance.not_approved" and payload["members"] == ["churn:2"]
    assert "expired" in refused[0]["reason"]
    assert deps.live("d").revision == 1 and [r.revision for r in deps.history("d")] == [1]
    gov.approve("churn", 2, note="re-reviewed")  # a fresh approval (new expiry) lets it through
    assert deps.promote("d", [Member("churn", 2)]).revision == 2
