"""runners.stage_zygotes: built-in stages (Python and R) forked from a process that loaded their packages
once give the same result, logs and error as a fresh process; anything else starts fresh."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


def _zygotes(lang=None):
    return [z for k, z in runners._ZYGOTES.held.items() if lang is None or k[0] == lang]


def _score(model_dir, inp, out, tmp_path, **kw):
    return score_model(model_dir, inp, out, project_root=tmp_path, work_dir=tmp_path / "w", keep=["customer_id"],
                       **kw)


@pytest.mark.parametrize("lang", ["python", "r"])
def test_a_builtin_stage_forked_from_a_zygote_gives_the_fresh_result(lang, py_model_dir, r_model_dir, scored_input,
                                                                     tmp_path, launched):
    model = py_model_dir if lang == "python" else r_model_dir
    _score(model, scored_input, tmp_path / "fresh.csv", tmp_path)
    launched.clear()
    with runners.stage_zygotes(lang):
        zygote = _zygotes(lang)[0]
        first = _score(model, scored_input, tmp_path / "forked.csv", tmp_path)
        _score(model, scored_input, tmp_path / "again.csv", tmp_path)
        assert _zygotes(lang) == [zygote]  # both stages forked from the one zygote
    assert [a[-2:] for a in launched] == [["ambidex_stage.zygote", lang]]  # no other process started
    assert zygote.proc.poll() is not None  # stopped at the end of the block
    assert first["status"] == "ok"
    fresh = read_table(tmp_path / "fresh.csv")
    assert read_table(tmp_path / "forked.csv").equals(fresh) and read_table(tmp_path / "again.csv").equals(fresh)


@pytest.mark.parametrize("lang", ["python", "r"])
def test_a_forked_stage_is_measured_and_trains_the_same_model(lang, tmp_path):
    import json

    from .conftest import train_launch

    fresh = runners.run_stage(train_launch(tmp_path / "fresh", lang, "m"))
    with runners.stage_zygotes(lang):
        zygote = _zygotes(lang)[0]
        forked = runners.run_stage(train_launch(tmp_path / "forked", lang, "m"))
        assert zygote.proc.poll() is None and not zygote.jobs
    for out in (fresh, forked):
        assert out.status == "ok" and out.exit_code == 0, out.error
        assert out.cpu_seconds > 0 and out.peak_rss_bytes > 10 * 2**20 and out.wall_seconds > 0
        assert out.stdout_path.exists() and out.stderr_path.exists()
    # the forked one did not load the packages again
    assert forked.cpu_seconds < fresh.cpu_seconds
    metrics = [{m["name"]: m["value"] for m in out.result["metrics"]} for out in (fresh, forked)]
    assert metrics[0] == metrics[1]
    golden = [json.loads((o.stdout_path.parent / "out" / "model" / "model.json").read_text())["golden"]
              for o in (fresh, forked)]
    assert golden[0] == golden[1]


def test_a_changed_environment_a_script_or_another_r_starts_fresh(py_model_dir, scored_input, tmp_path, monkeypatch):
    with runners.stage_zygotes("python"):
        first = _zygotes("python")[0]
        monkeypatch.setenv("AMBIDEX_TEST_MARKER", "changed after the zygote started")
        _score(py_model_dir, scored_input, tmp_path / "out.csv", tmp_path)
        # a zygote of the new environment served it; the first one was not used
        assert len(_zygotes("python")) == 2 and not first.jobs
        env = runners.stage_env(_launch(tmp_path))
        assert not runners._ZYGOTES.usable(_launch(tmp_path, builtin=None, script=tmp_path / "s.py"), env)
        assert not runners._ZYGOTES.usable(_launch(tmp_path, lang="r", rscript="/opt/R/bin/Rscript"), env)
        assert not runners._ZYGOTES.usable(_launch(tmp_path, lang="r", runner="rpy2"), env)
        assert not runners._ZYGOTES.usable(_launch(tmp_path, lang="r"), {**env, "R_HOME": "/opt/R"})
    assert read_table(tmp_path / "out.csv").shape[0] == 300
    assert runners._ZYGOTES.held == {}


def _launch(tmp_path, builtin="score", script=None, lang="python", runner=None, rscript="Rscript"):
    runner = runner or ("subprocess" if lang == "python" else "rscript")
    return runners.StageLaunch(stage="score", lang=lang, runner=runner,
                               script=script, builtin=builtin, context_path=tmp_path / "context.json",
                               stage_dir=tmp_path / "sd", project_root=tmp_path, timeout=60, rscript=rscript)


def test_outside_a_block_or_turned_off_stages_start_fresh(py_model_dir, scored_input, tmp_path, launched, monkeypatch):
    _score(py_model_dir, scored_input, tmp_path / "o.csv", tmp_path)
    monkeypatch.setenv("AMBIDEX_ZYGOTES", "0")
    with runners.stage_zygotes("python", "r"):
        assert runners._ZYGOTES.held == {}
        _score(py_model_dir, scored_input, tmp_path / "o2.csv", tmp_path)
    assert [a[-3:] for a in launched] == [["ambidex_stage.run", "--builtin", "score"]] * 2


@pytest.mark.parametrize("lang", ["python", "r"])
def test_a_failing_forked_stage_reports_as_a_fresh_one(lang, py_model_dir, r_model_dir, tmp_path):
    model = py_model_dir if lang == "python" else r_model_dir
    bad = tmp_path / "bad.csv"
    write_table(churn_frame(50, seed=2).drop(columns=["churn", "plan"]), bad)  # a missing input column
    errors = []
    for forked in (False, True):
        with runners.stage_zygotes(lang) if forked else _nothing():
            with pytest.raises((StageError, ContractError)) as e:
                _score(model, bad, tmp_path / "o.csv", tmp_path)
            if forked:
                assert _zygotes(lang)[0].proc.poll() is None  # still serving
        errors.append(e.value)
    assert type(errors[0]) is type(errors[1]) and errors[0].code == errors[1].code == "contract.missing_column"
    assert str(errors[0]) == str(errors[1])


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_a_forked_stage_past_its_timeout_is_killed_and_the_zygote_serves_on(py_model_dir, scored_input, tmp_path):
    with runners.stage_zygotes("python"):
        zygote = _zygotes("python")[0]
        assert zygote.ready.wait(60) and zygote.ok
        with pytest.raises(StageError) as e:
            _score(py_model_dir, scored_input, tmp_path / "o.csv", tmp_path, timeout=0.05)
        assert e.value.code == "stage.timeout"
        assert zygote.proc.poll() is None
        assert _score(py_model_dir, scored_input, tmp_path / "o2.csv", tmp_path)["status"] == "ok"
        assert _zygotes("python") == [zygote]


def test_a_stage_whose_zygote_dies_fails_clearly_and_the_next_starts_anew(py_model_dir, scored_input, tmp_path,
                                                                          monkeypatch):
    import threading

    with runners.stage_zygotes("python"):
        zygote = _zygotes("python")[0]
        assert zygote.ready.wait(60)
        real_fork = zygote.fork

        def fork_then_kill(*a, **k):
            job = real_fork(*a, **k)
            threading.Timer(0.01, os.killpg, (zygote.proc.pid, signal.SIGKILL)).start()
            return job

        monkeypatch.setattr(zygote, "fork", fork_then_kill)
        with pytest.raises(StageError) as e:
            _score(py_model_dir, scored_input, tmp_path / "o.csv", tmp_path)
        assert "signal 9" in str(e.value)
        monkeypatch.undo()
        assert _score(py_model_dir, scored_input, tmp_path / "o2.csv", tmp_path)["status"] == "ok"
        assert len(_zygotes("python")) == 1 and _zygotes("python")[0] is not zygote


def test_stopping_a_loading_zygote_does_not_wait_for_it(tmp_path):
    with runners.stage_zygotes() as block:
        block.prestart("r")
        block.prestart("python")
        t = time.perf_counter()
        block.stop()
        assert time.perf_counter() - t < 0.5
        assert runners._ZYGOTES.held == {}


def test_a_zygote_exits_when_its_input_ends_and_kills_the_children_left(tmp_path):
    env = {**runners._contract_env()}
    p = subprocess.Popen([sys.executable, "-m", "ambidex_stage.zygote", "python"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=env)
    p.stdin.close()
    assert p.wait(timeout=60) == 0
    assert p.stdout.readline().strip() == b'{"ready": true}'


def test_a_zygote_that_cannot_load_says_so_once_and_stages_start_fresh(r_model_dir, scored_input, tmp_path,
                                                                      monkeypatch, launched):
    fake = tmp_path / "fake" / "rpy2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('rpy2 is broken here')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    with runners.stage_zygotes("r"):
        zygote = _zygotes("r")[0]
        assert zygote.ready.wait(60) and not zygote.ok and zygote.load_failed
        for i in range(2):
            _score(r_model_dir, scored_input, tmp_path / f"r{i}.csv", tmp_path)
        assert _zygotes("r") == [zygote]  # not started again for every stage
    assert [a[-2:] for a in launched if "ambidex_stage.zygote" in a] == [["ambidex_stage.zygote", "r"]]
    assert [a[0] for a in launched if "ambidex_stage.zygote" not in a] == ["Rscript", "Rscript"]
    assert read_table(tmp_path / "r1.csv").shape[0] == 300


@pytest.mark.parametrize("in_block", [False, True])
def test_run_r_code_forked_or_fresh(in_block, tmp_path):
    code = 'writeLines(paste(args, collapse = "|"), file.path(args[1], "out.txt")); message("to stderr")'
    with runners.stage_zygotes() if in_block else _nothing():
        rc, tail = runners.run_r_code(code, [tmp_path, "a b", "ü\"'"], cwd=tmp_path, log_dir=tmp_path / "logs")
        assert rc == 0 and "to stderr" in tail
        assert (tmp_path / "out.txt").read_text(encoding="utf-8").strip() == f"{tmp_path}|a b|ü\"'"
        if in_block:
            assert len(_zygotes("r")) == 1
        rc, tail = runners.run_r_code('stop("no such model: ", args[1])', ["m1"], cwd=tmp_path,
                                      log_dir=tmp_path / "logs2")
        assert rc == 1 and "no such model: m1" in tail


def test_ambidex_score_forks_a_python_model_and_starts_an_r_zygote_only_where_it_pays(workspace, py_model_dir,
                                                                                        r_model_dir, launched,
                                                                                        capsys):
    from ambidex.cli.main import main as run

    from .conftest import register

    reg = workspace.registry()
    register(reg.engine, reg.store, py_model_dir, "churn")
    register(reg.engine, reg.store, r_model_dir, "churn_r", times=2)
    write_table(churn_frame(200).drop(columns=["churn"]), workspace.root / "in.csv")
    assert run(["deploy", "create", "py", "--champion", "churn:1", "--key", "customer_id"]) == 0
    launched.clear()  # its smoke test started fresh processes
    assert run(["score", "py", "--window", "2024-06-01/2024-06-02", "--input", "in.csv"]) == 0
    assert [a[-2:] for a in launched] == [["ambidex_stage.zygote", "python"]]  # the stage was forked from it
    assert run(["deploy", "create", "r", "--champion", "churn_r:1", "--key", "customer_id"]) == 0
    launched.clear()
    assert run(["score", "r", "--window", "2024-06-01/2024-06-02", "--input", "in.csv"]) == 0
    # the Python one started before the live revision was read (and was stopped); one R model from a file
    # starts fresh: an R zygote would cost more than it saves
    assert launched[0][-2:] == ["ambidex_stage.zygote", "python"]
    assert [a[0] for a in launched[1:]] == ["Rscript"]
    assert run(["deploy", "create", "r2", "--champion", "churn_r:1", "--shadow", "churn_r:2",
                "--key", "customer_id"]) == 0
    launched.clear()
    assert run(["score", "r2", "--window", "2024-06-01/2024-06-02", "--input", "in.csv"]) == 0
    # two R models: both forked from one R zygote
    assert [a[-2:] for a in launched] == [["ambidex_stage.zygote", "python"], ["ambidex_stage.zygote", "r"]]
    assert runners._ZYGOTES.held == {}
    capsys.readouterr()


_R_PROBE = r"""
writeLines(c(paste("interactive", interactive()), paste("r_home", nzchar(Sys.getenv("R_HOME"))),
             paste("marker", Sys.getenv("AMBIDEX_TEST_MARKER", "unset")),
             paste("rpy2_mark", Sys.getenv("PYTHON_SESSION_INITIALIZED", "unset")),
             paste("wd", getwd() == normalizePath(args[2])),
             paste("tmp", dir.exists(tempdir()))), file.path(args[1], "probe.txt"))
warning("careful with that")
"""


def test_forked_r_code_sees_what_rscript_sees(tmp_path):
    (tmp_path / "wd").mkdir()
    outs = {}
    for forked in (False, True):
        d = tmp_path / str(forked)
        d.mkdir()
        # rpy2 marks the zygote's environment (C level too) when it starts R; the child's is the stage's
        with runners.stage_zygotes() if forked else _nothing():
            rc, tail = runners.run_r_code(_R_PROBE, [d, tmp_path / "wd"], cwd=tmp_path / "wd", log_dir=d / "logs")
        assert rc == 0, tail
        assert "careful with that" in tail  # printed, not held back
        outs[forked] = (d / "probe.txt").read_text().splitlines()
    assert outs[False] == outs[True]
    assert outs[True] == ["interactive FALSE", "r_home TRUE", "marker unset", "rpy2_mark unset", "wd TRUE",
                          "tmp TRUE"]
    assert len(_zygotes()) == 0


def test_forked_r_code_errors_as_rscript_and_runaway_recursion_is_an_error(tmp_path):
    with runners.stage_zygotes():
        rc, tail = runners.run_r_code('f <- function(x) stop("bad model folder: ", x)\nf(args[1])', ["m7"],
                                      cwd=tmp_path, log_dir=tmp_path / "a")
        assert rc == 1 and "bad model folder: m7" in tail and "Execution halted" in tail
        assert tail.count("bad model folder: m7") == 1
        rc, tail = runners.run_r_code("options(expressions = 500000)\nf <- function(n) f(n + 1)\nf(1)", [],
                                      cwd=tmp_path, log_dir=tmp_path / "b")
        assert rc == 1 and ("C stack" in tail or "too deeply" in tail), tail
        assert _zygotes("r")[0].ok  # the zygote serves on


def test_what_a_forked_stage_started_dies_with_its_zygote(tmp_path):
    import threading

    marker = "47.123"
    with runners.stage_zygotes():
        runners._ZYGOTES.lazy = True
        runners.run_r_code("invisible(0)", [], cwd=tmp_path, log_dir=tmp_path / "w")
        z = _zygotes("r")[0]
        got = {}
        t = threading.Thread(target=lambda: got.update(r=runners.run_r_code(
            f'system("sleep {marker}", wait = FALSE); Sys.sleep(60)', [], cwd=tmp_path, log_dir=tmp_path / "l")))
        t.start()
        deadline = time.time() + 30
        while time.time() < deadline and subprocess.run(["pgrep", "-f", f"sleep {marker}"],
                                                        capture_output=True).returncode:
            time.sleep(0.05)
        os.killpg(z.proc.pid, signal.SIGKILL)
        t.join(30)
    assert got["r"][0] == -signal.SIGKILL
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True).returncode == 1


def test_a_forked_stage_is_measured_as_its_own(tmp_path):
    from .conftest import train_launch

    with runners.stage_zygotes():  # lazy: the first stage starts the zygote and waits for it to load
        out = runners.run_stage(train_launch(tmp_path, "python", "m"))
    fresh = runners.run_stage(train_launch(tmp_path / "fresh", "python", "m"))
    assert out.runner == "zygote" and fresh.runner == "subprocess"
    assert out.peak_rss_bytes < fresh.peak_rss_bytes  # its own memory, without the loaded runtime's
    assert out.cpu_seconds < fresh.cpu_seconds  # nor its CPU


def test_rpy2s_marks_on_the_orchestrators_environment_do_not_reach_stages(monkeypatch):
    monkeypatch.setenv("PYTHON_SESSION_INITIALIZED", "rpy2_version=3.5.17")
    assert "PYTHON_SESSION_INITIALIZED" not in runners._contract_env()
    assert runners._contract_env()["KMP_INIT_AT_FORK"] == "FALSE"


def test_an_idle_r_zygote_loads_what_an_error_needs_after_its_first_stage(tmp_path):
    probe = 'writeLines(loadedNamespaces(), file.path(args[1], "ns.txt"))'
    with runners.stage_zygotes():
        runners.run_r_code(probe, [tmp_path], cwd=tmp_path, log_dir=tmp_path / "a")
        first = set((tmp_path / "ns.txt").read_text().split())
        runners.run_r_code(probe, [tmp_path], cwd=tmp_path, log_dir=tmp_path / "b")
        later = set((tmp_path / "ns.txt").read_text().split())
    assert "cli" not in first and {"cli", "rlang"} <= later  # the first stage did not wait for it


def test_ambidex_run_of_a_cycle_starts_its_candidates_zygotes_first(tmp_path):
    from ambidex.cli.project import _cycle_zygotes_ahead

    (tmp_path / "ambidex.yaml").write_text("version: 1\nproject: t\n")
    cycle = tmp_path / "c.yaml"
    cycle.write_text("cycle:\n  candidates:\n    - {name: a, lang: r, builtin: train}\n"
                     "    - {name: b, lang: python, builtin: train}\n    - {name: c, lang: python, script: s.py}\n")
    assert [(x.lang, x.builtin) for x in _cycle_zygotes_ahead(cycle)] == [("python", "score"), ("r", "score")]
    plain = tmp_path / "p.yaml"
    plain.write_text("stages:\n  - {name: a, lang: r, builtin: train}\n")
    broken = tmp_path / "b.yaml"
    broken.write_text("cycle: [unclosed\n")
    assert _cycle_zygotes_ahead(plain) == _cycle_zygotes_ahead(broken) == _cycle_zygotes_ahead(tmp_path / "none") == []
    # a project with its own R library folders: the stages' environment is the cycle's to work out
    (tmp_path / "ambidex.yaml").write_text("version: 1\nproject: t\nr:\n  libs: [rlib]\n")
    assert _cycle_zygotes_ahead(cycle) == []


@pytest.mark.parametrize("in_block", [False, True])
def test_r_code_at_its_top_level_errors_and_binds_args_as_rscript_does(in_block, tmp_path):
    with runners.stage_zygotes() if in_block else _nothing():
        rc, tail = runners.run_r_code('stop("top")', [], cwd=tmp_path, log_dir=tmp_path / "a")
        assert rc == 1 and "Error: top" in tail and "Execution halted" in tail
        rc, tail = runners.run_r_code('cat(class(args), length(args), file = file.path(getwd(), "n.txt"))', [],
                                      cwd=tmp_path, log_dir=tmp_path / "b")
        assert rc == 0 and (tmp_path / "n.txt").read_text() == "character 0"
