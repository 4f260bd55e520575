"""cli.drift: `drift compare` on files, `drift check` exit codes (0 / 4), `drift show`, `kpi show`, --json shapes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ambidex.cli import main as cli_main

from .conftest import frame, month


@pytest.fixture
def run(monkeypatch, capsys):
    monkeypatch.setitem(cli_main.COMMANDS, "drift", ("ambidex.cli.drift", "drift", "Data drift."))
    monkeypatch.setitem(cli_main.COMMANDS, "kpi", ("ambidex.cli.drift", "kpi", "KPIs."))

    def invoke(*args):
        code = cli_main.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def files(tmp_path):
    ref, same, shifted = tmp_path / "ref.csv", tmp_path / "same.csv", tmp_path / "shifted.parquet"
    frame(3000, 1).to_csv(ref, index=False)
    frame(3000, 2).to_csv(same, index=False)
    frame(3000, 3, shift=0.9).to_parquet(shifted)
    return ref, same, shifted


@pytest.fixture
def model(workspace, tmp_path):
    from .conftest import _registrar

    return _registrar(workspace.registry().engine, tmp_path)(importance={"num_00": 5.0, "num_01": 1.0,
                                                                        "num_02": 1.0, "plan": 1.0})


def test_compare_files_prints_a_table_sorted_by_impact(run, files, tmp_path):
    ref, same, shifted = files
    imp = tmp_path / "imp.json"
    imp.write_text(json.dumps({"feature_importance": {"method": "x", "values": {"num_00": 0.1, "num_01": 0.2,
                                                                               "num_02": 0.3, "plan": 0.4}}}))
    code, out, _ = run("drift", "compare", str(ref), str(shifted), "--importance", str(imp))
    assert code == 0 and "ALERT" in out.splitlines()[0]
    assert out.splitlines()[2].split()[:2] == ["num_00", "alert"]
    code, out, _ = run("drift", "compare", str(ref), str(same), "--columns", "num_00,plan", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "ok" and doc["uniform_importance"] is True
    assert [f["feature"] for f in doc["features"]] == sorted([f["feature"] for f in doc["features"]],
                                                              key=lambda n: -next(f["impact_psi"] for f in doc["features"] if f["feature"] == n))
    assert set(doc["features"][0]) >= {"feature", "status", "w", "impact_psi", "psi", "median_shift", "reasons"}


def test_compare_refuses_a_missing_file_and_a_bad_table_name(run, files, workspace):
    ref, _, _ = files
    code, _, err = run("drift", "compare", str(ref), "nope.csv")
    assert code == 1 and "data.not_found" in err
    code, _, err = run("drift", "compare", "sql:x; DROP TABLE runs", str(ref), "--json")
    assert code == 1 and json.loads(err)["code"] == "data.invalid_identifier"


def test_check_exits_0_without_drift_and_4_on_dataset_drift(run, files, model):
    ref, same, shifted = files
    code, out, _ = run("drift", "check", "churn", "--window", month(0), "--data", str(same), "--reference", str(ref))
    assert code == 0 and "vs reference: OK" in out
    code, out, err = run("drift", "check", "churn:1", "--window", month(1), "--data", str(shifted), "--json")
    doc = json.loads(out)
    assert code == 4 and json.loads(err)["code"] == "check.drift"
    assert doc["alert"] is True and set(doc["baselines"]) == {"reference", "t-1", "rolling"}
    assert doc["baselines"]["reference"]["features"][0]["feature"] == "num_00"
    # a second check of the same window reads the stored profile: no --data needed
    code, out, _ = run("drift", "check", "churn", "--window", month(1))
    assert code == 4 and out.splitlines()[2].startswith("num_00")
    code, out, _ = run("drift", "show", "--model", "churn", "--json")
    assert code == 0 and len(json.loads(out)) == 7  # 1 (first window: reference only) + 3 + 3
    code, out, _ = run("drift", "show", "--feature", "num_00", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["status"] for r in rows][-1] == "ok" and rows[0]["metric"] == "psi"


def test_check_with_time_column_and_clear_errors(run, files, model, tmp_path):
    ref, _, _ = files
    df = frame(2000, 4)
    df["t"] = np.where(np.arange(2000) < 1000, "2024-01-15T00:00:00Z", "2024-02-15T00:00:00Z")
    df.to_csv(tmp_path / "long.csv", index=False)
    code, out, _ = run("drift", "check", "churn", "--window", month(0), "--data", str(tmp_path / "long.csv"),
                       "--time-column", "t", "--reference", str(ref), "--json")
    assert code == 0 and json.loads(out)["baselines"]["reference"]["features"][0]["n_cur"] == 1000
    code, _, err = run("drift", "check", "churn", "--window", month(5), "--json")
    assert code == 1 and json.loads(err)["code"] == "data.no_rows"
    code, _, err = run("drift", "check", "nobody", "--window", month(0), "--json")
    assert code == 1 and json.loads(err)["code"] == "registry.not_found"
    code, _, err = run("drift", "check", "churn", "--window", "2024-02-01/2024-01-01", "--json")
    assert code == 1 and json.loads(err)["code"] == "data.window_invalid"


def test_kpi_show_lists_stored_kpis(run, model, workspace):
    from ambidex.monitor_kpi import record_kpis

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    record_kpis(workspace.registry().engine, model, month(0), y, np.clip(y * 0.3 + rng.uniform(0, 0.7, 500), 0, 1))
    code, out, _ = run("kpi", "show", "--model", "churn", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["metric"] for r in rows} == {"roc_auc", "accuracy", "log_loss"}
    assert all(r["is_estimated"] is False and r["se"] > 0 for r in rows)
    code, out, _ = run("kpi", "show")
    assert code == 0 and "roc_auc" in out


def test_every_command_has_an_example(run):
    from ambidex.cli.drift import drift, kpi

    for group in (drift, kpi):
        assert "Example:" in group.help
        for cmd in group.commands.values():
            assert "Example:" in cmd.help, cmd.name
