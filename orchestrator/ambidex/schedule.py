"""schedule: the crontab lines ambidex installs for pipelines.

    >>> spec = spec_for(ws, "config/churn.yaml", "0 2 * * *", environ=os.environ)   # doctest: +SKIP
    >>> change = update_crontab(lambda text: install(text, cron_line(spec), spec.tag))  # doctest: +SKIP

Pure functions (the line, missed times, editing crontab text) take data and return data;
:func:`spec_for`, :func:`read_crontab`, :func:`write_crontab`, :func:`update_crontab` and
:func:`check_missed` are the impure layer. Cron expressions and their times live in
:mod:`ambidex.cron` (re-exported here).

ambidex owns exactly the crontab lines that end with ``# ambidex:<project>:<pipeline>`` and are
not commented out; every other line, comment and variable stays byte for byte.
"""
from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .cron import CronExpr, iter_runs, local_zone, next_runs, parse_cron
from .errors import AmbidexError, UsageError

__all__ = [
    "CronExpr", "CronSpec", "CronLine", "CrontabChange", "SCHEDULE_ENV", "parse_cron", "next_runs",
    "iter_runs", "local_zone", "missed_runs", "cron_line", "make_tag", "install", "remove", "list_lines",
    "diff_text", "spec_for", "secret_env_names", "ambidex_command", "read_crontab", "write_crontab",
    "update_crontab", "check_missed",
]

SCHEDULE_ENV = "AMBIDEX_SCHEDULE"  # the cron line passes its own expression, so a run can spot missed times
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


def missed_runs(expr: str | CronExpr, last_run_started: dt.datetime | None, now: dt.datetime, *,
                grace: dt.timedelta = dt.timedelta(minutes=30), tz: dt.tzinfo | None = None,
                limit: int = 1000) -> list[dt.datetime]:
    """Scheduled instants after the last run's start and at least ``grace`` before ``now``: runs that never happened.

    ``grace`` leaves out the slot of a run starting now (cron starts it a little after its minute).
    No last run means nothing can be called missed. At most ``limit`` instants, oldest first.
    """
    if last_run_started is None:
        return []
    out = []
    for at in iter_runs(expr, last_run_started, tz=tz):
        if at > now - grace or len(out) >= limit:
            break
        out.append(at)
    return out


# ---------------------------------------------------------------- the crontab line

@dataclass(frozen=True)
class CronSpec:
    """Everything one crontab line needs; every path absolute, ``env`` holds no secret values."""

    expr: str
    project: str
    pipeline: str
    root: Path
    pipeline_path: Path
    command: tuple[str, ...]          # the ambidex executable, e.g. ("/srv/venv/bin/ambidex",)
    log_file: Path
    env: Mapping[str, str] = field(default_factory=dict)
    env_file: Path | None = None      # sourced first, with auto-export: where secrets live

    @property
    def tag(self) -> str:
        return make_tag(self.project, self.pipeline)


def make_tag(project: str, pipeline: str) -> str:
    """The comment that marks ambidex's line for one pipeline: ``ambidex:<project>:<pipeline>``."""
    return f"ambidex:{project}:{pipeline}"


def secret_env_names(project, environ: Mapping[str, str]) -> list[str]:
    """Variables the cron job needs whose values are secrets (registry URLs): never written into the line."""
    names = []
    if getattr(project, "registry_url_env", None):
        names.append(project.registry_url_env)
    if environ.get("AMBIDEX_REGISTRY_URL"):
        names.append("AMBIDEX_REGISTRY_URL")
    return names


def ambidex_command() -> tuple[str, ...]:
    """The absolute command that runs this ambidex: the venv's ``ambidex`` script, else ``python -m``."""
    script = Path(sysconfig.get_path("scripts")) / "ambidex"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script.absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "ambidex.cli.main")


def _check_env_file(env_file: Path, names: list[str]) -> Path:
    path = Path(env_file).expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"Environment file {path} does not exist.", code="usage.env_file",
                         hint=f"Create it with 'export {names[0] if names else 'NAME'}=...' lines and "
                              f"chmod 600 {path}.")
    mode = path.stat().st_mode
    if mode & 0o022 or mode & 0o004:
        raise UsageError(f"Environment file {path} is readable or writable by other users "
                         f"(mode {mode & 0o777:o}); cron would run whatever it contains.",
                         code="usage.env_file", hint=f"chmod 600 {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    missing = [n for n in names if not re.search(rf"^\s*(export\s+)?{re.escape(n)}=", text, re.M)]
    if missing:
        raise UsageError(f"Environment file {path} does not set {', '.join(missing)}.", code="usage.env_file",
                         hint=f"Add a line: export {missing[0]}=<SQLAlchemy URL>")
    return path


def spec_for(ws, pipeline_path: str | os.PathLike, expr: str, *, environ: Mapping[str, str],
             env_file: str | os.PathLike | None = None, command: Sequence[str] | None = None) -> CronSpec:
    """The CronSpec of a validated pipeline of workspace ``ws``; refuses to schedule secrets without ``env_file``.

    The line gets PATH (this venv's bin, then the system's), LANG=C.UTF-8 and AMBIDEX_R_LIBS when set
    here; a registry URL held in an environment variable must come from ``env_file`` (mode 600).
    """
    from .config import load_pipeline

    parse_cron(expr)
    pipeline = load_pipeline(Path(pipeline_path), ws.root)
    names = secret_env_names(ws.settings, environ)
    if names and env_file is None:
        raise UsageError(
            f"This project reads its registry URL from ${names[0]}; ambidex will not write that secret "
            "into the crontab, where any process of yours can read it.", code="usage.secret_env",
            hint=f"Put 'export {names[0]}=...' in a file only you can read (chmod 600 ~/.ambidex.env) "
                 "and pass --env-file ~/.ambidex.env; the line will source it.")
    env = {"PATH": f"{Path(sys.executable).parent.absolute()}:{BASE_PATH}", "LANG": "C.UTF-8"}
    if environ.get("AMBIDEX_R_LIBS"):
        env["AMBIDEX_R_LIBS"] = str(Path(environ["AMBIDEX_R_LIBS"]).absolute())
    root = Path(ws.root).absolute()
    return CronSpec(expr=expr.strip(), project=ws.settings.name, pipeline=pipeline.name, root=root,
                    pipeline_path=Path(pipeline.source).absolute(), command=tuple(command or ambidex_command()),
                    log_file=Path(ws.state_dir).absolute() / "logs" / f"{pipeline.name}.log", env=env,
                    env_file=_check_env_file(Path(env_file), names) if env_file is not None else None)


def _q(value: str | Path) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise UsageError(f"{text!r} contains a line break, which a crontab line cannot hold.",
                         code="usage.invalid_path", hint="Rename the file or folder.")
    return shlex.quote(text)


def cron_line(spec: CronSpec) -> str:
    """One crontab line (no newline) running the pipeline from its root, logging to ``spec.log_file``.

    There is deliberately no ``/usr/bin/flock -n`` wrapper: ``ambidex run`` takes the pipeline's
    flock itself, exits 75 and names the holder; an outer ``flock -n`` exits 1 without a word, and
    on the same file it would make the inner lock refuse every run (the child's own open counts as
    a second holder).
    """
    parse_cron(spec.expr)
    for p in (spec.root, spec.pipeline_path, spec.log_file, *([spec.env_file] if spec.env_file else [])):
        if not Path(p).is_absolute():
            raise UsageError(f"{p} is not an absolute path; cron starts in $HOME.", code="usage.invalid_path")
    parts = [f"cd {_q(spec.root)}"]
    if spec.env_file is not None:
        parts.append(f"set -a && . {_q(spec.env_file)} && set +a")
    env = {**spec.env, SCHEDULE_ENV: spec.expr}
    assigns = " ".join(f"{k}={_q(v)}" for k, v in env.items())
    run = " ".join(_q(c) for c in spec.command)
    parts.append(f"{assigns} {run} run {_q(spec.pipeline_path)} >> {_q(spec.log_file)} 2>&1")
    # cron ends the command at an unescaped '%' (the rest becomes stdin) and turns a doubled backslash
    # into one: escape both so paths reach the shell unchanged.
    command = " && ".join(parts).replace("\\", "\\\\").replace("%", "\\%")
    return f"{spec.expr} {command} # {spec.tag}"


# ---------------------------------------------------------------- editing crontab text

@dataclass(frozen=True)
class CronLine:
    """One of ambidex's lines found in a crontab."""

    project: str
    pipeline: str
    expr: str
    line_no: int
    text: str

    @property
    def tag(self) -> str:
        return make_tag(self.project, self.pipeline)


_TAG_RE = re.compile(r" # ambidex:([a-z][a-z0-9_-]{0,62}):([a-z][a-z0-9_-]{0,62})$")


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _tag_of(line: str) -> str | None:
    body = line.rstrip()
    if body.lstrip().startswith("#"):  # a line the user commented out is theirs
        return None
    m = _TAG_RE.search(body)
    return make_tag(*m.groups()) if m else None


def _ensure_newline(text: str) -> str:
    # cron ignores a last line without its newline
    return text if not text or text.endswith("\n") else text + "\n"


def install(crontab_text: str, line: str, tag: str) -> str:
    """The crontab with ``line`` as the only line tagged ``tag`` (replacing one in place); other lines unchanged."""
    if _tag_of(line) != tag:
        raise ValueError(f"line does not end with the tag '# {tag}'")
    out, placed = [], False
    for old in _lines(crontab_text):
        if _tag_of(old) == tag:
            if not placed:
                out.append(line + "\n")
                placed = True
            continue
        out.append(old)
    text = "".join(out)
    return _ensure_newline(text) if placed else _ensure_newline(text) + line + "\n"


def remove(crontab_text: str, tag: str) -> str:
    """The crontab without the lines tagged ``tag``; every other line byte for byte."""
    return "".join(old for old in _lines(crontab_text) if _tag_of(old) != tag)


def list_lines(crontab_text: str) -> list[CronLine]:
    """ambidex's lines in a crontab (commented-out lines are not listed)."""
    found = []
    for i, old in enumerate(_lines(crontab_text), start=1):
        tag = _tag_of(old)
        if tag is None:
            continue
        fields = old.split()
        expr = fields[0] if fields[0].startswith("@") else " ".join(fields[:5])
        _, project, pipeline = tag.split(":")
        found.append(CronLine(project, pipeline, expr, i, old.rstrip("\n")))
    return found


def diff_text(before: str, after: str) -> str:
    """A unified diff of two crontab texts ('' when equal)."""
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        "crontab (current)", "crontab (new)"))


# ---------------------------------------------------------------- the real crontab

Runner = Callable[[Sequence[str], "str | None"], subprocess.CompletedProcess]


def _run_crontab(args: Sequence[str], stdin: str | None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["crontab", *args], input=stdin, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise AmbidexError("The 'crontab' command is not installed.", code="schedule.no_crontab",
                           hint="Install cron: sudo apt-get install cron") from None


def read_crontab(runner: Runner | None = None) -> str:
    """This user's crontab text (`crontab -l`); '' when there is none."""
    proc = (runner or _run_crontab)(["-l"], None)
    if proc.returncode == 0:
        return proc.stdout
    if proc.returncode == 1 and "no crontab for" in (proc.stderr or ""):
        return ""
    raise AmbidexError(f"'crontab -l' failed (exit {proc.returncode}): {(proc.stderr or '').strip()}",
                       code="schedule.crontab_failed",
                       hint="Check that this user may use cron (/etc/cron.allow, /etc/cron.deny).")


def write_crontab(text: str, runner: Runner | None = None) -> None:
    """Replace this user's crontab with ``text`` (`crontab -`)."""
    proc = (runner or _run_crontab)(["-"], _ensure_newline(text))
    if proc.returncode != 0:
        raise AmbidexError(f"'crontab -' refused the new crontab (exit {proc.returncode}): "
                           f"{(proc.stderr or '').strip()}", code="schedule.crontab_failed",
                           hint="Nothing was changed. Run 'ambidex schedule install --dry-run' to see the line.")


@dataclass(frozen=True)
class CrontabChange:
    """What an edit did (or, in a dry run, would do) to the crontab."""

    before: str
    after: str
    dry_run: bool

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def diff(self) -> str:
        return diff_text(self.before, self.after)


def update_crontab(edit: Callable[[str], str], *, dry_run: bool = False, runner: Runner | None = None) -> CrontabChange:
    """Apply ``edit`` to the crontab; refuse if someone changed it meanwhile; write nothing in a dry run."""
    before = read_crontab(runner)
    after = edit(before)
    change = CrontabChange(before, after, dry_run)
    if dry_run or not change.changed:
        return change
    if read_crontab(runner) != before:
        raise AmbidexError("The crontab changed while ambidex was editing it; nothing was written.",
                           code="schedule.crontab_changed", hint="Run the command again.")
    write_crontab(after, runner)
    return change


def check_missed(ws, pipeline_name: str, expr: str, now: dt.datetime, *,
                 grace: dt.timedelta = dt.timedelta(minutes=30), exclude_run_id: str | None = None,
                 tz: dt.tzinfo | None = None) -> list[dt.datetime]:
    """Missed scheduled times of a pipeline since its last run; records one ``schedule.missed`` event if any.

    Pass the current run as ``exclude_run_id`` when it is already recorded. The caller notifies.
    """
    reg = ws.registry()
    runs = [r for r in reg.list_runs(pipeline=pipeline_name, limit=5) if r.get("id") != exclude_run_id]
    last = runs[0] if runs else None
    started = last.get("started_at") if last else None
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=dt.timezone.utc)  # the registry stores UTC
    missed = missed_runs(expr, started, now, grace=grace, tz=tz)
    if missed:
        reg.record_event(
            "schedule.missed", entity_type="pipeline", entity_id=pipeline_name,
            payload={"cron": expr, "missed": [m.isoformat().replace("+00:00", "Z") for m in missed],
                     "last_run_id": last.get("id"), "last_run_started": started.isoformat().replace("+00:00", "Z")},
            reason=f"{len(missed)} scheduled run(s) of '{pipeline_name}' ({expr}) did not happen since the "
                   f"last run at {started:%Y-%m-%d %H:%M}Z")
    return missed
