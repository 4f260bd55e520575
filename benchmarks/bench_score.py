"""bench_score: `ambidex score`'s path (score, capture, publish) vs a bare read + predict + write; memory; promotions.

    .venv/bin/python benchmarks/bench_score.py [--rows 1000000] [--big 4000000] [--promotions 20] [--skip-memory]

Prints one line per measurement, and ratios against the bare baseline measured in the same run.
Not run by the tests.
"""
from __future__ import annotations

import argparse
import os
import resource
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


def run_with_rss(argv) -> tuple[float, int]:
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return time.perf_counter() - t, usage.ru_maxrss * 1024


def bench_scoring(rows: int, big: int | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _, _, _, model, inp = setup(root, rows)
        bare_t, bare_rss = run_with_rss([sys.executable, "-c", BARE, str(model), str(inp), str(root / "bare.csv")])
        cli_t, cli_rss = run_with_rss([sys.executable, "-c", _score_code(root, inp)])
        print(f"score {rows:,} rows: bare read+predict+write {bare_t:.2f} s (peak {bare_rss / 2**20:.0f} MiB); "
              f"deployment path (score+capture+publish) {cli_t:.2f} s (orchestrator peak {cli_rss / 2**20:.0f} MiB)"
              f"  ratio {cli_t / bare_t:.2f}x  (goal <= 1.3x; MLflow pyfunc alone 2.4x a bare predict)")
        if big:
            from ambidex_stage.tables import write_table
            import conftest as C

            big_inp = root / "big.csv"
            write_table(C.churn_frame(big, seed=4).drop(columns=["churn"]), big_inp)
            bt, brss = run_with_rss([sys.executable, "-c", BARE, str(model), str(big_inp), str(root / "bare4.csv")])
            ct, crss = run_with_rss([sys.executable, "-c", _score_code(root, big_inp)])
            print(f"score {big:,} rows: bare {bt:.2f} s peak {brss / 2**20:.0f} MiB; deployment path {ct:.2f} s, "
                  f"orchestrator peak {crss / 2**20:.0f} MiB (vs {cli_rss / 2**20:.0f} MiB at {rows:,}: "
                  f"x{crss / max(cli_rss, 1):.2f} for x{big / rows:.0f} rows)")


def _score_code(root: Path, inp: Path) -> str:
    return f"""
import sys
sys.path.insert(0, {str(REPO / 'tests' / 'deploy')!r})
from pathlib import Path
from ambidex.db import connect
from ambidex.artifacts import ArtifactStore
from ambidex.deploy import Deployments
from ambidex.capture import Scorer, parse_window
from ambidex.scoring import score_model
root = Path({str(root)!r})
deps = Deployments(connect(f"sqlite:///{{root / 'registry.db'}}"), store=ArtifactStore(root / 'artifacts'))
launch = lambda m, i, o, keep: score_model(m, i, o, project_root=root, work_dir=root / 'w', keep=keep)
Scorer(deps, launch, workdir=root / 'sw', publish_dir=root / 'pub').score(
    'bench', parse_window('2024-01-01/2024-01-02'), Path({str(inp)!r}), replace=True)
"""


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
    ap.add_argument("--skip-scoring", action="store_true")
    a = ap.parse_args()
    if not a.skip_scoring:
        bench_scoring(a.rows, a.big or None)
    bench_promotions(None, a.promotions, "SQLite")
    bench_promotions("postgresql", a.promotions, "PostgreSQL")


if __name__ == "__main__":
    main()
