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
