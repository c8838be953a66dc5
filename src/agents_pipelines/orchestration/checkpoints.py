"""Where a Dagster run's graph is checkpointed, so that its retries resume it.

- The thread: the run's root run id, the asset key and the partition. A step retry keeps
  the run id; "re-execute from failure" makes a run whose ``root_run_id`` is the first
  run's; a new materialization is a new root, so it starts fresh.
- The store: the instance's own. With Dagster's storage on PostgreSQL (the team profile,
  deploy/team/dagster.yaml) the checkpoints go to the same database
  (langgraph-checkpoint-postgres, installed with the ``postgres`` extra), so any machine
  that runs the retry finds them; otherwise to ``checkpoints.sqlite`` in the instance's
  storage folder (langgraph-checkpoint-sqlite).
- Threads not written for ``config.execution.checkpoint_ttl_days`` are deleted as a run
  opens the store. A run that succeeds deletes its own (runner.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from agents_pipelines.spec import Workflow

if TYPE_CHECKING:  # the graph package imports LangGraph: not at code-location load
    from agents_pipelines.graph.resume import Checkpointing

SQLITE_FILE = "checkpoints.sqlite"
_SQLITE_TIMEOUT_S = 30.0  # runs in other processes may hold the write lock for a moment
_UUID6_EPOCH = 0x01B21DD213814000  # 100-ns ticks from 1582-10-15 to 1970-01-01
_DAY_S = 86_400


def thread_id(context: dg.AssetExecutionContext) -> str:
    """The checkpoint thread of this step: shared by its retries and re-executions."""
    root = context.run.root_run_id or context.run.run_id
    partition = context.partition_key if context.has_partition_key else ""
    return f"{root}|{context.asset_key.to_user_string()}|{partition}"


@contextmanager
def checkpointing(
    context: dg.AssetExecutionContext, workflow: Workflow
) -> Iterator[Checkpointing | None]:
    """The run's checkpointing, or None when ``config.execution.resume`` is false (then
    nothing is written)."""
    from agents_pipelines.graph.resume import Checkpointing

    execution = workflow.spec.config.execution
    if not execution.resume:
        yield None
        return
    with open_saver(context.instance) as saver:
        _prune_now_and_then(saver, execution.checkpoint_ttl_days, _store(context.instance))
        yield Checkpointing(saver, thread_id(context))


def _store(instance: dg.DagsterInstance) -> str:
    """Where the instance keeps its checkpoints: a PostgreSQL URL or a SQLite path."""
    return instance_store(instance, SQLITE_FILE)


def instance_store(instance: dg.DagsterInstance, sqlite_file: str) -> str:
    """The instance's PostgreSQL URL when its storage is PostgreSQL (the team profile),
    else the path of ``sqlite_file`` in its storage folder."""
    url = getattr(instance.run_storage, "postgres_url", None)
    return url if isinstance(url, str) else str(Path(instance.storage_directory(), sqlite_file))


def _prune_now_and_then(saver: Any, ttl_days: int, store: str) -> None:
    """Prune once an hour per store and TTL in this process: not a query per run."""
    key = (store, ttl_days)
    now = time.time()
    with _sqlite_lock:
        if now - _pruned.get(key, 0.0) < _PRUNE_EVERY_S:
            return
        _pruned[key] = now
    prune(saver, ttl_days, now)


_pruned: dict[tuple[str, int], float] = {}
_PRUNE_EVERY_S = 3600.0


@contextmanager
def open_saver(instance: dg.DagsterInstance) -> Iterator[Any]:
    """A LangGraph checkpointer in the instance's storage, its tables created."""
    store = _store(instance)
    if store.startswith("postgres"):
        from langgraph.checkpoint.postgres import PostgresSaver

        # Dagster's URL names SQLAlchemy's psycopg2 driver; psycopg 3 takes the plain one.
        with PostgresSaver.from_conn_string(store.replace("+psycopg2", "", 1)) as saver:
            saver.setup()
            yield saver
        return
    yield _sqlite_saver(Path(store))


def _sqlite_saver(path: Path) -> Any:
    """The process's saver for the SQLite file at ``path``, opened once: opening it and
    creating its tables took 9 ms of a 3-node run's 40 ms (measured). The saver locks its
    connection, so concurrent runs in the process share it."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    with _sqlite_lock:
        saver = _sqlite_savers.get(path)
        if saver is not None and path.exists():
            return saver
        if saver is not None:  # the file was deleted (a test's temporary instance)
            saver.conn.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=_SQLITE_TIMEOUT_S, check_same_thread=False)
        # WAL: readers do not wait on another run's write. synchronous=NORMAL: a commit is
        # not fsynced (99 ms to 41 ms per 3-node run; a crash of the process loses nothing,
        # a power cut may lose the last checkpoints, and the retry calls those nodes again).
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        saver = _sqlite_savers[path] = SqliteSaver(conn)
        saver.setup()
        return saver


_sqlite_savers: dict[Path, Any] = {}
_sqlite_lock = threading.Lock()


def prune(saver: Any, ttl_days: int, now: float | None = None) -> list[str]:
    """Delete the threads whose newest checkpoint is older than ``ttl_days``; returns them.

    Checkpoint ids are UUIDv6, which carry their time: one grouped query over the ids, no
    checkpoint is read."""
    from langgraph.checkpoint.base.id import UUID

    cutoff = (time.time() if now is None else now) - ttl_days * _DAY_S
    rows = _query(saver, "SELECT thread_id, MAX(checkpoint_id) FROM checkpoints GROUP BY thread_id")
    stale = [thread for thread, newest in rows if _unix_s(UUID(newest).time) < cutoff]
    for thread in stale:
        saver.delete_thread(thread)
    return stale


def _unix_s(uuid6_time: int) -> float:
    return (uuid6_time - _UUID6_EPOCH) / 1e7


def _query(saver: Any, sql: str) -> list[tuple[str, str]]:
    if isinstance(saver.conn, sqlite3.Connection):
        with saver.lock:
            return [tuple(row) for row in saver.conn.execute(sql).fetchall()]
    with saver.lock, saver.conn.cursor() as cursor:  # psycopg, rows as dicts
        cursor.execute(sql)
        return [tuple(row.values()) for row in cursor.fetchall()]
