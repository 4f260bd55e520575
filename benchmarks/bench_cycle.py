"""bench_cycle: what the continuous-training cycle costs around its own work, and its memory over many windows.

1. The churn loop (config/churn.yaml, real wa_churn data) from the cold start for a few windows,
   each window in a fresh ``ambidex run --window`` process. Per window: the wall time split by
   step (the ``cycle_steps`` journal), against the bare work it contains: every process it
   launched (R/Python stages, scoring, smoke tests: timed by the runner) plus the in-process data
   work (ingest, capture inserts, profiles, KPIs). Orchestration = window wall - that sum.
2. Peak RSS of one ``ambidex run --window`` process per window over a synthetic window of
   ``--rows`` rows (default 1,000,000), for 3 consecutive windows: it should be flat.

    python -m benchmarks.bench_cycle [--windows 4] [--rows 1000000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

_TIMED = """
import json, os, sys, time
import ambidex.runners as R
import ambidex.cycle_steps as S
spent = {"processes": 0.0, "launches": 0}
_run = R.run_stage
def timed(launch, **kw):
    t = time.perf_counter()
    try:
        return _run(launch, **kw)
    finally:
        spent["processes"] += time.perf_counter() - t
        spent["launches"] += 1
R.run_stage = timed
import ambidex.scoring, ambidex.pipeline
ambidex.scoring.run_stage = timed
ambidex.pipeline.run_stage = timed
from ambidex.cli.main import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
spent["wall"] = time.perf_counter() - t0
print("BENCH " + json.dumps(spent), file=sys.stderr)
sys.exit(rc)
"""


def _project(tmp: Path, yaml_text: str, extra: dict[str, str] | None = None) -> Path:
    root = tmp / "proj"
    (root / "config" / "stages").mkdir(parents=True)
    (root / "ambidex.yaml").write_text("version: 1\nproject: bench\n")
    (root / "config" / "p.yaml").write_text(yaml_text)
    for name, text in (extra or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _run_window(root: Path, window: str) -> tuple[dict, float, int]:
    env = {**os.environ, "AMBIDEX_R_LIBS": os.environ.get("AMBIDEX_R_LIBS", str(REPO / ".venv" / "R-library"))}
    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, "-c", _TIMED, "run", "config/p.yaml", "--window", window], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, ru = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) not in (0, 4):
        sys.exit(f"window {window} failed:\n{err[-3000:]}")
    spent = json.loads([ln for ln in err.splitlines() if ln.startswith("BENCH ")][-1][6:])
    return spent, time.perf_counter() - t0, ru.ru_maxrss * 1024


def _steps(root: Path, window_start: str) -> dict[str, float]:
    import sqlalchemy as sa

    eng = sa.create_engine(f"sqlite:///{root / '.ambidex' / 'registry.db'}")
    with eng.connect() as c:
        rows = c.execute(sa.text("SELECT step, wall_seconds FROM cycle_steps WHERE window_start LIKE :w "
                                 "ORDER BY id"), {"w": window_start + "%"}).all()
    eng.dispose()
    return {s: w for s, w in rows if "." not in s}


def bench_overhead(windows: int) -> None:
    text = (REPO / "config" / "churn.yaml").read_text()
    end = f"2024-{windows + 1:02d}-01"
    text = text.replace("end: 2025-01-01", f"end: {end}")
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp), text, {"config/stages/load_wa_churn.R":
                                          (REPO / "config/stages/load_wa_churn.R").read_text()})
        print(f"churn loop, {windows} window(s) from the cold start, each in a fresh process")
        print(f"{'window':<10} {'wall s':>8} {'processes s':>12} {'launches':>9} {'other s':>8}  steps (s)")
        tot_wall = tot_proc = 0.0
        for k in range(windows):
            w = f"2024-{k + 1:02d}-01/2024-{k + 2:02d}-01"
            spent, wall, _ = _run_window(root, w)
            steps = _steps(root, w[:10])
            step_sum = sum(steps.values())
            tot_wall += spent["wall"]
            tot_proc += spent["processes"]
            busy = ", ".join(f"{s} {v:.1f}" for s, v in steps.items() if v >= 0.05)
            print(f"{w[:7]:<10} {spent['wall']:>8.2f} {spent['processes']:>12.2f} {spent['launches']:>9} "
                  f"{spent['wall'] - spent['processes']:>8.2f}  journaled {step_sum:.2f}: {busy}")
        print(f"total: wall {tot_wall:.1f} s, launched processes {tot_proc:.1f} s; everything else (ingest, capture,"
              f" profiles, KPIs, drift, journal, lineage, lock, verify, report, CLI start) {tot_wall - tot_proc:.1f} s"
              f" = {100 * (tot_wall - tot_proc) / tot_wall:.1f}% of the wall time")


GEN = """\
import numpy as np
import pandas as pd

def main(ctx):
    n = int(ctx.params["rows"])
    start = pd.Timestamp(ctx.window["start"])
    end = pd.Timestamp(ctx.window["end"])
    if start.year < 2000:  # the cold start's history: one small month
        start = end - pd.Timedelta(days=31)
        n = max(2000, n // 50)
    rng = np.random.default_rng(int(start.timestamp()) % 2**31)
    x1 = rng.normal(size=n)
    secs = rng.integers(0, int((end - start).total_seconds()), n)
    base = int(start.timestamp())
    ctx.write_table("t", pd.DataFrame({
        "id": np.arange(base * 10, base * 10 + n, dtype="int64"),
        "ts": start + pd.to_timedelta(secs, unit="s"),
        "x1": x1, "x2": rng.normal(size=n),
        "y": pd.Categorical(np.where(rng.random(n) < 1 / (1 + np.exp(-2 * x1)), "yes", "no"), categories=["no", "yes"])}))
"""


def bench_memory(rows: int) -> None:
    yaml_text = f"""version: 1
name: big
data:
  marts:
    - {{name: big, key: [id], time_column: ts, load: incremental}}
stages:
  - {{name: gen, lang: python, script: gen.py, params: {{rows: {rows}}}, outputs: {{t: {{kind: table}}}}}}
  - {{name: ingest_big, ingest: big, inputs: {{data: gen.t}}}}
deploy: {{name: big-live, entity_key: id, capture_features: false}}
cycle:
  cadence: monthly
  start: 2024-01-01
  end: 2024-05-01
  history_start: 2023-11-01
  mart: big
  target: y
  kpi: auc
  train_windows: 1
  retrain: {{on: [kpi]}}
  candidates:
    - name: train_py
      lang: python
      builtin: train
      params: {{target: y, exclude: [id, ts], estimator: logistic_regression, positive: "yes"}}
      inputs: {{train: "mart:big"}}
      outputs: {{model: {{kind: model, register: big-py}}}}
"""
    with tempfile.TemporaryDirectory() as tmp:
        root = _project(Path(tmp), yaml_text, {"gen.py": GEN})
        print(f"\npeak RSS of one cycle process per window, {rows:,} rows per window")
        for k in range(3):
            w = f"2024-{k + 1:02d}-01/2024-{k + 2:02d}-01"
            spent, wall, rss = _run_window(root, w)
            print(f"{w[:7]:<10} wall {wall:8.1f} s   peak RSS (orchestrator and its children) {rss / 2**20:8.1f} MiB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--skip-memory", action="store_true")
    a = ap.parse_args(argv)
    bench_overhead(a.windows)
    if not a.skip_memory:
        bench_memory(a.rows)
    return 0


if __name__ == "__main__":
    _ = (resource, shutil)
    sys.exit(main())
