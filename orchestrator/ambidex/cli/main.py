"""cli.main: the `ambidex` command: lazy sub-command loading and the error -> exit-code mapping.

Exit codes: 0 ok; 1 operational error; 2 usage or config error; 3 contract violation;
4 a check ran and failed; 75 the pipeline is already running.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys

import click

# name -> (module, attribute, one-line help). Modules load only when their command runs, so
# `ambidex --help` imports click alone.
COMMANDS = {
    "init": ("ambidex.cli.project", "init", "Scaffold a new project (ambidex.yaml, config/, python/, r/, sql/)."),
    "validate": ("ambidex.cli.project", "validate", "Validate a pipeline YAML without running anything."),
    "run": ("ambidex.cli.project", "run", "Run a pipeline: every stage in order, then register its models."),
    "runs": ("ambidex.cli.runs", "runs", "List, show and track runs (pipelines and experiments)."),
    "models": ("ambidex.cli.models", "models", "List, show and score registered models and versions."),
    "verify": ("ambidex.cli.models", "verify", "Check every READY model version's files against their hashes."),
    "db": ("ambidex.cli.project", "db", "Registry database: upgrade and status."),
    "data": ("ambidex.cli.data", "data", "Feature store: ingest, list, show, diff, lineage."),
    "deploy": ("ambidex.cli.deploy", "deploy", "Deployments: create, promote, rollback, history, smoke tests."),
    "score": ("ambidex.cli.deploy", "score", "Score a window with every model of a deployment's live revision."),
    "approve": ("ambidex.cli.deploy", "approve", "Approve MODEL:VERSION, bound to its bytes (governance)."),
    "reject": ("ambidex.cli.deploy", "reject", "Reject MODEL:VERSION with a note (governance)."),
    "notifications": ("ambidex.cli.deploy", "notifications", "The notification outbox: list and dispatch."),
    "schedule": ("ambidex.cli.schedule", "schedule", "Run pipelines from cron: install, show and remove their crontab lines."),
    "drift": ("ambidex.cli.drift", "drift", "Data drift: compare two tables, check a window, show history."),
    "kpi": ("ambidex.cli.drift", "kpi", "Model KPIs per window with standard errors."),
    "cycle": ("ambidex.cli.cycle", "cycle", "Continuous training: the windows processed and every decision."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        formatter.write_paragraph()
        with formatter.section("Commands"):
            formatter.write_dl([(n, COMMANDS[n][2]) for n in sorted(COMMANDS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="ambidex")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """ambidex: MLOps on one server, R and Python models as equal citizens.

    \b
    Example:
      ambidex init myproject && cd myproject
      ambidex run config/example.yaml
      ambidex models list
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map every error to its message and exit code."""
    from .output import wants_json

    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="ambidex", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as exc:
        if wants_json(args):
            click.echo(json.dumps({"code": "usage.invalid", "message": exc.format_message(), "exit_code": 2}), err=True)
        else:
            exc.show()
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the one place errors become exit codes
        from ..errors import AmbidexError

        if type(exc).__module__.startswith("sqlalchemy"):
            exc = database_error(exc)
        if not isinstance(exc, AmbidexError):
            raise
        if wants_json(args):
            click.echo(json.dumps(exc.to_dict(), ensure_ascii=False, default=str), err=True)
        else:
            click.echo(f"Error [{exc.code}]: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
        return exc.exit_code


def database_error(exc: Exception):
    """A database failure as an ambidex error: what happened (no traceback, no password) and what to do."""
    from ..errors import AmbidexError, RegistryError

    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    low = text.lower()
    if "database or disk is full" in low or "no space left" in low or "disk full" in low:
        return RegistryError(f"The database is out of space: {text}. The transaction was rolled back; nothing changed.",
                             code="registry.disk_full",
                             hint="Free disk space where the registry lives (or SQLite's temp directory), then retry.")
    name = type(exc).__name__
    if name in ("OperationalError", "InterfaceError") and any(
            w in low for w in ("connect", "connection", "could not", "refused", "unable to open", "timeout")):
        return RegistryError(f"Cannot reach the registry database: {text}.", code="registry.unavailable",
                             hint="Check that the database server is running and that the URL "
                                  "(registry / registry_url_env in ambidex.yaml) is right.")
    if isinstance(exc, AmbidexError):
        return exc
    return RegistryError(f"The database refused the operation ({name}): {text}. The transaction was rolled back.",
                         code="registry.database_error",
                         hint="Run 'ambidex db upgrade' if the schema is behind; otherwise report this with the log.")


def entry() -> None:
    """The console script: run the command with fewer garbage-collector passes, then leave without
    tearing the interpreter down (``ambidex_stage._process``)."""
    from ambidex_stage._process import tune_gc

    tune_gc()
    leave(main())


def leave(code: int) -> None:
    """End the process with ``code`` once the command has returned: the databases are closed first
    (SQLite checkpoints its WAL, a server sees a clean goodbye), then ``ambidex_stage._process.leave``
    skips the interpreter's teardown, 0.1-0.3 s of every command."""
    from ambidex_stage._process import leave as fast

    db = sys.modules.get("ambidex.db")  # not imported: no engine was made
    if db is not None:
        db.dispose_all()
    fast(code)


if __name__ == "__main__":
    entry()
