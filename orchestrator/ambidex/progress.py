"""progress: show long work on a terminal and stay silent under cron (stderr not a TTY)."""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

__all__ = ["stage_reporter", "is_interactive"]


def is_interactive() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def stage_reporter(enabled: bool = True) -> Iterator[Callable[[str, str], None]]:
    """A callback ``report(stage, state)`` that shows a spinner per stage on a terminal, else nothing."""
    if not (enabled and is_interactive()):
        yield lambda stage, state: None
        return
    from rich.console import Console
    from rich.status import Status

    console = Console(stderr=True)
    status: dict = {}

    def report(stage: str, state: str) -> None:
        if state == "start":
            status["t0"] = time.perf_counter()
            status["s"] = Status(f"stage {stage} running...", console=console)
            status["s"].start()
            return
        if "s" in status:
            status["s"].stop()
        mark = "[green]done[/]" if state == "done" else "[red]failed[/]"
        console.print(f"stage {stage}: {mark} in {time.perf_counter() - status.get('t0', time.perf_counter()):.1f} s")

    try:
        yield report
    finally:
        if "s" in status:
            status["s"].stop()
