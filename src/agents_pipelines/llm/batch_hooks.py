"""What a run lends its batch calls (llm.batch), through LangGraph's run config.

The batch client is shared by runs (llm.gemini caches clients by settings), so what
belongs to one run reaches its calls in the run's ``configurable``: the names of the jobs
its earlier attempts submitted, the check of a job's estimated cost against the budget and
the spend limits, and where the job's progress goes (the Dagster run's log). Light: the
run imports it before any client.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

HOOKS_KEY = "agents_pipelines_batch"


class JobNames(Protocol):
    """Job names by request key, kept across a run's attempts (graph.batch_job_names)."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, name: str) -> None: ...


@dataclass(frozen=True)
class BatchHooks:
    """``job_names``: where submitted jobs are checkpointed (None: not checkpointed).
    ``check_job``: raises before a job is submitted whose calls (LangChain run ids) would
    pass the budget or a spend limit. ``progress``: a line per poll for the run's log."""

    job_names: JobNames | None = None
    check_job: Callable[[Sequence[UUID]], None] | None = None
    progress: Callable[[str], None] | None = None


def current_hooks() -> BatchHooks:
    """The hooks of the run whose node is calling (none outside a run)."""
    from langchain_core.runnables.config import ensure_config

    found: Any = ensure_config().get("configurable", {}).get(HOOKS_KEY)
    return found if isinstance(found, BatchHooks) else BatchHooks()
