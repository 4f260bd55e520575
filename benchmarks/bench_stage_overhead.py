"""bench_stage_overhead: what ambidex adds to a stage, against starting the bare interpreter.

A pipeline of N trivial Python stages and N trivial R stages runs through `ambidex run`. Each
stage is a process that loads the SDK, reads context.json and writes result.json. Baselines,
measured in the same run: `python -c 'import ambidex_stage.context'` and
`Rscript --vanilla -e 'library(ambidex)'` (the same imports, no contract work).
Goal (issue 2): each stage within 1.25x of the bare interpreter start.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import env_with_r, row, time_command

N = 5


def make_project(root: Path) -> Path:
    (root / "s").mkdir(parents=True)
    (root / "ambidex.yaml").write_text("version: 1\nproject: bench\n")
    (root / "s" / "noop.py").write_text("def main(ctx):\n    pass\n")
    (root / "s" / "noop.R").write_text("main <- function(ctx) NULL\n")
    stages = "".join(f"  - name: py{i}\n    lang: python\n    script: s/noop.py\n" for i in range(N))
    stages += "".join(f"  - name: r{i}\n    lang: r\n    script: s/noop.R\n" for i in range(N))
    (root / "config").mkdir()
    path = root / "config" / "noop.yaml"
    path.write_text(f"version: 1\nname: noop\nstages:\n{stages}")
    return path


def main() -> None:
    env = env_with_r()
    env["R_LIBS"] = env["AMBIDEX_R_LIBS"]
    bare_py = time_command([sys.executable, "-c", "import ambidex_stage.context, ambidex_stage.result"], env=env)
    bare_r = time_command(["Rscript", "--vanilla", "-e", "library(ambidex)"], env=env)
    ambidex = str(Path(sys.executable).with_name("ambidex"))
    walls, per_py, per_r = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = make_project(Path(tmp) / "p")
        for _ in range(3):
            t0 = time.perf_counter()
            out = subprocess.run([ambidex, "run", str(pipeline), "--json"], cwd=pipeline.parent.parent, env=env,
                                 capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t0)
            summary = json.loads(out.stdout)
            per_py.append(statistics.median(s["wall_seconds"] for s in summary["stages"] if s["lang"] == "python"))
            per_r.append(statistics.median(s["wall_seconds"] for s in summary["stages"] if s["lang"] == "r"))
    stage_py, stage_r, wall = statistics.median(per_py), statistics.median(per_r), statistics.median(walls)
    print(f"Per-stage cost (median over {N} stages x 3 runs) against the bare interpreter start:")
    row("python -c 'import ambidex_stage.context' (bare)", bare_py)
    row("python stage through ambidex (process + contract files)", stage_py, bare_py)
    row("Rscript -e 'library(ambidex)' (bare)", bare_r)
    row("R stage through ambidex (process + contract files)", stage_r, bare_r)
    fixed = wall - N * (stage_py + stage_r)
    row(f"whole `ambidex run` of {2 * N} stages", wall, N * (bare_py + bare_r))
    print(f"  fixed cost of a run (CLI start, registry, lock, lineage, records): {fixed:.3f} s")
    print(f"  goal <= 1.25x per stage: python {stage_py / bare_py:.2f}x, R {stage_r / bare_r:.2f}x")


if __name__ == "__main__":
    main()
