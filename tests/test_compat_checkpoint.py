"""The hooks into LangGraph's checkpoint savers (agents_pipelines._compat.langgraph)
hold for the installed releases: each test runs its hook against a real SqliteSaver and a
real PostgresSaver, and a failure names the hook that an upstream release broke."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from agents_pipelines._compat import langgraph as hooks


@contextmanager
def hook(name: str) -> Iterator[None]:
    """Any failure inside is reported as the named hook's."""
    try:
        yield
    except Exception as exc:
        pytest.fail(
            f"compat hook {name} (agents_pipelines._compat.langgraph) does not "
            f"hold for the installed LangGraph savers: {type(exc).__name__}: {exc}"
        )


@pytest.fixture(params=["sqlite", "postgres"])
def saver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        conn = sqlite3.connect(tmp_path / "checkpoints.sqlite", check_same_thread=False)
        sqlite_saver = SqliteSaver(conn)
        sqlite_saver.setup()
        yield sqlite_saver
        conn.close()
        return
    from langgraph.checkpoint.postgres import PostgresSaver

    url = request.getfixturevalue("postgres_database_factory")()
    with PostgresSaver.from_conn_string(url) as postgres_saver:
        postgres_saver.setup()
        yield postgres_saver


def put(saver: Any, thread: str, value: Any = "v") -> str:
    """Store a checkpoint in ``thread``; returns its id."""
    checkpoint = {**empty_checkpoint(), "id": str(uuid6()), "channel_values": {"x": value}}
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    saver.put(config, checkpoint, {"source": "input", "step": -1}, {"x": 1})
    return str(checkpoint["id"])


def test_saver_connection_is_the_connection_the_saver_writes_through(saver: Any) -> None:
    put(saver, "t1")
    with hook("saver_connection"):
        conn = hooks.saver_connection(saver)
        cursor = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = 't1'")
        row = cursor.fetchone()
        assert list(row.values() if isinstance(row, dict) else row) == [1]


def test_saver_lock_is_held_by_the_saver_around_its_writes(saver: Any) -> None:
    with hook("saver_lock"):
        lock = hooks.saver_lock(saver)
        writer = threading.Thread(target=put, args=(saver, "t1"))
        with lock:
            writer.start()
            writer.join(0.5)
            blocked = writer.is_alive()
        writer.join()
        assert blocked, "the saver wrote while the lock was held by another thread"
        assert saver.get_tuple({"configurable": {"thread_id": "t1"}}) is not None


class RecordingSerializer(JsonPlusSerializer):
    def __init__(self) -> None:
        super().__init__()
        self.dumped: list[Any] = []

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        self.dumped.append(obj)
        return super().dumps_typed(obj)


def test_a_serializer_set_after_construction_stores_a_tasks_error(saver: Any) -> None:
    """As in a failed run: LangGraph stores the task's exception as a pending write, and
    graph/resume.py's serializer must see it to redact it."""
    recording = RecordingSerializer()
    error = ValueError("the provider said no")
    with hook("set_saver_serializer / saver_serializer"):
        hooks.set_saver_serializer(saver, recording)
        assert hooks.saver_serializer(saver) is recording
        put(saver, "t1")
        config = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        stored = saver.get_tuple(config)
        saver.put_writes(stored.config, [("__error__", error)], "task")
        assert any(obj is error for obj in recording.dumped)
        found = saver.get_tuple(config)
        [(_, channel, value)] = found.pending_writes
        assert channel == "__error__" and "the provider said no" in str(value)


def test_newest_checkpoint_per_thread_reads_the_savers_table(saver: Any) -> None:
    first = [put(saver, "a"), put(saver, "a")]
    only = put(saver, "b")
    with hook("newest_checkpoint_per_thread"):
        assert sorted(hooks.newest_checkpoint_per_thread(saver)) == [
            ("a", max(first)),
            ("b", only),
        ]
