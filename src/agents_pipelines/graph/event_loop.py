"""The event loop that runs graphs with map nodes, and a sync checkpointer made awaitable.

A map node's items run on LangGraph's async path: each item call is awaited on one event
loop, so ``max_concurrency`` calls in flight cost no thread each (a thread per call was
LangGraph's sync path). The loop is one per process, on a daemon thread of its own,
because the chat models are shared between runs (graph.builder) and an async HTTP client
belongs to the loop it first ran on: a loop per run would hand the next run a client
bound to a closed loop. Sync nodes of such a graph run on the loop's thread pool.

The caller's context (the MLflow span of the run) goes with the coroutine: the task is
created from a copy of the calling thread's context. An interruption of the caller (a
signal: Dagster's stop, Ctrl-C) cancels the run's task and waits until it has ended, so
no call is left running once the run is reported stopped.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from agents_pipelines._compat.langgraph import saver_serializer

T = TypeVar("T")

# Sync nodes of all runs in this process share the loop's pool: LangGraph's own
# max_concurrency bounds each run's tasks, threads are started only when needed.
_SYNC_NODE_THREADS = 256


class _LoopThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(
            ThreadPoolExecutor(_SYNC_NODE_THREADS, thread_name_prefix="agents-pipelines-node")
        )
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="agents-pipelines-graph-loop", daemon=True
        )
        self.thread.start()


# Module-level, not in the registry: the one loop thread a process runs async graphs on,
# which a registry reset must not orphan while its runs are on it.
_current: _LoopThread | None = None
_lock = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():  # a forked child has no thread
            _current = _LoopThread()
        return _current.loop


def run(coroutine: Coroutine[Any, Any, T], on_stop: Callable[[], None] | None = None) -> T:
    """``coroutine``'s result, run on the process's graph loop in the caller's context.

    If the caller is interrupted while it waits, ``on_stop`` is called on the loop, the
    coroutine cancelled, and the interruption raised once it has ended."""
    loop = _loop()
    ended = threading.Event()
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:  # in a copy of the caller's context (call_soon_threadsafe)
        task = loop.create_task(coroutine)
        task.add_done_callback(lambda _: ended.set())
        tasks.append(task)

    loop.call_soon_threadsafe(start)
    try:
        ended.wait()
    except BaseException:

        def stop() -> None:  # callbacks run in order: the task exists by now
            if on_stop is not None:
                on_stop()
            tasks[0].cancel()

        loop.call_soon_threadsafe(stop)
        ended.wait()
        raise
    return tasks[0].result()


def in_loop_thread() -> bool:
    """Whether this thread runs the graph loop (where nothing may block for long)."""
    return _current is not None and threading.current_thread() is _current.thread


class AwaitableSaver(BaseCheckpointSaver[Any]):
    """A sync checkpointer (SqliteSaver, PostgresSaver) for LangGraph's async path: each
    async method runs its sync twin on the loop's thread pool, off the loop.

    Kept over LangGraph's own ``AsyncSqliteSaver`` and ``AsyncPostgresSaver``, which
    measured slower: a 200-item two-map ``run_workflow`` (400 simulated calls at zero
    latency, tracing off, variants alternated in one process, 11 rounds, load 15 to 19)
    took 2.87 s with this over ``SqliteSaver`` and 3.64 s with ``AsyncSqliteSaver``
    (medians; minima 1.31 s and 1.57 s), 5.94 s and 6.40 s on PostgreSQL (minima 4.08 s and
    5.00 s); a second such run, load 22 to 30: 1.76 s and 2.43 s, 3.34 s and 5.30 s
    (1.40 s without checkpoints). The async savers serialize on the loop that runs the
    items and hop to their connection per statement; this runs a whole ``put`` on a pool
    thread. A graph without a map node runs on LangGraph's sync path, which needs the sync
    saver anyway."""

    def __init__(self, inner: BaseCheckpointSaver[Any]):
        super().__init__(serde=saver_serializer(inner))
        self.inner = inner
        self._writes: set[asyncio.Future[None]] = set()

    async def settled(self) -> None:
        """Wait for the writes still in flight. When an item fails its map node, LangGraph
        leaves the super-step and stops waiting for the other items; those whose calls were
        already made still finish (map_node._ItemNode._finished), and their writes are
        submitted after the graph has raised. A retry that started before they land would
        pay for those items again."""
        await asyncio.sleep(0)  # let writes submitted just before this start
        while self._writes:
            await asyncio.wait(set(self._writes))

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return self.inner.list(config, filter=filter, before=before, limit=limit)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.inner.put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.inner.put_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        self.inner.delete_thread(thread_id)

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.inner.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: list(self.inner.list(config, filter=filter, before=before, limit=limit))
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.inner.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        write = asyncio.ensure_future(
            asyncio.to_thread(self.inner.put_writes, config, writes, task_id, task_path)
        )
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        await write

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.inner.delete_thread, thread_id)
