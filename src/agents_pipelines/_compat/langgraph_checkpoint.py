"""The undocumented parts of LangGraph's checkpoint savers that agents_pipelines uses.

Checked against langgraph-checkpoint 4.3.2, langgraph-checkpoint-sqlite 3.1.2 and
langgraph-checkpoint-postgres 3.2.0 (uv.lock); tests/test_compat_checkpoint.py runs every
hook against the installed releases and names the hook an upstream release broke.

The hooks exist because we keep LangGraph's sync savers (``SqliteSaver``,
``PostgresSaver``) and not its async ones: graph.event_loop.AwaitableSaver says why,
with the measurement.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

__all__ = [
    "newest_checkpoint_per_thread",
    "saver_connection",
    "saver_lock",
    "saver_serializer",
    "set_saver_serializer",
]


def saver_connection(saver: Any) -> Any:
    """The database connection of a ``SqliteSaver`` (``sqlite3.Connection``) or a
    ``PostgresSaver`` (``psycopg.Connection``, autocommit, dict rows).

    Why: the PostgreSQL tables are created under our schema lock, taken on the saver's own
    connection (orchestration.instance_stores.postgres_schema_lock); pruning queries the
    saver's tables. Uses the savers' ``conn`` attribute (set by their constructors, not
    documented). Public replacement: open the connection ourselves and pass it to
    ``PostgresSaver(conn)``, as LangGraph's docs show (``autocommit=True``,
    ``row_factory=dict_row``)."""
    return saver.conn


def saver_lock(saver: Any) -> AbstractContextManager[Any]:
    """The ``threading.Lock`` a ``SqliteSaver`` or ``PostgresSaver`` holds around each use
    of its connection; a query of ours on that connection holds it too (the SQLite
    connection is shared by the process's concurrent runs).

    Why: see ``newest_checkpoint_per_thread``. Uses the savers' ``lock`` attribute (not
    documented). Public replacement: none."""
    lock: AbstractContextManager[Any] = saver.lock
    return lock


def saver_serializer(saver: Any) -> Any:
    """The serializer a checkpointer stores values with (``BaseCheckpointSaver.serde``)."""
    return saver.serde


def set_saver_serializer(saver: Any, serializer: Any) -> None:
    """Make ``saver`` store values through ``serializer`` from now on.

    Why: a failed run's checkpoint stores its exception, whose text may repeat an API key,
    and the saver may be anyone's (``runner.Checkpointing`` takes any
    ``BaseCheckpointSaver``): graph/resume.py wraps its serializer in one that redacts.
    Uses the ``serde`` attribute that ``BaseCheckpointSaver.__init__(serde=...)`` sets,
    assigned after construction. Public replacement: ``serde=`` where we construct the
    saver ourselves."""
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
