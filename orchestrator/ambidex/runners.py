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

from .errors import ArtifactError, ContractError, StageError

__all__ = ["StageLaunch", "StageOutcome", "run_stage", "warm_stages", "r_library", "stderr_tail", "r_version"]

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


def _contract_env() -> dict[str, str]:
    env = dict(os.environ)
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
    started = clock()
    t0 = time.perf_counter()
    env = stage_env(launch)
    proc = _WARM.take(launch, env, out_path, err_path)  # it opens the two logs itself
    if proc is None:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                command_for(launch), cwd=launch.project_root, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )
    waited: dict = {}

    def _wait() -> None:
        # wait4 gives the child's own rusage (CPU and max RSS) with no sampling.
        _, status, usage = os.wait4(proc.pid, 0)
        waited.update(status=status, usage=usage, ended=time.perf_counter())

    waiter = threading.Thread(target=_wait, daemon=True)
    waiter.start()
    _import_meanwhile(waiter)
    waiter.join(max(0.0, launch.timeout - (time.perf_counter() - t0)))
    timed_out = waiter.is_alive()
    if timed_out:
        _kill_group(proc.pid)
        waiter.join(10)
    proc.returncode = 0  # wait4 reaped it; stop Popen from waiting again
    wall = waited.get("ended", time.perf_counter()) - t0
    ended = clock()
    status_word = waited.get("status", 0)
    exit_code = os.waitstatus_to_exitcode(status_word) if "status" in waited else None
    usage = waited.get("usage")
    cpu = (usage.ru_utime + usage.ru_stime) if usage else 0.0
    rss = int(usage.ru_maxrss) * 1024 if usage else None
    outcome = StageOutcome(
        stage=launch.stage, lang=launch.lang, runner=launch.runner, status="ok",
        exit_code=exit_code, started_at=started, ended_at=ended, wall_seconds=wall,
        cpu_seconds=cpu, peak_rss_bytes=rss, stdout_path=out_path, stderr_path=err_path,
    )
    if timed_out:
        outcome.exit_code = None
        return _fail(outcome, "stage.timeout",
                     f"Stage '{launch.stage}' ran past its timeout of {launch.timeout:g} s and was killed.",
                     "Raise 'timeout' for this stage in the pipeline YAML, or make the stage faster.")
    return _judge(outcome, launch)


class _WarmPool:
    """Python interpreters started ahead of a built-in stage (``ambidex_stage.warm``), one per interpreter
    path, by :func:`warm_stages`: the stage then skips the ~1.5 s its interpreter spends importing pandas
    and scikit-learn, which the orchestrator's work meanwhile (reading the window, say) hides.

    A warm interpreter is used only for a built-in Python stage and only when the environment it was
    started with equals the stage's (the context path aside); otherwise it is stopped and the stage
    starts fresh, exactly as without it. Each is still one process per stage, measured by ``wait4``
    like any other (its CPU time and peak RSS include the imports done ahead; its wall time does not).
    None is kept ready on speculation: on two cores an interpreter nobody uses slows whatever runs beside
    it (measured: a cycle whose stages were mostly R ran 10% slower with one kept ready throughout).
    ``ambidex score`` starts one before it has read which models are live, since the orchestrator's own
    start-up then uses one core only, and stops it as soon as the live revision has no Python model.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready: dict[str, tuple[subprocess.Popen, dict[str, str]]] = {}

    def start(self, python: str) -> None:
        with self.lock:
            held = self.ready.get(python)
            if held is not None and held[0].poll() is None:
                return
            env = _contract_env()
            try:
                proc = subprocess.Popen([python, "-m", "ambidex_stage.warm"], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            except OSError:  # no such interpreter: the stage itself will report it
                return
            self.ready[python] = (proc, env)

    def take(self, launch: StageLaunch, env: dict[str, str], out_path: Path, err_path: Path) -> subprocess.Popen | None:
        """The warm interpreter for ``launch``, already told to run it; None to start one fresh."""
        if launch.lang != "python" or not launch.builtin:
            return None
        with self.lock:
            held = self.ready.pop(launch.python, None)
        if held is None:
            return None
        proc, warm_env = held
        job = {"argv": ["--builtin", launch.builtin], "cwd": str(launch.project_root),
               "env": {"AMBIDEX_CONTEXT": env["AMBIDEX_CONTEXT"]}, "stdout": str(out_path), "stderr": str(err_path)}
        if {k: v for k, v in env.items() if k != "AMBIDEX_CONTEXT"} != warm_env or proc.poll() is not None:
            _stop(proc)
            return None
        for path in (out_path, err_path):
            path.touch()  # there even if it dies before opening them
        try:
            proc.stdin.write((json.dumps(job) + "\n").encode())
            proc.stdin.close()
        except OSError:  # it died meanwhile
            _stop(proc)
            return None
        return proc

    def stop_all(self) -> None:
        with self.lock:
            held, self.ready = list(self.ready.values()), {}
        for proc, _ in held:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    with suppress(OSError):
        proc.stdin.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait()


_WARM = _WarmPool()


@contextmanager
def warm_stages(python: str = sys.executable):
    """Start a Python interpreter now for the next built-in Python stage of this block, and stop it at the
    end if no stage took it. Use it where a built-in Python stage is known to come after some work of the
    orchestrator's own (``ambidex score`` does, around reading the window). Yields a function that stops
    it at once, for a block that learns it will run no built-in Python stage after all.
    ``AMBIDEX_WARM_STAGES=0`` turns it off."""
    if os.environ.get("AMBIDEX_WARM_STAGES", "1") != "0":
        _WARM.start(python)
    try:
        yield _WARM.stop_all
    finally:
        _WARM.stop_all()


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
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
        from rpy2.rinterface_lib import callbacks  # noqa: PLC0415
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
