"""The continuous-training cycle end to end on a small synthetic loop (Python and R candidates)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ambidex.cycle import decisions, run_cycle, steps_of, windows
from ambidex.errors import ArtifactError, UsageError
from ambidex.workspace import Workspace
from tests.cycle.conftest import NOW, counts, make_loop, pipeline_yaml

pytestmark = pytest.mark.r


def _ws(root):
    return Workspace.find(root)


def test_cold_start_then_catch_up_in_order(finished_loop):
    root, summary, order = finished_loop
    assert [w["window"] for w in summary.windows] == ["2024-01-01/2024-02-01", "2024-02-01/2024-03-01",
                                                      "2024-03-01/2024-04-01"]
    starts = [tag for tag, step, phase in order if step == "ingest" and phase == "start"]
    assert starts == ["2024-01-01", "2024-02-01", "2024-03-01"]
    ws = _ws(root)
    try:
        decs = decisions(ws.registry().engine, "loop")
        cold = [d for d in decs if d["kind"] == "cold_start"]
        assert len(cold) == 1 and cold[0]["revision"] == 1 and cold[0]["winner"].startswith("loop-")
        assert set(cold[0]["reasons"]["losses"]) == {"loop-py:1", "loop-r:1"}  # both runtimes trained and scored
        # the other runtime's model went live beside the champion, in shadow
        assert cold[0]["reasons"]["shadows"] == list({"loop-py:1", "loop-r:1"} - {cold[0]["winner"]})
        from ambidex.deploy import Deployments

        first = Deployments(ws.registry().engine).history("loop-live")[0]
        assert [(m.label, m.role) for m in first.members] == [(cold[0]["winner"], "champion"),
                                                              (cold[0]["reasons"]["shadows"][0], "shadow")]
        revs = ws.registry().engine  # noqa: F841
        assert all(w["status"] == "finished" and w["config_hash"] for w in windows(ws.registry().engine, "loop"))
        assert (root / ".ambidex" / "reports" / "loop" / "2024-03-01.html").is_file()
    finally:
        ws.close()


def test_promotion_is_recorded_with_its_reasons_and_blue_kept_as_shadow(finished_loop):
    root, _, _ = finished_loop
    ws = _ws(root)
    try:
        engine = ws.registry().engine
        decs = decisions(engine, "loop")
        assert [d["kind"] for d in decs if d["window_start"].month == 2][0] == "retrain"
        assert decs[1]["reasons"]["triggers"]  # which trigger fired is stored
        promotes = [d for d in decs if d["kind"] == "promote"]
        assert promotes, [d["reasons"]["summary"] for d in decs]
        p = promotes[-1]
        # trained on January (the new concept), evaluated on February's rows: a significant gain
        assert p["gain"] >= 0.002 and p["z"] >= 1.645 and p["revision"] >= 2
        assert p["winner"] in p["reasons"]["contest"]["tests"] and "gain" in p["reasons"]["summary"]
        kinds = [e["kind"] for e in ws.registry().list_events(limit=500)]
        assert "cycle.promote" in kinds and "cycle.cold_start" in kinds and "cycle.retrain" in kinds
        from ambidex.deploy import Deployments

        deps = Deployments(engine)
        live = deps.live("loop-live")
        assert live.champion.label == p["winner"]
        assert [m.role for m in live.members][0] == "champion" and {m.role for m in live.members[1:]} == {"shadow"}
        assert p["champion"] in [m.label for m in live.members[1:]]  # blue kept one window for rollback
        assert set(deps.languages(live)) == {"python", "r"}  # and both runtimes still live
        if len(promotes) > 1:  # the contest also saw the previous versions (M_T-1)
            assert len(p["reasons"]["contest"]["models"]) > 2
    finally:
        ws.close()


def test_keep_when_the_challenger_is_not_better_enough(loop_copy):
    # a changed YAML is picked up by the next window (April): an unreachable min_gain keeps the champion
    (loop_copy / "config" / "loop.yaml").write_text(pipeline_yaml(end="2024-05-01", min_gain=0.99))
    ws = _ws(loop_copy)
    try:
        engine = ws.registry().engine
        out = run_cycle(ws, loop_copy / "config" / "loop.yaml", clock=lambda: NOW.replace(month=5))
        assert [w["window"][:7] for w in out.windows] == ["2024-04"]
        apr = [d for d in decisions(engine, "loop") if d["window_start"].month == 4]
        keep = [d for d in apr if d["kind"] == "keep"][0]
        assert keep["reasons"]["summary"].startswith("keep ") and "gain >= 0.99" in keep["reasons"]["summary"]
        assert keep["reasons"]["contest"]["tests"]
        assert keep["winner"] is None and keep["reasons"]["best_challenger"]
        # the shadow kept for rollback since March is retired now; one shadow of the other runtime stays
        from ambidex.deploy import Deployments

        live = Deployments(engine).live("loop-live")
        assert [m.role for m in live.members] == ["champion", "shadow"]
        assert set(Deployments(engine).languages(live)) == {"python", "r"}
        wins = windows(engine, "loop")
        assert wins[-1]["config_hash"] != wins[0]["config_hash"]
    finally:
        ws.close()


def test_rerun_of_finished_windows_changes_nothing(loop_copy):
    ws = _ws(loop_copy)
    try:
        before = counts(ws.registry().engine)
        again = run_cycle(ws, loop_copy / "config" / "loop.yaml", clock=lambda: NOW)
        assert again.windows == [] and "Nothing due" in again.message
        one = run_cycle(ws, loop_copy / "config" / "loop.yaml", window="2024-02-01/2024-03-01", clock=lambda: NOW)
        assert one.windows[0]["already_finished"] and all(s["status"] == "skipped" for s in one.windows[0]["steps"])
        assert counts(ws.registry().engine) == before
    finally:
        ws.close()


def test_future_pre_start_and_off_calendar_windows_exit_2_and_change_nothing(loop_copy):
    (loop_copy / "config" / "loop.yaml").write_text(pipeline_yaml(end="2024-06-01"))
    ws = _ws(loop_copy)
    before = counts(ws.registry().engine)
    ws.close()
    for window, words in (("2024-04-01/2024-05-01", "in the future"), ("2023-12-01/2024-01-01", "before"),
                          ("2024-02-03/2024-03-03", "not a monthly window")):
        if window.startswith("2024-04"):  # the real clock is after April 2024: use the library's clock
            with pytest.raises(UsageError) as err:
                run_cycle(_ws(loop_copy), loop_copy / "config" / "loop.yaml", window=window, clock=lambda: NOW)
            assert err.value.exit_code == 2 and words in err.value.message
            continue
        proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "run", "config/loop.yaml", "--window", window],
                              capture_output=True, text=True, cwd=loop_copy)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "nothing was changed" in proc.stderr.lower()
    ws = _ws(loop_copy)
    assert counts(ws.registry().engine) == before
    ws.close()


def test_tampered_champion_is_refused_and_nothing_changes(loop_copy):
    (loop_copy / "config" / "loop.yaml").write_text(pipeline_yaml(end="2024-05-01"))
    ws = _ws(loop_copy)
    try:
        engine = ws.registry().engine
        from ambidex.deploy import Deployments

        live = Deployments(engine).live("loop-live")
        mv = ws.registry().get_model_version(live.champion.model, live.champion.version)
        payload = ws.registry().store.version_dir(mv.path) / mv.manifest["runtime"]["payload"]
        payload.chmod(0o640)
        payload.write_bytes(payload.read_bytes() + b"tampered")
        before = counts(engine)
        with pytest.raises(ArtifactError) as err:
            run_cycle(ws, loop_copy / "config" / "loop.yaml", clock=lambda: NOW.replace(month=5))
        assert err.value.code == "artifact.hash_mismatch" and "changing anything" in err.value.message
        assert counts(engine) == before
    finally:
        ws.close()


def test_all_candidates_failing_stops_and_the_champion_keeps_serving(loop_copy):
    # a changed YAML is picked up by the next window: here its candidates are broken
    (loop_copy / "config" / "loop.yaml").write_text(pipeline_yaml(end="2024-05-01", bad_target=True))
    ws = _ws(loop_copy)
    try:
        engine = ws.registry().engine
        from ambidex.cycle import CycleError
        from ambidex.deploy import Deployments

        live_before = Deployments(engine).live("loop-live")
        with pytest.raises(CycleError) as err:
            run_cycle(ws, loop_copy / "config" / "loop.yaml", clock=lambda: NOW.replace(month=5))
        msg = err.value.message
        assert "All 2 candidate(s) failed training" in msg and "keeps serving" in msg
        assert "train_py" in msg and "train_r" in msg
        assert Deployments(engine).live("loop-live").revision == live_before.revision
        apr = [w for w in windows(engine, "loop") if w["window_start"].month == 4][0]
        assert apr["status"] == "failed" and apr["config_hash"] != windows(engine, "loop")[0]["config_hash"]
        assert "score" in steps_of(engine, "loop", apr["window_start"])  # April was scored by the champion
    finally:
        ws.close()


def test_crash_at_a_step_resumes_from_the_last_completed_step(workspace, project):
    path = make_loop(project, end="2024-02-01", name="crash")

    def boom(step, phase, state):
        if step == "score" and phase == "start":
            raise RuntimeError("simulated kill at score")

    with pytest.raises(RuntimeError):
        run_cycle(workspace, path, clock=lambda: NOW, on_step=boom)
    engine = workspace.registry().engine
    jan = windows(engine, "crash")[0]
    assert jan["status"] == "failed" and set(steps_of(engine, "crash", jan["window_start"])) >= {
        "ingest", "bootstrap", "profile"}
    assert "score" not in steps_of(engine, "crash", jan["window_start"])
    before = counts(engine)
    seen = []
    out = run_cycle(workspace, path, clock=lambda: NOW, on_step=lambda s, ph, st: seen.append((s, ph)))
    assert out.windows[0]["resumed"]
    assert ("ingest", "skipped") in seen and ("bootstrap", "skipped") in seen and ("score", "start") in seen
    after = counts(engine)
    assert after["model_versions"] == before["model_versions"] == 2  # nothing trained twice
    # one set of predictions per live model: the champion and the other runtime's shadow
    assert after["deployment_revisions"] == 1 and after["capture_batches"] == 2
    assert windows(engine, "crash")[0]["attempts"] == 2


def test_labels_matching_no_prediction_stop_with_a_clear_message(workspace, project):
    path = make_loop(project, end="2024-03-01", every=None, labels_offset=1_000_000, name="lab")
    from ambidex.cycle import CycleError

    with pytest.raises(CycleError) as err:
        run_cycle(workspace, path, clock=lambda: NOW)
    e = err.value
    assert e.code == "data.labels_unmatched"
    assert "match no" in e.message and "label(s)" in e.message
    assert counts(workspace.registry().engine)["labels"] == 0


def test_require_clean_refuses_a_dirty_git_tree(workspace, project):
    path = make_loop(project, name="git")
    run = lambda *a: subprocess.run(["git", *a], cwd=project, capture_output=True, text=True, check=True)  # noqa: E731
    run("init", "-q")
    run("-c", "user.name=t", "-c", "user.email=t@example.org", "add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "init")
    path.write_text(path.read_text() + "# edited\n")
    proc = subprocess.run([sys.executable, "-m", "ambidex.cli.main", "run", "config/git.yaml", "--require-clean",
                           "--json"], capture_output=True, text=True, cwd=project)
    assert proc.returncode == 2
    env = json.loads(proc.stderr.strip().splitlines()[-1])
    assert env["code"] == "usage.dirty_tree" and "uncommitted changes" in env["message"]
    assert counts(workspace.registry().engine).get("cycle_windows", 0) == 0


def test_regression_loop_smoke(workspace, project):
    path = make_loop(project, task="regression", end="2024-03-01", name="reg")
    out = run_cycle(workspace, path, clock=lambda: NOW)
    assert [w["window"][:7] for w in out.windows] == ["2024-01", "2024-02"]
    engine = workspace.registry().engine
    decs = decisions(engine, "reg")
    assert decs[0]["kind"] == "cold_start"
    feb = steps_of(engine, "reg", windows(engine, "reg")[1]["window_start"])
    kpis = feb["labels"]["detail"]["kpis"]
    assert kpis and all(set(v) == {"rmse", "mae"} for v in kpis.values())
    ev = feb["evaluate"]["detail"]
    assert ev["loss"] == "squared_error" and ev["metric"] == "rmse"


def test_every_scored_window_logs_prediction_drift_and_label_free_estimates(finished_loop):
    """Scores of each scored window are profiled; once labels of a window arrived, later windows get
    CBPE estimates stored as estimated (they never decide a promotion)."""
    import sqlalchemy as sa

    from ambidex import monitortables as M
    from ambidex.monitor_store import SCORE

    root, _, _ = finished_loop
    ws = _ws(root)
    try:
        with ws.registry().engine.connect() as conn:
            scored = {r.window_start.strftime("%Y-%m") for r in conn.execute(
                sa.select(M.monitor_windows.c.window_start)
                .join(M.window_num_stats, M.window_num_stats.c.window_id == M.monitor_windows.c.id)
                .where(M.window_num_stats.c.feature == SCORE))}
            estimated = conn.execute(
                sa.select(M.kpi_result.c.metric, M.kpi_result.c.method, M.monitor_windows.c.window_start)
                .join(M.monitor_windows, M.monitor_windows.c.id == M.kpi_result.c.window_id)
                .where(M.kpi_result.c.is_estimated.is_(True))).all()
        assert scored == {"2024-01", "2024-02", "2024-03"}
        assert estimated and all(r.method == "cbpe" for r in estimated)
        assert {r.window_start.strftime("%Y-%m") for r in estimated} == {"2024-03"}
        decs = decisions(ws.registry().engine, "loop")
        assert all("cbpe" not in json.dumps(d["reasons"]) for d in decs if d["kind"] == "promote")
    finally:
        ws.close()


def test_a_shadow_refused_by_a_gate_leaves_the_champion_to_go_live_alone(workspace, project, monkeypatch):
    from ambidex.deploy import Deployments
    from ambidex.errors import CheckFailed

    path = make_loop(project, end="2024-02-01", name="gated")
    real = Deployments.create

    def create(self, name, members, **kw):
        if len(members) > 1:
            raise CheckFailed(f"No passing smoke test for {members[1].label}.", code="check.smoke_failed")
        return real(self, name, members, **kw)

    monkeypatch.setattr(Deployments, "create", create)
    run_cycle(workspace, path, clock=lambda: NOW)
    engine = workspace.registry().engine
    cold = [d for d in decisions(engine, "gated") if d["kind"] == "cold_start"][0]
    assert cold["reasons"]["shadows"] == [] and "not deployed in shadow: No passing smoke test" in \
        cold["reasons"]["shadow_refused"]
    assert [m.role for m in Deployments(engine).live("gated-live").members] == ["champion"]
