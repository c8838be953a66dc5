"""A Python step: a node that calls the user's function instead of a model.

The function gets the state fields its parameters name, as keyword arguments, and returns
a dict holding exactly the node's outputs, each checked against its field's type. It runs
as a LangChain ``RunnableLambda`` named after it, so autolog traces it as a span of its own
under the node's; and it reports itself to the usage ledger with a custom callback event,
so ``node_calls`` shows it (at no cost) without counting it as an LLM call.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.runnables import RunnableLambda
from pydantic import TypeAdapter, ValidationError

from agents_pipelines.errors import PythonStepError
from agents_pipelines.graph.time_limit import TimeLimit
from agents_pipelines.redaction import redact
from agents_pipelines.spec import field_types
from agents_pipelines.spec.models import Node, WorkflowSpec
from agents_pipelines.spec.python_refs import import_ref, split_ref
from agents_pipelines.usage.ledger import PYTHON_STEP_EVENT

NodeFunction = Callable[[dict[str, Any]], dict[str, Any]]


def python_step(spec: WorkflowSpec, node: Node) -> NodeFunction:
    """The node's action: state in, the function's checked outputs out.

    In a ``map`` node the state also holds the item under the map's ``as`` name, and each
    output is one element of its list field: it is checked against the element type.
    """
    assert node.function is not None  # make_node sends only Python steps here
    ref = node.function
    target: Callable[..., Any] = import_ref(ref)  # type: ignore[assignment]  # checked at load
    readable = {*spec.state.fields, *([node.map.as_] if node.map is not None else [])}
    parameters = [name for name in _parameter_names(target) if name in readable]
    check = _OutputCheck(spec, node)
    where = f"Python step `{node.id}` of workflow {spec.flow.name} ({ref})"
    limit = TimeLimit(node.python_timeout_s, where)

    def call(arguments: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            outputs = check(limit.call(lambda: _completed(target(**arguments), limit)))
        except PythonStepError as exc:  # wrong outputs
            _report(ref, started, str(exc))
            raise
        except Exception as exc:  # from the user's code: kept as the cause (retries see it)
            failure = check.raised(exc)
            _report(ref, started, str(failure))
            raise failure from exc
        _report(ref, started, None)
        return outputs

    runnable = RunnableLambda(call, name=split_ref(ref)[1])

    def action(state: dict[str, Any]) -> dict[str, Any]:
        # Called inside the LangGraph node: the node's config (callbacks, metadata) reaches
        # the lambda through LangChain's context, as it reaches a model's invoke.
        return runnable.invoke(_own_copies(state, parameters))

    return action


def _own_copies(state: dict[str, Any], parameters: list[str]) -> dict[str, Any]:
    """The fields the function takes, as copies of its own: LangGraph hands a node the
    state's own objects, so a step that appended to an input list changed that field in
    the final state (and in a map, every item's view of it), though it is not an output.
    Only the parameters are copied: a 10,000-string list takes 2.6 ms, 10,000 small dicts
    46 ms (measured); a map item's step that reads only its item copies only that."""
    return copy.deepcopy({name: state[name] for name in parameters if name in state})


class _OutputCheck:
    """The returned dict against the node's outputs: exactly those keys, of their types."""

    def __init__(self, spec: WorkflowSpec, node: Node):
        self._where = f"Python step `{node.id}` of workflow {spec.flow.name} ({node.function})"
        self._outputs = list(node.outputs)
        self._types = {out: _type_of(spec, node, out) for out in node.outputs}
        self._choices = {out: _choices_of(spec, out) for out in node.outputs}

    def __call__(self, result: Any) -> dict[str, Any]:
        if not isinstance(result, dict):
            self._fail(f"returned {type(result).__name__}, not a dict")
        if missing := [out for out in self._outputs if out not in result]:
            self._fail(f"returned no `{'`, `'.join(missing)}`")
        if extra := [str(key) for key in result if key not in self._types]:
            self._fail(f"returned `{'`, `'.join(extra)}`, which is not one of its outputs")
        return {out: self._value(out, result[out]) for out in self._outputs}

    def _value(self, field: str, value: Any) -> Any:
        type_name, choices = self._types[field], self._choices[field]
        try:
            return _adapter(type_name, choices).validate_python(value, strict=True)
        except ValidationError:
            among = f" with choices {list(choices)}" if choices else ""
            self._fail(
                f"returned {type(value).__name__} for `{field}`, which is {type_name}{among} "
                f"(got {value!r:.60})"
            )

    def _fail(self, what: str) -> Any:
        raise PythonStepError(
            f"{self._where} {what}. Fix: return a dict with exactly the node's outputs "
            f"({', '.join(f'{out}: {self._types[out]}' for out in self._outputs)})."
        )

    def raised(self, exc: Exception) -> PythonStepError:
        return PythonStepError(redact(f"{self._where} raised {type(exc).__name__}: {exc}"))


def _type_of(spec: WorkflowSpec, node: Node, field: str) -> str:
    type_name = spec.state.fields[field].type
    if node.map is not None:  # one element of the list per item
        return field_types.element_name(type_name) or type_name
    return type_name


def _choices_of(spec: WorkflowSpec, field: str) -> tuple[str | int, ...]:
    return tuple(spec.state.fields[field].choices or ())


def _parameter_names(target: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # a builtin without a signature is called without arguments
        return []


# Module-level, not in the registry: a pure memo of type names.
@functools.cache
def _adapter(type_name: str, choices: tuple[str | int, ...] = ()) -> TypeAdapter[Any]:
    return TypeAdapter(field_types.choice_type(type_name, choices))


def _report(ref: str, started: float, error: str | None) -> None:
    """Tell the usage ledger (a callback) that the step ran, and how long it took."""
    data = {"function": ref, "latency_s": time.perf_counter() - started, "error": error}
    dispatch_custom_event(PYTHON_STEP_EVENT, data)


def _completed(result: Any, limit: TimeLimit) -> Any:
    """An async function's result, run to completion (cancelled at the time limit). This
    runs on the time limit's own thread, where no event loop runs."""
    if inspect.iscoroutine(result):
        return asyncio.run(limit.await_(result))
    return result
