"""Monitor fixtures: a migrated database per backend (sqlite, postgresql, mariadb), a registry and model factory."""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

PG_ADMIN = os.environ.get("AMBIDEX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("AMBIDEX_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
UTC = dt.timezone.utc


def _server_url(backend: str, name: str) -> tuple[str, sa.Engine]:
    admin_url = PG_ADMIN if backend == "postgresql" else MARIADB_ADMIN
    admin = sa.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"' if backend == "postgresql"
                          else f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False), admin


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def backend(request):
    return request.param


@pytest.fixture
def engine(backend, tmp_path):
    """A migrated database on one backend, dropped after the test."""
    from ambidex.db import connect, migrate

    admin = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'registry.db'}"
    else:
        name = f"ambidex_mon_{os.getpid()}_{secrets.token_hex(4)}"
        url, admin = _server_url(backend, name)
    eng = connect(url)
    migrate(eng)
    yield eng
    eng.dispose()
    if admin is not None:
        with admin.connect() as c:
            q = '"' if backend == "postgresql" else "`"
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {q}{name}{q}" + (" WITH (FORCE)" if backend == "postgresql" else ""))
        admin.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    from ambidex.db import connect, migrate

    eng = connect(f"sqlite:///{tmp_path / 'db' / 'registry.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


def write_model(folder: Path, name: str, inputs: list[dict], importance: dict | None,
                task: str = "binary_classification") -> Path:
    """A minimal model folder as a training stage would write it."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump({"coef": [0.5]}, folder / "model.joblib")
    target = ({"name": "churned", "type": "category", "levels": ["no", "yes"], "positive": "yes"}
              if task == "binary_classification" else {"name": "y", "type": "double"})
    manifest = {
        "contract_version": 1, "name": name, "version": None, "created": "2024-03-10T12:00:00Z",
        "producer": {"language": "python", "language_version": "3.11.7", "library": "scikit-learn",
                     "library_version": "1.4.0", "sdk_version": "0.1.0"},
        "runtime": {"language": "python", "payload": "model.joblib", "format": "joblib",
                    "predict": "ambidex_stage.builtins", "packages": {}, "min_language_version": "3.11"},
        "task": task, "target": target,
        "signature": {"inputs": inputs, "outputs": [], "unseen_level": "error"},
        "metrics": {"auc": 0.81}, "lineage": None, "resources": None, "files": None,
    }
    if importance is not None:
        total = sum(importance.values())
        manifest["feature_importance"] = {"method": "permutation",
                                          "values": {k: v / total for k, v in importance.items()}}
    (folder / "model.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture
def register(engine, tmp_path):
    """register(name, inputs, importance, task) -> ModelRef of a READY version."""
    return _registrar(engine, tmp_path)


@pytest.fixture
def register_sqlite(sqlite_engine, tmp_path):
    return _registrar(sqlite_engine, tmp_path)


def _registrar(engine, tmp_path):
    from ambidex.artifacts import ArtifactStore
    from ambidex.monitor import resolve_model
    from ambidex.registry import Registry

    reg = Registry(engine, ArtifactStore(tmp_path / "artifacts"), actor="tester")
    counter = iter(range(10**6))

    def make(name="churn", inputs=None, importance="default", task="binary_classification"):
        inputs = inputs or [{"name": f"num_{i:02d}", "type": "double", "nullable": True} for i in range(3)] + \
            [{"name": "plan", "type": "string", "nullable": True}]
        if importance == "default":
            importance = {c["name"]: float(i + 1) for i, c in enumerate(inputs)}
        folder = write_model(tmp_path / "src" / f"{name}-{next(counter)}", name, inputs, importance, task)
        mv = reg.register_model_version(name, folder)
        return resolve_model(engine, f"{name}:{mv.version}")

    return make


def frame(n: int, seed: int, shift: float = 0.0, plan_p=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    """Synthetic window: three normal numerics (num_00 shifted by ``shift``) and a plan category."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "num_00": rng.normal(shift, 1.0, n), "num_01": rng.normal(0, 1.0, n), "num_02": rng.exponential(1.0, n),
        "plan": rng.choice(["basic", "pro", "team"], n, p=list(plan_p)),
    })


def month(i: int) -> str:
    y, m = divmod(i, 12)
    return f"{2024 + y:04d}-{m + 1:02d}-01/{2024 + (m + 1) // 12 + y:04d}-{(m + 1) % 12 + 1:02d}-01"
