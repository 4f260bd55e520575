"""Schedules: cron parsing and times, the crontab line, editing only our own lines, missed runs, the CLI.

The real user crontab is never touched: every read and write goes through a fake runner.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from ambidex.cli.schedule import schedule
from ambidex.errors import AmbidexError, UsageError
from ambidex.schedule import (
    CronSpec, check_missed, cron_line, install, list_lines, make_tag, missed_runs, next_runs, parse_cron,
    read_crontab, remove, spec_for, update_crontab, write_crontab,
)
from tests.helpers import write

UTC = dt.timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def at(*args, tz=UTC) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz)


class FakeCrontab:
    """Stands in for the `crontab` command: keeps the text in memory and counts writes."""

    def __init__(self, text: str | None = None):
        self.text, self.writes, self.on_read = text, 0, None

    def __call__(self, args, stdin):
        if list(args) == ["-l"]:
            out = self.text
            if self.on_read:
                self.on_read(self)
            if out is None:
                return subprocess.CompletedProcess(["crontab", "-l"], 1, "", "no crontab for tester\n")
            return subprocess.CompletedProcess(["crontab", "-l"], 0, out, "")
        assert list(args) == ["-"]
        self.text, self.writes = stdin, self.writes + 1
        return subprocess.CompletedProcess(["crontab", "-"], 0, "", "")


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize("expr, field, words", [
    ("61 2 * * *", "minute", "out of range 0-59"),
    ("0 24 * * *", "hour", "out of range 0-23"),
    ("0 2 0 * *", "day-of-month", "out of range 1-31"),
    ("0 2 * 13 *", "month", "out of range 1-12"),
    ("0 2 * * 8", "day-of-week", "out of range 0-7"),
    ("0 2 * foo *", "month", "jan-dec"),
    ("0 2 * * monday", "day-of-week", "sun-sat"),
    ("*/0 2 * * *", "minute", "step"),
    ("5/10 2 * * *", "minute", "write 5-59/10"),
    ("0 22-2 * * *", "hour", "goes backwards"),
    ("0 1,,2 * * *", "hour", "empty list item"),
    ("0 0 30 2 *", "day-of-month", "never"),
    ("0 0 31 4,6,9,11 *", "day-of-month", "never"),
])
def test_parse_errors_name_the_field(expr, field, words):
    with pytest.raises(UsageError) as info:
        parse_cron(expr)
    assert info.value.code == "usage.invalid_cron" and info.value.exit_code == 2
    assert f"{field} field" in info.value.message and words in info.value.message
    assert expr in info.value.message and "minute hour day-of-month month day-of-week" in info.value.hint


@pytest.mark.parametrize("expr, words", [
    ("", "empty"), ("0 2 * *", "4 field"), ("0 0 2 * * *", "no seconds or year"), ("@reboot", "no times"),
    ("@sometimes", "unknown alias"),
])
def test_parse_errors_of_the_whole_expression(expr, words):
    with pytest.raises(UsageError, match=words):
        parse_cron(expr)


def test_parse_forms():
    e = parse_cron("*/15 9-17/4 1,15 JAN-mar mon-fri")
    assert sorted(e.minutes) == [0, 15, 30, 45] and sorted(e.hours) == [9, 13, 17]
    assert sorted(e.days) == [1, 15] and sorted(e.months) == [1, 2, 3] and sorted(e.weekdays) == [1, 2, 3, 4, 5]
    assert parse_cron("0 0 * * 7").weekdays == {0} == parse_cron("0 0 * * sun").weekdays
    assert parse_cron("0 0 * * 5-7").weekdays == {5, 6, 0}
    daily, explicit = parse_cron("@daily"), parse_cron("0 0 * * *")
    assert daily.text == "@daily" and {**daily.__dict__, "text": ""} == {**explicit.__dict__, "text": ""}
    assert parse_cron("0 0 29 2 *").days == {29}  # leap days exist


# ---------------------------------------------------------------- times

@pytest.mark.parametrize("expr, after, expected", [
    ("0 2 * * *", at(2026, 1, 1, 2, 0), [at(2026, 1, 2, 2), at(2026, 1, 3, 2), at(2026, 1, 4, 2)]),
    ("@hourly", at(2026, 1, 1, 23, 30), [at(2026, 1, 2, 0), at(2026, 1, 2, 1), at(2026, 1, 2, 2)]),
    ("@weekly", at(2026, 1, 1), [at(2026, 1, 4), at(2026, 1, 11), at(2026, 1, 18)]),
    ("@monthly", at(2026, 12, 15), [at(2027, 1, 1), at(2027, 2, 1), at(2027, 3, 1)]),
    # both day fields restricted: Friday OR the 13th (Vixie's OR rule)
    ("0 0 13 * fri", at(2026, 1, 1), [at(2026, 1, 2), at(2026, 1, 9), at(2026, 1, 13)]),
    # '*/2' starts with '*', so cron treats day-of-month as unrestricted: odd days AND Mondays
    ("0 0 */2 * mon", at(2026, 1, 1), [at(2026, 1, 5), at(2026, 1, 19), at(2026, 2, 9)]),
    ("0 0 * * mon", at(2026, 1, 1), [at(2026, 1, 5), at(2026, 1, 12), at(2026, 1, 19)]),
    # month ends: the 31st skips 30-day months and February; Feb 29 waits for leap years
    ("0 0 31 * *", at(2026, 1, 31, 1), [at(2026, 3, 31), at(2026, 5, 31), at(2026, 7, 31)]),
    ("0 0 29 2 *", at(2026, 1, 1), [at(2028, 2, 29), at(2032, 2, 29), at(2036, 2, 29)]),
    ("59 23 31 12 *", at(2026, 12, 31, 23, 59), [at(2027, 12, 31, 23, 59), at(2028, 12, 31, 23, 59),
                                                 at(2029, 12, 31, 23, 59)]),
])
def test_next_runs(expr, after, expected):
    assert next_runs(expr, after, 3, tz=UTC) == expected


def test_next_runs_read_fields_in_local_time_across_dst():
    # Paris springs forward at 02:00 on 2026-03-29: 02:30 does not exist and runs at the end of the gap
    assert next_runs("30 2 * * *", at(2026, 3, 28), 3, tz=PARIS) == [
        at(2026, 3, 28, 2, 30, tz=PARIS), at(2026, 3, 29, 3, 0, tz=PARIS), at(2026, 3, 30, 2, 30, tz=PARIS)]
    # and falls back on 2026-10-25: 02:30 happens twice, the job once (first occurrence, CEST = UTC+2)
    runs = next_runs("30 2 * * *", at(2026, 10, 24, 12), 2, tz=PARIS)
    assert runs == [at(2026, 10, 25, 0, 30), at(2026, 10, 26, 1, 30)]
    assert all(r.tzinfo == UTC for r in runs)


def test_next_runs_refuses_naive_times():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_runs("0 2 * * *", dt.datetime(2026, 1, 1))


def test_missed_runs_across_a_missed_night():
    last = at(2026, 1, 1, 2, 0, 4)  # the run of Jan 1 started a few seconds after its minute
    now = at(2026, 1, 3, 2, 0, 3)   # the run of Jan 3 is starting; Jan 2 never ran
    assert missed_runs("0 2 * * *", last, now, tz=UTC) == [at(2026, 1, 2, 2)]
    assert missed_runs("0 2 * * *", last, at(2026, 1, 2, 2, 0, 5), tz=UTC) == []  # on time: nothing missed
    assert missed_runs("0 2 * * *", last, at(2026, 1, 5, 3), tz=UTC) == [
        at(2026, 1, 2, 2), at(2026, 1, 3, 2), at(2026, 1, 4, 2), at(2026, 1, 5, 2)]
    assert missed_runs("0 2 * * *", None, now, tz=UTC) == []  # never ran: nothing to compare with
    assert len(missed_runs("* * * * *", last, at(2027, 1, 1), tz=UTC, limit=50)) == 50


def test_check_missed_records_one_event(tmp_path):
    from ambidex.artifacts import ArtifactStore
    from ambidex.db import connect, migrate
    from ambidex.registry import Registry

    times = iter([at(2026, 1, 1, 2, 0, 4), at(2026, 1, 3, 2, 0, 2)])
    engine = connect(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate(engine)
    clock = {"now": None}
    reg = Registry(engine, ArtifactStore(tmp_path / "artifacts"), clock=lambda: clock["now"] or at(2026, 1, 3, 2, 0, 5))
    ws = SimpleNamespace(registry=lambda: reg)
    try:
        clock["now"] = next(times)
        reg.start_run(pipeline="churn")
        clock["now"] = next(times)
        current = reg.start_run(pipeline="churn")  # the run that is now checking
        missed = check_missed(ws, "churn", "0 2 * * *", at(2026, 1, 3, 2, 0, 3), exclude_run_id=current, tz=UTC)
        assert missed == [at(2026, 1, 2, 2)]
        events = reg.list_events(kind="schedule.missed")
        assert len(events) == 1 and events[0]["entity_id"] == "churn"
        assert events[0]["payload"]["missed"] == ["2026-01-02T02:00:00Z"] and events[0]["payload"]["cron"] == "0 2 * * *"
        assert "did not happen" in events[0]["reason"]
        assert check_missed(ws, "churn", "0 2 * * *", at(2026, 1, 3, 2, 0, 3), tz=UTC) == []  # counting itself
        assert check_missed(ws, "other", "0 2 * * *", at(2026, 1, 3, 2, 0, 3), tz=UTC) == []  # never ran
        assert len(reg.list_events(kind="schedule.missed")) == 1
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the line

def _spec(tmp_path, **kw) -> CronSpec:
    root = tmp_path / "my proj %x"
    base = dict(expr="0 2 * * *", project="shop", pipeline="churn", root=root,
                pipeline_path=root / "config" / "churn.yaml", command=("/opt/venv/bin/ambidex",),
                log_file=root / ".ambidex" / "logs" / "churn.log",
                env={"PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
    base.update(kw)
    return CronSpec(**base)


def cron_command(line: str) -> str:
    """What cron hands to /bin/sh for ``line`` (Vixie's do_command: '\\%' -> '%', '\\\\' -> '\\', '%' ends it)."""
    fields = line.split(None, 1 if line.startswith("@") else 5)
    out, escaped = [], False
    for ch in fields[-1]:
        if escaped:
            if ch in "%\\":
                out[-1] = ch
            else:
                out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "%":
            break
        else:
            out.append(ch)
    return "".join(out)


def test_the_line_has_absolute_paths_the_root_the_log_and_its_tag(tmp_path):
    line = cron_line(_spec(tmp_path))
    assert "\n" not in line
    assert line.startswith("0 2 * * * cd '") and line.endswith(" # ambidex:shop:churn")
    assert "/opt/venv/bin/ambidex run '" in line and "churn.yaml'" in line
    assert ">> '" in line and "/.ambidex/logs/churn.log' 2>&1" in line
    assert "LANG=C.UTF-8" in line and "AMBIDEX_SCHEDULE='0 2 * * *'" in line
    assert "flock" not in line  # the in-process lock names the holder; see cron_line's docstring
    assert "%x" not in line.replace("\\%x", "")  # every '%' escaped for cron
    assert list_lines(line + "\n")[0].expr == "0 2 * * *"


def test_relative_paths_and_line_breaks_are_refused(tmp_path):
    with pytest.raises(UsageError, match="absolute"):
        cron_line(_spec(tmp_path, log_file=Path("logs/churn.log")))
    with pytest.raises(UsageError, match="line break"):
        cron_line(_spec(tmp_path, root=tmp_path / "a\nb"))
    with pytest.raises(UsageError):
        cron_line(_spec(tmp_path, expr="0 25 * * *"))


def test_the_line_runs_under_a_cron_like_environment(tmp_path):
    spec = _spec(tmp_path, expr="@daily", env_file=tmp_path / "secrets.env",
                 env={"PATH": "/opt/venv/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
    fake = write(tmp_path / "bin dir %" / "ambidex", """\
        #!/bin/sh
        echo "cwd=$(pwd)"; echo "PATH=$PATH"; echo "LANG=$LANG"; echo "SCHEDULE=$AMBIDEX_SCHEDULE"
        echo "DB=$MY_DB_URL"; echo "args=$*"
        """)
    fake.chmod(0o755)
    spec = CronSpec(**{**spec.__dict__, "command": (str(fake),)})
    (spec.root / "config").mkdir(parents=True)
    spec.log_file.parent.mkdir(parents=True)
    write(tmp_path / "secrets.env", "MY_DB_URL=postgresql://ml:s3cret@db/reg\n")
    line = cron_line(spec)
    assert "s3cret" not in line
    proc = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path}", "/bin/sh", "-c", cron_command(line)],
                          capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    log = dict(row.split("=", 1) for row in spec.log_file.read_text().splitlines())
    assert log["cwd"] == str(spec.root) and log["LANG"] == "C.UTF-8" and log["SCHEDULE"] == "@daily"
    assert log["PATH"].startswith("/opt/venv/bin:") and log["DB"] == "postgresql://ml:s3cret@db/reg"
    assert log["args"] == f"run {spec.pipeline_path}"


def test_the_venv_ambidex_runs_with_a_cron_environment():
    exe = Path(sys.executable).parent / "ambidex"
    proc = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", str(exe), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: ambidex" in proc.stdout and "run" in proc.stdout


# ---------------------------------------------------------------- the line of a real project

@pytest.fixture
def churn(project):
    write(project / "python" / "make.py", "def main(ctx):\n    pass\n")
    return write(project / "config" / "churn.yaml", """\
        version: 1
        name: churn
        stages:
          - name: make
            lang: python
            script: python/make.py
        """)


def _ws(project):
    from ambidex.workspace import Workspace

    return Workspace.find(project)


def test_spec_for_a_project(project, churn):
    spec = spec_for(_ws(project), "config/churn.yaml", "0 2 * * *", environ=os.environ)
    line = cron_line(spec)
    assert spec.tag == "ambidex:testproj:churn" and spec.root == project.absolute()
    assert f"cd {project}" in line and f" run {churn.resolve()}" in line
    assert f">> {project / '.ambidex' / 'logs' / 'churn.log'} 2>&1" in line
    assert spec.command[0].startswith("/") and f"PATH={Path(sys.executable).parent}:" in line
    assert f"AMBIDEX_R_LIBS={os.environ['AMBIDEX_R_LIBS']}" in line


def test_a_secret_registry_url_is_never_written(project, churn, tmp_path, monkeypatch):
    (project / "ambidex.yaml").write_text((project / "ambidex.yaml").read_text() + "registry_url_env: CHURN_DB_URL\n")
    monkeypatch.setenv("CHURN_DB_URL", "postgresql+psycopg://ml:s3cret@db/registry")
    with pytest.raises(UsageError) as info:
        spec_for(_ws(project), churn, "0 2 * * *", environ=os.environ)
    assert info.value.code == "usage.secret_env" and "CHURN_DB_URL" in info.value.message
    assert "--env-file" in info.value.hint and "s3cret" not in str(info.value)

    env_file = write(tmp_path / "ambidex.env", "export CHURN_DB_URL='postgresql+psycopg://ml:s3cret@db/registry'\n")
    env_file.chmod(0o644)
    with pytest.raises(UsageError, match="readable or writable by other users"):
        spec_for(_ws(project), churn, "0 2 * * *", environ=os.environ, env_file=env_file)
    env_file.chmod(0o600)
    line = cron_line(spec_for(_ws(project), churn, "0 2 * * *", environ=os.environ, env_file=env_file))
    assert f"set -a && . {env_file} && set +a" in line and "s3cret" not in line and "CHURN_DB_URL" not in line

    other = write(tmp_path / "other.env", "export SOMETHING=1\n")
    other.chmod(0o600)
    with pytest.raises(UsageError, match="does not set CHURN_DB_URL"):
        spec_for(_ws(project), churn, "0 2 * * *", environ=os.environ, env_file=other)


# ---------------------------------------------------------------- editing crontab text

OTHERS = ("MAILTO=ops@example.com\n"
          "# m h dom mon dow command\n"
          "*/5 * * * * /usr/local/bin/backup.sh  >/dev/null 2>&1   \n"
          "#0 2 * * * /old/ambidex run x # ambidex:shop:churn\n"
          "0 3 * * * /opt/venv/bin/ambidex run /srv/x.yaml # ambidex:shop:churn2\n"
          "0 4 * * * /opt/venv/bin/ambidex run /srv/y.yaml # ambidex:other:churn\n"
          "\n"
          "0 5 * * * echo no newline at end")
TAG = make_tag("shop", "churn")


def test_install_appends_and_keeps_every_other_line_byte_for_byte(tmp_path):
    line = cron_line(_spec(tmp_path))
    new = install(OTHERS, line, TAG)
    assert new == OTHERS + "\n" + line + "\n"
    assert install(new, line, TAG) == new  # idempotent
    assert [found.tag for found in list_lines(new)] == ["ambidex:shop:churn2", "ambidex:other:churn", TAG]


def test_install_replaces_its_own_line_in_place_and_drops_duplicates(tmp_path):
    old = "0 1 * * * /opt/venv/bin/ambidex run /old.yaml # ambidex:shop:churn\n"
    text = old + OTHERS + "\n" + old
    line = cron_line(_spec(tmp_path, expr="30 6 * * 1-5"))
    new = install(text, line, TAG)
    assert new == line + "\n" + OTHERS + "\n"
    assert [f.expr for f in list_lines(new) if f.tag == TAG] == ["30 6 * * 1-5"]


def test_install_refuses_a_line_without_the_tag(tmp_path):
    with pytest.raises(ValueError):
        install(OTHERS, cron_line(_spec(tmp_path)), "ambidex:shop:other")


def test_remove_only_its_own_lines(tmp_path):
    line = cron_line(_spec(tmp_path))
    assert remove(install(OTHERS, line, TAG), TAG) == OTHERS + "\n"
    assert remove(OTHERS, TAG) == OTHERS  # the commented-out line is the user's, and churn2 is not churn
    assert remove(OTHERS, "ambidex:shop:churn2") == OTHERS.replace(
        "0 3 * * * /opt/venv/bin/ambidex run /srv/x.yaml # ambidex:shop:churn2\n", "")


# ---------------------------------------------------------------- the crontab command

def test_read_and_write_through_the_runner():
    fake = FakeCrontab()
    assert read_crontab(fake) == ""  # "no crontab for" is an empty crontab
    write_crontab("0 2 * * * true # x", fake)
    assert fake.text == "0 2 * * * true # x\n" and read_crontab(fake) == fake.text


def test_a_failing_crontab_is_an_error():
    broken = lambda args, stdin: subprocess.CompletedProcess(args, 1, "", "you are not allowed to use cron\n")  # noqa: E731
    with pytest.raises(AmbidexError, match="not allowed") as info:
        read_crontab(broken)
    assert info.value.code == "schedule.crontab_failed"
    with pytest.raises(AmbidexError, match="refused"):
        write_crontab("x", broken)


def test_a_missing_crontab_command_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no crontab anywhere: the real one is never reached
    with pytest.raises(AmbidexError) as info:
        read_crontab()
    assert info.value.code == "schedule.no_crontab" and "apt-get install cron" in info.value.hint


def test_dry_run_changes_nothing_and_a_concurrent_edit_is_not_overwritten(tmp_path):
    line = cron_line(_spec(tmp_path))
    fake = FakeCrontab(OTHERS)
    change = update_crontab(lambda t: install(t, line, TAG), dry_run=True, runner=fake)
    assert change.changed and fake.writes == 0 and fake.text == OTHERS
    assert "+" + line in change.diff

    def someone_edits(f):
        f.on_read = None
        f.text = OTHERS + "\n1 1 * * * theirs\n"
    fake.on_read = someone_edits
    with pytest.raises(AmbidexError) as info:
        update_crontab(lambda t: install(t, line, TAG), runner=fake)
    assert info.value.code == "schedule.crontab_changed" and fake.writes == 0

    change = update_crontab(lambda t: install(t, line, TAG), runner=fake)
    assert fake.writes == 1 and fake.text.endswith(line + "\n") and "theirs" in fake.text
    assert not update_crontab(lambda t: install(t, line, TAG), runner=fake).changed and fake.writes == 1


# ---------------------------------------------------------------- CLI

def invoke(fake, *args):
    return CliRunner().invoke(schedule, list(args), obj={"crontab_runner": fake}, catch_exceptions=False)


def test_cli_install_dry_run_then_install_show_and_remove(project, churn):
    fake = FakeCrontab("MAILTO=me\n")
    result = invoke(fake, "install", "config/churn.yaml", "--cron", "0 2 * * *", "--dry-run")
    assert result.exit_code == 0 and "Would change the crontab" in result.output and "+0 2 * * * cd " in result.output
    assert fake.writes == 0 and not (project / ".ambidex" / "logs").exists()

    result = invoke(fake, "install", "config/churn.yaml", "--cron", "0 2 * * *", "--json")
    out = json.loads(result.output)
    assert out["changed"] and not out["dry_run"] and out["tag"] == "ambidex:testproj:churn" and len(out["next_runs"]) == 3
    assert fake.writes == 1 and fake.text.startswith("MAILTO=me\n") and out["line"] + "\n" in fake.text
    logs = project / ".ambidex" / "logs"
    assert logs.is_dir() and stat.S_IMODE(logs.stat().st_mode) & 0o007 == 0

    assert "no change" in invoke(fake, "install", "config/churn.yaml", "--cron", "0 2 * * *").output
    assert fake.writes == 1

    shown = json.loads(invoke(fake, "show", "--json").output)
    assert [(r["project"], r["pipeline"], r["cron"]) for r in shown] == [("testproj", "churn", "0 2 * * *")]
    assert len(shown[0]["next_runs"]) == 3 and shown[0]["next_runs"][0].endswith("Z")
    human = invoke(fake, "show").output
    assert "churn" in human and "0 2 * * *" in human

    result = invoke(fake, "remove", "churn", "--dry-run")
    assert "-0 2 * * * cd " in result.output and fake.writes == 1
    out = json.loads(invoke(fake, "remove", "config/churn.yaml", "--json").output)
    assert out["changed"] and fake.text == "MAILTO=me\n" and fake.writes == 2
    assert "nothing to remove" in invoke(fake, "remove", "churn").output


def test_cli_show_tolerates_a_hand_edited_line(project):
    fake = FakeCrontab("0 99 * * * true # ambidex:shop:broken\n")
    shown = json.loads(invoke(fake, "show", "--json").output)
    assert shown[0]["next_runs"] == [] and "hour field" in shown[0]["error"]
    assert "(none)" not in invoke(FakeCrontab(), "show").output


def test_cli_errors_are_ambidex_errors(project, churn):
    fake = FakeCrontab()
    with pytest.raises(UsageError, match="hour field"):
        invoke(fake, "install", "config/churn.yaml", "--cron", "0 25 * * *")
    with pytest.raises(UsageError, match="neither a pipeline file nor a pipeline name"):
        invoke(fake, "remove", "Not A Name")
    assert fake.writes == 0
