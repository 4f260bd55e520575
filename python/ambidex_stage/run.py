"""run: the stage entry point, ``python -m ambidex_stage.run SCRIPT.py`` or ``--builtin train|score``.

Loads the context (``AMBIDEX_CONTEXT`` or ``--context PATH``), runs the script's ``main(ctx)``
(or its top-level code, which may call ``ambidex_stage.stage_context()``), checks that every
declared output exists, and writes result.json. On any exception: the traceback goes to stderr,
result.json gets ``status: "error"`` and ``error {code, message, hint}`` (code from the exception's
``.code``; a module that cannot be imported is ``stage.runtime_missing`` naming it; else
``stage.failed``), and the exit code is 1.

Warnings raised while the stage runs are still printed to stderr as usual and are also written,
in order, as result.json's ``warnings`` (their messages; at most ``MAX_WARNINGS``, then one line
saying how many more there were) - as the R SDK does.
"""
from __future__ import annotations

import json
import os
import re
import runpy
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

from .context import Context, set_current
from .errors import StageError
from .result import write_result

__all__ = ["main", "run_stage", "check_outputs"]

_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_WARNINGS = 100


@contextmanager
def collect_warnings():
    """Record the message of every warning shown inside the block; each is still printed to stderr
    as it happens (the active warning filters decide what is shown, as without this)."""
    seen: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None):
        seen.append(str(message))
        try:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        except (OSError, ValueError):  # stderr closed: the record in result.json remains
            pass

    with warnings.catch_warnings():  # restores warnings.showwarning and the filters on exit
        warnings.showwarning = show
        yield seen


def _warning_list(seen: list[str]) -> list[str]:
    if len(seen) <= MAX_WARNINGS:
        return list(seen)
    return seen[:MAX_WARNINGS] + [f"... and {len(seen) - MAX_WARNINGS} more warning(s), not recorded"]


def check_outputs(ctx: Context) -> None:
    """Raise ``stage.failed`` naming the first declared output that was not written (or is invalid)."""
    from .manifest import read_manifest
    from .tables import read_schema, sidecar_path

    for name, out in ctx.outputs.items():
        p = ctx._abs(out["path"])
        if out["kind"] == "table":
            if not p.is_file() or not sidecar_path(p).is_file():
                raise StageError(f"Stage {ctx.stage!r} did not write its declared table output {name!r} "
                                 f"({p if not p.is_file() else sidecar_path(p)} is missing).",
                                 hint=f"Call ctx.write_table({name!r}, df) before main returns.")
            read_schema(p)
        else:
            if not (p / "model.json").is_file():
                raise StageError(f"Stage {ctx.stage!r} did not write its declared model output {name!r} ({p}).",
                                 hint=f"Write the model folder (model.json and payload) at ctx.output_path({name!r}).")
            read_manifest(p)


def _error_dict(exc: BaseException) -> dict:
    if isinstance(exc, ModuleNotFoundError) and getattr(exc, "code", None) is None and exc.name:
        top = exc.name.split(".")[0]
        return {"code": "stage.runtime_missing",
                "message": f"The stage needs Python module '{exc.name}', which is not installed ({exc}).",
                "hint": f"Install the package that provides '{top}' into the stage's Python environment "
                        f"(e.g. pip install {top})."}
    code = getattr(exc, "code", None)
    if not (isinstance(code, str) and _CODE_RE.match(code)):
        code = "stage.failed"
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    hint = getattr(exc, "hint", None)
    return {"code": code, "message": str(message), "hint": hint if isinstance(hint, str) else None}


def run_stage(ctx: Context, script: str | None = None, builtin: str | None = None) -> int:
    """Run one stage under ``ctx``; writes result.json and returns the exit code (0 or 1)."""
    set_current(ctx)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    with collect_warnings() as seen:
        return _run_collected(ctx, script, builtin, seen)


def _run_collected(ctx: Context, script: str | None, builtin: str | None, seen: list[str]) -> int:
    try:
        if builtin:
            from . import builtins

            if builtin not in ("train", "score"):
                raise StageError(f"Unknown built-in stage {builtin!r}.", hint="Use train or score.")
            getattr(builtins, builtin)(ctx)
        else:
            path = Path(script)
            if not path.is_absolute():
                path = ctx.project_root / path
            if not path.is_file():
                raise StageError(f"Stage script {path} does not exist.", hint="Fix the stage's script path.")
            sys.path.insert(0, str(path.parent))
            try:
                ns = runpy.run_path(str(path), run_name="__ambidex_stage__")
            except SystemExit as e:
                if e.code not in (0, None):
                    raise StageError(f"Stage script {path.name} called sys.exit({e.code!r}).",
                                     hint="Raise an exception (or return) instead of exiting.") from None
                ns = {}
            fn = ns.get("main")
            if callable(fn):
                try:
                    fn(ctx)
                except SystemExit as e:
                    if e.code not in (0, None):
                        raise StageError(f"main() called sys.exit({e.code!r}).",
                                         hint="Raise an exception (or return) instead of exiting.") from None
        check_outputs(ctx)
    except Exception as exc:  # noqa: BLE001 - every failure becomes result.json
        traceback.print_exc(file=sys.stderr)
        write_result(ctx.output_dir, "error", ctx.metrics, ctx.logged_params, {}, ctx.artifacts, _error_dict(exc),
                     warnings=_warning_list(seen))
        return 1
    finally:
        set_current(None)
    write_result(ctx.output_dir, "ok", ctx.metrics, ctx.logged_params, ctx.declared_outputs(), ctx.artifacts,
                 warnings=_warning_list(seen))
    return 0


USAGE = ("usage: python -m ambidex_stage.run (SCRIPT | --builtin train|score) [--context PATH]\n"
         "Run one ambidex stage: SCRIPT defines main(ctx) or uses stage_context(); the context is\n"
         "$AMBIDEX_CONTEXT unless --context is given. Example: python -m ambidex_stage.run stages/train.py")


class _Args:
    script = builtin = context = None


def _parse_args(argv: list[str]) -> _Args:
    """Three options need no argparse, whose set-up costs ~7 ms of every stage start."""
    args, rest = _Args(), list(argv)
    while rest:
        a = rest.pop(0)
        if a in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if a in ("--builtin", "--context") or a.startswith(("--builtin=", "--context=")):
            name, _, value = a.partition("=")
            if not value:
                if not rest:
                    _usage_error(f"{name} needs a value")
                value = rest.pop(0)
            setattr(args, name[2:], value)
        elif a.startswith("-"):
            _usage_error(f"unknown option {a}")
        elif args.script is None:
            args.script = a
        else:
            _usage_error(f"unexpected argument {a}")
    if args.builtin not in (None, "train", "score"):
        _usage_error(f"--builtin must be train or score, not {args.builtin!r}")
    if (args.script is None) == (args.builtin is None):
        _usage_error("give exactly one of SCRIPT or --builtin")
    return args


def _usage_error(message: str) -> None:
    sys.stderr.write(f"{USAGE}\nerror: {message}\n")
    raise SystemExit(2)


def main(argv=None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        ctx = Context.load(args.context)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        _result_without_context(args.context or os.environ.get("AMBIDEX_CONTEXT"), exc)
        return 1
    return run_stage(ctx, args.script, args.builtin)


def _result_without_context(path, exc) -> None:
    """Best effort: an invalid context still gets result.json in its output_dir when that is readable."""
    try:
        with open(path, encoding="utf-8") as f:
            out = Path(json.load(f)["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        write_result(out, "error", error=_error_dict(exc))
    except Exception:  # noqa: BLE001 - nothing more we can do; stderr has the traceback
        pass


def entry(argv=None) -> None:
    """``python -m ambidex_stage.run``: run the stage and exit with its status. A built-in stage runs with
    fewer garbage-collector passes and its process ends without the interpreter's teardown
    (``_process``); a script keeps Python's defaults and exits the usual way, since it may hold open
    files that only the teardown flushes."""
    from ._process import leave, tune_gc

    argv = sys.argv[1:] if argv is None else list(argv)
    builtin = _parse_args(argv).builtin  # main parses them again: a bad one exits 2 here as it would there
    if builtin:
        tune_gc()
    code = main(argv)
    if builtin:
        leave(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
