"""Judges on one final state: their chat models, their calls in the ledger, their verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler

from agents_pipelines.errors import WorkflowRunError
from agents_pipelines.graph.builder import retry_policy
from agents_pipelines.llm import ChatModelFactory, chat_model_factory, resolve_backend
from agents_pipelines.llm.gemini import describe_failure
from agents_pipelines.redaction import redact
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.models import EvalSpec, LlmConfig
from agents_pipelines.state_evals.judge_call import ask_judge
from agents_pipelines.state_evals.verdict import Verdict
from agents_pipelines.usage import UsageSummary, round_usd
from agents_pipelines.usage.ledger import UsageLedger


@dataclass(frozen=True)
class Judging:
    workflow: Workflow
    factory: ChatModelFactory
    ledger: UsageLedger
    callbacks: Sequence[BaseCallbackHandler]

    @classmethod
    def of(
        cls,
        workflow: Workflow,
        factory: ChatModelFactory | None,
        ledger: UsageLedger | None,
        callbacks: Sequence[BaseCallbackHandler],
    ) -> Judging:
        if factory is None:
            factory = chat_model_factory(resolve_backend())
        if ledger is None:
            from agents_pipelines.tracking import MlflowPriceTable

            ledger = UsageLedger(MlflowPriceTable(workflow.spec.config.pricing))
        return cls(workflow, factory, ledger, (ledger, *callbacks))

    def llm(self, entry: EvalSpec) -> LlmConfig:
        config = self.workflow.spec.config.llm
        return config.model_copy(update={"model": entry.model}) if entry.model else config

    def verdict(self, entry: EvalSpec, state: Mapping[str, Any]) -> Verdict:
        llm = self.llm(entry)
        model = self.factory(llm)  # a missing API key raises here, as for a node
        before = len(self.ledger.summary().calls)
        error = None
        try:
            reply = ask_judge(entry, state, model, self.callbacks, retry_policy(llm))
            passed, rationale = reply.passed, reply.rationale
        except Exception as exc:
            error = redact(self._why(exc))
            passed, rationale = False, f"Not judged: {error}"
        calls = [c for c in self.ledger.summary().calls[before:] if c.eval == entry.name]
        spent = UsageSummary(tuple(calls))
        return Verdict(
            name=entry.name,
            passed=passed,
            rationale=redact(rationale),
            kind="judge",
            model=llm.model,
            cost_usd=round_usd(spent.total_cost_usd),
            input_tokens=spent.tokens.prompt,
            output_tokens=spent.tokens.completion,
            total_tokens=spent.tokens.total,
            blocking=entry.blocking,
            error=error,
        )

    def _why(self, exc: Exception) -> str:
        if isinstance(exc, WorkflowRunError | ValueError):  # a budget, a spend limit, a reply
            return str(exc)
        return describe_failure(exc)
