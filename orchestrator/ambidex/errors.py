"""errors: the exception tree of ambidex, each error with a stable dotted code and an exit code.

    AmbidexError (ambidex.error, exit 1)
    +-- UsageError            usage.*       exit 2   bad arguments on the command line
    +-- ConfigError           config.*      exit 2   a YAML file that does not validate (file, line, key)
    +-- ContractError         contract.*    exit 3   a document or model folder that breaks contract/SPEC.md
    +-- StageError            stage.*       exit 1   a stage crashed, timed out or wrote no result.json
    +-- RegistryError         registry.*    exit 1   not found, conflict, schema mismatch, integrity
    +-- ArtifactError         artifact.*    exit 1   hash mismatch, path escape, format not allowed
    +-- DataError             data.*        exit 1   feature-store input refused (schema, key, window)
    +-- CheckFailed           check.*       exit 4   a check ran and failed (drift alert, smoke test)
    +-- LockedError           lock.held     exit 75  another invocation holds the pipeline lock

Library code raises these; only ``ambidex.cli`` turns them into messages and exit codes.
Every message says what happened, with the value received, then what to do next (``hint``).
"""
from __future__ import annotations

__all__ = [
    "AmbidexError", "UsageError", "ConfigError", "ContractError", "StageError",
    "RegistryError", "ArtifactError", "DataError", "CheckFailed", "LockedError",
]


class AmbidexError(Exception):
    """Root of every ambidex error: ``code`` is stable and documented, ``hint`` says what to do next."""

    code = "ambidex.error"
    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None, **details):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"

    def to_dict(self) -> dict:
        """The JSON envelope printed on stderr in ``--json`` mode."""
        out = {"code": self.code, "message": self.message, "exit_code": self.exit_code}
        if self.hint:
            out["hint"] = self.hint
        if self.details:
            out["details"] = {k: v for k, v in self.details.items() if _jsonable(v)}
        return out


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


class UsageError(AmbidexError):
    code = "usage.invalid"
    exit_code = 2


class ConfigError(AmbidexError):
    """A configuration file does not validate. ``problems`` lists every (file, line, key, message)."""

    code = "config.invalid"
    exit_code = 2

    def __init__(self, message: str, *, problems: list[dict] | None = None, **kw):
        super().__init__(message, **kw)
        self.problems = problems or []

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.problems:
            out["problems"] = self.problems
        return out


class ContractError(AmbidexError):
    code = "contract.invalid"
    exit_code = 3


class StageError(AmbidexError):
    code = "stage.crashed"
    exit_code = 1


class RegistryError(AmbidexError):
    code = "registry.error"
    exit_code = 1


class ArtifactError(AmbidexError):
    code = "artifact.error"
    exit_code = 1


class DataError(AmbidexError):
    code = "data.invalid"
    exit_code = 1


class CheckFailed(AmbidexError):
    code = "check.failed"
    exit_code = 4


class LockedError(AmbidexError):
    code = "lock.held"
    exit_code = 75
