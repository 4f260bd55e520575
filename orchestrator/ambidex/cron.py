"""cron: Vixie cron expressions parsed, and the instants they name (pure: no clock, no files but /etc/localtime).

    >>> sorted(parse_cron("*/20 2 * * mon-fri").minutes)
    [0, 20, 40]

Semantics follow Vixie cron (Debian's ``cron``): five fields, names for months and days,
``*``, ranges, ``/steps`` after ``*`` or a range (``5/10`` is refused, as cron refuses it),
lists; 0 and 7 are Sunday; aliases ``@hourly`` ... ``@yearly``. When both day-of-month and
day-of-week are restricted a day matches if *either* does; a field counts as unrestricted when
its text starts with ``*`` (so ``*/2`` too, exactly as in cron's source).

Times are wall-clock times in the machine's local time zone (``/etc/localtime``, what the cron
daemon uses; ``$TZ`` of the installing shell is ignored); results are UTC datetimes. Across DST
(simplified from cron): a time skipped by the spring-forward gap happens once at the end of the
gap; a repeated autumn time happens once, at its first occurrence.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterator
from zoneinfo import ZoneInfo

from .errors import UsageError

__all__ = ["CronExpr", "ALIASES", "parse_cron", "iter_runs", "next_runs", "local_zone"]

ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, low, high, names whose index + offset is the value)
_FIELDS = [("minute", 0, 59, None, 0), ("hour", 0, 23, None, 0), ("day-of-month", 1, 31, None, 0),
           ("month", 1, 12, _MONTHS, 1), ("day-of-week", 0, 7, _DAYS, 0)]
_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_SEARCH_DAYS = 366 * 9  # the longest wait between two matching days: Feb 29, 2096 -> 2104
_CRON_HINT = ("Write five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *' "
              "(02:00 every day), or an alias: " + ", ".join(ALIASES) + ".")


# ---------------------------------------------------------------- cron expressions

@dataclass(frozen=True)
class CronExpr:
    """A parsed cron expression: the allowed values of each field (day-of-week 0-6, Sunday 0)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_star: bool
    weekdays_star: bool

    def matches_day(self, day: dt.date) -> bool:
        """Vixie cron's day rule: both day fields restricted -> either may match; otherwise both must."""
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        return (dom and dow) if (self.days_star or self.weekdays_star) else (dom or dow)


def _bad(text: str, problem: str) -> UsageError:
    return UsageError(f"Cron expression {text!r}: {problem}.", code="usage.invalid_cron", hint=_CRON_HINT)


def _value(token: str, text: str, name: str, low: int, high: int, names, offset: int) -> int:
    if names and token.lower() in names:
        return names.index(token.lower()) + offset
    if not token.isdigit():
        allowed = f"numbers {low}-{high}" + (f" or names {names[0]}-{names[-1]}" if names else "")
        raise _bad(text, f"{name} field has {token!r}, which is not a number; use {allowed}")
    value = int(token)
    if not low <= value <= high:
        raise _bad(text, f"{name} field value {value} is out of range {low}-{high}")
    return value


def _field(part: str, text: str, name: str, low: int, high: int, names, offset: int) -> set[int]:
    values: set[int] = set()
    for item in part.split(","):
        if not item:
            raise _bad(text, f"{name} field {part!r} has an empty list item")
        rng, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad(text, f"{name} field step {step_text!r} must be a whole number of 1 or more")
            step = int(step_text)
        if rng == "*":
            first, last = low, high
        elif "-" in rng:
            a, b = rng.split("-", 1)
            first = _value(a, text, name, low, high, names, offset)
            last = _value(b, text, name, low, high, names, offset)
            if first > last:
                raise _bad(text, f"{name} field range {rng!r} goes backwards; write {a}-{high},{low}-{b}")
        else:
            first = last = _value(rng, text, name, low, high, names, offset)
            if slash:  # Vixie cron rejects "5/10": a step needs '*' or a range
                raise _bad(text, f"{name} field {item!r} puts a step after a single value; "
                                 f"write {rng}-{high}/{step_text}")
        values.update(range(first, last + 1, step))
    return values


def parse_cron(text: str) -> CronExpr:
    """Parse a 5-field cron expression or alias; UsageError naming the field that is wrong.

    >>> sorted(parse_cron("*/20 2 * * mon-fri").minutes)
    [0, 20, 40]
    """
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "it is empty")
    src = text.strip()
    if src.startswith("@"):
        if src.lower() not in ALIASES:
            raise _bad(text, f"unknown alias {src!r}" + ("; @reboot has no times to schedule"
                                                         if src.lower() == "@reboot" else ""))
        src = ALIASES[src.lower()]
    parts = src.split()
    if len(parts) != 5:
        extra = "; ambidex takes no seconds or year field" if len(parts) in (6, 7) else ""
        raise _bad(text, f"it has {len(parts)} field(s); cron needs 5: minute hour day-of-month month "
                         f"day-of-week{extra}")
    sets = [_field(p, text, *spec) for p, spec in zip(parts, _FIELDS)]
    weekdays = {d % 7 for d in sets[4]}
    expr = CronExpr(text.strip(), *(frozenset(s) for s in sets[:4]), frozenset(weekdays),
                    parts[2].startswith("*"), parts[4].startswith("*"))
    if expr.weekdays_star and not any(d <= _MAX_DAYS[m] for m in expr.months for d in expr.days):
        raise _bad(text, f"day-of-month field {parts[2]!r} never occurs in month field {parts[3]!r}, "
                         "so it would never run")
    return expr


def local_zone() -> dt.tzinfo:
    """The time zone the cron daemon uses: /etc/localtime (UTC if absent)."""
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return dt.timezone.utc


def _instant(wall: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The UTC instant of a local wall time; a time inside a DST gap maps to the end of the gap."""
    aware = wall.replace(tzinfo=tz, fold=0)
    utc = aware.astimezone(dt.timezone.utc)
    if utc.astimezone(tz).replace(tzinfo=None) == wall:
        return utc
    probe = wall
    for _ in range(24 * 60):  # walk to the first existing minute after the gap
        probe += dt.timedelta(minutes=1)
        u = probe.replace(tzinfo=tz).astimezone(dt.timezone.utc)
        if u.astimezone(tz).replace(tzinfo=None) == probe:
            return u
    return utc


def iter_runs(expr: str | CronExpr, after: dt.datetime, *, tz: dt.tzinfo | None = None) -> Iterator[dt.datetime]:
    """Every scheduled instant strictly after ``after`` (aware), as UTC datetimes, in order."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware (ambidex compares no naive times)")
    cron = expr if isinstance(expr, CronExpr) else parse_cron(expr)
    tz = tz or local_zone()
    # A DST gap can move a time up to a few hours later: start the wall-clock walk a day early.
    day = after.astimezone(tz).date() - dt.timedelta(days=1)
    hours, minutes = sorted(cron.hours), sorted(cron.minutes)
    last, idle = None, 0
    while idle < _SEARCH_DAYS and day < dt.date.max - dt.timedelta(days=1):  # parse_cron refuses never-matching days
        idle += 1
        if cron.matches_day(day):
            for h in hours:
                for m in minutes:
                    at = _instant(dt.datetime(day.year, day.month, day.day, h, m), tz)
                    if at > after and at != last:
                        last, idle = at, 0
                        yield at
        day += dt.timedelta(days=1)


def next_runs(expr: str | CronExpr, after: dt.datetime, n: int = 3, *, tz: dt.tzinfo | None = None) -> list[dt.datetime]:
    """The next ``n`` scheduled instants after ``after`` (UTC datetimes; fields read in ``tz``, default local).

    >>> next_runs("0 2 * * *", dt.datetime(2026, 1, 1, 3, tzinfo=dt.timezone.utc), 2, tz=dt.timezone.utc)
    [datetime.datetime(2026, 1, 2, 2, 0, tzinfo=datetime.timezone.utc), datetime.datetime(2026, 1, 3, 2, 0, tzinfo=datetime.timezone.utc)]
    """
    out = []
    for at in iter_runs(expr, after, tz=tz):
        if len(out) >= n:
            break
        out.append(at)
    return out
