"""The materialization metadata of a workflow run: tokens, cost, MLflow links, calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from agents_pipelines.orchestration.attempts import Attempt
from agents_pipelines.orchestration.metadata_sets import (
    AttemptsMetadata,
    RunMetadata,
    UsageMetadata,
)
from agents_pipelines.redaction import redact
from agents_pipelines.usage import UsageSummary, round_usd

if TYPE_CHECKING:
    from agents_pipelines.tracking import TrackingInfo

PREVIEW_CHARS = 2_000

_CALL_COLUMNS = [
    dg.TableColumn("node", "string"),
    dg.TableColumn("item", "int", description="The list index of a map node's item call."),
    dg.TableColumn("model", "string", description="`python` for a Python step."),
    dg.TableColumn(
        "tier",
        "string",
        description="The service tier that served the call (standard, flex, priority, "
        "batch), at whose price it is counted; empty for a Python step.",
    ),
    dg.TableColumn("tools_called", "string", description="The tools the model called."),
    dg.TableColumn("status", "string"),
    dg.TableColumn("prompt_tokens", "int"),
    dg.TableColumn("completion_tokens", "int"),
    dg.TableColumn("reasoning_tokens", "int"),
    dg.TableColumn("cached_tokens", "int"),
    dg.TableColumn("cost_usd", "float", description="Empty when the model has no price."),
    dg.TableColumn("latency_s", "float"),
    dg.TableColumn("cache_hit", "bool", description="Answered by the development cache."),
    dg.TableColumn("saved_cost_usd", "float", description="What a cache hit would have cost."),
]

_FAILED_ITEM_COLUMNS = [
    dg.TableColumn("node", "string"),
    dg.TableColumn("item", "int", description="The list index, written as the empty value."),
    dg.TableColumn("error", "string"),
]


_BATCH_JOB_COLUMNS = [
    dg.TableColumn("name", "string", description="The Batch API job (batches/...)."),
    dg.TableColumn("state", "string", description="SUCCEEDED, FAILED, CANCELLED, EXPIRED..."),
    dg.TableColumn("requests", "int"),
    dg.TableColumn("failures", "int", description="Requests the job answered with an error."),
    dg.TableColumn("attached", "bool", description="A job of an earlier attempt, reused."),
]


_RESUMED_COLUMNS = [
    dg.TableColumn("node", "string"),
    dg.TableColumn("item", "int", description="The list index of a map node's item."),
    dg.TableColumn("llm_calls", "int", description="Made by the earlier attempt."),
    dg.TableColumn("total_tokens", "int"),
    dg.TableColumn("cost_usd", "float", description="Paid by the earlier attempt."),
]


def usage_metadata(summary: UsageSummary) -> dict[str, Any]:
    """Token and cost figures; also attached to failures, so spend is never lost."""
    return UsageMetadata(
        **summary.totals(),
        node_calls=dg.MetadataValue.table(
            [_call_record(call) for call in summary.calls], dg.TableSchema(_CALL_COLUMNS)
        ),
        failed_items=_failed_items(summary),
        resumed=_resumed(summary),
        resumed_cost_usd=summary.resumed_cost_usd if summary.resumed else None,
        unpriced_models=", ".join(summary.unpriced_models) or None,
        cancelled_calls=summary.cancelled_calls or None,
        batch_jobs=_batch_jobs(summary),
        saved_vs_interactive_usd=(summary.saved_vs_interactive_usd if summary.batch_jobs else None),
    ).as_metadata()


def _batch_jobs(summary: UsageSummary) -> dg.TableMetadataValue | None:
    """The Batch API jobs of the run's batch nodes (llm.batch), in submission order."""
    if not summary.batch_jobs:
        return None
    return dg.MetadataValue.table(
        [dg.TableRecord(dict(job)) for job in summary.batch_jobs],
        dg.TableSchema(_BATCH_JOB_COLUMNS),
    )


def _failed_items(summary: UsageSummary) -> dg.TableMetadataValue | None:
    if not summary.failed_items:
        return None
    return dg.MetadataValue.table(
        [
            dg.TableRecord({"node": f.node, "item": f.item, "error": f.error})
            for f in summary.failed_items
        ],
        dg.TableSchema(_FAILED_ITEM_COLUMNS),
    )


def _resumed(summary: UsageSummary) -> dg.TableMetadataValue | None:
    """The nodes a resumed run reused, with what they cost the attempt that ran them:
    shown apart, as that attempt's own figures (and its MLflow run) count them."""
    if not summary.resumed:
        return None
    return dg.MetadataValue.table(
        [dg.TableRecord(r.as_dict()) for r in summary.resumed], dg.TableSchema(_RESUMED_COLUMNS)
    )


_ATTEMPT_COLUMNS = [
    dg.TableColumn("attempt", "int"),
    dg.TableColumn("outcome", "string", description="succeeded, retried, failed or stopped"),
    dg.TableColumn("llm_calls", "int"),
    dg.TableColumn("total_tokens", "int"),
    dg.TableColumn("cost_usd", "float"),
    dg.TableColumn("error", "string"),
]


def attempts_metadata(attempts: Sequence[Attempt]) -> dict[str, Any]:
    """Every attempt of the step in this run, and their sum: all of them were paid for.

    The plain ``total_*`` figures stay those of the attempt that reports them, as in its
    MLflow run."""
    return AttemptsMetadata(
        attempts=dg.MetadataValue.table(
            [
                dg.TableRecord(
                    {
                        "attempt": a.number,
                        "outcome": a.outcome,
                        "llm_calls": a.llm_calls,
                        "total_tokens": a.total_tokens,
                        "cost_usd": a.cost_usd,
                        "error": a.error,
                    }
                )
                for a in attempts
            ],
            dg.TableSchema(_ATTEMPT_COLUMNS),
        ),
        all_attempts_llm_calls=sum(a.llm_calls for a in attempts),
        all_attempts_total_tokens=sum(a.total_tokens for a in attempts),
        all_attempts_cost_usd=round_usd(sum(a.cost_usd for a in attempts)),
    ).as_metadata()


def _call_record(call: Any) -> dg.TableRecord:
    return dg.TableRecord(
        {
            "node": call.node,
            "item": call.item,
            "model": call.model,
            "tier": call.tier if call.is_llm else None,
            "tools_called": ", ".join(call.tools),
            "status": call.status,
            "prompt_tokens": call.usage.prompt,
            "completion_tokens": call.usage.completion,
            "reasoning_tokens": call.usage.reasoning,
            "cached_tokens": call.usage.cached,
            "cost_usd": call.cost_usd,
            "latency_s": round(call.latency_s, 3),
            "cache_hit": call.cache_hit,
            "saved_cost_usd": call.saved_cost_usd,
        }
    )


def run_metadata(result: Any) -> dict[str, Any]:
    """Everything a materialization shows (``result`` is a runner.RunResult)."""
    # The skipped items' warning is shown as `failed_items`, the resume note as `resume`,
    # the cache's as `cache_warning`; the rest are tracking's.
    shown = {result.usage.skipped_items_warning(), result.resume_note, result.cache_note}
    tracking_notes = [w for w in result.warnings if w not in shown]
    return (
        usage_metadata(result.usage)
        | RunMetadata(
            node_count=result.node_count,
            duration_s=round(result.duration_s, 3),
            llm_backend=result.backend.value,
            output_preview=dg.MetadataValue.md(_preview(result.state)),
            **_mlflow_links(result.tracking),
            resume=result.resume_note,
            cache_warning=result.cache_note,
            tracking_warning=redact(" | ".join(tracking_notes)) if tracking_notes else None,
            prompt_versions=_prompt_versions(result.prompts),
        ).as_metadata()
    )


_PROMPT_COLUMNS = [
    dg.TableColumn("node", "string", description="The node id, or the eval's name"),
    dg.TableColumn("prompt", "string", description="The prompt's name in the registry"),
    dg.TableColumn("version", "int", description="The version the run used"),
    dg.TableColumn("reference", "string", description="As the workflow file names it"),
]


def _prompt_versions(prompts: Sequence[Any]) -> dg.TableMetadataValue | None:
    """The registry prompts (tracking.prompt_registry.PinnedPrompt) at the versions run."""
    if not prompts:
        return None
    return dg.MetadataValue.table(
        [
            dg.TableRecord(
                {"node": p.owner, "prompt": p.name, "version": p.version, "reference": p.reference}
            )
            for p in prompts
        ],
        dg.TableSchema(_PROMPT_COLUMNS),
    )


def _mlflow_links(tracking: TrackingInfo | None) -> dict[str, Any]:
    if tracking is None:
        return {}
    return {
        "mlflow_run_id": tracking.run_id,
        "mlflow_experiment_id": tracking.experiment_id,
        "mlflow_run_url": dg.MetadataValue.url(tracking.run_url),
        "mlflow_trace_id": tracking.trace_id,  # None: MLflow did not store the trace
    }


def _preview(state: dict[str, Any]) -> str:
    # Redacted before it is cut short: a key cut in half no longer looks like one.
    text = redact(json.dumps(state, indent=2, ensure_ascii=False, default=str))
    if len(text) > PREVIEW_CHARS:
        text = text[:PREVIEW_CHARS] + "\n… (truncated; the full state is the asset value)"
    return f"```json\n{text}\n```"
