"""sqlident: validation, reflection checks and dialect quoting of SQL identifiers that come from config or data.

Reliability promise 13: a table, schema or column name from configuration or from a
data file is (1) checked against the identifier grammar ``^[A-Za-z_][A-Za-z0-9_]{0,62}$``,
(2) checked against the reflected schema when it must already exist, and (3) emitted
only through SQLAlchemy constructs (``sqlalchemy.table``/``column``/``quoted_name``) or
the dialect's identifier preparer. Validation happens before any SQL is sent, so a
name like ``x"; DROP TABLE runs;--`` never reaches the database.

    >>> validate_identifier("churn_2024")
    'churn_2024'
"""
from __future__ import annotations

import re
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ambidex.errors import DataError

__all__ = [
    "IDENTIFIER_PATTERN", "validate_identifier", "validate_identifiers", "quote_identifier",
    "table_clause", "reflect_table", "require_columns", "bind_names", "prepare_bound_sql",
]

IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def validate_identifier(name: object, what: str = "identifier") -> str:
    """Return ``name`` if it matches the identifier grammar, else raise ``data.invalid_identifier``.

    >>> validate_identifier("plan")
    'plan'
    """
    if not isinstance(name, str) or not IDENTIFIER_PATTERN.match(name):
        raise DataError(
            f"Invalid {what} {name!r}: names must match ^[A-Za-z_][A-Za-z0-9_]{{0,62}}$ "
            "(a letter or underscore, then up to 62 letters, digits or underscores).",
            code="data.invalid_identifier",
            hint="Rename it in the config or in the source's header; nothing was sent to the database.",
            name=str(name), what=what,
        )
    return name


def validate_identifiers(names: Iterable[object], what: str = "column") -> list[str]:
    """Validate every name and refuse names that differ only by case (MariaDB/SQLite fold them)."""
    out = [validate_identifier(n, what) for n in names]
    seen: dict[str, str] = {}
    for n in out:
        low = n.lower()
        if low in seen:
            raise DataError(
                f"Duplicate {what} names {seen[low]!r} and {n!r} (they differ only by case, "
                "which several databases treat as the same name).",
                code="data.invalid_identifier", hint=f"Rename one of the {what}s.", name=n,
            )
        seen[low] = n
    return out


def quote_identifier(dialect_or_bind, name: str) -> str:
    """Validate ``name`` and quote it for the dialect (for the few raw DBAPI statements: COPY, executemany)."""
    validate_identifier(name)
    dialect = getattr(dialect_or_bind, "dialect", dialect_or_bind)
    return dialect.identifier_preparer.quote(sa.sql.quoted_name(name, quote=True))


def table_clause(name: str, columns: Iterable[str] = (), schema: str | None = None) -> sa.TableClause:
    """A lightweight ``sqlalchemy.table`` over validated, always-quoted names."""
    validate_identifier(name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema name")
    cols = [sa.column(sa.sql.quoted_name(c, quote=True)) for c in validate_identifiers(columns)]
    return sa.table(sa.sql.quoted_name(name, quote=True), *cols,
                    schema=None if schema is None else sa.sql.quoted_name(schema, quote=True))


def reflect_table(bind: Engine | Connection, name: str, schema: str | None = None) -> sa.Table | None:
    """Reflect one table after validating its name; ``None`` when it does not exist."""
    validate_identifier(name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema name")
    insp = sa.inspect(bind)
    if not insp.has_table(name, schema=schema):
        return None
    md = sa.MetaData()
    return sa.Table(sa.sql.quoted_name(name, quote=True), md, autoload_with=bind, schema=schema)


def require_columns(table: sa.Table, columns: Iterable[str], what: str = "column") -> list[str]:
    """Validate ``columns`` and check each exists in the reflected ``table``, naming the missing ones."""
    cols = validate_identifiers(columns, what)
    have = {c.name.lower(): c.name for c in table.columns}
    missing = [c for c in cols if c.lower() not in have]
    if missing:
        raise DataError(
            f"Table {table.name!r} has no {what} {', '.join(repr(m) for m in missing)}; "
            f"it has {', '.join(sorted(c.name for c in table.columns))}.",
            code="data.unknown_column", hint="Fix the name in the config.", columns=missing,
        )
    return [have[c.lower()] for c in cols]


_FORBIDDEN = (("{{", "template braces"), ("{%", "template tags"), ("${", "shell-style substitution"),
              ("%(", "pyformat placeholders"), ("%s", "format placeholders"), ("?", "positional placeholders"))


def bind_names(sql: str, what: str = "SQL text") -> list[str]:
    """The ``:name`` bind parameters of one SQL statement (see :func:`prepare_bound_sql`)."""
    return prepare_bound_sql(sql, what)[1]


def prepare_bound_sql(sql: str, what: str = "SQL text") -> tuple[str, list[str]]:
    """The ``:name`` bind parameters of one SQL statement, in order of first use; refuses anything else.

    The text is scanned outside string literals, quoted identifiers and comments. It must be
    one ``SELECT``/``WITH`` statement; template syntax, positional or format placeholders and
    a second statement are refused, so values can only travel as named bind parameters.

    Returns the text for ``sqlalchemy.text`` (colons inside literals and comments escaped,
    so SQLAlchemy sees exactly the parameters found here) and the parameter names.

    >>> prepare_bound_sql("SELECT * FROM t WHERE ts >= :window_start AND x::int > 0 -- at 10:30")[1]
    ['window_start']
    """
    def refuse(msg: str) -> DataError:
        return DataError(f"{what} refused: {msg}.", code="data.invalid_transform",
                         hint="Transforms are one SELECT whose values come only from :name bind parameters.")

    names: list[str] = []
    code_chars: list[str] = []
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise refuse("an unterminated quote")
            code_chars.append(" ")
            out.append(sql[i:j + 1].replace(":", "\\:"))
            i = j + 1
            continue
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            out.append(sql[i:n if j < 0 else j].replace(":", "\\:"))
            i = n if j < 0 else j
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise refuse("an unterminated comment")
            out.append(sql[i:j + 2].replace(":", "\\:"))
            i = j + 2
            code_chars.append(" ")
            continue
        if ch == ":":
            if sql.startswith("::", i):
                code_chars.append("::")
                out.append("::")
                i += 2
                m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", sql[i:])
                if m:
                    code_chars.append(m.group(0))
                    out.append(m.group(0))
                    i += m.end()
                continue
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", sql[i + 1:])
            if not m:
                raise refuse(f"a ':' that is not a bind parameter at offset {i}")
            if m.group(0) not in names:
                names.append(m.group(0))
            code_chars.append(" ")
            out.append(sql[i:i + 1 + m.end()])
            i += 1 + m.end()
            continue
        code_chars.append(ch)
        out.append(ch)
        i += 1
    code = "".join(code_chars)
    for token, label in _FORBIDDEN:
        if token in code:
            raise refuse(f"it contains {label} ({token!r})")
    body = code.strip().rstrip(";").strip()
    if ";" in body:
        raise refuse("it holds more than one statement")
    if not re.match(r"(?is)^\(*\s*(select|with)\b", body):
        raise refuse("it is not a SELECT or WITH query")
    return "".join(out), names
