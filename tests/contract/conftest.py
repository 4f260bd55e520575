"""Fixtures for the contract tests: a stage context in a temporary project, built from real files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ambidex_stage.context import Context
from ambidex_stage.tables import write_table


@pytest.fixture
def make_ctx(tmp_path):
    """make_ctx(stage, params, inputs={name: DataFrame | Path(model)}, outputs={name: kind}) -> Context."""
    counter = iter(range(1000))

    def make(stage="train", params=None, inputs=None, outputs=None, seed=7):
        n = next(counter)
        out_dir = tmp_path / "runs" / f"{stage}{n}"
        ins = {}
        for name, v in (inputs or {}).items():
            if isinstance(v, pd.DataFrame):
                p = tmp_path / "data" / f"{name}{n}.csv"
                p.parent.mkdir(parents=True, exist_ok=True)
                write_table(v, p)
                ins[name] = {"kind": "table", "path": str(p)}
            else:
                ins[name] = {"kind": "model", "path": str(v)}
        outs = {name: {"kind": kind, "path": str(out_dir / (name if kind == "model" else f"{name}.csv"))}
                for name, kind in (outputs or {}).items()}
        doc = {"contract_version": 1, "run_id": f"{n:032x}", "pipeline": "test_pipe", "stage": stage, "lang": "python",
               "project_root": str(tmp_path), "output_dir": str(out_dir), "params": params or {},
               "inputs": ins, "outputs": outs, "window": None, "seed": seed}
        return Context.from_dict(doc)

    return make


def churn_frame(n=300, seed=0):
    """A small classification table: x1 double, x2 integer, plan category, note string, churn No/Yes."""
    rng = np.random.RandomState(seed)
    x1 = rng.normal(size=n)
    x2 = rng.randint(0, 10, n).astype(np.int64)
    plan = rng.randint(0, 3, n)
    logit = 1.5 * x1 + np.array([0.5, 0.0, -1.0])[plan]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "x1": x1, "x2": x2,
                         "plan": pd.Categorical.from_codes(plan, categories=["basic", "plus", "pro"]),
                         "churn": pd.Categorical.from_codes(y, categories=["No", "Yes"])})


def regression_frame(n=200, seed=0):
    rng = np.random.RandomState(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    flag = rng.uniform(size=n) < 0.5
    return pd.DataFrame({"id": np.arange(n, dtype=np.int64), "x1": x1, "x2": x2, "flag": flag,
                         "y": 3 * x1 - x2 + 2 * flag + rng.normal(scale=0.1, size=n)})
