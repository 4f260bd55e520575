"""runners: what the orchestrator does while a stage process runs, and what it measures of the stage."""
from __future__ import annotations

import sys
import time

from ambidex import runners
from ambidex.pipeline import write_context


def _launch(tmp_path, body: str) -> runners.StageLaunch:
    script = tmp_path / "stage.py"
    script.write_text(body)
    stage_dir = tmp_path / "stage"
    (stage_dir / "out").mkdir(parents=True)
    write_context(stage_dir / "context.json", {
        "contract_version": 1, "run_id": "0" * 32, "pipeline": "p", "stage": "s", "lang": "python",
        "project_root": str(tmp_path), "output_dir": str(stage_dir / "out"), "params": {}, "inputs": {},
        "outputs": {}, "window": None, "seed": 0})
    return runners.StageLaunch(stage="s", lang="python", runner="subprocess", script=script, builtin=None,
                               context_path=stage_dir / "context.json", stage_dir=stage_dir, project_root=tmp_path,
                               timeout=60)


def test_imports_run_while_a_stage_runs_and_stop_when_it_ends(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "amb_test_slow.py").write_text("import time\ntime.sleep(3)\n")
    (mods / "amb_test_later.py").write_text("")
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setattr(runners, "_MEANWHILE", ["amb_test_missing", "amb_test_slow", "amb_test_later"])
    try:
        t0 = time.perf_counter()
        outcome = runners.run_stage(_launch(tmp_path, "def main(ctx):\n    pass\n"))
        took = time.perf_counter() - t0
        assert outcome.status == "ok" and outcome.exit_code == 0
        assert "amb_test_slow" in sys.modules  # imported while the stage ran; a module that is missing is skipped
        assert "amb_test_later" not in sys.modules  # the stage had ended: the rest waits for the next stage
        assert runners._MEANWHILE == ["amb_test_later"]
        # the stage's wall time ends when its process does, not when the import that outlived it returned
        assert took >= 3 and outcome.wall_seconds < took - 1.5
    finally:
        sys.modules.pop("amb_test_slow", None)


def test_a_failing_stage_is_judged_after_the_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(runners, "_MEANWHILE", ["json"])
    outcome = runners.run_stage(_launch(tmp_path, "def main(ctx):\n    raise ValueError('boom')\n"))
    assert outcome.exit_code == 1 and outcome.error is not None
    assert "boom" in outcome.stderr_path.read_text()


def test_a_script_stage_keeps_pythons_garbage_collector_settings(tmp_path):
    # built-in stages and the CLI space out the collector's passes (ambidex_stage._process); a project's script
    # gets the interpreter as Python sets it up
    outcome = runners.run_stage(_launch(tmp_path, "import gc\n\ndef main(ctx):\n    print(gc.get_threshold())\n"))
    assert outcome.status == "ok"
    assert outcome.stdout_path.read_text().strip() == str(__import__("gc").get_threshold())


def test_the_cli_spaces_out_the_garbage_collector(tmp_path):
    import subprocess

    from ambidex_stage._process import GC_THRESHOLDS

    code = ("import gc, sys\nimport ambidex.cli.main as m\nm.main = lambda: print(gc.get_threshold()) or 0\n"
            "m.entry()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(GC_THRESHOLDS)


def test_a_stage_run_by_a_worker_thread_imports_nothing_meanwhile(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(runners, "_MEANWHILE", ["amb_test_never"])
    done = {}
    t = threading.Thread(target=lambda: done.update(o=runners.run_stage(_launch(tmp_path, "def main(ctx):\n    pass\n"))))
    t.start()
    t.join(120)
    assert done["o"].status == "ok" and runners._MEANWHILE == ["amb_test_never"]
