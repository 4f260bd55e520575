"""db: dialect settings, the NFS refusal, migrations under a lock, and schema checks on every backend."""
from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from ambidex import tables as T
from ambidex.db import check_schema, connect, head_revision, migrate, reading, redact_url, schema_status
from ambidex.errors import RegistryError

MINE = {"runs", "stage_runs", "params", "metrics", "artifacts", "models", "model_versions",
        "artifact_files", "events"}


def test_sqlite_settings_and_parent_dir(tmp_path):
    eng = connect(f"sqlite:///{tmp_path / 'deep' / 'er' / 'r.db'}")
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert (tmp_path / "deep" / "er" / "r.db").exists()
    finally:
        eng.dispose()


def test_sqlite_transactions_begin_immediate_and_readers_defer(tmp_path):
    path = tmp_path / "r.db"
    eng = connect(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        with eng.begin() as c:
            c.execute(sa.select(1))  # no write yet: BEGIN IMMEDIATE already holds the write lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        with reading(eng) as c:
            c.execute(sa.select(1))
            other.execute("BEGIN IMMEDIATE")  # a deferred reader does not block writers
            other.execute("ROLLBACK")
    finally:
        other.close()
        eng.dispose()


def test_sqlite_on_network_filesystem_is_refused(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nfiler:/export {tmp_path} nfs4 rw,relatime 0 0\n")
    with pytest.raises(RegistryError) as e:
        connect(f"sqlite:///{tmp_path / 'reg' / 'r.db'}", mounts=mounts)
    assert e.value.code == "registry.network_filesystem"
    assert "nfs4" in e.value.message and "PostgreSQL" in str(e.value)
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\n//srv/share {tmp_path} cifs rw 0 0\n")
    with pytest.raises(RegistryError, match="cifs"):
        connect(f"sqlite:///{tmp_path / 'r.db'}", mounts=mounts)
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 {tmp_path} xfs rw 0 0\n")
    connect(f"sqlite:///{tmp_path / 'r.db'}", mounts=mounts).dispose()


def test_redact_url_hides_secrets():
    assert redact_url("postgresql+psycopg://bob:s3cret@db:5432/reg") == "postgresql+psycopg://bob:***@db:5432/reg"
    out = redact_url("mysql+pymysql://u@h/d?ssl_key=/k&password=p&charset=utf8mb4")
    assert "password=p" not in out and "/k" not in out and "password=***" in out and "charset=utf8mb4" in out
    assert redact_url("::not a url::") == "<unparsable database URL>"


def test_migrate_creates_schema_and_is_idempotent(db_url):
    eng = connect(db_url)
    try:
        with pytest.raises(RegistryError) as e:
            check_schema(eng)
        assert e.value.code == "registry.schema_mismatch" and "ambidex db upgrade" in str(e.value)
        assert migrate(eng) == head_revision()
        assert migrate(eng) == head_revision()
        check_schema(eng)
        assert MINE <= set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_concurrent_migrations_serialise(db_url):
    engines = [connect(db_url) for _ in range(3)]
    errors, results = [], []

    def run(e):
        try:
            results.append(migrate(e))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and results == [head_revision()] * 3
        check_schema(engines[0])
    finally:
        for e in engines:
            e.dispose()


def test_migration_matches_tables_module(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def include(obj, name, type_, reflected, compare_to):
        return type_ != "table" or name in MINE

    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True, "include_object": include})
        assert compare_metadata(ctx, T.metadata) == []


def test_unknown_revision_is_refused_with_the_command(fresh_engine):
    engine = fresh_engine
    with engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = '0042_from_the_future'"))
    for action in (check_schema, migrate):
        with pytest.raises(RegistryError) as e:
            action(engine)
        err = e.value
        assert err.code == "registry.schema_mismatch"
        assert "0042_from_the_future" in err.message and head_revision() in err.message
        assert "Upgrade ambidex" in err.hint
    assert schema_status(engine)["state"] == "unknown"


def test_database_behind_head_asks_for_upgrade(db_url):
    from alembic import command

    from ambidex.db import _alembic_config

    eng = connect(db_url)
    try:
        with eng.begin() as c:
            command.upgrade(_alembic_config(c), "0001_registry")
        if head_revision() == "0001_registry":
            check_schema(eng)
            return
        with pytest.raises(RegistryError) as e:
            check_schema(eng)
        assert e.value.details["state"] == "behind"
        assert "found revision 0001_registry" in e.value.message and "'ambidex db upgrade'" in e.value.hint
        migrate(eng)
        check_schema(eng)
    finally:
        eng.dispose()


def test_missing_table_of_recorded_revision_is_half_applied(fresh_engine):
    engine = fresh_engine
    with engine.begin() as c:
        c.execute(sa.text("DROP TABLE artifact_files"))
    with pytest.raises(RegistryError) as e:
        check_schema(engine)
    assert "half-applied" in e.value.message and "artifact_files" in e.value.message
    assert "ambidex db upgrade" in e.value.hint and e.value.details["missing"] == ["artifact_files"]


def test_interrupted_migration_is_detected_with_recovery_command(db_url, monkeypatch):
    """The first revision fails at its last step (the triggers): MariaDB keeps the tables it created."""
    from alembic.operations import Operations

    def boom(self, *a, **kw):
        raise sa.exc.OperationalError("CREATE TRIGGER", {}, Exception("simulated crash"))

    eng = connect(db_url)
    try:
        with monkeypatch.context() as m:
            m.setattr(Operations, "execute", boom)
            with pytest.raises(sa.exc.OperationalError, match="simulated crash"):
                migrate(eng)
        status = schema_status(eng)
        if eng.dialect.name in ("sqlite", "postgresql"):  # transactional DDL: nothing was left behind
            assert status["state"] == "empty"
            return
        assert status["state"] == "half_applied"
        assert {"runs", "models", "events"} <= set(status["leftover"])
        with pytest.raises(RegistryError) as e:
            check_schema(eng)
        assert "half-applied" in e.value.message
        assert "DROP TABLE IF EXISTS runs" in e.value.hint and "ambidex db upgrade" in e.value.hint
        with pytest.raises(RegistryError, match="half-applied"):
            migrate(eng)
    finally:
        eng.dispose()


def test_foreign_table_in_empty_database_is_refused(db_url):
    eng = connect(db_url)
    try:
        with eng.begin() as c:
            c.execute(sa.text("CREATE TABLE models (x INTEGER)"))
        with pytest.raises(RegistryError, match="half-applied") as e:
            migrate(eng)
        assert "DROP TABLE IF EXISTS models" in e.value.hint
    finally:
        eng.dispose()


def test_events_table_rejects_update_and_delete(engine):
    at = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    with engine.begin() as c:
        c.execute(T.events.insert(), {"at": at, "kind": "k", "entity_type": "t", "entity_id": "1"})
    for stmt in (T.events.update().values(kind="rewritten"), T.events.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as c:
                c.execute(stmt)
    if engine.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as c:
                c.execute(sa.text("TRUNCATE events"))
    with engine.connect() as c:
        assert c.execute(sa.select(T.events.c.kind)).scalars().all() == ["k"]


def test_utc_datetime_refuses_naive_and_round_trips_aware(engine):
    naive = dt.datetime(2024, 1, 1, 12, 0)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        with engine.begin() as c:
            c.execute(T.models.insert(), {"name": "m", "created_at": naive})
    cet = dt.timezone(dt.timedelta(hours=1))
    with engine.begin() as c:
        c.execute(T.models.insert(), {"name": "m", "created_at": dt.datetime(2024, 1, 1, 13, 0, 0, 123456, cet)})
    with engine.connect() as c:
        got = c.execute(sa.select(T.models.c.created_at)).scalar()
    assert got == dt.datetime(2024, 1, 1, 12, 0, 0, 123456, dt.timezone.utc) and got.tzinfo == dt.timezone.utc


def test_up_to_date_database_is_checked_by_one_select_without_alembic(tmp_path):
    """Every command opens the registry: at the newest revision that costs one SELECT, no alembic import."""
    import subprocess
    import sys

    from ambidex.db import _file_head

    assert _file_head() == head_revision()
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate(connect(url))
    code = (f"import sys; from ambidex.db import connect, migrate; print(migrate(connect({url!r})), "
            "'alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [head_revision(), "False"]
