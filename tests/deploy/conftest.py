"""Deploy fixtures: real trained models (Python and R), a registry per backend, a controllable clock."""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

PG_ADMIN = os.environ.get("AMBIDEX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("AMBIDEX_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REPO = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves by hand (aware UTC)."""

    def __init__(self, start=dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone.utc)):
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float = 60) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock():
    return Clock()


class _ServerDatabases:
    def __init__(self):
        self.name = f"ambidex_dep_{os.getpid()}_{secrets.token_hex(3)}"
        self.created: set[str] = set()

    def _admin_url(self, backend):
        return PG_ADMIN if backend == "postgresql" else MARIADB_ADMIN

    def fresh(self, backend: str) -> str:
        admin = sa.create_engine(self._admin_url(backend), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        q = '"' if backend == "postgresql" else "`"
        try:
            with admin.connect() as c:
                extra = " WITH (FORCE)" if backend == "postgresql" else ""
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {q}{self.name}{q}{extra}")
                c.exec_driver_sql(f"CREATE DATABASE {q}{self.name}{q}"
                                  + (" CHARACTER SET utf8mb4" if backend != "postgresql" else ""))
        finally:
            admin.dispose()
        self.created.add(backend)
        return sa.make_url(self._admin_url(backend)).set(database=self.name).render_as_string(hide_password=False)

    def drop_all(self):
        for backend in self.created:
            admin = sa.create_engine(self._admin_url(backend), poolclass=NullPool, isolation_level="AUTOCOMMIT")
            q = '"' if backend == "postgresql" else "`"
            extra = " WITH (FORCE)" if backend == "postgresql" else ""
            try:
                with admin.connect() as c:
                    c.exec_driver_sql(f"DROP DATABASE IF EXISTS {q}{self.name}{q}{extra}")
            finally:
                admin.dispose()


@pytest.fixture(scope="session")
def server_dbs():
    dbs = _ServerDatabases()
    yield dbs
    dbs.drop_all()


def make_engine(backend: str, tmp_path: Path, server_dbs) -> sa.Engine:
    from ambidex.db import connect, migrate

    url = f"sqlite:///{tmp_path / 'registry.db'}" if backend == "sqlite" else server_dbs.fresh(backend)
    engine = connect(url)
    migrate(engine)
    return engine


@pytest.fixture
def engine(tmp_path, server_dbs):
    eng = make_engine("sqlite", tmp_path, server_dbs)
    yield eng
    eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_engine(request, tmp_path, server_dbs):
    eng = make_engine(request.param, tmp_path, server_dbs)
    yield eng
    eng.dispose()


# -- real models ------------------------------------------------------------------------------------

def churn_frame(n: int = 400, seed: int = 1, start_id: int = 1):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n).round(1)
    tenure = rng.integers(1, 60, n)
    plan = pd.Categorical(rng.choice(["basic", "pro"], n), categories=["basic", "pro"])
    logit = -1.0 + 0.04 * (50 - age) - 0.03 * tenure + np.where(plan == "basic", 0.8, -0.4)
    churn = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"customer_id": np.arange(start_id, start_id + n, dtype="int64"), "age": age,
                         "tenure": tenure.astype("int64"), "plan": plan,
                         "churn": pd.Categorical(churn, categories=["no", "yes"])})


def train_model(tmp: Path, lang: str, name: str, seed: int = 1) -> Path:
    """Train a real model with the language's built-in train stage; return the model folder."""
    from ambidex.runners import run_stage

    launch = train_launch(tmp, lang, name, seed)
    outcome = run_stage(launch)
    if outcome.error:
        raise outcome.error
    return launch.stage_dir / "out" / "model"


def train_launch(tmp: Path, lang: str, name: str, seed: int = 1):
    """The built-in train stage of ``lang`` on a churn frame, ready to run (its context written)."""
    from ambidex.pipeline import write_context
    from ambidex.runners import StageLaunch
    from ambidex_stage.tables import write_table

    stage_dir = tmp / f"train_{lang}_{name}_{seed}"
    out_dir = stage_dir / "out"
    out_dir.mkdir(parents=True)
    df = churn_frame(seed=seed)
    write_table(df, stage_dir / "train.csv")
    params = {"target": "churn", "exclude": ["customer_id"], "name": name, "golden_n": 4}
    if lang == "python":
        params["estimator"] = "logistic_regression"
    ctx = {"contract_version": 1, "run_id": uuid.uuid4().hex, "pipeline": name, "stage": "train", "lang": lang,
           "project_root": str(tmp), "output_dir": str(out_dir), "params": params,
           "inputs": {"train": {"kind": "table", "path": str(stage_dir / "train.csv"),
                                "schema": json.loads((stage_dir / "train.schema.json").read_text())}},
           "outputs": {"model": {"kind": "model", "path": str(out_dir / "model")}},
           "window": None, "seed": 7}
    write_context(stage_dir / "context.json", ctx)
    return StageLaunch(stage="train", lang=lang, runner="subprocess" if lang == "python" else "rscript",
                       script=None, builtin="train", context_path=stage_dir / "context.json",
                       stage_dir=stage_dir, project_root=tmp, timeout=600)


@pytest.fixture(scope="session")
def py_model_dir(tmp_path_factory):
    return train_model(tmp_path_factory.mktemp("pymodel"), "python", "churn_py")


@pytest.fixture(scope="session")
def r_model_dir(tmp_path_factory):
    os.environ.setdefault("AMBIDEX_R_LIBS", str(REPO / ".venv" / "R-library"))
    return train_model(tmp_path_factory.mktemp("rmodel"), "r", "churn_r")


@pytest.fixture
def store(tmp_path):
    from ambidex.artifacts import ArtifactStore

    return ArtifactStore(tmp_path / "artifacts")


def register(engine, store, folder: Path, name: str, *, actor: str = "trainer", times: int = 1):
    """Register ``folder`` as ``times`` new versions of ``name``; return the last ModelVersion."""
    import shutil
    import tempfile

    from ambidex.registry import Registry

    reg = Registry(engine, store, actor=actor)
    mv = None
    for _ in range(times):
        with tempfile.TemporaryDirectory() as d:
            copy = Path(d) / "model"
            shutil.copytree(folder, copy)
            manifest = json.loads((copy / "model.json").read_text())
            manifest["name"] = name
            (copy / "model.json").write_text(json.dumps(manifest))
            mv = reg.register_model_version(name, copy)
    return mv


def events_of(engine, kind: str | None = None) -> list[dict]:
    from ambidex.tables import events

    q = sa.select(events).order_by(events.c.id)
    if kind:
        q = q.where(events.c.kind == kind)
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]
