"""The inputs in a file dropped in a sensor's inbox: JSON or YAML hold one object, JSONL one
per line. Inbox files meet the limits of workflow files (``spec.files`` and the YAML reader).

A JSONL file may be read from a byte offset: the lines appended since the last tick, so
that the lines before them are not run again (``inbox.py`` keeps the offset).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents_pipelines.errors import ConfigIssue, InvalidInputsError, WorkflowConfigError
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.yaml_source import MAX_DEPTH, parse_yaml

__all__ = ["InputFileError", "InputRecord", "is_jsonl", "read_inputs", "read_records"]


class InputFileError(ValueError):
    """A dropped file does not hold valid input for the workflow."""


@dataclass(frozen=True)
class InputRecord:
    inputs: dict[str, Any]
    end: int  # the byte offset just past its line (a JSON or YAML file: the file's length)
    line: int | None = None  # its line in a JSONL file


def is_jsonl(path: Path) -> bool:
    return path.suffix.lower() == ".jsonl"


def read_inputs(path: Path, raw: bytes, workflow: Workflow) -> list[dict[str, Any]]:
    """The input objects in ``raw``, the bytes of ``path``."""
    return [record.inputs for record in read_records(path, raw, workflow)]


def read_records(path: Path, raw: bytes, workflow: Workflow, start: int = 0) -> list[InputRecord]:
    """The inputs in ``raw`` (from byte ``start`` of a JSONL file), each checked against the
    workflow's input fields. YAML goes through the workflow reader (aliases, depth), and
    JSON is held to the same depth. Raises InputFileError naming the first bad line."""
    # The graph package pulls in LangGraph: import on a sensor tick, not at load.
    from agents_pipelines.graph.state import initial_state

    records = _records(path, raw, start)
    for record in records:
        where = f"line {record.line}: " if record.line is not None else ""
        if not isinstance(record.inputs, dict):
            raise InputFileError(f"{where}an input must be a mapping of field to value")
        try:
            initial_state(workflow.spec, record.inputs)
        except InvalidInputsError as exc:
            raise InputFileError(f"{where}{exc}") from None
    if not records and start == 0:
        raise InputFileError("it holds no input")
    return records


def _records(path: Path, raw: bytes, start: int) -> list[InputRecord]:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        try:
            return [InputRecord(parse_yaml(raw, str(path)).data, len(raw))]
        except WorkflowConfigError as exc:
            raise InputFileError(_yaml_problem(exc.issues[0])) from None
    if suffix == ".json":
        return [InputRecord(_parse_json(_utf8(raw, 0), "the file"), len(raw))]
    return list(_lines(raw, start))


def _lines(raw: bytes, start: int) -> Iterable[InputRecord]:
    """The lines from byte ``start``, numbered as in the whole file."""
    number = raw.count(b"\n", 0, start)
    while start < len(raw):
        newline = raw.find(b"\n", start)
        end = len(raw) if newline < 0 else newline + 1
        number += 1
        line = _utf8(raw[start:end], start)
        if line.strip():
            yield InputRecord(_parse_json(line, f"line {number}"), end, number)
        start = end


def _utf8(raw: bytes, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"byte 0x{raw[exc.start]:02x} at offset {offset + exc.start} is not UTF-8"
        ) from None


def _yaml_problem(issue: ConfigIssue) -> str:
    """The problem the YAML reader found; its fix speaks of workflow files, so it is left out."""
    return f"line {issue.line}: {issue.problem}" if issue.line else issue.problem


def _parse_json(text: str, where: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{where} is not valid JSON/YAML ({exc})") from None
    except ValueError as exc:  # a 5,000-digit integer: Python's int-string conversion limit
        raise InputFileError(f"{where} cannot be read ({str(exc).split(';')[0]})") from None
    except RecursionError:  # json recurses once per bracket: 200 KB of `[` is enough
        raise InputFileError(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    if _deeper_than(value, MAX_DEPTH):
        raise InputFileError(f"{where} nests deeper than {MAX_DEPTH} levels")
    return value


def _deeper_than(value: Any, depth: int) -> bool:
    """Whether a value lies more than ``depth`` levels down (the YAML reader's count)."""
    level = [value]
    for _ in range(depth + 1):
        level = [child for item in level for child in _children(item)]
        if not level:
            return False
    return True


def _children(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return value.values()
    return value if isinstance(value, list) else ()
