"""Size limits on what a run keeps and sends: state values, and tool results.

Without them a Python step's 50 MB return went into a 101 MB checkpoint, a 51 MB asset
pickle and a 52 MB ``outputs.json`` (a 959 MB peak), and a tool's 10 MB result was sent to
Gemini whole: 2.6 million prompt tokens, $0.79 for one run.

- A value a node writes (each map item's) is measured as it leaves the node, before
  LangGraph checkpoints it: past ``config.execution.max_state_value_chars`` the run fails
  with StateValueTooLargeError, so it is never checkpointed, stored or sent. Inputs are
  measured by graph.state with the same rule.
- A tool's result past ``config.execution.max_tool_result_chars`` reaches the model as an
  error result instead, as a raising tool's error does, so the model can ask for less.

Sizes are characters of text (every string and key, numbers as written), close to the
length of the value as JSON. Counting stops once past the limit, so measuring a 50 MB
value costs no more than the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from langchain_core.messages import ToolMessage

from agents_pipelines.errors import StateValueTooLargeError
from agents_pipelines.spec.models import Node, WorkflowSpec

__all__ = ["async_limited", "bounded_result", "limited", "oversized", "text_size"]

logger = logging.getLogger(__name__)

NodeFunction = Callable[[dict[str, Any]], dict[str, Any]]
AsyncNodeFunction = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


def text_size(value: Any, stop_after: int) -> int:
    """The characters of ``value``'s text; counting stops once past ``stop_after``."""
    size, pending = 0, [value]
    while pending and size <= stop_after:
        item = pending.pop()
        if isinstance(item, str | bytes):
            size += len(item)
        elif isinstance(item, Mapping):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            pending += item
        else:
            size += len(str(item))
    return size


def oversized(value: Any, limit: int) -> int | None:
    """How many characters ``value`` holds at least, when that is over ``limit``; else None."""
    size = text_size(value, limit)
    return size if size > limit else None


def limited(spec: WorkflowSpec, node: Node, action: NodeFunction) -> NodeFunction:
    """``action``, failing the run when an output is over the state value limit."""

    def run(state: dict[str, Any]) -> dict[str, Any]:
        return _checked(spec, node, action(state))

    return run


def async_limited(spec: WorkflowSpec, node: Node, action: AsyncNodeFunction) -> AsyncNodeFunction:
    """``limited`` for LangGraph's async path (a map node's items)."""

    async def run(state: dict[str, Any]) -> dict[str, Any]:
        return _checked(spec, node, await action(state))

    return run


def _checked(spec: WorkflowSpec, node: Node, outputs: dict[str, Any]) -> dict[str, Any]:
    limit = spec.config.execution.max_state_value_chars
    for field, value in outputs.items():
        if (size := oversized(value, limit)) is not None:
            raise StateValueTooLargeError(
                f"Node `{node.id}` of workflow {spec.flow.name} wrote at least {size} "
                f"characters to `{field}`, over config.execution.max_state_value_chars "
                f"{limit}; the run stopped before the value was checkpointed, stored or sent "
                "to a model. Fix: write less to the state (a summary, or a path or ID where "
                "the data lives), or raise config.execution.max_state_value_chars."
            )
    return outputs


def bounded_result(message: ToolMessage, limit: int, where: str) -> ToolMessage:
    """``message``, or an error result in its place when its content is over ``limit``."""
    if (size := oversized(message.content, limit)) is None:
        return message
    error = (
        f"Error: the result of tool `{message.name}` holds at least {size} characters, over "
        f"config.execution.max_tool_result_chars {limit}, so it was not sent. Call the tool "
        "so that it returns less, or answer without it."
    )
    logger.warning("%s: %s", where, error)
    return ToolMessage(error, tool_call_id=message.tool_call_id, name=message.name, status="error")
