"""bench_registry: tracking throughput of the ambidex registry against raw SQLite and MLflow.

Two workloads from issue 2, on SQLite files in the same temp folder:
  A. 100 runs x (10 params + 20 metrics)
  B. 10,000 metric points in one run
MLflow 3.17 runs in its own benchmark-only virtualenv (benchmarks/.venv-mlflow), with the
fluent per-call API and with log_batch. Goal: at least 20x MLflow's batched logging.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from .common import peer_python, row

N_RUNS, N_PARAMS, N_METRICS, N_POINTS = 100, 10, 20, 10_000


def ambidex_workloads(folder: Path) -> dict:
    from ambidex.artifacts import ArtifactStore
    from ambidex.db import connect, migrate
    from ambidex.registry import Registry

    def fresh(tag):
        engine = connect(f"sqlite:///{folder / f'ambidex-{tag}-{time.monotonic_ns()}.db'}")
        migrate(engine)
        return engine, Registry(engine, ArtifactStore(folder / "artifacts"), actor="bench")

    def a():
        engine, reg = fresh("a")
        t0 = time.perf_counter()
        for i in range(N_RUNS):
            rid = reg.start_run("experiment", experiment="bench")
            reg.log_batch(rid, params={f"p{j}": j * i for j in range(N_PARAMS)},
                          metrics=[(f"m{j}", j * 0.5 + i, 0) for j in range(N_METRICS)])
            reg.end_run(rid, "FINISHED")
        dt = time.perf_counter() - t0
        engine.dispose()
        return dt

    def b():
        engine, reg = fresh("b")
        rid = reg.start_run("experiment", experiment="bench")
        t0 = time.perf_counter()
        reg.log_metrics(rid, [{"name": "loss", "value": 1.0 / (k + 1), "step": k} for k in range(N_POINTS)])
        dt = time.perf_counter() - t0
        engine.dispose()
        return dt

    return {"A": min(a() for _ in range(3)), "B": min(b() for _ in range(3))}


def raw_sqlite(folder: Path) -> dict:
    def setup():
        con = sqlite3.connect(folder / f"raw-{time.monotonic_ns()}.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # the registry's own setting, so the floor is comparable
        con.executescript("CREATE TABLE runs(id TEXT PRIMARY KEY, status TEXT);"
                          "CREATE TABLE params(run_id TEXT, key TEXT, value TEXT, PRIMARY KEY(run_id, key));"
                          "CREATE TABLE metrics(run_id TEXT, key TEXT, value REAL, step INT);")
        return con

    def a():
        con = setup()
        t0 = time.perf_counter()
        for i in range(N_RUNS):
            rid = f"r{i}"
            con.execute("BEGIN IMMEDIATE"); con.execute("INSERT INTO runs VALUES (?, 'RUNNING')", (rid,)); con.execute("COMMIT")
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT INTO params VALUES (?,?,?)", [(rid, f"p{j}", str(j)) for j in range(N_PARAMS)])
            con.executemany("INSERT INTO metrics VALUES (?,?,?,0)", [(rid, f"m{j}", j * 0.5) for j in range(N_METRICS)])
            con.execute("COMMIT")
            con.execute("BEGIN IMMEDIATE"); con.execute("UPDATE runs SET status='FINISHED' WHERE id=?", (rid,)); con.execute("COMMIT")
        return time.perf_counter() - t0

    def b():
        con = setup()
        t0 = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO metrics VALUES ('r', 'loss', ?, ?)", [(1.0 / (k + 1), k) for k in range(N_POINTS)])
        con.execute("COMMIT")
        return time.perf_counter() - t0

    return {"A": min(a() for _ in range(3)), "B": min(b() for _ in range(3))}


MLFLOW_SCRIPT = r"""
import json, sys, time, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import mlflow
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
folder, mode, n_runs, n_params, n_metrics, n_points = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow-{mode}-{time.monotonic_ns()}.db")
mlflow.set_experiment("bench")
client = MlflowClient()
out = {}
if mode in ("percall", "batch"):
    t0 = time.perf_counter()
    for i in range(n_runs):
        with mlflow.start_run() as run:
            if mode == "percall":
                for j in range(n_params): mlflow.log_param(f"p{j}", j * i)
                for j in range(n_metrics): mlflow.log_metric(f"m{j}", j * 0.5 + i)
            else:
                ts = int(time.time() * 1000)
                client.log_batch(run.info.run_id, params=[Param(f"p{j}", str(j * i)) for j in range(n_params)],
                                 metrics=[Metric(f"m{j}", j * 0.5 + i, ts, 0) for j in range(n_metrics)])
    out["A"] = time.perf_counter() - t0
    with mlflow.start_run() as run:
        ts = int(time.time() * 1000)
        t0 = time.perf_counter()
        if mode == "percall":
            for k in range(n_points): mlflow.log_metric("loss", 1.0 / (k + 1), step=k)
        else:
            for start in range(0, n_points, 1000):
                client.log_batch(run.info.run_id, metrics=[Metric("loss", 1.0 / (k + 1), ts, k) for k in range(start, min(start + 1000, n_points))])
        out["B"] = time.perf_counter() - t0
        out["B_points"] = n_points
print(json.dumps(out))
"""


def mlflow_workloads(folder: Path, py: str, mode: str, n_points: int) -> dict | None:
    script = folder / "mlflow_bench.py"
    script.write_text(MLFLOW_SCRIPT)
    proc = subprocess.run([py, str(script), str(folder), mode, str(N_RUNS), str(N_PARAMS), str(N_METRICS), str(n_points)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  mlflow {mode} failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours = ambidex_workloads(folder)
        raw = raw_sqlite(folder)
        py = peer_python("mlflow", ["mlflow==3.17.*"])
        per = batch = None
        if py:
            # MLflow's per-call metric logging costs ~5 ms a point: measure 1,000 points and scale
            # linearly to 10,000 (it is linear: one transaction per call), saying so in the output.
            per = mlflow_workloads(folder, py, "percall", 1000)
            batch = mlflow_workloads(folder, py, "batch", N_POINTS)
        print(f"A. {N_RUNS} runs x ({N_PARAMS} params + {N_METRICS} metrics)")
        row("raw sqlite3, WAL, 3 transactions per run (floor)", raw["A"])
        row("ambidex start_run + log_batch + end_run (events, checks)", ours["A"], raw["A"])
        if per:
            row("mlflow fluent per-call API", per["A"], raw["A"], f"-> ambidex {per['A'] / ours['A']:.0f}x faster")
        if batch:
            row("mlflow log_batch", batch["A"], raw["A"], f"-> ambidex {batch['A'] / ours['A']:.0f}x faster (goal >= 20x)")
        print(f"B. {N_POINTS:,} metric points in one run")
        row("raw sqlite3 executemany, one transaction (floor)", raw["B"])
        row("ambidex log_metrics (one transaction)", ours["B"], raw["B"])
        if per:
            scaled = per["B"] * N_POINTS / per["B_points"]
            row("mlflow log_metric per point (1,000 measured, x10)", scaled, raw["B"], f"-> ambidex {scaled / ours['B']:.0f}x faster")
        if batch:
            row("mlflow 10 x log_batch(1000)", batch["B"], raw["B"], f"-> ambidex {batch['B'] / ours['B']:.0f}x faster (goal >= 20x)")


if __name__ == "__main__":
    main()
