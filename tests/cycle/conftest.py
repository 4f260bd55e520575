"""A small synthetic continuous-training project: monthly windows, Python and R candidates, fast."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import write

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 4, 15, tzinfo=UTC)  # Jan, Feb and Mar 2024 are due; Apr is not

GEN = """\
    import numpy as np
    import pandas as pd

    def main(ctx):
        p = ctx.params
        rng = np.random.default_rng(7)
        frames, cid = [], 0
        for m in pd.date_range("2023-09-01", "2024-05-01", freq="MS", tz="UTC"):
            n = 160
            x1, x2 = rng.normal(size=n), rng.normal(size=n)
            plan = rng.choice(["a", "b", "c"], n)
            new = m >= pd.Timestamp("2024-01-01", tz="UTC")  # the concept changes in January
            signal = 2.5 * (x2 if new else x1) + 0.5 * (plan == "a")
            if p.get("task") == "regression":
                y = 3 * signal + rng.normal(size=n)
            else:
                y = pd.Categorical(np.where(rng.random(n) < 1 / (1 + np.exp(-signal)), "yes", "no"),
                                   categories=["no", "yes"])
            frames.append(pd.DataFrame({
                "customer_id": np.arange(cid, cid + n, dtype="int64"),
                "signup": m + pd.to_timedelta(rng.integers(0, 27, n), unit="D"),
                "x1": x1, "x2": x2, "plan": pd.Categorical(plan, categories=["a", "b", "c"]), "y": y}))
            cid += n
        df = pd.concat(frames, ignore_index=True)
        ctx.write_table("customers", df)
        if "labels" in ctx.outputs:
            lab = df[["customer_id", "signup", "y"]].copy()
            lab["customer_id"] = lab["customer_id"] + int(p.get("key_offset", 0))
            ctx.write_table("labels", lab)
    """


def pipeline_yaml(*, task="classification", end="2024-04-01", every=1, train_windows=1, min_gain=0.002,
                  bad_target=False, labels_offset=None, name="loop") -> str:
    target = "nope" if bad_target else "y"
    pos = ', positive: "yes"' if task == "classification" else ""
    est = "logistic_regression" if task == "classification" else "ridge"
    lab = labels_offset is not None
    lines = [
        "version: 1", f"name: {name}", "data:", "  marts:",
        "    - {name: customers, key: [customer_id], time_column: signup, load: incremental}",
        *(["    - {name: outcomes, key: [customer_id], time_column: signup, load: incremental}"] if lab else []),
        "stages:",
        "  - name: gen", "    lang: python", "    script: python/gen.py",
        f"    params: {{task: {task}, key_offset: {labels_offset or 0}}}",
        "    outputs:", "      customers: {kind: table}", *(["      labels: {kind: table}"] if lab else []),
        "  - {name: ingest_customers, ingest: customers, inputs: {data: gen.customers}}",
        *(["  - {name: ingest_outcomes, ingest: outcomes, inputs: {data: gen.labels}}"] if lab else []),
        "deploy:", f"  name: {name}-live", "  entity_key: customer_id",
        "cycle:", "  cadence: monthly", "  start: 2024-01-01", f"  end: {end}", "  history_start: 2023-09-01",
        "  mart: customers", "  target: y", *(["  labels: outcomes"] if lab else []), "  label_delay: 1",
        f"  kpi: {'auc' if task == 'classification' else 'rmse'}", f"  train_windows: {train_windows}",
        f"  retrain: {{on: [drift, kpi]{f', every: {every}' if every else ''}}}",
        f"  promotion: {{z_min: 1.645, min_gain: {min_gain}}}",
        "  candidates:",
        "    - name: train_py", "      lang: python", "      builtin: train",
        f"      params: {{target: {target}, exclude: [customer_id, signup], estimator: {est}{pos}}}",
        '      inputs: {train: "mart:customers"}', f"      outputs: {{model: {{kind: model, register: {name}-py}}}}",
        "    - name: train_r", "      lang: r", "      builtin: train",
        f"      params: {{target: {target}, exclude: [customer_id, signup], method: glm{pos}}}",
        '      inputs: {train: "mart:customers"}', f"      outputs: {{model: {{kind: model, register: {name}-r}}}}",
    ]
    return "\n".join(lines) + "\n"


def make_loop(root: Path, **kw) -> Path:
    write(root / "python" / "gen.py", GEN)
    return write(root / "config" / f"{kw.get('name', 'loop')}.yaml", pipeline_yaml(**kw))


def counts(engine) -> dict:
    """Rows that must not change when nothing should change."""
    out = {}
    with engine.connect() as c:
        for t in ("deployment_revisions", "predictions", "capture_batches", "cycle_decisions", "cycle_steps",
                  "model_versions", "labels", "fs_data_versions", "cycle_windows"):
            if sa.inspect(c).has_table(t):
                out[t] = c.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
    return out


@pytest.fixture(scope="module")
def finished_loop(tmp_path_factory):
    """A classification loop run once from the cold start through March (module-wide; copy it to change it)."""
    import os

    from ambidex.cycle import run_cycle
    from ambidex.workspace import Workspace

    root = tmp_path_factory.mktemp("loop") / "proj"
    root.mkdir()
    (root / "ambidex.yaml").write_text("version: 1\nproject: loop\n")
    path = make_loop(root)
    old = os.getcwd()
    os.chdir(root)
    try:
        ws = Workspace.find(root)
        order = []
        summary = run_cycle(ws, path, clock=lambda: NOW, on_step=lambda s, ph, st: order.append((st.tag, s, ph)))
        ws.close()
    finally:
        os.chdir(old)
    return root, summary, order


@pytest.fixture
def loop_copy(finished_loop, tmp_path, monkeypatch):
    """A private copy of the finished loop's project (registry, state and config), cwd at its root."""
    src, _, _ = finished_loop
    dst = tmp_path / "proj"
    shutil.copytree(src, dst, symlinks=True)
    monkeypatch.chdir(dst)
    return dst
