"""An evaluation dataset: a JSON Lines file, one case per line.

Each line is a JSON object of the workflow's inputs, plus an optional ``expected`` object
of state fields and the values the final state should hold::

    {"ticket": "I was charged twice", "expected": {"category": "billing"}}

A line that is not a case (not UTF-8, not JSON, not an object, inputs the workflow refuses,
an ``expected`` naming no state field or a value its field can never hold, such as one
outside its ``choices``) is kept as a ``LineProblem`` with its number and what
is wrong: the command reports and skips it, never drops it silently. Blank lines are not
cases and not problems.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents_pipelines.errors import AgentsPipelinesError, InvalidInputsError
from agents_pipelines.graph.state import checked_value, initial_state
from agents_pipelines.spec import Workflow

__all__ = ["EXPECTED_KEY", "Case", "Dataset", "DatasetError", "LineProblem", "read_dataset"]

EXPECTED_KEY = "expected"


class DatasetError(AgentsPipelinesError):
    """The dataset as a whole cannot be evaluated: missing, unreadable, or without a case."""


@dataclass(frozen=True)
class Case:
    line: int
    inputs: dict[str, Any]
    expected: dict[str, Any]


@dataclass(frozen=True)
class LineProblem:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass(frozen=True)
class Dataset:
    path: Path
    cases: tuple[Case, ...]
    problems: tuple[LineProblem, ...]

    @property
    def lines(self) -> int:
        """The lines that hold something: the cases and the skipped ones."""
        return len(self.cases) + len(self.problems)


def read_dataset(path: Path, workflow: Workflow) -> Dataset:
    """Every line of ``path`` checked against ``workflow``. Raises DatasetError for a file
    that is missing or unreadable, or that holds no line at all."""
    cases: list[Case] = []
    problems: list[LineProblem] = []
    for parsed in _parsed_lines(path, workflow):
        if isinstance(parsed, Case):
            cases.append(parsed)
        else:
            problems.append(parsed)
    if not cases and not problems:
        raise DatasetError(
            f"Dataset {path} is empty: write one JSON object per line, the workflow's "
            f'inputs plus an optional "expected", e.g. {_example(workflow)}'
        )
    return Dataset(path, tuple(cases), tuple(problems))


def _parsed_lines(path: Path, workflow: Workflow) -> Iterator[Case | LineProblem]:
    """The file read a line at a time (10,000 lines were held whole as text, then as a
    list of lines, beside the cases), each line decoded on its own: a line that is not
    UTF-8 is one problem, not the whole dataset's."""
    try:
        with path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    yield LineProblem(
                        number, f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
                    )
                    continue
                if line.strip():
                    yield _case(number, line, workflow)
    except FileNotFoundError:
        raise DatasetError(f"Dataset {path} does not exist.") from None
    except OSError as exc:
        raise DatasetError(f"Dataset {path} cannot be read: {exc}") from None


def _case(number: int, line: str, workflow: Workflow) -> Case | LineProblem:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return LineProblem(number, f"not JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(value, dict):
        return LineProblem(number, f"not a JSON object but {_json_kind(value)}")
    expected = value.pop(EXPECTED_KEY, {})
    problems = _expected_problems(expected, workflow)
    try:
        initial_state(workflow.spec, value)
    except InvalidInputsError as exc:
        problems.insert(0, str(exc))
    if problems:
        return LineProblem(number, "; ".join(problems))
    return Case(number, value, expected)


def _expected_problems(expected: Any, workflow: Workflow) -> list[str]:
    if not isinstance(expected, dict):
        return [f'"{EXPECTED_KEY}" must be an object of state fields, got {_json_kind(expected)}']
    return [
        problem
        for name, value in expected.items()
        if (problem := _expected_problem(name, value, workflow))
    ]


def _expected_problem(name: str, value: Any, workflow: Workflow) -> str | None:
    """Why the final state can never hold ``value`` in ``name``, if it cannot: scoring that
    case would fail it for the dataset's fault, not the workflow's."""
    fields = workflow.spec.state.fields
    if name not in fields:
        return (
            f'"{EXPECTED_KEY}" names `{name}`, which is not a state field of {workflow.name} '
            f"(fields: {', '.join(fields)})"
        )
    try:
        checked_value(fields[name], value)
    except ValueError as exc:
        return f'"{EXPECTED_KEY}.{name}" {exc}, which the field can never hold'
    return None


def _json_kind(value: Any) -> str:
    kinds: Mapping[type, str] = {list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def _example(workflow: Workflow) -> str:
    inputs = {name: "..." for name in workflow.spec.input_fields[:2]}
    return json.dumps({**inputs, EXPECTED_KEY: {"field": "value"}})
