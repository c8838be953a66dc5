"""Damaged SQLite files: told apart from a busy one, named, or set aside.

agents_pipelines keeps three SQLite files beside a Dagster instance's storage: the run
checkpoints and the spend journal (orchestration/), which a run must not do without, and
the development cache (llm/cache.py), which is disposable. A file that is not a database
(overwritten, truncated, another file copied over it) makes SQLite raise a bare
``DatabaseError: file is not a database`` that names no file: the stores name it here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from agents_pipelines.errors import StoreDamagedError

# SQLite's result codes for a damaged file, as opposed to a busy or locked one (an
# OperationalError, also a DatabaseError) that waiting or retrying cures.
_DAMAGE = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})
# The files SQLite keeps beside a database in WAL mode.
_COMPANIONS = ("-wal", "-shm")


def is_damaged(exc: BaseException) -> bool:
    """Whether ``exc`` says the file is not a database, or a corrupt one."""
    return isinstance(exc, sqlite3.DatabaseError) and exc.sqlite_errorname in _DAMAGE


@contextmanager
def naming_damage(path: Path, store: str, fix: str) -> Iterator[None]:
    """Turn SQLite's damage errors inside the block into a StoreDamagedError that names
    ``store`` (what the file is), its ``path``, and what to do (``fix``)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if not is_damaged(exc):
            raise
        raise StoreDamagedError(
            f"The {store} {path} is damaged (SQLite: {exc}); the run stopped before any "
            f"LLM call. Fix: {fix}"
        ) from None


def set_aside(path: Path) -> Path | None:
    """Rename the damaged file ``path`` (and its WAL files) to ``<name>.damaged-<UTC
    time>``; returns the new name, or None when ``path`` is now a sound database (another
    process set the damaged one aside and made a new one first)."""
    if _is_sound(path):
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", *_COMPANIONS):
        with suppress(FileNotFoundError):  # no WAL files, or another process moved them
            Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    return aside


def _is_sound(path: Path) -> bool:
    """Whether ``path`` opens as a database: its header and schema read."""
    if not path.exists():
        return True
    try:
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        return not is_damaged(exc)
    return True
