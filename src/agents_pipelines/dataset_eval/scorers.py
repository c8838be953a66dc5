"""What scores a case of ``agents-pipelines eval``: a list of scorers, each a name and a
function from the case's outcome to its verdicts.

An exact-match scorer per field that some line's ``expected`` names, and the workflow's
own ``evals:`` through ``workflow_scorers``, the one place they plug in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agents_pipelines.dataset_eval.dataset import Case
from agents_pipelines.spec import Workflow
from agents_pipelines.state_evals import Verdict

__all__ = ["CaseOutcome", "Score", "Scorer", "exact_match_scorers", "workflow_scorers"]

EXACT_MATCH_PREFIX = "expected."
_SHOWN_CHARS = 80  # of a value in a rationale


@dataclass(frozen=True)
class CaseOutcome:
    """A case after its run: ``state`` is the final state, None when the run failed."""

    case: Case
    state: Mapping[str, Any] | None
    error: str | None = None
    verdicts: tuple[Verdict, ...] = ()  # the workflow's evals, judged inside its run


@dataclass(frozen=True)
class Score:
    """One verdict on one case. A judge's call has a model and a cost of its own."""

    name: str
    passed: bool
    rationale: str
    kind: Literal["code", "judge"] = "code"
    model: str | None = None
    cost_usd: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class Scorer:
    """``score`` gives no verdict for a case it does not apply to."""

    name: str
    score: Callable[[CaseOutcome], Sequence[Score]]


def workflow_scorers(workflow: Workflow) -> list[Scorer]:
    """The workflow's own ``evals:``, one scorer giving a verdict per eval. The run judged
    them (in its trace, ledger and budget, as a materialization does); a failed run fails
    every eval, since there is no final state to judge."""
    names = [spec.name for spec in workflow.spec.evals]
    if not names:
        return []

    def score(outcome: CaseOutcome) -> Sequence[Score]:
        if outcome.state is None:
            return [Score(name, False, f"the run failed: {outcome.error}") for name in names]
        return [_score(verdict) for verdict in outcome.verdicts]

    return [Scorer("evals", score)]


def _score(verdict: Verdict) -> Score:
    kind: Literal["code", "judge"] = "judge" if verdict.kind == "judge" else "code"
    return Score(
        verdict.name,
        verdict.passed,
        verdict.rationale,
        kind,
        verdict.model,
        verdict.cost_usd,
        verdict.total_tokens,
    )


def exact_match_scorers(cases: Sequence[Case]) -> list[Scorer]:
    """One scorer per field that any case's ``expected`` names, in first-seen order."""
    fields = dict.fromkeys(name for case in cases for name in case.expected)
    return [Scorer(EXACT_MATCH_PREFIX + name, _exact_match(name)) for name in fields]


def _exact_match(field: str) -> Callable[[CaseOutcome], Sequence[Score]]:
    name = EXACT_MATCH_PREFIX + field

    def score(outcome: CaseOutcome) -> Sequence[Score]:
        if field not in outcome.case.expected:
            return []
        expected = outcome.case.expected[field]
        if outcome.state is None:
            return [Score(name, False, f"the run failed: {outcome.error}")]
        got = outcome.state.get(field)
        if got == expected:
            return [Score(name, True, f"{_shown(expected)}, as expected")]
        return [Score(name, False, f"expected {_shown(expected)}, got {_shown(got)}")]

    return score


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"
