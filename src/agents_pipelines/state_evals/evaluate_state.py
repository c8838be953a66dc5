"""Run a workflow's evals on a final state: each judge and each rule gives a Verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agents_pipelines.redaction import redact
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.models import EvalSpec
from agents_pipelines.state_evals.rule_check import check_rule
from agents_pipelines.state_evals.verdict import Verdict

if TYPE_CHECKING:  # langchain-core is heavy: only a workflow with a judge needs it
    from langchain_core.callbacks import BaseCallbackHandler

    from agents_pipelines.llm import ChatModelFactory
    from agents_pipelines.usage.ledger import UsageLedger


def evaluate(
    workflow: Workflow,
    state: Mapping[str, Any],
    *,
    model_factory: ChatModelFactory | None = None,
    ledger: UsageLedger | None = None,
    callbacks: Sequence[BaseCallbackHandler] = (),
) -> list[Verdict]:
    """The verdicts of ``workflow``'s evals on ``state`` (a run's final state), in the
    order of the file. Judges are asked one after another.

    ``model_factory`` makes each judge's chat model from its LlmConfig (``config.llm``
    with the eval's ``model``): pass ``llm.chat_model_factory(backend)``; None: the backend
    of AGENTS_PIPELINES_LLM_BACKEND (Gemini by default). Made only for a workflow that has
    a judge.

    ``ledger`` records the judge calls: pass the run's own, so that its guard (the budget,
    the spend limits) runs before each judge call and the calls count in the run's totals
    (``eval_cost_usd`` and ``eval_tokens`` are their share). None: a fresh ledger priced
    by ``config.pricing`` and MLflow's price table. Each verdict's cost and tokens are its
    judge's calls in it. ``callbacks`` are further LangChain callbacks for the judge calls.

    Called inside an MLflow trace (run_workflow does), each judge call is an LLM span of
    it. A judge that gives no verdict (its call failed after retries, its reply does not
    parse, the budget is spent) fails its eval with ``error`` set; it does not raise.
    """
    judging = None
    if any(entry.judge is not None for entry in workflow.spec.evals):
        from agents_pipelines.state_evals.judge_verdicts import Judging

        judging = Judging.of(workflow, model_factory, ledger, callbacks)
    return [
        judging.verdict(entry, state) if judging and entry.judge else _rule_verdict(entry, state)
        for entry in workflow.spec.evals
    ]


def _rule_verdict(entry: EvalSpec, state: Mapping[str, Any]) -> Verdict:
    assert entry.rule is not None
    outcome = check_rule(entry.rule, state)
    return Verdict(
        name=entry.name,
        passed=outcome.passed,
        rationale=redact(outcome.rationale),
        kind="rule",
        model=None,
        cost_usd=0.0,
        input_tokens=0,
        output_tokens=0,
        total_tokens=0,
        blocking=entry.blocking,
    )
