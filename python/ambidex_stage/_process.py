"""_process: how the orchestrator's CLI and the built-in stages run their own process.

:func:`tune_gc` spaces out the cyclic garbage collector's passes: these processes move table rows
through Python objects (a million fetched rows are a million tuples), and with Python's default
thresholds each batch of them triggers collections that rescan every object alive (pandas, SciPy and
SQLAlchemy are hundreds of thousands): reading a 1M-row window from SQLite took 3.2 s instead of 1.6 s.
Cycles are still collected, later.

:func:`leave` ends a finished process without the interpreter's teardown: freeing every module at exit
(SciPy, pandas, SQLAlchemy, scikit-learn) costs 0.1-0.3 s per process on this kind of machine, and
nothing a finished command or built-in stage needs depends on it. A project's stage script keeps
Python's defaults and exits the usual way, since it may hold open files that only the teardown flushes.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading

__all__ = ["finish", "kill_session", "leave", "tune_gc"]

GC_THRESHOLDS = (20_000, 20, 20)  # Python's default: (700, 10, 10)


def tune_gc() -> None:
    """Collect cycles after 20,000 new container objects instead of 700 (and the older generations less
    often): the 1M-row window read above goes from 3.2 s to 1.6 s; memory held by garbage cycles
    waits a little longer to be freed."""
    import gc

    gc.set_threshold(*GC_THRESHOLDS)


def leave(code: int) -> None:
    """End the process with ``code``: the atexit handlers run (logging flushes, temporary folders are
    removed), stdout and stderr are flushed, then ``os._exit``. A failed flush of stdout (a closed pipe)
    exits 120, as Python does. While a non-daemon thread is still running, or with
    ``AMBIDEX_FAST_EXIT=0``, the process exits the usual way (``sys.exit``)."""
    running = [t for t in threading.enumerate()
               if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if running or os.environ.get("AMBIDEX_FAST_EXIT", "1") == "0":
        sys.exit(code)
    os._exit(finish(code))


def finish(code: int, *, run_atexit: bool = True) -> int:
    """What a process does at its end before the interpreter's teardown: wait for its non-daemon threads,
    run the atexit handlers (unless told not to), flush stdout and stderr. Returns the exit code: 120 for a
    failed flush of stdout after a success, as Python does. A forked stage ends with it (``zygote``)."""
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    if run_atexit:
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and not code:
                code = 120
    return code


def kill_session(pid: int) -> None:
    """SIGKILL a forked stage and what it started (its session), or the stage alone before its setsid
    (``zygote``)."""
    import signal

    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            continue
        except PermissionError:
            return
