"""LangGraph's and LangChain's private and undocumented APIs that agents_pipelines uses
(langgraph 1.2.24, langgraph-checkpoint 4.3.2, langgraph-checkpoint-sqlite 3.1.2,
langgraph-checkpoint-postgres 3.2.0, langchain-core 1.8.3 checked)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import Context
from typing import Any

__all__ = [
    "config_context",
    "saver_connection",
    "saver_lock",
    "saver_serializer",
    "set_saver_serializer",
    "stream_only",
]


def stream_only(compiled: Any, channels: Sequence[str]) -> Any:
    """A copy of the compiled graph whose streamed values hold only ``channels``.

    Why: a workflow's graph has private channels (map node bookkeeping) that must not reach
    the run's output. Uses ``Pregel.copy(update)`` with the constructor field
    ``stream_channels``, which ``StateGraph.compile`` sets to every channel. Public
    replacement: none (``compile`` takes no channel list; an output schema changes the
    graph's input and output types).
    """
    return compiled.copy({"stream_channels": list(channels)})


@contextmanager
def config_context(config: Any) -> Iterator[Context]:
    """A copy of the current context in which ``config`` is the run config of the calls
    made there (LangChain's callbacks and LangGraph's ``get_config`` read it).

    Why: a map node runs each item's call as an asyncio task of its own, in a context that
    holds the item's config. Uses ``langchain_core.runnables.config.set_config_context``
    (not in langchain-core's documented API). Public replacement: passing ``config`` to
    ``Runnable.ainvoke``, which our item calls (plain coroutines) do not take.
    """
    from langchain_core.runnables.config import set_config_context

    with set_config_context(config) as context:
        yield context


def saver_connection(saver: Any) -> Any:
    """The database connection of a LangGraph ``SqliteSaver`` or ``PostgresSaver``.

    Why: pruning old threads is one grouped query over checkpoint ids, and the PostgreSQL
    tables are created under a schema lock on the saver's own connection. Uses the savers'
    ``conn`` attribute (not documented). Public replacement: ``list`` and ``delete_thread``
    (a read of every checkpoint).
    """
    return saver.conn


def saver_lock(saver: Any) -> AbstractContextManager[Any]:
    """The lock a ``SqliteSaver`` or ``PostgresSaver`` holds around each use of its
    connection (a ``threading.Lock``); a query of ours on that connection holds it too.

    Why: see ``saver_connection``. Uses the savers' ``lock`` attribute (not documented).
    Public replacement: none.
    """
    lock: AbstractContextManager[Any] = saver.lock
    return lock


def saver_serializer(saver: Any) -> Any:
    """The serializer a checkpointer stores values with (``BaseCheckpointSaver.serde``)."""
    return saver.serde


def set_saver_serializer(saver: Any, serializer: Any) -> None:
    """Make ``saver`` store values through ``serializer``.

    Why: a failed run's checkpoint stores its exception, whose text may repeat an API key;
    the serializer redacts it (graph/resume.py). With redact_pii, a copy of the shared
    saver encrypts what it stores (graph/checkpoint_cipher.py). Uses the ``serde`` attribute that
    ``BaseCheckpointSaver.__init__(serde=...)`` sets, after construction (the savers are
    built by LangGraph's ``from_conn_string``). Public replacement: ``serde=`` where we
    construct the saver ourselves.
    """
    saver.serde = serializer


def newest_checkpoint_per_thread(saver: Any) -> list[tuple[str, str]]:
    """``(thread_id, newest checkpoint_id)`` of every thread in the saver's store.

    Why: pruning threads past their TTL reads the time in the newest checkpoint's id
    (UUIDv6): one grouped query, no checkpoint read. Uses the savers' table ``checkpoints``
    and its columns ``thread_id`` and ``checkpoint_id`` (their migrations, not documented),
    through ``saver_connection`` and ``saver_lock``. Public replacement:
    ``saver.list(None)``, which reads and deserializes every checkpoint of every thread."""
    sql = "SELECT thread_id, MAX(checkpoint_id) FROM checkpoints GROUP BY thread_id"
    conn = saver_connection(saver)
    with saver_lock(saver):
        if isinstance(conn, sqlite3.Connection):
            return [(str(t), str(c)) for t, c in conn.execute(sql).fetchall()]
        with conn.cursor() as cursor:  # psycopg, rows as dicts
            cursor.execute(sql)
            return [(str(t), str(c)) for t, c in (tuple(r.values()) for r in cursor.fetchall())]
