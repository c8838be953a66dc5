"""The names of a run's Batch API jobs, checkpointed beside its graph: never pay twice.

A batch node submits its job, then polls it for minutes or hours. Should the attempt fail
or die meanwhile (a poll that fails, a lost process), its step retry, a re-execution from
failure or a resume asks the same requests again (the same thread, node and prompts): it
reads the job's name here and attaches to that job rather than submitting and paying for
another. The names live in the run's checkpoint thread, in a namespace of their own that
LangGraph never reads (the graph's checkpoints are in namespace ""), so they go when the
thread goes: a run that succeeds deletes it, and threads past
``config.execution.checkpoint_ttl_days`` are pruned.

Any LangGraph checkpointer works (the instance's SQLite file or PostgreSQL database):
only its public ``get_tuple`` and ``put`` are used.
"""

from __future__ import annotations

import threading
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

NAMESPACE = "agents_pipelines_batch_jobs"
_CHANNEL = "jobs"


class CheckpointedJobNames:
    """Job names by request key (llm.batch's display name) in ``thread``'s checkpoints."""

    def __init__(self, saver: Any, thread_id: str):
        self._saver = saver
        self._config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": NAMESPACE}}
        self._lock = threading.Lock()  # several nodes may submit at once

    def get(self, key: str) -> str | None:
        name = self._names().get(key)
        return str(name) if name is not None else None

    def put(self, key: str, name: str) -> None:
        with self._lock:
            names = {**self._names(), key: name}
            checkpoint = empty_checkpoint()
            version = str(checkpoint["id"])  # new each time: PostgreSQL keeps blobs by version
            checkpoint["channel_values"] = {_CHANNEL: names}
            checkpoint["channel_versions"] = {_CHANNEL: version}
            metadata: Any = {"source": "update", "step": len(names), "parents": {}}
            self._saver.put(self._config, checkpoint, metadata, {_CHANNEL: version})

    def _names(self) -> dict[str, Any]:
        found = self._saver.get_tuple(self._config)
        if found is None:
            return {}
        return dict(found.checkpoint.get("channel_values", {}).get(_CHANNEL) or {})
