"""One MLflow evaluation run over a dataset, through ``mlflow.genai.evaluate``.

MLflow calls ``predict`` once per row in its own thread pool (MLFLOW_GENAI_EVAL_MAX_WORKERS
threads, set here to ``workers`` for the call) and each scorer on each row. The predict
function runs the workflow as ``run_workflow`` always does: the workflow's own MLflow run
(tagged as a child of the evaluation run) and its trace. That trace starts inside MLflow's
prediction context, so MLflow finds it, links it to the evaluation run and logs every
scorer's verdict on it as an assessment: one row per case in MLflow's evaluation view.

MLflow's own retries of a predict call on a rate limit are turned off (a workflow retries
its calls itself; re-running a whole case would pay for it twice), and so is its rate
limiter and its trial call of ``predict`` on the first row (a paid run): mlflow_env.py sets
these for the call, with the workers.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agents_pipelines.redaction import redact, redact_value
from agents_pipelines.tracking import experiments
from agents_pipelines.tracking.client import configured_client
from agents_pipelines.tracking.mlflow_env import evaluation_env
from agents_pipelines.tracking.tracking_settings import TrackingSettings

__all__ = ["CASE_KEY", "EvalRow", "EvaluationRun", "Judgement", "evaluate_rows"]

# The row's id among its inputs: the one thing MLflow hands back to both predict and the
# scorers. A dot cannot start or be in a state field's name, so it never meets an input.
CASE_KEY = "agents_pipelines.case"
PARENT_RUN_TAG = "mlflow.parentRunId"  # nests each case's run under the evaluation run
# mlflow.genai.evaluate holds every row's trace (spans and all) until it returns, then reads
# them all back: 88 KB a row here, 0.4 GB at 200 rows, 0.45 at 800 and 1.23 GB at 10,000.
# The rows go in chunks under the same run, so it holds one chunk's traces at a time.
CHUNK_ROWS = 200


@dataclass(frozen=True)
class EvalRow:
    key: str  # the case's id, e.g. its dataset line
    inputs: Mapping[str, Any]
    expectations: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgement:
    """One scorer's verdict on one case, as an MLflow Feedback on the case's trace."""

    name: str
    passed: bool
    rationale: str
    source: Literal["CODE", "LLM_JUDGE"] = "CODE"
    source_id: str = "agents_pipelines"  # the judge's model, or the scorer's name


@dataclass(frozen=True)
class EvaluationRun:
    run_id: str
    experiment_id: str
    run_url: str


# predict(key, inputs, tags for the case's own run) -> the case's outputs
Predict = Callable[[str, Mapping[str, Any], Mapping[str, str]], Any]
# a scorer: the case's key -> its verdicts (none when it does not apply)
ScoreCase = Callable[[str], Sequence[Judgement]]


def evaluate_rows(
    settings: TrackingSettings,
    rows: Sequence[EvalRow],
    predict: Predict,
    scorers: Mapping[str, ScoreCase],
    *,
    workers: int,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Callable[[], Mapping[str, float]],
) -> EvaluationRun:
    """Run ``predict`` and ``scorers`` over ``rows`` under one MLflow evaluation run, in
    chunks of CHUNK_ROWS rows; ``metrics()`` is logged on it once every row is scored."""
    import mlflow
    import mlflow.genai

    client = configured_client(settings.tracking_uri)
    experiment_id = experiments.experiment_id(
        client, settings.tracking_uri, settings.experiment_name
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.log_params(redact_value({k: str(v)[:6000] for k, v in params.items()}))

        def predict_fn(**inputs: Any) -> Any:
            key = str(inputs.pop(CASE_KEY))
            return predict(key, inputs, {PARENT_RUN_TAG: run_id})

        mlflow_scorers = [_mlflow_scorer(name, score) for name, score in scorers.items()]
        # MLflow prints its own summary on stdout: the command's table goes there instead.
        with evaluation_env(workers), contextlib.redirect_stdout(sys.stderr):
            for start in range(0, len(rows), CHUNK_ROWS):
                data = [_row(row) for row in rows[start : start + CHUNK_ROWS]]
                mlflow.genai.evaluate(data=data, predict_fn=predict_fn, scorers=mlflow_scorers)
        # Each chunk logged its own `<scorer>/mean`: metrics() gives them over every row.
        mlflow.log_metrics(dict(metrics()))
    return EvaluationRun(run_id, experiment_id, settings.run_url(experiment_id, run_id))


def _row(row: EvalRow) -> dict[str, Any]:
    return {"inputs": {CASE_KEY: row.key, **row.inputs}, "expectations": dict(row.expectations)}


def _mlflow_scorer(name: str, score: ScoreCase) -> Any:
    from mlflow.genai.scorers import scorer

    def run(inputs: Mapping[str, Any]) -> list[Any]:
        return [_feedback(verdict) for verdict in score(str(inputs[CASE_KEY]))]

    return scorer(run, name=name)


def _feedback(verdict: Judgement) -> Any:
    from mlflow.entities import AssessmentSource, Feedback

    return Feedback(
        name=verdict.name,
        value=verdict.passed,
        rationale=redact(verdict.rationale),
        source=AssessmentSource(source_type=verdict.source, source_id=verdict.source_id),
    )
