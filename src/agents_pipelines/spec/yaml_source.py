"""Read a workflow file into plain data, remembering where every value stands.

PyYAML's SafeLoader composes the node tree; we build the Python values ourselves so that
we can record each key's line, refuse duplicate keys (PyYAML silently keeps the last),
and stop alias expansion before a "billion laughs" document eats the machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents_pipelines.errors import ConfigIssue, WorkflowConfigError

MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 50_000  # values after alias expansion; real workflows hold a few hundred
MAX_DEPTH = 40  # nesting levels; also stops self-referencing aliases

PathKey = tuple[str | int, ...]
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


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
        return ConfigIssue(self.file, format_path(path), problem, fix, line, column)


def format_path(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def read_yaml(path: Path) -> YamlDocument:
    """Read ``path``; raise WorkflowConfigError for anything that is not sound YAML."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(file, f"cannot read the file ({exc.strerror})", "check the path") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _fail(
            file,
            f"the file is {len(raw):,} bytes, over the {MAX_FILE_BYTES:,}-byte limit",
            "split it into several workflows",
        )
    return parse_yaml(raw, file)


def parse_yaml(raw: bytes, file: str) -> YamlDocument:
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
    builder = _Builder(file, text)
    return YamlDocument(file, text, builder.build(), builder.positions)


def _fail(file: str, problem: str, fix: str, line: int | None = None) -> WorkflowConfigError:
    return WorkflowConfigError([ConfigIssue(file, "", problem, fix, line)])


class _Builder:
    def __init__(self, file: str, text: str):
        self.file = file
        self.loader = yaml.SafeLoader(text)
        self.positions: dict[PathKey, tuple[int, int]] = {}
        self.count = 0

    def build(self) -> Any:
        try:
            root = self.loader.get_single_node()
            if root is None:
                raise _fail(self.file, "the file is empty", "start from an example in workflows/")
            return self._value(root, ())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            raise WorkflowConfigError(
                [
                    ConfigIssue(
                        self.file,
                        "",
                        f"YAML syntax error: {problem}",
                        "fix the YAML syntax at this position (check indentation and quotes)",
                        mark.line + 1 if mark else None,
                        mark.column + 1 if mark else None,
                    )
                ]
            ) from None
        except yaml.YAMLError as exc:
            raise _fail(self.file, f"YAML error: {exc}", "fix the YAML syntax") from None
        finally:
            self.loader.dispose()

    def _value(self, node: yaml.Node, path: PathKey) -> Any:
        self.count += 1
        if len(path) > MAX_DEPTH:
            raise _fail(
                self.file,
                f"the document nests deeper than {MAX_DEPTH} levels (or an alias refers to itself)",
                "flatten the structure and remove self-referencing aliases",
                node.start_mark.line + 1,
            )
        if self.count > MAX_VALUES:
            raise _fail(
                self.file,
                f"the document expands to more than {MAX_VALUES:,} values "
                "(YAML aliases can multiply a small file)",
                "remove the repeated anchors and aliases",
                node.start_mark.line + 1,
            )
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTION_TAGS:
            raise _fail(
                self.file,
                f"the YAML tag {node.tag} is not allowed in workflow files",
                "remove the tag; workflow files hold plain YAML data",
                node.start_mark.line + 1,
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self._value(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)  # resolves `<<` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise _fail(
                    self.file,
                    "a mapping key must be a plain scalar",
                    "use a plain name as the key",
                    key_node.start_mark.line + 1,
                )
            part: str | int = (
                key
                if isinstance(key, str | int) and key is not True and (key is not False)
                else str(key)
            )
            key_path = (*path, part)
            if key in result:
                first = self.positions.get(key_path, (0, 0))[0]
                raise WorkflowConfigError(
                    [
                        ConfigIssue(
                            self.file,
                            format_path(key_path),
                            f"duplicate key `{key}` (first defined on line {first})",
                            "keep one of the two entries",
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                        )
                    ]
                )
            self.positions[key_path] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self._value(value_node, key_path)
        return result
