"""yamlload: a YAML file to a validated pydantic model, or every problem in it as file:line: key: message.

The reading is strict (YAML 1.2 core scalars, no duplicate keys, no language tags) and
keeps the line of every key, so pydantic's errors can be reported where they are.

YAML 1.1, which PyYAML implements, turns ``NO``/``on``/``yes`` into booleans, ``0755``
into 493, ``1:30`` into 5400 and ``2024-01-01`` into a date. Here a plain scalar is:

    null     ~  null  Null  NULL  (empty)
    bool     true  True  TRUE  false  False  FALSE
    int      0  -12  +7  0o755  0xFF          (no leading zeros: 0755 stays the text "0755")
    float    1.5  -.5  1e3  2.5E-3  .inf  -.Inf  .nan   (3.10 is the float 3.1, as in YAML 1.2)
    str      everything else (on, off, yes, no, NO, y, n, 1:30, 0755, 2024-01-01, ...)

Only the core tags (``!!str !!int !!float !!bool !!null !!seq !!map``) are accepted;
``!!python/...``, ``!!binary``, ``!!timestamp``, merge keys (``<<``) and custom tags are refused.

    >>> doc = load_yaml("a: 0755\\nb: on\\n")
    >>> doc.data, doc.positions[("b",)]
    ({'a': '0755', 'b': 'on'}, (2, 1))
"""
from __future__ import annotations

import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .errors import ConfigError

__all__ = ["StrictSafeLoader", "YamlDocument", "YamlProblem", "YamlSyntaxError", "Check", "format_path", "load_yaml",
           "load_validated"]

KeyPath = tuple  # a key path: ("stages", 1, "params", "alpha")

_TAG = "tag:yaml.org,2002:"
CORE_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
MAX_NODES = 200_000  # values after alias expansion: stops "billion laughs" documents
MAX_DEPTH = 200

_NULL = re.compile(r"(?:~|null|Null|NULL|)\Z")
_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_INT = re.compile(r"(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)\Z")
_FLOAT = re.compile(
    r"(?:[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)|\.[0-9]+(?:[eE][-+]?[0-9]+)?)"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)

# The C parser is several times faster; its nodes carry the same marks (line, column).
_Base = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class StrictSafeLoader(_Base):
    """A safe loader with YAML 1.2 core scalars, duplicate-key errors and only the core tags.

    >>> yaml.load("port: 0755\\nlive: on\\n", Loader=StrictSafeLoader)
    {'port': '0755', 'live': 'on'}
    """

    yaml_implicit_resolvers: dict = {}
    yaml_constructors: dict = {}
    yaml_multi_constructors: dict = {}

    def construct_strict_bool(self, node: ScalarNode) -> bool:
        value = self.construct_scalar(node)
        if not _BOOL.match(value):
            raise ConstructorError(None, None, f"'{value}' is not a boolean; write true or false", node.start_mark)
        return value[0] in "tT"

    def construct_strict_int(self, node: ScalarNode) -> int:
        value = self.construct_scalar(node)
        if not _INT.match(value):
            raise ConstructorError(None, None, f"'{value}' is not an integer (write 755, 0o755 or 0x1ED)",
                                   node.start_mark)
        if value.startswith(("0o", "0x")):
            return int(value[2:], 8 if value[1] == "o" else 16)
        return int(value)

    def construct_strict_float(self, node: ScalarNode) -> float:
        value = self.construct_scalar(node)
        if not (_FLOAT.match(value) or _INT.match(value)):
            raise ConstructorError(None, None, f"'{value}' is not a number", node.start_mark)
        if value.lstrip("+-").lower() == ".inf":
            return -math.inf if value.startswith("-") else math.inf
        if value.lower() == ".nan":
            return math.nan
        return float(int(value, 0)) if value.startswith(("0o", "0x")) else float(value)

    def construct_strict_null(self, node: ScalarNode) -> None:
        value = self.construct_scalar(node)
        if not _NULL.match(value):
            raise ConstructorError(None, None, f"'{value}' is not null; write null or ~", node.start_mark)
        return None

    def construct_refused(self, node) -> None:
        raise ConstructorError(None, None, f"the tag {_show_tag(node.tag)} is not allowed; {_ONLY_CORE}",
                               node.start_mark)

    def flatten_mapping(self, node: MappingNode) -> None:
        # No merge keys (YAML 1.2 has none): an explicit !!merge key reaches construct_refused.
        return None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: BaseConstructor reports it
            if first is not None:
                raise ConstructorError("while reading a mapping", node.start_mark,
                                       _duplicate_message(key, first.line + 1, key_node.start_mark.line + 1),
                                       key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_ONLY_CORE = "only plain YAML is read (text, numbers, true/false, null, lists and mappings)"

for _tag, _regex, _first in (
    ("bool", _BOOL, list("tTfF")),
    ("int", _INT, list("-+0123456789")),
    ("float", _FLOAT, list("-+.0123456789")),
    ("null", _NULL, ["~", "n", "N", ""]),
):
    StrictSafeLoader.add_implicit_resolver(_TAG + _tag, _regex, _first)
for _tag, _fn in (
    ("null", StrictSafeLoader.construct_strict_null),
    ("bool", StrictSafeLoader.construct_strict_bool),
    ("int", StrictSafeLoader.construct_strict_int),
    ("float", StrictSafeLoader.construct_strict_float),
    ("str", SafeConstructor.construct_yaml_str),
    ("seq", SafeConstructor.construct_yaml_seq),
    ("map", SafeConstructor.construct_yaml_map),
):
    StrictSafeLoader.add_constructor(_TAG + _tag, _fn)
StrictSafeLoader.add_constructor(None, StrictSafeLoader.construct_refused)


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _duplicate_message(key, first: int, again: int) -> str:
    return f"duplicate key '{key}' (first on line {first}, again on line {again}); keep only one"


class YamlSyntaxError(ValueError):
    """The text is not YAML (or not UTF-8); ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int):
        super().__init__(f"line {line}: {message}")
        self.message, self.line, self.column = message, line, column


@dataclass(frozen=True)
class YamlProblem:
    """A problem found while reading: ``path`` is the key path, ``line``/``column`` 1-based."""

    line: int
    column: int
    path: KeyPath
    message: str


@dataclass
class YamlDocument:
    """The data of one YAML document, each key path's (line, column), and the problems found.

    ``sources`` keeps the text of every plain (unquoted) scalar, so a message can show
    what the user wrote (``3.10``) rather than what YAML made of it (``3.1``).
    """

    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    sources: dict[KeyPath, str] = field(default_factory=dict)
    problems: list[YamlProblem] = field(default_factory=list)

    def position(self, path: KeyPath) -> tuple[int, int]:
        """(line, column) of ``path``, or of its nearest parent that has one.

        >>> load_yaml("a:\\n  b: 1\\n").position(("a", "b", "c"))
        (2, 3)
        """
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1))


def format_path(path: KeyPath) -> str:
    """A key path as users read it.

    >>> format_path(("stages", 1, "params", "alpha"))
    'stages[1].params.alpha'
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += '["' + str(part).replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


def load_yaml(source: str | bytes) -> YamlDocument:
    """Read one YAML document strictly; raises YamlSyntaxError, returns other problems in ``problems``.

    >>> load_yaml("x: 1\\nx: 2\\n").problems[0].message
    "duplicate key 'x' (first on line 1, again on line 2); keep only one"
    """
    text = _decode(source) if isinstance(source, bytes) else source
    loader = StrictSafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise _syntax_error(exc, text) from None
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, max(exc.position, 0)) + 1
            raise YamlSyntaxError(f"character #x{exc.character:04x} is not allowed in YAML text", line, 1) from None
        except yaml.YAMLError as exc:  # pragma: no cover - every parser error carries a mark
            raise YamlSyntaxError(str(exc), 1, 1) from None
        doc = YamlDocument(data=None, positions={(): (1, 1)})
        if root is not None:
            doc.positions[()] = _pos(root)
            doc.data = _Builder(loader, doc).build(root, (), 0)
        return doc
    finally:
        loader.dispose()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlSyntaxError("the file is not UTF-8 text; save it as UTF-8", line, 1) from None


def _syntax_error(exc: yaml.MarkedYAMLError, text: str) -> YamlSyntaxError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = exc.problem or exc.context or "not valid YAML"
    lines = text.splitlines()
    if 0 < line <= len(lines) and "\t" in lines[line - 1][: column]:
        message = "a tab in the indentation; indent with spaces, not tabs"
    elif "expected a single document" in (exc.context or ""):
        message = "a second document ('---') in the file; keep one document per file"
    elif exc.context and exc.context_mark and exc.problem:
        message = f"{exc.problem} ({exc.context} on line {exc.context_mark.line + 1})"
    elif exc.context and exc.problem:
        message = f"{exc.problem} ({exc.context})"
    return YamlSyntaxError(f"invalid YAML: {message}", line, column)


def _plain(node: ScalarNode) -> bool:
    return not node.style  # None from the Python parser, '' from the C parser


def _pos(node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _TooBig(Exception):
    pass


class _Builder:
    """Turns composed nodes into plain data, recording positions and collecting every problem."""

    def __init__(self, loader: StrictSafeLoader, doc: YamlDocument):
        self.loader, self.doc = loader, doc
        self.count = 0
        self.ancestors: set[int] = set()

    def problem(self, node, path: KeyPath, message: str) -> None:
        self.doc.problems.append(YamlProblem(*_pos(node), tuple(path), message))

    def build(self, node, path: KeyPath, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlSyntaxError(f"the document expands to more than {MAX_NODES} values (aliases?)", *_pos(node))
        if node.tag not in CORE_TAGS:
            self.problem(node, path, f"the tag {_show_tag(node.tag)} is not allowed; {_ONLY_CORE}")
            return None
        if isinstance(node, ScalarNode):
            if _plain(node):
                self.doc.sources[path] = node.value
            return self.scalar(node, path)
        if id(node) in self.ancestors or depth > MAX_DEPTH:
            self.problem(node, path, "a value contains itself (recursive alias) or is nested too deeply")
            return None
        self.ancestors.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path, depth)
            if not isinstance(node, MappingNode):  # pragma: no cover - a core tag on a scalar is handled above
                raise TypeError(type(node))
            return self.mapping(node, path, depth)
        finally:
            self.ancestors.discard(id(node))

    def scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        if node.tag in (_TAG + "seq", _TAG + "map"):
            self.problem(node, path, f"{_show_tag(node.tag)} cannot tag the text '{node.value}'")
            return None
        try:
            return self.loader.construct_object(node)
        except ConstructorError as exc:
            self.problem(node, path, exc.problem)
            return None

    def sequence(self, node: SequenceNode, path: KeyPath, depth: int) -> list:
        if node.tag != _TAG + "seq":
            self.problem(node, path, f"{_show_tag(node.tag)} cannot tag a list")
        out = []
        for i, item in enumerate(node.value):
            self.doc.positions[path + (i,)] = _pos(item)
            out.append(self.build(item, path + (i,), depth + 1))
        return out

    def mapping(self, node: MappingNode, path: KeyPath, depth: int) -> dict:
        if node.tag != _TAG + "map":
            self.problem(node, path, f"{_show_tag(node.tag)} cannot tag a mapping")
        out: dict = {}
        first_line: dict = {}
        for key_node, value_node in node.value:
            key = self.key(key_node, path)
            if key is None:
                continue
            key_path = path + (key,)
            line = _pos(key_node)[0]
            if key in first_line:
                self.problem(key_node, key_path, _duplicate_message(key, first_line[key], line))
                continue
            first_line[key] = line
            self.doc.positions[key_path] = _pos(key_node)
            out[key] = self.build(value_node, key_path, depth + 1)
        return out

    def key(self, node, path: KeyPath) -> str | None:
        if not isinstance(node, ScalarNode):
            self.problem(node, path, "a key must be plain text, not a list or a mapping")
            return None
        if node.tag not in CORE_TAGS:
            self.problem(node, path, f"the tag {_show_tag(node.tag)} is not allowed; {_ONLY_CORE}")
            return None
        if _plain(node) and node.value == "<<":
            self.problem(node, path + ("<<",), "merge keys (<<) are not supported; write the keys out")
            return None
        value = self.scalar(node, path)
        if not isinstance(value, str):
            shown = node.value or "(empty)"
            self.problem(node, path + (node.value,),
                         f"the key {shown} is read as {_kind(value)}; keys are text: quote it, as \"{node.value}\":")
            return node.value
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


# ---------------------------------------------------------------- validation against a model

M = TypeVar("M", bound=BaseModel)
Check = Callable[[YamlDocument, Path], Iterable[tuple[tuple, str]]]
_SECRET_KEY = re.compile(r"(?i)pass|pwd|secret|token|registry|url")


def load_validated(path: Path, model: type[M], *, project_root: Path | None = None, checks: Iterable[Check] = (),
                   newest_version: int | None = None) -> tuple[M, bytes]:
    """Read ``path`` strictly and validate it against ``model``: (the model, the file's bytes).

    Raises one ConfigError listing every problem as ``file:line: key.path: message`` (also in
    ``problems``). ``checks`` run on the document with the project root, even when the model
    failed, and return (key path, message) pairs. A ``version:`` above ``newest_version`` stops
    everything else with ``config.version_unsupported``. The file is named relative to
    ``project_root`` when inside it.

    >>> obj, raw = load_validated(Path("ambidex.yaml"), Project, project_root=Path("."))  # doctest: +SKIP
    """
    shown = _display(path, project_root)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {shown}: {exc.strerror or exc}.", code="config.not_found",
                          hint="Check the path and its permissions.") from None
    try:
        doc = load_yaml(raw)
    except YamlSyntaxError as exc:
        raise _config_error(shown, [(exc.line, exc.column, "", exc.message)]) from None
    problems = [(p.line, p.column, format_path(p.path), p.message) for p in doc.problems]
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else _show(doc.data, None)
        problems.append((1, 1, "", f"expected a mapping of keys (such as version: 1), got {got}"))
        raise _config_error(shown, problems)
    if newest_version is not None:
        _refuse_newer(doc, shown, newest_version)
    obj = None
    try:
        obj = model.model_validate(doc.data)
    except ValidationError as exc:
        flagged = [p.path for p in doc.problems]  # already reported by the reader: say it once
        for err in exc.errors():
            loc = _clean_loc(err["loc"], doc.data)
            if not any(loc[: len(f)] == f for f in flagged):
                problems.append((*doc.position(loc), format_path(loc), _message(err, loc, doc, model)))
    if project_root is not None:
        for check in checks:
            problems += [(*doc.position(p), format_path(p), msg) for p, msg in check(doc, Path(project_root))]
    if problems:
        raise _config_error(shown, problems)
    return obj, raw


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return str(path)


def _refuse_newer(doc: YamlDocument, shown: str, newest: int) -> None:
    version = doc.data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > newest:
        line, column = doc.position(("version",))
        message = f"{version} is newer than this ambidex reads (version {newest})"
        raise ConfigError(f"{shown}:{line}: version: {message}.", code="config.version_unsupported",
                          hint="Upgrade ambidex to read it: pip install -U ambidex.",
                          problems=[_problem(shown, line, column, "version", message)])


def _problem(shown: str, line: int, column: int, key: str, message: str) -> dict:
    return {"file": shown, "line": line, "column": column, "key": key, "message": message}


def _config_error(shown: str, problems: list[tuple]) -> ConfigError:
    unique = sorted(set(problems), key=lambda p: (p[0], p[1], p[2], p[3]))
    lines = [f"{shown}:{line}: {key + ': ' if key else ''}{message}" for line, _, key, message in unique]
    return ConfigError("\n".join(lines), problems=[_problem(shown, *p) for p in unique])


# ---------------------------------------------------------------- pydantic errors as sentences

_YAML11_BOOLS = {"yes": "true", "no": "false", "on": "true", "off": "false", "y": "true", "n": "false"}
_LIMITS = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
           "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's own loc parts ('[key]', 'function-after[...]') so the loc is a key path of ``data``."""
    out: list = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        elif isinstance(part, str) and "[" in part:
            continue
        else:
            data = None
        out.append(part)
    return tuple(out)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _type_at(model: type[BaseModel], path: tuple) -> Any:
    tp: Any = model
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field_info = tp.model_fields.get(part) if isinstance(part, str) else None
            if field_info is None:
                return None
            tp = field_info.annotation
        elif typing.get_origin(tp) is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return _unwrap(tp)


def _show(value: Any, raw: str | None, secret: bool = False) -> str:
    if isinstance(value, str):
        return "'***'" if secret else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, float) and not math.isfinite(value):
        return raw or (".nan" if math.isnan(value) else "-.inf" if value < 0 else ".inf")
    if isinstance(value, (int, float)):
        return raw or repr(value)
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else repr(value)


def _message(err: dict, loc: tuple, doc: YamlDocument, model: type[BaseModel]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    raw = doc.sources.get(loc)
    last = loc[-1] if loc else ""
    if kind.startswith("ambidex_"):
        return err["msg"]
    if kind == "extra_forbidden":
        parent = _type_at(model, loc[:-1])
        allowed = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        close = difflib.get_close_matches(str(last), allowed, n=1)
        return (f"unknown key '{last}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                + (f"; allowed keys: {', '.join(allowed)}" if allowed else ""))
    if kind == "missing":
        return f"missing required key '{last}'"
    if kind == "literal_error":
        tp = _type_at(model, loc)
        allowed = [str(a) for a in typing.get_args(tp)] if typing.get_origin(tp) is Literal else [ctx["expected"]]
        shown = _show(value, raw, secret=bool(_SECRET_KEY.search(str(last))))
        return f"{shown} is not allowed; use one of: {', '.join(allowed)}"
    if kind == "string_type":
        return _expected("text", value, raw, quote=True)
    if kind in ("int_type", "int_parsing"):
        message = _expected("a whole number", value, raw)
        if isinstance(value, str) and re.fullmatch(r"[-+]?0[0-9]+", value):
            message += f"; leading zeros are not read as octal: write {int(value)} (or 0o{value.lstrip('+-0')})"
        elif isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value):
            message += "; remove the quotes"
        return message
    if kind in ("float_type", "float_parsing"):
        return _expected("a number", value, raw)
    if kind in ("bool_type", "bool_parsing"):
        message = _expected("true or false", value, raw)
        if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
            message += f"; YAML 1.2 reads {value} as text: write {_YAML11_BOOLS[value.lower()]}"
        return message
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return _expected("a mapping (key: value lines)", value, raw)
    if kind == "list_type":
        return _expected("a list (- item lines)", value, raw)
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length', 1)} item(s), got none"
    if kind in _LIMITS:
        words, key = _LIMITS[kind]
        return f"must be {words} {ctx.get(key)}, got {_show(value, raw)}"
    return re.sub(r"^Value error, ", "", err["msg"])


def _expected(what: str, value: Any, raw: str | None, quote: bool = False) -> str:
    if value is None:
        return f"expected {what}, got an empty value"
    if isinstance(value, (bool, int, float)):
        text, read = raw or _show(value, None), _show(value, None)
        kind = "a boolean" if isinstance(value, bool) else "a number"
        shown = text if text == read else f"{text} (YAML reads it as {read})"
        return f"expected {what}, got {kind}: {shown}" + (f"; quote it: \"{text}\"" if quote else "")
    return f"expected {what}, got {_show(value, raw)}"
