"""Fixtures for the feature-store tests: one fresh, migrated database per test on sqlite, postgresql and mariadb."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from ambidex.db import connect, migrate

PG_URL = os.environ.get("AMBIDEX_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MY_URL = os.environ.get("AMBIDEX_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


def make_engine(backend: str, tmp_path):
    """A fresh, empty database for one test and a function that removes it."""
    if backend == "sqlite":
        eng = connect(f"sqlite:///{tmp_path / 'fs.db'}")
        return eng, eng.dispose
    base = PG_URL if backend == "postgresql" else MY_URL
    name = f"fs_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    eng = connect(sa.engine.make_url(base).set(database=name))

    def drop():
        eng.dispose()
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE {name}" + (" WITH (FORCE)" if backend == "postgresql" else ""))
        admin.dispose()
    return eng, drop


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def backend(request):
    return request.param


@pytest.fixture
def engine(backend, tmp_path):
    eng, drop = make_engine(backend, tmp_path)
    migrate(eng)
    yield eng
    drop()


@pytest.fixture
def statements(engine):
    """Every SQL statement SQLAlchemy sends while the test runs."""
    seen: list[str] = []

    def listener(conn, cursor, statement, *a):
        seen.append(statement)
    sa.event.listen(engine, "before_cursor_execute", listener)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", listener)


@pytest.fixture
def csv(tmp_path):
    """Write a CSV into the test's folder: csv("name.csv", text) -> path."""
    def write(name: str, text: str) -> str:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return str(p)
    return write
