"""Smoke tests: golden examples replayed in a fresh process of the model's own runtime (Python and R)."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from ambidex import deploytables as T
from ambidex.deploy import Deployments, Member
from ambidex.errors import CheckFailed
from ambidex.governance import Governance, GovernanceSpec
from ambidex.scoring import score_model
from ambidex.smoke import SmokeTester, check_output, compare_positive

from .conftest import events_of, register


def make_tester(engine, store, tmp_path, clock=None):
    deps = Deployments(engine, store=store, actor="ops", **({"clock": clock} if clock else {}))

    def launch(model_dir, inp, out):
        return score_model(model_dir, inp, out, project_root=tmp_path, work_dir=tmp_path / "work")
    return deps, SmokeTester(deps, launch, workdir=tmp_path / "smoke")


def resolve(deps, name, version):
    with deps.engine.connect() as c:
        return deps.resolve(c, name, version)


def test_python_model_passes_and_is_recorded(engine, store, tmp_path, py_model_dir):
    register(engine, store, py_model_dir, "churn")
    deps, smoke = make_tester(engine, store, tmp_path)
    ref = resolve(deps, "churn", 1)
    res = smoke.run(ref)
    assert res.passed, res.failures
    kinds = [c.kind for c in res.cases]
    assert kinds.count("positive") == len(ref.manifest["golden"]["positive"])
    assert kinds.count("negative") == len(ref.manifest["golden"]["negative"]) >= 3
    assert res.load_seconds > 0 and res.latency_seconds > 0
    with engine.connect() as c:
        row = c.execute(sa.select(T.smoke_results)).mappings().one()
    assert row["passed"] and row["manifest_sha256"] == ref.manifest_sha256
    assert events_of(engine, "smoke.passed")[0]["entity_id"] == "churn:1"


@pytest.mark.r
def test_r_model_passes(engine, store, tmp_path, r_model_dir):
    register(engine, store, r_model_dir, "churn-r")
    deps, smoke = make_tester(engine, store, tmp_path)
    res = smoke.run(resolve(deps, "churn-r", 1))
    assert res.passed, res.failures
    assert {c.kind for c in res.cases} == {"positive", "negative", "output"}


def _with_golden(src, tmp_path, edit):
    dst = tmp_path / "edited_model"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "model.json").read_text())
    edit(manifest["golden"])
    (dst / "model.json").write_text(json.dumps(manifest))
    return dst


def test_wrong_expectation_and_wrong_error_code_fail(engine, store, tmp_path, py_model_dir):
    def edit(g):
        g["positive"][0]["expected"]["score"] += 0.01
        g["negative"][0]["error"] = "contract.type_mismatch"  # really a missing column
    register(engine, store, _with_golden(py_model_dir, tmp_path, edit), "churn")
    deps, smoke = make_tester(engine, store, tmp_path)
    res = smoke.run(resolve(deps, "churn", 1))
    assert not res.passed
    msgs = [(c.kind, c.index) for c in res.failures]
    assert ("positive", 0) in msgs and ("negative", 0) in msgs
    assert events_of(engine, "smoke.failed")


def test_failed_smoke_blocks_promotion(engine, store, tmp_path, py_model_dir):
    register(engine, store, py_model_dir, "churn")
    register(engine, store, _with_golden(py_model_dir, tmp_path, lambda g: g["positive"][1]["expected"].update(
        prediction="yes")), "churn")
    deps, smoke = make_tester(engine, store, tmp_path)
    gov = Governance(deps, GovernanceSpec(gates=["smoke"]), smoke=smoke)
    deps.gate = gov.gate
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    with pytest.raises(CheckFailed) as e:
        deps.promote("d", [Member("churn", 2)])
    assert e.value.exit_code == 4 and e.value.code == "check.smoke_failed"
    assert deps.live("d").revision == 1
    assert events_of(engine, "deploy.promote_refused")


def test_failure_after_switch_rolls_back_and_notifies(engine, store, tmp_path, py_model_dir, clock):
    register(engine, store, py_model_dir, "churn", times=2)
    notes = []
    deps = Deployments(engine, store=store, clock=clock, notify=lambda conn, kind, payload: notes.append(kind))
    deps.create("d", [Member("churn", 1)], entity_key="customer_id")
    clock.advance()
    deps.promote("d", [Member("churn", 2)])
    clock.advance()
    with pytest.raises(CheckFailed) as e:
        deps.check_after_switch("d", lambda ref: SimpleNamespace(passed=ref.version != 2))
    assert e.value.details["rollback_revision"] == 3
    live = deps.live("d")
    assert live.kind == "auto_rollback" and live.champion.label == "churn:1"
    assert "deploy.auto_rolled_back" in notes


def test_pure_checks():
    golden = {"tolerance": 1e-6, "positive": [{"input": {}, "expected": {"prediction": "yes", "score": 0.7}}]}
    assert compare_positive(golden, [{"prediction": "yes", "score": 0.7000001}], "binary_classification")[0].passed
    assert not compare_positive(golden, [{"prediction": "no", "score": 0.7}], "binary_classification")[0].passed
    manifest = {"task": "binary_classification", "target": {"levels": ["no", "yes"]}}
    assert not check_output([{"prediction": "yes", "score": 1.5}], 1, ["prediction", "score"], manifest)[0].passed
    assert not check_output([{"prediction": "maybe", "score": 0.5}], 1, ["prediction", "score"], manifest)[0].passed
    assert not check_output([], 1, ["prediction"], manifest)[0].passed
    assert check_output([{"prediction": "no", "score": 0.2}], 1, ["prediction", "score"], manifest)[0].passed
