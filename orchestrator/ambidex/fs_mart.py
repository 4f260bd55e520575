"""fs_mart: a mart's SQL tables (current rows and history) and its bookkeeping row."""
from __future__ import annotations

import json

import sqlalchemy as sa

from ambidex.errors import DataError
from ambidex.fs_spec import MartSpec
from ambidex.fstables import FS_TABLES, MartTimestamp, data_versions, fs_marts, metadata
from ambidex.tables import MYSQL_OPTS
from ambidex.sqlident import validate_identifier


def init_featurestore(engine: sa.Engine) -> None:
    """Create the bookkeeping tables if missing (tests and standalone use; the registry uses Alembic)."""
    metadata.create_all(engine, tables=FS_TABLES)


def _sa_type(entry: dict, is_key: bool):
    t = entry["type"]
    if t == "integer":
        return sa.BigInteger()
    if t == "double":
        return sa.Double()
    if t == "boolean":
        return sa.Boolean()
    if t == "timestamp":
        return MartTimestamp()
    return sa.String(255) if is_key else sa.Text()


def _mart_tables(spec: MartSpec, schema: dict) -> tuple[sa.Table, sa.Table]:
    md = sa.MetaData()
    qn = sa.sql.quoted_name

    def cols(hist: bool):
        out = [sa.Column(qn(c, True), _sa_type(e, c in spec.key)) for c, e in schema["columns"].items()]
        out.append(sa.Column("_dv", sa.Integer, nullable=False))
        if hist:
            out.append(sa.Column("_replaced_by", sa.Integer, nullable=False))
        return out
    main = sa.Table(qn(spec.name, True), md, *cols(False), **MYSQL_OPTS)
    hist = sa.Table(qn(spec.name + "__hist", True), md, *cols(True), **MYSQL_OPTS)
    idx_time = [spec.time_column] if spec.time_column else []
    if spec.key:
        sa.Index(f"ux_{spec.name}_key"[:60], *[main.c[k] for k in spec.key], unique=True)
    if idx_time:
        sa.Index(f"ix_{spec.name}_time"[:60], main.c[spec.time_column])
    sa.Index(f"ix_{spec.name}_hist_dv"[:60], hist.c["_dv"])
    return main, hist


def _load_mart_row(conn, name: str) -> dict | None:
    row = conn.execute(sa.select(fs_marts).where(fs_marts.c.name == name)).mappings().first()
    return dict(row) if row else None


def _get_mart(bind, name: str) -> tuple[dict, MartSpec, dict]:
    validate_identifier(name, "mart name")
    with _connect(bind) as conn:
        row = _load_mart_row(conn, name)
    if row is None:
        raise DataError(f"No mart {name!r}.", code="data.not_found",
                        hint="Run 'ambidex data list' to see the marts, or ingest it first.", mart=name)
    return row, MartSpec.model_validate_json(row["spec_json"]), json.loads(row["schema_json"] or '{"columns": {}}')


class _connect:
    """For reading: use a given Connection as is, or open one from an Engine whose transactions do not take
    SQLite's write lock (``ambidex.db.reading``), so a read waits for no writer (a capture in progress, say)."""

    def __init__(self, bind):
        self.bind, self.conn = bind, None

    def __enter__(self):
        if isinstance(bind := self.bind, sa.Connection):
            return bind
        self.conn = bind.connect().execution_options(ambidex_read_only=True)
        return self.conn

    def __exit__(self, *exc):
        if self.conn is not None:
            self.conn.close()


def _dv_ids(engine, mart: str, versions: list[int]) -> list[int]:
    if not versions:
        return []
    with _connect(engine) as conn:
        return sorted(conn.execute(sa.select(data_versions.c.id).where(
            data_versions.c.mart == mart, data_versions.c.version.in_(versions))).scalars())
