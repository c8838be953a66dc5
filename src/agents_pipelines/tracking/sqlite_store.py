"""Make the embedded SQLite MLflow store fast and fit for concurrent runs.

MLflow opens SQLite in its default rollback-journal mode, where every commit waits for
several fsyncs: 13.6 ms per commit on this project's development machine, and a run makes
dozens of commits (run, params, one per span batch, metrics, status). Writers also block
readers, so eight concurrent runs queue on the file lock.

For MLflow stores only (Dagster's SQLite storage is left as Dagster configures it), each
new connection is switched to write-ahead logging with ``synchronous=NORMAL``, SQLite's
recommended pairing for WAL: 0.05 ms per commit, measured on the same machine, and readers
no longer block the writer. A commit survives the process crashing; only a power loss can
undo the last commits, which a tracking store can accept. WAL needs a local disk: never put
the store on a network file system (the README says so).

A brand-new store is created by whichever process first opens it, and MLflow does that
without a lock between processes: of 8 first runs started at once, 7 failed to create
tables another had just made ("duplicate column name", "table ... already exists") and ran
untracked (measured). So the first process to find the store missing creates it while
holding a file lock next to it (``mlflow.db.lock``); the others wait, then find it made.
A store that is already made costs one read-only query per process, and no lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from agents_pipelines.errors import AgentsPipelinesError

# Creating and migrating a new store took 21 to 40 s on this project's 2-core machine at a
# load average of 20 (measured); five minutes of waiting means the creator is stuck.
CREATE_LOCK_TIMEOUT_S = 300.0
# Module-level, not in the registry: the SQLAlchemy listener below is process-wide and reads
# these files for as long as MLflow's engines live, which a registry reset would not end.
_lock = threading.Lock()
_store_files: set[str] = set()
_listening = False


def prepare_sqlite_store(tracking_uri: str) -> None:
    """Make the SQLite store behind ``tracking_uri`` ready to use, once per process.

    A no-op for other URIs. Tunes every connection MLflow opens to the file (see above),
    and creates the store under a file lock if it does not exist yet. Call it before
    MLflow first opens the store.
    """
    path = _sqlite_path(tracking_uri)
    if path is None:
        return
    with _lock:
        if path in _store_files:
            return
        _store_files.add(path)  # before creating: _on_connect tunes the new connections
        _listen_to_new_connections()
        if not _is_created(path):
            try:
                _create_under_file_lock(tracking_uri, path)
            except BaseException:
                _store_files.discard(path)  # the next run tries again
                raise
        with sqlite3.connect(path, timeout=20) as connection:
            # Stored in the file: also switches a store made before this tuning existed.
            connection.execute("PRAGMA journal_mode=WAL")
        connection.close()


def _listen_to_new_connections() -> None:
    global _listening
    if _listening:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    # A pool event registered on the Engine class reaches every engine, MLflow's
    # included, whenever it opens a connection; _on_connect keeps to our files.
    event.listen(Engine, "connect", _on_connect)
    _listening = True


def _is_created(path: str) -> bool:
    """Whether MLflow finished creating the store: its last step adds experiment 0."""
    try:
        connection = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, timeout=20)
    except sqlite3.OperationalError:  # no such file yet
        return False
    try:
        row = connection.execute("SELECT 1 FROM experiments WHERE experiment_id = 0").fetchone()
    except sqlite3.OperationalError:  # no tables yet
        return False
    finally:
        connection.close()
    return row is not None


def _create_under_file_lock(tracking_uri: str, path: str) -> None:
    """Let MLflow create the store while this process holds ``<store>.lock``.

    MLflow builds its store in the client's constructor (creating tables, migrating, adding
    experiment 0) and caches it per URI, so later clients reuse it. Processes that waited
    find the store made and let go of the lock at once.
    """
    import mlflow
    from filelock import FileLock, Timeout

    lock_path = path + ".lock"
    try:
        with FileLock(lock_path, timeout=CREATE_LOCK_TIMEOUT_S):
            if not _is_created(path):
                mlflow.MlflowClient(tracking_uri)
    except Timeout as exc:
        raise AgentsPipelinesError(
            f"Waited {CREATE_LOCK_TIMEOUT_S:.0f} s for another process to create the MLflow "
            f"store {path} (it holds {lock_path}). Stop that process if it is stuck, then retry."
        ) from exc


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    databases = dbapi_connection.execute("PRAGMA database_list").fetchall()
    main_file = next((row[2] for row in databases if row[1] == "main"), "")
    if main_file and os.path.realpath(main_file) in _store_files:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _sqlite_path(tracking_uri: str) -> str | None:
    if not tracking_uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return os.path.realpath(database)
