"""Registry fixtures: a clean database per test on SQLite, PostgreSQL and MariaDB, a store, a clock.

PostgreSQL and MariaDB are real servers on this machine; each test session creates
its own uniquely named database on each and every test starts from an empty schema.
Override the admin URLs with AMBIDEX_TEST_PG_URL / AMBIDEX_TEST_MARIADB_URL.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

PG_ADMIN = os.environ.get("AMBIDEX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("AMBIDEX_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
BACKENDS = ["sqlite", "postgresql", "mariadb"]


class _ServerDatabases:
    """Creates one database per server per session on first use, resets it per test, drops it at the end."""

    def __init__(self):
        self.name = f"ambidex_t_{os.getpid()}_{secrets.token_hex(3)}"
        self.created: dict[str, str] = {}

    def _admin(self, backend: str) -> sa.Engine:
        url = PG_ADMIN if backend == "postgresql" else MARIADB_ADMIN
        return sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    def url(self, backend: str) -> str:
        admin_url = sa.make_url(PG_ADMIN if backend == "postgresql" else MARIADB_ADMIN)
        url = admin_url.set(database=self.name).render_as_string(hide_password=False)
        admin = self._admin(backend)
        try:
            with admin.connect() as c:
                if backend == "postgresql":
                    if backend not in self.created:
                        c.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
                else:
                    c.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.name}`")
                    c.exec_driver_sql(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
        finally:
            admin.dispose()
        self.created[backend] = url
        if backend == "postgresql":  # a fresh public schema is faster than a fresh database
            eng = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
            try:
                with eng.connect() as c:
                    c.exec_driver_sql("DROP SCHEMA public CASCADE")
                    c.exec_driver_sql("CREATE SCHEMA public")
            finally:
                eng.dispose()
        return url

    def migrated_url(self, backend: str) -> str:
        """A second, migrated database, emptied (not re-migrated) before each test: MariaDB DDL is slow."""
        from ambidex.db import check_schema, connect, migrate

        url = self.created.get(backend + "+migrated")
        if url is not None:
            eng = connect(url, poolclass=NullPool)
            try:
                _empty_tables(eng)
                check_schema(eng)
                return url
            except Exception:  # a test broke the schema: start over
                pass
            finally:
                eng.dispose()
        name = self.name + "_m"
        url = sa.make_url(self.url(backend)).set(database=name).render_as_string(hide_password=False)
        admin = self._admin(backend)
        q = '"' if backend == "postgresql" else "`"
        try:
            with admin.connect() as c:
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {q}{name}{q}")
                c.exec_driver_sql(f"CREATE DATABASE {q}{name}{q}")
        finally:
            admin.dispose()
        self.created[backend + "+migrated"] = url
        eng = connect(url, poolclass=NullPool)
        try:
            migrate(eng)
        finally:
            eng.dispose()
        return url

    def drop_all(self) -> None:
        for key, url in self.created.items():
            backend = key.split("+")[0]
            name = sa.make_url(url).database
            admin = self._admin(backend)
            try:
                with admin.connect() as c:
                    q = '"' if backend == "postgresql" else "`"
                    extra = " WITH (FORCE)" if backend == "postgresql" else ""
                    c.exec_driver_sql(f"DROP DATABASE IF EXISTS {q}{name}{q}{extra}")
            finally:
                admin.dispose()


def _empty_tables(eng: sa.Engine) -> None:
    """Empty every non-empty table, bypassing the events table's append-only triggers (test-only)."""
    names = [t for t in sa.inspect(eng).get_table_names() if t != "alembic_version"]
    prep = eng.dialect.identifier_preparer
    with eng.connect() as c:
        full = [t for t in names if c.exec_driver_sql(f"SELECT 1 FROM {prep.quote(t)} LIMIT 1").first()]
        c.rollback()
    if not full:
        return
    with eng.connect() as c:
        if eng.dialect.name == "postgresql":
            c.exec_driver_sql("SET session_replication_role = replica")
            c.exec_driver_sql(f"TRUNCATE {', '.join(prep.quote(t) for t in full)} RESTART IDENTITY CASCADE")
            c.exec_driver_sql("SET session_replication_role = DEFAULT")
        else:
            c.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            for t in full:
                c.exec_driver_sql(f"TRUNCATE TABLE {prep.quote(t)}")
            c.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
        c.commit()


@pytest.fixture(scope="session")
def _server_dbs():
    dbs = _ServerDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path, _server_dbs) -> str:
    """An empty database on each backend: sqlite (a temp file), postgresql, mariadb."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'registry.db'}"
    return _server_dbs.url(request.param)


@pytest.fixture(params=BACKENDS)
def engine(request, tmp_path, _server_dbs):
    """An engine on a migrated, empty database. Tests that change the schema use ``fresh_engine``."""
    from ambidex.db import connect, migrate

    if request.param == "sqlite":
        eng = connect(f"sqlite:///{tmp_path / 'db' / 'registry.db'}")
        migrate(eng)
    else:
        eng = connect(_server_dbs.migrated_url(request.param))
    yield eng
    eng.dispose()


@pytest.fixture
def fresh_engine(db_url):
    """An engine on a database migrated for this test alone (its schema may be broken at will)."""
    from ambidex.db import connect, migrate

    eng = connect(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def store(tmp_path):
    from ambidex.artifacts import ArtifactStore

    return ArtifactStore(tmp_path / "artifacts")


class Clock:
    """A clock tests can set and step (also backwards); each call advances it by ``step``."""

    def __init__(self, start=dt.datetime(2024, 3, 10, 12, 0, tzinfo=dt.timezone.utc), step=dt.timedelta(seconds=1)):
        self.now, self.step = start, step

    def __call__(self) -> dt.datetime:
        t = self.now
        self.now = self.now + self.step
        return t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def registry(engine, store, clock):
    from ambidex.registry import Registry

    return Registry(engine, store, clock=clock, actor="tester")


def write_model(folder: Path, name: str = "churn", *, payload: bytes | None = None, fmt: str = "joblib",
                extra: dict | None = None, **manifest_overrides) -> Path:
    """A minimal model folder as a training stage would write it (version null)."""
    folder.mkdir(parents=True, exist_ok=True)
    payload_name = "model.joblib" if fmt == "joblib" else f"model.{fmt}"
    if payload is None:
        import joblib

        joblib.dump({"coef": [0.5, -1.25], "intercept": 0.1}, folder / payload_name)
    else:
        (folder / payload_name).write_bytes(payload)
    for rel, data in (extra or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    manifest = {
        "contract_version": 1, "name": name, "version": None, "created": "2024-03-10T12:00:00Z",
        "producer": {"language": "python", "language_version": "3.11.7", "library": "scikit-learn",
                     "library_version": "1.4.0", "sdk_version": "0.1.0"},
        "runtime": {"language": "python", "payload": payload_name, "format": fmt,
                    "predict": "ambidex_stage.builtins", "packages": {}, "min_language_version": "3.11"},
        "task": "binary_classification",
        "target": {"name": "churned", "type": "category", "levels": ["no", "yes"], "positive": "yes"},
        "signature": {"inputs": [], "outputs": [], "unseen_level": "error"},
        "metrics": {"auc": 0.81},
        "lineage": None, "resources": None, "files": None,
    }
    manifest.update(manifest_overrides)
    (folder / "model.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture
def make_model(tmp_path):
    counter = iter(range(10**6))

    def make(name: str = "churn", **kw) -> Path:
        return write_model(tmp_path / "src" / f"{name}-{next(counter)}", name, **kw)

    return make
