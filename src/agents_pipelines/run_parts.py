"""The collaborators of a workflow run (workflow_run.py), one per feature.

Each is made as the run starts, from the workflow and the run's options, and says what it
adds to the run: ledger hooks, a graph wrapper, notes for the result, and what it does
when the run succeeds (``RunPart.succeeded``). A new feature is a new part here and one
line in ``WorkflowRun``, not a new parameter threaded through the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agents_pipelines.errors import BudgetExceededError, SpendLimitError
from agents_pipelines.graph import resume
from agents_pipelines.graph.event_loop import AwaitableSaver
from agents_pipelines.graph.resume import Checkpointing
from agents_pipelines.llm import Backend
from agents_pipelines.llm.cache import ResponseCache, open_cache
from agents_pipelines.registry import ProcessRegistry
from agents_pipelines.spec import Workflow
from agents_pipelines.usage import Budget, SpendLimits, UsageSummary, WindowSpend
from agents_pipelines.usage.budget import NextPrompt
from agents_pipelines.usage.spend_limits import first_reached

# Where the development cache lives outside Dagster (the CLI, a notebook).
DEFAULT_CACHE_DIR = Path(".agents_pipelines")


class RunPart(Protocol):
    """What the run asks of every part as it ends."""

    def notes(self) -> tuple[str, ...]:
        """Warnings for the run's result (and the Dagster log)."""
        ...

    def succeeded(self) -> None:
        """The run reached its end and its record is written."""
        ...


class SpendGuard:
    """``orchestration.budget`` and the spend limits' windows: refuses to start a run whose
    window is spent, stops one before a call that the budget or a window would not cover,
    and writes the run's running total to the spend journal."""

    def __init__(self, workflow: Workflow, limits: SpendLimits | None):
        self._workflow = workflow
        self.windows: tuple[WindowSpend, ...] = limits.open() if limits is not None else ()
        self._journal = limits.journal if limits is not None and self.windows else None
        config = workflow.spec.orchestration.budget
        self._budget = (
            Budget(workflow.name, config.max_cost_usd, config.max_total_tokens)
            if config is not None
            else None
        )
        self._written = 0.0
        self._lock = threading.Lock()  # parallel nodes finish on several threads

    def refuse_if_spent(self) -> None:
        """Raise SpendLimitError, before anything runs, when a window is already spent."""
        if (reached := first_reached(self.windows, UsageSummary(), self._journal)) is not None:
            window, in_flight = reached
            message = window.stop_message(self._workflow.name, UsageSummary(), in_flight)
            raise SpendLimitError(message, UsageSummary())

    def before_call(self) -> Callable[[UsageSummary, NextPrompt], None] | None:
        """The ledger's hook before each LLM call; None when nothing limits the run."""
        return self._check if self._budget is not None or self.windows else None

    def after_call(self) -> Callable[[UsageSummary], None] | None:
        """The ledger's hook after each call; None without a journal."""
        return self._write if self._journal is not None else None

    def _check(self, usage: UsageSummary, prompt: NextPrompt) -> None:
        """Stops the run before its next LLM call once the budget is spent, or would be by
        that call's prompt alone (sized by characters / 4), or once a spend limit's window
        is (earlier runs' spend, other runs' in flight from the journal, and this run's)."""
        budget = self._budget
        if budget is not None and (over := budget.overrun(usage)) is not None:
            raise BudgetExceededError(budget.stop_message(over), usage)
        if budget is not None and (too_large := budget.prompt_overrun(usage, prompt)):
            raise BudgetExceededError(too_large, usage)
        if (reached := first_reached(self.windows, usage, self._journal)) is not None:
            window, in_flight = reached
            raise SpendLimitError(window.stop_message(self._workflow.name, usage, in_flight), usage)
        if prompt.is_job and prompt.cost_usd:
            self._check_job_in_windows(usage, prompt)

    def _check_job_in_windows(self, usage: UsageSummary, job: NextPrompt) -> None:
        """A batch job is paid whole once submitted: refuse one whose estimate would pass
        a spend limit's window (a single call is judged by what is spent so far)."""
        estimate = job.cost_usd or 0.0
        for window in self.windows:
            others = (
                self._journal.in_flight_since(window.limit, window.start) if self._journal else 0.0
            )
            if not window.reached(usage, others + estimate):
                continue
            limit = window.limit
            raise SpendLimitError(
                f"Workflow {self._workflow.name} stopped before submitting {job.what()}, "
                f"unsent: about ${estimate:.6f} for its prompts would pass the spend limit "
                f"of {limit.describe()}: ${window.spent_usd(usage, others):.6f} spent since "
                f"{window.start.isoformat()} of max_cost_usd ${limit.max_cost_usd:.6f} "
                f"(resets at {window.resets_at.isoformat()}). Send fewer items, wait for the "
                "window to reset, or raise the limit.",
                usage,
            )

    def _write(self, usage: UsageSummary) -> None:
        """Writes after each call that cost something (a free call, a cache hit or a
        refused one, writes nothing)."""
        journal = self._journal
        assert journal is not None  # after_call hands _write out only with a journal
        with self._lock:
            total = usage.total_cost_usd
            if total > self._written:
                journal.record(total)
                self._written = total

    def notes(self) -> tuple[str, ...]:
        return ()

    def succeeded(self) -> None:
        pass


class DevCache:
    """The development cache (``config.execution.cache``), or none.

    Off for record and replay: a hit never reaches the cassette, so a recording would
    miss it, and a replay would bill it as $0 instead of what was recorded."""

    def __init__(
        self,
        workflow: Workflow,
        folder: Path | None,
        backend: Backend,
        registry: ProcessRegistry,
    ):
        config = workflow.spec.config.execution.cache
        self.cache: ResponseCache | None = None
        if config is not None and backend not in (Backend.RECORD, Backend.REPLAY):
            self.cache = open_cache(folder or DEFAULT_CACHE_DIR, config.ttl_s, registry)
        # A damaged cache set aside as it opened: this run says so.
        self.recovery_note = self.cache.take_recovery_note() if self.cache is not None else None

    def notes(self) -> tuple[str, ...]:
        return (self.recovery_note,) if self.recovery_note else ()

    def succeeded(self) -> None:
        pass


@dataclass
class Checkpoints:
    """The graph checkpointed in the run's thread (graph/resume.py), or not at all.

    An unfinished checkpoint of the same workflow version is resumed; a run that succeeds
    clears its thread, leaving nothing to resume."""

    checkpointing: Checkpointing | None
    start: resume.Start
    awaitable: AwaitableSaver | None = None

    @classmethod
    def attach(
        cls,
        checkpointing: Checkpointing | None,
        graph: Any,
        state: dict[str, Any],
        run_version: str,
        on_event_loop: bool,
    ) -> tuple[Checkpoints, Any]:
        """The part, and ``graph`` with its checkpointer (the async path awaits writes)."""
        if checkpointing is None:
            return cls(None, resume.Start(state)), graph
        resume.redact_errors(checkpointing.saver)
        saver = checkpointing.saver
        awaitable = AwaitableSaver(saver) if on_event_loop else None
        graph = graph.copy({"checkpointer": awaitable or saver})
        start = resume.start(graph, checkpointing, state, run_version)
        return cls(checkpointing, start, awaitable), graph

    def notes(self) -> tuple[str, ...]:
        start = self.start
        return (start.note,) if start.warning and start.note is not None else ()

    def succeeded(self) -> None:
        if self.checkpointing is not None and not self.checkpointing.keep_finished:
            self.checkpointing.saver.delete_thread(self.checkpointing.thread_id)
