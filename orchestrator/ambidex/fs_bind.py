"""fs_bind: bound parameters of transforms and SQL sources (``:window_start``, ``:window_end`` and declared ones)."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from ambidex.errors import DataError
from ambidex.fs_spec import Window
from ambidex.fstables import MartTimestamp


KNOWN_PARAMS = ("window_start", "window_end")


def check_transform_sql(sql: str, declared: dict | list | tuple = (), *, what: str = "Transform") -> list[str]:
    """Parse the ``:name`` parameters of a transform and refuse any that is neither a window bound nor declared.

    >>> check_transform_sql("SELECT * FROM churn WHERE signup_month >= :window_start AND tenure > :min_tenure",
    ...                     declared={"min_tenure": 3})
    ['window_start', 'min_tenure']
    """
    from ambidex.sqlident import bind_names

    names = bind_names(sql, what)
    unknown = [n for n in names if n not in KNOWN_PARAMS and n not in declared]
    if unknown:
        raise DataError(f"{what} uses undeclared parameters {', '.join(':' + n for n in unknown)}.",
                        code="data.invalid_transform",
                        hint="Declare them under the transform's params, or use :window_start/:window_end.",
                        parameters=unknown)
    return names


def _bind_values(names: list[str], window: Window | None, params: dict | None) -> dict:
    params = dict(params or {})
    out = {}
    for n in names:
        if n in KNOWN_PARAMS:
            if window is None:
                raise DataError(f"The query uses :{n} but no window was given.", code="data.window_invalid",
                                hint="Pass a window (START/END).")
            out[n] = window.start if n == "window_start" else window.end
        else:
            out[n] = params[n]
    return out


def _typed_text(sql: str, names: list[str], dialect, values: dict) -> sa.TextClause:
    from ambidex.sqlident import prepare_bound_sql

    sql, names = prepare_bound_sql(sql)
    binds = []
    for n in names:
        v = values[n]
        binds.append(sa.bindparam(n, type_=MartTimestamp()) if isinstance(v, dt.datetime) else sa.bindparam(n))
    return sa.text(sql).bindparams(*binds)
