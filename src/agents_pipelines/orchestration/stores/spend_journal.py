"""The spend journal: running totals of step attempts still in flight, so that runs in
flight at once see each other's spend before each LLM call (spend limits, spend_windows.py).

- One row per attempt (run id, attempt number, asset key, partition), upserted after each
  call that cost something: its pool, when it was last written, its running cost.
- The Dagster records (a materialization or an attempt observation) count an attempt
  once it ends. As its record is stored, the attempt marks its row ``recorded_at``:
  a run counts a recorded row only if the record came after the run read the records at
  its start (so a run that finishes while another is in flight is still seen by it). A
  row recorded while a run reads its records may count twice for that run: an overcount,
  never an undercount.
- A row never recorded (the process was killed) counts as in flight: it was paid for.
  Rows older than the longest window (a month and a day) are deleted now and then.
- The store is the instance's: a table in its PostgreSQL database (the team profile), or
  else ``spend_journal.sqlite`` in its storage folder (WAL: a read does not wait on a
  write).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from agents_pipelines.orchestration.stores.databases import (
    instance_store,
    is_postgres,
    postgres_schema_lock,
    psycopg_url,
    shared_sqlite,
)
from agents_pipelines.registry import ProcessRegistry, process_registry
from agents_pipelines.sqlite_damage import naming_damage

SQLITE_FILE = "spend_journal.sqlite"
KEEP_S = 32 * 86_400  # the longest window, a month, and a day
_PRUNE_EVERY_S = 3600.0
_TABLE = "agents_pipelines_spend_journal"
_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {_TABLE} (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    asset_key TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    pool TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    recorded_at DOUBLE PRECISION,
    PRIMARY KEY (run_id, attempt, asset_key, partition_key)
)"""
_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_asset ON {_TABLE} (asset_key, updated_at)",
    f"CREATE INDEX IF NOT EXISTS {_TABLE}_pool ON {_TABLE} (pool, updated_at)",
)
_UPSERT = f"""INSERT INTO {_TABLE}
    (run_id, attempt, asset_key, partition_key, pool, updated_at, cost_usd)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (run_id, attempt, asset_key, partition_key)
    DO UPDATE SET cost_usd = excluded.cost_usd, updated_at = excluded.updated_at"""
_IN_FLIGHT = f"""SELECT COALESCE(SUM(cost_usd), 0) FROM {_TABLE}
    WHERE {{column}} = ? AND updated_at >= ? AND (recorded_at IS NULL OR recorded_at > ?)
    AND NOT (run_id = ? AND attempt = ? AND asset_key = ? AND partition_key = ?)"""
_RECORDED = f"""UPDATE {_TABLE} SET recorded_at = ?
    WHERE run_id = ? AND attempt = ? AND asset_key = ? AND partition_key = ?"""
_PRUNE = f"DELETE FROM {_TABLE} WHERE updated_at < ?"
_EXPIRED = f"""SELECT run_id, attempt, partition_key FROM {_TABLE}
    WHERE asset_key = ? AND updated_at < ? ORDER BY updated_at"""
_DELETE_EXPIRED = f"DELETE FROM {_TABLE} WHERE asset_key = ? AND updated_at < ?"


@dataclass(frozen=True)
class AttemptKey:
    """One attempt of one step: the journal's row."""

    run_id: str
    attempt: int
    asset_key: str
    partition: str
    pool: str

    @classmethod
    def of(cls, context: dg.AssetExecutionContext, pool: str) -> AttemptKey:
        partition = context.partition_key if context.has_partition_key else ""
        return cls(
            context.run.run_id,
            context.retry_number + 1,
            context.asset_key.to_user_string(),
            partition,
            pool,
        )

    def row(self) -> tuple[str, int, str, str]:
        return (self.run_id, self.attempt, self.asset_key, self.partition)


class Journal:
    """The journal in one store. Its connection is shared by the runs of a process (a
    lock serializes them): each statement is a small indexed read or a one-row write."""

    def __init__(self, conn: Any, postgres: bool):
        self.conn = conn
        self._postgres = postgres
        self._lock = threading.Lock()
        self._pruned = 0.0
        if postgres:
            with postgres_schema_lock(conn):
                self._create_table()
        else:
            self._create_table()

    def _create_table(self) -> None:
        for statement in (_SCHEMA, *_INDEXES):
            self._execute(statement)

    def write(self, key: AttemptKey, cost_usd: float, now: float | None = None) -> None:
        at = time.time() if now is None else now
        self._execute(_UPSERT, (*key.row()[:4], key.pool, at, cost_usd))

    def in_flight(self, key: AttemptKey, scope: str, since: float, records_read_at: float) -> float:
        """USD of the other attempts in ``key``'s workflow (scope "workflow") or pool,
        written since ``since``, with no record among those read at ``records_read_at``."""
        column, value = ("asset_key", key.asset_key) if scope == "workflow" else ("pool", key.pool)
        sql = _IN_FLIGHT.format(column=column)
        rows = self._execute(sql, (value, since, records_read_at, *key.row()), fetch=True)
        return float(rows[0][0])

    def recorded(self, key: AttemptKey, now: float | None = None) -> None:
        """The attempt's Dagster record is stored: from now on the records count it."""
        self._execute(_RECORDED, (time.time() if now is None else now, *key.row()))

    def prune_now_and_then(self, now: float | None = None) -> None:
        at = time.time() if now is None else now
        if at - self._pruned >= _PRUNE_EVERY_S:
            self._pruned = at
            self._execute(_PRUNE, (at - KEEP_S,))

    def expired(self, asset_key: str, before: float) -> list[str]:
        """The rows of ``asset_key``'s attempts last written before ``before`` (Unix
        seconds), as ``run_id#attempt[partition]``."""
        rows = self._execute(_EXPIRED, (asset_key, before), fetch=True)
        return [f"{run}#{attempt}" + (f"[{part}]" if part else "") for run, attempt, part in rows]

    def delete_expired(self, asset_key: str, before: float) -> None:
        self._execute(_DELETE_EXPIRED, (asset_key, before))

    def _execute(self, sql: str, params: tuple[Any, ...] = (), fetch: bool = False) -> list[Any]:
        with self._lock:
            if self._postgres:
                with self.conn.cursor() as cursor:
                    cursor.execute(sql.replace("?", "%s"), params)
                    return list(cursor.fetchall()) if fetch else []
            rows = self.conn.execute(sql, params).fetchall()
            if not fetch:
                self.conn.commit()
            return list(rows)

    def close(self) -> None:
        with self._lock:
            self.conn.close()


@contextmanager
def open_journal(
    instance: dg.DagsterInstance, registry: ProcessRegistry | None = None
) -> Iterator[Journal]:
    """The instance's journal, its table created. A PostgreSQL connection lasts the run;
    a SQLite one the process (kept in ``registry``: opening it costs more than a run's
    writes)."""
    store = instance_store(instance, SQLITE_FILE)
    if is_postgres(store):
        with postgres_journal(store) as journal:
            yield journal
        return
    yield sqlite_journal(Path(store), registry)


@contextmanager
def postgres_journal(store: str) -> Iterator[Journal]:
    """The journal on its own connection to the PostgreSQL ``store``."""
    import psycopg

    journal = Journal(psycopg.connect(psycopg_url(store), autocommit=True), postgres=True)
    try:
        yield journal
    finally:
        journal.close()


def sqlite_journal(path: Path, registry: ProcessRegistry | None = None) -> Journal:
    registry = registry or process_registry()
    with naming_damage(path, "spend journal", _damaged_fix(path)):
        conn = shared_sqlite(path, registry)
        with registry.journals_lock:
            journal = registry.spend_journals.get(path)
            if journal is None or journal.conn is not conn:
                journal = registry.spend_journals[path] = Journal(conn, postgres=False)
            return journal


def _damaged_fix(path: Path) -> str:
    return (
        f"move it aside (mv {path} {path}.damaged) and run again: a new journal is made. "
        "The spend limits still count every attempt that has ended (from Dagster's "
        "records); only the spend of attempts in flight right now goes unseen."
    )
