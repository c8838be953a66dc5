"""The exceptions agents_pipelines raises, one root for all of them.

    AgentsPipelinesError
    ├── WorkflowConfigError (ValueError)   a workflow file is wrong; carries every ConfigIssue
    ├── InvalidInputsError (ValueError)    run inputs do not fit the state types; nothing was spent
    ├── CassetteError (ValueError)         record/replay: no cassette, or a missing or malformed one
    ├── StoreDamagedError                  a checkpoint store or spend journal file is damaged
    └── WorkflowRunError                   a run failed; carries the spend so far
        ├── MissingApiKeyError             Gemini was chosen but no key is set
        ├── StepLimitError                 the graph did not reach END within max_steps
        ├── OutputValidationError          a structured reply did not fit the state types
        ├── BudgetExceededError            orchestration.budget was spent; no more calls made
        ├── SpendLimitError                a day's or month's spend limit is reached; no call made
        ├── PythonStepError                a `function` step raised, or returned the wrong outputs
        ├── StateValueTooLargeError        a node wrote a value over max_state_value_chars
        ├── ToolCallLimitError             a node's model asked for more than max_tool_calls
        ├── UnrecordedRequestError         replay: a node sent a request the cassette lacks
        └── LlmCallError                   Gemini refused or failed a call (after retries)

    AgentsPipelinesWarning (UserWarning)
    ├── TrackingFailedWarning              MLflow tracking failed; the run went on
    └── FileStoreDeprecationWarning (FutureWarning)   tracking to a file:// store

Every message names the workflow file or node it is about and says how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents_pipelines.usage import UsageSummary

__all__ = [
    "AgentsPipelinesError",
    "AgentsPipelinesWarning",
    "BudgetExceededError",
    "CassetteError",
    "CheckpointKeyError",
    "ConfigIssue",
    "FileStoreDeprecationWarning",
    "InvalidInputsError",
    "LlmCallError",
    "MissingApiKeyError",
    "OutputValidationError",
    "PythonStepError",
    "SpendLimitError",
    "StateValueTooLargeError",
    "StepLimitError",
    "StoreDamagedError",
    "ToolCallLimitError",
    "TrackingFailedWarning",
    "UnrecordedRequestError",
    "WorkflowConfigError",
    "WorkflowRunError",
]


class AgentsPipelinesError(Exception):
    """Root of every error agents_pipelines raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one workflow file, located as precisely as the YAML allows."""

    file: str
    path: str  # field path such as "nodes[2].outputs[0]"; "" for the whole document
    problem: str
    fix: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}:{field} {self.problem}.{fix}"


class WorkflowConfigError(AgentsPipelinesError, ValueError):
    """One or more workflow files are invalid. ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = tuple(issues)
        files = sorted({issue.file for issue in self.issues})
        head = (
            f"{len(self.issues)} problem(s) in workflow file {files[0]}"
            if len(files) == 1
            else f"{len(self.issues)} problem(s) in {len(files)} workflow files"
        )
        super().__init__(head + ":\n" + "\n".join(f"  - {issue}" for issue in self.issues))


class InvalidInputsError(AgentsPipelinesError, ValueError):
    """Run inputs do not fit the workflow's state fields. Raised before any LLM call."""


class CassetteError(AgentsPipelinesError, ValueError):
    """The record or replay backend has no cassette, or its cassette is missing or malformed."""


class StoreDamagedError(AgentsPipelinesError):
    """A SQLite store a run cannot do without (the checkpoints, the spend journal) is not a
    database, or a corrupt one. Raised before any LLM call; the message names the file and
    says what to do. (The development cache, disposable, is set aside and made anew.)"""


class CheckpointKeyError(AgentsPipelinesError):
    """A workflow with ``redact_pii`` checkpoints encrypted, and the key
    (AGENTS_PIPELINES_CHECKPOINT_KEY) is missing or not a key. Raised before any LLM call;
    the message names the file and line, and how to make a key."""


class WorkflowRunError(AgentsPipelinesError):
    """A run failed. ``usage`` holds what was spent before it failed (never lost).

    ``transient`` says whether running again may succeed (rate limits, 5xx, time-outs);
    orchestrators retry only those.
    """

    transient = False

    def __init__(self, message: str, usage: UsageSummary | None = None):
        self.usage = usage
        self.reason = message  # without the spend, which with_usage() states afresh
        if usage is not None and usage.llm_calls:
            message += f" Spent before failing: {usage.describe_spend()}."
        super().__init__(message)

    def with_usage(self, usage: UsageSummary) -> WorkflowRunError:
        """The same error, with the spend so far attached to its message (once: an error
        raised with the spend of its moment states the run's spend instead)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        WorkflowRunError.__init__(clone, self.reason, usage)
        return clone


class MissingApiKeyError(WorkflowRunError):
    """The Gemini backend was chosen, but GOOGLE_API_KEY is not set."""


class StepLimitError(WorkflowRunError):
    """The graph ran ``config.execution.max_steps`` steps without reaching END."""


class OutputValidationError(WorkflowRunError):
    """A node's structured reply did not fit the types of its output fields."""


class BudgetExceededError(WorkflowRunError):
    """The run's spend reached ``orchestration.budget``; it made no further LLM calls."""


class SpendLimitError(WorkflowRunError):
    """The spend recorded in a day or month window reached ``orchestration.spend_limits`` (or
    the pool's limit); the run made no further LLM call. Not transient: a retry before the
    window resets would be refused the same way."""


class PythonStepError(WorkflowRunError):
    """A Python step (``function``) raised, or returned other keys or types than its outputs."""


class StateValueTooLargeError(WorkflowRunError):
    """A node wrote a value over ``config.execution.max_state_value_chars``: the run stops
    before the value is checkpointed, stored or sent to a model."""


class PythonTimeoutError(PythonStepError, TimeoutError):
    """A Python step or a tool call ran past its node's ``timeout_s``. Transient, like a
    Gemini time-out: the node's retries, then Dagster's step retries, run it again."""

    transient = True


class ToolCallLimitError(WorkflowRunError):
    """A node's model kept calling tools past ``max_tool_calls``."""


class UnrecordedRequestError(WorkflowRunError):
    """Replay: a node sent a request that the cassette has not recorded. Never transient: the
    same request misses again, so nothing retries it and nothing falls back to Gemini."""


class LlmCallError(WorkflowRunError):
    """The LLM provider failed a call for good (a permanent error, or retries used up)."""

    def __init__(
        self,
        message: str,
        usage: UsageSummary | None = None,
        transient: bool = False,
        retry_after_s: float | None = None,
    ):
        super().__init__(message, usage)
        self.transient = transient
        self.retry_after_s = retry_after_s  # the server's Retry-After, when it sent one


class AgentsPipelinesWarning(UserWarning):
    """Root of every warning agents_pipelines issues: something went wrong, the run went on."""


class TrackingFailedWarning(AgentsPipelinesWarning):
    """MLflow tracking failed; the run went on (observability.mlflow.required is false)."""


class FileStoreDeprecationWarning(AgentsPipelinesWarning, FutureWarning):
    """The workflow tracks to a file:// store, which MLflow keeps only in maintenance mode."""


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from (``__cause__``) or while handling
    (``__context__``), each once, ``exc`` first and a cause before a context.

    Both links are followed, even where ``raise ... from`` hides the context in a
    traceback: a provider's error there still carries its status (llm.gemini reads it to
    retry) and may carry the API key (redaction scrubs it). A cycle ends the walk."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        err = pending.pop()
        if err is None or any(err is known for known in seen):
            continue
        seen.append(err)
        pending += [err.__context__, err.__cause__]  # pop() takes the cause first
    return seen
