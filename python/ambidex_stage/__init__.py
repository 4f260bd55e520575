"""ambidex_stage: the light Python stage SDK of ambidex; reads and writes the files of contract/SPEC.md.

Heavy libraries (pandas, pyarrow, scikit-learn, jsonschema) are imported only when a function
needs them, so ``import ambidex_stage`` stays cheap.

    >>> import ambidex_stage
    >>> ambidex_stage.CONTRACT_VERSION
    1
"""
from __future__ import annotations

__version__ = "0.1.0"

from .validate import CONTRACT_VERSION, validate_document  # noqa: E402
from .errors import ArtifactError, ContractError, StageError, StageSDKError  # noqa: E402
from .context import Context, stage_context  # noqa: E402
from .result import write_result  # noqa: E402
from .tables import coerce_to_signature, read_schema, read_table, schema_from_frame, write_table  # noqa: E402
from .manifest import load_payload, normalize_importance, read_manifest, write_manifest  # noqa: E402

# ``ambidex_stage.context()`` as the brief/R side name it. Note: this attribute shadows the
# ``ambidex_stage.context`` submodule; import the class with ``from ambidex_stage.context import Context``.
context = stage_context

__all__ = [
    "__version__", "CONTRACT_VERSION",
    "Context", "stage_context", "context",
    "read_table", "write_table", "read_schema", "schema_from_frame", "coerce_to_signature",
    "read_manifest", "write_manifest", "normalize_importance", "load_payload",
    "validate_document", "write_result",
    "StageSDKError", "ContractError", "ArtifactError", "StageError",
]
