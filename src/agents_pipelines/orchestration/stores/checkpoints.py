"""Where a Dagster run's graph is checkpointed, so that its retries resume it.

- The thread: the run's root run id, the asset key and the partition. A step retry keeps
  the run id; "re-execute from failure" makes a run whose ``root_run_id`` is the first
  run's; a new materialization is a new root, so it starts fresh.
- The store: the instance's own (databases.py): its PostgreSQL database
  (langgraph-checkpoint-postgres, installed with the ``postgres`` extra), or else
  ``checkpoints.sqlite`` in its storage folder (langgraph-checkpoint-sqlite).
- Threads not written for ``config.execution.checkpoint_ttl_days`` are deleted as a run
  opens the store. A run that succeeds deletes its own (run_parts.Checkpoints).
- A workflow with ``redact_pii`` stores its checkpoints encrypted (graph/checkpoint_cipher.py),
  with the key from AGENTS_PIPELINES_CHECKPOINT_KEY.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from agents_pipelines._compat.langgraph import newest_checkpoint_per_thread, saver_connection
from agents_pipelines.orchestration.attempts import unfinished_paid_attempt
from agents_pipelines.orchestration.stores.databases import (
    instance_store,
    is_postgres,
    postgres_schema_lock,
    psycopg_url,
    shared_sqlite,
)
from agents_pipelines.registry import ProcessRegistry, process_registry
from agents_pipelines.spec import Workflow
from agents_pipelines.sqlite_damage import naming_damage

if TYPE_CHECKING:  # the graph package imports LangGraph: not at code-location load
    from agents_pipelines.graph.resume import Checkpointing

SQLITE_FILE = "checkpoints.sqlite"
_UUID6_EPOCH = 0x01B21DD213814000  # 100-ns ticks from 1582-10-15 to 1970-01-01
_DAY_S = 86_400


def thread_id(context: dg.AssetExecutionContext) -> str:
    """The checkpoint thread of this step: shared by its retries and re-executions."""
    root = context.run.root_run_id or context.run.run_id
    partition = context.partition_key if context.has_partition_key else ""
    return f"{root}|{context.asset_key.to_user_string()}|{partition}"


@contextmanager
def checkpointing(
    context: dg.AssetExecutionContext,
    workflow: Workflow,
    registry: ProcessRegistry | None = None,
    keep_finished: bool = False,
) -> Iterator[Checkpointing | None]:
    """The run's checkpointing, or None when ``config.execution.resume`` is false (then
    nothing is written). ``registry`` keeps the store's connection (default: the
    process's). ``keep_finished``: a partition of a range run (Checkpointing)."""
    from agents_pipelines.graph.resume import Checkpointing

    execution = workflow.spec.config.execution
    if not execution.resume:
        yield None
        return
    registry = registry or process_registry()
    key = _encryption_key(workflow)  # before the store opens: a missing key says so first
    with open_saver(context.instance, registry) as saver:
        if key is not None:
            from agents_pipelines.graph.checkpoint_cipher import encrypted

            saver = encrypted(saver, key)
        ttl_days = execution.checkpoint_ttl_days
        _prune_now_and_then(saver, ttl_days, _store(context.instance), registry)
        thread = thread_id(context)
        yield Checkpointing(
            saver,
            thread,
            on_missing=lambda: _lost_checkpoint(context, thread),
            keep_finished=keep_finished,
        )


def _encryption_key(workflow: Workflow) -> bytes | None:
    """The key of the workflow's encrypted checkpoints (redact_pii), or None."""
    if workflow.spec.config.observability.mlflow.pii() is None:
        return None
    from agents_pipelines.graph.checkpoint_cipher import checkpoint_key

    field = ("config", "observability", "mlflow", "redact_pii")
    line = workflow.positions.get(field, (None, None))[0]
    return checkpoint_key(f"{workflow.path}:{line}" if line else str(workflow.path))


def _lost_checkpoint(context: dg.AssetExecutionContext, thread: str) -> str | None:
    """What a run says when it finds no checkpoint in its thread although an earlier
    attempt that paid for calls left one (read from the event log only then): the store
    was deleted or replaced since, and the run pays again for what that attempt finished."""
    attempt = unfinished_paid_attempt(context)
    if attempt is None:
        return None
    store = _store(context.instance)
    where = "the instance's PostgreSQL database" if is_postgres(store) else store
    return (
        f"Started over: no checkpoint of thread {thread} was found in {where}, although "
        f"an earlier attempt of this step (attempt {attempt.number}, {attempt.outcome}, "
        f"{attempt.llm_calls} LLM call(s), ${attempt.cost_usd:.6f}) left one. The store was "
        "deleted or replaced since (or the thread pruned after "
        "config.execution.checkpoint_ttl_days): the nodes that attempt finished are called, "
        "and paid for, again."
    )


def _store(instance: dg.DagsterInstance) -> str:
    """Where the instance keeps its checkpoints: a PostgreSQL URL or a SQLite path."""
    return instance_store(instance, SQLITE_FILE)


def _prune_now_and_then(saver: Any, ttl_days: int, store: str, registry: ProcessRegistry) -> None:
    """Prune once an hour per store and TTL in this process: not a query per run."""
    key = (store, ttl_days)
    now = time.time()
    pruned = registry.checkpoints_pruned
    with registry.checkpoints_lock:
        if now - pruned.get(key, 0.0) < _PRUNE_EVERY_S:
            return
        pruned[key] = now
    prune(saver, ttl_days, now)


_PRUNE_EVERY_S = 3600.0


@contextmanager
def open_saver(
    instance: dg.DagsterInstance, registry: ProcessRegistry | None = None
) -> Iterator[Any]:
    """A LangGraph checkpointer in the instance's storage, its tables created."""
    store = _store(instance)
    registry = registry or process_registry()
    if is_postgres(store):
        with postgres_saver(store, registry) as saver:
            yield saver
        return
    yield _sqlite_saver(Path(store), registry)


@contextmanager
def postgres_saver(store: str, registry: ProcessRegistry | None = None) -> Iterator[Any]:
    """A LangGraph checkpointer on its own connection to the PostgreSQL ``store``; the
    first in a process (``registry``) creates the tables, under the schema lock."""
    from langgraph.checkpoint.postgres import PostgresSaver

    set_up = (registry or process_registry()).postgres_checkpoints_set_up
    with PostgresSaver.from_conn_string(psycopg_url(store)) as saver:
        if store not in set_up:
            with postgres_schema_lock(saver_connection(saver)):
                saver.setup()
            set_up.add(store)
        yield saver


def _sqlite_saver(path: Path, registry: ProcessRegistry) -> Any:
    """The registry's saver for the SQLite file at ``path``, on its shared connection. The
    saver locks the connection, so concurrent runs in the process share it."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    with naming_damage(path, "checkpoint store", _damaged_fix(path)):
        conn = shared_sqlite(path, registry)
        with registry.checkpoints_lock:
            saver = registry.checkpoint_savers.get(path)
            if saver is None or saver_connection(saver) is not conn:
                saver = SqliteSaver(conn)
                saver.setup()
                registry.checkpoint_savers[path] = saver
            return saver


def _damaged_fix(path: Path) -> str:
    return (
        f"move it aside (mv {path} {path}.damaged) and run again: a new store is made, and "
        "the failed runs checkpointed in the old one start over when retried or re-executed "
        "(the nodes they finished are called, and paid for, again). Or set "
        "config.execution.resume: false in the workflow file to run without checkpoints."
    )


def prune(saver: Any, ttl_days: int, now: float | None = None) -> list[str]:
    """Delete the threads whose newest checkpoint is older than ``ttl_days``; returns them.

    Checkpoint ids are UUIDv6, which carry their time: one grouped query over the ids, no
    checkpoint is read."""
    cutoff = (time.time() if now is None else now) - ttl_days * _DAY_S
    stale = expired_threads(saver, cutoff)
    for thread in stale:
        saver.delete_thread(thread)
    return stale


def expired_threads(saver: Any, cutoff: float, asset_key: str | None = None) -> list[str]:
    """The threads (of ``asset_key``'s steps, or all) whose newest checkpoint was written
    before ``cutoff`` (Unix seconds)."""
    rows = newest_checkpoint_per_thread(saver)
    return [
        thread
        for thread, newest in rows
        if (asset_key is None or thread_asset_key(thread) == asset_key)
        and _unix_s(uuid6_time(newest)) < cutoff
    ]


def thread_asset_key(thread: str) -> str | None:
    """The asset key (user string) in a ``thread_id``; None for a thread not made there."""
    parts = thread.split("|", 2)
    return parts[1] if len(parts) == 3 else None


def uuid6_time(checkpoint_id: str) -> int:
    """The timestamp of a UUIDv6 (RFC 9562), in 100 ns ticks since 1582-10-15: its first 60
    bits, high to low (Python's uuid reads a v6's time in v1's order before Python 3.14)."""
    value = uuid.UUID(checkpoint_id).int
    return (value >> 96) << 28 | ((value >> 80) & 0xFFFF) << 12 | (value >> 64) & 0x0FFF


def _unix_s(ticks: int) -> float:
    return (ticks - _UUID6_EPOCH) / 1e7
