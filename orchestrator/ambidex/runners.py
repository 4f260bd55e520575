"""runners: start one stage in its own runtime (python, Rscript or rpy2) and measure it.

A stage is a process that reads ``context.json`` and writes ``result.json`` (contract/SPEC.md
section 2). This module launches it with the contract's environment, captures stdout and
stderr to files, enforces the timeout, and measures wall time, CPU time and peak RSS from
the kernel's accounting of the child (``os.wait4``), so the numbers cost nothing extra.

    >>> launch = StageLaunch(stage="train", lang="python", runner="subprocess",
    ...                      builtin="train", script=None, context_path=ctx, stage_dir=d,
    ...                      project_root=root, timeout=600)
    >>> outcome = run_stage(launch)          # doctest: +SKIP
    >>> outcome.status, outcome.wall_seconds  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ambidex_stage._process import kill_session

from .errors import ArtifactError, ContractError, StageError

__all__ = ["StageLaunch", "StageOutcome", "run_stage", "stage_zygotes", "r_library", "stderr_tail", "r_version"]

STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class StageLaunch:
    """Everything needed to start one stage; built by the pipeline, independent of the registry."""

    stage: str
    lang: str  # "python" | "r"
    runner: str  # "subprocess" (python), "rscript" or "rpy2" (r)
    script: Path | None
    builtin: str | None
    context_path: Path
    stage_dir: Path
    project_root: Path
    timeout: float
    python: str = sys.executable
    rscript: str = "Rscript"
    r_libs: tuple[str, ...] = ()


@dataclass
class StageOutcome:
    """What happened: measurements, exit code, parsed ``result.json`` (or None) and log paths."""

    stage: str
    lang: str
    runner: str
    status: str  # "ok" | "failed"
    exit_code: int | None
    started_at: datetime
    ended_at: datetime
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int | None
    stdout_path: Path
    stderr_path: Path
    result: dict | None = None
    error: StageError | None = field(default=None, repr=False)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def r_library() -> Path:
    """Where the ambidex R package is installed: ``$AMBIDEX_R_LIBS`` or ``<venv>/R-library``."""
    env = os.environ.get("AMBIDEX_R_LIBS")
    return Path(env) if env else Path(sys.prefix) / "R-library"


# What importing scikit-learn sets in a process's environment (sklearn/__init__.py, setdefault). The
# orchestrator imports it part-way through a run (hold-out scoring), so every stage gets the two from the
# start: its environment does not change in the middle of a run (nor the zygote it may be forked from).
_SKLEARN_ENV = {"KMP_DUPLICATE_LIB_OK": "True", "KMP_INIT_AT_FORK": "FALSE"}


# rpy2 (runner: rpy2) sets these two in the orchestrator's environment when it starts R: a marker of its
# own, and R_HOME, which a stage gets only if the user set it
_RPY2_ENV = ("PYTHON_SESSION_INITIALIZED",) + (() if "R_HOME" in os.environ else ("R_HOME",))


def _contract_env() -> dict[str, str]:
    env = {**_SKLEARN_ENV, **os.environ}
    for k in _RPY2_ENV:
        env.pop(k, None)
    env.update({
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "LANGUAGE": "en",
        # the orchestrator validated context.json and validates result.json: stages skip jsonschema
        "AMBIDEX_VALIDATED": "1",
        "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
    })
    env.pop("AMBIDEX_CONTEXT", None)
    return env


def stage_env(launch: StageLaunch) -> dict[str, str]:
    """The contract's environment: UTF-8 C locale, English messages, the context path."""
    env = _contract_env()
    env["AMBIDEX_CONTEXT"] = str(launch.context_path)
    if launch.lang == "r":
        libs = [*launch.r_libs, str(r_library())]
        if env.get("R_LIBS"):
            libs.append(env["R_LIBS"])
        env["R_LIBS"] = os.pathsep.join(libs)
    return env


def _r_call(launch: StageLaunch, *, exit_: bool) -> str:
    args = []
    if launch.builtin:
        args.append(f"builtin = {json.dumps(launch.builtin)}")
    else:
        args.append(f"script = {json.dumps(str(launch.script))}")
    if not exit_:
        args.append("exit = FALSE")
    return f"ambidex::run_stage({', '.join(args)})"


def command_for(launch: StageLaunch) -> list[str]:
    """The argv that starts the stage (python -m ambidex_stage.run ... or Rscript --vanilla -e ...)."""
    if launch.lang == "python":
        target = ["--builtin", launch.builtin] if launch.builtin else [str(launch.script)]
        return [launch.python, "-m", "ambidex_stage.run", *target]
    return [launch.rscript, "--vanilla", "-e", _r_call(launch, exit_=True)]


def _check_runtime(launch: StageLaunch) -> None:
    if launch.lang != "r":
        return
    if shutil.which(launch.rscript) is None:
        raise _runtime_missing(
            f"Stage '{launch.stage}' is an R stage but '{launch.rscript}' was not found on PATH.",
            code="stage.runtime_missing",
            hint="Install R (apt-get install r-base-core) or run 'make setup'.",
        )
    if not (r_library() / "ambidex").is_dir() and not _r_package_elsewhere(launch):
        raise _runtime_missing(
            f"Stage '{launch.stage}' needs the ambidex R package, which is not installed in {r_library()}.",
            code="stage.runtime_missing",
            hint="Run 'make setup' (or: R CMD INSTALL -l <venv>/R-library r).",
        )


def _runtime_missing(message: str, **kw) -> StageError:
    err = StageError(message, **kw)
    err.exit_code = 2  # contract/SPEC.md section 5: a set-up problem, not a failed stage
    return err


def _r_package_elsewhere(launch: StageLaunch) -> bool:
    return any((Path(p) / "ambidex").is_dir() for p in launch.r_libs)


def run_stage(launch: StageLaunch, *, clock=_utcnow) -> StageOutcome:
    """Run one stage to completion (or timeout) and return its measured outcome; never raises for
    a stage failure (the outcome carries ``error``), only for a runtime that is not installed."""
    _check_runtime(launch)
    launch.stage_dir.mkdir(parents=True, exist_ok=True)
    if launch.runner == "rpy2":
        return _run_rpy2(launch, clock)
    return _run_process(launch, clock)


# What the orchestrator needs right after its first stage (reading a typed table, the feature store, the
# drift statistics, the scoring capture): 0.3-0.5 s of imports, done while a stage process runs and the
# main thread would only wait for it, a module at a time, stopping when the stage ends.
_MEANWHILE = ["pandas", "pyarrow.csv", "pyarrow.compute", "jsonschema", "ambidex_stage.tables", "scipy.special",
              "ambidex.featurestore", "ambidex.capture"]


def _import_meanwhile(waiter: threading.Thread) -> None:
    """Only on the main thread: stages run by worker threads (scoring several models, smoke cases) must not
    import beside a main thread that may be importing the same packages."""
    import importlib

    if threading.current_thread() is not threading.main_thread():
        return
    while _MEANWHILE and waiter.is_alive():
        name = _MEANWHILE.pop(0)
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - imported again where it is used, which reports the problem
            continue


def _run_process(launch: StageLaunch, clock) -> StageOutcome:
    out_path = launch.stage_dir / "stdout.log"
    err_path = launch.stage_dir / "stderr.log"
    env = stage_env(launch)
    forked = _ZYGOTES.fork(launch, env, out_path, err_path)  # the child opens the two logs itself
    # the stage starts now: waiting for a zygote to finish loading is not the stage's time, nor its timeout's
    started = clock()
    t0 = time.perf_counter()
    proc = None
    if forked is None:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                command_for(launch), cwd=launch.project_root, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )
    waited: dict = {}

    def _wait() -> None:
        if forked is not None:  # the zygote's wait4 of it
            forked.done.wait()
            if forked.status is not None:
                waited.update(status=forked.status, cpu=forked.cpu, rss=forked.rss, wall=forked.wall)
            else:  # its zygote ended first, and the kernel killed it with it
                waited.update(status=signal.SIGKILL, cpu=forked.cpu, rss=forked.rss)
            waited["ended"] = forked.ended
            return
        # wait4 gives the child's own rusage (CPU and max RSS) with no sampling.
        _, status, usage = os.wait4(proc.pid, 0)
        waited.update(status=status, cpu=usage.ru_utime + usage.ru_stime, rss=int(usage.ru_maxrss) * 1024,
                      ended=time.perf_counter())

    waiter = threading.Thread(target=_wait, daemon=True)
    waiter.start()
    _import_meanwhile(waiter)
    waiter.join(max(0.0, launch.timeout - (time.perf_counter() - t0)))
    timed_out = waiter.is_alive()
    if timed_out:
        _kill_group(forked.pid if forked is not None else proc.pid)
        waiter.join(10)
    if proc is not None:
        proc.returncode = 0  # wait4 reaped it; stop Popen from waiting again
    # a forked stage's wall time is the zygote's, fork to reaping (it was running before the fork's answer
    # reached this thread); anything else from here
    wall = waited.get("wall")
    if wall is None:
        wall = max(waited.get("ended", time.perf_counter()) - t0, 0.0)
    ended = clock()
    exit_code = os.waitstatus_to_exitcode(waited["status"]) if "status" in waited else None
    cpu = waited.get("cpu", 0.0)
    rss = waited.get("rss")
    outcome = StageOutcome(
        stage=launch.stage, lang=launch.lang, runner="zygote" if forked is not None else launch.runner, status="ok",
        exit_code=exit_code, started_at=started, ended_at=ended, wall_seconds=wall,
        cpu_seconds=cpu, peak_rss_bytes=rss, stdout_path=out_path, stderr_path=err_path,
    )
    if timed_out:
        outcome.exit_code = None
        return _fail(outcome, "stage.timeout",
                     f"Stage '{launch.stage}' ran past its timeout of {launch.timeout:g} s and was killed.",
                     "Raise 'timeout' for this stage in the pipeline YAML, or make the stage faster.")
    return _judge(outcome, launch)


class _Forked:
    """A stage forked by a zygote: its pid once forked, then its wait status and rusage."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.forked = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None  # could not fork: the stage starts fresh
        self.status: int | None = None  # None once done: the zygote ended before the stage did
        self.cpu = 0.0
        self.rss: int | None = None  # peak RSS above what it shared with the zygote when forked
        self.rss0 = 0
        self.ended = 0.0
        self.wall: float | None = None  # fork to reaping, on the zygote's monotonic clock
        self.t0: float | None = None


class _Zygote:
    """One ``ambidex_stage.zygote`` process for one runtime and environment, and the thread reading its
    answers (the child's pid when forked, its wait status and rusage when it ends)."""

    def __init__(self, lang: str, python: str, env: dict[str, str]) -> None:
        self.lock = threading.Lock()  # the jobs
        self.write_lock = threading.Lock()  # the pipe to it
        self.jobs: dict[int, _Forked] = {}
        self.next_id = 0
        self.ready = threading.Event()
        self.ok = False  # loaded and serving
        self.load_failed = False  # it could not load: its stages start fresh
        self.hung = False  # it stopped answering: it is replaced
        self.ended = False  # its answers ended (it exited, or was killed)
        self.proc = subprocess.Popen([python, "-m", "ambidex_stage.zygote", lang], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._read, daemon=True, name=f"ambidex-zygote-{lang}").start()

    def _read(self) -> None:
        # a broken pipe, or a line that is not an answer, is taken as its end
        with suppress(OSError, ValueError):
            for line in self.proc.stdout:
                msg = json.loads(line)
                if "ready" in msg:
                    self.ok = bool(msg["ready"])
                    self.load_failed = not self.ok
                    self.ready.set()
                    continue
                with self.lock:  # fork() gives up on a job under this lock: a pid is taken or killed, never lost
                    job = self.jobs.get(msg["id"])
                    if job is not None and "pid" in msg:
                        job.pid, job.rss0, job.t0 = msg["pid"], int(msg.get("rss0") or 0), msg.get("t0")
                if job is None:
                    if "pid" in msg:  # forked after the stage gave up on it and started fresh: not twice
                        kill_session(msg["pid"])
                    continue
                if "pid" in msg:
                    job.forked.set()
                elif "error" in msg:
                    job.error = msg["error"]
                    job.forked.set()
                else:
                    job.status, job.cpu = msg["status"], msg["cpu"]
                    job.rss = max(int(msg["rss"]) - job.rss0, 0)
                    if job.t0 is not None and msg.get("t1") is not None:
                        job.wall = max(float(msg["t1"]) - float(job.t0), 0.0)
                    job.ended = time.perf_counter()
                    with self.lock:
                        self.jobs.pop(msg["id"], None)
                    job.done.set()
        # it ended: every stage still running in it was killed with it (PR_SET_PDEATHSIG)
        if not self.ready.is_set():
            self.load_failed = True
        self.ended = True
        self.ok = False
        self.ready.set()
        with self.lock:
            pending, self.jobs = list(self.jobs.values()), {}
        for job in pending:
            if not job.forked.is_set():
                job.error = "the zygote ended"
                job.forked.set()
            elif job.pid:  # the kernel killed it with its zygote; whatever it started goes too
                kill_session(job.pid)
            job.ended = time.perf_counter()
            job.done.set()

    def fork(self, what: dict, cwd: Path, env: dict[str, str], out_path: Path, err_path: Path,
             timeout: float | None) -> _Forked | None:
        """A child forked from this zygote to run ``what`` (``{"builtin": ...}`` or ``{"r_code": ..., "args":
        [...]}``), or None (it could not load, or fork, or is still loading after ``timeout`` s): start it
        fresh."""
        if not self.ready.wait(timeout) or not self.ok:
            return None
        job = _Forked()
        with self.lock:
            self.next_id += 1
            job_id = self.next_id
            self.jobs[job_id] = job
        line = {"id": job_id, **what, "cwd": str(cwd), "env": env, "stdout": str(out_path), "stderr": str(err_path)}
        for path in (out_path, err_path):
            path.touch()  # there even if it dies before opening them
        try:
            with self.write_lock:
                self.proc.stdin.write((json.dumps(line) + "\n").encode())
                self.proc.stdin.flush()
        except (OSError, ValueError):  # it ended meanwhile
            with self.lock:
                self.jobs.pop(job_id, None)
            return None
        if not job.forked.wait(60):  # loaded, yet no answer: it hangs. The stage starts fresh, and so do the
            self.ok = False          # next ones (its running children go on; it is stopped with the block)
            self.hung = True
            with self.lock:
                self.jobs.pop(job_id, None)
                pid = job.pid
            if pid is None:
                return None
            kill_session(pid)  # its answer came as we gave up: the stage runs once, fresh
            return None
        return None if job.error else job

    def stop(self) -> None:
        if not self.ready.is_set():  # still loading: it would read its input only once loaded
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with suppress(OSError, ValueError):
            self.proc.stdin.close()  # it kills its children still running, and exits
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc.pid)
            self.proc.wait()


class _Zygotes:
    """The zygotes of a :func:`stage_zygotes` block, one per runtime and environment.

    A built-in stage (``--builtin train|score``, Python or R) is forked from a process that has loaded
    what the built-ins use once (``ambidex_stage.zygote``), instead of a fresh interpreter or ``Rscript``
    loading it again: a built-in R stage is 1.6 s fresh and 0.7 s forked (ranger's Matrix alone takes
    0.75 s to load), a Python one saves its ~1 s of imports. Each stage is still its own process, with
    its own session, logs, folder and environment, recorded with runner ``zygote``: its wall time is
    measured here from the fork (a wait for the zygote to load is not the stage's, nor its timeout's), its
    CPU time and peak RSS by the zygote's ``wait4`` of it. CPU leaves out the loading done once; peak RSS
    is the child's peak above its RSS just after the fork, i.e. about the stage's own memory without its
    runtime's (an R zygote holds Python and rpy2 beside R, so the whole count would make every R model look
    100-200 MB heavier than a Python one: R and Python are measured alike). About: the runtime's code pages
    the child touches again count as its own, and the start is read as the child already runs.

    Used only where the stage's environment equals the one the zygote started with (the context path
    aside), and for R only with the ``Rscript`` on PATH (the R rpy2 embeds) and no ``R_HOME`` of the
    user's; anything else starts fresh exactly as without a block. ``AMBIDEX_ZYGOTES=0`` turns it off.
    A zygote starts on the first built-in stage that needs it, or ahead with :meth:`prestart` where the
    caller knows one is coming and has work of its own to do meanwhile (``ambidex run`` of a cycle starts
    its candidates' runtimes at once: every window scores with them), not on a guess: on two cores a
    process loading for nothing slows whatever runs beside it.
    """

    READY_WAIT = 120.0  # a stage waits this long at most for its zygote to load, then starts fresh
    MAX_DEATHS = 2  # a zygote that died this often after loading is not started again in the block (one
    # replacement)

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.lazy = True  # start a zygote on the first stage that needs it (else only ahead, by prestart)
        self.held: dict[tuple, _Zygote] = {}
        self.retired: list[_Zygote] = []  # dead or hung ones, stopped with the block
        self.deaths: dict[tuple, int] = {}

    @staticmethod
    def _key(lang: str, python: str, env: dict[str, str]) -> tuple:
        return lang, python, tuple(sorted((k, v) for k, v in env.items() if k != "AMBIDEX_CONTEXT"))

    @staticmethod
    def usable(launch: StageLaunch, env: dict[str, str]) -> bool:
        if not launch.builtin or os.environ.get("AMBIDEX_ZYGOTES", "1") == "0" or not hasattr(os, "pidfd_open"):
            return False
        if launch.lang == "python":
            return launch.runner == "subprocess"
        return launch.runner == "rscript" and launch.rscript == "Rscript" and "R_HOME" not in env

    def get(self, lang: str, python: str, env: dict[str, str], *, start: bool = True) -> _Zygote | None:
        with self.lock:
            if not self.depth:
                return None
            key = self._key(lang, python, env)
            z = self.held.get(key)
            if z is not None and not z.load_failed and (z.hung or z.ended or z.proc.poll() is not None):
                # it died (or hangs) after loading: another one, up to MAX_DEATHS (one that could not load
                # stays: its stages start fresh)
                self.retired.append(self.held.pop(key))
                self.deaths[key] = self.deaths.get(key, 0) + 1
                z = None
            if z is None and start and self.deaths.get(key, 0) < self.MAX_DEATHS:
                try:
                    z = self.held[key] = _Zygote(lang, python, {k: v for k, v in env.items()
                                                                if k != "AMBIDEX_CONTEXT"})
                except OSError:  # no such interpreter: the stage itself will report it
                    return None
            return z

    def fork(self, launch: StageLaunch, env: dict[str, str], out_path: Path, err_path: Path,
             what: dict | None = None) -> _Forked | None:
        """``launch`` (or ``what`` with its environment: ``{"r_code": ..., "args": [...]}``) forked from its
        zygote, started now if need be; None to start it fresh."""
        if not self.usable(launch, env):
            return None
        # R stages are forked from a Python process that embeds R: the orchestrator's own interpreter,
        # which has rpy2; Python stages from the stage's interpreter
        z = self.get(launch.lang, _zygote_python(launch), env, start=self.lazy)
        if z is None:
            return None
        return z.fork(what or {"builtin": launch.builtin}, launch.project_root, env, out_path, err_path,
                      min(launch.timeout, self.READY_WAIT))

    def prestart(self, launch: StageLaunch) -> None:
        """Start the zygote ``launch`` will be forked from now, so it loads while the caller works."""
        env = stage_env(launch)
        if self.usable(launch, env):
            self.get(launch.lang, _zygote_python(launch), env)

    def stop(self, lang: str | None = None) -> None:
        with self.lock:
            gone = [k for k in self.held if lang is None or k[0] == lang]
            held = [self.held.pop(k) for k in gone]
            if lang is None:
                held += self.retired
                self.retired, self.deaths = [], {}
        for z in held:
            z.stop()


def _zygote_python(launch: StageLaunch) -> str:
    """The interpreter a stage's zygote runs in: the stage's own for Python; for R, the orchestrator's, which
    has rpy2 to embed R."""
    return launch.python if launch.lang == "python" else sys.executable


_ZYGOTES = _Zygotes()


def scoring_launch(lang: str, *, rscript: str = "Rscript") -> StageLaunch:
    """A launch with what ``ambidex.scoring`` gives its built-in score stages (this interpreter, no project R
    library folders): to start their zygote ahead."""
    return StageLaunch(stage="score", lang=lang, runner="subprocess" if lang == "python" else "rscript",
                       script=None, builtin="score", context_path=Path("-"), stage_dir=Path("-"),
                       project_root=Path("."), timeout=0, rscript=rscript)


class ZygoteBlock:
    """What :func:`stage_zygotes` yields: start a runtime's zygote ahead, or stop it."""

    def prestart(self, what: "str | StageLaunch", *, rscript: str = "Rscript") -> None:
        """Start the zygote a built-in stage will be forked from: ``what`` is that stage's launch, or a runtime
        (``"python"``, ``"r"``) for a scoring stage of ``ambidex.scoring`` (this interpreter, no project R
        library folders)."""
        _ZYGOTES.prestart(what if isinstance(what, StageLaunch) else scoring_launch(what, rscript=rscript))

    def stop(self, lang: str | None = None) -> None:
        """Stop the zygote of ``lang`` (every one with None): the block learnt it will not need it."""
        _ZYGOTES.stop(lang)


def run_r_code(code: str, args: list[str], *, cwd: Path, log_dir: Path, rscript: str = "Rscript",
               r_libs: tuple[str, ...] = ()) -> tuple[int | None, str]:
    """Run ambidex's own R ``code`` with ``args`` (strings) bound to ``args``: forked from the R zygote inside
    a :func:`stage_zygotes` block, else in a fresh ``Rscript --vanilla``; with the environment of a
    built-in R stage. Returns (exit code, the tail of its stderr); its logs are ``log_dir/r.out|r.err``."""
    launch = StageLaunch(stage="r_code", lang="r", runner="rscript", script=None, builtin="score",
                         context_path=Path("-"), stage_dir=log_dir, project_root=Path(cwd),
                         timeout=_Zygotes.READY_WAIT, rscript=rscript, r_libs=tuple(r_libs))
    env = stage_env(launch)
    env.pop("AMBIDEX_CONTEXT", None)
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "r.out", log_dir / "r.err"
    forked = _ZYGOTES.fork(launch, env, out_path, err_path, {"r_code": code, "args": [str(a) for a in args]})
    if forked is not None:
        forked.done.wait()
        code_ = os.waitstatus_to_exitcode(forked.status) if forked.status is not None else -signal.SIGKILL
        return code_, stderr_tail(err_path)
    script = log_dir / "code.R"
    script.write_text("args <- commandArgs(trailingOnly = TRUE)\n" + code + "\n", encoding="utf-8")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        p = subprocess.run([rscript, "--vanilla", str(script), *map(str, args)], cwd=cwd, env=env,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return p.returncode, stderr_tail(err_path)


@contextmanager
def stage_zygotes(*prestart: "str | StageLaunch", lazy: bool = True):
    """Inside the block, built-in stages are forked from a zygote per runtime (:class:`_Zygotes`), started
    with the first stage that needs it (``lazy``; a zygote costs a little more to start than one fresh
    process, so a block that runs one stage per runtime says ``lazy=False``) or ahead: ``prestart`` names
    the stages (their launches, or a runtime for a scoring stage) whose zygotes start at once. Every zygote
    is stopped at the end of the outermost block; nested blocks share them (and the outermost's ``lazy``)."""
    with _ZYGOTES.lock:
        if not _ZYGOTES.depth:
            _ZYGOTES.lazy = lazy
        _ZYGOTES.depth += 1
    block = ZygoteBlock()
    try:
        for what in prestart:
            block.prestart(what)
        yield block
    finally:
        with _ZYGOTES.lock:
            _ZYGOTES.depth -= 1
            last = not _ZYGOTES.depth
        if last:
            _ZYGOTES.stop()


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:  # not (yet) a group leader: a forked stage before its setsid
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        time.sleep(0.5)


def _judge(outcome: StageOutcome, launch: StageLaunch) -> StageOutcome:
    """Turn exit code + result.json into ok or a StageError with the tail of stderr."""
    result_path = launch.stage_dir / "out" / "result.json"
    result = None
    if result_path.is_file():
        try:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            result = None
    outcome.result = result
    if outcome.exit_code not in (0, None) or (result and result.get("status") == "error"):
        err = (result or {}).get("error") or {}
        code = "stage.failed" if result and result.get("status") == "error" else "stage.crashed"
        detail = f": [{err.get('code')}] {err.get('message')}" if err.get("message") else ""
        how = (f"was killed by signal {-outcome.exit_code}"
               + (" (SIGKILL: out of memory, or killed by hand)" if outcome.exit_code == -9 else "")
               if outcome.exit_code is not None and outcome.exit_code < 0
               else f"failed with exit code {outcome.exit_code}")
        hint = err.get("hint") or f"See {outcome.stderr_path} for the full log."
        return _fail(outcome, code, f"Stage '{launch.stage}' ({launch.lang}) {how}{detail}",
                     hint, stage_code=err.get("code"), with_tail=not err.get("message"))
    if result is None:
        return _fail(outcome, "stage.no_result",
                     f"Stage '{launch.stage}' ({launch.lang}) exited with code {outcome.exit_code} "
                     f"but wrote no valid result.json in {result_path.parent}.",
                     "A stage must finish through the ambidex SDK (ambidex_stage / ambidex::run_stage).")
    return outcome


def _fail(outcome: StageOutcome, code: str, message: str, hint: str, stage_code: str | None = None,
          with_tail: bool = True) -> StageOutcome:
    """Record the failure. A stage that reported its own error (result.json) is shown by its message;
    a crash is shown with the tail of stderr. A stage's contract.* or artifact.* code, or a missing
    runtime, keeps its meaning (and exit code: 3 for a contract violation, 2 for a missing runtime)."""
    tail = stderr_tail(outcome.stderr_path)
    full = message + (f"\n--- last lines of stderr ---\n{tail}" if tail and with_tail else "")
    outcome.status = "failed"
    cls, final_code = StageError, code
    if stage_code and stage_code.startswith("contract."):
        cls, final_code = ContractError, stage_code
    elif stage_code and stage_code.startswith("artifact."):
        cls, final_code = ArtifactError, stage_code
    elif stage_code == "stage.runtime_missing":
        final_code = stage_code
    outcome.error = cls(full, code=final_code, hint=hint, stage=outcome.stage, process_exit_code=outcome.exit_code,
                        stage_error_code=stage_code, stderr_tail=tail)
    if final_code == "stage.runtime_missing":
        outcome.error.exit_code = 2
    return outcome


def stderr_tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """The last lines of a log file, decoded leniently (stage output is bytes)."""
    try:
        data = path.read_bytes()[-8192:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").rstrip().splitlines()[-lines:])


_R_VERSION: dict[str, str | None] = {}


def r_version(rscript: str = "Rscript") -> str | None:
    """R's version string (cached), or None when R is absent; used for run lineage."""
    if rscript not in _R_VERSION:
        try:
            out = subprocess.run([rscript, "--version"], capture_output=True, text=True, timeout=30)
            text = (out.stdout + out.stderr).strip()
            _R_VERSION[rscript] = text.split("version", 1)[-1].strip().split(" ")[0] or None
        except (OSError, subprocess.SubprocessError):
            _R_VERSION[rscript] = None
    return _R_VERSION[rscript]


# --- rpy2: in-process R for short stages where Rscript's start-up dominates ---------------

_RPY2_LOCK = threading.Lock()


def _rpy2_robjects():
    # rpy2 puts R's library folders in front of LD_LIBRARY_PATH when it starts R. Every child
    # process started afterwards (a Python stage, git) would then load Debian's libpython instead
    # of this interpreter's and crash, so the variable is put back as soon as R is loaded.
    saved_ld = os.environ.get("LD_LIBRARY_PATH")
    try:
        import rpy2.robjects as ro  # noqa: PLC0415 - optional, heavy
        from rpy2.rinterface_lib import callbacks, openrlib  # noqa: PLC0415

        # R calls rpy2's Python event handler at every interrupt check (ranger's loops): 25% slower scoring;
        # no stage needs it (ambidex_stage.zygote)
        openrlib.rlib.ptr_R_ProcessEvents = openrlib.ffi.NULL
    except ImportError as exc:
        raise _runtime_missing(
            f"runner: rpy2 needs the Python package rpy2, which could not be imported ({exc}).",
            code="stage.runtime_missing",
            hint="pip install 'rpy2==3.5.17' (rpy2 3.6 does not load against R 4.2), "
                 "or use runner: rscript.",
        ) from exc
    finally:
        if saved_ld is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved_ld
    return ro, callbacks


def _run_rpy2(launch: StageLaunch, clock) -> StageOutcome:
    """Run the stage inside this process's embedded R. The stage still talks to the orchestrator
    only through context.json / result.json and typed tables, so results are identical to the
    Rscript runner and no DataFrame goes through rpy2's slow pandas conversion."""
    ro, callbacks = _rpy2_robjects()
    out_path = launch.stage_dir / "stdout.log"
    err_path = launch.stage_dir / "stderr.log"
    env = stage_env(launch)
    with _RPY2_LOCK, open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
        saved_env = {k: os.environ.get(k) for k in ("AMBIDEX_CONTEXT", "LANGUAGE")}
        saved_cb = (callbacks.consolewrite_print, callbacks.consolewrite_warnerror)
        callbacks.consolewrite_print = out.write
        callbacks.consolewrite_warnerror = err.write
        os.environ["AMBIDEX_CONTEXT"] = env["AMBIDEX_CONTEXT"]
        os.environ["LANGUAGE"] = "en"
        started = clock()
        t0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        exit_code = 0
        try:
            libs = ", ".join(json.dumps(p) for p in env["R_LIBS"].split(os.pathsep) if p)
            timeout = json.dumps(float(launch.timeout))
            code = (
                f"local({{ old <- setwd({json.dumps(str(launch.project_root))}); on.exit(setwd(old)); "
                f".libPaths(unique(c({libs}, .libPaths()))); "
                f"setTimeLimit(elapsed = {timeout}, transient = TRUE); "
                f"on.exit(setTimeLimit(), add = TRUE); "
                f"({_r_call(launch, exit_=False)}) }})"  # parentheses: rpy2 returns None for invisible values
            )
            status = ro.r(code)
            exit_code = int(status[0]) if status is not None and len(status) else 1
        except Exception as exc:  # rpy2 raises RRuntimeError for R conditions escaping run_stage
            err.write(f"{exc}\n")
            exit_code = 1
        finally:
            callbacks.consolewrite_print, callbacks.consolewrite_warnerror = saved_cb
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    outcome = StageOutcome(
        stage=launch.stage, lang=launch.lang, runner="rpy2", status="ok", exit_code=exit_code,
        started_at=started, ended_at=clock(), wall_seconds=time.perf_counter() - t0,
        cpu_seconds=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        peak_rss_bytes=int(r1.ru_maxrss) * 1024, stdout_path=out_path, stderr_path=err_path,
    )
    return _judge(outcome, launch)
