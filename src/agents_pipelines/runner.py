"""Run one workflow: validate inputs, build the graph, run it under MLflow, report usage.

This is the path every entry point takes (the Dagster asset, the CLI, a notebook). It knows
nothing of Dagster; orchestration context arrives as plain MLflow tags. The run itself is
``workflow_run.WorkflowRun``; ``run_workflow`` is its public, keyword-argument front.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents_pipelines.errors import TrackingFailedWarning
from agents_pipelines.graph.resume import Checkpointing
from agents_pipelines.llm import Backend
from agents_pipelines.spec import Workflow
from agents_pipelines.usage import SpendLimits
from agents_pipelines.workflow_run import RunEnding, RunOptions, RunResult, WorkflowRun

__all__ = [
    "Checkpointing",
    "RunEnding",
    "RunOptions",
    "RunResult",
    "TrackingFailedWarning",
    "WorkflowRun",
    "run_workflow",
]


def run_workflow(
    workflow: Workflow,
    inputs: Mapping[str, Any] | None = None,
    *,
    backend: Backend | str | None = None,
    tags: Mapping[str, str] | None = None,
    mlflow_ui_url: str | None = None,
    simulated_latency_s: float | None = None,
    spend_limits: SpendLimits | None = None,
    cache_dir: Path | None = None,
    checkpointing: Checkpointing | None = None,
    evals: bool = True,
    assess: bool = True,
) -> RunResult:
    """Run ``workflow`` once: ``WorkflowRun(workflow, RunOptions(...)).execute(inputs)``,
    with the options as keywords (see ``RunOptions``). Bad inputs raise
    InvalidInputsError before any LLM call; a failed run raises WorkflowRunError carrying
    the spend so far.

    The workflow's ``evals`` run on the final state, inside the run's trace and ledger:
    their verdicts are ``RunResult.verdicts``, each logged as an MLflow assessment on the
    trace; judge calls count in the run's figures and against its budget and spend limits.
    ``evals=False`` skips them; ``assess=False`` keeps them off the trace.

    A stop (KeyboardInterrupt, an orchestrator's interruption) is raised as it came; to
    read what a stopped run spent, run ``WorkflowRun`` and read its ``ending``."""
    options = RunOptions(
        backend=backend,
        tags=dict(tags or {}),
        mlflow_ui_url=mlflow_ui_url,
        simulated_latency_s=simulated_latency_s,
        spend_limits=spend_limits,
        cache_dir=cache_dir,
        checkpointing=checkpointing,
        evals=evals,
        assess=assess,
    )
    return WorkflowRun(workflow, options).execute(inputs)
