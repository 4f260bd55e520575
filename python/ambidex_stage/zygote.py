"""A process that has loaded what the built-in stages use once, and forks one child per built-in stage.

``python -m ambidex_stage.zygote python`` imports numpy, pandas, pyarrow and the scikit-learn parts of
the default pipeline; ``python -m ambidex_stage.zygote r`` starts R inside this process (rpy2, with
``--vanilla``, as ``Rscript --vanilla``) and loads the ambidex R package and what its built-ins use
(ranger loads Matrix: 0.75 s on its own). A stage started fresh pays that again, every time: 0.9-1.1 s
of a built-in R stage's 1.6 s, most of a Python one's. Forked from here, a stage starts with it done.

Protocol: one JSON line per stage on stdin::

    {"id": 1, "builtin": "score", "cwd": "/project", "env": {...the stage's whole environment...},
     "stdout": ".../stdout.log", "stderr": ".../stderr.log"}

The zygote forks; the child starts a session of its own (so the orchestrator can kill its process group
on a timeout), asks the kernel to kill it if the zygote dies, points stdin at /dev/null and stdout and
stderr at the two files, changes to ``cwd``, takes ``env`` as its whole environment and runs the
built-in (Python: ``ambidex_stage.run --builtin``; R: ``ambidex::run_stage(builtin = ...)``); its exit
status is the stage's. The zygote answers on stdout, one JSON line per event::

    {"ready": true}                                     once loaded (or {"ready": false, "error": "..."})
    {"id": 1, "pid": 12345}                             forked
    {"id": 1, "status": 0, "cpu": 0.41, "rss": 2.4e8}   the child's wait status and its own rusage (wait4)
    {"id": 1, "error": "..."}                           it could not fork: the orchestrator starts it fresh

End of input: the zygote kills the children still running (their orchestrator is gone) and exits.

An R zygote also runs ambidex's own R code: ``{"id": 2, "r_code": "...", "args": [...], ...}`` evaluates the
code with ``args`` bound to the strings given (``ambidex.runners.run_r_code``).

Only built-in stages are forked: a project's own script may set environment variables (thread counts)
before its first import of numpy, which a process that imported it already would ignore, so scripts
always get a fresh process (``ambidex.runners``). The zygote's own loop runs on one thread: it waits on
stdin and on one pidfd per child with ``select``, and never forks while a lock of its own is held (OpenBLAS
and pyarrow keep idle threads of their own, and R's cli package a sleeping timer thread, which is as safe
as any fork of a process that imported numpy).

Where a forked R child differs from ``Rscript --vanilla``: its warnings are printed as they happen
(``options(warn = 1)``; embedded R has no top level to print deferred ones at), and R's own signal
handlers (the segfault traceback) are not installed, and its environment has the stage's LD_LIBRARY_PATH,
not R's ldpaths; ``interactive()``, the C stack check, the working folder, the rest of the environment and a
temporary folder (the zygote's, shared by its children) are as in Rscript.
"""
from __future__ import annotations

import importlib
import json
from contextlib import suppress
import os
import selectors
import signal
import sys
import time
import traceback

from ._process import kill_session

# what the built-in Python stages import (the scikit-learn parts of the default pipeline included)
PYTHON_PRELOAD = ("numpy", "pandas", "pyarrow.csv", "ambidex_stage.builtins", "ambidex_stage.tables",
                  "ambidex_stage.run", "sklearn.compose", "sklearn.impute", "sklearn.pipeline",
                  "sklearn.preprocessing", "sklearn.linear_model")
# the R namespaces the built-in R stages load (ranger only where it is installed)
R_PRELOAD = ("ambidex", "jsonlite", "data.table", "ranger")
# run once the zygote is ready, while no stage is waiting: an error raised as the built-ins raise theirs, which
# loads what only reporting an error needs (cli, rlang and its traceback's pillar, vctrs, glue...: 0.4 s,
# paid otherwise by every refused input, e.g. each negative smoke case)
R_IDLE = ('try(ambidex:::amb_abort("loading what an error needs", code = "stage.failed"), silent = TRUE)',)

_PR_SET_PDEATHSIG = 1


class _R:
    """R embedded in this process, loaded once; forked children evaluate their stage in it."""

    def __init__(self) -> None:
        saved_ld = os.environ.get("LD_LIBRARY_PATH")
        before = set(os.environ)
        from rpy2.rinterface_lib import embedded

        embedded.set_initoptions(("rpy2", "--quiet", "--vanilla", "--no-save"))
        # R's C stack check as in Rscript (rpy2 turns it off, for R called from other threads; here R only
        # ever runs on the main thread): a runaway recursion is an R error, not a crash
        embedded._DEFAULT_C_STACK_LIMIT = 0
        import rpy2.robjects as ro
        from rpy2.rinterface_lib import callbacks, openrlib

        # rpy2 hands R's event processing to a Python function, which R calls at every check for an
        # interrupt (ranger's and data.table's loops, from their threads): a ranger prediction of 1M rows
        # took 13.4 s instead of 10.6 s. Nothing here needs it (no graphics, no interrupts): R's own
        # default, no event processing, as in Rscript.
        openrlib.rlib.ptr_R_ProcessEvents = openrlib.ffi.NULL

        # rpy2 puts R's library folders in front of LD_LIBRARY_PATH; the zygote's own is put back as it was
        if saved_ld is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = saved_ld
        callbacks.consolewrite_print = lambda s: sys.stdout.write(s)
        callbacks.consolewrite_warnerror = lambda s: sys.stderr.write(s)
        callbacks.showmessage = lambda s: sys.stderr.write(s + "\n")
        self.ro = ro
        self.rlib = openrlib.rlib
        names = ", ".join(json.dumps(n) for n in R_PRELOAD)
        ro.r(f"invisible(lapply(c({names}), function(p) suppressPackageStartupMessages("
             "requireNamespace(p, quietly = TRUE))))")
        if not bool(ro.r('(requireNamespace("ambidex", quietly = TRUE))')[0]):
            raise RuntimeError("the ambidex R package is not installed where R_LIBS points")
        self.tempdir = str(ro.r("tempdir()")[0])
        self.idle = list(R_IDLE)
        # what R's start-up added to the environment (R_HOME, R_SHARE_DIR, ..., etc/Renviron's TAR, R_ZIPCMD):
        # an Rscript process has them too, so every child gets them back over the stage's environment
        env = ro.r("Sys.getenv()")
        names_ = list(env.names)
        self.startup_env = {k: str(env[i]) for i, k in enumerate(names_)
                            if k not in before and k not in ("LD_LIBRARY_PATH", "PYTHON_SESSION_INITIALIZED")}

    def load_idle(self) -> None:
        """Run the next step of R_IDLE (only ahead of time: a stage that needs what failed loads it itself)."""
        with suppress(Exception):
            self.ro.r(f"invisible({self.idle.pop(0)})")

    def begin(self) -> None:
        """In the child, before the stage: R as ``Rscript`` has it where it matters to a stage."""
        os.environ.update({k: v for k, v in self.startup_env.items() if k not in os.environ})
        self.rlib.R_Interactive = 0  # interactive() is FALSE, as in Rscript (no progress bars, no prompts)
        # warnings are printed as they happen: embedded R has no top level to print deferred ones at
        self.ro.r("options(warn = 1)")

    def run(self, builtin: str) -> int:
        # parentheses: rpy2 returns None for an invisible value; run_stage catches every R error itself
        return _status(self.ro.r(f"(ambidex::run_stage(builtin = {json.dumps(builtin)}, exit = FALSE))"))

    def run_code(self, code: str, args: list[str]) -> int:
        """ambidex's own R code (``runners.run_r_code``) with ``args`` bound to ``args``; 1 if it fails, with
        the error on stderr as Rscript writes it (no R error reaches the top level of the embedded R)."""
        bound = ", ".join(json.dumps(str(a)) for a in args)  # a JSON string is an R string literal
        return _status(self.ro.r(
            f"(tryCatch({{ local({{\nargs <- as.character(c({bound}))\n{code}\n}}); 0L }}, error = function(e) {{\n"
            "  call <- conditionCall(e)\n"
            "  if (is.call(call) && identical(call[[1L]], quote(eval))) call <- NULL  # the code's own top level\n"
            "  msg <- if (is.null(call)) paste0('Error: ', conditionMessage(e))\n"
            "         else paste0('Error in ', paste(deparse(call, nlines = 1L), collapse = ''), ' : ',"
            " conditionMessage(e))\n"
            "  message(msg); message('Execution halted'); 1L }))"))

    def cleanup(self) -> None:
        """The zygote's end: the session's temporary folder, which its children shared, goes (os._exit skips
        R's own end, which would remove it while children still use it)."""
        import shutil

        shutil.rmtree(self.tempdir, ignore_errors=True)


def _status(value) -> int:
    """An R integer status as the exit code; 1 when R gave none."""
    return int(value[0]) if value is not None and len(value) else 1


def _libc():
    """The C library of this process (prctl, clearenv, fflush); None where ctypes cannot load it."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _preload(lang: str):
    if not hasattr(os, "pidfd_open"):
        raise RuntimeError("this Python has no os.pidfd_open (Linux 5.3 and newer)")
    os.close(os.pidfd_open(os.getpid()))  # ENOSYS on an older kernel: said now, not at the first fork
    if lang == "r":
        return _R()
    for name in PYTHON_PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the stage imports what it needs itself and reports what is missing
            continue
    return None


def _become(job: dict, zygote: int, r: _R | None) -> None:
    """In the forked child: the stage's logs, session, folder and environment."""
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):  # first: anything going wrong is logged there
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.close(_OUT)  # only the zygote answers the orchestrator
    os.setsid()
    libc = _libc()
    if libc is not None and hasattr(libc, "prctl"):  # not Linux: the zygote kills them when its input ends
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote:  # the zygote died before the request above took effect
        os._exit(1)
    if r is not None:  # Python's default SIGINT handler would raise inside R; R installs none embedded
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.chdir(job["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m` started there has it
    # the stage's environment, whole: what Python knows of, and what C code (R) set beside it
    os.environ.clear()
    if libc is not None:
        libc.clearenv()
    os.environ.update(job["env"])


def _child(job: dict, r: _R | None, zygote: int) -> None:
    """Run the stage in the forked child and end it; never returns into the zygote's loop."""
    from ._process import finish

    code = 1
    try:
        _become(job, zygote, r)
        if r is not None:
            r.begin()
            code = r.run_code(job["r_code"], job["args"]) if "r_code" in job else r.run(job["builtin"])
        else:
            from .run import main as run_main

            code = run_main(["--builtin", job["builtin"]])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported in the stage's stderr, exit 1
        with suppress(Exception):  # stderr itself may be what failed
            traceback.print_exc()
        code = 1
    # as a fresh process ends (_process.finish): non-daemon threads, atexit handlers, flushed output. Not
    # for R: R's end (rpy2's atexit handler) would remove the session's temporary folder, which the zygote
    # and its other children share; C's buffered output is flushed instead.
    code = finish(code, run_atexit=r is None)
    libc = _libc() if r is not None else None
    if libc is not None:
        libc.fflush(None)
    os._exit(code)


def _say(msg: dict) -> None:
    os.write(_OUT, (json.dumps(msg) + "\n").encode())


_OUT = 1


def main(argv: list[str]) -> int:
    global _OUT
    lang = argv[0] if argv else "python"
    # replies go to a copy of the original stdout; the zygote's own fd 1 is /dev/null from here on, so
    # nothing a package prints while loading can be taken for a reply
    _OUT = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    try:
        r = _preload(lang)
    except Exception as e:  # noqa: BLE001 - the orchestrator starts its stages fresh and they report it
        _say({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    for stream in (sys.stdout, sys.stderr):  # nothing the loading left buffered ends up in a stage's log
        stream.flush()
    _say({"ready": True})
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, None)
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (job id, pid)
    buf = b""
    open_input = True
    served = 0
    while open_input or children:
        # idle (a stage served, none running, none asked for): load what a later stage may need
        idle = r is not None and r.idle and served and not children
        events = sel.select(0 if idle else None)
        if not events and idle:
            r.load_idle()
            continue
        for key, _ in events:
            if key.data is None:  # stdin
                chunk = os.read(0, 65536)
                if not chunk:
                    open_input = False
                    sel.unregister(0)
                    for _, pid in children.values():  # nobody is waiting for them any more
                        kill_session(pid)
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        _start(json.loads(line), r, sel, children)
                        served += 1
            else:
                job_id, pid = children.pop(key.fd)
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status, usage = os.wait4(pid, 0)
                _say({"id": job_id, "status": status, "cpu": usage.ru_utime + usage.ru_stime,
                      "rss": int(usage.ru_maxrss) * 1024, "t1": time.monotonic()})
    if r is not None:
        r.cleanup()
    return 0


def _start(job: dict, r: _R | None, sel, children: dict) -> None:
    zygote = os.getpid()
    t0 = time.monotonic()  # the orchestrator's perf_counter runs on the same clock (CLOCK_MONOTONIC)
    try:
        pid = os.fork()
    except OSError as e:
        _say({"id": job["id"], "error": f"fork: {e}"})
        return
    if pid == 0:
        try:
            sel.close()
            for fd in children:
                os.close(fd)
            _child(job, r, zygote)  # never returns
        finally:
            os._exit(1)
    try:
        fd = os.pidfd_open(pid)
    except OSError as e:  # cannot watch it: it must not run unseen
        kill_session(pid)
        os.waitpid(pid, 0)
        _say({"id": job["id"], "error": f"pidfd_open: {e}"})
        return
    children[fd] = (job["id"], pid)
    sel.register(fd, selectors.EVENT_READ, pid)
    _say({"id": job["id"], "pid": pid, "rss0": _rss(pid), "t0": t0})


def _rss(pid: int) -> int:
    """The resident set of ``pid`` now, in bytes: of a child just forked, what it starts with (the pages of
    its zygote's it maps already; its peak RSS above this is the stage's own memory)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


if __name__ == "__main__":
    from ._process import tune_gc

    tune_gc()  # only built-in stages run in its children (ambidex_stage._process)
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
