"""fs_spec: the feature store's config models (MartSpec, SourceSpec, ColumnSpec), windows and load results."""
from __future__ import annotations

import datetime as dt
import os
import re
import zoneinfo
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, model_validator

from ambidex.errors import DataError
from ambidex.sqlident import validate_identifier, validate_identifiers

__all__ = ["ColumnSpec", "SourceSpec", "MartSpec", "Window", "LoadResult", "parse_window", "UTC", "CONTRACT_TYPES",
           "RESERVED"]

UTC = dt.timezone.utc
CONTRACT_TYPES = ("integer", "double", "string", "boolean", "timestamp", "category")
RESERVED = {"_dv", "_replaced_by"}


def _err(msg: str, code: str, hint: str, **details) -> DataError:
    return DataError(msg, code=code, hint=hint, **details)


class ColumnSpec(BaseModel):
    """A declared contract type for one column (``levels`` only for ``category``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["integer", "double", "string", "boolean", "timestamp", "category"]
    levels: list[str] | None = None


class SourceSpec(BaseModel):
    """Where a mart's rows come from: a CSV or Parquet file, or a SQL query on ``$url_env``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["csv", "parquet", "sql"]
    path: str | None = None
    query: str | None = None
    url_env: str | None = None
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self):
        if self.kind in ("csv", "parquet") and not self.path:
            raise ValueError(f"a {self.kind} source needs 'path'")
        if self.kind == "sql":
            if not self.query or not self.url_env:
                raise ValueError("a sql source needs 'query' and 'url_env' (the NAME of an environment variable holding the URL)")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.url_env):
                raise ValueError(f"url_env must be an environment variable name, got {self.url_env!r}; never put a URL in config")
        return self

    def describe(self) -> str:
        """A redacted one-line description stored with the data version."""
        if self.kind == "sql":
            url = os.environ.get(self.url_env or "")
            shown = sa.engine.make_url(url).render_as_string(hide_password=True) if url else "unset"
            return f"sql via ${self.url_env} ({shown}): {' '.join((self.query or '').split())[:500]}"
        p = Path(self.path or "")
        try:
            st = p.stat()
            return f"{self.kind}:{p.resolve()} ({st.st_size} bytes, mtime {dt.datetime.fromtimestamp(st.st_mtime, UTC).isoformat()})"
        except OSError:
            return f"{self.kind}:{p}"


class MartSpec(BaseModel):
    """One feature mart: its source, key, time column, load mode and schema policy.

    >>> MartSpec(name="churn", source={"kind": "csv", "path": "churn.csv"}, key=["customer_id"],
    ...          time_column="signup_month", load="incremental").incremental_by
    'window'
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    source: SourceSpec | None = None
    key: list[str] = []
    time_column: str | None = None
    load: Literal["full", "incremental"] = "full"
    incremental_by: Literal["window", "watermark"] = "window"
    watermark_column: str | None = None
    schema_policy: Literal["strict", "evolve"] = "strict"
    naive_timestamps: str | None = None  # None refuses; "utc" or an IANA zone says how to read them
    columns: dict[str, ColumnSpec] = {}

    @model_validator(mode="after")
    def _check(self):
        # DataError (not ValueError) so that pydantic lets it through unchanged: code data.invalid_identifier
        validate_identifier(self.name, "mart name")
        if len(self.name) > 56:
            raise ValueError(f"mart name {self.name!r} is longer than 56 characters (the history table adds '__hist')")
        named = list(self.key) + [c for c in (self.time_column, self.watermark_column) if c] + list(self.columns)
        for c in validate_identifiers(named):
            if c in RESERVED:
                raise ValueError(f"column name {c!r} is reserved by the feature store")
        if self.load == "incremental" and self.incremental_by == "window" and not self.time_column:
            raise ValueError("an incremental load by window needs 'time_column'")
        if self.load == "incremental" and self.incremental_by == "watermark" and not self.watermark_column:
            raise ValueError("an incremental load by watermark needs 'watermark_column'")
        if self.naive_timestamps not in (None, "utc", "UTC"):
            try:
                zoneinfo.ZoneInfo(self.naive_timestamps)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"naive_timestamps must be 'utc' or an IANA time zone, got {self.naive_timestamps!r}")
        for c, cs in self.columns.items():
            if cs.levels is not None and cs.type != "category":
                raise ValueError(f"column {c!r}: 'levels' is only allowed for type category")
        return self

    @property
    def mode(self) -> str:
        """``full``, ``window`` or ``watermark``."""
        return "full" if self.load == "full" else self.incremental_by


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval ``[start, end)``."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self):
        for t in (self.start, self.end):
            if t.tzinfo is None:
                raise DataError(f"Window bound {t.isoformat()} has no time zone.", code="data.naive_timestamp",
                                hint="Give window bounds in UTC, e.g. 2024-01-01T00:00:00Z or a plain date.")
        if not self.start < self.end:
            raise DataError(f"Window start {self.start.isoformat()} is not before its end {self.end.isoformat()}.",
                            code="data.window_invalid", hint="Windows are half-open [start, end) with start < end.")

    def __str__(self) -> str:
        return f"{_iso(self.start)}/{_iso(self.end)}"


def _iso(t: dt.datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_instant(text: str) -> dt.datetime:
    s = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"Cannot read {text!r} as a time.", code="data.window_invalid",
                        hint="Use ISO 8601: 2024-01-01 or 2024-01-01T00:00:00Z.") from None
    if t.tzinfo is None:
        raise DataError(f"Time {text!r} has no zone offset.", code="data.naive_timestamp",
                        hint="Append Z (UTC) or an offset like +01:00, or give a plain date (read as UTC midnight).")
    return t.astimezone(UTC)


def parse_window(text: str | Window | None) -> Window | None:
    """Parse ``START/END`` (ISO dates or times with zone) into a :class:`Window`.

    >>> str(parse_window("2024-01-01/2024-02-01"))
    '2024-01-01T00:00:00Z/2024-02-01T00:00:00Z'
    """
    if text is None or isinstance(text, Window):
        return text
    parts = text.split("/")
    if len(parts) != 2:
        raise DataError(f"Window {text!r} is not START/END.", code="data.window_invalid",
                        hint="Write it as 2024-01-01/2024-02-01 (half-open, UTC).")
    return Window(_parse_instant(parts[0]), _parse_instant(parts[1]))


@dataclass
class LoadResult:
    """What one load did (``data_version_id``/``version`` are None for a dry run)."""

    mart: str
    mode: str
    version: int | None
    data_version_id: int | None
    row_count: int
    content_hash: str
    window: str | None
    schema: dict
    schema_changes: list[dict]
    replaced_rows: int = 0
    skipped_rows: int = 0
    dry_run: bool = False
    watermark: Any = None

    def to_dict(self) -> dict:
        return asdict(self)


def _jsonable(v):
    if isinstance(v, dt.datetime):
        return _iso(v)
    return v
