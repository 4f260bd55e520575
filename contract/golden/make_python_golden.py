"""make_python_golden: regenerate contract/golden/python/ (a model folder written by the Python SDK, its input and expected predictions).

Run from the repository root:  .venv/bin/python contract/golden/make_python_golden.py
The joblib payload is tied to the scikit-learn version recorded in model.json (runtime.packages);
regenerate after upgrading scikit-learn. manifest["files"] is filled so the folder verifies itself.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ambidex_stage.builtins import predict  # noqa: E402
from ambidex_stage.context import Context  # noqa: E402
from ambidex_stage.manifest import fill_files, read_manifest, write_manifest  # noqa: E402
from ambidex_stage.run import run_stage  # noqa: E402
from ambidex_stage.tables import write_table  # noqa: E402

OUT = ROOT / "contract" / "golden" / "python"
PLANS = ["basic", "plus", "pro"]


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """A deterministic churn-like table: x1 double, x2 integer, plan category (3 levels), churn No/Yes."""
    rng = np.random.RandomState(seed)
    x1 = rng.normal(0.0, 1.0, n)
    x2 = rng.randint(0, 10, n).astype(np.int64)
    plan = rng.randint(0, 3, n)
    logit = 1.2 * x1 - 0.15 * (x2 - 5) + np.array([0.6, 0.0, -0.8])[plan]
    churn = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({
        "x1": x1, "x2": x2,
        "plan": pd.Categorical.from_codes(plan, categories=PLANS),
        "churn": pd.Categorical.from_codes(churn, categories=["No", "Yes"]),
    })


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_table(make_frame(300, 1), tmp / "train.csv")
        doc = {"contract_version": 1, "run_id": "0" * 32, "pipeline": "churn", "stage": "train", "lang": "python",
               "project_root": str(tmp), "output_dir": str(tmp / "out"),
               "params": {"target": "churn", "estimator": "logistic_regression", "golden_n": 5},
               "inputs": {"data": {"kind": "table", "path": str(tmp / "train.csv")}},
               "outputs": {"model": {"kind": "model", "path": str(tmp / "out" / "model")}},
               "window": None, "seed": 1}
        if run_stage(Context.from_dict(doc), builtin="train") != 0:
            raise SystemExit(json.loads((tmp / "out" / "result.json").read_text())["error"])
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        shutil.copytree(tmp / "out" / "model", OUT / "model")
    manifest = read_manifest(OUT / "model")
    write_manifest(OUT / "model", fill_files(OUT / "model", manifest))
    inp = make_frame(20, 2).drop(columns=["churn"])
    inp.loc[3, "x1"] = np.nan  # a missing value crosses the boundary and is imputed
    write_table(inp, OUT / "input.csv")
    write_table(predict(OUT / "model", inp), OUT / "expected.csv")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
