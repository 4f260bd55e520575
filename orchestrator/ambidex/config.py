"""config: the models of ambidex.yaml and of pipeline files, and loading them with every problem named by file:line.

    >>> project = load_project(Path("."))                               # doctest: +SKIP
    >>> pipeline = load_pipeline(Path("config/churn.yaml"), project.root)  # doctest: +SKIP
    >>> [s.name for s in pipeline.stages]                               # doctest: +SKIP
    ['load', 'train_py', 'train_r', 'score_py', 'score_r']

A file that does not validate raises one ConfigError (exit 2) listing every problem:

    config/churn.yaml:12: stages[1].lang: 'julia' is not allowed; use one of: python, r

To add a section (``data:``, ``deploy:``, ``governance:``): write a small ``_Model``
subclass here, add it as a field with a default, and, for checks that need the
project on disk or several stages at once, append a function to ``PIPELINE_CHECKS``.
Messages for type, key and value errors follow from the model without more code.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .deploy import DeploymentSpec
from .fs_spec import MartSpec
from .governance import GovernanceSpec
from .notify import NotifySpec
from .errors import ConfigError
from .workspace import PROJECT_FILE, find_project_root  # noqa: F401 - part of this module's API
from .yamlload import Check, YamlDocument, format_path, load_validated

__all__ = [
    "CONFIG_VERSION", "PROJECT_FILE", "DEFAULT_REGISTRY", "PIPELINE_CHECKS",
    "Project", "RSettings", "PythonSettings", "Pipeline", "Defaults", "Stage", "Output", "InputRef",
    "CycleSpec", "BenchmarkSpec", "RetrainSpec", "PromotionSpec",
    "load_project", "find_project_root", "load_pipeline", "load_config", "config_hash",
    "parse_input_ref", "redact_url",
]

CONFIG_VERSION = 1
DEFAULT_REGISTRY = "sqlite:///.ambidex/registry.db"
_UPGRADE = "Upgrade ambidex to read it: pip install -U ambidex."

# ---------------------------------------------------------------- value types


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("ambidex_invalid", message)


def _named(pattern: str, what: str, rule: str):
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise _invalid(f"{value!r} is not a valid {what}; {rule}")
        return value

    return Annotated[str, AfterValidator(check)]


_DASHED = "use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter"
_SNAKE = "use 1 to 63 lowercase letters, digits or '_', starting with a letter"
_NAME_RE, _IDENT_RE = r"[a-z][a-z0-9_-]{0,62}", r"[a-z][a-z0-9_]{0,62}"
ProjectName = _named(_NAME_RE, "project name", _DASHED)
PipelineName = _named(_NAME_RE, "pipeline name", _DASHED)
ModelName = _named(_NAME_RE, "model name", _DASHED)
StageName = _named(_IDENT_RE, "stage name", _SNAKE)
IOName = _named(_IDENT_RE, "name", _SNAKE)
EnvName = _named(r"[A-Za-z_][A-Za-z0-9_]*", "environment variable name", "use letters, digits and '_'")
NonEmpty = Annotated[str, Field(min_length=1)]
PositiveInt = Annotated[int, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]  # R's set.seed takes a 32-bit integer


def _relpath_problem(value: str, what: str) -> str | None:
    if not value:
        return f"{what} path must not be empty"
    if value.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", value) or "\0" in value:
        return f"{what} path {value!r} is absolute; give a path relative to the project root"
    if ".." in re.split(r"[/\\]", value):
        return f"{what} path {value!r} leaves the project ('..'); give a path inside the project root"
    return None


def _check_script(value: str) -> str:
    problem = _relpath_problem(value, "script")
    if problem:
        raise _invalid(problem)
    return value


def _check_version(value: int) -> int:
    if value > CONFIG_VERSION:
        raise _invalid(f"{value} is newer than this ambidex reads (version {CONFIG_VERSION}). {_UPGRADE}")
    if value < CONFIG_VERSION:
        raise _invalid(f"{value} does not exist; write version: {CONFIG_VERSION}")
    return value


ConfigVersion = Annotated[int, AfterValidator(_check_version)]
ScriptPath = Annotated[str, AfterValidator(_check_script)]


def _check_registry(value: str) -> str:
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value):
        raise _invalid(f"{redact_url(value)!r} is not a database URL; write e.g. {DEFAULT_REGISTRY} or "
                       "postgresql+psycopg://user@host/db (name a variable holding it with registry_url_env)")
    return value


RegistryURL = Annotated[str, AfterValidator(_check_registry)]

# ---------------------------------------------------------------- input references


@dataclass(frozen=True)
class InputRef:
    """A parsed stage input: ``kind`` is "stage" (stage, output), "file" (path) or "model" (model, version)."""

    kind: Literal["stage", "file", "model", "mart", "sql"]
    stage: str | None = None
    output: str | None = None
    path: str | None = None
    model: str | None = None
    version: int | None = None
    mart: str | None = None
    scope: Literal["window", "history"] | None = None


def parse_input_ref(text: str) -> InputRef:
    """Parse an input reference; raises ValueError with a message naming the accepted forms.

    >>> parse_input_ref("train.model")
    InputRef(kind='stage', stage='train', output='model', path=None, model=None, version=None)
    >>> parse_input_ref("model:churn:3").version
    3
    """
    if text.startswith("file:"):
        path = text[len("file:"):]
        problem = _relpath_problem(path, "file")
        if problem:
            raise ValueError(problem)
        if not path.endswith(".csv"):
            raise ValueError(f"{text!r} is not a .csv file; a file input is a CSV table with a "
                             ".schema.json sidecar beside it (contract/SPEC.md section 3)")
        return InputRef("file", path=path)
    if text.startswith("mart:"):
        m = re.fullmatch(rf"mart:({_IDENT_RE})(?::(window|history))?", text)
        if not m:
            raise ValueError(f"{text!r} is not a mart reference; write mart:NAME (the run's window) or "
                             "mart:NAME:history (every row before the window's end)")
        return InputRef("mart", mart=m.group(1), scope=m.group(2) or "window")
    if text.startswith("sql:"):
        path = text[len("sql:"):]
        problem = _relpath_problem(path, "sql")
        if problem:
            raise ValueError(problem)
        if not path.endswith(".sql"):
            raise ValueError(f"{text!r} is not a .sql file; a sql input is a transform in sql/ run for the window")
        return InputRef("sql", path=path, scope="window")
    if text.startswith("model:"):
        m = re.fullmatch(rf"model:({_NAME_RE})(?::([1-9][0-9]*))?", text)
        if not m:
            raise ValueError(f"{text!r} is not a model reference; write model:NAME or model:NAME:VERSION "
                             f"(NAME: {_DASHED}; VERSION: a number from 1)")
        return InputRef("model", model=m.group(1), version=int(m.group(2)) if m.group(2) else None)
    m = re.fullmatch(rf"({_IDENT_RE})\.({_IDENT_RE})", text)
    if not m:
        raise ValueError(f"{text!r} is not an input reference; write STAGE.OUTPUT (an output of an earlier stage), "
                         "file:PATH.csv, model:NAME[:VERSION], mart:NAME[:history] or sql:PATH.sql")
    return InputRef("stage", stage=m.group(1), output=m.group(2))


def _check_ref(value: str) -> str:
    try:
        parse_input_ref(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return value


InputRefText = Annotated[str, AfterValidator(_check_ref)]

# ---------------------------------------------------------------- models


class _Model(BaseModel):
    """Base of every config section: unknown keys are errors, types are never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RSettings(_Model):
    """``r:`` in ambidex.yaml: the Rscript to run and extra library folders (R_LIBS)."""

    rscript: NonEmpty = "Rscript"
    libs: list[NonEmpty] = Field(default_factory=list)


class PythonSettings(_Model):
    """``python:`` in ambidex.yaml: the interpreter that runs Python stages."""

    executable: NonEmpty | None = None  # None: the interpreter running ambidex


class Project(_Model):
    """ambidex.yaml. Relative paths are relative to the project root (``root``)."""

    version: ConfigVersion
    project: ProjectName
    registry: RegistryURL = DEFAULT_REGISTRY
    registry_url_env: EnvName | None = None  # wins over ``registry`` when the variable is set
    artifacts: NonEmpty = ".ambidex/artifacts"
    state: NonEmpty = ".ambidex"
    r: RSettings = Field(default_factory=RSettings)
    python: PythonSettings = Field(default_factory=PythonSettings)
    # Project-wide defaults; a pipeline's own sections take precedence for its models.
    governance: GovernanceSpec | None = None
    notify: NotifySpec | None = None
    _root: Path | None = PrivateAttr(default=None)

    @property
    def name(self) -> str:
        return self.project

    @property
    def root(self) -> Path | None:
        """The folder holding ambidex.yaml (set by load_project)."""
        return self._root


class Defaults(_Model):
    """``defaults:`` of a pipeline: what a stage gets when it does not say."""

    timeout: PositiveInt = 3600
    seed: Seed = 42
    runner: Literal["rscript", "rpy2"] = "rscript"


# ``register`` is also ABCMeta.register on the model *class* (pydantic warns); instances read the field.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class Output(_Model):
        """One declared output of a stage; a model output may be registered under ``register``."""

        kind: Literal["table", "model"]
        register: ModelName | None = None

        @field_validator("register")
        @classmethod
        def _register_only_models(cls, value, info):
            if value is not None and info.data.get("kind") == "table":
                raise _invalid("register is only for kind: model; remove it or set kind: model")
            return value


class Stage(_Model):
    """One stage: a script (or a built-in) in Python or R, its params, inputs and outputs."""

    name: StageName
    lang: Literal["python", "r"] | None = None
    script: ScriptPath | None = None
    builtin: Literal["train", "score"] | None = None
    ingest: str | None = None  # a mart of data.marts: the orchestrator loads input `data` into it
    runner: Literal["rscript", "rpy2"] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[IOName, InputRefText] = Field(default_factory=dict)
    outputs: dict[IOName, Output] = Field(default_factory=dict)
    timeout: PositiveInt | None = None

    @field_validator("runner")
    @classmethod
    def _runner_only_for_r(cls, value, info):
        if value is not None and info.data.get("lang") == "python":
            raise _invalid("runner is only for R stages (lang: r); remove it from this python stage")
        return value

    @field_validator("params")
    @classmethod
    def _params_are_json(cls, value):
        for path, leaf in _leaves(value, ()):
            if isinstance(leaf, float) and not math.isfinite(leaf):
                shown = ".nan" if math.isnan(leaf) else "-.inf" if leaf < 0 else ".inf"
                raise _invalid(f"{format_path(path)} is {shown}, which JSON cannot carry; "
                               "use a finite number or quote it")
        return value

    @model_validator(mode="after")
    def _script_xor_builtin(self):
        if self.ingest is not None:
            extra = [k for k in ("lang", "script", "builtin", "runner") if getattr(self, k) is not None]
            if extra:
                raise _invalid(f"an ingest stage is run by the orchestrator; remove {', '.join(extra)}")
            if set(self.inputs) != {"data"} or self.outputs:
                raise _invalid("an ingest stage takes exactly one input named data and declares no outputs")
            return self
        if self.lang is None:
            raise _invalid("lang is required: python or r (or ingest: MART for a feature-store load)")
        if (self.script is None) == (self.builtin is None):
            raise _invalid("give exactly one of script: (a file in the project) or builtin: (train or score)"
                           + (", not both" if self.script else ""))
        return self

    @property
    def input_refs(self) -> dict[str, InputRef]:
        """``inputs`` parsed: ``{"train": InputRef(kind="stage", stage="load", output="churn")}``."""
        return {name: parse_input_ref(ref) for name, ref in self.inputs.items()}


class DataSpec(_Model):
    """``data:``: the feature-store marts this pipeline loads and reads (ambidex.featurestore.MartSpec)."""

    url_env: EnvName | None = None  # another database for the marts; default: the registry's
    marts: list[MartSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_marts(self):
        names = [m.name for m in self.marts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise _invalid(f"mart {dup[0]!r} is declared twice")
        return self

    def mart(self, name: str) -> MartSpec | None:
        return next((m for m in self.marts if m.name == name), None)


def _check_date(value: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise _invalid(f"{value!r} is not an RFC 3339 date; write YYYY-MM-DD (midnight UTC), e.g. 2024-01-01")
    import datetime as _dt

    try:
        _dt.date.fromisoformat(value)
    except ValueError:
        raise _invalid(f"{value!r} is not a calendar date; write YYYY-MM-DD, e.g. 2024-01-01") from None
    return value


DateText = Annotated[str, AfterValidator(_check_date)]
KPI_METRICS = ("roc_auc", "auc", "accuracy", "log_loss", "rmse", "mae")


class BenchmarkSpec(_Model):
    """``cycle.benchmark``: a business ``floor`` (give ``value``; SE 0) or the champion's ``holdout`` KPI
    frozen when it was promoted (with its SE)."""

    kind: Literal["floor", "holdout"] = "holdout"
    value: float | None = None

    @model_validator(mode="after")
    def _value_for_floor(self):
        if self.kind == "floor" and self.value is None:
            raise _invalid("a floor benchmark needs value: (the KPI the business accepts)")
        if self.kind == "holdout" and self.value is not None:
            raise _invalid("a holdout benchmark is measured, not given; remove value: or use kind: floor")
        return self


class RetrainSpec(_Model):
    """``cycle.retrain``: retrain on a data-drift alert and/or the KPI trigger, and every N windows as a fallback."""

    on: list[Literal["drift", "kpi"]] = Field(default_factory=lambda: ["drift", "kpi"])
    every: PositiveInt | None = None


class PromotionSpec(_Model):
    """``cycle.promotion``: the paired loss test's gates (drift.md section 8)."""

    z_min: Annotated[float, Field(gt=0)] = 1.645
    min_gain: Annotated[float, Field(ge=0)] = 0.002


class CycleSpec(_Model):
    """``cycle:``: the continuous-training loop ``ambidex run`` executes per window (DESIGN section 5)."""

    cadence: Literal["monthly", "weekly", "daily"]
    start: DateText  # the first window starts here (UTC midnight)
    end: DateText | None = None  # no window starts at or after this date (a back-test, a finished study)
    history_start: DateText | None = None  # cold start ingests [history_start, start); default: everything
    mart: IOName  # the mart whose window T is scored
    target: NonEmpty  # the label column of ``labels`` (default: of ``mart``)
    labels: IOName | None = None  # a mart holding entity key + target per window; default: ``mart``
    label_delay: Annotated[int, Field(ge=0)] = 1
    kpi: Literal["roc_auc", "auc", "accuracy", "log_loss", "rmse", "mae"]
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    train_windows: PositiveInt | None = None  # None: every labelled window before the hold-out
    previous: Annotated[int, Field(ge=0, le=5)] = 2  # earlier versions per candidate that compete (T-1, T-2)
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    candidates: Annotated[list[Stage], Field(min_length=1)]

    @model_validator(mode="after")
    def _calendar(self):
        if self.cadence == "monthly" and not self.start.endswith("-01"):
            raise _invalid(f"a monthly cycle starts on the first of a month, got start {self.start!r}")
        if self.end is not None and self.end <= self.start:
            raise _invalid(f"end {self.end!r} must be after start {self.start!r}")
        if self.history_start is not None and self.history_start >= self.start:
            raise _invalid(f"history_start {self.history_start!r} must be before start {self.start!r}")
        return self

    @property
    def metric(self) -> str:
        """The KPI under its ambidex.kpi name (``auc`` is ``roc_auc``)."""
        return "roc_auc" if self.kpi == "auc" else self.kpi


class Pipeline(_Model):
    """A pipeline file (config/*.yaml): its stages run in order; inputs name earlier outputs."""

    version: ConfigVersion
    name: PipelineName
    description: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    data: DataSpec | None = None
    stages: Annotated[list[Stage], Field(min_length=1)]
    deploy: DeploymentSpec | None = None
    governance: GovernanceSpec | None = None
    notify: NotifySpec | None = None
    cycle: CycleSpec | None = None  # continuous training: `ambidex run` runs the cycle per window
    _source: Path | None = PrivateAttr(default=None)
    _sha256: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this pipeline was loaded from (set by load_pipeline)."""
        return self._source

    @property
    def config_hash(self) -> str | None:
        """sha256 of the file's bytes as loaded, for lineage."""
        return self._sha256

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; KeyError if there is none."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def timeout_for(self, stage: Stage) -> int:
        return stage.timeout or self.defaults.timeout

    def runner_for(self, stage: Stage) -> str | None:
        """How an R stage runs ("rscript" or "rpy2"); None for a python stage."""
        return (stage.runner or self.defaults.runner) if stage.lang == "r" else None


def _leaves(value: Any, path: tuple) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path, value

# ---------------------------------------------------------------- checks beyond one value


def _stages(doc: YamlDocument) -> list[tuple[int, dict]]:
    stages = doc.data.get("stages") if isinstance(doc.data, dict) else None
    return [(i, s) for i, s in enumerate(stages) if isinstance(s, dict)] if isinstance(stages, list) else []


def _stage_index(doc: YamlDocument) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, stage in _stages(doc):
        if isinstance(stage.get("name"), str):
            index.setdefault(stage["name"], i)
    return index


def _inside(root: Path, relpath: str) -> bool:
    return (root / relpath).resolve().is_relative_to(root.resolve())


def check_stage_names(doc: YamlDocument, root: Path) -> Iterator[tuple[tuple, str]]:
    index = _stage_index(doc)
    for i, stage in _stages(doc):
        name = stage.get("name")
        if isinstance(name, str) and index[name] != i:
            first = doc.position(("stages", index[name], "name"))[0]
            yield ("stages", i, "name"), f"stage name '{name}' is already used on line {first}; names must be unique"


def check_scripts(doc: YamlDocument, root: Path) -> Iterator[tuple[tuple, str]]:
    for i, stage in _stages(doc):
        script = stage.get("script")
        if not isinstance(script, str) or _relpath_problem(script, "script"):
            continue
        if not (root / script).is_file():
            yield ("stages", i, "script"), (f"script '{script}' does not exist in the project ({root}); "
                                            "the path is relative to the project root")
        elif not _inside(root, script):
            yield ("stages", i, "script"), f"script '{script}' leads outside the project through a symlink"


def check_inputs(doc: YamlDocument, root: Path) -> Iterator[tuple[tuple, str]]:
    index = _stage_index(doc)
    stages = dict(_stages(doc))
    for i, stage in stages.items():
        inputs = stage.get("inputs")
        for name, text in (inputs.items() if isinstance(inputs, dict) else ()):
            try:
                ref = parse_input_ref(text) if isinstance(text, str) else None
            except ValueError:
                continue  # the model reports it
            path = ("stages", i, "inputs", name)
            if ref is not None and ref.kind == "stage":
                yield from _check_stage_ref(path, ref, i, index, stages)
            elif ref is not None and ref.kind == "file":
                yield from _check_file_ref(path, ref, root)
            elif ref is not None and ref.kind == "mart":
                yield from _check_mart_name(doc, path, ref.mart)
            elif ref is not None and ref.kind == "sql":
                if not (root / ref.path).is_file():
                    yield path, f"transform '{ref.path}' does not exist in the project ({root})"
                elif not _inside(root, ref.path):
                    yield path, f"transform '{ref.path}' leads outside the project through a symlink"
        if isinstance(stage.get("ingest"), str):
            yield from _check_mart_name(doc, ("stages", i, "ingest"), stage["ingest"])


def _check_mart_name(doc: YamlDocument, path, name: str) -> Iterator[tuple[tuple, str]]:
    data = doc.data.get("data") if isinstance(doc.data, dict) else None
    marts = data.get("marts") if isinstance(data, dict) else None
    declared = [m.get("name") for m in marts if isinstance(m, dict)] if isinstance(marts, list) else []
    if name not in declared:
        close = difflib.get_close_matches(name, [d for d in declared if isinstance(d, str)], n=1)
        yield path, (f"no mart named '{name}' in data.marts"
                     + (f" (did you mean '{close[0]}'?)" if close else
                        f"; declared: {', '.join(map(str, declared))}" if declared else "; declare it under data: marts:"))


def _check_stage_ref(path, ref: InputRef, i: int, index: dict, stages: dict) -> Iterator[tuple[tuple, str]]:
    earlier = [n for n, j in index.items() if j < i]
    if ref.stage not in index:
        close = difflib.get_close_matches(ref.stage, earlier, n=1)
        hint = f"did you mean '{close[0]}'?" if close else \
            f"earlier stages: {', '.join(earlier)}" if earlier else "this is the first stage"
        yield path, f"no stage named '{ref.stage}' ({hint})"
    elif index[ref.stage] >= i:
        yield path, (f"stage '{ref.stage}' does not run before this stage; an input can only use an output "
                     f"of an earlier stage, so move '{ref.stage}' up")
    else:
        outputs = stages[index[ref.stage]].get("outputs")
        if isinstance(outputs, dict) and ref.output not in outputs:
            yield path, (f"stage '{ref.stage}' has no output '{ref.output}'; its outputs: "
                         f"{', '.join(map(str, outputs)) or '(none)'}")


def _check_file_ref(path, ref: InputRef, root: Path) -> Iterator[tuple[tuple, str]]:
    sidecar = ref.path[: -len(".csv")] + ".schema.json"
    if not (root / ref.path).is_file():
        yield path, f"file '{ref.path}' does not exist in the project ({root})"
    elif not _inside(root, ref.path):
        yield path, f"file '{ref.path}' leads outside the project through a symlink"
    elif not (root / sidecar).is_file():
        yield path, (f"file '{ref.path}' has no schema sidecar '{sidecar}' beside it; "
                     "write one (contract/SPEC.md section 3)")


def _section(doc: YamlDocument, key: str):
    return doc.data.get(key) if isinstance(doc.data, dict) else None


def check_cycle(doc: YamlDocument, root: Path) -> Iterator[tuple[tuple, str]]:
    """``cycle:`` against the rest of the file: its marts, the deployment, the candidates' names and inputs."""
    cycle = _section(doc, "cycle")
    if not isinstance(cycle, dict):
        return
    for key in ("mart", "labels"):
        if isinstance(cycle.get(key), str):
            yield from _check_mart_name(doc, ("cycle", key), cycle[key])
    data = _section(doc, "data")
    marts = {m.get("name"): m for m in (data.get("marts") or []) if isinstance(m, dict)} \
        if isinstance(data, dict) and isinstance(data.get("marts"), list) else {}
    mart = marts.get(cycle.get("mart"))
    if isinstance(mart, dict) and (mart.get("load") != "incremental" or mart.get("incremental_by", "window") != "window"):
        yield ("cycle", "mart"), (f"mart '{cycle.get('mart')}' must load by window (load: incremental, "
                                  "incremental_by: window, time_column: ...) so each cycle window is one load")
    stages = dict(_stages(doc))
    if isinstance(cycle.get("mart"), str) and stages and not any(
            s.get("ingest") == cycle["mart"] for s in stages.values()):
        yield ("stages",), (f"no stage ingests the cycle's mart '{cycle['mart']}'; add a stage with "
                            f"ingest: {cycle['mart']} so each window is loaded")
    dep = _section(doc, "deploy")
    if not isinstance(dep, dict):
        yield ("cycle",), ("a cycle needs a deploy: section naming the deployment (name, entity_key) whose "
                           "champion it scores and replaces")
    elif isinstance(dep.get("source"), str) and dep["source"] != cycle.get("mart"):
        yield ("deploy", "source"), (f"deploy.source is '{dep['source']}' but the cycle scores mart "
                                     f"'{cycle.get('mart')}'; make them equal (or leave source out)")
    cands = cycle.get("candidates")
    if not isinstance(cands, list):
        return
    stage_names = {s.get("name") for s in stages.values()}
    seen: dict[str, int] = {}
    registered: dict[str, int] = {}
    for i, c in enumerate(cands):
        if not isinstance(c, dict):
            continue
        path = ("cycle", "candidates", i)
        name = c.get("name")
        if isinstance(name, str):
            if name in stage_names:
                yield path + ("name",), f"candidate name '{name}' is also a stage name; names must be unique"
            elif name in seen:
                yield path + ("name",), f"candidate name '{name}' is already used by candidates[{seen[name]}]"
            seen.setdefault(name, i)
        if c.get("ingest") is not None:
            yield path + ("ingest",), "a candidate trains a model; ingest stages belong under stages:"
        outs = c.get("outputs") if isinstance(c.get("outputs"), dict) else {}
        regs = [(k, o.get("register")) for k, o in outs.items() if isinstance(o, dict) and o.get("register")]
        if len(regs) != 1:
            yield path + ("outputs",), ("a candidate declares exactly one model output with register: MODEL "
                                        f"(found {len(regs)})")
        else:
            model = regs[0][1]
            if model in registered:
                yield path + ("outputs", regs[0][0], "register"), (
                    f"model '{model}' is already trained by candidates[{registered[model]}]; give each "
                    "candidate its own model name")
            registered.setdefault(model, i)
        inputs = c.get("inputs") if isinstance(c.get("inputs"), dict) else {}
        for k, text in inputs.items():
            try:
                ref = parse_input_ref(text) if isinstance(text, str) else None
            except ValueError:
                continue
            if ref is None:
                continue
            if ref.kind == "stage":
                yield path + ("inputs", k), (f"a candidate runs on its own, after the window's stages; read the "
                                             f"training rows with mart:{cycle.get('mart')} (the cycle passes the "
                                             "training windows as the run window), not another stage's output")
            elif ref.kind == "mart":
                yield from _check_mart_name(doc, path + ("inputs", k), ref.mart)
            elif ref.kind in ("sql", "file"):
                if not (root / ref.path).is_file():
                    yield path + ("inputs", k), f"'{ref.path}' does not exist in the project ({root})"
        script = c.get("script")
        if isinstance(script, str) and not _relpath_problem(script, "script") and not (root / script).is_file():
            yield path + ("script",), f"script '{script}' does not exist in the project ({root})"


PIPELINE_CHECKS: list[Check] = [check_stage_names, check_scripts, check_inputs, check_cycle]

# ---------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def load_config(path: Path, model: type[M], *, project_root: Path | None = None,
                checks: Iterable[Check] = ()) -> M:
    """Read ``path`` strictly and validate it against ``model``; raise one ConfigError listing every problem.

    ``checks`` run on the parsed document with the project root and return (key path, message) pairs.

    >>> load_config(Path("config/churn.yaml"), Pipeline, project_root=Path("."))  # doctest: +SKIP
    Pipeline(version=1, name='churn', ...)
    """
    return load_validated(Path(path), model, project_root=project_root, checks=checks,
                          newest_version=CONFIG_VERSION)[0]


def load_project(root: Path) -> Project:
    """The validated ambidex.yaml of the project at ``root``; ConfigError if it is absent or invalid.

    >>> load_project(Path("/srv/churn")).registry                    # doctest: +SKIP
    'sqlite:///.ambidex/registry.db'
    """
    root = Path(root)
    if not (root / PROJECT_FILE).is_file():
        raise ConfigError(f"No {PROJECT_FILE} in {root}.", code="config.not_found",
                          hint="Run 'ambidex init' to create a project, or run ambidex inside one.")
    project = load_config(root / PROJECT_FILE, Project, project_root=root)
    project._root = root.resolve()
    return project




def load_pipeline(path: Path, project_root: Path) -> Pipeline:
    """The validated pipeline at ``path`` (absolute, relative to the current folder, or else to the project root).

    >>> p = load_pipeline(Path("config/churn.yaml"), Path("/srv/churn"))   # doctest: +SKIP
    >>> p.stages[1].input_refs["train"].stage                            # doctest: +SKIP
    'load'
    """
    root, path = Path(project_root), Path(path)
    if not path.is_absolute() and not path.exists():
        path = root / path
    if not path.is_file():
        found = sorted(p.name for p in (root / "config").glob("*.yaml")) if (root / "config").is_dir() else []
        raise ConfigError(f"No pipeline file {path}.", code="config.not_found",
                          hint=f"Pipelines in {root / 'config'}: {', '.join(found)}." if found
                          else "Write one in config/ (ambidex init creates config/example.yaml).")
    pipeline, raw = load_validated(path, Pipeline, project_root=root, checks=PIPELINE_CHECKS,
                                   newest_version=CONFIG_VERSION)
    pipeline._source = path.resolve()
    pipeline._sha256 = hashlib.sha256(raw).hexdigest()
    return pipeline


def config_hash(path: Path) -> str:
    """sha256 (hex) of the file's bytes, recorded as lineage.config_hash.

    >>> config_hash(Path("config/churn.yaml"))                       # doctest: +SKIP
    '9f2c...'
    """
    from .lineage import file_sha256

    return file_sha256(Path(path))


def redact_url(url: str) -> str:
    """``url`` with its password (and any secret-looking query value) replaced by ``***``.

    >>> redact_url("postgresql+psycopg://ml:s3cr3t@db:5432/registry?sslpassword=x")
    'postgresql+psycopg://ml:***@db:5432/registry?sslpassword=***'
    """
    from .db import redact_url as _redact  # one implementation for database URLs

    return _redact(url)


