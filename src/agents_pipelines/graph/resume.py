"""Resume a failed run after its last finished super-step, from a LangGraph checkpoint.

The caller (the Dagster asset: orchestration/stores/checkpoints.py) gives a checkpointer and the
run's thread id; nothing here knows where they come from. A thread that holds an
unfinished checkpoint of the same workflow file and inputs is resumed: LangGraph runs the
tasks of the failed super-step again, except those that finished (their writes were kept
as pending writes), so a map node calls again only the items that failed. Anything else
starts fresh: no checkpoint, a finished one, or one written by another version of the file
or of the Python modules its steps and tools name (or with other inputs), which is said in
a warning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agents_pipelines._compat.langgraph import saver_serializer, set_saver_serializer
from agents_pipelines.graph.node_spend import SPEND_CHANNEL, resumed_nodes
from agents_pipelines.redaction import redact_exception
from agents_pipelines.usage.records import PROMPTS_KEY, ResumedNode

# The checkpoint metadata key of the workflow version (LangGraph copies str values of the
# run config's metadata into every checkpoint's metadata).
VERSION_KEY = "agents_pipelines_version"
# PROMPTS_KEY: the versions of the registry prompts the run pinned, kept the same way; an
# attempt that resumes the checkpoint runs them again, wherever the aliases point by then.


@dataclass(frozen=True)
class Checkpointing:
    """Where a run's graph is checkpointed: a LangGraph checkpointer (any
    ``BaseCheckpointSaver``) and the thread that identifies the run across its attempts."""

    saver: Any
    thread_id: str
    # What to warn when the thread holds no checkpoint although an earlier attempt should
    # have left one (its store deleted or replaced); None: nothing is missing.
    on_missing: Callable[[], str | None] | None = None
    # A partition of a range run: its finished thread is kept when it succeeds (the step
    # has yet to materialize every partition), and a finished thread of the same version
    # is taken as it is, its final state reused without a call. The step deletes it.
    keep_finished: bool = False

    def config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": self.thread_id, "checkpoint_ns": ""}}


@dataclass(frozen=True)
class Start:
    """How a run starts: ``input`` is the initial state, or None to resume the thread."""

    input: dict[str, Any] | None
    resumed: tuple[ResumedNode, ...] = ()
    note: str | None = None  # what the log and the metadata say about resuming
    warning: bool = False  # the note is a warning: a checkpoint was not resumed
    finished: bool = False  # the thread had finished: its final state is the run's


def version(workflow_sha256: str, state: Mapping[str, Any]) -> str:
    """The workflow's version (its file's hash, with the Python it names: Workflow.
    version_sha256) and the run's inputs: a checkpoint made with others is not resumed (its
    finished nodes answered another prompt, or ran other code)."""
    inputs = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(f"{workflow_sha256}\n{inputs}".encode()).hexdigest()[:32]


def kept_prompts(checkpointing: Checkpointing | None, run_version: str) -> str | None:
    """The prompt versions that the thread's checkpoint of this version was written with
    (``PROMPTS_KEY``), or None: no checkpoint, another version's, or no registry prompt."""
    if checkpointing is None:
        return None
    found = checkpointing.saver.get_tuple(checkpointing.config())
    metadata = (found.metadata or {}) if found is not None else {}
    if metadata.get(VERSION_KEY) != run_version:
        return None
    kept = metadata.get(PROMPTS_KEY)
    return kept if isinstance(kept, str) else None


def start(
    graph: Any, checkpointing: Checkpointing, state: dict[str, Any], run_version: str
) -> Start:
    """Resume the thread when it holds an unfinished checkpoint of this version; else clear
    it and start fresh. ``graph`` has the checkpointer attached."""
    saver, thread = checkpointing.saver, checkpointing.thread_id
    found = saver.get_tuple(checkpointing.config())
    if found is None:
        missing = checkpointing.on_missing() if checkpointing.on_missing else None
        return Start(state, note=missing, warning=missing is not None)
    if (found.metadata or {}).get(VERSION_KEY) != run_version:
        saver.delete_thread(thread)
        return Start(
            state,
            note=f"Not resumed: the checkpoint of this run (thread {thread}) was written by "
            "another version of the workflow file (or of the Python its steps and tools "
            "name) or with other inputs, so its finished "
            "nodes may not hold for this one. The run starts fresh.",
            warning=True,
        )
    finished = not graph.get_state(checkpointing.config()).next
    if finished and not checkpointing.keep_finished:
        saver.delete_thread(thread)  # it finished: a re-execution of a success runs anew
        return Start(state)
    resumed = resumed_nodes(_spend_entries(found))
    cost = sum(r.cost_usd for r in resumed)
    if finished:
        return Start(
            None,
            resumed,
            note=f"Reused: this partition finished in an earlier attempt (thread {thread}) "
            f"and was kept for the step to materialize; no node is called again ("
            f"{len(resumed)} node(s) or map item(s), ${cost:.6f} then, shown as "
            "resumed_cost_usd).",
            finished=True,
        )
    return Start(
        None,
        resumed,
        note=f"Resumed after the last finished step of an earlier attempt (thread {thread}): "
        f"{len(resumed)} finished node(s) or map item(s) reused, not called again "
        f"(they cost ${cost:.6f} in that attempt, shown as resumed_cost_usd).",
    )


def _spend_entries(found: Any) -> list[dict[str, Any]]:
    """The entries of the finished super-steps, then those of the failed super-step's
    finished tasks (kept as pending writes)."""
    entries = list(found.checkpoint.get("channel_values", {}).get(SPEND_CHANNEL) or [])
    for _task, channel, value in found.pending_writes or ():
        if channel == SPEND_CHANNEL:
            entries.extend(value)
    return entries


class _RedactingSerializer:
    """A checkpointer's serializer that redacts an error before storing it: LangGraph keeps
    a failed task's exception as a pending write, and a provider's error may repeat the
    API key. State values are stored as they are (they are the run's own data)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if isinstance(obj, BaseException):
            redact_exception(obj)
        return self.inner.dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)


def redact_errors(saver: Any) -> None:
    """Make ``saver`` redact the errors it stores (once)."""
    if not isinstance(serializer := saver_serializer(saver), _RedactingSerializer):
        set_saver_serializer(saver, _RedactingSerializer(serializer))
