"""bench_cli: `ambidex --help` start-up against `mlflow --help` and a bare `import click, sqlalchemy`.

Goal (issue 2): under 0.3 s; MLflow took 3.0-4.7 s on this kind of machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .common import peer_python, row, time_command

AMBIDEX = str(Path(sys.executable).with_name("ambidex"))


def main() -> None:
    bare = time_command([sys.executable, "-c", "import click, sqlalchemy"])
    python_pass = time_command([sys.executable, "-c", "pass"])
    ours = time_command([AMBIDEX, "--help"])
    print("CLI start-up (median of 5):")
    row("python -c pass", python_pass)
    row("python -c 'import click, sqlalchemy' (floor)", bare)
    row("ambidex --help", ours, bare)
    mlflow_py = peer_python("mlflow", ["mlflow==3.17.*"])
    if mlflow_py:
        theirs = time_command([str(Path(mlflow_py).with_name("mlflow")), "--help"], repeat=3)
        row("mlflow --help", theirs, bare)
        print(f"  ambidex --help is {theirs / ours:.1f}x faster than mlflow --help; goal < 0.3 s: "
              f"{'met' if ours < 0.3 else 'NOT met'} ({ours:.3f} s)")


if __name__ == "__main__":
    main()
