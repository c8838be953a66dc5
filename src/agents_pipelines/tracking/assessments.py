"""Eval verdicts as MLflow assessments (feedback) on a run's trace: they show beside the
trace in the MLflow UI and come back from ``mlflow.search_traces``.

A judge's verdict has the source LLM_JUDGE with the judge model as its id; a rule's, the
source CODE. Logged while the trace is open, MLflow keeps them with the trace in memory
and stores them with it: no request of their own, and none before the trace exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from agents_pipelines.redaction import redact

RULE_SOURCE = "agents_pipelines.rule"  # the source id of a rule's assessment


class Assessed(Protocol):
    """What an assessment is made of (a state_evals.Verdict)."""

    @property
    def name(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def rationale(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def total_tokens(self) -> int: ...
    @property
    def blocking(self) -> bool: ...


def log_assessments(trace_id: str, verdicts: Iterable[Assessed]) -> None:
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    for verdict in verdicts:
        judged = verdict.kind == "judge"
        source = AssessmentSource(
            source_type=AssessmentSourceType.LLM_JUDGE if judged else AssessmentSourceType.CODE,
            source_id=(verdict.model or "") if judged else RULE_SOURCE,
        )
        metadata = {"kind": verdict.kind, "blocking": str(verdict.blocking).lower()}
        if judged:
            metadata |= {"cost_usd": str(verdict.cost_usd), "tokens": str(verdict.total_tokens)}
        mlflow.log_feedback(
            trace_id=trace_id,
            name=verdict.name,
            value=verdict.passed,
            rationale=redact(verdict.rationale),
            source=source,
            metadata=metadata,
        )
