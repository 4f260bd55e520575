"""context: the parsed context.json a stage receives (SPEC 2.1), with accessors for inputs, outputs, metrics and artifacts.

A script gets it as ``main(ctx)``, or calls ``ambidex_stage.stage_context()`` (alias
``ambidex_stage.context()``) from top-level code. Metrics, params and artifacts logged here are
written into result.json by ``ambidex_stage.run`` when the stage ends.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ContractError, StageError
from .validate import check_version, orchestrator_validated, validate_document

__all__ = ["Context", "stage_context", "set_current"]

_CURRENT: "Context | None" = None


@dataclass
class Context:
    """One stage's context. ``raw`` keeps the whole document, unknown fields included."""

    run_id: str
    pipeline: str
    stage: str
    lang: str
    project_root: Path
    output_dir: Path
    params: dict
    inputs: dict
    outputs: dict
    window: dict | None
    seed: int
    raw: dict = field(repr=False)
    path: Path | None = None
    metrics: list = field(default_factory=list, repr=False)
    logged_params: dict = field(default_factory=dict, repr=False)
    artifacts: list = field(default_factory=list, repr=False)

    @classmethod
    def from_dict(cls, doc: dict, path=None) -> "Context":
        """Validate a context document and build the Context."""
        if orchestrator_validated():
            check_version("context", doc, source=str(path) if path else None)
        else:
            validate_document("context", doc, source=str(path) if path else None)
        return cls(run_id=doc["run_id"], pipeline=doc["pipeline"], stage=doc["stage"], lang=doc["lang"],
                   project_root=Path(doc["project_root"]), output_dir=Path(doc["output_dir"]),
                   params=dict(doc["params"]), inputs=dict(doc["inputs"]), outputs=dict(doc["outputs"]),
                   window=doc["window"], seed=int(doc["seed"]), raw=doc, path=Path(path) if path else None)

    @classmethod
    def load(cls, path=None) -> "Context":
        """Load from ``path``, or from the ``AMBIDEX_CONTEXT`` environment variable."""
        path = path or os.environ.get("AMBIDEX_CONTEXT")
        if not path:
            raise StageError("No stage context: AMBIDEX_CONTEXT is not set and no path was given.",
                             hint="Run the script through 'python -m ambidex_stage.run SCRIPT' under the "
                                  "orchestrator, or pass --context PATH.")
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise StageError(f"Context file {path} does not exist.", hint="Check AMBIDEX_CONTEXT.") from None
        except json.JSONDecodeError as e:
            raise ContractError(f"Context file {path} is not JSON: {e}.", code="contract.invalid_document",
                                hint="The orchestrator writes context.json; report this as a bug.") from None
        return cls.from_dict(doc, path)

    # ------------------------------------------------------------ inputs
    def _entry(self, table: dict, name: str, what: str) -> dict:
        if name not in table:
            raise StageError(f"Stage {self.stage!r} has no {what} named {name!r}; it has {sorted(table)}.",
                             hint=f"Declare it under the stage's {what}s in the pipeline YAML.")
        return table[name]

    def _abs(self, p: str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.project_root / p

    def input_path(self, name: str) -> Path:
        """Absolute path of input ``name`` (a CSV for a table, a folder for a model)."""
        return self._abs(self._entry(self.inputs, name, "input")["path"])

    def input_table(self, name: str):
        """Input ``name`` read as a DataFrame in the contract's canonical dtypes."""
        from .tables import read_table

        e = self._entry(self.inputs, name, "input")
        if e["kind"] != "table":
            raise StageError(f"Input {name!r} is a {e['kind']}, not a table.", hint="Use ctx.input_model().")
        return read_table(self._abs(e["path"]), e.get("schema"))

    def input_schema(self, name: str) -> dict:
        """The table schema of input ``name`` (inline in the context, else the sidecar)."""
        from .tables import read_schema

        e = self._entry(self.inputs, name, "input")
        return e["schema"] if e.get("schema") else read_schema(self._abs(e["path"]))

    def input_model(self, name: str) -> Path:
        """Path of the model folder given as input ``name``."""
        e = self._entry(self.inputs, name, "input")
        if e["kind"] != "model":
            raise StageError(f"Input {name!r} is a {e['kind']}, not a model.", hint="Use ctx.input_table().")
        return self._abs(e["path"])

    # ------------------------------------------------------------ outputs
    def output_path(self, name: str) -> Path:
        """Absolute path where output ``name`` must be written (its parent directory is created)."""
        p = self._abs(self._entry(self.outputs, name, "output")["path"])
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def output_kind(self, name: str) -> str:
        return self._entry(self.outputs, name, "output")["kind"]

    def write_table(self, name: str, df, schema: dict | None = None) -> dict:
        """Write DataFrame ``df`` as table output ``name`` (CSV + sidecar); returns the schema."""
        from .tables import write_table

        if self.output_kind(name) != "table":
            raise StageError(f"Output {name!r} is a {self.output_kind(name)}, not a table.",
                             hint="Write a model folder at ctx.output_path(name) instead.")
        return write_table(df, self.output_path(name), schema)

    # ------------------------------------------------------------ logging
    def log_metric(self, name: str, value, step: int = 0) -> None:
        """Record a metric for result.json (non-finite values are recorded as null)."""
        v = None if value is None else float(value)
        self.metrics.append({"name": str(name), "value": v if v is None or math.isfinite(v) else None,
                             "step": int(step)})

    def log_param(self, key: str, value) -> None:
        """Record a parameter the stage chose (must be JSON-serialisable)."""
        json.dumps(value)
        self.logged_params[str(key)] = value

    def add_artifact(self, path, kind: str) -> None:
        """Keep an extra file written under output_dir (``path`` absolute inside it, or relative to it)."""
        p = Path(path)
        rel = p
        if p.is_absolute():
            try:
                rel = p.resolve().relative_to(self.output_dir.resolve())
            except ValueError:
                raise StageError(f"Artifact {path} is outside output_dir {self.output_dir}.",
                                 hint="Write artifacts under ctx.output_dir.") from None
        if ".." in rel.parts:
            raise StageError(f"Artifact path {path!r} escapes output_dir.", hint="Use a path under ctx.output_dir.")
        self.artifacts.append({"path": rel.as_posix(), "kind": str(kind)})

    def declared_outputs(self) -> dict:
        return {k: {"kind": v["kind"], "path": v["path"]} for k, v in self.outputs.items()}


def set_current(ctx: "Context | None") -> None:
    """Make ``ctx`` the context returned by :func:`stage_context` (used by ``ambidex_stage.run``)."""
    global _CURRENT
    _CURRENT = ctx


def stage_context() -> Context:
    """The running stage's context (loaded from ``AMBIDEX_CONTEXT`` on first use)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = Context.load()
    return _CURRENT
