"""benchmarks.common: timing, peak memory and peer-tool virtualenvs shared by the benchmarks."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def median_time(fn, repeat: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs (the machine is shared and noisy)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_command(argv: list[str], repeat: int = 5, **kw) -> float:
    def run():
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, **kw)
    run()  # warm the page cache once
    return median_time(run, repeat)


def peer_python(name: str, requirements: list[str]) -> str | None:
    """The python of a benchmark-only virtualenv ``benchmarks/.venv-<name>`` (created on first use),
    so peer tools never enter the project's own environment. None if it cannot be installed."""
    venv = HERE / f".venv-{name}"
    py = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        print(f"[setup] installing {' '.join(requirements)} into {venv} (once)...", file=sys.stderr, flush=True)
        if subprocess.call(["python3", "-m", "venv", str(venv)]) != 0:
            return None
        rc = subprocess.call([str(py), "-m", "pip", "install", "-q", *requirements],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rc != 0:
            print(f"[setup] could not install {requirements}; skipping that peer", file=sys.stderr)
            return None
        stamp.touch()
    return str(py)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def row(label: str, seconds: float, baseline: float | None = None, note: str = "") -> None:
    rel = f"  ({ratio(seconds, baseline)} of baseline)" if baseline else ""
    print(f"  {label:<58} {seconds:9.4f} s{rel}  {note}".rstrip(), flush=True)


def env_with_r() -> dict:
    env = dict(os.environ)
    env.setdefault("AMBIDEX_R_LIBS", str(Path(sys.prefix) / "R-library"))
    return env
