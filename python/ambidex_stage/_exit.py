"""_exit: end a finished process without the interpreter's teardown.

Freeing every module at exit (SciPy, pandas, SQLAlchemy, scikit-learn) costs 0.1-0.3 s per process on
this kind of machine, and nothing a finished command or built-in stage needs depends on it. The
orchestrator's CLI and the built-in stages end with :func:`leave`; a project's stage script exits the
usual way, since it may hold open files that only the teardown flushes.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading

__all__ = ["leave"]


def leave(code: int) -> None:
    """End the process with ``code``: the atexit handlers run (logging flushes, temporary folders are
    removed), stdout and stderr are flushed, then ``os._exit``. A failed flush of stdout (a closed pipe)
    exits 120, as Python does. While a non-daemon thread is still running, or with
    ``AMBIDEX_FAST_EXIT=0``, the process exits the usual way (``sys.exit``)."""
    running = [t for t in threading.enumerate()
               if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if running or os.environ.get("AMBIDEX_FAST_EXIT", "1") == "0":
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and not code:
                code = 120
    os._exit(code)
