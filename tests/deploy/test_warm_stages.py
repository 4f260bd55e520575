"""runners.warm_stages: a Python interpreter imports ahead of a built-in stage, which then runs in it
with the same result, logs and measurements as in a fresh one; anything else starts fresh."""
from __future__ import annotations

import sys

import pytest

from ambidex import runners
from ambidex.errors import ContractError, StageError
from ambidex.scoring import score_model
from ambidex_stage.tables import read_table, write_table

from .conftest import churn_frame


@pytest.fixture
def scored_input(tmp_path):
    inp = tmp_path / "in.csv"
    write_table(churn_frame(300, seed=5).drop(columns=["churn"]), inp)
    return inp


@pytest.fixture
def launched(monkeypatch):
    """The argv of every process the runners start from now on."""
    argvs = []
    real_popen = runners.subprocess.Popen

    def popen(argv, *a, **k):
        argvs.append(list(argv))
        return real_popen(argv, *a, **k)

    monkeypatch.setattr(runners.subprocess, "Popen", popen)
    return argvs


def _warm_pid():
    held = runners._WARM.ready.get(sys.executable)
    return held[0].pid if held else None


def _score(py_model_dir, inp, out, tmp_path):
    return score_model(py_model_dir, inp, out, project_root=tmp_path, work_dir=tmp_path / "w", keep=["customer_id"])


def test_builtin_stage_runs_in_the_warm_interpreter_with_the_same_result(py_model_dir, scored_input, tmp_path,
                                                                         launched):
    fresh = tmp_path / "fresh.csv"
    _score(py_model_dir, scored_input, fresh, tmp_path)
    launched.clear()
    warm = tmp_path / "warm.csv"
    with runners.warm_stages():
        assert _warm_pid() is not None
        res = _score(py_model_dir, scored_input, warm, tmp_path)
        assert _warm_pid() is None  # taken, and none started on speculation
        _score(py_model_dir, scored_input, tmp_path / "again.csv", tmp_path)  # a fresh one
    assert [argv[-1] for argv in launched] == ["ambidex_stage.warm", "score"]
    assert res["status"] == "ok"
    assert read_table(warm).equals(read_table(fresh))
    with runners.warm_stages():
        unused = runners._WARM.ready[sys.executable][0]
    assert runners._WARM.ready == {} and unused.poll() is not None  # stopped at the end of the block


def test_a_changed_environment_or_a_script_stage_starts_fresh(py_model_dir, scored_input, tmp_path, monkeypatch):
    with runners.warm_stages():
        first = runners._WARM.ready[sys.executable][0]
        monkeypatch.setenv("AMBIDEX_TEST_MARKER", "changed after the interpreter started")
        _score(py_model_dir, scored_input, tmp_path / "out.csv", tmp_path)
        assert first.poll() is not None  # stopped, not used: its environment lacks the new variable
        # a script stage never takes it
        assert runners._WARM.take(_launch(tmp_path, builtin=None, script=tmp_path / "s.py"), runners.stage_env(
            _launch(tmp_path)), tmp_path / "o", tmp_path / "e") is None
    assert read_table(tmp_path / "out.csv").shape[0] == 300


def _launch(tmp_path, builtin="score", script=None):
    return runners.StageLaunch(stage="score", lang="python", runner="subprocess", script=script, builtin=builtin,
                               context_path=tmp_path / "context.json", stage_dir=tmp_path / "sd",
                               project_root=tmp_path, timeout=60)


def test_a_failing_stage_in_a_warm_interpreter_reports_as_a_fresh_one(py_model_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    write_table(churn_frame(50, seed=2).drop(columns=["churn", "plan"]), bad)  # a missing input column
    errors = []
    for warm in (False, True):
        if warm:
            with runners.warm_stages():
                with pytest.raises((StageError, ContractError)) as e:
                    _score(py_model_dir, bad, tmp_path / "o.csv", tmp_path)
        else:
            with pytest.raises((StageError, ContractError)) as e:
                _score(py_model_dir, bad, tmp_path / "o.csv", tmp_path)
        errors.append(e.value)
    assert type(errors[0]) is type(errors[1]) and errors[0].code == errors[1].code == "contract.missing_column"
    assert str(errors[0]) == str(errors[1])


def test_a_stage_in_a_warm_interpreter_past_its_timeout_is_killed(py_model_dir, scored_input, tmp_path):
    with runners.warm_stages():
        warm = runners._WARM.ready[sys.executable][0]
        with pytest.raises(StageError) as e:
            score_model(py_model_dir, scored_input, tmp_path / "o.csv", project_root=tmp_path,
                        work_dir=tmp_path / "w", timeout=0.05)
        assert runners._WARM.ready == {} and warm.poll() is not None  # it ran the stage, and was killed
    assert e.value.code == "stage.timeout"


def test_warm_stages_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("AMBIDEX_WARM_STAGES", "0")
    with runners.warm_stages():
        assert runners._WARM.ready == {}


def test_an_unused_warm_interpreter_exits_when_its_input_ends(tmp_path):
    import subprocess

    p = subprocess.Popen([sys.executable, "-m", "ambidex_stage.warm"], stdin=subprocess.PIPE)
    p.stdin.close()
    assert p.wait(timeout=60) == 0


def test_ambidex_score_uses_one_for_a_python_model_and_stops_it_for_r(workspace, py_model_dir, r_model_dir, launched,
                                                                       capsys, monkeypatch):
    from ambidex.cli.main import main as run

    from .conftest import register

    reg = workspace.registry()
    register(reg.engine, reg.store, py_model_dir, "churn")
    register(reg.engine, reg.store, r_model_dir, "churn_r")
    write_table(churn_frame(200).drop(columns=["churn"]), workspace.root / "in.csv")
    assert run(["deploy", "create", "py", "--champion", "churn:1", "--key", "customer_id"]) == 0
    launched.clear()  # its smoke test started fresh interpreters
    assert run(["score", "py", "--window", "2024-06-01/2024-06-02", "--input", "in.csv"]) == 0
    assert [a[-1] for a in launched] == ["ambidex_stage.warm"]  # the stage ran in it
    assert run(["deploy", "create", "r", "--champion", "churn_r:1", "--key", "customer_id"]) == 0
    launched.clear()
    stopped = []
    real_stop = runners._stop
    monkeypatch.setattr(runners, "_stop", lambda proc: stopped.append(len(launched)) or real_stop(proc))
    assert run(["score", "r", "--window", "2024-06-01/2024-06-02", "--input", "in.csv"]) == 0
    # started before the live revision was read, stopped once it showed R only, before the R stage started
    assert launched[0][-1] == "ambidex_stage.warm" and stopped[0] == 1
    assert not any("ambidex_stage.warm" in a for a in launched[1:]) and len(launched) > 1
    assert runners._WARM.ready == {}
    capsys.readouterr()
