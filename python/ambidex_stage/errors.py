"""errors: the exceptions a stage raises, each with a stable dotted ``code`` from contract/SPEC.md section 5.

    StageSDKError            (stage.failed, exit 1)  root; any other exception in a stage maps to stage.failed
    +-- ContractError        contract.*     exit 3   a document, table or input that breaks the contract
    +-- ArtifactError        artifact.*     exit 1   hash mismatch, format not allowed, path escape
    +-- StageError           stage.*        exit 1   a stage-level failure (missing output, bad params)

Stdlib only: the SDK raises these, ``ambidex_stage.run`` writes them into result.json as
``error {code, message, hint}`` and the orchestrator maps the code to its own exception tree.
Every message says what happened, with the value received; ``hint`` says what to do next.
"""
from __future__ import annotations

__all__ = ["StageSDKError", "ContractError", "ArtifactError", "StageError"]


class StageSDKError(Exception):
    """Root of the stage SDK's errors: ``code`` is stable, ``message`` says what, ``hint`` what next.

    >>> e = ContractError("column 'x' missing", code="contract.missing_column")
    >>> (e.code, e.exit_code)
    ('contract.missing_column', 3)
    """

    code = "stage.failed"
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
        """The ``error`` object of result.json."""
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ContractError(StageSDKError):
    """Something breaks contract/SPEC.md (``contract.*`` codes)."""

    code = "contract.invalid_document"
    exit_code = 3


class ArtifactError(StageSDKError):
    """A model file failed verification before deserialisation (``artifact.*`` codes)."""

    code = "artifact.hash_mismatch"
    exit_code = 1


class StageError(StageSDKError):
    """A stage-level failure: bad parameters, a declared output not written (``stage.*`` codes)."""

    code = "stage.failed"
    exit_code = 1
