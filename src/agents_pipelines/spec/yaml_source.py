"""Read a workflow file into plain data, remembering where every value stands.

libyaml (PyYAML's ``CSafeLoader``) composes the node tree; we build the Python values
ourselves so that we can record each key's line, refuse duplicate keys (PyYAML silently
keeps the last), and stop alias expansion before a "billion laughs" document eats the
machine. PyYAML's pure-Python SafeLoader is the reference: it reads every file libyaml
might read otherwise, and every file with a problem, so that it gives every message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents_pipelines.errors import ConfigIssue, WorkflowConfigError
from agents_pipelines.redaction import redact
from agents_pipelines.spec.files import (
    MAX_FILE_BYTES,
    UnreadableFileError,
    read_limited,
    too_large,
)

MAX_VALUES = 50_000  # values after alias expansion; real workflows hold a few hundred
MAX_DEPTH = 40  # nesting levels; also stops self-referencing aliases

PathKey = tuple[str | int, ...]
_TAG = "tag:yaml.org,2002:"
_COLLECTION_TAGS = frozenset({_TAG + "map", _TAG + "seq"})
# Tags PyYAML's implicit resolver gives plain scalars; an explicit `!!python/...` or
# `!!binary` tag is refused, so a file never asks the loader for more than plain data.
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
# Scalars kept as their text: strings (what SafeLoader constructs, without its cost per
# call), and `=` and `<<` as plain values, whose tags SafeLoader cannot construct.
_TEXT_TAGS = frozenset({_TAG + "str", _TAG + "value", _TAG + "merge"})
# Where libyaml and PyYAML read text apart: control characters (the reference refuses
# them), tabs, BOMs and Unicode line breaks (the two count lines or skip blanks apart).
_READ_APART = re.compile(yaml.reader.Reader.NON_PRINTABLE.pattern + "|[\t\x85\ufeff\u2028\u2029]")
# A block scalar's header as PyYAML reads it: `|` or `>`, indicators, then a comment or nothing.
_BLOCK_STYLES = frozenset("|>")
_BLOCK_HEADER = re.compile(r"[|>](?:[+-][1-9]?|[1-9][+-]?)?(?: +(?:#[^\r\n]*)?)?(?:\r|\n|\Z)")
_MAX_KEY = 1000  # both readers limit an implicit key to 1,024 characters, counted apart


def make_issue(
    file: str,
    path: str,
    problem: str,
    fix: str | None,
    line: int | None = None,
    column: int | None = None,
) -> ConfigIssue:
    """A ConfigIssue whose path, problem and fix never echo an API key from the file."""
    return ConfigIssue(file, redact(path), redact(problem), fix and redact(fix), line, column)


@dataclass
class YamlDocument:
    """A parsed file: its data, its text, and the (line, column) of every path."""

    file: str
    text: str
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: PathKey) -> tuple[int, int] | None:
        """Position of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if (found := self.positions.get(tuple(path[:end]))) is not None:
                return found
        return None

    def issue(self, path: PathKey, problem: str, fix: str | None = None) -> ConfigIssue:
        line, column = self.locate(path) or (None, None)
        return make_issue(self.file, format_path(path), problem, fix, line, column)


def format_path(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_yaml(path: Path) -> YamlDocument:
    """Read ``path``; raise WorkflowConfigError for anything that is not sound YAML."""
    try:
        raw = read_limited(path)
    except UnreadableFileError as exc:
        raise _fail(str(path), exc.problem, exc.fix) from None
    return parse_yaml(raw, str(path))


def parse_yaml(raw: bytes, file: str) -> YamlDocument:
    """Parse ``raw`` (the bytes of ``file``) within the size, depth and alias limits."""
    if len(raw) > MAX_FILE_BYTES:
        exc = too_large(len(raw))
        raise _fail(file, exc.problem, exc.fix)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(
            file,
            f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8",
            "save the file as UTF-8",
            line,
        ) from None
    # libyaml composes a workflow file some 10 times faster than PyYAML's pure-Python
    # reader (0.5 ms against 5.5 ms per example workflow, values built by the same
    # _Builder); the pure-Python reader takes the rest, and gives every message.
    return _parse_libyaml(text, file) or _parse_reference(text, file)


def _parse_libyaml(text: str, file: str) -> YamlDocument | None:
    """The file as the reference reads it, composed by libyaml; None to use the reference."""
    if _READ_APART.search(text):
        return None
    builder = _LibyamlBuilder(file, text)
    try:
        return YamlDocument(file, text, builder.build(), builder.positions)
    except Exception:  # any problem or doubt: the reference reader decides, and explains
        return None


def _parse_reference(text: str, file: str) -> YamlDocument:
    """The pure-Python reader: the reference for every value, position and message."""
    builder = _Builder(file, text)
    return YamlDocument(file, text, builder.build(), builder.positions)


def _fail(
    file: str, problem: str, fix: str, line: int | None = None, path: str = ""
) -> WorkflowConfigError:
    return WorkflowConfigError([make_issue(file, path, problem, fix, line)])


class _TooDeep(Exception):
    def __init__(self, line: int):
        self.line = line


class _Loader(yaml.SafeLoader):
    """A SafeLoader that stops composing below MAX_DEPTH levels.

    PyYAML's composer recurses once per nesting level, so a 2 KB file of brackets would
    raise RecursionError before _Builder._value could count the levels.
    """

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1:  # the root is composed at depth 1
                event = self.peek_event()
                raise _TooDeep(event.start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _too_deep(file: str, line: int) -> WorkflowConfigError:
    return _fail(
        file,
        f"the document nests deeper than {MAX_DEPTH} levels (or an alias refers to itself)",
        "flatten the structure and remove self-referencing aliases",
        line,
    )


class _Builder:
    def __init__(self, file: str, text: str):
        self.file = file
        self.text = text
        self.positions: dict[PathKey, tuple[int, int]] = {}
        self.count = 0

    def _open(self) -> Any:
        return _Loader(self.text)  # checks every character first

    def build(self) -> Any:
        try:
            self.loader = self._open()
        except yaml.reader.ReaderError as exc:
            raise self._unprintable(exc) from None
        try:
            return self._root()
        except _TooDeep as exc:
            raise _too_deep(self.file, exc.line) from None
        except yaml.MarkedYAMLError as exc:
            raise self._syntax_error(exc) from None
        except yaml.YAMLError as exc:
            raise _fail(self.file, f"YAML error: {exc}", "fix the YAML syntax") from None
        finally:
            self.loader.dispose()

    def _root(self) -> Any:
        root = self.loader.get_single_node()
        if root is None:
            raise _fail(self.file, "the file is empty", "start from an example in workflows/")
        return self._value(root, ())

    def _unprintable(self, exc: yaml.reader.ReaderError) -> WorkflowConfigError:
        line = self.text.count("\n", 0, exc.position) + 1
        return _fail(
            self.file,
            f"the file holds the control character U+{exc.character:04X}, "
            "which YAML does not allow",
            "delete it; inside double quotes write special characters as escapes, e.g. \\t",
            line,
        )

    def _syntax_error(self, exc: yaml.MarkedYAMLError) -> WorkflowConfigError:
        mark = exc.problem_mark or exc.context_mark
        if mark is not None and mark.index >= len(self.text) and exc.context_mark is not None:
            mark = exc.context_mark  # "unexpected end of stream": point where it opened
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        issue = make_issue(
            self.file,
            "",
            f"YAML syntax error: {problem}",
            "fix the YAML syntax at this position (check indentation and quotes)",
            mark.line + 1 if mark else None,
            mark.column + 1 if mark else None,
        )
        return WorkflowConfigError([issue])

    def _value(self, node: yaml.Node, path: PathKey) -> Any:
        self.count += 1
        line = node.start_mark.line + 1
        if len(path) > MAX_DEPTH:
            raise _too_deep(self.file, line)
        if self.count > MAX_VALUES:
            raise _fail(
                self.file,
                f"the document expands to more than {MAX_VALUES:,} values "
                "(YAML aliases can multiply a small file)",
                "remove the repeated anchors and aliases",
                line,
            )
        self.positions.setdefault(path, (line, node.start_mark.column + 1))
        self._check_tag(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self._value(item, (*path, i)) for i, item in enumerate(node.value)]
        if node.tag in _TEXT_TAGS:
            return node.value
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: PathKey) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except ValueError as exc:  # a 5,000-digit integer (Python's int-string limit), 2026-02-30
            shown = node.value if len(node.value) <= 20 else node.value[:20] + "…"
            kind = node.tag.removeprefix(_TAG)
            raise _fail(
                self.file,
                f"the value `{shown}` reads as {kind} in YAML, but is not a valid one "
                f"({str(exc).split(';')[0]})",
                "correct it, or quote it to keep it as text",
                node.start_mark.line + 1,
                format_path(path),
            ) from None

    def _check_tag(self, node: yaml.Node) -> None:
        allowed = (
            _SCALAR_TAGS | _TEXT_TAGS if isinstance(node, yaml.ScalarNode) else _COLLECTION_TAGS
        )
        if node.tag not in allowed:
            raise _fail(
                self.file,
                f"the YAML tag {node.tag} is not allowed in workflow files",
                "remove the tag; workflow files hold plain YAML data",
                node.start_mark.line + 1,
            )

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        self.loader.flatten_mapping(node)  # resolves `<<` merge keys
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            key_path = (*path, key)
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in result:
                first = self.positions.get(key_path, (0, 0))[0]
                issue = make_issue(
                    self.file,
                    format_path(key_path),
                    f"duplicate key `{key}` (first defined on line {first})",
                    "keep one of the two entries",
                    *where,
                )
                raise WorkflowConfigError([issue])
            self.positions[key_path] = where
            result[key] = self._value(value_node, key_path)
        return result

    def _key(self, node: yaml.Node, path: PathKey) -> str:
        """Every key in a workflow file is a name; a plain `yes:` or `1:` is not text."""
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.ScalarNode):
            raise _fail(
                self.file,
                "a mapping key must be a plain scalar",
                "use a plain name as the key",
                line,
            )
        self._check_tag(node)
        key = node.value if node.tag in _TEXT_TAGS else self._scalar(node, (*path, node.value))
        if isinstance(key, str):
            return key
        raise _fail(
            self.file,
            f"the key `{node.value}` reads as {_reads_as(key)} in YAML, not as a name",
            f'quote it: `"{node.value}":`',
            line,
            format_path((*path, node.value)),
        )


class _ReadsApart(Exception):
    """libyaml may read this file otherwise than PyYAML does."""


class _LibyamlBuilder(_Builder):
    """Builds from libyaml's node tree, and stands aside where PyYAML reads otherwise.

    libyaml takes a few inputs that PyYAML refuses (``[what?]``, a block header ``|#``),
    and places an empty value differently (at the end of the file, for instance). Deep
    nesting is safe: libyaml refuses more than 1,000 levels, and _value stops at MAX_DEPTH.
    """

    flow = False  # inside [...] or {...}

    def _open(self) -> Any:
        # PyYAML built without libyaml has no CSafeLoader: the reference reads every file.
        return yaml.CSafeLoader(self.text)

    def _value(self, node: yaml.Node, path: PathKey) -> Any:
        if isinstance(node, yaml.ScalarNode):
            # A missing value has no text of its own: keep no position libyaml gives it.
            if _is_missing(node) and path not in self.positions:
                raise _ReadsApart
            self._check_scalar(node)
        elif isinstance(node, yaml.CollectionNode) and node.flow_style and not self.flow:
            self.flow = True
            try:
                return super()._value(node, path)
            finally:
                self.flow = False
        return super()._value(node, path)

    def _key(self, node: yaml.Node, path: PathKey) -> str:
        if isinstance(node, yaml.ScalarNode):
            if _is_missing(node) or len(node.value) > _MAX_KEY:
                raise _ReadsApart
            self._check_scalar(node)
        return super()._key(node, path)

    def _check_scalar(self, node: yaml.ScalarNode) -> None:
        if node.style in _BLOCK_STYLES and not _BLOCK_HEADER.match(
            self.text, node.start_mark.index
        ):
            raise _ReadsApart  # libyaml takes headers such as `|#` that PyYAML refuses
        if self.flow and not node.style and ("?" in node.value or ":" in node.value):
            raise _ReadsApart  # libyaml reads more of these plain scalars than PyYAML does


def _is_missing(node: yaml.ScalarNode) -> bool:
    """An empty plain scalar (libyaml gives a plain scalar the style '', PyYAML None)."""
    return not node.value and not node.style


def _reads_as(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"a {type(value).__name__}"
