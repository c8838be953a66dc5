"""What each finished node spent, written to the run's state so the checkpoint keeps it.

A resumed run does not call again the nodes (and map items) an earlier attempt finished;
it still has to say what they cost, without adding it to its own figures. Each node's task
appends one entry to the private channel ``__spend__``: the calls the ledger saw for that
node (or item) since the node last claimed them. LangGraph saves a task's writes with the
checkpoint of its super-step, and keeps the writes of a failed super-step's finished tasks
as pending writes: so the entries of exactly the reused tasks are in the checkpoint that a
resumed run starts from (graph.resume reads them).

The ledger reaches the node through ``config["configurable"][LEDGER_KEY]``: the compiled
graph is shared between runs, the ledger is the run's own. LangGraph copies only str,
int, float and bool values of ``configurable`` into a checkpoint's metadata, so the ledger
object is never stored.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig

from agents_pipelines.usage.records import ResumedNode

SPEND_CHANNEL = "__spend__"
LEDGER_KEY = "agents_pipelines_ledger"

NodeAction = Callable[[dict[str, Any]], dict[str, Any]]


def channels() -> dict[str, Any]:
    """The private channel the entries are appended to."""
    return {SPEND_CHANNEL: Annotated[list[dict[str, Any]], operator.add]}


def entry(config: RunnableConfig, node: str, item: int | None = None) -> dict[str, Any]:
    """The write of a task that ends now: its node's unclaimed calls, as a plain dict (the
    checkpoint serializer stores dicts as they are). Empty without a ledger."""
    ledger = (config.get("configurable") or {}).get(LEDGER_KEY)
    if ledger is None:
        return {}
    return {SPEND_CHANNEL: [ledger.claim(node, item).as_dict()]}


def accounted(action: NodeAction, node: str) -> Callable[[dict[str, Any], RunnableConfig], Any]:
    """``action`` as a LangGraph node that also writes what it spent."""

    def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return {**action(state), **entry(config, node)}

    return run


def accounted_async(
    action: Callable[[dict[str, Any]], Any], node: str
) -> Callable[[dict[str, Any], RunnableConfig], Any]:
    """An async ``action`` as a LangGraph node that also writes what it spent."""

    async def run(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        return {**(await action(state)), **entry(config, node)}

    return run


def resumed_nodes(entries: Sequence[Mapping[str, Any]]) -> tuple[ResumedNode, ...]:
    """The entries read back from a checkpoint."""
    return tuple(ResumedNode(**dict(e)) for e in entries)
