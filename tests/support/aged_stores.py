"""Make stored records look older, through each store's own SQL, so that retention tests
prune real records made by real runs (tests/test_retention.py).

Each helper moves one kind of record ``seconds`` into the past:
- an MLflow run's start time and its trace's timestamp (the SQLite tracking store);
- a LangGraph checkpoint thread: its checkpoint ids are UUIDv6, which carry their time,
  so every id of the thread (and every write and parent naming one) gets an earlier one;
- spend-journal rows (``updated_at``) and development-cache entries (``stored_at``).
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from agents_pipelines.orchestration.stores.checkpoints import uuid6_time
from agents_pipelines.orchestration.stores.databases import psycopg_url

DAY_S = 86_400


def age_mlflow_run(db: Path, run_id: str, trace_id: str | None, seconds: float) -> None:
    ms = int(seconds * 1000)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE runs SET start_time = start_time - ?, end_time = end_time - ? "
            "WHERE run_uuid = ?",
            (ms, ms, run_id),
        )
        if trace_id is not None:
            conn.execute(
                "UPDATE trace_info SET timestamp_ms = timestamp_ms - ? WHERE request_id = ?",
                (ms, trace_id),
            )


def aged_uuid6(checkpoint_id: str, seconds: float) -> str:
    """``checkpoint_id`` (a UUIDv6) with its time ``seconds`` earlier, the rest kept."""
    ticks = uuid6_time(checkpoint_id) - int(seconds * 1e7)
    low = uuid.UUID(checkpoint_id).int & ((1 << 64) - 1)
    value = (
        (ticks >> 28) << 96
        | ((ticks >> 12) & 0xFFFF) << 80
        | 6 << 76
        | (ticks & 0x0FFF) << 64
        | low
    )
    return str(uuid.UUID(int=value))


_CHECKPOINT_COLUMNS = {
    "sqlite": (
        ("checkpoints", "checkpoint_id"),
        ("checkpoints", "parent_checkpoint_id"),
        ("writes", "checkpoint_id"),
    ),
    "postgres": (
        ("checkpoints", "checkpoint_id"),
        ("checkpoints", "parent_checkpoint_id"),
        ("checkpoint_writes", "checkpoint_id"),
    ),
}


def age_checkpoint_thread(store: str, thread: str, seconds: float) -> int:
    """Age every checkpoint of ``thread`` in ``store`` (a SQLite path or PostgreSQL URL);
    returns how many checkpoints it holds."""
    if store.startswith("postgres"):
        import psycopg

        with psycopg.connect(psycopg_url(store), autocommit=True) as conn:
            return _age_thread(conn, "%s", "postgres", thread, seconds)
    with closing(sqlite3.connect(store)) as conn, conn:
        return _age_thread(conn, "?", "sqlite", thread, seconds)


def _age_thread(conn: Any, mark: str, kind: str, thread: str, seconds: float) -> int:
    query = f"SELECT checkpoint_id FROM checkpoints WHERE thread_id = {mark}"
    ids = [row[0] for row in conn.execute(query, (thread,)).fetchall()]
    for old in ids:
        new = aged_uuid6(old, seconds)
        for table, column in _CHECKPOINT_COLUMNS[kind]:
            where = f"thread_id = {mark} AND {column} = {mark}"
            conn.execute(f"UPDATE {table} SET {column} = {mark} WHERE {where}", (new, thread, old))
    return len(ids)


def age_journal_rows(store: str, run_id: str, seconds: float) -> int:
    sql = (
        "UPDATE agents_pipelines_spend_journal SET updated_at = updated_at - {m} WHERE run_id = {m}"
    )
    if store.startswith("postgres"):
        import psycopg

        with psycopg.connect(psycopg_url(store), autocommit=True) as conn:
            return conn.execute(sql.format(m="%s"), (seconds, run_id)).rowcount
    with closing(sqlite3.connect(store)) as conn, conn:
        return conn.execute(sql.format(m="?"), (seconds, run_id)).rowcount


def age_cache_entries(path: Path, stored_before: float, seconds: float) -> int:
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(
            "UPDATE responses SET stored_at = stored_at - ? WHERE stored_at < ?",
            (seconds, stored_before),
        ).rowcount


def cache_entries(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
