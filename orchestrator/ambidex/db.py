"""db: engines, dialect settings and schema migrations.

:func:`connect` makes an :class:`~sqlalchemy.engine.Engine` with the settings each
backend needs to be safe under cron and concurrency:

- SQLite: WAL, ``busy_timeout``, ``foreign_keys=ON``, ``synchronous=NORMAL`` (safe
  in WAL: a power cut may lose the last commits, never consistency), and every
  transaction opened with ``BEGIN IMMEDIATE`` so writers queue on the busy
  timeout instead of failing on a lock upgrade. Read-only work may opt out with
  :func:`reading` (plain deferred ``BEGIN``). A database on NFS/CIFS/SMB is refused.
- PostgreSQL / MariaDB: ``pool_pre_ping`` and READ COMMITTED.

:func:`migrate` upgrades to the newest revision under a lock; :func:`check_schema`
refuses a database this code does not know, with the command that fixes it.
"""
from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import re
import time
import weakref
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from .errors import RegistryError

__all__ = ["connect", "dispose_all", "redact_url", "reading", "migrate", "check_schema", "schema_status", "head_revision"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph",
    "glusterfs", "fuse.glusterfs", "lustre", "fuse.sshfs", "sshfs", "davfs", "fuse.davfs2",
    "gpfs", "beegfs", "fuse.s3fs", "fuse.rclone", "fuse.cephfs",
})
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token", "key", "sslpassword")
_PG_LOCK_KEY = 0x616D6269  # "ambi": one advisory lock per database for migrations
UPGRADE_COMMAND = "ambidex db upgrade"
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()  # every engine connect() made, for dispose_all()


def redact_url(url: str | URL) -> str:
    """The URL with its password and secret-looking query values replaced by ``***``.

    >>> redact_url("postgresql+psycopg://bob:s3cret@db/reg?sslpassword=x")
    'postgresql+psycopg://bob:***@db/reg?sslpassword=***'
    """
    try:
        u = make_url(url)
    except Exception:  # not a SQLAlchemy URL (or '@' in a password): redact by pattern
        m = re.match(r"((?:[A-Za-z][A-Za-z0-9+.-]*://)?)([^?#]*)@", str(url))
        text = str(url)
        if not (m and ":" in m.group(2)):
            return "<unparsable database URL>"  # no recognisable user:password@: show none of it
        text = f"{m.group(1)}{m.group(2).split(':', 1)[0]}:***@{text[m.end():]}"
        return re.sub(r"(?i)([?&;][^=&;#]*(?:pass|pwd|secret|token|key)[^=&;#]*=)[^&;#]*", r"\1***", text)
    base = u.set(query={}).render_as_string(hide_password=True)
    if not u.query:
        return base
    pairs = []
    for k, v in u.query.items():
        secret = any(s in k.lower() for s in _SECRET_QUERY_KEYS)
        for one in (v if isinstance(v, tuple) else (v,)):
            pairs.append(f"{k}={'***' if secret else one}")
    return f"{base}?{'&'.join(pairs)}"


def connect(url: str | URL, *, mounts: str | os.PathLike = "/proc/mounts", **engine_kw) -> Engine:
    """Create an engine for ``url`` with ambidex's dialect settings.

    ``mounts`` is the mount table used to refuse SQLite on a network filesystem.

    >>> engine = connect("sqlite:///registry/registry.db")  # doctest: +SKIP
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = _connect_sqlite(u, Path(mounts), engine_kw)
    else:
        kw = {"pool_pre_ping": True}
        if u.get_backend_name() in ("mysql", "mariadb"):
            kw["isolation_level"] = "READ COMMITTED"
            if "charset" not in u.query:
                u = u.update_query_dict({"charset": "utf8mb4"})
        kw.update(engine_kw)
        engine = sa.create_engine(u, **kw)
    _ENGINES.add(engine)
    return engine


def dispose_all() -> None:
    """Close the pooled connections of every engine :func:`connect` made that is still alive (SQLite
    checkpoints its WAL into the database file when the last connection closes; a server sees a clean
    goodbye). The engines stay usable: a later checkout opens a new connection."""
    for engine in list(_ENGINES):
        engine.dispose()


def _connect_sqlite(u: URL, mounts: Path, engine_kw: dict) -> Engine:
    db = u.database
    if db and db != ":memory:" and not db.startswith("file:"):
        path = Path(db).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        fstype, mountpoint = filesystem_of(path.parent, mounts)
        if fstype.lower() in NETWORK_FILESYSTEMS or fstype.lower().startswith(("nfs", "smb", "cifs")):
            raise RegistryError(
                f"Refusing to use SQLite database {path} on a network filesystem "
                f"({fstype} mounted at {mountpoint}): SQLite's locking is unreliable there and "
                "the registry could be corrupted.",
                code="registry.network_filesystem",
                hint="Put the registry on a local disk, or set registry.url to a PostgreSQL or "
                     "MariaDB database.",
                path=str(path), fstype=fstype,
            )
        u = u.set(database=str(path))
    engine = sa.create_engine(u, **engine_kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # take BEGIN away from the sqlite3 module; the "begin" hook below emits it
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = "DEFERRED" if conn.get_execution_options().get("ambidex_read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _enable_wal(cur) -> None:
    """Switch to WAL once; the switch needs an exclusive lock and may fail BUSY without waiting."""
    import sqlite3

    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def filesystem_of(path: Path, mounts: Path = Path("/proc/mounts")) -> tuple[str, str]:
    """The (filesystem type, mount point) holding ``path``, from the mount table; ("", "") if unknown."""
    real = os.path.realpath(path)
    best = ("", "")
    try:
        lines = Path(mounts).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return best
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mnt = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best[1]):
            best = (fields[2], mnt)
    return best


@contextlib.contextmanager
def reading(engine: Engine):
    """A connection for read-only work: on SQLite its transactions use a deferred BEGIN.

    >>> with reading(engine) as conn:  # doctest: +SKIP
    ...     conn.execute(sa.select(1)).scalar()
    """
    with engine.connect() as conn:
        yield conn.execution_options(ambidex_read_only=True)


# -- migrations ---------------------------------------------------------------------------------

def _migrations_dir() -> Path:
    return Path(str(importlib.resources.files("ambidex") / "migrations"))


def _alembic_config(connection=None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script_directory():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def head_revision() -> str:
    """The newest schema revision this code knows."""
    return _script_directory().get_current_head()


def _file_head() -> str:
    """The newest revision by the migration files' names (``NNNN_name.py``, revision id = file stem, one
    linear chain): what ``head_revision`` answers, without importing alembic (a test holds them equal)."""
    return max(p.stem for p in (_migrations_dir() / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def _at_head(engine: Engine) -> bool:
    """One SELECT: the database records exactly the newest revision (the common case of every command)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    except sa.exc.DBAPIError:  # no version table yet (an empty database), or another problem: the full path decides
        return False
    return rows == [_file_head()]


def migrate(engine: Engine) -> str:
    """Upgrade the database to the newest revision under a lock; return the revision reached.

    One runner at a time: SQLite holds ``BEGIN IMMEDIATE`` for the whole upgrade,
    PostgreSQL a transaction-scoped advisory lock, MariaDB ``GET_LOCK``. A database
    at an unknown or half-applied revision is refused, never "upgraded".

    A database that records the newest revision is left alone after one SELECT (alembic is not
    even imported); ``ambidex db status`` checks its tables and triggers in full.

    >>> migrate(connect("sqlite:///registry.db"))  # doctest: +SKIP
    '0001_registry'
    """
    if _at_head(engine):
        return _file_head()
    from alembic import command

    name = engine.dialect.name
    with engine.begin() as conn:
        if name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        elif name in ("mysql", "mariadb"):
            got = conn.execute(sa.text("SELECT GET_LOCK(CONCAT('ambidex.migrate.', DATABASE()), 600)")).scalar()
            if got != 1:
                raise RegistryError(
                    "Timed out after 600 s waiting for another ambidex migration on this database.",
                    code="registry.locked", hint="Wait for the other 'ambidex db upgrade' to finish, then retry.")
        try:
            status = _status(conn)
            if status["state"] in ("unknown", "half_applied"):
                raise _schema_error(status, engine)
            if status["state"] != "ok":
                log.info("migrating %s from %s to %s", redact_url(engine.url), status["current"], status["head"])
                command.upgrade(_alembic_config(conn), "head")
        finally:
            if name in ("mysql", "mariadb"):
                conn.execute(sa.text("SELECT RELEASE_LOCK(CONCAT('ambidex.migrate.', DATABASE()))"))
    return head_revision()


def schema_status(engine: Engine) -> dict:
    """Where the database stands: ``{state, current, head, missing, leftover}``.

    ``state`` is ``ok``, ``empty`` (never migrated), ``behind`` (needs an upgrade),
    ``unknown`` (a revision this code does not know: newer or foreign) or
    ``half_applied`` (tables of the recorded revision missing, or tables of a later
    one present: an interrupted MariaDB migration).
    """
    with reading(engine) as conn:
        return _status(conn)


def _status(conn) -> dict:
    from alembic.runtime.migration import MigrationContext

    script = _script_directory()
    head = script.get_current_head()
    current = MigrationContext.configure(conn).get_current_heads()
    out = {"state": "ok", "current": ",".join(current) or None, "head": head, "missing": [], "leftover": []}
    known = {r.revision: r for r in script.walk_revisions()}
    unknown = [r for r in current if r not in known]
    if unknown:
        out["state"] = "unknown"
        out["current"] = ",".join(unknown)
        return out
    applied: set[str] = set()
    for rev in current:
        applied.update(r.revision for r in script.iterate_revisions(rev, "base"))
    want_tables, want_triggers, later_tables = set(), set(), set()
    for rev, sc in known.items():
        tables = set(getattr(sc.module, "ambidex_tables", ()))
        if rev in applied:
            want_tables |= tables
            want_triggers |= set(getattr(sc.module, "ambidex_triggers", ()))
        else:
            later_tables |= tables
    insp = sa.inspect(conn)
    have_tables = set(insp.get_table_names())
    have_triggers = _trigger_names(conn)
    out["missing"] = sorted((want_tables - have_tables) | (want_triggers - have_triggers))
    out["leftover"] = sorted(later_tables & have_tables)
    if out["missing"] or out["leftover"]:
        out["state"] = "half_applied"
    elif not current:
        out["state"] = "empty"
    elif set(current) != {head}:
        out["state"] = "behind"
    return out


def _trigger_names(conn) -> set[str]:
    name = conn.dialect.name
    if name == "sqlite":
        q = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    elif name == "postgresql":
        q = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    elif name in ("mysql", "mariadb"):
        q = "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
    else:
        return set()
    return {r[0] for r in conn.execute(sa.text(q))}


def check_schema(engine: Engine) -> None:
    """Refuse to run unless the database is exactly at this code's newest revision.

    Raises :class:`~ambidex.errors.RegistryError` (``registry.schema_mismatch``) naming
    the revision found and the command to run.
    """
    status = schema_status(engine)
    if status["state"] != "ok":
        raise _schema_error(status, engine)


def _schema_error(status: dict, engine: Engine) -> RegistryError:
    where = redact_url(engine.url)
    found, head, state = status["current"], status["head"], status["state"]
    details = {"state": state, "found": found, "expected": head, "url": where}
    if state == "empty":
        return RegistryError(f"The database {where} has no ambidex registry schema yet (expected revision {head}).",
                             code="registry.schema_mismatch", hint=f"Run '{UPGRADE_COMMAND}' to create it.", **details)
    if state == "behind":
        return RegistryError(
            f"Detected out-of-date database schema in {where} (found revision {found}, expected {head}).",
            code="registry.schema_mismatch",
            hint=f"Take a backup of the database, then run '{UPGRADE_COMMAND}' to migrate it to the latest schema.",
            **details)
    if state == "unknown":
        return RegistryError(
            f"The database {where} is at schema revision '{found}', which this version of ambidex does not know "
            f"(its newest is {head}): it was written by a newer ambidex or by another tool.",
            code="registry.schema_mismatch",
            hint="Upgrade ambidex (pip install -U ambidex) to the version that wrote it, or point registry.url "
                 "at an ambidex database.",
            **details)
    missing, leftover = status["missing"], status["leftover"]
    what = []
    if missing:
        what.append(f"missing {', '.join(missing)}")
    if leftover:
        what.append(f"tables {', '.join(leftover)} of a later revision exist")
    if leftover and not missing:
        drop = "; ".join(f"DROP TABLE IF EXISTS {t}" for t in leftover)
        recovery = (f"back up the database, then run: SET FOREIGN_KEY_CHECKS=0; {drop}; SET FOREIGN_KEY_CHECKS=1; "
                    f"and run '{UPGRADE_COMMAND}' again.")
    else:
        recovery = ("restore the database from the backup taken before the migration, then run "
                    f"'{UPGRADE_COMMAND}'.")
    details.update(missing=missing, leftover=leftover, recovery=recovery)
    return RegistryError(
        f"The schema of {where} is half-applied (recorded revision {found or 'none'}: {'; '.join(what)}). "
        "A migration was interrupted; MariaDB/MySQL cannot roll back DDL.",
        code="registry.schema_mismatch", hint=f"To recover, {recovery}", **details)


def insert_columns(conn, table: sa.Table, constants: dict, columns: dict) -> None:
    """INSERT rows given column-wise (``{column: values}``, plus ``constants`` shared by every row)
    with one DBAPI executemany in the caller's transaction. SQLAlchemy's own executemany builds and
    bind-processes every parameter of every row (~10 us a row); here a constant is processed once
    and each column's bind processor, if it has one, runs in one loop."""
    n = len(next(iter(columns.values()))) if columns else 0
    if not n:
        return
    dialect = conn.dialect

    def processed(key, values):
        proc = table.c[key].type._cached_bind_processor(dialect)
        return [None if v is None else proc(v) for v in values] if proc else values

    const = {k: processed(k, [v])[0] for k, v in constants.items()}
    cols = {k: processed(k, v) for k, v in columns.items()}
    compiled = table.insert().compile(dialect=dialect, column_keys=[*const, *cols])
    if compiled.positional:
        params = list(zip(*[cols[k] if k in cols else [const[k]] * n for k in compiled.positiontup]))
    else:  # a named paramstyle (pyformat): dicts are the form the driver takes
        params = [{**const, **dict(zip(cols, row))} for row in zip(*cols.values())]
    conn.exec_driver_sql(str(compiled), params)
