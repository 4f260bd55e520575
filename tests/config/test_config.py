"""Tests for ambidex.config: project and pipeline models, file:line problem reports, references, paths, secrets."""
from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from ambidex.config import (
    DEFAULT_REGISTRY, InputRef, Pipeline, Project, Stage, config_hash, find_project_root, load_config,
    load_pipeline, load_project, parse_input_ref, redact_url,
)
from ambidex.errors import ConfigError
from ambidex.yamlload import load_yaml

VALID = """\
version: 1
name: churn
description: Churn, two languages.
defaults:
  timeout: 600
  seed: 7
  runner: rpy2
stages:
  - name: load
    lang: r
    script: r/load.R
    params:
      as_of: "2024-12-01"
      window: 1:30
      nested: {grid: [0.1, 0.2], on: true, label: NO}
    inputs:
      raw: file:data/raw.csv
    outputs:
      churn: {kind: table}
  - name: train_py
    lang: python
    builtin: train
    inputs:
      train: load.churn
      warm: model:churn_py:3
    outputs:
      model: {kind: model, register: churn_py}
  - name: score_r
    lang: r
    builtin: score
    runner: rscript
    timeout: 60
    inputs:
      data: load.churn
      model: train_py.model
    outputs:
      predictions: {kind: table}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project of its own for each test: ambidex.yaml, two scripts and a typed table."""
    (tmp_path / "ambidex.yaml").write_text("version: 1\nproject: churn\n")
    for rel in ("r/load.R", "python/prep.py", "data/raw.csv", "data/raw.schema.json", "data/bare.csv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    (tmp_path / "config").mkdir()
    return tmp_path


def write(project: Path, text: str, name: str = "config/p.yaml") -> Path:
    path = project / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(project: Path, text: str) -> list[str]:
    """The lines of the ConfigError raised for a pipeline with ``text``."""
    with pytest.raises(ConfigError) as info:
        load_pipeline(write(project, text), project)
    assert info.value.exit_code == 2
    assert info.value.message.splitlines() == [
        f"{p['file']}:{p['line']}: {p['key'] + ': ' if p['key'] else ''}{p['message']}" for p in info.value.problems
    ]
    return info.value.message.splitlines()


def stage_yaml(extra: str = "", name: str = "a", lang: str = "python", what: str = "builtin: train") -> str:
    return f"version: 1\nname: p\nstages:\n  - name: {name}\n    lang: {lang}\n    {what}\n" + extra


# ---------------------------------------------------------------- valid files


def test_valid_pipeline_loads_with_every_value(project):
    path = write(project, VALID)
    p = load_pipeline(path, project)
    assert (p.version, p.name, p.description) == (1, "churn", "Churn, two languages.")
    assert (p.defaults.timeout, p.defaults.seed, p.defaults.runner) == (600, 7, "rpy2")
    assert [s.name for s in p.stages] == ["load", "train_py", "score_r"]
    load, train, score = p.stages
    assert load.params == {"as_of": "2024-12-01", "window": "1:30",
                           "nested": {"grid": [0.1, 0.2], "on": True, "label": "NO"}}
    assert (load.script, load.builtin, train.script, train.builtin) == ("r/load.R", None, None, "train")
    assert train.outputs["model"].kind == "model" and train.outputs["model"].register == "churn_py"
    assert train.input_refs == {"train": InputRef("stage", stage="load", output="churn"),
                                "warm": InputRef("model", model="churn_py", version=3)}
    assert load.input_refs["raw"] == InputRef("file", path="data/raw.csv")
    assert [p.runner_for(s) for s in p.stages] == ["rpy2", None, "rscript"]
    assert [p.timeout_for(s) for s in p.stages] == [600, 600, 60]
    assert p.stage("score_r") is score
    assert p.source == path.resolve()
    assert p.config_hash == config_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_valid_pipeline_round_trips(project):
    p = load_pipeline(write(project, VALID), project)
    assert Pipeline.model_validate(p.model_dump()).model_dump() == p.model_dump()
    written = p.model_dump(exclude_unset=True)
    assert written == load_yaml(VALID).data
    again = load_pipeline(write(project, yaml.safe_dump(written, sort_keys=False), "config/again.yaml"), project)
    assert again.model_dump() == p.model_dump()
    assert again.config_hash != p.config_hash and again.source != p.source


def test_pipeline_defaults_apply(project):
    p = load_pipeline(write(project, stage_yaml(lang="r")), project)
    assert (p.defaults.timeout, p.defaults.seed, p.defaults.runner) == (3600, 42, "rscript")
    assert (p.stages[0].params, p.stages[0].inputs, p.stages[0].outputs, p.stages[0].timeout) == ({}, {}, {}, None)
    assert p.runner_for(p.stages[0]) == "rscript"


def test_pipeline_path_may_be_relative_to_the_project_root(project, monkeypatch, tmp_path_factory):
    write(project, VALID)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert load_pipeline(Path("config/p.yaml"), project).name == "churn"


def test_loading_creates_nothing_on_disk(project):
    write(project, VALID)
    before = sorted(project.rglob("*"))
    load_project(project)
    load_pipeline(project / "config/p.yaml", project)
    with pytest.raises(ConfigError):
        load_pipeline(write(project, "version: 1\nname: x\nstages: []\n", "config/bad.yaml"), project)
    assert sorted(project.rglob("*")) == sorted(before + [project / "config/bad.yaml"])


# ---------------------------------------------------------------- problem reports


def test_unknown_key_suggests_and_lists_allowed_keys(project):
    assert problems_of(project, VALID.replace("description:", "descripton:")) == [
        "config/p.yaml:3: descripton: unknown key 'descripton' (did you mean 'description'?); "
        "allowed keys: version, name, description, defaults, data, stages, deploy, governance, notify, cycle",
    ]


def test_on_as_a_key_is_the_unknown_key_on(project):
    assert problems_of(project, stage_yaml("on: push\n")) == [
        "config/p.yaml:7: on: unknown key 'on'; allowed keys: version, name, description, defaults, data, stages, deploy, governance, notify, cycle",
    ]


def test_duplicate_key_names_both_lines(project):
    text = stage_yaml().replace("    builtin: train\n", "    builtin: train\n    lang: r\n")
    assert problems_of(project, text) == [
        "config/p.yaml:7: stages[0].lang: duplicate key 'lang' (first on line 5, again on line 7); keep only one",
    ]


def test_wrong_types_are_rejected_not_coerced(project):
    assert problems_of(project, stage_yaml('    timeout: "30"\n    params: [1]\n')) == [
        "config/p.yaml:7: stages[0].timeout: expected a whole number, got '30'; remove the quotes",
        "config/p.yaml:8: stages[0].params: expected a mapping (key: value lines), got a list",
    ]


def test_0755_is_refused_for_a_number_field_never_read_as_493(project):
    assert problems_of(project, stage_yaml("    timeout: 0755\n")) == [
        "config/p.yaml:7: stages[0].timeout: expected a whole number, got '0755'; "
        "leading zeros are not read as octal: write 755 (or 0o755)",
    ]


def test_3_10_for_a_text_field_asks_to_quote_it(project):
    assert problems_of(project, stage_yaml().replace("name: p\n", "name: p\ndescription: 3.10\n")) == [
        'config/p.yaml:3: description: expected text, got a number: 3.10 (YAML reads it as 3.1); quote it: "3.10"',
    ]
    p = load_pipeline(write(project, stage_yaml().replace("name: p\n", 'name: p\ndescription: "3.10"\n')), project)
    assert p.description == "3.10"


def test_no_stays_text_and_a_boolean_field_refuses_it(project):
    class Flags(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        enabled: bool
        label: str

    path = write(project, "enabled: NO\nlabel: NO\n", "flags.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path, Flags, project_root=project)
    assert info.value.message == ("flags.yaml:1: enabled: expected true or false, got 'NO'; "
                                  "YAML 1.2 reads NO as text: write false")
    assert load_config(write(project, "enabled: false\nlabel: NO\n", "flags.yaml"), Flags).label == "NO"


def test_unknown_stage_language_lists_allowed_values(project):
    assert problems_of(project, stage_yaml(lang="julia")) == [
        "config/p.yaml:5: stages[0].lang: 'julia' is not allowed; use one of: python, r",
    ]


def test_python_object_tag_is_refused_with_its_line(project, tmp_path):
    marker = tmp_path / "pwned"
    text = stage_yaml(f"    params:\n      x: !!python/object/apply:os.system ['touch {marker}']\n")
    assert problems_of(project, text) == [
        "config/p.yaml:8: stages[0].params.x: the tag !!python/object/apply:os.system is not allowed; "
        "only plain YAML is read (text, numbers, true/false, null, lists and mappings)",
    ]
    assert not marker.exists()


def test_four_problems_in_one_file_are_all_listed_with_lines(project):
    text = """\
        version: 1
        name: churn
        stages:
          - name: load
            lang: julia
            script: r/load.R
            timout: 60
          - name: train
            lang: python
            builtin: train
            timeout: soon
            builtin: score
        """
    lines = problems_of(project, text)
    assert lines == [
        "config/p.yaml:5: stages[0].lang: 'julia' is not allowed; use one of: python, r",
        "config/p.yaml:7: stages[0].timout: unknown key 'timout' (did you mean 'timeout'?); "
        "allowed keys: name, lang, script, builtin, ingest, runner, params, inputs, outputs, timeout",
        "config/p.yaml:11: stages[1].timeout: expected a whole number, got 'soon'",
        "config/p.yaml:12: stages[1].builtin: duplicate key 'builtin' (first on line 10, again on line 12); "
        "keep only one",
    ]


def test_problems_carry_file_line_column_key_and_message(project):
    with pytest.raises(ConfigError) as info:
        load_pipeline(write(project, stage_yaml(lang="julia")), project)
    assert info.value.code == "config.invalid"
    assert info.value.problems == [{"file": "config/p.yaml", "line": 5, "column": 5, "key": "stages[0].lang",
                                    "message": "'julia' is not allowed; use one of: python, r"}]
    assert info.value.to_dict()["problems"] == info.value.problems


def test_missing_keys_and_empty_stages(project):
    assert problems_of(project, "version: 1\nstages: []\n") == [
        "config/p.yaml:1: name: missing required key 'name'",
        "config/p.yaml:2: stages: must have at least 1 item(s), got none",
    ]
    assert problems_of(project, "version: 1\nname: p\nstages:\n  - name: a\n    builtin: train\n") == [
        "config/p.yaml:4: stages[0]: lang is required: python or r (or ingest: MART for a feature-store load)",
    ]


def test_names_follow_their_grammar(project):
    text = stage_yaml("    outputs:\n      Model: {kind: model, register: Churn}\n", name="Load-1")
    assert problems_of(project, text.replace("name: p", "name: 9p")) == [
        "config/p.yaml:2: name: '9p' is not a valid pipeline name; "
        "use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter",
        "config/p.yaml:4: stages[0].name: 'Load-1' is not a valid stage name; "
        "use 1 to 63 lowercase letters, digits or '_', starting with a letter",
        "config/p.yaml:8: stages[0].outputs.Model: 'Model' is not a valid name; "
        "use 1 to 63 lowercase letters, digits or '_', starting with a letter",
        "config/p.yaml:8: stages[0].outputs.Model.register: 'Churn' is not a valid model name; "
        "use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter",
    ]


def test_duplicate_stage_names(project):
    text = stage_yaml() + "  - name: a\n    lang: r\n    builtin: score\n"
    assert problems_of(project, text) == [
        "config/p.yaml:7: stages[1].name: stage name 'a' is already used on line 4; names must be unique",
    ]


def test_script_xor_builtin(project):
    assert problems_of(project, stage_yaml(what="builtin: train\n    script: python/prep.py")) == [
        "config/p.yaml:4: stages[0]: give exactly one of script: (a file in the project) "
        "or builtin: (train or score), not both",
    ]
    assert problems_of(project, stage_yaml(what="timeout: 5")) == [
        "config/p.yaml:4: stages[0]: give exactly one of script: (a file in the project) or builtin: (train or score)",
    ]
    assert problems_of(project, stage_yaml(what="builtin: predict")) == [
        "config/p.yaml:6: stages[0].builtin: 'predict' is not allowed; use one of: train, score",
    ]


def test_runner_is_refused_for_a_python_stage(project):
    assert problems_of(project, stage_yaml("    runner: rpy2\n")) == [
        "config/p.yaml:7: stages[0].runner: runner is only for R stages (lang: r); remove it from this python stage",
    ]
    assert problems_of(project, stage_yaml("    runner: docker\n", lang="r")) == [
        "config/p.yaml:7: stages[0].runner: 'docker' is not allowed; use one of: rscript, rpy2",
    ]


def test_register_only_for_models(project):
    assert problems_of(project, stage_yaml("    outputs:\n      t: {kind: table, register: churn}\n")) == [
        "config/p.yaml:8: stages[0].outputs.t.register: register is only for kind: model; "
        "remove it or set kind: model",
    ]


def test_params_must_be_json(project):
    assert problems_of(project, stage_yaml("    params:\n      grid: [1, .inf]\n")) == [
        "config/p.yaml:7: stages[0].params: grid[1] is .inf, which JSON cannot carry; use a finite number or quote it",
    ]


# ---------------------------------------------------------------- paths and references


@pytest.mark.parametrize("script, message", [
    ("../outside.py", "script path '../outside.py' leaves the project ('..'); give a path inside the project root"),
    ("python/../../x.py", "script path 'python/../../x.py' leaves the project ('..'); "
                          "give a path inside the project root"),
    ("/etc/passwd", "script path '/etc/passwd' is absolute; give a path relative to the project root"),
    ("~/x.py", "script path '~/x.py' is absolute; give a path relative to the project root"),
])
def test_script_paths_cannot_escape_the_project(project, script, message):
    assert problems_of(project, stage_yaml(what=f"script: '{script}'")) == [
        f"config/p.yaml:6: stages[0].script: {message}",
    ]


def test_script_must_exist_and_symlinks_cannot_leave(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "evil.py"
    outside.write_text("")
    (project / "python/link.py").symlink_to(outside)
    assert problems_of(project, stage_yaml(what="script: python/prepp.py")) == [
        f"config/p.yaml:6: stages[0].script: script 'python/prepp.py' does not exist in the project ({project}); "
        "the path is relative to the project root",
    ]
    assert problems_of(project, stage_yaml(what="script: python/link.py")) == [
        "config/p.yaml:6: stages[0].script: script 'python/link.py' leads outside the project through a symlink",
    ]
    assert load_pipeline(write(project, stage_yaml(what="script: python/prep.py")), project).stages[0].script \
        == "python/prep.py"


def test_input_from_an_unknown_or_later_stage(project):
    text = """\
        version: 1
        name: p
        stages:
          - name: prep
            lang: python
            script: python/prep.py
            inputs: {x: train.model}
            outputs: {clean: {kind: table}}
          - name: train
            lang: python
            builtin: train
            inputs: {a: prep.clean, b: prepp.clean, c: prep.dirty, d: train.model, e: nobody.x}
            outputs: {model: {kind: model}}
        """
    assert problems_of(project, text) == [
        "config/p.yaml:7: stages[0].inputs.x: stage 'train' does not run before this stage; "
        "an input can only use an output of an earlier stage, so move 'train' up",
        "config/p.yaml:12: stages[1].inputs.b: no stage named 'prepp' (did you mean 'prep'?)",
        "config/p.yaml:12: stages[1].inputs.c: stage 'prep' has no output 'dirty'; its outputs: clean",
        "config/p.yaml:12: stages[1].inputs.d: stage 'train' does not run before this stage; "
        "an input can only use an output of an earlier stage, so move 'train' up",
        "config/p.yaml:12: stages[1].inputs.e: no stage named 'nobody' (earlier stages: prep)",
    ]


def test_file_and_model_references(project):
    text = stage_yaml("    inputs:\n"
                      "      a: file:data/raw.csv\n      b: file:data/bare.csv\n      c: file:data/none.csv\n"
                      "      d: file:../x.csv\n      e: file:data/raw.parquet\n      f: model:churn\n"
                      "      g: model:churn:0\n      h: churn\n")
    assert problems_of(project, text) == [
        "config/p.yaml:9: stages[0].inputs.b: file 'data/bare.csv' has no schema sidecar 'data/bare.schema.json' "
        "beside it; write one (contract/SPEC.md section 3)",
        f"config/p.yaml:10: stages[0].inputs.c: file 'data/none.csv' does not exist in the project ({project})",
        "config/p.yaml:11: stages[0].inputs.d: file path '../x.csv' leaves the project ('..'); "
        "give a path inside the project root",
        "config/p.yaml:12: stages[0].inputs.e: 'file:data/raw.parquet' is not a .csv file; a file input is a CSV "
        "table with a .schema.json sidecar beside it (contract/SPEC.md section 3)",
        "config/p.yaml:14: stages[0].inputs.g: 'model:churn:0' is not a model reference; write model:NAME or "
        "model:NAME:VERSION (NAME: use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter; "
        "VERSION: a number from 1)",
        "config/p.yaml:15: stages[0].inputs.h: 'churn' is not an input reference; write STAGE.OUTPUT "
        "(an output of an earlier stage), file:PATH.csv, model:NAME[:VERSION], mart:NAME[:history] or sql:PATH.sql",
    ]


def test_parse_input_ref():
    assert parse_input_ref("load.churn") == InputRef("stage", stage="load", output="churn")
    assert parse_input_ref("file:data/a.csv") == InputRef("file", path="data/a.csv")
    assert parse_input_ref("model:churn-py") == InputRef("model", model="churn-py")
    assert parse_input_ref("model:churn-py:12") == InputRef("model", model="churn-py", version=12)
    with pytest.raises(ValueError, match="is not an input reference"):
        parse_input_ref("load.churn.x")


def test_models_validate_without_a_file():
    stage = Stage(name="a", lang="r", builtin="score", runner="rpy2")
    assert stage.runner == "rpy2"
    with pytest.raises(ValueError, match="runner is only for R stages"):
        Stage(name="a", lang="python", builtin="score", runner="rpy2")


# ---------------------------------------------------------------- versions, syntax, files


def test_a_newer_version_asks_to_upgrade_and_reports_nothing_else(project):
    with pytest.raises(ConfigError) as info:
        load_pipeline(write(project, "version: 2\nname: p\nfeature_from_the_future: 1\n"), project)
    err = info.value
    assert (err.code, err.exit_code) == ("config.version_unsupported", 2)
    assert err.message == "config/p.yaml:1: version: 2 is newer than this ambidex reads (version 1)."
    assert err.hint == "Upgrade ambidex to read it: pip install -U ambidex."
    assert err.problems == [{"file": "config/p.yaml", "line": 1, "column": 1, "key": "version",
                             "message": "2 is newer than this ambidex reads (version 1)"}]


def test_version_must_be_the_integer_1(project):
    assert problems_of(project, stage_yaml().replace("version: 1", "version: 0")) == [
        "config/p.yaml:1: version: 0 does not exist; write version: 1",
    ]
    assert problems_of(project, stage_yaml().replace("version: 1", 'version: "1"')) == [
        "config/p.yaml:1: version: expected a whole number, got '1'; remove the quotes",
    ]


def test_yaml_syntax_errors_give_file_and_line(project):
    assert problems_of(project, "version: 1\nname: p\nstages:\n  - name: a\n   lang: r\n") == [
        "config/p.yaml:5: invalid YAML: did not find expected '-' indicator "
        "(while parsing a block collection on line 4)",
    ]
    assert problems_of(project, "") == ["config/p.yaml:1: expected a mapping of keys (such as version: 1), "
                                        "got an empty file"]


def test_missing_pipeline_file_lists_the_pipelines(project):
    write(project, VALID, "config/churn.yaml")
    with pytest.raises(ConfigError) as info:
        load_pipeline(Path("config/chrun.yaml"), project)
    assert (info.value.code, info.value.exit_code) == ("config.not_found", 2)
    assert info.value.message == f"No pipeline file {project / 'config/chrun.yaml'}."
    assert info.value.hint == f"Pipelines in {project / 'config'}: churn.yaml."


# ---------------------------------------------------------------- the project file


def test_project_defaults(project):
    p = load_project(project)
    assert isinstance(p, Project)
    assert (p.version, p.project, p.name, p.root) == (1, "churn", "churn", project.resolve())
    assert (p.registry, p.registry_url_env, p.artifacts, p.state) == (DEFAULT_REGISTRY, None, ".ambidex/artifacts",
                                                                      ".ambidex")
    assert (p.r.rscript, p.r.libs, p.python.executable) == ("Rscript", [], None)


def test_project_with_every_setting(project):
    (project / "ambidex.yaml").write_text(textwrap.dedent("""\
        version: 1
        project: churn-team
        registry: postgresql+psycopg://ml@db/registry
        registry_url_env: CHURN_DB_URL
        artifacts: /srv/artifacts
        state: state
        r: {rscript: /usr/bin/Rscript, libs: [r/lib]}
        python: {executable: .venv/bin/python}
        """))
    p = load_project(project)
    assert (p.project, p.registry, p.registry_url_env, p.artifacts, p.state) == (
        "churn-team", "postgresql+psycopg://ml@db/registry", "CHURN_DB_URL", "/srv/artifacts", "state")
    assert (p.r.rscript, p.r.libs, p.python.executable) == ("/usr/bin/Rscript", ["r/lib"], ".venv/bin/python")


def test_project_problems(project):
    (project / "ambidex.yaml").write_text(
        "version: 1\nproject: Churn\nregistry: 'ml:hunter2@db/registry'\nregistry_url_env: 1DB\n"
        "r: {rscript: '', libs: r/lib}\npython: {executable: 3.10}\napprovers: [ann]\n")
    with pytest.raises(ConfigError) as info:
        load_project(project)
    assert info.value.message.splitlines() == [
        "ambidex.yaml:2: project: 'Churn' is not a valid project name; "
        "use 1 to 63 lowercase letters, digits, '_' or '-', starting with a letter",
        "ambidex.yaml:3: registry: 'ml:***@db/registry' is not a database URL; write e.g. "
        "sqlite:///.ambidex/registry.db or postgresql+psycopg://user@host/db "
        "(name a variable holding it with registry_url_env)",
        "ambidex.yaml:4: registry_url_env: '1DB' is not a valid environment variable name; "
        "use letters, digits and '_'",
        "ambidex.yaml:5: r.rscript: must not be empty",
        "ambidex.yaml:5: r.libs: expected a list (- item lines), got 'r/lib'",
        'ambidex.yaml:6: python.executable: expected text, got a number: 3.10 (YAML reads it as 3.1); '
        'quote it: "3.10"',
        "ambidex.yaml:7: approvers: unknown key 'approvers'; allowed keys: version, project, registry, "
        "registry_url_env, artifacts, state, r, python, governance, notify",
    ]
    assert "hunter2" not in str(info.value.to_dict())


def test_absent_project_file_says_run_init(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path)
    assert (info.value.code, info.value.exit_code) == ("config.not_found", 2)
    assert str(info.value) == (f"No ambidex.yaml in {tmp_path}. "
                               "Run 'ambidex init' to create a project, or run ambidex inside one.")


def test_find_project_root_walks_up(project, tmp_path_factory):
    deep = project / "r" / "deeper"
    deep.mkdir()
    assert find_project_root(deep) == project.resolve()
    assert find_project_root(project / "r/load.R") == project.resolve()
    lonely = tmp_path_factory.mktemp("lonely")
    if any((d / "ambidex.yaml").exists() for d in lonely.parents):
        pytest.skip("a parent of the temporary folder holds an ambidex.yaml")
    with pytest.raises(ConfigError, match="No ambidex.yaml in .* or any folder above it. Run 'ambidex init'"):
        find_project_root(lonely)


# ---------------------------------------------------------------- secrets and hashes


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://ml:s3cr3t@db:5432/registry", "postgresql+psycopg://ml:***@db:5432/registry"),
    ("mysql+pymysql://ml:p@ss:w0rd@db/registry", "mysql+pymysql://ml:***@db/registry"),
    ("postgresql://ml@db/registry?password=s3cr3t&sslmode=require",
     "postgresql://ml@db/registry?password=***&sslmode=require"),
    ("postgresql://db/r?sslmode=require&api_token=s3cr3t", "postgresql://db/r?sslmode=require&api_token=***"),
    ("postgresql://ml@db/registry", "postgresql://ml@db/registry"),
    ("sqlite:///.ambidex/registry.db", "sqlite:///.ambidex/registry.db"),
    ("ml:s3cr3t@db/registry", "ml:***@db/registry"),
])
def test_redact_url_hides_passwords(url, shown):
    assert redact_url(url) == shown


def test_config_hash_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"version: 1\n")
    assert config_hash(path) == hashlib.sha256(b"version: 1\n").hexdigest()
    assert os.listdir(tmp_path) == ["x.yaml"]
