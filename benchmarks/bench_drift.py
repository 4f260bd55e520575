"""bench_drift: data drift on 1M x 20 (15 numeric, 5 categorical) against bare numpy and Evidently, and from stored profiles.

    .venv/bin/python benchmarks/bench_drift.py [--rows 1000000] [--skip-evidently]

(a) the full check from raw data (``drift.compare_frames``) against a bare numpy "sort each
column once" computation of the same statistics; (b) Evidently's DataDriftPreset in a
benchmark-only venv (benchmarks/.venv-evidently, created here; Evidently 0.7 needs pandas < 3);
(c) one window against the training reference from stored profiles (``monitor.check_window``).
Each of (a) and (b) runs in its own process reading the same Parquet files, so peak RSS
(``ru_maxrss`` of that process) compares like with like. Verdicts are printed next to the timings.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EVIDENTLY_VENV = HERE / ".venv-evidently"
NUM, CAT = 15, 5
DRIFTED = {"num_00": "mean +0.25 sd", "num_01": "sd x1.5", "num_02": "8% more missing", "cat_0": "level shares moved",
           "cat_1": "new level 'zz' in 3% of rows"}


def make_data(n: int, out: Path) -> tuple[Path, Path]:
    """Synthetic reference and current Parquet files with known drift in DRIFTED."""
    import pandas as pd

    def one(seed: int, current: bool):
        rng = np.random.default_rng(seed)
        cols = {}
        for j in range(NUM):
            x = rng.normal(0.0, 1.0, n) if j % 3 else rng.gamma(2.0, 1.0, n)
            if current and j == 0:
                x = x + 0.25 * x.std()
            if current and j == 1:
                x = (x - x.mean()) * 1.5 + x.mean()
            miss = rng.uniform(size=n) < (0.10 if current and j == 2 else 0.02)
            x[miss] = np.nan
            cols[f"num_{j:02d}"] = x
        levels = np.array(list("abcdefgh"))
        for j in range(CAT):
            p = np.linspace(2, 1, levels.size)
            if current and j == 0:
                p = p[::-1]
            v = levels[rng.choice(levels.size, n, p=p / p.sum())].astype(object)
            if current and j == 1:
                v[rng.uniform(size=n) < 0.03] = "zz"
            cols[f"cat_{j}"] = v
        return pd.DataFrame(cols)

    paths = out / "ref.parquet", out / "cur.parquet"
    for p, (seed, cur) in zip(paths, ((1, False), (2, True))):
        one(seed, cur).to_parquet(p)
    return paths


def importance() -> dict[str, float]:
    names = [f"num_{j:02d}" for j in range(NUM)] + [f"cat_{j}" for j in range(CAT)]
    return {n: 1.0 + (3.0 if n in ("num_00", "cat_0") else 0.0) for n in names}


# --------------------------------------------------------------------------- workers (run in subprocesses)

def worker_ambidex(ref_path: str, cur_path: str) -> dict:
    import pandas as pd

    from ambidex.drift import compare_frames

    ref, cur = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    t = time.perf_counter()
    res = compare_frames(ref, cur, importance=importance())
    dt_ = time.perf_counter() - t
    return {"seconds": dt_, "dataset_drift": res.dataset_drift,
            "drifted": sorted(f.feature for f in res.features if f.status in ("warn", "alert")),
            "alerts": sorted(f.feature for f in res.features if f.status == "alert")}


def worker_numpy(ref_path: str, cur_path: str) -> dict:
    """The same statistics, bare: sort each numeric column once; PSI on deciles + missing bin, median shift,
    IQR, KS D and Wasserstein from the sorted arrays; level counts for categorical columns."""
    import pandas as pd

    ref, cur = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    t = time.perf_counter()
    psis = {}
    for c in ref.columns:
        if ref[c].dtype.kind == "f":
            r, x = ref[c].to_numpy(), cur[c].to_numpy()
            rs, xs = np.sort(r[np.isfinite(r)]), np.sort(x[np.isfinite(x)])
            e = np.unique(np.quantile(rs, np.arange(1, 10) / 10))
            cr = np.append(np.diff(np.searchsorted(rs, np.r_[-np.inf, e, np.inf], "left")), r.size - rs.size)
            cc = np.append(np.diff(np.searchsorted(xs, np.r_[-np.inf, e, np.inf], "left")), x.size - xs.size)
            q25, med, q75 = np.quantile(rs, [0.25, 0.5, 0.75])
            _ = (np.median(xs) - med) / ((q75 - q25) / 1.349)
            allv = np.concatenate([rs, xs])
            allv.sort()
            fr = np.searchsorted(rs, allv, "right") / rs.size
            fc = np.searchsorted(xs, allv, "right") / xs.size
            _ = np.abs(fr - fc).max(), np.sum(np.abs(fr - fc)[:-1] * np.diff(allv))
        else:
            lr, nr = np.unique(ref[c].to_numpy().astype(str), return_counts=True)
            lc, nc = np.unique(cur[c].to_numpy().astype(str), return_counts=True)
            levels = sorted(set(lr) | set(lc))
            cr = np.array([dict(zip(lr, nr)).get(v, 0) for v in levels])
            cc = np.array([dict(zip(lc, nc)).get(v, 0) for v in levels])
        p, q = np.maximum(cr / cr.sum(), 1e-4), np.maximum(cc / cc.sum(), 1e-4)
        psis[c] = float(np.sum((q - p) * np.log(q / p)))
    dt_ = time.perf_counter() - t
    return {"seconds": dt_, "drifted": sorted(c for c, v in psis.items() if v >= 0.10),
            "alerts": sorted(c for c, v in psis.items() if v >= 0.25)}


EVIDENTLY_WORKER = r"""
import json, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
t = time.perf_counter()
snap = Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
doc = snap.dict()
dt = time.perf_counter() - t
count = share = None
drifted = []
for m in doc.get("metrics", []):
    name, cfg, val = str(m.get("metric_name", "")), m.get("config") or {}, m.get("value")
    if name.startswith("DriftedColumnsCount") and isinstance(val, dict):
        count, share = val.get("count"), val.get("share")
    elif name.startswith("ValueDrift(") and isinstance(val, (int, float)):
        p_value = "p_value" in str(cfg.get("method", ""))
        if (val < cfg["threshold"]) if p_value else (val >= cfg["threshold"]):
            drifted.append(cfg["column"])
import resource
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": dt, "drifted_count": count, "drifted_share": share,
                  "dataset_drift": share is not None and share >= 0.5, "drifted": sorted(drifted)}))
"""


def run_worker(cmd: list[str]) -> dict:
    """Run one worker in a fresh process; add its wall time (its peak RSS comes from the worker itself)."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(wall=wall, peak_rss_mb=out.pop("maxrss_kb") / 1024)
    return out


def ensure_evidently() -> Path | None:
    py = EVIDENTLY_VENV / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import evidently"], capture_output=True).returncode == 0:
        return py
    print(f"creating {EVIDENTLY_VENV} (evidently==0.7.*, pandas<3) ...", flush=True)
    ok = subprocess.run(["python3", "-m", "venv", str(EVIDENTLY_VENV)]).returncode == 0
    ok = ok and subprocess.run([py, "-m", "pip", "install", "-q", "evidently==0.7.*", "pandas<3", "pyarrow"]).returncode == 0
    if not ok:
        print("Evidently could not be installed; skipping (b).")
        return None
    return py


# --------------------------------------------------------------------------- (c) stored profiles

def bench_profiles(ref_path: Path, cur_path: Path, work: Path) -> dict:
    import pandas as pd
    import sqlalchemy as sa

    from ambidex import monitor, monitor_sql, monitor_store
    from ambidex.db import connect, migrate
    from ambidex.tables import model_versions, models

    ref, cur = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    engine = connect(f"sqlite:///{work / 'bench.db'}")
    migrate(engine)
    imp = importance()
    inputs = [{"name": c, "type": "double" if c.startswith("num") else "string", "nullable": True} for c in ref.columns]
    manifest = {"name": "bench", "task": "binary_classification", "signature": {"inputs": inputs},
                "feature_importance": {"method": "synthetic", "values": {k: v / sum(imp.values()) for k, v in imp.items()}}}
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    with engine.begin() as c:  # a bare registry row: the benchmark needs no artifact
        mid = c.execute(sa.insert(models).values(name="bench", created_at=now)).inserted_primary_key[0]
        c.execute(sa.insert(model_versions).values(
            model_id=mid, version=1, status="READY", path="-", manifest=json.dumps(manifest), manifest_sha256="-",
            created_at=now))
    model = monitor.resolve_model(engine, "bench:1")
    t = time.perf_counter()
    monitor_store.set_reference(engine, model, ref)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    monitor_store.profile_window(engine, model, "2024-06-01/2024-07-01", cur)
    t_win = time.perf_counter() - t
    times = []
    for _ in range(20):
        t = time.perf_counter()
        res = monitor.check_window(engine, model, "2024-06-01/2024-07-01", baselines=("reference",), store=False)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    monitor.check_window(engine, model, "2024-06-01/2024-07-01", baselines=("reference",))
    t_store = time.perf_counter() - t
    rw = monitor_store.reference_window(engine, model.id).window_id
    t = time.perf_counter()
    for c in [c for c in ref.columns if c.startswith("num")]:
        monitor_sql.psi_sql(engine, model.id, c, [rw], [rw + 1])
    t_sql = time.perf_counter() - t
    d = res.baselines["reference"]
    engine.dispose()
    return {"profile_reference_s": t_ref, "profile_window_s": t_win, "check_ms_median": 1000 * float(np.median(times)),
            "check_and_store_ms": 1000 * t_store, "psi_sql_15_numeric_ms": 1000 * t_sql,
            "dataset_drift": d.dataset_drift,
            "drifted": sorted(f.feature for f in d.features if f.status in ("warn", "alert")),
            "alerts": sorted(f.feature for f in d.features if f.status == "alert")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        fn = {"ambidex": worker_ambidex, "numpy": worker_numpy}[a.worker[0]]
        out = fn(a.worker[1], a.worker[2])
        print(json.dumps({**out, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        ref_p, cur_p = make_data(a.rows, work)
        print(f"data: {a.rows:,} reference + {a.rows:,} current rows, {NUM} numeric + {CAT} categorical "
              f"({time.perf_counter() - t:.1f} s to generate)")
        print(f"known drift: {DRIFTED}")
        me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        results = {"ambidex compare_frames": run_worker(me + ["ambidex", str(ref_p), str(cur_p)]),
                   "bare numpy (sort once)": run_worker(me + ["numpy", str(ref_p), str(cur_p)])}
        if not a.skip_evidently:
            py = ensure_evidently()
            if py is not None:
                script = work / "evidently_worker.py"
                script.write_text(EVIDENTLY_WORKER)
                results["Evidently 0.7 DataDriftPreset"] = run_worker([str(py), str(script), str(ref_p), str(cur_p)])
        print(f"\n{'method':32s} {'compute s':>10s} {'wall s':>8s} {'peak MB':>9s}  verdict")
        for name, r in results.items():
            if "error" in r:
                print(f"{name:32s} failed: {r['error']}")
                continue
            verdict = (f"dataset_drift={r.get('dataset_drift')} drifted={r.get('drifted', r.get('drifted_count'))}"
                       + (f" alerts={r['alerts']}" if "alerts" in r else f" share={r.get('drifted_share')}"))
            print(f"{name:32s} {r['seconds']:10.2f} {r['wall']:8.2f} {r['peak_rss_mb']:9.0f}  {verdict}")
        ours, bare = results["ambidex compare_frames"], results["bare numpy (sort once)"]
        evi = results.get("Evidently 0.7 DataDriftPreset", {})
        if "seconds" in ours and "seconds" in bare:
            print(f"\nambidex / bare numpy: {ours['seconds'] / bare['seconds']:.2f}x (goal <= 1.5x)")
        if "seconds" in ours and "seconds" in evi:
            print(f"Evidently / ambidex: {evi['seconds'] / ours['seconds']:.1f}x faster (goal >= 20x); "
                  f"peak RSS {ours['peak_rss_mb']:.0f} MB vs {evi['peak_rss_mb']:.0f} MB")
        p = bench_profiles(ref_p, cur_p, work)
        print(f"\n(c) stored profiles (SQLite): reference profiled in {p['profile_reference_s']:.2f} s, "
              f"window in {p['profile_window_s']:.2f} s (once each)")
        print(f"    one window vs reference, 20 features: {p['check_ms_median']:.1f} ms median (goal < 50 ms); "
              f"with results stored: {p['check_and_store_ms']:.1f} ms; psi_sql x15: {p['psi_sql_15_numeric_ms']:.1f} ms")
        print(f"    verdict: dataset_drift={p['dataset_drift']} drifted={p['drifted']} alerts={p['alerts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
