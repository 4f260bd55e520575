"""bench_score: `ambidex score`'s path (score, capture, publish) vs a bare read + predict + write; memory; promotions.

    .venv/bin/python benchmarks/bench_score.py [--rows 1000000] [--big 4000000] [--promotions 20]
        [--r-rows 1000000] [--repeat 3] [--skip-scoring] [--skip-r] [--skip-promotions]

Prints one line per measurement, and ratios against the bare baseline measured in the same run.
The Python scoring at ``--rows`` is measured twice: from a typed CSV (``ambidex score --input``) against a
bare read_table + predict + write, and, as the issue words it, from the feature store (``ambidex score
DEPLOYMENT --window``: the window read from a mart in the registry's SQLite) against a bare script that
SELECTs the same rows into pandas, predicts and writes. Each runs ``--repeat`` times (bare and
deployment path alternately, each deployment run on a fresh copy of the registry) and reports the
medians, with every ratio.
Peak memory is the largest resident set of the process tree (the orchestrator or the score stage
it launched, whichever is larger), from wait4. The R part trains a ranger model (100 trees) and
compares the deployment path with a bare Rscript: fread + the model's predict + fwrite.
Not run by the tests.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "deploy"))

BARE = r"""
import sys, time, joblib, pandas as pd
from ambidex_stage.tables import read_table, write_table
from ambidex_stage.builtins import predict
t = time.perf_counter()
df = read_table(sys.argv[2])
out = predict(sys.argv[1], df)
out.insert(0, "customer_id", df["customer_id"].to_numpy())
write_table(out, sys.argv[3])
print(time.perf_counter() - t)
"""


def setup(root: Path, n: int):
    import conftest as C
    from ambidex.artifacts import ArtifactStore
    from ambidex.db import connect, migrate
    from ambidex.deploy import Deployments, Member
    from ambidex_stage.tables import write_table

    model = C.train_model(root, "python", "churn")
    engine = connect(f"sqlite:///{root / 'registry.db'}")
    migrate(engine)
    store = ArtifactStore(root / "artifacts")
    C.register(engine, store, model, "churn")
    deps = Deployments(engine, store=store, actor="bench")
    deps.create("bench", [Member("churn", 1)], entity_key="customer_id")
    inp = root / f"in_{n}.csv"
    write_table(C.churn_frame(n, seed=3).drop(columns=["churn"]), inp)
    return engine, store, deps, model, inp


_MEASURE = r"""
import os, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(time.perf_counter() - t, usage.ru_maxrss * 1024, status)
"""


def run_with_rss(argv, env=None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the process tree) of ``argv``. Launched through a small Python process:
    on Linux a child's ru_maxrss starts at its parent's resident size at fork, and this benchmark's own
    process holds the generated data, so measuring its direct children would report the parent's size."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"{argv[:2]} failed with status {out[2]}")
    return float(out[0]), int(out[1])


def _fresh_registry(root: Path) -> None:
    """The registry as set up (registry.fresh): no capture of an earlier run to replace."""
    import shutil

    for suffix in ("-wal", "-shm"):
        (root / f"registry.db{suffix}").unlink(missing_ok=True)
    shutil.copy(root / "registry.fresh", root / "registry.db")


def _alternate(root: Path, repeat: int, bare_argv: list, cli_argv: list) -> tuple[list, list]:
    """``repeat`` runs of the bare script and the deployment path, alternately, each on a fresh registry."""
    bares, clis = [], []
    for _ in range(max(1, repeat)):
        _fresh_registry(root)
        bares.append(run_with_rss(bare_argv))
        clis.append(run_with_rss(cli_argv))
    return bares, clis


def bench_scoring(rows: int, big: int | None, repeat: int = 1) -> None:
    import shutil
    import statistics

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        engine, _, _, model, inp = setup(root, rows)
        engine.dispose()
        shutil.copy(root / "registry.db", root / "registry.fresh")
        bares, clis = _alternate(root, repeat,
                                 [sys.executable, "-c", BARE, str(model), str(inp), str(root / "bare.csv")],
                                 [sys.executable, "-c", _score_code(root, inp)])
        bare_t, cli_t = statistics.median(t for t, _ in bares), statistics.median(t for t, _ in clis)
        bare_rss, cli_rss = max(r for _, r in bares), max(r for _, r in clis)
        runs = f" (median of {len(bares)}; ratios {', '.join(f'{c[0] / b[0]:.2f}' for b, c in zip(bares, clis))})" \
            if len(bares) > 1 else ""
        print(f"score {rows:,} rows: bare read+predict+write {bare_t:.2f} s (peak {bare_rss / 2**20:.0f} MiB); "
              f"deployment path (score+capture+publish) {cli_t:.2f} s (peak {cli_rss / 2**20:.0f} MiB)"
              f"  ratio {cli_t / bare_t:.2f}x{runs}  (goal <= 1.3x; MLflow pyfunc alone 2.4x a bare predict)")
        if big:
            from ambidex_stage.tables import write_table
            import conftest as C

            big_inp = root / "big.csv"
            write_table(C.churn_frame(big, seed=4).drop(columns=["churn"]), big_inp)
            _fresh_registry(root)
            bt, brss = run_with_rss([sys.executable, "-c", BARE, str(model), str(big_inp), str(root / "bare4.csv")])
            ct, crss = run_with_rss([sys.executable, "-c", _score_code(root, big_inp)])
            print(f"score {big:,} rows: bare {bt:.2f} s peak {brss / 2**20:.0f} MiB (x{brss / max(bare_rss, 1):.2f}); "
                  f"deployment path {ct:.2f} s ratio {ct / bt:.2f}x, peak {crss / 2**20:.0f} MiB (vs "
                  f"{cli_rss / 2**20:.0f} MiB at {rows:,}: x{crss / max(cli_rss, 1):.2f} for x{big / rows:.0f} rows)")


BARE_R = r"""
suppressMessages({library(data.table); library(ranger)})
a <- commandArgs(TRUE)
t <- proc.time()[["elapsed"]]
m <- jsonlite::fromJSON(file.path(a[1], "model.json"), simplifyVector = FALSE)
model <- readRDS(file.path(a[1], m$runtime$payload))
df <- fread(a[2], na.strings = "", showProgress = FALSE)
x <- ambidex:::conform_input(as.data.frame(df), m$signature)$df
p <- ambidex:::model_predict(model, x)
fwrite(data.table(customer_id = df$customer_id, prediction = p$prediction, score = p$score), a[3])
cat(proc.time()[["elapsed"]] - t, "\n")
"""


def train_r_ranger(root: Path, trees: int = 100) -> Path:
    """A ranger model (binary churn) trained by the R built-in train stage."""
    import json
    import uuid

    import conftest as C
    from ambidex.pipeline import write_context
    from ambidex.runners import StageLaunch, run_stage
    from ambidex_stage.tables import write_table

    stage_dir = root / "train_r"
    (stage_dir / "out").mkdir(parents=True)
    write_table(C.churn_frame(2000, seed=1), stage_dir / "train.csv")
    ctx = {"contract_version": 1, "run_id": uuid.uuid4().hex, "pipeline": "churn", "stage": "train", "lang": "r",
           "project_root": str(root), "output_dir": str(stage_dir / "out"),
           "params": {"target": "churn", "exclude": ["customer_id"], "name": "churn", "golden_n": 4,
                      "method": "ranger", "num_trees": trees},
           "inputs": {"train": {"kind": "table", "path": str(stage_dir / "train.csv"),
                                "schema": json.loads((stage_dir / "train.schema.json").read_text())}},
           "outputs": {"model": {"kind": "model", "path": str(stage_dir / "out" / "model")}},
           "window": None, "seed": 7}
    write_context(stage_dir / "context.json", ctx)
    outcome = run_stage(StageLaunch(stage="train", lang="r", runner="rscript", script=None, builtin="train",
                                    context_path=stage_dir / "context.json", stage_dir=stage_dir, project_root=root,
                                    timeout=600))
    if outcome.error:
        raise outcome.error
    return stage_dir / "out" / "model"


def bench_r(rows: int) -> None:
    import conftest as C
    from ambidex.artifacts import ArtifactStore
    from ambidex.db import connect, migrate
    from ambidex.deploy import Deployments, Member
    from ambidex_stage.tables import write_table

    os.environ.setdefault("AMBIDEX_R_LIBS", str(REPO / ".venv" / "R-library"))
    env = {**os.environ, "R_LIBS": os.environ["AMBIDEX_R_LIBS"], "LC_ALL": "C.UTF-8"}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        model = train_r_ranger(root)
        engine = connect(f"sqlite:///{root / 'registry.db'}")
        migrate(engine)
        store = ArtifactStore(root / "artifacts")
        C.register(engine, store, model, "churn")
        Deployments(engine, store=store, actor="bench").create("bench", [Member("churn", 1)], entity_key="customer_id")
        engine.dispose()
        inp = root / f"in_{rows}.csv"
        write_table(C.churn_frame(rows, seed=3).drop(columns=["churn"]), inp)
        bare_t, bare_rss = run_with_rss(["Rscript", "--vanilla", "-e", BARE_R, str(model), str(inp),
                                         str(root / "bare.csv")], env=env)
        cli_t, cli_rss = run_with_rss([sys.executable, "-c", _score_code(root, inp)], env=env)
        print(f"R ranger(100 trees) {rows:,} rows: bare Rscript fread+predict+fwrite {bare_t:.2f} s (peak "
              f"{bare_rss / 2**20:.0f} MiB); deployment path (score+capture+publish) {cli_t:.2f} s (peak "
              f"{cli_rss / 2**20:.0f} MiB)  ratio {cli_t / bare_t:.2f}x  (goal <= 1.3x)")


def _score_code(root: Path, inp: Path) -> str:
    """What `ambidex score bench --window W --input CSV` does (cli.main.entry and cli.deploy.score): the
    collector tuned, the Python zygote started before the registry is opened (stopped when the live revision
    has no Python model; an R zygote only for several R models), the scoring, the exit."""
    return f"""
from ambidex_stage._process import tune_gc
tune_gc()
from ambidex.runners import stage_zygotes
with stage_zygotes("python", lazy=False) as zygotes:
    from pathlib import Path
    from ambidex.db import connect
    from ambidex.artifacts import ArtifactStore
    from ambidex.deploy import Deployments
    from ambidex.capture import Scorer, parse_window
    from ambidex.scoring import score_model
    root = Path({str(root)!r})
    deps = Deployments(connect(f"sqlite:///{{root / 'registry.db'}}"), store=ArtifactStore(root / 'artifacts'))
    langs = deps.languages(deps.live('bench'))
    if "python" not in langs:
        zygotes.stop("python")
    if langs.get("r", 0) > 1:
        zygotes.prestart("r")
    launch = lambda m, i, o, keep: score_model(m, i, o, project_root=root, work_dir=root / 'w', keep=keep)
    Scorer(deps, launch, workdir=root / 'sw', publish_dir=root / 'pub').score(
        'bench', parse_window('2024-01-01/2024-01-02'), Path({str(inp)!r}), replace=True)
from ambidex.cli.main import leave
leave(0)
"""


BARE_FS = r"""
import sqlite3, sys, time, pandas as pd
from ambidex_stage.tables import write_table
from ambidex_stage.builtins import predict
t = time.perf_counter()
con = sqlite3.connect(sys.argv[2])
df = pd.read_sql_query("SELECT customer_id, age, tenure, plan FROM churn_fs WHERE ts >= ? AND ts < ? "
                       "ORDER BY customer_id", con, params=("2024-01-01 00:00:00", "2024-01-02 00:00:00"))
df["plan"] = pd.Categorical(df["plan"], categories=["basic", "pro"])
out = predict(sys.argv[1], df)
out.insert(0, "customer_id", df["customer_id"].to_numpy())
write_table(out, sys.argv[3])
print(time.perf_counter() - t)
"""


def _score_fs_code(root: Path) -> str:
    """What `ambidex score bench-fs --window W` does: as ``_score_code``, the window read from the feature
    store."""
    return f"""
from ambidex_stage._process import tune_gc
tune_gc()
from ambidex.runners import stage_zygotes
with stage_zygotes("python", lazy=False) as zygotes:
    from pathlib import Path
    from ambidex.db import connect
    from ambidex.artifacts import ArtifactStore
    from ambidex.deploy import Deployments
    from ambidex.capture import Scorer, parse_window
    from ambidex.scoring import score_model, stream_window
    root = Path({str(root)!r})
    engine = connect(f"sqlite:///{{root / 'registry.db'}}")
    deps = Deployments(engine, store=ArtifactStore(root / 'artifacts'))
    langs = deps.languages(deps.live('bench-fs'))
    if "python" not in langs:
        zygotes.stop("python")
    if "r" in langs:
        zygotes.prestart("r")
    launch = lambda m, i, o, keep, **kw: score_model(m, i, o, project_root=root, work_dir=root / 'w', keep=keep, **kw)
    scorer = Scorer(deps, launch, workdir=root / 'sw', publish_dir=root / 'pub')
    stream_window(scorer, engine, 'churn_fs', 'bench-fs', parse_window('2024-01-01/2024-01-02'),
                  root / 'sw' / 'input.csv', replace=True)
from ambidex.cli.main import leave
leave(0)
"""


def bench_scoring_fs(rows: int, repeat: int = 1) -> None:
    """The issue's own wording: read the window from the feature store (a mart in the registry's SQLite),
    predict, capture, publish; against a bare script that SELECTs the same rows into pandas, predicts and
    writes them."""
    import shutil
    import statistics

    import numpy as np
    import pandas as pd

    import conftest as C
    from ambidex import featurestore as fs
    from ambidex.deploy import Member

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        engine, _, deps, model, _ = setup(root, 10)
        df = C.churn_frame(rows, seed=3).drop(columns=["churn"])
        df["ts"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(rows) % 86_400, unit="s")
        fs.ingest(engine, fs.MartSpec(name="churn_fs", key=["customer_id"], time_column="ts", load="incremental"),
                  table=df, window="2024-01-01/2024-01-02")
        deps.create("bench-fs", [Member("churn", 1)], entity_key="customer_id", source="churn_fs")
        engine.dispose()
        shutil.copy(root / "registry.db", root / "registry.fresh")
        bares, clis = _alternate(root, repeat, [sys.executable, "-c", BARE_FS, str(model), str(root / "registry.db"),
                                                str(root / "bare.csv")], [sys.executable, "-c", _score_fs_code(root)])
        bare_t, cli_t = statistics.median(t for t, _ in bares), statistics.median(t for t, _ in clis)
        print(f"score {rows:,} rows from the feature store: bare SELECT+predict+write {bare_t:.2f} s (peak "
              f"{max(r for _, r in bares) / 2**20:.0f} MiB); deployment path (read window+score+capture+publish) "
              f"{cli_t:.2f} s (peak {max(r for _, r in clis) / 2**20:.0f} MiB)  ratio {cli_t / bare_t:.2f}x "
              f"(median of {len(bares)}; ratios {', '.join(f'{c[0] / b[0]:.2f}' for b, c in zip(bares, clis))})"
              "  (goal <= 1.3x)")


def bench_promotions(url: str | None, n: int, label: str) -> None:
    import conftest as C
    from ambidex.artifacts import ArtifactStore
    from ambidex.db import connect, migrate
    from ambidex.deploy import ConflictError, Deployments, Member

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        model = C.train_model(root, "python", "churn")
        if url is None:
            engine = connect(f"sqlite:///{root / 'r.db'}")
        else:
            dbs = C._ServerDatabases()
            engine = connect(dbs.fresh("postgresql"))
        try:
            migrate(engine)
            store = ArtifactStore(root / "artifacts")
            C.register(engine, store, model, "churn", times=3)
            Deployments(engine, store=store).create("p", [Member("churn", 1)], entity_key="id")
            t = time.perf_counter()
            Deployments(engine, store=store).promote("p", [Member("churn", 2)])
            single = time.perf_counter() - t
            barrier, conflicts, lock = threading.Barrier(n), [0], threading.Lock()

            def worker(i):
                deps = Deployments(engine, store=store, actor=f"u{i}")
                barrier.wait()
                while True:
                    try:
                        deps.promote("p", [Member("churn", 1 + i % 3)], reason=f"u{i}")
                        return
                    except ConflictError:
                        with lock:
                            conflicts[0] += 1

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
            hist = Deployments(engine, store=store).history("p")
            numbers = [h.revision for h in hist]
            ok = numbers == list(range(1, n + 3)) and sorted(h.reason for h in hist[2:]) == sorted(
                f"u{i}" for i in range(n))
            print(f"promotions on {label}: single {single * 1000:.1f} ms (incl. hash verify); {n} concurrent in "
                  f"{wall:.2f} s ({n / wall:.1f}/s), {conflicts[0]} conflicts retried, revisions contiguous and "
                  f"each promotion exactly once: {ok}")
        finally:
            engine.dispose()
            if url is not None:
                dbs.drop_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=4_000_000)
    ap.add_argument("--promotions", type=int, default=20)
    ap.add_argument("--r-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the Python scoring at --rows (medians)")
    ap.add_argument("--skip-scoring", action="store_true")
    ap.add_argument("--skip-r", action="store_true")
    ap.add_argument("--skip-promotions", action="store_true")
    a = ap.parse_args()
    if not a.skip_scoring:
        bench_scoring(a.rows, a.big or None, a.repeat)
        bench_scoring_fs(a.rows, a.repeat)
    if not a.skip_r:
        bench_r(a.r_rows)
    if not a.skip_promotions:
        bench_promotions(None, a.promotions, "SQLite")
        bench_promotions("postgresql", a.promotions, "PostgreSQL")


if __name__ == "__main__":
    main()
