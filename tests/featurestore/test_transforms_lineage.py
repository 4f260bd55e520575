"""featurestore transforms (bound parameters only), lineage and the churn example on sqlite, postgresql, mariadb."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ambidex import featurestore as fs
from ambidex.errors import DataError, RegistryError
from ambidex.tables import model_versions, models, runs

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parents[2]


def churn_frame(n: int = 60) -> pd.DataFrame:
    """A synthetic stand-in with wa_churn's columns (the real data is exported from R at run time)."""
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "churn": rng.choice(["Yes", "No"], n), "female": rng.integers(0, 2, n), "senior": rng.integers(0, 2, n),
        "tenure": rng.integers(0, 5, n), "contract": rng.choice(["Month-to-month", "One year", "Two year"], n),
        "internet_service": rng.choice(["DSL", "Fiber optic", "No"], n), "paperless_billing": rng.integers(0, 2, n),
        "payment_method": rng.choice(["Electronic check", "Mailed check"], n),
        "monthly_charges": rng.uniform(20, 100, n).round(2),
        "total_charges": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(20, 5000, n).round(2)),
    })


def load_churn(engine, tmp_path, window, run_id=None):
    df = fs.prepare_churn(churn_frame())
    p = tmp_path / "churn.parquet"
    df.to_parquet(p)
    spec = fs.MartSpec(name="churn", source={"kind": "parquet", "path": str(p)}, key=["customer_id"],
                       time_column="signup_month", load="incremental",
                       columns={"churn": {"type": "category", "levels": ["No", "Yes"]}})
    return fs.ingest(engine, spec, window=window, run_id=run_id), df


def test_prepare_churn_derives_id_and_cohort():
    df = fs.prepare_churn(pd.DataFrame({"tenure": [0, 1, 12, 72]}))
    assert list(df["customer_id"]) == [1, 2, 3, 4]
    assert list(df["signup_month"].dt.strftime("%Y-%m-%d")) == ["2024-12-01", "2024-11-01", "2023-12-01", "2018-12-01"]
    assert str(df["signup_month"].dtype) == "datetime64[ns, UTC]"


def test_churn_transform_reads_one_cohort(engine, tmp_path):
    r, df = load_churn(engine, tmp_path, "2024-10-01/2024-11-01")
    out = fs.read_window(engine, str(ROOT / "sql" / "churn_features.sql"), "2024-10-01/2024-11-01")
    expected = df[df["signup_month"] == pd.Timestamp("2024-10-01", tz="UTC")]
    assert r.row_count == len(expected) == len(out) > 0
    assert list(out["customer_id"]) == sorted(expected["customer_id"])
    assert list(out["churn"].cat.categories) == ["No", "Yes"]
    assert str(out["signup_month"].dtype) == "datetime64[ns, UTC]"
    assert out.attrs["data_versions"] == [r.data_version_id]


def test_transform_params_checked_before_sql(engine, tmp_path, statements):
    p = tmp_path / "t.sql"
    p.write_text("SELECT * FROM churn WHERE tenure > :min_tenure AND signup_month >= :window_start")
    with pytest.raises(DataError) as e:
        fs.read_transform(engine, p, "2024-01-01/2024-02-01")
    assert e.value.code == "data.invalid_transform" and ":min_tenure" in str(e.value)
    for bad in ["SELECT 1; DROP TABLE runs", "SELECT * FROM churn WHERE x = '{{ v }}' OR y = {{ v }}",
                "SELECT * FROM churn WHERE x = %s", "DELETE FROM runs"]:
        p.write_text(bad)
        with pytest.raises(DataError, match="refused"):
            fs.read_transform(engine, p, None)
    assert statements == []


def test_lineage_model_to_run_to_data_versions(engine, tmp_path):
    now = dt.datetime(2024, 12, 1, tzinfo=UTC)
    with engine.begin() as c:
        c.execute(sa.insert(runs).values(id="r" * 32, kind="pipeline", status="FINISHED", started_at=now))
        mid = c.execute(sa.insert(models).values(name="churn", created_at=now)).inserted_primary_key[0]
        c.execute(sa.insert(model_versions).values(model_id=mid, version=1, status="READY", run_id="r" * 32,
                                                   path="p", manifest="{}", manifest_sha256="0" * 64, created_at=now))
    r, _ = load_churn(engine, tmp_path, "2024-10-01/2024-11-01")
    fs.read_window(engine, "churn", "2024-10-01/2024-11-01", run_id="r" * 32)
    fs.read_window(engine, "churn", "2024-10-01/2024-11-01", run_id="r" * 32)  # idempotent
    lin = fs.lineage(engine, "churn", 1)
    assert lin["run_id"] == "r" * 32 and lin["run"]["status"] == "FINISHED"
    [dv] = lin["data_versions"]
    assert (dv["mart"], dv["version"], dv["window_start"], dv["role"]) == ("churn", 1, "2024-10-01T00:00:00Z", "input")
    assert dv["content_hash"] == r.content_hash and "churn.parquet" in dv["source"]
    with pytest.raises(RegistryError):
        fs.lineage(engine, "churn", 2)
