"""Tests for ambidex.yamlload: YAML 1.2 core scalars, refused tags, duplicate keys, positions, syntax errors."""
from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import yaml

import ambidex.yamlload
from ambidex.yamlload import StrictSafeLoader, YamlSyntaxError, format_path, load_yaml


def _pure_python_copy():
    """A second copy of the module built without libyaml, to test the SafeLoader fallback."""
    mp = pytest.MonkeyPatch()
    mp.delattr(yaml, "CSafeLoader", raising=False)
    try:
        spec = importlib.util.spec_from_file_location("ambidex._yamlload_pure", ambidex.yamlload.__file__)
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
    finally:
        mp.undo()
    assert yaml.SafeLoader in module.StrictSafeLoader.__mro__
    return module


PURE = _pure_python_copy()


@pytest.mark.parametrize("text, expected", [
    # YAML 1.1 traps that must stay text
    ("on", "on"), ("off", "off"), ("yes", "yes"), ("no", "no"), ("NO", "NO"), ("y", "y"), ("n", "n"),
    ("Yes", "Yes"), ("1:30", "1:30"), ("0755", "0755"), ("-0755", "-0755"), ("1_000", "1_000"),
    ("2024-01-01", "2024-01-01"), ("0b101", "0b101"), ("01.5", "01.5"), ("=", "="),
    # YAML 1.2 core values
    ("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False), ("FALSE", False),
    ("0", 0), ("-12", -12), ("+7", 7), ("0o755", 493), ("0x1F", 31),
    ("3.10", 3.1), ("1.", 1.0), (".5", 0.5), ("-.5", -0.5), ("1e3", 1000.0), ("2.5E-3", 0.0025),
    (".inf", math.inf), ("-.Inf", -math.inf),
    ("~", None), ("null", None), ("Null", None), ("NULL", None), ("", None),
])
@pytest.mark.parametrize("module", [ambidex.yamlload, PURE], ids=["libyaml", "pure"])
def test_plain_scalars_follow_yaml_1_2_core(module, text, expected):
    doc = module.load_yaml(f"v: {text}\n")
    value = doc.data["v"]
    assert value == expected and type(value) is type(expected)
    assert doc.sources[("v",)] == text
    assert yaml.load(f"v: {text}\n", Loader=module.StrictSafeLoader) == {"v": expected}


@pytest.mark.parametrize("module", [ambidex.yamlload, PURE], ids=["libyaml", "pure"])
def test_both_parsers_report_the_same_problems(module):
    text = "a: 1\n<<: {b: 2}\n1: x\nc: !!python/name:os.system\na: 3\n"
    assert [(p.line, p.column, p.path, p.message) for p in module.load_yaml(text).problems] == \
        [(p.line, p.column, p.path, p.message) for p in load_yaml(text).problems]
    assert len(load_yaml(text).problems) == 4
    with pytest.raises(module.YamlSyntaxError) as info:
        module.load_yaml("a:\n\tb: 1\n")
    assert (info.value.line, info.value.message) == (2, "invalid YAML: a tab in the indentation; "
                                                        "indent with spaces, not tabs")


def test_nan_is_a_float_and_quoted_scalars_are_always_text():
    data = load_yaml("a: .nan\nb: '0755'\nc: \"true\"\nd: !!str 3.10\n").data
    assert math.isnan(data["a"])
    assert data | {"a": None} == {"a": None, "b": "0755", "c": "true", "d": "3.10"}


def test_0755_never_becomes_493():
    assert load_yaml("mode: 0755\n").data == {"mode": "0755"}
    assert load_yaml("mode: 0o755\n").data == {"mode": 493}


def test_on_as_a_key_stays_the_string_on():
    assert load_yaml("on: push\noff: 1\n").data == {"on": "push", "off": 1}


def test_duplicate_keys_name_both_lines():
    doc = load_yaml("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 4\n")
    assert doc.data == {"a": 1, "b": {"c": 1, "d": 2}}  # the first value is kept
    assert [(p.line, p.column, p.path, p.message) for p in doc.problems] == [
        (5, 3, ("b", "c"), "duplicate key 'c' (first on line 3, again on line 5); keep only one"),
        (6, 1, ("a",), "duplicate key 'a' (first on line 1, again on line 6); keep only one"),
    ]


def test_quoted_and_plain_spellings_of_a_key_are_duplicates():
    doc = load_yaml("{on: 1, 'on': 2}\n")
    assert [p.message for p in doc.problems] == ["duplicate key 'on' (first on line 1, again on line 1); keep only one"]


def test_standalone_loader_refuses_duplicate_keys():
    with pytest.raises(yaml.constructor.ConstructorError, match=r"duplicate key 'x' \(first on line 1, again on line 3\)"):
        yaml.load("x: 1\ny: 2\nx: 3\n", Loader=StrictSafeLoader)


@pytest.mark.parametrize("tagged, shown", [
    ("!!python/object/apply:os.system [echo hacked]", "!!python/object/apply:os.system"),
    ("!!python/object:builtins.dict {}", "!!python/object:builtins.dict"),
    ("!!python/name:os.system", "!!python/name:os.system"),
    ("!!binary aGk=", "!!binary"),
    ("!!timestamp 2024-01-01", "!!timestamp"),
    ("!!set {a}", "!!set"),
    ("!custom x", "!custom"),
])
def test_language_and_non_core_tags_are_refused(tagged, shown):
    doc = load_yaml(f"ok: 1\nbad: {tagged}\n")
    assert doc.data == {"ok": 1, "bad": None}
    assert [(p.line, p.path, p.message) for p in doc.problems] == [
        (2, ("bad",), f"the tag {shown} is not allowed; only plain YAML is read "
                      "(text, numbers, true/false, null, lists and mappings)"),
    ]
    with pytest.raises(yaml.constructor.ConstructorError, match="is not allowed"):
        yaml.load(f"bad: {tagged}\n", Loader=StrictSafeLoader)


def test_explicit_core_tags_use_the_strict_grammar():
    doc = load_yaml("a: !!int 0o17\nb: !!int 0755\nc: !!bool yes\nd: !!float 2\n")
    assert doc.data == {"a": 15, "b": None, "c": None, "d": 2.0}
    assert [p.message for p in doc.problems] == [
        "'0755' is not an integer (write 755, 0o755 or 0x1ED)",
        "'yes' is not a boolean; write true or false",
    ]


def test_merge_keys_are_refused():
    doc = load_yaml("base: &b {x: 1}\nstage:\n  <<: *b\n  y: 2\n")
    assert doc.data["stage"] == {"y": 2}
    assert [(p.line, p.path, p.message) for p in doc.problems] == [
        (3, ("stage", "<<"), "merge keys (<<) are not supported; write the keys out"),
    ]


def test_keys_must_be_text():
    doc = load_yaml("1: a\ntrue: b\n'2': c\n")
    assert doc.data == {"1": "a", "true": "b", "2": "c"}
    assert [p.message for p in doc.problems] == [
        'the key 1 is read as a number; keys are text: quote it, as "1":',
        'the key true is read as a boolean; keys are text: quote it, as "true":',
    ]


def test_every_key_and_item_keeps_its_line_and_column():
    doc = load_yaml("version: 1\nstages:\n  - name: a\n    params:\n      alpha: 0.5\n  - name: b\n")
    assert doc.positions == {
        (): (1, 1), ("version",): (1, 1), ("stages",): (2, 1),
        ("stages", 0): (3, 5), ("stages", 0, "name"): (3, 5), ("stages", 0, "params"): (4, 5),
        ("stages", 0, "params", "alpha"): (5, 7),
        ("stages", 1): (6, 5), ("stages", 1, "name"): (6, 5),
    }
    assert doc.position(("stages", 0, "params", "alpha", "deeper")) == (5, 7)
    assert doc.position(("nope",)) == (1, 1)
    assert doc.sources[("stages", 0, "params", "alpha")] == "0.5"


def test_format_path():
    assert format_path(("stages", 1, "params", "alpha")) == "stages[1].params.alpha"
    assert format_path((0, "a.b", 'q"x')) == '[0]["a.b"]["q\\"x"]'
    assert format_path(()) == ""


@pytest.mark.parametrize("text, line, column, message", [
    ("a: [1, 2\nb: 3\n", 2, 2, "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence on line 1)"),
    ("a:\n\tb: 1\n", 2, 1, "invalid YAML: a tab in the indentation; indent with spaces, not tabs"),
    ("a: 1\n---\nb: 2\n", 2, 1, "invalid YAML: a second document ('---') in the file; keep one document per file"),
    ("a: b: c\n", 1, 5, "invalid YAML: mapping values are not allowed in this context"),
    ("a: *nothing\n", 1, 4, "invalid YAML: found undefined alias"),
])
def test_syntax_errors_give_the_line(text, line, column, message):
    with pytest.raises(YamlSyntaxError) as info:
        load_yaml(text)
    assert (info.value.line, info.value.column, info.value.message) == (line, column, message)


def test_bytes_must_be_utf8_and_a_bom_is_fine():
    assert load_yaml("\ufeffa: é\n".encode("utf-8")).data == {"a": "é"}
    with pytest.raises(YamlSyntaxError) as info:
        load_yaml(b"a: 1\nb: \xff\n")
    assert (info.value.line, info.value.message) == (2, "the file is not UTF-8 text; save it as UTF-8")


def test_alias_bombs_and_recursive_aliases_are_stopped():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, prev in zip("bcdef", "abcde"):
        bomb += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    with pytest.raises(YamlSyntaxError, match="more than 200000 values"):
        load_yaml(bomb)
    doc = load_yaml("a: &a [1, *a]\n")
    assert [(p.path, p.message) for p in doc.problems] == [
        (("a", 1), "a value contains itself (recursive alias) or is nested too deeply"),
    ]


def test_an_empty_document_has_no_data():
    doc = load_yaml("# only a comment\n")
    assert (doc.data, doc.problems) == (None, [])
