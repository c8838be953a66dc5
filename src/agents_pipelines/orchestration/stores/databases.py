"""The files and tables agents_pipelines keeps beside a Dagster instance's own storage:
the run checkpoints (checkpoints.py) and the spend journal (spend_journal.py).

With the instance's storage on PostgreSQL (the team profile, deploy/team/dagster.yaml) they
go to the same database, so any machine that runs a retry finds them; otherwise each is a
SQLite file in the instance's storage folder, opened once per process and shared by its
runs (opening a file and creating its tables cost 9 ms of a 3-node run's 40 ms, measured).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from agents_pipelines.registry import ProcessRegistry, process_registry

_SQLITE_TIMEOUT_S = 30.0  # runs in other processes may hold the write lock for a moment


def instance_store(instance: dg.DagsterInstance, sqlite_file: str) -> str:
    """The instance's PostgreSQL URL when its storage is PostgreSQL (the team profile),
    else the path of ``sqlite_file`` in its storage folder."""
    url = getattr(instance.run_storage, "postgres_url", None)
    return url if isinstance(url, str) else str(Path(instance.storage_directory(), sqlite_file))


def is_postgres(store: str) -> bool:
    return store.startswith("postgres")


def psycopg_url(store: str) -> str:
    """Dagster's URL names SQLAlchemy's psycopg2 driver; psycopg 3 takes the plain one."""
    return store.replace("+psycopg2", "", 1)


# One key for every schema change agents_pipelines makes in a PostgreSQL database (an
# arbitrary 64-bit constant: "agent_pi" in ASCII).
_SCHEMA_LOCK_KEY = 0x6167656E745F7069
_SCHEMA_LOCK_POLL_S = 0.05


@contextmanager
def postgres_schema_lock(conn: Any) -> Iterator[None]:
    """Hold the database's agents_pipelines schema lock on ``conn`` (psycopg, autocommit).

    The first runs on a new database start together, and PostgreSQL's ``CREATE TABLE IF
    NOT EXISTS`` is not safe against itself (the loser hits a unique violation in
    ``pg_type``), nor is LangGraph's ``PostgresSaver.setup()`` (two processes insert the
    same migration row). Under the lock the first process creates, and the others find.

    The others poll rather than wait in ``pg_advisory_lock``: a LangGraph migration runs
    ``CREATE INDEX CONCURRENTLY``, which waits for every statement in progress to end, so
    a statement waiting on the lock would deadlock with the holder."""
    from psycopg.rows import tuple_row  # the saver's connection makes dict rows

    with conn.cursor(row_factory=tuple_row) as cursor:
        while not _try_lock(cursor):
            time.sleep(_SCHEMA_LOCK_POLL_S)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK_KEY,))


def _try_lock(cursor: Any) -> bool:
    row = cursor.execute("SELECT pg_try_advisory_lock(%s)", (_SCHEMA_LOCK_KEY,)).fetchone()
    return bool(row[0])


def shared_sqlite(path: Path, registry: ProcessRegistry | None = None) -> sqlite3.Connection:
    """The connection to the SQLite file ``path`` kept in ``registry`` (by default the
    process's), opened on first use (and again if the file was deleted: a test's temporary
    instance). Its users serialize their statements on it; check ``is`` against the
    connection they wrapped to see a new one."""
    registry = registry or process_registry()
    with registry.connections_lock:
        conn = registry.sqlite_connections.get(path)
        if conn is not None and path.exists():
            return conn
        if conn is not None:
            conn.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=_SQLITE_TIMEOUT_S, check_same_thread=False)
        try:
            # WAL: readers do not wait on another run's write. synchronous=NORMAL: a commit
            # is not fsynced (99 ms to 41 ms per checkpointed 3-node run, measured); a crash
            # of the process loses nothing, a power cut may lose the last writes.
            conn.execute("PRAGMA journal_mode=WAL")  # the first read: a damaged file fails
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()  # not kept: the next run opens the file again
            raise
        registry.sqlite_connections[path] = conn
        return conn
