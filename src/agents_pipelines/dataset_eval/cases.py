"""``agents-pipelines eval``: run a workflow once per dataset case, score every case, and log
one MLflow evaluation run (tracking/dataset_evaluation.py) with a row per case.

Each case runs through ``run_workflow``, as ``agents-pipelines run`` does: its usage and
cost come from the run's usage ledger, and its own MLflow run and trace are the case's row.

Pass rate: the scored cases in which every verdict passed, over the scored cases. A case is
scored when a scorer gave it a verdict or its run failed (a failed run fails its case). A
skipped dataset line is no case: it is listed and counted apart, not in the pass rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents_pipelines.dataset_eval.dataset import Case, Dataset
from agents_pipelines.dataset_eval.scorers import (
    CaseOutcome,
    Score,
    Scorer,
    exact_match_scorers,
    workflow_scorers,
)
from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.redaction import redact
from agents_pipelines.spec import Workflow
from agents_pipelines.state_evals import Verdict

__all__ = ["CaseResult", "EvalReport", "EvalSetupError", "evaluate_dataset"]

LINE_TAG = "agents_pipelines.dataset_line"  # on each case's MLflow run


class EvalSetupError(AgentsPipelinesError):
    """The workflow cannot be evaluated as it is configured."""


@dataclass
class CaseResult:
    """A case's run and its scores. The final state and the workflow's verdicts are what
    its scorers read: they are let go once every scorer has scored the case, so the report
    keeps per case only its figures and scores (a state may hold a whole document)."""

    case: Case
    state: dict[str, Any] | None = None
    error: str | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    duration_s: float = 0.0
    scores: list[Score] = field(default_factory=list)
    verdicts: tuple[Verdict, ...] = ()
    scorers_left: int = 0  # the scorers yet to score the case; at 0 its state goes

    def scored_by(self, scores: list[Score]) -> None:
        """One scorer's scores (kept in name order: MLflow runs a case's scorers at once)."""
        self.scores = sorted([*self.scores, *scores], key=lambda s: s.name)
        self.scorers_left -= 1
        if self.scorers_left <= 0:
            self.state, self.verdicts = None, ()

    @property
    def outcome(self) -> CaseOutcome:
        return CaseOutcome(self.case, self.state, self.error, self.verdicts)

    @property
    def scored(self) -> bool:
        return self.error is not None or bool(self.scores)

    @property
    def passed(self) -> bool:
        return self.error is None and all(score.passed for score in self.scores)

    @property
    def eval_cost_usd(self) -> float:
        """What the judges' calls cost: apart from the workflow's own spend."""
        return sum(score.cost_usd for score in self.scores)


@dataclass(frozen=True)
class EvalReport:
    workflow: str
    dataset: Dataset
    scorers: tuple[str, ...]
    results: tuple[CaseResult, ...]
    run_url: str | None

    @property
    def scored(self) -> list[CaseResult]:
        return [result for result in self.results if result.scored]

    @property
    def pass_rate(self) -> float | None:
        """None when no case was scored (nothing to pass)."""
        scored = self.scored
        return sum(r.passed for r in scored) / len(scored) if scored else None

    def scorer_counts(self, name: str) -> tuple[int, int]:
        """(passed, given) verdicts named ``name``."""
        verdicts = [s for r in self.results for s in r.scores if s.name == name]
        return sum(s.passed for s in verdicts), len(verdicts)

    def metrics(self) -> dict[str, float]:
        rate = self.pass_rate
        return {
            "cases": len(self.results),
            "skipped_lines": len(self.dataset.problems),
            "scored_cases": len(self.scored),
            "passed_cases": sum(r.passed for r in self.scored),
            **({"pass_rate": round(rate, 6)} if rate is not None else {}),
            "total_cost_usd": round(sum(r.cost_usd for r in self.results), 9),
            "total_tokens": sum(r.tokens for r in self.results),
            "eval_cost_usd": round(sum(r.eval_cost_usd for r in self.results), 9),
            "failed_runs": sum(r.error is not None for r in self.results),
            **self._scorer_means(),
        }

    def _scorer_means(self) -> dict[str, float]:
        """MLflow's own aggregate per scorer (``<name>/mean``), over every case: each chunk
        of the evaluation logs it over its own cases only."""
        means = {}
        for name in self.scorers:
            passed, given = self.scorer_counts(name)
            if given:
                means[f"{name}/mean"] = round(passed / given, 6)
        return means


def evaluate_dataset(
    workflow: Workflow, dataset: Dataset, *, concurrency: int, params: Mapping[str, Any]
) -> EvalReport:
    """Run and score every case of ``dataset``, at most ``concurrency`` at once, under one
    MLflow evaluation run in the workflow's experiment. ``params`` are logged on it."""
    from agents_pipelines.tracking.dataset_evaluation import EvalRow, evaluate_rows
    from agents_pipelines.tracking.tracking_settings import resolve_settings

    config = workflow.spec.config.observability.mlflow
    if not config.enabled:
        raise EvalSetupError(
            f"Workflow {workflow.name} ({workflow.path}) has observability.mlflow.enabled: "
            "false, and eval logs its results as an MLflow evaluation run. Enable it; a local "
            "store needs no server (tracking_uri: sqlite:///mlflow.db)."
        )
    _import_run_path(workflow)
    exact = exact_match_scorers(dataset.cases)
    scorers = [*exact, *workflow_scorers(workflow)]
    cases = _Cases(workflow, dataset.cases, len(scorers))
    rows = [EvalRow(str(c.line), c.inputs, c.expected) for c in dataset.cases]

    def report() -> EvalReport:
        results = cases.results()
        return EvalReport(workflow.name, dataset, _verdict_names(exact, results), results, run_url)

    run_url: str | None = None
    settings = resolve_settings(config, workflow.name)
    try:
        run = evaluate_rows(
            settings,
            rows,
            cases.run,
            {scorer.name: cases.scorer(scorer) for scorer in scorers},
            workers=concurrency,
            run_name=f"eval {workflow.name} {dataset.path.name}",
            params={"workflow": workflow.name, "dataset": str(dataset.path), **params},
            metrics=lambda: report().metrics(),
        )
    except AgentsPipelinesError:
        raise
    except Exception as exc:  # the cases' own failures are theirs: this is MLflow's
        raise EvalSetupError(
            f"The MLflow evaluation run of {workflow.name} at {settings.tracking_uri} "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc
    run_url = run.run_url
    return report()


def _verdict_names(exact: Sequence[Scorer], results: Sequence[CaseResult]) -> tuple[str, ...]:
    """The table's rows: the expected fields in the dataset's order, then every other
    verdict given (a scorer may give several, one per eval), by name."""
    first = [scorer.name for scorer in exact]
    given = {score.name for result in results for score in result.scores}
    return (*first, *sorted(given - set(first)))


def _import_run_path(workflow: Workflow) -> None:
    """Import what a run imports, here in the main thread: MLflow's evaluation installs
    import hooks, and a first import in its worker threads warned (ImportWarning, an error
    under -W error) and risks the import-lock deadlocks MLflow's harness itself avoids."""
    from agents_pipelines.llm import chat_model_factory, resolve_backend
    from agents_pipelines.workflow_run import WorkflowRun  # noqa: F401

    chat_model_factory(resolve_backend())(workflow.spec.config.llm)  # Gemini's is lazy


class _Cases:
    """The cases' results as MLflow's threads run and score them, by dataset line."""

    def __init__(self, workflow: Workflow, cases: Sequence[Case], scorers: int):
        self._workflow = workflow
        self._results = {str(case.line): CaseResult(case, scorers_left=scorers) for case in cases}
        self._lock = threading.Lock()

    def results(self) -> tuple[CaseResult, ...]:
        with self._lock:
            return tuple(self._results.values())

    def run(self, key: str, inputs: Mapping[str, Any], tags: Mapping[str, str]) -> Any:
        """MLflow's predict function: one workflow run, with the case's inputs as read (not
        as MLflow's table holds them). A failure is recorded, then raised for MLflow to show
        on the case's row."""
        from agents_pipelines.workflow_run import RunOptions, WorkflowRun

        result = self._results[key]
        started = time.perf_counter()
        workflow_run = WorkflowRun(
            self._workflow, RunOptions(tags={**tags, LINE_TAG: key}, assess=False)
        )
        try:
            run = workflow_run.execute(result.case.inputs)
        except Exception as exc:
            ending = workflow_run.ending
            with self._lock:
                result.error = " ".join(redact(f"{type(exc).__name__}: {exc}").split())
                result.duration_s = time.perf_counter() - started
                if ending is not None:
                    usage = ending.usage
                    result.cost_usd, result.tokens = usage.total_cost_usd, usage.tokens.total
            raise
        with self._lock:
            result.state = run.state
            result.verdicts = run.verdicts
            result.duration_s = run.duration_s
            result.cost_usd, result.tokens = run.usage.total_cost_usd, run.usage.tokens.total
        return run.state

    def scorer(self, scorer: Scorer) -> Any:
        from agents_pipelines.tracking.dataset_evaluation import Judgement

        def score(key: str) -> list[Judgement]:
            result = self._results[key]
            with self._lock:
                outcome = result.outcome
            scores = list(scorer.score(outcome))
            with self._lock:
                result.scored_by(scores)
            return [_judgement(s, scorer.name) for s in scores]

        return score


def _judgement(score: Score, scorer: str) -> Any:
    from agents_pipelines.tracking.dataset_evaluation import Judgement

    if score.kind == "judge":
        return Judgement(score.name, score.passed, score.rationale, "LLM_JUDGE", score.model or "")
    return Judgement(score.name, score.passed, score.rationale, "CODE", scorer)
