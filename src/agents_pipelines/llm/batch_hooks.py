"""What a run lends its batch calls (llm.batch), through LangGraph's run config.

The batch client is shared by runs (llm.gemini caches clients by settings), so what
belongs to one run reaches its calls in the run's ``configurable``: the names of the jobs
its earlier attempts submitted, the check of a job's estimated cost against the budget and
the spend limits, where the job's progress goes (the Dagster run's log), and, in a range
run, the range's ``SharedJobs``: the partitions' calls of a node are pooled in one job.
Light: the run imports it before any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

HOOKS_KEY = "agents_pipelines_batch"


class JobNames(Protocol):
    """Job names by request key, kept across a run's attempts (graph.batch_job_names)."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, name: str) -> None: ...


class SharedJobs:
    """The partitions of one range run, as their batch calls see them: a node's calls
    wait (llm.batch) until every partition of the range is waiting on a batch call too
    (or has ended), then go in one job.

    ``slots`` (the range's ``max_concurrency``) bounds the partitions that run at once. A
    partition whose calls all wait on a batch job gives its slot up, so that the ones not
    started yet can start and bring their calls to the same job; it takes a slot again
    (``resume``) before it goes on. Without slots, every expected partition runs at once.

    Thread-safe: partitions start and end in the step's worker threads, their calls wait
    on the graph loop (graph.event_loop)."""

    def __init__(self, expected: Iterable[str] = (), slots: int | None = None) -> None:
        """``expected``: the range's partitions, waited for from the start: a partition
        slower to reach the node, or not started yet, is not left out."""
        self._lock = threading.Lock()
        self._running: set[str] = set(expected)
        self._waiting: Counter[str] = Counter()
        self._wakes: list[Callable[[], None]] = []
        self._slots = threading.Semaphore(slots) if slots else None
        self._holding: set[str] = set()  # the partitions that hold a slot now
        self._slot_wakes: list[Callable[[], None]] = []  # resumes waiting for a free slot
        # The partitions' calls gathering for a job (llm.batch), touched on the graph loop.
        self.gatherings: dict[Any, Any] = {}

    @contextmanager
    def member(self, key: str) -> Iterator[None]:
        """Partition ``key`` is running for the duration (once it has a slot)."""
        if self._slots is not None:
            self._slots.acquire()  # on the partition's own worker thread
        with self._lock:
            self._running.add(key)
            if self._slots is not None:
                self._holding.add(key)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(key)
                self._waiting.pop(key, None)
            self._give_slot(key)
            self._wake_all()

    def waiting(self, key: str, calls: int) -> None:
        """``calls`` (negative: answered) of partition ``key`` wait on a batch job. The
        first one gives the partition's slot up."""
        with self._lock:
            idle = self._waiting[key] <= 0
            self._waiting[key] += calls
            if self._waiting[key] <= 0:
                del self._waiting[key]
            gives_up = idle and self._waiting.get(key, 0) > 0
        if gives_up:
            self._give_slot(key)
        self._wake_all()

    async def resume(self, key: str) -> None:
        """Partition ``key``'s calls were answered: take a slot again before going on
        (a no-op while others of its calls still wait, or when it holds one)."""
        if self._slots is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if key in self._holding or self._waiting.get(key, 0) > 0:
                    return
                if self._slots.acquire(blocking=False):
                    self._holding.add(key)
                    return
                freed = loop.create_future()
                self._slot_wakes.append(functools.partial(_settle_soon, loop, freed))
            await freed

    def ready(self) -> bool:
        """Whether no partition may still bring calls: each waits on one, or has ended."""
        with self._lock:
            return all(self._waiting[key] > 0 for key in self._running)

    def when_changed(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (once, from any thread) at the next change."""
        with self._lock:
            self._wakes.append(wake)

    def _give_slot(self, key: str) -> None:
        with self._lock:
            if key not in self._holding:
                return
            self._holding.discard(key)
            wakes, self._slot_wakes = self._slot_wakes, []
        assert self._slots is not None
        self._slots.release()
        for wake in wakes:
            wake()

    def _wake_all(self) -> None:
        with self._lock:
            wakes, self._wakes = self._wakes, []
        for wake in wakes:
            wake()


def _settle_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Settle ``future`` on its own loop, from any thread (a closed loop: nobody waits)."""

    def settle() -> None:
        if not future.done():
            future.set_result(None)

    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


@dataclass(frozen=True)
class BatchHooks:
    """``job_names``: where submitted jobs are checkpointed (None: not checkpointed).
    ``check_job``: raises before a job is submitted whose calls (LangChain run ids) would
    pass the budget or a spend limit. ``progress``: a line per poll for the run's log.
    ``shared`` and ``member``: the range run's pool of jobs and this partition's key in it
    (None: the run's calls make jobs of their own)."""

    job_names: JobNames | None = None
    check_job: Callable[[Sequence[UUID]], None] | None = None
    progress: Callable[[str], None] | None = None
    shared: SharedJobs | None = None
    member: str = ""


def current_hooks() -> BatchHooks:
    """The hooks of the run whose node is calling (none outside a run)."""
    from langchain_core.runnables.config import ensure_config

    found: Any = ensure_config().get("configurable", {}).get(HOOKS_KEY)
    return found if isinstance(found, BatchHooks) else BatchHooks()
