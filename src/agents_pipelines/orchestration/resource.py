"""The resource that runs workflows for Dagster assets.

Deployment settings come from here and from the environment, never from the YAML: the
backend (AGENTS_PIPELINES_LLM_BACKEND), the Gemini key (GOOGLE_API_KEY, read by the
Gemini backend itself, so it never passes through Dagster config), the MLflow UI address.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg

from agents_pipelines.errors import BudgetExceededError, InvalidInputsError, WorkflowRunError
from agents_pipelines.orchestration.checks import budget_result, output_results
from agents_pipelines.orchestration.inputs import resolve_inputs
from agents_pipelines.orchestration.metadata import run_metadata, usage_metadata
from agents_pipelines.redaction import redact
from agents_pipelines.spec import Workflow


class WorkflowRunner(dg.ConfigurableResource):
    """Runs a workflow and turns the result into a Dagster materialization and checks."""

    llm_backend: str | None = None  # "gemini" or "simulated"; None: the environment decides
    mlflow_ui_url: str | None = None  # base URL of the MLflow UI for run links
    simulated_latency_s: float | None = None

    def materialize(
        self, context: dg.AssetExecutionContext, workflow: Workflow, upstream: dict[str, Any]
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        from agents_pipelines.runner import run_workflow  # heavy: not at code-location load

        partition = context.partition_key if context.has_partition_key else None
        config = dict(context.op_execution_context.op_config or {})
        inputs = resolve_inputs(workflow.spec, partition, config, upstream)
        try:
            result = run_workflow(
                workflow,
                inputs,
                backend=self.llm_backend,
                tags=_mlflow_tags(context),
                mlflow_ui_url=self.mlflow_ui_url,
                simulated_latency_s=self.simulated_latency_s,
            )
        except InvalidInputsError as exc:
            raise dg.Failure(description=redact(str(exc)), allow_retries=False) from exc
        except WorkflowRunError as exc:
            _retry_after_rate_limit(context, workflow, exc)
            metadata = usage_metadata(exc.usage) if exc.usage is not None else {}
            overspent = isinstance(exc, BudgetExceededError) and exc.usage is not None
            if overspent and (check := budget_result(workflow, exc.usage)) is not None:  # type: ignore[arg-type]
                yield check
            raise dg.Failure(
                description=redact(str(exc)), metadata=metadata, allow_retries=exc.transient
            ) from exc
        context.log.info(
            f"{workflow.name}: {result.usage.describe_spend()} "
            f"(backend {result.backend.value}, {result.duration_s:.2f} s)"
        )
        for warning in result.warnings:
            context.log.warning(redact(warning))
        # The value goes to the IO manager, for downstream workflows and assets to load.
        yield dg.MaterializeResult(value=result.state, metadata=run_metadata(result))
        if (check := budget_result(workflow, result.usage)) is not None:
            yield check
        yield from output_results(workflow, result.state)


def _retry_after_rate_limit(
    context: dg.AssetExecutionContext, workflow: Workflow, exc: WorkflowRunError
) -> None:
    """A rate limit that outlasted the node retries: retry the step, but never sooner than
    the server asked (Dagster's RetryPolicy would wait only its own delay)."""
    wait = getattr(exc, "retry_after_s", None)
    policy = workflow.spec.orchestration.retry
    if not exc.transient or wait is None or policy.max_retries == 0:
        return
    spent = exc.usage.describe_spend() if exc.usage is not None else "nothing"
    context.log.warning(
        redact(str(exc)) + f" Retrying after the server's Retry-After ({wait:g} s); "
        f"this attempt spent {spent}."
    )
    raise dg.RetryRequested(
        max_retries=policy.max_retries, seconds_to_wait=max(wait, policy.delay_s)
    ) from exc


def _mlflow_tags(context: dg.AssetExecutionContext) -> dict[str, str]:
    tags = {
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": context.asset_key.to_user_string(),
        "dagster.job": context.run.job_name,
    }
    if context.has_partition_key:
        tags["dagster.partition"] = context.partition_key
    return tags
